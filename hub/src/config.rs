//! Every limit the hub enforces, in one place, with defaults and a start-up check.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use taskhub_core::auth::{DEFAULT_KEY_ID, Secret};

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

/// A configuration that cannot work. The message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hub configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults, with one key under the id `default`.
    pub fn new(key: Secret) -> Self {
        Config {
            keys: BTreeMap::from([(DEFAULT_KEY_ID.to_string(), Key::full(key))]),
            max_message_bytes: 1 << 20,
            max_connections: 10_000,
            max_pending_auth: 16_384,
            read_buffer_bytes: 8 * 1024,
            outbox: 4_096,
            handshake_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            broker: BrokerConfig::default(),
            bundles: Vec::new(),
            max_bundle_file_bytes: 64 << 20,
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
