"""Python workers: handlers registered by kind, run on threads or processes, with what
`taskhub-worker` does around them.

    worker = taskhub.Worker("ws://127.0.0.1:7878", key="...", queues=["tasks"])

    @worker.handler("square")
    def square(n):
        return f"{n} * {n} = {n * n}"

    worker.run()

- **Leases, not gets.** The worker `consume`s: each task stays leased to it until its handler
  returns (`ack`, with the return value as the result) or raises (`fail`). If the worker dies, the
  hub hands its tasks to other workers at once. Nothing is lost.
- **Concurrency.** `concurrency` handlers run at once, on threads (the default; one thread unless
  told otherwise, since the GIL runs one Python thread at a time: more threads help handlers that
  wait on I/O, and slow very short handlers down), or, with `executor="processes"`, in as many processes
  (default: one per CPU; for CPU-bound handlers, which must then be importable, module-level
  functions).
- **Prefetch.** The hub may have up to a credit window of tasks out to the worker. By default the
  window adapts as `taskhub-worker`'s does: deep for tiny tasks (a round trip costs more than
  the task), `concurrency + 1` for slow ones (so they are not hoarded away from idle workers).
  `prefetch=N` fixes it.
- **Long tasks** are touched every half ack-wait while they run, so their leases do not expire.
- **Reconnects** with exponential backoff and jitter (0.25 s doubling to 30 s) when the hub goes
  away; a wrong key or a refused `consume` ends `run()` with the error instead.
- **Stopping.** SIGTERM or SIGINT (or `stop()`) stops taking tasks, hands back those not started,
  and lets running ones finish for up to `stop_grace` seconds; a second signal leaves at once
  (the hub redelivers what was running).
- **Failures.** A handler that raises fails its task with the exception's type and message, and
  the hub retries it while attempts remain. `raise TaskError("bad input", retry=False)` sends it
  to the dead-letter queue at once, and so does a task whose kind has no handler.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import signal
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Deque, Dict, List, NamedTuple, Optional, Sequence, Tuple

from . import _protocol as p
from .client import Hub

log = logging.getLogger("taskhub.worker")

#: Work a worker may hold in reserve per run slot, in milliseconds of mean run time (the same
#: horizon as taskhub-worker's).
HORIZON_MS = 25.0
#: Longest an ack waits here to leave with others, in seconds.
ACK_DELAY = 0.002
#: Acks that leave at once, however briefly they waited.
ACK_BATCH = 128
#: Longest the control loop sleeps: how soon it notices a signal.
TICK = 0.1


class Task(NamedTuple):
    """A task as a handler registered with `task=True` receives it."""

    id: int
    queue: str
    kind: Optional[str]
    payload: Any
    attempt: int
    max_attempts: int
    reply_to: Optional[str]
    last_error: Optional[str] = None
    """On a redelivery, why the previous attempt ended."""


class TaskError(p.TaskhubError):
    """Raise from a handler to fail its task with `message`. With `retry=False` (the input is
    bad; another attempt would fail the same way) it goes to the dead-letter queue at once.
    `retry_after=seconds` retries it after that long instead of after the task's backoff (a
    rate limit's Retry-After; the hub caps it at its max_delay)."""

    def __init__(self, message: str, retry: bool = True,
                 retry_after: Optional[float] = None):
        super().__init__(message)
        self.message = message
        self.retry = retry
        self.retry_after = retry_after

    def __reduce__(self) -> Tuple[Any, ...]:
        # Raised in a worker process, it crosses back pickled: keep every field, not only the
        # message (`Exception` pickles its args alone).
        return (TaskError, (self.message, self.retry, self.retry_after))


class _Handler(NamedTuple):
    fn: Callable[[Any], Any]
    wants_task: bool


#: Shortest time between two progress reports of one task sent to the hub, in seconds (the
#: latest report of each interval goes), as in taskhub-worker.
PROGRESS_EVERY = 0.1


class _Running:
    __slots__ = ("id", "conn", "started", "last_touch", "cancelled", "last_report", "pending")

    def __init__(self, task_id: int, conn: int, now: float):
        self.id = task_id
        self.conn = conn
        self.started = now
        self.last_touch = now
        # A client cancelled it: the hub holds no lease any more, and its result goes nowhere.
        self.cancelled = False
        self.last_report: Optional[float] = None
        # A progress report held back until PROGRESS_EVERY after the last one.
        self.pending: Optional[Dict[str, Any]] = None

    def leased_on(self, conn: int) -> bool:
        return self.conn == conn and not self.cancelled

    def due_report(self, now: float) -> Optional[p.Frame]:
        """The report held back, encoded, once `PROGRESS_EVERY` has passed since the last one
        went (a report extends the lease: it counts as a touch)."""
        if self.pending is None or (self.last_report is not None
                                    and now - self.last_report < PROGRESS_EVERY):
            return None
        frame = p.encode(self.pending)
        self.pending = None
        self.last_report = self.last_touch = now
        return frame


class _Window:
    """The adaptive credit window (taskhub-worker's): starts at `concurrency + 1`, doubles while a
    run slot finds nothing waiting, and holds at most about `HORIZON_MS` of work per slot beyond
    what runs, by the measured mean run time."""

    def __init__(self, concurrency: int):
        self.size = concurrency + 1
        self.mean_ms: Optional[float] = None

    def record(self, ms: float) -> None:
        ms = max(ms, 0.0)
        self.mean_ms = ms if self.mean_ms is None else self.mean_ms + 0.2 * (ms - self.mean_ms)

    def next(self, concurrency: int, most: int, starved: bool) -> int:
        floor = min(concurrency + 1, most)
        if self.mean_ms is None:
            cap = floor
        else:
            reserve = concurrency * HORIZON_MS / max(self.mean_ms, 1e-3)
            cap = min(concurrency + math.ceil(reserve), most)
        grown = self.size * 2 if starved else self.size
        return max(min(grown, cap), floor)


class _Leases:
    """What a worker holds and owes the hub, without I/O or locks (the threaded worker calls it
    under its lock, the asyncio worker from its event loop): tasks waiting here and running,
    frames to send, the credit window, and the rules of taskhub-worker for each event."""

    def __init__(self, base: "_Base"):
        self.base = base
        self.conn = 0
        self.ready: Deque[Dict[str, Any]] = deque()
        self.running: Dict[int, _Running] = {}
        self.out: List[p.Frame] = []
        self.window = _Window(base.concurrency)
        self.max_message_bytes = 1 << 20
        self.max_prefetch = 1
        self.touch_every = 15.0
        self.stopping = False
        self.last_busy = time.monotonic()
        self.done = 0
        self.failed = 0
        self.cancelled = 0
        self._tokens = itertools.count(1)

    def connected(self, number: int, limits: Dict[str, Any]) -> Dict[str, Any]:
        """A new session: the `consume` to send."""
        self.conn = number
        self.out = []
        self.max_message_bytes = int(limits.get("max_message_bytes", 1 << 20))
        self.max_prefetch = max(1, int(limits.get("max_prefetch", 1000)))
        self.touch_every = max(int(limits.get("ack_wait_ms", 30_000)) / 2000, 0.05)
        prefetch = self.base.prefetch
        if prefetch is not None and prefetch > self.max_prefetch:
            log.warning("prefetch %d is above the hub's limit; using %d", prefetch,
                        self.max_prefetch)
        wanted = prefetch if prefetch is not None else self.window.size
        self.window.size = max(1, min(wanted, self.max_prefetch))
        self.last_busy = time.monotonic()
        return {"type": "consume", "queues": self.base.queues, "prefetch": self.window.size}

    def lost(self, number: int) -> bool:
        """Connection `number` is gone; whether it was the current one. Tasks not started went
        back to the hub with the session, and nothing owed to it can be sent any more."""
        if number != self.conn:
            return False
        self.ready.clear()
        self.out = []
        return True

    def deliver(self, number: int, task: Dict[str, Any]) -> bool:
        """A delivery on connection `number`; True when it waits here to run (otherwise it was
        refused, and what to send is in `out`)."""
        if number != self.conn:
            return False
        self.last_busy = time.monotonic()
        kind = task.get("kind")
        if self.base._handler_for(kind) is None:
            self.failed += 1
            why = self.base._unknown_kind(kind)
            log.warning("task %s: %s", task.get("id"), why)
            self.out.append(p.encode({"type": "fail", "task": task["id"], "retry": False,
                                      "error": why}))
            return False
        if self.stopping or self.held() >= self.window.size:
            # Sent before the hub heard the window shrink.
            self.out.append(p.encode({"type": "release", "task": task["id"]}))
            return False
        self.ready.append(task)
        return True

    def cancel(self, number: int, task_id: int) -> None:
        """The hub says a client cancelled `task_id`: drop it if it waits here; if it runs, its
        result goes nowhere (a handler may ask `Worker.is_cancelled` and stop early)."""
        if number != self.conn:
            return
        for task in self.ready:
            if task["id"] == task_id:
                self.ready.remove(task)
                self.cancelled += 1
                return
        for run in self.running.values():
            if run.id == task_id and run.leased_on(self.conn):
                run.cancelled = True
                self.cancelled += 1
                log.info("task %s cancelled by a client; its result will be dropped", task_id)
                return

    def is_cancelled(self, task_id: int) -> bool:
        return any(r.id == task_id and r.cancelled for r in self.running.values())

    def report(self, task_id: int, fraction: float, message: Optional[str], now: float) -> bool:
        """A handler's progress report for running task `task_id`; whether one is to be sent
        now (it is in `out`). Within `PROGRESS_EVERY` of the last it is held, the latest
        winning, for `touch_due` to send."""
        if not 0.0 <= fraction <= 1.0:  # also NaN
            return False
        msg: Dict[str, Any] = {"type": "progress", "task": task_id, "fraction": fraction}
        if message is not None:
            msg["message"] = p.cut_utf8(message, p.MAX_PROGRESS_MESSAGE_BYTES)
        for r in self.running.values():
            if r.id != task_id or not r.leased_on(self.conn):
                continue
            r.pending = msg
            frame = r.due_report(now)
            if frame is None:
                return False
            self.out.append(frame)
            return True
        return False

    def start(self) -> Optional[Tuple[int, Dict[str, Any], _Running]]:
        """The next task to run, if one waits: (token, task, its lease)."""
        if not self.ready:
            return None
        task = self.ready.popleft()
        token = next(self._tokens)
        run = _Running(task["id"], self.conn, time.monotonic())
        self.running[token] = run
        return token, task, run

    def finish(self, token: int, run: _Running, ok: bool, frame: p.Frame) -> None:
        """A task's handler returned (`frame` is its `ack` or `fail`)."""
        del self.running[token]
        now = time.monotonic()
        self.last_busy = now
        if run.cancelled:
            return
        if ok:
            self.done += 1
        else:
            self.failed += 1
        if run.conn == self.conn:
            self.window.record((now - run.started) * 1000)
            self.out.append(frame)
            self.adapt()

    def adapt(self) -> None:
        """Resize the adaptive window after a task finished; tell the hub, and hand back what
        waits here beyond a smaller one."""
        if self.base.prefetch is not None or self.stopping:
            return
        concurrency = self.base.concurrency
        starved = not self.ready and len(self.running) < concurrency
        size = self.window.next(concurrency, self.max_prefetch, starved)
        if size == self.window.size:
            return
        self.window.size = size
        self.out.append(p.encode({"type": "consume", "queues": self.base.queues,
                                  "prefetch": size}))
        while self.held() > size and self.ready:
            task = self.ready.pop()
            self.out.append(p.encode({"type": "release", "task": task["id"]}))

    def held(self) -> int:
        """Tasks of this connection here, as the hub counts them against the window."""
        return len(self.ready) + self.running_here()

    def running_here(self) -> int:
        """Tasks running that the hub counts as leased to this connection."""
        return sum(1 for r in self.running.values() if r.leased_on(self.conn))

    def begin_stop(self) -> None:
        """No more tasks: stop the deliveries and hand back those not started."""
        self.stopping = True
        log.info("stopping: finishing %d task(s) in flight", len(self.running))
        self.out.append(p.encode({"type": "consume", "queues": [], "prefetch": 0}))
        while self.ready:
            task = self.ready.popleft()
            self.out.append(p.encode({"type": "release", "task": task["id"]}))

    def touch_due(self, now: float) -> bool:
        """Extend the leases of tasks running for half an ack-wait; whether any was."""
        touched = False
        for r in self.running.values():
            if not r.leased_on(self.conn):
                continue
            frame = r.due_report(now)
            if frame is not None:
                self.out.append(frame)
                touched = True
            if now - r.last_touch >= self.touch_every:
                r.last_touch = now
                self.out.append(p.encode({"type": "touch", "task": r.id}))
                touched = True
        return touched

    def idle(self, now: float) -> bool:
        """Whether `exit_when_idle` has come."""
        after = self.base.exit_when_idle
        return (after is not None and not self.stopping and not self.ready
                and not self.running and now - self.last_busy >= after)

    def stop_result(self, leave_now: bool, deadline: Optional[float], now: float
                    ) -> Optional[bool]:
        """While stopping: None to keep waiting for running tasks, else True (done) after
        logging what was left behind."""
        running = self.running_here()
        if running == 0:
            return True
        if leave_now:
            log.warning("leaving now; %d running task(s) go back to the hub", running)
            return True
        if deadline is not None and now >= deadline:
            log.warning("the grace period ran out with %d task(s) still running; they were "
                        "abandoned (the hub gives them to other workers)", running)
            return True
        return None


class _Connection:
    """Routes one connection's events to the worker, tagged with which connection it was."""

    def __init__(self, worker: Any, number: int):
        self.worker = worker
        self.number = number

    def deliver(self, task: Dict[str, Any]) -> None:
        self.worker._on_deliver(self.number, task)

    def cancel(self, task: int) -> None:
        self.worker._on_cancel(self.number, task)

    def notice(self, msg: Dict[str, Any]) -> None:
        if msg.get("type") == "error":
            log.warning("hub: %s (%s)", msg.get("message"), msg.get("code"))

    def closed(self, why: p.ConnectionClosed) -> None:
        self.worker._on_closed(self.number, why)


def encode_outcome(task_id: int, ok: bool, value: Any, retry: bool, limit: int) -> p.Frame:
    """The `ack` or `fail` frame for a finished task. A result the hub would refuse (too large,
    not JSON) fails the task for good instead: every attempt would make the same result."""
    if ok:
        result, place = p.payload_place(value, "result")
        try:
            frame = p.encode({"type": "ack", "task": task_id, "result": result}, place)
        except (TypeError, ValueError) as e:
            return p.encode({"type": "fail", "task": task_id, "retry": False,
                             "error": f"the handler's result is not JSON: {e}"})
        if len(frame) <= limit:
            return frame
        value = (f"the result is {len(frame)} bytes; the hub accepts at most {limit} per "
                 "message")
        retry = False
    fail: Dict[str, Any] = {"type": "fail", "task": task_id, "error": str(value)[:4096],
                            "retry": retry}
    wait = getattr(value, "retry_after", None)
    if retry and wait is not None:
        fail["backoff_ms"] = max(0, round(wait * 1000))
    return p.encode(fail)


def backoff_delay(backoff: Tuple[float, float], failures: int) -> float:
    """Seconds before reconnect attempt `failures + 1`: doubling from the low bound to the
    high, with jitter over its upper half."""
    low, high = backoff
    base: float = min(low * (2 ** min(failures, 20)), high)
    return base / 2 + random.random() * base / 2


class _Base:
    """What both workers are configured with, and their handlers."""

    def __init__(self, url: Optional[str] = None, key: Optional[str] = None, *,
                 queues: Sequence[str] = ("tasks",), token: Optional[str] = None,
                 key_id: Optional[str] = None, key_file: Optional[str] = None,
                 cafile: Optional[str] = None, concurrency: Optional[int] = None,
                 prefetch: Optional[int] = None, name: Optional[str] = None,
                 stop_grace: float = 30.0, exit_when_idle: Optional[float] = None,
                 backoff: Tuple[float, float] = (0.25, 30.0), connect_timeout: float = 10.0):
        if not queues:
            raise ValueError("no queues to consume")
        self.url = url
        # Checked now, so that a missing key is an error here rather than in run().
        self._creds = p.credentials(key, token, key_id, key_file)
        self._cafile = cafile
        self.queues = list(queues)
        self.concurrency = max(1, concurrency or self.default_concurrency())
        self.prefetch = None if prefetch is None else max(prefetch, self.concurrency)
        self.name = name
        self.stop_grace = stop_grace
        self.exit_when_idle = exit_when_idle
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self._handlers: Dict[Optional[str], _Handler] = {}
        self._leases = _Leases(self)

    def default_concurrency(self) -> int:
        """Handlers run at once when `concurrency` is not given."""
        return os.cpu_count() or 1

    @property
    def done(self) -> int:
        """Tasks whose handler returned."""
        return self._leases.done

    @property
    def failed(self) -> int:
        """Tasks that failed: their handler raised, or their kind had none."""
        return self._leases.failed

    @property
    def cancelled(self) -> int:
        """Tasks a client cancelled while they waited or ran here."""
        return self._leases.cancelled

    def handler(self, kind: Optional[str] = None, *, task: bool = False
                ) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
        """Register the decorated function for tasks of `kind` (`None`: every kind without a
        handler of its own, and tasks without a kind). It receives the payload (bytes for a
        binary payload), or the whole `Task` with `task=True`; what it returns is the result
        (JSON-serialisable, or bytes)."""

        def register(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
            self.add_handler(kind, fn, task=task)
            return fn

        return register

    def add_handler(self, kind: Optional[str], fn: Callable[[Any], Any], *,
                    task: bool = False) -> None:
        """Register `fn` for `kind`, as `@worker.handler(kind)` does."""
        self._handlers[kind] = _Handler(fn, task)

    def _handler_for(self, kind: Optional[str]) -> Optional[_Handler]:
        return self._handlers.get(kind) or self._handlers.get(None)

    def _unknown_kind(self, kind: Optional[str]) -> str:
        known = ", ".join(sorted(k for k in self._handlers if k is not None)) or "no kinds at all"
        if kind is None:
            return f"task has no kind; this worker knows {known}"
        return f"unknown task kind {kind!r}; this worker knows {known}"

    def _call(self, task: Dict[str, Any]) -> Tuple[_Handler, Any]:
        """The handler for `task` and what to pass it."""
        kind = task.get("kind")
        h = self._handler_for(kind)
        if h is None:  # handlers were removed after delivery
            raise TaskError(self._unknown_kind(kind), retry=False)
        arg = task.get("payload")
        if h.wants_task:
            arg = Task(task["id"], task.get("queue", ""), kind, arg, task.get("attempt", 1),
                       task.get("max_attempts", 1), task.get("reply_to"), task.get("last_error"))
        return h, arg

    def _check_handlers(self) -> None:
        if not self._handlers:
            raise ValueError("no handlers: register one with @worker.handler(kind)")


def failure(e: BaseException) -> Tuple[bool, Any, bool]:
    """A handler's exception as an outcome: (False, error, retry)."""
    if isinstance(e, TaskError):
        return False, e, e.retry  # its message, and its retry_after if any
    return False, f"{type(e).__name__}: {e}", True


class Worker(_Base):
    """A worker: connects to `url`, consumes `queues`, and runs each task with the handler
    registered for its kind, on `concurrency` threads or (`executor="processes"`) processes.
    See the module documentation for what it does around them.

    Credentials and `url` default to the environment the other taskhub tools read
    (`TASKHUB_URL`, `TASKHUB_KEY`, `TASKHUB_KEY_FILE`, `TASKHUB_TOKEN`, `TASKHUB_CA`)."""

    def __init__(self, url: Optional[str] = None, key: Optional[str] = None, *,
                 executor: str = "threads", **options: Any):
        if executor not in ("threads", "processes"):
            raise ValueError(f"executor must be 'threads' or 'processes', not {executor!r}")
        self.executor = executor
        super().__init__(url, key, **options)
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)  # runners wait on it
        self._changed = threading.Condition(self._lock)   # the control loop waits on it
        self._hub: Optional[Hub] = None
        self._gone: Optional[p.ConnectionClosed] = None
        self._flushing = False
        self._flush_due: Optional[float] = None
        self._stop_asked = False  # set by signal handlers: a plain store, no lock
        self._leave_now = False
        self._finished = False
        self._pool: Optional[ProcessPoolExecutor] = None

    # -- running -------------------------------------------------------------------------------

    def run(self) -> None:
        """Connect and run tasks until `stop()`, SIGTERM or SIGINT (handled when called on the
        main thread), or `exit_when_idle`. Raises `AuthError` when the hub refuses the
        credentials and `HubError` when it refuses to let this worker consume its queues; a hub
        that is down or goes away is retried, with backoff, for as long as it takes."""
        self._check_handlers()
        if self.executor == "processes":
            self._pool = ProcessPoolExecutor(self.concurrency)
        restore = self._catch_signals()
        runners = [threading.Thread(target=self._runner, name=f"taskhub-run-{i}", daemon=True)
                   for i in range(self.concurrency)]
        for t in runners:
            t.start()
        try:
            self._control()
        finally:
            with self._lock:
                self._finished = True
                self._has_work.notify_all()
            restore()
            if self._pool is not None:
                self._shut_pool(wait=not self._leave_now)

    def stop(self, now: bool = False) -> None:
        """Stop taking tasks and let running ones finish (up to `stop_grace` seconds); with
        `now`, leave at once. Safe from any thread."""
        with self._lock:
            self._stop_asked = True
            self._leave_now = self._leave_now or now
            self._changed.notify()

    def _catch_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, _frame: Any) -> None:
            # Only plain stores here: the signal may land while this thread holds the lock.
            if self._stop_asked:
                self._leave_now = True
            self._stop_asked = True

        saved = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for s, h in saved.items():
                signal.signal(s, h)

        return restore

    def default_concurrency(self) -> int:
        """One thread (the GIL runs one at a time: more only help handlers that wait), or one
        process per CPU."""
        return (os.cpu_count() or 1) if self.executor == "processes" else 1

    def _control(self) -> None:
        failures = 0
        number = 0
        while not self._stop_asked:
            number += 1
            try:
                hub = Hub(self.url, cafile=self._cafile, timeout=self.connect_timeout,
                          role="worker", name=self.name, batch=True,
                          credentials=self._creds, listener=_Connection(self, number))
            except p.AuthError:
                raise
            except (p.TaskhubError, OSError) as e:
                self._back_off(failures, str(e))
                failures += 1
                continue
            failures = 0
            try:
                ended = self._serve(hub, number)
            finally:
                hub.close()
            if ended:
                return
            if not self._stop_asked:
                self._back_off(0, str(self._gone))

    def _back_off(self, failures: int, reason: str) -> None:
        delay = backoff_delay(self.backoff, failures)
        log.warning("hub unreachable (%s); retrying in %.1f s", reason, delay)
        deadline = time.monotonic() + delay
        with self._lock:
            while not self._stop_asked and time.monotonic() < deadline:
                self._changed.wait(min(TICK, deadline - time.monotonic()))

    def _serve(self, hub: Hub, number: int) -> bool:
        """Consume on one connection until it is lost (False) or the worker has stopped
        (True)."""
        s = self._leases
        with self._lock:
            consume = s.connected(number, hub.limits)
            self._hub = hub
            self._gone = None
            self._flush_due = None
        log.info("connected to %s as session %s; consuming %s", hub.url, hub.session,
                 ", ".join(self.queues))
        try:
            hub.request(consume, timeout=self.connect_timeout)
        except p.HubError as e:
            raise _refused(self.queues, e) from None
        except (p.TaskhubError, TimeoutError):
            return False
        stop_deadline: Optional[float] = None
        finished = False
        while True:
            with self._lock:
                if self._gone is not None:
                    # Tasks still running were handed to others with the session.
                    return s.stopping
                now = time.monotonic()
                if self._stop_asked and not s.stopping:
                    s.begin_stop()
                    self._flush_due = now
                    stop_deadline = now + self.stop_grace
                if s.stopping and not finished:
                    finished = bool(s.stop_result(self._leave_now, stop_deadline, now))
                    if finished:
                        self._leave_now = self._leave_now or s.running_here() > 0
                if finished:
                    # The last acks go out before the connection closes (as aio's drain does):
                    # closing over them would hand finished tasks back to be run again.
                    if not s.out:
                        return True
                    self._flush_due = now
                if s.touch_due(now):
                    self._flush_due = now
                if s.idle(now):
                    log.info("idle for %.1f s; stopping", now - s.last_busy)
                    self._stop_asked = True
                    continue
                due = self._flush_due
                if not (s.out and due is not None and now >= due):
                    self._changed.wait(TICK if due is None else max(0.0, min(TICK, due - now)))
            self._flush()

    def _send_soon(self) -> None:
        """(Lock held.) Output is waiting: have the control loop send it within `ACK_DELAY`."""
        if self._flush_due is None:
            self._flush_due = time.monotonic() + ACK_DELAY
            self._changed.notify()

    def _flush(self) -> None:
        """Send what is waiting, joined into few frames; one thread at a time sends."""
        s = self._leases
        while True:
            with self._lock:
                if self._flushing or not s.out or self._hub is None:
                    return
                frames, s.out = s.out, []
                self._flush_due = None
                self._flushing = True
                hub = self._hub
            try:
                hub.send_frames(frames)
            except p.TaskhubError:
                pass  # the reader reports the connection lost
            finally:
                with self._lock:
                    self._flushing = False

    # -- events from the connection (reader thread) ----------------------------------------------

    def _on_deliver(self, number: int, task: Dict[str, Any]) -> None:
        with self._lock:
            if self._leases.deliver(number, task):
                self._has_work.notify()
            elif self._leases.out:
                self._send_soon()

    def _on_cancel(self, number: int, task: int) -> None:
        with self._lock:
            self._leases.cancel(number, task)

    def is_cancelled(self, task_id: int) -> bool:
        """Whether a client cancelled task `task_id` while it runs here: a long handler (one
        registered with `task=True`, on threads) asks between steps and returns early; what it
        returns is dropped. A thread cannot be stopped from outside."""
        with self._lock:
            return self._leases.is_cancelled(task_id)

    def report_progress(self, task_id: int, fraction: float,
                        message: Optional[str] = None) -> None:
        """Say how far running task `task_id` has got (`fraction` from 0 to 1, a `message` of at
        most 1,024 bytes): it reaches the submitter and the dashboard, and extends the lease.
        Cheap to call often: at most one report per task goes every 0.1 s, the latest. From a
        handler on threads (`task=True` gives it the id); not from worker processes."""
        with self._lock:
            if self._leases.report(task_id, fraction, message, time.monotonic()):
                self._send_soon()

    def _on_closed(self, number: int, why: p.ConnectionClosed) -> None:
        with self._lock:
            if not self._leases.lost(number):
                return
            self._gone = why
            self._changed.notify()
        if not self._stop_asked:
            log.warning("lost the hub: %s", why)

    # -- runner threads --------------------------------------------------------------------------

    def _runner(self) -> None:
        s = self._leases
        while True:
            with self._lock:
                started = s.start()
                while started is None and not self._finished:
                    self._has_work.wait()
                    started = s.start()
                if started is None:
                    return
                token, task, run = started
                limit = s.max_message_bytes
            ok, value, retry = self._execute(task)
            frame = encode_outcome(task["id"], ok, value, retry, limit)
            with self._lock:
                s.finish(token, run, ok, frame)
                if s.stopping:
                    self._changed.notify()
                flush_now = not s.ready or len(s.out) >= ACK_BATCH
                if not flush_now:
                    self._send_soon()
            if flush_now:
                self._flush()

    def _execute(self, task: Dict[str, Any]) -> Tuple[bool, Any, bool]:
        """Run the task's handler: `(True, result, _)` or `(False, error, retry)`."""
        try:
            h, arg = self._call(task)
            if self._pool is not None:
                return True, self._pool.submit(h.fn, arg).result(), True
            return True, h.fn(arg), True
        except BrokenProcessPool as e:
            self._renew_pool()
            return False, f"the worker process running the task died: {e}", True
        except Exception as e:
            log.debug("task %s failed", task["id"], exc_info=True)
            return failure(e)

    def _renew_pool(self) -> None:
        with self._lock:
            old, self._pool = self._pool, ProcessPoolExecutor(self.concurrency)
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)

    def _shut_pool(self, wait: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if not wait:
            # Running handlers are abandoned: their tasks were handed back.
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
        pool.shutdown(wait=wait, cancel_futures=True)


def _refused(queues: List[str], e: p.HubError) -> p.HubError:
    return p.HubError(e.code, f"the hub refused to let this worker consume "
                              f"{', '.join(queues)}: {e.message}")
