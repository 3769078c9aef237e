//! End to end with real processes: `taskhub serve`, `taskhub-worker`s and the CLI.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use taskhub_tests::{KEY, SubmitWithin, cli, client, serve, serve_with, worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_result_arrives_when_a_worker_is_killed_mid_run() {
    let (_hub, url) = serve("127.0.0.1:0");
    let mut a = worker(&url, "tasks", &["--concurrency", "1", "--prefetch", "2"]);
    let _b = worker(&url, "tasks", &["--concurrency", "1", "--prefetch", "2"]);

    let numbers: Vec<String> = (0..1000).map(|n| (n * 7 + 3).to_string()).collect();
    let mut args = vec!["put", "--hub", &url, "--key", KEY, "tasks"];
    args.extend(numbers.iter().map(String::as_str));
    args.extend(["--kind", "square", "--reply-to", "results"]);
    let put = cli(&args);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let ids: Vec<u64> = String::from_utf8_lossy(&put.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 1000);
    let expected: HashMap<u64, String> = ids
        .iter()
        .zip(&numbers)
        .map(|(id, n)| {
            let n: i64 = n.parse().unwrap();
            (*id, format!("{n} * {n} = {}", n * n))
        })
        .collect();

    // Kill worker A once half the results are in, while it still holds leases.
    let c = client(&url).await;
    let half = taskhub_tests::eventually(Duration::from_secs(60), || async {
        let stats = c.stats().await.unwrap();
        let depth = |name: &str| stats.queue(name).map(|q| (q.depth, q.in_flight));
        let (done, _) = depth("results")?;
        let (left, in_flight) = depth("tasks")?;
        (done >= 500).then_some((done, left + in_flight))
    })
    .await
    .expect("half the results arrive");
    eprintln!("killing worker A at {half:?}");
    a.0.kill().unwrap(); // SIGKILL: no goodbye, leases held
    a.0.wait().unwrap();
    assert!(half.1 > 0, "work was left when the worker died: {half:?}");

    let mut results: HashMap<u64, Value> = HashMap::new();
    while results.len() < 1000 {
        let task = c
            .get("results", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("results stalled at {}", results.len()));
        let id = task.payload["id"].as_u64().unwrap();
        assert!(
            results.insert(id, task.payload.to_json_lossy()).is_none(),
            "duplicate result for {id}"
        );
    }
    for (id, r) in &results {
        assert_eq!(r["ok"], Value::Bool(true), "{r}");
        assert_eq!(r["result"].as_str(), Some(expected[id].as_str()), "{r}");
    }
    let stats = c.stats().await.unwrap();
    let tasks = stats.queue("tasks").unwrap();
    assert_eq!((tasks.depth, tasks.in_flight, tasks.dead), (0, 0, 0));
    assert_eq!(
        stats.sessions["worker"], 1,
        "the killed worker's session is gone"
    );
}

#[tokio::test]
async fn the_rust_clients_seed_example_prints_ten_results_for_its_ten_tasks() {
    let (_hub, url) = serve("127.0.0.1:0");
    let _w = worker(&url, "tasks", &[]);
    // `cargo test` builds the workspace's examples next to its binaries.
    let example = taskhub_tests::bin("examples/seed");
    let run = tokio::task::spawn_blocking(move || {
        Command::new(example)
            .env("TASKHUB_URL", &url)
            .env("TASKHUB_KEY", KEY)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_the_seeds_lines(&run);
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(out.lines().last(), Some("master exit."));
}

#[test]
fn the_demo_runs_the_seed_job_in_one_process() {
    assert_the_seeds_lines(&cli(&["demo"]));
}

/// The seed master's output: ten `Put task N...`, then `Result: N * N = M` for each of them
/// (in any order), then `master exit.` when the program prints it.
fn assert_the_seeds_lines(run: &std::process::Output) {
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let put: Vec<u64> = out
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Put task ")?
                .strip_suffix("...")?
                .parse()
                .ok()
        })
        .collect();
    let mut results: Vec<&str> = out.lines().filter(|l| l.starts_with("Result: ")).collect();
    let mut expected: Vec<String> = put
        .iter()
        .map(|n| format!("Result: {n} * {n} = {}", n * n))
        .collect();
    results.sort_unstable();
    expected.sort_unstable();
    assert_eq!(put.len(), 10, "{out}");
    assert_eq!(results, expected, "{out}");
}

#[tokio::test]
async fn the_readme_commands_work_as_written() {
    let (_hub, url) = serve("127.0.0.1:0");
    let _w = worker(&url, "tasks", &[]);
    let put = cli(&[
        "put",
        "--hub",
        &url,
        "--key",
        KEY,
        "tasks",
        "3411",
        "1605",
        "--kind",
        "square",
        "--reply-to",
        "results",
    ]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&put.stdout).lines().count(), 2);
    let get = cli(&[
        "get",
        "--hub",
        &url,
        "--key",
        KEY,
        "results",
        "--count",
        "2",
        "--timeout",
        "10",
    ]);
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    let out = String::from_utf8_lossy(&get.stdout);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("3411 * 3411 = 11634921"), "{out}");
    assert!(out.contains("1605 * 1605 = 2576025"), "{out}");

    let stats = cli(&["stats", "--hub", &url, "--key", "wrong"]);
    assert!(!stats.status.success());
    assert!(String::from_utf8_lossy(&stats.stderr).contains("authentication failed"));

    let submit = cli(&[
        "submit",
        "--hub",
        &url,
        "--key",
        KEY,
        "tasks",
        "\"abc\"",
        "--kind",
        "sha256",
        "--timeout",
        "10",
    ]);
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&submit.stdout).trim(),
        "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\""
    );
}

#[tokio::test]
async fn a_signalled_worker_finishes_its_tasks_and_a_second_signal_exits_at_once() {
    let (_hub, url) = serve("127.0.0.1:0");
    let c = client(&url).await;
    let mut w = worker(&url, "naps", &["--concurrency", "2", "--prefetch", "4"]);
    let opts = taskhub_client::PutOptions::new()
        .kind("sleep")
        .reply_to("done");
    c.put_many("naps", vec![json!(800); 6], opts.clone())
        .await
        .unwrap();
    // Wait until the worker holds tasks.
    let busy = taskhub_tests::eventually(Duration::from_secs(10), || async {
        let s = c.stats().await.unwrap();
        let q = s.queue("naps")?.clone();
        (q.in_flight >= 2).then_some(q)
    })
    .await
    .expect("worker took tasks");
    assert!(busy.in_flight <= 4);
    let term = |pid: u32| {
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
    };
    assert!(term(w.pid()).success());
    let exit = tokio::task::spawn_blocking(move || {
        let s = w.0.wait().unwrap();
        (w, s)
    })
    .await
    .unwrap()
    .1;
    assert!(exit.success(), "graceful stop exits 0: {exit:?}");
    // The two running naps were finished and acked; the rest were handed back, none lost.
    // (With NATS, an ack reaches JetStream a moment after the hub sent it: stats may lag.)
    let counts = || async {
        let s = c.stats().await.unwrap();
        let naps = s.queue("naps").unwrap();
        let done = s.queue("done").unwrap();
        (naps.in_flight, done.depth, naps.depth)
    };
    let settled = taskhub_tests::eventually(Duration::from_secs(5), || async {
        let now = counts().await;
        (now == (0, 2, 4)).then_some(now)
    })
    .await;
    let (in_flight, done, back) = match settled {
        Some(c) => c,
        None => counts().await,
    };
    assert_eq!(in_flight, 0);
    assert_eq!(done, 2, "the two running tasks completed");
    assert_eq!(back, 4, "the others are back in the queue");

    // A second signal does not wait for the grace period: the worker holds a minute-long nap
    // (alone on its queue, so the two signals cannot both land after it is done).
    c.put_many("long-naps", vec![json!(60_000)], opts.clone())
        .await
        .unwrap();
    let mut w = worker(
        &url,
        "long-naps",
        &["--concurrency", "1", "--prefetch", "1"],
    );
    taskhub_tests::eventually(Duration::from_secs(10), || async {
        let s = c.stats().await.unwrap();
        (s.queue("long-naps")?.in_flight == 1).then_some(())
    })
    .await
    .expect("worker took the task");
    assert!(term(w.pid()).success());
    // As a user pressing Ctrl-C twice: two signals sent back to back can reach the process as
    // one (the kernel does not queue them), so the second comes a moment later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(term(w.pid()).success());
    let exit = tokio::task::spawn_blocking(move || w.0.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(130), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_asking_more_prefetch_than_the_hub_allows_still_takes_tasks() {
    let (_hub, url) = serve_with("127.0.0.1:0", &["--max-prefetch", "100"]);
    let _w = worker(&url, "tasks", &["--prefetch", "5000", "--concurrency", "2"]);
    let c = client(&url).await;
    let replies = c
        .submit_within(
            "tasks",
            (0..300).map(serde_json::Value::from),
            taskhub_client::PutOptions::new().kind("square"),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert!(replies.iter().all(|r| r.ok), "{replies:?}");
    assert_eq!(
        replies[299].result,
        Some(Value::from("299 * 299 = 89401").into())
    );
    let stats = c.stats().await.unwrap();
    assert_eq!(stats.workers[0].acked, 300, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_queue_the_hub_refuses_exits_and_says_why() {
    let (_hub, url) = serve("127.0.0.1:0");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(taskhub_tests::bin("taskhub-worker"))
            .args(["--hub", &url, "--key", KEY, "--queue", "_inbox.1"])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("the worker exits instead of sitting idle")
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused to let this worker consume _inbox.1") && err.contains("forbidden"),
        "{err}"
    );
}

/// The fault suite's case: a connection lost in the middle of `taskhub put` left the CLI printing
/// no ids at all, though the hub had kept thousands of the tasks. Ids now appear as the hub
/// confirms each task, so what was printed is true when the hub vanishes mid-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_prints_each_id_as_it_is_confirmed_so_a_lost_connection_leaves_a_true_list() {
    use std::io::{BufRead, BufReader};
    let (hub, url) = serve("127.0.0.1:0");
    let numbers: Vec<String> = (0..80_000).map(|n| n.to_string()).collect();
    let mut put = taskhub_tests::Proc::spawn(
        Command::new(taskhub_tests::bin("taskhub"))
            .args(["put", "--hub", &url, "--key", KEY, "many"])
            .args(&numbers)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    let stdout = put.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first: u64 = lines.next().unwrap().unwrap().parse().unwrap();
    assert_eq!(
        first, 1,
        "the first id arrives before the last task is sent"
    );
    drop(hub); // SIGKILL: the hub vanishes mid-put
    let mut ids = vec![first];
    for line in lines {
        ids.push(line.unwrap().parse::<u64>().unwrap());
    }
    let status = put.0.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut put.0.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        ids.len() < numbers.len(),
        "the hub died before all were confirmed"
    );
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids in order, none missing"
    );
    assert!(
        err.contains(&format!("the hub confirmed {} of 80000 task(s)", ids.len())),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_retried_with_its_dedup_prefix_stores_nothing_twice() {
    let (_hub, url) = serve("127.0.0.1:0");
    let put = || {
        cli(&[
            "put",
            "--hub",
            &url,
            "--key",
            KEY,
            "jobs",
            "1",
            "2",
            "3",
            "--dedup-prefix",
            "batch-7-",
        ])
    };
    let first = put();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = put();
    assert!(again.status.success());
    assert_eq!(first.stdout, again.stdout, "the retry is told the same ids");
    let c = client(&url).await;
    let stats = c.stats().await.unwrap();
    let jobs = stats.queue("jobs").unwrap();
    assert_eq!(jobs.depth, 3, "stored once: {stats:?}");
}

/// A `taskhub-worker` set up by a config file alone (hub, key file, queue, name), a variable
/// overriding one of its settings: it works the queue under the name the variable gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_takes_its_settings_from_a_config_file() {
    let (_hub, url) = serve("127.0.0.1:0");
    let dir = taskhub_tests::fresh_data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("worker.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let config = dir.join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "hub = {url:?}\nkey_file = {key_file:?}\nqueue = [\"filed\"]\nname = \"from-file\"\n\
             concurrency = 2\ngrace = \"2s\"\n"
        ),
    )
    .unwrap();
    let _w = taskhub_tests::Proc::spawn(
        Command::new(taskhub_tests::bin("taskhub-worker"))
            .args(["--config", config.to_str().unwrap()])
            .env_remove("TASKHUB_KEY")
            .env("TASKHUB_WORKER_NAME", "from-env")
            .env("RUST_LOG", "warn"),
    );
    let c = client(&url).await;
    let replies = c
        .submit_within(
            "filed",
            (1..=5).map(|n| json!(n)),
            taskhub_client::PutOptions::new().kind("square"),
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert!(replies.iter().all(|r| r.ok), "{replies:?}");
    let stats = c.stats().await.unwrap();
    let names: Vec<_> = stats
        .workers
        .iter()
        .filter_map(|w| w.name.clone())
        .collect();
    assert_eq!(names, ["from-env"]);
    // A setting the worker does not have is named, with the file.
    std::fs::write(&config, "queue = [\"x\"]\nprefech = 3\n").unwrap();
    let out = Command::new(taskhub_tests::bin("taskhub-worker"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("unknown setting \"prefech\"") && err.contains("worker.toml"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
