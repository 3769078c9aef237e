//! Redundant tasks: one task run by several sessions, accepted only when enough of them return
//! the same result, byte for byte. This is BOINC's replication and quorum, for workers the hub
//! cannot trust (anyone with a join link can return anything).
//!
//! A put with `replicas: k` becomes a *vote*. The broker holds the task itself there, and storage
//! keeps it like any task. Its queue gets k *replicas*: ordinary tasks with ids of their own,
//! which storage never hears of.
//! - Dispatch gives a session at most one replica of a task. It prefers a session whose name and
//!   role differ from those of the sessions that already have one.
//! - A replica's ack is a ballot. A replica that fails for good is a ballot too, an error.
//! - When `quorum` ballots hold the same bytes, or a session trusted on the queue acks, that
//!   result is the task's. The replicas still out are withdrawn (their workers get `cancel`),
//!   and the task is acked with it.
//! - When every replica is in and no result has a quorum, as many more are issued as could still
//!   make one, up to `max_replicas` in all. Past that the task is dead-lettered with every ballot.

use serde::Serialize;
use taskhub_core::protocol::Redundancy;
use taskhub_core::{Millis, Pattern, QueueName, Role, SessionId, TaskId, TaskState};

use super::idhash::IdMap;
use super::store::{memory_cost, replica_cost};
use super::{Body, Broker, Change, Charge, End, StoredTask};

/// Where a session's results count alone: every list must have a pattern matching the queue
/// (a key's `trusted`, and its token's when it came with one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trusted(pub Vec<Vec<Pattern>>);

impl Trusted {
    pub fn covers(&self, queue: &QueueName) -> bool {
        !self.0.is_empty()
            && self
                .0
                .iter()
                .all(|list| list.iter().any(|p| p.matches_name(queue.as_str())))
    }
}

/// A hub's rule that every task put to the queues `pattern` matches runs redundantly, with at
/// least `need` (`taskhub serve --replicas 'mandel.>=3/2'`). Written `PATTERN=N[/M[/MAX]]`: N
/// replicas, M agreeing (default a majority), at most MAX in all (default 2N, at most 16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueReplicas {
    pub pattern: Pattern,
    pub need: Redundancy,
}

impl QueueReplicas {
    /// `asked` (a put's own redundancy, if any) raised to this rule's: a put may ask for more
    /// replicas, a larger quorum or a higher cap, never less.
    pub fn raise(&self, asked: Option<Redundancy>) -> Redundancy {
        let Some(a) = asked else {
            return self.need;
        };
        let replicas = a.replicas.max(self.need.replicas);
        Redundancy {
            replicas,
            quorum: a.quorum.max(self.need.quorum),
            max_replicas: a.max_replicas.max(self.need.max_replicas).max(replicas),
        }
    }
}

impl std::str::FromStr for QueueReplicas {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (pattern, counts) = text
            .rsplit_once('=')
            .ok_or_else(|| format!("{text:?}: expected QUEUE=N[/M[/MAX]], like mandel=3/2"))?;
        let pattern = Pattern::new(pattern).map_err(|e| format!("{text:?}: {e}"))?;
        let mut numbers = counts.split('/').map(|n| {
            n.trim()
                .parse::<u8>()
                .map_err(|_| format!("{text:?}: {n:?} is not a count of replicas (1 to 16)"))
        });
        let replicas = numbers.next().transpose()?.unwrap_or(0);
        let quorum = numbers.next().transpose()?;
        let max_replicas = numbers.next().transpose()?;
        if numbers.next().is_some() {
            return Err(format!("{text:?}: expected at most N/M/MAX after ="));
        }
        let schedule = taskhub_core::protocol::Schedule {
            replicas,
            quorum,
            max_replicas,
            ..Default::default()
        };
        match schedule.redundancy() {
            Ok(Some(need)) if need.replicas > 1 => Ok(QueueReplicas { pattern, need }),
            Ok(_) => Err(format!(
                "{text:?}: a queue's rule needs at least 2 replicas"
            )),
            Err(why) => Err(format!("{text:?}: {why}")),
        }
    }
}

impl std::fmt::Display for QueueReplicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.need;
        write!(
            f,
            "{}={}/{}/{}",
            self.pattern.as_str(),
            n.replicas,
            n.quorum,
            n.max_replicas
        )
    }
}

/// Every redundant task in the hub, by id, and the task each replica stands for.
#[derive(Debug, Default)]
pub(super) struct Votes {
    by_task: IdMap<TaskId, Vote>,
    parent_of: IdMap<TaskId, TaskId>,
}

#[derive(Debug)]
pub(super) struct Vote {
    /// The task as it was put; its `redundancy` is set.
    pub task: StoredTask,
    need: Redundancy,
    /// Replicas made so far.
    issued: u8,
    /// Replicas not in yet: ready, scheduled or leased.
    live: Vec<TaskId>,
    /// Sessions holding one of them now.
    holders: Vec<(SessionId, TaskId)>,
    ballots: Vec<Ballot>,
}

#[derive(Debug)]
struct Ballot {
    session: Option<SessionId>,
    role: Option<Role>,
    name: Option<String>,
    trusted: bool,
    outcome: Result<Option<Body>, String>,
    /// What the result or error takes, in `max_stored_bytes`, until the vote ends.
    _charge: Charge,
}

/// What a vote comes to after a ballot.
enum Verdict {
    Accept(Option<Body>),
    Wait,
    More(u8),
    GiveUp,
}

impl Vote {
    fn verdict(&self) -> Verdict {
        if let Some(Ballot {
            trusted: true,
            outcome: Ok(result),
            ..
        }) = self.ballots.last()
        {
            return Verdict::Accept(result.clone());
        }
        let mut best = 0;
        for (i, b) in self.ballots.iter().enumerate() {
            let Ok(result) = &b.outcome else {
                continue;
            };
            let same = self.ballots[i..]
                .iter()
                .filter(|o| o.outcome.as_ref().is_ok_and(|r| r == result))
                .count();
            if same >= usize::from(self.need.quorum) {
                return Verdict::Accept(result.clone());
            }
            best = best.max(same);
        }
        if !self.live.is_empty() {
            return Verdict::Wait;
        }
        let room = self.need.max_replicas.saturating_sub(self.issued);
        let wanted = usize::from(self.need.quorum).saturating_sub(best);
        match u8::try_from(wanted).unwrap_or(u8::MAX).min(room) {
            0 => Verdict::GiveUp,
            n => Verdict::More(n),
        }
    }

    /// Whether a replica may go to `session`: never to one that holds or answered one already.
    fn open_to(&self, session: SessionId) -> bool {
        !self.holders.iter().any(|(s, _)| *s == session)
            && !self.ballots.iter().any(|b| b.session == Some(session))
    }

    /// How far `role` and `name` differ from those of the sessions it went to: 2 for a new
    /// name, 1 for a new role (a session without a name counts as new).
    fn novelty(&self, role: Role, name: Option<&str>, roles_names: &[(Role, Option<&str>)]) -> u8 {
        let new_name = name.is_none_or(|n| !roles_names.iter().any(|(_, m)| *m == Some(n)));
        let new_role = !roles_names.iter().any(|(r, _)| *r == role);
        u8::from(new_name) * 2 + u8::from(new_role)
    }
}

/// A ballot as a dead letter shows it.
#[derive(Serialize)]
struct Shown<'a> {
    worker: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Body>,
    /// A result of bytes shows as `null` with its length.
    #[serde(skip_serializing_if = "Option::is_none")]
    result_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// The longest JSON result a dead letter shows whole; a longer one, or bytes, shows as its
/// length, so an entry of sixteen ballots stays far below a frame's limit.
pub const MAX_SHOWN_RESULT_BYTES: usize = 16 * 1024;

fn shown_whole(result: &Body) -> bool {
    matches!(result, Body::Json(j) if j.len() <= MAX_SHOWN_RESULT_BYTES)
}

fn body_len(result: &Body) -> usize {
    match result {
        Body::Json(j) => j.len(),
        Body::Bytes(b) => b.len(),
        Body::Holding(h) => h.json.len() + h.bytes.len(),
    }
}

impl Votes {
    /// The task replica `id` stands for, if it is one still counted.
    pub fn parent_of(&self, id: TaskId) -> Option<TaskId> {
        self.parent_of.get(&id).copied()
    }

    pub fn get(&self, id: TaskId) -> Option<&Vote> {
        self.by_task.get(&id)
    }

    /// Replica `id` went to `session`.
    pub fn handed_out(&mut self, id: TaskId, session: SessionId) {
        if let Some(vote) = self.parent_of(id).and_then(|p| self.by_task.get_mut(&p)) {
            vote.holders.push((session, id));
        }
    }

    /// Replica `id` is no longer leased (acked, failed, released, expired, withdrawn).
    pub fn returned(&mut self, id: TaskId) {
        if let Some(vote) = self.parent_of(id).and_then(|p| self.by_task.get_mut(&p)) {
            vote.holders.retain(|(_, r)| *r != id);
        }
    }

    /// The redundant tasks of `queue`, taken out (the queue is being deleted).
    fn take_queue(&mut self, queue: &QueueName) -> Vec<Vote> {
        let ids: Vec<TaskId> = self
            .by_task
            .iter()
            .filter(|(_, v)| v.task.queue == *queue)
            .map(|(id, _)| *id)
            .collect();
        let mut taken = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(vote) = self.by_task.remove(&id) {
                for r in &vote.live {
                    self.parent_of.remove(r);
                }
                taken.push(vote);
            }
        }
        taken
    }
}

/// How many ready tasks dispatch looks past for one that a session may take, when replicas
/// wait in the queue: a bound on the work per delivery. A session that may take none of them
/// waits for the next dispatch.
pub(super) const WINDOW: usize = 32;

impl Broker {
    /// Hold `task` (stored already) as a vote and put its replicas in its queue, ready in
    /// `wait_ms` (0: at once).
    pub(super) fn start_vote(&mut self, task: StoredTask, now: Millis, wait_ms: u64) {
        let Some(need) = task.redundancy else {
            return;
        };
        let id = task.id;
        if let Some(q) = self.queues.get_mut(&task.queue) {
            q.voting += 1;
        }
        self.votes.by_task.insert(
            id,
            Vote {
                task,
                need,
                issued: 0,
                live: Vec::new(),
                holders: Vec::new(),
                ballots: Vec::new(),
            },
        );
        self.issue(id, need.replicas, now, wait_ms, End::Back);
    }

    /// Put `n` more replicas of vote `parent` in its queue at `end`, ready in `wait_ms`.
    fn issue(&mut self, parent: TaskId, n: u8, now: Millis, wait_ms: u64, end: End) {
        let mut made = Vec::with_capacity(usize::from(n));
        {
            let Some(vote) = self.votes.by_task.get_mut(&parent) else {
                return;
            };
            let t = &vote.task;
            for _ in 0..n {
                self.next_task += 1;
                let id = TaskId(self.next_task);
                made.push(StoredTask {
                    id,
                    queue: t.queue.clone(),
                    kind: t.kind.clone(),
                    payload: t.payload.clone(),
                    reply_to: None,
                    max_attempts: t.max_attempts,
                    attempts: 0,
                    order: 0,
                    last_error: None,
                    charge: Charge::new(
                        replica_cost(&t.queue, t.kind.as_deref()),
                        &self.stored_bytes,
                    ),
                    reply_ref: None,
                    put_at: t.put_at,
                    priority: t.priority,
                    not_before: None,
                    backoff: t.backoff,
                    redundancy: None,
                    replica: true,
                });
                vote.live.push(id);
                vote.issued += 1;
                self.votes.parent_of.insert(id, parent);
            }
        }
        let queue = made.first().map(|t| t.queue.clone());
        for replica in made {
            match wait_ms {
                0 => self.enqueue(replica, end, false),
                wait => self.schedule(replica, now, wait, false),
            }
        }
        if let Some(q) = queue
            && wait_ms == 0
        {
            self.dispatch(&q, now);
        }
    }

    /// Replica `replica` is in: `outcome` is its result, or why it failed for good, from
    /// `session` where one answered. Decide what the vote comes to.
    pub(super) fn ballot(
        &mut self,
        session: Option<SessionId>,
        replica: &StoredTask,
        outcome: Result<Option<Body>, String>,
        now: Millis,
    ) {
        let Some(parent) = self.votes.parent_of.remove(&replica.id) else {
            return;
        };
        let who = session.and_then(|s| self.sessions.get(&s));
        let trusted = outcome.is_ok()
            && who.is_some_and(|s| s.trusted.as_ref().is_some_and(|t| t.covers(&replica.queue)));
        let held = match &outcome {
            Ok(result) => result.as_ref().map_or(0, memory_cost),
            Err(error) => error.len(),
        };
        let ballot = Ballot {
            session,
            role: who.map(|s| s.role),
            name: who.and_then(|s| s.name.clone()),
            trusted,
            outcome,
            _charge: Charge::new(held, &self.stored_bytes),
        };
        let Some(vote) = self.votes.by_task.get_mut(&parent) else {
            return;
        };
        vote.live.retain(|r| *r != replica.id);
        vote.ballots.push(ballot);
        match vote.verdict() {
            Verdict::Wait => {}
            Verdict::Accept(result) => self.accept(parent, result, now),
            // Late replicas go to the front: the task has waited its turn already.
            Verdict::More(n) => self.issue(parent, n, now, 0, End::Front),
            Verdict::GiveUp => self.give_up(parent, now),
        }
    }

    /// Close vote `parent` and withdraw its replicas still out; gives the vote back.
    fn close_vote(&mut self, parent: TaskId, now: Millis) -> Option<Vote> {
        let vote = self.votes.by_task.remove(&parent)?;
        let mut freed = Vec::new();
        for r in &vote.live {
            self.votes.parent_of.remove(r);
            if let Some((_, Some(holder))) = self.withdraw(*r) {
                freed.push(holder);
            }
        }
        // Only now: a session freed earlier must not be handed a sibling still being withdrawn.
        for holder in freed {
            self.dispatch_for(holder, now);
        }
        if let Some(q) = self.queues.get_mut(&vote.task.queue) {
            q.voting = q.voting.saturating_sub(1);
        }
        Some(vote)
    }

    fn accept(&mut self, parent: TaskId, result: Option<Body>, now: Millis) {
        let Some(vote) = self.close_vote(parent, now) else {
            return;
        };
        tracing::debug!(task = %parent, queue = %vote.task.queue, ballots = vote.ballots.len(), "redundant task accepted");
        self.completed(&vote.task, result, now);
    }

    /// No quorum within `max_replicas`: dead-letter the task with every ballot.
    fn give_up(&mut self, parent: TaskId, now: Millis) {
        let Some(Vote {
            mut task,
            need,
            ballots,
            ..
        }) = self.close_vote(parent, now)
        else {
            return;
        };
        let answers = ballots.iter().filter(|b| b.outcome.is_ok()).count();
        let quorum = need.quorum;
        task.attempts = u32::try_from(ballots.len()).unwrap_or(u32::MAX);
        task.set_error(format!(
            "no quorum: {} replica(s) ran, {answers} returned a result, and no {quorum} of them agreed",
            ballots.len()
        ));
        let shown: Vec<Shown<'_>> = ballots
            .iter()
            .map(|b| Shown {
                worker: match (&b.name, b.session) {
                    (Some(n), Some(s)) => format!("{n} (session {s})"),
                    (None, Some(s)) => format!("session {s}"),
                    (_, None) => "no worker answered".into(),
                },
                role: b.role.map(|r| r.as_str()),
                result: b
                    .outcome
                    .as_ref()
                    .ok()
                    .and_then(Option::as_ref)
                    .filter(|r| shown_whole(r)),
                result_bytes: match &b.outcome {
                    Ok(Some(r)) if !shown_whole(r) => Some(body_len(r)),
                    _ => None,
                },
                error: b.outcome.as_ref().err().map(String::as_str),
            })
            .collect();
        let ballots = serde_json::value::to_raw_value(&shown).ok();
        self.dead_letter_with(task, ballots, now);
    }

    /// Cancel redundant task `parent`: every replica out is withdrawn. Gives the task back.
    pub(super) fn cancel_vote(&mut self, parent: TaskId, now: Millis) -> Option<StoredTask> {
        self.close_vote(parent, now).map(|vote| vote.task)
    }

    /// Where redundant task `id` stands, by its furthest replica: leased if any is, else
    /// scheduled if any is, else ready.
    pub(super) fn vote_state(&self, id: TaskId) -> Option<(&QueueName, TaskState)> {
        let vote = self.votes.get(id)?;
        let state = if vote.live.iter().any(|r| self.leases.get(r).is_some()) {
            TaskState::Leased
        } else if vote.live.iter().any(|r| self.scheduled.get(*r).is_some()) {
            TaskState::Scheduled
        } else {
            TaskState::Ready
        };
        Some((&vote.task.queue, state))
    }

    /// Drop the redundant tasks of `queue` (being deleted); their replicas still leased run on,
    /// and count for nothing. Returns how many.
    pub(super) fn drop_votes(&mut self, queue: &QueueName) -> u64 {
        let gone = self.votes.take_queue(queue);
        for vote in &gone {
            self.journal.record(Change::Done(vote.task.id));
        }
        if let Some(q) = self.queues.get_mut(queue) {
            q.voting = 0;
        }
        gone.len() as u64
    }

    /// Which of `free` (a queue's consumers with credit, with their places in its list) to
    /// hand `task` to: the first, or, for a replica, one its vote is open to, the one whose name
    /// and role are newest to it (the first in turn among equals). Returns its place.
    pub(super) fn taker(&self, free: &[(usize, SessionId)], task: &StoredTask) -> Option<usize> {
        let vote = task
            .replica
            .then(|| self.votes.parent_of(task.id))
            .flatten()
            .and_then(|p| self.votes.get(p));
        let Some(vote) = vote else {
            return free.first().map(|(i, _)| *i);
        };
        let seen: Vec<(Role, Option<&str>)> = vote
            .holders
            .iter()
            .filter_map(|(s, _)| self.sessions.get(s).map(|st| (st.role, st.name.as_deref())))
            .chain(
                vote.ballots
                    .iter()
                    .filter_map(|b| Some((b.role?, b.name.as_deref()))),
            )
            .collect();
        let mut best: Option<(u8, usize)> = None;
        for (i, s) in free {
            if !vote.open_to(*s) {
                continue;
            }
            let Some(st) = self.sessions.get(s) else {
                continue;
            };
            let score = vote.novelty(st.role, st.name.as_deref(), &seen);
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, *i));
                if score == 3 {
                    break;
                }
            }
        }
        best.map(|(_, i)| i)
    }
}
