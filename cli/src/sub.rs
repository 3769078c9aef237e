//! `taskhub sub`: print what is published on matching topics, moving to another hub of the list
//! when its hub goes.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use futures_util::StreamExt;

use crate::{Cli, connect_options, json_line, shutdown_signal};

#[derive(Debug, Args)]
pub(crate) struct SubArgs {
    pattern: String,
}

/// How long `sub` waits before trying the hubs again when none answered.
const SUB_RETRY: Duration = Duration::from_secs(1);
/// How long `sub` goes on trying the other hubs of its list before it gives up.
const SUB_GIVE_UP: Duration = Duration::from_secs(30);

/// `taskhub sub`: print what is published on topics matching `pattern` until interrupted. Given
/// several hubs, when its hub goes away (it stops, or the connection is lost) it subscribes again,
/// trying the next hub of `--hub`'s list first, for up to [`SUB_GIVE_UP`], and says so on stderr:
/// what was published in between is missed (pub/sub keeps nothing). Given one hub, or refused by
/// a hub (credentials, a slow reader), it ends with the hub's reason.
pub(crate) async fn run(cli: &Cli, args: &SubArgs) -> anyhow::Result<()> {
    use taskhub_client::ClientError;
    let pattern = args.pattern.as_str();
    // The key is read once; each attempt only starts the list at another hub.
    let mut opts = connect_options(cli)?;
    let mut hubs = taskhub_core::HubList::new(&opts.url);
    let mut lost: Option<(Instant, ClientError)> = None;
    loop {
        opts.url = hubs.from_current();
        let client = match opts.clone().connect().await {
            Ok(c) => c,
            Err(e @ (ClientError::Auth { .. } | ClientError::Invalid(_))) => return Err(e.into()),
            Err(e) => match &lost {
                Some((since, why)) if since.elapsed() < SUB_GIVE_UP => {
                    tracing::debug!("no hub answered ({e}) since {why}; again in {SUB_RETRY:?}");
                    tokio::select! {
                        () = tokio::time::sleep(SUB_RETRY) => continue,
                        () = shutdown_signal() => return Ok(()),
                    }
                }
                Some((_, why)) => bail!(
                    "{why}; no hub of the list answered for {} s (last: {e})",
                    SUB_GIVE_UP.as_secs()
                ),
                None => return Err(e.into()),
            },
        };
        let mut messages = client.subscribe(pattern).await?;
        if lost.take().is_some() {
            eprintln!("subscribed again, on {}", client.hub());
        }
        loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    Some(taskhub_client::Message { topic, payload }) => {
                        let line = serde_json::json!({"topic": topic, "payload": json_line(&payload)});
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "{line}")?;
                        out.flush()?;
                    }
                    None => break,
                },
                () = shutdown_signal() => return Ok(()),
            }
        }
        let why = client.ended().unwrap_or_else(|| ClientError::Closed {
            code: None,
            reason: String::new(),
        });
        // 1008 and 1009: the hub refused this session (credentials expired or revoked, too slow
        // a reader, too large a frame); another hub would too. The rest is the hub going away:
        // the end, unless the list has another.
        if hubs.len() < 2
            || matches!(
                why,
                ClientError::Closed {
                    code: Some(1008 | 1009),
                    ..
                }
            )
        {
            bail!("{why}");
        }
        eprintln!(
            "lost hub {} ({why}); subscribing again (messages published meanwhile are missed)",
            client.hub()
        );
        hubs.advance_past(client.hub());
        lost = Some((Instant::now(), why));
    }
}
