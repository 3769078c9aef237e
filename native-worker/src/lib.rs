//! taskhub's worker SDK: write task handlers once, run them in native workers and browser tabs.
//!
//! A crate of your own declares its [`Handlers`] in one function. Natively, [`main`] (or
//! [`WorkerArgs`] inside your own command line) runs them as a worker with every flag of
//! `taskhub-worker`. Compiled to wasm32, [`browser_bundle!`] exports the same handlers to the
//! browser worker, and `bundle::build` (feature `bundle`) turns the crate into a worker bundle
//! that `taskhub serve --worker-bundle DIR` serves to tabs.
//!
//! ```no_run
//! // src/lib.rs
//! use serde_json::{Value, json};
//! use taskhub_native_worker::Handlers;
//!
//! fn shout(payload: &Value) -> Result<Value, String> {
//!     let text = payload.as_str().ok_or("shout expects a string")?;
//!     Ok(json!(text.to_uppercase()))
//! }
//!
//! pub fn handlers() -> Handlers {
//!     Handlers::new().light("shout", shout)
//! }
//!
//! taskhub_native_worker::browser_bundle!(handlers());
//!
//! // src/main.rs
//! fn main() -> std::process::ExitCode {
//!     taskhub_native_worker::main(handlers())
//! }
//! ```
//!
//! `taskhub-worker` itself is that `main` with [`Handlers::builtins`].
//!
//! # Layout
//!
//! - `driver`: [`run`], the event loop around [`taskhub_core::worker::Worker`]: it moves frames,
//!   keeps the timer, and runs tasks (light handlers inline, heavy ones on tokio's blocking pool,
//!   or an external command with `--exec`).
//! - `cli`: [`WorkerArgs`], the flags, and [`main`].
//! - `exec`: running one task as a child process, payload on stdin, result on stdout.
//! - `bundle` (feature `bundle`): building the crate's browser worker bundle.

pub use taskhub_core::duration::HumanDuration;
pub use taskhub_core::handlers::{
    AnyPayload, Binary, Cancellation, Failure, Handler, Handlers, Input, IntoOutcome, Outcome,
    Reporter, Typed, any_payload, binary, typed,
};
pub use taskhub_core::worker::{Job, WorkerConfig};
pub use taskhub_core::{Payload, SessionId, TaskId};

#[cfg(not(target_arch = "wasm32"))]
mod cli;
#[cfg(not(target_arch = "wasm32"))]
mod driver;
#[cfg(not(target_arch = "wasm32"))]
mod exec;
#[cfg(not(target_arch = "wasm32"))]
pub mod settings;

#[cfg(all(feature = "bundle", not(target_arch = "wasm32")))]
pub mod bundle;

#[cfg(not(target_arch = "wasm32"))]
pub use cli::{ArgsError, LogFormat, WorkerArgs, init_logging, init_logging_as, main, main_from};
#[cfg(not(target_arch = "wasm32"))]
pub use driver::{Options, run};

/// Export `handlers` (an expression giving [`Handlers`]) to the browser worker when this crate is
/// compiled to wasm32; natively it expands to nothing. Call it once, in the crate's `lib.rs`, and
/// give the crate `crate-type = ["cdylib", "rlib"]`.
///
/// The browser's compute Web Workers call the exported `taskhubInstall` once after loading the
/// module; from then on they run these handlers instead of the built-in ones.
#[macro_export]
macro_rules! browser_bundle {
    ($handlers:expr) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        pub fn __taskhub_handlers() -> $crate::Handlers {
            $handlers
        }

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        pub mod __taskhub_bundle {
            use $crate::__private::wasm_bindgen as wb;
            use $crate::__private::wasm_bindgen::prelude::wasm_bindgen;

            #[wasm_bindgen(js_name = taskhubInstall, wasm_bindgen = wb)]
            pub fn install() {
                $crate::__private::taskhub_wasm_worker::install(super::__taskhub_handlers());
            }
        }
    };
}

/// What [`browser_bundle!`] expands to refers to; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use {taskhub_wasm_worker, wasm_bindgen};
}
