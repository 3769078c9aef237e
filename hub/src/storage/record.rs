//! The journal's records: how a [`Change`] is written, and read back.
//!
//! Each record is framed as `len: u32 LE`, `crc: u32 LE` (CRC-32C of the body), then `len` bytes
//! of body, whose first byte says what it is. Integers are little-endian; strings are a length
//! then UTF-8 bytes. A record is whole or it is not there: a torn or damaged one fails its
//! checksum.
//!
//! | kind | body after the kind byte |
//! |---|---|
//! | 1 stored | id u64, order u64, attempts u32, max_attempts u32, flags u8, not before (u64 Unix ms, flag 32), priority (u8, flag 16), backoff (first and longest wait, u64 ms each, `u64::MAX` for the hub's, flag 64), redundancy (replicas, quorum, max_replicas: u8 each, flag 128), queue (u16 str), kind (u16 str, flag 2), reply_to (u16 str, flag 4), last error (u32 str, flag 8), payload |
//! | 2 ready | id u64, order u64, attempts u32, flags u8, not before (u64 Unix ms, flag 32), last error (u32 str, flag 8) |
//! | 3 leased | id u64, attempts u32 |
//! | 4 done | id u64 |
//! | 5 head | next task id u64: the first record of every segment |
//! | 6 dedup | task u64, expires u64 (Unix ms), dedup id (u16 str) |
//!
//! A task with a `not before` is scheduled until then (a delayed put, a retry backing off);
//! journals written before priorities and delays have neither flag, and read as priority 0,
//! ready at once. Flag 1 on `stored` says the task was leased (a record the journal rewrote while compacting).
//! A payload is a tag byte then: 0 JSON text (u32 str); 1 bytes (u32 len, bytes); 2 JSON holding
//! bytes (u32 str JSON, u16 str path, u32 len, bytes).

use std::num::NonZeroU64;

use bytes::Bytes;
use taskhub_core::body::Held;
use taskhub_core::{QueueName, RawJson, TaskId};

use crate::broker::{Backoff, Body, Change, Recovered};
use taskhub_core::protocol::Redundancy;

/// Bytes before a record's body: its length and checksum.
pub const HEADER: usize = 8;

const STORED: u8 = 1;
const READY: u8 = 2;
const LEASED: u8 = 3;
const DONE: u8 = 4;
const HEAD: u8 = 5;
const DEDUP: u8 = 6;

const FLAG_LEASED: u8 = 1;
const FLAG_KIND: u8 = 2;
const FLAG_REPLY_TO: u8 = 4;
const FLAG_ERROR: u8 = 8;
const FLAG_PRIORITY: u8 = 16;
const FLAG_NOT_BEFORE: u8 = 32;
const FLAG_BACKOFF: u8 = 64;
const FLAG_REDUNDANCY: u8 = 128;

/// Append `change` to `out` as one framed record.
pub fn encode(change: Change<'_>, out: &mut Vec<u8>) {
    frame(out, |out| match change {
        Change::Stored(task) => whole(
            &Whole {
                id: task.id,
                order: task.order,
                attempts: task.attempts,
                max_attempts: task.max_attempts,
                leased: false,
                queue: &task.queue,
                kind: task.kind.as_deref(),
                reply_to: task.reply_to.as_ref(),
                error: task.last_error.as_deref(),
                payload: &task.payload,
                priority: task.priority,
                not_before: task.not_before.map(NonZeroU64::get),
                backoff: task.backoff,
                redundancy: task.redundancy,
            },
            out,
        ),
        Change::Ready(task) => {
            out.push(READY);
            out.extend_from_slice(&task.id.0.to_le_bytes());
            out.extend_from_slice(&task.order.to_le_bytes());
            out.extend_from_slice(&task.attempts.to_le_bytes());
            let mut flags = 0;
            if task.last_error.is_some() {
                flags |= FLAG_ERROR;
            }
            if task.not_before.is_some() {
                flags |= FLAG_NOT_BEFORE;
            }
            out.push(flags);
            if let Some(t) = task.not_before {
                out.extend_from_slice(&t.get().to_le_bytes());
            }
            if let Some(e) = &task.last_error {
                long(e.as_bytes(), out);
            }
        }
        Change::Leased(task) => {
            out.push(LEASED);
            out.extend_from_slice(&task.id.0.to_le_bytes());
            out.extend_from_slice(&task.attempts.to_le_bytes());
        }
        Change::Done(id) => {
            out.push(DONE);
            out.extend_from_slice(&id.0.to_le_bytes());
        }
        Change::Dedup { key, task, expires } => {
            out.push(DEDUP);
            out.extend_from_slice(&task.0.to_le_bytes());
            out.extend_from_slice(&expires.to_le_bytes());
            short_str(key, out);
        }
    });
}

/// The record that opens a segment: task ids go on from `next_task` whatever was compacted away.
pub fn encode_head(next_task: u64, out: &mut Vec<u8>) {
    frame(out, |out| {
        out.push(HEAD);
        out.extend_from_slice(&next_task.to_le_bytes());
    });
}

/// A task as one self-contained record (`leased` as it stands): how compaction carries a live
/// task forward.
pub fn encode_whole(task: &Recovered, out: &mut Vec<u8>) {
    frame(out, |out| {
        whole(
            &Whole {
                id: task.id,
                order: task.order,
                attempts: task.attempts,
                max_attempts: task.max_attempts,
                leased: task.leased,
                queue: &task.queue,
                kind: task.kind.as_deref(),
                reply_to: task.reply_to.as_ref(),
                error: task.last_error.as_deref(),
                payload: &task.payload,
                priority: task.priority,
                not_before: task.not_before,
                backoff: task.backoff,
                redundancy: task.redundancy,
            },
            out,
        )
    });
}

/// What a `stored` record holds, borrowed from a task as the broker holds it or as start-up
/// read it.
struct Whole<'a> {
    id: TaskId,
    order: u64,
    attempts: u32,
    max_attempts: u32,
    leased: bool,
    queue: &'a QueueName,
    kind: Option<&'a str>,
    reply_to: Option<&'a QueueName>,
    error: Option<&'a str>,
    payload: &'a Body,
    priority: u8,
    not_before: Option<u64>,
    backoff: Backoff,
    redundancy: Option<Redundancy>,
}

fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    body(out);
    let len = (out.len() - start - HEADER) as u32;
    let crc = crc32c(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

fn whole(t: &Whole<'_>, out: &mut Vec<u8>) {
    out.push(STORED);
    out.extend_from_slice(&t.id.0.to_le_bytes());
    out.extend_from_slice(&t.order.to_le_bytes());
    out.extend_from_slice(&t.attempts.to_le_bytes());
    out.extend_from_slice(&t.max_attempts.to_le_bytes());
    let mut flags = 0;
    if t.leased {
        flags |= FLAG_LEASED;
    }
    if t.kind.is_some() {
        flags |= FLAG_KIND;
    }
    if t.reply_to.is_some() {
        flags |= FLAG_REPLY_TO;
    }
    if t.error.is_some() {
        flags |= FLAG_ERROR;
    }
    if t.priority != 0 {
        flags |= FLAG_PRIORITY;
    }
    if t.not_before.is_some() {
        flags |= FLAG_NOT_BEFORE;
    }
    if t.backoff != Backoff::default() {
        flags |= FLAG_BACKOFF;
    }
    if t.redundancy.is_some() {
        flags |= FLAG_REDUNDANCY;
    }
    out.push(flags);
    if let Some(at) = t.not_before {
        out.extend_from_slice(&at.to_le_bytes());
    }
    if t.priority != 0 {
        out.push(t.priority);
    }
    if t.backoff != Backoff::default() {
        for ms in [t.backoff.base_ms(), t.backoff.max_ms()] {
            out.extend_from_slice(&ms.unwrap_or(u64::MAX).to_le_bytes());
        }
    }
    if let Some(r) = t.redundancy {
        out.extend_from_slice(&[r.replicas, r.quorum, r.max_replicas]);
    }
    short_str(t.queue.as_str(), out);
    if let Some(k) = t.kind {
        short_str(k, out);
    }
    if let Some(r) = t.reply_to {
        short_str(r.as_str(), out);
    }
    if let Some(e) = t.error {
        long(e.as_bytes(), out);
    }
    match t.payload {
        Body::Json(j) => {
            out.push(0);
            long(j.get().as_bytes(), out);
        }
        Body::Bytes(b) => {
            out.push(1);
            long(b, out);
        }
        Body::Holding(h) => {
            out.push(2);
            long(h.json.get().as_bytes(), out);
            short_str(&h.at, out);
            long(&h.bytes, out);
        }
    }
}

/// Names, kinds and paths: the protocol caps them far below 64 KiB.
fn short_str(s: &str, out: &mut Vec<u8>) {
    let len = s.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

/// Payloads and errors: capped by the hub's `max_message_bytes`, far below 4 GiB.
fn long(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// A record read back.
#[derive(Debug, PartialEq)]
pub enum Record {
    Stored(Recovered),
    Ready {
        id: TaskId,
        order: u64,
        attempts: u32,
        not_before: Option<u64>,
        error: Option<String>,
    },
    Leased {
        id: TaskId,
        attempts: u32,
    },
    Done(TaskId),
    Head {
        next_task: u64,
    },
    Dedup {
        key: String,
        task: TaskId,
        expires: u64,
    },
}

/// What the writer needs of a record it writes, read from the fixed fields at the front of its
/// body without copying anything.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Peek {
    Stored {
        id: u64,
        order: u64,
        attempts: u32,
        leased: bool,
        not_before: Option<u64>,
    },
    Ready {
        id: u64,
        order: u64,
        attempts: u32,
        has_error: bool,
        not_before: Option<u64>,
    },
    Leased {
        id: u64,
        attempts: u32,
    },
    Done {
        id: u64,
    },
    Head {
        next_task: u64,
    },
    Dedup {
        expires: u64,
    },
}

/// Peek at a record body this process encoded (so its fixed fields are there).
pub fn peek(body: &[u8]) -> Option<Peek> {
    let u32_at = |i: usize| Some(u32::from_le_bytes(body.get(i..i + 4)?.try_into().ok()?));
    let u64_at = |i: usize| Some(u64::from_le_bytes(body.get(i..i + 8)?.try_into().ok()?));
    // The flags byte at `at`, and the `not before` that follows it when flagged.
    let flags_at = |at: usize| -> Option<(u8, Option<u64>)> {
        let flags = *body.get(at)?;
        let not_before = match flags & FLAG_NOT_BEFORE {
            0 => None,
            _ => Some(u64_at(at + 1)?),
        };
        Some((flags, not_before))
    };
    Some(match *body.first()? {
        STORED => {
            let (flags, not_before) = flags_at(25)?;
            Peek::Stored {
                id: u64_at(1)?,
                order: u64_at(9)?,
                attempts: u32_at(17)?,
                leased: flags & FLAG_LEASED != 0,
                not_before,
            }
        }
        READY => {
            let (flags, not_before) = flags_at(21)?;
            Peek::Ready {
                id: u64_at(1)?,
                order: u64_at(9)?,
                attempts: u32_at(17)?,
                has_error: flags & FLAG_ERROR != 0,
                not_before,
            }
        }
        LEASED => Peek::Leased {
            id: u64_at(1)?,
            attempts: u32_at(9)?,
        },
        DONE => Peek::Done { id: u64_at(1)? },
        HEAD => Peek::Head {
            next_task: u64_at(1)?,
        },
        DEDUP => Peek::Dedup {
            expires: u64_at(9)?,
        },
        _ => return None,
    })
}

/// What reading one record from the front of a buffer found.
#[derive(Debug, PartialEq)]
pub enum Read {
    /// A record, and the bytes it took.
    Record(Record, usize),
    /// The buffer ends inside the record: its header, or the `len` bytes it announces, are not
    /// all there.
    Short,
    /// The bytes are there but are not a record: the checksum fails, or the body does not read.
    Bad(String),
}

/// What checking one record's frame at the front of a buffer found.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    /// A record whose checksum holds: its body, and the bytes it took with its header.
    Whole(&'a [u8], usize),
    Short,
    Bad(String),
}

/// Check the frame at the start of `buf` (length and checksum) without reading the body.
pub fn frame_at(buf: &[u8]) -> Frame<'_> {
    if buf.len() < HEADER {
        return Frame::Short;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len == 0 {
        return Frame::Bad("a record of length 0".into());
    }
    let Some(body) = buf.get(HEADER..HEADER + len) else {
        return Frame::Short;
    };
    if crc32c(body) != crc {
        return Frame::Bad(format!("checksum mismatch in a record of {len} bytes"));
    }
    Frame::Whole(body, HEADER + len)
}

/// Read the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Read {
    let (body, used) = match frame_at(buf) {
        Frame::Whole(body, used) => (body, used),
        Frame::Short => return Read::Short,
        Frame::Bad(why) => return Read::Bad(why),
    };
    match body_of(body) {
        Some(record) => Read::Record(record, used),
        None => Read::Bad(format!(
            "a record of {} bytes (kind {}) does not read",
            body.len(),
            body[0]
        )),
    }
}

fn body_of(body: &[u8]) -> Option<Record> {
    let mut r = Cursor(body);
    let record = match r.u8()? {
        STORED => {
            let id = TaskId(r.u64()?);
            let order = r.u64()?;
            let attempts = r.u32()?;
            let max_attempts = r.u32()?;
            let flags = r.u8()?;
            let not_before = flagged(flags & FLAG_NOT_BEFORE, || r.u64())?;
            let priority = flagged(flags & FLAG_PRIORITY, || r.u8())?.unwrap_or(0);
            let backoff = flagged(flags & FLAG_BACKOFF, || Some((r.u64()?, r.u64()?)))?.map_or(
                Backoff::default(),
                |(base, max)| {
                    let given = |ms: u64| (ms != u64::MAX).then_some(ms);
                    Backoff::new(given(base), given(max))
                },
            );
            let redundancy = flagged(flags & FLAG_REDUNDANCY, || {
                Some(Redundancy {
                    replicas: r.u8()?,
                    quorum: r.u8()?,
                    max_replicas: r.u8()?,
                })
            })?;
            let queue = QueueName::new(r.short_str()?).ok()?;
            let kind = flagged(flags & FLAG_KIND, || r.short_str())?;
            let reply_to = match flags & FLAG_REPLY_TO != 0 {
                true => Some(QueueName::new(r.short_str()?).ok()?),
                false => None,
            };
            let last_error = flagged(flags & FLAG_ERROR, || r.long_str())?;
            let payload = match r.u8()? {
                0 => Body::Json(RawJson::from_text(r.long_str()?).ok()?),
                1 => Body::Bytes(Bytes::copy_from_slice(r.long()?)),
                2 => {
                    let json = RawJson::from_text(r.long_str()?).ok()?;
                    let at = r.short_str()?;
                    let bytes = Bytes::copy_from_slice(r.long()?);
                    Body::Holding(Box::new(Held { json, at, bytes }))
                }
                _ => return None,
            };
            Record::Stored(Recovered {
                id,
                queue,
                kind,
                payload,
                reply_to,
                max_attempts,
                attempts,
                order,
                last_error,
                leased: flags & FLAG_LEASED != 0,
                priority,
                not_before,
                backoff,
                redundancy,
            })
        }
        READY => {
            let id = TaskId(r.u64()?);
            let order = r.u64()?;
            let attempts = r.u32()?;
            let flags = r.u8()?;
            let not_before = flagged(flags & FLAG_NOT_BEFORE, || r.u64())?;
            let error = flagged(flags & FLAG_ERROR, || r.long_str())?;
            Record::Ready {
                id,
                order,
                attempts,
                not_before,
                error,
            }
        }
        LEASED => Record::Leased {
            id: TaskId(r.u64()?),
            attempts: r.u32()?,
        },
        DONE => Record::Done(TaskId(r.u64()?)),
        HEAD => Record::Head {
            next_task: r.u64()?,
        },
        DEDUP => {
            let task = TaskId(r.u64()?);
            let expires = r.u64()?;
            Record::Dedup {
                key: r.short_str()?,
                task,
                expires,
            }
        }
        _ => return None,
    };
    // Every byte of the body is accounted for.
    r.0.is_empty().then_some(record)
}

/// A field present only when its flag is set: `Some(None)` when it is not, `None` when it is but
/// does not read.
fn flagged<T>(flag: u8, read: impl FnOnce() -> Option<T>) -> Option<Option<T>> {
    if flag == 0 {
        return Some(None);
    }
    read().map(Some)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn short_str(&mut self) -> Option<String> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    fn long(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn long_str(&mut self) -> Option<String> {
        String::from_utf8(self.long()?.to_vec()).ok()
    }
}

/// CRC-32C (Castagnoli), the checksum of iSCSI, ext4 metadata and many logs; reflected, table
/// driven, eight bytes at a time.
pub fn crc32c(data: &[u8]) -> u32 {
    let t = &*TABLES;
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][c[4] as usize]
            ^ t[2][c[5] as usize]
            ^ t[1][c[6] as usize]
            ^ t[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

static TABLES: std::sync::LazyLock<[[u32; 256]; 8]> = std::sync::LazyLock::new(|| {
    const POLY: u32 = 0x82f6_3b78;
    let mut t = [[0u32; 256]; 8];
    for (i, slot) in t[0].iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
        }
        *slot = c;
    }
    for i in 0..256 {
        for k in 1..8 {
            let prev = t[k - 1][i];
            t[k][i] = t[0][(prev & 0xff) as usize] ^ (prev >> 8);
        }
    }
    t
});

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::broker::{Charge, StoredTask};
    use serde_json::json;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // RFC 3720's check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        // The eight-at-a-time path agrees with the bytewise one across lengths.
        let data: Vec<u8> = (0..100u8).collect();
        for n in 0..data.len() {
            let mut crc = !0u32;
            for &b in &data[..n] {
                crc = TABLES[0][((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
            }
            assert_eq!(crc32c(&data[..n]), !crc, "length {n}");
        }
    }

    fn task(payload: Body) -> StoredTask {
        StoredTask {
            id: TaskId(7),
            queue: QueueName::new("jobs").unwrap(),
            kind: Some("square".into()),
            payload,
            reply_to: Some(QueueName::new("results").unwrap()),
            max_attempts: 5,
            attempts: 2,
            order: 1 << 63,
            last_error: Some("it broke".into()),
            charge: Charge::new(0, &Default::default()),
            reply_ref: None,
            put_at: Default::default(),
            priority: 7,
            not_before: NonZeroU64::new(1_800_000_000_123),
            backoff: Backoff::new(Some(250), None),
            redundancy: Some(taskhub_core::protocol::Redundancy {
                replicas: 3,
                quorum: 2,
                max_replicas: 5,
            }),
            replica: false,
        }
    }

    #[test]
    fn every_change_reads_back_as_written() {
        let held = Body::around(
            RawJson::of(&json!({"id": 1, "result": null})),
            "result",
            &Body::from(vec![0u8, 255, 3]),
        );
        for payload in [
            Body::Json(RawJson::of(&json!({"n": [1, 2, "é"]}))),
            Body::from(vec![1u8, 2, 3]),
            held,
        ] {
            let t = task(payload.clone());
            let mut buf = Vec::new();
            encode(Change::Stored(&t), &mut buf);
            let Read::Record(Record::Stored(r), used) = decode(&buf) else {
                panic!("{:?}", decode(&buf));
            };
            assert_eq!(used, buf.len());
            assert_eq!(
                peek(&buf[HEADER..]),
                Some(Peek::Stored {
                    id: 7,
                    order: 1 << 63,
                    attempts: 2,
                    leased: false,
                    not_before: Some(1_800_000_000_123),
                })
            );
            assert_eq!((r.priority, r.not_before), (7, Some(1_800_000_000_123)));
            assert_eq!(r.backoff, t.backoff);
            assert_eq!(r.redundancy, t.redundancy);
            assert_eq!(r.payload, payload);
            assert_eq!(
                (r.id, r.order, r.attempts, r.max_attempts, r.leased),
                (t.id, t.order, 2, 5, false)
            );
            assert_eq!(r.kind.as_deref(), Some("square"));
            assert_eq!(r.reply_to, t.reply_to);
            assert_eq!(r.last_error.as_deref(), Some("it broke"));
            // Written whole (as compaction does), it is the same task, leased or not.
            let mut whole = Vec::new();
            encode_whole(
                &Recovered {
                    leased: true,
                    ..r.clone()
                },
                &mut whole,
            );
            let Read::Record(Record::Stored(again), _) = decode(&whole) else {
                panic!()
            };
            assert_eq!(again, Recovered { leased: true, ..r });
        }
        let t = task(Body::Json(RawJson::null()));
        let mut buf = Vec::new();
        encode(Change::Ready(&t), &mut buf);
        encode(Change::Leased(&t), &mut buf);
        encode(Change::Done(TaskId(9)), &mut buf);
        encode_head(42, &mut buf);
        encode(
            Change::Dedup {
                key: "batch-7",
                task: TaskId(7),
                expires: 1_800_000_000_000,
            },
            &mut buf,
        );
        let mut at = 0;
        let mut got = Vec::new();
        let mut peeked = Vec::new();
        while let Read::Record(r, used) = decode(&buf[at..]) {
            got.push(r);
            peeked.push(peek(&buf[at + HEADER..at + used]).unwrap());
            at += used;
        }
        assert_eq!(
            peeked,
            vec![
                Peek::Ready {
                    id: 7,
                    order: 1 << 63,
                    attempts: 2,
                    has_error: true,
                    not_before: Some(1_800_000_000_123),
                },
                Peek::Leased { id: 7, attempts: 2 },
                Peek::Done { id: 9 },
                Peek::Head { next_task: 42 },
                Peek::Dedup {
                    expires: 1_800_000_000_000
                },
            ]
        );
        assert_eq!(at, buf.len());
        assert_eq!(
            got,
            vec![
                Record::Ready {
                    id: TaskId(7),
                    order: 1 << 63,
                    attempts: 2,
                    not_before: Some(1_800_000_000_123),
                    error: Some("it broke".into())
                },
                Record::Leased {
                    id: TaskId(7),
                    attempts: 2
                },
                Record::Done(TaskId(9)),
                Record::Head { next_task: 42 },
                Record::Dedup {
                    key: "batch-7".into(),
                    task: TaskId(7),
                    expires: 1_800_000_000_000
                },
            ]
        );
    }

    #[test]
    fn a_cut_or_damaged_record_is_told_apart() {
        let mut buf = Vec::new();
        encode(Change::Done(TaskId(3)), &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Read::Short, "cut at {cut}");
        }
        let mut bad = buf.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(decode(&bad), Read::Bad(m) if m.contains("checksum")));
        assert!(matches!(decode(&[0; 16]), Read::Bad(m) if m.contains("length 0")));
    }
}
