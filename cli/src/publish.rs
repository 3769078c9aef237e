//! `taskhub pub`: one message to a topic.

use std::io::Write;

use clap::Args;

use crate::{Cli, connect, parse_json};

#[derive(Debug, Args)]
pub(crate) struct PubArgs {
    topic: String,
    payload: String,
}

pub(crate) async fn run(cli: &Cli, args: &PubArgs) -> anyhow::Result<()> {
    let PubArgs { topic, payload } = args;
    let mut out = std::io::stdout().lock();
    let payload = parse_json(payload)?;
    let client = connect(cli).await?;
    let n = client.publish(topic, payload).await?;
    client.close().await;
    writeln!(out, "delivered to {n} subscriber(s)")?;
    Ok(())
}
