//! Builds the browser worker so the hub binary can serve a working join page with no manual step.
//!
//! `taskhub_bundle::compile` runs a nested `cargo build -p taskhub-wasm-worker --target
//! wasm32-unknown-unknown --release` into a target directory of its own (shared by debug, release
//! and clippy builds, so it compiles once and then only when the core or the browser worker
//! changes); `taskhub_bundle::bindgen` generates the `--target web` JS glue into `OUT_DIR/pkg`.
//! `src/assets.rs` embeds the result, so the one `taskhub` binary carries everything it serves.
//!
//! Without the wasm32 target the hub still builds: one cargo warning says how to add it, and the
//! join page says browser workers are not built in (`TASKHUB_BROWSER_WORKER=missing`).

use std::env;
use std::path::{Path, PathBuf};

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
    let pkg = out.join("pkg");
    if !taskhub_bundle::target_installed() {
        placeholder(&pkg);
        // Build again once the target appears (cargo reruns a script whose watched path is
        // missing on every build, so this costs a check per build until then).
        if let Some(dir) = taskhub_bundle::target_dir_in_sysroot() {
            println!("cargo:rerun-if-changed={}", dir.join("lib").display());
        }
        println!(
            "cargo:warning=browser workers are not built in: the wasm32 target is missing. \
             Run `rustup target add {}` (or `rustup toolchain install`), then build again.",
            taskhub_bundle::WASM_TARGET
        );
        println!("cargo:rustc-env=TASKHUB_BROWSER_WORKER=missing");
        return;
    }
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let target = out.ancestors().nth(4).unwrap_or(&out).join("wasm-worker");
    let wasm = match taskhub_bundle::compile("taskhub-wasm-worker", &root, &target) {
        Ok(w) => w,
        Err(e) => panic!("building the browser worker failed: {e}"),
    };
    if let Err(e) = taskhub_bundle::bindgen(&wasm, "wasm_worker", &pkg) {
        panic!("{e}");
    }
    println!("cargo:rustc-env=TASKHUB_BROWSER_WORKER=built");
}

/// Stand-ins for the package, so the binary builds and the join page explains itself.
fn placeholder(pkg: &Path) {
    let js = r#"// This hub was built without the browser worker: every entry point says so.
const why = "this hub was built without browser workers (the wasm32 target was missing). On the hub machine run `rustup target add wasm32-unknown-unknown`, rebuild taskhub, restart it and reload this page";
export default async function init() { throw new Error(why); }
export class BrowserWorker { constructor() { throw new Error(why); } }
export class HubMonitor { constructor() { throw new Error(why); } }
export function runTask() { throw new Error(why); }
"#;
    let written = std::fs::create_dir_all(pkg)
        .and_then(|()| std::fs::write(pkg.join("wasm_worker.js"), js))
        .and_then(|()| std::fs::write(pkg.join("wasm_worker_bg.wasm"), b""));
    if let Err(e) = written {
        panic!("cannot write {}: {e}", pkg.display());
    }
}
