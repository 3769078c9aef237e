//! One client connection.
//!
//! The handshake runs first, under a timeout, before the session is registered with the hub. Then
//! one `select!` loop reads frames, watches for a slow-consumer kill, pings, and listens for
//! shutdown. A separate writer task owns the socket's sink and drains the bounded outbox. Inner
//! steps return the reason the session ended; [`serve`] logs it once.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::writer::{self, message, pump_joining};
use futures_util::stream::FuturesOrdered;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use taskhub_core::auth::{self, NONCE_BYTES};
use taskhub_core::codec::{
    decode_client, decode_client_binary, decode_client_frames, encode_server,
};
use taskhub_core::protocol::{AuthFailure, PROTOCOL_VERSION};
use taskhub_core::{ErrorCode, QueueName, SessionId};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;

use crate::admission::{Admission, Pending};
use crate::broker::{ClientMsg, ServerMsg};
use crate::http::{self, Replay};
use crate::hub::{Gated, Hub, Link};
use crate::keys::{self, Identity};

type Ws = WebSocketStream<Replay>;

/// Frames a session takes in one go when several have already arrived, and the most bytes of
/// them it decodes before applying.
const READ_BATCH: usize = 256;
const READ_BATCH_BYTES: usize = 256 * 1024;

/// Why a session ended.
#[derive(Debug)]
enum End {
    ClientClosed,
    Shutdown,
    AuthFailed,
    AuthTimeout,
    AuthRequired,
    TooLarge,
    SlowConsumer,
    Idle,
    TooManyConnections,
    /// The key or token expired during the session.
    Expired,
    /// The session's token was revoked.
    Revoked,
    Transport(WsError),
}

impl End {
    fn close_frame(&self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            End::ClientClosed | End::Transport(_) => return None,
            End::Shutdown => (CloseCode::Away, "hub shutting down"),
            End::AuthFailed => (CloseCode::Policy, "authentication failed"),
            End::AuthTimeout => (CloseCode::Policy, "handshake timeout"),
            End::AuthRequired => (CloseCode::Policy, "authentication required"),
            End::TooLarge => (CloseCode::Size, "message too large"),
            End::SlowConsumer => (CloseCode::Policy, "slow consumer"),
            End::Idle => (CloseCode::Away, "idle timeout"),
            End::TooManyConnections => (CloseCode::Again, "too many connections"),
            End::Expired => (CloseCode::Policy, "credentials expired"),
            End::Revoked => (CloseCode::Policy, "token revoked"),
        };
        Some(CloseFrame {
            code,
            reason: reason.into(),
        })
    }
}

/// What the writer sends last, after what is still queued (or instead of it, when the session
/// was abandoned as a slow consumer): an optional last message and the Close frame.
#[derive(Debug)]
struct Farewell {
    last: Option<Message>,
    frame: Option<CloseFrame>,
}

/// How long the writer may take to send its last messages and the Close frame to a peer that
/// reads slowly, before the connection is cut without them.
const FAREWELL_WAIT: Duration = Duration::from_secs(5);

/// After the Close frame, how long the hub goes on reading from a peer that sends nothing and
/// does not answer the Close, so the socket's input is empty when it is closed.
const LINGER_QUIET: Duration = Duration::from_millis(200);

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Transport(e) => write!(f, "transport error: {e}"),
            other => match other.close_frame() {
                Some(c) => f.write_str(&c.reason),
                None => f.write_str("client closed"),
            },
        }
    }
}

/// Counts a session for `max_connections` while alive.
struct ConnectionSlot(Arc<Hub>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection as the port speaks it: TLS set up on a TLS port. A client that speaks the
/// other scheme is told so (a plain request on a TLS port gets a 400 that says to use `wss://`; a
/// TLS handshake on a plain port is closed) and logged in summary; `None` when the connection is
/// done.
async fn open(stream: TcpStream, hub: &Hub) -> Option<http::Stream> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await.ok()?;
    let hello = n == 1 && first[0] == crate::tls::HANDSHAKE_RECORD;
    match (&hub.tls, hello) {
        (Some(tls), true) => match tls.acceptor().accept(stream).await {
            Ok(tls) => Some(http::Stream::Tls(Box::new(tls))),
            Err(e) => {
                tracing::debug!("TLS handshake failed: {e}");
                None
            }
        },
        (None, false) => Some(http::Stream::Plain(stream)),
        (Some(_), false) => {
            if let Some(n) = hub.wrong_scheme.due(std::time::Instant::now()) {
                tracing::warn!(
                    "plain-text request on the TLS port ({n} in the last {} s); clients must use wss:// (https:// in a browser)",
                    crate::throttle::LOG_EVERY.as_secs()
                );
            }
            let mut stream = http::Stream::Plain(stream);
            // Read the head, so the answer is not lost to a reset over unread input.
            let _ = http::read_head(&mut stream).await;
            let why =
                "this hub serves TLS on this port: connect with wss:// (https:// in a browser)";
            let _ = http::refuse(stream, "400 Bad Request", why, "").await;
            None
        }
        (None, true) => {
            if let Some(n) = hub.wrong_scheme.due(std::time::Instant::now()) {
                tracing::warn!(
                    "TLS handshake on a plain port ({n} in the last {} s); this hub has no --tls-cert, so clients must use ws:// (http:// in a browser)",
                    crate::throttle::LOG_EVERY.as_secs()
                );
            }
            // Take the ClientHello in before closing: a socket closed over unread input is
            // reset, and the client then reports a reset instead of a closed handshake.
            let mut stream = stream;
            let mut hello = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut hello).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
            None
        }
    }
}

/// `auth_failed`, with why.
fn auth_failed(reason: AuthFailure, message: &str) -> ServerMsg {
    ServerMsg::Error {
        req: None,
        code: ErrorCode::AuthFailed,
        message: message.to_string(),
        reason: Some(reason),
    }
}

/// Serve one TCP connection until it ends.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    hub: Arc<Hub>,
    shutdown: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("session", %peer, id = tracing::field::Empty);
    async move {
        // Until it authenticates, the connection holds a place among those waiting, and is
        // closed if it has waited longest when the hub runs out of places.
        let pending = Admission::enter(&hub, peer.ip());
        let _ = stream.set_nodelay(true);
        let opened = tokio::time::timeout(hub.config.handshake_timeout, open(stream, &hub));
        let Some(mut stream) = (tokio::select! {
            opened = opened => opened.ok().flatten(),
            () = pending.evicted() => return,
        }) else {
            return;
        };
        let read = tokio::time::timeout(hub.config.handshake_timeout, http::read_head(&mut stream));
        let head = match tokio::select! {
            read = read => read,
            () = pending.evicted() => return,
        } {
            Ok(Ok(http::Head::Whole(head))) => head,
            Ok(Ok(http::Head::TooLarge)) => {
                let why = format!("the request head is over {} bytes", http::MAX_HEAD);
                let _ = http::refuse(stream, "431 Request Header Fields Too Large", &why, "").await;
                return;
            }
            _ => return,
        };
        // Plain HTTP is answered here; a WebSocket handshake is checked before tungstenite
        // takes it, so a bad one gets an HTTP answer that says what is wrong.
        let refusal = match http::Request::parse(&head) {
            Err(why) => Some(("400 Bad Request", why.to_string(), "")),
            Ok(r) if !r.wants_upgrade() && crate::ops::is_ops(&r) => {
                if let Err(e) = crate::ops::answer(stream, &r, &hub, true).await {
                    tracing::debug!("http request failed: {e}");
                }
                return;
            }
            Ok(r) if !r.wants_upgrade() => {
                if let Err(e) = http::serve_static(stream, &r, &hub.site).await {
                    tracing::debug!("http request failed: {e}");
                }
                return;
            }
            Ok(r) => match r.websocket_problem() {
                Some(why) => {
                    let headers = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
                    Some(("426 Upgrade Required", why.to_string(), headers))
                }
                None => r
                    .origin_problem(&hub.config.allowed_origins)
                    .map(|why| ("403 Forbidden", why, "")),
            },
        };
        if let Some((status, why, headers)) = refusal {
            if let Err(e) = http::refuse(stream, status, &why, headers).await {
                tracing::debug!("http request failed: {e}");
            }
            return;
        }
        let max = hub.config.max_message_bytes;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(hub.config.read_buffer_bytes)
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let accept =
            tokio_tungstenite::accept_async_with_config(Replay::new(head, stream), Some(ws_config));
        let accept = tokio::time::timeout(hub.config.handshake_timeout, accept);
        let ws = match tokio::select! {
            accepted = accept => accepted,
            () = pending.evicted() => return,
        } {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!("websocket upgrade failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("websocket upgrade timed out");
                return;
            }
        };
        let (sink, source) = ws.split();
        let (tx, rx) = mpsc::channel(hub.config.outbox);
        let (close_tx, close_rx) = oneshot::channel();
        let (abandon_tx, abandon_rx) = oneshot::channel();
        let joined = Arc::new(AtomicBool::new(false));
        let outbox = Gated::new(rx, hub.durable());
        let writer = tokio::spawn(write_loop(
            sink,
            outbox,
            joined.clone(),
            abandon_rx,
            close_rx,
        ));
        let mut conn = Conn {
            hub: hub.clone(),
            peer: peer.ip(),
            link: Link {
                tx,
                kill: Arc::new(Notify::new()),
            },
            source,
            id: None,
            last_word: None,
            joined,
            pending: Some(pending),
            _slot: None,
            key_id: String::new(),
            identity: None,
            _token: None,
        };
        let end = conn.run(shutdown).await;
        if let Some(id) = conn.id {
            hub.close(id).await;
        }
        if matches!(end, End::SlowConsumer) {
            hub.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
            // Its backlog is dropped: the error and Close frame must not wait behind thousands
            // of messages it will never take.
            let _ = abandon_tx.send(());
        }
        let _ = close_tx.send(Farewell {
            last: conn.last_word.take(),
            frame: end.close_frame(),
        });
        // The writer sends the Close frame once every sender of the outbox is gone.
        let Conn { source, link, .. } = conn;
        drop(link);
        linger(writer, source).await;
        match &end {
            // A failed handshake was logged (summarised per address) where it failed.
            End::ClientClosed | End::Shutdown | End::AuthFailed | End::Expired | End::Revoked => {
                tracing::debug!("session ended: {end}")
            }
            End::Transport(
                WsError::ConnectionClosed
                | WsError::AlreadyClosed
                | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
            ) => tracing::debug!("session ended: {end}"),
            _ => tracing::info!("session ended: {end}"),
        }
    }
    .instrument(span)
    .await
}

/// Wait (at most [`FAREWELL_WAIT`]) for the writer to send the farewell, meanwhile reading and
/// ignoring what the peer sends until it answers the Close or goes quiet (RFC 6455 5.5.1): a peer
/// blocked writing could otherwise never read the farewell, and closing a socket with unread input
/// resets it, which can destroy the farewell in flight.
async fn linger(mut writer: tokio::task::JoinHandle<()>, mut source: SplitStream<Ws>) {
    let drain = async {
        let mut written = false;
        loop {
            tokio::select! {
                done = &mut writer, if !written => {
                    if done.is_err() {
                        return;
                    }
                    written = true;
                }
                msg = source.next() => match msg {
                    Some(Ok(msg)) if !msg.is_close() => {}
                    _ => {
                        if !written {
                            let _ = (&mut writer).await;
                        }
                        return;
                    }
                },
                // Once the Close frame is out, a peer that has gone quiet is not waited for.
                _ = tokio::time::sleep(LINGER_QUIET), if written => return,
            }
        }
    };
    if tokio::time::timeout(FAREWELL_WAIT, drain).await.is_err() {
        writer.abort();
    }
}

/// Owns the sink: sends queued frames, batching whatever is ready before each flush (and, once
/// `joined` is set, joining text messages that are ready together into one frame), until the
/// outbox closes (the session dropped every sender, after deciding how to end); then the
/// session's last message and the Close frame. `abandon` cuts the backlog short for a peer that
/// does not read.
async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut rx: Gated,
    joined: Arc<AtomicBool>,
    abandon: oneshot::Receiver<()>,
    close: oneshot::Receiver<Farewell>,
) {
    let abandoned = tokio::select! {
        biased;
        // A sender dropped without a word is no abandonment: keep sending.
        Ok(()) = abandon => true,
        sent = pump_joining(&mut sink, &mut rx, &joined) => match sent {
            Ok(()) => false,
            Err(_) => return,
        },
    };
    // The session sends the farewell before it drops its outbox, so this does not wait long.
    let Ok(farewell) = close.await else {
        let _ = sink.close().await;
        return;
    };
    if abandoned {
        rx.discard();
    } else {
        while let Some(msg) = writer::Outbox::recv(&mut rx).await {
            if sink.feed(msg).await.is_err() {
                return;
            }
        }
    }
    if let Some(last) = farewell.last
        && sink.feed(last).await.is_err()
    {
        return;
    }
    if let Some(frame) = farewell.frame {
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
    let _ = sink.close().await;
}

struct Conn {
    hub: Arc<Hub>,
    /// The client's address, for the wrong-key throttle.
    peer: std::net::IpAddr,
    /// The outbox, and the signal that closes this session as a slow consumer.
    link: Link,
    source: SplitStream<Ws>,
    id: Option<SessionId>,
    /// An error to send just before the Close frame, whatever is queued before it.
    last_word: Option<Message>,
    /// The client asked for `batch`: the writer joins messages that are ready together.
    joined: Arc<AtomicBool>,
    /// Its place among the connections waiting to authenticate, until it has.
    pending: Option<Pending>,
    /// Its place among the sessions, once it has.
    _slot: Option<ConnectionSlot>,
    /// The key id it authenticated with, and what that lets it do.
    key_id: String,
    identity: Option<Identity>,
    /// Counts it among its token's sessions, while alive.
    _token: Option<TokenSession>,
}

/// With a NATS backend: answers waiting for NATS, sent in the order of the requests. (Kept
/// outside `Conn`: the futures are `Send` but not `Sync`.)
type Answers = FuturesOrdered<crate::nats::Answer>;

/// Answers a session may have waiting for NATS before it stops reading requests: backpressure
/// on a producer that outruns JetStream.
const MAX_WAITING_ANSWERS: usize = 4_096;

/// How long a session that ended waits for the answers still waiting for NATS.
const ANSWERS_AT_END: Duration = Duration::from_secs(10);

/// Counts a session among those using one token, while alive.
struct TokenSession(Arc<Hub>, String);

impl Drop for TokenSession {
    fn drop(&mut self) {
        let mut open = self
            .0
            .token_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    crate::storage::unix_ms() / 1000
}

/// Longest a token may live: revoked ids are kept this long.
const MAX_TOKEN_TTL_MS: u64 = 366 * 24 * 3600 * 1000;

impl Conn {
    /// Queue an answer, waiting for room as long as the hub waits for any of a session's own
    /// answers (then the session is closed as a slow consumer).
    async fn send(&self, msg: &ServerMsg) {
        let msg = message(encode_server(msg));
        self.link.send_own(msg, self.hub.config.idle_timeout).await;
    }

    /// A last word before closing: the writer sends it after the outbox (or instead of it, for
    /// a slow consumer) and just before the Close frame. Never waits on a full outbox.
    fn farewell(&mut self, code: ErrorCode, message: &str) {
        self.last_word_is(&ServerMsg::error(None, code, message));
    }

    fn last_word_is(&mut self, msg: &ServerMsg) {
        self.last_word = Some(message(encode_server(msg)));
    }

    async fn refuse(&self, code: ErrorCode, message: &str) {
        self.send(&ServerMsg::error(None, code, message)).await;
    }

    async fn run(&mut self, shutdown: watch::Receiver<bool>) -> End {
        if let Err(end) = self.authenticate().await {
            return end;
        }
        self.serve(shutdown).await
    }

    /// Challenge, read one `auth`, verify it in constant time, then register the session.
    async fn authenticate(&mut self) -> Result<(), End> {
        let mut entropy = [0u8; NONCE_BYTES];
        if getrandom::fill(&mut entropy).is_err() {
            return Err(End::Transport(WsError::ConnectionClosed));
        }
        let nonce = auth::hex(&entropy);
        self.send(&ServerMsg::Challenge {
            version: PROTOCOL_VERSION,
            nonce: nonce.clone(),
        })
        .await;
        let hub = self.hub.clone();
        // WebSocket pings and pongs are not messages (RFC 6455 5.5): they may come before `auth`.
        let deadline = tokio::time::Instant::now() + hub.config.handshake_timeout;
        let first = loop {
            let next = tokio::time::timeout_at(deadline, self.source.next());
            let evicted = async {
                match &self.pending {
                    Some(p) => p.evicted().await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                next = next => next,
                () = evicted => {
                    self.refuse(
                        ErrorCode::TooManyConnections,
                        "too many connections are waiting to authenticate, most from this address; this one had waited longest of them",
                    )
                    .await;
                    return Err(End::TooManyConnections);
                }
            };
            match next {
                Err(_) => {
                    self.refuse(
                        ErrorCode::AuthTimeout,
                        "no auth message within the handshake timeout",
                    )
                    .await;
                    return Err(End::AuthTimeout);
                }
                Ok(None) => return Err(End::ClientClosed),
                Ok(Some(Err(WsError::Capacity(_)))) => {
                    self.refuse(ErrorCode::TooLarge, "handshake message too large")
                        .await;
                    return Err(End::TooLarge);
                }
                Ok(Some(Err(e))) => return Err(End::Transport(e)),
                Ok(Some(Ok(Message::Text(t)))) => break t,
                Ok(Some(Ok(Message::Close(_)))) => return Err(End::ClientClosed),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(_))) => {
                    self.refuse(
                        ErrorCode::AuthRequired,
                        "the first message must be a JSON text `auth` frame",
                    )
                    .await;
                    return Err(End::AuthRequired);
                }
            }
        };
        let (key_id, client_nonce, proof, role, name, batch) =
            match decode_client(&first, hub.config.max_message_bytes) {
                Ok(ClientMsg::Auth {
                    key_id,
                    client_nonce,
                    proof,
                    role,
                    name,
                    batch,
                }) => (key_id, client_nonce, proof, role, name, batch),
                Ok(_) | Err(_) => {
                    self.refuse(
                        ErrorCode::AuthRequired,
                        "authenticate first: answer the challenge with an `auth` message",
                    )
                    .await;
                    return Err(End::AuthRequired);
                }
            };
        if !auth::is_nonce(&client_nonce) || !auth::is_lower_hex(&proof, 32) {
            self.refuse(
                ErrorCode::AuthFailed,
                "client_nonce and proof must each be 64 lowercase hex digits",
            )
            .await;
            return Err(End::AuthFailed);
        }
        // An address that keeps failing waits for its turn before its proof is checked.
        let slot =
            tokio::time::Instant::from_std(hub.throttle.slot(self.peer, std::time::Instant::now()));
        if slot > deadline {
            self.refuse(
                ErrorCode::AuthFailed,
                "too many failed attempts from this address; wait a few seconds",
            )
            .await;
            return Err(End::AuthFailed);
        }
        tokio::time::sleep_until(slot).await;
        let identity = keys::resolve(&hub.config.keys, &key_id);
        let valid = identity.as_ref().is_ok_and(|i| {
            auth::verify_client_proof(&i.secret, &key_id, &nonce, &client_nonce, &proof)
        });
        let Some(identity) = identity.ok().filter(|_| valid) else {
            hub.auth_failures.fetch_add(1, Ordering::Relaxed);
            if let Some(line) = hub.throttle.failed(self.peer, std::time::Instant::now()) {
                tracing::info!(
                    "{line} (last key id tried: {:?})",
                    key_id.chars().take(64).collect::<String>()
                );
            }
            self.send(&auth_failed(
                AuthFailure::Credentials,
                "unknown key id or wrong key",
            ))
            .await;
            return Err(End::AuthFailed);
        };
        hub.throttle.succeeded(self.peer);
        // The proof is right: only now say whether the credentials have run out.
        if let Err(refusal) = keys::check_validity(&identity, &hub.revoked, unix_now()) {
            hub.auth_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("refused: {}", refusal.message);
            self.send(&auth_failed(refusal.reason, &refusal.message))
                .await;
            return Err(End::AuthFailed);
        }
        // A session now: it leaves the waiting connections and takes a session's place.
        self.pending = None;
        if hub.connections.fetch_add(1, Ordering::Relaxed) >= hub.config.max_connections {
            hub.connections.fetch_sub(1, Ordering::Relaxed);
            self.refuse(
                ErrorCode::TooManyConnections,
                "the hub is at max_connections; try again later",
            )
            .await;
            return Err(End::TooManyConnections);
        }
        self._slot = Some(ConnectionSlot(hub.clone()));
        let id = hub.new_session_id();
        tracing::Span::current().record("id", id.0);
        hub.open(id, role, name, identity.grant.trusted(), self.link.clone());
        self.id = Some(id);
        self.joined.store(batch, Ordering::Relaxed);
        tracing::debug!(role = role.as_str(), "authenticated");
        if let Some(token) = &identity.token_id {
            *hub.token_sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(token.clone())
                .or_default() += 1;
            self._token = Some(TokenSession(hub.clone(), token.clone()));
        }
        let proof = auth::hub_proof(&identity.secret, &key_id, &nonce, &client_nonce);
        self.key_id = key_id;
        self.identity = Some(identity);
        self.send(&ServerMsg::Welcome {
            session: id,
            proof,
            inbox: QueueName::inbox(id),
            limits: hub.limits(),
        })
        .await;
        Ok(())
    }

    /// Send an answer now, or behind the answers still waiting for NATS.
    async fn answer(&self, answers: &mut Answers, msg: ServerMsg) {
        if answers.is_empty() {
            self.send(&msg).await;
        } else {
            answers.push_back(Box::pin(std::future::ready(Some(msg))));
        }
    }

    async fn apply_batch(&self, answers: &mut Answers, id: SessionId, batch: &mut Vec<ClientMsg>) {
        if batch.is_empty() {
            return;
        }
        let msgs = std::mem::take(batch);
        if let Some(gw) = self.hub.gateway.clone() {
            for msg in msgs {
                answers.push_back(gw.handle(id, msg).await);
            }
            return;
        }
        let grant = self.identity.as_ref().map(|i| &i.grant);
        let refusal = |q: &QueueName| grant.and_then(|g| g.cancel_refusal(q));
        self.hub
            .apply(Some(id), |b, now| {
                for msg in msgs {
                    b.handle_as(id, msg, now, &refusal);
                }
            })
            .await;
    }

    /// `create_token` or `revoke_token`, from a session whose key has `admin` (checked before).
    async fn token_request(&self, msg: ClientMsg) -> ServerMsg {
        let hub = &self.hub;
        let Some(identity) = &self.identity else {
            return ServerMsg::error(msg.req(), ErrorCode::Forbidden, "not authenticated");
        };
        match msg {
            ClientMsg::CreateToken {
                req,
                rights,
                ttl_ms,
            } => {
                if !(1000..=MAX_TOKEN_TTL_MS).contains(&ttl_ms) {
                    let days = MAX_TOKEN_TTL_MS / 86_400_000;
                    return ServerMsg::error(
                        req,
                        ErrorCode::BadRequest,
                        format!(
                            "ttl_ms must be 1000 (1 s) to {MAX_TOKEN_TTL_MS} ({days} days), got {ttl_ms}"
                        ),
                    );
                }
                if rights.is_empty() {
                    return ServerMsg::error(
                        req,
                        ErrorCode::BadRequest,
                        "a token needs at least one right",
                    );
                }
                if rights.admin {
                    return ServerMsg::error(
                        req,
                        ErrorCode::Forbidden,
                        "a token cannot carry admin; give that key its own entry in the key file",
                    );
                }
                if let Some(missing) = identity.grant.key.missing_from(&rights) {
                    return ServerMsg::error(
                        req,
                        ErrorCode::Forbidden,
                        format!(
                            "this key cannot grant {missing}: a token carries no more than the key that creates it"
                        ),
                    );
                }
                let minted = keys::mint(
                    &self.key_id,
                    &identity.secret,
                    identity.expires,
                    rights,
                    ttl_ms.div_ceil(1000),
                );
                let (token, claims) = match minted {
                    Ok(made) => made,
                    Err(why) => return ServerMsg::error(req, ErrorCode::BadRequest, why),
                };
                let exp = claims.exp;
                tracing::info!(token_id = %claims.id, key_id = %self.key_id, expires = %keys::rfc3339(exp), "token created");
                ServerMsg::Token {
                    req,
                    token,
                    token_id: claims.id,
                    expires: exp,
                }
            }
            ClientMsg::RevokeToken { req, token_id } => {
                if !auth::is_lower_hex(&token_id, taskhub_core::token::ID_BYTES) {
                    return ServerMsg::error(
                        req,
                        ErrorCode::BadRequest,
                        "token_id must be the 16 lowercase hex digits `token create` printed",
                    );
                }
                let now = unix_now();
                let keep_until = now + MAX_TOKEN_TTL_MS / 1000;
                // The list is written and synced before the answer: off the async threads.
                let (store, id) = (hub.clone(), token_id.clone());
                let stored =
                    tokio::task::spawn_blocking(move || store.revoked.revoke(&id, keep_until, now))
                        .await
                        .unwrap_or_else(|e| Err((ErrorCode::StorageUnavailable, e.to_string())));
                if let Err((code, why)) = stored {
                    return ServerMsg::error(req, code, why);
                }
                let closed = hub
                    .token_sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&token_id)
                    .copied()
                    .unwrap_or(0);
                hub.revocations.send_modify(|n| *n += 1);
                tracing::info!(%token_id, key_id = %self.key_id, closed, "token revoked");
                ServerMsg::Revoked {
                    req,
                    token_id,
                    closed: closed as u64,
                }
            }
            other => ServerMsg::error(other.req(), ErrorCode::BadRequest, "not a token request"),
        }
    }

    /// A frame that is not a request. Returns why the session ends, if it does.
    async fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) -> Option<End> {
        match frame {
            Some(Ok(Message::Close(_))) | None => Some(End::ClientClosed),
            Some(Ok(_)) => None, // ping, pong (requests are handled by the caller)
            Some(Err(WsError::Capacity(e))) => {
                let max = self.hub.config.max_message_bytes;
                self.farewell(
                    ErrorCode::TooLarge,
                    &format!("{e}; this hub accepts at most {max} bytes"),
                );
                Some(End::TooLarge)
            }
            Some(Err(e)) => Some(End::Transport(e)),
        }
    }

    async fn serve(&mut self, shutdown: watch::Receiver<bool>) -> End {
        let mut answers = Answers::new();
        let end = self.serve_with(shutdown, &mut answers).await;
        // What the session asked before it ended still happens (with a NATS backend, an ack's
        // result is stored and the task acked only now), before its leases go back. Answers
        // that find no room are dropped: the session is gone.
        let drained = tokio::time::timeout(ANSWERS_AT_END, async {
            while let Some(answer) = answers.next().await {
                // Encoded only while there is room; and a turn for other tasks each time, since
                // answers that are all ready never make this wait.
                if let Some(msg) = answer
                    && self.link.tx.capacity() > 0
                {
                    let _ = self.link.tx.try_send(message(encode_server(&msg)).into());
                }
                tokio::task::yield_now().await;
            }
        });
        if drained.await.is_err() {
            tracing::warn!(
                "answers still waiting for NATS after {} s at the end of the session; dropped",
                ANSWERS_AT_END.as_secs()
            );
        }
        end
    }

    async fn serve_with(
        &mut self,
        mut shutdown: watch::Receiver<bool>,
        answers: &mut Answers,
    ) -> End {
        let Some(id) = self.id else {
            return End::AuthRequired;
        };
        let hub = self.hub.clone();
        let mut ping = tokio::time::interval(hub.config.ping_interval);
        ping.tick().await;
        // The idle check runs twenty times per idle timeout, so a silent session is closed
        // within 5% of it (not up to a whole ping interval late).
        let mut idle_check = tokio::time::interval(
            (hub.config.idle_timeout / 20).max(std::time::Duration::from_millis(50)),
        );
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_seen = tokio::time::Instant::now();
        let kill = self.link.kill.clone();
        // Credentials that run out end the session when they do.
        let expires = self.identity.as_ref().and_then(|i| i.expires);
        let expiry = async {
            match expires {
                Some(exp) => {
                    let left = Duration::from_secs(exp.saturating_sub(unix_now()));
                    tokio::time::sleep(left).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        let token_id = self.identity.as_ref().and_then(|i| i.token_id.clone());
        let mut revocations = hub.revocations.subscribe();
        loop {
            tokio::select! {
                biased;
                () = &mut expiry => {
                    let what = if token_id.is_some() { "token" } else { "key" };
                    let exp = keys::rfc3339(expires.unwrap_or_default());
                    self.last_word_is(&auth_failed(
                        AuthFailure::Expired,
                        &format!("closing: the {what} this session authenticated with expired at {exp}"),
                    ));
                    return End::Expired;
                }
                Ok(()) = revocations.changed(), if token_id.is_some() => {
                    if let Some(token) = token_id.as_deref().filter(|t| hub.revoked.contains(t)) {
                        self.last_word_is(&auth_failed(
                            AuthFailure::Revoked,
                            &format!("closing: the token {token} this session authenticated with was revoked"),
                        ));
                        return End::Revoked;
                    }
                }
                _ = kill.notified() => {
                    self.farewell(ErrorCode::SlowConsumer, "closing: this session did not read its messages fast enough");
                    return End::SlowConsumer;
                }
                _ = shutdown.changed() => {
                    self.farewell(ErrorCode::ShuttingDown, "the hub is shutting down");
                    return End::Shutdown;
                }
                _ = idle_check.tick() => {
                    // A session waiting for answers the hub owes it is not idle.
                    if last_seen.elapsed() >= hub.config.idle_timeout && answers.is_empty() {
                        let secs = hub.config.idle_timeout.as_secs_f64();
                        self.farewell(
                            ErrorCode::IdleTimeout,
                            &format!("closing: nothing heard from this session for {secs} s (the hub's idle timeout)"),
                        );
                        return End::Idle;
                    }
                }
                _ = ping.tick() => {
                    let _ = self.link.tx.try_send(Message::Ping(Default::default()).into());
                }
                Some(answer) = answers.next(), if !answers.is_empty() => {
                    if let Some(msg) = answer {
                        self.send(&msg).await;
                    }
                }
                frame = self.source.next(), if answers.len() < MAX_WAITING_ANSWERS => {
                    last_seen = tokio::time::Instant::now();
                    // Take every frame that has already arrived and apply the requests among them
                    // under one lock: fewer wake-ups and larger writes under load.
                    let mut batch = Vec::new();
                    let mut next = Some(frame);
                    let mut taken = 0;
                    // Bounded by count and by bytes, so a burst of large frames is not all
                    // decoded into memory at once.
                    let mut bytes = 0;
                    while let Some(frame) = next.take() {
                        let max = hub.config.max_message_bytes;
                        // A text frame may hold several requests, one after another.
                        let decoded = match &frame {
                            Some(Ok(Message::Text(text))) => {
                                bytes += text.len();
                                Some(decode_client_frames(text, max))
                            }
                            Some(Ok(Message::Binary(data))) => {
                                bytes += data.len();
                                Some(vec![decode_client_binary(data, max)])
                            }
                            _ => None,
                        };
                        match decoded {
                            Some(requests) => {
                                for request in requests {
                                    match request {
                                        Ok(msg) => {
                                            let refusal = self
                                                .identity
                                                .as_ref()
                                                .and_then(|i| i.grant.refusal(&msg));
                                            if let Some(why) = refusal {
                                                self.apply_batch(answers, id, &mut batch).await;
                                                self.answer(answers, ServerMsg::error(msg.req(), ErrorCode::Forbidden, why)).await;
                                            } else if matches!(msg, ClientMsg::CreateToken { .. } | ClientMsg::RevokeToken { .. }) {
                                                self.apply_batch(answers, id, &mut batch).await;
                                                let answer = self.token_request(msg).await;
                                                self.answer(answers, answer).await;
                                            } else {
                                                batch.push(msg);
                                            }
                                        }
                                        Err(e) => {
                                            self.apply_batch(answers, id, &mut batch).await;
                                            self.answer(answers, e.to_reply()).await;
                                        }
                                    }
                                }
                            }
                            None => {
                                self.apply_batch(answers, id, &mut batch).await;
                                if let Some(end) = self.on_frame(frame).await {
                                    return end;
                                }
                            }
                        }
                        taken += 1;
                        if taken < READ_BATCH && bytes < READ_BATCH_BYTES {
                            next = self.source.next().now_or_never();
                        }
                    }
                    self.apply_batch(answers, id, &mut batch).await;
                }
            }
        }
    }
}
