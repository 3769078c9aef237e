//! The event loop: feed the state machine, drain its outputs, repeat.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use taskhub_client::transport::{self, WsStream};
use taskhub_core::auth::NONCE_BYTES;
use taskhub_core::handlers::{Cancellation, Failure, Handlers, Outcome, Reporter};
use taskhub_core::worker::{Event, Job, Worker, WorkerConfig};
use taskhub_core::{Millis, Payload};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::exec;

/// How to run a native worker.
#[derive(Debug, Clone)]
pub struct Options {
    /// The hub, or several separated by commas (tried in turn: the next after a failed or lost
    /// connection).
    pub url: String,
    pub worker: WorkerConfig,
    /// What runs each task, by kind.
    pub handlers: Arc<Handlers>,
    /// Run this shell command for every task instead of `handlers`.
    pub exec: Option<String>,
    pub connect_timeout: Duration,
    /// For `wss://`: trust only the CA certificates in this PEM file, not the system's.
    pub ca: Option<std::path::PathBuf>,
    /// Largest `--exec` stdout accepted as a result.
    pub max_result_bytes: usize,
}

impl Options {
    /// A worker on `url` running `handlers`.
    pub fn new(url: impl Into<String>, worker: WorkerConfig, handlers: Handlers) -> Self {
        Options {
            url: url.into(),
            worker,
            handlers: Arc::new(handlers),
            exec: None,
            connect_timeout: Duration::from_secs(10),
            ca: None,
            max_result_bytes: 512 << 10,
        }
    }
}

type Sink = SplitSink<WsStream, Message>;

/// How to stop a job that is still running when its task is cancelled: the flag its handler
/// sees, and the signal that ends its wait or kills its `--exec` command.
struct Stop {
    flag: Cancellation,
    now: oneshot::Sender<()>,
}

/// A job's side of [`Stop`].
struct Stopped {
    flag: Cancellation,
    signal: oneshot::Receiver<()>,
}

/// What jobs running off the event loop tell it. One channel for both, so a job's progress
/// reports arrive before its result, as they were made.
enum FromJob {
    /// Lossy: dropped when the loop is behind (the state machine sends only the latest of each
    /// interval anyway).
    Progress {
        token: u64,
        fraction: f64,
        message: Option<String>,
    },
    /// Never dropped: the sender waits for room.
    Done {
        token: u64,
        result: Result<Payload, Failure>,
    },
}

type ToLoop = mpsc::Sender<FromJob>;

/// Progress reports that may wait for the event loop, beyond room for every job's result.
const PROGRESS_BACKLOG: usize = 256;

/// A reporter for job `token`'s handler: its reports go to the event loop.
fn reports_to(to_loop: &ToLoop, token: u64) -> impl Fn(f64, Option<&str>) + Send + Sync + '_ {
    move |fraction, message| {
        let _ = to_loop.try_send(FromJob::Progress {
            token,
            fraction,
            message: message.map(str::to_string),
        });
    }
}

fn stop_pair() -> (Stop, Stopped) {
    let (now, signal) = oneshot::channel();
    let flag = Cancellation::new();
    (
        Stop {
            flag: flag.clone(),
            now,
        },
        Stopped { flag, signal },
    )
}

impl Stopped {
    /// Run `work` until it finishes or the task is cancelled (then `work` is dropped: a wait
    /// ends, an `--exec` command's process group is killed).
    async fn unless_cancelled<T>(
        &mut self,
        work: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let cancelled = async {
            // The sender dropped (the job is over) is not a cancel.
            if (&mut self.signal).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = work => r,
            () = cancelled => Err(Failure::permanent("cancelled")),
        }
    }
}

/// Frames taken in one go when several are already waiting.
const BATCH: usize = 256;
type Source = SplitStream<WsStream>;

struct Driver {
    sm: Worker,
    epoch: Instant,
    conn: Option<(Sink, Source)>,
    /// The hubs to try, in turn: after a failed or lost connection the next one is tried.
    hubs: taskhub_core::HubList,
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

impl Driver {
    fn now(&self) -> Millis {
        Millis(taskhub_core::time::millis_of(self.epoch.elapsed()))
    }

    fn lost(&mut self, reason: &str) {
        self.conn = None;
        // Fail over: the next attempt goes to the next hub of the list.
        self.hubs.advance();
        let now = self.now();
        self.sm.handle_disconnected(now, reason, random_u64());
    }

    /// Write every frame the state machine has queued, then flush once.
    async fn transmit(&mut self) {
        let Some((sink, _)) = self.conn.as_mut() else {
            while self.sm.poll_transmit().is_some() {}
            return;
        };
        let mut wrote = false;
        let mut result = Ok(());
        while let Some(frame) = self.sm.poll_transmit() {
            wrote = true;
            result = sink.feed(transport::message(frame)).await;
            if result.is_err() {
                break;
            }
        }
        if wrote && result.is_ok() {
            result = sink.flush().await;
        }
        if let Err(e) = result {
            self.lost(&e.to_string());
        }
    }

    fn on_frame(&mut self, frame: Option<Result<Message, String>>) {
        match frame {
            Some(Ok(Message::Text(text))) => {
                let now = self.now();
                self.sm.handle_message(&text, now);
            }
            Some(Ok(Message::Binary(frame))) => {
                let now = self.now();
                self.sm.handle_binary(&frame, now);
            }
            Some(Ok(Message::Close(frame))) => {
                let reason = frame
                    .map(|f| f.reason.to_string())
                    .unwrap_or_else(|| "hub closed the connection".into());
                self.lost(&reason);
            }
            Some(Ok(_)) => {
                // A ping or pong: the hub is there.
                let now = self.now();
                self.sm.handle_heard(now);
            }
            Some(Err(e)) => self.lost(&e),
            None => self.lost("connection closed"),
        }
    }

    async fn close(&mut self) {
        self.transmit().await;
        if let Some((mut sink, _)) = self.conn.take() {
            let _ = sink.close().await;
        }
    }
}

async fn next_frame(conn: &mut Option<(Sink, Source)>) -> Option<Result<Message, String>> {
    match conn {
        Some((_, source)) => source.next().await.map(|r| r.map_err(|e| e.to_string())),
        None => std::future::pending().await,
    }
}

/// Run a worker until `shutdown` completes and its tasks in flight are done (or the grace period
/// runs out). Returns an error only when the worker cannot go on: a wrong key, or an impostor hub.
pub async fn run(opts: Options, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let mut d = Driver {
        sm: Worker::new(opts.worker.clone()),
        epoch: Instant::now(),
        conn: None,
        hubs: taskhub_core::HubList::new(&opts.url),
    };
    let capacity = opts.worker.concurrency.max(1) as usize * 2 + PROGRESS_BACKLOG;
    let (to_loop, mut from_jobs) = mpsc::channel::<FromJob>(capacity);
    // A light handler runs on the loop itself, so no cancel can reach it while it runs.
    let never_cancelled = Cancellation::new();
    let exec = opts.exec.clone().map(Arc::new);
    let handlers = opts.handlers.clone();
    // Jobs that are still running, by token: what stops each when its task is cancelled.
    let mut stops: std::collections::HashMap<u64, Stop> = std::collections::HashMap::new();
    tokio::pin!(shutdown);
    let mut stopping = false;
    loop {
        d.transmit().await;
        while let Some(event) = d.sm.poll_event() {
            match event {
                Event::Connect => {
                    let url = d.hubs.current().to_string();
                    match transport::connect(&url, opts.connect_timeout, opts.ca.as_deref()).await {
                        Ok(ws) => {
                            d.conn = Some(ws.split());
                            let mut entropy = [0u8; NONCE_BYTES];
                            let _ = getrandom::fill(&mut entropy);
                            let now = d.now();
                            d.sm.handle_connected(now, entropy);
                        }
                        Err(e) => d.lost(&e.to_string()),
                    }
                }
                Event::Close => {
                    d.close().await;
                    d.lost("");
                }
                Event::Authenticated { session, prefetch } => {
                    if let Some(asked) = opts.worker.prefetch
                        && prefetch < asked
                    {
                        tracing::warn!(
                            "--prefetch {asked} is above the hub's limit; using {prefetch}"
                        );
                    }
                    let url = d.hubs.current();
                    tracing::info!(%session, %url, prefetch, "connected; consuming {:?}", opts.worker.queues);
                }
                Event::Run(job) if exec.is_none() && !handlers.is_heavy(job.kind.as_deref()) => {
                    // A microsecond of work: a trip through the blocking pool would cost more.
                    let now = d.now();
                    // Its reports, kept here until it returns, then given in order (in a block:
                    // none of it is held across the awaits below).
                    let ran = {
                        let reports = std::cell::RefCell::new(Vec::new());
                        let report = |fraction: f64, message: Option<&str>| {
                            reports
                                .borrow_mut()
                                .push((fraction, message.map(str::to_string)));
                        };
                        let ran = run_handler(&handlers, &job, &never_cancelled, &report);
                        for (fraction, message) in reports.take() {
                            d.sm.report_progress(job.token, fraction, message, now);
                        }
                        ran
                    };
                    match ran {
                        Ok(Outcome::Wait { ms, then }) => {
                            let (stop, mut stopped) = stop_pair();
                            stops.insert(job.token, stop);
                            let to_loop = to_loop.clone();
                            tokio::spawn(async move {
                                let wait = async {
                                    tokio::time::sleep(Duration::from_millis(ms)).await;
                                    Ok(then.into())
                                };
                                let result = stopped.unless_cancelled(wait).await;
                                let token = job.token;
                                let _ = to_loop.send(FromJob::Done { token, result }).await;
                            });
                        }
                        Ok(done) => {
                            let result = Ok(settle(done).await); // no wait: ready at once
                            d.sm.handle_task_done(job.token, result, now);
                        }
                        Err(f) => d.sm.handle_task_done(job.token, Err(f), now),
                    }
                }
                Event::Run(job) => {
                    let (stop, stopped) = stop_pair();
                    stops.insert(job.token, stop);
                    spawn_job(
                        job,
                        exec.clone(),
                        handlers.clone(),
                        opts.max_result_bytes,
                        stopped,
                        to_loop.clone(),
                    );
                }
                Event::Cancel { token, id } => {
                    if let Some(stop) = stops.remove(&token) {
                        tracing::info!(task = %id, "task cancelled by a client; stopping it");
                        stop.flag.cancel();
                        let _ = stop.now.send(());
                    }
                }
                Event::Retrying { in_ms, reason } => {
                    tracing::warn!(
                        "hub unreachable ({reason}); retrying in {:.1} s",
                        in_ms as f64 / 1000.0
                    );
                }
                Event::HubError { code, message } => tracing::warn!("hub: {message} ({code})"),
                Event::Failed(reason) => {
                    d.close().await;
                    return Err(reason);
                }
                Event::Stopped { abandoned } => {
                    d.close().await;
                    if abandoned > 0 {
                        return Err(format!(
                            "the grace period ran out with {abandoned} task(s) still running; \
                             they were abandoned (the hub gives them to other workers)"
                        ));
                    }
                    return Ok(());
                }
            }
        }
        d.transmit().await;
        let timeout =
            d.sm.poll_timeout()
                .map(|t| d.epoch + Duration::from_millis(t.0));
        tokio::select! {
            frame = next_frame(&mut d.conn) => {
                d.on_frame(frame);
                // Take whatever else has already arrived, so the acks it causes leave together.
                for _ in 0..BATCH {
                    match next_frame(&mut d.conn).now_or_never() {
                        Some(frame) => d.on_frame(frame),
                        None => break,
                    }
                }
            }
            Some(from_job) = from_jobs.recv() => {
                let now = d.now();
                match from_job {
                    FromJob::Progress { token, fraction, message } => {
                        d.sm.report_progress(token, fraction, message, now);
                    }
                    FromJob::Done { token, result } => {
                        stops.remove(&token);
                        d.sm.handle_task_done(token, result, now);
                    }
                }
            }
            _ = sleep_until(timeout) => {
                let now = d.now();
                d.sm.handle_timeout(now);
            }
            _ = &mut shutdown, if !stopping => {
                stopping = true;
                let s = d.sm.status();
                tracing::info!("stopping: finishing {} task(s) in flight", s.running);
                let now = d.now();
                d.sm.stop(now);
            }
        }
    }
}

/// `url`, or the comma-separated hubs it lists.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn spawn_job(
    job: Job,
    exec: Option<Arc<String>>,
    handlers: Arc<Handlers>,
    max_result_bytes: usize,
    mut stopped: Stopped,
    to_loop: ToLoop,
) {
    tokio::spawn(async move {
        let token = job.token;
        let result = match exec {
            Some(cmd) => {
                let report = reports_to(&to_loop, token);
                stopped
                    .unless_cancelled(exec::run(&cmd, &job, max_result_bytes, &report))
                    .await
            }
            None => run_heavy(handlers, job, stopped, to_loop.clone()).await,
        };
        let _ = to_loop.send(FromJob::Done { token, result }).await;
    });
}

/// Run a task's handler. A handler that panics fails its task (retryable, with the panic's
/// message) and the worker carries on.
fn run_handler(
    handlers: &Handlers,
    job: &Job,
    cancellation: &Cancellation,
    report: &dyn Fn(f64, Option<&str>),
) -> Result<Outcome, Failure> {
    let run = || handlers.run_job(job, cancellation, Some(Reporter(report)));
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(Failure::retryable(format!("handler panicked: {message}")))
    })
}

/// Heavy handlers are CPU work: they run on the blocking pool, off the reactor. A thread cannot
/// be stopped from outside: a cancel sets the flag the handler sees ([`Cancellation`]), and the
/// run slot is free once the handler returns. A wait it asks for ends at the cancel.
async fn run_heavy(
    handlers: Arc<Handlers>,
    job: Job,
    mut stopped: Stopped,
    to_loop: ToLoop,
) -> Result<Payload, Failure> {
    let flag = stopped.flag.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        run_handler(&handlers, &job, &flag, &reports_to(&to_loop, job.token))
    })
    .await
    .map_err(|e| Failure::retryable(format!("handler did not finish: {e}")))??;
    stopped
        .unless_cancelled(async { Ok(settle(outcome).await) })
        .await
}

/// A handler's result, after the wait it asked for (if any), on tokio's timer.
async fn settle(outcome: Outcome) -> Payload {
    match outcome {
        Outcome::Done(v) => Payload::Json(v),
        Outcome::Bytes(b) => Payload::Bytes(b),
        Outcome::Wait { ms, then } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Payload::Json(then)
        }
    }
}
