//! The checks a request passes before any backend acts on it: the same words for the embedded
//! broker and the NATS gateway.

use taskhub_core::{ErrorCode, QueueName, SessionId, TaskId};

use super::{ClientMsg, Failure, MAX_ATTEMPTS_CEILING};

/// Workers send these by the thousand without `req`: success needs no answer then, which halves
/// the hub's traffic to them (errors are always answered). With a ping, they also show that a
/// stalled session is alive.
pub(crate) fn is_worker_traffic(msg: &ClientMsg) -> bool {
    matches!(
        msg,
        ClientMsg::Ack { .. }
            | ClientMsg::Fail { .. }
            | ClientMsg::Release { .. }
            | ClientMsg::Touch { .. }
            | ClientMsg::Progress { .. }
            | ClientMsg::State { .. }
            | ClientMsg::Consume { .. }
    )
}

/// `auth` on a session that has authenticated: the session answers it, never a backend.
pub(crate) fn already_authenticated() -> Failure {
    (
        ErrorCode::BadRequest,
        "this session is already authenticated".into(),
    )
}

/// Tokens are the session's business (it holds the keys); they never reach a backend.
pub(crate) fn token_request() -> Failure {
    (
        ErrorCode::BadRequest,
        "token requests are handled by the session".into(),
    )
}

/// A request that cannot mean anything, with what is wrong with it.
pub(crate) fn bad_request(why: impl Into<String>) -> Failure {
    (ErrorCode::BadRequest, why.into())
}

/// What the NATS backend cannot do: a clear refusal rather than a task run at the wrong time
/// or in the wrong order.
pub(crate) fn unsupported(what: &str) -> Failure {
    (
        ErrorCode::Unsupported,
        format!(
            "{what} is not supported by this hub's NATS JetStream backend; nothing was done (the embedded backend supports it)"
        ),
    )
}

/// A session's inbox is only ever a `reply_to`.
pub(crate) fn not_inbox(name: &QueueName) -> Result<(), Failure> {
    if name.is_inbox() {
        return Err((
            ErrorCode::Forbidden,
            format!("{name} is a session's private reply inbox; use it only as reply_to"),
        ));
    }
    Ok(())
}

/// A put's queue, `reply_to`, attempts and kind; returns the attempts it gets (`default` when it
/// names none).
pub(crate) fn check_put(
    session: SessionId,
    queue: &QueueName,
    reply_to: Option<&QueueName>,
    max_attempts: Option<u32>,
    default: u32,
    kind: Option<&str>,
) -> Result<u32, Failure> {
    not_inbox(queue)?;
    if let Some(r) = reply_to
        && r.is_inbox()
        && *r != QueueName::inbox(session)
    {
        return Err((
            ErrorCode::Forbidden,
            format!("reply_to {r} is another session's inbox; use your own"),
        ));
    }
    let max_attempts = max_attempts.unwrap_or(default);
    if !(1..=MAX_ATTEMPTS_CEILING).contains(&max_attempts) {
        return Err((
            ErrorCode::BadRequest,
            format!("max_attempts must be 1 to {MAX_ATTEMPTS_CEILING}, got {max_attempts}"),
        ));
    }
    if kind.is_some_and(|k| k.is_empty() || k.len() > 128) {
        return Err((ErrorCode::BadRequest, "kind must be 1 to 128 bytes".into()));
    }
    Ok(max_attempts)
}

pub(crate) fn check_dedup_id(id: &str) -> Result<(), Failure> {
    if id.is_empty() || id.len() > 128 {
        return Err((
            ErrorCode::BadRequest,
            "dedup_id must be 1 to 128 bytes".into(),
        ));
    }
    Ok(())
}

/// A `consume`'s queues without repeats, once each is checked, and its prefetch.
pub(crate) fn check_consume(
    queues: Vec<QueueName>,
    prefetch: u32,
    max_prefetch: u32,
) -> Result<Vec<QueueName>, Failure> {
    let mut wanted: Vec<QueueName> = Vec::new();
    for q in queues {
        not_inbox(&q)?;
        if !wanted.contains(&q) {
            wanted.push(q);
        }
    }
    if !wanted.is_empty() && !(1..=max_prefetch).contains(&prefetch) {
        return Err((
            ErrorCode::BadRequest,
            format!("prefetch must be 1 to {max_prefetch}, got {prefetch}"),
        ));
    }
    Ok(wanted)
}

/// An ack, fail, release or touch of a task the session does not hold.
pub(crate) fn not_leased(id: TaskId) -> Failure {
    (
        ErrorCode::UnknownTask,
        format!(
            "task {id} is not leased to this session (already acked, released, or its lease expired)"
        ),
    )
}
