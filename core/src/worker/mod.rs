//! The worker state machine, shared by the native and the browser worker.
//!
//! It owns the protocol: handshake, consuming, acking, lease extension, reconnect backoff and
//! graceful stop. It does no I/O. A driver feeds it inputs and drains its outputs:
//!
//! - inputs: [`Worker::handle_connected`], [`Worker::handle_message`], [`Worker::handle_heard`],
//!   [`Worker::handle_disconnected`], [`Worker::handle_timeout`], [`Worker::handle_task_done`],
//!   [`Worker::stop`];
//! - outputs: [`Worker::poll_transmit`] (text frames to send), [`Worker::poll_event`] (things the
//!   driver must do or may show), [`Worker::poll_timeout`] (when to call `handle_timeout`).
//!
//! Time and randomness are arguments, so the whole thing runs under a manual clock in tests.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::auth::{AuthError, ClientHandshake, NONCE_BYTES, Secret};
use crate::body::Payload;
use crate::codec::{
    DecodeError, Frame, JOIN_BYTES, decode_server_binary, decode_server_frames, encode_client,
};
use crate::handlers::Failure;
use crate::names::{QueueName, SessionId, TaskId};
use crate::protocol::{
    ClientMsg, ErrorCode, MAX_PROGRESS_MESSAGE_BYTES, Role, ServerMsg, TabState, Task,
};
use crate::time::Millis;

/// First reconnect delay of a worker ([`WorkerConfig::backoff_min_ms`]).
pub const DEFAULT_BACKOFF_MIN_MS: u64 = 250;
/// Longest reconnect delay ([`WorkerConfig::backoff_max_ms`]).
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 30_000;
/// How long a handshake may take ([`WorkerConfig::handshake_timeout_ms`]).
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Shortest time between two progress reports of one task sent to the hub: a handler may report
/// as often as it likes, and the latest report of each interval goes.
pub const PROGRESS_EVERY_MS: u64 = 100;
/// How long a stopping worker waits for its running tasks ([`WorkerConfig::stop_grace_ms`]).
pub const DEFAULT_STOP_GRACE_MS: u64 = 30_000;

/// How a worker behaves. Every limit has a default in [`WorkerConfig::new`] (the `DEFAULT_*`
/// constants, which `taskhub-worker`'s flags show too).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub key_id: String,
    pub key: Secret,
    pub role: Role,
    pub name: Option<String>,
    pub queues: Vec<QueueName>,
    /// Tasks run at once.
    pub concurrency: u32,
    /// Tasks the hub may have out to this worker at once (running plus waiting here), at least
    /// `concurrency`. `None` (the default) sizes it from what the worker measures: see
    /// [`Window`].
    pub prefetch: Option<u32>,
    /// First reconnect delay; doubles per failed attempt up to `backoff_max_ms`, with jitter.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Give up on a handshake that has not finished after this long.
    pub handshake_timeout_ms: u64,
    /// After `stop`, how long to wait for running tasks before giving up on them.
    pub stop_grace_ms: u64,
    /// Several messages per frame, both ways (`batch` in `auth`): [`Worker::poll_transmit`]
    /// joins the frames that are ready together, and the hub joins its own. For clients whose
    /// every frame costs (a browser dispatches an event per frame and makes a call per send).
    pub batch: bool,
}

impl WorkerConfig {
    pub fn new(key_id: impl Into<String>, key: Secret, queues: Vec<QueueName>) -> Self {
        WorkerConfig {
            key_id: key_id.into(),
            key,
            role: Role::Worker,
            name: None,
            queues,
            concurrency: 1,
            prefetch: None,
            backoff_min_ms: DEFAULT_BACKOFF_MIN_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            stop_grace_ms: DEFAULT_STOP_GRACE_MS,
            batch: false,
        }
    }
}

/// A task the driver must run, then report with [`Worker::handle_task_done`].
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Hand this back with the result.
    pub token: u64,
    pub id: TaskId,
    pub kind: Option<String>,
    pub payload: Payload,
    pub attempt: u32,
    /// Why the previous attempt ended, on a redelivery.
    pub last_error: Option<String>,
    /// This worker's session on the hub.
    pub session: Option<SessionId>,
}

/// Something for the driver to do or to show.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Open a transport to the hub, then call `handle_connected` or `handle_disconnected`.
    Connect,
    /// Close the transport, then call `handle_disconnected`.
    Close,
    /// The handshake succeeded; tasks will flow, at most `prefetch` ahead. `prefetch` is the
    /// configured one, lowered to the hub's `max_prefetch` if it was above it, or the adaptive
    /// window's starting size.
    Authenticated { session: SessionId, prefetch: u32 },
    /// Run a task.
    Run(Job),
    /// A client cancelled the task running as job `token`: stop its handler. The hub has ended
    /// the lease; whatever the job reports later is dropped, and its run slot is free once the
    /// driver reports it done (with any result).
    Cancel { token: u64, id: TaskId },
    /// The connection is gone; the next attempt is in `in_ms`.
    Retrying { in_ms: u64, reason: String },
    /// The hub reported an error about one of our requests.
    HubError { code: ErrorCode, message: String },
    /// The worker cannot go on (wrong key, or an impostor hub). It will not reconnect.
    Failed(String),
    /// `stop` finished: every task in flight was reported, or the grace period ran out with
    /// `abandoned` tasks still running (the hub hands them to other workers).
    Stopped { abandoned: usize },
}

/// A snapshot for status displays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// `connecting`, `authenticating`, `connected`, `waiting`, `stopping`, `stopped` or `failed`.
    pub state: &'static str,
    pub session: Option<SessionId>,
    pub running: usize,
    pub prefetched: usize,
    /// Tasks the hub may have out to this worker now (the adaptive window, or `--prefetch`).
    pub window: u32,
    pub done: u64,
    pub failed: u64,
    /// Tasks a client cancelled while they were here (running or waiting).
    pub cancelled: u64,
    /// Taking no tasks for now, by the driver's policy ([`Worker::set_paused`]).
    pub paused: bool,
    /// Tasks handed back to the hub unstarted for others to run: a batch cut short, or what
    /// waited here beyond a window that shrank.
    pub handed_back: u64,
}

#[derive(Debug)]
enum State {
    /// Waiting to reconnect.
    Idle {
        retry_at: Millis,
    },
    /// The driver is opening a transport.
    Connecting,
    /// Transport open, handshake under way.
    Handshake {
        hs: Box<ClientHandshake>,
        deadline: Millis,
    },
    Ready {
        session: SessionId,
        touch_every_ms: u64,
        /// The hub's `max_prefetch`.
        max_prefetch: u32,
        /// The hub's `max_message_bytes`: an answer larger than this would be refused.
        max_message_bytes: usize,
        /// The hub's ping interval: after this long without a frame the worker asks (`ping`);
        /// after twice this long it takes the connection for dead.
        ping_every_ms: u64,
    },
    /// Asked the driver to close; waiting for `handle_disconnected`.
    Closing,
    Failed,
    Stopped,
}

/// The `req` of the worker's `consume`, so that the hub's refusal can be told apart from errors
/// about single tasks. A refused `consume` is fatal: the worker would sit connected and idle.
const CONSUME_REQ: u64 = 1;
/// The `req` of the worker's heartbeat `ping`.
const PING_REQ: u64 = 2;

#[derive(Debug)]
struct Running {
    id: TaskId,
    conn: u64,
    started: Millis,
    last_touch: Millis,
    /// A client cancelled it: the hub holds no lease any more, and its result goes nowhere.
    cancelled: bool,
    /// When its last progress report went to the hub.
    last_report: Option<Millis>,
    /// A report held back until [`PROGRESS_EVERY_MS`] after the last one.
    pending_report: Option<(f64, Option<String>)>,
}

impl Running {
    /// Whether the hub counts it as leased to this connection.
    fn leased_on(&self, conn: u64) -> bool {
        self.conn == conn && !self.cancelled
    }

    /// The report held back, as the message to send, once [`PROGRESS_EVERY_MS`] has passed
    /// since the last one went (a report extends the lease: it counts as a touch).
    fn due_report(&mut self, now: Millis) -> Option<ClientMsg> {
        if self
            .last_report
            .is_some_and(|t| now < t + PROGRESS_EVERY_MS)
        {
            return None;
        }
        let (fraction, message) = self.pending_report.take()?;
        self.last_report = Some(now);
        self.last_touch = now;
        Some(ClientMsg::Progress {
            req: None,
            task: self.id,
            fraction,
            message,
        })
    }
}

/// The adaptive credit window: how many tasks the hub may have out to this worker.
///
/// Like a congestion window, it grows while the worker runs dry and is capped by time. It starts
/// at `concurrency + 1`. Whenever a task finishes and a run slot stays empty because nothing was
/// waiting here, it doubles (tiny tasks want a deep pipeline: the hub's answer is a round trip
/// away). It never holds more than about [`HORIZON_MS`] of work per run slot beyond what runs,
/// by the measured mean run time, and never less than one task in reserve: so slow tasks are not
/// hoarded away from idle workers (one-second tasks hold `concurrency + 1`), and a shift from
/// tiny to slow tasks shrinks it at the first slow one (the surplus goes back to the hub).
#[derive(Debug, Clone)]
struct Window {
    size: u32,
    /// Mean run time (an average of whole-millisecond samples, which is unbiased for tasks
    /// shorter than a millisecond too).
    run: MeanRunTime,
}

/// Work a worker may hold in reserve per run slot, in milliseconds of mean run time.
pub const HORIZON_MS: f64 = 25.0;

/// A moving mean of task run times in milliseconds, weighting the newest a fifth; `None` until
/// a task has finished. The credit window is sized by it, and the browser worker's batches by
/// one of the handlers' own run times.
#[derive(Debug, Clone, Copy, Default)]
pub struct MeanRunTime(Option<f64>);

impl MeanRunTime {
    /// Weight of the newest run time in the mean.
    const WEIGHT: f64 = 0.2;

    pub fn record(&mut self, ms: f64) {
        let ms = ms.max(0.0);
        self.0 = Some(self.0.map_or(ms, |m| m + Self::WEIGHT * (ms - m)));
    }

    pub fn ms(&self) -> Option<f64> {
        self.0
    }
}

impl Window {
    fn new(concurrency: u32) -> Window {
        Window {
            size: concurrency + 1,
            run: MeanRunTime::default(),
        }
    }

    fn record_run(&mut self, ms: u64) {
        self.run.record(ms as f64);
    }

    /// The size to use after a task finished; `starved` says a run slot found nothing waiting.
    fn next(&self, concurrency: u32, max: u32, starved: bool) -> u32 {
        let floor = (concurrency + 1).min(max);
        let cap = match self.run.ms() {
            None => floor,
            Some(m) => {
                let reserve = f64::from(concurrency) * HORIZON_MS / m.max(1e-3);
                (f64::from(concurrency) + reserve.ceil()).min(f64::from(max)) as u32
            }
        };
        let grown = if starved {
            self.size.saturating_mul(2)
        } else {
            self.size
        };
        grown.min(cap).max(floor)
    }
}

/// The worker state machine. See the module docs.
#[derive(Debug)]
pub struct Worker {
    config: WorkerConfig,
    state: State,
    /// Counts transports; a task's result is only sent on the connection it came from.
    conn: u64,
    failed_attempts: u32,
    last_reason: String,
    prefetched: VecDeque<Task>,
    running: HashMap<u64, Running>,
    next_token: u64,
    stop_deadline: Option<Millis>,
    transmit: VecDeque<Frame>,
    events: VecDeque<Event>,
    done: u64,
    failed: u64,
    cancelled: u64,
    handed_back: u64,
    /// Taking no tasks for now, by the driver's policy (a hidden tab): not consuming, and
    /// deliveries that were on their way go back.
    paused: bool,
    /// What the driver last said of its state, sent again after each reconnect.
    told: Option<TabState>,
    /// When the hub was last heard from (any frame, or a control frame the driver reports).
    last_heard: Millis,
    /// Whether a heartbeat `ping` is waiting for its answer.
    probing: bool,
    window: Window,
}

impl Worker {
    /// A new worker; its first event is [`Event::Connect`].
    pub fn new(mut config: WorkerConfig) -> Self {
        config.concurrency = config.concurrency.max(1);
        config.prefetch = config.prefetch.map(|p| p.max(config.concurrency));
        let window = Window::new(config.concurrency);
        Worker {
            config,
            state: State::Connecting,
            conn: 0,
            failed_attempts: 0,
            last_reason: String::new(),
            prefetched: VecDeque::new(),
            running: HashMap::new(),
            next_token: 0,
            stop_deadline: None,
            transmit: VecDeque::new(),
            events: VecDeque::from([Event::Connect]),
            done: 0,
            failed: 0,
            cancelled: 0,
            handed_back: 0,
            paused: false,
            told: None,
            last_heard: Millis(0),
            probing: false,
            window,
        }
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// The transport is open. `entropy` must be fresh random bytes.
    pub fn handle_connected(&mut self, now: Millis, entropy: [u8; NONCE_BYTES]) {
        if !matches!(self.state, State::Connecting) {
            return;
        }
        self.conn += 1;
        self.last_heard = now;
        self.probing = false;
        let hs = ClientHandshake::new(
            self.config.key_id.clone(),
            self.config.key.clone(),
            self.config.role,
            self.config.name.clone(),
            entropy,
        )
        .batch(self.config.batch);
        self.state = State::Handshake {
            hs: Box::new(hs),
            deadline: now + self.config.handshake_timeout_ms,
        };
    }

    /// The transport closed or could not be opened. `random` feeds the backoff jitter.
    pub fn handle_disconnected(&mut self, now: Millis, reason: &str, random: u64) {
        // Prefetched tasks went back to the hub with the session.
        self.prefetched.clear();
        if !reason.is_empty() {
            self.last_reason = reason.to_string();
        }
        match self.state {
            State::Failed | State::Stopped => return,
            _ if self.stop_deadline.is_some() => {
                self.finish_stop();
                return;
            }
            _ => {}
        }
        let delay = crate::time::doubling_wait(
            self.config.backoff_min_ms,
            self.config.backoff_max_ms,
            self.failed_attempts,
            random,
        );
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        self.state = State::Idle {
            retry_at: now + delay,
        };
        self.events.push_back(Event::Retrying {
            in_ms: delay,
            reason: self.last_reason.clone(),
        });
    }

    /// A text frame arrived from the hub (with `batch`, it may hold several messages; a frame
    /// of one costs what it always did).
    pub fn handle_message(&mut self, text: &str, now: Millis) {
        for msg in decode_server_frames(text) {
            self.handle_decoded(msg, now);
        }
    }

    /// A binary frame arrived from the hub: a task whose payload is bytes.
    pub fn handle_binary(&mut self, frame: &[u8], now: Millis) {
        self.handle_decoded(decode_server_binary(frame), now);
    }

    fn handle_decoded(&mut self, msg: Result<ServerMsg, DecodeError>, now: Millis) {
        self.handle_heard(now);
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                self.events.push_back(Event::HubError {
                    code: e.code,
                    message: e.message,
                });
                return;
            }
        };
        match &mut self.state {
            State::Handshake { hs, .. } => match &msg {
                ServerMsg::Challenge { .. } => match hs.answer(&msg) {
                    Ok(auth) => self.send(&auth),
                    Err(e) => self.auth_error(e),
                },
                _ => match hs.finish(&msg) {
                    Ok(()) => {
                        let ServerMsg::Welcome {
                            session, limits, ..
                        } = msg
                        else {
                            return;
                        };
                        self.failed_attempts = 0;
                        // Asking for more than the hub allows would get the consume refused.
                        let max_prefetch = limits.max_prefetch.max(1);
                        let wanted = self.config.prefetch.unwrap_or(self.window.size);
                        let prefetch = wanted.min(max_prefetch).max(1);
                        self.window.size = prefetch;
                        self.state = State::Ready {
                            session,
                            touch_every_ms: (limits.ack_wait_ms / 2).max(50),
                            max_prefetch,
                            max_message_bytes: limits.max_message_bytes,
                            ping_every_ms: limits.ping_interval_ms.max(50),
                        };
                        self.events
                            .push_back(Event::Authenticated { session, prefetch });
                        if let Some(state) = self.told.clone() {
                            self.send(&ClientMsg::State { req: None, state });
                        }
                        if self.stop_deadline.is_none() && !self.paused {
                            self.send(&ClientMsg::Consume {
                                req: Some(CONSUME_REQ),
                                queues: self.config.queues.clone(),
                                prefetch,
                            });
                        }
                    }
                    Err(e) => self.auth_error(e),
                },
            },
            State::Ready { .. } => match msg {
                ServerMsg::Deliver { task } => {
                    // More than the window: sent before the hub heard it shrink.
                    if self.stop_deadline.is_some()
                        || self.paused
                        || self.held() >= self.window.size as usize
                    {
                        self.send(&ClientMsg::Release {
                            req: None,
                            task: task.id,
                        });
                    } else {
                        self.prefetched.push_back(task);
                        self.start_more(now);
                    }
                }
                ServerMsg::Cancel { task } => self.cancel(task),
                ServerMsg::Error {
                    req: Some(CONSUME_REQ),
                    code,
                    message,
                    ..
                } => {
                    let queues: Vec<&str> =
                        self.config.queues.iter().map(QueueName::as_str).collect();
                    let reason = format!(
                        "the hub refused to let this worker consume {}: {message} ({code})",
                        queues.join(", ")
                    );
                    self.last_reason = reason.clone();
                    self.state = State::Failed;
                    self.events.push_back(Event::Failed(reason));
                    self.events.push_back(Event::Close);
                }
                ServerMsg::Error { code, message, .. } => {
                    self.events.push_back(Event::HubError { code, message });
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// Something arrived from the hub that is not a message (a WebSocket ping or pong, which
    /// native drivers see and browsers do not): the connection is alive.
    pub fn handle_heard(&mut self, now: Millis) {
        self.last_heard = self.last_heard.max(now);
        self.probing = false;
    }

    fn auth_error(&mut self, e: AuthError) {
        self.last_reason = e.to_string();
        match e {
            AuthError::Rejected { .. } | AuthError::ImpostorHub => {
                self.state = State::Failed;
                self.events.push_back(Event::Failed(e.to_string()));
            }
            AuthError::Protocol(_) => self.state = State::Closing,
        }
        self.events.push_back(Event::Close);
    }

    /// The hub says a client cancelled `task`: drop it if it waits here, or ask the driver to
    /// stop it if it runs.
    fn cancel(&mut self, task: TaskId) {
        if let Some(at) = self.prefetched.iter().position(|t| t.id == task) {
            self.prefetched.remove(at);
            self.cancelled += 1;
            return;
        }
        let conn = self.conn;
        let running = self
            .running
            .iter_mut()
            .find(|(_, r)| r.id == task && r.leased_on(conn));
        if let Some((token, run)) = running {
            run.cancelled = true;
            self.cancelled += 1;
            let token = *token;
            self.events.push_back(Event::Cancel { token, id: task });
        }
    }

    /// Job `token`'s handler says how far it has got. Sent to the hub now, or, within
    /// [`PROGRESS_EVERY_MS`] of the last report, when that has passed (the latest report wins);
    /// a report also extends the lease, so it counts as a touch.
    pub fn report_progress(
        &mut self,
        token: u64,
        fraction: f64,
        message: Option<String>,
        now: Millis,
    ) {
        if !matches!(self.state, State::Ready { .. }) || !(0.0..=1.0).contains(&fraction) {
            return;
        }
        let message = message.map(|mut m| {
            m.truncate(crate::char_floor(&m, MAX_PROGRESS_MESSAGE_BYTES));
            m
        });
        let conn = self.conn;
        let Some(run) = self.running.get_mut(&token).filter(|r| r.leased_on(conn)) else {
            return;
        };
        run.pending_report = Some((fraction, message));
        if let Some(msg) = run.due_report(now) {
            self.send(&msg);
        }
    }

    /// Send the progress reports held back whose interval has passed.
    fn send_due_reports(&mut self, now: Millis) {
        let conn = self.conn;
        let due: Vec<ClientMsg> = self
            .running
            .values_mut()
            .filter(|r| r.leased_on(conn))
            .filter_map(|r| r.due_report(now))
            .collect();
        for msg in due {
            self.send(&msg);
        }
    }

    /// The driver finished running a job.
    pub fn handle_task_done(&mut self, token: u64, result: Result<Payload, Failure>, now: Millis) {
        let Some(run) = self.running.remove(&token) else {
            return;
        };
        if run.cancelled {
            // Nobody wants the result: the slot is free, and that is all.
            self.start_more(now);
            self.check_stopped();
            return;
        }
        match &result {
            Ok(_) => self.done += 1,
            Err(_) => self.failed += 1,
        }
        // A result from an older connection is dropped: the hub already re-queued that task.
        if let State::Ready {
            max_message_bytes, ..
        } = self.state
            && run.conn == self.conn
        {
            self.window.record_run(now - run.started);
            let fail = |error, retry, backoff_ms| -> ClientMsg {
                ClientMsg::Fail {
                    req: None,
                    task: run.id,
                    error,
                    retry,
                    backoff_ms,
                }
            };
            let frame = match result {
                Ok(v) => encode_client(&ClientMsg::Ack {
                    req: None,
                    task: run.id,
                    result: Some(v),
                }),
                Err(f) => {
                    let wait = f.retry_after.filter(|_| f.retry);
                    encode_client(&fail(f.message, f.retry, wait.map(crate::time::millis_of)))
                }
            };
            // The hub would refuse the frame and close the connection, handing every task this
            // worker holds to others: fail this one instead, for good (every attempt would
            // make the same result).
            let frame = if frame.len() > max_message_bytes {
                let why = format!(
                    "the result is {} bytes; the hub accepts at most {max_message_bytes} per message",
                    frame.len()
                );
                encode_client(&fail(why, false, None))
            } else {
                frame
            };
            self.transmit.push_back(frame);
        }
        self.start_more(now);
        self.adapt_window();
        self.check_stopped();
    }

    /// The driver never started the job `token` after all (a batch cut short because a task in
    /// it turned out slow): hand the task back to the hub unstarted, to the front of its queue,
    /// for whoever has room, without counting an attempt.
    pub fn give_back(&mut self, token: u64, now: Millis) {
        let Some(run) = self.running.remove(&token) else {
            return;
        };
        if run.leased_on(self.conn) && matches!(self.state, State::Ready { .. }) {
            self.handed_back += 1;
            self.send(&ClientMsg::Release {
                req: None,
                task: run.id,
            });
        }
        self.start_more(now);
        self.check_stopped();
    }

    /// Tasks of the current connection running or waiting here: what the hub counts against
    /// the window.
    fn held(&self) -> usize {
        self.prefetched.len()
            + self
                .running
                .values()
                .filter(|r| r.leased_on(self.conn))
                .count()
    }

    /// Run up to `n` tasks at once from now on (at least 1). A driver that batches tasks to its
    /// executors (the browser worker, several per Web Worker when they are tiny) raises it as it
    /// measures them and lowers it when they turn slow; the credit window follows.
    pub fn set_concurrency(&mut self, n: u32, now: Millis) {
        let n = n.max(1);
        if n == self.config.concurrency {
            return;
        }
        self.config.concurrency = n;
        self.start_more(now);
        self.adapt_window();
    }

    /// Resize the adaptive window after a task finished, tell the hub, and hand back what is
    /// waiting here beyond a smaller window.
    fn adapt_window(&mut self) {
        let State::Ready { max_prefetch, .. } = self.state else {
            return;
        };
        if self.config.prefetch.is_some() || self.stop_deadline.is_some() || self.paused {
            return;
        }
        let concurrency = self.config.concurrency;
        let starved = self.prefetched.is_empty() && self.running.len() < concurrency as usize;
        let size = self.window.next(concurrency, max_prefetch, starved);
        if size == self.window.size {
            return;
        }
        self.window.size = size;
        self.send(&ClientMsg::Consume {
            req: Some(CONSUME_REQ),
            queues: self.config.queues.clone(),
            prefetch: size,
        });
        while self.held() > size as usize {
            let Some(task) = self.prefetched.pop_back() else {
                break;
            };
            self.handed_back += 1;
            self.send(&ClientMsg::Release {
                req: None,
                task: task.id,
            });
        }
    }

    /// Take no tasks for now (`true`: stop consuming, hand back those waiting here; running ones
    /// finish), or take them again (`false`). For a driver's own policy: a browser tab that is
    /// hidden under `when=visible`. Said to the hub in the next [`Worker::report_state`].
    pub fn set_paused(&mut self, paused: bool) {
        if paused == self.paused || self.stop_deadline.is_some() {
            return;
        }
        self.paused = paused;
        if !matches!(self.state, State::Ready { .. }) {
            return;
        }
        if paused {
            self.stop_consuming();
        } else {
            self.send(&ClientMsg::Consume {
                req: Some(CONSUME_REQ),
                queues: self.config.queues.clone(),
                prefetch: self.window.size,
            });
        }
    }

    /// Tell the hub to deliver nothing more, and hand back the tasks waiting here unstarted.
    fn stop_consuming(&mut self) {
        self.send(&ClientMsg::Consume {
            req: None,
            queues: Vec::new(),
            prefetch: 0,
        });
        while let Some(task) = self.prefetched.pop_front() {
            self.send(&ClientMsg::Release {
                req: None,
                task: task.id,
            });
        }
    }

    /// Tell the hub how this worker is doing (`state`, for `stats` and the dashboard); said
    /// again after every reconnect. `paused` is filled in from [`Worker::set_paused`].
    pub fn report_state(&mut self, mut state: TabState) {
        state.paused = self.paused;
        if self.told.as_ref() == Some(&state) {
            return;
        }
        self.told = Some(state.clone());
        if matches!(self.state, State::Ready { .. }) {
            self.send(&ClientMsg::State { req: None, state });
        }
    }

    /// Call when [`Worker::poll_timeout`]'s time has come.
    pub fn handle_timeout(&mut self, now: Millis) {
        if let Some(deadline) = self.stop_deadline
            && now >= deadline
            && !matches!(self.state, State::Stopped)
        {
            self.finish_stop();
            return;
        }
        match self.state {
            State::Idle { retry_at } if now >= retry_at => {
                self.state = State::Connecting;
                self.events.push_back(Event::Connect);
            }
            State::Handshake { deadline, .. } if now >= deadline => {
                self.last_reason = "the hub did not finish the handshake in time".into();
                self.state = State::Closing;
                self.events.push_back(Event::Close);
            }
            State::Ready { ping_every_ms, .. } if now - self.last_heard >= 2 * ping_every_ms => {
                // A half-open connection (a cut path, a hub restarted behind a dead route) never
                // reports an error: silence is the only sign.
                self.last_reason = format!(
                    "the hub has been silent for {:.1} s; reconnecting",
                    (now - self.last_heard) as f64 / 1000.0
                );
                self.state = State::Closing;
                self.events.push_back(Event::Close);
            }
            State::Ready {
                touch_every_ms,
                ping_every_ms,
                ..
            } => {
                self.send_due_reports(now);
                if !self.probing && now - self.last_heard >= ping_every_ms {
                    self.probing = true;
                    self.send(&ClientMsg::Ping {
                        req: Some(PING_REQ),
                    });
                }
                let due: Vec<TaskId> = self
                    .running
                    .values_mut()
                    .filter(|r| r.leased_on(self.conn) && now - r.last_touch >= touch_every_ms)
                    .map(|r| {
                        r.last_touch = now;
                        r.id
                    })
                    .collect();
                for task in due {
                    self.send(&ClientMsg::Touch { req: None, task });
                }
            }
            _ => {}
        }
    }

    /// Stop taking tasks, hand back the unstarted ones, and finish those running. Emits
    /// [`Event::Stopped`] when done or when the grace period runs out.
    pub fn stop(&mut self, now: Millis) {
        if self.stop_deadline.is_some() || matches!(self.state, State::Stopped | State::Failed) {
            return;
        }
        self.stop_deadline = Some(now + self.config.stop_grace_ms);
        if matches!(self.state, State::Ready { .. }) {
            self.stop_consuming();
            self.check_stopped();
        } else {
            self.finish_stop();
        }
    }

    /// Leave now (a closing browser tab): hand every task back, unstarted and running alike, and
    /// close. Results that come in later are dropped; the hub hands the tasks to someone else.
    pub fn abandon(&mut self, now: Millis) {
        if self.is_finished() {
            return;
        }
        if matches!(self.state, State::Ready { .. }) {
            self.send(&ClientMsg::Consume {
                req: None,
                queues: Vec::new(),
                prefetch: 0,
            });
            let running: Vec<TaskId> = self
                .running
                .values()
                .filter(|r| r.leased_on(self.conn))
                .map(|r| r.id)
                .collect();
            let unstarted: Vec<TaskId> = self.prefetched.drain(..).map(|t| t.id).collect();
            for task in running.into_iter().chain(unstarted) {
                self.send(&ClientMsg::Release { req: None, task });
            }
        }
        // Late results belong to a connection that is gone.
        self.conn += 1;
        self.stop_deadline = Some(now);
        self.finish_stop();
    }

    fn check_stopped(&mut self) {
        if self.stop_deadline.is_some()
            && !matches!(self.state, State::Stopped)
            && !self.running.values().any(|r| r.conn == self.conn)
        {
            self.finish_stop();
        }
    }

    fn finish_stop(&mut self) {
        let connected = matches!(self.state, State::Ready { .. } | State::Handshake { .. });
        let abandoned = match self.state {
            State::Ready { .. } => self
                .running
                .values()
                .filter(|r| r.conn == self.conn)
                .count(),
            _ => 0,
        };
        self.state = State::Stopped;
        self.prefetched.clear();
        if connected {
            self.events.push_back(Event::Close);
        }
        self.events.push_back(Event::Stopped { abandoned });
    }

    fn start_more(&mut self, now: Millis) {
        if self.stop_deadline.is_some() {
            return;
        }
        let session = match self.state {
            State::Ready { session, .. } => Some(session),
            _ => None,
        };
        while self.running.len() < self.config.concurrency as usize {
            let Some(task) = self.prefetched.pop_front() else {
                break;
            };
            self.next_token += 1;
            let token = self.next_token;
            self.running.insert(
                token,
                Running {
                    id: task.id,
                    conn: self.conn,
                    started: now,
                    last_touch: now,
                    cancelled: false,
                    last_report: None,
                    pending_report: None,
                },
            );
            self.events.push_back(Event::Run(Job {
                token,
                id: task.id,
                kind: task.kind,
                payload: task.payload,
                attempt: task.attempt,
                last_error: task.last_error,
                session,
            }));
        }
    }

    fn send(&mut self, msg: &ClientMsg) {
        self.transmit.push_back(encode_client(msg));
    }

    /// The next frame to send, if any. With `batch`, text frames that are ready together go as
    /// one, newline-separated, up to [`JOIN_BYTES`] (and the hub's `max_message_bytes`).
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        let first = self.transmit.pop_front()?;
        let limit = match self.state {
            State::Ready {
                max_message_bytes, ..
            } if self.config.batch => JOIN_BYTES.min(max_message_bytes),
            _ => return Some(first),
        };
        let Frame::Text(mut joined) = first else {
            return Some(first);
        };
        while let Some(Frame::Text(next)) = self.transmit.front() {
            if joined.len() + 1 + next.len() > limit {
                break;
            }
            joined.push('\n');
            joined.push_str(next);
            self.transmit.pop_front();
        }
        Some(Frame::Text(joined))
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Worker::handle_timeout`] next, if ever.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let state = match &self.state {
            State::Idle { retry_at } => Some(*retry_at),
            State::Handshake { deadline, .. } => Some(*deadline),
            State::Ready {
                touch_every_ms,
                ping_every_ms,
                ..
            } => {
                let touch = self
                    .running
                    .values()
                    .filter(|r| r.leased_on(self.conn))
                    .map(|r| r.last_touch + *touch_every_ms);
                let reports = self
                    .running
                    .values()
                    .filter(|r| r.leased_on(self.conn) && r.pending_report.is_some())
                    .filter_map(|r| Some(r.last_report? + PROGRESS_EVERY_MS));
                let heartbeat = match self.probing {
                    false => self.last_heard + *ping_every_ms,
                    true => self.last_heard + 2 * *ping_every_ms,
                };
                touch.chain(reports).chain([heartbeat]).min()
            }
            _ => None,
        };
        let stop = match self.state {
            State::Stopped | State::Failed => None,
            _ => self.stop_deadline,
        };
        match (state, stop) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the worker has stopped or failed for good.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Stopped | State::Failed)
    }

    pub fn status(&self) -> Status {
        let (state, session) = match &self.state {
            _ if self.stop_deadline.is_some() && !self.is_finished() => ("stopping", None),
            State::Idle { .. } => ("waiting", None),
            State::Connecting | State::Closing => ("connecting", None),
            State::Handshake { .. } => ("authenticating", None),
            State::Ready { session, .. } => ("connected", Some(*session)),
            State::Failed => ("failed", None),
            State::Stopped => ("stopped", None),
        };
        Status {
            state,
            session,
            running: self.running.len(),
            prefetched: self.prefetched.len(),
            window: self.window.size,
            done: self.done,
            failed: self.failed,
            cancelled: self.cancelled,
            paused: self.paused,
            handed_back: self.handed_back,
        }
    }
}

#[cfg(test)]
mod tests;
