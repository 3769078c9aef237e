//! The pure queue core: one task's whole life (put, deliver, ack with a reply) without I/O.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::json;
use taskhub::broker::{Broker, BrokerConfig, ClientMsg, ServerMsg};
use taskhub_core::{Millis, QueueName, Role, SessionId};

const PRODUCER: SessionId = SessionId(1);
const WORKER: SessionId = SessionId(2);

fn queue(name: &str) -> QueueName {
    QueueName::new(name).unwrap_or_else(|e| panic!("{e}"))
}

fn broker(prefetch: u32) -> Broker {
    let mut b: Broker = Broker::new(BrokerConfig::default());
    b.open_session(PRODUCER, Role::Producer, None);
    b.open_session(WORKER, Role::Worker, None);
    let consume = ClientMsg::Consume {
        req: None,
        queues: vec![queue("tasks")],
        prefetch,
    };
    b.handle(WORKER, consume, Millis(0));
    b.drain().for_each(drop);
    b
}

fn put(n: u64) -> ClientMsg {
    ClientMsg::Put {
        req: Some(n),
        queue: queue("tasks"),
        payload: json!("0123456789abcdef").into(),
        kind: Some("echo".into()),
        reply_to: Some(QueueName::inbox(PRODUCER)),
        max_attempts: None,
        dedup_id: None,
        schedule: Default::default(),
    }
}

fn broker_bench(c: &mut Criterion) {
    c.bench_function("task lifecycle: put, deliver, ack, reply", |b| {
        let mut broker = broker(1_000);
        let mut n = 0;
        b.iter(|| {
            n += 1;
            broker.handle(PRODUCER, put(n), Millis(n));
            let mut delivered = None;
            for out in broker.drain() {
                if let ServerMsg::Deliver { task } = out.msg {
                    delivered = Some(task.id);
                }
            }
            if let Some(task) = delivered {
                let ack = ClientMsg::Ack {
                    req: None,
                    task,
                    result: Some(json!("0123456789abcdef").into()),
                };
                broker.handle(WORKER, ack, Millis(n));
                black_box(broker.drain().count());
            }
        })
    });

    c.bench_function("expire 1,000 leases", |b| {
        b.iter_batched(
            || {
                let mut broker = broker(1_000);
                for n in 0..1_000 {
                    broker.handle(PRODUCER, put(n), Millis(0));
                }
                broker.drain().for_each(drop);
                broker
            },
            |mut broker| {
                broker.expire(Millis(3_600_000));
                black_box(broker.drain().count())
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, broker_bench);
criterion_main!(benches);
