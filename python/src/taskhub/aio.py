"""The asyncio client: the blocking client's names, awaited.

    import taskhub.aio

    hub = await taskhub.aio.connect("ws://127.0.0.1:7878", key="...")
    tasks, results = hub.queue("tasks"), hub.queue("results")
    await tasks.put(3411, kind="square", reply_to="results")
    print(await results.get(timeout=10))        # queue.Empty (taskhub.Empty) after 10 s
    print(await hub.submit("tasks", [7, 8], kind="square"))
    async with await hub.subscribe("metrics.>") as sub:
        async for msg in sub:
            ...

One connection per `Hub`; a reader task hands each answer to the request waiting for it, so
requests from many tasks may share one `Hub` and are pipelined.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import queue as _queue
import signal
import threading
import time
from collections import deque
from typing import Any, AsyncIterator, Deque, Dict, Iterable, List, Optional, Set

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as _ws_connect
from websockets.exceptions import ConnectionClosed as _WsClosed

from . import _protocol as p
from ._protocol import Message, TaskFailed
from .client import (DEFAULT_URL, MAX_INBOUND, PIPELINE, PUTS_PER_SEND, Buffered, Dispatch,
                     Listener)
from .client import _closed, cannot_connect, tls_context
from .worker import (TICK, Task, TaskError, _Base, _Connection, _refused, _Running,
                     backoff_delay, encode_outcome, failure, log)

__all__ = ["Hub", "Message", "Queue", "Subscription", "Task", "TaskError", "TaskFailed",
           "Worker", "connect"]


async def connect(url: Optional[str] = None, key: Optional[str] = None, *,
                  token: Optional[str] = None, key_id: Optional[str] = None,
                  key_file: Optional[str] = None, cafile: Optional[str] = None,
                  timeout: float = 10.0, role: str = "producer",
                  name: Optional[str] = None, batch: bool = True,
                  credentials: Optional[p.Credentials] = None,
                  listener: Optional[Listener] = None) -> "Hub":
    """Connect and authenticate, as `taskhub.connect` does (the same options and environment
    variables)."""
    url = url or os.environ.get("TASKHUB_URL") or DEFAULT_URL
    cafile = cafile or os.environ.get("TASKHUB_CA")
    creds = credentials or p.credentials(key, token, key_id, key_file)
    # Several hubs, comma-separated: the first that answers, as `taskhub.connect`.
    failure = p.ConnectionClosed("no hub URL given")
    for one in p.hub_urls(url):
        try:
            ws = await _ws_connect(one, ssl=tls_context(one, cafile), max_size=MAX_INBOUND,
                                   open_timeout=timeout, close_timeout=2)
            break
        except Exception as e:  # OSError, timeouts, websockets' refusals (HTTP 400, 426, 403)
            failure = cannot_connect(one, e)
    else:
        raise failure
    url = one
    hs = p.Handshake(creds, role, name, batch)
    try:
        await ws.send(p.encode(hs.answer(await _recv_one(ws, timeout))))
        welcome = hs.finish(await _recv_one(ws, timeout))
    except BaseException:
        await ws.close()
        raise
    return Hub(ws, url, welcome, listener)


async def _recv_one(ws: ClientConnection, timeout: float) -> Dict[str, Any]:
    try:
        frame = await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        raise p.ConnectionClosed(f"the hub said nothing for {timeout} s") from None
    except _WsClosed as e:
        raise _closed(e) from None
    return p.decode_one(frame)


class Hub(Dispatch):
    """A session with a hub; made by `await taskhub.aio.connect(...)`. Close it with
    `await hub.close()` or `async with`."""

    def __init__(self, ws: ClientConnection, url: str, welcome: Dict[str, Any],
                 listener: Optional[Listener] = None):
        self._ws = ws
        self._listener = listener
        self.url = url
        self.session: int = welcome["session"]
        self.inbox: str = welcome["inbox"]
        self.limits: Dict[str, Any] = welcome["limits"]
        self._next_req = 0
        self._pending: Dict[int, "asyncio.Future[Dict[str, Any]]"] = {}
        self._replies: Dict[int, Dict[str, Any]] = {}
        self._waiting: Dict[int, "asyncio.Future[Dict[str, Any]]"] = {}
        self._abandoned: Set[int] = set()
        self._closed: Optional[p.ConnectionClosed] = None
        self._subscriptions: List[Subscription] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self._ws:
                for msg in p.decode(frame):
                    self._dispatch(msg)
            rcvd = self._ws.protocol.close_rcvd
            gone = p.closed_message(None if rcvd is None else rcvd.code,
                                    "" if rcvd is None else rcvd.reason)
        except _WsClosed as e:
            gone = _closed(e)
        except Exception as e:  # a frame that does not decode: the session is unusable
            gone = p.ConnectionClosed(f"unreadable frame from the hub: {e}")
            await self._ws.close()
        self._closed = gone
        for f in list(self._pending.values()) + list(self._waiting.values()):
            if not f.done():
                f.set_exception(gone)
        self._pending.clear()
        self._waiting.clear()
        for sub in self._subscriptions:
            sub._end()
        self._subscriptions.clear()
        if self._listener is not None:
            self._listener.closed(gone)

    def _reply(self, msg: Dict[str, Any]) -> None:
        task = msg["id"]
        waiter = self._waiting.pop(task, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(msg)
        elif task in self._abandoned:
            self._abandoned.discard(task)
        else:
            self._replies[task] = msg

    def _message(self, msg: Message) -> None:
        for sub in self._subscriptions:
            if p.matches(sub.pattern, msg.topic):
                sub._offer(msg)

    def _answer(self, req: int, msg: Dict[str, Any]) -> None:
        f = self._pending.pop(req, None)
        if f is not None and not f.done():
            f.set_result(msg)

    async def send_request(self, msg: Dict[str, Any], place: Optional[str] = None
                           ) -> "asyncio.Future[Dict[str, Any]]":
        """Send a request and return a future of the hub's answer (the message itself, an
        `error` too), without waiting for it: requests sent this way are pipelined."""
        f, frame = self._prepare(msg, place)
        await self.send_frames([frame])
        return f

    def _prepare(self, msg: Dict[str, Any], place: Optional[str]
                 ) -> "tuple[asyncio.Future[Dict[str, Any]], p.Frame]":
        """A request's frame, with a `req` whose answer will resolve the future."""
        if self._closed:
            raise self._closed
        self._next_req += 1
        f: asyncio.Future[Dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_req] = f
        return f, p.encode(dict(msg, req=self._next_req), place)

    async def send_frames(self, frames: List[p.Frame]) -> None:
        """Send encoded messages, text ones joined into as few frames as the hub allows."""
        limit = min(p.JOINED_FRAME_BYTES, int(self.limits.get("max_message_bytes", 1 << 20)))
        try:
            for frame in p.join(frames, limit):
                await self._ws.send(frame)
        except _WsClosed as e:
            raise _closed(e) from None

    async def request(self, msg: Dict[str, Any], place: Optional[str] = None,
                      timeout: Optional[float] = None) -> Dict[str, Any]:
        """Send a request and return the hub's answer; an `error` answer raises `HubError`."""
        f = await self.send_request(msg, place)
        return p.checked(await asyncio.wait_for(f, timeout))

    def queue(self, name: str) -> "Queue":
        """The queue `name` (created by the hub when first used)."""
        return Queue(self, name)

    async def put(self, queue: str, payload: Any, *, kind: Optional[str] = None,
                  reply_to: Optional[str] = None, max_attempts: Optional[int] = None,
                  dedup_id: Optional[str] = None, priority: int = 0,
                  delay: Optional[float] = None, not_before: Optional[p.When] = None,
                  backoff: Optional[float] = None, backoff_max: Optional[float] = None,
            replicas: int = 0, quorum: Optional[int] = None,
            max_replicas: Optional[int] = None) -> int:
        """Add a task to `queue` once the hub has stored it; returns its id. `priority` 0 to 9
        (higher goes first); ready `delay` seconds after, or at `not_before`, not before; a
        failed attempt is retried after `backoff` seconds, doubling up to `backoff_max`. With
        `replicas`, it runs on that many different workers and its result is accepted only when
        `quorum` of them (default a majority) return the same bytes; when they disagree, up to
        `max_replicas` run, then it is dead-lettered."""
        schedule = p.schedule_fields(priority, delay, not_before, backoff, backoff_max,
                                     replicas, quorum, max_replicas)
        answer = await self.request(*p.put_request(queue, payload, kind, reply_to, max_attempts,
                                                   dedup_id, schedule))
        return int(answer["task"])

    async def put_many(self, queue: str, payloads: Iterable[Any], *,
                       kind: Optional[str] = None, reply_to: Optional[str] = None,
                       max_attempts: Optional[int] = None, priority: int = 0,
                       delay: Optional[float] = None,
                       not_before: Optional[p.When] = None,
                       backoff: Optional[float] = None, backoff_max: Optional[float] = None,
            replicas: int = 0, quorum: Optional[int] = None,
            max_replicas: Optional[int] = None) -> List[int]:
        """Put each payload, pipelined (at most `PIPELINE` unanswered at a time); the task ids
        in order. A refused put raises `HubError`; the puts before it stay queued."""
        ids: List[int] = []
        window: Deque[asyncio.Future[Dict[str, Any]]] = deque()
        frames: List[p.Frame] = []
        schedule = p.schedule_fields(priority, delay, not_before, backoff, backoff_max,
                                     replicas, quorum, max_replicas)
        for v in payloads:
            f, frame = self._prepare(*p.put_request(queue, v, kind, reply_to, max_attempts,
                                                    schedule=schedule))
            window.append(f)
            frames.append(frame)
            if len(frames) >= PUTS_PER_SEND:  # several puts to a frame
                await self.send_frames(frames)
                frames = []
            while len(window) > PIPELINE:
                ids.append(int(p.checked(await window.popleft())["task"]))
        await self.send_frames(frames)
        for f in window:
            ids.append(int(p.checked(await f)["task"]))
        return ids

    async def get(self, queue: str, timeout: Optional[float] = None) -> Any:
        """Take the payload at the front of `queue`, waiting up to `timeout` seconds (`None`:
        as long as it takes); `queue.Empty` if none came."""
        while True:
            answer = await self.request(p.get_request(queue, timeout))
            if answer["type"] == "task":
                return answer["task"]["payload"]
            if timeout is not None:
                raise _queue.Empty(f"queue {queue} is empty after {timeout} s")

    async def submit(self, queue: str, payloads: Iterable[Any], *, kind: Optional[str] = None,
                     timeout: Optional[float] = None, priority: int = 0,
                     delay: Optional[float] = None,
                     not_before: Optional[p.When] = None,
                     backoff: Optional[float] = None, backoff_max: Optional[float] = None,
            replicas: int = 0, quorum: Optional[int] = None,
            max_replicas: Optional[int] = None) -> List[Any]:
        """Put every payload with this session's inbox as `reply_to` and return their results
        in order; `TaskFailed` if one failed, `TimeoutError` if they did not all come within
        `timeout` seconds."""
        ids = await self.put_many(queue, payloads, kind=kind, reply_to=self.inbox,
                                  priority=priority, delay=delay, not_before=not_before,
                                  backoff=backoff, backoff_max=backoff_max, replicas=replicas,
                            quorum=quorum, max_replicas=max_replicas)
        loop = asyncio.get_running_loop()
        waits: Dict[int, asyncio.Future[Dict[str, Any]]] = {}
        for task in ids:
            if task not in self._replies:
                waits[task] = self._waiting[task] = loop.create_future()
        try:
            if waits:
                await asyncio.wait_for(asyncio.gather(*waits.values()), timeout)
        except asyncio.TimeoutError:
            late = [t for t, w in waits.items() if w.cancelled() or not w.done()]
            for t in ids:
                self._waiting.pop(t, None)
                self._replies.pop(t, None)
            self._abandoned.update(late)  # their replies are dropped when they come
            raise TimeoutError(f"{len(late)} of {len(ids)} results did not come within "
                               f"{timeout} s") from None
        return p.results([waits[t].result() if t in waits else self._replies.pop(t)
                          for t in ids])

    async def publish(self, topic: str, payload: Any) -> int:
        """Send `payload` to every session subscribed to a pattern matching `topic` (at most
        once); returns how many sessions received it."""
        value, place = p.payload_place(payload, "payload")
        answer = await self.request({"type": "publish", "topic": topic, "payload": value}, place)
        return int(answer["receivers"])

    async def subscribe(self, pattern: str, maxsize: int = 1024) -> "Subscription":
        """Messages on topics matching `pattern`, from now on, as an async iterator; at most
        `maxsize` wait unread (more are dropped and counted in `dropped`)."""
        if self._closed:
            raise self._closed
        sub = Subscription(self, pattern, maxsize)
        self._subscriptions.append(sub)
        try:
            await self.request({"type": "subscribe", "pattern": pattern})
        except BaseException:
            self._forget(sub)
            raise
        return sub

    def _forget(self, sub: "Subscription") -> bool:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)
        return any(s.pattern == sub.pattern for s in self._subscriptions)

    async def stats(self) -> Dict[str, Any]:
        """Queues, sessions and workers, as the hub's `stats` answer has them."""
        return p.stats_of(await self.request({"type": "stats"}))

    async def cancel(self, task: int) -> str:
        """Cancel task `task` wherever it is; returns where it was (`ready`, `scheduled` or
        `leased`). As the blocking `Hub.cancel`."""
        return str((await self.request({"type": "cancel", "task": task}))["state"])

    async def close(self) -> None:
        """Close the session; leased tasks go back to their queues."""
        await self._ws.close()
        await self._reader

    async def __aenter__(self) -> "Hub":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class Queue:
    """One queue of a hub, with the seed's `put` and `get`, awaited."""

    def __init__(self, hub: Hub, name: str):
        self.hub = hub
        self.name = name

    async def put(self, payload: Any, *, kind: Optional[str] = None,
                  reply_to: Optional[str] = None, max_attempts: Optional[int] = None,
                  dedup_id: Optional[str] = None, priority: int = 0,
                  delay: Optional[float] = None, not_before: Optional[p.When] = None,
                  backoff: Optional[float] = None, backoff_max: Optional[float] = None,
            replicas: int = 0, quorum: Optional[int] = None,
            max_replicas: Optional[int] = None) -> int:
        """Add a task; returns its id once the hub has stored it."""
        return await self.hub.put(self.name, payload, kind=kind, reply_to=reply_to,
                                  max_attempts=max_attempts, dedup_id=dedup_id,
                                  priority=priority, delay=delay, not_before=not_before,
                                  backoff=backoff, backoff_max=backoff_max, replicas=replicas,
                            quorum=quorum, max_replicas=max_replicas)

    async def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Take the next payload; `queue.Empty` when none came."""
        return await self.hub.get(self.name, timeout if block else 0)

    async def get_nowait(self) -> Any:
        return await self.get(block=False)

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"


class Subscription(Buffered):
    """An async iterator over the messages matching one pattern; ends when unsubscribed or when
    the connection closes."""

    def __init__(self, hub: Hub, pattern: str, maxsize: int):
        super().__init__(hub, pattern, asyncio.Queue(maxsize), asyncio.QueueFull,
                         asyncio.QueueEmpty)
        self.hub: Hub = hub

    async def get(self, timeout: Optional[float] = None) -> Message:
        """The next message; `queue.Empty` if none came within `timeout`, `ConnectionClosed`
        once the subscription has ended."""
        try:
            item = await asyncio.wait_for(self._messages.get(), timeout)
        except asyncio.TimeoutError:
            raise _queue.Empty(f"no message on {self.pattern} within {timeout} s") from None
        return self._taken(item)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.get()
            except p.ConnectionClosed:
                return

    async def unsubscribe(self) -> None:
        """Stop receiving; the hub stops sending once no subscription here uses the pattern."""
        if self._done:
            return
        if not self.hub._forget(self) and not self.hub._closed:
            await self.hub.request({"type": "unsubscribe", "pattern": self.pattern})
        self._end()

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.unsubscribe()


class Worker(_Base):
    """The asyncio worker: `taskhub.Worker`'s behaviour (leases, the adaptive window, touches,
    reconnects, a graceful SIGTERM, unknown kinds dead-lettered) on an event loop.

        worker = taskhub.aio.Worker("ws://127.0.0.1:7878", key="...", queues=["fetch"],
                                    concurrency=100)

        @worker.handler("fetch")
        async def fetch(url):
            ...

        await worker.run()

    Up to `concurrency` handlers run at once (default 10): coroutine functions on the loop, plain
    functions in threads (`asyncio.to_thread`). The options are `taskhub.Worker`'s, without
    `executor`."""

    def __init__(self, url: Optional[str] = None, key: Optional[str] = None,
                 **options: Any):
        super().__init__(url, key, **options)
        self._hub: Optional[Hub] = None
        self._gone: Optional[p.ConnectionClosed] = None
        self._stop_asked = False
        self._leave_now = False
        self._changed: Optional[asyncio.Event] = None
        self._output: Optional[asyncio.Event] = None
        self._jobs: Set["asyncio.Task[None]"] = set()
        # Coroutine handlers running, by task id: a cancel stops them at their next await.
        self._coroutines: Dict[int, "asyncio.Task[Any]"] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def default_concurrency(self) -> int:
        """Ten coroutines: asyncio handlers are ones that wait."""
        return 10

    def stop(self, now: bool = False) -> None:
        """Stop taking tasks and let running ones finish (up to `stop_grace` seconds); with
        `now`, leave at once (running coroutine handlers are cancelled). Call it on the loop."""
        self._stop_asked = True
        self._leave_now = self._leave_now or now
        if self._changed is not None:
            self._changed.set()

    def _on_signal(self) -> None:
        """The first SIGTERM/SIGINT stops gracefully, a second leaves at once."""
        self.stop(now=self._stop_asked)

    async def run(self) -> None:
        """Connect and run tasks until `stop()`, SIGTERM or SIGINT (handled when the loop runs
        on the main thread), or `exit_when_idle`. Raises `AuthError` and `HubError` as
        `taskhub.Worker.run` does."""
        self._check_handlers()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._changed = asyncio.Event()
        self._output = asyncio.Event()
        caught = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self._on_signal)
                    caught.append(sig)
                except (NotImplementedError, RuntimeError):
                    pass
        sender = loop.create_task(self._sender())
        try:
            await self._control()
        finally:
            for sig in caught:
                loop.remove_signal_handler(sig)
            sender.cancel()
            for job in list(self._jobs):
                job.cancel()

    async def _control(self) -> None:
        failures = 0
        number = 0
        while not self._stop_asked:
            number += 1
            try:
                hub = await connect(self.url, cafile=self._cafile, timeout=self.connect_timeout,
                                    role="worker", name=self.name, batch=True,
                                    credentials=self._creds,
                                    listener=_Connection(self, number))
            except p.AuthError:
                raise
            except (p.TaskhubError, OSError) as e:
                await self._back_off(failures, str(e))
                failures += 1
                continue
            failures = 0
            try:
                ended = await self._serve(hub, number)
            finally:
                await hub.close()
            if ended:
                return
            if not self._stop_asked:
                await self._back_off(0, str(self._gone))

    async def _back_off(self, failures: int, reason: str) -> None:
        delay = backoff_delay(self.backoff, failures)
        log.warning("hub unreachable (%s); retrying in %.1f s", reason, delay)
        assert self._changed is not None
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), delay)  # stop() cuts it short
        except asyncio.TimeoutError:
            pass

    async def _serve(self, hub: Hub, number: int) -> bool:
        """Consume on one connection until it is lost (False) or the worker stopped (True)."""
        s = self._leases
        assert self._changed is not None
        consume = s.connected(number, hub.limits)
        self._hub = hub
        self._gone = None
        log.info("connected to %s as session %s; consuming %s", hub.url, hub.session,
                 ", ".join(self.queues))
        try:
            await hub.request(consume, timeout=self.connect_timeout)
        except p.HubError as e:
            raise _refused(self.queues, e) from None
        except (p.TaskhubError, asyncio.TimeoutError):
            return False
        stop_deadline: Optional[float] = None
        while True:
            if self._gone is not None:
                return s.stopping
            now = time.monotonic()
            if self._stop_asked and not s.stopping:
                s.begin_stop()
                self._send_soon()
                stop_deadline = now + self.stop_grace
            if s.stopping and s.stop_result(self._leave_now, stop_deadline, now):
                await self._drain()
                return True
            if s.touch_due(now):
                self._send_soon()
            if s.idle(now):
                log.info("idle for %.1f s; stopping", now - s.last_busy)
                self._stop_asked = True
                continue
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), TICK)
            except asyncio.TimeoutError:
                pass

    async def _drain(self) -> None:
        """Send what is still waiting (the acks of the last tasks) before closing."""
        s = self._leases
        if s.out and self._hub is not None:
            frames, s.out = s.out, []
            try:
                await self._hub.send_frames(frames)
            except p.TaskhubError:
                pass

    def _send_soon(self) -> None:
        assert self._output is not None
        self._output.set()

    async def _sender(self) -> None:
        """Sends what waits, once per wake: acks made in one turn of the loop leave together."""
        s = self._leases
        assert self._output is not None
        while True:
            await self._output.wait()
            self._output.clear()
            frames, s.out = s.out, []
            if frames and self._hub is not None and self._gone is None:
                try:
                    await self._hub.send_frames(frames)
                except p.TaskhubError:
                    pass  # the reader reports the connection lost

    # -- events from the connection (on the loop) ----------------------------------------------

    def _on_deliver(self, number: int, task: Dict[str, Any]) -> None:
        if self._leases.deliver(number, task):
            self._pump()
        elif self._leases.out:
            self._send_soon()

    def _on_cancel(self, number: int, task: int) -> None:
        self._leases.cancel(number, task)
        job = self._coroutines.get(task)
        if job is not None and self._leases.is_cancelled(task):
            job.cancel()  # a coroutine handler stops at its next await

    def is_cancelled(self, task_id: int) -> bool:
        """Whether a client cancelled task `task_id` while it runs here: a long handler asks
        between steps (or awaits) and returns early; what it returns is dropped."""
        return self._leases.is_cancelled(task_id)

    def report_progress(self, task_id: int, fraction: float,
                        message: Optional[str] = None) -> None:
        """Say how far running task `task_id` has got, as `taskhub.Worker.report_progress`
        does; from a coroutine handler, or from a plain function's thread."""
        loop = self._loop
        if loop is None:
            return

        def report() -> None:
            if self._leases.report(task_id, fraction, message, time.monotonic()):
                self._send_soon()

        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            report()
        else:
            loop.call_soon_threadsafe(report)

    def _on_closed(self, number: int, why: p.ConnectionClosed) -> None:
        if not self._leases.lost(number):
            return
        self._gone = why
        if self._changed is not None:
            self._changed.set()
        if not self._stop_asked:
            log.warning("lost the hub: %s", why)

    def _pump(self) -> None:
        """Start waiting tasks while run slots are free."""
        s = self._leases
        loop = asyncio.get_running_loop()
        while len(s.running) < self.concurrency and not s.stopping:
            started = s.start()
            if started is None:
                return
            job = loop.create_task(self._run_one(*started))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)

    async def _run_one(self, token: int, task: Dict[str, Any], run: _Running) -> None:
        s = self._leases
        limit = s.max_message_bytes
        try:
            h, arg = self._call(task)
            if inspect.iscoroutinefunction(h.fn):
                current = asyncio.current_task()
                if current is not None:
                    self._coroutines[task["id"]] = current
                try:
                    value = await h.fn(arg)
                finally:
                    self._coroutines.pop(task["id"], None)
            else:
                value = await asyncio.to_thread(h.fn, arg)
            ok, retry = True, True
        except asyncio.CancelledError:
            if not run.cancelled:
                raise  # leaving now: the hub hands the task to another worker
            # A client cancelled it: the slot is free, and nothing is sent.
            ok, value, retry = False, "cancelled", False
        except Exception as e:
            log.debug("task %s failed", task["id"], exc_info=True)
            ok, value, retry = failure(e)
        s.finish(token, run, ok, encode_outcome(task["id"], ok, value, retry, limit))
        self._send_soon()
        if s.stopping and self._changed is not None:
            self._changed.set()
        self._pump()
