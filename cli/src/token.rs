//! `taskhub token`: creating and revoking tokens.

use std::io::Write;

use anyhow::bail;
use clap::Subcommand;
use taskhub_core::duration::HumanDuration;

use crate::{Cli, connect};

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a new token with the rights given (no more than your key's), for example a
    /// consume-only one for browser tabs: `token create --queue tasks --consume --ttl 24h`.
    Create {
        /// Queue (or pattern: `jobs.*`, `>`) the queue rights apply to; repeat for several.
        #[arg(long = "queue", value_name = "QUEUE")]
        queues: Vec<String>,
        /// May put to the queues.
        #[arg(long, requires = "queues")]
        put: bool,
        /// May consume the queues (run their tasks, as a worker or tab).
        #[arg(long, requires = "queues")]
        consume: bool,
        /// May get from the queues (and name them as reply_to).
        #[arg(long, requires = "queues")]
        get: bool,
        /// Its results on the queues count alone for a redundant task (put with `--replicas`):
        /// for your own machines, never for a link you share. Your key must be trusted there.
        #[arg(long, requires = "queues")]
        trusted: bool,
        /// Topic pattern it may publish to; repeat for several.
        #[arg(long, value_name = "PATTERN")]
        publish: Vec<String>,
        /// Topic pattern it may subscribe within; repeat for several.
        #[arg(long, value_name = "PATTERN")]
        subscribe: Vec<String>,
        /// May read stats (the dashboard needs it).
        #[arg(long)]
        stats: bool,
        /// How long it works: 90s, 30m, 24h, 7d (at most 366d).
        #[arg(long, default_value = "24h")]
        ttl: HumanDuration,
    },
    /// Stop a token from working, and close the sessions using it; kept across restarts when
    /// the hub has a data dir.
    Revoke {
        /// The token's id (`token create` prints it).
        id: String,
    },
}

pub(crate) async fn run(cli: &Cli, command: &TokenCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        TokenCommand::Create {
            queues,
            put,
            consume,
            get,
            trusted,
            publish,
            subscribe,
            stats,
            ttl,
        } => {
            let patterns = |list: &[String]| {
                list.iter()
                    .map(|p| taskhub_core::Pattern::new(p.as_str()))
                    .collect::<Result<Vec<_>, _>>()
            };
            let queues = patterns(queues)?;
            let pick = |on: bool| if on { queues.clone() } else { Vec::new() };
            if !(queues.is_empty() || *put || *consume || *get || *trusted) {
                bail!("--queue needs a right on it: --put, --consume, --get and/or --trusted");
            }
            let rights = taskhub_core::Rights {
                put: pick(*put),
                consume: pick(*consume),
                get: pick(*get),
                publish: patterns(publish)?,
                subscribe: patterns(subscribe)?,
                trusted: pick(*trusted),
                stats: *stats,
                admin: false,
            };
            let client = connect(cli).await?;
            let made = client.create_token(rights, ttl.0).await?;
            client.close().await;
            writeln!(out, "{}", made.token)?;
            eprintln!(
                "taskhub: token {} works until {}; revoke it with `taskhub token revoke {}`",
                made.id,
                taskhub::keys::rfc3339(made.expires),
                made.id
            );
            if *consume && !queues.is_empty() {
                let hub = cli.hub.as_deref().unwrap_or(taskhub_client::DEFAULT_URL);
                let page = hub
                    .replacen("wss://", "https://", 1)
                    .replacen("ws://", "http://", 1);
                let page = page.trim_end_matches('/');
                let list: Vec<&str> = queues.iter().map(|q| q.as_str()).collect();
                eprintln!(
                    "taskhub: join link: {page}/#token={}&queue={}",
                    made.token,
                    list.join(",")
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let client = connect(cli).await?;
            let closed = client.revoke_token(id).await?;
            client.close().await;
            writeln!(
                out,
                "token {id} revoked; {closed} session(s) using it closed"
            )?;
        }
    }
    Ok(())
}
