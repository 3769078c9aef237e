//! Shared state: the broker behind one lock, the session outboxes, and the lease timer.
//!
//! The lock is never held across `.await` or while sending: an operation runs, its outputs are
//! snapshotted with their recipients' outboxes, the lock is released, then the messages go out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use taskhub_core::codec::encode_server;
use taskhub_core::protocol::Limits;
use taskhub_core::{Millis, SessionId};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::broker::{Body, Broker, Output, ServerMsg};
use crate::bundles::Site;
use crate::config::Config;
use taskhub_client::transport::message;

/// How the hub reaches one session: its bounded outbox and a way to close it.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub tx: mpsc::Sender<Message>,
    /// Notified when the session must close because it does not read fast enough.
    pub kill: Arc<Notify>,
}

impl Link {
    /// Queue one of the session's own answers, waiting for room: backpressure on its requests.
    /// Gives up when the session is being closed as a slow consumer, or marks it so when its
    /// outbox has had no room for `patience`; returns whether the message was queued.
    pub async fn send_own(&self, msg: Message, patience: Duration) -> bool {
        let full = match self.tx.try_send(msg) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return true,
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        tokio::select! {
            _ = self.tx.send(full) => true,
            _ = self.kill.notified() => {
                self.kill.notify_one(); // leave the signal for the session loop
                false
            }
            _ = tokio::time::sleep(patience) => {
                self.kill.notify_one();
                false
            }
        }
    }
}

#[derive(Debug)]
struct State {
    broker: Broker,
    links: HashMap<SessionId, Link>,
}

#[derive(Debug)]
pub(crate) struct Hub {
    state: Mutex<State>,
    pub config: Config,
    /// What the port serves over plain HTTP.
    pub site: Site,
    epoch: Instant,
    timer: Notify,
    next_session: AtomicU64,
    pub connections: AtomicUsize,
    /// Pub/sub messages dropped for subscribers that did not keep up.
    pub dropped_messages: AtomicU64,
}

impl Hub {
    pub fn new(config: Config) -> Self {
        Hub {
            state: Mutex::new(State {
                broker: Broker::new(config.broker.clone()),
                links: HashMap::new(),
            }),
            site: Site::new(&config.bundles),
            config,
            epoch: Instant::now(),
            timer: Notify::new(),
            next_session: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            dropped_messages: AtomicU64::new(0),
        }
    }

    pub fn now(&self) -> Millis {
        Millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the broker; the state is still the best
        // we have, so keep serving rather than poison every session.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.config.max_message_bytes,
            ack_wait_ms: u64::try_from(self.config.broker.ack_wait.as_millis()).unwrap_or(u64::MAX),
            max_prefetch: self.config.broker.max_prefetch,
            max_attempts: self.config.broker.max_attempts,
            ping_interval_ms: u64::try_from(self.config.ping_interval.as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    pub fn new_session_id(&self) -> SessionId {
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    /// Register an authenticated session so it can receive messages.
    pub fn open(&self, id: SessionId, role: taskhub_core::Role, name: Option<String>, link: Link) {
        let mut st = self.lock();
        st.links.insert(id, link);
        st.broker.open_session(id, role, name);
    }

    /// Unregister a session; its leases go back to their queues.
    pub async fn close(&self, id: SessionId) {
        self.apply(None, |b, now| b.close_session(id, now)).await;
        self.lock().links.remove(&id);
    }

    /// Run `op` on the broker and deliver what it produced. Messages for `caller` wait for room in
    /// its outbox (backpressure on its own requests); messages for anyone else never wait.
    pub async fn apply(&self, caller: Option<SessionId>, op: impl FnOnce(&mut Broker, Millis)) {
        let now = self.now();
        let (outputs, wake) = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let before = st.broker.next_deadline();
            op(&mut st.broker, now);
            let after = st.broker.next_deadline();
            let outputs: Vec<(Link, Output)> = st
                .broker
                .drain()
                .filter_map(|o| st.links.get(&o.to).map(|l| (l.clone(), o)))
                .collect();
            let wake = match (before, after) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(b), Some(a)) => a < b,
            };
            (outputs, wake)
        };
        if wake {
            self.timer.notify_one();
        }
        // Messages for other sessions never wait, and go first: a caller that does not read its
        // answers must not hold up what its requests deliver to others (whose lease clocks are
        // already running). Then the caller's own answers, in order, waiting for room.
        let mut own = Vec::new();
        // A publish's message is the same for each subscriber, one after another: encode it
        // once and share the frame.
        let mut last_message: Option<(Body, Message)> = None;
        for (link, out) in outputs {
            let msg = match (&out.msg, &last_message) {
                (ServerMsg::Message { payload, .. }, Some((shared, frame)))
                    if payload.same(shared) =>
                {
                    frame.clone()
                }
                (ServerMsg::Message { payload, .. }, _) => {
                    let frame = message(encode_server(&out.msg));
                    last_message = Some((payload.clone(), frame.clone()));
                    frame
                }
                _ => message(encode_server(&out.msg)),
            };
            if Some(out.to) == caller {
                own.push((link, msg));
                continue;
            }
            match link.tx.try_send(msg) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(_)) if out.droppable => {
                    self.dropped_messages.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(session = %out.to, "outbox full: closing slow consumer");
                    link.kill.notify_one();
                }
            }
        }
        for (link, msg) in own {
            // Once the caller is being closed, its remaining answers are not worth waiting for.
            if !link.send_own(msg, self.config.idle_timeout).await {
                break;
            }
        }
    }

    /// Sleep until the broker's next deadline, expire, repeat; until `stop` says so.
    pub async fn run_timer(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let next = self.lock().broker.next_deadline();
            let sleep = match next {
                Some(t) => tokio::time::sleep_until(self.epoch + Duration::from_millis(t.0)),
                None => tokio::time::sleep(Duration::from_secs(3_600)),
            };
            tokio::select! {
                _ = sleep => self.apply(None, |b, now| b.expire(now)).await,
                _ = self.timer.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }
}
