//! An HTTP request head on the hub's port: parsed, checked as a WebSocket handshake and against
//! an origin allow-list.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    taskhub::fuzzing::http_head(data);
});
