//! The hub's queue and pub/sub logic, free of I/O.
//!
//! Every operation takes `now` and appends the messages it produces to an internal list that the
//! caller drains with [`Broker::drain`]. The driver (`crate::hub`) owns sockets and the one timer,
//! which sleeps until [`Broker::next_deadline`] and then calls [`Broker::expire`].
//!
//! Semantics (ARCHITECTURE.md has the prose): each queue is FIFO; a delivered task is leased to its
//! session until `ack`, `fail` or `release`; a closed session's leases go back to the front of
//! their queues; a lease older than ack-wait is redelivered; every delivery counts an attempt and a
//! task out of attempts moves to `<queue>.dead`.
//!
//! Files: this one holds the state and the requests (`handle`, put, get, consume, stats);
//! `dispatch` hands out ready tasks; `lease` is what happens to a delivered task (ack, fail,
//! release, touch, expiry, dead letters, replies); `held` the leases and waiting `get`s, each one
//! type whose views (by id, deadline, session) change together; `store` is a task as held and a
//! queue's ready tasks; `journal` what storage hears of every change; `pubsub` the subscriptions; `idhash` the
//! hasher for hub-assigned ids.

mod dead;
mod dispatch;
mod held;
pub(crate) mod idhash;
pub mod journal;
mod lease;
mod pubsub;
mod quorum;
pub(crate) mod rules;
mod scheduled;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::num::NonZeroU64;
use std::time::Duration;

use taskhub_core::protocol::{QueueStats, Redundancy, Schedule, Stats, TabState, WorkerStats};
use taskhub_core::{ErrorCode, Millis, QueueName, RawJson, Role, SessionId, TaskId};

/// A payload or result as the hub holds it: JSON text, or bytes.
pub type Body = taskhub_core::Body<RawJson>;
/// Requests as the hub reads them, and what it sends: payloads and results stay JSON text or
/// bytes.
pub type ClientMsg = taskhub_core::ClientMsg<Body>;
pub type ServerMsg = taskhub_core::ServerMsg<Body>;

pub(crate) use dead::{check_queue as check_dead_queue, list_limit, listed, missing, revive};
use dispatch::envelope;
use held::{Lease, Leases, Waiter, Waiters};
use idhash::IdMap;
pub use journal::{Change, InMemory, Journal};
pub(crate) use lease::{dead_letter_entry, reply_entry};
use pubsub::Subscriptions;
use quorum::Votes;
pub use quorum::{QueueReplicas, Trusted};
use scheduled::Scheduled;
use store::task_cost;
pub use store::{Backoff, Charge, QueueRef, ReadyQueue, StoredTask};

/// The broker's limits. `crate::Config` fills these in.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Ready plus in-flight tasks per queue; a `put` beyond gets `queue_full`.
    pub max_queue_len: usize,
    /// Queues the hub will create; a request naming a new queue beyond gets `too_many_queues`.
    pub max_queues: usize,
    /// Memory every task the hub holds takes (ready, in flight, results, dead letters), as
    /// `store::task_cost` counts it; a `put` beyond gets `queue_full`. Results and dead letters
    /// are never refused for it: they replace the task they report on.
    pub max_stored_bytes: usize,
    pub ack_wait: Duration,
    /// Default for tasks put without `max_attempts`.
    pub max_attempts: u32,
    pub max_prefetch: u32,
    /// Longest wait a `get` may ask for; longer ones are cut to this.
    pub max_get_wait: Duration,
    /// Pending `get`s per session.
    pub max_waiters_per_session: usize,
    pub max_subscriptions_per_session: usize,
    /// How long a put's `dedup_id` is remembered: a repeat within it is answered with the first
    /// task's id and stores nothing.
    pub dedup_window: Duration,
    /// Dedup ids remembered at most; past it the oldest are forgotten early.
    pub max_dedup_ids: usize,
    /// A queue that is empty and unused (no consumers, waiting gets, leased tasks, or tasks
    /// naming it as `reply_to`) this long is dropped, so queues made once (a `get` that waited,
    /// a run's results) do not pile up to `max_queues`.
    pub queue_idle_grace: Duration,
    /// Longest a put may delay its task.
    pub max_delay: Duration,
    /// A retried task's first wait, and the longest, for tasks put without their own.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// Queues whose every task runs redundantly, at least as each rule says (the first that
    /// matches applies).
    pub replicas: Vec<QueueReplicas>,
}

impl Default for BrokerConfig {
    /// The queue limits of [`crate::Limits::default`].
    fn default() -> Self {
        crate::config::Limits::default().broker()
    }
}

/// `stats`' sessions: how many of each role, every role named (0 when none).
pub(crate) fn sessions_by_role(roles: impl Iterator<Item = Role>) -> BTreeMap<String, u64> {
    let mut sessions = BTreeMap::new();
    for role in [Role::Producer, Role::Worker, Role::Browser, Role::Dashboard] {
        sessions.insert(role.as_str().to_string(), 0);
    }
    for role in roles {
        *sessions.entry(role.as_str().to_string()).or_default() += 1;
    }
    sessions
}

/// The hard ceiling on a task's `max_attempts`.
pub const MAX_ATTEMPTS_CEILING: u32 = 1_000;

/// A message for one session.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub to: SessionId,
    pub msg: ServerMsg,
    /// At-most-once traffic (pub/sub) that may be dropped for a session that does not keep up.
    /// Everything else must arrive or the session is closed.
    pub droppable: bool,
    /// When it may go out, relative to the journal.
    pub gate: Gate,
}

/// When an [`Output`] may go to its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// In turn: after whatever the session was sent before it.
    InTurn,
    /// It confirms that something was stored (`queued`, `deleted`): only once the journal's
    /// commit after the request is durable (and what follows it waits too, to keep order).
    Stored,
    /// A refusal because storage failed (`storage_unavailable`): at once, ahead of confirmations
    /// still waiting, so a producer hears straight away.
    AheadOfStored,
}

pub(crate) type Failure = (ErrorCode, String);

/// A task as storage gives it back at start-up (see [`Broker::restore`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    pub id: TaskId,
    pub queue: QueueName,
    pub kind: Option<String>,
    pub payload: Body,
    pub reply_to: Option<QueueName>,
    pub max_attempts: u32,
    pub attempts: u32,
    pub order: u64,
    pub last_error: Option<String>,
    /// Leased when the hub stopped.
    pub leased: bool,
    pub priority: u8,
    /// Scheduled until this Unix time (ms).
    pub not_before: Option<u64>,
    pub backoff: Backoff,
    /// Run by several sessions and accepted on a quorum; its votes start again.
    pub redundancy: Option<Redundancy>,
}

#[derive(Debug, Default)]
struct Queue {
    ready: ReadyQueue,
    in_flight: usize,
    /// Its tasks the broker holds in [`Scheduled`] (not ready yet).
    scheduled: usize,
    /// Its redundant tasks waiting for a quorum (their replicas are counted as tasks).
    voting: usize,
    consumers: VecDeque<SessionId>,
    waiters: VecDeque<u64>,
    /// Tasks naming this queue as `reply_to` (see [`QueueRef`]).
    refs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Since when the queue has been seen unused by the sweep.
    idle_since: Option<Millis>,
    /// What happened to its tasks, for `/metrics`.
    counters: crate::metrics::QueueCounters,
}

impl Queue {
    fn len(&self) -> usize {
        self.ready.len() + self.in_flight + self.scheduled
    }

    /// Nothing in it and nothing that needs it: it may be dropped.
    fn unused(&self) -> bool {
        self.ready.is_empty()
            && self.in_flight == 0
            && self.scheduled == 0
            && self.voting == 0
            && self.consumers.is_empty()
            && self.waiters.is_empty()
            && self.refs.load(std::sync::atomic::Ordering::Relaxed) == 0
    }
}

#[derive(Debug)]
struct Session {
    role: Role,
    name: Option<String>,
    acked: u64,
    failed: u64,
    consuming: Vec<QueueName>,
    prefetch: u32,
    /// A lease of this session expired: it may be frozen (SIGSTOP, a sleeping laptop's tab), so
    /// it is handed nothing, not its own expired tasks nor others, until it shows it is alive
    /// (any ack, fail, release, touch, consume or ping).
    stalled: bool,
    /// What it last said of itself (`state`), boxed: most sessions never say.
    state: Option<Box<TabState>>,
    /// Queues on which its results count alone (its key's `trusted`); most have none.
    trusted: Option<Box<Trusted>>,
}

impl Session {
    /// Whether the session, holding `held` tasks, may be handed one more.
    fn has_credit(&self, held: usize) -> bool {
        !self.stalled && held < self.prefetch as usize
    }
}

/// What [`Broker::dump`] shows.
#[cfg(test)]
#[derive(Debug, PartialEq)]
pub(crate) struct Dump {
    pub ready: BTreeMap<String, Vec<Shown>>,
    pub leased: BTreeMap<u64, (String, Shown)>,
    /// By id: queue, when it is due (Unix ms), and the task.
    pub scheduled: BTreeMap<u64, (String, u64, Shown)>,
}

/// A task in a [`Dump`]: id, attempts, payload text.
#[cfg(test)]
pub(crate) type Shown = (u64, u32, String);

/// Which end of its queue a ready task goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Front,
    Back,
}

/// The queues, leases, waiting `get`s and subscriptions of one hub.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    queues: HashMap<QueueName, Queue>,
    sessions: IdMap<SessionId, Session>,
    leases: Leases,
    waiters: Waiters,
    /// Tasks not ready yet, by when they will be.
    scheduled: Scheduled,
    /// Redundant tasks, and the replica each of their replicas stands for.
    votes: Votes,
    /// Unix time (ms) at `Millis(0)`: what a journal needs to keep a dedup window across
    /// restarts.
    unix_at_zero: u64,
    /// Recent `dedup_id`s and the task each stored, oldest first in `dedup_order`.
    dedup: HashMap<String, TaskId>,
    dedup_order: std::collections::VecDeque<(Millis, String)>,
    next_task: u64,
    /// The next `order` keys for each end of a queue: one counter for all queues, counting down
    /// from the middle for the front and up for the back.
    next_front: u64,
    next_back: u64,
    journal: Box<dyn Journal>,
    subs: Subscriptions,
    /// Queues that count against `max_queues` (all but dead-letter queues).
    counted_queues: usize,
    /// When unused queues were last looked for.
    last_sweep: Millis,
    /// Memory of every task's payload held; see [`BrokerConfig::max_stored_bytes`].
    stored_bytes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    acked: u64,
    failed: u64,
    /// Put-to-ack times of acked tasks, for `/metrics`.
    latency: crate::metrics::Latency,
    out: Vec<Output>,
}

/// Tell `journal` where `task` now is: stored for the first time (`new`), or ready (or scheduled)
/// again with its place, attempts, error and time.
fn placed(journal: &mut dyn Journal, task: &StoredTask, new: bool) {
    if task.replica {
        // Storage keeps the task it replicates, never a replica.
        return;
    }
    journal.record(if new {
        Change::Stored(task)
    } else {
        Change::Ready(task)
    });
}

/// `task`'s queue is gone (it cannot be, short of a bug): the task goes too, and says so.
fn vanished(journal: &mut dyn Journal, task: &StoredTask) {
    tracing::warn!(queue = %task.queue, task = %task.id, "a task's queue vanished; the task is dropped");
    journal.record(Change::Done(task.id));
}

/// Where `order` keys start: the front counts down from here, the back up.
const ORDER_MIDDLE: u64 = 1 << 63;

impl Broker {
    /// A broker that keeps nothing beyond the process.
    pub fn new(config: BrokerConfig) -> Self {
        Broker::with_journal(config, Box::new(InMemory))
    }

    /// A broker that tells `journal` every change it makes.
    pub fn with_journal(config: BrokerConfig, journal: Box<dyn Journal>) -> Self {
        Broker {
            config,
            queues: HashMap::new(),
            sessions: IdMap::default(),
            leases: Leases::default(),
            waiters: Waiters::default(),
            scheduled: Scheduled::default(),
            votes: Votes::default(),
            unix_at_zero: 0,
            dedup: HashMap::new(),
            dedup_order: std::collections::VecDeque::new(),
            next_task: 0,
            next_front: ORDER_MIDDLE,
            next_back: ORDER_MIDDLE,
            journal,
            subs: Subscriptions::default(),
            counted_queues: 0,
            last_sweep: Millis(0),
            stored_bytes: Default::default(),
            acked: 0,
            failed: 0,
            latency: Default::default(),
            out: Vec::new(),
        }
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Messages produced since the last drain, in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Output> {
        self.out.drain(..)
    }

    /// What a task costs as held (see [`task_cost`]), with what the journal keeps for it.
    fn cost(
        &self,
        payload: &Body,
        queue: &QueueName,
        kind: Option<&str>,
        reply_to: Option<&QueueName>,
    ) -> usize {
        task_cost(payload, queue, kind, reply_to) + self.journal.kept_per_task()
    }

    /// Hand the changes made since the last commit to the journal; returns the ticket the
    /// messages that confirm them wait for (see [`Output::gate`], [`Journal::commit`]).
    pub fn commit(&mut self) -> u64 {
        self.journal.commit()
    }

    /// Put `task` in its queue at `end`, with the `order` key for that place, and tell the
    /// journal (`new`: a task it has not heard of). The queue exists: puts create theirs, and a
    /// queue with tasks in flight is never dropped.
    fn enqueue(&mut self, mut task: StoredTask, end: End, new: bool) {
        task.order = self.next_order(end);
        let Some(q) = self.queues.get_mut(&task.queue) else {
            vanished(&mut *self.journal, &task);
            return;
        };
        placed(&mut *self.journal, &task, new);
        q.ready.insert(task);
    }

    /// The `order` key for a task going to `end` of its queue.
    fn next_order(&mut self, end: End) -> u64 {
        match end {
            End::Front => {
                self.next_front -= 1;
                self.next_front
            }
            End::Back => {
                self.next_back += 1;
                self.next_back
            }
        }
    }

    /// When a task waiting `wait_ms` from `now` is due, and that as the Unix time (ms) a journal
    /// keeps. `now` is whole milliseconds, cut down: one more keeps "not before" true to the
    /// millisecond.
    fn due(&self, now: Millis, wait_ms: u64) -> (Millis, Option<NonZeroU64>) {
        let due = now + wait_ms + 1;
        (
            due,
            NonZeroU64::new(self.unix_at_zero.saturating_add(due.0)),
        )
    }

    /// Hold a task the journal has not heard of (`new`) or has (a retry backing off) for
    /// `wait_ms` from `now`, and tell the journal when it will be ready.
    fn schedule(&mut self, mut task: StoredTask, now: Millis, wait_ms: u64, new: bool) {
        let (due, unix) = self.due(now, wait_ms);
        task.not_before = unix;
        if !self.queues.contains_key(&task.queue) {
            vanished(&mut *self.journal, &task);
            return;
        }
        placed(&mut *self.journal, &task, new);
        self.hold(task, due);
    }

    /// Hold `task` among the scheduled until `due`, counted in its queue's `scheduled`.
    fn hold(&mut self, task: StoredTask, due: Millis) {
        if let Some(q) = self.queues.get_mut(&task.queue) {
            q.scheduled += 1;
        }
        self.scheduled.insert(task, due);
    }

    /// Move the scheduled tasks due by `now` to the back of their queues (their priority's) and
    /// hand them out.
    fn ripen(&mut self, now: Millis) {
        let mut touched = BTreeSet::new();
        while let Some(task) = self.scheduled.pop_due(now) {
            if let Some(q) = self.queues.get_mut(&task.queue) {
                q.scheduled = q.scheduled.saturating_sub(1);
            }
            touched.insert(task.queue.clone());
            self.enqueue(task, End::Back, false);
        }
        for q in touched {
            self.dispatch(&q, now);
        }
    }

    /// How long a put's `schedule` makes its task wait, in ms: 0 for ready at once.
    fn wait(&self, schedule: &Schedule, now: Millis) -> Result<u64, Failure> {
        schedule.check().map_err(rules::bad_request)?;
        let delay = match (schedule.delay_ms, schedule.not_before) {
            (Some(ms), _) => Duration::from_millis(ms),
            (None, Some(unix)) => {
                let now_unix = self.unix_at_zero.saturating_add(now.0);
                Duration::from_millis(unix.saturating_sub(now_unix))
            }
            (None, None) => return Ok(0),
        };
        let max = self.config.max_delay;
        if delay > max {
            return Err(rules::bad_request(format!(
                "the task would wait {} s; this hub delays tasks by {} s at most (max_delay)",
                delay.as_secs(),
                max.as_secs()
            )));
        }
        Ok(taskhub_core::time::millis_of(delay))
    }

    /// The earliest lease expiry, `get` timeout or sweep for unused queues, if any.
    pub fn next_deadline(&self) -> Option<Millis> {
        let lease = self.leases.next_deadline();
        let waiter = self.waiters.next_deadline();
        let due = self.scheduled.next_due();
        [lease, waiter, due, self.next_sweep()]
            .into_iter()
            .flatten()
            .min()
    }

    /// When to look for unused queues next; never while there are none.
    fn next_sweep(&self) -> Option<Millis> {
        (!self.queues.is_empty()).then(|| self.last_sweep.after(self.sweep_every()))
    }

    /// How often unused queues are looked for: a tenth of the grace, so one is dropped within
    /// 10% of it (within 0.1 s to 30 s).
    fn sweep_every(&self) -> Duration {
        (self.config.queue_idle_grace / 10)
            .clamp(Duration::from_millis(100), Duration::from_secs(30))
    }

    /// Drop queues that have been unused for the grace period.
    fn sweep(&mut self, now: Millis) {
        self.last_sweep = now;
        let grace = self.config.queue_idle_grace;
        let mut gone = Vec::new();
        for (name, q) in &mut self.queues {
            if q.unused() {
                let since = *q.idle_since.get_or_insert(now);
                if now.since(since) >= grace {
                    gone.push(name.clone());
                }
            } else {
                q.idle_since = None;
            }
        }
        for name in gone {
            self.remove_queue(&name);
        }
    }

    fn remove_queue(&mut self, name: &QueueName) {
        if self.queues.remove(name).is_some() && !name.is_dead_letter() {
            self.counted_queues = self.counted_queues.saturating_sub(1);
        }
        tracing::debug!(queue = %name, "queue dropped");
    }

    /// Take back the tasks storage kept, before any session opens, in `order` (each queue's
    /// order; storage sorts them). Returns how many. Tasks that were leased when the hub
    /// stopped go back to the front of their queues with the attempts they had used, as when
    /// their session closes (one out of attempts goes to its dead-letter queue). A `reply_to`
    /// naming a session's inbox is dropped: that session is gone, and session ids start again.
    /// Task ids go on from `next_task`, so none repeats.
    pub fn restore(
        &mut self,
        tasks: impl IntoIterator<Item = Recovered>,
        next_task: u64,
        now: Millis,
    ) -> usize {
        self.next_task = self.next_task.max(next_task);
        let mut leased = Vec::new();
        let mut votes = Vec::new();
        let mut count = 0;
        for t in tasks {
            count += 1;
            self.next_task = self.next_task.max(t.id.0);
            self.next_front = self.next_front.min(t.order);
            self.next_back = self.next_back.max(t.order);
            let reply_to = t.reply_to.filter(|r| !r.is_inbox());
            let reply_ref = reply_to
                .as_ref()
                .and_then(|r| self.restored_queue(r))
                .map(|q| QueueRef::new(&q.refs));
            let cost = self.cost(&t.payload, &t.queue, t.kind.as_deref(), reply_to.as_ref());
            let mut task = StoredTask {
                id: t.id,
                queue: t.queue,
                kind: t.kind,
                payload: t.payload,
                reply_to,
                max_attempts: t.max_attempts,
                attempts: t.attempts,
                order: t.order,
                last_error: None,
                charge: Charge::new(cost, &self.stored_bytes),
                reply_ref,
                // Put before the restart: its latency counts from here.
                put_at: Millis(0),
                priority: t.priority,
                not_before: None,
                backoff: t.backoff,
                redundancy: t.redundancy,
                replica: false,
            };
            if let Some(e) = t.last_error {
                task.set_error(e);
            }
            let due = t
                .not_before
                .and_then(|unix| unix.checked_sub(self.unix_at_zero))
                .filter(|at| *at > now.0);
            let Some(q) = self.restored_queue(&task.queue) else {
                continue;
            };
            if task.redundancy.is_some() {
                // Its ballots were not kept: its replicas run again.
                task.not_before = t.not_before.and_then(NonZeroU64::new);
                votes.push((task, due.map_or(0, |at| at - now.0)));
            } else if t.leased {
                leased.push(task);
            } else if let Some(at) = due {
                task.not_before = t.not_before.and_then(NonZeroU64::new);
                self.hold(task, Millis(at));
            } else {
                q.ready.insert(task);
            }
        }
        leased.sort_unstable_by_key(|t| std::cmp::Reverse(t.id));
        for mut task in leased {
            task.set_error("the hub stopped while the task was leased".into());
            self.requeue_front(task, now);
        }
        for (task, wait) in votes {
            self.start_vote(task, now, wait);
        }
        count
    }

    /// Where `Millis(0)` is in Unix time (ms); the hub sets it when it starts.
    pub fn set_unix_at_zero(&mut self, unix_ms: u64) {
        self.unix_at_zero = unix_ms;
    }

    /// Take back the `dedup_id`s storage kept: (key, task, expiry in Unix ms), any order. Those
    /// expired by now are dropped; of the rest at most `max_dedup_ids`, the latest to expire, are
    /// kept.
    pub fn restore_dedup(&mut self, mut ids: Vec<(String, TaskId, u64)>) {
        ids.sort_unstable_by_key(|(_, _, expires)| *expires);
        let skip = ids.len().saturating_sub(self.config.max_dedup_ids);
        for (key, task, expires) in ids.into_iter().skip(skip) {
            let Some(at) = expires.checked_sub(self.unix_at_zero) else {
                continue;
            };
            if at == 0 {
                continue;
            }
            if self.dedup.insert(key.clone(), task).is_some() {
                self.dedup_order.retain(|(_, k)| *k != key);
            }
            self.dedup_order.push_back((Millis(at), key));
        }
    }

    /// A queue storage kept a task in: made whatever the limits say now (refusing would lose
    /// stored tasks).
    fn restored_queue(&mut self, name: &QueueName) -> Option<&mut Queue> {
        if !self.queues.contains_key(name) {
            if !name.is_dead_letter() {
                self.counted_queues += 1;
            }
            self.queues.insert(name.clone(), Queue::default());
        }
        self.queues.get_mut(name)
    }

    /// Register an authenticated session. `name` is what the client calls itself (shown in stats).
    pub fn open_session(&mut self, id: SessionId, role: Role, name: Option<String>) {
        let name = name.map(|n| n.chars().take(64).collect());
        self.sessions.insert(
            id,
            Session {
                role,
                name,
                acked: 0,
                failed: 0,
                consuming: Vec::new(),
                prefetch: 0,
                stalled: false,
                state: None,
                trusted: None,
            },
        );
    }

    /// Count `session`'s results alone on the queues `trusted` covers (see [`Trusted`]).
    pub fn trust(&mut self, session: SessionId, trusted: Trusted) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.trusted = (!trusted.0.is_empty()).then(|| Box::new(trusted));
        }
    }

    /// A session ended: its leased tasks go back to the front of their queues at once, in their
    /// original order; its waiting `get`s and subscriptions are dropped.
    pub fn close_session(&mut self, id: SessionId, now: Millis) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        for q in &session.consuming {
            if let Some(queue) = self.queues.get_mut(q) {
                queue.consumers.retain(|s| *s != id);
            }
        }
        self.subs.remove_session(id);
        for k in self.waiters.of_session(id) {
            if let Some(w) = self.waiters.take(k)
                && let Some(q) = self.queues.get_mut(&w.queue)
            {
                q.waiters.retain(|x| *x != k);
            }
        }
        let mut touched = BTreeSet::new();
        for id in self.leases.of_session(id) {
            if let Some(mut task) = self.take_lease(id) {
                task.set_error("the worker's session closed while it held the task".into());
                touched.insert(task.queue.clone());
                self.requeue_front(task, now);
            }
        }
        for q in touched {
            self.dispatch(&q, now);
        }
    }

    /// Apply one request from `session`, whose key may do anything it asks.
    pub fn handle(&mut self, session: SessionId, msg: ClientMsg, now: Millis) {
        self.handle_as(session, msg, now, &|_| None);
    }

    /// Apply one request from `session`. The hub checks a request's rights before it gets here,
    /// except where only the broker knows the queue (`cancel`, by task id): `refusal` says why
    /// the session may not put to a queue, if it may not.
    pub fn handle_as(
        &mut self,
        session: SessionId,
        msg: ClientMsg,
        now: Millis,
        refusal: &dyn Fn(&QueueName) -> Option<String>,
    ) {
        if !self.sessions.contains_key(&session) {
            return;
        }
        let req = msg.req();
        let first_output = self.out.len();
        let worker_traffic = rules::is_worker_traffic(&msg);
        let quiet_ok = req.is_none() && worker_traffic;
        if (worker_traffic || matches!(msg, ClientMsg::Ping { .. }))
            && let Some(s) = self.sessions.get_mut(&session)
            && s.stalled
        {
            // Alive after all (a late ack gets unknown_task, but it proves the point).
            s.stalled = false;
            self.dispatch_for(session, now);
        }
        let result = match msg {
            ClientMsg::Auth { .. } => Err(rules::already_authenticated()),
            ClientMsg::CreateToken { .. } | ClientMsg::RevokeToken { .. } => {
                Err(rules::token_request())
            }
            ClientMsg::Put {
                queue,
                payload,
                kind,
                reply_to,
                max_attempts,
                dedup_id,
                schedule,
                ..
            } => match self.deduplicated(dedup_id.as_deref(), now) {
                Err(e) => Err(e),
                Ok(Some(task)) => Ok(ServerMsg::Queued { req, task }),
                Ok(None) => self
                    .put(
                        session,
                        queue,
                        payload,
                        kind,
                        reply_to,
                        max_attempts,
                        schedule,
                        now,
                    )
                    .inspect(|task| self.remember(dedup_id, *task, now))
                    .map(|task| ServerMsg::Queued { req, task }),
            },
            ClientMsg::Get {
                queue, timeout_ms, ..
            } => match self.get(session, req, queue, timeout_ms, now) {
                Ok(Some(msg)) => Ok(msg),
                Ok(None) => return,
                Err(e) => Err(e),
            },
            ClientMsg::Consume {
                queues, prefetch, ..
            } => self
                .consume(session, queues, prefetch, now)
                .map(|()| ServerMsg::Ok { req }),
            ClientMsg::Ack { task, result, .. } => self
                .ack(session, task, result, now)
                .map(|()| ServerMsg::Ok { req }),
            ClientMsg::Fail {
                task,
                error,
                retry,
                backoff_ms,
                ..
            } => self
                .fail(session, task, error, retry, backoff_ms, now)
                .map(|()| ServerMsg::Ok { req }),
            ClientMsg::Release { task, .. } => self
                .release(session, task, now)
                .map(|()| ServerMsg::Ok { req }),
            ClientMsg::Touch { task, .. } => self
                .touch(session, task, now)
                .map(|()| ServerMsg::Ok { req }),
            ClientMsg::State { state, .. } => match state.check() {
                Err(why) => Err(rules::bad_request(why)),
                Ok(()) => {
                    if let Some(s) = self.sessions.get_mut(&session) {
                        s.state = Some(Box::new(state));
                    }
                    Ok(ServerMsg::Ok { req })
                }
            },
            ClientMsg::Progress {
                task,
                fraction,
                message,
                ..
            } => self
                .progress(session, task, fraction, message, now)
                .map(|()| ServerMsg::Ok { req }),
            ClientMsg::Cancel { task, .. } => self
                .cancel(task, refusal, now)
                .map(|state| ServerMsg::Cancelled { req, task, state }),
            ClientMsg::Publish { topic, payload, .. } => {
                let receivers = self.subs.matching(&topic);
                for to in &receivers {
                    self.out.push(Output {
                        to: *to,
                        msg: ServerMsg::Message {
                            topic: topic.clone(),
                            payload: payload.clone(),
                        },
                        droppable: true,
                        gate: Gate::InTurn,
                    });
                }
                Ok(ServerMsg::Published {
                    req,
                    receivers: receivers.len() as u64,
                })
            }
            ClientMsg::Subscribe { pattern, .. } => {
                let limit = self.config.max_subscriptions_per_session;
                if self.subs.count(session) >= limit && !self.subs.has(session, &pattern) {
                    Err((
                        ErrorCode::LimitReached,
                        format!("this session already has {limit} subscriptions"),
                    ))
                } else {
                    self.subs.add(session, pattern);
                    Ok(ServerMsg::Ok { req })
                }
            }
            ClientMsg::Unsubscribe { pattern, .. } => {
                self.subs.remove(session, &pattern);
                Ok(ServerMsg::Ok { req })
            }
            ClientMsg::Ping { .. } => Ok(ServerMsg::Ok { req }),
            ClientMsg::DeleteQueue { queue, .. } => {
                self.delete_queue(&queue)
                    .map(|(tasks, removed)| ServerMsg::Deleted {
                        req,
                        queue,
                        tasks,
                        removed,
                    })
            }
            ClientMsg::Stats { .. } => Ok(ServerMsg::Stats {
                req,
                stats: self.stats(),
            }),
            ClientMsg::DeadList { queue, limit, .. } => {
                self.dead_list(&queue, limit)
                    .map(|(entries, total)| ServerMsg::DeadLetters {
                        req,
                        queue,
                        entries,
                        total,
                    })
            }
            ClientMsg::DeadRequeue { queue, ids, .. } => self
                .dead_requeue(session, queue.clone(), ids, now)
                .map(|(count, more)| ServerMsg::Requeued {
                    req,
                    queue,
                    count,
                    more,
                }),
        };
        let reply = match result {
            Ok(ServerMsg::Ok { .. }) if quiet_ok => return,
            Ok(msg) => msg,
            Err((code, message)) => ServerMsg::error(req, code, message),
        };
        // The answer goes before anything this request caused for this session (and after what
        // earlier requests caused).
        let at = self.out[first_output..]
            .iter()
            .position(|o| o.to == session)
            .map_or(self.out.len(), |i| first_output + i);
        let gate = match &reply {
            ServerMsg::Queued { .. }
            | ServerMsg::Deleted { .. }
            | ServerMsg::Requeued { .. }
            | ServerMsg::Cancelled { .. } => Gate::Stored,
            ServerMsg::Error {
                code: ErrorCode::StorageUnavailable,
                ..
            } => Gate::AheadOfStored,
            _ => Gate::InTurn,
        };
        self.out.insert(
            at,
            Output {
                to: session,
                msg: reply,
                droppable: false,
                gate,
            },
        );
    }

    /// The task an earlier put with this `dedup_id` stored, if it is still remembered.
    fn deduplicated(
        &mut self,
        dedup_id: Option<&str>,
        now: Millis,
    ) -> Result<Option<TaskId>, Failure> {
        let Some(id) = dedup_id else {
            return Ok(None);
        };
        rules::check_dedup_id(id)?;
        while let Some((expires, _)) = self.dedup_order.front()
            && *expires <= now
        {
            if let Some((_, old)) = self.dedup_order.pop_front() {
                self.dedup.remove(&old);
            }
        }
        Ok(self.dedup.get(id).copied())
    }

    fn remember(&mut self, dedup_id: Option<String>, task: TaskId, now: Millis) {
        let Some(id) = dedup_id else {
            return;
        };
        let expires = now.after(self.config.dedup_window);
        self.journal.record(Change::Dedup {
            key: &id,
            task,
            expires: self.unix_at_zero.saturating_add(expires.0),
        });
        self.dedup.insert(id.clone(), task);
        self.dedup_order.push_back((expires, id));
        while self.dedup_order.len() > self.config.max_dedup_ids {
            if let Some((_, old)) = self.dedup_order.pop_front() {
                self.dedup.remove(&old);
            }
        }
    }

    fn queue_mut(&mut self, name: &QueueName) -> Result<&mut Queue, Failure> {
        if self.queues.contains_key(name) {
            // Looked up twice only because the borrow checker cannot return from the first.
            return self
                .queues
                .get_mut(name)
                .ok_or_else(|| (ErrorCode::TooManyQueues, "queue vanished".to_string()));
        }
        // Dead-letter queues are not counted: every queue has room for its own, so a dead letter
        // never has nowhere to go (there are at most as many as other queues).
        if !name.is_dead_letter() && self.counted_queues >= self.config.max_queues {
            return Err((
                ErrorCode::TooManyQueues,
                format!(
                    "cannot create queue {name}: the hub already holds {} queues (max_queues)",
                    self.config.max_queues
                ),
            ));
        }
        if !name.is_dead_letter() {
            self.counted_queues += 1;
        }
        Ok(self.queues.entry(name.clone()).or_default())
    }

    fn check_room(&mut self, name: &QueueName) -> Result<(), Failure> {
        let max = self.config.max_queue_len;
        let q = self.queue_mut(name)?;
        if q.len() >= max {
            return Err((
                ErrorCode::QueueFull,
                format!("queue {name} is full ({max} tasks); retry later"),
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        session: SessionId,
        queue: QueueName,
        payload: Body,
        kind: Option<String>,
        reply_to: Option<QueueName>,
        max_attempts: Option<u32>,
        schedule: Schedule,
        now: Millis,
    ) -> Result<TaskId, Failure> {
        let wait = self.wait(&schedule, now)?;
        let asked = schedule.redundancy().map_err(rules::bad_request)?;
        let redundancy = match self
            .config
            .replicas
            .iter()
            .find(|r| r.pattern.matches_name(queue.as_str()))
        {
            Some(rule) => Some(rule.raise(asked)),
            None => asked,
        };
        let max_attempts = rules::check_put(
            session,
            &queue,
            reply_to.as_ref(),
            max_attempts,
            self.config.max_attempts,
            kind.as_deref(),
        )?;
        self.check_room(&queue)?;
        let replicas = redundancy.map_or(0, |r| usize::from(r.replicas));
        if let Some(q) = self.queues.get(&queue)
            && q.len() + replicas > self.config.max_queue_len
        {
            return Err((
                ErrorCode::QueueFull,
                format!(
                    "queue {queue} has room for {} more task(s) and this one runs {replicas} replicas; retry later",
                    self.config.max_queue_len.saturating_sub(q.len())
                ),
            ));
        }
        self.journal.writable().map_err(|why| {
            (
                ErrorCode::StorageUnavailable,
                format!("the task was not stored: {why}; nothing was queued, retry later"),
            )
        })?;
        let mut reply_ref = None;
        if let Some(r) = &reply_to
            && !r.is_inbox()
        {
            // Create the reply queue now: if the hub has no room for it, the put is refused here
            // rather than the result lost at ack time. The task's reference keeps it until then.
            let reply_queue = self
                .queue_mut(r)
                .map_err(|(code, message)| (code, format!("reply_to {r}: {message}")))?;
            reply_ref = Some(QueueRef::new(&reply_queue.refs));
        }
        let size = self.cost(&payload, &queue, kind.as_deref(), reply_to.as_ref());
        let max = self.config.max_stored_bytes;
        let replicas_size = replicas * store::replica_cost(&queue, kind.as_deref());
        if self.stored_bytes() + size + replicas_size > max {
            return Err((
                ErrorCode::QueueFull,
                format!(
                    "the hub holds {} bytes of tasks and its limit is {max} (max_stored_bytes); retry later",
                    self.stored_bytes()
                ),
            ));
        }
        self.next_task += 1;
        let id = TaskId(self.next_task);
        let task = StoredTask {
            id,
            queue: queue.clone(),
            kind,
            payload,
            reply_to,
            max_attempts,
            attempts: 0,
            order: 0,
            last_error: None,
            charge: Charge::new(size, &self.stored_bytes),
            reply_ref,
            put_at: now,
            priority: schedule.priority,
            not_before: None,
            backoff: Backoff::of(&schedule),
            redundancy,
            replica: false,
        };
        if let Some(q) = self.queues.get_mut(&queue) {
            q.counters.put += 1;
        }
        if redundancy.is_some() {
            self.store_vote(task, now, wait);
            return Ok(id);
        }
        match wait {
            0 => {
                self.enqueue(task, End::Back, true);
                self.dispatch(&queue, now);
            }
            wait => self.schedule(task, now, wait, true),
        }
        Ok(id)
    }

    /// Store redundant `task` (its place in the journal's order, when it is due) and start its
    /// vote.
    fn store_vote(&mut self, mut task: StoredTask, now: Millis, wait: u64) {
        if wait > 0 {
            task.not_before = self.due(now, wait).1;
        }
        task.order = self.next_order(End::Back);
        self.journal.record(Change::Stored(&task));
        self.start_vote(task, now, wait);
    }

    fn get(
        &mut self,
        session: SessionId,
        req: Option<u64>,
        queue: QueueName,
        timeout_ms: u64,
        now: Millis,
    ) -> Result<Option<ServerMsg>, Failure> {
        rules::not_inbox(&queue)?;
        // A get that does not wait never creates a queue (only a waiting get needs one to wait on).
        let found = self.queues.get_mut(&queue).and_then(|q| {
            // A replica's result is a vote: only a consumer may run one.
            let id = q.ready.first_plain(quorum::WINDOW)?;
            let task = q.ready.take_id(id)?;
            q.counters.delivered += 1;
            q.counters.redelivered += u64::from(task.attempts > 0);
            Some(task)
        });
        if let Some(mut task) = found {
            self.journal.record(Change::Done(task.id));
            task.attempts += 1;
            return Ok(Some(ServerMsg::Task {
                req,
                task: envelope(&task),
            }));
        }
        if timeout_ms == 0 {
            return Ok(Some(ServerMsg::Empty { req, queue }));
        }
        let limit = self.config.max_waiters_per_session;
        if self.waiters.count(session) >= limit {
            return Err((
                ErrorCode::LimitReached,
                format!("this session already has {limit} pending gets"),
            ));
        }
        let wait = Duration::from_millis(timeout_ms).min(self.config.max_get_wait);
        self.queue_mut(&queue)?;
        let key = self.waiters.add(Waiter {
            session,
            req,
            queue: queue.clone(),
            deadline: now.after(wait),
        });
        if let Some(q) = self.queues.get_mut(&queue) {
            q.waiters.push_back(key);
        }
        Ok(None)
    }

    /// Drop `name`'s ready tasks, and the queue itself unless something still uses it (then
    /// the sweep drops it once nothing does). Returns the tasks dropped and whether it is gone.
    fn delete_queue(&mut self, name: &QueueName) -> Result<(u64, bool), Failure> {
        rules::not_inbox(name)?;
        let grace = self.config.queue_idle_grace.as_secs();
        let Some(q) = self.queues.get_mut(name) else {
            return Err((
                ErrorCode::UnknownQueue,
                format!(
                    "no queue named {name} (empty queues nothing uses are dropped after {grace} s)"
                ),
            ));
        };
        let mut dropped = 0;
        let scheduled = match std::mem::take(&mut q.scheduled) {
            0 => Vec::new(),
            _ => self.scheduled.take_queue(name),
        };
        for task in std::iter::from_fn(|| q.ready.pop_front()).chain(scheduled) {
            if !task.replica {
                self.journal.record(Change::Done(task.id));
                dropped += 1;
            }
        }
        dropped += self.drop_votes(name);
        let removed = self.queues.get(name).is_some_and(Queue::unused);
        if removed {
            self.remove_queue(name);
        }
        tracing::info!(queue = %name, tasks = dropped, removed, "queue deleted by a client");
        Ok((dropped, removed))
    }

    fn consume(
        &mut self,
        session: SessionId,
        queues: Vec<QueueName>,
        prefetch: u32,
        now: Millis,
    ) -> Result<(), Failure> {
        let wanted = rules::check_consume(queues, prefetch, self.config.max_prefetch)?;
        for q in &wanted {
            self.queue_mut(q)?;
        }
        let Some(s) = self.sessions.get_mut(&session) else {
            return Ok(());
        };
        let old = std::mem::replace(&mut s.consuming, wanted.clone());
        s.prefetch = prefetch;
        for q in &old {
            if let Some(queue) = self.queues.get_mut(q) {
                queue.consumers.retain(|x| *x != session);
            }
        }
        for q in &wanted {
            if let Some(queue) = self.queues.get_mut(q) {
                queue.consumers.push_back(session);
            }
        }
        for q in &wanted {
            self.dispatch(q, now);
        }
        Ok(())
    }

    /// Depth, in flight, dead and consumers per queue (dead-letter queues are folded into their
    /// queue's `dead`), and sessions by role.
    pub fn stats(&self) -> Stats {
        let mut queues: Vec<QueueStats> = self
            .queues
            .iter()
            .map(|(name, q)| QueueStats {
                name: name.clone(),
                depth: q.ready.len() as u64,
                in_flight: q.in_flight as u64,
                dead: self
                    .queues
                    .get(&name.dead_letter())
                    .filter(|_| !name.is_dead_letter())
                    .map_or(0, |d| d.ready.len() as u64),
                consumers: q.consumers.len() as u64,
                scheduled: q.scheduled as u64,
                voting: q.voting as u64,
            })
            .collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        let sessions = sessions_by_role(self.sessions.values().map(|s| s.role));
        let mut workers: Vec<WorkerStats> = self
            .sessions
            .iter()
            .filter(|(id, s)| {
                !s.consuming.is_empty()
                    || s.acked + s.failed > 0
                    || self.leases.held_by(**id) > 0
                    || s.state.is_some()
            })
            .map(|(id, s)| WorkerStats {
                session: *id,
                role: s.role,
                name: s.name.clone(),
                acked: s.acked,
                failed: s.failed,
                in_flight: self.leases.held_by(*id) as u64,
                progress: self.leases.progress_of(*id),
                state: s.state.as_deref().cloned(),
            })
            .collect();
        workers.sort_by_key(|w| w.session);
        Stats {
            queues,
            sessions,
            workers,
            acked: self.acked,
            failed: self.failed,
            stored_bytes: self.stored_bytes() as u64,
        }
    }

    /// Payload bytes of every task the hub holds.
    /// Whether tasks can be stored now (a data dir whose writes fail cannot).
    pub fn writable(&self) -> Result<(), String> {
        self.journal.writable()
    }

    /// Every queue's counters, depth and tasks in flight, and the put-to-ack latency.
    pub fn metrics(&self) -> (Vec<crate::metrics::QueueMetrics>, crate::metrics::Latency) {
        let mut queues: Vec<_> = self
            .queues
            .iter()
            .map(|(name, q)| crate::metrics::QueueMetrics {
                name: name.to_string(),
                counters: q.counters,
                depth: q.ready.len() as u64,
                in_flight: q.in_flight as u64,
                scheduled: q.scheduled as u64,
            })
            .collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        (queues, self.latency.clone())
    }

    pub fn stored_bytes(&self) -> usize {
        self.stored_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Tasks currently leased, across all sessions.
    pub fn leased(&self) -> usize {
        self.leases.len()
    }

    /// Every task held: each queue's ready tasks in order, the leased and scheduled ones by id; each as
    /// (id, attempts, payload text). For tests that compare brokers.
    #[cfg(test)]
    pub(crate) fn dump(&self) -> Dump {
        let show = |t: &StoredTask| (t.id.0, t.attempts, t.payload.to_string());
        let mut ready = BTreeMap::new();
        for (name, q) in &self.queues {
            let tasks: Vec<_> = q.ready.iter().map(show).collect();
            if !tasks.is_empty() {
                ready.insert(name.to_string(), tasks);
            }
        }
        let leased = self
            .leases
            .by_task
            .values()
            .map(|l| (l.task.id.0, (l.task.queue.to_string(), show(&l.task))))
            .collect();
        let scheduled = self
            .scheduled
            .iter()
            .map(|t| {
                let due = t.not_before.map_or(0, NonZeroU64::get);
                (t.id.0, (t.queue.to_string(), due, show(t)))
            })
            .collect();
        Dump {
            ready,
            leased,
            scheduled,
        }
    }
}
