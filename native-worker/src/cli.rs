//! The worker's command line, for `taskhub-worker` and for users' own worker binaries: every flag
//! and behaviour in one [`WorkerArgs`], and [`main`] for a binary that is nothing but a worker.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Args, FromArgMatches};
use taskhub_core::QueueName;
use taskhub_core::auth::DEFAULT_KEY_ID;
use taskhub_core::duration::HumanDuration;
use taskhub_core::handlers::Handlers;
use taskhub_core::worker::{self, WorkerConfig};

use crate::driver::{Options, run};

/// Take tasks from a taskhub hub and run them with this worker's handlers or a command.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Read settings from this TOML file: keys are the long flags with underscores
    /// (`hub = "ws://hub:7878"`, `queue = ["tasks"]`, `key_file = "hub.key"`, `grace = "1m"`);
    /// flags and TASKHUB_* variables override it.
    #[arg(long, env = "TASKHUB_WORKER_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Hub URL, or several separated by commas: when one goes away (or cannot be reached) the
    /// worker moves on to the next.
    #[arg(long, env = "TASKHUB_URL", default_value = taskhub_client::DEFAULT_URL)]
    pub hub: String,
    /// Shared key. Prefer --key-file: a key on the command line shows in `ps`.
    #[arg(
        long,
        env = "TASKHUB_KEY",
        hide_env_values = true,
        conflicts_with = "key_file"
    )]
    pub key: Option<String>,
    /// File holding the shared key (mode 600).
    #[arg(long, env = "TASKHUB_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<std::path::PathBuf>,
    /// Key id the key is registered under on the hub.
    #[arg(long, env = "TASKHUB_KEY_ID", default_value = DEFAULT_KEY_ID)]
    pub key_id: String,
    /// A token (from `taskhub token create`, for example consume-only) instead of a key.
    #[arg(
        long,
        env = "TASKHUB_TOKEN",
        hide_env_values = true,
        conflicts_with_all = ["key", "key_file"]
    )]
    pub token: Option<String>,
    /// For a wss:// hub: trust the CA certificate(s) in this PEM file instead of the system's.
    #[arg(long, env = "TASKHUB_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Queue to consume; repeat for several.
    #[arg(
        long = "queue",
        env = "TASKHUB_QUEUE",
        value_delimiter = ',',
        required = true
    )]
    pub queues: Vec<String>,
    /// Tasks run at once [default: number of CPUs].
    #[arg(long, env = "TASKHUB_CONCURRENCY")]
    pub concurrency: Option<u32>,
    /// Tasks the hub may have out to this worker at once, running or waiting [default:
    /// adaptive, from measured run times: deep for tiny tasks, concurrency + 1 for slow ones;
    /// lowered to the hub's limit].
    #[arg(long, env = "TASKHUB_PREFETCH")]
    pub prefetch: Option<u32>,
    /// Run this shell command per task instead of the handlers: payload JSON on stdin, result on
    /// stdout.
    #[arg(long, env = "TASKHUB_EXEC")]
    pub exec: Option<String>,
    /// How long tasks in flight may finish after the first SIGINT/SIGTERM (`30s`, `2m`; a number
    /// alone is seconds).
    #[arg(long, env = "TASKHUB_WORKER_GRACE", default_value_t = HumanDuration::millis(worker::DEFAULT_STOP_GRACE_MS))]
    pub grace: HumanDuration,
    /// First wait before reconnecting to a hub that went away; doubles (with jitter) per failed
    /// attempt up to --backoff-max.
    #[arg(long, env = "TASKHUB_WORKER_BACKOFF_MIN", default_value_t = HumanDuration::millis(worker::DEFAULT_BACKOFF_MIN_MS))]
    pub backoff_min: HumanDuration,
    /// Longest wait between reconnection attempts.
    #[arg(long, env = "TASKHUB_WORKER_BACKOFF_MAX", default_value_t = HumanDuration::millis(worker::DEFAULT_BACKOFF_MAX_MS))]
    pub backoff_max: HumanDuration,
    /// Give up on a connection whose handshake has not finished in this long (and try again).
    #[arg(long, env = "TASKHUB_WORKER_HANDSHAKE_TIMEOUT", default_value_t = HumanDuration::millis(worker::DEFAULT_HANDSHAKE_TIMEOUT_MS))]
    pub handshake_timeout: HumanDuration,
    /// Name shown in the hub's stats and on the dashboard.
    #[arg(long, env = "TASKHUB_WORKER_NAME")]
    pub name: Option<String>,
    /// How log lines are written: `text` for people, `json` (one object per line) for log
    /// shippers. `RUST_LOG` filters them.
    #[arg(long, env = "TASKHUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Flags that cannot work, named.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("no key: pass --key-file FILE (or TASKHUB_KEY_FILE), --key KEY, or --token TOKEN")]
    NoKey,
    #[error("{0}")]
    KeyFile(String),
    #[error("bad --queue: {0}")]
    Queue(#[from] taskhub_core::NameError),
}

impl WorkerArgs {
    /// The key id and secret to authenticate with: `--token`, or `--key`/`--key-file`.
    pub fn credentials(&self) -> Result<taskhub_client::Credentials, ArgsError> {
        taskhub_client::credentials(
            self.key.as_deref(),
            self.key_file.as_deref(),
            &self.key_id,
            self.token.as_deref(),
        )
        .map_err(ArgsError::KeyFile)?
        .ok_or(ArgsError::NoKey)
    }

    /// The driver options these flags ask for, running `handlers` (unless `--exec` is given).
    pub fn options(&self, handlers: Handlers) -> Result<Options, ArgsError> {
        let credentials = self.credentials()?;
        let queues = self
            .queues
            .iter()
            .map(|q| QueueName::new(q.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let mut config = WorkerConfig::new(&credentials.key_id, credentials.secret, queues);
        config.concurrency = self.concurrency.unwrap_or(cpus).max(1);
        config.prefetch = self.prefetch;
        let ms = |d: HumanDuration| taskhub_core::time::millis_of(d.0);
        config.stop_grace_ms = ms(self.grace);
        config.backoff_min_ms = ms(self.backoff_min).max(1);
        config.backoff_max_ms = ms(self.backoff_max).max(config.backoff_min_ms);
        config.handshake_timeout_ms = ms(self.handshake_timeout).max(1);
        config.name = self.name.clone();
        let mut opts = Options::new(&self.hub, config, handlers);
        opts.exec = self.exec.clone();
        opts.ca = self.ca.clone();
        Ok(opts)
    }

    /// Run until the first SIGINT/SIGTERM (then finish the tasks in hand within `--grace`); a
    /// second signal exits the process at once. `Err` says why the worker cannot go on: a wrong
    /// key, an impostor hub, or a hub that refused its queues.
    pub async fn run(&self, handlers: Handlers) -> Result<(), String> {
        let opts = self.options(handlers).map_err(|e| e.to_string())?;
        let me = program_name(std::env::args_os().next());
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
        let mut signals = Signals::new();
        tokio::spawn(async move {
            signals.next().await;
            let _ = first_tx.send(());
            signals.next().await;
            eprintln!("{me}: second signal, exiting now");
            std::process::exit(130);
        });
        run(opts, async {
            let _ = first_rx.await;
        })
        .await
    }
}

/// How log lines are written: for people, or one JSON object per line for log shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Install a `tracing` subscriber writing to stderr (`RUST_LOG`, default `info`).
pub fn init_logging() {
    init_logging_as(LogFormat::Text, "info");
}

/// Install a `tracing` subscriber writing to stderr in `format`, filtered by `RUST_LOG` or else
/// `default` (`info`, `warn`). Every binary of taskhub logs this way.
pub fn init_logging_as(format: LogFormat, default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().with_current_span(false).try_init(),
    };
}

/// The whole `main` of a worker binary: parse [`WorkerArgs`] from the command line, log to
/// stderr, run `handlers` until signalled.
///
/// ```no_run
/// use taskhub_native_worker::Handlers;
/// fn main() -> std::process::ExitCode {
///     taskhub_native_worker::main(Handlers::builtins())
/// }
/// ```
pub fn main(handlers: Handlers) -> ExitCode {
    main_from(std::env::args_os(), handlers)
}

/// [`main`] with the arguments given (the first is the program's name).
pub fn main_from(args: impl IntoIterator<Item = OsString>, handlers: Handlers) -> ExitCode {
    let mut args = args.into_iter().peekable();
    let name = args
        .peek()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map_or_else(
            || "worker".to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
    let kinds: Vec<&str> = handlers.kinds().map(|(k, _)| k).collect();
    let mut command = WorkerArgs::augment_args(
        clap::Command::new(name.clone())
            .version(env!("CARGO_PKG_VERSION"))
            .about("Take tasks from a taskhub hub and run them.")
            .after_help(format!("Task kinds this worker runs: {}", kinds.join(", "))),
    );
    let args: Vec<OsString> = args.collect();
    let mut warnings = Vec::new();
    if let Some(path) = crate::settings::config_path(&args, "TASKHUB_WORKER_CONFIG") {
        match crate::settings::apply_file(command, &path, None, &[], &mut warnings) {
            Ok((with_file, _)) => command = with_file,
            Err(why) => {
                eprintln!("{name}: {why}");
                return ExitCode::from(2);
            }
        }
    }
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|m| WorkerArgs::from_arg_matches(&m));
    let worker = match parsed {
        Ok(w) => w,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging_as(worker.log_format, "info");
    for w in warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(worker.run(handlers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("{name}: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn program_name(argv0: Option<OsString>) -> String {
    argv0
        .as_deref()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map_or_else(
            || "worker".to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
}

/// SIGINT and SIGTERM, listened to from the start: a signal that arrives while the first is
/// being handled is kept, not lost (creating a listener per wait missed a quick second signal).
struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = recv(&mut self.int) => {}
                _ = recv(&mut self.term) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    fn config(flags: &[&str]) -> WorkerConfig {
        let base = ["taskhub-worker", "--key", "k", "--queue", "q"];
        let args = Flags::try_parse_from(base.iter().chain(flags)).unwrap();
        args.worker.options(Handlers::builtins()).unwrap().worker
    }

    /// Every duration flag takes a unit (a number alone is seconds), and the defaults are the
    /// core's.
    #[test]
    fn durations_read_with_units_and_default_to_the_cores() {
        let d = config(&[]);
        assert_eq!(d.stop_grace_ms, worker::DEFAULT_STOP_GRACE_MS);
        assert_eq!(d.backoff_min_ms, worker::DEFAULT_BACKOFF_MIN_MS);
        assert_eq!(d.backoff_max_ms, worker::DEFAULT_BACKOFF_MAX_MS);
        assert_eq!(d.handshake_timeout_ms, worker::DEFAULT_HANDSHAKE_TIMEOUT_MS);
        let c = config(&[
            "--grace",
            "1500ms",
            "--backoff-min",
            "0.1",
            "--backoff-max",
            "2m",
            "--handshake-timeout",
            "3s",
        ]);
        assert_eq!(
            (
                c.stop_grace_ms,
                c.backoff_min_ms,
                c.backoff_max_ms,
                c.handshake_timeout_ms
            ),
            (1_500, 100, 120_000, 3_000)
        );
        let bad = Flags::try_parse_from(["w", "--key", "k", "--queue", "q", "--grace", "soon"]);
        assert!(bad.unwrap_err().to_string().contains("soon"));
    }
}
