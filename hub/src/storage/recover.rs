//! Reading the journal back at start-up.
//!
//! Segments are read oldest first and their records replayed onto a map of tasks: `stored`
//! makes a task whole, `ready` and `leased` move it, `done` removes it. What is left is every
//! task the hub held, and the work grows with the journal, which compaction keeps within a small
//! multiple of the live data.
//!
//! A record that does not read is one of two things:
//! - at the end of the last segment, a write the hub was making when it stopped (a torn tail): it
//!   was never confirmed (a put is confirmed after its record is written whole), so it is
//!   dropped with a log line;
//! - anywhere else, damage: start-up stops and names the file and offset, unless `repair` is
//!   set, which keeps everything before it and drops the rest.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::broker::Recovered;
use crate::broker::idhash::IdMap;

use super::index::Index;
use super::record::{self, HEADER, Read, Record};
use super::{StorageError, io_error};

/// What start-up found in the data dir.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every task the hub held, in no particular order.
    pub tasks: Vec<Recovered>,
    /// Task ids go on after this.
    pub next_task: u64,
    pub segments: usize,
    pub bytes: u64,
    /// Things an operator should hear of: a torn tail dropped, a repair.
    pub notes: Vec<String>,
    pub took: Duration,
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

/// Read every segment back. Returns the tasks and the writer's index of them.
pub(super) fn recover(dir: &Path, repair: bool) -> Result<(Recovery, Index), StorageError> {
    let started = Instant::now();
    let numbers = segments(dir)?;
    let mut index = Index::default();
    let mut tasks: IdMap<u64, Recovered> = IdMap::default();
    let mut out = Recovery::default();
    let mut records = 0u64;
    for (i, &n) in numbers.iter().enumerate() {
        let path = segment_path(dir, n);
        let data = std::fs::read(&path).map_err(io_error(&path))?;
        index.open_segment(n);
        out.segments += 1;
        let mut off = 0;
        while off < data.len() {
            let rest = &data[off..];
            let (record, used) = match record::decode(rest) {
                Read::Record(r, used) => (r, used),
                Read::Short => {
                    truncate_torn(&path, off, rest.len(), &mut out)?;
                    break;
                }
                Read::Bad(why) => {
                    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    let last = i + 1 == numbers.len();
                    // A tail the disk never filled in (zeros), or a last record whose bytes did
                    // not all reach it, is a write cut short; anything else is damage.
                    if last && (HEADER + len == rest.len() || rest.iter().all(|b| *b == 0)) {
                        truncate_torn(&path, off, rest.len(), &mut out)?;
                        break;
                    }
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
                    out.bytes += off as u64;
                    return Ok(finish(out, tasks, index, started));
                }
            };
            if let Some(p) = record::peek(&data[off + HEADER..off + used]) {
                index.apply(p, (n, off as u64), used as u32);
            }
            replay(record, &mut tasks, &mut index);
            records += 1;
            off += used;
        }
        out.bytes += off as u64;
    }
    Ok(finish(out, tasks, index, started))
}

fn replay(record: Record, tasks: &mut IdMap<u64, Recovered>, index: &mut Index) {
    match record {
        Record::Stored(t) => {
            tasks.insert(t.id.0, t);
        }
        Record::Ready {
            id,
            order,
            attempts,
            error,
        } => {
            if let Some(t) = tasks.get_mut(&id.0) {
                t.order = order;
                t.attempts = attempts;
                t.last_error = error;
                t.leased = false;
            }
        }
        Record::Leased { id, attempts } => {
            if let Some(t) = tasks.get_mut(&id.0) {
                t.attempts = attempts;
                t.leased = true;
            }
        }
        Record::Done(id) => {
            tasks.remove(&id.0);
        }
        Record::Head { next_task } => index.saw_next_task(next_task),
    }
}

fn finish(
    mut out: Recovery,
    tasks: IdMap<u64, Recovered>,
    index: Index,
    started: Instant,
) -> (Recovery, Index) {
    out.tasks = tasks.into_values().collect();
    out.next_task = index.next_task;
    out.took = started.elapsed();
    (out, index)
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

/// Replay a buffer of whole records: the tasks left and the next task id.
#[cfg(test)]
pub(super) fn replay_all(data: &[u8]) -> (Vec<Recovered>, u64) {
    let mut tasks = IdMap::default();
    let mut index = Index::default();
    index.open_segment(1);
    let mut off = 0;
    while let Read::Record(r, used) = record::decode(&data[off..]) {
        if let Some(p) = record::peek(&data[off + HEADER..off + used]) {
            index.apply(p, (1, off as u64), used as u32);
        }
        replay(r, &mut tasks, &mut index);
        off += used;
    }
    assert_eq!(off, data.len(), "every record reads back");
    (tasks.into_values().collect(), index.next_task)
}
