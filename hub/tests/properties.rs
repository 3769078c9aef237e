//! Property checks over what the hub reads from peers and disks, in the normal suite: any bytes as
//! a request head or a journal record are read or refused, never a panic. (`fuzz/` runs the long
//! searches on the same entry points.)

use proptest::collection::vec;
use proptest::prelude::*;

/// Bytes shaped like an HTTP request head: a request line, headers, and some noise.
fn head_like() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just("GET / HTTP/1.1".to_string()),
        Just("GET /dashboard HTTP/1.0".to_string()),
        "[A-Z]{0,8} [ -~]{0,20} HTTP/[0-9.]{0,4}",
    ];
    let header = prop_oneof![
        Just("Upgrade: websocket".to_string()),
        Just("Connection: keep-alive, Upgrade".to_string()),
        Just("Sec-WebSocket-Version: 13".to_string()),
        Just("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".to_string()),
        Just("Origin: https://site.example".to_string()),
        "[ -~]{0,30}",
    ];
    (line, vec(header, 0..8), vec(any::<u8>(), 0..16)).prop_map(|(line, headers, noise)| {
        let mut head = line.into_bytes();
        for h in headers {
            head.extend_from_slice(b"\r\n");
            head.extend_from_slice(h.as_bytes());
        }
        head.extend_from_slice(b"\r\n\r\n");
        head.extend_from_slice(&noise);
        head
    })
}

proptest! {
    #[test]
    fn any_request_head_is_read_or_refused(bytes in prop_oneof![vec(any::<u8>(), 0..400), head_like()]) {
        taskhub::fuzzing::http_head(&bytes);
    }

    #[test]
    fn any_journal_bytes_are_read_or_refused(bytes in vec(any::<u8>(), 0..400)) {
        taskhub::fuzzing::journal_record(&bytes);
    }
}
