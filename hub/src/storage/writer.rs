//! The journal's writer: one thread that owns the files.
//!
//! It takes whatever the hub has committed since its last turn (group commit: while one write
//! and sync run, the next batch gathers), writes it at the end of the current segment, syncs it
//! under `--fsync always`, and publishes the ticket it reached. Then it looks after the files:
//! a full segment is closed and a new one started; the oldest segment goes once no live task's
//! record is in it; and when the journal outgrows twice the live data, the oldest segment's live
//! tasks are written again at the end, a slice per turn, so it can go.
//!
//! A write or sync that fails (disk full, I/O error) is cut back off the file and kept: the
//! writer retries it every [`RETRY`], and puts are refused meanwhile. Nothing after it is written
//! before it, so the journal stays a prefix of what the hub did.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::index::{At, Index};
use super::record::{self, HEADER, Peek, Read, Record};
use super::recover::segment_path;
use super::{DataDir, Fsync, Shared, StorageError, io_error, unix_ms};

/// The least time between two syncs under `always` while changes pour in, and the batch size
/// that says they do.
const GATHER: Duration = Duration::from_micros(1_000);
const GATHER_FROM: usize = 4 << 10;

/// How often a failed write is tried again.
const RETRY: Duration = Duration::from_millis(250);

/// Live tasks written again per turn while compacting, so commits are not held up for long.
const COMPACT_SLICE: usize = 4_096;

pub(super) struct Writer {
    dir: PathBuf,
    fsync: Fsync,
    segment_bytes: u64,
    shared: Arc<Shared>,
    durable: watch::Sender<u64>,
    index: Index,
    seg: u32,
    file: File,
    /// Bytes of the current segment that are written (and, under `always`, synced).
    len: u64,
    /// Written since the last sync (`interval` only).
    unsynced: bool,
    last_sync: Instant,
    /// Bytes of the last batch written.
    last_batch: usize,
    compaction: Option<Compaction>,
    /// Compaction met a record it could not read back: it is not tried again until a restart.
    compaction_off: bool,
}

/// Carrying the oldest segment's live tasks forward.
struct Compaction {
    seg: u32,
    ids: Vec<u64>,
    next: usize,
    files: HashMap<u32, File>,
}

impl Writer {
    pub fn start(
        dir: &DataDir,
        journal_dir: PathBuf,
        mut index: Index,
        shared: Arc<Shared>,
        durable: watch::Sender<u64>,
    ) -> Result<Writer, StorageError> {
        let seg = index.segments.keys().last().map_or(1, |n| n + 1);
        let (file, len) =
            create_segment(&journal_dir, seg, &mut index).map_err(io_error(&journal_dir))?;
        Ok(Writer {
            dir: journal_dir,
            fsync: dir.fsync,
            segment_bytes: dir.segment_bytes,
            shared,
            durable,
            index,
            seg,
            file,
            len,
            unsynced: false,
            last_sync: Instant::now(),
            last_batch: 0,
            compaction: None,
            compaction_off: false,
        })
    }

    pub fn run(mut self) {
        // Upkeep first: what earlier runs left (an empty segment) goes at once.
        if let Err(e) = self.maintain() {
            tracing::error!("journal upkeep failed: {}", describe(&e, &self.dir));
        }
        let mut batch: Vec<u8> = Vec::new();
        // Since when writes fail, if they do.
        let mut failed_at: Option<Instant> = None;
        loop {
            // Under a heavy stream (the last batch was big), let the next gather for a moment
            // after a sync: fewer syncs (each costs the kernel tens of microseconds) for at most
            // GATHER more latency. One put at a time never waits for it.
            if self.fsync == Fsync::Always && self.last_batch >= GATHER_FROM {
                let since = self.last_sync.elapsed();
                if since < GATHER {
                    std::thread::sleep(GATHER - since);
                }
            }
            let (ticket, stop) = {
                let mut p = self.shared.pending();
                if batch.is_empty() && p.buf.is_empty() && !p.stop {
                    let wait = self.idle_wait();
                    if !wait.is_zero() {
                        p.idle = true;
                        p = self
                            .shared
                            .wake
                            .wait_timeout(p, wait)
                            .map_or_else(|e| e.into_inner().0, |(p, _)| p);
                        p.idle = false;
                    }
                }
                if !p.buf.is_empty() {
                    if batch.is_empty() {
                        std::mem::swap(&mut p.buf, &mut batch);
                    } else {
                        batch.extend_from_slice(&p.buf);
                        p.buf.clear();
                    }
                }
                (p.ticket, p.stop)
            };
            if !batch.is_empty() {
                match self.store(&batch) {
                    Ok(()) => {
                        self.last_batch = batch.len();
                        batch.clear();
                        self.durable.send_replace(ticket);
                        if let Some(since) = failed_at.take() {
                            self.shared.set_failing(None);
                            tracing::info!(
                                "storage works again after {:.1} s: the journal is being written",
                                since.elapsed().as_secs_f64()
                            );
                        }
                    }
                    Err(e) => {
                        if failed_at.is_none() {
                            failed_at = Some(Instant::now());
                            let why = describe(&e, &self.dir);
                            tracing::error!(
                                "{why}; puts get storage_unavailable until it works again"
                            );
                            self.shared.set_failing(Some(why));
                        }
                        if stop {
                            tracing::error!(
                                bytes = batch.len(),
                                "stopping with changes the journal could not store"
                            );
                            return;
                        }
                        std::thread::sleep(RETRY);
                        continue;
                    }
                }
            }
            if failed_at.is_none() {
                self.sync_if_due(stop);
                if let Err(e) = self.maintain() {
                    tracing::error!("journal upkeep failed: {}", describe(&e, &self.dir));
                }
            }
            if stop && batch.is_empty() {
                return;
            }
        }
    }

    /// How long to sleep with nothing to write.
    fn idle_wait(&self) -> Duration {
        if self.compaction.is_some() {
            return Duration::ZERO;
        }
        match self.fsync {
            Fsync::Interval(every) if self.unsynced => {
                every.saturating_sub(self.last_sync.elapsed())
            }
            _ => Duration::from_secs(1),
        }
    }

    /// Write `batch` (whole records) at the end of the segment, synced under `always`. On
    /// failure the file is cut back to where it was, so no part of the batch stays.
    fn store(&mut self, batch: &[u8]) -> std::io::Result<()> {
        let at = self.len;
        let written = self.file.write_all(batch).and_then(|()| match self.fsync {
            Fsync::Always => {
                let synced = self.file.sync_data();
                self.last_sync = Instant::now();
                synced
            }
            Fsync::Interval(_) => Ok(()),
        });
        if let Err(e) = written {
            let _ = self.file.set_len(at);
            return Err(e);
        }
        let mut off = 0;
        while off + HEADER <= batch.len() {
            let len =
                u32::from_le_bytes([batch[off], batch[off + 1], batch[off + 2], batch[off + 3]])
                    as usize
                    + HEADER;
            if let Some(p) = batch.get(off + HEADER..off + len).and_then(record::peek) {
                self.index.apply(p, (self.seg, at + off as u64), len as u32);
            }
            off += len;
        }
        self.len += batch.len() as u64;
        if matches!(self.fsync, Fsync::Interval(_)) {
            self.unsynced = true;
        }
        Ok(())
    }

    fn sync_if_due(&mut self, stop: bool) {
        let Fsync::Interval(every) = self.fsync else {
            return;
        };
        if self.unsynced && (stop || self.last_sync.elapsed() >= every) {
            self.sync();
        }
    }

    /// Sync what `interval` wrote and has not synced (under `always` every write already is).
    fn sync_written(&mut self) {
        if self.unsynced {
            self.sync();
        }
    }

    fn sync(&mut self) {
        match self.file.sync_data() {
            Ok(()) => {
                self.unsynced = false;
                self.last_sync = Instant::now();
            }
            Err(e) => tracing::error!("syncing the journal failed: {}", describe(&e, &self.dir)),
        }
    }

    /// Start a new segment when this one is full, drop the oldest once nothing live is in it,
    /// and carry live tasks forward when the journal is more than twice the live data.
    fn maintain(&mut self) -> std::io::Result<()> {
        if self.len >= self.segment_bytes {
            self.sync_written();
            let (file, len) = create_segment(&self.dir, self.seg + 1, &mut self.index)?;
            self.seg += 1;
            self.file = file;
            self.len = len;
        }
        for n in self.index.empty_before(self.seg) {
            std::fs::remove_file(segment_path(&self.dir, n))?;
            self.index.drop_segment(n);
        }
        let now = unix_ms();
        while let Some((n, s)) = self.index.oldest_before(self.seg) {
            if s.live > 0
                || s.dedup_until > now
                || self.compaction.as_ref().is_some_and(|c| c.seg != n)
            {
                break;
            }
            // What carried its tasks forward must be on disk before it goes.
            self.sync_written();
            let path = segment_path(&self.dir, n);
            std::fs::remove_file(&path)?;
            self.index.drop_segment(n);
            self.compaction = None;
            tracing::debug!(segment = n, "journal segment removed");
        }
        if self.compaction.is_none()
            && !self.compaction_off
            && self.index.total_bytes > 2 * self.index.live_bytes + 2 * self.segment_bytes
            && let Some((n, oldest)) = self.index.oldest_before(self.seg)
            // With no live task in it, the oldest waits only for its dedup ids to expire.
            && oldest.live > 0
        {
            self.compaction = Some(Compaction {
                seg: n,
                ids: self.index.live_in(n),
                next: 0,
                files: HashMap::new(),
            });
        }
        self.compact_slice()
    }

    /// Write the next slice of the compacted segment's live tasks at the end.
    fn compact_slice(&mut self) -> std::io::Result<()> {
        let Some(mut c) = self.compaction.take() else {
            return Ok(());
        };
        let mut out = Vec::new();
        let end = (c.next + COMPACT_SLICE).min(c.ids.len());
        for &id in &c.ids[c.next..end] {
            let Some(entry) = self.index.live.get(&id).copied() else {
                continue; // done since
            };
            if entry.at.0 != c.seg {
                continue;
            }
            let task = match read_task(&self.dir, &mut c.files, entry.at, entry.error_at) {
                Ok(t) => t,
                Err(why) => {
                    tracing::error!(
                        "compaction stopped (until the next restart): {why}; the journal keeps growing meanwhile"
                    );
                    self.compaction_off = true;
                    return Ok(());
                }
            };
            let task = crate::broker::Recovered {
                order: entry.order,
                attempts: entry.attempts,
                leased: entry.leased,
                not_before: entry.not_before.map(std::num::NonZeroU64::get),
                ..task
            };
            record::encode_whole(&task, &mut out);
        }
        c.next = end;
        if !out.is_empty() {
            self.store(&out)?;
        }
        if c.next < c.ids.len() {
            self.compaction = Some(c);
        } else {
            tracing::debug!(
                segment = c.seg,
                tasks = c.ids.len(),
                "journal segment compacted"
            );
        }
        Ok(())
    }
}

/// A task's whole record at `at`, with its last error from `error_at` if that is newer.
fn read_task(
    dir: &Path,
    files: &mut HashMap<u32, File>,
    at: At,
    error_at: Option<At>,
) -> Result<crate::broker::Recovered, String> {
    let Record::Stored(mut task) = read_at(dir, files, at)? else {
        return Err(format!(
            "{}: no task record at byte {}",
            segment_path(dir, at.0).display(),
            at.1
        ));
    };
    if let Some(e) = error_at
        && let Record::Ready { error, .. } = read_at(dir, files, e)?
    {
        task.last_error = error;
    }
    Ok(task)
}

fn read_at(dir: &Path, files: &mut HashMap<u32, File>, (seg, off): At) -> Result<Record, String> {
    let path = segment_path(dir, seg);
    let fail = |e: &dyn std::fmt::Display| format!("{} at byte {off}: {e}", path.display());
    let file = match files.entry(seg) {
        std::collections::hash_map::Entry::Occupied(f) => f.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(File::open(&path).map_err(|e| fail(&e))?)
        }
    };
    let mut header = [0u8; HEADER];
    file.read_exact_at(&mut header, off).map_err(|e| fail(&e))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let mut buf = vec![0u8; HEADER + len];
    file.read_exact_at(&mut buf, off).map_err(|e| fail(&e))?;
    match record::decode(&buf) {
        Read::Record(r, _) => Ok(r),
        Read::Short => Err(fail(&"the record is cut short")),
        Read::Bad(why) => Err(fail(&why)),
    }
}

/// Create segment `n`, open it with its `head` record, and make it and its name durable.
fn create_segment(dir: &Path, n: u32, index: &mut Index) -> std::io::Result<(File, u64)> {
    let path = segment_path(dir, n);
    let mut file = File::options().create_new(true).append(true).open(&path)?;
    let mut head = Vec::new();
    record::encode_head(index.next_task, &mut head);
    file.write_all(&head)?;
    file.sync_data()?;
    File::open(dir)?.sync_all()?;
    index.open_segment(n);
    index.apply(
        Peek::Head {
            next_task: index.next_task,
        },
        (n, 0),
        head.len() as u32,
    );
    Ok((file, head.len() as u64))
}

fn describe(e: &std::io::Error, dir: &Path) -> String {
    if e.kind() == std::io::ErrorKind::StorageFull {
        format!("the disk holding {} is full", dir.display())
    } else {
        format!("cannot write the journal in {}: {e}", dir.display())
    }
}
