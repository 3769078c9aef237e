//! Tasks that are not ready yet: put with a delay, or waiting out a retry's backoff. One ordered
//! set by due time, so the broker's one timer sleeps until the first of them and waiting costs
//! nothing; an index by id for taking one out early (a deleted queue).

use std::collections::BTreeMap;

use taskhub_core::{Millis, QueueName, TaskId};

use super::StoredTask;
use super::idhash::IdMap;

#[derive(Debug, Default)]
pub(super) struct Scheduled {
    by_due: BTreeMap<(Millis, TaskId), StoredTask>,
    due_of: IdMap<TaskId, Millis>,
}

impl Scheduled {
    /// Hold `task` until `due`.
    pub fn insert(&mut self, task: StoredTask, due: Millis) {
        let id = task.id;
        if let Some(old) = self.due_of.insert(id, due) {
            self.by_due.remove(&(old, id));
        }
        self.by_due.insert((due, id), task);
    }

    pub fn take(&mut self, id: TaskId) -> Option<StoredTask> {
        let due = self.due_of.remove(&id)?;
        self.by_due.remove(&(due, id))
    }

    /// The first task due by `now`, if any, taken out; it is ready from now on.
    pub fn pop_due(&mut self, now: Millis) -> Option<StoredTask> {
        let (&(due, id), _) = self.by_due.first_key_value()?;
        if due > now {
            return None;
        }
        self.due_of.remove(&id);
        let mut task = self.by_due.remove(&(due, id))?;
        task.not_before = None;
        Some(task)
    }

    pub fn next_due(&self) -> Option<Millis> {
        self.by_due.first_key_value().map(|((due, _), _)| *due)
    }

    /// The ids of `queue`'s scheduled tasks (a scan: for deleting a queue only).
    pub fn of_queue(&self, queue: &QueueName) -> Vec<TaskId> {
        self.by_due
            .values()
            .filter(|t| t.queue == *queue)
            .map(|t| t.id)
            .collect()
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &StoredTask> {
        self.by_due.values()
    }
}
