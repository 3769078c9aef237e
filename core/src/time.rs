//! Time as the core sees it: a plain number the driver supplies.
//!
//! `std::time::Instant::now()` panics on `wasm32-unknown-unknown`, and pure logic is easier to test
//! with a manual clock, so the core never reads a clock. Each driver picks an epoch (its start) and
//! passes `now` as milliseconds since then.

use std::ops::{Add, Sub};
use std::time::Duration;

/// Milliseconds since a driver-chosen epoch. Monotonic within one driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// The later of `self + d`, saturating at `u64::MAX`.
    pub fn after(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(millis_of(d)))
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// `d` in whole milliseconds, saturating: how durations go on the wire (`delay_ms`, `ttl_ms`)
/// and into [`Millis`].
pub fn millis_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A wait that doubles: `first_ms` after `doublings` doublings, at most `max_ms`, then a point
/// in its upper half picked by `random` (jitter, so clients or tasks that failed together do not
/// all come back together). The worker's reconnects and the hub's retries both wait this way.
pub fn doubling_wait(first_ms: u64, max_ms: u64, doublings: u32, random: u64) -> u64 {
    let full = first_ms
        .saturating_mul(1u64 << doublings.min(40))
        .min(max_ms);
    let half = full / 2;
    half + random % (full - half + 1)
}

impl Add<u64> for Millis {
    type Output = Millis;
    fn add(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}

impl Sub<Millis> for Millis {
    type Output = u64;
    fn sub(self, other: Millis) -> u64 {
        self.0.saturating_sub(other.0)
    }
}
