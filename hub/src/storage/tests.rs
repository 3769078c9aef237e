//! The journal against the broker: whatever the broker does, replaying what it recorded gives
//! back exactly the tasks it holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use taskhub_core::protocol::Schedule;
use taskhub_core::{Millis, QueueName, Role, SessionId, TaskId};

use super::record;
use super::recover::replay_all;
use crate::broker::{Broker, BrokerConfig, Change, ClientMsg, Journal, Recovered, ServerMsg};

/// Records into a buffer the test can read.
#[derive(Debug, Default, Clone)]
struct Recording(Arc<Mutex<Vec<u8>>>);

impl Journal for Recording {
    fn record(&mut self, change: Change<'_>) {
        record::encode(change, &mut self.0.lock().unwrap());
    }
    fn commit(&mut self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn kept_per_task(&self) -> usize {
        0
    }
    fn writable(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A small deterministic generator (xorshift), so a failure repeats.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn q(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

/// What the broker holds, as the journal tells it: ready tasks per queue in `order`, leased ones
/// by id.
fn from_journal(tasks: Vec<Recovered>) -> crate::broker::Dump {
    let mut tasks = tasks;
    tasks.sort_by_key(|t| (std::cmp::Reverse(t.priority), t.order));
    let show = |t: &Recovered| (t.id.0, t.attempts, t.payload.to_string());
    let mut ready: BTreeMap<String, Vec<_>> = BTreeMap::new();
    let mut leased = BTreeMap::new();
    let mut scheduled = BTreeMap::new();
    for t in &tasks {
        if t.leased {
            leased.insert(t.id.0, (t.queue.to_string(), show(t)));
        } else if let Some(due) = t.not_before {
            scheduled.insert(t.id.0, (t.queue.to_string(), due, show(t)));
        } else {
            ready.entry(t.queue.to_string()).or_default().push(show(t));
        }
    }
    crate::broker::Dump {
        ready,
        leased,
        scheduled,
    }
}

#[test]
fn replaying_the_journal_gives_back_what_the_broker_holds() {
    for seed in 1..=20u64 {
        let journal = Recording::default();
        let config = BrokerConfig {
            ack_wait: Duration::from_millis(1_000),
            ..BrokerConfig::default()
        };
        let mut b = Broker::with_journal(config, Box::new(journal.clone()));
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let sessions: Vec<SessionId> = (1..=4).map(SessionId).collect();
        for s in &sessions {
            b.open_session(*s, Role::Worker, None);
        }
        let mut leased: Vec<(SessionId, TaskId)> = Vec::new();
        let mut now = Millis(0);
        for step in 0..600 {
            let s = sessions[rng.below(4) as usize];
            let queue = ["jobs", "other"][rng.below(2) as usize];
            let msg = match rng.below(12) {
                0..=3 => ClientMsg::Put {
                    req: None,
                    queue: q(queue),
                    payload: json!({"step": step}).into(),
                    kind: None,
                    reply_to: (rng.below(2) == 0).then(|| q("results")),
                    max_attempts: Some(1 + rng.below(3) as u32),
                    dedup_id: None,
                    schedule: Schedule {
                        priority: rng.below(3) as u8 * 4,
                        delay_ms: (rng.below(4) == 0).then(|| 100 + rng.below(1_500)),
                        not_before: None,
                        ..Schedule::default()
                    },
                },
                4 => ClientMsg::Consume {
                    req: None,
                    queues: vec![q(queue)],
                    prefetch: 1 + rng.below(3) as u32,
                },
                5..=7 if !leased.is_empty() => {
                    let (s, task) = leased.swap_remove(rng.below(leased.len() as u64) as usize);
                    let choice = rng.below(4);
                    let msg = match choice {
                        0 => ClientMsg::Ack {
                            req: None,
                            task,
                            result: Some(json!(step).into()),
                        },
                        1 => ClientMsg::Fail {
                            req: None,
                            task,
                            error: format!("broke at {step}"),
                            retry: rng.below(2) == 0,
                            backoff_ms: None,
                        },
                        2 => ClientMsg::Release { req: None, task },
                        _ => ClientMsg::Touch { req: None, task },
                    };
                    if choice == 3 {
                        leased.push((s, task));
                    }
                    b.handle(s, msg, now);
                    continue;
                }
                8 => ClientMsg::Get {
                    req: Some(1),
                    queue: q(["jobs", "results", "jobs.dead"][rng.below(3) as usize]),
                    timeout_ms: rng.below(2) * 500,
                },
                9 => {
                    now = Millis(now.0 + 400);
                    b.expire(now);
                    continue;
                }
                10 if rng.below(4) == 0 => {
                    b.close_session(s, now);
                    leased.retain(|(owner, _)| *owner != s);
                    b.open_session(s, Role::Worker, None);
                    continue;
                }
                _ => ClientMsg::Ping { req: None },
            };
            b.handle(s, msg, now);
            for out in b.drain() {
                if let ServerMsg::Deliver { task } = out.msg {
                    leased.push((out.to, task.id));
                }
            }
            // Leases that expired or whose session closed are no longer the test's to use.
            let dump = b.dump();
            leased.retain(|(_, id)| dump.leased.contains_key(&id.0));
        }
        b.commit();
        let bytes = journal.0.lock().unwrap().clone();
        let (tasks, _) = replay_all(&bytes);
        assert_eq!(from_journal(tasks), b.dump(), "seed {seed}");
    }
}

#[test]
fn a_restored_broker_serves_the_same_queues_and_never_reuses_an_id() {
    let journal = Recording::default();
    let mut b = Broker::with_journal(BrokerConfig::default(), Box::new(journal.clone()));
    let (p, w) = (SessionId(1), SessionId(2));
    b.open_session(p, Role::Producer, None);
    b.open_session(w, Role::Worker, None);
    let put = |b: &mut Broker, n: u64| {
        b.handle(
            p,
            ClientMsg::Put {
                req: None,
                queue: q("jobs"),
                payload: json!(n).into(),
                kind: None,
                reply_to: None,
                max_attempts: Some(2),
                dedup_id: None,
                schedule: Schedule::default(),
            },
            Millis(0),
        );
    };
    for n in 1..=5 {
        put(&mut b, n);
    }
    // Two delivered: one leased at the "crash", one failed into the dead-letter queue.
    b.handle(
        w,
        ClientMsg::Consume {
            req: None,
            queues: vec![q("jobs")],
            prefetch: 2,
        },
        Millis(0),
    );
    b.handle(
        w,
        ClientMsg::Fail {
            req: None,
            task: TaskId(1),
            error: "bad input".into(),
            retry: false,
            backoff_ms: None,
        },
        Millis(0),
    );
    b.drain().for_each(drop);
    b.commit();
    let bytes = journal.0.lock().unwrap().clone();
    let (tasks, next) = replay_all(&bytes);
    let mut again = Broker::new(BrokerConfig::default());
    again.restore(tasks, next, Millis(0));
    let d = again.dump();
    // Task 2 was leased (delivered once) and comes back first, having used its attempt; task 3
    // was delivered when 1 failed and is leased too; then the rest in order.
    let order: Vec<(u64, u32)> = d.ready["jobs"].iter().map(|t| (t.0, t.1)).collect();
    assert_eq!(order, vec![(2, 1), (3, 1), (4, 0), (5, 0)]);
    assert!(d.ready["jobs.dead"][0].2.contains("bad input"), "{d:?}");
    // The next put gets an id after every id used before (the dead letter took 6).
    again.open_session(p, Role::Producer, None);
    again.handle(
        p,
        ClientMsg::Put {
            req: Some(1),
            queue: q("jobs"),
            payload: json!("new").into(),
            kind: None,
            reply_to: None,
            max_attempts: None,
            dedup_id: None,
            schedule: Schedule::default(),
        },
        Millis(0),
    );
    let out: Vec<_> = again.drain().collect();
    assert!(
        matches!(
            out[0].msg,
            ServerMsg::Queued {
                task: TaskId(7),
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(
        out[0].gate,
        crate::broker::Gate::Stored,
        "a queued answer waits for the journal"
    );
}

#[test]
fn a_redundant_task_is_kept_as_itself_and_its_replicas_run_again_after_a_restart() {
    let journal = Recording::default();
    let mut b = Broker::with_journal(BrokerConfig::default(), Box::new(journal.clone()));
    let (p, w) = (SessionId(1), SessionId(2));
    b.open_session(p, Role::Producer, None);
    b.open_session(w, Role::Worker, None);
    for n in [1, 2] {
        b.handle(
            p,
            ClientMsg::Put {
                req: None,
                queue: q("jobs"),
                payload: json!(n).into(),
                kind: None,
                reply_to: Some(q("results")),
                max_attempts: None,
                dedup_id: None,
                schedule: Schedule {
                    replicas: 2,
                    ..Schedule::default()
                },
            },
            Millis(0),
        );
    }
    // One replica of each is answered; the first task's other replica is leased at the "crash".
    b.handle(
        w,
        ClientMsg::Consume {
            req: None,
            queues: vec![q("jobs")],
            prefetch: 3,
        },
        Millis(0),
    );
    let delivered: Vec<TaskId> = b
        .drain()
        .filter_map(|o| match o.msg {
            ServerMsg::Deliver { task } => Some(task.id),
            _ => None,
        })
        .collect();
    assert_eq!(
        delivered.len(),
        2,
        "one replica of each task to this session"
    );
    b.handle(
        w,
        ClientMsg::Ack {
            req: None,
            task: delivered[1],
            result: Some(json!(4).into()),
        },
        Millis(0),
    );
    b.drain().for_each(drop);
    b.commit();
    let bytes = journal.0.lock().unwrap().clone();
    let (tasks, next) = replay_all(&bytes);
    let kept: Vec<(u64, bool)> = tasks
        .iter()
        .map(|t| (t.id.0, t.redundancy.is_some()))
        .collect();
    assert_eq!(
        kept,
        vec![(1, true), (4, true)],
        "the tasks put, never their replicas"
    );
    let mut again = Broker::new(BrokerConfig::default());
    again.restore(tasks, next, Millis(0));
    let stats = again.stats();
    let jobs = stats.queue("jobs").unwrap();
    assert_eq!(
        (jobs.voting, jobs.depth),
        (2, 4),
        "every replica runs again"
    );
    let d = again.dump();
    assert!(
        d.ready["jobs"].iter().all(|t| t.0 > next),
        "replicas take new ids: {d:?}"
    );
}

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("taskhub-storage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broker on the data dir, with what it held restored, as the hub builds it.
fn open_broker(dir: &super::DataDir) -> (Broker, super::Writer, super::Recovery) {
    let opened = super::open(dir).unwrap();
    let mut b = Broker::with_journal(BrokerConfig::default(), Box::new(opened.journal));
    let mut recovery = opened.recovery;
    let tasks = std::mem::take(&mut recovery.tasks);
    b.set_unix_at_zero(super::unix_ms());
    b.restore(tasks, recovery.next_task, Millis(0));
    b.restore_dedup(std::mem::take(&mut recovery.dedup));
    b.commit();
    b.open_session(SessionId(1), Role::Producer, None);
    (b, opened.writer, recovery)
}

fn put(b: &mut Broker, queue: &str, n: u64) {
    put_dedup(b, queue, n, None);
}

/// Put `n` on `queue` with `dedup_id`; returns the task id the hub answered with.
fn put_dedup(b: &mut Broker, queue: &str, n: u64, dedup_id: Option<&str>) -> Option<u64> {
    b.handle(
        SessionId(1),
        ClientMsg::Put {
            req: Some(n),
            queue: q(queue),
            payload: json!(n).into(),
            kind: None,
            reply_to: None,
            max_attempts: None,
            dedup_id: dedup_id.map(String::from),
            schedule: Schedule::default(),
        },
        Millis(0),
    );
    b.commit();
    b.drain().find_map(|o| match o.msg {
        ServerMsg::Queued { task, .. } => Some(task.0),
        _ => None,
    })
}

fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn ready_ids(b: &Broker, queue: &str) -> Vec<u64> {
    b.dump()
        .ready
        .get(queue)
        .map(|ts| ts.iter().map(|t| t.0).collect())
        .unwrap_or_default()
}

#[test]
fn the_data_dir_is_locked_and_kept_across_opens() {
    let tmp = TempDir::new("lock");
    let dir = super::DataDir::new(&tmp.0);
    let (mut b, writer, _) = open_broker(&dir);
    for n in 1..=3 {
        put(&mut b, "jobs", n);
    }
    let second = super::open(&dir).unwrap_err().to_string();
    assert!(second.contains("in use by another taskhub"), "{second}");
    writer.close();
    drop(b);
    let (b, writer, recovery) = open_broker(&dir);
    assert_eq!(ready_ids(&b, "jobs"), vec![1, 2, 3]);
    assert_eq!(recovery.notes, Vec::<String>::new());
    writer.close();
    drop(b);
    // Starts that change nothing leave no files behind: a hub restarted daily does not pile up
    // segments.
    for _ in 0..3 {
        let (b, writer, _) = open_broker(&dir);
        assert_eq!(ready_ids(&b, "jobs"), vec![1, 2, 3]);
        writer.close();
    }
    assert!(
        segment_files(&tmp.0).len() <= 2,
        "{:?}",
        segment_files(&tmp.0)
    );
}

#[test]
fn a_torn_last_record_is_dropped_with_a_note() {
    let tmp = TempDir::new("torn");
    let dir = super::DataDir::new(&tmp.0);
    let (mut b, writer, _) = open_broker(&dir);
    for n in 1..=3 {
        put(&mut b, "jobs", n);
    }
    writer.close();
    drop(b);
    // The hub died half way through writing a fourth: half its bytes reached the file.
    let last = segment_files(&tmp.0).pop().unwrap();
    let mut rec = Vec::new();
    let total = Default::default();
    let t = crate::broker::StoredTask {
        id: TaskId(4),
        queue: q("jobs"),
        kind: None,
        payload: json!(4).into(),
        reply_to: None,
        max_attempts: 5,
        attempts: 0,
        order: u64::MAX,
        last_error: None,
        charge: crate::broker::Charge::new(0, &total),
        reply_ref: None,
        put_at: Default::default(),
        priority: 0,
        not_before: None,
        backoff: Default::default(),
        redundancy: None,
        replica: false,
    };
    record::encode(Change::Stored(&t), &mut rec);
    let before = std::fs::metadata(&last).unwrap().len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    std::io::Write::write_all(&mut f, &rec[..rec.len() / 2]).unwrap();
    drop(f);
    let (b, writer, recovery) = open_broker(&dir);
    assert_eq!(ready_ids(&b, "jobs"), vec![1, 2, 3]);
    assert_eq!(recovery.notes.len(), 1, "{:?}", recovery.notes);
    assert!(
        recovery.notes[0].contains("torn record"),
        "{:?}",
        recovery.notes
    );
    assert!(recovery.notes[0].contains(&last.display().to_string()));
    assert_eq!(std::fs::metadata(&last).unwrap().len(), before, "cut back");
    writer.close();
}

#[test]
fn damage_in_the_middle_stops_start_up_unless_repaired() {
    let tmp = TempDir::new("corrupt");
    let mut dir = super::DataDir::new(&tmp.0);
    let (mut b, writer, _) = open_broker(&dir);
    for n in 1..=10 {
        put(&mut b, "jobs", n);
    }
    writer.close();
    drop(b);
    let last = segment_files(&tmp.0).pop().unwrap();
    let mut data = std::fs::read(&last).unwrap();
    // Find the fifth task's record (after the head record) and flip a byte of its body.
    let mut off = 0;
    let mut starts = Vec::new();
    while let record::Read::Record(_, used) = record::decode(&data[off..]) {
        starts.push(off);
        off += used;
    }
    let fifth = starts[5];
    data[fifth + record::HEADER + 3] ^= 0x40;
    std::fs::write(&last, &data).unwrap();
    let err = super::open(&dir).unwrap_err().to_string();
    assert!(err.contains(&last.display().to_string()), "{err}");
    assert!(err.contains(&format!("at byte {fifth}")), "{err}");
    assert!(err.contains("--repair"), "{err}");
    // Nothing was changed by the refusal.
    assert_eq!(std::fs::read(&last).unwrap(), data);
    dir.repair = true;
    let (b, writer, recovery) = open_broker(&dir);
    assert_eq!(ready_ids(&b, "jobs"), vec![1, 2, 3, 4]);
    assert!(
        recovery.notes[0].contains("--repair") && recovery.notes[0].contains("dropped"),
        "{:?}",
        recovery.notes
    );
    writer.close();
}

#[test]
fn compaction_keeps_the_journal_near_the_live_data() {
    let tmp = TempDir::new("compact");
    let mut dir = super::DataDir::new(&tmp.0);
    dir.segment_bytes = 4 << 10;
    let (mut b, writer, _) = open_broker(&dir);
    // A few tasks that stay all along, among many that come and go.
    for n in 0..5 {
        put(&mut b, "kept", n);
    }
    for n in 0..3_000 {
        put(&mut b, "jobs", n);
        b.handle(
            SessionId(1),
            ClientMsg::Get {
                req: None,
                queue: q("jobs"),
                timeout_ms: 0,
            },
            Millis(0),
        );
        b.commit();
        b.drain().for_each(drop);
    }
    // Let the writer catch up with its upkeep.
    std::thread::sleep(Duration::from_millis(300));
    put(&mut b, "jobs", 9_999);
    std::thread::sleep(Duration::from_millis(300));
    writer.close();
    drop(b);
    let bytes: u64 = segment_files(&tmp.0)
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    // 3,000 tasks came and went through about 150 KB of records; what is left is a few
    // segments.
    assert!(bytes < 6 * dir.segment_bytes, "{bytes} bytes left");
    let (b, writer, _) = open_broker(&dir);
    assert_eq!(ready_ids(&b, "kept"), vec![1, 2, 3, 4, 5]);
    assert_eq!(ready_ids(&b, "jobs"), vec![3_006]);
    writer.close();
}

#[test]
fn dedup_ids_outlive_a_restart() {
    let tmp = TempDir::new("dedup");
    let dir = super::DataDir::new(&tmp.0);
    let (mut b, writer, _) = open_broker(&dir);
    assert_eq!(put_dedup(&mut b, "jobs", 1, Some("nightly-1")), Some(1));
    assert_eq!(put_dedup(&mut b, "jobs", 2, Some("nightly-2")), Some(2));
    writer.close();
    drop(b);
    // The producer's put was cut off by a crash; it puts the same tasks again after the restart.
    let (mut b, writer, _) = open_broker(&dir);
    assert_eq!(put_dedup(&mut b, "jobs", 1, Some("nightly-1")), Some(1));
    assert_eq!(put_dedup(&mut b, "jobs", 2, Some("nightly-2")), Some(2));
    assert_eq!(put_dedup(&mut b, "jobs", 3, Some("nightly-3")), Some(3));
    assert_eq!(ready_ids(&b, "jobs"), vec![1, 2, 3], "nothing stored twice");
    writer.close();
}

#[test]
fn under_fsync_interval_a_put_is_written_at_once_and_survives_the_process() {
    let tmp = TempDir::new("interval");
    let mut dir = super::DataDir::new(tmp.0.join("live"));
    // A sync interval far longer than the test: whatever is on file was written, not synced.
    dir.fsync = super::Fsync::Interval(Duration::from_secs(3_600));
    let (mut b, writer, _) = open_broker(&dir);
    for n in 1..=3 {
        put(&mut b, "jobs", n);
    }
    // The hub dies without closing anything: what it wrote is in the files (the page cache
    // outlives a process), and a copy of them is what a restarted hub reads.
    let copy = tmp.0.join("after-crash");
    let written = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(20));
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir_all(copy.join("journal")).unwrap();
        for f in segment_files(&dir.path) {
            std::fs::copy(&f, copy.join("journal").join(f.file_name().unwrap())).unwrap();
        }
        let (b2, w2, _) = open_broker(&super::DataDir::new(&copy));
        let ids = ready_ids(&b2, "jobs");
        w2.close();
        (ids == vec![1, 2, 3]).then_some(ids)
    });
    assert!(written.is_some(), "the puts never reached the journal file");
    writer.close();
}

/// A journal whose disk is failing: every write is refused.
#[derive(Debug, Default)]
struct Failing;

impl Journal for Failing {
    fn record(&mut self, _: Change<'_>) {}
    fn commit(&mut self) -> u64 {
        0
    }
    fn kept_per_task(&self) -> usize {
        0
    }
    fn writable(&self) -> Result<(), String> {
        Err("disk full".into())
    }
}

#[test]
fn the_broker_says_which_answers_wait_for_the_journal_and_which_go_ahead() {
    use crate::broker::Gate;
    let mut b = Broker::with_journal(BrokerConfig::default(), Box::new(Failing));
    let p = SessionId(1);
    b.open_session(p, Role::Producer, None);
    b.handle(
        p,
        ClientMsg::Put {
            req: Some(1),
            queue: q("jobs"),
            payload: json!(1).into(),
            kind: None,
            reply_to: None,
            max_attempts: None,
            dedup_id: None,
            schedule: Schedule::default(),
        },
        Millis(0),
    );
    b.handle(p, ClientMsg::Stats { req: Some(2) }, Millis(0));
    let out: Vec<_> = b.drain().collect();
    assert!(
        matches!(
            &out[0].msg,
            ServerMsg::Error {
                code: taskhub_core::ErrorCode::StorageUnavailable,
                ..
            }
        ),
        "{out:?}"
    );
    // The refusal goes ahead of confirmations still waiting for the disk; the stats in turn.
    assert_eq!(out[0].gate, Gate::AheadOfStored);
    assert_eq!(out[1].gate, Gate::InTurn);
}
