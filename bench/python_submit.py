#!/usr/bin/env python3
"""A Python producer for bench/python.sh: submit N `square` tasks to QUEUE with taskhub's Python
client (TASKHUB_URL, TASKHUB_KEY), check every result, print tasks/s.

Usage: python_submit.py QUEUE N
"""

import sys
import time

import taskhub

queue, n = sys.argv[1], int(sys.argv[2])
with taskhub.connect() as hub:
    hub.submit(queue, range(100), kind="square", timeout=60)  # warm-up
    started = time.perf_counter()
    results = hub.submit(queue, range(n), kind="square", timeout=600)
    seconds = time.perf_counter() - started
assert results == ["%d * %d = %d" % (i, i, i * i) for i in range(n)], "wrong results"
print(round(n / seconds))
