//! `taskhub put`: tasks onto a queue, each id printed as the hub confirms it.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use taskhub_client::PutOptions;
use taskhub_core::Payload;
use taskhub_core::duration::HumanDuration;

use crate::{Cli, connect, parse_json};

#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    #[command(flatten)]
    tasks: TaskArgs,
    /// Queue that receives {id, ok, result | error} when each task ends.
    #[arg(long)]
    reply_to: Option<String>,
    /// Deliveries before a task goes to <queue>.dead [default: the hub's].
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Make the put safe to retry: task i carries the dedup id PREFIX<i>, and the hub stores
    /// each dedup id once within its dedup window. Rerun a failed put with the same prefix.
    #[arg(long, value_name = "PREFIX")]
    dedup_prefix: Option<String>,
}

/// What `put` and `submit` share: where, what, and which handler.
#[derive(Debug, Args)]
pub(crate) struct TaskArgs {
    /// Queue to put the tasks on.
    pub(crate) queue: String,
    /// Payloads, one task each, as JSON (strings need quotes: '"text"'); with --binary, files
    /// whose bytes are the payloads (- for stdin).
    #[arg(required = true)]
    pub(crate) payloads: Vec<String>,
    /// Which handler runs the tasks (square, sha256, primes, sleep, echo, fail, or your own).
    #[arg(long)]
    pub(crate) kind: Option<String>,
    /// The payloads are files sent as bytes (binary frames, no base64), not JSON.
    #[arg(long)]
    pub(crate) binary: bool,
    /// 0 to 9: ready tasks of higher priority are delivered first; FIFO within a priority.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub(crate) priority: u8,
    /// Ready this long after the hub stores them, not before (500ms, 30s, 5m, 2h).
    #[arg(long, value_name = "DURATION", conflicts_with = "at")]
    pub(crate) delay: Option<HumanDuration>,
    /// Ready at this time, not before: RFC 3339 (2026-12-01T18:30:00Z, or with an offset such
    /// as +01:00).
    #[arg(long, value_name = "TIME", value_parser = unix_ms_of)]
    pub(crate) at: Option<u64>,
    /// A failed attempt is retried after this long, doubling each time (with jitter) up to
    /// --backoff-max; 0 retries at once [default: the hub's --retry-backoff].
    #[arg(long, value_name = "DURATION")]
    pub(crate) backoff: Option<HumanDuration>,
    /// The longest a retry waits [default: the hub's --retry-backoff-max].
    #[arg(long, value_name = "DURATION")]
    pub(crate) backoff_max: Option<HumanDuration>,
}

impl TaskArgs {
    /// Put options with this `--kind`, `--priority`, `--delay` or `--at`.
    pub(crate) fn options(&self) -> PutOptions {
        let mut opts = PutOptions::new().priority(self.priority);
        if let Some(kind) = &self.kind {
            opts = opts.kind(kind);
        }
        if let Some(delay) = self.delay {
            opts = opts.delay(delay.0);
        }
        if let Some(at) = self.at {
            opts = opts.not_before(UNIX_EPOCH + Duration::from_millis(at));
        }
        if let Some(first) = self.backoff {
            opts = opts.backoff(first.0);
        }
        if let Some(max) = self.backoff_max {
            opts = opts.backoff_max(max.0);
        }
        opts
    }

    pub(crate) fn payloads(&self) -> anyhow::Result<Vec<Payload>> {
        self.payloads
            .iter()
            .map(|p| match self.binary {
                false => parse_json(p).map(Payload::Json),
                true if p == "-" => {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                        .context("cannot read the payload from stdin")?;
                    Ok(Payload::from(bytes))
                }
                true => std::fs::read(p)
                    .map(Payload::from)
                    .with_context(|| format!("cannot read payload file {p}")),
            })
            .collect()
    }
}

pub(crate) async fn run(cli: &Cli, args: &PutArgs) -> anyhow::Result<()> {
    let PutArgs {
        tasks,
        reply_to,
        max_attempts,
        dedup_prefix,
    } = args;
    let mut out = std::io::stdout().lock();
    let payloads = tasks.payloads()?;
    let mut opts = tasks.options();
    if let Some(reply_to) = reply_to {
        opts = opts.reply_to(reply_to);
    }
    if let Some(attempts) = max_attempts {
        opts = opts.max_attempts(*attempts);
    }
    if let Some(prefix) = dedup_prefix {
        opts = opts.dedup_prefix(prefix);
    }
    let client = connect(cli).await?;
    // Each id is printed as soon as the hub confirms its task, so a connection lost part
    // way leaves a true list of what the hub holds.
    let (total, mut confirmed) = (payloads.len(), 0);
    let mut printed = Ok(());
    let sent = client
        .put_each(&tasks.queue, payloads, opts, |id| {
            confirmed += 1;
            if printed.is_ok() {
                printed = writeln!(out, "{id}").and_then(|()| out.flush());
            }
        })
        .await;
    printed?;
    sent.with_context(|| {
        format!(
            "the hub confirmed {confirmed} of {total} task(s) (their ids are printed); \
             the others may or may not have been stored"
        )
    })?;
    client.close().await;
    Ok(())
}

/// An RFC 3339 time (`2026-12-01T18:30:00Z`, `2026-12-01 18:30:00.250+01:00`) as Unix
/// milliseconds.
fn unix_ms_of(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not an RFC 3339 time: write it like 2026-12-01T18:30:00Z or 2026-12-01T19:30:00+01:00"
        )
    };
    let t = text.trim();
    let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = t.get(range).ok_or_else(bad)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let sep = |i: usize, ok: &[u8]| t.as_bytes().get(i).is_some_and(|b| ok.contains(b));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return Err(bad());
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let mut rest = &t[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        if digits == 0 {
            return Err(bad());
        }
        let ms: String = frac[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        millis = ms.parse::<i64>().map_err(|_| bad())?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && &rest[3..4] == ":" =>
        {
            let h: i64 = rest[1..3].parse().map_err(|_| bad())?;
            let m: i64 = rest[4..6].parse().map_err(|_| bad())?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (h * 60 + m)
        }
        _ => return Err(bad()),
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60;
    u64::try_from(secs * 1_000 + millis).map_err(|_| format!("{text:?} is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::unix_ms_of;

    #[test]
    fn rfc_3339_times_read_as_unix_milliseconds() {
        assert_eq!(unix_ms_of("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(unix_ms_of("2026-12-01T18:30:00Z"), Ok(1_796_149_800_000));
        assert_eq!(
            unix_ms_of("2026-12-01T19:30:00.25+01:00"),
            Ok(1_796_149_800_250)
        );
        assert_eq!(
            unix_ms_of("2024-02-29 23:59:59.999-00:30"),
            Ok(1_709_252_999_999)
        );
        for bad in [
            "tomorrow",
            "2026-13-01T00:00:00Z",
            "2026-12-01T18:30:00",
            "2026-12-01T18:30Z",
        ] {
            let err = unix_ms_of(bad).unwrap_err();
            assert!(err.contains("RFC 3339"), "{err}");
        }
    }
}
