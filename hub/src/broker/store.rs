//! Where ready tasks live. The broker only talks to [`TaskStore`], so a durable store can replace
//! the in-memory one without touching queue semantics.

use std::collections::VecDeque;

use serde_json::Value;
use taskhub_core::{QueueName, TaskId};

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
