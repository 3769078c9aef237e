//! Dispatch through the `Handlers` registry: a built-in kind, a user's closure doing the same
//! work, and a user's struct handler, against calling the work directly. Every task a worker runs
//! goes through `Handlers::run_task`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use taskhub_core::TaskId;
use taskhub_core::handlers::{Failure, Handler, Handlers, Input, Outcome};

/// The same computation as the built-in `square`.
fn square_like(payload: &Value) -> Result<Outcome, String> {
    let n = payload.as_i64().ok_or("square expects an integer")?;
    let r = i128::from(n) * i128::from(n);
    Ok(Outcome::Done(json!(format!("{n} * {n} = {r}"))))
}

struct SquareStruct;

impl Handler for SquareStruct {
    fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure> {
        square_like(task.json()?).map_err(Failure::retryable)
    }
}

fn handlers(c: &mut Criterion) {
    let registry = Handlers::builtins()
        .light("my_square", square_like)
        .light("my_square_struct", SquareStruct);
    let direct = json!(3411);
    let payload = direct.clone().into();
    c.bench_function("square, called directly", |b| {
        b.iter(|| square_like(black_box(&direct)))
    });
    for kind in ["square", "my_square", "my_square_struct"] {
        c.bench_function(&format!("run_task {kind} through Handlers"), |b| {
            b.iter(|| registry.run_task(TaskId(1), Some(black_box(kind)), &payload, 1, None, None))
        });
    }
}

criterion_group!(benches, handlers);
criterion_main!(benches);
