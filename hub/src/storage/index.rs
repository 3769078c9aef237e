//! What the writer knows of the journal: where each live task's record is, the state later records
//! gave it, and how much of each segment is still live. Enough to carry a live task forward
//! when its segment is compacted away, with no payload held in memory twice.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use crate::broker::idhash::IdMap;

use super::record::Peek;

/// A record's place: segment number and byte offset.
pub type At = (u32, u64);

/// Memory the disk journal keeps per live task (its index entry), at worst: entry and key in a
/// hash table that may be just past growing (half full), and the table's control byte. Charged to
/// every task in disk mode, so `max_stored_bytes` bounds it too.
pub const KEPT_PER_TASK: usize = 2 * (std::mem::size_of::<(u64, Entry)>() + 1);

/// One live task.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Its latest whole record (`stored`), and that record's length with its header.
    pub at: At,
    pub len: u32,
    pub order: u64,
    pub attempts: u32,
    pub leased: bool,
    /// Scheduled until this Unix time (ms), as its latest `stored` or `ready` record says.
    pub not_before: Option<NonZeroU64>,
    /// The latest `ready` record that carried its last error, if it is newer than `at`.
    pub error_at: Option<At>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Segment {
    /// Live tasks whose whole record is here.
    pub live: usize,
    pub bytes: u64,
    /// Records about tasks (all but its `head`).
    pub records: u64,
    /// The latest expiry (Unix ms) of the `dedup` records in it: it is kept until then, so a
    /// retried put is still recognised after a restart.
    pub dedup_until: u64,
}

#[derive(Debug, Default)]
pub struct Index {
    pub live: IdMap<u64, Entry>,
    pub segments: BTreeMap<u32, Segment>,
    /// Bytes of the live tasks' whole records.
    pub live_bytes: u64,
    /// Every segment's bytes.
    pub total_bytes: u64,
    /// The highest task id any record has named, and any `head` has carried forward.
    pub next_task: u64,
}

impl Index {
    /// A segment was started.
    pub fn open_segment(&mut self, seg: u32) {
        self.segments.entry(seg).or_default();
    }

    /// Take in a record of `len` bytes (header included) written at `at`.
    pub fn apply(&mut self, peek: Peek, at: At, len: u32) {
        if let Some(s) = self.segments.get_mut(&at.0) {
            s.bytes += u64::from(len);
            if !matches!(peek, Peek::Head { .. }) {
                s.records += 1;
            }
        }
        self.total_bytes += u64::from(len);
        match peek {
            Peek::Stored {
                id,
                order,
                attempts,
                leased,
                not_before,
            } => {
                self.next_task = self.next_task.max(id);
                self.forget(id);
                self.live.insert(
                    id,
                    Entry {
                        at,
                        len,
                        order,
                        attempts,
                        leased,
                        not_before: not_before.and_then(NonZeroU64::new),
                        error_at: None,
                    },
                );
                self.live_bytes += u64::from(len);
                if let Some(s) = self.segments.get_mut(&at.0) {
                    s.live += 1;
                }
            }
            Peek::Ready {
                id,
                order,
                attempts,
                has_error,
                not_before,
            } => {
                if let Some(e) = self.live.get_mut(&id) {
                    e.order = order;
                    e.attempts = attempts;
                    e.leased = false;
                    e.not_before = not_before.and_then(NonZeroU64::new);
                    if has_error {
                        e.error_at = Some(at);
                    }
                }
            }
            Peek::Leased { id, attempts } => {
                if let Some(e) = self.live.get_mut(&id) {
                    e.attempts = attempts;
                    e.leased = true;
                }
            }
            Peek::Done { id } => {
                self.next_task = self.next_task.max(id);
                self.forget(id);
            }
            Peek::Head { next_task } => self.saw_next_task(next_task),
            Peek::Dedup { expires } => {
                if let Some(s) = self.segments.get_mut(&at.0) {
                    s.dedup_until = s.dedup_until.max(expires);
                }
            }
        }
    }

    /// A `head` record carried the id counter forward.
    fn saw_next_task(&mut self, next: u64) {
        self.next_task = self.next_task.max(next);
    }

    fn forget(&mut self, id: u64) {
        if let Some(old) = self.live.remove(&id) {
            self.live_bytes -= u64::from(old.len);
            if let Some(s) = self.segments.get_mut(&old.at.0) {
                s.live -= 1;
            }
        }
    }

    /// The oldest segment, if it is not `current`.
    pub fn oldest_before(&self, current: u32) -> Option<(u32, Segment)> {
        self.segments
            .first_key_value()
            .filter(|(n, _)| **n != current)
            .map(|(n, s)| (*n, *s))
    }

    /// Segments other than `current` that hold nothing but their `head` (a hub that started and
    /// stopped without a change): they can go whatever their age.
    pub fn empty_before(&self, current: u32) -> Vec<u32> {
        self.segments
            .iter()
            .filter(|(n, s)| **n != current && s.records == 0)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The segment's file is gone.
    pub fn drop_segment(&mut self, seg: u32) {
        if let Some(s) = self.segments.remove(&seg) {
            self.total_bytes -= s.bytes;
        }
    }

    /// Live tasks whose whole record is in `seg`.
    pub fn live_in(&self, seg: u32) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, e)| e.at.0 == seg)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }
}
