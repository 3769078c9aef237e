//! `taskhub demo`: the classic example in one process: a hub, two workers, ten squares.

use std::time::Duration;

use anyhow::bail;
use serde_json::Value;
use taskhub::{Config, Running, Secret};
use taskhub_client::PutOptions;
use taskhub_core::auth::DEFAULT_KEY_ID;
use taskhub_core::worker::WorkerConfig;
use taskhub_core::{Payload, QueueName};

use crate::random_key;

pub(crate) async fn run() -> anyhow::Result<()> {
    let key = random_key()?;
    let hub = Running::start("127.0.0.1:0", Config::new(Secret::new(key.clone()))).await?;
    let url = hub.url();
    println!("Started a hub at {url} with two workers");
    let mut stops = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let config = WorkerConfig::new(
            DEFAULT_KEY_ID,
            Secret::new(key.clone()),
            vec![QueueName::new("tasks")?],
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        workers.push(tokio::spawn(taskhub_native_worker::run(
            taskhub_native_worker::Options::new(
                url.clone(),
                config,
                taskhub_native_worker::Handlers::builtins(),
            ),
            async {
                let _ = stopped.await;
            },
        )));
    }
    let client = taskhub_client::connect(url, key.as_bytes()).await?;
    let mut numbers = Vec::new();
    for _ in 0..10 {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let n = u16::from_le_bytes(b) % 10_001;
        println!("Put task {n}...");
        numbers.push(Value::from(n));
    }
    let replies = tokio::time::timeout(
        Duration::from_secs(60),
        client.submit("tasks", numbers, PutOptions::new().kind("square")),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the results did not come within 60 s"))??;
    for r in replies {
        match (r.ok, r.result) {
            (true, Some(Payload::Json(Value::String(s)))) => println!("Result: {s}"),
            (_, other) => bail!("task {} failed: {:?} {:?}", r.id, other, r.error),
        }
    }
    client.close().await;
    for stop in stops {
        let _ = stop.send(());
    }
    for w in workers {
        w.await?.map_err(|e| anyhow::anyhow!(e))?;
    }
    hub.stop().await;
    Ok(())
}
