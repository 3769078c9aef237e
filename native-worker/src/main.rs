//! `taskhub-worker`: run tasks from a taskhub hub on this machine, with the built-in handlers.
//! A worker for your own task kinds is this same file with your `Handlers`.

use taskhub_native_worker::Handlers;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    taskhub_native_worker::main(Handlers::builtins())
}
