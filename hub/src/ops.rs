//! The operator's endpoints, over plain HTTP on the hub's port (and on `--metrics-listen`, if
//! given):
//!
//! - `GET /healthz`: 200 while the process serves (liveness);
//! - `GET /readyz`: 200 when the hub takes work (not shutting down; the data dir writable, or
//!   NATS connected), else 503 with the reason;
//! - `GET /metrics`: the Prometheus exposition ([`crate::metrics`]). On the hub's own port it needs
//!   `Authorization: Bearer <token>` with the `stats` right (`taskhub token create --stats`);
//!   on `--metrics-listen`, meant for a private address, it needs nothing.

use std::sync::Arc;

use crate::http::{Request, Stream};
use crate::hub::Hub;

const PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// The OpenMetrics text format (which `prometheus-client` writes and Prometheus reads).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Whether `request` is for one of these endpoints.
pub(crate) fn is_ops(request: &Request<'_>) -> bool {
    PATHS.contains(&request.path())
}

/// Requests `--metrics-listen` answers at once; more are closed unanswered.
const MAX_OPS_CONNECTIONS: usize = 64;

/// Serve [`PATHS`] on `listener` (plain HTTP, no token) for as long as the hub runs.
pub(crate) async fn serve_listener(listener: tokio::net::TcpListener, hub: Arc<Hub>) {
    let room = Arc::new(tokio::sync::Semaphore::new(MAX_OPS_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("metrics listener: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = room.clone().try_acquire_owned() else {
            continue;
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut stream = Stream::Plain(stream);
            let head = tokio::time::timeout(
                hub.config.handshake_timeout,
                crate::http::read_head(&mut stream),
            )
            .await;
            let Ok(Ok(crate::http::Head::Whole(head))) = head else {
                return;
            };
            let done = match Request::parse(&head) {
                Ok(r) if is_ops(&r) => answer(stream, &r, &hub, false).await,
                Ok(_) => {
                    let why = "this address serves /metrics, /healthz and /readyz only";
                    crate::http::refuse(stream, "404 Not Found", why, "").await
                }
                Err(why) => crate::http::refuse(stream, "400 Bad Request", why, "").await,
            };
            if let Err(e) = done {
                tracing::debug!("metrics request failed: {e}");
            }
        });
    }
}

/// Answer `request` (one of [`PATHS`]), then close. `guarded`: `/metrics` needs a token.
pub(crate) async fn answer(
    stream: Stream,
    request: &Request<'_>,
    hub: &Arc<Hub>,
    guarded: bool,
) -> std::io::Result<()> {
    let (status, content_type, body, extra) = decide(request, hub, guarded).await;
    let headers = format!("Cache-Control: no-store\r\n{extra}");
    crate::http::respond(
        stream,
        request,
        status,
        content_type,
        &headers,
        body.as_bytes(),
    )
    .await
}

type Answer = (&'static str, &'static str, String, &'static str);

/// What to answer `request` with: status, content type, body, extra headers.
async fn decide(request: &Request<'_>, hub: &Arc<Hub>, guarded: bool) -> Answer {
    if !matches!(request.method, "GET" | "HEAD") {
        return (
            "405 Method Not Allowed",
            TEXT,
            "only GET and HEAD\n".into(),
            "",
        );
    }
    match request.path() {
        "/healthz" => ("200 OK", TEXT, "ok\n".into(), ""),
        "/readyz" => match hub.readiness() {
            Ok(()) => ("200 OK", TEXT, "ready\n".into(), ""),
            Err(why) => ("503 Service Unavailable", TEXT, format!("{why}\n"), ""),
        },
        _ => {
            if guarded && let Err(refused) = may_scrape(request, hub) {
                return refused;
            }
            match hub.metrics().await {
                Ok(snapshot) => ("200 OK", OPENMETRICS, snapshot.encode(), ""),
                Err((_, why)) => ("503 Service Unavailable", TEXT, format!("{why}\n"), ""),
            }
        }
    }
}

/// `/metrics` on the hub's port: a bearer token with the `stats` right.
fn may_scrape(request: &Request<'_>, hub: &Hub) -> Result<(), Answer> {
    let challenge = "WWW-Authenticate: Bearer realm=\"taskhub\"\r\n";
    let Some(token) = request.header("authorization").and_then(|h| {
        h.strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
    }) else {
        return Err((
            "401 Unauthorized",
            TEXT,
            "/metrics needs Authorization: Bearer <token> (a token with the stats right: taskhub \
             token create --stats)\n"
                .into(),
            challenge,
        ));
    };
    let now = crate::storage::unix_ms() / 1000;
    match crate::keys::bearer(&hub.config.keys, &hub.revoked, token.trim(), now) {
        Err(refusal) => Err((
            "401 Unauthorized",
            TEXT,
            format!("the token was refused: {}\n", refusal.message),
            challenge,
        )),
        Ok(identity) if !identity.grant.may_read_stats() => Err((
            "403 Forbidden",
            TEXT,
            "this token lacks the stats right, which /metrics needs\n".into(),
            "",
        )),
        Ok(_) => Ok(()),
    }
}
