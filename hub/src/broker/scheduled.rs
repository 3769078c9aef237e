//! Tasks that are not ready yet: put with a delay, or waiting out a retry's backoff. One ordered
//! map by due time, so the broker's one timer sleeps until the first of them and waiting costs
//! nothing. Each task is boxed: a B-tree's nodes are often half full, and a node of whole tasks
//! would cost nearly twice what `max_stored_bytes` charges for them; a node of pointers wastes
//! a few bytes per task instead.

use std::collections::BTreeMap;

use taskhub_core::{Millis, QueueName, TaskId};

use super::StoredTask;
use super::idhash::IdMap;

#[derive(Debug, Default)]
pub(super) struct Scheduled {
    by_due: BTreeMap<(Millis, TaskId), Box<StoredTask>>,
    /// When each is due, by id (for `cancel`).
    due_of: IdMap<TaskId, Millis>,
}

impl Scheduled {
    /// Hold `task` until `due`.
    pub fn insert(&mut self, task: StoredTask, due: Millis) {
        self.due_of.insert(task.id, due);
        self.by_due.insert((due, task.id), Box::new(task));
    }

    /// The first task due by `now`, if any, taken out; it is ready from now on.
    pub fn pop_due(&mut self, now: Millis) -> Option<StoredTask> {
        let entry = self.by_due.first_entry().filter(|e| e.key().0 <= now)?;
        let mut task = *entry.remove();
        self.due_of.remove(&task.id);
        task.not_before = None;
        Some(task)
    }

    /// Task `id`, if it is here.
    pub fn get(&self, id: TaskId) -> Option<&StoredTask> {
        let due = self.due_of.get(&id)?;
        self.by_due.get(&(*due, id)).map(|t| &**t)
    }

    /// Take out task `id`, if it is here.
    pub fn remove(&mut self, id: TaskId) -> Option<StoredTask> {
        let due = self.due_of.remove(&id)?;
        self.by_due.remove(&(due, id)).map(|t| *t)
    }

    pub fn next_due(&self) -> Option<Millis> {
        self.by_due.first_key_value().map(|((due, _), _)| *due)
    }

    /// Take out every task of `queue` (a scan: for deleting a queue only).
    pub fn take_queue(&mut self, queue: &QueueName) -> Vec<StoredTask> {
        let keys: Vec<(Millis, TaskId)> = self
            .by_due
            .iter()
            .filter(|(_, t)| t.queue == *queue)
            .map(|(k, _)| *k)
            .collect();
        for (_, id) in &keys {
            self.due_of.remove(id);
        }
        keys.iter()
            .filter_map(|k| self.by_due.remove(k))
            .map(|t| *t)
            .collect()
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &StoredTask> {
        self.by_due.values().map(|t| &**t)
    }
}
