//! A client's binary frame (header length, JSON header, bytes), as the hub decodes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskhub_core::RawJson;
use taskhub_core::codec::{decode_client_binary, encode_client};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_client_binary::<RawJson>(data, 1 << 20) {
        let _ = encode_client(&msg);
    }
});
