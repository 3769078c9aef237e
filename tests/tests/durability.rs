//! `taskhub serve --data-dir`: what was confirmed survives `kill -9`, restarts keep every queue
//! in order, and a full disk refuses puts without losing anything.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskhub_tests::{KEY, Proc, Raw, cli, client, serve_with, worker};

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("taskhub-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port that was free a moment ago, so a hub can come back at the same address.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `taskhub serve` on `addr` with its data in `dir`; retried while the old hub's port lingers.
fn serve_on(addr: &str, dir: &Path, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["--data-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    serve_with(addr, &args)
}

fn random(below: u64) -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % below
}

/// Every entry on `queue` (taken off it), as JSON, until it stays empty for `quiet`.
async fn drain(url: &str, queue: &str, quiet: Duration) -> Vec<Value> {
    let c = client(url).await;
    let mut got = Vec::new();
    while let Some(t) = c.get(queue, quiet).await.unwrap() {
        got.push(t.payload.json_or_null().clone());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_tasks_survive_kill_9_of_the_hub_again_and_again() {
    let kills: usize = std::env::var("TASKHUB_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(5);
    let tasks = 5_000u64;
    let tmp = TempDir::new("crash");
    let addr = free_addr();
    let (hub, url) = serve_on(&addr, &tmp.0, &[]);
    let hub = Arc::new(Mutex::new(Some(hub)));
    let _workers = [worker(&url, "tasks", &[]), worker(&url, "tasks", &[])];

    // Paced so the kills land while tasks are still coming (about 0.6 s of producing per kill).
    let pause = Duration::from_millis((kills as u64 * 600 / 50).max(40));
    // The producer: 50 puts of 100 tasks each, by the CLI. Each id the CLI prints was answered
    // `queued`. A put cut off by a kill is tried again, once the hub is back, for the tasks not
    // confirmed (some of them may have been stored anyway: then they run twice, as two tasks).
    let producer = {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut confirmed: Vec<(u64, u64)> = Vec::new(); // (task id, n)
            let mut retries = 0;
            for chunk in 0..tasks / 100 {
                let mut next = chunk * 100;
                let end = next + 100;
                while next < end {
                    let mut args = vec![
                        "--hub".to_string(),
                        url.clone(),
                        "--key".into(),
                        KEY.into(),
                        "put".into(),
                        "tasks".into(),
                        "--kind".into(),
                        "square".into(),
                        "--reply-to".into(),
                        "results".into(),
                    ];
                    args.extend((next..end).map(|n| n.to_string()));
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let out = cli(&args);
                    for line in String::from_utf8_lossy(&out.stdout).lines() {
                        confirmed.push((line.trim().parse().unwrap(), next));
                        next += 1;
                    }
                    if !out.status.success() {
                        retries += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                std::thread::sleep(pause);
            }
            (confirmed, retries)
        })
    };

    // The killer: `kill -9` at a random moment, restart on the same dir and port, `kills` times.
    let started = Instant::now();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(200 + random(600))).await;
        drop(hub.lock().unwrap().take()); // SIGKILL, and wait for it
        let (again, url2) = serve_on(&addr, &tmp.0, &[]);
        assert_eq!(url2, url);
        *hub.lock().unwrap() = Some(again);
    }
    let (confirmed, retries) = tokio::task::spawn_blocking(move || producer.join().unwrap())
        .await
        .unwrap();
    println!(
        "{kills} kills in {:.1} s; {} tasks confirmed; {retries} puts cut off and retried",
        started.elapsed().as_secs_f64(),
        confirmed.len()
    );

    // Ids never repeat, across every restart.
    let by_id: HashMap<u64, u64> = confirmed.iter().copied().collect();
    assert_eq!(
        by_id.len(),
        confirmed.len(),
        "a task id was handed out twice"
    );
    assert_eq!(
        confirmed.len() as u64,
        tasks,
        "the producer got every task confirmed"
    );

    // Every confirmed task reports exactly once in `results` or `tasks.dead` (more than once
    // only for a task whose ack was not yet stored at a kill: counted, and few).
    let mut outcomes: HashMap<u64, usize> = HashMap::new();
    let mut unknown = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while by_id.keys().any(|id| !outcomes.contains_key(id)) && Instant::now() < deadline {
        for entry in drain(&url, "results", Duration::from_millis(500)).await {
            let id = entry["id"].as_u64().unwrap();
            let Some(n) = by_id.get(&id) else {
                unknown += 1; // a put stored but cut off before it was confirmed
                continue;
            };
            assert_eq!(entry["ok"], json!(true), "{entry}");
            assert_eq!(entry["result"], json!(format!("{n} * {n} = {}", n * n)));
            *outcomes.entry(id).or_default() += 1;
        }
        for entry in drain(&url, "tasks.dead", Duration::from_millis(10)).await {
            if let Some(id) = entry["id"].as_u64().filter(|id| by_id.contains_key(id)) {
                *outcomes.entry(id).or_default() += 1;
            }
        }
    }
    let missing: Vec<u64> = by_id
        .keys()
        .filter(|id| !outcomes.contains_key(id))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} confirmed tasks never reported: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let duplicates: usize = outcomes.values().map(|c| c - 1).sum();
    println!(
        "every confirmed task reported; {duplicates} duplicate outcome(s); {unknown} outcome(s) of unconfirmed puts"
    );
    // At-least-once: a duplicate needs a delivery whose ack was not stored at a kill, so there
    // are at most as many as tasks in flight at the kills (two workers' prefetch windows).
    assert!(
        duplicates <= kills * 2 * 1_000,
        "{duplicates} duplicates for {kills} kills"
    );
}

#[tokio::test]
async fn a_restart_keeps_every_queue_in_order_dead_letters_with_their_errors_and_dedup_ids() {
    let tmp = TempDir::new("restart");
    let addr = free_addr();
    let (hub, url) = serve_on(&addr, &tmp.0, &[]);
    let put = |args: &[&str]| put_by_cli(&url, args);
    put(&["alpha", "1", "2", "3", r#"{"n":4}"#]);
    put(&["beta", r#""x""#, r#""y""#]);
    // A put made safe to rerun: after a restart the rerun stores nothing and gets the same ids.
    let first = put(&["gamma", "10", "20", "--dedup-prefix", "run-1-"]);
    // One task fails for good: it goes to alpha2.dead with its error.
    put(&["alpha2", "7", "--kind", "fail", "--max-attempts", "1"]);
    let w = worker(&url, "alpha2", &[]);
    let dead = taskhub_tests::eventually(Duration::from_secs(10), || async {
        let s = cli(&["--hub", &url, "--key", KEY, "stats", "--json"]);
        let stats: Value = serde_json::from_slice(&s.stdout).ok()?;
        let q = stats["queues"]
            .as_array()?
            .iter()
            .find(|q| q["name"] == "alpha2")?
            .clone();
        (q["dead"] == json!(1)).then_some(())
    })
    .await;
    assert!(dead.is_some(), "the failing task reached alpha2.dead");
    drop(w);
    // A clean stop (SIGTERM), then a start on the same dir.
    stop_gracefully(hub);
    let (hub, url) = serve_on(&addr, &tmp.0, &[]);
    let put = |args: &[&str]| put_by_cli(&url, args);
    assert_eq!(
        put(&["gamma", "10", "20", "--dedup-prefix", "run-1-"]),
        first
    );
    let gamma = drain(&url, "gamma", Duration::from_millis(300)).await;
    assert_eq!(gamma, vec![json!(10), json!(20)]);
    let alpha = drain(&url, "alpha", Duration::from_millis(300)).await;
    assert_eq!(alpha, vec![json!(1), json!(2), json!(3), json!({"n": 4})]);
    let beta = drain(&url, "beta", Duration::from_millis(300)).await;
    assert_eq!(beta, vec![json!("x"), json!("y")]);
    let dead = drain(&url, "alpha2.dead", Duration::from_millis(300)).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["payload"], json!(7));
    let error = dead[0]["error"].as_str().unwrap();
    assert!(error.contains("gave up after 1 attempt"), "{error}");
    drop(hub);
}

#[tokio::test]
async fn delayed_tasks_and_priorities_survive_a_kill_9_and_keep_their_time() {
    let tmp = TempDir::new("scheduled");
    let addr = free_addr();
    let (hub, url) = serve_on(&addr, &tmp.0, &[]);
    let put_at = Instant::now();
    put_by_cli(&url, &["later", r#""due""#, "--delay", "4s"]);
    put_by_cli(&url, &["mixed", "1", "2"]);
    put_by_cli(&url, &["mixed", "3", "--priority", "7"]);
    drop(hub); // SIGKILL: nothing is written on the way out.
    let (hub, url) = serve_on(&addr, &tmp.0, &[]);
    let c = client(&url).await;
    let stats = c.stats().await.unwrap();
    let later = stats.queue("later").unwrap();
    assert_eq!(
        (later.scheduled, later.depth),
        (1, 0),
        "still waiting after the restart"
    );
    // The priority still orders the queue.
    let mixed = drain(&url, "mixed", Duration::from_millis(300)).await;
    assert_eq!(mixed, vec![json!(3), json!(1), json!(2)]);
    let task = c
        .get("later", Duration::from_secs(15))
        .await
        .unwrap()
        .unwrap();
    let waited = put_at.elapsed();
    assert_eq!(task.payload.json_or_null(), &json!("due"));
    assert!(
        waited >= Duration::from_secs(4),
        "ready early: {waited:?} after the put"
    );
    drop(hub);
}

/// A confirmed cancel is stored like a confirmed put: ready, scheduled and leased tasks that
/// were cancelled stay gone after a kill -9, and the rest come back.
#[tokio::test]
async fn cancelled_tasks_stay_cancelled_after_a_kill_9() {
    let tmp = TempDir::new("cancelled");
    let addr = free_addr();
    let (hub, url) = serve_on(&addr, &tmp.0, &[]);
    let c = client(&url).await;
    let ids = put_by_cli(&url, &["jobs", "1", "2", "3"]);
    let ids: Vec<u64> = ids.lines().map(|l| l.parse().unwrap()).collect();
    let later: u64 = put_by_cli(&url, &["jobs", "4", "--delay", "1h"])
        .trim()
        .parse()
        .unwrap();
    let leased = put_by_cli(&url, &["held", "5"]).trim().parse().unwrap();
    let mut worker = Raw::session(&url, "worker").await;
    worker
        .request(
            json!({"type": "consume", "queues": ["held"], "prefetch": 1}),
            1,
        )
        .await;
    assert_eq!(worker.recv().await.unwrap()["task"]["id"], json!(leased));
    for id in [ids[1], later, leased] {
        c.cancel(taskhub_core::TaskId(id)).await.unwrap();
    }
    drop(hub); // SIGKILL: the cancels were confirmed, so they were stored.
    let (hub, url) = serve_on(&addr, &tmp.0, &[]);
    let c = client(&url).await;
    let stats = c.stats().await.unwrap();
    assert_eq!(stats.queue("jobs").unwrap().scheduled, 0);
    assert_eq!(
        drain(&url, "jobs", Duration::from_millis(300)).await,
        vec![json!(1), json!(3)]
    );
    assert!(
        drain(&url, "held", Duration::from_millis(300))
            .await
            .is_empty(),
        "the cancelled leased task did not come back"
    );
    drop(hub);
}

/// A redundant task survives a kill -9 as itself: the vote it had (one answer in, one replica
/// leased) is not kept, so its replicas run again, and its one result still needs a quorum.
#[tokio::test]
async fn a_redundant_task_survives_a_kill_9_and_its_replicas_run_again() {
    let tmp = TempDir::new("redundant");
    let addr = free_addr();
    let (hub, url) = serve_on(&addr, &tmp.0, &[]);
    let id: u64 = put_by_cli(
        &url,
        &["jobs", "6", "--replicas", "2", "--reply-to", "results"],
    )
    .trim()
    .parse()
    .unwrap();
    let mut first = Raw::consumer(&url, "jobs").await;
    let mut second = Raw::consumer(&url, "jobs").await;
    let d = first.recv().await.unwrap();
    first
        .request(
            json!({"type": "ack", "task": d["task"]["id"], "result": 36}),
            2,
        )
        .await;
    assert_eq!(second.recv().await.unwrap()["type"], "deliver");
    drop(hub); // SIGKILL with one vote in and one replica leased.
    let (hub, url) = serve_on(&addr, &tmp.0, &[]);
    let c = client(&url).await;
    let jobs = c.stats().await.unwrap();
    let jobs = jobs.queue("jobs").unwrap();
    assert_eq!(
        (jobs.voting, jobs.depth),
        (1, 2),
        "the task, with fresh replicas"
    );
    let mut voters = Vec::new();
    for _ in 0..2 {
        let mut w = Raw::consumer(&url, "jobs").await;
        let d = w.recv().await.unwrap();
        assert_eq!(d["task"]["payload"], 6, "{d}");
        assert!(d["task"]["id"].as_u64().unwrap() > id, "new ids: {d}");
        w.send(json!({"type": "ack", "task": d["task"]["id"], "result": 36}))
            .await;
        voters.push(w);
    }
    assert_eq!(
        drain(&url, "results", Duration::from_millis(500)).await,
        vec![json!({"id": id, "ok": true, "result": 36})]
    );
    drop(hub);
}

/// `taskhub put ARGS` against `url`; returns what it printed (the ids, one per line).
fn put_by_cli(url: &str, args: &[&str]) -> String {
    let mut all = vec!["--hub", url, "--key", KEY, "put"];
    all.extend_from_slice(args);
    let out = cli(&all);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// SIGTERM, and wait for the hub to exit on its own.
fn stop_gracefully(mut hub: Proc) {
    let pid = hub.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the hub did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small tmpfs mounted for one test, unmounted when dropped. Needs root (CI runs as root).
struct SmallDisk(TempDir);

impl SmallDisk {
    fn mount(name: &str, size: &str) -> SmallDisk {
        let dir = TempDir::new(name);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.0)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "this test mounts a small tmpfs to fill it, which needs root"
        );
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_puts_keeps_serving_and_recovers() {
    let disk = SmallDisk::mount("diskfull", "1m");
    // Room the test can give back later.
    let filler = disk.0.0.join("filler");
    std::fs::write(&filler, vec![1u8; 400 << 10]).unwrap();
    let data = disk.0.0.join("data");
    let addr = free_addr();
    let (hub, url) = serve_on(&addr, &data, &[]);

    let mut p = Raw::session(&url, "producer").await;
    let payload = "x".repeat(2_000);
    let mut queued = Vec::new();
    let mut refused = None;
    let mut req = 0;
    // Put until the hub says it cannot store; every `queued` names a stored task.
    while refused.is_none() {
        req += 1;
        assert!(req < 2_000, "the disk never filled");
        p.send(json!({"type": "put", "req": req, "queue": "jobs", "payload": payload}))
            .await;
        match p.recv_within(Duration::from_secs(2)).await {
            Ok(Some(m)) if m["type"] == "queued" => queued.push(m["task"].as_u64().unwrap()),
            Ok(Some(m)) if m["type"] == "error" => refused = Some(m),
            // A put accepted just before the disk filled waits for room to be confirmed.
            Err(()) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let refused = refused.unwrap();
    assert_eq!(refused["code"], "storage_unavailable", "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("full"), "{message}");
    assert!(message.contains("nothing was queued"), "{message}");

    // Reads and acks go on meanwhile: a worker takes a task and acks it.
    let mut w = Raw::session(&url, "worker").await;
    w.send(json!({"type": "consume", "req": 1, "queues": ["jobs"], "prefetch": 1}))
        .await;
    let delivered = loop {
        let m = w.recv().await.unwrap();
        if m["type"] == "deliver" {
            break m;
        }
    };
    let taken = delivered["task"]["id"].as_u64().unwrap();
    w.send(json!({"type": "ack", "req": 2, "task": taken}))
        .await;
    let ack = loop {
        let m = w.recv().await.unwrap();
        if m["req"] == 2 {
            break m;
        }
    };
    assert_eq!(ack["type"], "ok", "{ack}");
    drop(w);

    // Room comes back: puts work again, and the answers that waited arrive.
    std::fs::remove_file(&filler).unwrap();
    req += 1;
    let last = req;
    p.send(json!({"type": "put", "req": last, "queue": "jobs", "payload": "after"}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "puts never worked again");
        let Ok(Some(m)) = p.recv_within(Duration::from_secs(1)).await else {
            continue;
        };
        if m["type"] == "queued" {
            queued.push(m["task"].as_u64().unwrap());
            if m["req"] == last {
                break;
            }
        } else {
            // Retried until the writer has room again.
            assert_eq!(m["code"], "storage_unavailable", "{m}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            p.send(json!({"type": "put", "req": last, "queue": "jobs", "payload": "after"}))
                .await;
        }
    }
    drop(p);

    // After a crash, every confirmed task is there, but the one acked.
    drop(hub);
    let (_hub, url) = serve_on(&addr, &data, &[]);
    let c = client(&url).await;
    let mut back = Vec::new();
    while let Some(t) = c.get("jobs", Duration::from_millis(300)).await.unwrap() {
        back.push(t.id.0);
    }
    let mut expected: Vec<u64> = queued.into_iter().filter(|id| *id != taken).collect();
    expected.sort_unstable();
    back.sort_unstable();
    let lost: Vec<&u64> = expected.iter().filter(|id| !back.contains(id)).collect();
    assert!(lost.is_empty(), "confirmed tasks lost: {lost:?}");
}

#[test]
fn serve_says_where_it_keeps_tasks_and_refuses_what_cannot_work() {
    let tmp = TempDir::new("serve-flags");
    let data = tmp.0.join("data");
    // `taskhub serve` on a free port with its data in `data`.
    let serve = || {
        let mut cmd = Command::new(taskhub_tests::bin("taskhub"));
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--key",
            KEY,
            "--data-dir",
        ])
        .arg(&data);
        cmd
    };
    let mut hub = Proc::spawn(serve().stdout(std::process::Stdio::piped()));
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(hub.0.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("listening on ws://"), "{first}");
    let storage = lines.next().unwrap().unwrap();
    assert!(
        storage.contains(&format!("storage: {} (fsync always)", data.display()))
            && storage.contains("0 task(s)"),
        "{storage}"
    );
    // A second hub on the same dir would corrupt it: refused, and the first is named.
    let second = serve().output().unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by another taskhub"), "{err}");
    drop(hub);
    for (args, says) in [
        (
            vec!["--fsync", "sometimes"],
            "--fsync takes `always` or `interval=DURATION`",
        ),
        (vec!["--fsync", "interval=0ms"], "1ms to 60s"),
        (vec!["--repair"], "add --data-dir DIR"),
    ] {
        let out = Command::new(taskhub_tests::bin("taskhub"))
            .args(["serve", "--listen", "127.0.0.1:0", "--key", KEY])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
