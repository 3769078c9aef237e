"""How fast `cancel` frees a worker that runs a long task (bench/cancel.sh starts the hub and the
worker: a `taskhub-worker` process, or a browser tab, one task at a time).

  cancel     a `sleep 10000` runs on the worker and a `square` waits behind it; time from
             sending `cancel` to the square's result arriving: the hub ending the lease, the
             worker stopping the sleep (a tab: terminating its Web Worker and starting a fresh
             one), the square running and its result coming back;
  baseline   the same worker idle: time from putting a square to its result (the round trip a
             freed worker's next task costs anyway).

Usage: python bench/cancel.py URL QUEUE [ROUNDS]
"""

import os
import statistics
import sys
import time

import taskhub

URL, QUEUE = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 30
KEY = os.environ["TASKHUB_KEY"]
RESULTS = f"{QUEUE}-results"


def in_flight(h: taskhub.Hub) -> int:
    return next((q["in_flight"] for q in h.stats()["queues"] if q["name"] == QUEUE), 0)


def result_of(h: taskhub.Hub, task: int) -> dict:
    """Take replies until `task`'s."""
    while True:
        r = h.queue(RESULTS).get(timeout=30)
        if r["id"] == task:
            return r


def ms(seconds: list) -> str:
    s = sorted(x * 1000 for x in seconds)
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return f"p50 {statistics.median(s):6.1f} ms  p99 {p99:6.1f} ms  max {s[-1]:6.1f} ms"


with taskhub.connect(URL, key=KEY) as h:
    q = h.queue(QUEUE)
    baseline, freed = [], []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        quick = q.put(7, kind="square", reply_to=RESULTS)
        result_of(h, quick)
        baseline.append(time.perf_counter() - t0)

        slow = q.put(10_000, kind="sleep", reply_to=RESULTS)
        while in_flight(h) < 1:
            time.sleep(0.005)
        time.sleep(0.2)  # well under way (in a tab: in its Web Worker)
        quick = q.put(7, kind="square", reply_to=RESULTS)
        t0 = time.perf_counter()
        assert h.cancel(slow) == "leased"
        r = result_of(h, quick)
        freed.append(time.perf_counter() - t0)
        assert r["ok"], r
    print(f"baseline  {ms(baseline)}")
    print(f"cancel    {ms(freed)}")
    print(f"ratio     p50 {statistics.median(freed) / statistics.median(baseline):.2f}x")
