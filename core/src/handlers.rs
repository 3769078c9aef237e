//! Built-in task handlers, looked up by a task's `kind`. Both workers run exactly these.
//!
//! A handler is a plain function from the payload to an [`Outcome`]. Adding one is a function and a
//! line in [`HANDLERS`]. Handlers must be pure computation: anything that waits (like `sleep`)
//! returns [`Outcome::Wait`] and lets the driver use its own timer, because a browser cannot block.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What a handler produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The task's result.
    Done(Value),
    /// Wait `ms` milliseconds with the driver's timer, then the result is `then`.
    Wait { ms: u64, then: Value },
}

/// A handler function. `Err` is a failure message shown to the user.
pub type HandlerFn = fn(&Value) -> Result<Outcome, String>;

/// A registered handler.
#[derive(Debug, Clone, Copy)]
pub struct Handler {
    pub kind: &'static str,
    pub run: HandlerFn,
    /// Takes real CPU time: drivers run it off their event loop (a blocking pool, a Web Worker).
    /// Light handlers take about a microsecond and may run inline.
    pub heavy: bool,
}

const fn light(kind: &'static str, run: HandlerFn) -> Handler {
    Handler {
        kind,
        run,
        heavy: false,
    }
}

const fn heavy(kind: &'static str, run: HandlerFn) -> Handler {
    Handler {
        kind,
        run,
        heavy: true,
    }
}

/// Every built-in handler. Adding one is a function and a line here; both workers get it.
pub const HANDLERS: &[Handler] = &[
    light("square", square),
    heavy("sha256", sha256),
    heavy("primes", primes),
    light("sleep", sleep),
    light("echo", echo),
    light("fail", fail),
];

/// Largest `n` the `primes` handler accepts (its sieve takes `n` bytes).
pub const MAX_PRIMES_N: u64 = 200_000_000;
/// Longest `sleep`, in milliseconds.
pub const MAX_SLEEP_MS: u64 = 3_600_000;

/// The handler for `kind`, if there is one.
pub fn lookup(kind: &str) -> Option<Handler> {
    HANDLERS.iter().find(|h| h.kind == kind).copied()
}

/// Whether a task of this kind is light enough to run inline on an event loop. Unknown and
/// missing kinds fail at once, so they are light too.
pub fn is_light(kind: Option<&str>) -> bool {
    kind.and_then(lookup).is_none_or(|h| !h.heavy)
}

/// Why a task failed, and whether another attempt could succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// `false` when retrying cannot help (no handler for the kind): the task goes straight to the
    /// dead-letter queue.
    pub retry: bool,
}

impl Failure {
    pub fn retryable(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retry: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retry: false,
        }
    }
}

/// Run the handler for a task's kind. A missing or unknown kind is a permanent failure naming it.
pub fn run(kind: Option<&str>, payload: &Value) -> Result<Outcome, Failure> {
    let kind = kind.ok_or_else(|| {
        Failure::permanent("task has no kind; give one with --kind, or run the worker with --exec")
    })?;
    let handler = lookup(kind).ok_or_else(|| {
        let known: Vec<&str> = HANDLERS.iter().map(|h| h.kind).collect();
        Failure::permanent(format!(
            "unknown task kind {kind:?}; this worker knows {}",
            known.join(", ")
        ))
    })?;
    (handler.run)(payload).map_err(Failure::retryable)
}

fn integer(payload: &Value, what: &str) -> Result<i64, String> {
    match payload {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{what} expects an integer payload, got {payload}"))
}

/// `n` → `"n * n = r"`, as in the seed example.
fn square(payload: &Value) -> Result<Outcome, String> {
    let n = integer(payload, "square")?;
    let r = i128::from(n) * i128::from(n);
    Ok(Outcome::Done(json!(format!("{n} * {n} = {r}"))))
}

/// A string → its SHA-256, lowercase hex.
fn sha256(payload: &Value) -> Result<Outcome, String> {
    let s = payload
        .as_str()
        .ok_or_else(|| format!("sha256 expects a string payload, got {payload}"))?;
    Ok(Outcome::Done(json!(crate::auth::hex(&Sha256::digest(
        s.as_bytes()
    )))))
}

/// `n` → how many primes are below `n`. CPU-heavy on purpose.
fn primes(payload: &Value) -> Result<Outcome, String> {
    let n = integer(payload, "primes")?;
    let n = u64::try_from(n).map_err(|_| format!("primes expects n >= 0, got {n}"))?;
    if n > MAX_PRIMES_N {
        return Err(format!("primes accepts n up to {MAX_PRIMES_N}, got {n}"));
    }
    Ok(Outcome::Done(json!(count_primes_below(n as usize))))
}

/// Sieve of Eratosthenes over odd numbers.
pub fn count_primes_below(n: usize) -> u64 {
    if n <= 2 {
        return 0;
    }
    // index i stands for 2i+1; 1 is not prime.
    let mut composite = vec![false; n / 2];
    let mut count = 1; // the prime 2
    let mut i = 1;
    while i < composite.len() {
        if !composite[i] {
            count += 1;
            let p = 2 * i + 1;
            // `p * p` overflows a 32-bit usize (wasm32) long before the loop ends; past sqrt(n)
            // there is nothing left to strike anyway.
            if p <= (n - 1) / p {
                let mut m = p * p;
                while m < n {
                    composite[m / 2] = true;
                    m += 2 * p;
                }
            }
        }
        i += 1;
    }
    count
}

/// Milliseconds → waits that long, then yields `{"slept_ms": ms}`. For tests and demos.
fn sleep(payload: &Value) -> Result<Outcome, String> {
    let ms = integer(payload, "sleep")?;
    let ms = u64::try_from(ms).map_err(|_| format!("sleep expects ms >= 0, got {ms}"))?;
    if ms > MAX_SLEEP_MS {
        return Err(format!("sleep accepts up to {MAX_SLEEP_MS} ms, got {ms}"));
    }
    Ok(Outcome::Wait {
        ms,
        then: json!({ "slept_ms": ms }),
    })
}

/// The payload, unchanged.
fn echo(payload: &Value) -> Result<Outcome, String> {
    Ok(Outcome::Done(payload.clone()))
}

/// Always fails; the payload (if a string) is the message. For testing retries and dead letters.
fn fail(payload: &Value) -> Result<Outcome, String> {
    Err(match payload.as_str() {
        Some(s) => s.to_string(),
        None => format!("fail handler failed on purpose (payload {payload})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_matches_the_seed() {
        assert_eq!(
            run(Some("square"), &json!(3411)),
            Ok(Outcome::Done(json!("3411 * 3411 = 11634921")))
        );
        assert_eq!(
            run(Some("square"), &json!(i64::MAX)),
            Ok(Outcome::Done(json!(format!(
                "{0} * {0} = 85070591730234615847396907784232501249",
                i64::MAX
            ))))
        );
        let e = run(Some("square"), &json!("x")).unwrap_err();
        assert!(e.message.contains("integer") && e.retry);
    }

    #[test]
    fn primes_counts() {
        assert_eq!(count_primes_below(0), 0);
        assert_eq!(count_primes_below(3), 1);
        assert_eq!(count_primes_below(10), 4);
        assert_eq!(count_primes_below(100), 25);
        assert_eq!(count_primes_below(1_000_000), 78_498);
        assert_eq!(count_primes_below(10_000_000), 664_579);
        assert!(run(Some("primes"), &json!(MAX_PRIMES_N + 1)).is_err());
    }

    #[test]
    fn only_cpu_work_is_heavy() {
        assert!(is_light(Some("square")) && is_light(Some("sleep")) && is_light(None));
        assert!(!is_light(Some("primes")) && !is_light(Some("sha256")));
    }

    #[test]
    fn sha256_is_hex_digest() {
        assert_eq!(
            run(Some("sha256"), &json!("abc")),
            Ok(Outcome::Done(json!(
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            )))
        );
    }

    #[test]
    fn unknown_and_missing_kinds_are_named() {
        let e = run(Some("nope"), &json!(1)).unwrap_err();
        assert!(
            e.message.contains("\"nope\"") && e.message.contains("square"),
            "{e:?}"
        );
        assert!(!e.retry);
        assert!(
            run(None, &json!(1))
                .unwrap_err()
                .message
                .contains("no kind")
        );
        assert_eq!(
            run(Some("fail"), &json!("boom")),
            Err(Failure::retryable("boom"))
        );
        assert_eq!(
            run(Some("sleep"), &json!(5)),
            Ok(Outcome::Wait {
                ms: 5,
                then: json!({"slept_ms": 5})
            })
        );
    }
}
