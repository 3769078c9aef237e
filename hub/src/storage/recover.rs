//! Reading the journal back at start-up.
//!
//! Two passes. The first checks every record's frame and checksum and takes in its fixed fields
//! (`record::peek`: no allocation) into the writer's [`Index`]: `stored` makes a task live,
//! `ready` and `leased` move it, `done` removes it. What is left is every task the hub held,
//! with its place, attempts and where its whole record is. The second decodes just those
//! records, in queue order, as the broker takes them ([`Tasks`]). The work grows with the
//! journal, which compaction keeps within a small multiple of the live data.
//!
//! A record that does not read is one of two things:
//! - at the end of the last segment, a write the hub was making when it stopped (a torn tail): it
//!   was never confirmed (a put is confirmed after its record is written whole), so it is
//!   dropped with a log line;
//! - anywhere else, damage: start-up stops and names the file and offset, unless `repair` is
//!   set, which keeps everything before it and drops the rest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use taskhub_core::TaskId;

use crate::broker::Recovered;

use super::index::{At, Entry, Index};
use super::record::{self, Frame, Read, Record};
use super::{StorageError, io_error};

/// What start-up found in the data dir.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every task the hub held, in the order of their queues.
    pub tasks: Tasks,
    /// Task ids go on after this.
    pub next_task: u64,
    pub segments: usize,
    pub bytes: u64,
    /// Things an operator should hear of: a torn tail dropped, a repair.
    pub notes: Vec<String>,
    /// Remembered `dedup_id`s not yet expired: (key, task, expiry in Unix ms).
    pub dedup: Vec<(String, TaskId, u64)>,
}

/// The live tasks, decoded one at a time in `order` (each queue's order), from the segments
/// read at start-up.
#[derive(Debug, Default)]
pub struct Tasks {
    segments: HashMap<u32, Vec<u8>>,
    live: std::vec::IntoIter<(u64, Entry)>,
}

impl Tasks {
    fn new(segments: HashMap<u32, Vec<u8>>, index: &Index) -> Tasks {
        // Sorted whole rather than by position: then they are read in memory order, which
        // measured faster than sorting less and jumping about.
        let mut live: Vec<(u64, Entry)> = index.live.iter().map(|(id, e)| (*id, *e)).collect();
        live.sort_unstable_by_key(|(_, e)| e.order);
        Tasks {
            segments,
            live: live.into_iter(),
        }
    }

    fn read(&self, (seg, off): At) -> Option<Record> {
        let data = self.segments.get(&seg)?;
        match record::decode(data.get(off as usize..)?) {
            Read::Record(r, _) => Some(r),
            _ => None,
        }
    }
}

impl Iterator for Tasks {
    type Item = Recovered;

    fn next(&mut self) -> Option<Recovered> {
        loop {
            let (id, e) = self.live.next()?;
            let error = match e.error_at.map(|at| self.read(at)) {
                None => None,
                Some(Some(Record::Ready { error, .. })) => Some(error),
                Some(_) => Some(None),
            };
            let Some(Record::Stored(task)) = self.read(e.at) else {
                // Its checksum held, so this is a bug in the format, not the disk.
                tracing::error!(
                    task = id,
                    segment = e.at.0,
                    offset = e.at.1,
                    "a task's record does not read; the task is dropped"
                );
                continue;
            };
            return Some(Recovered {
                order: e.order,
                attempts: e.attempts,
                leased: e.leased,
                not_before: e.not_before.map(std::num::NonZeroU64::get),
                last_error: error.unwrap_or(task.last_error),
                ..task
            });
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.live.len()))
    }
}

/// The segment files in `dir`, by number.
pub(super) fn segments(dir: &Path) -> Result<Vec<u32>, StorageError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        found.push(n);
    }
    found.sort_unstable();
    Ok(found)
}

pub(super) fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.log"))
}

/// Read every segment back. Returns what was found and the writer's index of it.
pub(super) fn recover(dir: &Path, repair: bool) -> Result<(Recovery, Index), StorageError> {
    let numbers = segments(dir)?;
    let mut index = Index::default();
    let mut out = Recovery::default();
    let mut kept = HashMap::new();
    let mut dedup_at = Vec::new();
    let mut records = 0u64;
    for (i, &n) in numbers.iter().enumerate() {
        let path = segment_path(dir, n);
        let data = std::fs::read(&path).map_err(io_error(&path))?;
        index.open_segment(n);
        out.segments += 1;
        let (read, stop) = scan(n, &data, &mut index, &mut dedup_at);
        records += read.1;
        out.bytes += read.0 as u64;
        if let Some((off, why)) = stop {
            let rest = &data[off..];
            let last = i + 1 == numbers.len();
            // A tail the disk never filled in (zeros), or a last record whose bytes did not all
            // reach it, is a write cut short; anything else is damage.
            let torn = match &why {
                None => true,
                Some(_) => {
                    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    record::HEADER + len == rest.len() || rest.iter().all(|b| *b == 0)
                }
            };
            if last && torn {
                truncate_torn(&path, off, rest.len(), &mut out)?;
            } else {
                let why = why.unwrap_or_else(|| "a record cut short".into());
                let later: u64 = numbers[i + 1..]
                    .iter()
                    .map(|m| file_len(&segment_path(dir, *m)))
                    .sum();
                let dropped = rest.len() as u64 + later;
                if !repair {
                    return Err(StorageError::Corrupt {
                        file: path,
                        offset: off as u64,
                        why,
                        kept: records,
                        dropped,
                    });
                }
                cut(&path, off)?;
                for m in &numbers[i + 1..] {
                    let p = segment_path(dir, *m);
                    std::fs::remove_file(&p).map_err(io_error(&p))?;
                }
                out.notes.push(format!(
                    "--repair: {} at byte {off}: {why}; kept the {records} records before it, dropped {dropped} bytes from there on ({} later segment file(s) removed)",
                    path.display(),
                    numbers.len() - i - 1
                ));
                kept.insert(n, data);
                break;
            }
        }
        kept.insert(n, data);
    }
    let tasks = Tasks::new(kept, &index);
    out.dedup = remembered(&tasks, &dedup_at);
    out.tasks = tasks;
    out.next_task = index.next_task;
    Ok((out, index))
}

/// The `dedup` records at `at`, the latest for each id, that have not expired.
fn remembered(tasks: &Tasks, at: &[At]) -> Vec<(String, TaskId, u64)> {
    let now = super::unix_ms();
    let mut latest: HashMap<String, (TaskId, u64)> = HashMap::new();
    for a in at {
        if let Some(Record::Dedup { key, task, expires }) = tasks.read(*a) {
            latest.insert(key, (task, expires));
        }
    }
    latest
        .into_iter()
        .filter(|(_, (_, expires))| *expires > now)
        .map(|(key, (task, expires))| (key, task, expires))
        .collect()
}

/// Take in segment `n`'s records, up to the first that does not check out, noting where the
/// `dedup` records are. Returns the bytes and records read, and where it stopped and why
/// (`None`: the segment ends inside a record).
#[allow(clippy::type_complexity)]
fn scan(
    n: u32,
    data: &[u8],
    index: &mut Index,
    dedup_at: &mut Vec<At>,
) -> ((usize, u64), Option<(usize, Option<String>)>) {
    let mut off = 0;
    let mut records = 0;
    while off < data.len() {
        let (body, used) = match record::frame_at(&data[off..]) {
            Frame::Whole(body, used) => (body, used),
            Frame::Short => return ((off, records), Some((off, None))),
            Frame::Bad(why) => return ((off, records), Some((off, Some(why)))),
        };
        let Some(peek) = record::peek(body) else {
            let why = format!("a record of an unknown kind ({})", body[0]);
            return ((off, records), Some((off, Some(why))));
        };
        if let record::Peek::Dedup { .. } = peek {
            dedup_at.push((n, off as u64));
        }
        index.apply(peek, (n, off as u64), used as u32);
        records += 1;
        off += used;
    }
    ((off, records), None)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn truncate_torn(
    path: &Path,
    off: usize,
    len: usize,
    out: &mut Recovery,
) -> Result<(), StorageError> {
    cut(path, off)?;
    let line = format!(
        "dropped a torn record at the end of {}: {len} bytes at byte {off} (the hub stopped while writing it)",
        path.display()
    );
    tracing::warn!("{line}");
    out.notes.push(line);
    Ok(())
}

/// Cut `path` to `len` bytes, durably.
fn cut(path: &Path, len: usize) -> Result<(), StorageError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    f.set_len(len as u64).map_err(io_error(path))?;
    f.sync_all().map_err(io_error(path))
}

/// Replay a buffer of whole records: the tasks left, in order, and the next task id.
#[cfg(test)]
pub(super) fn replay_all(data: &[u8]) -> (Vec<Recovered>, u64) {
    let mut index = Index::default();
    index.open_segment(1);
    let ((read, _), stop) = scan(1, data, &mut index, &mut Vec::new());
    assert!(
        stop.is_none() && read == data.len(),
        "every record reads back"
    );
    let tasks = Tasks::new(HashMap::from([(1, data.to_vec())]), &index);
    (tasks.collect(), index.next_task)
}
