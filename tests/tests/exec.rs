//! `--exec`: any command is a worker. Payload on stdin, result on stdout, failure on stderr.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use taskhub_client::PutOptions;
use taskhub_tests::{SubmitWithin, client, hub, worker};

#[tokio::test]
async fn a_shell_command_computes_results_and_its_failures_carry_stderr() {
    let hub = hub(|c| c.broker.max_attempts = 2).await;
    let script = r#"read n; if [ "$n" -lt 0 ]; then echo "negative: $n" >&2; exit 3; fi; echo "{\"double\": $((n * 2)), \"kind\": \"$TASKHUB_KIND\"}""#;
    let _w = worker(
        &hub.url(),
        "shell",
        &["--exec", script, "--concurrency", "2"],
    );
    let c = client(&hub.url()).await;
    let replies = c
        .submit_within(
            "shell",
            vec![json!(21), json!(-1), json!(5)],
            PutOptions::new().kind("dbl"),
            Some(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    assert_eq!(
        replies[0].result,
        Some(json!({"double": 42, "kind": "dbl"}).into())
    );
    assert_eq!(
        replies[2].result,
        Some(json!({"double": 10, "kind": "dbl"}).into())
    );
    assert!(!replies[1].ok);
    let err = replies[1].error.as_deref().unwrap();
    assert!(
        err.contains("negative: -1") && err.contains("exit status: 3"),
        "{err}"
    );

    // Output that is not JSON comes back as a string.
    let _w2 = worker(&hub.url(), "words", &["--exec", "tr -d '\"' | tr a-z A-Z"]);
    let replies = c
        .submit_within(
            "words",
            vec![json!("hello")],
            PutOptions::default(),
            Some(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    assert_eq!(replies[0].result, Some(json!("HELLO").into()));
    hub.stop().await;
}

/// A `taskhub-worker --exec CMD` in a process group of its own, as a shell runs a job: a Ctrl-C
/// (SIGINT to the whole group) or systemd's default stop reaches every process in it.
fn exec_worker_in_own_group(url: &str, queue: &str, cmd: &str, grace: &str) -> taskhub_tests::Proc {
    use std::os::unix::process::CommandExt;
    taskhub_tests::Proc::spawn(
        std::process::Command::new(taskhub_tests::bin("taskhub-worker"))
            .args(["--hub", url, "--key", taskhub_tests::KEY, "--queue", queue])
            .args(["--exec", cmd, "--grace", grace, "--concurrency", "1"])
            .env("RUST_LOG", "warn")
            .process_group(0),
    )
}

/// Wait until `queue` has a task in flight (the worker started it).
async fn until_running(c: &taskhub_client::Client, queue: &str) {
    taskhub_tests::eventually(Duration::from_secs(10), || async {
        let s = c.stats().await.unwrap();
        s.queue(queue).filter(|q| q.in_flight == 1).map(|_| ())
    })
    .await
    .expect("the task starts");
}

fn signal_group(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, "--", &format!("-{pid}")])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_to_the_workers_group_lets_exec_tasks_finish() {
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    let mut w = exec_worker_in_own_group(&hub.url(), "slow", "sleep 1; echo finished", "10");
    let opts = PutOptions::new().kind("nap").reply_to("slow-done");
    c.put("slow", json!(null), opts).await.unwrap();
    // Wait until the task is running, then Ctrl-C the worker's whole process group.
    until_running(&c, "slow").await;
    signal_group(w.pid(), "-INT");
    let status = tokio::task::spawn_blocking(move || w.0.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "the worker finished its task and exited cleanly"
    );
    let done = c
        .get("slow-done", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.payload["ok"], json!(true), "{}", done.payload);
    assert_eq!(done.payload["result"], json!("finished"));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_period_that_runs_out_is_a_failed_exit() {
    let hub = hub(|_| {}).await;
    let c = client(&hub.url()).await;
    // `sleep 37.25` is a child of the command's shell: it must not outlive the abandoned task.
    let mut w = exec_worker_in_own_group(&hub.url(), "stuck", "sleep 37.25; echo late", "1");
    c.put("stuck", json!(null), PutOptions::new().kind("nap"))
        .await
        .unwrap();
    until_running(&c, "stuck").await;
    signal_group(w.pid(), "-TERM");
    let out = tokio::task::spawn_blocking(move || w.0.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(out.code(), Some(1), "abandoning a task is not a clean exit");
    let orphan = || {
        std::process::Command::new("pgrep")
            .args(["-f", "sleep 37.25"])
            .output()
            .unwrap()
            .status
            .success()
    };
    let gone = taskhub_tests::eventually(Duration::from_secs(5), || async {
        (!orphan()).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the abandoned command's children were killed"
    );
    // The abandoned task went back to the queue for another worker.
    let back = taskhub_tests::eventually(Duration::from_secs(10), || async {
        let s = c.stats().await.unwrap();
        s.queue("stuck")
            .filter(|q| q.depth == 1 && q.in_flight == 0)
            .map(|_| ())
    })
    .await;
    assert!(back.is_some(), "the task is ready again");
    hub.stop().await;
}

#[tokio::test]
async fn a_command_never_sees_the_workers_key() {
    let hub = hub(|_| {}).await;
    // The key comes by environment, as a service file would give it; the command lists what it
    // can see.
    let _w = taskhub_tests::Proc::spawn(
        std::process::Command::new(taskhub_tests::bin("taskhub-worker"))
            .args(["--hub", &hub.url(), "--queue", "env", "--exec", "env"])
            .env("TASKHUB_KEY", taskhub_tests::KEY)
            .env("TASKHUB_KEY_ID", "default")
            .env("RUST_LOG", "warn"),
    );
    let c = client(&hub.url()).await;
    let replies = c
        .submit_within(
            "env",
            vec![json!(null)],
            PutOptions::default(),
            Some(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    let seen = replies[0].result.as_ref().unwrap().to_string();
    assert!(seen.contains("TASKHUB_TASK_ID="), "the command ran: {seen}");
    assert!(!seen.contains(taskhub_tests::KEY), "{seen}");
    assert!(!seen.contains("TASKHUB_KEY"), "{seen}");
    hub.stop().await;
}

/// A command reports progress with `TASKHUB_PROGRESS 0.5 message` lines on stderr: they reach
/// the submitter, and are not part of the stderr a failure carries.
#[tokio::test]
async fn a_command_reports_progress_on_stderr() {
    let hub = hub(|c| c.broker.max_attempts = 1).await;
    let script = r#"read n; echo "TASKHUB_PROGRESS 0.5 halfway there" >&2; sleep 0.2; echo "TASKHUB_PROGRESS 0.9" >&2; echo "TASKHUB_PROGRESS 7 not a fraction" >&2; if [ "$n" -lt 0 ]; then echo "negative" >&2; exit 3; fi; echo $n"#;
    let _w = worker(&hub.url(), "shell", &["--exec", script]);
    let c = client(&hub.url()).await;
    let mut reports = c.progress();
    let replies = c
        .submit_within(
            "shell",
            vec![json!(4), json!(-1)],
            PutOptions::new(),
            Some(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    assert_eq!(replies[0].result, Some(json!(4).into()));
    let mut heard = Vec::new();
    while let Ok(p) = reports.try_recv() {
        if p.task == replies[0].id {
            heard.push((p.fraction, p.message));
        }
    }
    assert_eq!(
        heard,
        vec![(0.5, Some("halfway there".to_string())), (0.9, None)]
    );
    let err = replies[1].error.as_deref().unwrap();
    assert!(
        err.contains("negative") && err.contains("TASKHUB_PROGRESS 7 not a fraction"),
        "a line that is not a report stays stderr: {err}"
    );
    assert!(!err.contains("halfway"), "reports are not stderr: {err}");
    hub.stop().await;
}
