//! What happens to a delivered task: ack, fail, release, touch, lease expiry, requeue, dead
//! letters, and the replies that go to `reply_to`.

use serde::Serialize;
use taskhub_core::protocol::{Redundancy, Reply};
use taskhub_core::{ErrorCode, Millis, QueueName, RawJson, SessionId, Task, TaskId, TaskState};

use super::{
    Body, Broker, Change, Charge, End, Failure, Gate, Lease, Output, ServerMsg, StoredTask,
};

/// A dead-letter entry's payload, written around the task's payload text as it is.
#[derive(Serialize)]
struct DeadLetter<'a> {
    id: TaskId,
    queue: &'a QueueName,
    kind: &'a Option<String>,
    payload: &'a Body,
    attempts: u32,
    error: &'a str,
    /// Kept so a requeued task reports where the original would have.
    #[serde(skip_serializing_if = "none")]
    reply_to: &'a Option<QueueName>,
    max_attempts: u32,
    #[serde(skip_serializing_if = "zero")]
    priority: u8,
    /// A redundant task's replicas, quorum and cap, so a requeue runs it the same way.
    #[serde(skip_serializing_if = "zero")]
    replicas: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    quorum: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_replicas: Option<u8>,
    /// Every replica's result or error, when the replicas found no quorum.
    #[serde(skip_serializing_if = "Option::is_none")]
    ballots: Option<&'a serde_json::value::RawValue>,
}

fn zero(n: &u8) -> bool {
    *n == 0
}

fn none<T>(o: &&Option<T>) -> bool {
    o.is_none()
}

impl Broker {
    pub(super) fn leased_to(&self, session: SessionId, id: TaskId) -> Result<&Lease, Failure> {
        match self.leases.get(&id) {
            Some(l) if l.session == session => Ok(l),
            _ => Err(super::rules::not_leased(id)),
        }
    }

    pub(super) fn take_lease(&mut self, id: TaskId) -> Option<StoredTask> {
        let lease = self.leases.take(id)?;
        if let Some(q) = self.queues.get_mut(&lease.task.queue) {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
        if lease.task.replica {
            self.votes.returned(id);
        }
        Some(lease.task)
    }

    pub(super) fn ack(
        &mut self,
        session: SessionId,
        id: TaskId,
        result: Option<Body>,
        now: Millis,
    ) -> Result<(), Failure> {
        let lease = self.leased_to(session, id)?;
        if let Some(r) = lease.task.reply_to.clone()
            && !r.is_inbox()
        {
            // Refuse rather than lose the result: the lease stays and the task is redone later.
            self.check_outcome_room(id, &r)?;
        }
        let Some(task) = self.take_lease(id) else {
            return Ok(());
        };
        if let Some(s) = self.sessions.get_mut(&session) {
            s.acked += 1;
        }
        if task.replica {
            self.ballot(Some(session), &task, Ok(result), now);
        } else {
            self.completed(&task, result, now);
        }
        self.dispatch_for(session, now);
        Ok(())
    }

    /// `task` is done with `result` (acked, or agreed on by its replicas): counted, its outcome
    /// sent to `reply_to`, and storage told it is gone.
    pub(super) fn completed(&mut self, task: &StoredTask, result: Option<Body>, now: Millis) {
        self.acked += 1;
        self.latency.record(now.since(task.put_at));
        if let Some(q) = self.queues.get_mut(&task.queue) {
            q.counters.acked += 1;
        }
        self.reply(
            task,
            Reply {
                id: task.id,
                ok: true,
                result,
                error: None,
                cancelled: false,
            },
            now,
        );
        self.journal.record(Change::Done(task.id));
    }

    pub(super) fn fail(
        &mut self,
        session: SessionId,
        id: TaskId,
        error: String,
        retry: bool,
        backoff_ms: Option<u64>,
        now: Millis,
    ) -> Result<(), Failure> {
        let task = &self.leased_to(session, id)?.task;
        let retried = retry && task.attempts < task.max_attempts;
        if !retried && !task.replica {
            // A dead letter (and its failure reply) must have room, or the fail is refused and
            // the lease kept, as for an ack. (A replica's failure is a ballot: it needs none.)
            let dead = task.queue.dead_letter();
            let reply_to = task.reply_to.clone().filter(|r| !r.is_inbox());
            self.check_outcome_room(id, &dead)?;
            if let Some(r) = reply_to {
                self.check_outcome_room(id, &r)?;
            }
        }
        let Some(mut task) = self.take_lease(id) else {
            return Ok(());
        };
        self.failed += 1;
        if let Some(q) = self.queues.get_mut(&task.queue) {
            q.counters.failed += 1;
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.failed += 1;
        }
        task.set_error(error);
        let queue = task.queue.clone();
        if retried {
            let wait = task
                .backoff
                .retry_wait(&self.config, backoff_ms, task.attempts, task.id);
            if wait == 0 {
                self.enqueue(task, End::Back, false);
            } else {
                self.schedule(task, now, wait, false);
            }
        } else {
            self.dead_letter(task, Some(session), now);
        }
        self.dispatch(&queue, now);
        self.dispatch_for(session, now);
        Ok(())
    }

    /// Whether `queue` can take the outcome of leased task `id`; the error says the lease stays.
    fn check_outcome_room(&mut self, id: TaskId, queue: &QueueName) -> Result<(), Failure> {
        self.check_room(queue).map_err(|(code, message)| {
            (
                code,
                format!(
                    "{message}; task {id} stays leased to this session: send it again once {queue} has room, or let its lease expire"
                ),
            )
        })
    }

    pub(super) fn release(
        &mut self,
        session: SessionId,
        id: TaskId,
        now: Millis,
    ) -> Result<(), Failure> {
        self.leased_to(session, id)?;
        let Some(mut task) = self.take_lease(id) else {
            return Ok(());
        };
        task.attempts = task.attempts.saturating_sub(1);
        let queue = task.queue.clone();
        self.enqueue(task, End::Front, false);
        self.dispatch(&queue, now);
        self.dispatch_for(session, now);
        Ok(())
    }

    /// Where task `id` waits or runs, and its queue: leased, scheduled, or ready (each queue's
    /// index is asked in turn: a hash lookup per queue).
    pub(super) fn locate(&self, id: TaskId) -> Option<(&QueueName, TaskState)> {
        if let Some(lease) = self.leases.get(&id) {
            return Some((&lease.task.queue, TaskState::Leased));
        }
        if let Some(task) = self.scheduled.get(id) {
            return Some((&task.queue, TaskState::Scheduled));
        }
        self.queues
            .iter()
            .find(|(_, q)| q.ready.contains(id))
            .map(|(name, _)| (name, TaskState::Ready))
    }

    /// Stop task `id` for a client whose rights `refusal` judges by the task's queue: out of its
    /// queue, or off its worker (which is told), with `cancelled` to its `reply_to`.
    pub(super) fn cancel(
        &mut self,
        id: TaskId,
        refusal: &dyn Fn(&QueueName) -> Option<String>,
        now: Millis,
    ) -> Result<TaskState, Failure> {
        if let Some(parent) = self.votes.parent_of(id) {
            return Err(super::rules::bad_request(format!(
                "task {id} is one replica of redundant task {parent}; cancel task {parent}"
            )));
        }
        let found = self.vote_state(id).or_else(|| self.locate(id));
        let Some((queue, state)) = found else {
            return Err((
                ErrorCode::UnknownTask,
                format!(
                    "task {id} is not waiting or running: it finished, was taken by a get, went to its dead-letter queue, was cancelled already, or never existed"
                ),
            ));
        };
        if queue.is_dead_letter() {
            return Err(super::rules::bad_request(format!(
                "task {id} is an entry of {queue}, not a task that will run: take it with get, or put it back with dead_requeue"
            )));
        }
        if let Some(why) = refusal(queue) {
            return Err((ErrorCode::Forbidden, why));
        }
        let queue = queue.clone();
        let task = match self.votes.get(id) {
            Some(_) => self.cancel_vote(id, now),
            None => self.withdraw(id).map(|(task, holder)| {
                if let Some(holder) = holder {
                    self.dispatch_for(holder, now);
                }
                task
            }),
        };
        let Some(task) = task else {
            return Err(super::rules::not_leased(id));
        };
        if let Some(q) = self.queues.get_mut(&queue) {
            q.counters.cancelled += 1;
        }
        tracing::debug!(task = %id, %queue, state = state.as_str(), "task cancelled");
        self.reply(
            &task,
            Reply {
                id,
                ok: false,
                result: None,
                error: Some("cancelled".into()),
                cancelled: true,
            },
            now,
        );
        self.journal.record(Change::Done(id));
        Ok(state)
    }

    /// Take task `id` out wherever it is (a cancel, a replica no longer needed). If it was
    /// leased, its worker is told to stop, and that session is returned too: the caller offers
    /// it work once it has withdrawn everything it meant to.
    pub(super) fn withdraw(&mut self, id: TaskId) -> Option<(StoredTask, Option<SessionId>)> {
        let (queue, state) = self.locate(id).map(|(q, s)| (q.clone(), s))?;
        match state {
            TaskState::Leased => {
                let holder = self.leases.get(&id).map(|l| l.session);
                let task = self.take_lease(id)?;
                if let Some(holder) = holder {
                    self.out.push(Output {
                        to: holder,
                        msg: ServerMsg::Cancel { task: id },
                        droppable: false,
                        gate: Gate::InTurn,
                    });
                }
                Some((task, holder))
            }
            TaskState::Scheduled => {
                let task = self.scheduled.remove(id);
                if let Some(q) = self.queues.get_mut(&queue) {
                    q.scheduled = q.scheduled.saturating_sub(1);
                }
                task.map(|t| (t, None))
            }
            TaskState::Ready => self
                .queues
                .get_mut(&queue)
                .and_then(|q| q.ready.remove(id))
                .map(|t| (t, None)),
        }
    }

    /// `session`'s worker says how far leased task `id` has got: kept for `stats`, passed to
    /// the submitter's inbox (at most once), and the lease extended as by `touch`.
    pub(super) fn progress(
        &mut self,
        session: SessionId,
        id: TaskId,
        fraction: f64,
        message: Option<String>,
        now: Millis,
    ) -> Result<(), Failure> {
        taskhub_core::protocol::check_progress(fraction, message.as_deref())
            .map_err(super::rules::bad_request)?;
        self.touch(session, id, now)?;
        let Some(lease) = self.leases.get_mut(&id) else {
            return Ok(());
        };
        let to = lease.task.reply_to.clone();
        lease.progress = Some(Box::new(super::held::Reported {
            fraction,
            message: message.clone(),
            at: now,
        }));
        if let Some(to) = to {
            let msg = ServerMsg::Progress {
                task: id,
                fraction,
                message,
            };
            // At most once, like pub/sub; a reply_to queue gets no reports.
            self.send_to_inbox(&to, msg, true);
        }
        Ok(())
    }

    pub(super) fn touch(
        &mut self,
        session: SessionId,
        id: TaskId,
        now: Millis,
    ) -> Result<(), Failure> {
        self.leased_to(session, id)?;
        let deadline = now.after(self.config.ack_wait);
        self.leases.extend(id, deadline);
        Ok(())
    }

    /// Redeliver expired leases, answer timed-out `get`s with `empty`, and drop queues unused for
    /// the grace period.
    pub fn expire(&mut self, now: Millis) {
        if self.next_sweep().is_some_and(|t| t <= now) {
            self.sweep(now);
        }
        self.ripen(now);
        while let Some((id, session)) = self
            .leases
            .first_expired(now)
            .map(|l| (l.task.id, l.session))
        {
            if let Some(s) = self.sessions.get_mut(&session) {
                // Hand it nothing until it shows it is alive.
                s.stalled = true;
            }
            if let Some(mut task) = self.take_lease(id) {
                task.set_error(format!(
                    "lease expired: not acked within {} ms",
                    self.config.ack_wait.as_millis()
                ));
                let queue = task.queue.clone();
                self.requeue_front(task, now);
                self.dispatch(&queue, now);
            }
            self.dispatch_for(session, now);
        }
        while let Some(key) = self.waiters.first_expired(now) {
            if let Some(w) = self.waiters.take(key) {
                if let Some(q) = self.queues.get_mut(&w.queue) {
                    q.waiters.retain(|k| *k != key);
                }
                self.out.push(Output {
                    to: w.session,
                    msg: ServerMsg::Empty {
                        req: w.req,
                        queue: w.queue,
                    },
                    droppable: false,
                    gate: Gate::InTurn,
                });
            }
        }
    }

    /// Back to the front of its queue, or to the dead-letter queue if out of attempts.
    pub(super) fn requeue_front(&mut self, task: StoredTask, now: Millis) {
        if task.attempts >= task.max_attempts {
            self.dead_letter(task, None, now);
        } else {
            self.enqueue(task, End::Front, false);
        }
    }

    /// `task` failed for good (its last attempt failed, or `by` failed it without retry): to
    /// its dead-letter queue, or, for a replica, a ballot lost for its vote.
    pub(super) fn dead_letter(&mut self, task: StoredTask, by: Option<SessionId>, now: Millis) {
        if task.replica {
            let error = format!(
                "gave up after {} attempt(s): {}",
                task.attempts,
                task.last_error.as_deref().unwrap_or("no error given")
            );
            self.ballot(by, &task, Err(error), now);
            return;
        }
        self.dead_letter_with(task, None, now);
    }

    /// Dead-letter `task`, with the `ballots` of its replicas if it is a redundant task that
    /// found no quorum.
    pub(super) fn dead_letter_with(
        &mut self,
        task: StoredTask,
        ballots: Option<Box<serde_json::value::RawValue>>,
        now: Millis,
    ) {
        let (entry, error) = dead_letter_entry(
            &super::envelope(&task),
            task.last_error.as_deref(),
            task.redundancy,
            ballots.as_deref(),
        );
        tracing::debug!(task = %task.id, queue = %task.queue, "task dead-lettered");
        if let Some(q) = self.queues.get_mut(&task.queue) {
            q.counters.dead_lettered += 1;
        }
        self.push_forced(&task.queue.dead_letter(), entry, now);
        self.reply(
            &task,
            Reply {
                id: task.id,
                ok: false,
                result: None,
                error: Some(error),
                cancelled: false,
            },
            now,
        );
        self.journal.record(Change::Done(task.id));
    }

    /// Add an entry the hub itself produced (a reply, a dead letter). It is never dropped: a
    /// request that needs one (ack, fail) was refused already if the queue was full, and one the
    /// hub must store on its own (a lease expired, a session closed) may take the queue past
    /// `max_queue_len`. It replaces the task it reports on, and is charged against
    /// `max_stored_bytes` like it, so new puts are refused before memory grows.
    pub(super) fn push_forced(&mut self, queue: &QueueName, payload: Body, now: Millis) {
        self.next_task += 1;
        let charge = Charge::new(self.cost(&payload, queue, None, None), &self.stored_bytes);
        let task = StoredTask {
            id: TaskId(self.next_task),
            queue: queue.clone(),
            kind: None,
            payload,
            reply_to: None,
            max_attempts: self.config.max_attempts,
            attempts: 0,
            order: 0,
            last_error: None,
            charge,
            reply_ref: None,
            put_at: now,
            priority: 0,
            not_before: None,
            backoff: Default::default(),
            redundancy: None,
            replica: false,
        };
        let max = self.config.max_queue_len;
        match self.queue_mut(queue) {
            Ok(q) => {
                if q.len() >= max {
                    tracing::debug!(%queue, "queue past max_queue_len: the hub stored a result or dead letter it may not drop");
                }
                self.enqueue(task, End::Back, true);
            }
            // Only a reply queue can be missing and uncreatable (dead-letter queues are not
            // counted): puts create theirs and queues referenced by tasks are kept, so this
            // means an operator deleted it at max_queues.
            Err((_, why)) => {
                tracing::warn!(%queue, "a result was lost: {why}");
            }
        }
        self.dispatch(queue, now);
    }

    pub(super) fn reply(&mut self, task: &StoredTask, reply: Reply<Body>, now: Millis) {
        let Some(to) = &task.reply_to else {
            return;
        };
        if to.is_inbox() {
            self.send_to_inbox(to, ServerMsg::Reply(reply), false);
            return;
        }
        self.push_forced(to, reply_entry(&reply), now);
    }

    /// Send `msg` to the session whose inbox `to` is, if it is one and that session is still
    /// here (an inbox's session that left hears nothing).
    fn send_to_inbox(&mut self, to: &QueueName, msg: ServerMsg, droppable: bool) {
        if let Some(owner) = to.inbox_owner()
            && self.sessions.contains_key(&owner)
        {
            self.out.push(Output {
                to: owner,
                msg,
                droppable,
                gate: Gate::InTurn,
            });
        }
    }
}

/// A dead-letter entry for `task` (its `attempt` is the attempts it used), and the error it
/// records: what the hub stores in `<queue>.dead`, on every backend.
pub(crate) fn dead_letter_entry(
    task: &Task<Body>,
    last_error: Option<&str>,
    redundancy: Option<Redundancy>,
    ballots: Option<&serde_json::value::RawValue>,
) -> (Body, String) {
    let error = match last_error {
        Some(e) => format!("gave up after {} attempt(s): {e}", task.attempt),
        None => format!("gave up after {} attempt(s)", task.attempt),
    };
    let record = RawJson::of(&DeadLetter {
        id: task.id,
        queue: &task.queue,
        kind: &task.kind,
        payload: &task.payload,
        attempts: task.attempt,
        error: &error,
        reply_to: &task.reply_to,
        max_attempts: task.max_attempts,
        priority: task.priority,
        replicas: redundancy.map_or(0, |r| r.replicas),
        quorum: redundancy.map(|r| r.quorum),
        max_replicas: redundancy.map(|r| r.max_replicas),
        ballots,
    });
    (Body::around(record, "payload", &task.payload), error)
}

/// A task's outcome as it is stored in its `reply_to` queue.
pub(crate) fn reply_entry(reply: &Reply<Body>) -> Body {
    let record = RawJson::of(reply);
    match &reply.result {
        Some(result) => Body::around(record, "result", result),
        None => Body::Json(record),
    }
}
