//! Handing out ready tasks: waiting `get`s first, then consumers with credit, round robin.

use taskhub_core::{Millis, QueueName, SessionId, Task};

use super::quorum::WINDOW;
use super::{Body, Broker, Change, Gate, Output, ServerMsg, StoredTask};

impl Broker {
    /// Hand out tasks of `name` to waiting `get`s first, then to consumers with credit, round
    /// robin. While replicas of redundant tasks wait in the queue, a `get` takes the first task
    /// that is not one, and a consumer the first (of the first [`WINDOW`]) that it may take.
    pub(super) fn dispatch(&mut self, name: &QueueName, now: Millis) {
        let ack_wait = self.config.ack_wait;
        loop {
            let Some(q) = self.queues.get(name) else {
                return;
            };
            if q.ready.is_empty() {
                return;
            }
            if let Some(&key) = q.waiters.front()
                && let Some(id) = q.ready.first_plain(WINDOW)
            {
                let Some(q) = self.queues.get_mut(name) else {
                    return;
                };
                q.waiters.pop_front();
                let Some(w) = self.waiters.take(key) else {
                    continue;
                };
                let Some(mut task) = q.ready.take_id(id) else {
                    return;
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
            let credit = |s: &SessionId| {
                self.sessions
                    .get(s)
                    .is_some_and(|st| st.has_credit(self.leases.held_by(*s)))
            };
            let mixed = q.ready.replicas() > 0;
            let choice = if mixed {
                // The consumers with credit, once: the window's tasks choose among them.
                let free: Vec<(usize, SessionId)> = q
                    .consumers
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| credit(s))
                    .map(|(i, s)| (i, *s))
                    .collect();
                if free.is_empty() {
                    return;
                }
                q.ready
                    .iter()
                    .take(WINDOW)
                    .find_map(|t| Some((t.id, self.taker(&free, t)?)))
            } else {
                let front = q.ready.iter().next().map(|t| t.id);
                front.zip(q.consumers.iter().position(credit))
            };
            let Some((id, at)) = choice else {
                return;
            };
            let Some(q) = self.queues.get_mut(name) else {
                return;
            };
            let to = if mixed {
                let Some(to) = q.consumers.remove(at) else {
                    return;
                };
                q.consumers.push_back(to);
                to
            } else {
                q.consumers.rotate_left(at + 1);
                match q.consumers.back() {
                    Some(to) => *to,
                    None => return,
                }
            };
            let Some(mut task) = q.ready.take_id(id) else {
                return;
            };
            q.counters.delivered += 1;
            q.counters.redelivered += u64::from(task.attempts > 0);
            task.attempts += 1;
            if !task.replica {
                self.journal.record(Change::Leased(&task));
            }
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
            if task.replica {
                self.votes.handed_out(task.id, to);
            }
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
