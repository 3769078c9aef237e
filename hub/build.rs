//! Builds the browser worker so the hub binary can serve a working join page with no manual step.
//!
//! It runs a nested `cargo build -p wasm-worker --target wasm32-unknown-unknown --release` into a
//! target directory of its own (shared by debug, release and clippy builds, so it compiles once and
//! then only when the core or the browser worker changes), then generates the `--target web` JS
//! glue with `wasm-bindgen-cli-support` into `OUT_DIR/pkg`. `src/assets.rs` embeds the result, so
//! the one `taskhub` binary carries everything it serves.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.parent().unwrap_or(Path::new(".")).to_path_buf();
    for watched in [
        "wasm-worker/src",
        "wasm-worker/Cargo.toml",
        "core/src",
        "core/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let target = out.ancestors().nth(4).unwrap_or(&out).join("wasm-worker");

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "-p", "wasm-worker", "--lib", "--release"])
        .args(["--target", "wasm32-unknown-unknown", "--target-dir"])
        .arg(&target)
        // The outer build's flags and wrappers (clippy, coverage) are for the host, not for wasm.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        // No debug info in the shipped module: it only makes the download bigger.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .status();
    match status {
        Ok(s) if s.success() => {}
        _ => panic!(
            "building the browser worker (wasm-worker for wasm32) failed; \
             is the target installed? run: rustup target add wasm32-unknown-unknown"
        ),
    }
    let wasm = target.join("wasm32-unknown-unknown/release/wasm_worker.wasm");
    let pkg = out.join("pkg");
    let mut bindgen = wasm_bindgen_cli_support::Bindgen::new();
    bindgen
        .input_path(&wasm)
        .typescript(false)
        .out_name("wasm_worker")
        // Let `init()` find the .wasm next to the .js, as the CLI does for `--target web`.
        .omit_default_module_path(false);
    if let Err(e) = bindgen.web(true).and_then(|b| b.generate(&pkg)) {
        panic!("wasm-bindgen could not process {}: {e}", wasm.display());
    }
}
