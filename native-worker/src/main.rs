//! `taskhub-worker`: run tasks from a taskhub hub on this machine.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use taskhub_core::QueueName;
use taskhub_core::auth::{DEFAULT_KEY_ID, Secret};
use taskhub_worker::{Options, WorkerConfig};

/// Take tasks from a taskhub hub and run them with the built-in handlers or a command.
#[derive(Debug, Parser)]
#[command(name = "taskhub-worker", version)]
struct Args {
    /// Hub URL.
    #[arg(long, env = "TASKHUB_URL", default_value = taskhub_client::DEFAULT_URL)]
    hub: String,
    /// Shared key.
    #[arg(long, env = "TASKHUB_KEY", hide_env_values = true)]
    key: String,
    /// Key id the key is registered under on the hub.
    #[arg(long, env = "TASKHUB_KEY_ID", default_value = DEFAULT_KEY_ID)]
    key_id: String,
    /// Queue to consume; repeat for several.
    #[arg(long = "queue", required = true)]
    queues: Vec<String>,
    /// Tasks run at once [default: number of CPUs].
    #[arg(long)]
    concurrency: Option<u32>,
    /// Tasks the hub may push ahead [default: 2 × concurrency].
    #[arg(long)]
    prefetch: Option<u32>,
    /// Run this shell command per task: payload JSON on stdin, result on stdout.
    #[arg(long)]
    exec: Option<String>,
    /// Seconds to let tasks in flight finish after the first SIGINT/SIGTERM.
    #[arg(long, default_value_t = 30)]
    grace: u64,
    /// Name shown in the hub's stats and on the dashboard.
    #[arg(long)]
    name: Option<String>,
}

async fn signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.key.is_empty() {
        bail!("--key must not be empty");
    }
    let queues = args
        .queues
        .iter()
        .map(|q| QueueName::new(q.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .context("bad --queue")?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut config = WorkerConfig::new(args.key_id, Secret::new(args.key), queues);
    config.concurrency = args.concurrency.unwrap_or(cpus).max(1);
    config.prefetch = args.prefetch.unwrap_or(config.concurrency * 2);
    config.stop_grace_ms = args.grace * 1000;
    config.name = args.name;
    let mut opts = Options::new(args.hub, config);
    opts.exec = args.exec;
    opts.connect_timeout = Duration::from_secs(10);

    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        signal().await;
        let _ = first_tx.send(());
        signal().await;
        eprintln!("taskhub-worker: second signal, exiting now");
        std::process::exit(130);
    });
    if let Err(reason) = taskhub_worker::run(opts, async {
        let _ = first_rx.await;
    })
    .await
    {
        eprintln!("taskhub-worker: {reason}");
        std::process::exit(1);
    }
    Ok(())
}
