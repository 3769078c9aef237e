//! What the broker tells its storage: every change to a task it holds, in the order it made them.
//!
//! The broker serves from memory in every mode. A [`Journal`] hears each change as it happens,
//! under the hub's lock, and must not do I/O there: the disk journal (`crate::storage`) copies
//! the change into a buffer that its own thread writes and syncs. Replaying the changes in order
//! gives back every task with its queue, place, attempts and last error, so a restart loses
//! nothing that was stored. Memory mode records nothing.
//!
//! Order of changes that belong together: an outcome (a result for `reply_to`, a dead letter) is
//! recorded before the `Done` of the task it reports on, so a journal cut between them keeps the
//! task (done again later: at-least-once) rather than losing the outcome.

use std::fmt;

use taskhub_core::TaskId;

use super::StoredTask;

/// One change to one task.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// A new task, ready at its `order`: a put, or an outcome or dead letter the hub made.
    Stored(&'a StoredTask),
    /// A task the journal knows is ready again, at its `order`, with its attempts and last error
    /// (failed and retried, released, its lease expired, its session closed).
    Ready(&'a StoredTask),
    /// Delivered to a consumer: leased, with one more attempt counted.
    Leased(&'a StoredTask),
    /// Gone for good: acked, taken by a `get`, dead-lettered, or deleted with its queue.
    Done(TaskId),
    /// A put's `dedup_id` is remembered for `task` until `expires` (Unix time, ms), so a retry
    /// after a restart is still answered with the first task.
    Dedup {
        key: &'a str,
        task: TaskId,
        expires: u64,
    },
}

/// Where changes go. Implementations must be cheap: they run under the hub's lock.
pub trait Journal: Send + fmt::Debug + 'static {
    fn record(&mut self, change: Change<'_>);

    /// Hand what was recorded since the last commit to storage. Returns the ticket a reply
    /// that confirms those changes (`queued`) waits for: the hub sends it once storage reports the
    /// ticket durable. 0 means nothing to wait for.
    fn commit(&mut self) -> u64;

    /// Memory the journal keeps for each task the broker holds, charged to the task with the rest
    /// of it (`max_stored_bytes`).
    fn kept_per_task(&self) -> usize;

    /// Whether new tasks can be stored now; `Err` says why not (the disk is full or failing).
    /// Only puts are refused for it: everything else goes on, and is written once storage works
    /// again.
    fn writable(&self) -> Result<(), String>;
}

/// Memory mode: nothing is kept beyond the process.
#[derive(Debug, Default)]
pub struct InMemory;

impl Journal for InMemory {
    fn record(&mut self, _: Change<'_>) {}

    fn commit(&mut self) -> u64 {
        0
    }

    fn kept_per_task(&self) -> usize {
        0
    }

    fn writable(&self) -> Result<(), String> {
        Ok(())
    }
}
