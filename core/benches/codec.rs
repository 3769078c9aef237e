//! The codec: the hub decodes every client frame and encodes every answer through it.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use taskhub_core::codec::{decode_client, decode_server, encode_server};
use taskhub_core::{QueueName, RawJson, ServerMsg, Task, TaskId};

fn codec(c: &mut Criterion) {
    let put = r#"{"type":"put","req":17,"queue":"tasks","payload":"0123456789abcdef","kind":"echo","reply_to":"_inbox.3"}"#;
    let ack = r#"{"type":"ack","task":123456,"result":"0123456789abcdef"}"#;
    // As the hub holds it: the payload as text.
    let deliver: ServerMsg<RawJson> = ServerMsg::Deliver {
        task: Task {
            id: TaskId(123_456),
            queue: QueueName::new("tasks").unwrap_or_else(|e| panic!("{e}")),
            kind: Some("echo".into()),
            payload: json!("0123456789abcdef").into(),
            attempt: 1,
            max_attempts: 5,
            reply_to: Some(QueueName::new("_inbox.3").unwrap_or_else(|e| panic!("{e}"))),
        },
    };
    let deliver_text = encode_server(&deliver);

    c.bench_function("decode put (16-byte payload)", |b| {
        b.iter(|| decode_client::<RawJson>(black_box(put), 1 << 20))
    });
    c.bench_function("decode ack", |b| {
        b.iter(|| decode_client::<RawJson>(black_box(ack), 1 << 20))
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
