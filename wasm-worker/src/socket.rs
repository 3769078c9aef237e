//! A browser WebSocket that owns its callbacks: dropping a [`Socket`] detaches them and closes the
//! connection, so nothing leaks and nothing fires afterwards.

use taskhub_core::codec::Frame;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, Event, MessageEvent, WebSocket};

/// What a socket reports.
#[derive(Debug)]
pub(crate) enum SocketEvent {
    Open,
    Text(String),
    /// A binary frame: a message carrying bytes.
    Binary(Vec<u8>),
    Closed(String),
}

pub(crate) struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Socket {
    /// Open `url`; `handler` receives the events. It must not drop this socket from inside a
    /// callback (the driver retires sockets and drops them later).
    pub fn open(url: &str, handler: impl Fn(SocketEvent) + 'static) -> Result<Socket, String> {
        let ws = WebSocket::new(url).map_err(|e| {
            e.as_string()
                .or_else(|| {
                    e.dyn_ref::<js_sys::Error>()
                        .map(|e| String::from(e.message()))
                })
                .unwrap_or_else(|| format!("cannot open {url}"))
        })?;
        let handler = std::rc::Rc::new(handler);
        let h = handler.clone();
        let on_open = Closure::<dyn FnMut(Event)>::new(move |_| h(SocketEvent::Open));
        let h = handler.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let data = e.data();
            if let Some(text) = data.as_string() {
                h(SocketEvent::Text(text));
            } else if let Some(buf) = data.dyn_ref::<js_sys::ArrayBuffer>() {
                h(SocketEvent::Binary(js_sys::Uint8Array::new(buf).to_vec()));
            }
        });
        let h = handler;
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            let reason = match (e.code(), e.reason()) {
                (1006, _) => "hub unreachable".to_string(),
                (code, r) if r.is_empty() => format!("connection closed ({code})"),
                (_, r) => r,
            };
            h(SocketEvent::Closed(reason));
        });
        ws.set_binary_type(BinaryType::Arraybuffer);
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(Socket {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        })
    }

    pub fn send(&self, frame: &Frame) -> Result<(), String> {
        match frame {
            Frame::Text(text) => self.ws.send_with_str(text),
            Frame::Binary(bytes) => self.ws.send_with_u8_array(bytes),
        }
        .map_err(|_| "send failed: the connection is closed".to_string())
    }

    /// Bytes queued by `send` but not yet handed to the network. The browser applies no
    /// backpressure of its own, so callers check this.
    pub fn buffered(&self) -> u32 {
        self.ws.buffered_amount()
    }

    pub fn is_open(&self) -> bool {
        self.ws.ready_state() == WebSocket::OPEN
    }
}

impl Socket {
    /// Detach the callbacks and close now. Safe from inside one of this socket's own callbacks;
    /// the closures themselves are freed when the `Socket` is dropped.
    pub fn shutdown(&self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A driver's one current socket, and the ones it replaced. Late events from a replaced socket
/// are told apart by id. Replaced sockets are shut down at once but freed on a later turn, never
/// inside one of their own callbacks.
#[derive(Default)]
pub(crate) struct Connection {
    current: Option<(u64, Socket)>,
    retired: Vec<Socket>,
    opened: u64,
}

impl Connection {
    /// Open `url`, replacing any current socket; `handler` gets each event with the socket's id.
    pub fn open(
        &mut self,
        url: &str,
        handler: impl Fn(u64, SocketEvent) + 'static,
    ) -> Result<(), String> {
        self.retire();
        self.opened += 1;
        let id = self.opened;
        let socket = Socket::open(url, move |ev| handler(id, ev))?;
        self.current = Some((id, socket));
        Ok(())
    }

    /// Whether `id` names the current socket (not one already replaced or closed).
    pub fn is_current(&self, id: u64) -> bool {
        self.current
            .as_ref()
            .is_some_and(|(current, _)| *current == id)
    }

    pub fn socket(&self) -> Option<&Socket> {
        self.current.as_ref().map(|(_, s)| s)
    }

    /// Close the current socket now; free it later with [`Connection::free_retired`].
    pub fn retire(&mut self) {
        if let Some((_, socket)) = self.current.take() {
            socket.shutdown();
            self.retired.push(socket);
        }
    }

    /// Free retired sockets. Call only from outside their callbacks.
    pub fn free_retired(&mut self) {
        self.retired.clear();
    }
}
