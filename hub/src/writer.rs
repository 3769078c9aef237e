//! The hub's writer loop: moves a session's outbox to its socket, writing every message that is
//! ready before each flush, and joining text messages for sessions that asked for `batch`.

use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{Sink, SinkExt};
use taskhub_core::codec::{Frame, JOIN_BYTES};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

/// A frame as a WebSocket message.
pub(crate) fn message(frame: Frame) -> Message {
    match frame {
        Frame::Text(t) => Message::text(t),
        Frame::Binary(b) => Message::binary(b),
    }
}

/// Where a pump takes its messages from: a channel, or one that holds messages back until they may
/// go (the hub's outbox holds a confirmation until what it confirms is stored).
pub(crate) trait Outbox {
    /// The next message, waiting for one; `None` once there will be no more.
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Message>> + Send;
    /// The next message if one may go now.
    fn try_recv(&mut self) -> Option<Message>;
}

impl Outbox for mpsc::Receiver<Message> {
    fn recv(&mut self) -> impl std::future::Future<Output = Option<Message>> + Send {
        mpsc::Receiver::recv(self)
    }

    fn try_recv(&mut self) -> Option<Message> {
        mpsc::Receiver::try_recv(self).ok()
    }
}

/// Send messages from `rx` until it closes or the socket fails, each batch that is ready before
/// one flush; while `joined` is set, text messages that are ready together go out as one
/// frame, newline-separated, up to [`JOIN_BYTES`] (a longer message goes alone). For peers that
/// asked for `batch`: a browser dispatches an event per frame.
pub(crate) async fn pump_joining<S>(
    sink: &mut S,
    rx: &mut impl Outbox,
    joined: &AtomicBool,
) -> Result<(), WsError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    while let Some(first) = rx.recv().await {
        if !joined.load(Ordering::Relaxed) {
            sink.feed(first).await?;
            while let Some(more) = rx.try_recv() {
                sink.feed(more).await?;
            }
            sink.flush().await?;
            continue;
        }
        let mut text = Joined::default();
        let mut next = Some(first);
        while let Some(msg) = next.take().or_else(|| rx.try_recv()) {
            match msg {
                Message::Text(t) if text.fits(t.len()) => text.push(t),
                Message::Text(t) => {
                    if let Some(frame) = text.take() {
                        sink.feed(frame).await?;
                    }
                    text.push(t);
                }
                other => {
                    if let Some(frame) = text.take() {
                        sink.feed(frame).await?;
                    }
                    sink.feed(other).await?;
                }
            }
        }
        if let Some(frame) = text.take() {
            sink.feed(frame).await?;
        }
        sink.flush().await?;
    }
    Ok(())
}

/// Text messages being joined into one frame: the first is kept as it is (no copy when it stays
/// alone).
#[derive(Default)]
enum Joined {
    #[default]
    Empty,
    One(Utf8Bytes),
    Many(String),
}

impl Joined {
    fn len(&self) -> usize {
        match self {
            Joined::Empty => 0,
            Joined::One(t) => t.len(),
            Joined::Many(s) => s.len(),
        }
    }

    fn fits(&self, more: usize) -> bool {
        matches!(self, Joined::Empty) || self.len() + 1 + more <= JOIN_BYTES
    }

    fn push(&mut self, text: Utf8Bytes) {
        *self = match std::mem::take(self) {
            Joined::Empty => Joined::One(text),
            Joined::One(first) => {
                let mut s = String::with_capacity((first.len() + 1 + text.len()) * 2);
                s.push_str(&first);
                s.push('\n');
                s.push_str(&text);
                Joined::Many(s)
            }
            Joined::Many(mut s) => {
                s.push('\n');
                s.push_str(&text);
                Joined::Many(s)
            }
        };
    }

    fn take(&mut self) -> Option<Message> {
        match std::mem::take(self) {
            Joined::Empty => None,
            Joined::One(t) => Some(Message::Text(t)),
            Joined::Many(s) => Some(Message::text(s)),
        }
    }
}
