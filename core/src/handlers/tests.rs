use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::json;

use super::*;

fn run(kind: Option<&str>, payload: &Value) -> Result<Outcome, Failure> {
    Handlers::builtins().run_task(TaskId(1), kind, &payload.clone().into(), 1, None, None)
}

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
    let h = Handlers::builtins();
    assert!(!h.is_heavy(Some("square")) && !h.is_heavy(Some("sleep")) && !h.is_heavy(None));
    assert!(h.is_heavy(Some("primes")) && h.is_heavy(Some("sha256")));
    assert!(!h.is_heavy(Some("nope")));
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
    let none = Handlers::new().run_task(TaskId(1), Some("square"), &json!(2).into(), 1, None, None);
    assert!(none.unwrap_err().message.contains("no kinds at all"));
}

/// A handler with configuration and state, implementing the trait itself.
struct Counter {
    step: u64,
    total: AtomicU64,
}

impl Handler for Counter {
    fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure> {
        let n = task.json()?.as_u64().ok_or("counter expects a number")?;
        let total = self.total.fetch_add(n * self.step, Ordering::Relaxed) + n * self.step;
        Ok(Outcome::Done(
            json!({"total": total, "attempt": task.attempt, "id": task.id, "after": task.last_error}),
        ))
    }
}

#[derive(Deserialize)]
struct Rect {
    w: u32,
    h: u32,
}

fn area(r: Rect) -> Result<u64, Failure> {
    if r.w == 0 || r.h == 0 {
        return Err(Failure::permanent("empty rectangle"));
    }
    Ok(u64::from(r.w) * u64::from(r.h))
}

#[test]
fn user_handlers_hold_state_fail_and_wait() {
    let prefix = String::from("hi");
    let h = Handlers::new()
        .heavy(
            "count",
            Counter {
                step: 10,
                total: AtomicU64::new(0),
            },
        )
        .light("greet", move |p: &Value| json!(format!("{prefix} {p}")))
        .light("flaky", |_: &Value| -> Result<Value, String> {
            Err("try again".into())
        })
        .light("later", |p: &Value| Outcome::Wait {
            ms: 20,
            then: p.clone(),
        })
        .heavy("area", typed(area));
    let t = |kind: &str, payload: Value, attempt| {
        h.run(&Input {
            id: TaskId(7),
            kind,
            payload: &payload.into(),
            attempt,
            last_error: (attempt > 1).then_some("it broke"),
            session: None,
            cancellation: None,
            reporter: None,
        })
    };
    assert_eq!(
        t("count", json!(2), 1),
        Ok(Outcome::Done(
            json!({"total": 20, "attempt": 1, "id": 7, "after": null})
        ))
    );
    assert_eq!(
        t("count", json!(3), 2),
        Ok(Outcome::Done(
            json!({"total": 50, "attempt": 2, "id": 7, "after": "it broke"})
        )),
        "state carries over between tasks"
    );
    assert_eq!(
        t("count", json!("x"), 1),
        Err(Failure::retryable("counter expects a number"))
    );
    assert_eq!(
        t("greet", json!("bob"), 1),
        Ok(Outcome::Done(json!("hi \"bob\"")))
    );
    assert_eq!(
        t("flaky", json!(null), 1),
        Err(Failure::retryable("try again"))
    );
    assert_eq!(
        t("later", json!(5), 1),
        Ok(Outcome::Wait {
            ms: 20,
            then: json!(5)
        })
    );
    assert_eq!(
        t("area", json!({"w": 3, "h": 4}), 1),
        Ok(Outcome::Done(json!(12)))
    );
    assert_eq!(
        t("area", json!({"w": 0, "h": 4}), 1),
        Err(Failure::permanent("empty rectangle"))
    );
    let bad = t("area", json!({"w": "wide"}), 1).unwrap_err();
    assert!(
        !bad.retry && bad.message.starts_with("area got a payload it cannot read"),
        "{bad:?}"
    );
    assert!(h.is_heavy(Some("count")) && !h.is_heavy(Some("greet")));
}

#[test]
fn builtins_are_one_set_to_include_or_leave_out() {
    let mine = Handlers::new().light("echo", |_: &Value| json!("mine"));
    let with = mine.clone().include(Handlers::builtins());
    let kinds: Vec<&str> = with.kinds().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        ["echo", "fail", "primes", "sha256", "sleep", "square"]
    );
    // Included later, the built-in echo replaces mine; registered later, mine replaces it.
    let echo = |h: &Handlers| h.run_task(TaskId(1), Some("echo"), &json!(1).into(), 1, None, None);
    assert_eq!(echo(&with), Ok(Outcome::Done(json!(1))));
    let over = Handlers::builtins().include(mine.clone());
    assert_eq!(echo(&over), Ok(Outcome::Done(json!("mine"))));
    let without = Handlers::builtins().without("primes");
    assert_eq!(without.kinds().count(), 5);
    assert_eq!(format!("{mine:?}"), r#"{"echo": "light"}"#);
}

#[test]
#[should_panic(expected = "a task kind must be 1 to 128 bytes")]
fn an_empty_kind_is_refused_at_registration() {
    let _ = Handlers::new().light("", |p: &Value| p.clone());
}

/// A handler that works in steps and stops at the first step after a cancel.
struct Steps;

impl Handler for Steps {
    fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure> {
        let mut done = 0;
        for _ in 0..1_000 {
            if task.is_cancelled() {
                return Err(Failure::permanent(format!("stopped after {done} steps")));
            }
            done += 1;
        }
        Ok(Outcome::Done(json!(done)))
    }
}

#[test]
fn a_handler_sees_its_jobs_cancellation() {
    let h = Handlers::new().heavy("steps", Steps);
    let job = crate::worker::Job {
        token: 1,
        id: TaskId(3),
        kind: Some("steps".into()),
        payload: json!(null).into(),
        attempt: 1,
        last_error: None,
        session: None,
    };
    let flag = Cancellation::new();
    assert_eq!(
        h.run_job(&job, &flag, None),
        Ok(Outcome::Done(json!(1_000)))
    );
    flag.cancel();
    assert_eq!(
        h.run_job(&job, &flag, None),
        Err(Failure::permanent("stopped after 0 steps"))
    );
    // Without a flag (run_task: the browser's path) it is never cancelled.
    let payload = json!(null).into();
    assert_eq!(
        h.run_task(TaskId(3), Some("steps"), &payload, 1, None, None),
        Ok(Outcome::Done(json!(1_000)))
    );
}

#[test]
fn progress_reports_reach_the_reporter_clamped_and_cut() {
    struct Counts;
    impl Handler for Counts {
        fn run(&self, task: &Input<'_>) -> Result<Outcome, Failure> {
            task.progress(0.5, Some("half"));
            task.progress(7.0, None);
            task.progress(f64::NAN, Some("ignored"));
            task.progress(-1.0, Some(&"é".repeat(600)));
            Ok(Outcome::Done(json!("done")))
        }
    }
    let h = Handlers::new().light("counts", Counts);
    let job = crate::worker::Job {
        token: 1,
        id: TaskId(3),
        kind: Some("counts".into()),
        payload: json!(null).into(),
        attempt: 1,
        last_error: None,
        session: None,
    };
    let seen = std::sync::Mutex::new(Vec::new());
    let report = |f: f64, m: Option<&str>| {
        seen.lock().unwrap().push((f, m.map(str::len)));
    };
    let flag = Cancellation::new();
    h.run_job(&job, &flag, Some(Reporter(&report))).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(0.5, Some(4)), (1.0, None), (0.0, Some(1024))],
        "clamped to 0..1, NaN dropped, the message cut at a character boundary"
    );
    // Without a reporter (a handler run outside a worker) a report goes nowhere.
    assert!(h.run_job(&job, &flag, None).is_ok());
}
