//! Opening a WebSocket to the hub, and moving frames from a channel to a socket.

use std::time::Duration;

use futures_util::{Sink, SinkExt};
use taskhub_core::codec::Frame;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client-side WebSocket.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest frame a client accepts from the hub.
pub const MAX_INBOUND_BYTES: usize = 64 << 20;

/// Connect to `url` within `timeout`. Errors read like
/// `cannot connect to ws://127.0.0.1:7878: connection refused (is taskhub serve running?)`.
pub async fn connect(url: &str, timeout: Duration) -> Result<WsStream, String> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_INBOUND_BYTES))
        .max_frame_size(Some(MAX_INBOUND_BYTES));
    let attempt = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let why = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((ws, _response))) => return Ok(ws),
        Err(_) => format!("no answer within {} s", timeout.as_secs_f32()),
        Ok(Err(WsError::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is taskhub serve running?)".to_string()
        }
        Ok(Err(WsError::Io(e))) => e.to_string(),
        Ok(Err(WsError::Url(e))) => format!("bad hub URL ({e}); expected ws://HOST:PORT"),
        Ok(Err(e)) => e.to_string(),
    };
    Err(format!("cannot connect to {url}: {why}"))
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
