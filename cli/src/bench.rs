//! `taskhub bench`: a load generator. It starts its own hub (a child process, so its CPU and
//! memory can be read from `/proc`) or targets a running one, runs W native workers in-process,
//! and measures end-to-end throughput (put -> worker -> ack -> result back at the producer),
//! latency sequentially and under load, connect+auth time, hub CPU per task and hub peak RSS.
//! With `idle_sessions` it also opens that many authenticated idle sessions and reports the hub's
//! memory per session.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use serde_json::Value;
use taskhub_client::{Client, ConnectOptions, PutOptions};
use taskhub_core::auth::{DEFAULT_KEY_ID, Secret};
use taskhub_core::worker::WorkerConfig;
use taskhub_core::{Payload, QueueName};

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    opts: BenchOptions,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn command(cli: &crate::Cli, args: &BenchArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let key = match cli.key()? {
        Some(k) => k,
        None if cli.hub.is_none() => crate::random_key()?,
        None => anyhow::bail!(crate::NO_KEY),
    };
    let opts = BenchOptions {
        hub: cli.hub.clone(),
        hub_exe: std::env::current_exe()?,
        key,
        ca: cli.ca.clone(),
        ..args.opts.clone()
    };
    let report = run(opts).await.map_err(|e| anyhow::anyhow!(e))?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", report.table())?;
    }
    if report.errors > 0 {
        anyhow::bail!("{} task(s) came back wrong", report.errors);
    }
    Ok(())
}

/// What to run: the load's flags (`taskhub bench --tasks ...`), and where (filled in from the
/// global flags).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// A running hub to target; `None` starts one from `hub_exe`.
    #[arg(skip)]
    pub hub: Option<String>,
    /// The `taskhub` binary to start a hub from (`taskhub bench` passes itself).
    #[arg(skip)]
    pub hub_exe: PathBuf,
    /// Pid of the hub given with --hub, for its CPU and memory figures.
    #[arg(long)]
    pub hub_pid: Option<u32>,
    #[arg(skip)]
    pub key: String,
    /// For a `wss://` hub: the CA file to trust.
    #[arg(skip)]
    pub ca: Option<PathBuf>,
    /// Tasks in the throughput run.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    /// Native workers to run (in this process).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Tasks each worker runs at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// Tasks the hub may push to each worker ahead of acks.
    #[arg(long, default_value_t = 256)]
    pub prefetch: u32,
    /// Payload size in bytes (an `echo` task carrying a string this long).
    #[arg(long, default_value_t = 16)]
    pub payload_bytes: usize,
    /// Send payloads (and get results) as bytes in binary frames instead of JSON strings.
    #[arg(long)]
    pub binary: bool,
    /// Tasks the producer keeps in flight.
    #[arg(long, default_value_t = 512)]
    pub pipeline: usize,
    /// Sequential round trips (one task in flight) for the latency figures.
    #[arg(long, default_value_t = 2_000)]
    pub sequential: usize,
    /// Connections timed for connect+auth.
    #[arg(long, default_value_t = 50)]
    pub connects: usize,
    /// Connection-scale mode: also hold this many idle authenticated sessions (10,000 when
    /// given without a number) and report hub memory per session. Raise `ulimit -n` to match.
    #[arg(long, default_value_t = 0, num_args = 0..=1, default_missing_value = "10000")]
    pub idle_sessions: usize,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
        };
        Latency {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: at(1.0),
        }
    }
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tasks: usize,
    pub workers: usize,
    pub payload_bytes: usize,
    pub binary: bool,
    pub pipeline: usize,
    /// End-to-end tasks per second.
    pub tasks_per_sec: f64,
    pub load_latency: Latency,
    pub sequential_latency: Latency,
    /// A bare request round trip to the hub (`stats`), for scale: a task's round trip is two of
    /// these plus the worker.
    pub hub_round_trip: Latency,
    pub connect_auth: Latency,
    /// Hub CPU (user + system) per task in the throughput run; needs the hub's pid.
    pub hub_cpu_us_per_task: Option<f64>,
    pub hub_peak_rss_kib: Option<u64>,
    pub idle_sessions: Option<IdleReport>,
    /// Wrong or missing results (must be 0).
    pub errors: usize,
}

/// The connection-scale run.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub sessions: usize,
    pub hub_rss_before_kib: u64,
    pub hub_rss_after_kib: u64,
    pub hub_rss_per_session_kib: f64,
    /// Throughput of a small workload while the sessions are open.
    pub tasks_per_sec_while_connected: f64,
}

/// A hub child process, killed on drop.
struct OwnHub {
    child: Child,
    url: String,
}

impl Drop for OwnHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_hub(opts: &BenchOptions, max_connections: usize) -> Result<OwnHub, String> {
    let mut child = Command::new(&opts.hub_exe)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ready-json",
            "--key",
            &opts.key,
        ])
        .args(["--max-connections", &max_connections.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", opts.hub_exe.display()))?;
    let stdout = child.stdout.take().ok_or("hub has no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines
        .next()
        .and_then(Result::ok)
        .ok_or("the hub exited before printing its address")?;
    let url = serde_json::from_str::<Value>(&first)
        .ok()
        .and_then(|ready| Some(ready["url"].as_str()?.to_string()))
        .ok_or_else(|| format!("unexpected hub output: {first}"))?;
    // Keep draining stdout so the hub never blocks on it.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(OwnHub { child, url })
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn connect(url: &str, opts: &BenchOptions) -> Result<Client, String> {
    let mut o = ConnectOptions::new(url, opts.key.as_bytes()).timeout(Duration::from_secs(30));
    o.ca = opts.ca.clone();
    o.connect().await.map_err(|e| e.to_string())
}

/// Run `tasks` tasks with `pipeline` in flight; returns (elapsed, latencies, errors).
async fn load(
    client: &Client,
    queue: &QueueName,
    payload: &Payload,
    tasks: usize,
    pipeline: usize,
) -> Result<(Duration, Vec<Duration>, usize), String> {
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(tasks);
    let mut errors = 0;
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0;
    let echo = PutOptions::new().kind("echo");
    let one = |p: Payload| {
        let echo = echo.clone();
        async move {
            let t = Instant::now();
            let r = client.submit(queue.as_str(), [p.clone()], echo).await;
            (
                t.elapsed(),
                r.map(|r| {
                    r.first()
                        .is_some_and(|r| r.ok && r.result.as_ref() == Some(&p))
                }),
            )
        }
    };
    while sent < tasks || !in_flight.is_empty() {
        while sent < tasks && in_flight.len() < pipeline.max(1) {
            in_flight.push(one(payload.clone()));
            sent += 1;
        }
        if let Some((latency, ok)) = in_flight.next().await {
            latencies.push(latency);
            match ok {
                Ok(true) => {}
                Ok(false) => errors += 1,
                Err(e) => return Err(format!("task failed: {e}")),
            }
        }
    }
    Ok((started.elapsed(), latencies, errors))
}

/// Run the benchmark.
pub async fn run(opts: BenchOptions) -> Result<Report, String> {
    let own = match &opts.hub {
        Some(_) => None,
        None => Some(start_hub(&opts, opts.idle_sessions + 1_000)?),
    };
    let url = match (&own, &opts.hub) {
        (Some(h), _) => h.url.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => return Err("no hub".into()),
    };
    let pid = own.as_ref().map(|h| h.child.id()).or(opts.hub_pid);
    let queue = QueueName::new("bench").map_err(|e| e.to_string())?;

    // Workers, in this process.
    let mut stops = Vec::new();
    for i in 0..opts.workers {
        let mut config = WorkerConfig::new(
            DEFAULT_KEY_ID,
            Secret::new(opts.key.clone()),
            vec![queue.clone()],
        );
        config.concurrency = opts.concurrency.max(1);
        config.prefetch = Some(opts.prefetch.max(config.concurrency));
        config.name = Some(format!("bench-{i}"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        let mut worker = taskhub_native_worker::Options::new(
            url.clone(),
            config,
            taskhub_native_worker::Handlers::builtins(),
        );
        worker.ca = opts.ca.clone();
        tokio::spawn(taskhub_native_worker::run(worker, async {
            let _ = stopped.await;
        }));
    }

    // Connect+auth.
    let mut connects = Vec::with_capacity(opts.connects);
    for _ in 0..opts.connects.max(1) {
        let t = Instant::now();
        let c = connect(&url, &opts).await?;
        connects.push(t.elapsed());
        c.close().await;
    }

    let client = Arc::new(connect(&url, &opts).await?);
    let payload = if opts.binary {
        Payload::from(vec![b'x'; opts.payload_bytes])
    } else {
        Payload::Json(Value::String("x".repeat(opts.payload_bytes)))
    };
    // Warm up (and wait for the workers to be consuming).
    load(&client, &queue, &payload, 1_000.min(opts.tasks), 64).await?;

    let (_, seq, mut errors) = load(&client, &queue, &payload, opts.sequential, 1).await?;
    let mut hub_rtt = Vec::with_capacity(opts.sequential);
    for _ in 0..opts.sequential {
        let t = Instant::now();
        client.stats().await.map_err(|e| e.to_string())?;
        hub_rtt.push(t.elapsed());
    }

    let cpu_before = pid.and_then(cpu_seconds);
    let (elapsed, lat, load_errors) =
        load(&client, &queue, &payload, opts.tasks, opts.pipeline).await?;
    let cpu_after = pid.and_then(cpu_seconds);
    errors += load_errors;

    let idle = if opts.idle_sessions > 0 {
        let pid = pid.ok_or(
            "connection-scale mode needs the hub's pid (start it here, or pass --hub-pid)",
        )?;
        Some(idle_sessions(&opts, &url, pid, &client, &queue, &payload).await?)
    } else {
        None
    };

    for stop in stops {
        let _ = stop.send(());
    }
    Ok(Report {
        tasks: opts.tasks,
        workers: opts.workers,
        payload_bytes: opts.payload_bytes,
        binary: opts.binary,
        pipeline: opts.pipeline,
        tasks_per_sec: opts.tasks as f64 / elapsed.as_secs_f64(),
        load_latency: Latency::of(lat),
        sequential_latency: Latency::of(seq),
        hub_round_trip: Latency::of(hub_rtt),
        connect_auth: Latency::of(connects),
        hub_cpu_us_per_task: match (cpu_before, cpu_after) {
            (Some(a), Some(b)) => Some((b - a) * 1e6 / opts.tasks as f64),
            _ => None,
        },
        hub_peak_rss_kib: pid.and_then(|p| status_kib(p, "VmHWM")),
        idle_sessions: idle,
        errors,
    })
}

async fn idle_sessions(
    opts: &BenchOptions,
    url: &str,
    pid: u32,
    client: &Client,
    queue: &QueueName,
    payload: &Payload,
) -> Result<IdleReport, String> {
    let before = status_kib(pid, "VmRSS").ok_or("cannot read the hub's memory")?;
    let mut sessions = Vec::with_capacity(opts.idle_sessions);
    let mut pending = FuturesUnordered::new();
    let mut started = 0;
    while sessions.len() < opts.idle_sessions {
        while started < opts.idle_sessions && pending.len() < 64 {
            pending.push(connect(url, opts));
            started += 1;
        }
        match pending.next().await {
            Some(Ok(c)) => sessions.push(c),
            Some(Err(e)) => {
                return Err(format!(
                    "session {} of {} failed: {e} (raise `ulimit -n`?)",
                    sessions.len() + 1,
                    opts.idle_sessions
                ));
            }
            None => break,
        }
    }
    // Let the hub settle, then read its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = status_kib(pid, "VmRSS").ok_or("cannot read the hub's memory")?;
    let n = (opts.tasks / 5).max(1_000);
    let (elapsed, _, _) = load(client, queue, payload, n, opts.pipeline).await?;
    let report = IdleReport {
        sessions: sessions.len(),
        hub_rss_before_kib: before,
        hub_rss_after_kib: after,
        hub_rss_per_session_kib: after.saturating_sub(before) as f64 / sessions.len().max(1) as f64,
        tasks_per_sec_while_connected: n as f64 / elapsed.as_secs_f64(),
    };
    drop(sessions);
    Ok(report)
}

impl Report {
    /// A table for people.
    pub fn table(&self) -> String {
        let lat = |l: &Latency| {
            format!(
                "p50 {:>8.1} µs  p90 {:>8.1} µs  p99 {:>8.1} µs  max {:>9.1} µs",
                l.p50_us, l.p90_us, l.p99_us, l.max_us
            )
        };
        let mut s = format!(
            "taskhub bench: {} tasks, {} workers, {}-byte {} payloads, {} in flight\n",
            self.tasks,
            self.workers,
            self.payload_bytes,
            if self.binary { "binary" } else { "JSON" },
            self.pipeline
        );
        s += &format!(
            "  throughput          {:>12.0} tasks/s\n",
            self.tasks_per_sec
        );
        s += &format!("  latency under load  {}\n", lat(&self.load_latency));
        s += &format!("  sequential latency  {}\n", lat(&self.sequential_latency));
        s += &format!("  hub round trip      {}\n", lat(&self.hub_round_trip));
        s += &format!("  connect+auth        {}\n", lat(&self.connect_auth));
        if let Some(c) = self.hub_cpu_us_per_task {
            s += &format!("  hub CPU per task    {c:>12.2} µs\n");
        }
        if let Some(r) = self.hub_peak_rss_kib {
            s += &format!("  hub peak RSS        {:>12.1} MiB\n", r as f64 / 1024.0);
        }
        if let Some(i) = &self.idle_sessions {
            s += &format!(
                "  idle sessions       {:>12}  ({:.1} KiB of hub RSS each; {:.0} tasks/s meanwhile)\n",
                i.sessions, i.hub_rss_per_session_kib, i.tasks_per_sec_while_connected
            );
        }
        s += &format!("  errors              {:>12}\n", self.errors);
        s
    }
}
