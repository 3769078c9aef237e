#!/usr/bin/env python3
"""The pattern taskhub replaces, as a baseline: a multiprocessing.managers master exposing a task
queue and a result queue over TCP with an authkey, W worker processes that get(timeout=1) a number
n and put "n * n = r", and the master timing N round trips. Standard library only.

Usage: seed.py N W [M]  (prints one JSON line: throughput over N tasks, then the p50/p99 of M
sequential round trips, one task in flight, and of connect+authenticate)
"""

import json
import multiprocessing as mp
import queue
import sys
import time
from multiprocessing.managers import BaseManager

task_queue = queue.Queue()
result_queue = queue.Queue()


class Master(BaseManager):
    pass


class Remote(BaseManager):
    pass


def worker(port):
    Remote.register("get_task_queue")
    Remote.register("get_result_queue")
    m = Remote(address=("127.0.0.1", port), authkey=b"seed-key")
    m.connect()
    tasks, results = m.get_task_queue(), m.get_result_queue()
    while True:
        n = tasks.get()
        if n is None:  # the master is done (the seed used get(timeout=1), which can end early)
            return
        results.put("%d * %d = %d" % (n, n, n * n))


def percentiles(samples):
    samples.sort()
    at = lambda q: samples[min(len(samples) - 1, int(round((len(samples) - 1) * q)))] * 1e6
    return {"p50_us": at(0.5), "p99_us": at(0.99)}


def main():
    n_tasks, n_workers = int(sys.argv[1]), int(sys.argv[2])
    n_seq = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    Master.register("get_task_queue", callable=lambda: task_queue)
    Master.register("get_result_queue", callable=lambda: result_queue)
    master = Master(address=("127.0.0.1", 0), authkey=b"seed-key")
    master.start()
    tasks, results = master.get_task_queue(), master.get_result_queue()
    procs = [mp.Process(target=worker, args=(master.address[1],)) for _ in range(n_workers)]
    for p in procs:
        p.start()
    started = time.perf_counter()
    for n in range(n_tasks):
        tasks.put(n)
    for _ in range(n_tasks):
        results.get(timeout=10)
    seconds = time.perf_counter() - started
    sequential = []
    for n in range(n_seq):
        t = time.perf_counter()
        tasks.put(n)
        results.get(timeout=10)
        sequential.append(time.perf_counter() - t)
    for _ in procs:
        tasks.put(None)
    for p in procs:
        p.join()
    connects = []
    Remote.register("get_task_queue")
    for _ in range(50):
        t = time.perf_counter()
        m = Remote(address=("127.0.0.1", master.address[1]), authkey=b"seed-key")
        m.connect()
        connects.append(time.perf_counter() - t)
    master.shutdown()
    print(json.dumps({"tasks": n_tasks, "workers": n_workers, "seconds": seconds,
                      "tasks_per_sec": n_tasks / seconds,
                      "sequential_latency": percentiles(sequential),
                      "connect_auth": percentiles(connects)}))


if __name__ == "__main__":
    main()
