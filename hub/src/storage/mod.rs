//! Durable storage for `taskhub serve --data-dir DIR`: a journal of every change the broker
//! makes, written and synced by a thread of its own, and read back at start-up.
//!
//! - `record`: the record format (framed, CRC-32C checked).
//! - `recover`: reading the segments back, torn tails and damage.
//! - `writer`: the thread: group commit, the fsync policy, segments, compaction, disk errors.
//! - `index`: what the writer knows of the live tasks, for compaction.
//!
//! The broker hears nothing of files: [`DiskJournal`] copies each change into a buffer under the
//! hub's lock, and `commit` hands the buffer to the writer and returns a ticket (the bytes
//! handed over so far). The writer publishes the highest ticket it has made durable; a `queued`
//! goes out once its ticket is. ARCHITECTURE.md has the design and its measurements.

mod index;
pub mod record;
mod recover;
#[cfg(test)]
mod tests;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::broker::{Change, Journal};

pub use index::KEPT_PER_TASK;
pub use recover::Recovery;

/// When written records count as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Once synced to the disk (fdatasync), with group commit: one sync covers every record
    /// that arrived while the previous one ran. Loses nothing that was confirmed.
    Always,
    /// Once written to the operating system; synced every interval. A crash of the hub loses
    /// nothing confirmed; a crash of the machine (power, kernel) loses up to the last interval.
    Interval(Duration),
}

impl std::str::FromStr for Fsync {
    type Err = String;

    fn from_str(s: &str) -> Result<Fsync, String> {
        if s == "always" {
            return Ok(Fsync::Always);
        }
        let bad = || {
            format!(
                "--fsync takes `always` or `interval=DURATION` (like interval=100ms or interval=1s), not {s:?}"
            )
        };
        let every = s.strip_prefix("interval=").ok_or_else(bad)?;
        let (number, unit) = match every.strip_suffix("ms") {
            Some(n) => (n, 1e-3),
            None => (every.strip_suffix('s').ok_or_else(bad)?, 1.0),
        };
        let secs: f64 = number.parse().map_err(|_| bad())?;
        if !(secs * unit >= 0.001 && secs * unit <= 60.0) {
            return Err(format!("--fsync interval must be 1ms to 60s, not {every}"));
        }
        Ok(Fsync::Interval(Duration::from_secs_f64(secs * unit)))
    }
}

impl std::fmt::Display for Fsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fsync::Always => f.write_str("always"),
            Fsync::Interval(d) => write!(f, "interval={}ms", d.as_millis()),
        }
    }
}

/// Where and how the hub keeps its tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct DataDir {
    pub path: PathBuf,
    pub fsync: Fsync,
    /// Start even if a record in the middle of the journal is damaged: keep everything before it,
    /// drop the rest, and say how much.
    pub repair: bool,
    /// A segment file is closed and a new one started past this size (default 64 MiB).
    pub segment_bytes: u64,
}

impl DataDir {
    pub fn new(path: impl Into<PathBuf>) -> DataDir {
        DataDir {
            path: path.into(),
            fsync: Fsync::Always,
            repair: false,
            segment_bytes: 64 << 20,
        }
    }

    fn journal_dir(&self) -> PathBuf {
        self.path.join("journal")
    }
}

/// Why the data dir cannot be used. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot use data dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data dir {path} is in use by another taskhub (its LOCK file is held); stop that hub or use another --data-dir"
    )]
    Locked { path: PathBuf },
    #[error(
        "the journal is damaged: {file} at byte {offset}: {why}. Nothing was changed. Start with --repair to keep the {kept} records before it and drop the {dropped} bytes from there on"
    )]
    Corrupt {
        file: PathBuf,
        offset: u64,
        why: String,
        kept: u64,
        dropped: u64,
    },
}

/// Now, in Unix time (ms): how dedup windows are kept across restarts.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Time since `unix_ns` (nanoseconds since the Unix epoch), or zero if that is later (clocks
/// of two machines).
pub(crate) fn since_unix_ns(unix_ns: u64) -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns))
        .unwrap_or_default()
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the hub and its writer share: records waiting to be written, and how storage is doing.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer: records arrived, or the hub is stopping.
    wake: Condvar,
    /// Set while the disk fails (full, or I/O errors); puts are refused meanwhile.
    failing: AtomicBool,
    why: Mutex<String>,
}

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    /// Bytes handed over since start-up: the ticket of the last commit.
    ticket: u64,
    stop: bool,
    /// The writer is asleep on `wake`: only then is it worth a wake-up call.
    idle: bool,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_failing(&self, why: Option<String>) {
        match why {
            Some(why) => {
                *self.why.lock().unwrap_or_else(|e| e.into_inner()) = why;
                self.failing.store(true, Ordering::Release);
            }
            None => self.failing.store(false, Ordering::Release),
        }
    }
}

/// The broker's journal in disk mode.
#[derive(Debug)]
pub struct DiskJournal {
    buf: Vec<u8>,
    last_ticket: u64,
    shared: Arc<Shared>,
}

impl Journal for DiskJournal {
    fn record(&mut self, change: Change<'_>) {
        record::encode(change, &mut self.buf);
    }

    fn commit(&mut self) -> u64 {
        if self.buf.is_empty() {
            return self.last_ticket;
        }
        let bytes = self.buf.len() as u64;
        let mut p = self.shared.pending();
        let was_empty = p.buf.is_empty();
        let idle = p.idle;
        if was_empty {
            // Hand the buffer over whole and keep the writer's spent one: no copy.
            std::mem::swap(&mut p.buf, &mut self.buf);
        } else {
            p.buf.extend_from_slice(&self.buf);
        }
        p.ticket += bytes;
        self.last_ticket = p.ticket;
        drop(p);
        self.buf.clear();
        if idle {
            self.shared.wake.notify_one();
        }
        self.last_ticket
    }

    fn kept_per_task(&self) -> usize {
        index::KEPT_PER_TASK
    }

    fn writable(&self) -> Result<(), String> {
        if !self.shared.failing.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(self
            .shared
            .why
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }
}

/// An open data dir: the journal to give the broker, what was recovered, and the writer.
#[derive(Debug)]
pub struct Opened {
    pub journal: DiskJournal,
    pub recovery: Recovery,
    /// The highest ticket made durable.
    pub durable: watch::Receiver<u64>,
    pub writer: Writer,
}

/// The writer thread, to stop once the hub is done.
#[derive(Debug)]
pub struct Writer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Held for as long as the hub runs, so a second hub cannot open the same dir.
    _lock: File,
}

impl Writer {
    /// Write and sync everything handed over, then stop. Blocks: call it off the runtime.
    pub fn close(mut self) {
        self.shared.pending().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Open (or create) the data dir: lock it, read the journal back, and start the writer on a new
/// segment.
pub fn open(dir: &DataDir) -> Result<Opened, StorageError> {
    let journal_dir = dir.journal_dir();
    std::fs::create_dir_all(&journal_dir).map_err(io_error(&journal_dir))?;
    let lock_path = dir.path.join("LOCK");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StorageError::Locked {
                path: dir.path.clone(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
    }
    let (recovery, index) = recover::recover(&journal_dir, dir.repair)?;
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
        failing: AtomicBool::new(false),
        why: Mutex::new(String::new()),
    });
    let (durable_tx, durable) = watch::channel(0);
    let writer = writer::Writer::start(dir, journal_dir, index, shared.clone(), durable_tx)?;
    let thread = std::thread::Builder::new()
        .name("taskhub-journal".into())
        .spawn(move || writer.run())
        .map_err(io_error(&dir.path))?;
    Ok(Opened {
        journal: DiskJournal {
            buf: Vec::new(),
            last_ticket: 0,
            shared: shared.clone(),
        },
        recovery,
        durable,
        writer: Writer {
            shared,
            thread: Some(thread),
            _lock: lock,
        },
    })
}
