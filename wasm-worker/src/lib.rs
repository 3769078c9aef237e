//! taskhub's browser worker. For now it exposes the shared task handlers to JavaScript, so a page
//! computes exactly what a native worker computes; the WebSocket driver around
//! `taskhub_core::worker::Worker` comes with the browser-worker issue.

use taskhub_core::handlers::{self, Outcome};
use wasm_bindgen::prelude::*;

/// Run the built-in handler for `kind` on a JSON payload; returns the result as JSON text.
/// Handlers that wait (`sleep`) return their result without waiting.
#[wasm_bindgen(js_name = runHandler)]
pub fn run_handler(kind: &str, payload_json: &str) -> Result<String, JsError> {
    let payload: serde_json::Value = serde_json::from_str(payload_json)
        .map_err(|e| JsError::new(&format!("payload is not JSON: {e}")))?;
    match handlers::run(Some(kind), &payload) {
        Ok(Outcome::Done(v) | Outcome::Wait { then: v, .. }) => Ok(v.to_string()),
        Err(f) => Err(JsError::new(&f.message)),
    }
}
