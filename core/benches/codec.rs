//! The codec: the hub decodes every client frame and encodes every answer through it.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use taskhub_core::codec::{
    Frame, decode_client, decode_client_binary, decode_server, encode_client, encode_server,
};
use taskhub_core::{Body, ClientMsg, QueueName, RawJson, ServerMsg, Task, TaskId};

fn codec(c: &mut Criterion) {
    let put = r#"{"type":"put","req":17,"queue":"tasks","payload":"0123456789abcdef","kind":"echo","reply_to":"_inbox.3"}"#;
    let ack = r#"{"type":"ack","task":123456,"result":"0123456789abcdef"}"#;
    // As the hub holds it: the payload as text.
    let deliver: ServerMsg<Body<RawJson>> = ServerMsg::Deliver {
        task: Task {
            id: TaskId(123_456),
            queue: QueueName::new("tasks").unwrap_or_else(|e| panic!("{e}")),
            kind: Some("echo".into()),
            payload: json!("0123456789abcdef").into(),
            attempt: 1,
            max_attempts: 5,
            reply_to: Some(QueueName::new("_inbox.3").unwrap_or_else(|e| panic!("{e}"))),
            priority: 0,
            last_error: None,
        },
    };
    let deliver_text = match encode_server(&deliver) {
        Frame::Text(t) => t,
        Frame::Binary(_) => unreachable!("a JSON payload is a text frame"),
    };
    // A 16-byte binary put, as a client sends it.
    let binary_put = match encode_client(&ClientMsg::Put {
        req: Some(17),
        queue: QueueName::new("tasks").unwrap_or_else(|e| panic!("{e}")),
        payload: Body::<serde_json::Value>::from(&b"0123456789abcdef"[..]),
        kind: Some("echo".into()),
        reply_to: None,
        max_attempts: None,
        dedup_id: None,
        schedule: Default::default(),
    }) {
        Frame::Binary(b) => b,
        Frame::Text(_) => unreachable!("a binary payload is a binary frame"),
    };

    c.bench_function("decode put (16-byte payload)", |b| {
        b.iter(|| decode_client::<Body<RawJson>>(black_box(put), 1 << 20))
    });
    c.bench_function("decode binary put (16 bytes)", |b| {
        b.iter(|| decode_client_binary::<RawJson>(black_box(&binary_put), 1 << 20))
    });
    c.bench_function("decode ack", |b| {
        b.iter(|| decode_client::<Body<RawJson>>(black_box(ack), 1 << 20))
    });
    c.bench_function("encode deliver", |b| {
        b.iter(|| encode_server(black_box(&deliver)))
    });
    c.bench_function("decode deliver (worker side)", |b| {
        b.iter(|| decode_server(black_box(&deliver_text)))
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
