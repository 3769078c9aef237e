"""Delayed tasks on a running hub (bench/schedule.sh starts it): what 100,000 waiting tasks cost
the hub's CPU, and how late delayed tasks become ready.

  idle       the hub's CPU over WINDOW seconds with nothing to do (the baseline);
  waiting    the same with N tasks scheduled ten minutes ahead;
  lateness   M tasks put with delays spread over 0.2-2 s, taken by a waiting `get`: how long
             after its time each one arrived. Next to it, the same for tasks put with no delay
             (the put-to-get round trip the measurement itself costs).

Usage: python bench/schedule.py URL HUB_PID [N] [M] [WINDOW]
"""

import os
import random
import statistics
import sys
import threading
import time

import taskhub

URL, PID = sys.argv[1], int(sys.argv[2])
N = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
M = int(sys.argv[4]) if len(sys.argv) > 4 else 300
WINDOW = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
KEY = os.environ["TASKHUB_KEY"]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_over(window: float) -> float:
    before = cpu_seconds(PID)
    time.sleep(window)
    return cpu_seconds(PID) - before


def wakeups_over(window: float) -> int:
    """Context switches of the hub's threads over `window`: how often it woke up."""
    def total() -> int:
        n = 0
        for tid in os.listdir(f"/proc/{PID}/task"):
            with open(f"/proc/{PID}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(line.split()[1])
        return n
    before = total()
    time.sleep(window)
    return total() - before


def lateness(hub: "taskhub.Hub", queue: str, delays: list) -> list:
    """Put one task per delay (each carrying when it is due) and take them with a waiting get;
    milliseconds each arrived after its time."""
    late = []
    got = threading.Event()

    def take() -> None:
        with taskhub.connect(URL, key=KEY) as h:
            for _ in delays:
                task = h.get(queue, timeout=30)
                late.append((time.time() - task["due"]) * 1000)
        got.set()

    t = threading.Thread(target=take)
    t.start()
    for d in delays:
        due = time.time() + d
        hub.put(queue, {"due": due}, delay=d if d else None)
    t.join()
    return late


def main() -> None:
    print(f"hub pid {PID}; N={N} scheduled, M={M} timed, window {WINDOW} s")
    with taskhub.connect(URL, key=KEY) as hub:
        hub.put_many("warm", [0])
        idle = cpu_over(WINDOW)
        idle_wake = wakeups_over(WINDOW)
        t0 = time.monotonic()
        hub.put_many("waiting", range(N), delay=600)
        put_s = time.monotonic() - t0
        line = next(q for q in hub.stats()["queues"] if q["name"] == "waiting")
        assert line["scheduled"] == N, line
        time.sleep(1)
        waiting = cpu_over(WINDOW)
        waiting_wake = wakeups_over(WINDOW)
        print(f"put {N} delayed tasks in {put_s:.1f} s; hub RSS {rss_mb():.0f} MB")
        print(f"hub CPU over {WINDOW:.0f} s: idle {idle * 1000:.0f} ms, with {N} waiting "
              f"{waiting * 1000:.0f} ms; thread wake-ups {idle_wake} vs {waiting_wake}")
        rnd = random.Random(7)
        delays = [0.2 + 1.8 * rnd.random() for _ in range(M)]
        delayed = lateness(hub, "timed", delays)
        immediate = lateness(hub, "untimed", [0.0] * M)
        for name, xs in (("delayed", delayed), ("no delay", immediate)):
            xs = sorted(xs)
            print(f"{name:>9}: late by p50 {statistics.median(xs):.1f} ms, "
                  f"p99 {xs[int(len(xs) * 0.99) - 1]:.1f} ms, max {xs[-1]:.1f} ms, "
                  f"min {xs[0]:.1f} ms")


def rss_mb() -> float:
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


main()
