//! Wrong keys cost time: an address that keeps failing the handshake gets its next attempts
//! checked one at a time, [`SLOT`] apart, and its failures are logged as one summary line per
//! [`LOG_EVERY`] instead of a line each.
//!
//! The wait comes before the proof is checked, so parallel connections from one address gain an
//! attacker nothing: each takes the next slot. A right key from the address clears its record
//! (an attacker has none to offer). Memory is bounded: at most [`MAX_ADDRESSES`] records, and
//! those idle for [`FORGET_AFTER`] go first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures an address may have before its attempts are spaced out.
pub const FREE_FAILURES: u32 = 5;
/// The spacing, once they are: at most five attempts a second from one address.
pub const SLOT: Duration = Duration::from_millis(200);
/// An address's failures are summed in the log this often, at most.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// A record with no failure for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Addresses remembered at most.
pub const MAX_ADDRESSES: usize = 10_000;

#[derive(Debug)]
struct Record {
    failures: u32,
    last_failure: Instant,
    next_slot: Instant,
    logged: Option<Instant>,
    unlogged: u32,
}

#[derive(Debug, Default)]
pub(crate) struct AuthThrottle {
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl AuthThrottle {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When an attempt from `ip` may be checked: now, or its address's next slot (which it
    /// takes).
    pub fn slot(&self, ip: IpAddr, now: Instant) -> Instant {
        let mut records = self.records();
        let Some(r) = records.get_mut(&ip) else {
            return now;
        };
        if now.duration_since(r.last_failure) >= FORGET_AFTER {
            records.remove(&ip);
            return now;
        }
        if r.failures < FREE_FAILURES {
            return now;
        }
        let slot = r.next_slot.max(now);
        r.next_slot = slot + SLOT;
        slot
    }

    /// A failed attempt from `ip`. Returns the line to log, if it is time for one: how many
    /// failures since the last line.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Option<String> {
        let mut records = self.records();
        if records.len() >= MAX_ADDRESSES && !records.contains_key(&ip) {
            records.retain(|_, r| now.duration_since(r.last_failure) < FORGET_AFTER);
            if records.len() >= MAX_ADDRESSES {
                // A flood from more addresses than we keep: start again rather than grow.
                records.clear();
            }
        }
        let r = records.entry(ip).or_insert(Record {
            failures: 0,
            last_failure: now,
            next_slot: now,
            logged: None,
            unlogged: 0,
        });
        r.failures = r.failures.saturating_add(1);
        r.last_failure = now;
        r.unlogged += 1;
        if r.logged.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return None;
        }
        let line = match r.unlogged {
            1 => format!("authentication failed from {ip}"),
            n => format!(
                "authentication failed from {ip}: {n} failures in the last {} s",
                LOG_EVERY.as_secs()
            ),
        };
        r.logged = Some(now);
        r.unlogged = 0;
        Some(line)
    }

    /// A right key from `ip`: its record goes.
    pub fn succeeded(&self, ip: IpAddr) {
        self.records().remove(&ip);
    }
}

/// One log line per [`LOG_EVERY`] at most for a kind of event, counting the ones in between.
#[derive(Debug, Default)]
pub(crate) struct LogEvery {
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogEvery {
    /// Another event: `Some(n)` when it is time to log (n events since the last line, this one
    /// included).
    pub fn due(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        if state.0.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            return None;
        }
        let n = state.1;
        *state = (Some(now), 0);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_space_out_an_address_and_summarise_its_log() {
        let t = AuthThrottle::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let now = Instant::now();
        let mut lines = Vec::new();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.slot(ip, now), now, "the first failures are free");
            lines.extend(t.failed(ip, now));
        }
        // One line for the first failure; the rest wait for the summary.
        assert_eq!(lines, vec![format!("authentication failed from {ip}")]);
        // Now every attempt takes the next slot, parallel ones included.
        assert_eq!(t.slot(ip, now), now);
        assert_eq!(t.slot(ip, now), now + SLOT);
        assert_eq!(t.slot(ip, now), now + 2 * SLOT);
        // Another address is not held up.
        assert_eq!(t.slot(other, now), now);
        // The summary comes once LOG_EVERY has passed.
        let later = now + LOG_EVERY;
        let line = t.failed(ip, later).unwrap();
        assert!(line.contains("5 failures in the last 10 s"), "{line}");
        // A right key clears the record; so does a minute without failures.
        t.succeeded(ip);
        assert_eq!(t.slot(ip, later), later);
        for _ in 0..FREE_FAILURES {
            t.failed(other, now);
        }
        let much_later = now + FORGET_AFTER;
        assert_eq!(t.slot(other, much_later), much_later);
    }
}
