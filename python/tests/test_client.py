"""The blocking client against real hubs: the seed's put/get, queue.Empty, submit with a native
worker, bytes, stats, errors by name, tokens and TLS refusals."""

import datetime
import queue
import subprocess
import time

import pytest

import taskhub
from conftest import KEY


def test_the_seed_shape_works(hub):
    with taskhub.connect(hub.url, key=KEY) as h:
        tasks, results = h.queue("tasks"), h.queue("results")
        worker = hub.worker("--queue", "tasks")
        try:
            ids = [tasks.put(n, kind="square", reply_to="results") for n in (3411, 1605)]
            got = [results.get(timeout=20) for _ in ids]
        finally:
            worker.kill()
            worker.wait()
        assert sorted(r["id"] for r in got) == sorted(ids)
        assert sorted(r["result"] for r in got) == ["1605 * 1605 = 2576025",
                                                     "3411 * 3411 = 11634921"]


def test_get_on_an_empty_queue_raises_queue_empty(hub):
    with taskhub.connect(hub.url, key=KEY) as h:
        with pytest.raises(queue.Empty):
            h.queue("nothing").get(timeout=0.2)
        with pytest.raises(taskhub.Empty):
            h.queue("nothing").get_nowait()
        h.queue("one").put({"n": 1})
        assert h.queue("one").get(timeout=1) == {"n": 1}


def test_submit_returns_results_in_order_and_bytes_stay_bytes(hub):
    worker = hub.worker("--queue", "tasks")
    try:
        with taskhub.connect(hub.url, key=KEY) as h:
            assert h.submit("tasks", [7, 8, 9], kind="square", timeout=20) == [
                "7 * 7 = 49", "8 * 8 = 64", "9 * 9 = 81"]
            assert h.submit("tasks", [b"\x00\xffbytes"], kind="echo", timeout=20) == [
                b"\x00\xffbytes"]
            with pytest.raises(taskhub.TaskFailed) as failed:
                h.submit("tasks", [1], kind="no-such-kind", timeout=20)
            assert "no-such-kind" in failed.value.error
            stats = h.stats()
            assert any(q["name"] == "tasks" for q in stats["queues"]), stats
    finally:
        worker.kill()
        worker.wait()


def test_priorities_and_delays_order_and_time_the_tasks(hub):
    with taskhub.connect(hub.url, key=KEY) as h:
        jobs = h.queue("jobs")
        jobs.put("low")
        h.put_many("jobs", ["mid-1", "mid-2"], priority=4)
        jobs.put("high", priority=9)
        assert [jobs.get(timeout=1) for _ in range(4)] == ["high", "mid-1", "mid-2", "low"]
        started = time.monotonic()
        jobs.put("later", delay=0.8)
        jobs.put("far", not_before=datetime.datetime.now(datetime.timezone.utc)
                 + datetime.timedelta(hours=1))
        line = next(q for q in h.stats()["queues"] if q["name"] == "jobs")
        assert (line["scheduled"], line["depth"]) == (2, 0), line
        with pytest.raises(queue.Empty):
            jobs.get(timeout=0.3)
        assert jobs.get(timeout=5) == "later"
        assert time.monotonic() - started >= 0.8
        with pytest.raises(taskhub.HubError) as refused:
            jobs.put(1, priority=10)
        assert refused.value.code == "bad_request"
        assert "priority must be 0 to 9" in str(refused.value)
        with pytest.raises(ValueError):
            jobs.put(1, delay=1, not_before=time.time())


def test_errors_are_named(hub):
    with pytest.raises(taskhub.AuthError) as refused:
        taskhub.connect(hub.url, key="not-the-key")
    assert refused.value.reason == "credentials"
    with taskhub.connect(hub.url, key=KEY) as h:
        with pytest.raises(taskhub.HubError) as bad:
            h.queue("no spaces allowed").put(1)
        assert bad.value.code == "bad_request"
        # The session goes on after a refused request.
        assert h.queue("fine").put(1) > 0
    with pytest.raises(taskhub.ConnectionClosed):
        taskhub.connect(hub.url.replace("ws://", "wss://"), key=KEY, timeout=3)


def test_a_consume_only_token_may_not_put(hub):
    made = subprocess.run(
        [__import__("conftest").binary("taskhub"), "--hub", hub.url, "--key", KEY, "token",
         "create", "--queue", "tasks", "--consume", "--ttl", "1h"],
        capture_output=True, text=True, check=True)
    token = made.stdout.strip()
    with taskhub.connect(hub.url, token=token) as h:
        with pytest.raises(taskhub.HubError) as forbidden:
            h.queue("tasks").put(1)
        assert forbidden.value.code == "forbidden" and "put to queue" in forbidden.value.message


def test_pubsub_gives_each_subscription_its_own_iterator(hub):
    with taskhub.connect(hub.url, key=KEY) as listener, taskhub.connect(hub.url, key=KEY) as talker:
        cpu = listener.subscribe("metrics.cpu")
        everything = listener.subscribe("metrics.>")
        assert talker.publish("metrics.cpu", 0.93) == 1, "one session, counted once"
        assert talker.publish("metrics.mem", b"\x01\x02") == 1
        assert cpu.get(timeout=5) == taskhub.Message("metrics.cpu", 0.93)
        with pytest.raises(queue.Empty):
            cpu.get(timeout=0.2)
        got = [everything.get(timeout=5) for _ in range(2)]
        assert got == [("metrics.cpu", 0.93), ("metrics.mem", b"\x01\x02")]
        everything.unsubscribe()
        assert list(everything) == [], "an ended subscription iterates no more"
        # The hub still sends metrics.cpu for the other subscription, and only it.
        assert talker.publish("metrics.mem", 1) == 0
        assert talker.publish("metrics.cpu", 2) == 1
        assert cpu.get(timeout=5).payload == 2


def test_several_urls_open_the_session_on_the_first_hub_that_answers(hub):
    # Port 1: nothing listens there.
    urls = f"ws://127.0.0.1:1, {hub.url}"
    with taskhub.connect(urls, key=KEY) as h:
        assert h.url == hub.url
        h.queue("listed").put(1)
        assert h.queue("listed").get(timeout=1) == 1
    with pytest.raises(taskhub.ConnectionClosed, match="127.0.0.1:1"):
        taskhub.connect("ws://127.0.0.1:1,ws://127.0.0.1:1", key=KEY)
    with pytest.raises(taskhub.AuthError):
        taskhub.connect(urls, key="wrong")
