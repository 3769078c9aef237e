//! Handing out ready tasks: waiting `get`s first, then consumers with credit, round robin.

use taskhub_core::{Millis, QueueName, SessionId, Task};

use super::{Body, Broker, Change, Gate, Output, ServerMsg, StoredTask};

impl Broker {
    /// Hand out tasks of `name` to waiting `get`s first, then to consumers with credit, round
    /// robin.
    pub(super) fn dispatch(&mut self, name: &QueueName, now: Millis) {
        let ack_wait = self.config.ack_wait;
        let Some(q) = self.queues.get_mut(name) else {
            return;
        };
        while !q.ready.is_empty() {
            if let Some(key) = q.waiters.pop_front() {
                let Some(w) = self.waiters.take(key) else {
                    continue;
                };
                let Some(mut task) = q.ready.pop_front() else {
                    break;
                };
                // A get takes the task for good (no lease).
                self.journal.record(Change::Done(task.id));
                q.counters.delivered += 1;
                q.counters.redelivered += u64::from(task.attempts > 0);
                task.attempts += 1;
                self.out.push(Output {
                    to: w.session,
                    msg: ServerMsg::Task {
                        req: w.req,
                        task: envelope(&task),
                    },
                    droppable: false,
                    gate: Gate::InTurn,
                });
                continue;
            }
            let mut chosen = None;
            for _ in 0..q.consumers.len() {
                let Some(s) = q.consumers.pop_front() else {
                    break;
                };
                q.consumers.push_back(s);
                let held = self.leases.held_by(s);
                if self.sessions.get(&s).is_some_and(|st| st.has_credit(held)) {
                    chosen = Some(s);
                    break;
                }
            }
            let Some(to) = chosen else {
                break;
            };
            let Some(mut task) = q.ready.pop_front() else {
                break;
            };
            q.counters.delivered += 1;
            q.counters.redelivered += u64::from(task.attempts > 0);
            task.attempts += 1;
            self.journal.record(Change::Leased(&task));
            q.in_flight += 1;
            let deadline = now.after(ack_wait);
            self.out.push(Output {
                to,
                msg: ServerMsg::Deliver {
                    task: envelope(&task),
                },
                droppable: false,
                gate: Gate::InTurn,
            });
            self.leases.grant(to, task, deadline);
        }
    }

    /// A session gained credit: offer it work from each queue it consumes.
    pub(super) fn dispatch_for(&mut self, session: SessionId, now: Millis) {
        // Borrow the list out and back rather than clone it: this runs on every ack.
        let queues = match self.sessions.get_mut(&session) {
            Some(s) if !s.consuming.is_empty() => std::mem::take(&mut s.consuming),
            _ => return,
        };
        for q in &queues {
            self.dispatch(q, now);
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.consuming = queues;
        }
    }
}

pub(super) fn envelope(task: &StoredTask) -> Task<Body> {
    Task {
        id: task.id,
        queue: task.queue.clone(),
        kind: task.kind.clone(),
        payload: task.payload.clone(),
        attempt: task.attempts,
        max_attempts: task.max_attempts,
        reply_to: task.reply_to.clone(),
        priority: task.priority,
        last_error: task.last_error.clone(),
    }
}
