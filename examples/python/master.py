"""The seed's task_master.py, on taskhub.

The seed started a multiprocessing.managers server exposing a task queue and a result queue
(address ('', 5000), authkey b'abc'). Here the hub holds the queues: start one with
`taskhub serve`, and point this script at it with TASKHUB_URL and TASKHUB_KEY (or
TASKHUB_KEY_FILE, or TASKHUB_TOKEN). Run one or more `worker.py` next to it.

Unlike the seed, a task outlives the master and any worker: if a worker dies mid-task, the hub
hands the task to another, and results wait in `results` until someone takes them.
"""

import random

import taskhub

hub = taskhub.connect()
task, result = hub.queue("tasks"), hub.queue("results")

for i in range(10):
    n = random.randint(0, 10000)
    print("Put task %d..." % n)
    # reply_to: the worker's answer goes to `results` (the seed's worker put it there itself).
    task.put(n, kind="square", reply_to="results")

print("Try get results...")
for i in range(10):
    r = result.get(timeout=10)
    print("Result: %s" % (r["result"] if r["ok"] else "failed: " + r["error"]))

hub.close()
print("master exit.")
