//! The built-in kinds, [`Handlers::builtins`]. They are ordinary handlers: a user's worker
//! includes them or leaves them out.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Handlers, Outcome, any_payload};
use crate::body::{Body, Payload};

/// Largest `n` the `primes` handler accepts (its sieve takes `n` bytes).
pub const MAX_PRIMES_N: u64 = 200_000_000;
/// Longest `sleep`, in milliseconds.
pub const MAX_SLEEP_MS: u64 = 3_600_000;

pub(super) fn handlers() -> Handlers {
    Handlers::new()
        .light("square", square)
        .heavy("sha256", any_payload(sha256))
        .heavy("primes", primes)
        .light("sleep", sleep)
        .light("echo", any_payload(echo))
        .light("fail", fail)
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

/// A string (its UTF-8) or bytes → their SHA-256, lowercase hex.
fn sha256(payload: &Payload) -> Result<Outcome, String> {
    let bytes = match payload {
        Body::Json(Value::String(s)) => s.as_bytes(),
        Body::Bytes(b) => b,
        other => {
            let got = other.to_json_lossy();
            return Err(format!(
                "sha256 expects a string or binary payload, got {got}"
            ));
        }
    };
    Ok(Outcome::Done(json!(crate::auth::hex(&Sha256::digest(
        bytes
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

/// The payload, unchanged: JSON as JSON, bytes as bytes.
fn echo(payload: &Payload) -> Payload {
    payload.clone()
}

/// Always fails; the payload (if a string) is the message. For testing retries and dead letters.
fn fail(payload: &Value) -> Result<Outcome, String> {
    Err(match payload.as_str() {
        Some(s) => s.to_string(),
        None => format!("fail handler failed on purpose (payload {payload})"),
    })
}
