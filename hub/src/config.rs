//! Every limit the hub enforces, in one place, with defaults and a start-up check.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use taskhub_core::auth::{DEFAULT_KEY_ID, Secret};
use taskhub_core::duration::HumanDuration;

use crate::bundles::{BUILTIN, Bundle};
use crate::keys::{Key, KeySet};

use crate::broker::{BrokerConfig, MAX_ATTEMPTS_CEILING};
use crate::storage::DataDir;

/// The hub's configuration. [`Config::new`] gives the defaults; call [`Config::validate`] before
/// use ([`crate::run`] does).
#[derive(Debug, Clone)]
pub struct Config {
    /// Keys by key id, each with its rights and expiry. Clients name the id in their handshake
    /// (or a token's, signed by one of these with `admin`).
    pub keys: KeySet,
    /// Largest accepted frame, in bytes (default 1 MiB). A larger one gets `too_large` and the
    /// connection is closed.
    pub max_message_bytes: usize,
    /// Authenticated sessions (default 10,000). Beyond: `too_many_connections`, after the
    /// handshake.
    pub max_connections: usize,
    /// Connections that have not authenticated yet (default 16,384, about 17 KB each). Beyond,
    /// the oldest of the
    /// address with the most waiting is closed: a flood of idle sockets from some addresses
    /// cannot keep out a client with a key from another.
    pub max_pending_auth: usize,
    /// Bytes each connection reads at a time; allocated per connection up front, so it sets the
    /// floor of an idle session's memory (default 8 KiB).
    pub read_buffer_bytes: usize,
    /// Messages queued for one session's socket (default 4,096). A session whose outbox is full
    /// loses pub/sub messages; anything else closes it as a slow consumer.
    pub outbox: usize,
    /// Time a new connection has to finish the handshake (default 5 s).
    pub handshake_timeout: Duration,
    /// The hub pings every session this often (default 20 s).
    pub ping_interval: Duration,
    /// A session silent this long is closed and its leases released (default 60 s).
    pub idle_timeout: Duration,
    /// On shutdown, how long sessions get to close before they are cut (default 5 s).
    pub shutdown_grace: Duration,
    /// Queue limits: max queue length, max queues, max stored bytes, ack-wait, max attempts, max
    /// prefetch.
    pub broker: BrokerConfig,
    /// Worker bundles served to browser tabs besides the built-in one; the first is the join
    /// page's default. Names must be unique and not `builtin`.
    pub bundles: Vec<Arc<Bundle>>,
    /// Largest file a bundle may hold (default 64 MiB); checked as bundles are loaded.
    pub max_bundle_file_bytes: usize,
    /// Where tasks are kept across restarts; `None` (the default) keeps them in memory only.
    pub data_dir: Option<DataDir>,
    /// Keep the queues in NATS JetStream, shared with every hub on the same NATS, instead of in
    /// this process (`None`, the default).
    pub backend: Option<crate::nats::NatsBackend>,
    /// Web origins (`https://example.org`) whose pages may open a WebSocket to the hub, besides
    /// the hub's own pages. Empty (the default): any. Clients that send no `Origin` (everything
    /// but browsers) are never refused for it.
    pub allowed_origins: Vec<String>,
    /// Serve `wss://` and `https://` with this certificate and key (PEM); `None` (the default):
    /// plain `ws://` and `http://`.
    pub tls: Option<crate::tls::TlsFiles>,
}

/// Every limit of a hub, in one place with its default: `taskhub serve` takes each as a flag
/// (`--max-queue-len`), a `TASKHUB_*` environment variable (`TASKHUB_MAX_QUEUE_LEN`) and a key of
/// its config file (`max_queue_len`), and [`Config::new`] starts from [`Limits::default`].
/// Durations read as `500ms`, `30s`, `5m` (a number alone is seconds).
#[derive(Debug, Clone, PartialEq, clap::Args, serde::Serialize, serde::Deserialize)]
#[command(next_help_heading = "Limits")]
pub struct Limits {
    /// Largest accepted message, in bytes; a larger one gets `too_large` and the connection is
    /// closed.
    #[arg(long, env = "TASKHUB_MAX_MESSAGE_BYTES", default_value_t = Limits::default().max_message_bytes)]
    pub max_message_bytes: usize,
    /// Authenticated sessions at most; beyond, `too_many_connections` after the handshake.
    #[arg(long, env = "TASKHUB_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Connections that have not authenticated yet (about 17 KB each); beyond, the oldest of the
    /// address (IPv6: /64) with the most waiting is closed, so a flood of idle sockets cannot
    /// lock out clients with a key from other addresses.
    #[arg(long, env = "TASKHUB_MAX_PENDING_AUTH", default_value_t = Limits::default().max_pending_auth)]
    pub max_pending_auth: usize,
    /// Bytes each connection reads at a time, allocated per connection up front: the floor of an
    /// idle session's memory.
    #[arg(long, env = "TASKHUB_READ_BUFFER_BYTES", default_value_t = Limits::default().read_buffer_bytes)]
    pub read_buffer_bytes: usize,
    /// Messages buffered per session. A session whose outbox is full loses pub/sub messages;
    /// anything else closes it as a slow consumer.
    #[arg(long, env = "TASKHUB_OUTBOX", default_value_t = Limits::default().outbox)]
    pub outbox: usize,
    /// Time a new connection has to authenticate.
    #[arg(long, env = "TASKHUB_HANDSHAKE_TIMEOUT", default_value_t = Limits::default().handshake_timeout)]
    pub handshake_timeout: HumanDuration,
    /// The hub pings every session this often.
    #[arg(long, env = "TASKHUB_PING_INTERVAL", default_value_t = Limits::default().ping_interval)]
    pub ping_interval: HumanDuration,
    /// A session silent this long is closed and its leases released (longer than
    /// --ping-interval).
    #[arg(long, env = "TASKHUB_IDLE_TIMEOUT", default_value_t = Limits::default().idle_timeout)]
    pub idle_timeout: HumanDuration,
    /// On shutdown, how long sessions get to close before they are cut.
    #[arg(long, env = "TASKHUB_SHUTDOWN_GRACE", default_value_t = Limits::default().shutdown_grace)]
    pub shutdown_grace: HumanDuration,
    /// Largest file a worker bundle may hold, in bytes.
    #[arg(long, env = "TASKHUB_MAX_BUNDLE_FILE_BYTES", default_value_t = Limits::default().max_bundle_file_bytes)]
    pub max_bundle_file_bytes: usize,
    /// Tasks per queue (ready plus in flight) before puts get `queue_full`.
    #[arg(long, env = "TASKHUB_MAX_QUEUE_LEN", default_value_t = Limits::default().max_queue_len)]
    pub max_queue_len: usize,
    /// Queues the hub holds at most, dead-letter queues not counted.
    #[arg(long, env = "TASKHUB_MAX_QUEUES", default_value_t = Limits::default().max_queues)]
    pub max_queues: usize,
    /// Memory all the tasks the hub holds may take (payloads as held, JSON text or bytes, and
    /// each task's own record) before puts get `queue_full`.
    #[arg(long, env = "TASKHUB_MAX_STORED_BYTES", default_value_t = Limits::default().max_stored_bytes)]
    pub max_stored_bytes: usize,
    /// A delivered task may go this long without ack or touch before it is redelivered.
    #[arg(long, env = "TASKHUB_ACK_WAIT", default_value_t = Limits::default().ack_wait)]
    pub ack_wait: HumanDuration,
    /// Deliveries before a task goes to <queue>.dead (tasks may set their own).
    #[arg(long, env = "TASKHUB_MAX_ATTEMPTS", default_value_t = Limits::default().max_attempts)]
    pub max_attempts: u32,
    /// Tasks a session may hold unacknowledged (its `consume` prefetch is cut to this).
    #[arg(long, env = "TASKHUB_MAX_PREFETCH", default_value_t = Limits::default().max_prefetch)]
    pub max_prefetch: u32,
    /// Longest wait a `get` may ask for; longer ones are cut to this.
    #[arg(long, env = "TASKHUB_MAX_GET_WAIT", default_value_t = Limits::default().max_get_wait)]
    pub max_get_wait: HumanDuration,
    /// Waiting `get`s per session.
    #[arg(long, env = "TASKHUB_MAX_WAITERS_PER_SESSION", default_value_t = Limits::default().max_waiters_per_session)]
    pub max_waiters_per_session: usize,
    /// Topic subscriptions per session.
    #[arg(long, env = "TASKHUB_MAX_SUBSCRIPTIONS_PER_SESSION", default_value_t = Limits::default().max_subscriptions_per_session)]
    pub max_subscriptions_per_session: usize,
    /// How long a put's `dedup_id` is remembered: a repeat within it stores nothing.
    #[arg(long, env = "TASKHUB_DEDUP_WINDOW", default_value_t = Limits::default().dedup_window)]
    pub dedup_window: HumanDuration,
    /// Dedup ids remembered at most; past it the oldest are forgotten early.
    #[arg(long, env = "TASKHUB_MAX_DEDUP_IDS", default_value_t = Limits::default().max_dedup_ids)]
    pub max_dedup_ids: usize,
    /// How long a queue may sit empty and unused (no consumers, waiting gets, leased tasks, or
    /// tasks naming it as reply_to) before the hub drops it.
    #[arg(long, env = "TASKHUB_QUEUE_IDLE_GRACE", default_value_t = Limits::default().queue_idle_grace)]
    pub queue_idle_grace: HumanDuration,
    /// Longest a put may delay its task (`delay_ms`, or `not_before` this far ahead); a longer
    /// one is refused.
    #[arg(long, env = "TASKHUB_MAX_DELAY", default_value_t = Limits::default().max_delay)]
    pub max_delay: HumanDuration,
    /// A failed task that is retried comes back after this long, doubling with each attempt
    /// (with jitter) up to --retry-backoff-max; 0 retries at once. A put's backoff_ms overrides it.
    #[arg(long, env = "TASKHUB_RETRY_BACKOFF", default_value_t = Limits::default().retry_backoff)]
    pub retry_backoff: HumanDuration,
    /// The longest a retry waits (a put's backoff_max_ms overrides it).
    #[arg(long, env = "TASKHUB_RETRY_BACKOFF_MAX", default_value_t = Limits::default().retry_backoff_max)]
    pub retry_backoff_max: HumanDuration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 1 << 20,
            max_connections: 10_000,
            max_pending_auth: 16_384,
            read_buffer_bytes: 8 * 1024,
            outbox: 4_096,
            handshake_timeout: HumanDuration::secs(5),
            ping_interval: HumanDuration::secs(20),
            idle_timeout: HumanDuration::secs(60),
            shutdown_grace: HumanDuration::secs(5),
            max_bundle_file_bytes: 64 << 20,
            max_queue_len: 1_000_000,
            max_queues: 10_000,
            max_stored_bytes: 1 << 30,
            ack_wait: HumanDuration::secs(30),
            max_attempts: 5,
            max_prefetch: 1_000,
            max_get_wait: HumanDuration::secs(3_600),
            max_waiters_per_session: 256,
            max_subscriptions_per_session: 256,
            dedup_window: HumanDuration::secs(600),
            max_dedup_ids: 100_000,
            queue_idle_grace: HumanDuration::secs(300),
            max_delay: HumanDuration::secs(30 * 24 * 3_600),
            retry_backoff: HumanDuration::secs(1),
            retry_backoff_max: HumanDuration::secs(300),
        }
    }
}

impl Limits {
    /// The queue limits, as the broker (and the NATS backend) takes them.
    pub fn broker(&self) -> BrokerConfig {
        BrokerConfig {
            max_queue_len: self.max_queue_len,
            max_queues: self.max_queues,
            max_stored_bytes: self.max_stored_bytes,
            ack_wait: self.ack_wait.0,
            max_attempts: self.max_attempts,
            max_prefetch: self.max_prefetch,
            max_get_wait: self.max_get_wait.0,
            max_waiters_per_session: self.max_waiters_per_session,
            max_subscriptions_per_session: self.max_subscriptions_per_session,
            dedup_window: self.dedup_window.0,
            max_dedup_ids: self.max_dedup_ids,
            queue_idle_grace: self.queue_idle_grace.0,
            max_delay: self.max_delay.0,
            retry_backoff: self.retry_backoff.0,
            retry_backoff_max: self.retry_backoff_max.0,
            replicas: Vec::new(),
        }
    }
}

/// A configuration that cannot work. The message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hub configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults ([`Limits::default`]), with one key under the id `default`.
    pub fn new(key: Secret) -> Self {
        Config::with_limits(
            BTreeMap::from([(DEFAULT_KEY_ID.to_string(), Key::full(key))]),
            &Limits::default(),
        )
    }

    /// These keys and limits; no bundles, data dir, backend, origins or TLS.
    pub fn with_limits(keys: KeySet, limits: &Limits) -> Self {
        Config {
            keys,
            max_message_bytes: limits.max_message_bytes,
            max_connections: limits.max_connections,
            max_pending_auth: limits.max_pending_auth,
            read_buffer_bytes: limits.read_buffer_bytes,
            outbox: limits.outbox,
            handshake_timeout: limits.handshake_timeout.0,
            ping_interval: limits.ping_interval.0,
            idle_timeout: limits.idle_timeout.0,
            shutdown_grace: limits.shutdown_grace.0,
            broker: limits.broker(),
            bundles: Vec::new(),
            max_bundle_file_bytes: limits.max_bundle_file_bytes,
            data_dir: None,
            backend: None,
            allowed_origins: Vec::new(),
            tls: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_string()));
        if self.keys.is_empty() {
            return err("at least one key is required; the hub never runs open");
        }
        if self.keys.values().any(|k| k.secret.is_empty()) {
            return err("keys must not be empty");
        }
        if self.max_message_bytes < 1024 {
            return err("max_message_bytes must be at least 1024");
        }
        if self.read_buffer_bytes < 1024 {
            return err("read_buffer_bytes must be at least 1024");
        }
        if self.max_connections == 0 || self.outbox == 0 || self.max_pending_auth == 0 {
            return err("max_connections, max_pending_auth and outbox must be at least 1");
        }
        let b = &self.broker;
        if b.max_stored_bytes < self.max_message_bytes {
            return err("max_stored_bytes must be at least max_message_bytes");
        }
        if b.max_queue_len == 0 || b.max_queues == 0 {
            return err("max_queue_len and max_queues must be at least 1");
        }
        if b.max_prefetch == 0 || b.max_prefetch as usize >= self.outbox {
            return err("max_prefetch must be at least 1 and below outbox");
        }
        if !(1..=MAX_ATTEMPTS_CEILING).contains(&b.max_attempts) {
            return err("max_attempts must be 1 to 1000");
        }
        if b.ack_wait < Duration::from_millis(100) {
            return err("ack_wait must be at least 100 ms");
        }
        if self.handshake_timeout.is_zero() || self.ping_interval.is_zero() {
            return err("handshake_timeout and ping_interval must be positive");
        }
        if self.idle_timeout <= self.ping_interval {
            return err("idle_timeout must be longer than ping_interval");
        }
        if let Some(backend) = &self.backend {
            if self.data_dir.is_some() {
                return err(
                    "--data-dir and --backend exclude each other: with a NATS backend the tasks are kept by JetStream",
                );
            }
            if backend.urls().is_empty() {
                return err("--backend needs at least one NATS server URL");
            }
            if !b.replicas.is_empty() {
                return err(
                    "--replicas needs the embedded backend: a hub on NATS JetStream cannot run a task on several workers",
                );
            }
        }
        let mut names = std::collections::BTreeSet::from([BUILTIN]);
        for b in &self.bundles {
            if !names.insert(&b.name) {
                return Err(ConfigError(format!(
                    "two worker bundles are named {:?}; bundle names must be unique (and not {BUILTIN:?})",
                    b.name
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        let c = Config::new(Secret::new("k"));
        assert_eq!(c.validate(), Ok(()));
        let mut bad = c.clone();
        bad.keys.clear();
        assert!(bad.validate().unwrap_err().to_string().contains("key"));
        let mut bad = c;
        bad.broker.max_prefetch = 10_000;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("max_prefetch")
        );
    }
}
