//! `--exec CMD`: one child process per task. The payload goes to stdin: its JSON text, or its
//! bytes as they are for a binary payload (`TASKHUB_PAYLOAD` says `json` or `binary`). Stdout is
//! the result: for a binary payload its bytes as they are; otherwise parsed as JSON when it is
//! JSON, else a string when it is UTF-8, else bytes. A non-zero exit fails the task with its
//! stderr.

use std::process::Stdio;

use serde_json::Value;
use taskhub_core::Payload;
use taskhub_core::handlers::Failure;
use taskhub_core::worker::Job;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Stderr kept for the failure message.
const MAX_STDERR: usize = 4 << 10;

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

pub(crate) async fn run(cmd: &str, job: &Job, max_result: usize) -> Result<Payload, Failure> {
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
    let ((), (out, out_overflow), (err, _), status) = tokio::join!(
        feed,
        read_capped(stdout, max_result),
        read_capped(stderr, MAX_STDERR),
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
