//! What the broker holds for sessions: leased tasks and waiting `get`s. Each is one type whose
//! views (by id, by deadline, by session) change together, here only.

use std::collections::BTreeSet;

use taskhub_core::protocol::{MAX_PROGRESS_SHOWN, TaskProgress};
use taskhub_core::{Millis, QueueName, SessionId, TaskId};

use super::StoredTask;
use super::idhash::{IdMap, IdSet};

#[derive(Debug)]
pub(super) struct Lease {
    pub session: SessionId,
    pub deadline: Millis,
    pub task: StoredTask,
    /// What its worker last reported of it, and when (for `stats`).
    pub progress: Option<Box<Reported>>,
}

/// A leased task's latest `progress`.
#[derive(Debug)]
pub(super) struct Reported {
    pub fraction: f64,
    pub message: Option<String>,
    pub at: Millis,
}

/// Every task leased out: by id, by when its lease runs out, and by the session holding it.
#[derive(Debug, Default)]
pub(super) struct Leases {
    pub(super) by_task: IdMap<TaskId, Lease>,
    by_deadline: BTreeSet<(Millis, TaskId)>,
    by_session: IdMap<SessionId, IdSet<TaskId>>,
}

impl Leases {
    pub fn grant(&mut self, session: SessionId, task: StoredTask, deadline: Millis) {
        let id = task.id;
        if let Some(old) = self.by_task.insert(
            id,
            Lease {
                session,
                deadline,
                task,
                progress: None,
            },
        ) {
            self.by_deadline.remove(&(old.deadline, id));
            self.forget_holder(old.session, id);
        }
        self.by_deadline.insert((deadline, id));
        self.by_session.entry(session).or_default().insert(id);
    }

    pub fn get(&self, id: &TaskId) -> Option<&Lease> {
        self.by_task.get(id)
    }

    pub fn get_mut(&mut self, id: &TaskId) -> Option<&mut Lease> {
        self.by_task.get_mut(id)
    }

    pub fn take(&mut self, id: TaskId) -> Option<Lease> {
        let lease = self.by_task.remove(&id)?;
        self.by_deadline.remove(&(lease.deadline, id));
        self.forget_holder(lease.session, id);
        Some(lease)
    }

    fn forget_holder(&mut self, session: SessionId, id: TaskId) {
        if let Some(held) = self.by_session.get_mut(&session) {
            held.remove(&id);
            if held.is_empty() {
                self.by_session.remove(&session);
            }
        }
    }

    /// Move a lease's deadline; `false` if there is no such lease.
    pub fn extend(&mut self, id: TaskId, deadline: Millis) -> bool {
        let Some(lease) = self.by_task.get_mut(&id) else {
            return false;
        };
        self.by_deadline.remove(&(lease.deadline, id));
        lease.deadline = deadline;
        self.by_deadline.insert((deadline, id));
        true
    }

    pub fn next_deadline(&self) -> Option<Millis> {
        self.by_deadline.first().map(|(t, _)| *t)
    }

    /// The lease that ran out first, if one has by `now`.
    pub fn first_expired(&self, now: Millis) -> Option<&Lease> {
        let &(deadline, id) = self.by_deadline.first()?;
        (deadline <= now).then(|| self.by_task.get(&id)).flatten()
    }

    /// Tasks `session` holds.
    pub fn held_by(&self, session: SessionId) -> usize {
        self.by_session.get(&session).map_or(0, |h| h.len())
    }

    /// The ids of the tasks `session` holds, highest first.
    pub fn of_session(&self, session: SessionId) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self
            .by_session
            .get(&session)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    }

    pub fn len(&self) -> usize {
        self.by_task.len()
    }

    /// The latest progress of `session`'s tasks that reported any, most recent first, at most
    /// [`MAX_PROGRESS_SHOWN`].
    pub fn progress_of(&self, session: SessionId) -> Vec<TaskProgress> {
        let Some(held) = self.by_session.get(&session) else {
            return Vec::new();
        };
        let mut reported: Vec<(&Lease, &Reported)> = held
            .iter()
            .filter_map(|id| self.by_task.get(id))
            .filter_map(|l| Some((l, l.progress.as_deref()?)))
            .collect();
        reported.sort_by_key(|(l, r)| (std::cmp::Reverse(r.at), l.task.id));
        reported
            .into_iter()
            .take(MAX_PROGRESS_SHOWN)
            .map(|(l, r)| TaskProgress {
                task: l.task.id,
                queue: l.task.queue.clone(),
                fraction: r.fraction,
                message: r.message.clone(),
            })
            .collect()
    }
}

#[derive(Debug)]
pub(super) struct Waiter {
    pub session: SessionId,
    pub req: Option<u64>,
    pub queue: QueueName,
    pub deadline: Millis,
}

/// Every `get` waiting for a task: by key, by when it gives up, and counted per session. (Each
/// queue keeps its waiters' keys in arrival order; a key whose waiter is gone is skipped.)
#[derive(Debug, Default)]
pub(super) struct Waiters {
    by_key: IdMap<u64, Waiter>,
    by_deadline: BTreeSet<(Millis, u64)>,
    per_session: IdMap<SessionId, usize>,
    next: u64,
}

impl Waiters {
    /// Register a waiting `get`; returns its key.
    pub fn add(&mut self, waiter: Waiter) -> u64 {
        self.next += 1;
        let key = self.next;
        self.by_deadline.insert((waiter.deadline, key));
        *self.per_session.entry(waiter.session).or_default() += 1;
        self.by_key.insert(key, waiter);
        key
    }

    pub fn take(&mut self, key: u64) -> Option<Waiter> {
        let w = self.by_key.remove(&key)?;
        self.by_deadline.remove(&(w.deadline, key));
        if let Some(n) = self.per_session.get_mut(&w.session) {
            *n -= 1;
            if *n == 0 {
                self.per_session.remove(&w.session);
            }
        }
        Some(w)
    }

    /// Waiting `get`s of `session`.
    pub fn count(&self, session: SessionId) -> usize {
        self.per_session.get(&session).copied().unwrap_or(0)
    }

    pub fn of_session(&self, session: SessionId) -> Vec<u64> {
        if self.count(session) == 0 {
            return Vec::new();
        }
        self.by_key
            .iter()
            .filter(|(_, w)| w.session == session)
            .map(|(k, _)| *k)
            .collect()
    }

    pub fn next_deadline(&self) -> Option<Millis> {
        self.by_deadline.first().map(|(t, _)| *t)
    }

    /// No `get` waits (and no view remembers one).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty() && self.by_deadline.is_empty() && self.per_session.is_empty()
    }

    /// The key of the `get` that gave up first, if one has by `now`.
    pub fn first_expired(&self, now: Millis) -> Option<u64> {
        let &(deadline, key) = self.by_deadline.first()?;
        (deadline <= now).then_some(key)
    }
}
