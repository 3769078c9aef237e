"""Python workers against real hubs: handlers by kind, failures and dead letters, touch, bytes,
processes, reconnects, refusals, and `python -m taskhub worker` stopped by SIGTERM."""

import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager

import pytest

import handlers
import taskhub
from conftest import KEY, Serve, binary


@contextmanager
def running(worker):
    """Run `worker` on a thread for the block; stop it (gracefully) after."""
    failure = []

    def go():
        try:
            worker.run()
        except BaseException as e:  # surfaced below
            failure.append(e)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    try:
        yield
    finally:
        worker.stop()
        t.join(15)
    assert not t.is_alive(), "the worker did not stop"
    if failure:
        raise failure[0]


def make_worker(hub, **options):
    options.setdefault("concurrency", 1)
    w = taskhub.Worker(hub.url, KEY, **options)
    w.add_handler("square", handlers.square)
    return w


def dead_letter(h, queue, timeout=20):
    return h.queue(f"{queue}.dead").get(timeout=timeout)


def wait_for(what, predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_handlers_run_by_kind_and_the_hub_sees_a_worker(hub):
    w = make_worker(hub, name="py-box")
    w.add_handler("attempt", handlers.attempt, task=True)
    with running(w), taskhub.connect(hub.url, key=KEY) as h:
        results = h.submit("tasks", range(500), kind="square", timeout=60)
        assert results == [f"{n} * {n} = {n * n}" for n in range(500)]
        assert h.submit("tasks", [{}], kind="attempt", timeout=20) == [
            {"attempt": 1, "kind": "attempt", "queue": "tasks"}]
        me = [x for x in h.stats()["workers"] if x.get("name") == "py-box"]
        assert me and me[0]["role"] == "worker" and me[0]["acked"] == 501
    assert w.done == 501 and w.failed == 0


def test_a_retry_waits_its_backoff_and_the_handler_sees_the_last_error(hub):
    w = make_worker(hub)
    w.add_handler("lucky", handlers.second_time_lucky, task=True)
    with running(w), taskhub.connect(hub.url, key=KEY) as h:
        started = time.monotonic()
        [got] = h.submit("tasks", [1], kind="lucky", backoff=0.6, timeout=20)
        assert got == {"attempt": 2, "last_error": "first attempts always fail"}
        # The retry waited out its backoff: 0.6 s, jittered into its upper half.
        assert time.monotonic() - started >= 0.3


def test_an_unknown_kind_goes_to_the_dead_letter_queue_at_once(hub):
    with running(make_worker(hub)), taskhub.connect(hub.url, key=KEY) as h:
        h.queue("tasks").put(7, kind="resize", max_attempts=5)
        dead = dead_letter(h, "tasks")
        assert dead["attempts"] == 1, "dead-lettered on the first delivery, not retried"
        assert "unknown task kind 'resize'; this worker knows square" in dead["error"]
        with pytest.raises(taskhub.TaskFailed, match="task has no kind; this worker knows square"):
            h.submit("tasks", [1], timeout=20)  # no kind at all


def test_a_raising_handler_is_retried_and_task_error_is_final(hub):
    w = make_worker(hub)
    w.add_handler("flaky", handlers.flaky)
    w.add_handler("reject", handlers.reject)
    with running(w), taskhub.connect(hub.url, key=KEY) as h:
        out = h.queue("out")
        h.queue("tasks").put(7, kind="flaky", max_attempts=2, reply_to="out")
        outcome = out.get(timeout=20)
        assert not outcome["ok"]
        assert outcome["error"] == "gave up after 2 attempt(s): RuntimeError: cannot do 7"
        h.queue("tasks").put(8, kind="reject", max_attempts=5, reply_to="out")
        assert out.get(timeout=20)["error"] == "gave up after 1 attempt(s): 8 is not a number I take"
        # The worker goes on after both.
        assert h.submit("tasks", [3], kind="square", timeout=20) == ["3 * 3 = 9"]


def test_results_the_hub_would_refuse_fail_the_task_for_good(hub):
    w = make_worker(hub)
    w.add_handler("never_json", handlers.never_json)
    with running(w), taskhub.connect(hub.url, key=KEY) as h:
        h.queue("tasks").put(1, kind="never_json", max_attempts=5)
        dead = dead_letter(h, "tasks")
        assert dead["attempts"] == 1 and "result is not JSON" in dead["error"]


def test_bytes_come_in_and_go_out_as_bytes(hub):
    w = make_worker(hub)
    w.add_handler("reverse", handlers.reverse)
    with running(w), taskhub.connect(hub.url, key=KEY) as h:
        assert h.submit("tasks", [b"\x00abc\xff"], kind="reverse", timeout=20) == [b"\xffcba\x00"]


def test_long_tasks_are_touched_so_their_lease_holds():
    hub = Serve("--ack-wait", "1")
    try:
        w = make_worker(hub)
        w.add_handler("attempt", handlers.attempt, task=True)
        with running(w), taskhub.connect(hub.url, key=KEY) as h:
            # 2.5 ack-waits: without touches the hub would redeliver it as attempt 2.
            [got] = h.submit("tasks", [{"sleep": 2.5}], kind="attempt", timeout=30)
            assert got["attempt"] == 1
    finally:
        hub.stop()


def test_slow_tasks_are_not_hoarded(hub):
    w = make_worker(hub, name="slow-one")
    w.add_handler("slow", handlers.slow)
    with running(w), taskhub.connect(hub.url, key=KEY) as h:
        h.put_many("tasks", [0.4] * 20, kind="slow")
        time.sleep(1.0)
        me = [x for x in h.stats()["workers"] if x.get("name") == "slow-one"][0]
        queue = [q for q in h.stats()["queues"] if q["name"] == "tasks"][0]
        # concurrency 1: one running and one in reserve at most; the rest wait for any worker.
        assert me["in_flight"] <= 2 and queue["depth"] >= 12, (me, queue)
        w.stop()


def test_a_fixed_prefetch_holds_that_many(hub):
    w = make_worker(hub, name="fixed", prefetch=4)
    w.add_handler("slow", handlers.slow)
    with running(w), taskhub.connect(hub.url, key=KEY) as h:
        h.put_many("tasks", [0.4] * 20, kind="slow")
        time.sleep(1.0)
        me = [x for x in h.stats()["workers"] if x.get("name") == "fixed"][0]
        assert me["in_flight"] == 4, me
        w.stop()


def test_processes_run_handlers_outside_this_process(hub):
    w = make_worker(hub, executor="processes", concurrency=2)
    w.add_handler("pid", handlers.pid)
    w.add_handler("exit", handlers.exit_process)
    with running(w), taskhub.connect(hub.url, key=KEY) as h:
        pids = h.submit("tasks", range(20), kind="pid", timeout=30)
        assert os.getpid() not in pids
        h.queue("tasks").put(0, kind="exit", max_attempts=1, reply_to="out")
        outcome = h.queue("out").get(timeout=20)
        assert not outcome["ok"] and "process running the task died" in outcome["error"]
        # A new pool takes over.
        assert h.submit("tasks", [4], kind="square", timeout=20) == ["4 * 4 = 16"]


def test_a_wrong_key_ends_run_instead_of_retrying(hub):
    w = taskhub.Worker(hub.url, "not-the-key-0123456789", queues=["tasks"])
    w.add_handler("square", handlers.square)
    started = time.monotonic()
    with pytest.raises(taskhub.AuthError) as refused:
        w.run()
    assert refused.value.reason == "credentials"
    assert time.monotonic() - started < 10


def test_a_refused_consume_ends_run_with_the_hubs_reason(hub):
    made = subprocess.run(
        [binary("taskhub"), "--hub", hub.url, "--key", KEY, "token", "create", "--queue",
         "tasks", "--put", "--ttl", "1h"], capture_output=True, text=True, check=True)
    w = taskhub.Worker(hub.url, token=made.stdout.strip(), queues=["tasks"])
    w.add_handler("square", handlers.square)
    with pytest.raises(taskhub.HubError) as refused:
        w.run()
    assert refused.value.code == "forbidden"
    assert "refused to let this worker consume tasks" in str(refused.value)


def test_the_worker_reconnects_when_the_hub_comes_back(hub):
    w = make_worker(hub, backoff=(0.1, 0.5))
    with running(w):
        with taskhub.connect(hub.url, key=KEY) as h:
            assert h.submit("tasks", [2], kind="square", timeout=20) == ["2 * 2 = 4"]
        port = hub.port
        hub.stop()
        time.sleep(1)  # a few failed attempts while nothing listens
        again = Serve(listen=f"127.0.0.1:{port}")
        try:
            with taskhub.connect(again.url, key=KEY) as h:
                assert h.submit("tasks", [5], kind="square", timeout=20) == ["5 * 5 = 25"]
        finally:
            again.stop()


def test_sigterm_lets_running_tasks_finish_and_hands_back_the_rest(hub):
    with taskhub.connect(hub.url, key=KEY) as h:
        h.put_many("tasks", [1.5] * 4, kind="slow", reply_to="done")
        proc = hub.python_worker("--queue", "tasks", "--concurrency", "2", "--name", "term",
                                 "slow=handlers:slow")
        for _ in range(2):
            assert proc.stdout.readline().strip() == "started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr.read()
        log = proc.stderr.read()
        assert "stopping: finishing 2 task(s) in flight" in log
        finished = [h.queue("done").get(timeout=5) for _ in range(2)]
        assert all(r["ok"] and r["result"]["slept"] == 1.5 for r in finished)
        queue = [q for q in h.stats()["queues"] if q["name"] == "tasks"][0]
        assert (queue["depth"], queue["in_flight"]) == (2, 0), "the rest went back unstarted"


def test_a_second_sigterm_leaves_at_once_and_the_hub_redelivers_the_task(hub):
    with taskhub.connect(hub.url, key=KEY) as h:
        h.queue("tasks").put(30, kind="slow")
        proc = hub.python_worker("--queue", "tasks", "--concurrency", "1", "slow=handlers:slow")
        assert proc.stdout.readline().strip() == "started"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the first one stops deliveries; the task still runs
        assert proc.poll() is None, "the first SIGTERM waits for the running task"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "leaving now; 1 running task(s) go back to the hub" in proc.stderr.read()
        queue = [q for q in h.stats()["queues"] if q["name"] == "tasks"][0]
        assert (queue["depth"], queue["in_flight"]) == (1, 0)


def test_exit_when_idle_stops_a_worker_with_nothing_to_do(hub):
    w = make_worker(hub, exit_when_idle=0.5)
    with taskhub.connect(hub.url, key=KEY) as h:
        h.queue("tasks").put(6, kind="square", reply_to="out")
        w.run()  # returns by itself once the queue has stayed empty for half a second
        assert h.queue("out").get(timeout=5)["result"] == "6 * 6 = 36"
    assert w.done == 1


def test_the_command_line_names_a_handler_it_cannot_load(hub):
    proc = hub.python_worker("--queue", "tasks", "nosuchmodule:fn")
    assert proc.wait(20) == 2
    assert "cannot import nosuchmodule" in proc.stderr.read()


def test_over_wss_with_a_private_ca_the_client_and_the_worker_work(pki):
    hub = Serve("--tls-cert", pki["cert"], "--tls-key", pki["key"])
    try:
        assert hub.url.startswith("wss://")
        w = taskhub.Worker(hub.url, KEY, queues=["tasks"], cafile=pki["ca"], concurrency=1)
        w.add_handler("square", handlers.square)
        with running(w), taskhub.connect(hub.url, key=KEY, cafile=pki["ca"]) as h:
            assert h.submit("tasks", [12], kind="square", timeout=20) == ["12 * 12 = 144"]
        # Without the CA, the system's roots do not trust the hub: a clear refusal.
        with pytest.raises(taskhub.ConnectionClosed, match="certificate"):
            taskhub.connect(hub.url, key=KEY, timeout=5)
    finally:
        hub.stop()


def test_a_cancelled_task_stops_its_handler_and_the_worker_takes_the_next(hub):
    w = make_worker(hub, concurrency=1, prefetch=1)
    steps = []

    def patient(task):
        """Registered with task=True: works in steps of 20 ms for up to a minute, stopping
        early once cancelled."""
        steps.append("running")
        for _ in range(3000):
            if w.is_cancelled(task.id):
                steps.append("stopped")
                return "never seen"
            time.sleep(0.02)
        return "ran out"

    w.add_handler("patient", patient, task=True)
    with running(w), taskhub.connect(hub.url, key=KEY) as h:
        out = h.queue("out")
        slow = h.queue("tasks").put(1, kind="patient", reply_to="out")
        # Running in the handler, not only delivered (a task cancelled while it still waits in
        # the worker is dropped unstarted: another path).
        wait_for("the handler to run", lambda: steps == ["running"])
        h.queue("tasks").put(6, kind="square", reply_to="out")
        assert h.cancel(slow) == "leased"
        first = out.get(timeout=5)
        assert first == {"id": slow, "ok": False, "error": "cancelled", "cancelled": True}
        # Long before the minute the handler would take: it stopped, the slot is free.
        assert out.get(timeout=20)["result"] == "6 * 6 = 36"
        assert steps == ["running", "stopped"]
        with pytest.raises(taskhub.HubError) as refused:
            h.cancel(slow)
        assert refused.value.code == "unknown_task"
    assert (w.done, w.cancelled) == (1, 1)


def test_a_submit_waiting_on_a_cancelled_task_raises_task_failed(hub):
    with taskhub.connect(hub.url, key=KEY) as h, taskhub.connect(hub.url, key=KEY) as other:
        errors = []

        def submit():
            try:
                h.submit("idle", [1], kind="square", timeout=20)
            except taskhub.TaskFailed as e:
                errors.append(e)

        waiting = threading.Thread(target=submit)
        waiting.start()
        wait_for("the put", lambda: queue_stats(other, "idle").get("depth") == 1)
        # Nobody consumes "idle": the one task there is the submitted one, id 1 on a fresh hub.
        assert other.cancel(1) == "ready"
        waiting.join(20)
        [e] = errors
        assert e.cancelled and e.task == 1 and "was cancelled" in str(e)


def queue_stats(h, name):
    """`name`'s line in `stats`, or {} before the queue exists."""
    return next((q for q in h.stats()["queues"] if q["name"] == name), {})


def test_a_handlers_progress_reaches_the_submitter(hub):
    w = make_worker(hub, concurrency=1)

    def stepped(task):
        """Registered with task=True: five steps of 150 ms, reporting before each."""
        for i in range(5):
            w.report_progress(task.id, i / 5, f"step {i + 1} of 5")
            time.sleep(0.15)
        return "done"

    w.add_handler("stepped", stepped, task=True)
    heard = []
    with running(w), taskhub.connect(hub.url, key=KEY) as h:
        h.on_progress = heard.append
        assert h.submit("tasks", [None], kind="stepped", timeout=20) == ["done"]
    assert len(heard) >= 4, heard
    assert heard[0]["fraction"] == 0.0 and heard[0]["message"] == "step 1 of 5"
    assert [r["fraction"] for r in heard] == sorted(r["fraction"] for r in heard)
    assert all(set(r) == {"task", "fraction", "message"} for r in heard), heard


def test_a_task_error_may_name_its_own_retry_wait_and_survives_pickling(hub):
    import pickle

    e = pickle.loads(pickle.dumps(taskhub.TaskError("bad input", retry=False, retry_after=2.0)))
    assert (e.message, e.retry, e.retry_after) == ("bad input", False, 2.0), \
        "a worker process's TaskError keeps its fields"

    w = make_worker(hub, concurrency=1)
    tries = []

    def limited(task):
        """Registered with task=True: rate-limited on the first attempt, told to wait 0.6 s."""
        tries.append(time.monotonic())
        if task.attempt == 1:
            raise taskhub.TaskError("rate limited", retry_after=0.6)
        return task.attempt

    w.add_handler("limited", limited, task=True)
    with running(w), taskhub.connect(hub.url, key=KEY) as h:
        # The task's own backoff is an hour: only the handler's wait can bring it back soon.
        assert h.submit("tasks", [None], kind="limited", backoff=3600, timeout=20) == [2]
    assert tries[1] - tries[0] >= 0.6


def test_a_redundant_task_is_answered_once_by_agreeing_workers_and_a_liar_is_outvoted(hub):
    honest = [make_worker(hub, name=f"honest-{i}") for i in range(2)]
    liar = taskhub.Worker(hub.url, KEY, concurrency=1, name="liar")
    lies = []

    def lying_square(n):
        lies.append(n)
        return f"{n} * {n} = {n * n + 1}"

    liar.add_handler("square", lying_square)
    with running(liar), running(honest[0]), running(honest[1]), \
            taskhub.connect(hub.url, key=KEY) as h:
        wait_for("three consumers", lambda: queue_stats(h, "tasks").get("consumers") == 3)
        results = h.submit("tasks", list(range(1, 13)), kind="square", replicas=2, quorum=2,
                           timeout=60)
        assert results == [f"{n} * {n} = {n * n}" for n in range(1, 13)]
        assert lies, "the liar took part"
        stats = queue_stats(h, "tasks")
        assert (stats.get("dead"), stats.get("voting", 0)) == (0, 0)
