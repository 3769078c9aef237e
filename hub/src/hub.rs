//! Shared state: the broker behind one lock, the session outboxes, and the lease timer.
//!
//! The lock is never held across `.await` or while sending: an operation runs, its outputs are
//! snapshotted with their recipients' outboxes, the lock is released, then the messages go out.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use taskhub_core::codec::encode_server;
use taskhub_core::protocol::Limits;
use taskhub_core::{Millis, SessionId};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::broker::{Body, Broker, Gate, Output, ServerMsg};
use crate::bundles::Site;
use crate::config::Config;
use crate::storage;
use crate::writer::{self, message};

/// A message for a session's socket, and the journal ticket that must be durable before it goes
/// (0: none). Only confirmations (`queued`, `deleted`) wait, and whatever the session is sent
/// after one waits behind it, so answers keep the order of the requests; only a
/// `storage_unavailable` refusal goes ahead (`overtakes`), so a producer hears at once that the
/// disk is failing rather than after it works again.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub msg: Message,
    pub after: u64,
    pub overtakes: bool,
}

impl From<Message> for Outgoing {
    fn from(msg: Message) -> Outgoing {
        Outgoing {
            msg,
            after: 0,
            overtakes: false,
        }
    }
}

/// A session's outbox as its writer reads it: a confirmation waiting for its ticket holds back
/// what comes after it, up to the outbox's size (then the channel fills and the session's own
/// requests wait: backpressure).
#[derive(Debug)]
pub(crate) struct Gated {
    rx: mpsc::Receiver<Outgoing>,
    durable: watch::Receiver<u64>,
    held: VecDeque<Outgoing>,
    max_held: usize,
    closed: bool,
}

impl Gated {
    pub fn new(rx: mpsc::Receiver<Outgoing>, durable: watch::Receiver<u64>) -> Gated {
        let max_held = rx.max_capacity();
        Gated {
            rx,
            durable,
            held: VecDeque::new(),
            max_held,
            closed: false,
        }
    }

    /// Drop what is queued (a session abandoned as a slow consumer).
    pub fn discard(&mut self) {
        self.held.clear();
        self.rx.close();
        while self.rx.try_recv().is_ok() {}
    }

    /// The next message that may go now, if any, taking from the channel as needed.
    fn ready(&mut self) -> Option<Message> {
        let durable = *self.durable.borrow();
        if self.held.front().is_some_and(|m| m.after <= durable) {
            return self.held.pop_front().map(|m| m.msg);
        }
        while self.held.len() < self.max_held {
            let next = match self.rx.try_recv() {
                Ok(m) => m,
                Err(mpsc::error::TryRecvError::Empty) => return None,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closed = true;
                    return None;
                }
            };
            if let Some(m) = self.take_or_hold(next, durable) {
                return Some(m);
            }
        }
        None
    }

    /// `next` if it may go now, or held behind what waits.
    fn take_or_hold(&mut self, next: Outgoing, durable: u64) -> Option<Message> {
        if next.overtakes || (self.held.is_empty() && next.after <= durable) {
            return Some(next.msg);
        }
        self.held.push_back(next);
        None
    }
}

impl writer::Outbox for Gated {
    async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.ready() {
                return Some(m);
            }
            if self.closed && self.held.is_empty() {
                return None;
            }
            let room = self.held.len() < self.max_held && !self.closed;
            let waiting = self.held.front().map(|m| m.after);
            tokio::select! {
                next = self.rx.recv(), if room => match next {
                    Some(m) => {
                        let durable = *self.durable.borrow();
                        if let Some(m) = self.take_or_hold(m, durable) {
                            return Some(m);
                        }
                    }
                    None => self.closed = true,
                },
                // The journal's writer publishes each ticket it makes durable, and a last one
                // when it stops; if it is gone without this one, what waits is never sent.
                changed = self.durable.changed(), if waiting.is_some() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    fn try_recv(&mut self) -> Option<Message> {
        self.ready()
    }
}

/// How the hub reaches one session: its bounded outbox and a way to close it.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub tx: mpsc::Sender<Outgoing>,
    /// Notified when the session must close because it does not read fast enough.
    pub kill: Arc<Notify>,
}

impl Link {
    /// Queue one of the session's own answers, waiting for room: backpressure on its requests.
    /// Gives up when the session is being closed as a slow consumer, or marks it so when its
    /// outbox has had no room for `patience`; returns whether the message was queued.
    pub async fn send_own(&self, msg: impl Into<Outgoing>, patience: Duration) -> bool {
        let msg = msg.into();
        let full = match self.tx.try_send(msg) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return true,
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        tokio::select! {
            _ = self.tx.send(full) => true,
            _ = self.kill.notified() => {
                self.kill.notify_one(); // leave the signal for the session loop
                false
            }
            _ = tokio::time::sleep(patience) => {
                self.kill.notify_one();
                false
            }
        }
    }
}

#[derive(Debug)]
struct State {
    broker: Broker,
    links: HashMap<SessionId, Link>,
}

#[derive(Debug)]
pub(crate) struct Hub {
    state: Mutex<State>,
    /// The highest journal ticket that is durable (see [`Outgoing`]); in memory mode nothing
    /// waits for it.
    durable: watch::Receiver<u64>,
    _memory_durable: Option<watch::Sender<u64>>,
    pub config: Config,
    /// What the port serves over plain HTTP.
    pub site: Site,
    epoch: Instant,
    timer: Notify,
    next_session: AtomicU64,
    pub connections: AtomicUsize,
    /// Pub/sub messages dropped for subscribers that did not keep up.
    pub dropped_messages: AtomicU64,
    /// Handshakes refused for their credentials, for `/metrics`.
    pub auth_failures: AtomicU64,
    /// Sessions closed as slow consumers, for `/metrics`.
    pub slow_consumer_closes: AtomicU64,
    /// Set once the hub starts shutting down: `/readyz` says so.
    pub shutting_down: std::sync::atomic::AtomicBool,
    /// Addresses that keep failing the handshake.
    pub throttle: crate::throttle::AuthThrottle,
    /// Connections that have not authenticated yet.
    pub admission: crate::admission::Admission,
    /// The port's TLS side, when the hub serves `wss://`.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// Clients that spoke the wrong scheme (TLS to a plain port, or the reverse), logged in
    /// summary.
    pub wrong_scheme: crate::throttle::LogEvery,
    /// Revoked token ids.
    pub revoked: crate::keys::Revoked,
    /// Bumped on every revocation: sessions on a token check whether theirs is gone.
    pub revocations: watch::Sender<u64>,
    /// Open sessions per token id, to say how many a revocation closed.
    pub token_sessions: Mutex<HashMap<String, usize>>,
    /// With `--backend nats://...`: the gateway that holds the queues in NATS JetStream instead
    /// of the broker.
    pub gateway: Option<Arc<crate::nats::Gateway>>,
}

/// Where a hub keeps its tasks, once open.
#[derive(Debug)]
pub(crate) struct Opened {
    pub hub: Hub,
    /// The journal's writer, to close after the last session (disk mode).
    pub writer: Option<storage::Writer>,
    /// One line for the operator: the mode, and what start-up found.
    pub summary: String,
}

impl Hub {
    /// Open the data dir if the config names one, take back what it holds, and build the hub.
    pub fn from_config(config: Config) -> Result<Opened, storage::StorageError> {
        let Some(dir) = config.data_dir.clone() else {
            let (tx, durable) = watch::channel(0);
            let mut broker = Broker::new(config.broker.clone());
            // The hub's clock starts now (`Hub::with`); `not_before` is Unix time.
            broker.set_unix_at_zero(storage::unix_ms());
            return Ok(Opened {
                hub: Hub::with(config, broker, durable, Some(tx)),
                writer: None,
                summary: "storage: memory only; tasks are lost when the hub stops (--data-dir DIR keeps them)".into(),
            });
        };
        let started = std::time::Instant::now();
        let opened = storage::open(&dir)?;
        let mut broker = Broker::with_journal(config.broker.clone(), Box::new(opened.journal));
        let r = opened.recovery;
        for note in &r.notes {
            tracing::warn!("{note}");
        }
        // The hub's clock starts now (`Hub::with`); a dedup window and `not_before` are kept
        // in Unix time.
        broker.set_unix_at_zero(storage::unix_ms());
        let tasks = broker.restore(r.tasks, r.next_task, Millis(0));
        let dedup = r.dedup.len();
        broker.restore_dedup(r.dedup);
        broker.commit();
        let queues = broker.stats().queues.len();
        let summary = format!(
            "storage: {} (fsync {}): {tasks} task(s) in {queues} queue(s) and {dedup} dedup id(s) read back from {} segment(s), {:.1} MB, in {} ms",
            dir.path.display(),
            dir.fsync,
            r.segments,
            r.bytes as f64 / 1e6,
            started.elapsed().as_millis()
        );
        Ok(Opened {
            hub: Hub::with(config, broker, opened.durable, None),
            writer: Some(opened.writer),
            summary,
        })
    }

    fn with(
        config: Config,
        broker: Broker,
        durable: watch::Receiver<u64>,
        memory: Option<watch::Sender<u64>>,
    ) -> Self {
        Hub {
            state: Mutex::new(State {
                broker,
                links: HashMap::new(),
            }),
            durable,
            _memory_durable: memory,
            site: Site::new(&config.bundles),
            config,
            epoch: Instant::now(),
            timer: Notify::new(),
            next_session: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            dropped_messages: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            slow_consumer_closes: AtomicU64::new(0),
            shutting_down: Default::default(),
            throttle: Default::default(),
            admission: Default::default(),
            tls: None,
            wrong_scheme: Default::default(),
            revoked: Default::default(),
            revocations: watch::channel(0).0,
            token_sessions: Mutex::new(HashMap::new()),
            gateway: None,
        }
    }

    /// Hold the queues in NATS through `gateway`; session ids start where its hub's do.
    pub fn use_gateway(&mut self, gateway: Arc<crate::nats::Gateway>) {
        self.next_session = AtomicU64::new(gateway.first_session());
        self.gateway = Some(gateway);
    }

    /// What a session's writer watches to know when a confirmation may go.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    pub fn now(&self) -> Millis {
        Millis(taskhub_core::time::millis_of(self.epoch.elapsed()))
    }

    /// What `/metrics` shows: the queues' counters and gauges (from the broker, or with NATS from
    /// the gateway), the sessions, and this hub's totals.
    pub async fn metrics(&self) -> Result<crate::metrics::Snapshot, crate::broker::Failure> {
        let mut snap = match &self.gateway {
            Some(gw) => gw.metrics().await?,
            None => {
                let st = self.lock();
                let stats = st.broker.stats();
                let (queues, latency) = st.broker.metrics();
                crate::metrics::Snapshot {
                    queues,
                    sessions: stats.sessions,
                    stored_bytes: stats.stored_bytes,
                    latency,
                    ..Default::default()
                }
            }
        };
        snap.dropped_messages += self.dropped_messages.load(Ordering::Relaxed);
        snap.auth_failures = self.auth_failures.load(Ordering::Relaxed);
        snap.slow_consumer_closes = self.slow_consumer_closes.load(Ordering::Relaxed);
        Ok(snap)
    }

    /// `/readyz`: whether the hub takes work now; if not, why.
    pub fn readiness(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err("the hub is shutting down".into());
        }
        match &self.gateway {
            Some(gw) => gw.readiness(),
            None => self
                .lock()
                .broker
                .writable()
                .map_err(|why| format!("the data dir cannot be written: {why}")),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the broker; the state is still the best
        // we have, so keep serving rather than poison every session.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.config.max_message_bytes,
            ack_wait_ms: taskhub_core::time::millis_of(self.config.broker.ack_wait),
            max_prefetch: self.config.broker.max_prefetch,
            max_attempts: self.config.broker.max_attempts,
            ping_interval_ms: u64::try_from(self.config.ping_interval.as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    pub fn new_session_id(&self) -> SessionId {
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    /// Register an authenticated session so it can receive messages.
    /// `trusted`: where its results count alone for a redundant task.
    pub fn open(
        &self,
        id: SessionId,
        role: taskhub_core::Role,
        name: Option<String>,
        trusted: crate::broker::Trusted,
        link: Link,
    ) {
        if let Some(gw) = &self.gateway {
            gw.open_session(id, role, name, link);
            return;
        }
        let mut st = self.lock();
        st.links.insert(id, link);
        st.broker.open_session(id, role, name);
        st.broker.trust(id, trusted);
    }

    /// Unregister a session; its leases go back to their queues.
    pub async fn close(&self, id: SessionId) {
        if let Some(gw) = &self.gateway {
            gw.close_session(id).await;
            return;
        }
        self.apply(None, |b, now| b.close_session(id, now)).await;
        self.lock().links.remove(&id);
    }

    /// Run `op` on the broker and deliver what it produced. Messages for `caller` wait for room in
    /// its outbox (backpressure on its own requests); messages for anyone else never wait.
    pub async fn apply(&self, caller: Option<SessionId>, op: impl FnOnce(&mut Broker, Millis)) {
        let now = self.now();
        let (outputs, wake, ticket) = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let before = st.broker.next_deadline();
            op(&mut st.broker, now);
            // Still under the lock, so the journal hears changes in the order they were made.
            let ticket = st.broker.commit();
            let after = st.broker.next_deadline();
            let outputs: Vec<(Link, Output)> = st
                .broker
                .drain()
                .filter_map(|o| st.links.get(&o.to).map(|l| (l.clone(), o)))
                .collect();
            let wake = match (before, after) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(b), Some(a)) => a < b,
            };
            (outputs, wake, ticket)
        };
        if wake {
            self.timer.notify_one();
        }
        // Messages for other sessions never wait, and go first: a caller that does not read its
        // answers must not hold up what its requests deliver to others (whose lease clocks are
        // already running). Then the caller's own answers, in order, waiting for room.
        let mut own = Vec::new();
        // A publish's message is the same for each subscriber, one after another: encode it
        // once and share the frame.
        let mut last_message: Option<(Body, Message)> = None;
        for (link, out) in outputs {
            let msg = match (&out.msg, &last_message) {
                (ServerMsg::Message { payload, .. }, Some((shared, frame)))
                    if payload.same(shared) =>
                {
                    frame.clone()
                }
                (ServerMsg::Message { payload, .. }, _) => {
                    let frame = message(encode_server(&out.msg));
                    last_message = Some((payload.clone(), frame.clone()));
                    frame
                }
                _ => message(encode_server(&out.msg)),
            };
            let msg = Outgoing {
                msg,
                after: if out.gate == Gate::Stored { ticket } else { 0 },
                overtakes: out.gate == Gate::AheadOfStored,
            };
            if Some(out.to) == caller {
                own.push((link, msg));
                continue;
            }
            match link.tx.try_send(msg) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(_)) if out.droppable => {
                    self.dropped_messages.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(session = %out.to, "outbox full: closing slow consumer");
                    link.kill.notify_one();
                }
            }
        }
        for (link, msg) in own {
            // Once the caller is being closed, its remaining answers are not worth waiting for.
            if !link.send_own(msg, self.config.idle_timeout).await {
                break;
            }
        }
    }

    /// Sleep until the broker's next deadline, expire, repeat; until `stop` says so.
    pub async fn run_timer(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if let Some(gw) = &self.gateway {
            return gw.clone().run_timer(stop).await;
        }
        loop {
            let next = self.lock().broker.next_deadline();
            let sleep = match next {
                Some(t) => tokio::time::sleep_until(self.epoch + Duration::from_millis(t.0)),
                None => tokio::time::sleep(Duration::from_secs(3_600)),
            };
            tokio::select! {
                _ = sleep => self.apply(None, |b, now| b.expire(now)).await,
                _ = self.timer.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }
}
