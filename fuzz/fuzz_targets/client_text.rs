//! A client's text frame, as the hub decodes it (one message or several, the handshake's `auth`
//! among them): never a panic, and every request that decodes encodes back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskhub_core::codec::{decode_client_frames, encode_client};
use taskhub_core::{Body, RawJson};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for msg in decode_client_frames::<Body<RawJson>>(text, 1 << 20)
        .into_iter()
        .flatten()
    {
        let _ = encode_client(&msg);
    }
});
