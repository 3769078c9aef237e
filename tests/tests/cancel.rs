//! `cancel` over real sockets: the CLI, the client library, raw protocol frames, and real
//! `taskhub-worker` processes whose running tasks are stopped (a `sleep`, an `--exec` command).
//! With `TASKHUB_TEST_BACKEND=nats` the hub refuses it as `unsupported`.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use taskhub_client::{Client, ClientError, ConnectOptions, Pattern, PutOptions, Rights, TaskState};
use taskhub_core::{ErrorCode, TaskId};
use taskhub_tests::{KEY, Raw, cli, client, eventually, fresh_data_dir, hub, on_nats, worker};

/// The refusal a hub on NATS gives.
fn is_unsupported(e: &ClientError) -> bool {
    matches!(e, ClientError::Hub { code: ErrorCode::Unsupported, message }
        if message.contains("cancel") && message.contains("NATS"))
}

/// `taskhub --hub URL --key KEY ARGS…`: (success, stdout, stderr).
fn run(url: &str, args: &[&str]) -> (bool, String, String) {
    let all = [&["--hub", url, "--key", KEY][..], args].concat();
    let out = cli(&all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Wait until the hub has `n` tasks of `queue` in flight (leased to a worker).
async fn in_flight(c: &Client, queue: &str, n: u64) {
    let seen = eventually(Duration::from_secs(30), || async {
        let stats = c.stats().await.ok()?;
        (stats.queue(queue)?.in_flight == n).then_some(())
    })
    .await;
    assert!(seen.is_some(), "{queue} never had {n} task(s) in flight");
}

/// The next entry of `queue` (a reply), as JSON.
async fn next_reply(c: &Client, queue: &str, wait: Duration) -> Value {
    let t = c.get(queue, wait).await.unwrap();
    let t = t.unwrap_or_else(|| panic!("no reply on {queue} within {wait:?}"));
    t.payload.json_or_null().clone()
}

// The CLI blocks this thread: the hub runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_cancels_a_waiting_task_and_get_of_its_reply_queue_shows_cancelled() {
    let h = hub(|_| {}).await;
    let url = h.url();
    let (ok, out, err) = run(&url, &["put", "jobs", "1", "2", "--reply-to", "results"]);
    assert!(ok, "{err}");
    let ids: Vec<&str> = out.lines().collect();
    let (ok, out, err) = run(&url, &["cancel", ids[0]]);
    if on_nats() {
        assert!(!ok && err.contains("unsupported"), "{out} {err}");
        return;
    }
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("{}: cancelled (was ready)", ids[0]));
    let (ok, out, err) = run(&url, &["get", "results"]);
    assert!(ok, "{err}");
    let reply: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        reply,
        json!({"id": ids[0].parse::<u64>().unwrap(), "ok": false, "error": "cancelled", "cancelled": true})
    );
    // The other task is untouched; a second cancel of the first names why it cannot be.
    let c = client(&url).await;
    assert_eq!(c.stats().await.unwrap().queue("jobs").unwrap().depth, 1);
    let (ok, _, err) = run(&url, &["cancel", ids[0], ids[1]]);
    assert!(!ok, "one of them was not there");
    assert!(
        err.contains(&format!("task {}", ids[0])) && err.contains("unknown_task"),
        "{err}"
    );
    assert_eq!(c.stats().await.unwrap().queue("jobs").unwrap().depth, 0);
    h.stop().await;
}

#[tokio::test]
async fn a_scheduled_task_is_cancelled_and_never_runs() {
    let h = hub(|_| {}).await;
    let c = client(&h.url()).await;
    if on_nats() {
        let id = c.put("jobs", json!(1), PutOptions::new()).await.unwrap();
        assert!(is_unsupported(&c.cancel(id).await.unwrap_err()));
        return;
    }
    let later = PutOptions::new().delay(Duration::from_millis(300));
    let id = c.put("jobs", json!("later"), later.clone()).await.unwrap();
    let kept = c.put("jobs", json!("kept"), later).await.unwrap();
    assert_eq!(c.cancel(id).await.unwrap(), TaskState::Scheduled);
    let first = c
        .get("jobs", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.id, kept);
    assert_eq!(
        c.get("jobs", Duration::from_millis(500)).await.unwrap(),
        None
    );
    h.stop().await;
}

/// The protocol as `docs/protocol.md` writes it: the worker holding the task gets `cancel`, its
/// late ack is `unknown_task`, and the canceller hears `cancelled` with the state.
#[tokio::test]
async fn raw_frames_a_worker_is_told_and_its_late_ack_goes_nowhere() {
    if on_nats() {
        return; // refused: see the tests above
    }
    let h = hub(|_| {}).await;
    let url = h.url();
    let mut w = Raw::consumer(&url, "jobs").await;
    let mut p = Raw::session(&url, "producer").await;
    let queued = p
        .request(json!({"type": "put", "queue": "jobs", "payload": 5}), 2)
        .await;
    let id = queued["task"].as_u64().unwrap();
    let delivered = w.recv().await.unwrap();
    assert_eq!(
        (delivered["type"].as_str(), delivered["task"]["id"].as_u64()),
        (Some("deliver"), Some(id))
    );
    let answer = p.request(json!({"type": "cancel", "task": id}), 3).await;
    assert_eq!(
        answer,
        json!({"type": "cancelled", "req": 3, "task": id, "state": "leased"})
    );
    assert_eq!(
        w.recv().await.unwrap(),
        json!({"type": "cancel", "task": id})
    );
    let late = w
        .request(json!({"type": "ack", "task": id, "result": 25}), 4)
        .await;
    assert_eq!(late["code"], "unknown_task", "{late}");
    // Malformed: no task id.
    let bad = p.request(json!({"type": "cancel"}), 5).await;
    assert_eq!(bad["code"], "bad_request", "{bad}");
    assert!(bad["message"].as_str().unwrap().contains("task"), "{bad}");
    h.stop().await;
}

#[tokio::test]
async fn cancelling_needs_put_on_the_tasks_queue() {
    if on_nats() {
        return;
    }
    let h = hub(|_| {}).await;
    let url = h.url();
    let admin = client(&url).await;
    let id = admin
        .put("jobs", json!(1), PutOptions::new())
        .await
        .unwrap();
    let rights = Rights {
        put: vec![Pattern::new("other").unwrap()],
        ..Rights::default()
    };
    let token = admin
        .create_token(rights, Duration::from_secs(60))
        .await
        .unwrap()
        .token;
    let outsider = Client::connect(ConnectOptions::with_token(url.clone(), &token).unwrap())
        .await
        .unwrap();
    let err = outsider.cancel(id).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Hub { code: ErrorCode::Forbidden, message }
            if message.contains("cancel") && message.contains("\"jobs\"")),
        "{err}"
    );
    assert_eq!(admin.stats().await.unwrap().queue("jobs").unwrap().depth, 1);
    // An id that is nobody's task says so, whoever asks.
    let err = outsider.cancel(TaskId(999_999)).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Hub {
                code: ErrorCode::UnknownTask,
                ..
            }
        ),
        "{err}"
    );
    h.stop().await;
}

/// The issue's "done when": a running `sleep 10000` is stopped on its worker (a real
/// `taskhub-worker` process running one task at a time), which takes its next task at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_sleep_is_stopped_and_its_worker_takes_the_next_task() {
    if on_nats() {
        return;
    }
    let h = hub(|_| {}).await;
    let url = h.url();
    let c = client(&url).await;
    let _w = worker(&url, "jobs", &["--concurrency", "1", "--prefetch", "1"]);
    let opts = |kind: &str| PutOptions::new().kind(kind).reply_to("results");
    let sleeper = c.put("jobs", json!(30_000), opts("sleep")).await.unwrap();
    in_flight(&c, "jobs", 1).await;
    let next = c.put("jobs", json!(7), opts("square")).await.unwrap();
    assert_eq!(c.cancel(sleeper).await.unwrap(), TaskState::Leased);
    let first = next_reply(&c, "results", Duration::from_secs(5)).await;
    assert_eq!(first["id"], json!(sleeper.0));
    assert_eq!(first["cancelled"], json!(true));
    // Well before the 30 s sleep would have ended: the worker was freed.
    let second = next_reply(&c, "results", Duration::from_secs(15)).await;
    assert_eq!(
        (second["id"].clone(), second["result"].clone()),
        (json!(next.0), json!("7 * 7 = 49"))
    );
    let stats = c.stats().await.unwrap();
    assert_eq!(stats.acked, 1, "the cancelled task was never acked");
    h.stop().await;
}

/// Whether process `pid` runs (a zombie, dead and not yet reaped, does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// An `--exec` command's whole process group is killed when its task is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_exec_command_is_killed() {
    if on_nats() {
        return;
    }
    let h = hub(|_| {}).await;
    let url = h.url();
    let c = client(&url).await;
    let dir = fresh_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let pids = dir.display();
    // A slow task records its pid and sleeps; a quick one answers at once.
    let script = format!(
        r#"if [ "$(cat)" = '"slow"' ]; then echo $$ > {pids}/$TASKHUB_TASK_ID.pid; exec sleep 60; else echo quick; fi"#
    );
    let _w = worker(&url, "jobs", &["--concurrency", "1", "--exec", &script]);
    let opts = PutOptions::new().reply_to("results");
    let slow = c.put("jobs", json!("slow"), opts.clone()).await.unwrap();
    let pid_file = dir.join(format!("{slow}.pid"));
    let pid = eventually(Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&pid_file).ok()?;
        text.trim().parse::<u32>().ok()
    })
    .await
    .expect("the slow command started");
    assert!(alive(pid));
    assert_eq!(c.cancel(slow).await.unwrap(), TaskState::Leased);
    let gone = eventually(Duration::from_secs(10), || async {
        (!alive(pid)).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the command (pid {pid}) still runs");
    let quick = c.put("jobs", json!("quick"), opts).await.unwrap();
    let first = next_reply(&c, "results", Duration::from_secs(5)).await;
    assert_eq!(first["cancelled"], json!(true), "{first}");
    let second = next_reply(&c, "results", Duration::from_secs(15)).await;
    assert_eq!(
        (second["id"].clone(), second["result"].clone()),
        (json!(quick.0), json!("quick"))
    );
    h.stop().await;
}
