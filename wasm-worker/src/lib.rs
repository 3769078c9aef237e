//! taskhub's browser worker: the same worker state machine and handlers as the native worker,
//! driven by the browser's WebSocket and timers, with compute in dedicated Web Workers.
//!
//! # Layout
//!
//! - `socket`: an owned browser WebSocket whose callbacks live and die with it, and `Connection`,
//!   the current one plus those it replaced (never freed inside their own callbacks).
//! - `pool`: a pool of dedicated Web Workers that run task handlers off the page's thread.
//! - `driver`: `BrowserWorker`, the JS-facing worker: feeds the state machine, drains it.
//! - `monitor`: `HubMonitor`, a dashboard's authenticated session polling `stats`.
//! - [`policy`]: when a tab works (`when=visible|always`), from its visibility and battery.
//! - [`run_task`]: the handler entry point the pool's Web Workers call; [`install`] replaces the
//!   built-in handlers with a bundle's (`taskhub_native_worker::browser_bundle!`).

#[cfg(target_arch = "wasm32")]
mod driver;
#[cfg(target_arch = "wasm32")]
mod monitor;
pub mod policy;
#[cfg(target_arch = "wasm32")]
mod pool;
#[cfg(target_arch = "wasm32")]
mod socket;

#[cfg(target_arch = "wasm32")]
pub use driver::BrowserWorker;
#[cfg(target_arch = "wasm32")]
pub use monitor::HubMonitor;

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{Value, json};
use taskhub_core::handlers::{Handlers, Input, Outcome, Reporter};
use taskhub_core::{Payload, SessionId, TaskId};
use wasm_bindgen::prelude::*;

static INSTALLED: OnceLock<Handlers> = OnceLock::new();
/// The message of the last panic in this instance, for [`take_panic`].
static LAST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Make `handlers` the ones [`run_task`] runs in this wasm instance. The first call wins; without
/// one, the built-in kinds run. `taskhub_native_worker::browser_bundle!` calls this from the export
/// `taskhubInstall`, which the compute Web Worker calls once after loading a bundle.
pub fn install(handlers: Handlers) -> bool {
    keep_panic_messages();
    INSTALLED.set(handlers).is_ok()
}

fn registry() -> &'static Handlers {
    keep_panic_messages();
    INSTALLED.get_or_init(Handlers::builtins)
}

/// A panic in wasm32 aborts: the caller sees a trap (`unreachable`) and nothing else. This hook
/// runs first and keeps the message for [`take_panic`].
fn keep_panic_messages() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| info.to_string());
            if let Ok(mut last) = LAST_PANIC.lock() {
                *last = Some(message);
            }
        }));
    });
}

/// The message of a panic that trapped this instance since the last call, if any. The compute
/// Web Worker reports it as the task's failure and then loads a fresh instance.
#[wasm_bindgen(js_name = taskhubTakePanic)]
pub fn take_panic() -> Option<String> {
    LAST_PANIC.lock().ok().and_then(|mut p| p.take())
}

/// Run the handler for `kind` on a payload: JSON text, or a `Uint8Array` for a binary one.
/// Returns `{out, bytes, wait_ms}`: `out` is the outcome as JSON text, `{"ok": true, "result": ..}`,
/// `{"ok": true, "result": .., "wait_ms": n}` for handlers that wait (the caller waits `n` ms
/// with its own timer, then reports), `{"ok": true, "binary": true}` for a binary result (then in
/// `bytes`, a `Uint8Array`), or `{"ok": false, "error": "..", "retry": bool}`; `wait_ms` repeats
/// the wait, if any, so the caller need not parse `out`. `id`, `attempt`, `session` and
/// `last_error` describe the task to handlers that want them (0 or absent when unknown);
/// `progress(fraction, message)`, when given, is called with the handler's progress reports.
#[wasm_bindgen(js_name = runTask)]
pub fn run_task(
    kind: Option<String>,
    payload: JsValue,
    id: Option<f64>,
    attempt: Option<u32>,
    session: Option<f64>,
    last_error: Option<String>,
    progress: Option<js_sys::Function>,
) -> js_sys::Object {
    let progress = progress.map(|f| -> ProgressFn {
        std::rc::Rc::new(move |fraction: f64, message: Option<&str>| {
            let message = message.map_or(JsValue::NULL, JsValue::from);
            let _ = f.call2(&JsValue::NULL, &fraction.into(), &message);
        })
    });
    let meta = Meta {
        id: TaskId(id.unwrap_or(0.0) as u64),
        attempt: attempt.unwrap_or(1),
        session: session.filter(|s| *s > 0.0).map(|s| SessionId(s as u64)),
        last_error,
        progress,
    };
    let (out, bytes) = match payload.as_string() {
        Some(text) => outcome_json(registry(), kind.as_deref(), &text, meta),
        None => match payload.dyn_into::<js_sys::Uint8Array>() {
            Ok(b) => outcome(
                registry(),
                kind.as_deref(),
                &Payload::from(b.to_vec()),
                meta,
            ),
            Err(_) => (
                json!({"ok": false, "error": "payload is neither JSON text nor a Uint8Array", "retry": false}),
                None,
            ),
        },
    };
    let result = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&result, &"out".into(), &out.to_string().into());
    if let Some(ms) = out.get("wait_ms").and_then(Value::as_u64) {
        let _ = js_sys::Reflect::set(&result, &"wait_ms".into(), &(ms as f64).into());
    }
    if let Some(b) = bytes {
        let _ = js_sys::Reflect::set(&result, &"bytes".into(), &js_sys::Uint8Array::from(&b[..]));
    }
    result
}

/// The kinds this instance runs, as JSON text: `[{"kind": "square", "heavy": false}, ...]`.
#[wasm_bindgen(js_name = taskhubKinds)]
pub fn kinds() -> String {
    let kinds: Vec<Value> = registry()
        .kinds()
        .map(|(kind, heavy)| json!({"kind": kind, "heavy": heavy}))
        .collect();
    Value::Array(kinds).to_string()
}

/// Where a handler's progress reports go, in a [`Meta`].
pub type ProgressFn = std::rc::Rc<dyn Fn(f64, Option<&str>)>;

/// Which task a [`run_task`] call is for.
#[derive(Clone)]
pub struct Meta {
    pub id: TaskId,
    pub attempt: u32,
    pub session: Option<SessionId>,
    pub last_error: Option<String>,
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("session", &self.session)
            .field("last_error", &self.last_error)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// The pure part of [`run_task`] for a JSON payload, testable natively.
pub fn outcome_json(
    handlers: &Handlers,
    kind: Option<&str>,
    payload_json: &str,
    meta: Meta,
) -> (Value, Option<Bytes>) {
    match serde_json::from_str::<Value>(payload_json) {
        Ok(v) => outcome(handlers, kind, &Payload::Json(v), meta),
        Err(e) => (
            json!({"ok": false, "error": format!("payload is not JSON: {e}"), "retry": false}),
            None,
        ),
    }
}

/// The pure part of [`run_task`]: the outcome as JSON, and a binary result's bytes.
pub fn outcome(
    handlers: &Handlers,
    kind: Option<&str>,
    payload: &Payload,
    meta: Meta,
) -> (Value, Option<Bytes>) {
    let ran = match kind {
        Some(kind) => handlers.run(&Input {
            id: meta.id,
            kind,
            payload,
            attempt: meta.attempt,
            last_error: meta.last_error.as_deref(),
            session: meta.session,
            cancellation: None,
            reporter: meta.progress.as_deref().map(Reporter),
        }),
        None => handlers.run_task(meta.id, None, payload, meta.attempt, None, meta.session),
    };
    match ran {
        Ok(Outcome::Done(v)) => (json!({"ok": true, "result": v}), None),
        Ok(Outcome::Bytes(b)) => (json!({"ok": true, "binary": true}), Some(b)),
        Ok(Outcome::Wait { ms, then }) => {
            (json!({"ok": true, "result": then, "wait_ms": ms}), None)
        }
        Err(f) => {
            let mut out = json!({"ok": false, "error": f.message, "retry": f.retry});
            if let Some(wait) = f.retry_after {
                out["retry_after_ms"] = json!(taskhub_core::time::millis_of(wait));
            }
            (out, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: Meta = Meta {
        id: TaskId(1),
        attempt: 1,
        session: None,
        last_error: None,
        progress: None,
    };

    fn outcome(kind: Option<&str>, payload: &str) -> Value {
        outcome_json(&Handlers::builtins(), kind, payload, META.clone()).0
    }

    #[test]
    fn outcomes_are_reported_as_json() {
        assert_eq!(
            outcome(Some("square"), "12"),
            json!({"ok": true, "result": "12 * 12 = 144"})
        );
        assert_eq!(
            outcome(Some("sleep"), "5"),
            json!({"ok": true, "result": {"slept_ms": 5}, "wait_ms": 5})
        );
        let v = outcome(Some("nope"), "1");
        assert_eq!(
            (v["ok"].as_bool(), v["retry"].as_bool()),
            (Some(false), Some(false))
        );
        assert_eq!(outcome(Some("echo"), "{oops")["ok"], json!(false));
    }

    #[test]
    fn a_binary_payload_gets_a_binary_result_beside_its_outcome() {
        let bytes = Payload::from(vec![0u8, 1, 255]);
        let (out, b) = super::outcome(&Handlers::builtins(), Some("echo"), &bytes, META.clone());
        assert_eq!(
            (out, b.as_deref()),
            (
                json!({"ok": true, "binary": true}),
                Some(&[0u8, 1, 255][..])
            )
        );
        let (out, b) = super::outcome(&Handlers::builtins(), Some("square"), &bytes, META.clone());
        assert_eq!((out["ok"].clone(), b), (json!(false), None));
        assert!(
            out["error"]
                .as_str()
                .unwrap()
                .contains("takes a JSON payload"),
            "{out}"
        );
    }

    #[test]
    fn a_handlers_own_retry_wait_is_in_the_outcome() {
        use taskhub_core::handlers::Failure;
        let h = Handlers::new().light("busy", |_: &Value| -> Result<Value, Failure> {
            Err(Failure::retryable("rate limited")
                .retry_after(std::time::Duration::from_millis(2500)))
        });
        let (out, _) = outcome_json(&h, Some("busy"), "1", META.clone());
        assert_eq!(
            out,
            json!({"ok": false, "error": "rate limited", "retry": true, "retry_after_ms": 2500})
        );
    }
}
