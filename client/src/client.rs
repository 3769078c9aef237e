//! One authenticated session to the hub, shared by every clone of [`Client`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use taskhub_core::auth::{AuthError, ClientHandshake, DEFAULT_KEY_ID, NONCE_BYTES, Secret};
use taskhub_core::codec::{
    binary_header, decode_server, decode_server_binary, encode_client, peek_type, peek_u64,
};
use taskhub_core::protocol::{Limits, Reply, Schedule, Stats};
use taskhub_core::time::millis_of;
use taskhub_core::{
    AuthFailure, ClientMsg, ErrorCode, NameError, Pattern, Payload, QueueName, Role, ServerMsg,
    SessionId, Task, TaskId, TaskState, Topic,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::transport::{self, WsStream};

/// Requests a pipelined call keeps in flight at once.
const PIPELINE_WINDOW: usize = 512;
/// Frames waiting to be written.
const OUTBOX: usize = 1_024;
/// Messages a [`Subscriber`] holds unread; more are dropped (at most once) and counted.
const SUBSCRIBER_BUFFER: usize = 1_024;
/// Replies that arrived before their `submit` asked for them.
const EARLY_REPLIES: usize = 1 << 20;

/// Where and how to connect: the hub's URL and credentials, then optional settings by builder
/// methods, then [`ConnectOptions::connect`].
///
/// ```no_run
/// # async fn demo() -> Result<(), taskhub_client::ClientError> {
/// use std::time::Duration;
/// use taskhub_client::{ConnectOptions, Role};
///
/// let client = ConnectOptions::new("wss://hub.example:7878", "KEY")
///     .ca("ca.pem")
///     .role(Role::Dashboard)
///     .name("ops-laptop")
///     .timeout(Duration::from_secs(3))
///     .connect()
///     .await?;
/// # drop(client); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The hub's URL, or several separated by commas: [`Client::connect`] takes the first that
    /// accepts a session.
    pub url: String,
    pub key_id: String,
    pub key: Secret,
    pub role: Role,
    pub name: Option<String>,
    /// For the TCP connect and for the handshake, each.
    pub timeout: Duration,
    /// For `wss://`: trust only the CA certificates in this PEM file, not the system's.
    pub ca: Option<PathBuf>,
}

impl ConnectOptions {
    /// Connect to `url` with `key`, registered on the hub under the id `default`.
    pub fn new(url: impl Into<String>, key: impl Into<Vec<u8>>) -> Self {
        ConnectOptions {
            url: url.into(),
            key_id: DEFAULT_KEY_ID.into(),
            key: Secret::new(key),
            role: Role::Producer,
            name: None,
            timeout: Duration::from_secs(10),
            ca: None,
        }
    }

    /// Connect with `token` (from `taskhub token create`) instead of a key.
    pub fn with_token(
        url: impl Into<String>,
        token: &str,
    ) -> Result<Self, taskhub_core::token::TokenError> {
        let (key_id, secret, _) = taskhub_core::token::credentials(token)?;
        Ok(ConnectOptions::new(url, Vec::new()).credentials(key_id, secret))
    }

    /// Connect with `credentials` (a key, or a token's key id and secret).
    pub fn with_credentials(url: impl Into<String>, credentials: crate::Credentials) -> Self {
        ConnectOptions::new(url, Vec::new()).credentials(credentials.key_id, credentials.secret)
    }

    fn credentials(mut self, key_id: String, secret: Secret) -> Self {
        self.key_id = key_id;
        self.key = secret;
        self
    }

    /// The id the key is registered under on the hub (`--keys` files name several).
    pub fn key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = key_id.into();
        self
    }

    /// The role shown in the hub's stats (default [`Role::Producer`]).
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// A name shown in the hub's stats and on the dashboard.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long the TCP connect and the handshake may each take (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// For `wss://`: trust only the CA certificates in this PEM file, not the system's.
    pub fn ca(mut self, pem: impl Into<PathBuf>) -> Self {
        self.ca = Some(pem.into());
        self
    }

    /// Connect and authenticate.
    pub async fn connect(self) -> Result<Client, ClientError> {
        Client::connect(self).await
    }
}

/// Connect to the hub at `url` with `key` (see [`ConnectOptions`] for the rest).
///
/// ```no_run
/// # async fn demo() -> Result<(), taskhub_client::ClientError> {
/// let client = taskhub_client::connect("ws://127.0.0.1:7878", "KEY").await?;
/// println!("session {}", client.session());
/// # Ok(()) }
/// ```
pub async fn connect(
    url: impl Into<String>,
    key: impl Into<Vec<u8>>,
) -> Result<Client, ClientError> {
    ConnectOptions::new(url, key).connect().await
}

/// How tasks are put: by [`Client::put`], [`Client::put_many`] and [`Client::submit`]. The
/// default is a task with no kind, no `reply_to`, the hub's attempts and no dedup id.
///
/// ```
/// use taskhub_client::PutOptions;
/// let opts = PutOptions::new().kind("resize").reply_to("results").max_attempts(3);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    kind: Option<String>,
    reply_to: Option<String>,
    max_attempts: Option<u32>,
    dedup_prefix: Option<String>,
    schedule: Schedule,
}

impl PutOptions {
    pub fn new() -> Self {
        PutOptions::default()
    }

    /// The task's kind: workers choose the handler by it.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// A queue that receives each task's outcome (`{"id", "ok", "result" | "error"}`).
    /// [`Client::submit`] sets its own (this session's inbox) and refuses this.
    pub fn reply_to(mut self, queue: impl Into<String>) -> Self {
        self.reply_to = Some(queue.into());
        self
    }

    /// Deliveries before the task goes to `<queue>.dead` (1 to 1000; default the hub's).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Makes the puts idempotent: task `i` of a call carries the dedup id `<prefix><i>` (a single
    /// `put` is task 0), and the hub stores a task only once per dedup id within its dedup
    /// window. Retrying a whole call with the same prefix after a lost connection stores nothing
    /// twice.
    pub fn dedup_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.dedup_prefix = Some(prefix.into());
        self
    }

    /// 0 (the default) to 9: a ready task of higher priority is delivered before any of lower
    /// priority in its queue. The hub refuses more than 9.
    pub fn priority(mut self, priority: u8) -> Self {
        self.schedule.priority = priority;
        self
    }

    /// Ready this long after the hub stores it, not before (at most the hub's `max_delay`).
    /// Replaces a [`not_before`](Self::not_before).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.schedule.delay_ms = Some(millis_of(delay));
        self.schedule.not_before = None;
        self
    }

    /// A failed attempt that is retried comes back after `first`, doubling with each attempt
    /// (with jitter) up to [`backoff_max`](Self::backoff_max); `Duration::ZERO` retries at
    /// once. Default: the hub's `--retry-backoff` (1 s).
    pub fn backoff(mut self, first: Duration) -> Self {
        self.schedule.backoff_ms = Some(millis_of(first));
        self
    }

    /// The longest a retry waits. Default: the hub's `--retry-backoff-max` (5 min).
    pub fn backoff_max(mut self, max: Duration) -> Self {
        self.schedule.backoff_max_ms = Some(millis_of(max));
        self
    }

    /// Run each task on `replicas` different sessions (1 to 16) and accept its result only when
    /// `quorum` of them return it byte for byte (1 to `replicas`): for workers you cannot trust,
    /// such as browser tabs. Without [`max_replicas`](Self::max_replicas) the hub runs up to
    /// twice `replicas` when they disagree, then dead-letters the task with every result.
    pub fn replicas(mut self, replicas: u8, quorum: u8) -> Self {
        self.schedule.replicas = replicas;
        self.schedule.quorum = Some(quorum);
        self
    }

    /// The most replicas a redundant task runs in all when its results disagree (`replicas`
    /// to 16).
    pub fn max_replicas(mut self, max: u8) -> Self {
        self.schedule.max_replicas = Some(max);
        self
    }

    /// Ready at `at`, not before, by the hub's clock (a time past is at once). Replaces a
    /// [`delay`](Self::delay).
    pub fn not_before(mut self, at: std::time::SystemTime) -> Self {
        let unix = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, millis_of);
        self.schedule.not_before = Some(unix);
        self.schedule.delay_ms = None;
        self
    }
}

/// Where puts go, with names validated once, not once per task.
struct Target {
    queue: QueueName,
    kind: Option<String>,
    reply_to: Option<QueueName>,
    max_attempts: Option<u32>,
    dedup_prefix: Option<String>,
    schedule: Schedule,
}

impl Target {
    fn new(queue: &str, opts: PutOptions) -> Result<Target, ClientError> {
        Ok(Target {
            queue: QueueName::new(queue)?,
            kind: opts.kind,
            reply_to: opts.reply_to.map(QueueName::new).transpose()?,
            max_attempts: opts.max_attempts,
            dedup_prefix: opts.dedup_prefix,
            schedule: opts.schedule,
        })
    }

    /// The `put` of task `i` of a call.
    fn put(&self, payload: Payload, i: usize) -> ClientMsg {
        ClientMsg::Put {
            req: None,
            queue: self.queue.clone(),
            payload,
            kind: self.kind.clone(),
            reply_to: self.reply_to.clone(),
            max_attempts: self.max_attempts,
            dedup_id: self.dedup_prefix.as_ref().map(|p| format!("{p}{i}")),
            schedule: self.schedule,
        }
    }
}

/// Why the hub refused the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthReason {
    /// Unknown key id or wrong key (or a token not signed by an admin key). Do not retry.
    Credentials,
    /// The key or token has expired.
    Expired,
    /// The token was revoked.
    Revoked,
    /// The hub could not prove it holds the key: wrong key, or not the hub you meant.
    ImpostorHub,
    /// The hub refused without a reason (for example: too many failed attempts from this
    /// address; wait a few seconds).
    Other,
}

/// What went wrong, worded for the person at the terminal; match on the variant to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens at the hub's address: is `taskhub serve` running?
    #[error("cannot connect to {url}: connection refused (is taskhub serve running?)")]
    Refused {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// The hub did not answer the connect or the handshake in time.
    #[error("cannot connect to {url}: no answer within {:.1} s", after.as_secs_f64())]
    TimedOut { url: String, after: Duration },
    /// The connection could not be opened for another reason (a bad URL, TLS, an HTTP refusal,
    /// a name that does not resolve); `message` says what to do.
    #[error("cannot connect to {url}: {message}")]
    Connect {
        url: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The hub refused the credentials, or could not prove it holds them.
    #[error("authentication failed: {message}")]
    Auth { reason: AuthReason, message: String },
    /// The hub refused a request; `code` says why. The session goes on.
    #[error("{message} ({code})")]
    Hub { code: ErrorCode, message: String },
    /// A queue name, topic or pattern is invalid; nothing was sent.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The session ended: `code` is the WebSocket close code the hub sent (for example 1008 for
    /// revoked or expired credentials, 1001 for a hub shutting down), `None` when the
    /// connection was lost without one.
    #[error("{}", closed_text(*.code, .reason))]
    Closed { code: Option<u16>, reason: String },
    /// The hub sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The call cannot work as asked (nothing was sent); the message says why.
    #[error("{0}")]
    Invalid(String),
}

fn closed_text(code: Option<u16>, reason: &str) -> String {
    match (code, reason.is_empty()) {
        (Some(code), false) => format!("the hub closed the connection ({code}: {reason})"),
        (Some(code), true) => format!("the hub closed the connection ({code})"),
        (None, false) => format!("connection to the hub was lost: {reason}"),
        (None, true) => "connection to the hub was lost".to_string(),
    }
}

impl From<AuthError> for ClientError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Rejected { message, reason } => ClientError::Auth {
                reason: match reason {
                    Some(AuthFailure::Credentials) => AuthReason::Credentials,
                    Some(AuthFailure::Expired) => AuthReason::Expired,
                    Some(AuthFailure::Revoked) => AuthReason::Revoked,
                    None => AuthReason::Other,
                },
                message,
            },
            AuthError::ImpostorHub => ClientError::Auth {
                reason: AuthReason::ImpostorHub,
                message: "the hub could not prove it holds the key (wrong key, or not the \
                          taskhub hub you meant)"
                    .into(),
            },
            AuthError::Protocol(m) => ClientError::Protocol(m),
        }
    }
}

/// A pub/sub message, from a [`Subscriber`].
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: Topic,
    pub payload: Payload,
}

/// How far a task this session submitted has got, as its worker reported (see
/// [`Client::progress`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub task: TaskId,
    /// 0 to 1.
    pub fraction: f64,
    pub message: Option<String>,
}

/// Progress reports kept for a reader that is behind; more are dropped (the next one says more).
const PROGRESS_BACKLOG: usize = 1024;

#[derive(Debug, Default)]
struct Inbox {
    waiting: HashMap<TaskId, oneshot::Sender<Reply>>,
    early: HashMap<TaskId, Reply>,
}

#[derive(Debug)]
struct Route {
    id: u64,
    pattern: Pattern,
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

/// How the session ended: the close code and reason.
type Ending = (Option<u16>, String);

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<HashMap<u64, oneshot::Sender<ServerMsg>>>,
    inbox: Mutex<Inbox>,
    routes: Mutex<Vec<Route>>,
    /// Where progress reports of this session's submitted tasks go, once asked for.
    progress: Mutex<Option<mpsc::Sender<Progress>>>,
    closed: Mutex<Option<Ending>>,
    ended: Notify,
}

impl Shared {
    fn closed_error(&self) -> ClientError {
        let (code, reason) = self
            .closed
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or_default();
        ClientError::Closed { code, reason }
    }

    fn is_closed(&self) -> bool {
        self.closed.lock().map(|c| c.is_some()).unwrap_or(true)
    }
}

/// A connected, authenticated session: a cheap handle to clone and share. Requests from any
/// number of tasks and clones are pipelined on the one connection, which lives while any clone
/// or [`Subscriber`] does.
///
/// ```no_run
/// # async fn demo() -> Result<(), taskhub_client::ClientError> {
/// use serde_json::json;
/// use taskhub_client::PutOptions;
///
/// let client = taskhub_client::connect("ws://127.0.0.1:7878", "KEY").await?;
/// let square = PutOptions::new().kind("square");
/// let replies = client.submit("tasks", [json!(7), json!(8)], square.clone()).await?;
/// assert_eq!(replies[0].result, Some(json!("7 * 7 = 49").into()));
///
/// // Clones share the session: ten tasks submitting at once.
/// let mut jobs = Vec::new();
/// for n in 0..10 {
///     let (client, square) = (client.clone(), square.clone());
///     jobs.push(tokio::spawn(async move { client.submit("tasks", [json!(n)], square).await }));
/// }
/// for job in jobs {
///     assert!(job.await.unwrap()?[0].ok);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    out: mpsc::Sender<WsMessage>,
    shared: Arc<Shared>,
    next_req: AtomicU64,
    next_route: AtomicU64,
    session: SessionId,
    inbox: QueueName,
    limits: Limits,
    /// The URL this session was opened on.
    hub: String,
}

async fn next_msg(
    ws: &mut WsStream,
    url: &str,
    opts: &ConnectOptions,
) -> Result<ServerMsg, ClientError> {
    loop {
        let frame = tokio::time::timeout(opts.timeout, ws.next())
            .await
            .map_err(|_| ClientError::TimedOut {
                url: url.to_string(),
                after: opts.timeout,
            })?;
        match frame {
            Some(Ok(WsMessage::Text(t))) => {
                return decode_server(&t).map_err(|e| ClientError::Protocol(e.message));
            }
            Some(Ok(WsMessage::Binary(b))) => {
                return decode_server_binary(&b).map_err(|e| ClientError::Protocol(e.message));
            }
            Some(Ok(WsMessage::Close(c))) => {
                return Err(ClientError::Closed {
                    code: c.as_ref().map(|c| u16::from(c.code)),
                    reason: c.map(|c| c.reason.to_string()).unwrap_or_default(),
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                return Err(ClientError::Closed {
                    code: None,
                    reason: e.to_string(),
                });
            }
            None => {
                return Err(ClientError::Closed {
                    code: None,
                    reason: String::new(),
                });
            }
        }
    }
}

impl Client {
    /// Connect and authenticate (both sides prove the key).
    /// Open a session on the first hub of `opts.url` (one URL, or several separated by commas)
    /// that accepts one. A hub that cannot be reached, times out or closes is passed over for
    /// the next; a refusal of the credentials is not (every hub would say the same).
    pub async fn connect(opts: ConnectOptions) -> Result<Client, ClientError> {
        let urls = taskhub_core::hub_urls(&opts.url);
        let mut last = ClientError::Invalid("no hub URL given".into());
        for url in &urls {
            match Client::connect_to(url, &opts).await {
                Ok(client) => return Ok(client),
                Err(e @ (ClientError::Auth { .. } | ClientError::Invalid(_))) => return Err(e),
                Err(e) => {
                    if urls.len() > 1 {
                        tracing::debug!("hub {url} not available ({e}); trying the next");
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn connect_to(url: &str, opts: &ConnectOptions) -> Result<Client, ClientError> {
        let mut ws = transport::connect(url, opts.timeout, opts.ca.as_deref()).await?;
        let mut entropy = [0u8; NONCE_BYTES];
        getrandom::fill(&mut entropy).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut hs = ClientHandshake::new(
            opts.key_id.clone(),
            opts.key.clone(),
            opts.role,
            opts.name.clone(),
            entropy,
        );
        let challenge = next_msg(&mut ws, url, opts).await?;
        let auth = hs.answer(&challenge)?;
        futures_util::SinkExt::send(&mut ws, transport::message(encode_client(&auth)))
            .await
            .map_err(|e| ClientError::Closed {
                code: None,
                reason: e.to_string(),
            })?;
        let welcome = next_msg(&mut ws, url, opts).await?;
        hs.finish(&welcome)?;
        let ServerMsg::Welcome {
            session,
            inbox,
            limits,
            ..
        } = welcome
        else {
            return Err(ClientError::Protocol("expected welcome".into()));
        };

        let (mut sink, stream) = ws.split();
        let (out, mut out_rx) = mpsc::channel(OUTBOX);
        // The writer ends when every handle is gone (the last sender drops): the socket then
        // closes politely, and the reader ends with the hub's answering Close.
        tokio::spawn(async move {
            let _ = transport::pump(&mut sink, &mut out_rx).await;
            let _ = futures_util::SinkExt::close(&mut sink).await;
        });
        let shared = Arc::new(Shared::default());
        // The hub pings every `ping_interval_ms`: twice that without a frame means the path is
        // gone (half-open connections never report an error), and every waiter is told so.
        let silence = Duration::from_millis(limits.ping_interval_ms.saturating_mul(2).max(100));
        tokio::spawn(read(stream, shared.clone(), silence));
        Ok(Client {
            inner: Arc::new(Inner {
                out,
                shared,
                next_req: AtomicU64::new(1),
                next_route: AtomicU64::new(1),
                session,
                inbox,
                limits,
                hub: url.to_string(),
            }),
        })
    }

    /// This session's id on the hub.
    pub fn session(&self) -> SessionId {
        self.inner.session
    }

    /// The URL of the hub this session is on: of several given to [`connect`], the one that
    /// answered.
    pub fn hub(&self) -> &str {
        &self.inner.hub
    }

    /// This session's private inbox, where [`Client::submit`]'s results come.
    pub fn inbox(&self) -> &QueueName {
        &self.inner.inbox
    }

    /// Limits the hub announced.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Whether the session has ended (closed by either side, or lost).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.is_closed()
    }

    /// Why the session ended ([`ClientError::Closed`] with the hub's close code), once it has.
    pub fn ended(&self) -> Option<ClientError> {
        self.is_closed().then(|| self.inner.shared.closed_error())
    }

    /// Send a request without waiting for its answer.
    async fn start(&self, mut msg: ClientMsg) -> Result<oneshot::Receiver<ServerMsg>, ClientError> {
        let req = self.inner.next_req.fetch_add(1, Ordering::Relaxed);
        msg.set_req(req);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.inner.shared.pending.lock() {
            p.insert(req, tx);
        }
        // The reader marks the session closed before it drops every waiter: a waiter added
        // after that would wait forever.
        if self.inner.shared.is_closed() {
            if let Ok(mut p) = self.inner.shared.pending.lock() {
                p.remove(&req);
            }
            return Err(self.inner.shared.closed_error());
        }
        if self
            .inner
            .out
            .send(transport::message(encode_client(&msg)))
            .await
            .is_err()
        {
            return Err(self.inner.shared.closed_error());
        }
        Ok(rx)
    }

    async fn finish(&self, rx: oneshot::Receiver<ServerMsg>) -> Result<ServerMsg, ClientError> {
        match rx.await {
            Ok(ServerMsg::Error { code, message, .. }) => Err(ClientError::Hub { code, message }),
            Ok(msg) => Ok(msg),
            Err(_) => Err(self.inner.shared.closed_error()),
        }
    }

    /// Send any request (its `req` is set here) and wait for its answer. An `error` answer
    /// becomes [`ClientError::Hub`].
    pub async fn request(&self, msg: ClientMsg) -> Result<ServerMsg, ClientError> {
        let rx = self.start(msg).await?;
        self.finish(rx).await
    }

    /// Put one task; returns its id once the hub holds it (with a data dir: once it is stored).
    /// The payload is JSON (a [`serde_json::Value`]) or bytes (`Vec<u8>`, [`bytes::Bytes`]:
    /// sent in a binary frame, no base64).
    ///
    /// ```no_run
    /// # async fn demo(client: taskhub_client::Client) -> Result<(), taskhub_client::ClientError> {
    /// use serde_json::json;
    /// use taskhub_client::PutOptions;
    /// let id = client
    ///     .put("tasks", json!(3411), PutOptions::new().kind("square").reply_to("results"))
    ///     .await?;
    /// # let _ = id; Ok(()) }
    /// ```
    pub async fn put(
        &self,
        queue: &str,
        payload: impl Into<Payload>,
        opts: PutOptions,
    ) -> Result<TaskId, ClientError> {
        let target = Target::new(queue, opts)?;
        self.queued(self.start(target.put(payload.into(), 0)).await?)
            .await
    }

    /// Put many tasks, pipelined; returns their ids in input order.
    pub async fn put_many<P: Into<Payload>>(
        &self,
        queue: &str,
        payloads: impl IntoIterator<Item = P>,
        opts: PutOptions,
    ) -> Result<Vec<TaskId>, ClientError> {
        let mut ids = Vec::new();
        self.put_each(queue, payloads, opts, |id| ids.push(id))
            .await?;
        Ok(ids)
    }

    /// [`Client::put_many`], calling `queued` with each task's id, in order, as soon as the hub
    /// confirms it holds the task. If the connection drops part way, the ids given so far are
    /// exactly the tasks the hub confirmed (the rest may or may not have arrived).
    pub async fn put_each<P: Into<Payload>>(
        &self,
        queue: &str,
        payloads: impl IntoIterator<Item = P>,
        opts: PutOptions,
        queued: impl FnMut(TaskId),
    ) -> Result<(), ClientError> {
        self.put_to(&Target::new(queue, opts)?, payloads, queued)
            .await
    }

    /// The puts of one call, pipelined, `queued` told each id in order.
    async fn put_to<P: Into<Payload>>(
        &self,
        target: &Target,
        payloads: impl IntoIterator<Item = P>,
        mut queued: impl FnMut(TaskId),
    ) -> Result<(), ClientError> {
        let mut window = std::collections::VecDeque::new();
        for (i, payload) in payloads.into_iter().enumerate() {
            if window.len() >= PIPELINE_WINDOW
                && let Some(rx) = window.pop_front()
            {
                queued(self.queued(rx).await?);
            }
            window.push_back(self.start(target.put(payload.into(), i)).await?);
        }
        for rx in window {
            queued(self.queued(rx).await?);
        }
        Ok(())
    }

    async fn queued(&self, rx: oneshot::Receiver<ServerMsg>) -> Result<TaskId, ClientError> {
        match self.finish(rx).await? {
            ServerMsg::Queued { task, .. } => Ok(task),
            other => Err(unexpected(&other)),
        }
    }

    /// Take the task at the front of `queue` for good (no lease), waiting up to `timeout`
    /// (capped by the hub at one hour). `None` if none came.
    pub async fn get(&self, queue: &str, timeout: Duration) -> Result<Option<Task>, ClientError> {
        let msg = ClientMsg::Get {
            req: None,
            queue: QueueName::new(queue)?,
            timeout_ms: millis_of(timeout),
        };
        match self.request(msg).await? {
            ServerMsg::Task { task, .. } => Ok(Some(task)),
            ServerMsg::Empty { .. } => Ok(None),
            other => Err(unexpected(&other)),
        }
    }

    /// Put tasks whose results come back to this session's private inbox, and wait for all of
    /// them: replies in input order. A task that ends in the dead-letter queue comes back with
    /// `ok: false` and its error. Bound the wait with [`tokio::time::timeout`]; many submits may
    /// run at once, on one handle or its clones.
    ///
    /// `opts` may not set `reply_to` (the inbox is the reply queue): that is
    /// [`ClientError::Invalid`].
    pub async fn submit<P: Into<Payload>>(
        &self,
        queue: &str,
        payloads: impl IntoIterator<Item = P>,
        opts: PutOptions,
    ) -> Result<Vec<Reply>, ClientError> {
        if let Some(reply_to) = &opts.reply_to {
            return Err(ClientError::Invalid(format!(
                "submit sends results to this session's inbox, so reply_to ({reply_to}) cannot \
                 be set; use put_many with reply_to instead"
            )));
        }
        let target = Target {
            reply_to: Some(self.inner.inbox.clone()),
            ..Target::new(queue, opts)?
        };
        let mut ids = Vec::new();
        self.put_to(&target, payloads, |id| ids.push(id)).await?;
        // Register every id first: replies for later tasks may arrive while we wait on earlier.
        let waits: Vec<_> = ids.iter().map(|id| self.expect_reply(*id)).collect();
        let mut replies = Vec::with_capacity(ids.len());
        for wait in waits {
            replies.push(self.reply(wait).await?);
        }
        Ok(replies)
    }

    /// Claim the reply for `id`: it may already be here, or will be delivered to the receiver.
    fn expect_reply(&self, id: TaskId) -> Result<Reply, oneshot::Receiver<Reply>> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut inbox) = self.inner.shared.inbox.lock() {
            if let Some(r) = inbox.early.remove(&id) {
                return Ok(r);
            }
            if !self.inner.shared.is_closed() {
                inbox.waiting.insert(id, tx);
            } // else `tx` drops here, and the wait ends with the close
        }
        Err(rx)
    }

    async fn reply(
        &self,
        wait: Result<Reply, oneshot::Receiver<Reply>>,
    ) -> Result<Reply, ClientError> {
        match wait {
            Ok(r) => Ok(r),
            Err(rx) => rx.await.map_err(|_| self.inner.shared.closed_error()),
        }
    }

    /// Publish to a topic (JSON or bytes); returns how many sessions it reached (at most once:
    /// nothing is stored).
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Payload>,
    ) -> Result<u64, ClientError> {
        let msg = ClientMsg::Publish {
            req: None,
            topic: Topic::new(topic)?,
            payload: payload.into(),
        };
        match self.request(msg).await? {
            ServerMsg::Published { receivers, .. } => Ok(receivers),
            other => Err(unexpected(&other)),
        }
    }

    /// The messages on topics matching `pattern` (`*` one token, `>` the rest) from now on, as
    /// a [`Stream`]. Each subscriber gets its own copy; one that does not keep up loses
    /// messages ([`Subscriber::dropped`] counts them), never memory.
    ///
    /// ```no_run
    /// # async fn demo(client: taskhub_client::Client) -> Result<(), taskhub_client::ClientError> {
    /// use futures_util::StreamExt;
    /// let mut cpu = client.subscribe("metrics.*.cpu").await?;
    /// while let Some(msg) = cpu.next().await {
    ///     println!("{}: {:?}", msg.topic, msg.payload);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscriber, ClientError> {
        let pattern = Pattern::new(pattern)?;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let id = self.inner.next_route.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicU64::new(0));
        // Routed before the hub is asked, so nothing sent after its `ok` is missed.
        if let Ok(mut routes) = self.inner.shared.routes.lock() {
            routes.push(Route {
                id,
                pattern: pattern.clone(),
                tx,
                dropped: dropped.clone(),
            });
        }
        let sub = Subscriber {
            id,
            pattern: pattern.clone(),
            rx,
            dropped,
            client: Some(self.clone()),
        };
        self.request(ClientMsg::Subscribe { req: None, pattern })
            .await?;
        Ok(sub)
    }

    /// Stop routing to subscriber `id`; whether no other subscriber here uses `pattern`.
    fn unroute(&self, id: u64, pattern: &Pattern) -> bool {
        let Ok(mut routes) = self.inner.shared.routes.lock() else {
            return false;
        };
        routes.retain(|r| r.id != id);
        !routes.iter().any(|r| &r.pattern == pattern)
    }

    pub async fn stats(&self) -> Result<Stats, ClientError> {
        match self.request(ClientMsg::Stats { req: None }).await? {
            ServerMsg::Stats { stats, .. } => Ok(stats),
            other => Err(unexpected(&other)),
        }
    }

    /// Delete `queue`: its ready tasks are dropped for good (the count is returned), and the
    /// queue too unless consumers, waiting gets, leased tasks or tasks naming it as `reply_to`
    /// still use it (then it stays, empty, until they are done). `Deleted::removed` says which.
    pub async fn delete_queue(&self, queue: &str) -> Result<Deleted, ClientError> {
        let msg = ClientMsg::DeleteQueue {
            req: None,
            queue: QueueName::new(queue)?,
        };
        match self.request(msg).await? {
            ServerMsg::Deleted { tasks, removed, .. } => Ok(Deleted { tasks, removed }),
            other => Err(unexpected(&other)),
        }
    }

    /// Progress reports of tasks whose `reply_to` is this session's inbox (those of
    /// [`Client::submit`], or put with `reply_to` [`Client::inbox`]), from now on, as their
    /// workers report them. At most once, and lossy for a reader that falls behind by more
    /// than a thousand. A second call takes the reports from the first.
    pub fn progress(&self) -> mpsc::Receiver<Progress> {
        let (tx, rx) = mpsc::channel(PROGRESS_BACKLOG);
        if let Ok(mut p) = self.inner.shared.progress.lock() {
            *p = Some(tx);
        }
        rx
    }

    /// Cancel task `id`: a ready or scheduled task is removed; a running one's worker is told to
    /// stop and its lease ends at once. Its `reply_to` (or a waiting [`Client::submit`]) gets a
    /// reply with `cancelled: true`. Returns where the task was. A task that is no longer
    /// waiting or running (done, dead-lettered, taken by a get) is [`ErrorCode::UnknownTask`].
    /// Needs `put` on the task's queue.
    pub async fn cancel(&self, id: TaskId) -> Result<TaskState, ClientError> {
        match self
            .request(ClientMsg::Cancel {
                req: None,
                task: id,
            })
            .await?
        {
            ServerMsg::Cancelled { state, .. } => Ok(state),
            other => Err(unexpected(&other)),
        }
    }

    /// The oldest `limit` entries of `<queue>.dead` (the hub's default 100 when `None`, at most
    /// 1,000), left where they are: each `{id, queue, kind, payload, attempts, error, ...}`
    /// (a task that carried bytes has `payload: null` and `payload_bytes`), and how many
    /// `<queue>.dead` holds. Needs `get` on `<queue>.dead`.
    pub async fn dead_letters(
        &self,
        queue: &str,
        limit: Option<u32>,
    ) -> Result<DeadLetters, ClientError> {
        let msg = ClientMsg::DeadList {
            req: None,
            queue: QueueName::new(queue)?,
            limit,
        };
        match self.request(msg).await? {
            ServerMsg::DeadLetters { entries, total, .. } => Ok(DeadLetters { entries, total }),
            other => Err(unexpected(&other)),
        }
    }

    /// Put dead letters of `queue` back on it as new tasks and take them out of `<queue>.dead`:
    /// those of the task ids in `ids`, or every one (up to 10,000 per call; `more` says whether
    /// to call again) when `None`. An id with no dead letter refuses the whole call
    /// (`unknown_task`). Needs `get` on `<queue>.dead` and `put` on `queue`.
    pub async fn requeue_dead(
        &self,
        queue: &str,
        ids: Option<Vec<TaskId>>,
    ) -> Result<Requeued, ClientError> {
        let msg = ClientMsg::DeadRequeue {
            req: None,
            queue: QueueName::new(queue)?,
            ids,
        };
        match self.request(msg).await? {
            ServerMsg::Requeued { count, more, .. } => Ok(Requeued { count, more }),
            other => Err(unexpected(&other)),
        }
    }

    /// A new token with `rights` (no more than this session's key has) that works for `ttl`.
    /// Needs a key with `admin`.
    pub async fn create_token(
        &self,
        rights: taskhub_core::Rights,
        ttl: Duration,
    ) -> Result<NewToken, ClientError> {
        let msg = ClientMsg::CreateToken {
            req: None,
            rights,
            ttl_ms: millis_of(ttl),
        };
        match self.request(msg).await? {
            ServerMsg::Token {
                token,
                token_id,
                expires,
                ..
            } => Ok(NewToken {
                token,
                id: token_id,
                expires,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Revoke the token with id `id`; returns how many sessions using it were closed.
    pub async fn revoke_token(&self, id: &str) -> Result<u64, ClientError> {
        let msg = ClientMsg::RevokeToken {
            req: None,
            token_id: id.to_string(),
        };
        match self.request(msg).await? {
            ServerMsg::Revoked { closed, .. } => Ok(closed),
            other => Err(unexpected(&other)),
        }
    }

    /// Close the session, for this handle and every clone: frames already queued go out, then a
    /// Close frame. Waits (up to 2 s) for the hub to close its side; leased tasks go back to
    /// their queues.
    pub async fn close(&self) {
        let shared = &self.inner.shared;
        let ended = shared.ended.notified();
        if !shared.is_closed() && self.inner.out.send(WsMessage::Close(None)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), ended).await;
        }
    }
}

/// The reader: hand every frame to whoever waits for it until the connection ends, then wake
/// every waiter with the reason.
async fn read(
    mut stream: futures_util::stream::SplitStream<WsStream>,
    shared: Arc<Shared>,
    silence: Duration,
) {
    let ending: Ending = loop {
        let Ok(frame) = tokio::time::timeout(silence, stream.next()).await else {
            break (
                None,
                format!("the hub has been silent for {:.0} s", silence.as_secs_f64()),
            );
        };
        match frame {
            Some(Ok(WsMessage::Text(t))) => match decode_server(&t) {
                Ok(msg) => route(&shared, msg),
                Err(e) => unreadable(&shared, &t, e),
            },
            Some(Ok(WsMessage::Binary(b))) => match decode_server_binary(&b) {
                Ok(msg) => route(&shared, msg),
                Err(e) => unreadable(&shared, binary_header(&b).unwrap_or(""), e),
            },
            Some(Ok(WsMessage::Close(c))) => {
                break match c {
                    Some(c) => (Some(u16::from(c.code)), c.reason.to_string()),
                    None => (Some(1005), String::new()),
                };
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => break (None, e.to_string()),
            None => break (None, String::new()),
        }
    };
    if let Ok(mut c) = shared.closed.lock() {
        // A farewell error (shutting_down, slow_consumer, ...) may have said more already.
        let reason = match c.take() {
            Some((_, said)) if !said.is_empty() => said,
            _ => ending.1,
        };
        *c = Some((ending.0, reason));
    }
    // Dropping the senders wakes every waiter with the close, and ends every subscriber.
    if let Ok(mut p) = shared.pending.lock() {
        p.clear();
    }
    if let Ok(mut i) = shared.inbox.lock() {
        i.waiting.clear();
    }
    if let Ok(mut r) = shared.routes.lock() {
        r.clear();
    }
    shared.ended.notify_waiters();
}

/// The messages on one pattern, from [`Client::subscribe`]: a [`Stream`] that ends when the
/// session does. Dropping it unsubscribes (once no other subscriber here uses the pattern).
#[derive(Debug)]
pub struct Subscriber {
    id: u64,
    pattern: Pattern,
    rx: mpsc::Receiver<Message>,
    dropped: Arc<AtomicU64>,
    /// `None` once unsubscribed.
    client: Option<Client>,
}

impl Subscriber {
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// Messages lost because this subscriber's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Stop receiving, and wait until the hub has taken note (when no other subscriber here
    /// uses the pattern). Messages already buffered are dropped.
    pub async fn unsubscribe(mut self) -> Result<(), ClientError> {
        let Some(client) = self.client.take() else {
            return Ok(());
        };
        if client.unroute(self.id, &self.pattern) && !client.is_closed() {
            client
                .request(ClientMsg::Unsubscribe {
                    req: None,
                    pattern: self.pattern.clone(),
                })
                .await?;
        }
        Ok(())
    }
}

impl Stream for Subscriber {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && client.unroute(self.id, &self.pattern)
        {
            // Without `req`: no answer to wait for. A full outbox just leaves the hub sending
            // what nobody reads, which the reader drops.
            let msg: ClientMsg = ClientMsg::Unsubscribe {
                req: None,
                pattern: self.pattern.clone(),
            };
            let _ = client
                .inner
                .out
                .try_send(transport::message(encode_client(&msg)));
        }
    }
}

/// What [`Client::delete_queue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Ready tasks dropped.
    pub tasks: u64,
    /// Whether the queue is gone (`false`: still in use, so kept, empty, until it is not).
    pub removed: bool,
}

/// What [`Client::dead_letters`] read.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetters {
    /// The entries, oldest first.
    pub entries: Vec<serde_json::Value>,
    /// How many `<queue>.dead` holds in all.
    pub total: u64,
}

/// What [`Client::requeue_dead`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requeued {
    /// Dead letters put back on the queue.
    pub count: u64,
    /// Whether `<queue>.dead` holds more (after a call without ids).
    pub more: bool,
}

/// What [`Client::create_token`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The token itself: give it to the client as `--token` (it is a secret).
    pub token: String,
    /// Its id, for `revoke_token`.
    pub id: String,
    /// When it stops working, in Unix seconds.
    pub expires: u64,
}

fn unexpected(msg: &ServerMsg) -> ClientError {
    ClientError::Protocol(format!("unexpected answer from hub: {msg:?}"))
}

/// A frame from the hub that cannot be decoded: whoever waits for it gets an error naming the
/// problem instead of waiting forever (the answer to a request by its `req`, a submitted task's
/// reply by its `id`).
fn unreadable(shared: &Shared, text: &str, e: taskhub_core::codec::DecodeError) {
    tracing::warn!("unreadable frame from hub: {}", e.message);
    let message = format!("the hub's answer could not be read: {}", e.message);
    if let Some(req) = e.req {
        answer(
            shared,
            req,
            ServerMsg::error(Some(req), ErrorCode::BadFrame, message),
        );
    } else if peek_type(text) == Some("reply")
        && let Some(id) = peek_u64(text, "id")
    {
        deliver_reply(
            shared,
            Reply {
                id: TaskId(id),
                ok: false,
                result: None,
                error: Some(message),
                cancelled: false,
            },
        );
    }
}

/// Hand the answer to request `req` to whoever waits for it.
fn answer(shared: &Shared, req: u64, msg: ServerMsg) {
    let waiter = shared.pending.lock().ok().and_then(|mut p| p.remove(&req));
    if let Some(tx) = waiter {
        let _ = tx.send(msg);
    }
}

/// Hand a submitted task's reply to whoever waits for it, or keep it for a moment.
fn deliver_reply(shared: &Shared, reply: Reply) {
    if let Ok(mut inbox) = shared.inbox.lock() {
        match inbox.waiting.remove(&reply.id) {
            Some(tx) => {
                let _ = tx.send(reply);
            }
            None if inbox.early.len() < EARLY_REPLIES => {
                inbox.early.insert(reply.id, reply);
            }
            None => tracing::warn!("dropping a reply nobody waits for"),
        }
    }
}

/// Hand a pub/sub message to every subscriber whose pattern matches it. At most once: a
/// subscriber that does not keep up loses messages, not memory.
fn publish_locally(shared: &Shared, topic: Topic, payload: Payload) {
    let Ok(routes) = shared.routes.lock() else {
        return;
    };
    for r in routes.iter().filter(|r| r.pattern.matches(&topic)) {
        let msg = Message {
            topic: topic.clone(),
            payload: payload.clone(),
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = r.tx.try_send(msg) {
            r.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn route(shared: &Shared, msg: ServerMsg) {
    match msg {
        ServerMsg::Reply(reply) => deliver_reply(shared, reply),
        ServerMsg::Message { topic, payload } => publish_locally(shared, topic, payload),
        ServerMsg::Progress {
            task,
            fraction,
            message,
        } => {
            if let Ok(tx) = shared.progress.lock()
                && let Some(tx) = tx.as_ref()
            {
                let _ = tx.try_send(Progress {
                    task,
                    fraction,
                    message,
                });
            }
        }
        msg => match msg.req() {
            Some(req) => answer(shared, req, msg),
            None => {
                if let ServerMsg::Error { code, message, .. } = &msg {
                    tracing::warn!("hub: {message} ({code})");
                    let closing = matches!(
                        code,
                        ErrorCode::ShuttingDown
                            | ErrorCode::SlowConsumer
                            | ErrorCode::TooLarge
                            | ErrorCode::IdleTimeout
                    );
                    if closing && let Ok(mut c) = shared.closed.lock() {
                        *c = Some((None, format!("{message} ({code})")));
                    }
                }
            }
        },
    }
}
