//! `taskhub stats`: queues and sessions, as a table or JSON.

use std::io::Write;

use clap::Args;

use crate::{Cli, connect};

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(cli: &Cli, args: &StatsArgs) -> anyhow::Result<()> {
    let StatsArgs { json } = args;
    let mut out = std::io::stdout().lock();
    let client = connect(cli).await?;
    let stats = client.stats().await?;
    client.close().await;
    if *json {
        writeln!(out, "{}", serde_json::to_string_pretty(&stats)?)?;
    } else {
        writeln!(
            out,
            "{:<32} {:>10} {:>10} {:>10} {:>8} {:>10}",
            "QUEUE", "DEPTH", "IN_FLIGHT", "SCHEDULED", "DEAD", "CONSUMERS"
        )?;
        for q in &stats.queues {
            writeln!(
                out,
                "{:<32} {:>10} {:>10} {:>10} {:>8} {:>10}",
                q.name.as_str(),
                q.depth,
                q.in_flight,
                q.scheduled,
                q.dead,
                q.consumers
            )?;
        }
        let sessions: Vec<String> = stats
            .sessions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(out, "sessions: {}", sessions.join(", "))?;
    }
    Ok(())
}
