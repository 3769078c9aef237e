//! Dedicated Web Workers that run task handlers, so the page stays responsive while a tab computes.
//!
//! Each worker loads `compute.js` (served by the hub), which loads this same wasm module and calls
//! [`crate::run_task`]. Jobs go out in batches, `{jobs: [{token, kind, payload, id, attempt,
//! session}, ...]}`, `payload` being JSON text or, for a binary payload, a `Uint8Array` (its
//! buffer transferred, not copied); results come back in batches too, `{results: [{token, out,
//! bytes, ms}, ...]}`, where `out` is `run_task`'s JSON text, `bytes` a binary result's
//! `Uint8Array` if it has one, and `ms` the handler's own run time inside the Web Worker; or
//! `{token, unstarted: true}` for a job the Web Worker never ran because the batch took far longer
//! than it was sized for (those go back to the hub for idle workers).
//!
//! A batch costs one `postMessage` each way however many jobs it holds: with tiny tasks the hops,
//! not the handlers, were the tab's limit. How many jobs a Web Worker holds at once (`depth`) is
//! the driver's to set from `ms`: deep for microsecond tasks, one for slow ones, so slow tasks are
//! never queued behind each other in one Web Worker while another sits idle.

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;

use js_sys::{Array, Object, Reflect, Uint8Array};
use taskhub_core::Payload;
use taskhub_core::worker::Job;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{ErrorEvent, MessageEvent, Worker, WorkerOptions, WorkerType};

/// Most jobs one Web Worker holds at once.
pub(crate) const MAX_DEPTH: usize = 64;

struct Slot {
    worker: Worker,
    /// Tokens of the jobs this worker holds, in the order it runs them.
    held: Vec<u64>,
    /// Its place in the pool, which its reports name (a spare has none yet: `usize::MAX`).
    index: Rc<Cell<usize>>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(ErrorEvent)>,
}

pub(crate) struct Pool {
    slots: Vec<Slot>,
    waiting: VecDeque<Job>,
    depth: usize,
    /// What a Web Worker that replaces a stopped one needs.
    script_url: String,
    on_report: Rc<dyn Fn(usize, Report)>,
    /// A Web Worker started ahead, loaded and idle, to take the place of one stopped by a
    /// cancel at once. Started after the first cancel: a tab never cancelled pays nothing.
    spare: Option<Slot>,
}

/// A spare's index: no place in the pool, so its reports are ignored.
const NO_PLACE: usize = usize::MAX;

/// What [`Pool::cancel`] did with a job.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cancelled {
    /// It had not gone to a Web Worker yet: it was dropped.
    Waiting,
    /// Its Web Worker was stopped and a fresh one took its place. The other jobs it held
    /// (`lost`) were stopped with it and never report.
    Stopped { lost: Vec<u64> },
    /// The pool does not hold it (it finished already).
    NotHere,
    /// No Web Worker could be started to replace its own: it runs on, and reports as usual.
    Unstoppable,
}

/// Start Web Worker number `index` of a pool, reporting to `on_report`.
fn start_slot(
    script_url: &str,
    index: usize,
    on_report: &Rc<dyn Fn(usize, Report)>,
) -> Result<Slot, String> {
    let index = Rc::new(Cell::new(index));
    let place = index.clone();
    let opts = WorkerOptions::new();
    opts.set_type(WorkerType::Module);
    let worker = Worker::new_with_options(script_url, &opts)
        .map_err(|_| format!("cannot start a Web Worker from {script_url}"))?;
    let report = on_report.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
        if let Some(p) = Reflect::get(&e.data(), &"progress".into())
            .ok()
            .filter(JsValue::is_object)
        {
            if let Some(r) = progress_of(&p) {
                report(place.get(), r);
            }
            return;
        }
        let results = Reflect::get(&e.data(), &"results".into())
            .ok()
            .and_then(|r| r.dyn_into::<Array>().ok());
        let report_of = match results {
            Some(list) => Report::Done(list.iter().filter_map(|r| done_of(&r)).collect()),
            None => Report::Crashed("compute worker sent no results".into()),
        };
        report(place.get(), report_of);
    });
    let report = on_report.clone();
    let place = index.clone();
    let on_error = Closure::<dyn FnMut(ErrorEvent)>::new(move |e: ErrorEvent| {
        // A crash inside the Web Worker: the jobs it held fail and may be retried.
        report(
            place.get(),
            Report::Crashed(format!("compute worker crashed: {}", e.message())),
        );
    });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    Ok(Slot {
        worker,
        held: Vec::new(),
        index,
        _on_message: on_message,
        _on_error: on_error,
    })
}

/// Stop a Web Worker now: no report of it is heard after this.
fn stop_slot(slot: &Slot) {
    slot.worker.set_onmessage(None);
    slot.worker.set_onerror(None);
    slot.worker.terminate();
}

/// One finished job, as a pool worker reported it.
#[derive(Debug)]
pub(crate) struct Done {
    pub token: u64,
    /// `run_task`'s JSON and a binary result's bytes, or why there is none.
    pub report: Result<(String, Option<Vec<u8>>), String>,
    /// The handler's run time inside the Web Worker, when it ran.
    pub ms: Option<f64>,
    /// The Web Worker cut its batch short before this job (one before it was slow): it never
    /// ran.
    pub unstarted: bool,
}

/// What a pool worker reported: the jobs it finished, how far one has got, or that it crashed.
#[derive(Debug)]
pub(crate) enum Report {
    Done(Vec<Done>),
    Progress {
        token: u64,
        fraction: f64,
        message: Option<String>,
    },
    Crashed(String),
}

fn progress_of(p: &JsValue) -> Option<Report> {
    let get = |k: &str| Reflect::get(p, &k.into()).ok();
    Some(Report::Progress {
        token: get("token")?.as_f64()? as u64,
        fraction: get("fraction")?.as_f64()?,
        message: get("message").and_then(|m| m.as_string()),
    })
}

fn done_of(entry: &JsValue) -> Option<Done> {
    let get = |k: &str| Reflect::get(entry, &k.into()).ok();
    let token = get("token")?.as_f64()? as u64;
    let out = get("out").and_then(|o| o.as_string());
    let bytes = get("bytes")
        .and_then(|b| b.dyn_into::<Uint8Array>().ok())
        .map(|b| b.to_vec());
    Some(Done {
        token,
        report: out
            .map(|out| (out, bytes))
            .ok_or_else(|| "compute worker sent no result".to_string()),
        ms: get("ms").and_then(|m| m.as_f64()),
        unstarted: get("unstarted").is_some_and(|u| u.is_truthy()),
    })
}

impl Pool {
    /// Start `size` Web Workers running `script_url`. `on_report` gets what each reports, with
    /// the index of the worker.
    pub fn new(
        script_url: &str,
        size: usize,
        on_report: Rc<dyn Fn(usize, Report)>,
    ) -> Result<Pool, String> {
        let mut slots = Vec::with_capacity(size);
        for index in 0..size.max(1) {
            slots.push(start_slot(script_url, index, &on_report)?);
        }
        Ok(Pool {
            slots,
            waiting: VecDeque::new(),
            depth: 1,
            script_url: script_url.to_string(),
            on_report,
            spare: None,
        })
    }

    /// Stop job `token`: drop it if it waits here; if a Web Worker holds it, terminate that Web
    /// Worker (a thread running a handler cannot be interrupted any other way) and start a
    /// fresh one in its place.
    pub fn cancel(&mut self, token: u64) -> Cancelled {
        if let Some(at) = self.waiting.iter().position(|j| j.token == token) {
            self.waiting.remove(at);
            return Cancelled::Waiting;
        }
        let Some(index) = self.slots.iter().position(|s| s.held.contains(&token)) else {
            return Cancelled::NotHere;
        };
        let lost: Vec<u64> = self.slots[index]
            .held
            .iter()
            .copied()
            .filter(|t| *t != token)
            .collect();
        let fresh = match self.spare.take() {
            Some(spare) => {
                spare.index.set(index);
                spare
            }
            None => match start_slot(&self.script_url, index, &self.on_report) {
                Ok(fresh) => fresh,
                // No fresh Web Worker to be had (it started before, so this is all but
                // impossible): the job runs on, and its result is dropped when it comes.
                Err(_) => return Cancelled::Unstoppable,
            },
        };
        // Dropping the old slot frees its callbacks: safe, since a cancel comes from the hub's
        // socket, never from inside one of this pool's own callbacks.
        let old = std::mem::replace(&mut self.slots[index], fresh);
        stop_slot(&old);
        // The next cancel takes a Web Worker already loaded.
        self.spare = start_slot(&self.script_url, NO_PLACE, &self.on_report).ok();
        self.dispatch();
        Cancelled::Stopped { lost }
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Jobs each Web Worker may hold at once (1 to [`MAX_DEPTH`]).
    pub fn set_depth(&mut self, depth: usize) {
        self.depth = depth.clamp(1, MAX_DEPTH);
        self.dispatch();
    }

    /// Run a job on a worker with room, or queue it until one has some.
    pub fn run(&mut self, job: Job) {
        self.waiting.push_back(job);
        self.dispatch();
    }

    /// Jobs waiting here that the Web Workers would not take now at the current depth (it just
    /// went down: the tasks turned slow); they are removed and their tokens returned.
    pub fn surplus(&mut self) -> Vec<u64> {
        let room: usize = self
            .slots
            .iter()
            .map(|s| self.depth.saturating_sub(s.held.len()))
            .sum();
        if self.waiting.len() <= room {
            return Vec::new();
        }
        self.waiting.drain(room..).map(|job| job.token).collect()
    }

    /// Worker `index` is done with the job `token`: whether it held it (a report for a job it
    /// does not hold is stale and ignored).
    pub fn finished(&mut self, index: usize, token: u64) -> bool {
        let Some(slot) = self.slots.get_mut(index) else {
            return false;
        };
        let at = slot.held.iter().position(|h| *h == token);
        at.map(|at| slot.held.remove(at)).is_some()
    }

    /// Whether worker `index` holds job `token` now.
    pub fn holds(&self, index: usize, token: u64) -> bool {
        self.slots
            .get(index)
            .is_some_and(|s| s.held.contains(&token))
    }

    /// Worker `index` crashed: the tokens of every job it held.
    pub fn crashed(&mut self, index: usize) -> Vec<u64> {
        self.slots
            .get_mut(index)
            .map(|slot| std::mem::take(&mut slot.held))
            .unwrap_or_default()
    }

    /// Hand waiting jobs to the workers with room, one message per worker however many jobs.
    /// A busy worker gets more only once half a batch has gathered: deliveries arrive one
    /// socket message at a time, and sending each on its own would be the very per-job hop that
    /// batching is for. An idle worker gets whatever there is at once.
    pub fn dispatch(&mut self) {
        for slot in &mut self.slots {
            if self.waiting.is_empty() {
                return;
            }
            let room = self.depth.saturating_sub(slot.held.len());
            let gathered = self.waiting.len() >= room.min(self.depth.div_ceil(2));
            if room == 0 || !(slot.held.is_empty() || gathered) {
                continue;
            }
            let take = room.min(self.waiting.len());
            let batch: Vec<Job> = self.waiting.drain(..take).collect();
            let jobs = Array::new();
            let transfer = Array::new();
            for job in &batch {
                jobs.push(&job_object(job, &transfer));
            }
            let msg = Object::new();
            let _ = Reflect::set(&msg, &"jobs".into(), &jobs);
            if slot
                .worker
                .post_message_with_transfer(&msg, &transfer)
                .is_err()
            {
                // Nothing was sent: the jobs wait, in order, for another try (each try builds
                // its message afresh from the `Job`).
                for job in batch.into_iter().rev() {
                    self.waiting.push_front(job);
                }
                return;
            }
            slot.held.extend(batch.iter().map(|j| j.token));
        }
    }
}

/// A job as the compute worker reads it; a binary payload's buffer joins `transfer`.
fn job_object(job: &Job, transfer: &Array) -> Object {
    let msg = Object::new();
    let _ = Reflect::set(&msg, &"token".into(), &(job.token as f64).into());
    let kind = job
        .kind
        .as_deref()
        .map(JsValue::from)
        .unwrap_or(JsValue::NULL);
    let _ = Reflect::set(&msg, &"kind".into(), &kind);
    let payload: JsValue = match &job.payload {
        Payload::Bytes(b) => {
            let bytes = Uint8Array::from(&b[..]);
            transfer.push(&bytes.buffer());
            bytes.into()
        }
        Payload::Json(v) => v.to_string().into(),
        other => other.to_json_lossy().to_string().into(),
    };
    let _ = Reflect::set(&msg, &"payload".into(), &payload);
    let _ = Reflect::set(&msg, &"id".into(), &(job.id.0 as f64).into());
    let _ = Reflect::set(&msg, &"attempt".into(), &job.attempt.into());
    let session = job.session.map_or(0.0, |s| s.0 as f64);
    let _ = Reflect::set(&msg, &"session".into(), &session.into());
    let last_error = job
        .last_error
        .as_deref()
        .map_or(JsValue::NULL, JsValue::from);
    let _ = Reflect::set(&msg, &"last_error".into(), &last_error);
    msg
}

impl Pool {
    /// Stop every Web Worker now. Safe from inside a pool callback; the closures are freed when
    /// the `Pool` is dropped.
    pub fn shutdown(&mut self) {
        self.waiting.clear();
        for slot in &mut self.slots {
            stop_slot(slot);
            slot.held.clear();
        }
        if let Some(spare) = &self.spare {
            stop_slot(spare);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}
