"""taskhub.aio against real hubs: the blocking client's names, awaited, with many requests in
flight at once on one connection."""

import asyncio
import queue
import threading

import pytest

import taskhub
import taskhub.aio
from conftest import KEY


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_the_seed_shape_awaited(hub):
    async def main():
        worker = hub.worker("--queue", "tasks")
        try:
            async with await taskhub.aio.connect(hub.url, key=KEY) as h:
                tasks, results = h.queue("tasks"), h.queue("results")
                ids = [await tasks.put(n, kind="square", reply_to="results") for n in (3411, 7)]
                got = [await results.get(timeout=20) for _ in ids]
                assert sorted(r["result"] for r in got) == ["3411 * 3411 = 11634921",
                                                             "7 * 7 = 49"]
                with pytest.raises(queue.Empty):
                    await results.get(timeout=0.2)
                assert await h.submit("tasks", range(300), kind="square", timeout=30) == [
                    f"{n} * {n} = {n * n}" for n in range(300)]
                assert await h.submit("tasks", [b"\x00\x01"], kind="echo", timeout=30) == [
                    b"\x00\x01"]
                # Many coroutines share the connection; each gets its own answers.
                many = await asyncio.gather(*(h.submit("tasks", [n], kind="square", timeout=30)
                                              for n in range(50)))
                assert many == [[f"{n} * {n} = {n * n}"] for n in range(50)]
                stats = await h.stats()
                assert stats["sessions"]["producer"] == 1 and stats["acked"] >= 353
        finally:
            worker.kill()
            worker.wait()

    run(main())


def test_errors_are_named_as_in_the_blocking_client(hub):
    async def main():
        with pytest.raises(taskhub.AuthError) as refused:
            await taskhub.aio.connect(hub.url, key="wrong-key-0123456789")
        assert refused.value.reason == "credentials"
        async with await taskhub.aio.connect(hub.url, key=KEY) as h:
            with pytest.raises(taskhub.HubError) as bad:
                await h.put("_inbox.1", 1)
            assert bad.value.code == "forbidden"
            with pytest.raises(TimeoutError, match="1 of 1 results did not come"):
                await h.submit("nobody-consumes", [1], timeout=0.3)
            with pytest.raises(taskhub.TaskFailed):
                worker = hub.worker("--queue", "fails")
                try:
                    await h.submit("fails", ["x"], kind="fail", timeout=30)
                finally:
                    worker.kill()
                    worker.wait()

    run(main())


def test_pubsub_gives_each_subscription_its_own_async_iterator(hub):
    async def main():
        async with await taskhub.aio.connect(hub.url, key=KEY) as listener, \
                await taskhub.aio.connect(hub.url, key=KEY) as talker:
            cpu = await listener.subscribe("metrics.cpu")
            everything = await listener.subscribe("metrics.>")
            assert await talker.publish("metrics.cpu", 0.93) == 1
            assert await talker.publish("metrics.mem", b"\x01") == 1
            assert await cpu.get(timeout=5) == taskhub.Message("metrics.cpu", 0.93)
            got = []
            async for msg in everything:
                got.append(msg)
                if len(got) == 2:
                    await everything.unsubscribe()
            assert got == [("metrics.cpu", 0.93), ("metrics.mem", b"\x01")]
            assert await talker.publish("metrics.mem", 2) == 0
            with pytest.raises(queue.Empty):
                await cpu.get(timeout=0.2)
        # The connection closed: the iterator ends.
        assert [m async for m in cpu] == []

    run(main())


def test_the_asyncio_worker_runs_coroutines_concurrently_and_plain_functions_in_threads(hub):
    async def main():
        worker = taskhub.aio.Worker(hub.url, KEY, queues=["tasks"], concurrency=40,
                                    name="aio-box")
        now = {"running": 0, "peak": 0}

        @worker.handler("wait")
        async def wait(seconds):
            now["running"] += 1
            now["peak"] = max(now["peak"], now["running"])
            await asyncio.sleep(seconds)
            now["running"] -= 1
            return seconds

        @worker.handler("thread")
        def thread(_):
            return threading.get_ident()

        @worker.handler("reject")
        async def reject(n):
            raise taskhub.TaskError(f"{n} is not a number I take", retry=False)

        @worker.handler("flaky", task=True)
        async def flaky(task):
            raise RuntimeError(f"attempt {task.attempt}")

        running = asyncio.ensure_future(worker.run())
        async with await taskhub.aio.connect(hub.url, key=KEY) as h:
            assert await h.submit("tasks", [0.3] * 40, kind="wait", timeout=30) == [0.3] * 40
            assert now["peak"] == 40, "all forty waited at once"
            [ident] = await h.submit("tasks", [None], kind="thread", timeout=30)
            assert ident != threading.get_ident(), "a plain function runs off the loop"
            await h.put("tasks", 8, kind="reject", reply_to="out", max_attempts=5)
            assert (await h.get("out", timeout=20))["error"] == (
                "gave up after 1 attempt(s): 8 is not a number I take")
            await h.put("tasks", 1, kind="flaky", reply_to="out", max_attempts=2)
            assert (await h.get("out", timeout=20))["error"] == (
                "gave up after 2 attempt(s): RuntimeError: attempt 2")
            await h.put("tasks", 1, kind="resize", max_attempts=5)
            # tasks.dead holds the rejected and the flaky task first, then this one.
            dead = [await h.get("tasks.dead", timeout=20) for _ in range(3)][-1]
            assert dead["attempts"] == 1 and "unknown task kind 'resize'" in dead["error"]
            me = [w for w in (await h.stats())["workers"] if w.get("name") == "aio-box"][0]
            assert me["acked"] == 41

            # stop(): the running task finishes and is acked; the waiting ones go back.
            await h.put_many("tasks", [1.0] * 3, kind="wait", reply_to="done")
            while now["running"] < 3:
                await asyncio.sleep(0.02)
            worker.stop()
            await asyncio.wait_for(running, 20)
            finished = [await h.get("done", timeout=5) for _ in range(3)]
            assert all(r["ok"] for r in finished)
        assert worker.done == 44 and worker.failed == 4

    run(main())


def test_the_asyncio_worker_refuses_a_wrong_key(hub):
    async def main():
        worker = taskhub.aio.Worker(hub.url, "wrong-key-0123456789", queues=["tasks"])
        worker.add_handler("square", lambda n: n * n)
        with pytest.raises(taskhub.AuthError):
            await worker.run()

    run(main())


def test_several_urls_open_the_session_on_the_first_hub_that_answers(hub):
    async def main():
        async with await taskhub.aio.connect(f"ws://127.0.0.1:1,{hub.url}", key=KEY) as h:
            assert h.url == hub.url
            await h.queue("listed").put(2)
            assert await h.queue("listed").get(timeout=1) == 2

    run(main())


def test_a_cancelled_coroutine_handler_is_stopped_at_its_await(hub):
    async def main():
        worker = taskhub.aio.Worker(hub.url, KEY, queues=["tasks"], concurrency=1, prefetch=1)
        seen = []

        @worker.handler("nap")
        async def nap(seconds):
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            return seconds

        running = asyncio.ensure_future(worker.run())
        async with await taskhub.aio.connect(hub.url, key=KEY) as h:
            slow = await h.put("tasks", 60, kind="nap", reply_to="out")
            while not any(q["name"] == "tasks" and q["in_flight"] == 1
                          for q in (await h.stats())["queues"]):
                await asyncio.sleep(0.02)
            await h.put("tasks", 0.01, kind="nap", reply_to="out")
            assert await h.cancel(slow) == "leased"
            first = await h.get("out", timeout=5)
            assert first["cancelled"] and first["id"] == slow
            second = await h.get("out", timeout=20)
            assert second["ok"] and second["result"] == 0.01
            assert seen == ["cancelled"]
            worker.stop()
            await asyncio.wait_for(running, 20)
        assert (worker.done, worker.cancelled) == (1, 1)

    run(main())


def test_a_coroutine_handlers_progress_reaches_the_submitter(hub):
    async def main():
        worker = taskhub.aio.Worker(hub.url, KEY, queues=["tasks"], concurrency=1)

        @worker.handler("stepped", task=True)
        async def stepped(task):
            for i in range(4):
                worker.report_progress(task.id, (i + 1) / 4, None)
                await asyncio.sleep(0.15)
            return "done"

        running = asyncio.ensure_future(worker.run())
        heard = []
        async with await taskhub.aio.connect(hub.url, key=KEY) as h:
            h.on_progress = heard.append
            assert await h.submit("tasks", [None], kind="stepped", timeout=20) == ["done"]
            worker.stop()
            await asyncio.wait_for(running, 20)
        assert [r["fraction"] for r in heard][:2] == [0.25, 0.5], heard

    run(main())
