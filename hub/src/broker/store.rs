//! A task as the hub holds it, what it costs, and where a queue's ready tasks wait. The hub serves
//! from memory in every mode; a data dir keeps a journal of the same changes (see `journal`).

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use taskhub_core::protocol::{MAX_PRIORITY, Redundancy};
use taskhub_core::time::{doubling_wait, millis_of};
use taskhub_core::{Millis, QueueName, RawJson, TaskId};

use super::idhash::IdMap;
use super::{Body, BrokerConfig};

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

    /// Charge `bytes` from now on instead (the task grew or shrank).
    fn set(&mut self, bytes: usize) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
        self.bytes = bytes;
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

/// A task's hold on its `reply_to` queue: while any task names a queue as `reply_to`, the queue
/// is kept (not dropped as unused), so the result always has a place. Counted in the queue's
/// shared counter for as long as the task exists, like [`Charge`].
#[derive(Debug)]
pub struct QueueRef(Arc<AtomicUsize>);

impl QueueRef {
    pub fn new(count: &Arc<AtomicUsize>) -> QueueRef {
        count.fetch_add(1, Ordering::Relaxed);
        QueueRef(count.clone())
    }
}

impl Clone for QueueRef {
    fn clone(&self) -> QueueRef {
        QueueRef::new(&self.0)
    }
}

impl Drop for QueueRef {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PartialEq for QueueRef {
    fn eq(&self, other: &QueueRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What a payload costs in memory as the hub holds it: its JSON text, kept as is
/// ([`RawJson`]), and the shared handle around it (two allocations with the allocator's
/// overhead); or its bytes in one allocation of their own (the hub copies them out of the
/// frame, so a small payload never keeps a big read buffer alive) with their shared handle. The
/// hub never builds a tree of a payload, so this is the same for every shape.
pub fn memory_cost(value: &Body) -> usize {
    /// malloc's bookkeeping and rounding per heap allocation, roughly.
    const ALLOC: usize = 16;
    /// The `Arc`'s counts and the boxed text's fat pointer.
    const HANDLE: usize = 16 + 16;
    /// A `Bytes` handle's shared header.
    const SHARED: usize = 32;
    let json = |j: &RawJson| j.len() + ALLOC + HANDLE + ALLOC;
    match value {
        Body::Json(j) => json(j),
        Body::Bytes(b) => b.len() + ALLOC + SHARED,
        Body::Holding(h) => {
            let held = std::mem::size_of_val(&**h) + ALLOC;
            held + json(&h.json) + h.at.len() + ALLOC + h.bytes.len() + ALLOC + SHARED
        }
    }
}

/// What a task costs as the hub holds it: its payload (see [`memory_cost`]), its own record in
/// the queue's ring buffer, and the strings it owns. Charging the record too keeps memory bounded
/// by `max_stored_bytes` for millions of tiny tasks, not only for large payloads.
pub fn task_cost(
    payload: &Body,
    queue: &QueueName,
    kind: Option<&str>,
    reply_to: Option<&QueueName>,
) -> usize {
    const ALLOC: usize = 16;
    let heap = |len: usize| if len == 0 { 0 } else { len + ALLOC };
    std::mem::size_of::<StoredTask>()
        + INDEX_BYTES
        + memory_cost(payload)
        + heap(queue.as_str().len())
        + kind.map_or(0, |k| heap(k.len()))
        + reply_to.map_or(0, |r| heap(r.as_str().len()))
}

/// What a replica of a task of `queue` and `kind` costs: its own record and index entry, and its copy of the kind
/// (the payload and queue name are shared with the task it replicates).
pub fn replica_cost(queue: &QueueName, kind: Option<&str>) -> usize {
    const ALLOC: usize = 16;
    std::mem::size_of::<StoredTask>()
        + INDEX_BYTES
        + kind.map_or(0, |k| k.len() + ALLOC)
        + queue.as_str().len()
        + ALLOC
}

/// A task's entry in the index that finds it by id while it waits (for `cancel`): a hash
/// table's slot of id and `order` (16 bytes and a control byte) at a load between 7/16 and 7/8.
const INDEX_BYTES: usize = 32;

/// The longest error a task keeps from a `fail` (the rest is cut, at a character boundary):
/// a retried task holds its last error, and it must not hold megabytes of it.
pub const MAX_KEPT_ERROR_BYTES: usize = 4_096;

/// A task as the hub holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTask {
    pub id: TaskId,
    pub queue: QueueName,
    pub kind: Option<String>,
    pub payload: Body,
    pub reply_to: Option<QueueName>,
    pub max_attempts: u32,
    /// Deliveries so far.
    pub attempts: u32,
    /// Where it stands in its queue while ready: queues are ordered by this key, which the broker
    /// hands out (see `Broker::enqueue`), so a journal can rebuild each queue's order.
    pub order: u64,
    pub last_error: Option<String>,
    /// Its share of the hub's `max_stored_bytes`.
    pub charge: Charge,
    /// Keeps its `reply_to` queue from being dropped while the task exists.
    pub reply_ref: Option<QueueRef>,
    /// When it was put (for the put-to-ack latency); a task restored from a journal counts from
    /// the restart.
    pub put_at: Millis,
    /// 0 to `MAX_PRIORITY`: higher is delivered first.
    pub priority: u8,
    /// While scheduled: when it becomes ready (a delayed put, a retry backing off), as Unix
    /// time in milliseconds, which is what a journal keeps across restarts.
    pub not_before: Option<NonZeroU64>,
    /// Its own retry backoff, where it named one.
    pub backoff: Backoff,
    /// Run on several sessions, accepted when enough agree: held by the broker's vote, not by a
    /// queue, while its replicas run (see `quorum`).
    pub redundancy: Option<Redundancy>,
    /// One run of a redundant task: its result is a vote, and storage never hears of it (the
    /// task it replicates is what storage keeps).
    pub replica: bool,
}

/// How a task's retries back off, as its put said: the first wait, doubling per attempt up to
/// the longest. What it left out is the hub's. Eight bytes in every task: milliseconds as `u32`
/// (49 days, beyond `max_delay`), `u32::MAX` for "the hub's".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: u32,
    max: u32,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(None, None)
    }
}

impl Backoff {
    const HUBS: u32 = u32::MAX;

    pub fn new(base_ms: Option<u64>, max_ms: Option<u64>) -> Backoff {
        let keep = |ms: Option<u64>| {
            ms.map_or(Backoff::HUBS, |ms| {
                u32::try_from(ms).unwrap_or(u32::MAX).min(Backoff::HUBS - 1)
            })
        };
        Backoff {
            base: keep(base_ms),
            max: keep(max_ms),
        }
    }

    pub fn of(schedule: &taskhub_core::protocol::Schedule) -> Backoff {
        Backoff::new(schedule.backoff_ms, schedule.backoff_max_ms)
    }

    /// The first wait, if the task named its own.
    pub fn base_ms(&self) -> Option<u64> {
        (self.base != Backoff::HUBS).then_some(u64::from(self.base))
    }

    /// The longest wait, if the task named its own.
    pub fn max_ms(&self) -> Option<u64> {
        (self.max != Backoff::HUBS).then_some(u64::from(self.max))
    }

    /// How long task `id` waits before it is ready again after failing its `attempts`th
    /// attempt: what the fail asked for (`asked`, at most `max_delay`), else this backoff (the
    /// hub's where the task named none) doubled per earlier attempt, capped, jittered into its
    /// upper half ([`doubling_wait`]). The jitter is a hash of task and attempt, so every
    /// backend waits the same and the broker stays deterministic.
    pub fn retry_wait(
        &self,
        config: &BrokerConfig,
        asked: Option<u64>,
        attempts: u32,
        id: TaskId,
    ) -> u64 {
        if let Some(asked) = asked {
            return asked.min(millis_of(config.max_delay));
        }
        let first = self.base_ms().unwrap_or(millis_of(config.retry_backoff));
        let max = self.max_ms().unwrap_or(millis_of(config.retry_backoff_max));
        let seed = splitmix(id.0 ^ u64::from(attempts).rotate_left(32));
        doubling_wait(first, max, attempts.saturating_sub(1), seed)
    }
}

/// A well-mixed 64-bit function of `x` (SplitMix64's finaliser).
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl StoredTask {
    /// Remember why the task last failed, cut to [`MAX_KEPT_ERROR_BYTES`], and charge for it.
    pub fn set_error(&mut self, mut error: String) {
        if error.len() > MAX_KEPT_ERROR_BYTES {
            error.truncate(taskhub_core::char_floor(&error, MAX_KEPT_ERROR_BYTES));
            error.push('…');
        }
        let old = self.last_error.as_ref().map_or(0, String::capacity);
        let new = error.capacity();
        self.last_error = Some(error);
        self.charge
            .set(self.charge.bytes().saturating_sub(old) + new);
    }
}

/// Where a ready task stands in its queue: higher priority first, then by `order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    /// `MAX_PRIORITY - priority`, so that the highest priority sorts first.
    rank: u8,
    order: u64,
}

impl Place {
    pub fn of(task: &StoredTask) -> Place {
        Place {
            rank: MAX_PRIORITY.saturating_sub(task.priority.min(MAX_PRIORITY)),
            order: task.order,
        }
    }
}

/// One queue's ready tasks: a ring buffer per priority, each in `order` (first in, first out; a
/// task given back goes to the front of its own priority). Taking the next task looks at most at
/// ten buffers; adding one at either end of its priority is constant time. Ring buffers rather
/// than a B-tree keep memory to the tasks themselves, which `max_stored_bytes` charges for
/// (a B-tree's half-full nodes cost nearly as much again). Taking one out of the middle (a dead
/// letter requeued, a task cancelled) finds it by binary search and moves the rest up; its id
/// finds its place.
#[derive(Debug, Default)]
pub struct ReadyQueue {
    /// By rank: index 0 is priority 9.
    by_rank: [VecDeque<StoredTask>; MAX_PRIORITY as usize + 1],
    /// Every task's `order`, by id (its priority picks the buffer: at most ten binary searches).
    orders: IdMap<TaskId, u64>,
    /// How many of them are replicas of a redundant task, which not every session may take.
    replicas: usize,
}

impl ReadyQueue {
    /// Add `task` at its place (its priority and `order`).
    pub fn insert(&mut self, task: StoredTask) {
        let place = Place::of(&task);
        let q = &mut self.by_rank[usize::from(place.rank)];
        self.orders.insert(task.id, place.order);
        self.replicas += usize::from(task.replica);
        match (q.front(), q.back()) {
            (_, Some(last)) if last.order < place.order => q.push_back(task),
            (Some(first), _) if first.order > place.order => q.push_front(task),
            (None, _) => q.push_back(task),
            _ => {
                let at = q.partition_point(|t| t.order < place.order);
                q.insert(at, task);
            }
        }
    }
    pub fn pop_front(&mut self) -> Option<StoredTask> {
        let task = self.by_rank.iter_mut().find_map(VecDeque::pop_front)?;
        self.forget(&task);
        Some(task)
    }
    fn forget(&mut self, task: &StoredTask) {
        self.orders.remove(&task.id);
        self.replicas -= usize::from(task.replica);
    }
    /// Take out task `id`: the front one without a search.
    pub fn take_id(&mut self, id: TaskId) -> Option<StoredTask> {
        if self.iter().next().is_some_and(|t| t.id == id) {
            return self.pop_front();
        }
        self.remove(id)
    }
    /// How many of its tasks are replicas.
    pub fn replicas(&self) -> usize {
        self.replicas
    }
    /// The first task among the first `window` that is not a replica (a `get` may take it).
    pub fn first_plain(&self, window: usize) -> Option<TaskId> {
        if self.replicas == 0 {
            return self.iter().next().map(|t| t.id);
        }
        self.iter().take(window).find(|t| !t.replica).map(|t| t.id)
    }
    pub fn len(&self) -> usize {
        self.orders.len()
    }
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }
    /// Whether task `id` is here.
    pub fn contains(&self, id: TaskId) -> bool {
        self.orders.contains_key(&id)
    }
    /// Take out task `id`, if it is here.
    pub fn remove(&mut self, id: TaskId) -> Option<StoredTask> {
        let order = *self.orders.get(&id)?;
        let rank = self.by_rank.iter().position(|q| {
            q.binary_search_by_key(&order, |t| t.order)
                .is_ok_and(|at| q[at].id == id)
        })?;
        self.take(Place {
            rank: rank as u8,
            order,
        })
    }
    /// The tasks in the order they go out.
    pub fn iter(&self) -> impl Iterator<Item = &StoredTask> {
        self.by_rank.iter().flatten()
    }
    /// Take out the task at `place`.
    pub fn take(&mut self, place: Place) -> Option<StoredTask> {
        let q = &mut self.by_rank[usize::from(place.rank)];
        let at = q.binary_search_by_key(&place.order, |t| t.order).ok()?;
        let task = q.remove(at)?;
        self.forget(&task);
        Some(task)
    }
}
