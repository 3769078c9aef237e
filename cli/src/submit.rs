//! `taskhub submit`: put tasks and wait for their results, printed in input order.

use std::io::Write;

use anyhow::bail;
use clap::Args;

use crate::put::TaskArgs;
use taskhub_core::duration::HumanDuration;

use crate::{Cli, connect, json_line};

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    #[command(flatten)]
    tasks: TaskArgs,
    /// How long to wait for all results (`90s`, `10m`; a number alone is seconds)
    /// [default: forever].
    #[arg(long)]
    timeout: Option<HumanDuration>,
    /// Print the tasks' progress reports to stderr as their workers send them
    /// (`task 5: 25% tile 3 of 12`).
    #[arg(long)]
    progress: bool,
}

pub(crate) async fn run(cli: &Cli, args: &SubmitArgs) -> anyhow::Result<()> {
    let SubmitArgs {
        tasks,
        timeout,
        progress,
    } = args;
    let mut out = std::io::stdout().lock();
    let payloads = tasks.payloads()?;
    let client = connect(cli).await?;
    if *progress {
        let mut reports = client.progress();
        tokio::spawn(async move {
            while let Some(p) = reports.recv().await {
                let percent = (p.fraction * 100.0).round();
                match p.message {
                    Some(m) => eprintln!("task {}: {percent}% {m}", p.task),
                    None => eprintln!("task {}: {percent}%", p.task),
                }
            }
        });
    }
    let submitted = client.submit(&tasks.queue, payloads, tasks.options());
    let replies = match timeout {
        Some(t) => tokio::time::timeout(t.0, submitted)
            .await
            .map_err(|_| anyhow::anyhow!("the results did not all come within {t}"))??,
        None => submitted.await?,
    };
    client.close().await;
    let mut failed = 0;
    for r in replies {
        match (r.ok, r.result) {
            (true, result) => {
                writeln!(out, "{}", json_line(&result.unwrap_or_default()))?;
            }
            (false, _) => {
                failed += 1;
                writeln!(out, "null")?;
                match r.cancelled {
                    true => eprintln!("task {} was cancelled", r.id),
                    false => eprintln!("task {} failed: {}", r.id, r.error.unwrap_or_default()),
                }
            }
        }
    }
    if failed > 0 {
        bail!("{failed} task(s) failed or were cancelled");
    }
    Ok(())
}
