//! `taskhub dead`: a queue's dead letters from the shell: list them, put them back, or drop them.

use std::io::Write;

use anyhow::bail;
use clap::Subcommand;
use taskhub_core::TaskId;

use crate::{Cli, connect};

#[derive(Debug, Subcommand)]
pub(crate) enum DeadCommand {
    /// Show QUEUE's dead letters, oldest first: each task's id, kind, attempts and error, and
    /// its payload (left in QUEUE.dead).
    List {
        queue: String,
        /// How many to show (the hub shows at most 1,000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back on QUEUE as new tasks (same kind, payload and reply_to; attempts
    /// from zero), taking them out of QUEUE.dead.
    Requeue {
        queue: String,
        /// The task id of a dead letter to requeue (as `list` shows it); repeat for several.
        #[arg(long = "id", value_name = "ID", required_unless_present = "all")]
        ids: Vec<u64>,
        /// Requeue every dead letter of QUEUE.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Drop every dead letter of QUEUE for good.
    Purge { queue: String },
}

pub(crate) async fn run(cli: &Cli, command: &DeadCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let client = connect(cli).await?;
    match command {
        DeadCommand::List { queue, limit, json } => {
            let dead = client.dead_letters(queue, Some(*limit)).await?;
            if *json {
                for e in &dead.entries {
                    writeln!(out, "{e}")?;
                }
            } else {
                writeln!(
                    out,
                    "{:>10} {:<12} {:>8}  {:<40} PAYLOAD",
                    "TASK", "KIND", "ATTEMPTS", "ERROR"
                )?;
                for e in &dead.entries {
                    let payload = match e.get("payload_bytes") {
                        Some(n) => format!("({n} bytes)"),
                        None => e["payload"].to_string(),
                    };
                    writeln!(
                        out,
                        "{:>10} {:<12} {:>8}  {:<40} {}",
                        e["id"].to_string(),
                        e["kind"].as_str().unwrap_or("-"),
                        e["attempts"].to_string(),
                        clip(e["error"].as_str().unwrap_or(""), 40),
                        clip(&payload, 60)
                    )?;
                }
            }
            if dead.total > dead.entries.len() as u64 {
                eprintln!(
                    "{queue}.dead holds {} dead letter(s); {} shown (--limit)",
                    dead.total,
                    dead.entries.len()
                );
            }
        }
        DeadCommand::Requeue { queue, ids, all } => {
            let mut total = 0;
            if *all {
                loop {
                    let done = client.requeue_dead(queue, None).await?;
                    total += done.count;
                    if !done.more || done.count == 0 {
                        break;
                    }
                }
            } else if ids.is_empty() {
                bail!("name the dead letters with --id ID (repeat for several), or pass --all");
            } else {
                let ids = ids.iter().map(|i| TaskId(*i)).collect();
                total = client.requeue_dead(queue, Some(ids)).await?.count;
            }
            writeln!(out, "requeued {total} dead letter(s) on {queue}")?;
        }
        DeadCommand::Purge { queue } => {
            let dead = taskhub_core::QueueName::new(queue.as_str())?.dead_letter();
            let deleted = client.delete_queue(dead.as_str()).await?;
            writeln!(out, "dropped {} dead letter(s) of {queue}", deleted.tasks)?;
        }
    }
    client.close().await;
    Ok(())
}

/// `text` cut to `n` characters, with an ellipsis when cut.
fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        return text.to_string();
    }
    let mut s: String = text.chars().take(n - 1).collect();
    s.push('…');
    s
}
