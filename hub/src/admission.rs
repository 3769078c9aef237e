//! Connections that have not authenticated yet have a cap of their own, `max_pending_auth`,
//! apart from `max_connections` (which counts sessions): when it is reached, the connection that
//! has waited longest is closed to make room. A flood of idle sockets thus churns through the
//! oldest of its own kind and never holds a slot an authorised client needs: a real client
//! finishes its handshake in a few round trips, long before a thousand newer sockets arrive.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::hub::Hub;

/// The connections waiting to authenticate, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    next: u64,
    by_age: BTreeMap<u64, Arc<Notify>>,
}

/// One connection's place among those waiting to authenticate; leaving it (drop) frees the
/// place.
#[derive(Debug)]
pub(crate) struct Pending {
    hub: Arc<Hub>,
    seq: u64,
    evicted: Arc<Notify>,
}

impl Admission {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a place for a new connection, closing the oldest waiting one if `hub` is at its
    /// `max_pending_auth`.
    pub fn enter(hub: &Arc<Hub>) -> Pending {
        let evicted = Arc::new(Notify::new());
        let mut w = hub.admission.waiting();
        while w.by_age.len() >= hub.config.max_pending_auth {
            match w.by_age.pop_first() {
                Some((_, oldest)) => oldest.notify_one(),
                None => break,
            }
        }
        w.next += 1;
        let seq = w.next;
        w.by_age.insert(seq, evicted.clone());
        drop(w);
        Pending {
            hub: hub.clone(),
            seq,
            evicted,
        }
    }

    /// Connections waiting to authenticate now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting().by_age.len()
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
        self.hub.admission.waiting().by_age.remove(&self.seq);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures_util::FutureExt;

    use super::*;
    use crate::{Config, Secret};

    #[test]
    fn the_oldest_waiting_connection_makes_room() {
        let mut config = Config::new(Secret::new("k"));
        config.max_pending_auth = 2;
        let hub = Arc::new(Hub::from_config(config).unwrap().hub);
        let first = Admission::enter(&hub);
        let second = Admission::enter(&hub);
        assert!(first.evicted().now_or_never().is_none());
        let third = Admission::enter(&hub);
        assert!(first.evicted().now_or_never().is_some(), "the oldest goes");
        assert!(second.evicted().now_or_never().is_none());
        assert!(third.evicted().now_or_never().is_none());
        assert_eq!(hub.admission.len(), 2);
        // One that authenticates (or ends) leaves, and makes room without closing anyone.
        drop(second);
        let _fourth = Admission::enter(&hub);
        assert!(third.evicted().now_or_never().is_none());
        drop(first);
        assert_eq!(hub.admission.len(), 2);
    }
}
