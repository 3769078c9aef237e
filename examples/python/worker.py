"""The seed's task_worker.py, on taskhub.

The seed's worker took each number with `task.get(timeout=1)` and put its answer on the result
queue; a worker killed between the two lost the task. This one leases each task from the hub
(TASKHUB_URL, TASKHUB_KEY) and acks it with the answer, which the hub sends to the task's
`reply_to` queue: kill it at any moment and another worker redoes what it held.

Like the seed's, it leaves once the queue has stayed empty for a while.
"""

import os
import time

import taskhub

print("Connect to server %s..." % os.environ.get("TASKHUB_URL", "ws://127.0.0.1:7878"))
worker = taskhub.Worker(queues=["tasks"], concurrency=1, exit_when_idle=10)


@worker.handler("square")
def square(n):
    print("run task %d * %d..." % (n, n), flush=True)
    r = "%d * %d = %d" % (n, n, n * n)
    time.sleep(1)
    return r


worker.run()
print("worker exit.")
