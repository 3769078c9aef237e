//! Building browser worker bundles without wasm-pack, npm or the wasm-bindgen CLI.
//!
//! [`compile`] runs a nested `cargo build --lib --release --target wasm32-unknown-unknown` of one
//! package into a target directory of its own; [`bindgen`] generates the `--target web` JS glue
//! with the `wasm-bindgen-cli-support` crate (pinned to the same version as `wasm-bindgen`);
//! [`build`] does both for a crate that uses `taskhub_native_worker::browser_bundle!` and writes its
//! [`Manifest`]. The hub's `build.rs` uses the first two for the built-in worker.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use taskhub_core::bundle::{FORMAT, KindInfo, MANIFEST_FILE, Manifest, valid_name};

/// The Rust target browser workers are compiled for.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Why a bundle could not be built. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The toolchain has no wasm32 standard library.
    #[error(
        "the {WASM_TARGET} target is not installed for this toolchain; run: rustup target add {WASM_TARGET}"
    )]
    NoTarget,
    /// Cargo could not be started, or the crate did not compile for wasm32 (its output says why).
    #[error("building {package} for {WASM_TARGET} failed: {reason}")]
    Compile { package: String, reason: String },
    /// wasm-bindgen could not process the module.
    #[error("wasm-bindgen could not process {path}: {reason}")]
    Bindgen { path: PathBuf, reason: String },
    /// The crate compiled, but does not export its handlers to the browser.
    #[error(
        "{package}'s wasm exports no handlers: add `taskhub_native_worker::browser_bundle!(your_handlers())` to its lib.rs, and `crate-type = [\"cdylib\", \"rlib\"]` to its [lib]"
    )]
    NoHandlers { package: String },
    #[error("bad bundle: {0}")]
    Invalid(String),
    #[error("cannot write the bundle to {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the wasm32 standard library of the toolchain that `rustc` (or `$RUSTC`) runs is, or
/// would be once the target is added; `None` if `rustc` cannot be asked.
pub fn target_dir_in_sysroot() -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Some(sysroot.join("lib/rustlib").join(WASM_TARGET))
}

/// Whether that toolchain has the wasm32 standard library.
pub fn target_installed() -> bool {
    target_dir_in_sysroot().is_some_and(|d| d.join("lib").is_dir())
}

/// Build `package`'s library for wasm32 (release, no debug info) in `target_dir`, running cargo
/// in `workspace_dir`. Returns the `.wasm` file.
pub fn compile(
    package: &str,
    workspace_dir: &Path,
    target_dir: &Path,
) -> Result<PathBuf, BundleError> {
    if !target_installed() {
        return Err(BundleError::NoTarget);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let status = Command::new(cargo)
        .current_dir(workspace_dir)
        .args([
            "build",
            "-p",
            package,
            "--lib",
            "--release",
            "--target",
            WASM_TARGET,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        // An outer build's flags and wrappers (clippy, coverage) are for the host, not for wasm.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        // No debug info in a module every tab downloads.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .status()
        .map_err(|e| BundleError::Compile {
            package: package.into(),
            reason: format!("cannot run cargo: {e}"),
        })?;
    if !status.success() {
        return Err(BundleError::Compile {
            package: package.into(),
            reason: format!("cargo exited with {status}; its errors are above"),
        });
    }
    let lib = package.replace('-', "_");
    Ok(target_dir
        .join(WASM_TARGET)
        .join("release")
        .join(format!("{lib}.wasm")))
}

/// Generate wasm-bindgen's `--target web` output for `wasm` into `out_dir`: `<out_name>.js` and
/// `<out_name>_bg.wasm`.
pub fn bindgen(wasm: &Path, out_name: &str, out_dir: &Path) -> Result<(), BundleError> {
    let mut b = wasm_bindgen_cli_support::Bindgen::new();
    b.input_path(wasm)
        .typescript(false)
        .out_name(out_name)
        // Let `init()` find the .wasm next to the .js, as the CLI does for `--target web`.
        .omit_default_module_path(false);
    b.web(true)
        .and_then(|b| b.generate(out_dir))
        .map_err(|e| BundleError::Bindgen {
            path: wasm.to_path_buf(),
            reason: format!("{e:#}"),
        })
}

/// A crate to bundle: its package name and its directory (`env!("CARGO_PKG_NAME")` and
/// `env!("CARGO_MANIFEST_DIR")` of that crate; `taskhub_native_worker::this_crate!()` fills them in).
#[derive(Debug, Clone)]
pub struct Crate {
    pub package: &'static str,
    pub manifest_dir: &'static str,
}

/// Where nested wasm32 builds go: `$CARGO_TARGET_DIR/wasm-bundle`, else next to the running
/// binary's own target directory (`target/wasm-bundle` for `cargo run`), else a temp directory.
pub fn default_target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("wasm-bundle");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("wasm-bundle")))
        .unwrap_or_else(|| std::env::temp_dir().join("taskhub-wasm-bundle"))
}

/// Build `krate` into a worker bundle named `name` in `out_dir`, listing `kinds`: compile it for
/// wasm32 in `target_dir` (see [`default_target_dir`]), generate the JS glue, check that it
/// exports its handlers, write the manifest.
pub fn build(
    krate: &Crate,
    name: &str,
    kinds: Vec<KindInfo>,
    out_dir: &Path,
    target_dir: &Path,
) -> Result<Manifest, BundleError> {
    if !valid_name(name) {
        return Err(BundleError::Invalid(format!(
            "bundle name {name:?} must be 1 to 64 bytes of a-z, 0-9, _ and -"
        )));
    }
    let wasm = compile(krate.package, Path::new(krate.manifest_dir), target_dir)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Io { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let out_name = name.replace('-', "_");
    bindgen(&wasm, &out_name, out_dir)?;
    let manifest = Manifest {
        format: FORMAT,
        name: name.to_string(),
        module: format!("{out_name}.js"),
        wasm: format!("{out_name}_bg.wasm"),
        kinds,
    };
    manifest.validate().map_err(BundleError::Invalid)?;
    let glue_path = out_dir.join(&manifest.module);
    let glue = std::fs::read_to_string(&glue_path).map_err(io(&glue_path))?;
    if !glue.contains("taskhubInstall") {
        return Err(BundleError::NoHandlers {
            package: krate.package.into(),
        });
    }
    let path = out_dir.join(MANIFEST_FILE);
    let text =
        serde_json::to_string_pretty(&manifest).map_err(|e| BundleError::Invalid(e.to_string()))?;
    std::fs::write(&path, text + "\n").map_err(io(&path))?;
    Ok(manifest)
}
