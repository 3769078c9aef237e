//! `taskhub`: run a hub, or talk to one.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::Value;
use taskhub::keys::Key;
use taskhub::{Config, Running, Secret};
use taskhub_client::{Client, ConnectOptions, PutOptions};
use taskhub_core::auth::{DEFAULT_KEY_ID, hex};
use taskhub_core::worker::WorkerConfig;
use taskhub_core::{Payload, QueueName};

/// taskhub: named task queues and pub/sub over authenticated WebSockets.
#[derive(Debug, Parser)]
#[command(name = "taskhub", version)]
struct Cli {
    /// Hub URL (client commands), or several separated by commas: the first that answers is
    /// used [default: ws://127.0.0.1:7878; `bench` starts its own hub].
    #[arg(long, global = true, env = "TASKHUB_URL")]
    hub: Option<String>,
    /// Shared key. Prefer --key-file: a key on the command line shows in `ps`. `serve`
    /// generates one when neither is given.
    #[arg(
        long,
        global = true,
        env = "TASKHUB_KEY",
        hide_env_values = true,
        conflicts_with = "key_file"
    )]
    key: Option<String>,
    /// File holding the shared key (mode 600). `serve` creates it with a new key if it does not
    /// exist.
    #[arg(long, global = true, env = "TASKHUB_KEY_FILE", value_name = "FILE")]
    key_file: Option<std::path::PathBuf>,
    /// Key id the key is registered under.
    #[arg(long, global = true, env = "TASKHUB_KEY_ID", default_value = DEFAULT_KEY_ID)]
    key_id: String,
    /// A token (from `taskhub token create`) instead of a key: it carries its own rights and
    /// expiry.
    #[arg(
        long,
        global = true,
        env = "TASKHUB_TOKEN",
        hide_env_values = true,
        conflicts_with_all = ["key", "key_file"]
    )]
    token: Option<String>,
    /// For a wss:// hub: trust the CA certificate(s) in this PEM file instead of the system's.
    #[arg(long, global = true, env = "TASKHUB_CA", value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a hub.
    Serve(Box<ServeArgs>),
    /// Put tasks on a queue; prints each task id on its own line as the hub confirms it.
    Put {
        #[command(flatten)]
        tasks: TaskArgs,
        /// Queue that receives {id, ok, result | error} when each task ends.
        #[arg(long)]
        reply_to: Option<String>,
        /// Deliveries before a task goes to <queue>.dead [default: the hub's].
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Make the put safe to retry: task i carries the dedup id PREFIX<i>, and the hub stores
        /// each dedup id once within its dedup window. Rerun a failed put with the same prefix.
        #[arg(long, value_name = "PREFIX")]
        dedup_prefix: Option<String>,
    },
    /// Take values off a queue; prints one JSON value per line (bytes as an array of numbers).
    Get {
        queue: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Seconds to wait in all before giving up.
        #[arg(long, default_value_t = 1.0)]
        timeout: f64,
    },
    /// Put tasks and wait for their results; prints one per line, in input order.
    Submit {
        #[command(flatten)]
        tasks: TaskArgs,
        /// Seconds to wait for all results [default: forever].
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Publish a message to a topic.
    Pub { topic: String, payload: String },
    /// Print messages on topics matching PATTERN (`*` one token, `>` the rest) until interrupted.
    /// Given several hubs, when its hub goes away it subscribes again, on the next one first.
    Sub { pattern: String },
    /// Manage queues.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Show queues and sessions.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create or revoke tokens (needs a key with admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run the classic example: a hub, two workers, ten squares.
    Demo,
    /// Measure throughput, latency, connect time, hub CPU and memory.
    Bench(BenchArgs),
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Drop a queue's ready tasks for good, and the queue itself unless consumers, waiting gets,
    /// leased tasks or tasks naming it as reply_to still use it (it then goes once they are
    /// done). Its dead-letter queue is separate: delete NAME.dead too if you mean it.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
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
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Stop a token from working, and close the sessions using it; kept across restarts when
    /// the hub has a data dir.
    Revoke {
        /// The token's id (`token create` prints it).
        id: String,
    },
}

/// `90s`, `30m`, `24h`, `7d`, `500ms`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s, m, h or d"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m, h or d"
            ));
        }
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[derive(Debug, ClapArgs)]
struct BenchArgs {
    /// Tasks in the throughput run.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Native workers to run (in this process).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Tasks each worker runs at once.
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Tasks the hub may push to each worker ahead of acks.
    #[arg(long, default_value_t = 256)]
    prefetch: u32,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 16)]
    payload_bytes: usize,
    /// Send payloads (and get results) as bytes in binary frames instead of JSON strings.
    #[arg(long)]
    binary: bool,
    /// Tasks the producer keeps in flight.
    #[arg(long, default_value_t = 512)]
    pipeline: usize,
    /// Sequential round trips for the latency figures.
    #[arg(long, default_value_t = 2_000)]
    sequential: usize,
    /// Connections timed for connect+auth.
    #[arg(long, default_value_t = 50)]
    connects: usize,
    /// Connection-scale mode: also hold this many idle authenticated sessions (10,000 when
    /// given without a number) and report hub memory per session. Raise `ulimit -n` to match.
    #[arg(long, default_value_t = 0, num_args = 0..=1, default_missing_value = "10000")]
    idle_sessions: usize,
    /// Pid of the hub given with --hub, for its CPU and memory figures.
    #[arg(long)]
    hub_pid: Option<u32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// What `put` and `submit` share: where, what, and which handler.
#[derive(Debug, ClapArgs)]
struct TaskArgs {
    /// Queue to put the tasks on.
    queue: String,
    /// Payloads, one task each, as JSON (strings need quotes: '"text"'); with --binary, files
    /// whose bytes are the payloads (- for stdin).
    #[arg(required = true)]
    payloads: Vec<String>,
    /// Which handler runs the tasks (square, sha256, primes, sleep, echo, fail, or your own).
    #[arg(long)]
    kind: Option<String>,
    /// The payloads are files sent as bytes (binary frames, no base64), not JSON.
    #[arg(long)]
    binary: bool,
}

impl TaskArgs {
    /// Put options with this `--kind`, if one was given.
    fn options(&self) -> PutOptions {
        match &self.kind {
            Some(kind) => PutOptions::new().kind(kind),
            None => PutOptions::new(),
        }
    }

    fn payloads(&self) -> anyhow::Result<Vec<Payload>> {
        self.payloads
            .iter()
            .map(|p| match self.binary {
                false => parse_json(p).map(Payload::Json),
                true if p == "-" => {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                        .context("cannot read the payload from stdin")?;
                    Ok(Payload::from(bytes))
                }
                true => std::fs::read(p)
                    .map(Payload::from)
                    .with_context(|| format!("cannot read payload file {p}")),
            })
            .collect()
    }
}

/// A payload or result as one line of JSON: bytes show as an array of numbers.
fn json_line(body: &Payload) -> Value {
    body.to_json_lossy()
}

#[derive(Debug, ClapArgs)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: String,
    /// Largest accepted message, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_message_bytes: usize,
    /// Authenticated sessions at most.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Connections that have not authenticated yet; beyond, the oldest of the address (IPv6: /64)
    /// with the most waiting is closed (a flood of idle sockets cannot lock out clients with a
    /// key from other addresses).
    #[arg(long, default_value_t = 16_384)]
    max_pending_auth: usize,
    /// Tasks per queue (ready plus in flight) before puts get queue_full.
    #[arg(long, default_value_t = 1_000_000)]
    max_queue_len: usize,
    /// Queues the hub holds at most, dead-letter queues not counted.
    #[arg(long, default_value_t = 10_000)]
    max_queues: usize,
    /// Seconds a queue may sit empty and unused (no consumers, waiting gets, leased tasks, or
    /// tasks naming it as reply_to) before the hub drops it.
    #[arg(long, default_value_t = 300.0)]
    queue_idle_grace: f64,
    /// Memory all the tasks the hub holds may take (payloads as held, JSON text or bytes, and
    /// each task's own record) before puts get queue_full.
    #[arg(long, default_value_t = 1 << 30)]
    max_stored_bytes: usize,
    /// Messages buffered per session.
    #[arg(long, default_value_t = 4_096)]
    outbox: usize,
    /// Seconds a new connection has to authenticate.
    #[arg(long, default_value_t = 5.0)]
    handshake_timeout: f64,
    /// Seconds a delivered task may go without ack or touch before it is redelivered.
    #[arg(long, default_value_t = 30.0)]
    ack_wait: f64,
    /// Deliveries before a task goes to <queue>.dead (tasks may set their own).
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    #[arg(long, default_value_t = 1_000)]
    max_prefetch: u32,
    /// Serve a browser worker bundle (a directory built by your crate's `bundle` command) to
    /// tabs; repeat for several. Tabs choose one with `bundle=NAME` in the join link; the first
    /// is the default.
    #[arg(long = "worker-bundle", value_name = "DIR")]
    worker_bundles: Vec<std::path::PathBuf>,
    /// Serve an ES module whose named exports are task handlers (sync or async, payload in,
    /// JSON result out) as a bundle named after the file; repeat for several.
    #[arg(long = "handlers-js", value_name = "FILE")]
    handlers_js: Vec<std::path::PathBuf>,
    /// Keep tasks, leases, results, dead letters and task ids in DIR across restarts and
    /// crashes (created if missing). Without it the hub keeps everything in memory only.
    #[arg(long, env = "TASKHUB_DATA_DIR", value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// With --data-dir: when a put counts as stored and is answered `queued`. `always`: once
    /// synced to disk (group commit); loses nothing confirmed. `interval=100ms`: once written to
    /// the OS, synced every interval; a machine crash loses up to the last interval.
    #[arg(long, default_value = "always", value_name = "POLICY")]
    fsync: taskhub::storage::Fsync,
    /// A web origin (like https://example.org) whose pages may open a WebSocket to the hub, as
    /// well as the hub's own pages; repeat for several. Without any, pages from anywhere may.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// With --data-dir: start even if the journal is damaged in the middle, keeping everything
    /// before the damage and dropping the rest (start-up says how much).
    #[arg(long)]
    repair: bool,
    /// Keep the queues in NATS JetStream instead of this process, shared by every hub started
    /// with the same NATS: nats://HOST:PORT, several separated by commas. A user and password or
    /// a token may go in the URL (nats://user:pass@host:4222). See docs/scale-out.md.
    #[arg(
        long,
        env = "TASKHUB_BACKEND",
        value_name = "URLS",
        conflicts_with = "data_dir"
    )]
    backend: Option<String>,
    /// With --backend: a NATS credentials file (JWT and NKey seed).
    #[arg(
        long,
        env = "TASKHUB_NATS_CREDS",
        value_name = "FILE",
        requires = "backend"
    )]
    nats_creds: Option<std::path::PathBuf>,
    /// With --backend: replicas of the queues' stream when this hub creates it (3 on a
    /// three-node NATS cluster).
    #[arg(long, default_value_t = 1, requires = "backend")]
    nats_replicas: usize,
    /// Serve wss:// and https:// with this certificate chain (PEM, the hub's own certificate
    /// first). Reloaded, with --tls-key, on SIGHUP; open sessions keep going.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Keys with rights, from a TOML file (see README "Keys, rights and tokens"); with or
    /// instead of --key/--key-file (which give one key with every right).
    #[arg(long, env = "TASKHUB_KEYS", value_name = "FILE")]
    keys: Option<std::path::PathBuf>,
    /// How long the tokens in the printed join and dashboard links work.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    link_ttl: Duration,
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .with_context(|| format!("{what} must be a non-negative number of seconds"))
}

fn parse_json(arg: &str) -> anyhow::Result<Value> {
    serde_json::from_str(arg)
        .with_context(|| format!("{arg:?} is not JSON (strings need quotes: '\"{arg}\"')"))
}

fn random_key() -> anyhow::Result<String> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex(&b))
}

async fn shutdown_signal() {
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
    let cli = Cli::parse();
    let verbose = matches!(cli.command, Command::Serve(_));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| if verbose { "info" } else { "warn" }.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = dispatch(cli).await {
        eprintln!("taskhub: {e:#}");
        std::process::exit(1);
    }
}

impl Cli {
    /// The key from --key or --key-file, if either is given.
    fn key(&self) -> anyhow::Result<Option<String>> {
        match (&self.key, &self.key_file) {
            (Some(k), _) => Ok(Some(k.clone())),
            (None, Some(path)) => taskhub_client::read_key_file(path)
                .map(Some)
                .map_err(|e| anyhow::anyhow!(e)),
            (None, None) => Ok(None),
        }
    }

    /// What a client command authenticates with: --token, or the key under --key-id.
    fn credentials(&self) -> anyhow::Result<taskhub_client::Credentials> {
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

const NO_KEY: &str =
    "no key: pass --key-file FILE (or TASKHUB_KEY_FILE), --key KEY, or --token TOKEN";

async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    Ok(connect_options(cli)?.connect().await?)
}

/// How the client commands connect: `--hub` (or the default), the credentials, `--ca`.
fn connect_options(cli: &Cli) -> anyhow::Result<ConnectOptions> {
    let url = cli.hub.as_deref().unwrap_or(taskhub_client::DEFAULT_URL);
    let mut opts = ConnectOptions::with_credentials(url, cli.credentials()?);
    opts.ca = cli.ca.clone();
    Ok(opts)
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
async fn sub(cli: &Cli, pattern: &str) -> anyhow::Result<()> {
    use taskhub_client::ClientError;
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

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match &cli.command {
        Command::Serve(args) => return serve(&cli, args).await,
        Command::Demo => return demo().await,
        Command::Bench(args) => {
            let key = match cli.key()? {
                Some(k) => k,
                None if cli.hub.is_none() => random_key()?,
                None => bail!(NO_KEY),
            };
            let opts = taskhub::bench::BenchOptions {
                hub: cli.hub.clone(),
                hub_exe: std::env::current_exe()?,
                hub_pid: args.hub_pid,
                key,
                ca: cli.ca.clone(),
                tasks: args.tasks,
                workers: args.workers,
                concurrency: args.concurrency,
                prefetch: args.prefetch,
                payload_bytes: args.payload_bytes,
                binary: args.binary,
                pipeline: args.pipeline,
                sequential: args.sequential,
                connects: args.connects,
                idle_sessions: args.idle_sessions,
            };
            let report = taskhub::bench::run(opts)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                write!(out, "{}", report.table())?;
            }
            if report.errors > 0 {
                bail!("{} task(s) came back wrong", report.errors);
            }
        }
        Command::Put {
            tasks,
            reply_to,
            max_attempts,
            dedup_prefix,
        } => {
            let payloads = tasks.payloads()?;
            let mut opts = tasks.options();
            if let Some(reply_to) = reply_to {
                opts = opts.reply_to(reply_to);
            }
            if let Some(attempts) = max_attempts {
                opts = opts.max_attempts(*attempts);
            }
            if let Some(prefix) = dedup_prefix {
                opts = opts.dedup_prefix(prefix);
            }
            let client = connect(&cli).await?;
            // Each id is printed as soon as the hub confirms its task, so a connection lost part
            // way leaves a true list of what the hub holds.
            let (total, mut confirmed) = (payloads.len(), 0);
            let mut printed = Ok(());
            let sent = client
                .put_each(&tasks.queue, payloads, opts, |id| {
                    confirmed += 1;
                    if printed.is_ok() {
                        printed = writeln!(out, "{id}").and_then(|()| out.flush());
                    }
                })
                .await;
            printed?;
            sent.with_context(|| {
                format!(
                    "the hub confirmed {confirmed} of {total} task(s) (their ids are printed); \
                     the others may or may not have been stored"
                )
            })?;
            client.close().await;
        }
        Command::Get {
            queue,
            count,
            timeout,
        } => {
            let wait = secs(*timeout, "--timeout")?;
            let client = connect(&cli).await?;
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
                        bail!("queue {queue} is empty after {timeout} s{partial}");
                    }
                }
            }
            client.close().await;
        }
        Command::Submit { tasks, timeout } => {
            let payloads = tasks.payloads()?;
            let timeout = timeout.map(|t| secs(t, "--timeout")).transpose()?;
            let client = connect(&cli).await?;
            let submitted = client.submit(&tasks.queue, payloads, tasks.options());
            let replies = match timeout {
                Some(t) => tokio::time::timeout(t, submitted).await.map_err(|_| {
                    anyhow::anyhow!("the results did not all come within {} s", t.as_secs_f64())
                })??,
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
                        eprintln!("task {} failed: {}", r.id, r.error.unwrap_or_default());
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} task(s) failed");
            }
        }
        Command::Pub { topic, payload } => {
            let payload = parse_json(payload)?;
            let client = connect(&cli).await?;
            let n = client.publish(topic, payload).await?;
            client.close().await;
            writeln!(out, "delivered to {n} subscriber(s)")?;
        }
        Command::Sub { pattern } => {
            drop(out);
            return sub(&cli, pattern).await;
        }
        Command::Token(TokenCommand::Create {
            queues,
            put,
            consume,
            get,
            publish,
            subscribe,
            stats,
            ttl,
        }) => {
            let patterns = |list: &[String]| {
                list.iter()
                    .map(|p| taskhub_core::Pattern::new(p.as_str()))
                    .collect::<Result<Vec<_>, _>>()
            };
            let queues = patterns(queues)?;
            let pick = |on: bool| if on { queues.clone() } else { Vec::new() };
            if !(queues.is_empty() || *put || *consume || *get) {
                bail!("--queue needs a right on it: --put, --consume and/or --get");
            }
            let rights = taskhub_core::Rights {
                put: pick(*put),
                consume: pick(*consume),
                get: pick(*get),
                publish: patterns(publish)?,
                subscribe: patterns(subscribe)?,
                stats: *stats,
                admin: false,
            };
            let client = connect(&cli).await?;
            let made = client.create_token(rights, *ttl).await?;
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
        Command::Token(TokenCommand::Revoke { id }) => {
            let client = connect(&cli).await?;
            let closed = client.revoke_token(id).await?;
            client.close().await;
            writeln!(
                out,
                "token {id} revoked; {closed} session(s) using it closed"
            )?;
        }
        Command::Queue(QueueCommand::Delete { name }) => {
            let client = connect(&cli).await?;
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
        }
        Command::Stats { json } => {
            let client = connect(&cli).await?;
            let stats = client.stats().await?;
            client.close().await;
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&stats)?)?;
            } else {
                writeln!(
                    out,
                    "{:<32} {:>10} {:>10} {:>8} {:>10}",
                    "QUEUE", "DEPTH", "IN_FLIGHT", "DEAD", "CONSUMERS"
                )?;
                for q in &stats.queues {
                    writeln!(
                        out,
                        "{:<32} {:>10} {:>10} {:>8} {:>10}",
                        q.name.as_str(),
                        q.depth,
                        q.in_flight,
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
        }
    }
    Ok(())
}

/// Where `serve`'s key with every right came from.
enum MasterKey {
    /// None: the keys come from --keys only.
    None,
    /// --key, or --key-file naming an existing file.
    Given(String),
    /// Made here and written to the --key-file named (which did not exist).
    WrittenTo(String, std::path::PathBuf),
    /// Made here, nowhere stored: printed once.
    Generated(String),
}

impl MasterKey {
    fn key(&self) -> Option<&str> {
        match self {
            MasterKey::None => None,
            MasterKey::Given(k) | MasterKey::WrittenTo(k, _) | MasterKey::Generated(k) => Some(k),
        }
    }
}

/// A token signed by key `id` with `rights`, for a link: the token and its expiry (Unix s).
fn link_token(
    id: &str,
    key: &Key,
    rights: taskhub_core::Rights,
    ttl: Duration,
) -> anyhow::Result<(String, u64)> {
    let (token, claims) = taskhub::keys::mint(id, &key.secret, key.expires, rights, ttl.as_secs())
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok((token, claims.exp))
}

/// A status line for the operator. A closed stdout (`taskhub serve | head -1`) must not stop the
/// hub, so write errors are ignored.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn serve(cli: &Cli, args: &ServeArgs) -> anyhow::Result<()> {
    // Keys: those of --keys, and the one of --key/--key-file (given, read from its file, or
    // made here, into the file named if one was); a key is generated only when neither names any.
    let mut keys = match &args.keys {
        Some(path) => taskhub::keys::load_file(path)?,
        None => Default::default(),
    };
    let keyed = cli.key.is_some() || cli.key_file.is_some();
    let master = match (&cli.key, &cli.key_file) {
        _ if !keyed && args.keys.is_some() => MasterKey::None,
        (None, Some(path)) if !path.exists() => {
            let key = random_key()?;
            taskhub_client::write_key_file(path, &key).map_err(|e| anyhow::anyhow!(e))?;
            MasterKey::WrittenTo(key, path.clone())
        }
        _ => match cli.key()? {
            Some(key) => MasterKey::Given(key),
            None => MasterKey::Generated(random_key()?),
        },
    };
    if let Some(key) = master.key() {
        if keys.contains_key(&cli.key_id) {
            bail!(
                "the key file already names the key id {:?}; give --key another --key-id, or drop it",
                cli.key_id
            );
        }
        keys.insert(cli.key_id.clone(), Key::full(Secret::new(key)));
    }
    let mut config = Config::new(Secret::new("unused"));
    config.keys = keys;
    config.max_message_bytes = args.max_message_bytes;
    config.max_connections = args.max_connections;
    config.max_pending_auth = args.max_pending_auth;
    config.allowed_origins = args.allowed_origins.clone();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(taskhub::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    config.outbox = args.outbox;
    config.handshake_timeout = secs(args.handshake_timeout, "--handshake-timeout")?;
    config.broker.max_queue_len = args.max_queue_len;
    config.broker.max_queues = args.max_queues;
    config.broker.queue_idle_grace = secs(args.queue_idle_grace, "--queue-idle-grace")?;
    config.broker.max_stored_bytes = args.max_stored_bytes;
    config.broker.ack_wait = secs(args.ack_wait, "--ack-wait")?;
    config.broker.max_attempts = args.max_attempts;
    config.broker.max_prefetch = args.max_prefetch;
    for dir in &args.worker_bundles {
        let bundle = taskhub::Bundle::load_dir(dir, config.max_bundle_file_bytes)?;
        config.bundles.push(std::sync::Arc::new(bundle));
    }
    for file in &args.handlers_js {
        let bundle = taskhub::Bundle::load_js(file, config.max_bundle_file_bytes)?;
        config.bundles.push(std::sync::Arc::new(bundle));
    }
    if let Some(dir) = &args.data_dir {
        let mut data = taskhub::storage::DataDir::new(dir);
        data.fsync = args.fsync;
        data.repair = args.repair;
        config.data_dir = Some(data);
    } else if args.repair || args.fsync != taskhub::storage::Fsync::Always {
        bail!("--fsync and --repair apply to a data dir: add --data-dir DIR");
    }
    if let Some(servers) = &args.backend {
        config.backend = Some(taskhub::NatsBackend {
            creds: args.nats_creds.clone(),
            replicas: args.nats_replicas,
            ..taskhub::NatsBackend::new(servers.clone())
        });
    }
    open_file_room(&config);
    // Storage first, so a damaged or locked data dir stops start-up before anything is printed;
    // the listening line stays the first line (scripts read the URL from it).
    let server = taskhub::Server::open(config.clone()).await?;
    let listener = taskhub::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let (ws, http) = match config.tls {
        Some(_) => ("wss", "https"),
        None => ("ws", "http"),
    };
    say(&format!("taskhub: hub listening on {ws}://{addr}"));
    say(&format!("taskhub: {}", server.storage_summary()));
    if !taskhub::browser_worker_built() {
        say(
            "taskhub: browser workers are not built in (the wasm32 target was missing): run `rustup target add wasm32-unknown-unknown` and rebuild",
        );
    }
    // Links carry tokens, never a key: tabs may only consume `tasks`, the dashboard only read
    // stats, and both stop working after --link-ttl.
    let signer = config
        .keys
        .get_key_value(&cli.key_id)
        .filter(|(_, k)| k.rights.admin)
        .or_else(|| config.keys.iter().find(|(_, k)| k.rights.admin));
    match signer {
        None => say(
            "taskhub: no key has admin, so no join or dashboard link (tokens need an admin key to sign them)",
        ),
        Some((id, key)) => {
            let tasks = taskhub_core::Pattern::new("tasks")?;
            let join = link_token(
                id,
                key,
                taskhub_core::Rights {
                    consume: vec![tasks],
                    ..Default::default()
                },
                args.link_ttl,
            )?;
            let dashboard = link_token(
                id,
                key,
                taskhub_core::Rights {
                    stats: true,
                    ..Default::default()
                },
                args.link_ttl,
            )?;
            let lasts = format!(
                "works until {}; `taskhub token create` makes more",
                taskhub::keys::rfc3339(join.1)
            );
            if config.bundles.is_empty() {
                say(&format!(
                    "taskhub: open {http}://{addr}/#token={}&queue=tasks in a browser to lend it as a worker ({lasts})",
                    join.0
                ));
            }
            for b in &config.bundles {
                let kinds = match b.kinds.is_empty() {
                    true => "its exported functions".to_string(),
                    false => b.kinds.join(", "),
                };
                say(&format!(
                    "taskhub: open {http}://{addr}/#token={}&queue=tasks&bundle={} in a browser to run {} ({kinds})",
                    join.0, b.name, b.name
                ));
            }
            say(&format!(
                "taskhub: dashboard at {http}://{addr}/dashboard#token={}",
                dashboard.0
            ));
        }
    }
    // A generated key is printed once (the links above carry tokens, never a key); workers and
    // clients are pointed at a key file, which keeps it out of `ps`.
    match &master {
        MasterKey::WrittenTo(_, path) => {
            let file = path.display();
            say(&format!("taskhub: generated a key into {file} (mode 600)"));
            say(&format!(
                "taskhub: start a worker with: taskhub-worker --hub {ws}://{addr} --key-file {file} --queue tasks"
            ));
        }
        MasterKey::Generated(key) => {
            say(&format!(
                "taskhub: no key given; generated one (save it in a file, mode 600, and pass --key-file FILE): {key}"
            ));
            say(&format!(
                "taskhub: start a worker with: taskhub-worker --hub {ws}://{addr} --key-file FILE --queue tasks"
            ));
        }
        MasterKey::Given(_) | MasterKey::None => {}
    }
    if let Some(tls) = server.tls() {
        say(&format!(
            "taskhub: TLS with {} (send SIGHUP to reload it)",
            tls.files().cert.display()
        ));
        tokio::spawn(reload_on_hangup(tls));
    }
    server.run(listener, shutdown_signal()).await;
    say("taskhub: hub stopped");
    Ok(())
}

/// Raise the open-file limit as far as allowed (every connection is a file), and warn when that
/// is still below what the connection limits can use: past it, accepting fails for everyone.
fn open_file_room(config: &Config) {
    let wanted = (config.max_connections + config.max_pending_auth + 256) as u64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            "the open-file limit is {limit}, below the {wanted} that --max-connections {} and \
             --max-pending-auth {} can use: raise the hard limit (ulimit -Hn, LimitNOFILE=) or \
             lower them",
            config.max_connections,
            config.max_pending_auth
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
}

/// Reload the TLS certificate and key on every SIGHUP; a failed reload keeps the old ones.
async fn reload_on_hangup(tls: std::sync::Arc<taskhub::ServerTls>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!(
                    "TLS certificate reloaded from {}",
                    tls.files().cert.display()
                ),
                Err(e) => tracing::error!("{e}; still using the certificate loaded before"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}

async fn demo() -> anyhow::Result<()> {
    let key = random_key()?;
    let hub = Running::start("127.0.0.1:0", Config::new(Secret::new(key.clone()))).await?;
    let url = hub.url();
    println!("Started a hub at {url} with two workers");
    let mut stops = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let config = WorkerConfig::new(
            DEFAULT_KEY_ID,
            Secret::new(key.clone()),
            vec![QueueName::new("tasks")?],
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        workers.push(tokio::spawn(taskhub_worker::run(
            taskhub_worker::Options::new(url.clone(), config, taskhub_worker::Handlers::builtins()),
            async {
                let _ = stopped.await;
            },
        )));
    }
    let client = taskhub_client::connect(url, key.as_bytes()).await?;
    let mut numbers = Vec::new();
    for _ in 0..10 {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let n = u16::from_le_bytes(b) % 10_001;
        println!("Put task {n}...");
        numbers.push(Value::from(n));
    }
    let replies = tokio::time::timeout(
        Duration::from_secs(60),
        client.submit("tasks", numbers, PutOptions::new().kind("square")),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the results did not come within 60 s"))??;
    for r in replies {
        match (r.ok, r.result) {
            (true, Some(Payload::Json(Value::String(s)))) => println!("Result: {s}"),
            (_, other) => bail!("task {} failed: {:?} {:?}", r.id, other, r.error),
        }
    }
    client.close().await;
    for stop in stops {
        let _ = stop.send(());
    }
    for w in workers {
        w.await?.map_err(|e| anyhow::anyhow!(e))?;
    }
    hub.stop().await;
    Ok(())
}
