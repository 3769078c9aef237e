//! `taskhub serve`: the flags, the keys, the hub, and the lines that tell the operator where it is.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use taskhub::keys::Key;
use taskhub::{Config, Secret};
use taskhub_core::duration::HumanDuration;

use crate::settings::{self, Parsed};
use crate::{random_key, shutdown_signal};

/// `taskhub serve`'s flags. Each may also come from its `TASKHUB_*` variable and from the
/// `--config` file, under its long name with underscores (`max_queue_len`, `allowed_origin`):
/// a flag wins over the variable, the variable over the file, the file over the default
/// (cli/src/settings.rs).
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Read settings from this TOML file: keys are the long flags with underscores
    /// (`listen = "0.0.0.0:7878"`, `ack_wait = "1m"`, `key_file = "hub.key"`); flags and
    /// TASKHUB_* variables override it.
    #[arg(long, env = "TASKHUB_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Print the settings in effect (from flags, variables, the --config file and defaults;
    /// secrets left out) as a config file, and exit.
    #[arg(long)]
    print_config: bool,
    /// Once listening, print one JSON line on stdout (url, http, join and dashboard links,
    /// storage) for scripts and supervisors; the human lines go to stderr instead.
    #[arg(long, env = "TASKHUB_READY_JSON")]
    ready_json: bool,
    /// Address to listen on.
    #[arg(long, env = "TASKHUB_LISTEN", default_value = "127.0.0.1:7878")]
    listen: String,
    /// Serve a browser worker bundle (a directory built by your crate's `bundle` command) to
    /// tabs; repeat for several. Tabs choose one with `bundle=NAME` in the join link; the first
    /// is the default.
    #[arg(
        long = "worker-bundle",
        env = "TASKHUB_WORKER_BUNDLE",
        value_name = "DIR",
        value_delimiter = ','
    )]
    worker_bundles: Vec<PathBuf>,
    /// Serve an ES module whose named exports are task handlers (sync or async, payload in,
    /// JSON result out) as a bundle named after the file; repeat for several.
    #[arg(
        long = "handlers-js",
        env = "TASKHUB_HANDLERS_JS",
        value_name = "FILE",
        value_delimiter = ','
    )]
    handlers_js: Vec<PathBuf>,
    /// Keep tasks, leases, results, dead letters and task ids in DIR across restarts and
    /// crashes (created if missing). Without it the hub keeps everything in memory only.
    #[arg(long, env = "TASKHUB_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// With --data-dir: when a put counts as stored and is answered `queued`. `always`: once
    /// synced to disk (group commit); loses nothing confirmed. `interval=100ms`: once written to
    /// the OS, synced every interval; a machine crash loses up to the last interval.
    #[arg(
        long,
        env = "TASKHUB_FSYNC",
        default_value = "always",
        value_name = "POLICY"
    )]
    fsync: taskhub::storage::Fsync,
    /// A web origin (like https://example.org) whose pages may open a WebSocket to the hub, as
    /// well as the hub's own pages; repeat for several. Without any, pages from anywhere may.
    #[arg(
        long = "allowed-origin",
        env = "TASKHUB_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Run every task put to matching queues on N different workers, accepted when M of them
    /// return the same bytes (default a majority), up to MAX runs when they disagree (default
    /// 2N): QUEUE=N[/M[/MAX]], the queue a pattern (`mandel.>=3/2`); repeat for several, the
    /// first match applies. A put may ask for more, never less.
    #[arg(
        long = "replicas",
        env = "TASKHUB_REPLICAS",
        value_name = "QUEUE=N[/M[/MAX]]",
        value_delimiter = ','
    )]
    replicas: Vec<taskhub::QueueReplicas>,
    /// With --data-dir: start even if the journal is damaged in the middle, keeping everything
    /// before the damage and dropping the rest (start-up says how much).
    #[arg(long, env = "TASKHUB_REPAIR")]
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
    nats_creds: Option<PathBuf>,
    /// With --backend: replicas of the queues' stream when this hub creates it (3 on a
    /// three-node NATS cluster).
    #[arg(
        long,
        env = "TASKHUB_NATS_REPLICAS",
        default_value_t = 1,
        requires = "backend"
    )]
    nats_replicas: usize,
    /// Serve wss:// and https:// with this certificate chain (PEM, the hub's own certificate
    /// first). Reloaded, with --tls-key, on SIGHUP; open sessions keep going.
    #[arg(
        long,
        env = "TASKHUB_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "TASKHUB_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Keys with rights, from a TOML file (see README "Keys, rights and tokens"); with or
    /// instead of --key/--key-file (which give one key with every right).
    #[arg(long, env = "TASKHUB_KEYS", value_name = "FILE")]
    keys: Option<PathBuf>,
    /// Also serve /metrics, /healthz and /readyz on this address, plain HTTP and without a
    /// token (bind it to a private interface); on the hub's own port /metrics needs a token with
    /// the stats right.
    #[arg(long, env = "TASKHUB_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// How long the tokens in the printed join and dashboard links work.
    #[arg(long, env = "TASKHUB_LINK_TTL", default_value = "7d")]
    link_ttl: HumanDuration,
    #[command(flatten)]
    pub(crate) limits: taskhub::Limits,
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
fn say_to(stderr: bool, line: &str) {
    if stderr {
        eprintln!("{line}");
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub(crate) async fn run(parsed: &Parsed, args: &ServeArgs) -> anyhow::Result<()> {
    if args.print_config {
        print!("{}", settings::effective(parsed));
        return Ok(());
    }
    let cli = &parsed.cli;
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
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        bail!(
            "--tls-cert and --tls-key go together: give both (as flags, variables or in the config file)"
        );
    }
    let mut config = Config::with_limits(keys, &args.limits);
    config.allowed_origins = args.allowed_origins.clone();
    config.broker.replicas = args.replicas.clone();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(taskhub::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
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
    let metrics_addr = match &args.metrics_listen {
        Some(at) => {
            let metrics = taskhub::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (--metrics-listen)"))?;
            let bound = metrics.local_addr()?;
            server.serve_metrics(metrics);
            Some(bound)
        }
        None => None,
    };
    let (ws, http) = match config.tls {
        Some(_) => ("wss", "https"),
        None => ("ws", "http"),
    };
    // With --ready-json, stdout carries one JSON line (below) and the human lines go to stderr.
    let say = |line: &str| say_to(args.ready_json, line);
    let mut ready = serde_json::json!({
        "url": format!("{ws}://{addr}"),
        "http": format!("{http}://{addr}"),
        "storage": server.storage_summary(),
        "join": null,
        "bundles": {},
        "dashboard": null,
        "pid": std::process::id(),
        "metrics": metrics_addr.map(|a| format!("http://{a}/metrics")),
    });
    say(&format!("taskhub: hub listening on {ws}://{addr}"));
    say(&format!("taskhub: {}", server.storage_summary()));
    if let Some(at) = metrics_addr {
        say(&format!(
            "taskhub: metrics at http://{at}/metrics (and /healthz, /readyz), no token needed there"
        ));
    }
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
                args.link_ttl.0,
            )?;
            let dashboard = link_token(
                id,
                key,
                taskhub_core::Rights {
                    stats: true,
                    ..Default::default()
                },
                args.link_ttl.0,
            )?;
            let lasts = format!(
                "works until {}; `taskhub token create` makes more",
                taskhub::keys::rfc3339(join.1)
            );
            let join_link = format!("{http}://{addr}/#token={}&queue=tasks", join.0);
            if config.bundles.is_empty() {
                say(&format!(
                    "taskhub: open {join_link} in a browser to lend it as a worker ({lasts})"
                ));
            }
            ready["join"] = join_link.as_str().into();
            for b in &config.bundles {
                let kinds = match b.kinds.is_empty() {
                    true => "its exported functions".to_string(),
                    false => b.kinds.join(", "),
                };
                let link = format!("{join_link}&bundle={}", b.name);
                say(&format!(
                    "taskhub: open {link} in a browser to run {} ({kinds})",
                    b.name
                ));
                ready["bundles"][&b.name] = link.into();
            }
            let dashboard_link = format!("{http}://{addr}/dashboard#token={}", dashboard.0);
            say(&format!("taskhub: dashboard at {dashboard_link}"));
            ready["dashboard"] = dashboard_link.into();
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
    if args.ready_json {
        say_to(false, &ready.to_string());
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
