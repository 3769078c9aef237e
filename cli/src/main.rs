//! `taskhub`: run a hub, or talk to one. Each command is a module of its own; this one holds the
//! flags every command shares, how the client commands connect, and the helpers they share.

mod bench;
mod cancel;
mod dead;
mod demo;
mod get;
mod publish;
mod put;
mod queue;
mod serve;
mod settings;
mod stats;
mod sub;
mod submit;
mod token;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::Value;
use taskhub_client::{Client, ConnectOptions};
use taskhub_core::Payload;
use taskhub_core::auth::{DEFAULT_KEY_ID, hex};

/// taskhub: named task queues and pub/sub over authenticated WebSockets.
#[derive(Debug, Parser)]
#[command(name = "taskhub", version)]
pub(crate) struct Cli {
    /// Hub URL (client commands), or several separated by commas: the first that answers is
    /// used [default: ws://127.0.0.1:7878; `bench` starts its own hub].
    #[arg(long, global = true, env = "TASKHUB_URL")]
    pub(crate) hub: Option<String>,
    /// Shared key. Prefer --key-file: a key on the command line shows in `ps`. `serve`
    /// generates one when neither is given.
    #[arg(
        long,
        global = true,
        env = "TASKHUB_KEY",
        hide_env_values = true,
        conflicts_with = "key_file"
    )]
    pub(crate) key: Option<String>,
    /// File holding the shared key (mode 600). `serve` creates it with a new key if it does not
    /// exist.
    #[arg(long, global = true, env = "TASKHUB_KEY_FILE", value_name = "FILE")]
    pub(crate) key_file: Option<std::path::PathBuf>,
    /// Key id the key is registered under.
    #[arg(long, global = true, env = "TASKHUB_KEY_ID", default_value = DEFAULT_KEY_ID)]
    pub(crate) key_id: String,
    /// A token (from `taskhub token create`) instead of a key: it carries its own rights and
    /// expiry.
    #[arg(
        long,
        global = true,
        env = "TASKHUB_TOKEN",
        hide_env_values = true,
        conflicts_with_all = ["key", "key_file"]
    )]
    pub(crate) token: Option<String>,
    /// For a wss:// hub: trust the CA certificate(s) in this PEM file instead of the system's.
    #[arg(long, global = true, env = "TASKHUB_CA", value_name = "FILE")]
    pub(crate) ca: Option<std::path::PathBuf>,
    /// How log lines are written: `text` for people, `json` (one object per line) for log
    /// shippers. `RUST_LOG` filters them.
    #[arg(long, global = true, env = "TASKHUB_LOG_FORMAT", value_enum, default_value_t = taskhub_native_worker::LogFormat::Text)]
    pub(crate) log_format: taskhub_native_worker::LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a hub.
    Serve(Box<serve::ServeArgs>),
    /// Put tasks on a queue; prints each task id on its own line as the hub confirms it.
    Put(put::PutArgs),
    /// Take values off a queue; prints one JSON value per line (bytes as an array of numbers).
    Get(get::GetArgs),
    /// Put tasks and wait for their results; prints one per line, in input order.
    Submit(submit::SubmitArgs),
    /// Cancel tasks by id: removed if waiting, stopped on their worker if running.
    Cancel(cancel::CancelArgs),
    /// Publish a message to a topic.
    Pub(publish::PubArgs),
    /// Print messages on topics matching PATTERN (`*` one token, `>` the rest) until interrupted.
    /// Given several hubs, when its hub goes away it subscribes again, on the next one first.
    Sub(sub::SubArgs),
    /// Manage queues.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// A queue's dead letters: list, requeue or purge them.
    #[command(subcommand)]
    Dead(dead::DeadCommand),
    /// Show queues and sessions.
    Stats(stats::StatsArgs),
    /// Create or revoke tokens (needs a key with admin).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Run the classic example: a hub, two workers, ten squares.
    Demo,
    /// Measure throughput, latency, connect time, hub CPU and memory.
    Bench(bench::BenchArgs),
}

/// A payload or result as one line of JSON: bytes show as an array of numbers.
pub(crate) fn json_line(body: &Payload) -> Value {
    body.to_json_lossy()
}

pub(crate) fn parse_json(arg: &str) -> anyhow::Result<Value> {
    serde_json::from_str(arg)
        .with_context(|| format!("{arg:?} is not JSON (strings need quotes: '\"{arg}\"')"))
}

pub(crate) fn random_key() -> anyhow::Result<String> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex(&b))
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() {
    let parsed = match settings::parse(std::env::args_os().collect()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("taskhub: {e:#}");
            std::process::exit(2);
        }
    };
    let verbose = matches!(parsed.cli.command, Command::Serve(_));
    taskhub_native_worker::init_logging_as(
        parsed.cli.log_format,
        if verbose { "info" } else { "warn" },
    );
    for w in &parsed.warnings {
        tracing::warn!("{w}");
    }
    if let Err(e) = dispatch(parsed).await {
        eprintln!("taskhub: {e:#}");
        std::process::exit(1);
    }
}

async fn dispatch(parsed: settings::Parsed) -> anyhow::Result<()> {
    let cli = &parsed.cli;
    match &cli.command {
        Command::Serve(args) => serve::run(&parsed, args).await,
        Command::Put(args) => put::run(cli, args).await,
        Command::Get(args) => get::run(cli, args).await,
        Command::Submit(args) => submit::run(cli, args).await,
        Command::Cancel(args) => cancel::run(cli, args).await,
        Command::Pub(args) => publish::run(cli, args).await,
        Command::Sub(args) => sub::run(cli, args).await,
        Command::Queue(command) => queue::run(cli, command).await,
        Command::Dead(command) => dead::run(cli, command).await,
        Command::Stats(args) => stats::run(cli, args).await,
        Command::Token(command) => token::run(cli, command).await,
        Command::Demo => demo::run().await,
        Command::Bench(args) => bench::command(cli, args).await,
    }
}

impl Cli {
    /// The key from --key or --key-file, if either is given.
    pub(crate) fn key(&self) -> anyhow::Result<Option<String>> {
        match (&self.key, &self.key_file) {
            (Some(k), _) => Ok(Some(k.clone())),
            (None, Some(path)) => taskhub_client::read_key_file(path)
                .map(Some)
                .map_err(|e| anyhow::anyhow!(e)),
            (None, None) => Ok(None),
        }
    }

    /// What a client command authenticates with: --token, or the key under --key-id.
    pub(crate) fn credentials(&self) -> anyhow::Result<taskhub_client::Credentials> {
        taskhub_client::credentials(
            self.key.as_deref(),
            self.key_file.as_deref(),
            &self.key_id,
            self.token.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!(e))?
        .ok_or_else(|| anyhow::anyhow!(NO_KEY))
    }
}

pub(crate) const NO_KEY: &str =
    "no key: pass --key-file FILE (or TASKHUB_KEY_FILE), --key KEY, or --token TOKEN";

pub(crate) async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    Ok(connect_options(cli)?.connect().await?)
}

/// How the client commands connect: `--hub` (or the default), the credentials, `--ca`.
pub(crate) fn connect_options(cli: &Cli) -> anyhow::Result<ConnectOptions> {
    let url = cli.hub.as_deref().unwrap_or(taskhub_client::DEFAULT_URL);
    let mut opts = ConnectOptions::with_credentials(url, cli.credentials()?);
    opts.ca = cli.ca.clone();
    Ok(opts)
}
