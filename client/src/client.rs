//! One authenticated session to the hub, shared by any number of concurrent requests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use taskhub_core::auth::{AuthError, ClientHandshake, DEFAULT_KEY_ID, NONCE_BYTES, Secret};
use taskhub_core::codec::{
    binary_header, decode_server, decode_server_binary, encode_client, peek_type, peek_u64,
};
use taskhub_core::protocol::{Limits, Reply, Stats};
use taskhub_core::{
    ClientMsg, ErrorCode, NameError, Pattern, Payload, QueueName, Role, ServerMsg, SessionId, Task,
    TaskId, Topic,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::transport::{self, WsStream};

/// Requests a pipelined call keeps in flight at once.
const PIPELINE_WINDOW: usize = 512;
/// Frames waiting to be written.
const OUTBOX: usize = 1_024;
/// Pub/sub messages buffered for [`Client::next_message`]; more are dropped (at-most-once).
const MESSAGE_BUFFER: usize = 1_024;
/// Replies that arrived before their `submit` asked for them.
const EARLY_REPLIES: usize = 1 << 20;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
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
    /// Connect with `token` (from `taskhub token create`) instead of a key.
    pub fn with_token(
        url: impl Into<String>,
        token: &str,
    ) -> Result<Self, taskhub_core::token::TokenError> {
        let (key_id, secret, _) = taskhub_core::token::credentials(token)?;
        let mut opts = ConnectOptions::new(url, Vec::new());
        opts.key_id = key_id;
        opts.key = secret;
        Ok(opts)
    }

    /// Connect with `credentials` (a key, or a token's key id and secret).
    pub fn with_credentials(url: impl Into<String>, credentials: crate::Credentials) -> Self {
        let mut opts = ConnectOptions::new(url, Vec::new());
        opts.key_id = credentials.key_id;
        opts.key = credentials.secret;
        opts
    }

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
}

/// Options for a `put`.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub kind: Option<String>,
    pub reply_to: Option<String>,
    pub max_attempts: Option<u32>,
    /// Makes the puts idempotent: task `i` of a call carries the dedup id `<prefix><i>`, and the
    /// hub stores a task only once per dedup id within its dedup window. Retrying a whole
    /// `put_many` with the same prefix after a lost connection stores nothing twice.
    pub dedup_prefix: Option<String>,
}

impl PutOptions {
    pub fn kind(kind: impl Into<String>) -> Self {
        PutOptions {
            kind: Some(kind.into()),
            ..PutOptions::default()
        }
    }
}

/// Where puts go, with names validated once, not once per task.
struct Target {
    queue: QueueName,
    kind: Option<String>,
    reply_to: Option<QueueName>,
    max_attempts: Option<u32>,
}

impl Target {
    fn new(queue: &str, opts: &PutOptions) -> Result<Target, ClientError> {
        Ok(Target {
            queue: QueueName::new(queue)?,
            kind: opts.kind.clone(),
            reply_to: opts.reply_to.clone().map(QueueName::new).transpose()?,
            max_attempts: opts.max_attempts,
        })
    }

    fn put(&self, payload: Payload, dedup_id: Option<String>) -> ClientMsg {
        ClientMsg::Put {
            req: None,
            queue: self.queue.clone(),
            payload,
            kind: self.kind.clone(),
            reply_to: self.reply_to.clone(),
            max_attempts: self.max_attempts,
            dedup_id,
        }
    }
}

/// What went wrong, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The hub could not be reached. Check the URL and that the hub runs.
    #[error("{0}")]
    Connect(String),
    /// Wrong key, unknown key id, or a hub that does not hold the key. Fix the key.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The hub refused a request; `code` says why.
    #[error("{message} ({code})")]
    Hub { code: ErrorCode, message: String },
    /// A queue name, topic or pattern is invalid; nothing was sent.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The session ended.
    #[error("connection to the hub was lost{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed(Option<String>),
    /// The hub sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

#[derive(Debug, Default)]
struct Inbox {
    waiting: HashMap<TaskId, oneshot::Sender<Reply>>,
    early: HashMap<TaskId, Reply>,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<HashMap<u64, oneshot::Sender<ServerMsg>>>,
    inbox: Mutex<Inbox>,
    closed: Mutex<Option<String>>,
}

impl Shared {
    fn closed_error(&self) -> ClientError {
        ClientError::Closed(self.closed.lock().ok().and_then(|c| c.clone()))
    }
}

/// A connected, authenticated session. Requests may be issued concurrently from many tasks; each
/// carries its own request id.
#[derive(Debug)]
pub struct Client {
    out: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    next_req: AtomicU64,
    session: SessionId,
    inbox: QueueName,
    limits: Limits,
    messages: tokio::sync::Mutex<mpsc::Receiver<(Topic, Payload)>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

async fn next_msg(ws: &mut WsStream, timeout: Duration) -> Result<ServerMsg, ClientError> {
    loop {
        let frame = tokio::time::timeout(timeout, ws.next())
            .await
            .map_err(|_| ClientError::Timeout(timeout))?;
        match frame {
            Some(Ok(Message::Text(t))) => {
                return decode_server(&t).map_err(|e| ClientError::Protocol(e.message));
            }
            Some(Ok(Message::Binary(b))) => {
                return decode_server_binary(&b).map_err(|e| ClientError::Protocol(e.message));
            }
            Some(Ok(Message::Close(c))) => {
                return Err(ClientError::Closed(c.map(|c| c.reason.to_string())));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ClientError::Closed(Some(e.to_string()))),
            None => return Err(ClientError::Closed(None)),
        }
    }
}

impl Client {
    /// Connect and authenticate (both sides prove the key).
    pub async fn connect(opts: ConnectOptions) -> Result<Client, ClientError> {
        let mut ws = transport::connect(&opts.url, opts.timeout, opts.ca.as_deref())
            .await
            .map_err(ClientError::Connect)?;
        let mut entropy = [0u8; NONCE_BYTES];
        getrandom::fill(&mut entropy).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut hs = ClientHandshake::new(opts.key_id, opts.key, opts.role, opts.name, entropy);
        let challenge = next_msg(&mut ws, opts.timeout).await?;
        let auth = hs.answer(&challenge)?;
        futures_util::SinkExt::send(&mut ws, transport::message(encode_client(&auth)))
            .await
            .map_err(|e| ClientError::Closed(Some(e.to_string())))?;
        let welcome = match next_msg(&mut ws, opts.timeout).await {
            Err(ClientError::Closed(_)) => {
                return Err(AuthError::Rejected("the hub closed the connection".into()).into());
            }
            other => other?,
        };
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

        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::channel(OUTBOX);
        let writer = tokio::spawn(async move {
            let _ = transport::pump(&mut sink, &mut out_rx).await;
            let _ = futures_util::SinkExt::close(&mut sink).await;
        });
        let shared = Arc::new(Shared::default());
        let (msg_tx, msg_rx) = mpsc::channel(MESSAGE_BUFFER);
        let reader_shared = shared.clone();
        // The hub pings every `ping_interval_ms`: twice that without a frame means the path is
        // gone (half-open connections never report an error), and every waiter is told so.
        let silence = Duration::from_millis(limits.ping_interval_ms.saturating_mul(2).max(100));
        let reader = tokio::spawn(async move {
            let reason = loop {
                let Ok(frame) = tokio::time::timeout(silence, stream.next()).await else {
                    break Some(format!(
                        "the hub has been silent for {:.0} s",
                        silence.as_secs_f64()
                    ));
                };
                match frame {
                    Some(Ok(Message::Text(t))) => match decode_server(&t) {
                        Ok(msg) => route(&reader_shared, &msg_tx, msg),
                        Err(e) => unreadable(&reader_shared, &t, e),
                    },
                    Some(Ok(Message::Binary(b))) => match decode_server_binary(&b) {
                        Ok(msg) => route(&reader_shared, &msg_tx, msg),
                        Err(e) => unreadable(&reader_shared, binary_header(&b).unwrap_or(""), e),
                    },
                    Some(Ok(Message::Close(c))) => break c.map(|c| c.reason.to_string()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Some(e.to_string()),
                    None => break None,
                }
            };
            if let Ok(mut c) = reader_shared.closed.lock()
                && c.is_none()
            {
                *c = reason;
            }
            // Dropping the senders wakes every waiter with "connection lost".
            if let Ok(mut p) = reader_shared.pending.lock() {
                p.clear();
            }
            if let Ok(mut i) = reader_shared.inbox.lock() {
                i.waiting.clear();
            }
        });
        Ok(Client {
            out,
            shared,
            next_req: AtomicU64::new(1),
            session,
            inbox,
            limits,
            messages: tokio::sync::Mutex::new(msg_rx),
            reader,
            writer,
        })
    }

    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Limits the hub announced.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Send a request without waiting for its answer.
    async fn start(&self, mut msg: ClientMsg) -> Result<oneshot::Receiver<ServerMsg>, ClientError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        msg.set_req(req);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.shared.pending.lock() {
            p.insert(req, tx);
        }
        if self
            .out
            .send(transport::message(encode_client(&msg)))
            .await
            .is_err()
        {
            return Err(self.shared.closed_error());
        }
        Ok(rx)
    }

    async fn finish(&self, rx: oneshot::Receiver<ServerMsg>) -> Result<ServerMsg, ClientError> {
        match rx.await {
            Ok(ServerMsg::Error { code, message, .. }) => Err(ClientError::Hub { code, message }),
            Ok(msg) => Ok(msg),
            Err(_) => Err(self.shared.closed_error()),
        }
    }

    /// Send any request and wait for its answer. An `error` answer becomes [`ClientError::Hub`].
    pub async fn request(&self, msg: ClientMsg) -> Result<ServerMsg, ClientError> {
        let rx = self.start(msg).await?;
        self.finish(rx).await
    }

    /// Put one task; returns its id once the hub has accepted it. The payload is JSON (a
    /// [`serde_json::Value`]) or bytes (`Vec<u8>`, [`bytes::Bytes`]: sent in a binary frame, no base64).
    pub async fn put(
        &self,
        queue: &str,
        payload: impl Into<Payload>,
        opts: &PutOptions,
    ) -> Result<TaskId, ClientError> {
        let target = Target::new(queue, opts)?;
        let dedup_id = opts.dedup_prefix.as_ref().map(|p| format!("{p}0"));
        match self.request(target.put(payload.into(), dedup_id)).await? {
            ServerMsg::Queued { task, .. } => Ok(task),
            other => Err(unexpected(&other)),
        }
    }

    /// Put many tasks, pipelined; returns their ids in input order.
    pub async fn put_many(
        &self,
        queue: &str,
        payloads: Vec<impl Into<Payload>>,
        opts: &PutOptions,
    ) -> Result<Vec<TaskId>, ClientError> {
        let mut ids = Vec::with_capacity(payloads.len());
        self.put_each(queue, payloads, opts, |id| ids.push(id))
            .await?;
        Ok(ids)
    }

    /// [`Client::put_many`], calling `queued` with each task's id, in order, as soon as the hub
    /// confirms it holds the task. If the connection drops part way, the ids given so far are
    /// exactly the tasks the hub confirmed (the rest may or may not have arrived).
    pub async fn put_each(
        &self,
        queue: &str,
        payloads: Vec<impl Into<Payload>>,
        opts: &PutOptions,
        mut queued: impl FnMut(TaskId),
    ) -> Result<(), ClientError> {
        let target = Target::new(queue, opts)?;
        let mut window = std::collections::VecDeque::new();
        for (i, payload) in payloads.into_iter().enumerate() {
            if window.len() >= PIPELINE_WINDOW
                && let Some(rx) = window.pop_front()
            {
                queued(self.queued(rx).await?);
            }
            let dedup_id = opts.dedup_prefix.as_ref().map(|p| format!("{p}{i}"));
            window.push_back(self.start(target.put(payload.into(), dedup_id)).await?);
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

    /// Take the task at the front of `queue`, waiting up to `timeout`. `None` if none came.
    pub async fn get(&self, queue: &str, timeout: Duration) -> Result<Option<Task>, ClientError> {
        let msg = ClientMsg::Get {
            req: None,
            queue: QueueName::new(queue)?,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        match self.request(msg).await? {
            ServerMsg::Task { task, .. } => Ok(Some(task)),
            ServerMsg::Empty { .. } => Ok(None),
            other => Err(unexpected(&other)),
        }
    }

    /// Put tasks whose results come back to this session's private inbox, then wait for all of
    /// them. Replies are returned in input order. A task that ends in the dead-letter queue comes
    /// back with `ok: false` and its error.
    pub async fn submit(
        &self,
        queue: &str,
        payloads: Vec<impl Into<Payload>>,
        opts: PutOptions,
        timeout: Option<Duration>,
    ) -> Result<Vec<Reply>, ClientError> {
        let opts = PutOptions {
            reply_to: Some(self.inbox.to_string()),
            ..opts
        };
        let collect = async {
            let ids = self.put_many(queue, payloads, &opts).await?;
            // Register every id first: replies for later tasks may arrive while we wait on earlier.
            let waits: Vec<_> = ids.iter().map(|id| self.expect_reply(*id)).collect();
            let mut replies = Vec::with_capacity(ids.len());
            for wait in waits {
                replies.push(self.reply(wait).await?);
            }
            Ok(replies)
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, collect)
                .await
                .map_err(|_| ClientError::Timeout(t))?,
            None => collect.await,
        }
    }

    /// Put one task whose result comes back to this session, and wait for that result. Many of
    /// these may run at once on one client (this is how `taskhub bench` pipelines).
    pub async fn submit_one(
        &self,
        queue: &QueueName,
        payload: impl Into<Payload>,
        kind: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let target = Target {
            queue: queue.clone(),
            kind: kind.map(str::to_string),
            reply_to: Some(self.inbox.clone()),
            max_attempts: None,
        };
        let id = self
            .queued(self.start(target.put(payload.into(), None)).await?)
            .await?;
        let wait = self.expect_reply(id);
        self.reply(wait).await
    }

    /// Claim the reply for `id`: it may already be here, or will be delivered to the receiver.
    fn expect_reply(&self, id: TaskId) -> Result<Reply, oneshot::Receiver<Reply>> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut inbox) = self.shared.inbox.lock() {
            if let Some(r) = inbox.early.remove(&id) {
                return Ok(r);
            }
            inbox.waiting.insert(id, tx);
        }
        Err(rx)
    }

    async fn reply(
        &self,
        wait: Result<Reply, oneshot::Receiver<Reply>>,
    ) -> Result<Reply, ClientError> {
        match wait {
            Ok(r) => Ok(r),
            Err(rx) => rx.await.map_err(|_| self.shared.closed_error()),
        }
    }

    /// Publish to a topic (JSON or bytes); returns how many subscribers it reached.
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

    /// Subscribe to a pattern (`*` one token, `>` the rest). Read with [`Client::next_message`].
    pub async fn subscribe(&self, pattern: &str) -> Result<(), ClientError> {
        let msg = ClientMsg::Subscribe {
            req: None,
            pattern: Pattern::new(pattern)?,
        };
        self.request(msg).await.map(drop)
    }

    pub async fn unsubscribe(&self, pattern: &str) -> Result<(), ClientError> {
        let msg = ClientMsg::Unsubscribe {
            req: None,
            pattern: Pattern::new(pattern)?,
        };
        self.request(msg).await.map(drop)
    }

    /// The next pub/sub message, or `None` once the session has ended.
    pub async fn next_message(&self) -> Option<(Topic, Payload)> {
        self.messages.lock().await.recv().await
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
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
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

    /// Close the session politely: queued frames go out, then a Close frame.
    pub async fn close(mut self) {
        let _ = self.out.send(Message::Close(None)).await;
        // Dropping the last sender ends the writer's pump, which then closes the sink.
        self.out = mpsc::channel(1).0;
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.writer).await;
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

/// Hand one incoming message to whoever waits for it.
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

fn route(shared: &Shared, messages: &mpsc::Sender<(Topic, Payload)>, msg: ServerMsg) {
    match msg {
        ServerMsg::Reply(reply) => deliver_reply(shared, reply),
        ServerMsg::Message { topic, payload } => {
            // At-most-once: a reader that does not keep up loses messages, not memory.
            let _ = messages.try_send((topic, payload));
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
                        *c = Some(format!("{message} ({code})"));
                    }
                }
            }
        },
    }
}
