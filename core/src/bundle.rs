//! The worker bundle manifest: what `taskhub_native_worker::bundle::build` writes next to a bundle's
//! wasm and JS glue, and what `taskhub serve --worker-bundle DIR` reads and checks at start-up.
//!
//! A bundle directory holds [`MANIFEST_FILE`], the ES module named by `module` (wasm-bindgen's
//! `--target web` glue) and the wasm named by `wasm`. The module's default export initialises the
//! wasm; the browser's compute Web Workers then call its exports `taskhubInstall()` once and
//! `runTask(kind, payloadJson, id, attempt, session)` per task.

use serde::{Deserialize, Serialize};

/// The manifest's file name inside a bundle directory.
pub const MANIFEST_FILE: &str = "taskhub-bundle.json";
/// The manifest format this build reads and writes.
pub const FORMAT: u32 = 1;
/// Longest bundle name.
pub const MAX_NAME_BYTES: usize = 64;

/// One task kind a bundle runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindInfo {
    pub kind: String,
    /// Takes real CPU time (informational in the browser, where every task runs in a Web Worker).
    pub heavy: bool,
}

/// `taskhub-bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// Chosen in a join link with `bundle=NAME`.
    pub name: String,
    /// The ES module (JS glue) file, in the same directory.
    pub module: String,
    /// The WebAssembly file, in the same directory.
    pub wasm: String,
    pub kinds: Vec<KindInfo>,
}

/// Whether `name` can name a bundle: 1–64 bytes of `a-z 0-9 _ -`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether `file` is a plain file name in the bundle directory (no path, nothing hidden).
fn plain_file(file: &str) -> bool {
    !file.is_empty()
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Manifest {
    /// Check every field; the error names the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "manifest format {} is not {FORMAT}; rebuild the bundle with this taskhub",
                self.format
            ));
        }
        if !valid_name(&self.name) {
            return Err(format!(
                "bundle name {:?} must be 1 to {MAX_NAME_BYTES} bytes of a-z, 0-9, _ and -",
                self.name
            ));
        }
        if !plain_file(&self.module) || !self.module.ends_with(".js") {
            return Err(format!(
                "module {:?} must be a .js file name in the bundle directory",
                self.module
            ));
        }
        if !plain_file(&self.wasm) || !self.wasm.ends_with(".wasm") {
            return Err(format!(
                "wasm {:?} must be a .wasm file name in the bundle directory",
                self.wasm
            ));
        }
        if self.kinds.is_empty() {
            return Err("the bundle lists no task kinds".into());
        }
        if let Some(k) = self
            .kinds
            .iter()
            .find(|k| k.kind.is_empty() || k.kind.len() > crate::handlers::MAX_KIND_BYTES)
        {
            return Err(format!("task kind {:?} is not 1 to 128 bytes", k.kind));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            name: "mandelbrot".into(),
            module: "mandelbrot.js".into(),
            wasm: "mandelbrot_bg.wasm".into(),
            kinds: vec![KindInfo {
                kind: "mandelbrot_tile".into(),
                heavy: true,
            }],
        }
    }

    #[test]
    fn a_good_manifest_passes_and_each_bad_field_is_named() {
        assert_eq!(manifest().validate(), Ok(()));
        type Spoil = fn(&mut Manifest);
        let cases: [(Spoil, &str); 6] = [
            (|m| m.format = 9, "format 9"),
            (|m| m.name = "Big Name".into(), "bundle name"),
            (|m| m.module = "../x.js".into(), "module"),
            (|m| m.wasm = "x.js".into(), "wasm"),
            (|m| m.kinds.clear(), "no task kinds"),
            (|m| m.kinds[0].kind = String::new(), "task kind"),
        ];
        for (spoil, named) in cases {
            let mut m = manifest();
            spoil(&mut m);
            let e = m.validate().unwrap_err();
            assert!(e.contains(named), "{e} should name {named}");
        }
    }
}
