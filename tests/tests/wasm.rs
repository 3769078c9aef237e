//! Runs the browser worker's own tests (`wasm-worker/tests/web.rs`) with
//! `wasm-pack test --headless --chrome` in real headless Chromium, against a real hub started here.

use std::path::PathBuf;
use std::process::Command;

use taskhub_tests::{KEY, hub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_pack_browser_tests_pass_against_a_real_hub() {
    let hub = hub(|_| {}).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // A target dir of its own: the outer `cargo test` still holds the main one.
    let mut target = std::env::current_exe().unwrap();
    for _ in 0..3 {
        target.pop();
    }
    let target = target.join("wasm-pack-tests");
    let chromedriver =
        std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let url = hub.url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("wasm-pack")
            .current_dir(&root)
            .args([
                "test",
                "--headless",
                "--chrome",
                "--chromedriver",
                &chromedriver,
            ])
            .args(["--mode", "no-install", "wasm-worker"])
            .env("CARGO_TARGET_DIR", &target)
            .env("CHROMEDRIVER", &chromedriver)
            .env("TASKHUB_TEST_HUB", &url)
            .env("TASKHUB_TEST_KEY", KEY)
            .env("WASM_BINDGEN_TEST_TIMEOUT", "60")
            .output()
            .expect("wasm-pack runs (install: cargo install wasm-pack --version =0.15.1 --locked)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "wasm-pack test failed:\n{stdout}\n{stderr}"
    );
    let summary = stdout
        .lines()
        .chain(stderr.lines())
        .find(|l| l.starts_with("test result: ok."))
        .unwrap_or_else(|| panic!("no test summary:\n{stdout}\n{stderr}"));
    assert!(summary.contains(" 5 passed; 0 failed"), "{summary}");
    eprintln!("wasm-pack: {summary}");
    hub.stop().await;
}
