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
//! - [`run_task`]: the handler entry point the pool's Web Workers call.

#[cfg(target_arch = "wasm32")]
mod driver;
#[cfg(target_arch = "wasm32")]
mod monitor;
#[cfg(target_arch = "wasm32")]
mod pool;
#[cfg(target_arch = "wasm32")]
mod socket;

#[cfg(target_arch = "wasm32")]
pub use driver::BrowserWorker;
#[cfg(target_arch = "wasm32")]
pub use monitor::HubMonitor;

use serde_json::{Value, json};
use taskhub_core::handlers::{self, Outcome};
use wasm_bindgen::prelude::*;

/// Run the built-in handler for `kind` on a JSON payload. Returns the outcome as JSON text:
/// `{"ok": true, "result": ..}`, `{"ok": true, "result": .., "wait_ms": n}` for handlers that wait
/// (the caller waits `n` ms with its own timer, then reports), or
/// `{"ok": false, "error": "..", "retry": bool}`.
#[wasm_bindgen(js_name = runTask)]
pub fn run_task(kind: Option<String>, payload_json: &str) -> String {
    outcome_json(kind.as_deref(), payload_json).to_string()
}

/// The pure part of [`run_task`], testable natively.
pub fn outcome_json(kind: Option<&str>, payload_json: &str) -> Value {
    let payload: Value = match serde_json::from_str(payload_json) {
        Ok(v) => v,
        Err(e) => {
            return json!({"ok": false, "error": format!("payload is not JSON: {e}"), "retry": false});
        }
    };
    match handlers::run(kind, &payload) {
        Ok(Outcome::Done(v)) => json!({"ok": true, "result": v}),
        Ok(Outcome::Wait { ms, then }) => json!({"ok": true, "result": then, "wait_ms": ms}),
        Err(f) => json!({"ok": false, "error": f.message, "retry": f.retry}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_reported_as_json() {
        assert_eq!(
            outcome_json(Some("square"), "12"),
            json!({"ok": true, "result": "12 * 12 = 144"})
        );
        assert_eq!(
            outcome_json(Some("sleep"), "5"),
            json!({"ok": true, "result": {"slept_ms": 5}, "wait_ms": 5})
        );
        let v = outcome_json(Some("nope"), "1");
        assert_eq!(
            (v["ok"].as_bool(), v["retry"].as_bool()),
            (Some(false), Some(false))
        );
        assert_eq!(outcome_json(Some("echo"), "{oops")["ok"], json!(false));
    }
}
