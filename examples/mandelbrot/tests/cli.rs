//! The `mandelbrot` binary's own behaviour, without a hub. (This file also makes `cargo test`
//! build the binary, which the end-to-end tests in `tests/tests/bundles.rs` run.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mandelbrot");

#[test]
fn render_without_a_hub_says_which_hub_it_could_not_reach() {
    let out = Command::new(BIN)
        .args(["render", "--hub", "ws://127.0.0.1:1", "--key", "k"])
        .args(["--out", "/nonexistent/never-written.png"])
        .output()
        .unwrap_or_else(|e| panic!("{BIN} runs: {e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("mandelbrot: ") && err.contains("127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn the_three_commands_are_listed() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{BIN} runs: {e}"));
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["worker", "bundle", "render"] {
        assert!(help.contains(command), "{help}");
    }
}
