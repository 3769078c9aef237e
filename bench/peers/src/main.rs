//! The job `taskhub bench` runs, on the strongest peers, each driven by its own Rust client:
//! N `square` tasks, the result back at the producer, W worker processes, `--pipeline` tasks in
//! flight.
//!
//! ```text
//! peers nats-core  --url nats://127.0.0.1:4222   # request/reply, workers in a queue group
//! peers jetstream  --url nats://127.0.0.1:4222   # work-queue stream, pull consumer, explicit ack
//! peers redis      --url redis://127.0.0.1:6379  # reliable queue: BLMOVE to a processing list
//!     [--tasks N] [--workers W] [--pipeline P] [--concurrency C] [--sequential S]
//! peers pingpong   [--sequential S]              # the floor: a blocking TCP ping-pong
//! ```
//!
//! Workers run `--concurrency` slots (default: CPUs, like `taskhub-worker`); a Redis worker runs
//! eight BLMOVE loops per slot, since each loop waits a round trip per step.
//!
//! The producer starts W copies of itself as worker processes (`peers <system>-worker`), waits
//! until each says it is ready, warms up with 1,000 tasks, times N, and prints one JSON line:
//! `{"system", "tasks", "tasks_per_sec", "sequential_p50_us"}` (the last for request/reply only).

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
struct Args {
    system: String,
    url: String,
    tasks: usize,
    workers: usize,
    pipeline: usize,
    concurrency: usize,
    sequential: usize,
}

fn parse_args() -> Result<Args, Error> {
    let mut it = std::env::args().skip(1);
    let system = it.next().ok_or("usage: peers SYSTEM --url URL [options]")?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut a = Args {
        system,
        url: String::new(),
        tasks: 100_000,
        workers: 2,
        pipeline: 512,
        concurrency: cpus,
        sequential: 2_000,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => a.url = value,
            "--tasks" => a.tasks = value.parse()?,
            "--workers" => a.workers = value.parse()?,
            "--pipeline" => a.pipeline = value.parse()?,
            "--concurrency" => a.concurrency = value.parse()?,
            "--sequential" => a.sequential = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    Ok(a)
}

/// The work: the same `square` as taskhub's built-in.
fn square(payload: &[u8]) -> String {
    let n: i64 = std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    format!("{n} * {n} = {}", n.wrapping_mul(n))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    if std::env::args().nth(1).as_deref() == Some("pingpong") {
        return pingpong();
    }
    let a = parse_args()?;
    match a.system.as_str() {
        "nats-core" | "jetstream" | "redis" => produce(&a).await,
        "nats-core-worker" => nats_core_worker(&a).await,
        "jetstream-worker" => jetstream_worker(&a).await,
        "redis-worker" => redis_worker(&a).await,
        other => Err(format!("unknown system {other}").into()),
    }
}

/// Start the worker processes and wait for each to print `ready`.
async fn start_workers(a: &Args) -> Result<Vec<tokio::process::Child>, Error> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..a.workers {
        let mut child = tokio::process::Command::new(&exe)
            .arg(format!("{}-worker", a.system))
            .args(["--url", &a.url, "--concurrency", &a.concurrency.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no worker stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(l))) if l == "ready" => {}
            other => return Err(format!("worker did not start: {other:?}").into()),
        }
        children.push(child);
    }
    Ok(children)
}

async fn produce(a: &Args) -> Result<(), Error> {
    let p = Producer::connect(a).await?;
    let workers = start_workers(a).await?;
    p.run(0, 1_000, a.pipeline).await?;
    let t0 = Instant::now();
    p.run(1_000, a.tasks, a.pipeline).await?;
    let rate = a.tasks as f64 / t0.elapsed().as_secs_f64();
    let p50 = p.sequential_p50(a.sequential).await?;
    drop(workers);
    println!(
        "{}",
        serde_json::json!({
            "system": a.system, "tasks": a.tasks, "workers": a.workers,
            "pipeline": a.pipeline, "tasks_per_sec": rate.round(), "sequential_p50_us": p50,
        })
    );
    Ok(())
}

// One producer per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Producer {
    NatsCore(async_nats::Client),
    JetStream {
        /// Kept so the connection lives as long as the producer.
        _client: async_nats::Client,
        js: async_nats::jetstream::Context,
        results: tokio::sync::Mutex<async_nats::Subscriber>,
    },
    Redis {
        conn: redis::aio::MultiplexedConnection,
        results: tokio::sync::Mutex<redis::aio::MultiplexedConnection>,
    },
}

const STREAM: &str = "PEERS_TASKS";

impl Producer {
    async fn connect(a: &Args) -> Result<Producer, Error> {
        Ok(match a.system.as_str() {
            "nats-core" => Producer::NatsCore(async_nats::connect(&a.url).await?),
            "jetstream" => {
                let client = async_nats::connect(&a.url).await?;
                let js = async_nats::jetstream::new(client.clone());
                let _ = js.delete_stream(STREAM).await;
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: STREAM.into(),
                    subjects: vec!["peers.js.tasks".into()],
                    retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await?;
                let results = client.subscribe("peers.results").await?;
                client.flush().await?;
                Producer::JetStream {
                    _client: client,
                    js,
                    results: tokio::sync::Mutex::new(results),
                }
            }
            _ => {
                let redis = redis::Client::open(a.url.as_str())?;
                let mut conn = redis.get_multiplexed_async_connection().await?;
                let _: () = redis::cmd("DEL")
                    .arg(&["peers:tasks", "peers:results", "peers:processing"])
                    .query_async(&mut conn)
                    .await?;
                let results = redis.get_multiplexed_async_connection().await?;
                Producer::Redis {
                    conn,
                    results: tokio::sync::Mutex::new(results),
                }
            }
        })
    }

    /// Tasks `from..from + n`, at most `pipeline` in flight, each result back here.
    async fn run(&self, from: usize, n: usize, pipeline: usize) -> Result<(), Error> {
        match self {
            Producer::NatsCore(client) => {
                let mut inflight = FuturesUnordered::new();
                for i in from..from + n {
                    if inflight.len() >= pipeline
                        && let Some(r) = inflight.next().await
                    {
                        check(r?)?;
                    }
                    let c = client.clone();
                    inflight.push(async move {
                        c.request("peers.core.tasks", i.to_string().into())
                            .await
                            .map(|m| m.payload)
                    });
                }
                while let Some(r) = inflight.next().await {
                    check(r?)?;
                }
            }
            Producer::JetStream { js, results, .. } => {
                let mut results = results.lock().await;
                let (mut sent, mut got) = (0, 0);
                let mut acks = FuturesUnordered::new();
                while got < n {
                    // Keep `pipeline` tasks between publish and result.
                    while sent < n && sent - got < pipeline {
                        let ack = js
                            .publish("peers.js.tasks", (from + sent).to_string().into())
                            .await?;
                        acks.push(ack.into_future());
                        sent += 1;
                    }
                    tokio::select! {
                        Some(ack) = acks.next(), if !acks.is_empty() => { ack?; }
                        msg = results.next() => {
                            check(msg.ok_or("results subscription ended")?.payload)?;
                            got += 1;
                        }
                    }
                }
                while let Some(ack) = acks.next().await {
                    ack?;
                }
            }
            Producer::Redis { conn, results } => {
                let mut results = results.lock().await;
                let (mut sent, mut got) = (0, 0);
                let mut pushes = FuturesUnordered::new();
                while got < n {
                    while sent < n && sent - got < pipeline {
                        let mut c = conn.clone();
                        let payload = (from + sent).to_string();
                        // Spawned, so it goes out while this task waits on BRPOP.
                        pushes.push(tokio::spawn(async move {
                            redis::cmd("LPUSH")
                                .arg("peers:tasks")
                                .arg(payload)
                                .query_async::<i64>(&mut c)
                                .await
                        }));
                        sent += 1;
                    }
                    while let Some(Some(r)) = pushes.now_or_never_some() {
                        r??;
                    }
                    // Take every result that is there, waiting for at least one.
                    let popped: Option<(String, String)> = redis::cmd("BRPOP")
                        .arg("peers:results")
                        .arg(10.0)
                        .query_async(&mut *results)
                        .await?;
                    let (_, r) = popped.ok_or("no result within 10 s")?;
                    check(r.into_bytes().into())?;
                    got += 1;
                    // And whatever else is there, in one round trip.
                    let more: Option<Vec<String>> = redis::cmd("RPOP")
                        .arg("peers:results")
                        .arg(pipeline)
                        .query_async(&mut *results)
                        .await?;
                    for r in more.unwrap_or_default() {
                        check(r.into_bytes().into())?;
                        got += 1;
                    }
                }
                while let Some(r) = pushes.next().await {
                    r??;
                }
            }
        }
        Ok(())
    }

    /// One task at a time, `n` times; the median round trip in microseconds.
    async fn sequential_p50(&self, n: usize) -> Result<Option<f64>, Error> {
        let Producer::NatsCore(client) = self else {
            return Ok(None);
        };
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            let m = client
                .request("peers.core.tasks", i.to_string().into())
                .await?;
            check(m.payload)?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        times.sort_by(f64::total_cmp);
        Ok(times.get(n / 2).copied())
    }
}

/// Poll a stream once without waiting: `Some(item)` if one is ready.
trait NowOrNever {
    type Item;
    fn now_or_never_some(&mut self) -> Option<Option<Self::Item>>;
}

impl<S: futures::Stream + Unpin> NowOrNever for S {
    type Item = S::Item;
    fn now_or_never_some(&mut self) -> Option<Option<S::Item>> {
        futures::FutureExt::now_or_never(self.next())
    }
}

fn check(result: bytes::Bytes) -> Result<(), Error> {
    if result.windows(3).any(|w| w == b" = ") {
        Ok(())
    } else {
        Err(format!("wrong result: {result:?}").into())
    }
}

async fn nats_core_worker(a: &Args) -> Result<(), Error> {
    let client = async_nats::connect(&a.url).await?;
    let mut tasks = client
        .queue_subscribe("peers.core.tasks", "workers".into())
        .await?;
    client.flush().await?;
    println!("ready");
    while let Some(msg) = tasks.next().await {
        if let Some(reply) = msg.reply {
            client.publish(reply, square(&msg.payload).into()).await?;
        }
    }
    Ok(())
}

async fn jetstream_worker(a: &Args) -> Result<(), Error> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    let client = async_nats::connect(&a.url).await?;
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(STREAM).await?;
    let consumer = stream
        .get_or_create_consumer(
            "workers",
            pull::Config {
                durable_name: Some("workers".into()),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    println!("ready");
    while let Some(msg) = messages.next().await {
        let msg = msg?;
        client
            .publish("peers.results", square(&msg.payload).into())
            .await?;
        msg.ack().await?;
    }
    Ok(())
}

/// BLMOVE loops per worker process for Redis: one loop is a chain of round trips (take, then
/// push the result and drop the task), so a Redis worker runs many, each on its own connection
/// (a blocking pop holds its connection).
const REDIS_LOOPS_PER_SLOT: usize = 8;

async fn redis_worker(a: &Args) -> Result<(), Error> {
    let redis = redis::Client::open(a.url.as_str())?;
    let mut loops = Vec::new();
    for _ in 0..a.concurrency.max(1) * REDIS_LOOPS_PER_SLOT {
        // A connection each: BLMOVE blocks its connection.
        let mut conn = redis.get_multiplexed_async_connection().await?;
        loops.push(tokio::spawn(async move {
            loop {
                let task: Option<String> = redis::cmd("BLMOVE")
                    .arg(&["peers:tasks", "peers:processing", "RIGHT", "LEFT"])
                    .arg(1.0)
                    .query_async(&mut conn)
                    .await?;
                let Some(task) = task else { continue };
                let result = square(task.as_bytes());
                let _: ((), ()) = redis::pipe()
                    .cmd("LPUSH")
                    .arg("peers:results")
                    .arg(result)
                    .ignore()
                    .cmd("LREM")
                    .arg("peers:processing")
                    .arg(1)
                    .arg(&task)
                    .ignore()
                    .query_async(&mut conn)
                    .await
                    .map(|()| ((), ()))?;
            }
            #[allow(unreachable_code)]
            Ok::<(), redis::RedisError>(())
        }));
    }
    println!("ready");
    for l in loops {
        l.await??;
    }
    Ok(())
}

/// The latency floor on this machine: 16-byte messages bounced over a loopback TCP connection
/// with blocking sockets (an echo thread, Nagle off), one at a time. Prints the p50 round trip.
fn pingpong() -> Result<(), Error> {
    use std::io::{Read, Write};
    let n: usize = std::env::args()
        .skip_while(|a| a != "--sequential")
        .nth(1)
        .map_or(Ok(2_000), |v| v.parse())?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 16];
        loop {
            s.read_exact(&mut buf)?;
            s.write_all(&buf)?;
        }
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut buf = [7u8; 16];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&buf)?;
        s.read_exact(&mut buf)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({"system": "tcp-pingpong", "sequential_p50_us": times[n / 2]})
    );
    Ok(())
}
