//! Turning the crate that uses this SDK into a browser worker bundle (feature `bundle`).
//!
//! ```no_run
//! # fn handlers() -> taskhub_native_worker::Handlers { taskhub_native_worker::Handlers::builtins() }
//! let out = std::path::Path::new("bundle");
//! let manifest = taskhub_native_worker::bundle::build(taskhub_native_worker::this_crate!(), &handlers(), out)?;
//! println!("serve it with: taskhub serve --worker-bundle {}", out.display());
//! # Ok::<(), taskhub_native_worker::bundle::BundleError>(())
//! ```

use std::path::Path;

pub use taskhub_bundle::{BundleError, Crate};
use taskhub_core::bundle::{KindInfo, Manifest};

use crate::Handlers;

/// Build `krate` (its lib must call [`crate::browser_bundle!`]) into a bundle in `out_dir`, named
/// after its package and listing the kinds of `handlers`. Runs cargo for wasm32 (the first build
/// takes a while; it goes to [`taskhub_bundle::default_target_dir`]), then wasm-bindgen
/// in-process.
pub fn build(krate: Crate, handlers: &Handlers, out_dir: &Path) -> Result<Manifest, BundleError> {
    let name = krate.package.to_ascii_lowercase();
    let kinds = handlers
        .kinds()
        .map(|(kind, heavy)| KindInfo {
            kind: kind.to_string(),
            heavy,
        })
        .collect();
    let target_dir = taskhub_bundle::default_target_dir();
    taskhub_bundle::build(&krate, &name, kinds, out_dir, &target_dir)
}

/// The [`Crate`] this macro is called in, for [`build`].
#[macro_export]
macro_rules! this_crate {
    () => {
        $crate::bundle::Crate {
            package: env!("CARGO_PKG_NAME"),
            manifest_dir: env!("CARGO_MANIFEST_DIR"),
        }
    };
}
