//! `taskhub cancel`: stop tasks that are no longer wanted.

use std::io::Write;

use clap::Args;
use taskhub_client::TaskId;

use crate::{Cli, connect};

#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// Task ids, as `taskhub put` printed them. Each is cancelled wherever it is: waiting in its
    /// queue, waiting for its time, or running (its worker is told to stop). Its reply queue
    /// hears `cancelled`.
    #[arg(required = true, value_name = "ID")]
    ids: Vec<u64>,
}

/// Prints `ID: cancelled (STATE)` for each; any id the hub could not cancel is named on stderr
/// with the hub's reason, the others are cancelled all the same, and the command fails.
pub(crate) async fn run(cli: &Cli, args: &CancelArgs) -> anyhow::Result<()> {
    let client = connect(cli).await?;
    let mut out = std::io::stdout().lock();
    let mut refused = 0;
    for id in &args.ids {
        match client.cancel(TaskId(*id)).await {
            Ok(state) => writeln!(out, "{id}: cancelled (was {})", state.as_str())?,
            Err(e) => {
                refused += 1;
                eprintln!("taskhub: task {id}: {e}");
            }
        }
    }
    client.close().await;
    match refused {
        0 => Ok(()),
        n => Err(anyhow::anyhow!(
            "{n} of {} task(s) could not be cancelled",
            args.ids.len()
        )),
    }
}
