//! `--exec CMD`: one child process per task. The payload goes to stdin: its JSON text, or its
//! bytes as they are for a binary payload (`TASKHUB_PAYLOAD` says `json` or `binary`). Stdout is
//! the result: for a binary payload its bytes as they are; otherwise parsed as JSON when it is
//! JSON, else a string when it is UTF-8, else bytes. A non-zero exit fails the task with its
//! stderr. A stderr line `TASKHUB_PROGRESS 0.25 tile 3 of 12` (a fraction from 0 to 1, then an
//! optional message) is a progress report, not part of the stderr kept.

use std::process::Stdio;

use serde_json::Value;
use taskhub_core::Payload;
use taskhub_core::handlers::Failure;
use taskhub_core::worker::Job;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Stderr kept for the failure message.
const MAX_STDERR: usize = 4 << 10;
/// What starts a progress line on a command's stderr.
pub(crate) const PROGRESS_PREFIX: &str = "TASKHUB_PROGRESS ";
/// Longest stderr line looked at as a progress report; longer ones are plain stderr.
const MAX_PROGRESS_LINE: usize = 2 << 10;

/// Read a command's stderr to the end: progress lines go to `report`, the rest is kept (at most
/// `cap` bytes) for the failure message.
async fn read_stderr(
    mut r: impl AsyncRead + Unpin,
    cap: usize,
    report: &(dyn Fn(f64, Option<&str>) + Send + Sync),
) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut line = Vec::new();
    let mut buf = [0u8; 8192];
    let keep = |bytes: &[u8], kept: &mut Vec<u8>| {
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    };
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            line.push(b);
            if b == b'\n' || line.len() > MAX_PROGRESS_LINE {
                if !progress_line(&line, report) {
                    keep(&line, &mut kept);
                }
                line.clear();
            }
        }
    }
    if !progress_line(&line, report) {
        keep(&line, &mut kept);
    }
    kept
}

/// Report `line` if it is a progress line; whether it was.
fn progress_line(line: &[u8], report: &(dyn Fn(f64, Option<&str>) + Send + Sync)) -> bool {
    let Ok(text) = std::str::from_utf8(line) else {
        return false;
    };
    let Some(rest) = text.trim_end().strip_prefix(PROGRESS_PREFIX) else {
        return false;
    };
    let (number, message) = match rest.split_once(' ') {
        Some((n, m)) => (n, Some(m.trim()).filter(|m| !m.is_empty())),
        None => (rest, None),
    };
    match number.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => {
            report(f, message);
            true
        }
        _ => false,
    }
}

/// Read `r` to the end, keeping at most `cap` bytes; says whether more came.
async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut overflow = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, overflow),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                overflow |= n > room;
            }
        }
    }
}

/// Kills a task's whole process group if the task is dropped before its command exits (the
/// worker gave up on it when the grace period ran out). `kill_on_drop` alone reaches only `sh`,
/// and the command's own children would live on.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

pub(crate) async fn run(
    cmd: &str,
    job: &Job,
    max_result: usize,
    report: &(dyn Fn(f64, Option<&str>) + Send + Sync),
) -> Result<Payload, Failure> {
    let (input, sort) = match &job.payload {
        Payload::Bytes(b) => (b.to_vec(), "binary"),
        other => (
            serde_json::to_vec(&other.to_json_lossy()).unwrap_or_default(),
            "json",
        ),
    };
    let mut command = Command::new("sh");
    // Its own process group: a Ctrl-C or a signal to the worker's group (systemd's default stop)
    // reaches only the worker, which then lets running tasks finish within --grace.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command
        .arg("-c")
        .arg(cmd)
        .env("TASKHUB_TASK_ID", job.id.to_string())
        .env("TASKHUB_KIND", job.kind.as_deref().unwrap_or(""))
        .env("TASKHUB_ATTEMPT", job.attempt.to_string())
        .env(
            "TASKHUB_LAST_ERROR",
            job.last_error.as_deref().unwrap_or(""),
        )
        .env("TASKHUB_PAYLOAD", sort)
        // A task's command never sees the worker's credentials: it may run anyone's input.
        .env_remove("TASKHUB_KEY")
        .env_remove("TASKHUB_KEY_ID")
        .env_remove("TASKHUB_KEY_FILE")
        .env_remove("TASKHUB_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::permanent(format!("cannot start --exec command: {e}")))?;
    let mut group = GroupGuard(if cfg!(unix) { child.id() } else { None });
    let stdin = child.stdin.take();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A command that ignores its input closes the pipe early; that is not an error.
            let _ = stdin.write_all(&input).await;
        }
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Failure::retryable("--exec command has no pipes"));
    };
    let ((), (out, out_overflow), err, status) = tokio::join!(
        feed,
        read_capped(stdout, max_result),
        read_stderr(stderr, MAX_STDERR, report),
        child.wait()
    );
    group.0 = None; // it exited by itself
    let status = status.map_err(|e| Failure::retryable(format!("--exec command: {e}")))?;
    if !status.success() {
        let stderr = String::from_utf8_lossy(&err);
        let stderr = stderr.trim();
        let why = if stderr.is_empty() {
            "no stderr"
        } else {
            stderr
        };
        return Err(Failure::retryable(format!(
            "command failed ({status}): {why}"
        )));
    }
    if out_overflow {
        return Err(Failure::retryable(format!(
            "command output exceeds {max_result} bytes"
        )));
    }
    if sort == "binary" {
        return Ok(Payload::from(out));
    }
    Ok(match String::from_utf8(out) {
        Ok(text) => {
            let text = text.trim();
            Payload::Json(
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
            )
        }
        Err(bytes) => Payload::from(bytes.into_bytes()),
    })
}
