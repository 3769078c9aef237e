//! `taskhub queue`: managing queues.

use std::io::Write;

use clap::Subcommand;

use crate::{Cli, connect};

#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// Drop a queue's ready tasks for good, and the queue itself unless consumers, waiting gets,
    /// leased tasks or tasks naming it as reply_to still use it (it then goes once they are
    /// done). Its dead-letter queue is separate: delete NAME.dead too if you mean it.
    Delete { name: String },
}

pub(crate) async fn run(cli: &Cli, command: &QueueCommand) -> anyhow::Result<()> {
    let QueueCommand::Delete { name } = command;
    let mut out = std::io::stdout().lock();
    let client = connect(cli).await?;
    let deleted = client.delete_queue(name).await?;
    client.close().await;
    let what = if deleted.removed {
        "queue deleted"
    } else {
        "queue emptied; it is still in use (consumers, waiting gets, leased tasks or \
         tasks replying to it) and goes once it is not"
    };
    writeln!(
        out,
        "{name}: dropped {} ready task(s); {what}",
        deleted.tasks
    )?;
    Ok(())
}
