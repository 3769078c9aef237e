//! Browser tests, run in real headless Chromium by `wasm-pack test --headless --chrome`.
//!
//! The hub tests need a running hub: `TASKHUB_TEST_HUB` (its ws:// URL) and `TASKHUB_TEST_KEY`
//! at compile time. `cargo test -p taskhub-tests --test wasm` starts one and runs these.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use gloo_timers::future::TimeoutFuture;
use serde_json::{Value, json};
use taskhub_core::auth::{ClientHandshake, Secret};
use taskhub_core::codec::{Frame, decode_server_frame, encode_client};
use taskhub_core::{ClientMsg, Payload, QueueName, Role, ServerMsg};
use taskhub_wasm_worker::{BrowserWorker, Meta, outcome_json, run_task};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;
use web_sys::{MessageEvent, WebSocket};

wasm_bindgen_test_configure!(run_in_browser);

fn hub() -> (&'static str, &'static str) {
    match (
        option_env!("TASKHUB_TEST_HUB"),
        option_env!("TASKHUB_TEST_KEY"),
    ) {
        (Some(url), Some(key)) => (url, key),
        _ => panic!(
            "TASKHUB_TEST_HUB and TASKHUB_TEST_KEY must name a running hub at build time; \
             run these through `cargo test -p taskhub-tests --test wasm`"
        ),
    }
}

/// A module Web Worker script URL that loads the hub's own compute.js (same origin as this page,
/// so the browser allows it; compute.js and the wasm come from the hub with CORS).
fn compute_url() -> String {
    let http = hub().0.replacen("ws://", "http://", 1);
    let source = js_sys::Array::of1(&format!("import \"{http}/compute.js\";").into());
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type("text/javascript");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&source, &opts).unwrap();
    web_sys::Url::create_object_url_with_blob(&blob).unwrap()
}

async fn sleep(ms: u32) {
    TimeoutFuture::new(ms).await;
}

/// Collects a BrowserWorker's events.
struct Events {
    seen: Rc<RefCell<Vec<Value>>>,
    _listener: Closure<dyn FnMut(JsValue)>,
}

impl Events {
    fn attach(w: &BrowserWorker) -> Events {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        let listener = Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| {
            let text = js_sys::JSON::stringify(&e).unwrap().as_string().unwrap();
            s.borrow_mut().push(serde_json::from_str(&text).unwrap());
        });
        w.on_event(
            listener
                .as_ref()
                .unchecked_ref::<js_sys::Function>()
                .clone(),
        );
        Events {
            seen,
            _listener: listener,
        }
    }

    /// Wait (up to ~10 s) for an event of `kind`.
    async fn wait(&self, kind: &str) -> Value {
        for _ in 0..200 {
            if let Some(e) = self.seen.borrow().iter().find(|e| e["type"] == kind) {
                return e.clone();
            }
            sleep(50).await;
        }
        panic!("no {kind} event; saw {:?}", self.seen.borrow());
    }
}

/// A producer speaking the protocol through the core's handshake and codec.
struct Producer {
    ws: WebSocket,
    inbox: Rc<RefCell<VecDeque<Frame>>>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    queue_name: QueueName,
}

impl Producer {
    async fn connect() -> Producer {
        let (url, key) = hub();
        let ws = WebSocket::new(url).unwrap();
        ws.set_binary_type(web_sys::BinaryType::Arraybuffer);
        let inbox = Rc::new(RefCell::new(VecDeque::new()));
        let i = inbox.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let data = e.data();
            let frame = match data.as_string() {
                Some(text) => Frame::Text(text),
                None => Frame::Binary(js_sys::Uint8Array::new(&data).to_vec()),
            };
            i.borrow_mut().push_back(frame);
        });
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let mut p = Producer {
            ws,
            inbox,
            _on_message: on_message,
            queue_name: QueueName::new("x").unwrap(),
        };
        let mut hs =
            ClientHandshake::new("default", Secret::new(key), Role::Producer, None, [7; 32]);
        let challenge = p.next().await;
        p.send(&hs.answer(&challenge).unwrap());
        let welcome = p.next().await;
        hs.finish(&welcome).unwrap();
        let ServerMsg::Welcome { inbox, .. } = welcome else {
            panic!("{welcome:?}")
        };
        p.queue_name = inbox;
        p
    }

    fn send(&self, msg: &ClientMsg) {
        match encode_client(msg) {
            Frame::Text(t) => self.ws.send_with_str(&t).unwrap(),
            Frame::Binary(b) => self.ws.send_with_u8_array(&b).unwrap(),
        }
    }

    async fn next(&mut self) -> ServerMsg {
        for _ in 0..600 {
            if let Some(t) = self.inbox.borrow_mut().pop_front() {
                return decode_server_frame(&t).unwrap();
            }
            sleep(50).await;
        }
        panic!("the hub said nothing for 30 s");
    }

    /// Put tasks on `queue` with this session's inbox as reply_to; returns the replies in order.
    async fn submit(&mut self, queue: &str, kind: &str, payloads: Vec<Value>) -> Vec<Value> {
        let replies = self
            .submit_payloads(
                queue,
                kind,
                payloads.into_iter().map(Payload::Json).collect(),
            )
            .await;
        replies
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    }

    /// [`Producer::submit`] for payloads of either sort; the replies as they came.
    async fn submit_payloads(
        &mut self,
        queue: &str,
        kind: &str,
        payloads: Vec<Payload>,
    ) -> Vec<taskhub_core::protocol::Reply> {
        let n = payloads.len();
        for payload in payloads {
            self.send(&ClientMsg::Put {
                req: None,
                queue: QueueName::new(queue).unwrap(),
                payload,
                kind: Some(kind.into()),
                reply_to: Some(self.queue_name.clone()),
                max_attempts: None,
                dedup_id: None,
                schedule: Default::default(),
            });
        }
        let mut ids = Vec::new();
        let mut replies = std::collections::HashMap::new();
        while ids.len() < n || replies.len() < n {
            match self.next().await {
                ServerMsg::Queued { task, .. } => ids.push(task),
                ServerMsg::Reply(r) => {
                    replies.insert(r.id, r);
                }
                other => panic!("{other:?}"),
            }
        }
        ids.iter().map(|id| replies[id].clone()).collect()
    }
}

/// `runTask`'s outcome text, parsed, and its binary result, if any.
fn ran(out: js_sys::Object) -> (Value, Option<Vec<u8>>) {
    let text = js_sys::Reflect::get(&out, &"out".into()).unwrap();
    let bytes = js_sys::Reflect::get(&out, &"bytes".into()).unwrap();
    (
        serde_json::from_str(&text.as_string().unwrap()).unwrap(),
        bytes
            .dyn_ref::<js_sys::Uint8Array>()
            .map(js_sys::Uint8Array::to_vec),
    )
}

#[wasm_bindgen_test]
fn handlers_run_in_wasm() {
    let text = |s: &str| JsValue::from(s);
    let (out, _) = ran(run_task(
        Some("square".into()),
        text("3411"),
        None,
        None,
        None,
        None,
        None,
    ));
    assert_eq!(out, json!({"ok": true, "result": "3411 * 3411 = 11634921"}));
    let (out, _) = ran(run_task(
        Some("primes".into()),
        text("1000000"),
        None,
        None,
        None,
        None,
        None,
    ));
    assert_eq!(out["result"], json!(78_498));
    let (out, _) = ran(run_task(
        Some("nope".into()),
        text("1"),
        None,
        None,
        None,
        None,
        None,
    ));
    assert_eq!(
        (out["ok"].as_bool(), out["retry"].as_bool()),
        (Some(false), Some(false))
    );
    // A binary payload arrives as a Uint8Array; a binary result leaves as one.
    let bytes = || js_sys::Uint8Array::from(&[0u8, 159, 255][..]).into();
    let (out, result) = ran(run_task(
        Some("echo".into()),
        bytes(),
        None,
        None,
        None,
        None,
        None,
    ));
    assert_eq!(
        (out, result),
        (json!({"ok": true, "binary": true}), Some(vec![0, 159, 255]))
    );
    let (out, _) = ran(run_task(
        Some("square".into()),
        bytes(),
        None,
        None,
        None,
        None,
        None,
    ));
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("takes a JSON payload"),
        "{out}"
    );
}

#[wasm_bindgen_test]
fn users_handlers_run_in_wasm_with_state_failures_and_waits() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use taskhub_core::handlers::{Failure, Handlers, Outcome};
    let count = AtomicU64::new(0);
    let h = Handlers::new()
        .light("count", move |_: &Value| {
            json!(count.fetch_add(1, Ordering::Relaxed) + 1)
        })
        .light("nap", |p: &Value| Outcome::Wait {
            ms: 30,
            then: p.clone(),
        })
        .light("flaky", |_: &Value| -> Result<Value, String> {
            Err("later".into())
        })
        .heavy("reject", |_: &Value| -> Result<Value, Failure> {
            Err(Failure::permanent("never"))
        });
    let meta = Meta {
        id: taskhub_core::TaskId(1),
        attempt: 1,
        session: None,
        last_error: None,
        progress: None,
    };
    let run = |kind: &str, payload: &str| outcome_json(&h, Some(kind), payload, meta.clone()).0;
    assert_eq!(run("count", "null"), json!({"ok": true, "result": 1}));
    assert_eq!(run("count", "null"), json!({"ok": true, "result": 2}));
    assert_eq!(
        run("nap", "5"),
        json!({"ok": true, "result": 5, "wait_ms": 30})
    );
    assert_eq!(
        run("flaky", "1"),
        json!({"ok": false, "error": "later", "retry": true})
    );
    assert_eq!(
        run("reject", "1"),
        json!({"ok": false, "error": "never", "retry": false})
    );
}

#[wasm_bindgen_test]
async fn the_handshake_works_against_a_real_hub_and_a_wrong_key_is_named() {
    let (url, key) = hub();
    let good = BrowserWorker::new(url.into(), key.into(), "wasm-idle", 1, compute_url()).unwrap();
    let events = Events::attach(&good);
    good.start().unwrap();
    let connected = events.wait("connected").await;
    assert!(connected["session"].as_u64().unwrap() > 0);

    let bad = BrowserWorker::new(
        url.into(),
        "not-the-key".into(),
        "wasm-idle",
        1,
        compute_url(),
    )
    .unwrap();
    let bad_events = Events::attach(&bad);
    bad.start().unwrap();
    let failed = bad_events.wait("failed").await;
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{failed}"
    );
    let status = bad.status();
    let state = js_sys::Reflect::get(&status, &"state".into()).unwrap();
    assert_eq!(state.as_string().as_deref(), Some("failed"));
    wasm_bindgen_futures::JsFuture::from(good.stop())
        .await
        .unwrap();
}

#[wasm_bindgen_test]
async fn the_web_worker_pool_runs_tasks_and_the_page_stays_responsive() {
    let (url, key) = hub();
    let w = BrowserWorker::new(url.into(), key.into(), "wasm-pool", 2, compute_url()).unwrap();
    let events = Events::attach(&w);
    w.start().unwrap();
    events.wait("connected").await;
    let mut p = Producer::connect().await;

    let replies = p
        .submit("wasm-pool", "square", (1..=20).map(|n| json!(n)).collect())
        .await;
    for (n, r) in (1..=20).zip(&replies) {
        assert_eq!(r["result"], json!(format!("{n} * {n} = {}", n * n)), "{r}");
    }

    // Heavy tasks run in the Web Workers: while they do, the page's own timers still fire on time.
    for _ in 0..2 {
        p.send(&ClientMsg::Put {
            req: None,
            queue: QueueName::new("wasm-pool").unwrap(),
            payload: json!(100_000_000).into(),
            kind: Some("primes".into()),
            reply_to: Some(p.queue_name.clone()),
            max_attempts: None,
            dedup_id: None,
            schedule: Default::default(),
        });
    }
    // `tasks` events count tasks by kind, per turn.
    let tally = |what: &str| -> u64 {
        events
            .seen
            .borrow()
            .iter()
            .filter(|e| e["type"] == "tasks")
            .filter_map(|e| e[what]["primes"].as_u64())
            .sum()
    };
    while tally("started") < 2 {
        sleep(10).await;
    }
    let mut worst = 0.0f64;
    for _ in 0..10 {
        let t = js_sys::Date::now();
        sleep(0).await;
        worst = worst.max(js_sys::Date::now() - t);
    }
    let finished = tally("done") + tally("failed");
    assert_eq!(finished, 0, "primes finished too fast to tell; raise n");
    assert!(
        worst < 250.0,
        "the page froze for {worst} ms while tasks ran"
    );
    let mut done = 0;
    while done < 2 {
        if let ServerMsg::Reply(r) = p.next().await {
            assert_eq!(r.result, Some(json!(5_761_455).into()));
            done += 1;
        }
    }
    wasm_bindgen_futures::JsFuture::from(w.stop())
        .await
        .unwrap();
}

#[wasm_bindgen_test]
async fn a_tab_takes_and_returns_bytes_without_base64() {
    let (url, key) = hub();
    let w = BrowserWorker::new(url.into(), key.into(), "wasm-bytes", 2, compute_url()).unwrap();
    let events = Events::attach(&w);
    w.start().unwrap();
    events.wait("connected").await;
    let mut p = Producer::connect().await;
    // Every byte value, and a payload big enough to span many socket reads.
    let all: Vec<u8> = (0..=255u8).collect();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let replies = p
        .submit_payloads(
            "wasm-bytes",
            "echo",
            vec![Payload::from(all.clone()), Payload::from(big.clone())],
        )
        .await;
    assert_eq!(
        replies[0]
            .result
            .as_ref()
            .and_then(Payload::bytes)
            .map(|b| b.to_vec()),
        Some(all)
    );
    assert_eq!(
        replies[1]
            .result
            .as_ref()
            .and_then(Payload::bytes)
            .map(|b| b.to_vec()),
        Some(big)
    );
    // A handler that reads bytes and answers JSON: the SHA-256 of "abc".
    let digest = p
        .submit_payloads("wasm-bytes", "sha256", vec![Payload::from(&b"abc"[..])])
        .await;
    assert_eq!(
        digest[0].result,
        Some(json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad").into())
    );
    wasm_bindgen_futures::JsFuture::from(w.stop())
        .await
        .unwrap();
}
