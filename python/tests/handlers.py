"""Handlers the worker tests run, importable by name (`handlers:square`) for `python -m taskhub
worker` and for worker processes."""

import os
import sys
import time

import taskhub


def square(n):
    return "%d * %d = %d" % (n, n, n * n)


def slow(seconds):
    """Announce the start on stdout (the tests wait for it), sleep, and say which process ran."""
    sys.stdout.write("started\n")  # one write: lines from two threads stay whole
    sys.stdout.flush()
    time.sleep(seconds)
    return {"pid": os.getpid(), "slept": seconds}


def attempt(task):
    """Registered with task=True: which attempt this delivery is."""
    if task.payload.get("sleep"):
        time.sleep(task.payload["sleep"])
    return {"attempt": task.attempt, "kind": task.kind, "queue": task.queue}


def second_time_lucky(task):
    """Registered with task=True: fails its first attempt, then says why that one ended."""
    if task.attempt == 1:
        raise taskhub.TaskError("first attempts always fail")
    return {"attempt": task.attempt, "last_error": task.last_error}


def flaky(n):
    raise RuntimeError(f"cannot do {n}")


def reject(n):
    raise taskhub.TaskError(f"{n} is not a number I take", retry=False)


def reverse(data):
    return bytes(reversed(data))


def pid(_):
    return os.getpid()


def exit_process(_):
    os._exit(3)


def never_json(_):
    return {1, 2}


if __name__ == "__main__":
    sys.exit("import me")
