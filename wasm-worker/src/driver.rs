//! [`BrowserWorker`]: the browser's driver around `taskhub_core::worker::Worker`.
//!
//! Every browser callback (socket, timer, pool) feeds one input to the state machine and then
//! calls `pump`, which drains transmits and events and re-arms the single timer. Events for the
//! page are collected while the state is borrowed and delivered after, so page callbacks may call
//! back into the worker.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::{Rc, Weak};

use gloo_timers::callback::Timeout;
use js_sys::Function;
use serde_json::{Value, json};
use taskhub_core::auth::NONCE_BYTES;
use taskhub_core::codec::Frame;
use taskhub_core::handlers::Failure;
use taskhub_core::protocol::TabState;
use taskhub_core::worker::{Event, MeanRunTime, Worker, WorkerConfig};
use taskhub_core::{Millis, Payload, QueueName, Role};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::policy::{Mode, When, mode};
use crate::pool::{self, Cancelled, Pool, Report};
use crate::socket::{Connection, SocketEvent};

/// Past this many bytes waiting in the socket, frames wait in our own bounded queue.
const HIGH_WATER: u32 = 1 << 20;
/// How often to look again while the socket is backed up.
const DRAIN_POLL_MS: u64 = 20;

struct Inner {
    sm: Worker,
    /// The hubs to try, in turn: after a failed or lost connection the next one is tried.
    hubs: taskhub_core::HubList,
    me: Weak<RefCell<Inner>>,
    conn: Connection,
    /// A pool already shut down, freed on a later turn (never inside its own callbacks).
    retired_pool: Option<Pool>,
    timer: Option<Timeout>,
    /// When `timer` fires.
    timer_at: Option<Millis>,
    pool: Option<Pool>,
    compute_url: String,
    outbox: VecDeque<Frame>,
    kinds: HashMap<u64, String>,
    stop_waiters: Vec<Function>,
    listener: Option<Function>,
    /// Page events produced outside `pump`, delivered with the next batch.
    page_events: Vec<JsValue>,
    /// Tasks started and finished this turn, by kind: one `tasks` event per turn, not one per
    /// task (a page event costs more than a tiny task).
    tally: Tally,
    /// How long handlers take, for the batch depth.
    run_ms: RunTime,
    epoch: f64,
    last_now: u64,
    /// The link's `when`, and what the page last said of itself.
    when: When,
    conditions: Conditions,
    /// Mean run time last told to the hub (told again when it moves by a quarter).
    told_ms: Option<f64>,
}

/// What the page knows of itself.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Conditions {
    visible: bool,
    charging: Option<bool>,
    battery: Option<f64>,
}

impl Default for Conditions {
    fn default() -> Conditions {
        Conditions {
            visible: true,
            charging: None,
            battery: None,
        }
    }
}

pub(crate) fn js_event(v: Value) -> JsValue {
    js_sys::JSON::parse(&v.to_string()).unwrap_or(JsValue::NULL)
}

pub(crate) fn entropy() -> [u8; NONCE_BYTES] {
    let mut buf = [0u8; NONCE_BYTES];
    let crypto = js_sys::Reflect::get(&js_sys::global(), &"crypto".into())
        .ok()
        .and_then(|c| c.dyn_into::<web_sys::Crypto>().ok());
    match crypto {
        Some(c) if c.get_random_values_with_u8_array(&mut buf).is_ok() => {}
        // No Web Crypto: the nonce only has to be unpredictable to an eavesdropper for this one
        // handshake; Math.random is the best left.
        _ => buf
            .iter_mut()
            .for_each(|b| *b = (js_sys::Math::random() * 256.0) as u8),
    }
    buf
}

fn random_u64() -> u64 {
    (js_sys::Math::random() * (u64::MAX as f64)) as u64
}

impl Inner {
    fn now(&mut self) -> Millis {
        let t = (js_sys::Date::now() - self.epoch).max(0.0) as u64;
        self.last_now = self.last_now.max(t);
        Millis(self.last_now)
    }

    /// Drain the state machine; returns page events to deliver once the borrow is released.
    fn pump(&mut self) -> Vec<JsValue> {
        let mut out = std::mem::take(&mut self.page_events);
        loop {
            while let Some(frame) = self.sm.poll_transmit() {
                self.outbox.push_back(frame);
            }
            self.flush();
            let Some(event) = self.sm.poll_event() else {
                break;
            };
            self.on_event(event, &mut out);
        }
        out.extend(self.tally.take());
        self.arm_timer();
        out
    }

    fn flush(&mut self) {
        let Some(socket) = self.conn.socket() else {
            self.outbox.clear();
            return;
        };
        while socket.is_open() && socket.buffered() < HIGH_WATER {
            let Some(frame) = self.outbox.pop_front() else {
                return;
            };
            if socket.send(&frame).is_err() {
                return;
            }
        }
    }

    fn on_event(&mut self, event: Event, out: &mut Vec<JsValue>) {
        match event {
            Event::Connect => self.connect(out),
            Event::Close => {
                self.retire_socket();
                self.lost("");
            }
            Event::Authenticated { session, .. } => {
                out.push(js_event(json!({"type": "connected", "session": session})));
            }
            Event::Run(job) => {
                let kind = job.kind.clone().unwrap_or_default();
                self.tally.add(Tally::STARTED, &kind);
                self.kinds.insert(job.token, kind);
                if let Some(pool) = &mut self.pool {
                    pool.run(job);
                }
            }
            Event::Cancel { token, id } => {
                let kind = self.kinds.remove(&token).unwrap_or_default();
                self.tally.add(Tally::CANCELLED, &kind);
                let stopped = match &mut self.pool {
                    Some(pool) => pool.cancel(token),
                    None => Cancelled::NotHere,
                };
                let now = self.now();
                let lost = match stopped {
                    Cancelled::Waiting => Some(Vec::new()),
                    Cancelled::Stopped { lost } => Some(lost),
                    // Its report is on its way, or it will come: the slot frees then.
                    Cancelled::NotHere | Cancelled::Unstoppable => None,
                };
                if let Some(lost) = lost {
                    self.sm
                        .handle_task_done(token, Err(Failure::permanent("cancelled")), now);
                    // The jobs that shared its Web Worker went down with it, unfinished: back
                    // to the hub, without spending an attempt.
                    for token in lost {
                        self.kinds.remove(&token);
                        self.sm.give_back(token, now);
                    }
                }
                out.push(js_event(json!({"type": "cancelled", "task": id})));
            }
            Event::Retrying { in_ms, reason } => {
                out.push(js_event(
                    json!({"type": "retrying", "in_ms": in_ms, "reason": reason}),
                ));
            }
            Event::HubError { code, message } => {
                out.push(js_event(
                    json!({"type": "error", "code": code, "message": message}),
                ));
            }
            Event::Failed(reason) => {
                self.retire_socket();
                out.push(js_event(json!({"type": "failed", "reason": reason})));
            }
            Event::Stopped { abandoned } => {
                // Tear everything down: socket, Web Workers, timer.
                self.retire_socket();
                if let Some(mut pool) = self.pool.take() {
                    pool.shutdown();
                    self.retired_pool = Some(pool);
                }
                out.push(js_event(json!({"type": "stopped", "abandoned": abandoned})));
            }
        }
    }

    fn connect(&mut self, out: &mut Vec<JsValue>) {
        let me = self.me.clone();
        let url = self.hubs.current().to_string();
        let opened = self.conn.open(&url, move |id, ev| {
            if let Some(inner) = me.upgrade() {
                on_socket(&inner, id, ev);
            }
        });
        if let Err(reason) = opened {
            out.push(js_event(json!({"type": "error", "message": reason})));
            self.lost(&reason);
        }
    }

    /// The connection failed or was lost: the next attempt goes to the next hub of the list.
    fn lost(&mut self, reason: &str) {
        self.hubs.advance();
        let now = self.now();
        self.sm.handle_disconnected(now, reason, random_u64());
    }

    fn retire_socket(&mut self) {
        self.conn.retire();
        self.outbox.clear();
    }

    fn arm_timer(&mut self) {
        let now = self.now();
        let mut at = self.sm.poll_timeout();
        if !self.outbox.is_empty() {
            let soon = now + DRAIN_POLL_MS;
            at = Some(at.map_or(soon, |t| t.min(soon)));
        }
        // Most inputs leave the deadline where it was or move it later (each message moves the
        // heartbeat, each finished task the lease touches): keep the armed timer rather than pay
        // for a new closure and setTimeout on every message. One that fires early finds nothing
        // due and arms again.
        if self.timer.is_some()
            && let (Some(armed), Some(wanted)) = (self.timer_at, at)
            && armed <= wanted
        {
            return;
        }
        self.timer_at = at;
        self.timer = at.map(|t| {
            let me = self.me.clone();
            let delay = u32::try_from(t - now).unwrap_or(u32::MAX);
            Timeout::new(delay, move || {
                if let Some(inner) = me.upgrade() {
                    with(&inner, |i| {
                        i.timer_at = None; // fired: the next pump must arm again
                        let now = i.now();
                        i.sm.handle_timeout(now);
                    });
                }
            })
        });
    }

    fn mode(&self) -> Mode {
        mode(self.when, self.conditions.visible, self.conditions.charging)
    }

    /// Work as the policy says for the page's conditions now, and tell the hub how the tab is
    /// doing (`state`, for `stats` and the dashboard).
    fn apply_policy(&mut self) {
        let now = self.now();
        let mode = self.mode();
        self.sm.set_paused(mode == Mode::Paused);
        if let Some(pool) = &mut self.pool {
            let (depth, tasks) = batch_shape(mode, &self.run_ms, pool.size());
            pool.set_depth(depth);
            self.sm.set_concurrency(tasks, now);
        }
        self.tell_state();
    }

    fn tell_state(&mut self) {
        let ms = self.run_ms.0.ms();
        self.told_ms = ms;
        self.sm.report_state(TabState {
            visible: self.conditions.visible,
            charging: self.conditions.charging,
            battery: self.conditions.battery,
            ms_per_task: ms.map(|m| (m * 1000.0).round() / 1000.0),
            paused: false, // the state machine fills it in
        });
    }

    fn on_report(&mut self, index: usize, report: Report) {
        let now = self.now();
        let mode = self.mode();
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        let mut finished = Vec::new();
        let mut unstarted = Vec::new();
        match report {
            Report::Progress {
                token,
                fraction,
                message,
            } => {
                // A report after its job finished, or from a Web Worker replaced since, is
                // stale; the state machine knows only running jobs.
                if pool.holds(index, token) {
                    self.sm.report_progress(token, fraction, message, now);
                }
                return;
            }
            Report::Crashed(why) => {
                for token in pool.crashed(index) {
                    finished.push((token, Err(Failure::retryable(why.clone()))));
                }
            }
            Report::Done(list) => {
                for done in list.into_iter().filter(|d| pool.finished(index, d.token)) {
                    if done.unstarted {
                        unstarted.push(done.token);
                        continue;
                    }
                    if let Some(ms) = done.ms {
                        self.run_ms.record(ms);
                    }
                    finished.push((done.token, outcome(done.report)));
                }
            }
        }
        // Set before anything below starts more.
        let (depth, tasks) = batch_shape(mode, &self.run_ms, pool.size());
        pool.set_depth(depth);
        // A batch cut short, and jobs still waiting here for a Web Worker beyond what the
        // smaller batches take at once: back to the hub, for whoever has a free slot.
        unstarted.extend(pool.surplus());
        self.sm.set_concurrency(tasks, now);
        for (token, result) in finished {
            let kind = self.kinds.remove(&token).unwrap_or_default();
            let ok = result.is_ok();
            self.sm.handle_task_done(token, result, now);
            self.tally
                .add(if ok { Tally::DONE } else { Tally::FAILED }, &kind);
        }
        // After the results, which shrink the credit window if the tasks turned slow: the hub
        // hears the smaller window before it gets these back, and hands them to others.
        for token in unstarted {
            self.kinds.remove(&token);
            self.sm.give_back(token, now);
        }
        // The dashboard shows the tab's speed: told again when it moves by a quarter.
        let moved = match (self.told_ms, self.run_ms.0.ms()) {
            (Some(was), Some(is)) => (is - was).abs() > was.max(0.01) / 4.0,
            (None, Some(_)) => true,
            _ => false,
        };
        if moved {
            self.tell_state();
        }
    }
}

/// How the tab runs tasks in `mode`: jobs per Web Worker batch, and tasks at once in all. Deep
/// batches for tiny tasks, one at a time per Web Worker for slow ones; one task in all while
/// hidden or on battery.
fn batch_shape(mode: Mode, run_ms: &RunTime, web_workers: usize) -> (usize, u32) {
    if mode == Mode::Gentle {
        return (1, 1);
    }
    let depth = run_ms.depth();
    let slots = u32::try_from(web_workers).unwrap_or(1);
    (
        depth,
        slots.saturating_mul(u32::try_from(depth).unwrap_or(1)),
    )
}

/// A compute worker's report of one job as the job's result.
fn outcome(report: Result<(String, Option<Vec<u8>>), String>) -> Result<Payload, Failure> {
    let (text, bytes) = report.map_err(Failure::retryable)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v["ok"] == Value::Bool(true) => Ok(match bytes {
            Some(b) => Payload::from(b),
            None => Payload::Json(v["result"].clone()),
        }),
        Ok(v) => Err(Failure {
            message: v["error"].as_str().unwrap_or("task failed").to_string(),
            retry: v["retry"].as_bool().unwrap_or(true),
            retry_after: v["retry_after_ms"]
                .as_u64()
                .map(std::time::Duration::from_millis),
        }),
        Err(e) => Err(Failure::retryable(format!("unreadable result: {e}"))),
    }
}

/// Tasks started, done and failed by kind, since the last `tasks` event.
#[derive(Debug, Default)]
struct Tally(BTreeMap<&'static str, BTreeMap<String, u64>>);

impl Tally {
    const STARTED: &'static str = "started";
    const DONE: &'static str = "done";
    const FAILED: &'static str = "failed";
    const CANCELLED: &'static str = "cancelled";

    fn add(&mut self, what: &'static str, kind: &str) {
        let counts = self.0.entry(what).or_default();
        match counts.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                counts.insert(kind.to_string(), 1);
            }
        }
    }

    /// `{type: "tasks", started: {kind: n}, done: {...}, failed: {...}}`, if anything happened.
    fn take(&mut self) -> Option<JsValue> {
        if self.0.is_empty() {
            return None;
        }
        let mut event = json!({"type": "tasks", "started": {}, "done": {}, "failed": {}});
        for (what, counts) in std::mem::take(&mut self.0) {
            event[what] = json!(counts);
        }
        Some(js_event(event))
    }
}

/// The handlers' own run time, as the compute workers measure it, and the batch depth it calls
/// for: as many jobs per Web Worker as fill [`RunTime::BATCH_MS`], at least one.
#[derive(Debug, Default)]
struct RunTime(MeanRunTime);

impl RunTime {
    /// A batch's worth of work: long enough that a `postMessage` each way is a small part of
    /// it, short enough that results (reported per batch) are not held back.
    const BATCH_MS: f64 = 2.0;

    fn record(&mut self, ms: f64) {
        self.0.record(ms);
    }

    fn depth(&self) -> usize {
        match self.0.ms() {
            // Unknown tasks go one at a time: a slow one must not wait behind another.
            None => 1,
            Some(m) => ((Self::BATCH_MS / m.max(1e-3)) as usize).clamp(1, pool::MAX_DEPTH),
        }
    }
}

/// Borrow, apply one input, pump, release, then tell the page.
fn with(inner: &Rc<RefCell<Inner>>, input: impl FnOnce(&mut Inner)) {
    let (events, listener, resolved) = {
        let Ok(mut i) = inner.try_borrow_mut() else {
            return;
        };
        // What was retired earlier is safe to free now: we are not inside its callbacks.
        i.conn.free_retired();
        i.retired_pool = None;
        input(&mut i);
        let events = i.pump();
        let resolved = if i.sm.is_finished() {
            std::mem::take(&mut i.stop_waiters)
        } else {
            Vec::new()
        };
        (events, i.listener.clone(), resolved)
    };
    deliver(listener, events, resolved);
}

fn deliver(listener: Option<Function>, events: Vec<JsValue>, resolved: Vec<Function>) {
    if let Some(f) = listener {
        for e in events {
            let _ = f.call1(&JsValue::NULL, &e);
        }
    }
    for resolve in resolved {
        let _ = resolve.call0(&JsValue::NULL);
    }
}

fn on_socket(inner: &Rc<RefCell<Inner>>, id: u64, ev: SocketEvent) {
    with(inner, |i| {
        if !i.conn.is_current(id) {
            return; // an old socket's late event
        }
        let now = i.now();
        match ev {
            SocketEvent::Open => i.sm.handle_connected(now, entropy()),
            SocketEvent::Text(text) => i.sm.handle_message(&text, now),
            SocketEvent::Binary(frame) => i.sm.handle_binary(&frame, now),
            SocketEvent::Closed(reason) => {
                i.retire_socket();
                i.lost(&reason);
            }
        }
    });
}

/// A browser tab working for a taskhub hub.
///
/// ```js
/// const w = new BrowserWorker("ws://127.0.0.1:7878", token, "tasks", 4, new URL("./compute.js", import.meta.url).href);
/// w.onEvent(e => console.log(e));
/// w.start();
/// await w.stop();
/// ```
#[wasm_bindgen]
pub struct BrowserWorker {
    inner: Rc<RefCell<Inner>>,
}

#[wasm_bindgen]
impl BrowserWorker {
    /// `hub_url` may list several hubs, comma-separated: after a failed or lost connection the
    /// next one is tried. `queues` is comma-separated. `concurrency` Web Workers run tasks;
    /// `compute_url` is the module script they load (the hub serves it as `/compute.js`).
    #[wasm_bindgen(constructor)]
    pub fn new(
        hub_url: String,
        key: String,
        queues: &str,
        concurrency: u32,
        compute_url: String,
    ) -> Result<BrowserWorker, JsError> {
        if key.is_empty() {
            return Err(JsError::new("no token: the link must carry #token=..."));
        }
        let (key_id, secret) =
            taskhub_core::token::key_or_token(&key).map_err(|e| JsError::new(&e.to_string()))?;
        let queues = queues
            .split(',')
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(QueueName::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| JsError::new(&e.to_string()))?;
        if queues.is_empty() {
            return Err(JsError::new("no queue to work on"));
        }
        let mut config = WorkerConfig::new(&key_id, secret, queues);
        config.role = Role::Browser;
        config.concurrency = concurrency.clamp(1, 64);
        // The credit window adapts to measured run times (the core's `Window`), as for native
        // workers: deep for tiny tasks, `concurrency + 1` for slow ones.
        config.backoff_max_ms = 10_000;
        // A browser dispatches an event per frame and makes a call per send: several messages
        // per frame, both ways.
        config.batch = true;
        let inner = Rc::new_cyclic(|me| {
            RefCell::new(Inner {
                sm: Worker::new(config),
                hubs: taskhub_core::HubList::new(&hub_url),
                me: me.clone(),
                conn: Connection::default(),
                retired_pool: None,
                timer: None,
                timer_at: None,
                pool: None,
                compute_url,
                outbox: VecDeque::new(),
                kinds: HashMap::new(),
                stop_waiters: Vec::new(),
                listener: None,
                page_events: Vec::new(),
                tally: Tally::default(),
                run_ms: RunTime::default(),
                epoch: js_sys::Date::now(),
                last_now: 0,
                when: When::default(),
                conditions: Conditions::default(),
                told_ms: None,
            })
        });
        Ok(BrowserWorker { inner })
    }

    /// Receive events: `{type: "connected" | "retrying" | "failed" | "error" | "tasks" |
    /// "stopped", ...}`. `tasks` comes at most once per turn of the event loop, with counts by
    /// kind: `{type: "tasks", started: {square: 12}, done: {square: 11}, failed: {}}`.
    #[wasm_bindgen(js_name = onEvent)]
    pub fn on_event(&self, listener: Function) {
        if let Ok(mut i) = self.inner.try_borrow_mut() {
            i.listener = Some(listener);
        }
    }

    /// When the tab works: `"always"` (the default: hidden or on battery it runs one task at
    /// a time) or `"visible"` (it takes no tasks while hidden or on battery), as the join
    /// link's `when=` says.
    #[wasm_bindgen(js_name = setPolicy)]
    pub fn set_policy(&self, when: &str) -> Result<(), JsError> {
        let when = When::parse(when).map_err(|e| JsError::new(&e))?;
        with(&self.inner, |i| {
            i.when = when;
            i.apply_policy();
        });
        Ok(())
    }

    /// What the page knows of itself, whenever it changes: whether it is `visible`, and, where
    /// the browser tells, whether it is `charging` and its `battery` level (0 to 1).
    #[wasm_bindgen(js_name = setConditions)]
    pub fn set_conditions(&self, visible: bool, charging: Option<bool>, battery: Option<f64>) {
        with(&self.inner, |i| {
            i.conditions = Conditions {
                visible,
                charging,
                battery: battery.filter(|b| (0.0..=1.0).contains(b)),
            };
            i.apply_policy();
        });
    }

    /// Start the compute pool and connect.
    pub fn start(&self) -> Result<(), JsError> {
        let me = Rc::downgrade(&self.inner);
        let report: Rc<dyn Fn(usize, Report)> = Rc::new(move |index, report| {
            if let Some(inner) = me.upgrade() {
                with(&inner, |i| i.on_report(index, report));
            }
        });
        {
            let mut i = self
                .inner
                .try_borrow_mut()
                .map_err(|_| JsError::new("worker is busy"))?;
            if i.pool.is_some() {
                return Ok(());
            }
            let size = i.sm.config().concurrency as usize;
            let pool = Pool::new(&i.compute_url, size, report).map_err(|e| JsError::new(&e))?;
            i.pool = Some(pool);
        }
        with(&self.inner, |_| {});
        Ok(())
    }

    /// Stop taking tasks, hand back unstarted ones, finish running ones. Resolves when stopped.
    pub fn stop(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        js_sys::Promise::new(&mut |resolve, _reject| {
            if let Ok(mut i) = inner.try_borrow_mut() {
                i.stop_waiters.push(resolve);
            }
            with(&inner, |i| {
                let now = i.now();
                i.sm.stop(now);
            });
        })
    }

    /// Leave at once (page closing): every leased task is handed back to the hub.
    pub fn abandon(&self) {
        with(&self.inner, |i| {
            let now = i.now();
            i.sm.abandon(now);
        });
    }

    /// `{state, session, running, prefetched, done, failed, kinds: [...]}`.
    pub fn status(&self) -> JsValue {
        let Ok(i) = self.inner.try_borrow() else {
            return JsValue::NULL;
        };
        let mut v = serde_json::to_value(i.sm.status()).unwrap_or(Value::Null);
        let mut kinds: Vec<&String> = i.kinds.values().collect();
        kinds.sort();
        kinds.dedup();
        v["kinds"] = json!(kinds);
        v["workers"] = json!(i.pool.as_ref().map_or(0, Pool::size));
        js_event(v)
    }
}

impl std::fmt::Debug for BrowserWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.inner.try_borrow().map(|i| i.sm.status());
        f.debug_struct("BrowserWorker")
            .field("status", &status.ok())
            .finish()
    }
}
