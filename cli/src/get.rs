//! `taskhub get`: values off a queue, one JSON line each.

use std::io::Write;
use std::time::Instant;

use anyhow::bail;
use clap::Args;

use taskhub_core::duration::HumanDuration;

use crate::{Cli, connect, json_line};

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    queue: String,
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// How long to wait in all before giving up (`500ms`, `10s`; a number alone is seconds).
    #[arg(long, default_value = "1s")]
    timeout: HumanDuration,
}

pub(crate) async fn run(cli: &Cli, args: &GetArgs) -> anyhow::Result<()> {
    let GetArgs {
        queue,
        count,
        timeout,
    } = args;
    let mut out = std::io::stdout().lock();
    let wait = timeout.0;
    let client = connect(cli).await?;
    let deadline = Instant::now() + wait;
    for got in 0..*count {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.get(queue, left).await? {
            Some(task) => {
                writeln!(out, "{}", json_line(&task.payload))?;
                out.flush()?;
            }
            None => {
                let partial = if got > 0 {
                    format!(" (got {got} of {count})")
                } else {
                    String::new()
                };
                bail!("queue {queue} is empty after {timeout}{partial}");
            }
        }
    }
    client.close().await;
    Ok(())
}
