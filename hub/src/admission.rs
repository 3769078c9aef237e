//! Connections that have not authenticated yet have a cap of their own, `max_pending_auth`,
//! apart from `max_connections` (which counts sessions): when it is reached, one waiting
//! connection is closed to make room: the oldest of the address that has the most waiting (IPv6
//! addresses counted by /64, what one host is usually given).
//!
//! Oldest-first alone is not enough: a flood reopening sockets as fast as the hub drops them
//! cycles the whole waiting list in a few milliseconds, and a real client whose handshake takes
//! a round trip longer is closed before it can answer the challenge (measured: 11,000 sockets
//! from one process evicted keyed clients on the same machine). Taking room from the address
//! that holds the most keeps the flood churning through its own sockets; a client from any other
//! address is closed only when a flood comes from more addresses than the cap has places.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::hub::Hub;

/// Where connections come from, as counted for eviction: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Source {
    V4(u32),
    /// The first 64 bits.
    V6(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// The connections waiting to authenticate, by source, oldest first within each.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    next: u64,
    total: usize,
    by_source: HashMap<Source, BTreeMap<u64, Arc<Notify>>>,
    /// Every source with connections waiting, ordered so the last is the one to take room
    /// from: most connections waiting, then the oldest of them.
    ranked: BTreeSet<(usize, Reverse<u64>, Source)>,
}

impl Waiting {
    fn rank(&self, source: Source) -> Option<(usize, Reverse<u64>, Source)> {
        let group = self.by_source.get(&source)?;
        let (&oldest, _) = group.first_key_value()?;
        Some((group.len(), Reverse(oldest), source))
    }

    /// Change the group of `source`, keeping `ranked` and `total` true.
    fn change<T>(
        &mut self,
        source: Source,
        f: impl FnOnce(&mut BTreeMap<u64, Arc<Notify>>) -> T,
    ) -> T {
        if let Some(key) = self.rank(source) {
            self.ranked.remove(&key);
        }
        let group = self.by_source.entry(source).or_default();
        let before = group.len();
        let out = f(group);
        let after = group.len();
        self.total = self.total + after - before;
        if after == 0 {
            self.by_source.remove(&source);
        } else if let Some(key) = self.rank(source) {
            self.ranked.insert(key);
        }
        out
    }
}

/// One connection's place among those waiting to authenticate; leaving it (drop) frees the
/// place.
#[derive(Debug)]
pub(crate) struct Pending {
    hub: Arc<Hub>,
    source: Source,
    seq: u64,
    evicted: Arc<Notify>,
}

impl Admission {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a place for a new connection from `peer`, first closing the oldest waiting
    /// connection of the source with the most if `hub` is at its `max_pending_auth`.
    pub fn enter(hub: &Arc<Hub>, peer: IpAddr) -> Pending {
        let evicted = Arc::new(Notify::new());
        let source = Source::of(peer);
        let mut w = hub.admission.waiting();
        while w.total >= hub.config.max_pending_auth {
            let Some(&(_, _, crowded)) = w.ranked.last() else {
                break;
            };
            if let Some((_, oldest)) = w.change(crowded, BTreeMap::pop_first) {
                oldest.notify_one();
            }
        }
        w.next += 1;
        let seq = w.next;
        w.change(source, |g| g.insert(seq, evicted.clone()));
        drop(w);
        Pending {
            hub: hub.clone(),
            source,
            seq,
            evicted,
        }
    }

    /// Connections waiting to authenticate now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting().total
    }
}

impl Pending {
    /// Completes once this connection has been closed to make room for newer ones.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let (source, seq) = (self.source, self.seq);
        self.hub
            .admission
            .waiting()
            .change(source, |g| g.remove(&seq));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures_util::FutureExt;

    use super::*;
    use crate::{Config, Secret};

    fn hub(max_pending_auth: usize) -> Arc<Hub> {
        let mut config = Config::new(Secret::new("k"));
        config.max_pending_auth = max_pending_auth;
        Arc::new(Hub::from_config(config).unwrap().hub)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_oldest_waiting_connection_makes_room() {
        let hub = hub(2);
        let a = ip("10.0.0.1");
        let first = Admission::enter(&hub, a);
        let second = Admission::enter(&hub, a);
        assert!(first.evicted().now_or_never().is_none());
        let third = Admission::enter(&hub, a);
        assert!(first.evicted().now_or_never().is_some(), "the oldest goes");
        assert!(second.evicted().now_or_never().is_none());
        assert!(third.evicted().now_or_never().is_none());
        assert_eq!(hub.admission.len(), 2);
        // One that authenticates (or ends) leaves, and makes room without closing anyone.
        drop(second);
        let _fourth = Admission::enter(&hub, a);
        assert!(third.evicted().now_or_never().is_none());
        drop(first);
        assert_eq!(hub.admission.len(), 2);
    }

    #[test]
    fn room_is_taken_from_the_address_with_the_most_waiting() {
        let hub = hub(4);
        let client = Admission::enter(&hub, ip("192.0.2.7"));
        let flood: Vec<Pending> = (0..3)
            .map(|_| Admission::enter(&hub, ip("198.51.100.9")))
            .collect();
        // The flood keeps coming: each newcomer closes the flood's oldest, never the client,
        // though the client has waited longest.
        let mut newer = Vec::new();
        for round in 0..10 {
            newer.push(Admission::enter(&hub, ip("198.51.100.9")));
            assert!(client.evicted().now_or_never().is_none(), "round {round}");
        }
        assert!(flood.iter().all(|p| p.evicted().now_or_never().is_some()));
        assert_eq!(hub.admission.len(), 4);
        // Among equally crowded addresses, the oldest connection goes.
        let hub = self::hub(2);
        let a = Admission::enter(&hub, ip("192.0.2.1"));
        let b = Admission::enter(&hub, ip("192.0.2.2"));
        let _c = Admission::enter(&hub, ip("192.0.2.3"));
        assert!(a.evicted().now_or_never().is_some());
        assert!(b.evicted().now_or_never().is_none());
    }

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64() {
        assert_eq!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:192.0.2.1")),
            Source::of(ip("192.0.2.1"))
        );
    }
}
