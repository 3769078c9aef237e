//! `taskhub put`: tasks onto a queue, each id printed as the hub confirms it.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use taskhub_client::PutOptions;
use taskhub_core::Payload;
use taskhub_core::duration::HumanDuration;

use crate::{Cli, connect, parse_json};

#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    #[command(flatten)]
    tasks: TaskArgs,
    /// Queue that receives {id, ok, result | error} when each task ends.
    #[arg(long)]
    reply_to: Option<String>,
    /// Deliveries before a task goes to <queue>.dead [default: the hub's].
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Make the put safe to retry: task i carries the dedup id PREFIX<i>, and the hub stores
    /// each dedup id once within its dedup window. Rerun a failed put with the same prefix.
    #[arg(long, value_name = "PREFIX")]
    dedup_prefix: Option<String>,
}

/// What `put` and `submit` share: where, what, and which handler.
#[derive(Debug, Args)]
pub(crate) struct TaskArgs {
    /// Queue to put the tasks on.
    pub(crate) queue: String,
    /// Payloads, one task each, as JSON (strings need quotes: '"text"'); with --binary, files
    /// whose bytes are the payloads (- for stdin).
    #[arg(required = true)]
    pub(crate) payloads: Vec<String>,
    /// Which handler runs the tasks (square, sha256, primes, sleep, echo, fail, or your own).
    #[arg(long)]
    pub(crate) kind: Option<String>,
    /// The payloads are files sent as bytes (binary frames, no base64), not JSON.
    #[arg(long)]
    pub(crate) binary: bool,
    /// 0 to 9: ready tasks of higher priority are delivered first; FIFO within a priority.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub(crate) priority: u8,
    /// Ready this long after the hub stores them, not before (500ms, 30s, 5m, 2h).
    #[arg(long, value_name = "DURATION", conflicts_with = "at")]
    pub(crate) delay: Option<HumanDuration>,
    /// Ready at this time, not before: RFC 3339 (2026-12-01T18:30:00Z, or with an offset such
    /// as +01:00).
    #[arg(long, value_name = "TIME", value_parser = taskhub::keys::parse_time)]
    pub(crate) at: Option<u64>,
    /// A failed attempt is retried after this long, doubling each time (with jitter) up to
    /// --backoff-max; 0 retries at once [default: the hub's --retry-backoff].
    #[arg(long, value_name = "DURATION")]
    pub(crate) backoff: Option<HumanDuration>,
    /// The longest a retry waits [default: the hub's --retry-backoff-max].
    #[arg(long, value_name = "DURATION")]
    pub(crate) backoff_max: Option<HumanDuration>,
    /// Run each task on N different workers and accept a result only when --quorum of them
    /// return the same bytes (for workers you cannot trust, such as browser tabs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=16))]
    pub(crate) replicas: Option<u8>,
    /// How many identical results accept a task [default: a majority of --replicas].
    #[arg(long, value_name = "M", requires = "replicas", value_parser = clap::value_parser!(u8).range(1..=16))]
    pub(crate) quorum: Option<u8>,
    /// When results disagree, run more replicas up to this many in all, then dead-letter the
    /// task with every result [default: twice --replicas, at most 16].
    #[arg(long, value_name = "N", requires = "replicas", value_parser = clap::value_parser!(u8).range(1..=16))]
    pub(crate) max_replicas: Option<u8>,
}

impl TaskArgs {
    /// Put options with this `--kind`, `--priority`, `--delay`, `--at`, backoff and replicas.
    pub(crate) fn options(&self) -> PutOptions {
        let mut opts = PutOptions::new().priority(self.priority);
        if let Some(kind) = &self.kind {
            opts = opts.kind(kind);
        }
        if let Some(delay) = self.delay {
            opts = opts.delay(delay.0);
        }
        if let Some(at) = self.at {
            opts = opts.not_before(UNIX_EPOCH + Duration::from_millis(at));
        }
        if let Some(first) = self.backoff {
            opts = opts.backoff(first.0);
        }
        if let Some(max) = self.backoff_max {
            opts = opts.backoff_max(max.0);
        }
        if let Some(n) = self.replicas {
            opts = opts.replicas(n, self.quorum.unwrap_or(n / 2 + 1));
        }
        if let Some(max) = self.max_replicas {
            opts = opts.max_replicas(max);
        }
        opts
    }

    pub(crate) fn payloads(&self) -> anyhow::Result<Vec<Payload>> {
        self.payloads
            .iter()
            .map(|p| match self.binary {
                false => parse_json(p).map(Payload::Json),
                true if p == "-" => {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                        .context("cannot read the payload from stdin")?;
                    Ok(Payload::from(bytes))
                }
                true => std::fs::read(p)
                    .map(Payload::from)
                    .with_context(|| format!("cannot read payload file {p}")),
            })
            .collect()
    }
}

pub(crate) async fn run(cli: &Cli, args: &PutArgs) -> anyhow::Result<()> {
    let PutArgs {
        tasks,
        reply_to,
        max_attempts,
        dedup_prefix,
    } = args;
    let mut out = std::io::stdout().lock();
    let payloads = tasks.payloads()?;
    let mut opts = tasks.options();
    if let Some(reply_to) = reply_to {
        opts = opts.reply_to(reply_to);
    }
    if let Some(attempts) = max_attempts {
        opts = opts.max_attempts(*attempts);
    }
    if let Some(prefix) = dedup_prefix {
        opts = opts.dedup_prefix(prefix);
    }
    let client = connect(cli).await?;
    // Each id is printed as soon as the hub confirms its task, so a connection lost part
    // way leaves a true list of what the hub holds.
    let (total, mut confirmed) = (payloads.len(), 0);
    let mut printed = Ok(());
    let sent = client
        .put_each(&tasks.queue, payloads, opts, |id| {
            confirmed += 1;
            if printed.is_ok() {
                printed = writeln!(out, "{id}").and_then(|()| out.flush());
            }
        })
        .await;
    printed?;
    sent.with_context(|| {
        format!(
            "the hub confirmed {confirmed} of {total} task(s) (their ids are printed); \
             the others may or may not have been stored"
        )
    })?;
    client.close().await;
    Ok(())
}
