//! Worker bundles: the code browser tabs run, served by the hub next to the join page.
//!
//! The built-in bundle (`builtin`: the core's handlers, embedded by `build.rs`) is always there
//! when the hub was built with the wasm32 target. `taskhub serve --worker-bundle DIR` adds a Rust
//! bundle (its `taskhub-bundle.json`, JS glue and wasm); `--handlers-js FILE` adds an ES module
//! whose named exports are handlers. Everything is read, checked and held in memory at start-up,
//! so a missing or malformed bundle stops `serve` with a message instead of breaking a page later.
//!
//! A tab chooses a bundle with `bundle=NAME` in the join link's fragment; the page reads
//! `/bundles.json` (the [`Site`]'s index) and starts its compute Web Workers on that module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use taskhub_core::bundle::{MANIFEST_FILE, Manifest, valid_name};
use taskhub_core::handlers::Handlers;

use crate::assets;

/// The name of the embedded bundle; no other bundle may take it.
pub const BUILTIN: &str = "builtin";

/// How a bundle's module runs tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    /// wasm-bindgen glue over a wasm module exporting `taskhubInstall` and `runTask`.
    Wasm,
    /// An ES module whose named exports are handlers.
    Js,
}

/// One bundle, held in memory.
pub struct Bundle {
    pub name: String,
    pub kind: BundleKind,
    /// Task kinds, from the manifest (empty for JS: the page reads the module's exports).
    pub kinds: Vec<String>,
    /// The file the compute Web Workers import.
    pub module: String,
    files: BTreeMap<String, (&'static str, Vec<u8>)>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("kinds", &self.kinds)
            .field("bytes", &self.bytes())
            .finish()
    }
}

/// A bundle that cannot be served. The message names the path and the problem.
#[derive(Debug, thiserror::Error)]
#[error("worker bundle {}: {problem}", path.display())]
pub struct BundleError {
    pub path: PathBuf,
    pub problem: String,
}

fn bad(path: &Path, problem: impl Into<String>) -> BundleError {
    BundleError {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Read a file of at most `max_bytes`.
fn read_capped(path: &Path, max_bytes: usize) -> Result<Vec<u8>, BundleError> {
    let meta = std::fs::metadata(path).map_err(|e| bad(path, format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(bad(path, "is not a file"));
    }
    if meta.len() > max_bytes as u64 {
        return Err(bad(
            path,
            format!("is {} bytes, above the {max_bytes}-byte limit", meta.len()),
        ));
    }
    std::fs::read(path).map_err(|e| bad(path, format!("cannot read it: {e}")))
}

impl Bundle {
    /// Load a Rust bundle directory (what `taskhub_native_worker::bundle::build` wrote). Each file may
    /// be at most `max_bytes`.
    pub fn load_dir(dir: &Path, max_bytes: usize) -> Result<Bundle, BundleError> {
        if !dir.is_dir() {
            return Err(bad(dir, "no such directory"));
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        if !manifest_path.exists() {
            return Err(bad(
                dir,
                format!(
                    "no {MANIFEST_FILE} in it; build a bundle with `cargo run -p YOUR_CRATE -- bundle DIR` \
                     (see the README, \"Your own tasks\")"
                ),
            ));
        }
        let text = read_capped(&manifest_path, 1 << 20)?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| bad(&manifest_path, format!("is not a bundle manifest: {e}")))?;
        manifest
            .validate()
            .map_err(|problem| bad(&manifest_path, problem))?;
        let module = read_capped(&dir.join(&manifest.module), max_bytes)?;
        if !String::from_utf8_lossy(&module).contains("taskhubInstall") {
            return Err(bad(
                &dir.join(&manifest.module),
                "exports no handlers (no taskhubInstall); the crate must call \
                 taskhub_native_worker::browser_bundle!",
            ));
        }
        let wasm = read_capped(&dir.join(&manifest.wasm), max_bytes)?;
        if !wasm.starts_with(b"\0asm") {
            return Err(bad(
                &dir.join(&manifest.wasm),
                "is not a WebAssembly module",
            ));
        }
        let files = BTreeMap::from([
            (manifest.module.clone(), (assets::JS, module)),
            (manifest.wasm.clone(), (assets::WASM, wasm)),
        ]);
        Ok(Bundle {
            name: manifest.name,
            kind: BundleKind::Wasm,
            kinds: manifest.kinds.into_iter().map(|k| k.kind).collect(),
            module: manifest.module,
            files,
        })
    }

    /// Load an ES module of JS handlers; the bundle is named after the file's stem.
    pub fn load_js(file: &Path, max_bytes: usize) -> Result<Bundle, BundleError> {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if !valid_name(&name) {
            return Err(bad(
                file,
                format!(
                    "the bundle is named after the file, and {name:?} is not 1 to 64 bytes of \
                     a-z, 0-9, _ and -; rename the file"
                ),
            ));
        }
        let body = read_capped(file, max_bytes)?;
        let text = std::str::from_utf8(&body).map_err(|_| bad(file, "is not UTF-8 text"))?;
        if !text.contains("export") {
            return Err(bad(
                file,
                "exports nothing; its named exports are the handlers, e.g. \
                 `export function resize(payload) { ... }`",
            ));
        }
        Ok(Bundle {
            name,
            kind: BundleKind::Js,
            kinds: Vec::new(),
            module: "handlers.js".into(),
            files: BTreeMap::from([("handlers.js".to_string(), (assets::JS, body))]),
        })
    }

    /// Bytes held for this bundle.
    pub fn bytes(&self) -> usize {
        self.files.values().map(|(_, b)| b.len()).sum()
    }

    /// This bundle's line in `/bundles.json`.
    fn entry(&self) -> Value {
        let kind = match self.kind {
            BundleKind::Wasm => "wasm",
            BundleKind::Js => "js",
        };
        json!({
            "name": self.name,
            "type": kind,
            "module": format!("bundles/{}/{}", self.name, self.module),
            "kinds": self.kinds,
        })
    }
}

/// What the hub serves over HTTP: the embedded pages and package, the bundles, and their index.
#[derive(Debug)]
pub(crate) struct Site {
    bundles: Vec<Arc<Bundle>>,
    index: Vec<u8>,
}

impl Site {
    pub fn new(bundles: &[Arc<Bundle>]) -> Site {
        let mut entries = Vec::new();
        if assets::BROWSER_WORKER_BUILT {
            let builtins = Handlers::builtins();
            let kinds: Vec<&str> = builtins.kinds().map(|(k, _)| k).collect();
            entries.push(json!({
                "name": BUILTIN, "type": "wasm", "module": "pkg/wasm_worker.js", "kinds": kinds,
            }));
        }
        entries.extend(bundles.iter().map(|b| b.entry()));
        let default = bundles
            .first()
            .map_or(BUILTIN.to_string(), |b| b.name.clone());
        let index = json!({
            "default": default,
            "browser_worker_built": assets::BROWSER_WORKER_BUILT,
            "bundles": entries,
        });
        Site {
            bundles: bundles.to_vec(),
            index: index.to_string().into_bytes(),
        }
    }

    /// The content type and body at a request path (query string removed), if any.
    pub fn lookup(&self, path: &str) -> Option<(&'static str, &[u8])> {
        if path == "/bundles.json" {
            return Some((assets::JSON, &self.index));
        }
        if let Some(rest) = path.strip_prefix("/bundles/") {
            let (name, file) = rest.split_once('/')?;
            let bundle = self.bundles.iter().find(|b| b.name == name)?;
            let (content_type, body) = bundle.files.get(file)?;
            return Some((content_type, body));
        }
        assets::lookup(path).map(|a| (a.content_type, a.body))
    }
}
