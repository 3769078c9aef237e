//! Worker bundles end to end: the mandelbrot example's handler in a native worker process and in
//! a real Chromium tab (tiles byte-identical), its `render` command, JS handler modules in a tab,
//! and `serve` refusing bad bundles at start-up.

// Helpers here are test code too: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use taskhub_client::PutOptions;
use taskhub_tests::cdp::Browser;
use taskhub_tests::{KEY, Proc, SubmitWithin, bin, client, serve_with};

const STATUS: &str = "window.taskhub.status()";

/// A scratch directory under the target directory, emptied first.
fn scratch(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    dir.pop();
    let dir = dir.join("test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The example's browser bundle, built once per test binary with its own `bundle` command.
fn mandelbrot_bundle() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = scratch("mandelbrot-bundle");
        let out = Command::new(bin("mandelbrot"))
            .arg("bundle")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mandelbrot bundle failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains("bundle mandelbrot (mandelbrot_point, mandelbrot_tile)"),
            "{said}"
        );
        dir
    })
}

/// A user's crate outside the workspace (`tests/fixtures/usercrate`), built into a bundle from
/// the outside as its own `bundle` command would, once per test binary.
fn user_bundle() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = scratch("user-bundle");
        let krate = taskhub_bundle::Crate {
            package: "usercrate",
            manifest_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/usercrate"),
        };
        let kinds = ["explode", "hello", "nap", "reject", "second_try", "tally"]
            .map(|k| taskhub_core::bundle::KindInfo {
                kind: k.into(),
                heavy: k == "explode",
            })
            .to_vec();
        // A target directory of its own, as a user's own workspace would have: taskhub's crates
        // built as path dependencies of another workspace must not share one with the example's
        // build, where they are workspace members (cargo would mix the two builds up).
        let target = bin("mandelbrot")
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("wasm-bundle-user");
        taskhub_bundle::build(&krate, "usercrate", kinds, &dir, &target)
            .unwrap_or_else(|e| panic!("building the user's bundle failed: {e}"));
        dir
    })
}

fn http_base(ws_url: &str) -> String {
    ws_url.replacen("ws://", "http://", 1)
}

fn tile_payloads(n: usize) -> Vec<mandelbrot::Tile> {
    // The first rows of the full-size image, at a modest depth: edge tiles and busy ones.
    mandelbrot::tiles(1920, 1080, 120, 300)
        .into_iter()
        .step_by(9)
        .take(n)
        .collect()
}

fn pixels(result: &taskhub_core::Payload) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(result["rgb"].as_str().unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_renders_the_examples_tiles_byte_identical_to_a_native_worker() {
    let bundle = tokio::task::spawn_blocking(mandelbrot_bundle)
        .await
        .unwrap();
    let (_hub, url) = serve_with(
        "127.0.0.1:0",
        &["--worker-bundle", bundle.to_str().unwrap()],
    );
    let _native = Proc::spawn(
        Command::new(bin("mandelbrot"))
            .args([
                "worker",
                "--hub",
                &url,
                "--key",
                KEY,
                "--queue",
                "tiles-native",
            ])
            .env("RUST_LOG", "warn"),
    );
    let mut browser = Browser::start().await;
    let (page, _) = browser
        .open_worker(&format!(
            "{}/#key={KEY}&queue=tiles-tab&bundle=mandelbrot&workers=2",
            http_base(&url)
        ))
        .await;
    let kinds = browser.eval(&page, "window.taskhub.bundle.kinds").await;
    assert_eq!(kinds, json!(["mandelbrot_point", "mandelbrot_tile"]));
    let shown = browser
        .eval(&page, "document.getElementById('bundle-kinds').textContent")
        .await;
    assert_eq!(shown, "mandelbrot_point, mandelbrot_tile");

    let c = client(&url).await;
    let tiles = tile_payloads(12);
    let payloads: Vec<Value> = tiles
        .iter()
        .map(|t| serde_json::to_value(t).unwrap())
        .collect();
    let wait = Some(Duration::from_secs(60));
    let opts = || PutOptions::new().kind(mandelbrot::TILE_KIND);
    let mut reports = c.progress();
    let (tab, native) = tokio::join!(
        c.submit_within("tiles-tab", payloads.clone(), opts(), wait),
        c.submit_within("tiles-native", payloads, opts(), wait),
    );
    let (tab, native) = (tab.unwrap(), native.unwrap());
    // Each tile reported how far it had got, from the tab's Web Workers as from the native
    // worker's threads (the first report of a task goes at once; later ones within 100 ms wait,
    // and a tile this small is done before then).
    let mut reported = std::collections::HashSet::new();
    while let Ok(p) = reports.try_recv() {
        assert!(p.fraction > 0.0 && p.fraction < 1.0, "{p:?}");
        reported.insert(p.task);
    }
    for r in tab.iter().chain(&native) {
        assert!(
            reported.contains(&r.id),
            "no progress from tile task {}",
            r.id
        );
    }
    let stats = c.stats().await.unwrap();
    let role_of = |r: &taskhub_client::Reply| {
        let session = r.result.as_ref().unwrap()["session"].as_u64().unwrap();
        let w = stats
            .workers
            .iter()
            .find(|w| w.session.0 == session)
            .unwrap();
        w.role
    };
    for ((t, a), b) in tiles.iter().zip(&tab).zip(&native) {
        assert!(a.ok && b.ok, "{a:?} {b:?}");
        assert_eq!(role_of(a), taskhub_core::Role::Browser);
        assert_eq!(role_of(b), taskhub_core::Role::Worker);
        let (pa, pb) = (
            pixels(a.result.as_ref().unwrap()),
            pixels(b.result.as_ref().unwrap()),
        );
        assert_eq!(pa.len(), (t.w * t.h * 3) as usize);
        assert!(
            pa == pb,
            "tile ({}, {}) differs between the tab and the native worker",
            t.x,
            t.y
        );
        assert!(
            pa == mandelbrot::render(t),
            "tile ({}, {}) is not the reference",
            t.x,
            t.y
        );
    }
    // A light kind of the same bundle, and a kind the bundle does not have.
    let point = c
        .submit_within(
            "tiles-tab",
            vec![json!([0.5, 0.5, 100])],
            PutOptions::new().kind("mandelbrot_point"),
            wait,
        )
        .await
        .unwrap();
    assert_eq!(point[0].result, Some(json!(5).into()));
    let unknown = c
        .submit_within(
            "tiles-tab",
            vec![json!(3)],
            PutOptions::new().kind("square"),
            wait,
        )
        .await
        .unwrap();
    let error = unknown[0].error.as_deref().unwrap();
    assert!(
        error.contains("after 1 attempt(s)")
            && error.contains("this worker knows mandelbrot_point, mandelbrot_tile"),
        "{error}"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_render_command_assembles_the_image_from_native_workers() {
    let (_hub, url) = serve_with("127.0.0.1:0", &[]);
    let _w = Proc::spawn(
        Command::new(bin("mandelbrot"))
            .args([
                "worker", "--hub", &url, "--key", KEY, "--queue", "tiles", "--name", "box-1",
            ])
            .env("RUST_LOG", "warn"),
    );
    let dir = scratch("render");
    let png_path = dir.join("image.png");
    let out = {
        let (url, png_path) = (url.clone(), png_path.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(bin("mandelbrot"))
                .args(["render", "--hub", &url, "--key", KEY, "--queue", "tiles"])
                .args([
                    "--width",
                    "480",
                    "--height",
                    "270",
                    "--tile",
                    "60",
                    "--max-iter",
                    "200",
                ])
                .arg("--out")
                .arg(&png_path)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("40 tiles (480x270, max_iter 200)"),
        "{stdout}"
    );
    assert!(stdout.contains("(worker, box-1): 40 tiles"), "{stdout}");

    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut image = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut image).unwrap();
    assert_eq!((info.width, info.height), (480, 270));
    let mut expected = vec![0u8; 480 * 270 * 3];
    for t in mandelbrot::tiles(480, 270, 60, 200) {
        let rgb = mandelbrot::render(&t);
        for (i, row) in rgb.chunks_exact(t.w as usize * 3).enumerate() {
            let at = ((t.y as usize + i) * 480 + t.x as usize) * 3;
            expected[at..at + row.len()].copy_from_slice(row);
        }
    }
    let first_difference = image.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "the PNG differs from the reference image (at byte {first_difference:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_own_crate_runs_in_tabs_with_state_waits_failures_and_panics() {
    let bundle = tokio::task::spawn_blocking(user_bundle).await.unwrap();
    let (_hub, url) = serve_with(
        "127.0.0.1:0",
        &["--worker-bundle", bundle.to_str().unwrap()],
    );
    let base = http_base(&url);
    let mut browser = Browser::start().await;
    // One compute thread for the stateful checks, two for the waiting one.
    for (queue, threads) in [("one", 1), ("two", 2)] {
        browser
            .open_worker(&format!(
                "{base}/#key={KEY}&queue={queue}&bundle=usercrate&workers={threads}"
            ))
            .await;
    }
    let c = client(&url).await;
    let wait = Some(Duration::from_secs(30));
    let run = |queue: &'static str, kind: &'static str, payload: Value| {
        let opts = PutOptions::new().kind(kind).max_attempts(1);
        c.submit_within(queue, vec![payload], opts, wait)
    };

    // State carries over between tasks in the tab's instance.
    for expected in 1..=3 {
        let r = run("one", "tally", json!(null)).await.unwrap();
        assert_eq!(
            r[0].result,
            Some(json!({"count": expected, "attempt": 1}).into())
        );
    }
    // A permanent failure, and a panic: the panic's message, and the tab carries on.
    let r = run("one", "reject", json!(3)).await.unwrap();
    assert_eq!(
        r[0].error.as_deref(),
        Some("gave up after 1 attempt(s): cannot use 3")
    );
    let r = run("one", "explode", json!(null)).await.unwrap();
    assert_eq!(
        r[0].error.as_deref(),
        Some("gave up after 1 attempt(s): handler panicked: kaboom")
    );
    // A retry reaches the tab's handler with its attempt and why the last one ended.
    let retried = PutOptions::new()
        .kind("second_try")
        .max_attempts(2)
        .backoff(Duration::ZERO);
    let r = c
        .submit_within("one", vec![json!(null)], retried, wait)
        .await
        .unwrap();
    assert_eq!(
        r[0].result,
        Some(json!({"attempt": 2, "last_error": "first tries fail"}).into())
    );
    let r = run("one", "hello", json!("again")).await.unwrap();
    assert_eq!(r[0].result, Some(json!("hello \"again\"").into()));
    let r = run("one", "tally", json!(null)).await.unwrap();
    assert_eq!(
        r[0].result,
        Some(json!({"count": 1, "attempt": 1}).into()),
        "the panicked instance was replaced by a fresh one"
    );

    // A waiting handler does not hold up the other compute thread.
    let to_done = |kind: &str| PutOptions::new().kind(kind).reply_to("done");
    c.put("two", json!(1500), to_done("nap")).await.unwrap();
    c.put("two", json!("quick"), to_done("hello"))
        .await
        .unwrap();
    let first = c
        .get("done", Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.payload["result"],
        json!("hello \"quick\""),
        "the quick task came first"
    );
    let second = c
        .get("done", Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.payload["result"], json!({"napped": 1500}));
    browser.close().await;
}

const JS_HANDLERS: &str = r#"
// Handlers for tests: sync, async, throwing (retryable and not).
export function upper(payload) {
  return String(payload).toUpperCase();
}
export async function later(payload, task) {
  await new Promise((resolve) => setTimeout(resolve, 50));
  return { got: payload, attempt: task.attempt, kind: task.kind };
}
export function boom(payload) {
  throw new Error(`boom on ${payload}`);
}
export function refuse(payload) {
  const err = new Error(`cannot use ${JSON.stringify(payload)}`);
  err.retry = false;
  throw err;
}
export function limited(payload, task) {
  if (task.attempt === 1) {
    const err = new Error("rate limited");
    err.retryAfterMs = 300;
    throw err;
  }
  return task.attempt;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_handlers_run_in_a_tab_sync_async_and_throwing() {
    let dir = scratch("js-handlers");
    let file = dir.join("shapes.js");
    std::fs::write(&file, JS_HANDLERS).unwrap();
    let (_hub, url) = serve_with("127.0.0.1:0", &["--handlers-js", file.to_str().unwrap()]);
    let base = http_base(&url);
    let mut browser = Browser::start().await;

    let missing = browser
        .open(&format!("{base}/#key={KEY}&queue=js&bundle=nope&workers=1"))
        .await;
    let notice = browser
        .wait_for(
            &missing,
            "window.taskhub.notice() || null",
            Duration::from_secs(20),
        )
        .await;
    assert!(
        notice
            .as_str()
            .unwrap()
            .contains("serves no worker bundle named \"nope\" (it serves: builtin, shapes)"),
        "{notice}"
    );

    let (page, _) = browser
        .open_worker(&format!("{base}/#key={KEY}&queue=js&workers=2"))
        .await;
    let kinds = browser.eval(&page, "window.taskhub.bundle.kinds").await;
    assert_eq!(
        kinds,
        json!(["boom", "later", "limited", "refuse", "upper"]),
        "the default bundle is the JS one"
    );

    let c = client(&url).await;
    let wait = Some(Duration::from_secs(30));
    let one = |kind: &str, payload: Value, attempts: u32| {
        let opts = PutOptions::new().kind(kind).max_attempts(attempts);
        c.submit_within("js", vec![payload], opts, wait)
    };
    let upper = one("upper", json!("abc"), 1).await.unwrap();
    assert_eq!(upper[0].result, Some(json!("ABC").into()));
    let later = one("later", json!([1, 2]), 1).await.unwrap();
    assert_eq!(
        later[0].result,
        Some(json!({"got": [1, 2], "attempt": 1, "kind": "later"}).into())
    );
    let boom = one("boom", json!(7), 2).await.unwrap();
    assert_eq!(
        boom[0].error.as_deref(),
        Some("gave up after 2 attempt(s): boom on 7")
    );
    let refused = one("refuse", json!({"a": 1}), 5).await.unwrap();
    assert_eq!(
        refused[0].error.as_deref(),
        Some("gave up after 1 attempt(s): cannot use {\"a\":1}"),
        "retry = false dead-letters at once"
    );
    // Its own retry wait (300 ms) rather than the task's backoff of an hour.
    let limited = c
        .submit_within(
            "js",
            vec![json!(null)],
            PutOptions::new()
                .kind("limited")
                .backoff(Duration::from_secs(3600)),
            wait,
        )
        .await
        .unwrap();
    assert_eq!(limited[0].result, Some(json!(2).into()));
    let unknown = one("square", json!(2), 5).await.unwrap();
    let error = unknown[0].error.as_deref().unwrap();
    assert!(
        error.contains("after 1 attempt(s): unknown task kind \"square\"; this worker knows boom, later, limited, refuse, upper"),
        "{error}"
    );
    let status = browser.eval(&page, STATUS).await;
    assert_eq!(
        (status["done"].as_u64(), status["failed"].as_u64()),
        (Some(3), Some(5)),
        "{status}"
    );
    browser.close().await;
}

/// `taskhub serve` with these flags must exit at once with a message containing `said`.
fn refused(args: &[&str], said: &str) {
    let (status, err) = taskhub_tests::serve_exits(args);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(said),
        "serve {args:?} said {err:?}, not {said:?}"
    );
}

#[test]
fn serve_refuses_a_missing_or_malformed_bundle_at_start_up() {
    let dir = scratch("bad-bundles");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    refused(
        &["--worker-bundle", &p("absent")],
        "absent: no such directory",
    );

    std::fs::create_dir_all(dir.join("empty")).unwrap();
    refused(
        &["--worker-bundle", &p("empty")],
        "no taskhub-bundle.json in it",
    );

    std::fs::create_dir_all(dir.join("garbled")).unwrap();
    std::fs::write(dir.join("garbled/taskhub-bundle.json"), "{not json").unwrap();
    refused(
        &["--worker-bundle", &p("garbled")],
        "is not a bundle manifest",
    );

    let manifest = json!({
        "format": 1, "name": "lost", "module": "lost.js", "wasm": "lost_bg.wasm",
        "kinds": [{"kind": "k", "heavy": false}],
    });
    std::fs::create_dir_all(dir.join("lost")).unwrap();
    std::fs::write(dir.join("lost/taskhub-bundle.json"), manifest.to_string()).unwrap();
    std::fs::write(
        dir.join("lost/lost.js"),
        "export function taskhubInstall() {}",
    )
    .unwrap();
    refused(
        &["--worker-bundle", &p("lost")],
        "lost_bg.wasm: cannot read it",
    );
    std::fs::write(dir.join("lost/lost_bg.wasm"), "not wasm").unwrap();
    refused(
        &["--worker-bundle", &p("lost")],
        "lost_bg.wasm: is not a WebAssembly module",
    );
    std::fs::write(
        dir.join("lost/lost.js"),
        "export default function init() {}",
    )
    .unwrap();
    refused(&["--worker-bundle", &p("lost")], "exports no handlers");

    let mut bad_name = manifest.clone();
    bad_name["name"] = json!("Not OK");
    std::fs::write(dir.join("lost/taskhub-bundle.json"), bad_name.to_string()).unwrap();
    refused(&["--worker-bundle", &p("lost")], "bundle name \"Not OK\"");

    refused(
        &["--handlers-js", &p("absent.js")],
        "absent.js: cannot read it",
    );
    std::fs::write(dir.join("quiet.js"), "const x = 1;\n").unwrap();
    refused(
        &["--handlers-js", &p("quiet.js")],
        "quiet.js: exports nothing",
    );
    std::fs::write(dir.join("builtin.js"), "export const f = () => 1;\n").unwrap();
    refused(
        &["--handlers-js", &p("builtin.js")],
        "two worker bundles are named \"builtin\"",
    );
}

const SPIN_HANDLERS: &str = r#"
// A handler that never yields: only stopping its Web Worker can end it early.
export function spin(ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {}
  return "spun";
}
export function upper(payload) {
  return String(payload).toUpperCase();
}
"#;

/// The issue's "done when" for tabs: a running task is cancelled, its Web Worker stopped and
/// replaced, and the tab (one compute thread) takes its next task at once: a JS handler that
/// never yields, and the built-in `sleep` on a tab running the Rust handlers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_in_a_tab_stops_its_web_worker_and_the_tab_goes_on() {
    let dir = scratch("spin-handlers");
    let file = dir.join("spin.js");
    std::fs::write(&file, SPIN_HANDLERS).unwrap();
    let (_hub, url) = serve_with("127.0.0.1:0", &["--handlers-js", file.to_str().unwrap()]);
    if taskhub_tests::on_nats() {
        return; // cancel is refused there: tests/tests/cancel.rs
    }
    let base = http_base(&url);
    let mut browser = Browser::start().await;
    let (js_tab, _) = browser
        .open_worker(&format!("{base}/#key={KEY}&queue=js&workers=1"))
        .await;
    let (rust_tab, _) = browser
        .open_worker(&format!(
            "{base}/#key={KEY}&queue=rs&workers=1&bundle=builtin"
        ))
        .await;
    let c = client(&url).await;
    // The JS tab twice: the second cancel takes the spare Web Worker the first one started.
    for (queue, slow, quick, answer) in [
        (
            "js",
            ("spin", json!(60_000)),
            ("upper", json!("abc")),
            json!("ABC"),
        ),
        (
            "js",
            ("spin", json!(60_000)),
            ("upper", json!("def")),
            json!("DEF"),
        ),
        (
            "rs",
            ("sleep", json!(60_000)),
            ("square", json!(6)),
            json!("6 * 6 = 36"),
        ),
    ] {
        let results = format!("{queue}-results");
        let opts = |kind: &str| PutOptions::new().kind(kind).reply_to(results.as_str());
        let slow_id = c.put(queue, slow.1, opts(slow.0)).await.unwrap();
        let busy = taskhub_tests::eventually(Duration::from_secs(30), || async {
            let stats = c.stats().await.ok()?;
            (stats.queue(queue)?.in_flight == 1).then_some(())
        })
        .await;
        assert!(busy.is_some(), "the tab took the {} task", slow.0);
        // Give the Web Worker the job (the page hands it over on its own turn).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let quick_id = c.put(queue, quick.1, opts(quick.0)).await.unwrap();
        let state = c.cancel(slow_id).await.unwrap();
        assert_eq!(state, taskhub_client::TaskState::Leased);
        let first = c
            .get(&results, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.payload["id"], json!(slow_id.0));
        assert_eq!(first.payload["cancelled"], json!(true));
        // Long before the minute the slow task would take.
        let second = c
            .get(&results, Duration::from_secs(20))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the {queue} tab never ran its next task"));
        assert_eq!(
            (
                second.payload["id"].clone(),
                second.payload["result"].clone()
            ),
            (json!(quick_id.0), answer)
        );
    }
    for (page, times) in [(&js_tab, 2), (&rust_tab, 1)] {
        let status = browser.eval(page, STATUS).await;
        assert_eq!(
            (status["cancelled"].as_u64(), status["done"].as_u64()),
            (Some(times), Some(times)),
            "{status}"
        );
        assert_eq!(status["workers"], 1, "the stopped Web Worker was replaced");
    }
    browser.close().await;
}

const STEP_HANDLERS: &str = r#"
// Works in `n` steps of 300 ms (busy: no await), reporting before each.
export function steps(n, task) {
  for (let i = 0; i < n; i++) {
    task.progress(i / n, `step ${i + 1} of ${n}`);
    const end = Date.now() + 300;
    while (Date.now() < end) {}
  }
  return n;
}
"#;

/// A JS handler in a tab reports progress while it runs: the submitter hears it, and the
/// dashboard shows it on the tab's line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tabs_progress_reaches_the_submitter_and_the_dashboard() {
    let dir = scratch("step-handlers");
    let file = dir.join("steps.js");
    std::fs::write(&file, STEP_HANDLERS).unwrap();
    let (_hub, url) = serve_with("127.0.0.1:0", &["--handlers-js", file.to_str().unwrap()]);
    let base = http_base(&url);
    let mut browser = Browser::start().await;
    let _tab = browser
        .open_worker(&format!("{base}/#key={KEY}&queue=js&workers=1"))
        .await;
    let dash = browser.open(&format!("{base}/dashboard#key={KEY}")).await;
    let c = client(&url).await;
    let mut reports = c.progress();
    let submitted = {
        let c = c.clone();
        tokio::spawn(async move {
            c.submit_within(
                "js",
                vec![json!(6)],
                PutOptions::new().kind("steps"),
                Some(Duration::from_secs(30)),
            )
            .await
        })
    };
    let on_dashboard = browser
        .wait_for(
            &dash,
            "(() => { const t = document.querySelector('#workers td.progress'); return t && /step [2-6] of 6/.test(t.textContent) && t.textContent; })()",
            Duration::from_secs(20),
        )
        .await;
    assert!(
        on_dashboard.as_str().unwrap().contains('%'),
        "{on_dashboard}"
    );
    let replies = submitted.await.unwrap().unwrap();
    assert_eq!(replies[0].result, Some(json!(6).into()));
    let mut heard = Vec::new();
    while let Ok(p) = reports.try_recv() {
        heard.push(p.message.unwrap_or_default());
    }
    assert!(heard.len() >= 5, "{heard:?}");
    assert_eq!(heard[0], "step 1 of 6");
    assert!(heard.contains(&"step 6 of 6".to_string()), "{heard:?}");
    browser.close().await;
}

const LYING_HANDLERS: &str = r#"
// The built-in `sleep` says {"slept_ms": ms} after sleeping; this one lies, and at once, so its
// answer is always the first in.
export function sleep(ms) {
  return { slept_ms: ms + 1 };
}
"#;

/// The issue's redundancy test: a tab returns wrong results on purpose (a JS handler), and
/// first (it does not sleep); two honest `taskhub-worker` processes run the built-in `sleep`.
/// Tasks put with replicas 2, quorum 2 get only right results: the tab is outvoted every time it
/// takes part. (A hub that took the first answer would return the tab's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_tab_is_outvoted_and_no_wrong_result_reaches_results() {
    if !taskhub_tests::embedded_only("redundant tasks") {
        return;
    }
    let dir = scratch("lying-handlers");
    let file = dir.join("liar.js");
    std::fs::write(&file, LYING_HANDLERS).unwrap();
    let (_hub, url) = serve_with("127.0.0.1:0", &["--handlers-js", file.to_str().unwrap()]);
    let base = http_base(&url);
    let mut browser = Browser::start().await;
    let (tab, _) = browser
        .open_worker(&format!("{base}/#key={KEY}&queue=sq&workers=2"))
        .await;
    let _honest: Vec<Proc> = ["honest-a", "honest-b"]
        .into_iter()
        .map(|name| taskhub_tests::worker(&url, "sq", &["--name", name]))
        .collect();
    let c = client(&url).await;
    let ready = taskhub_tests::eventually(Duration::from_secs(30), || async {
        let s = c.stats().await.ok()?;
        (s.queue("sq")?.consumers == 3).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the tab and two workers consume sq");
    let opts = PutOptions::new().kind("sleep").replicas(2, 2);
    let replies = c
        .submit_within(
            "sq",
            (1..=12).map(|n| json!(100 + n)),
            opts,
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    for (n, reply) in (1..=12).zip(&replies) {
        assert_eq!(
            reply.result,
            Some(json!({"slept_ms": 100 + n}).into()),
            "task {n}: {reply:?}"
        );
    }
    let status = browser.eval(&tab, STATUS).await;
    assert!(
        status["done"].as_u64().unwrap() > 0,
        "the tab answered replicas (else this proves nothing): {status}"
    );
    let stats = c.stats().await.unwrap();
    let sq = stats.queue("sq").unwrap();
    assert_eq!((sq.dead, sq.voting), (0, 0));

    // A task that needs four agreeing sessions, with three consuming, waits: the dashboard shows
    // it voting.
    c.put(
        "sq",
        json!(5),
        PutOptions::new().kind("sleep").replicas(4, 4),
    )
    .await
    .unwrap();
    let dash = browser.open(&format!("{base}/dashboard#key={KEY}")).await;
    let row = browser
        .wait_for(
            &dash,
            "(() => { const head = [...document.querySelectorAll('#queues thead th')].map(c => c.textContent); \
               const row = [...document.querySelectorAll('#queues tbody tr')].map(r => [...r.cells].map(c => c.textContent)).find(r => r[0] === 'sq'); \
               return row && row[head.indexOf('voting')] === '1' ? row : null; })()",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(row[0], "sq", "{row}");
    browser.close().await;
}
