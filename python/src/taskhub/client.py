"""The blocking client: `connect(url, key=...)` gives a `Hub`, `hub.queue(name)` a `Queue` with the
seed's `put` and `get(timeout=...)` (raising `queue.Empty`).

One connection per `Hub`. A reader thread takes every frame the hub sends and hands each answer to
the request waiting for it (matched by `req`), and each outcome on the session's inbox to the
`submit` waiting for it; so requests from several threads may share one `Hub`.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue as _queue
import ssl
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import (Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Protocol,
                    Set)

from websockets.exceptions import ConnectionClosed as _WsClosed
from websockets.sync.client import connect as _ws_connect

from . import _protocol as p
from ._protocol import Message, TaskFailed

log = logging.getLogger("taskhub.client")

__all__ = ["Hub", "Message", "Queue", "Subscription", "TaskFailed", "connect"]

#: Largest frame accepted from the hub (answers may be a little over its max_message_bytes).
MAX_INBOUND = 64 << 20
#: Requests `put_many` and `submit` keep unanswered at a time.
PIPELINE = 1024
#: Puts `put_many` and `submit` send at once.
PUTS_PER_SEND = 64
#: The hub's answer to a request: a protocol message (an `error` too).
Answer = Future[Dict[str, Any]]
#: Where `connect()` goes when given no URL and `TASKHUB_URL` is not set.
DEFAULT_URL = "ws://127.0.0.1:7878"


class Listener(Protocol):
    """What a `Hub` tells its owner besides answers (the worker is one); called on the reader
    thread."""

    def deliver(self, task: Dict[str, Any]) -> None:
        """A `deliver` message's task."""

    def notice(self, msg: Dict[str, Any]) -> None:
        """A message without `req`: the error answering a request sent without one."""

    def cancel(self, task: int) -> None:
        """A `cancel` message: a client cancelled this leased task."""

    def closed(self, why: "p.ConnectionClosed") -> None:
        """The connection is gone."""


class Dispatch:
    """Hands each message from the hub to its place: a reply to `submit`, a pub/sub message to
    the subscriptions, a delivery or a notice to the listener, an answer to its request. The
    blocking and the asyncio `Hub` fill in the places, each with its own kind of waiting."""

    _listener: Optional[Listener]
    _closed: Optional[p.ConnectionClosed]
    #: Called with each progress report of a task whose `reply_to` is this session's inbox
    #: (`submit`'s tasks): `{"task": id, "fraction": 0.25, "message": "..."}` (`message` when
    #: the worker sent one). On the reader thread (the event loop for `taskhub.aio`): keep it
    #: short. At most once: a session that does not keep up may miss reports.
    on_progress: Optional[Callable[[Dict[str, Any]], None]] = None

    def _dispatch(self, msg: Dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "reply":
            self._reply(msg)
        elif kind == "message":
            self._message(Message(msg["topic"], msg.get("payload")))
        elif kind == "deliver":
            if self._listener is not None:
                self._listener.deliver(msg["task"])
        elif kind == "cancel":
            if self._listener is not None:
                self._listener.cancel(msg["task"])
        elif kind == "progress":
            report = self.on_progress
            if report is not None:
                try:
                    report({k: v for k, v in msg.items() if k != "type"})
                except Exception:
                    log.exception("on_progress raised")
        elif msg.get("req") is None:
            # An error answering a request sent without `req`, or a farewell error before Close
            # (the close code says the rest).
            if self._listener is not None:
                self._listener.notice(msg)
        else:
            self._answer(msg["req"], msg)

    def _reply(self, msg: Dict[str, Any]) -> None:
        raise NotImplementedError

    def _message(self, msg: Message) -> None:
        raise NotImplementedError

    def _answer(self, req: int, msg: Dict[str, Any]) -> None:
        raise NotImplementedError


class Hub(Dispatch):
    """A session with a hub. Use `taskhub.connect(...)`; close it with `close()` or `with`."""

    def __init__(self, url: Optional[str] = None, key: Optional[str] = None, *,
                 token: Optional[str] = None, key_id: Optional[str] = None,
                 key_file: Optional[str] = None, cafile: Optional[str] = None,
                 timeout: float = 10.0, role: str = "producer", name: Optional[str] = None,
                 batch: bool = True, credentials: Optional[p.Credentials] = None,
                 listener: Optional["Listener"] = None):
        url = url or os.environ.get("TASKHUB_URL") or DEFAULT_URL
        cafile = cafile or os.environ.get("TASKHUB_CA")
        creds = credentials or p.credentials(key, token, key_id, key_file)
        self._listener = listener
        # Several hubs, comma-separated: the first that answers (a refused key is not tried
        # elsewhere: the handshake is not retried).
        failure = p.ConnectionClosed("no hub URL given")
        for one in p.hub_urls(url):
            try:
                # Entered as a context manager, as websockets asks; `close()` leaves it.
                self._ws = _ws_connect(one, ssl=tls_context(one, cafile), max_size=MAX_INBOUND,
                                       open_timeout=timeout, close_timeout=2).__enter__()
                break
            except Exception as e:  # OSError, and websockets' refusals (HTTP 400, 426, 403)
                failure = cannot_connect(one, e)
        else:
            raise failure
        self.url = one
        hs = p.Handshake(creds, role, name, batch)
        try:
            self._send(hs.answer(self._recv_one(timeout)))
            welcome = hs.finish(self._recv_one(timeout))
        except BaseException:
            self._ws.close()
            raise
        self.session: int = welcome["session"]
        self.inbox: str = welcome["inbox"]
        self.limits: Dict[str, Any] = welcome["limits"]
        self._reqs = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: Dict[int, Answer] = {}
        self._replies: Dict[int, Dict[str, Any]] = {}
        self._abandoned: Set[int] = set()  # submitted tasks whose submit gave up waiting
        self._awaited: Set[int] = set()  # the tasks submits are waiting on now
        self._reply_arrived = threading.Condition(self._lock)
        self._closed: Optional[p.ConnectionClosed] = None
        self._subscriptions: List["Subscription"] = []
        self._reader = threading.Thread(target=self._read, name="taskhub-reader", daemon=True)
        self._reader.start()

    # -- the connection ------------------------------------------------------------------------

    def _recv_one(self, timeout: float) -> Dict[str, Any]:
        try:
            frame = self._ws.recv(timeout=timeout)
        except TimeoutError:
            raise p.ConnectionClosed(f"the hub said nothing for {timeout} s") from None
        except _WsClosed as e:
            raise _closed(e) from None
        return p.decode_one(frame)

    def _send(self, msg: Dict[str, Any], place: Optional[str] = None) -> None:
        try:
            self._ws.send(p.encode(msg, place))
        except _WsClosed as e:
            raise _closed(e) from None

    def _read(self) -> None:
        try:
            while True:
                for msg in p.decode(self._ws.recv()):
                    self._dispatch(msg)
        except _WsClosed as e:
            gone = _closed(e)
        except Exception as e:  # a frame that does not decode: the session is unusable
            gone = p.ConnectionClosed(f"unreadable frame from the hub: {e}")
            self._ws.close()
        with self._lock:
            self._closed = gone
            pending, self._pending = self._pending, {}
            subs, self._subscriptions = self._subscriptions, []
            self._reply_arrived.notify_all()
        for f in pending.values():
            f.set_exception(gone)
        for sub in subs:
            sub._end()
        if self._listener is not None:
            self._listener.closed(gone)

    def _reply(self, msg: Dict[str, Any]) -> None:
        with self._lock:
            if msg["id"] in self._abandoned:
                self._abandoned.discard(msg["id"])
                return
            self._replies[msg["id"]] = msg
            if msg["id"] in self._awaited:  # wake a submit only for what it waits on
                self._reply_arrived.notify_all()

    def _message(self, msg: Message) -> None:
        with self._lock:
            subs = [s for s in self._subscriptions if p.matches(s.pattern, msg.topic)]
        for sub in subs:
            sub._offer(msg)

    def _answer(self, req: int, msg: Dict[str, Any]) -> None:
        with self._lock:
            f = self._pending.pop(req, None)
        if f is not None:
            f.set_result(msg)

    def send_frames(self, frames: List[p.Frame]) -> None:
        """Send encoded messages, text ones joined into as few frames as the hub allows."""
        limit = min(p.JOINED_FRAME_BYTES, int(self.limits.get("max_message_bytes", 1 << 20)))
        try:
            for frame in p.join(frames, limit):
                self._ws.send(frame)
        except _WsClosed as e:
            raise _closed(e) from None

    def request(self, msg: Dict[str, Any], place: Optional[str] = None,
                timeout: Optional[float] = None) -> Dict[str, Any]:
        """Send a request (a protocol message without `req`) and return the hub's answer;
        an `error` answer raises `HubError`."""
        return p.checked(self.send_request(msg, place).result(timeout))

    def send_request(self, msg: Dict[str, Any], place: Optional[str] = None) -> Answer:
        """Send a request without waiting: a `Future` of the hub's answer (the message itself,
        an `error` too). Requests sent this way are pipelined."""
        f, frame = self._prepare(msg, place)
        self.send_frames([frame])
        return f

    def _prepare(self, msg: Dict[str, Any], place: Optional[str]) -> "tuple[Answer, p.Frame]":
        """A request's frame, with a `req` whose answer will resolve the future."""
        f: Answer = Future()
        with self._lock:
            if self._closed:
                raise self._closed
            req = next(self._reqs)
            self._pending[req] = f
        return f, p.encode(dict(msg, req=req), place)

    # -- the API -------------------------------------------------------------------------------

    def queue(self, name: str) -> "Queue":
        """The queue `name` (created by the hub when first used)."""
        return Queue(self, name)

    def put(self, queue: str, payload: Any, *, kind: Optional[str] = None,
            reply_to: Optional[str] = None, max_attempts: Optional[int] = None,
            dedup_id: Optional[str] = None, priority: int = 0, delay: Optional[float] = None,
            not_before: Optional[p.When] = None,
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
        f = self.send_request(*p.put_request(queue, payload, kind, reply_to, max_attempts,
                                             dedup_id, schedule))
        return int(p.checked(f.result())["task"])

    def put_many(self, queue: str, payloads: Iterable[Any], *, kind: Optional[str] = None,
                 reply_to: Optional[str] = None, max_attempts: Optional[int] = None,
                 priority: int = 0, delay: Optional[float] = None,
                 not_before: Optional[p.When] = None,
                 backoff: Optional[float] = None, backoff_max: Optional[float] = None,
            replicas: int = 0, quorum: Optional[int] = None,
            max_replicas: Optional[int] = None) -> List[int]:
        """Put each payload, pipelined (at most `PIPELINE` puts unanswered at a time), and
        return the task ids in order once the hub has stored them all. If a put is refused
        (`queue_full`, ...), `HubError` is raised after the puts before it were answered; those
        tasks stay queued."""
        ids: List[int] = []
        window: Deque[Answer] = deque()
        frames: List[p.Frame] = []
        schedule = p.schedule_fields(priority, delay, not_before, backoff, backoff_max,
                                     replicas, quorum, max_replicas)
        for v in payloads:
            f, frame = self._prepare(*p.put_request(queue, v, kind, reply_to, max_attempts,
                                                    schedule=schedule))
            window.append(f)
            frames.append(frame)
            # Puts leave several to a frame (the hub reads them one by one).
            if len(frames) >= PUTS_PER_SEND:
                self.send_frames(frames)
                frames = []
            while len(window) > PIPELINE:
                ids.append(int(p.checked(window.popleft().result())["task"]))
        self.send_frames(frames)
        while window:
            ids.append(int(p.checked(window.popleft().result())["task"]))
        return ids

    def get(self, queue: str, timeout: Optional[float] = None) -> Any:
        """Take the payload at the front of `queue`, waiting up to `timeout` seconds (`None`:
        as long as it takes); `queue.Empty` if none came."""
        while True:
            answer = self.request(p.get_request(queue, timeout))
            if answer["type"] == "task":
                return answer["task"]["payload"]
            if timeout is not None:
                raise _queue.Empty(f"queue {queue} is empty after {timeout} s")

    def submit(self, queue: str, payloads: Iterable[Any], *, kind: Optional[str] = None,
               timeout: Optional[float] = None, priority: int = 0,
               delay: Optional[float] = None, not_before: Optional[p.When] = None,
               backoff: Optional[float] = None, backoff_max: Optional[float] = None,
            replicas: int = 0, quorum: Optional[int] = None,
            max_replicas: Optional[int] = None) -> List[Any]:
        """Put every payload with this session's inbox as `reply_to`, wait for their outcomes,
        and return the results in the order given. A task that failed raises `TaskFailed`."""
        ids = self.put_many(queue, payloads, kind=kind, reply_to=self.inbox, priority=priority,
                            delay=delay, not_before=not_before, backoff=backoff,
                            backoff_max=backoff_max, replicas=replicas,
                            quorum=quorum, max_replicas=max_replicas)
        outcomes: List[Dict[str, Any]] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            for task in ids:
                while task not in self._replies:
                    if self._closed:
                        raise self._closed
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        # Their replies may still come: drop them then.
                        self._abandoned.update(t for t in ids if t not in self._replies)
                        for t in ids:
                            self._replies.pop(t, None)
                        raise TimeoutError(f"{len(ids) - len(outcomes)} of {len(ids)} results "
                                           f"did not come within {timeout} s")
                    self._awaited.add(task)
                    try:
                        self._reply_arrived.wait(left)
                    finally:
                        self._awaited.discard(task)
                outcomes.append(self._replies.pop(task))
        return p.results(outcomes)

    def publish(self, topic: str, payload: Any) -> int:
        """Send `payload` to every session subscribed to a pattern matching `topic` (at most
        once: nothing is stored); returns how many sessions received it."""
        value, place = p.payload_place(payload, "payload")
        answer = self.request({"type": "publish", "topic": topic, "payload": value}, place)
        return int(answer["receivers"])

    def subscribe(self, pattern: str, maxsize: int = 1024) -> "Subscription":
        """Messages on topics matching `pattern` (`*` one token, `>` the rest), from now on,
        as an iterator. At most `maxsize` wait unread; more are dropped, as the hub drops
        messages for a subscriber that does not keep up."""
        sub = Subscription(self, pattern, maxsize)
        with self._lock:
            if self._closed:
                raise self._closed
            self._subscriptions.append(sub)
        try:
            self.request({"type": "subscribe", "pattern": pattern})
        except BaseException:
            self._forget(sub)
            raise
        return sub

    def _forget(self, sub: "Subscription") -> bool:
        """Stop routing to `sub`; whether another subscription still uses its pattern."""
        with self._lock:
            if sub in self._subscriptions:
                self._subscriptions.remove(sub)
            return any(s.pattern == sub.pattern for s in self._subscriptions)

    def stats(self) -> Dict[str, Any]:
        """Queues, sessions and workers, as the hub's `stats` answer has them."""
        return p.stats_of(self.request({"type": "stats"}))

    def cancel(self, task: int) -> str:
        """Cancel task `task` wherever it is; returns where it was (`ready`, `scheduled`, or
        `leased`: its worker was told to stop). Its `reply_to` hears `cancelled`; a `submit`
        waiting for it raises `TaskFailed` with `cancelled` set. `HubError` with code
        `unknown_task` when it is no longer waiting or running."""
        return str(self.request({"type": "cancel", "task": task})["state"])

    def close(self) -> None:
        """Close the session; leased tasks go back to their queues."""
        self._ws.close()
        self._reader.join(timeout=5)

    def __enter__(self) -> "Hub":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Queue:
    """One queue of a hub, with the seed's `put` and `get`."""

    def __init__(self, hub: Hub, name: str):
        self.hub = hub
        self.name = name

    def put(self, payload: Any, *, kind: Optional[str] = None, reply_to: Optional[str] = None,
            max_attempts: Optional[int] = None, dedup_id: Optional[str] = None,
            priority: int = 0, delay: Optional[float] = None,
            not_before: Optional[p.When] = None,
            backoff: Optional[float] = None, backoff_max: Optional[float] = None,
            replicas: int = 0, quorum: Optional[int] = None,
            max_replicas: Optional[int] = None) -> int:
        """Add a task; returns its id once the hub has stored it."""
        return self.hub.put(self.name, payload, kind=kind, reply_to=reply_to,
                            max_attempts=max_attempts, dedup_id=dedup_id, priority=priority,
                            delay=delay, not_before=not_before, backoff=backoff,
                            backoff_max=backoff_max, replicas=replicas,
                            quorum=quorum, max_replicas=max_replicas)

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Take the next payload, as `queue.Queue.get` does: `queue.Empty` when none came."""
        return self.hub.get(self.name, timeout if block else 0)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"


class Buffered:
    """The unread messages of one subscription, bounded: at most `maxsize` wait (more are dropped
    and counted in `dropped`), then an end marker once it has ended. The blocking and the asyncio
    subscription each give it their kind of queue."""

    #: Stands for "no more messages" in the queue.
    END: Any = object()

    def __init__(self, hub: Dispatch, pattern: str, messages: Any, full: "type[Exception]",
                 empty: "type[Exception]"):
        self.hub = hub
        self.pattern = pattern
        self.dropped = 0
        self._messages = messages
        self._full, self._empty = full, empty
        self._done = False

    def _offer(self, msg: Message) -> None:
        try:
            self._messages.put_nowait(msg)
        except self._full:
            self.dropped += 1

    def _end(self) -> None:
        self._done = True
        # Wake a reader even when the queue is full: make room for the end marker.
        while True:
            try:
                self._messages.put_nowait(self.END)
                return
            except self._full:
                try:
                    self._messages.get_nowait()
                except self._empty:
                    pass

    def _taken(self, item: Any) -> Message:
        """A message taken from the queue; `ConnectionClosed` for the end marker, which goes
        back for the next reader."""
        if item is self.END:
            self._messages.put_nowait(self.END)
            raise self.hub._closed or p.ConnectionClosed("unsubscribed")
        message: Message = item
        return message


class Subscription(Buffered):
    """An iterator over the messages matching one pattern; ends when it is unsubscribed or the
    connection closes. `get(timeout=...)` takes one, raising `queue.Empty`."""

    def __init__(self, hub: Hub, pattern: str, maxsize: int):
        super().__init__(hub, pattern, _queue.Queue(maxsize), _queue.Full, _queue.Empty)
        self.hub: Hub = hub

    def get(self, timeout: Optional[float] = None) -> Message:
        """The next message; `queue.Empty` if none came within `timeout`, `ConnectionClosed` once
        the subscription has ended."""
        return self._taken(self._messages.get(timeout=timeout))

    def __iter__(self) -> Iterator[Message]:
        while True:
            try:
                yield self.get()
            except p.ConnectionClosed:
                return

    def unsubscribe(self) -> None:
        """Stop receiving; the hub stops sending once no subscription here uses the pattern."""
        if self._done:
            return
        if not self.hub._forget(self) and not self.hub._closed:
            self.hub.request({"type": "unsubscribe", "pattern": self.pattern})
        self._end()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unsubscribe()


def tls_context(url: str, cafile: Optional[str]) -> Optional[ssl.SSLContext]:
    """What a `wss://` URL is opened with (`cafile`, else the system's CAs); `None` for `ws://`."""
    return ssl.create_default_context(cafile=cafile) if url.startswith("wss://") else None


def cannot_connect(url: str, e: BaseException) -> p.ConnectionClosed:
    """Why `url` could not be opened, with the error as its cause."""
    failure = p.ConnectionClosed(f"cannot connect to {url}: {e or 'timed out'}")
    failure.__cause__ = e
    return failure


def connect(url: Optional[str] = None, key: Optional[str] = None, **options: Any) -> Hub:
    """Connect and authenticate; see `Hub` for the options (`token=`, `key_file=`, `key_id=`,
    `cafile=`, `timeout=`, `name=`). `url` may list several hubs separated by commas: the session
    opens on the first that answers. Without a URL or credentials it reads the environment the
    other taskhub tools read: `TASKHUB_URL`, `TASKHUB_KEY`, `TASKHUB_KEY_FILE`, `TASKHUB_TOKEN`,
    `TASKHUB_CA`."""
    return Hub(url, key, **options)


def _closed(e: _WsClosed) -> p.ConnectionClosed:
    rcvd = e.rcvd
    return p.closed_message(None if rcvd is None else rcvd.code, "" if rcvd is None else rcvd.reason)
