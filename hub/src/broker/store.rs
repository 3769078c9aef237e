//! Where ready tasks live. The broker only talks to [`TaskStore`], so a durable store can replace
//! the in-memory one without touching queue semantics.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use taskhub_core::{QueueName, TaskId};

/// The bytes a task's payload takes, counted in a shared total for as long as the task exists.
/// Dropping the task (acked, taken by `get`, dead-lettered, dropped) gives them back, whatever the
/// path, so the total cannot drift.
#[derive(Debug)]
pub struct Charge {
    bytes: usize,
    total: Arc<AtomicUsize>,
}

impl Charge {
    pub fn new(bytes: usize, total: &Arc<AtomicUsize>) -> Charge {
        total.fetch_add(bytes, Ordering::Relaxed);
        Charge {
            bytes,
            total: total.clone(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Clone for Charge {
    fn clone(&self) -> Charge {
        Charge::new(self.bytes, &self.total)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl PartialEq for Charge {
    fn eq(&self, other: &Charge) -> bool {
        self.bytes == other.bytes
    }
}

/// The length of `value` as JSON text, without building the text.
pub fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, value);
    n.0
}

/// A task as the hub holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTask {
    pub id: TaskId,
    pub queue: QueueName,
    pub kind: Option<String>,
    pub payload: Value,
    pub reply_to: Option<QueueName>,
    pub max_attempts: u32,
    /// Deliveries so far.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Its share of the hub's `max_stored_bytes`.
    pub charge: Charge,
}

/// One queue's ready tasks, in order.
pub trait TaskStore: Default + Send + 'static {
    fn push_back(&mut self, task: StoredTask);
    fn push_front(&mut self, task: StoredTask);
    fn pop_front(&mut self) -> Option<StoredTask>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The in-memory store: a ring buffer.
#[derive(Debug, Default)]
pub struct MemoryStore(VecDeque<StoredTask>);

impl TaskStore for MemoryStore {
    fn push_back(&mut self, task: StoredTask) {
        self.0.push_back(task);
    }
    fn push_front(&mut self, task: StoredTask) {
        self.0.push_front(task);
    }
    fn pop_front(&mut self) -> Option<StoredTask> {
        self.0.pop_front()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}
