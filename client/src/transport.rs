//! Opening a WebSocket to the hub, and moving frames from a channel to a socket.

use std::path::Path;
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use taskhub_core::codec::Frame;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::ClientError;

/// A client-side WebSocket.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest frame a client accepts from the hub.
pub const MAX_INBOUND_BYTES: usize = 64 << 20;

/// Connect to `url` (`ws://` or `wss://`) within `timeout`. A `wss://` hub's certificate must
/// be signed by `ca` (a PEM file) when given, else by a CA the system trusts. Errors read like
/// `cannot connect to ws://127.0.0.1:7878: connection refused (is taskhub serve running?)`, and
/// their variant says which of refused, timed out or another failure it was.
pub async fn connect(
    url: &str,
    timeout: Duration,
    ca: Option<&Path>,
) -> Result<WsStream, ClientError> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_INBOUND_BYTES))
        .max_frame_size(Some(MAX_INBOUND_BYTES));
    let secure = url.starts_with("wss://");
    let connector = if secure {
        let tls = crate::tls::client_config(ca).map_err(|message| ClientError::Connect {
            url: url.to_string(),
            message,
            source: None,
        })?;
        Connector::Rustls(tls)
    } else {
        Connector::Plain
    };
    let attempt =
        tokio_tungstenite::connect_async_tls_with_config(url, Some(config), true, Some(connector));
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Err(_) => Err(ClientError::TimedOut {
            url: url.to_string(),
            after: timeout,
        }),
        Ok(Err(WsError::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(ClientError::Refused {
                url: url.to_string(),
                source: e,
            })
        }
        Ok(Err(e)) => Err(ClientError::Connect {
            url: url.to_string(),
            message: explain(&e, secure),
            source: Some(Box::new(e)),
        }),
    }
}

/// What a failed connect means, and what to do about it.
fn explain(e: &WsError, secure: bool) -> String {
    use std::io::ErrorKind;
    match e {
        // A plain hub closes a TLS handshake at once.
        WsError::Io(e)
            if secure
                && matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                ) =>
        {
            format!(
                "the hub closed the connection during the TLS handshake ({e}); if it serves plain \
             WebSockets (no --tls-cert), use ws://"
            )
        }
        // tokio-rustls reports TLS errors as I/O errors wrapping rustls's.
        WsError::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => {
            explain_tls(&e.to_string())
        }
        WsError::Io(e) => e.to_string(),
        WsError::Tls(e) => explain_tls(&e.to_string()),
        WsError::Url(e) => format!("bad hub URL ({e}); expected ws://HOST:PORT or wss://HOST:PORT"),
        WsError::Http(response) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .filter(|b| !b.is_empty());
            match body {
                Some(body) => format!("the hub answered {}: {body}", response.status()),
                None => format!("the hub answered {}", response.status()),
            }
        }
        e => e.to_string(),
    }
}

fn explain_tls(e: &str) -> String {
    if e.contains("UnknownIssuer") || e.contains("unknown issuer") {
        format!(
            "TLS: the hub's certificate is not signed by a CA this client trusts ({e}); pass \
             --ca FILE with the CA that signed it"
        )
    } else if e.contains("NotValidForName") || e.contains("not valid for name") {
        format!("TLS: the hub's certificate does not name the host in the URL ({e})")
    } else if e.contains("corrupt message") || e.contains("InvalidContentType") {
        format!(
            "TLS: the hub did not answer in TLS ({e}); if it serves plain WebSockets (no \
             --tls-cert), use ws://"
        )
    } else {
        format!("TLS: {e}")
    }
}

/// A frame as a WebSocket message.
pub fn message(frame: Frame) -> Message {
    match frame {
        Frame::Text(t) => Message::text(t),
        Frame::Binary(b) => Message::binary(b),
    }
}

/// Send frames from `rx` until it closes or the socket fails, writing every frame that is already
/// waiting before each flush.
pub async fn pump<S>(sink: &mut S, rx: &mut mpsc::Receiver<Message>) -> Result<(), WsError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    while let Some(first) = rx.recv().await {
        sink.feed(first).await?;
        while let Ok(more) = rx.try_recv() {
            sink.feed(more).await?;
        }
        sink.flush().await?;
    }
    Ok(())
}
