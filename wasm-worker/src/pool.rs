//! Dedicated Web Workers that run task handlers, so the page stays responsive while a tab computes.
//!
//! Each worker loads `compute.js` (served by the hub), which loads this same wasm module and calls
//! [`crate::run_task`]. Jobs go out as `{token, kind, payload, id, attempt, session}`, `payload`
//! being JSON text or, for a binary payload, a `Uint8Array` (its buffer transferred, not copied);
//! results come back as `{token, out, bytes}` where `out` is `run_task`'s JSON text and `bytes`
//! a binary result's `Uint8Array`, if it has one.

use std::collections::VecDeque;
use std::rc::Rc;

use js_sys::{Array, Object, Reflect, Uint8Array};
use taskhub_core::Payload;
use taskhub_core::worker::Job;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{ErrorEvent, MessageEvent, Worker, WorkerOptions, WorkerType};

struct Slot {
    worker: Worker,
    /// The token of the job this worker is running.
    current: Option<u64>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(ErrorEvent)>,
}

pub(crate) struct Pool {
    slots: Vec<Slot>,
    waiting: VecDeque<Job>,
}

/// What a pool worker reported: `run_task`'s JSON and a binary result's bytes, or why there is
/// none.
pub(crate) type Report = Result<(String, Option<Vec<u8>>), String>;

impl Pool {
    /// Start `size` Web Workers running `script_url`. `on_report` gets each finished job with the
    /// index of the worker that ran it.
    pub fn new(
        script_url: &str,
        size: usize,
        on_report: Rc<dyn Fn(usize, Report)>,
    ) -> Result<Pool, String> {
        let opts = WorkerOptions::new();
        opts.set_type(WorkerType::Module);
        let mut slots = Vec::with_capacity(size);
        for index in 0..size.max(1) {
            let worker = Worker::new_with_options(script_url, &opts)
                .map_err(|_| format!("cannot start a Web Worker from {script_url}"))?;
            let report = on_report.clone();
            let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
                let data = e.data();
                let out = Reflect::get(&data, &"out".into())
                    .ok()
                    .and_then(|o| o.as_string());
                let bytes = Reflect::get(&data, &"bytes".into())
                    .ok()
                    .and_then(|b| b.dyn_into::<Uint8Array>().ok())
                    .map(|b| b.to_vec());
                report(
                    index,
                    out.map(|out| (out, bytes))
                        .ok_or_else(|| "compute worker sent no result".to_string()),
                );
            });
            let report = on_report.clone();
            let on_error = Closure::<dyn FnMut(ErrorEvent)>::new(move |e: ErrorEvent| {
                // A crash inside the Web Worker: the job it held fails and may be retried.
                report(
                    index,
                    Err(format!("compute worker crashed: {}", e.message())),
                );
            });
            worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
            worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
            slots.push(Slot {
                worker,
                current: None,
                _on_message: on_message,
                _on_error: on_error,
            });
        }
        Ok(Pool {
            slots,
            waiting: VecDeque::new(),
        })
    }

    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Run a job on a free worker, or queue it until one frees up.
    pub fn run(&mut self, job: Job) {
        self.waiting.push_back(job);
        self.dispatch();
    }

    /// Worker `index` reported: returns the token of the job it ran, and gives it the next job.
    pub fn finished(&mut self, index: usize) -> Option<u64> {
        let token = self.slots.get_mut(index).and_then(|s| s.current.take());
        self.dispatch();
        token
    }

    fn dispatch(&mut self) {
        while let Some(slot) = self.slots.iter_mut().find(|s| s.current.is_none()) {
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            let msg = Object::new();
            let _ = Reflect::set(&msg, &"token".into(), &(job.token as f64).into());
            let kind = job
                .kind
                .as_deref()
                .map(JsValue::from)
                .unwrap_or(JsValue::NULL);
            let _ = Reflect::set(&msg, &"kind".into(), &kind);
            let transfer = Array::new();
            let payload: JsValue = match &job.payload {
                Payload::Bytes(b) => {
                    let bytes = Uint8Array::from(&b[..]);
                    transfer.push(&bytes.buffer());
                    bytes.into()
                }
                other => other.to_json_lossy().to_string().into(),
            };
            let _ = Reflect::set(&msg, &"payload".into(), &payload);
            let _ = Reflect::set(&msg, &"id".into(), &(job.id.0 as f64).into());
            let _ = Reflect::set(&msg, &"attempt".into(), &job.attempt.into());
            let session = job.session.map_or(0.0, |s| s.0 as f64);
            let _ = Reflect::set(&msg, &"session".into(), &session.into());
            if slot
                .worker
                .post_message_with_transfer(&msg, &transfer)
                .is_err()
            {
                self.waiting.push_front(job);
                return;
            }
            slot.current = Some(job.token);
        }
    }
}

impl Pool {
    /// Stop every Web Worker now. Safe from inside a pool callback; the closures are freed when
    /// the `Pool` is dropped.
    pub fn shutdown(&mut self) {
        self.waiting.clear();
        for slot in &mut self.slots {
            slot.worker.set_onmessage(None);
            slot.worker.set_onerror(None);
            slot.worker.terminate();
            slot.current = None;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}
