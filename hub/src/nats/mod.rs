//! The NATS JetStream backend: the hub as a gateway (`taskhub serve --backend nats://...`).
//!
//! Queues live in one work-queue stream ([`wire::STREAM`]), a subject per queue, and every hub
//! shares one durable pull consumer per queue. The stream sequence of a task's message is its id,
//! and the consumer's delivery count is its attempt. A hub pulls no more than its sessions have
//! credit for, and holds each delivery as a lease:
//!
//! - `ack` acks the message (after storing the result in `reply_to`, if any);
//! - `fail` naks it (retry) or stores a dead letter and acks it;
//! - `release` and a closed session nak it, so it is redelivered at once;
//! - `touch` sends in-progress, which restarts JetStream's ack-wait;
//! - a lease the hub sees expire is nakked; if the hub itself dies, JetStream redelivers after its
//!   own ack-wait, a little longer than the hub's.
//!
//! Topics are core NATS subjects; replies to a session's inbox go by core NATS to the hub that
//! holds the session. ARCHITECTURE.md ("Scaling out with NATS") has the whole mapping and where
//! it differs from the embedded broker.
//!
//! The state lock is never held across `.await`: an operation decides under the lock and returns
//! what to tell NATS ([`Effect`]), which runs after.

pub(crate) mod wire;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::{FutureExt, Shared};
use taskhub_core::codec::{Frame, encode_server};
use taskhub_core::protocol::{QueueStats, Reply, Schedule, Stats, WorkerStats};
use taskhub_core::{ErrorCode, Pattern, QueueName, Role, SessionId, Task, TaskId};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::broker::{
    Backoff, Body, BrokerConfig, ClientMsg, Failure, ServerMsg, dead_letter_entry, reply_entry,
    rules, sessions_by_role,
};
use crate::hub::Link;
use crate::metrics::QueueCounters;
use crate::writer::message;

/// How a hub reaches NATS: `--backend` and the NATS settings.
#[derive(Debug, Clone)]
pub struct NatsBackend {
    /// `nats://HOST:PORT`, several separated by commas; user and password or a token may be in
    /// the URL (`nats://user:pass@host:4222`).
    pub servers: String,
    /// A NATS credentials file (JWT and NKey seed).
    pub creds: Option<std::path::PathBuf>,
    /// Replicas of the stream when this hub creates it (1, or 3 on a three-node cluster).
    pub replicas: usize,
    /// The hub id to try first instead of a random one (tests of id clashes).
    #[doc(hidden)]
    pub first_hub_id: Option<u32>,
}

impl NatsBackend {
    /// `servers`, without a credentials file, creating a stream of one replica.
    pub fn new(servers: impl Into<String>) -> NatsBackend {
        NatsBackend {
            servers: servers.into(),
            creds: None,
            replicas: 1,
            first_hub_id: None,
        }
    }

    /// The server URLs, as listed.
    pub fn urls(&self) -> Vec<&str> {
        self.servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The servers with any password or token replaced, for logs.
    pub fn redacted(&self) -> String {
        self.urls()
            .into_iter()
            .map(|url| match split_userinfo(url) {
                (scheme, Some(_), host) => format!("{scheme}***@{host}"),
                (_, None, _) => url.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The credentials the URLs carry (`user:password@` or `token@`), which the NATS client
    /// does not take from a URL by itself; the URLs that carry any must carry the same.
    fn url_credentials(&self) -> Result<Option<&str>, String> {
        let mut found = None;
        for url in self.urls() {
            if let (_, Some(userinfo), _) = split_userinfo(url) {
                if found.is_some_and(|f| f != userinfo) {
                    return Err(
                        "the server URLs carry different credentials; give them all the same"
                            .into(),
                    );
                }
                found = Some(userinfo);
            }
        }
        Ok(found)
    }
}

/// A server URL as (`scheme://` or nothing, the user info before `@` if any, the rest).
fn split_userinfo(url: &str) -> (&str, Option<&str>, &str) {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => (scheme, Some(userinfo), host),
        None => (scheme, None, rest),
    }
}

/// An answer to one request: ready now, or once NATS confirms. A session sends its answers in
/// the order of its requests.
pub(crate) type Answer = Pin<Box<dyn Future<Output = Option<ServerMsg>> + Send>>;

fn ready(msg: Option<ServerMsg>) -> Answer {
    Box::pin(std::future::ready(msg))
}

/// How long a pull request waits at the server before it expires and is made again.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// A pull request counts as gone this long after it should have expired, if the server's word
/// that it did was lost (a NATS server restart).
const PULL_GRACE: Duration = Duration::from_secs(2);
/// How long NATS may take to confirm something before the hub gives up on it.
const NATS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write waits for JetStream to confirm it before it is answered
/// `storage_unavailable` ("may or may not be stored"): NATS away for longer than this is an
/// outage the producer hears of.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries a puller takes off its subscription before handing them out (one lock for all).
const DRAIN_AT_ONCE: usize = 64;

/// How long `stats` waits for other hubs, at most; and for hubs it has not heard from before,
/// once every hub it knows has answered.
const STATS_WAIT: Duration = Duration::from_millis(200);
const STATS_GRACE: Duration = Duration::from_millis(10);

/// One hub's part of `stats`: its sessions and workers, and per queue the tasks its sessions hold
/// and the sessions consuming it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Snapshot {
    hub: u32,
    sessions: std::collections::BTreeMap<String, u64>,
    workers: Vec<WorkerStats>,
    queues: HashMap<String, (u64, u64)>,
    acked: u64,
    failed: u64,
}

type StatsFlight = Shared<futures_util::future::BoxFuture<'static, Result<Stats, Failure>>>;

#[derive(Default)]
struct Flights {
    running: Option<StatsFlight>,
    next: Option<StatsFlight>,
}

impl std::fmt::Debug for Flights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights")
            .field("running", &self.running.is_some())
            .field("next", &self.next.is_some())
            .finish()
    }
}

/// What to tell NATS once the state lock is released.
#[derive(Debug)]
enum Effect {
    Ack(String),
    Nak(String),
    /// Nak, to be redelivered no sooner than this (a retry backing off).
    NakAfter(String, Duration),
    Progress(String),
    /// Store a dead letter (and the failure reply), then ack the task's message.
    Dead {
        task: Task<Body>,
        error: Option<String>,
        ack: String,
    },
}

/// How a session gave a lease back, for its counts.
#[derive(Debug, Clone, Copy)]
enum Settled {
    Acked,
    Failed,
    Released,
}

/// A task delivered to this hub, not yet handed to a session.
#[derive(Debug)]
struct Arrived {
    task: Task<Body>,
    ack: String,
    at: Instant,
    /// When JetStream stored it (ns since the Unix epoch), for the put-to-ack latency.
    stored_ns: u64,
}

#[derive(Debug)]
struct Lease {
    session: SessionId,
    ack: String,
    deadline: Instant,
    task: Task<Body>,
    stored_ns: u64,
}

#[derive(Debug)]
struct Session {
    link: Link,
    role: Role,
    name: Option<String>,
    consuming: Vec<QueueName>,
    prefetch: u32,
    held: usize,
    /// A lease of this session expired: it is handed nothing until it shows it is alive.
    stalled: bool,
    acked: u64,
    failed: u64,
    /// Its subscriptions, in the order it made them.
    subs: Vec<Pattern>,
    waiters: usize,
    /// What it last said of itself (`state`).
    state: Option<Box<taskhub_core::protocol::TabState>>,
}

impl Session {
    fn credit(&self) -> usize {
        if self.stalled {
            return 0;
        }
        (self.prefetch as usize).saturating_sub(self.held)
    }
}

/// A queue this hub's sessions consume.
#[derive(Debug, Default)]
struct Queue {
    consumers: VecDeque<SessionId>,
    ready: VecDeque<Arrived>,
    wake: Arc<Notify>,
    /// The task that pulls for it, while there is one.
    puller: Option<AbortHandle>,
    /// Deliveries its pull requests may still bring, as the puller last counted them: freed
    /// credit wakes the puller only when it would ask for more ([`pull_size`]).
    outstanding: usize,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<SessionId, Session>,
    queues: HashMap<QueueName, Queue>,
    leases: HashMap<TaskId, Lease>,
    deadlines: BTreeSet<(Instant, TaskId)>,
    acked: u64,
    failed: u64,
    ack_wait: Duration,
    /// Wakes the timer when a deadline comes earlier than those it sleeps for.
    timer: Arc<Notify>,
    /// What this hub saw happen to each queue's tasks, for `/metrics` (at most `max_queues`
    /// queues are counted).
    counters: HashMap<QueueName, QueueCounters>,
    max_counted: usize,
    /// Put-to-ack times of the tasks this hub's sessions acked.
    latency: crate::metrics::Latency,
}

/// `queue`'s counters, made if there is room for another queue's.
fn counted<'a>(
    counters: &'a mut HashMap<QueueName, QueueCounters>,
    max: usize,
    queue: &QueueName,
) -> Option<&'a mut QueueCounters> {
    if !counters.contains_key(queue) && counters.len() < max {
        counters.insert(queue.clone(), QueueCounters::default());
    }
    counters.get_mut(queue)
}

/// The hub's side of the NATS backend.
#[derive(Debug)]
pub(crate) struct Gateway {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    config: BrokerConfig,
    /// This hub's id among the hubs on the same NATS (random): the top bits of its session ids.
    hub: u32,
    state: Mutex<State>,
    /// Consumers this hub knows exist.
    consumers: Mutex<std::collections::HashSet<QueueName>>,
    /// Pub/sub messages dropped for sessions that did not keep up.
    pub dropped: AtomicU64,
    inbox_task: Mutex<Option<AbortHandle>>,
    /// The hub's subscription to every topic, while any session subscribes to something.
    topics: tokio::sync::Mutex<Option<AbortHandle>>,
    /// Hubs that answered the last `stats`.
    peers: Mutex<std::collections::HashSet<u32>>,
    /// The `stats` being made, and the one to make after it.
    flights: Mutex<Flights>,
    /// Bumped on every (re)connection to NATS.
    connections: watch::Sender<u64>,
    stats_task: Mutex<Option<AbortHandle>>,
    /// Answers for this hub's id (see [`claim_hub_id`]).
    id_task: Mutex<Option<AbortHandle>>,
}

/// Why the backend could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("NATS backend {servers}: {why}")]
pub struct BackendError {
    servers: String,
    why: String,
}

impl Gateway {
    /// Connect, and find or create the stream.
    pub async fn open(
        backend: &NatsBackend,
        config: BrokerConfig,
    ) -> Result<Arc<Self>, BackendError> {
        let fail = |why: String| BackendError {
            servers: backend.redacted(),
            why,
        };
        // Each (re)connection is counted: pull requests made before it are gone with the old
        // connection (a NATS server that restarted forgets them), so pullers ask again at once.
        let (connections, _) = watch::channel(0u64);
        let counted = connections.clone();
        let servers_shown = backend.redacted();
        let mut options = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                let (counted, servers) = (counted.clone(), servers_shown.clone());
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            counted.send_modify(|n| *n += 1);
                            tracing::info!("NATS backend {servers}: connected");
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("NATS backend {servers}: connection lost; reconnecting");
                        }
                        other => tracing::debug!("NATS backend {servers}: {other}"),
                    }
                }
            })
            .name("taskhub hub")
            .connection_timeout(Duration::from_secs(5))
            // Publishes are buffered while NATS is away (bounded), then refused.
            .client_capacity(65_536)
            .subscription_capacity(65_536);
        if let Some(userinfo) = backend.url_credentials().map_err(fail)? {
            options = match userinfo.split_once(':') {
                Some((user, pass)) => options.user_and_password(user.into(), pass.into()),
                None => options.token(userinfo.into()),
            };
        }
        if let Some(creds) = &backend.creds {
            options = options
                .credentials_file(creds)
                .await
                .map_err(|e| fail(format!("credentials file {}: {e}", creds.display())))?;
        }
        let urls = backend.urls();
        let connect = options.connect(urls.as_slice());
        let client = tokio::time::timeout(Duration::from_secs(15), connect)
            .await
            .map_err(|_| fail("no answer within 15 s".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let mut js = jetstream::new(client.clone());
        // The wait for a publish's confirmation (and JetStream API calls): one timer, the
        // client's own, per put.
        js.set_timeout(CONFIRM_TIMEOUT);
        let want = stream::Config {
            name: wire::STREAM.into(),
            subjects: vec![wire::QUEUE_SUBJECTS.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: backend.replicas.max(1),
            max_messages_per_subject: i64::try_from(config.max_queue_len).unwrap_or(i64::MAX),
            max_bytes: i64::try_from(config.max_stored_bytes).unwrap_or(i64::MAX),
            discard: stream::DiscardPolicy::New,
            discard_new_per_subject: true,
            duplicate_window: config.dedup_window,
            description: Some("taskhub queues: one subject per queue".into()),
            ..Default::default()
        };
        let stream = js
            .get_or_create_stream(want)
            .await
            .map_err(|e| fail(format!("stream {}: {e}", wire::STREAM)))?;
        let (hub, id_claim) = claim_hub_id(&client, backend.first_hub_id)
            .await
            .map_err(fail)?;
        tracing::info!("NATS backend: this hub's id is {hub}");
        let (ack_wait, max_counted) = (config.ack_wait, config.max_queues);
        let gw = Arc::new(Gateway {
            client,
            js,
            stream,
            config,
            hub,
            state: Mutex::new(State {
                ack_wait,
                max_counted,
                ..State::default()
            }),
            consumers: Mutex::new(Default::default()),
            dropped: AtomicU64::new(0),
            inbox_task: Mutex::new(None),
            topics: tokio::sync::Mutex::new(None),
            peers: Mutex::new(Default::default()),
            flights: Mutex::new(Flights::default()),
            connections,
            stats_task: Mutex::new(None),
            id_task: Mutex::new(None),
        });
        let stats = gw
            .client
            .subscribe(wire::STATS)
            .await
            .map_err(|e| fail(format!("stats subscription: {e}")))?;
        let task = tokio::spawn(gw.clone().answer_stats(stats));
        *gw.stats_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        let inbox = gw
            .client
            .subscribe(wire::inbox_subjects(hub))
            .await
            .map_err(|e| fail(format!("inbox subscription: {e}")))?;
        let task = tokio::spawn(gw.clone().route_inbox(inbox));
        *gw.inbox_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        let task = tokio::spawn(answer_for_id(gw.client.clone(), id_claim));
        *gw.id_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        Ok(gw)
    }

    /// The first session id of this hub.
    pub fn first_session(&self) -> u64 {
        wire::session_base(self.hub) + 1
    }

    /// One line for the operator.
    pub async fn summary(&self, backend: &NatsBackend) -> String {
        let mut stream = self.stream.clone();
        match stream.info().await {
            Ok(info) => format!(
                "storage: NATS JetStream at {} (hub id {}): stream {} ({:?}, {} replica(s)) holds {} task(s), {:.1} MB",
                backend.redacted(),
                self.hub,
                wire::STREAM,
                info.config.storage,
                info.config.num_replicas,
                info.state.messages,
                info.state.bytes as f64 / 1e6
            ),
            Err(e) => format!(
                "storage: NATS JetStream at {} (hub id {}); stream info failed: {e}",
                backend.redacted(),
                self.hub
            ),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn open_session(&self, id: SessionId, role: Role, name: Option<String>, link: Link) {
        let name = name.map(|n| n.chars().take(64).collect());
        self.lock().sessions.insert(
            id,
            Session {
                link,
                role,
                name,
                consuming: Vec::new(),
                prefetch: 0,
                held: 0,
                stalled: false,
                acked: 0,
                failed: 0,
                subs: Vec::new(),
                waiters: 0,
                state: None,
            },
        );
    }

    /// A session ended: its leases go back to JetStream at once (or to dead letters, if that was
    /// their last attempt), its subscriptions end.
    pub async fn close_session(self: &Arc<Self>, id: SessionId) {
        let effects = {
            let mut st = self.lock();
            let Some(session) = st.sessions.remove(&id) else {
                return;
            };
            for q in &session.consuming {
                if let Some(queue) = st.queues.get_mut(q) {
                    queue.consumers.retain(|s| *s != id);
                    queue.wake.notify_one();
                }
            }
            let mine: Vec<TaskId> = st
                .leases
                .iter()
                .filter(|(_, l)| l.session == id)
                .map(|(t, _)| *t)
                .collect();
            let mut mine: Vec<Lease> = mine.into_iter().filter_map(|t| st.take_lease(t)).collect();
            mine.sort_by_key(|l| l.task.id);
            mine.into_iter()
                .map(|l| {
                    self.requeue(
                        l,
                        "the worker's session closed while it held the task".into(),
                    )
                })
                .collect::<Vec<_>>()
        };
        self.run(effects).await;
        self.topics_still_wanted().await;
    }

    /// Back to JetStream for another delivery, or to dead letters if out of attempts.
    fn requeue(&self, lease: Lease, why: String) -> Effect {
        if lease.task.attempt >= lease.task.max_attempts {
            Effect::Dead {
                task: lease.task,
                error: Some(why),
                ack: lease.ack,
            }
        } else {
            Effect::Nak(lease.ack)
        }
    }

    /// Apply one request from `session`; the answer may wait for NATS.
    pub async fn handle(self: &Arc<Self>, session: SessionId, msg: ClientMsg) -> Answer {
        let req = msg.req();
        let worker_traffic = rules::is_worker_traffic(&msg);
        let quiet_ok = req.is_none() && worker_traffic;
        if worker_traffic || matches!(msg, ClientMsg::Ping { .. }) {
            self.revive(session);
        }
        let answer = move |r: Result<ServerMsg, Failure>| -> Option<ServerMsg> {
            match r {
                Ok(ServerMsg::Ok { .. }) if quiet_ok => None,
                Ok(m) => Some(m),
                Err((code, message)) => Some(ServerMsg::error(req, code, message)),
            }
        };
        match msg {
            ClientMsg::Auth { .. } => ready(answer(Err(rules::already_authenticated()))),
            ClientMsg::CreateToken { .. } | ClientMsg::RevokeToken { .. } => {
                ready(answer(Err(rules::token_request())))
            }
            ClientMsg::Ping { .. } => ready(answer(Ok(ServerMsg::Ok { req }))),
            ClientMsg::Cancel { .. } => ready(answer(Err(rules::unsupported("cancel")))),
            ClientMsg::State { state, .. } => {
                if let Err(why) = state.check() {
                    return ready(answer(Err(rules::bad_request(why))));
                }
                if let Some(s) = self.lock().sessions.get_mut(&session) {
                    s.state = Some(Box::new(state));
                }
                ready(answer(Ok(ServerMsg::Ok { req })))
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
            } => {
                if let Err(e) = unscheduled(&schedule) {
                    return ready(answer(Err(e)));
                }
                let put = self
                    .put(
                        session,
                        &queue,
                        &payload,
                        kind,
                        reply_to,
                        max_attempts,
                        dedup_id,
                    )
                    .await;
                match put {
                    Err(e) => ready(answer(Err(e))),
                    Ok(confirm) => {
                        let gw = self.clone();
                        Box::pin(async move {
                            let r = confirm.await.map(|task| ServerMsg::Queued { req, task });
                            if r.is_ok() {
                                gw.count(&queue, |c| c.put += 1);
                            }
                            answer(r)
                        })
                    }
                }
            }
            ClientMsg::Get {
                queue, timeout_ms, ..
            } => {
                if let Err(e) = rules::not_inbox(&queue) {
                    return ready(answer(Err(e)));
                }
                let get = self.clone().get(req, queue, timeout_ms);
                if timeout_ms == 0 {
                    return Box::pin(get);
                }
                // A get that waits answers when it is done; later requests do not wait for it.
                let limit = self.config.max_waiters_per_session;
                let link = {
                    let mut st = self.lock();
                    match st.sessions.get_mut(&session) {
                        Some(s) if s.waiters >= limit => None,
                        Some(s) => {
                            s.waiters += 1;
                            Some(s.link.clone())
                        }
                        None => return ready(None),
                    }
                };
                let Some(link) = link else {
                    return ready(answer(Err((
                        ErrorCode::LimitReached,
                        format!("this session already has {limit} pending gets"),
                    ))));
                };
                let gw = self.clone();
                tokio::spawn(async move {
                    if let Some(msg) = get.await {
                        let _ = link.tx.send(message(encode_server(&msg)).into()).await;
                    }
                    if let Some(s) = gw.lock().sessions.get_mut(&session) {
                        s.waiters = s.waiters.saturating_sub(1);
                    }
                });
                ready(None)
            }
            ClientMsg::Consume {
                queues, prefetch, ..
            } => ready(answer(
                self.consume(session, queues, prefetch)
                    .map(|()| ServerMsg::Ok { req }),
            )),
            ClientMsg::Ack { task, result, .. } => {
                let lease = self.settle(session, task, Settled::Acked);
                let gw = self.clone();
                Box::pin(async move {
                    let r = match lease {
                        Err(e) => Err(e),
                        Ok(lease) => gw.ack(lease, result).await,
                    };
                    answer(r.map(|()| ServerMsg::Ok { req }))
                })
            }
            ClientMsg::Fail {
                task,
                error,
                retry,
                backoff_ms,
                ..
            } => {
                let lease = self.settle(session, task, Settled::Failed);
                match lease {
                    Err(e) => ready(answer(Err(e))),
                    Ok(lease) => {
                        let retried = retry && lease.task.attempt < lease.task.max_attempts;
                        let effect = if retried {
                            // A put's own backoff is refused here: the hub's applies.
                            let wait = Backoff::default().retry_wait(
                                &self.config,
                                backoff_ms,
                                lease.task.attempt,
                                lease.task.id,
                            );
                            match wait {
                                0 => Effect::Nak(lease.ack),
                                w => Effect::NakAfter(lease.ack, Duration::from_millis(w)),
                            }
                        } else {
                            Effect::Dead {
                                task: lease.task,
                                error: Some(error),
                                ack: lease.ack,
                            }
                        };
                        let gw = self.clone();
                        Box::pin(async move {
                            gw.run(vec![effect]).await;
                            gw.freed(session);
                            answer(Ok(ServerMsg::Ok { req }))
                        })
                    }
                }
            }
            ClientMsg::Release { task, .. } => {
                let lease = self.settle(session, task, Settled::Released);
                match lease {
                    Err(e) => ready(answer(Err(e))),
                    Ok(lease) => {
                        let gw = self.clone();
                        Box::pin(async move {
                            gw.give_back(lease.task, lease.ack).await;
                            gw.freed(session);
                            answer(Ok(ServerMsg::Ok { req }))
                        })
                    }
                }
            }
            ClientMsg::Progress {
                task,
                fraction,
                message,
                ..
            } => {
                if let Err(why) =
                    taskhub_core::protocol::check_progress(fraction, message.as_deref())
                {
                    return ready(answer(Err(rules::bad_request(why))));
                }
                match self.extend_lease(session, task).await {
                    Err(e) => ready(answer(Err(e))),
                    Ok(reply_to) => {
                        if let Some(to) = reply_to.filter(QueueName::is_inbox) {
                            let msg = ServerMsg::Progress {
                                task,
                                fraction,
                                message,
                            };
                            self.to_inbox(&to, &msg).await;
                        }
                        ready(answer(Ok(ServerMsg::Ok { req })))
                    }
                }
            }
            ClientMsg::Touch { task, .. } => ready(answer(
                self.extend_lease(session, task)
                    .await
                    .map(|_| ServerMsg::Ok { req }),
            )),
            ClientMsg::Publish { topic, payload, .. } => {
                let body = wire::to_nats(wire::Meta::default(), &payload);
                let receivers = {
                    let st = self.lock();
                    st.sessions
                        .values()
                        .filter(|s| s.subs.iter().any(|p| p.matches(&topic)))
                        .count() as u64
                };
                let sent = self.client.publish(wire::topic_subject(&topic), body).await;
                ready(answer(
                    sent.map(|()| ServerMsg::Published { req, receivers })
                        .map_err(|e| unavailable(&e)),
                ))
            }
            ClientMsg::Subscribe { pattern, .. } => ready(answer(
                self.subscribe(session, pattern)
                    .await
                    .map(|()| ServerMsg::Ok { req }),
            )),
            ClientMsg::Unsubscribe { pattern, .. } => {
                self.unsubscribe(session, &pattern).await;
                ready(answer(Ok(ServerMsg::Ok { req })))
            }
            ClientMsg::DeadList { queue, limit, .. } => {
                let gw = self.clone();
                Box::pin(async move { answer(gw.dead_list(req, queue, limit).await) })
            }
            ClientMsg::DeadRequeue { queue, ids, .. } => {
                let gw = self.clone();
                Box::pin(async move { answer(gw.dead_requeue(session, req, queue, ids).await) })
            }
            ClientMsg::DeleteQueue { queue, .. } => {
                let gw = self.clone();
                Box::pin(async move { answer(gw.delete_queue(req, queue).await) })
            }
            ClientMsg::Stats { .. } => {
                let gw = self.clone();
                Box::pin(async move {
                    answer(
                        gw.stats()
                            .await
                            .map(|stats| ServerMsg::Stats { req, stats }),
                    )
                })
            }
        }
    }

    /// Worker traffic from a stalled session shows it is alive: it may be handed work again.
    fn revive(&self, session: SessionId) {
        let mut st = self.lock();
        if let Some(s) = st.sessions.get_mut(&session)
            && s.stalled
        {
            s.stalled = false;
            st.dispatch_for(session);
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn put(
        &self,
        session: SessionId,
        queue: &QueueName,
        payload: &Body,
        kind: Option<String>,
        reply_to: Option<QueueName>,
        max_attempts: Option<u32>,
        dedup_id: Option<String>,
    ) -> Result<impl Future<Output = Result<TaskId, Failure>> + use<>, Failure> {
        let max_attempts = rules::check_put(
            session,
            queue,
            reply_to.as_ref(),
            max_attempts,
            self.config.max_attempts,
            kind.as_deref(),
        )?;
        if let Some(id) = &dedup_id {
            rules::check_dedup_id(id)?;
        }
        let meta = self.task_meta(kind.as_deref(), reply_to.as_ref(), max_attempts);
        let publish = publication(payload, meta, dedup_id.as_deref());
        let confirmed = self.send(queue, publish).await?;
        Ok(async move { confirmed.await.map(TaskId) })
    }

    /// What a task's message carries besides its body (a default `max_attempts` is left out).
    fn task_meta<'a>(
        &self,
        kind: Option<&'a str>,
        reply_to: Option<&'a QueueName>,
        max_attempts: u32,
    ) -> wire::Meta<'a> {
        wire::Meta {
            kind: kind.map(Cow::Borrowed),
            reply_to: reply_to.map(|r| Cow::Borrowed(r.as_str())),
            max_attempts: (max_attempts != self.config.max_attempts).then_some(max_attempts),
            ..wire::Meta::default()
        }
    }

    /// A released task goes back without spending an attempt. JetStream counts every delivery,
    /// so the hub stores it again (same task id, the attempts it spent) and acks the delivery it
    /// gives back; if NATS refuses the copy, the delivery is nakked instead (the attempt counts).
    async fn give_back(&self, task: Task<Body>, ack: String) {
        let meta = wire::Meta {
            id: Some(task.id.0),
            spent: task.attempt.saturating_sub(1),
            ..self.task_meta(
                task.kind.as_deref(),
                task.reply_to.as_ref(),
                task.max_attempts,
            )
        };
        let publish = publication(&task.payload, meta, None);
        let word = match self.store(&task.queue, publish).await {
            Ok(()) => "+ACK",
            Err((_, why)) => {
                tracing::debug!(task = %task.id, "released task not stored again ({why}); nakked");
                "-NAK"
            }
        };
        let _ = self.client.publish(ack, word.into()).await;
    }

    async fn get(
        self: Arc<Self>,
        req: Option<u64>,
        queue: QueueName,
        timeout_ms: u64,
    ) -> Option<ServerMsg> {
        let empty = ServerMsg::Empty {
            req,
            queue: queue.clone(),
        };
        // Tasks put on a queue nobody has consumed yet wait for its consumer: a get makes it.
        if let Err((code, why)) = self.ensure_consumer(&queue).await {
            return Some(ServerMsg::error(req, code, why));
        }
        let inbox = self.client.new_inbox();
        let Ok(mut sub) = self.client.subscribe(inbox.clone()).await else {
            return Some(ServerMsg::error(
                req,
                ErrorCode::StorageUnavailable,
                "NATS is not reachable",
            ));
        };
        let wait = Duration::from_millis(timeout_ms).min(self.config.max_get_wait);
        let request = if timeout_ms == 0 {
            serde_json::json!({"batch": 1, "no_wait": true})
        } else {
            serde_json::json!({"batch": 1, "expires": wait.as_nanos() as u64})
        };
        let subject = format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            wire::STREAM,
            wire::consumer_name(&queue)
        );
        if self
            .client
            .publish_with_reply(subject, inbox, request.to_string().into())
            .await
            .is_err()
        {
            return Some(empty);
        }
        let deadline = Instant::now() + wait + PULL_GRACE;
        loop {
            let next = tokio::time::timeout_at(deadline, sub.next()).await;
            let Ok(Some(m)) = next else {
                return Some(empty);
            };
            if m.status.is_some() {
                return Some(empty);
            }
            let Some(arrived) = self.arrived(&queue, m) else {
                continue;
            };
            // A get takes the task for good.
            let again = arrived.task.attempt > 1;
            self.count(&queue, |c| {
                c.delivered += 1;
                c.redelivered += u64::from(again);
            });
            let _ = tokio::time::timeout(
                NATS_TIMEOUT,
                self.client.request(arrived.ack.clone(), "+ACK".into()),
            )
            .await;
            return Some(ServerMsg::Task {
                req,
                task: arrived.task,
            });
        }
    }

    fn consume(
        self: &Arc<Self>,
        session: SessionId,
        queues: Vec<QueueName>,
        prefetch: u32,
    ) -> Result<(), Failure> {
        let wanted = rules::check_consume(queues, prefetch, self.config.max_prefetch)?;
        let mut st = self.lock();
        let Some(s) = st.sessions.get_mut(&session) else {
            return Ok(());
        };
        let old = std::mem::replace(&mut s.consuming, wanted.clone());
        s.prefetch = prefetch;
        for q in &old {
            if let Some(queue) = st.queues.get_mut(q) {
                queue.consumers.retain(|x| *x != session);
                queue.wake.notify_one();
            }
        }
        for q in &wanted {
            let queue = st.queues.entry(q.clone()).or_default();
            queue.consumers.push_back(session);
            queue.wake.notify_one();
            if queue.puller.is_none() {
                let wake = queue.wake.clone();
                let task = tokio::spawn(self.clone().pull(q.clone(), wake));
                queue.puller = Some(task.abort_handle());
            }
        }
        Ok(())
    }

    /// Take `task`'s lease from `session` (for ack, fail or release).
    fn settle(&self, session: SessionId, task: TaskId, how: Settled) -> Result<Lease, Failure> {
        let mut st = self.lock();
        match st.leases.get(&task) {
            Some(l) if l.session == session => {}
            _ => {
                return Err(rules::not_leased(task));
            }
        }
        let lease = st.take_lease(task).ok_or_else(|| rules::not_leased(task))?;
        match how {
            Settled::Acked => st.acked += 1,
            Settled::Failed => st.failed += 1,
            Settled::Released => {}
        }
        let max = st.max_counted;
        if let Some(c) = counted(&mut st.counters, max, &lease.task.queue) {
            match how {
                Settled::Acked => c.acked += 1,
                Settled::Failed => c.failed += 1,
                Settled::Released => {}
            }
        }
        if matches!(how, Settled::Acked) {
            st.latency
                .record(crate::storage::since_unix_ns(lease.stored_ns));
        }
        if let Some(s) = st.sessions.get_mut(&session) {
            match how {
                Settled::Acked => s.acked += 1,
                Settled::Failed => s.failed += 1,
                Settled::Released => {}
            }
        }
        Ok(lease)
    }

    /// Store the result where `reply_to` says, then ack. A result that cannot be stored sends
    /// the task back to its queue rather than lose it.
    async fn ack(self: &Arc<Self>, lease: Lease, result: Option<Body>) -> Result<(), Failure> {
        let id = lease.task.id;
        let reply = Reply {
            id,
            ok: true,
            result,
            error: None,
            cancelled: false,
        };
        let stored = self.reply(&lease.task, reply).await;
        self.freed(lease.session);
        match stored {
            Ok(()) => {
                self.run(vec![Effect::Ack(lease.ack)]).await;
                Ok(())
            }
            Err((code, why)) => {
                self.run(vec![Effect::Nak(lease.ack)]).await;
                Err((
                    code,
                    format!("{why}; task {id} goes back to its queue to be done again"),
                ))
            }
        }
    }

    /// Whether NATS is connected (puts can be stored).
    pub fn readiness(&self) -> Result<(), String> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            other => Err(format!("NATS is not connected ({other})")),
        }
    }

    /// Count something that happened to `queue`'s tasks.
    fn count(&self, queue: &QueueName, what: impl FnOnce(&mut QueueCounters)) {
        let mut st = self.lock();
        let max = st.max_counted;
        if let Some(c) = counted(&mut st.counters, max, queue) {
            what(c);
        }
    }

    /// `/metrics`: this hub's counters, sessions and latency, and every queue's depth and tasks
    /// in flight across all hubs (as `stats`, so the same on every hub).
    pub async fn metrics(self: &Arc<Self>) -> Result<crate::metrics::Snapshot, Failure> {
        let stats = self.stats().await?;
        let st = self.lock();
        let mut queues: HashMap<String, crate::metrics::QueueMetrics> = stats
            .queues
            .iter()
            .map(|q| {
                let m = crate::metrics::QueueMetrics {
                    name: q.name.to_string(),
                    depth: q.depth,
                    in_flight: q.in_flight,
                    ..Default::default()
                };
                (m.name.clone(), m)
            })
            .collect();
        for (name, c) in &st.counters {
            let m = queues.entry(name.to_string()).or_default();
            m.name = name.to_string();
            m.counters = *c;
        }
        let mut queues: Vec<_> = queues.into_values().collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(crate::metrics::Snapshot {
            queues,
            sessions: sessions_by_role(st.sessions.values().map(|s| s.role)),
            stored_bytes: stats.stored_bytes,
            dropped_messages: self.dropped.load(Ordering::Relaxed),
            latency: st.latency.clone(),
            ..Default::default()
        })
    }

    /// A session has room again (see [`State::dispatch_for`]).
    fn freed(&self, session: SessionId) {
        self.lock().dispatch_for(session);
    }

    /// Send `reply` where `task.reply_to` says: a queue (stored, deduplicated by task id), or a
    /// session's inbox on whichever hub holds it.
    async fn reply(&self, task: &Task<Body>, reply: Reply<Body>) -> Result<(), Failure> {
        let Some(to) = &task.reply_to else {
            return Ok(());
        };
        if to.is_inbox() {
            self.to_inbox(to, &ServerMsg::Reply(reply)).await;
            return Ok(());
        }
        let id = format!("th-reply-{}", task.id);
        let publish = publication(&reply_entry(&reply), wire::Meta::default(), Some(&id));
        self.store(to, publish).await
    }

    /// Extend `session`'s lease of `task` by ack-wait from now (JetStream hears `+WPI`); returns
    /// the task's `reply_to`.
    async fn extend_lease(
        &self,
        session: SessionId,
        task: TaskId,
    ) -> Result<Option<QueueName>, Failure> {
        let (ack, reply_to) = {
            let mut st = self.lock();
            let deadline = Instant::now() + self.config.ack_wait;
            let ack = st.touch(session, task, deadline)?;
            (
                ack,
                st.leases.get(&task).and_then(|l| l.task.reply_to.clone()),
            )
        };
        // A later deadline needs no wake-up: the timer finds it when it fires.
        self.run(vec![Effect::Progress(ack)]).await;
        Ok(reply_to)
    }

    /// Send `msg` to the session whose inbox `to` is, on whichever hub holds it (at most once).
    async fn to_inbox(&self, to: &QueueName, msg: &ServerMsg) {
        let Some(owner) = to.inbox_owner() else {
            return;
        };
        let frame = encode_server(msg);
        if wire::hub_of_session(owner) == self.hub {
            self.to_session(owner, message(frame));
        } else {
            let _ = self
                .client
                .publish(wire::inbox_subject(owner), frame_bytes(frame))
                .await;
        }
    }

    /// Publish to a queue's subject. The future it returns waits for JetStream to confirm, and
    /// gives the message's stream sequence.
    async fn send(
        &self,
        queue: &QueueName,
        publish: jetstream::message::PublishMessage,
    ) -> Result<impl Future<Output = Result<u64, Failure>> + use<>, Failure> {
        let sent = self
            .js
            .send_publish(wire::queue_subject(queue), publish)
            .await
            .map_err(|e| publish_failure(queue, &e))?;
        let (queue, max_len) = (queue.clone(), self.config.max_queue_len);
        // Bounded by the context's timeout (CONFIRM_TIMEOUT): `put_refused` names that one.
        Ok(async move {
            sent.await
                .map(|ack| ack.sequence)
                .map_err(|e| put_refused(&queue, max_len, &e))
        })
    }

    /// [`Gateway::send`], waiting for the confirmation.
    async fn store(
        &self,
        queue: &QueueName,
        publish: jetstream::message::PublishMessage,
    ) -> Result<(), Failure> {
        self.send(queue, publish).await?.await.map(drop)
    }

    fn to_session(&self, session: SessionId, msg: Message) {
        let link = self.lock().sessions.get(&session).map(|s| s.link.clone());
        if let Some(link) = link {
            deliver(&link, msg, session);
        }
    }

    /// Replies from other hubs for this hub's sessions.
    async fn route_inbox(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(m) = sub.next().await {
            let Some(session) = wire::session_of_inbox_subject(&m.subject) else {
                continue;
            };
            let Some((&tag, body)) = m.payload.split_first() else {
                continue;
            };
            let msg = match tag {
                b't' => match std::str::from_utf8(body) {
                    Ok(t) => Message::text(t),
                    Err(_) => continue,
                },
                b'b' => Message::binary(m.payload.slice(1..)),
                _ => continue,
            };
            self.to_session(session, msg);
        }
    }

    /// Subscribe `session` to `pattern`, answering once NATS has the hub's subscription, so what
    /// is published after is heard. The hub holds one NATS subscription to every topic while any
    /// of its sessions subscribes to something: one stream of messages, so each session hears
    /// them in the order they were published, as from one hub.
    async fn subscribe(
        self: &Arc<Self>,
        session: SessionId,
        pattern: Pattern,
    ) -> Result<(), Failure> {
        let limit = self.config.max_subscriptions_per_session;
        {
            let mut st = self.lock();
            let Some(s) = st.sessions.get_mut(&session) else {
                return Ok(());
            };
            if s.subs.contains(&pattern) {
                return Ok(());
            }
            if s.subs.len() >= limit {
                return Err((
                    ErrorCode::LimitReached,
                    format!("this session already has {limit} subscriptions"),
                ));
            }
            s.subs.push(pattern.clone());
        }
        let mut topics = self.topics.lock().await;
        if topics.is_some() {
            return Ok(());
        }
        let subscribed = match self.client.subscribe(wire::ALL_TOPICS).await {
            Ok(sub) => self
                .client
                .flush()
                .await
                .map(|()| sub)
                .map_err(|e| unavailable(&e)),
            Err(e) => Err(unavailable(&e)),
        };
        match subscribed {
            Ok(sub) => {
                let task = tokio::spawn(self.clone().forward(sub));
                *topics = Some(task.abort_handle());
                Ok(())
            }
            Err(e) => {
                drop(topics);
                self.unsubscribe(session, &pattern).await;
                Err(e)
            }
        }
    }

    async fn unsubscribe(&self, session: SessionId, pattern: &Pattern) {
        if let Some(s) = self.lock().sessions.get_mut(&session) {
            s.subs.retain(|p| p != pattern);
        }
        self.topics_still_wanted().await;
    }

    /// Drop the hub's topic subscription once no session subscribes to anything.
    async fn topics_still_wanted(&self) {
        let mut topics = self.topics.lock().await;
        let wanted = self.lock().sessions.values().any(|s| !s.subs.is_empty());
        if !wanted && let Some(h) = topics.take() {
            h.abort();
        }
    }

    /// Hand each published message to this hub's sessions whose patterns match it, once each.
    async fn forward(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(m) = sub.next().await {
            let (Some(topic), Some(payload)) = (
                wire::topic_of_subject(&m.subject),
                wire::from_nats(&m.payload, m.headers.as_ref()).map(|(_, body)| body),
            ) else {
                continue;
            };
            let msg = message(encode_server(&ServerMsg::Message {
                topic: topic.clone(),
                payload,
            }));
            let st = self.lock();
            for s in st.sessions.values() {
                if !s.subs.iter().any(|p| p.matches(&topic)) {
                    continue;
                }
                if let Err(mpsc::error::TrySendError::Full(_)) =
                    s.link.tx.try_send(msg.clone().into())
                {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    async fn delete_queue(&self, req: Option<u64>, queue: QueueName) -> Result<ServerMsg, Failure> {
        rules::not_inbox(&queue)?;
        let purged = self
            .stream
            .purge()
            .filter(wire::queue_subject(&queue))
            .await
            .map_err(|e| unavailable(&e))?;
        let dropped: Vec<Arrived> = {
            let mut st = self.lock();
            st.queues
                .get_mut(&queue)
                .map(|q| q.ready.drain(..).collect())
                .unwrap_or_default()
        };
        drop(dropped);
        let known = self.consumer_known(&queue)
            || self
                .stream
                .consumer_info(wire::consumer_name(&queue))
                .await
                .is_ok();
        if purged.purged == 0 && !known {
            let grace = self.config.queue_idle_grace.as_secs();
            return Err((
                ErrorCode::UnknownQueue,
                format!(
                    "no queue named {queue} (empty queues nothing uses are dropped after {grace} s)"
                ),
            ));
        }
        tracing::info!(%queue, tasks = purged.purged, "queue deleted by a client");
        Ok(ServerMsg::Deleted {
            req,
            queue,
            tasks: purged.purged,
            removed: true,
        })
    }

    /// The next message stored on `subject` at or after sequence `from`: its sequence and body
    /// (a message taskhub did not write reads as `null`); `None` past the last.
    async fn next_stored(&self, subject: &str, from: u64) -> Result<Option<(u64, Body)>, Failure> {
        use jetstream::stream::RawMessageErrorKind;
        let found = self
            .stream
            .raw_message_builder()
            .sequence(from.max(1))
            .next_by_subject(subject)
            .send()
            .await;
        match found {
            Ok(m) => {
                let body = wire::from_nats(&m.payload, Some(&m.headers))
                    .map_or_else(|| Body::Json(taskhub_core::RawJson::null()), |(_, b)| b);
                Ok(Some((m.sequence, body)))
            }
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// `dead_list`: the oldest entries on `<queue>.dead`'s subject, read without a consumer (a
    /// stream message get per entry), and how many there are.
    async fn dead_list(
        &self,
        req: Option<u64>,
        queue: QueueName,
        limit: Option<u32>,
    ) -> Result<ServerMsg, Failure> {
        crate::broker::check_dead_queue(&queue)?;
        let subject = wire::queue_subject(&queue.dead_letter());
        let mut entries = Vec::new();
        let mut from = 1;
        while entries.len() < crate::broker::list_limit(limit) {
            let Some((seq, body)) = self.next_stored(&subject, from).await? else {
                break;
            };
            entries.push(crate::broker::listed(&body));
            from = seq + 1;
        }
        let mut total = entries.len() as u64;
        if !entries.is_empty() {
            let mut counts = self
                .stream
                .info_with_subjects(subject.clone())
                .await
                .map_err(|e| unavailable(&e))?;
            while let Some(c) = counts.next().await {
                let (s, n) = c.map_err(|e| unavailable(&e))?;
                if s == subject {
                    total = n as u64;
                }
            }
        }
        Ok(ServerMsg::DeadLetters {
            req,
            queue,
            entries,
            total,
        })
    }

    /// `dead_requeue`: each dead letter picked is stored on the queue as a new task (confirmed
    /// by JetStream) before its message is deleted from `<queue>.dead`, so a failure leaves it a
    /// dead letter, never lost (at worst, after a NATS failure between the two, both).
    async fn dead_requeue(
        &self,
        session: SessionId,
        req: Option<u64>,
        queue: QueueName,
        ids: Option<Vec<TaskId>>,
    ) -> Result<ServerMsg, Failure> {
        use std::collections::HashSet;
        crate::broker::check_dead_queue(&queue)?;
        let dead = queue.dead_letter();
        let subject = wire::queue_subject(&dead);
        let wanted: Option<HashSet<TaskId>> = ids.map(|ids| ids.into_iter().collect());
        let max = taskhub_core::protocol::DEAD_REQUEUE_MAX;
        let mut picked = Vec::new();
        let mut found = HashSet::new();
        let mut from = 1;
        while wanted.is_some() || picked.len() < max {
            let Some((seq, body)) = self.next_stored(&subject, from).await? else {
                break;
            };
            from = seq + 1;
            let Some(r) = crate::broker::revive(&body) else {
                continue;
            };
            let take = wanted.as_ref().is_none_or(|w| w.contains(&r.id));
            if take && found.insert(r.id) {
                picked.push((seq, r));
            }
        }
        if let Some(w) = &wanted {
            crate::broker::missing(&dead, w, &found)?;
        }
        let mut count = 0;
        for (seq, r) in picked {
            let stored = async {
                let max_attempts = rules::check_put(
                    session,
                    &queue,
                    r.reply_to.as_ref(),
                    r.max_attempts,
                    self.config.max_attempts,
                    r.kind.as_deref(),
                )?;
                let meta = self.task_meta(r.kind.as_deref(), r.reply_to.as_ref(), max_attempts);
                self.store(&queue, publication(&r.payload, meta, None))
                    .await
            }
            .await;
            if let Err((code, why)) = stored {
                return Err((
                    code,
                    format!(
                        "requeued {count} dead letter(s), then stopped: {why}; the rest are still in {dead}"
                    ),
                ));
            }
            if let Err(e) = self.stream.delete_message(seq).await {
                tracing::warn!(%queue, seq, "a requeued dead letter stays in {dead} too: {e}");
            }
            count += 1;
        }
        let more = wanted.is_none() && self.next_stored(&subject, 1).await?.is_some();
        Ok(ServerMsg::Requeued {
            req,
            queue,
            count,
            more,
        })
    }

    /// What this hub alone holds, for `stats` on any hub.
    fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        let sessions = sessions_by_role(st.sessions.values().map(|s| s.role));
        let workers = st
            .sessions
            .iter()
            .filter(|(_, s)| {
                !s.consuming.is_empty() || s.acked + s.failed > 0 || s.held > 0 || s.state.is_some()
            })
            .map(|(id, s)| WorkerStats {
                session: *id,
                role: s.role,
                name: s.name.clone(),
                acked: s.acked,
                failed: s.failed,
                in_flight: s.held as u64,
                // Passed on to submitters, not kept: see ARCHITECTURE.md.
                progress: Vec::new(),
                state: s.state.as_deref().cloned(),
            })
            .collect();
        let mut queues: HashMap<String, (u64, u64)> = HashMap::new();
        for l in st.leases.values() {
            queues.entry(l.task.queue.to_string()).or_default().0 += 1;
        }
        for (name, q) in &st.queues {
            queues.entry(name.to_string()).or_default().1 += q.consumers.len() as u64;
        }
        Snapshot {
            hub: self.hub,
            sessions,
            workers,
            queues,
            acked: st.acked,
            failed: st.failed,
        }
    }

    /// Answer other hubs' `stats` with this hub's [`Snapshot`].
    async fn answer_stats(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(m) = sub.next().await {
            let Some(reply) = m.reply else { continue };
            let Ok(body) = serde_json::to_vec(&self.snapshot()) else {
                continue;
            };
            let _ = self.client.publish(reply, body.into()).await;
        }
    }

    /// Every hub's snapshot: this one's, and those that answer within [`STATS_WAIT`] (no longer
    /// once every hub heard from before has).
    async fn snapshots(&self) -> Vec<Snapshot> {
        let mut all = vec![self.snapshot()];
        let inbox = self.client.new_inbox();
        let Ok(mut sub) = self.client.subscribe(inbox.clone()).await else {
            return all;
        };
        if self
            .client
            .publish_with_reply(wire::STATS, inbox, Bytes::new())
            .await
            .is_err()
        {
            return all;
        }
        let mut expected: std::collections::HashSet<u32> =
            self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut heard = std::collections::HashSet::new();
        let deadline = Instant::now() + STATS_WAIT;
        loop {
            let wait = if expected.is_empty() {
                // Every hub known has answered: a short while for new ones.
                deadline.min(Instant::now() + STATS_GRACE)
            } else {
                deadline
            };
            let Ok(Some(m)) = tokio::time::timeout_at(wait, sub.next()).await else {
                break;
            };
            let Ok(snap) = serde_json::from_slice::<Snapshot>(&m.payload) else {
                continue;
            };
            if snap.hub == self.hub || !heard.insert(snap.hub) {
                continue;
            }
            expected.remove(&snap.hub);
            all.push(snap);
        }
        *self.peers.lock().unwrap_or_else(|e| e.into_inner()) = heard;
        all
    }

    /// [`Gateway::fresh_stats`], shared: a request takes the one that starts next (after the one
    /// running, if any), so a flood of `stats` costs NATS one at a time, and each answer was
    /// started after its request arrived. The computation is shared, not locked: whichever
    /// requester is polled drives it, so a session that stops reading holds up nobody.
    async fn stats(self: &Arc<Self>) -> Result<Stats, Failure> {
        let flight = {
            let mut f = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            while f.running.as_ref().is_some_and(|r| r.peek().is_some()) {
                f.running = f.next.take();
            }
            match (&f.running, &f.next) {
                (None, _) => {
                    let gw = self.clone();
                    let run = async move { gw.fresh_stats().await }.boxed().shared();
                    f.running = Some(run.clone());
                    run
                }
                (Some(_), Some(next)) => next.clone(),
                (Some(running), None) => {
                    let (gw, before) = (self.clone(), running.clone());
                    let next = async move {
                        let _ = before.await;
                        gw.fresh_stats().await
                    }
                    .boxed()
                    .shared();
                    f.next = Some(next.clone());
                    next
                }
            }
        };
        flight.await
    }

    /// The queues from JetStream; sessions, workers and leases from every hub that answers.
    async fn fresh_stats(&self) -> Result<Stats, Failure> {
        let mut stream = self.stream.clone();
        let info = stream.info().await.map_err(|e| unavailable(&e))?;
        let stored_bytes = info.state.bytes;
        let mut counts: HashMap<QueueName, u64> = HashMap::new();
        if info.state.messages > 0 {
            let mut subjects = self
                .stream
                .info_with_subjects(wire::QUEUE_SUBJECTS)
                .await
                .map_err(|e| unavailable(&e))?;
            while let Some(s) = subjects.next().await {
                let (subject, n) = s.map_err(|e| unavailable(&e))?;
                if let Some(q) = wire::queue_of_subject(&subject) {
                    counts.insert(q, n as u64);
                }
            }
        }
        let snaps = self.snapshots().await;
        let mut sessions = std::collections::BTreeMap::new();
        let mut workers = Vec::new();
        let mut held: HashMap<String, (u64, u64)> = HashMap::new();
        let (mut acked, mut failed) = (0, 0);
        for snap in snaps {
            for (role, n) in snap.sessions {
                *sessions.entry(role).or_default() += n;
            }
            workers.extend(snap.workers);
            for (q, (leased, consumers)) in snap.queues {
                let e = held.entry(q).or_default();
                e.0 += leased;
                e.1 += consumers;
            }
            acked += snap.acked;
            failed += snap.failed;
        }
        workers.sort_by_key(|w| w.session);
        let mut names: BTreeSet<QueueName> = counts
            .keys()
            .filter(|q| !q.is_dead_letter())
            .cloned()
            .collect();
        names.extend(held.keys().filter_map(|q| QueueName::new(q.as_str()).ok()));
        let queues = names
            .into_iter()
            .map(|name| {
                let total = counts.get(&name).copied().unwrap_or(0);
                let (leased, consumers) = held.get(name.as_str()).copied().unwrap_or_default();
                let in_flight = leased.min(total);
                QueueStats {
                    depth: total - in_flight,
                    in_flight,
                    dead: counts.get(&name.dead_letter()).copied().unwrap_or(0),
                    consumers,
                    name,
                    scheduled: 0,
                    voting: 0,
                }
            })
            .collect();
        Ok(Stats {
            queues,
            sessions,
            workers,
            acked,
            failed,
            stored_bytes,
        })
    }

    fn consumer_known(&self, queue: &QueueName) -> bool {
        self.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(queue)
    }

    fn known(&self, queue: &QueueName) {
        self.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(queue.clone());
    }

    /// Find or create the durable consumer every hub shares for `queue`.
    async fn ensure_consumer(&self, queue: &QueueName) -> Result<(), Failure> {
        if self.consumer_known(queue) {
            return Ok(());
        }
        let name = wire::consumer_name(queue);
        // JetStream's own ack-wait is the safety net for a hub that dies holding leases: a little
        // longer than the hub's, which naks first while it lives.
        let margin = (self.config.ack_wait / 10).max(Duration::from_secs(1));
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: wire::queue_subject(queue),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.config.ack_wait + margin,
            max_deliver: -1,
            max_ack_pending: -1,
            max_waiting: 4_096,
            ..Default::default()
        };
        self.stream
            .get_or_create_consumer::<consumer::pull::Config>(&name, config)
            .await
            .map_err(|e| unavailable(&e))?;
        self.known(queue);
        Ok(())
    }

    /// Read a delivery: the task it carries, or `None` (acked away) if it is not one.
    fn arrived(&self, queue: &QueueName, m: async_nats::Message) -> Option<Arrived> {
        let ack = m.reply.as_ref()?.to_string();
        let Some(d) = wire::delivery(&ack) else {
            tracing::warn!(%queue, "a delivery without a JetStream ack subject; ignored");
            return None;
        };
        let Some((meta, payload)) = wire::from_nats(&m.payload, m.headers.as_ref()) else {
            tracing::warn!(%queue, seq = %d.task, "a message taskhub did not write is in its stream; acked and dropped");
            let client = self.client.clone();
            tokio::spawn(async move { client.publish(ack, "+ACK".into()).await });
            return None;
        };
        // A task stored again after a release keeps its id and the attempts it had spent.
        Some(Arrived {
            task: Task {
                id: meta.id.map_or(d.task, TaskId),
                queue: queue.clone(),
                kind: meta.kind.map(Cow::into_owned),
                payload,
                attempt: meta.spent.saturating_add(d.delivered),
                max_attempts: meta.max_attempts.unwrap_or(self.config.max_attempts),
                reply_to: meta.reply_to.and_then(|r| QueueName::new(r).ok()),
                priority: 0,
                last_error: None,
            },
            ack,
            at: Instant::now(),
            stored_ns: d.stored_ns,
        })
    }

    /// Keep pull requests outstanding for `queue` while this hub's sessions have credit for it,
    /// and hand out what arrives. Ends once no session consumes it and nothing is outstanding.
    async fn pull(self: Arc<Self>, queue: QueueName, wake: Arc<Notify>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.ensure_consumer(&queue).await {
                Ok(()) => break,
                Err((_, why)) => {
                    tracing::warn!(%queue, "cannot reach the queue's consumer: {why}");
                    if self.no_consumers(&queue) {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let inbox = self.client.new_inbox();
        let Ok(mut sub) = self.client.subscribe(inbox.clone()).await else {
            if let Some(q) = self.lock().queues.get_mut(&queue) {
                q.puller = None;
            }
            return;
        };
        let subject = format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            wire::STREAM,
            wire::consumer_name(&queue)
        );
        // Outstanding requests, oldest first: what each still may bring, and when it expires.
        let mut requests: VecDeque<(usize, Instant)> = VecDeque::new();
        let mut reconnected = self.connections.subscribe();
        reconnected.mark_unchanged();
        let expiry = tokio::time::sleep(PULL_EXPIRES);
        tokio::pin!(expiry);
        loop {
            let now = Instant::now();
            while requests.front().is_some_and(|r| r.1 + PULL_GRACE <= now) {
                requests.pop_front();
            }
            let outstanding: usize = requests.iter().map(|r| r.0).sum();
            let Some(free) = self.wanted(&queue, outstanding) else {
                return;
            };
            if let Some(want) = pull_size(free, outstanding) {
                let request = serde_json::json!({
                    "batch": want,
                    "expires": PULL_EXPIRES.as_nanos() as u64,
                });
                let sent = self
                    .client
                    .publish_with_reply(subject.clone(), inbox.clone(), request.to_string().into())
                    .await;
                if sent.is_ok() {
                    requests.push_back((want, now + PULL_EXPIRES));
                    if let Some(q) = self.lock().queues.get_mut(&queue) {
                        q.outstanding = outstanding + want;
                    }
                }
            }
            // One timer for the loop, moved only when the oldest request changes (a timer made
            // and dropped per delivery was a cost of its own).
            let next_expiry = requests.front().map_or_else(
                || match expiry.deadline() {
                    d if d > now => d,
                    _ => now + PULL_EXPIRES,
                },
                |r| r.1 + PULL_GRACE,
            );
            if expiry.deadline() != next_expiry {
                expiry.as_mut().reset(next_expiry);
            }
            tokio::select! {
                m = sub.next() => {
                    let Some(m) = m else { return };
                    // This delivery and whatever else has arrived, under one lock.
                    let mut arrivals = Vec::new();
                    let mut next = Some(m);
                    while let Some(m) = next.take() {
                        if m.status.is_some() {
                            // 408 (expired), 409 (too many waiting) and the like: the oldest
                            // request is done.
                            requests.pop_front();
                            if m.status != Some(async_nats::StatusCode::TIMEOUT) {
                                tracing::debug!(%queue, status = ?m.status, description = ?m.description, "pull request ended");
                            }
                        } else {
                            if let Some(front) = requests.front_mut() {
                                front.0 = front.0.saturating_sub(1);
                                if front.0 == 0 {
                                    requests.pop_front();
                                }
                            }
                            arrivals.extend(self.arrived(&queue, m));
                        }
                        if arrivals.len() < DRAIN_AT_ONCE {
                            next = sub.next().now_or_never().flatten();
                        }
                    }
                    let effects: Vec<Effect> = {
                        let mut st = self.lock();
                        arrivals
                            .into_iter()
                            .flat_map(|a| st.offer(&self.config, &queue, a))
                            .collect()
                    };
                    self.run(effects).await;
                }
                _ = wake.notified() => {}
                Ok(()) = reconnected.changed() => requests.clear(),
                () = &mut expiry => {}
            }
        }
    }

    /// Credit this hub's sessions have for `queue` beyond what waits here; `None` when the puller
    /// should stop (no consumers, nothing outstanding).
    fn wanted(&self, queue: &QueueName, outstanding: usize) -> Option<usize> {
        let mut st = self.lock();
        let st = &mut *st;
        let q = st.queues.get_mut(queue)?;
        q.outstanding = outstanding;
        if q.consumers.is_empty() && outstanding == 0 {
            q.puller = None;
            if q.ready.is_empty() {
                st.queues.remove(queue);
            }
            return None;
        }
        Some(q.free(&st.sessions))
    }

    fn no_consumers(&self, queue: &QueueName) -> bool {
        let mut st = self.lock();
        match st.queues.get_mut(queue) {
            Some(q) if q.consumers.is_empty() => {
                q.puller = None;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Tell NATS what was decided.
    async fn run(&self, effects: Vec<Effect>) {
        for effect in effects {
            // Static words for the acks every task sends: no allocation on that path.
            let (subject, word): (String, Bytes) = match effect {
                Effect::Ack(s) => (s, Bytes::from_static(b"+ACK")),
                Effect::Nak(s) => (s, Bytes::from_static(b"-NAK")),
                Effect::NakAfter(s, wait) => {
                    // JetStream's delayed nak: the delay in nanoseconds.
                    (s, format!("-NAK {{\"delay\": {}}}", wait.as_nanos()).into())
                }
                Effect::Progress(s) => (s, Bytes::from_static(b"+WPI")),
                Effect::Dead { task, error, ack } => {
                    {
                        let mut st = self.lock();
                        let max = st.max_counted;
                        if let Some(c) = counted(&mut st.counters, max, &task.queue) {
                            c.dead_lettered += 1;
                        }
                    }
                    self.dead_letter(task, error, ack).await;
                    continue;
                }
            };
            if let Err(e) = self.client.publish(subject, word.clone()).await {
                tracing::warn!("NATS: {} not sent: {e}", String::from_utf8_lossy(&word));
            }
        }
    }

    /// Store `task` in `<queue>.dead` and its failure in `reply_to`, then ack it. If NATS
    /// refuses, the task is nakked instead and comes back.
    async fn dead_letter(&self, task: Task<Body>, error: Option<String>, ack: String) {
        let (entry, error) = dead_letter_entry(&task, error.as_deref(), None, None);
        let id = format!("th-dead-{}", task.id);
        let publish = publication(&entry, wire::Meta::default(), Some(&id));
        let dead = task.queue.dead_letter();
        let stored = self.store(&dead, publish).await;
        let replied = match stored {
            Ok(()) => {
                let reply = Reply {
                    id: task.id,
                    ok: false,
                    result: None,
                    error: Some(error),
                    cancelled: false,
                };
                self.reply(&task, reply).await
            }
            Err(e) => Err(e),
        };
        let word = match replied {
            Ok(()) => {
                tracing::debug!(task = %task.id, queue = %task.queue, "task dead-lettered");
                "+ACK"
            }
            Err((_, why)) => {
                tracing::warn!(task = %task.id, queue = %task.queue, "dead letter not stored, the task goes back: {why}");
                "-NAK"
            }
        };
        let _ = self.client.publish(ack, word.into()).await;
    }

    /// Sleep until the next lease expiry (or a delivery has waited too long here), expire,
    /// repeat; until `stop` says so.
    pub async fn run_timer(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let held_longest = self.config.ack_wait / 2;
        let timer = self.lock().timer.clone();
        loop {
            let next = {
                let st = self.lock();
                let lease = st.deadlines.first().map(|(t, _)| *t);
                let waiting = st
                    .queues
                    .values()
                    .filter_map(|q| q.ready.front().map(|a| a.at + held_longest))
                    .min();
                [lease, waiting].into_iter().flatten().min()
            };
            let sleep = match next {
                Some(t) => tokio::time::sleep_until(t),
                None => tokio::time::sleep(Duration::from_secs(3_600)),
            };
            tokio::select! {
                _ = sleep => {
                    let effects = self.expire(Instant::now(), held_longest);
                    self.run(effects).await;
                }
                _ = timer.notified() => {}
                _ = stop.changed() => break,
            }
        }
    }

    /// After the last session: stop the background tasks (so the gateway and its NATS
    /// connection go) and send what is buffered.
    pub async fn shutdown(&self) {
        for task in [&self.inbox_task, &self.stats_task, &self.id_task] {
            if let Some(h) = task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                h.abort();
            }
        }
        if let Some(h) = self.topics.lock().await.take() {
            h.abort();
        }
        let pullers: Vec<AbortHandle> = self
            .lock()
            .queues
            .values_mut()
            .filter_map(|q| q.puller.take())
            .collect();
        for h in pullers {
            h.abort();
        }
        let _ = self.client.flush().await;
    }

    fn expire(&self, now: Instant, held_longest: Duration) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut st = self.lock();
        while let Some(&(deadline, id)) = st.deadlines.first() {
            if deadline > now {
                break;
            }
            let Some(lease) = st.take_lease(id) else {
                st.deadlines.remove(&(deadline, id));
                continue;
            };
            let session = lease.session;
            if let Some(s) = st.sessions.get_mut(&session) {
                s.stalled = true;
            }
            let why = format!(
                "lease expired: not acked within {} ms",
                self.config.ack_wait.as_millis()
            );
            effects.push(self.requeue(lease, why));
        }
        // Deliveries no session here had room for: back to JetStream for another hub.
        for q in st.queues.values_mut() {
            while q.ready.front().is_some_and(|a| a.at + held_longest <= now) {
                if let Some(a) = q.ready.pop_front() {
                    effects.push(Effect::Nak(a.ack));
                }
            }
        }
        effects
    }
}

impl State {
    fn take_lease(&mut self, id: TaskId) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        self.deadlines.remove(&(lease.deadline, id));
        if let Some(s) = self.sessions.get_mut(&lease.session) {
            s.held = s.held.saturating_sub(1);
        }
        Some(lease)
    }

    fn touch(
        &mut self,
        session: SessionId,
        id: TaskId,
        deadline: Instant,
    ) -> Result<String, Failure> {
        match self.leases.get_mut(&id) {
            Some(l) if l.session == session => {
                self.deadlines.remove(&(l.deadline, id));
                l.deadline = deadline;
                self.deadlines.insert((deadline, id));
                Ok(l.ack.clone())
            }
            _ => Err(rules::not_leased(id)),
        }
    }

    /// A delivery arrived for `queue`: dead-letter it if it is out of attempts, else hand it to
    /// a session with credit, or keep it until one has.
    fn offer(&mut self, config: &BrokerConfig, queue: &QueueName, arrived: Arrived) -> Vec<Effect> {
        if arrived.task.attempt > arrived.task.max_attempts {
            let mut task = arrived.task;
            task.attempt -= 1;
            return vec![Effect::Dead {
                task,
                error: Some(format!(
                    "lease expired: not acked within {} ms (or the hub that held it stopped)",
                    config.ack_wait.as_millis()
                )),
                ack: arrived.ack,
            }];
        }
        let Some(q) = self.queues.get_mut(queue) else {
            return vec![Effect::Nak(arrived.ack)];
        };
        q.ready.push_back(arrived);
        self.dispatch(queue);
        if self.queues.get(queue).is_some_and(|q| !q.ready.is_empty()) {
            // Something waits for credit: the timer gives it back if it waits too long.
            self.timer.notify_one();
        }
        Vec::new()
    }

    /// A session has room again: hand it what waits here, and wake the pullers that would now
    /// ask for more (not one wake per ack).
    fn dispatch_for(&mut self, session: SessionId) {
        let queues = match self.sessions.get_mut(&session) {
            Some(s) => std::mem::take(&mut s.consuming),
            None => return,
        };
        for q in &queues {
            self.dispatch(q);
            if let Some(queue) = self.queues.get(q)
                && pull_size(queue.free(&self.sessions), queue.outstanding).is_some()
            {
                queue.wake.notify_one();
            }
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.consuming = queues;
        }
    }

    /// Hand what waits in `queue` to its consumers with credit, round robin.
    fn dispatch(&mut self, queue: &QueueName) {
        let ack_wait = self.ack_wait;
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        while !q.ready.is_empty() {
            let mut chosen = None;
            for _ in 0..q.consumers.len() {
                let Some(s) = q.consumers.pop_front() else {
                    break;
                };
                q.consumers.push_back(s);
                if self.sessions.get(&s).is_some_and(|st| st.credit() > 0) {
                    chosen = Some(s);
                    break;
                }
            }
            let Some(to) = chosen else {
                break;
            };
            let Some(arrived) = q.ready.pop_front() else {
                break;
            };
            let Some(session) = self.sessions.get_mut(&to) else {
                break;
            };
            session.held += 1;
            if let Some(c) = counted(&mut self.counters, self.max_counted, queue) {
                c.delivered += 1;
                c.redelivered += u64::from(arrived.task.attempt > 1);
            }
            let msg = message(encode_server(&ServerMsg::Deliver {
                task: arrived.task.clone(),
            }));
            deliver(&session.link, msg, to);
            let deadline = Instant::now() + ack_wait;
            if self
                .deadlines
                .first()
                .is_none_or(|(first, _)| deadline < *first)
            {
                self.timer.notify_one();
            }
            self.deadlines.insert((deadline, arrived.task.id));
            self.leases.insert(
                arrived.task.id,
                Lease {
                    session: to,
                    ack: arrived.ack,
                    deadline,
                    task: arrived.task,
                    stored_ns: arrived.stored_ns,
                },
            );
        }
    }
}

impl Queue {
    /// Credit its consumers on this hub have beyond what waits here.
    fn free(&self, sessions: &HashMap<SessionId, Session>) -> usize {
        let credit: usize = self
            .consumers
            .iter()
            .filter_map(|s| sessions.get(s))
            .map(Session::credit)
            .sum();
        credit.saturating_sub(self.ready.len())
    }
}

/// How many deliveries a puller asks for, given its sessions' `free` credit and what its
/// requests may still bring; `None`: not now. It asks again once half the credit is free, not
/// for every single ack.
fn pull_size(free: usize, outstanding: usize) -> Option<usize> {
    let want = free.saturating_sub(outstanding);
    (want > 0 && (outstanding == 0 || want * 2 >= free)).then_some(want)
}

/// Ids a starting hub draws before it gives up (each taken one is answered for by a running hub).
const ID_DRAWS: usize = 8;

/// Choose this hub's id (the top bits of its session ids, and its inbox subjects), one that no
/// running hub on the same NATS holds: draw one (`first`, if given, then random ones), and take
/// it if nobody answers on its subject; then answer there while the hub runs. Two hubs with one
/// id would both take the replies meant for either's sessions. Returns the id and the
/// subscription to answer on.
async fn claim_hub_id(
    client: &async_nats::Client,
    first: Option<u32>,
) -> Result<(u32, async_nats::Subscriber), String> {
    let mut candidate = first;
    for _ in 0..ID_DRAWS {
        let id = match candidate.take() {
            Some(id) => id,
            None => random_hub_id()?,
        };
        let subject = wire::hub_id_subject(id);
        let asked = tokio::time::timeout(
            Duration::from_secs(2),
            client.request(subject.clone(), Bytes::new()),
        )
        .await;
        match asked {
            Err(_) => return Err("NATS did not answer while this hub chose its id".into()),
            Ok(Ok(_)) => {
                tracing::info!("hub id {id} is held by another hub; drawing another");
                continue;
            }
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
            Ok(Err(e)) => return Err(format!("choosing this hub's id: {e}")),
        }
        let sub = client
            .subscribe(subject)
            .await
            .map_err(|e| format!("hub id subscription: {e}"))?;
        return Ok((id, sub));
    }
    Err(format!(
        "{ID_DRAWS} hub ids drawn were all held by running hubs"
    ))
}

fn random_hub_id() -> Result<u32, String> {
    loop {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).map_err(|e| e.to_string())?;
        let id = u32::from_le_bytes(b) & 0xF_FFFF;
        if id != 0 {
            return Ok(id);
        }
    }
}

/// Say "taken" to every hub that asks for this hub's id.
async fn answer_for_id(client: async_nats::Client, mut sub: async_nats::Subscriber) {
    while let Some(m) = sub.next().await {
        if let Some(reply) = m.reply {
            let _ = client.publish(reply, Bytes::from_static(b"taken")).await;
        }
    }
}

/// Queue `msg` for a session without waiting; a session whose outbox is full is closed as a
/// slow consumer (its leases go back).
fn deliver(link: &Link, msg: Message, session: SessionId) {
    match link.tx.try_send(msg.into()) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(%session, "outbox full: closing slow consumer");
            link.kill.notify_one();
        }
    }
}

fn frame_bytes(frame: Frame) -> Bytes {
    let (tag, body): (u8, Vec<u8>) = match frame {
        Frame::Text(t) => (b't', t.into_bytes()),
        Frame::Binary(b) => (b'b', b.to_vec()),
    };
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(tag);
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// A message for a queue: `body` after `meta` (no NATS headers), and a JetStream dedup id if
/// given (the one header then).
fn publication(
    body: &Body,
    meta: wire::Meta<'_>,
    dedup_id: Option<&str>,
) -> jetstream::message::PublishMessage {
    let publish = jetstream::message::PublishMessage::build().payload(wire::to_nats(meta, body));
    match dedup_id {
        Some(id) => publish.message_id(id),
        None => publish,
    }
}

/// A write NATS did not confirm in time: it may still reach the stream.
fn unconfirmed(queue: &QueueName, why: &str) -> Failure {
    (
        ErrorCode::StorageUnavailable,
        format!(
            "NATS did not confirm the write to {queue} in time ({why}); it may or may not be stored (a dedup_id makes a retry safe)"
        ),
    )
}

fn unavailable(e: &dyn std::fmt::Display) -> Failure {
    (
        ErrorCode::StorageUnavailable,
        format!("the hub's NATS backend failed: {e}; retry later"),
    )
}

fn publish_failure(queue: &QueueName, e: &jetstream::context::PublishError) -> Failure {
    use jetstream::context::PublishErrorKind;
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => (
            ErrorCode::TooLarge,
            format!("the task for {queue} is larger than the NATS server's max_payload: {e}"),
        ),
        _ => unavailable(e),
    }
}

/// JetStream's refusal of a write, in taskhub's terms.
fn put_refused(queue: &QueueName, max_len: usize, e: &jetstream::context::PublishError) -> Failure {
    let text = e.to_string();
    if e.kind() == jetstream::context::PublishErrorKind::TimedOut {
        unconfirmed(queue, &text)
    } else if text.contains("maximum messages per subject") {
        (
            ErrorCode::QueueFull,
            format!("queue {queue} is full ({max_len} tasks); retry later"),
        )
    } else if text.contains("maximum bytes") || text.contains("resource limits") {
        (
            ErrorCode::QueueFull,
            format!(
                "the NATS stream holding the queues is at its byte limit (max_stored_bytes, or the NATS server's own): {text}; retry later"
            ),
        )
    } else {
        unavailable(e)
    }
}

/// JetStream's work queues are first in, first out, deliver at once and to one consumer: a put
/// asking for a priority, a later start or replicas is refused, not run the wrong way.
fn unscheduled(schedule: &Schedule) -> Result<(), Failure> {
    if schedule.priority != 0 {
        return Err(rules::unsupported("priority"));
    }
    let now = crate::storage::unix_ms();
    if schedule.delay_ms.is_some_and(|d| d > 0) || schedule.not_before.is_some_and(|t| t > now) {
        return Err(rules::unsupported("a delayed put (delay_ms, not_before)"));
    }
    if schedule.backoff_ms.is_some() || schedule.backoff_max_ms.is_some() {
        return Err(rules::unsupported(
            "a task's own backoff (backoff_ms, backoff_max_ms; the hub's --retry-backoff applies)",
        ));
    }
    if schedule.redundancy().ok().flatten().is_some() {
        return Err(rules::unsupported(
            "a redundant task (replicas, quorum, max_replicas)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{NatsBackend, pull_size};

    #[test]
    fn logs_show_the_servers_but_no_password_or_token() {
        let b =
            NatsBackend::new("nats://user:pa55@n1:4222, nats://t0ken@n2:4222,n3:4222,s3cr3t@n4,");
        let shown = b.redacted();
        assert_eq!(
            shown,
            "nats://***@n1:4222,nats://***@n2:4222,n3:4222,***@n4"
        );
        for secret in ["pa55", "t0ken", "s3cr3t", "user"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn a_puller_asks_when_nothing_is_out_or_half_its_credit_is_free() {
        assert_eq!(pull_size(10, 0), Some(10));
        assert_eq!(pull_size(0, 0), None);
        assert_eq!(pull_size(10, 6), None, "4 more is less than half of 10");
        assert_eq!(pull_size(10, 5), Some(5));
        assert_eq!(
            pull_size(10, 12),
            None,
            "more is on its way than there is room for"
        );
    }

    #[test]
    fn the_urls_credentials_are_taken_when_they_agree() {
        let mixed = NatsBackend::new("nats://user:pa55@n1:4222,nats://t0ken@n2:4222");
        assert!(
            mixed
                .url_credentials()
                .unwrap_err()
                .contains("different credentials")
        );
        let same = NatsBackend::new("nats://u:p@n1:4222, nats://u:p@n2:4222,nats://n3:4222");
        assert_eq!(same.url_credentials(), Ok(Some("u:p")));
        assert_eq!(
            NatsBackend::new("nats://n1:4222").url_credentials(),
            Ok(None)
        );
    }
}
