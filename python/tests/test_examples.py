"""The seed's two scripts, ported (examples/python): a master and two workers print the seed's
lines, and kill -9 of a worker mid-run loses nothing."""

import os
import re
import signal
import subprocess
import sys
import time

from conftest import KEY, ROOT

import taskhub

EXAMPLES = ROOT / "examples" / "python"


def script(hub, name):
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / name)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TASKHUB_URL=hub.url, TASKHUB_KEY=KEY, PYTHONUNBUFFERED="1"))


def test_master_and_two_workers_survive_a_worker_killed_mid_task(hub):
    workers = [script(hub, "worker.py") for _ in range(2)]
    try:
        for w in workers:
            assert w.stdout.readline().startswith("Connect to server ws://127.0.0.1:")
        with taskhub.connect(hub.url, key=KEY) as h:
            deadline = time.monotonic() + 20
            while sum(1 for x in h.stats()["workers"] if x["role"] == "worker") < 2:
                assert time.monotonic() < deadline, "the workers did not connect"
                time.sleep(0.05)
        master = script(hub, "master.py")
        victim = workers[0]
        line = victim.stdout.readline()
        assert re.fullmatch(r"run task \d+ \* \d+\.\.\.\n", line), line
        victim.kill()  # SIGKILL, mid-task: its lease goes back to the queue at once
        victim.wait()
        out, err = master.communicate(timeout=60)
        assert master.returncode == 0, err
        lines = out.splitlines()
        put = [int(m.group(1)) for m in map(re.compile(r"Put task (\d+)\.\.\.").fullmatch, lines)
               if m]
        results = [l for l in lines if l.startswith("Result: ")]
        assert len(put) == 10 and lines[10] == "Try get results..."
        assert sorted(results) == sorted(f"Result: {n} * {n} = {n * n}" for n in put)
        assert lines[-1] == "master exit."
        # The survivor ran all ten, the victim's too (it died in its first); it would leave after
        # ten idle seconds, and leaves at once, gracefully, on SIGTERM.
        survivor = workers[1]
        survivor.send_signal(signal.SIGTERM)
        out, _ = survivor.communicate(timeout=30)
        assert survivor.returncode == 0
        ran = [l for l in out.splitlines() if l.startswith("run task ")]
        assert len(ran) == 10 and out.splitlines()[-1] == "worker exit."
    finally:
        for w in workers:
            w.kill()
            w.wait()
