//! [`HubMonitor`]: a dashboard's session. It authenticates with the shared core's handshake and
//! asks the hub for `stats` on an interval, handing each answer to the page. Given several hubs
//! (comma-separated), it moves to the next after a failed or lost connection, as the tab's worker
//! does: every hub on one NATS backend shows the same system.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use gloo_timers::callback::{Interval, Timeout};
use js_sys::Function;
use serde_json::{Value, json};
use taskhub_core::auth::{ClientHandshake, Secret};
use taskhub_core::codec::{decode_server, encode_client};
use taskhub_core::{ClientMsg, Role, ServerMsg};
use wasm_bindgen::prelude::*;

use crate::driver::{entropy, js_event};
use crate::socket::{Connection, SocketEvent};

/// Wait before reconnecting after the hub went away.
const RECONNECT_MS: u32 = 2_000;

struct Inner {
    /// The hubs to try, in turn.
    hubs: taskhub_core::HubList,
    key_id: String,
    key: Secret,
    me: Weak<RefCell<Inner>>,
    conn: Connection,
    handshake: Option<ClientHandshake>,
    every_ms: u32,
    ticker: Option<Interval>,
    reconnect: Option<Timeout>,
    listener: Option<Function>,
    failed: bool,
    /// The last request id an action used (stats go without one).
    last_req: u64,
}

impl Inner {
    fn connect(&mut self, out: &mut Vec<JsValue>) {
        let me = self.me.clone();
        let url = self.hubs.current().to_string();
        let opened = self.conn.open(&url, move |id, ev| {
            if let Some(inner) = me.upgrade() {
                on_socket(&inner, id, ev);
            }
        });
        match opened {
            Ok(()) => {
                self.handshake = Some(ClientHandshake::new(
                    self.key_id.clone(),
                    self.key.clone(),
                    Role::Dashboard,
                    None,
                    entropy(),
                ));
                out.push(js_event(json!({"type": "state", "state": "connecting"})));
            }
            Err(reason) => self.lost(&reason, out),
        }
    }

    /// The connection failed or was lost: the next attempt goes to the next hub of the list.
    fn lost(&mut self, reason: &str, out: &mut Vec<JsValue>) {
        self.hubs.advance();
        self.conn.retire();
        self.ticker = None;
        self.handshake = None;
        if self.failed {
            return;
        }
        out.push(js_event(
            json!({"type": "state", "state": "retrying", "message": reason,
                                 "in_ms": RECONNECT_MS}),
        ));
        let me = self.me.clone();
        self.reconnect = Some(Timeout::new(RECONNECT_MS, move || {
            if let Some(inner) = me.upgrade() {
                with(&inner, |i, out| i.connect(out));
            }
        }));
    }

    fn send(&self, msg: &ClientMsg) {
        if let Some(s) = self.conn.socket() {
            let _ = s.send(&encode_client(msg));
        }
    }

    fn on_text(&mut self, text: &str, out: &mut Vec<JsValue>) {
        let Ok(msg) = decode_server(text) else {
            return;
        };
        if let Some(hs) = &mut self.handshake {
            let step = match &msg {
                ServerMsg::Challenge { .. } => hs.answer(&msg).map(Some),
                _ => hs.finish(&msg).map(|()| None),
            };
            match step {
                Ok(Some(auth)) => self.send(&auth),
                Ok(None) => {
                    self.handshake = None;
                    let hub = self.hubs.current().to_string();
                    out.push(js_event(
                        json!({"type": "state", "state": "connected", "hub": hub}),
                    ));
                    self.send(&ClientMsg::Stats { req: None });
                    let me = self.me.clone();
                    self.ticker = Some(Interval::new(self.every_ms, move || {
                        if let Some(inner) = me.upgrade() {
                            with(&inner, |i, _| i.send(&ClientMsg::Stats { req: None }));
                        }
                    }));
                }
                Err(e) => {
                    self.failed = true;
                    out.push(js_event(json!({"type": "state", "state": "failed",
                                             "message": e.to_string()})));
                    self.lost("", out);
                }
            }
            return;
        }
        if let Some(req) = msg.req() {
            // The answer to an action of the page's (stats go without a request id).
            let answer = serde_json::to_value(&msg).unwrap_or(Value::Null);
            out.push(js_event(
                json!({"type": "answer", "req": req, "answer": answer}),
            ));
            return;
        }
        if let ServerMsg::Stats { stats, .. } = msg {
            let stats = serde_json::to_value(stats).unwrap_or(Value::Null);
            out.push(js_event(json!({"type": "stats", "stats": stats})));
        }
    }
}

fn with(inner: &Rc<RefCell<Inner>>, f: impl FnOnce(&mut Inner, &mut Vec<JsValue>)) {
    let (events, listener) = {
        let Ok(mut i) = inner.try_borrow_mut() else {
            return;
        };
        i.conn.free_retired();
        let mut out = Vec::new();
        f(&mut i, &mut out);
        (out, i.listener.clone())
    };
    if let Some(f) = listener {
        for e in events {
            let _ = f.call1(&JsValue::NULL, &e);
        }
    }
}

fn on_socket(inner: &Rc<RefCell<Inner>>, id: u64, ev: SocketEvent) {
    with(inner, |i, out| {
        if !i.conn.is_current(id) {
            return;
        }
        match ev {
            SocketEvent::Open => {}
            SocketEvent::Text(t) => i.on_text(&t, out),
            SocketEvent::Binary(_) => {} // only tasks carry bytes; a monitor takes none
            SocketEvent::Closed(reason) => i.lost(&reason, out),
        }
    });
}

/// A live view of a hub for dashboards: `new HubMonitor(url, key)`, `onUpdate(f)`,
/// `start(everyMs)`. Updates are `{type: "state", state, message?, hub?}` (`hub`: the URL it
/// connected to), `{type: "stats", stats}`, and `{type: "answer", req, answer}` for the page's
/// actions (`deadLetters`), `answer` being the hub's message (an `error` one too).
/// `url` may list several hubs, comma-separated: after a failed or lost connection the next one
/// is tried.
#[wasm_bindgen]
pub struct HubMonitor {
    inner: Rc<RefCell<Inner>>,
}

#[wasm_bindgen]
impl HubMonitor {
    #[wasm_bindgen(constructor)]
    pub fn new(hub_url: String, key: String) -> Result<HubMonitor, JsError> {
        if key.is_empty() {
            return Err(JsError::new("no token: the link must carry #token=..."));
        }
        let (key_id, key) =
            taskhub_core::token::key_or_token(&key).map_err(|e| JsError::new(&e.to_string()))?;
        let inner = Rc::new_cyclic(|me| {
            RefCell::new(Inner {
                hubs: taskhub_core::HubList::new(&hub_url),
                key_id,
                key,
                me: me.clone(),
                conn: Connection::default(),
                handshake: None,
                every_ms: 1_000,
                ticker: None,
                reconnect: None,
                listener: None,
                failed: false,
                last_req: 0,
            })
        });
        Ok(HubMonitor { inner })
    }

    #[wasm_bindgen(js_name = onUpdate)]
    pub fn on_update(&self, listener: Function) {
        if let Ok(mut i) = self.inner.try_borrow_mut() {
            i.listener = Some(listener);
        }
    }

    /// Act on `queue`'s dead letters: `"list"` (the oldest 100), `"requeue"` (all of them, back
    /// on the queue) or `"purge"` (dropped). Returns the request id its `answer` update carries.
    /// The session's token needs the rights (`get` on `<queue>.dead`, and `put` on the queue
    /// to requeue, `admin` to purge); without them the answer is a `forbidden` error.
    #[wasm_bindgen(js_name = deadLetters)]
    pub fn dead_letters(&self, action: &str, queue: &str) -> Result<f64, JsError> {
        let queue =
            taskhub_core::QueueName::new(queue).map_err(|e| JsError::new(&e.to_string()))?;
        let mut i = self
            .inner
            .try_borrow_mut()
            .map_err(|_| JsError::new("busy"))?;
        if i.handshake.is_some() || i.conn.socket().is_none() {
            return Err(JsError::new("not connected to the hub"));
        }
        i.last_req += 1;
        let req = Some(i.last_req);
        let msg = match action {
            "list" => ClientMsg::DeadList {
                req,
                queue,
                limit: None,
            },
            "requeue" => ClientMsg::DeadRequeue {
                req,
                queue,
                ids: None,
            },
            "purge" => ClientMsg::DeleteQueue {
                req,
                queue: queue.dead_letter(),
            },
            other => {
                return Err(JsError::new(&format!(
                    "unknown action {other:?}: list, requeue or purge"
                )));
            }
        };
        i.send(&msg);
        Ok(i.last_req as f64)
    }

    /// Connect and ask for stats every `every_ms` milliseconds.
    pub fn start(&self, every_ms: u32) {
        with(&self.inner, |i, out| {
            i.every_ms = every_ms.max(100);
            if i.conn.socket().is_none() {
                i.connect(out);
            }
        });
    }
}

impl std::fmt::Debug for HubMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubMonitor")
    }
}
