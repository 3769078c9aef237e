//! What `/metrics` shows, in the Prometheus text format (written by `prometheus-client`).
//!
//! The counts are kept where the events happen, as plain numbers: per queue in the broker (or the
//! NATS gateway), per hub in `Hub`. A scrape gathers them into a [`Snapshot`] and encodes that;
//! nothing on the task path takes a lock or an atomic for metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// What happened to one queue's tasks since the hub started (or since the queue was made again,
/// after it was dropped for sitting unused).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounters {
    /// Tasks stored (a put repeated within the dedup window is not counted again).
    pub put: u64,
    /// Tasks handed to a worker or a `get`, redeliveries included.
    pub delivered: u64,
    /// Deliveries that were a task's second attempt or later (after a retried fail, a lease that
    /// ran out or a session that closed; a released task spends no attempt).
    pub redelivered: u64,
    pub acked: u64,
    /// `fail`s, retried or not.
    pub failed: u64,
    /// Tasks moved to `<queue>.dead`.
    pub dead_lettered: u64,
    /// Tasks a client cancelled (ready, scheduled or leased).
    pub cancelled: u64,
}

/// Upper bounds of the put-to-ack latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0,
    3600.0,
];

/// How long acked tasks took from put to ack, as a histogram of [`LATENCY_BUCKETS`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Latency {
    /// Tasks per bucket (not cumulative), and past the last.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum_secs: f64,
}

impl Latency {
    pub fn record(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i] += 1;
        self.sum_secs += secs;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Tasks per bucket, by upper bound, `+Inf` last (`f64::MAX`, which the encoder writes as
    /// `+Inf`; it also adds the counts up).
    fn buckets(&self) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, n)| (LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::MAX), *n))
            .collect()
    }
}

/// One queue's figures in a [`Snapshot`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueMetrics {
    pub name: String,
    pub counters: QueueCounters,
    /// Ready tasks.
    pub depth: u64,
    pub in_flight: u64,
    /// Put with a delay and not ready yet.
    pub scheduled: u64,
}

/// Everything a scrape shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub queues: Vec<QueueMetrics>,
    /// Sessions by role (`producer`, `worker`, `browser`, `dashboard`).
    pub sessions: BTreeMap<String, u64>,
    pub stored_bytes: u64,
    pub auth_failures: u64,
    pub slow_consumer_closes: u64,
    /// Pub/sub messages dropped for sessions that did not keep up.
    pub dropped_messages: u64,
    pub latency: Latency,
}

impl Snapshot {
    /// The Prometheus text exposition of this snapshot.
    pub fn encode(self) -> String {
        let mut registry = Registry::with_prefix("taskhub");
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

type Labels = Vec<(&'static str, String)>;

fn queue_label(name: &str) -> Labels {
    vec![("queue", name.to_string())]
}

/// One family: its name, help, and a value per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One metric without labels.
fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type Pick = fn(&QueueCounters) -> u64;
        let counters: [(&str, &str, Pick); 7] = [
            ("tasks_put", "Tasks stored on the queue.", |c| c.put),
            (
                "tasks_delivered",
                "Tasks handed to a worker or a get, redeliveries included.",
                |c| c.delivered,
            ),
            (
                "tasks_redelivered",
                "Deliveries that were a task's second attempt or later (a retried fail, an expired lease, a closed session).",
                |c| c.redelivered,
            ),
            ("tasks_acked", "Tasks acked.", |c| c.acked),
            ("tasks_failed", "Fails, retried or not.", |c| c.failed),
            (
                "tasks_dead_lettered",
                "Tasks moved to the queue's dead-letter queue.",
                |c| c.dead_lettered,
            ),
            (
                "tasks_cancelled",
                "Tasks a client cancelled, waiting or running.",
                |c| c.cancelled,
            ),
        ];
        for (name, help, pick) in counters {
            let samples = self
                .queues
                .iter()
                .map(|q| (queue_label(&q.name), ConstCounter::new(pick(&q.counters))));
            family(&mut e, name, help, MetricType::Counter, samples)?;
        }
        let depth = self
            .queues
            .iter()
            .map(|q| (queue_label(&q.name), ConstGauge::new(q.depth as i64)));
        family(
            &mut e,
            "queue_depth",
            "Ready tasks.",
            MetricType::Gauge,
            depth,
        )?;
        let in_flight = self
            .queues
            .iter()
            .map(|q| (queue_label(&q.name), ConstGauge::new(q.in_flight as i64)));
        family(
            &mut e,
            "queue_in_flight",
            "Tasks delivered and not yet acked, failed or released.",
            MetricType::Gauge,
            in_flight,
        )?;
        let scheduled = self
            .queues
            .iter()
            .map(|q| (queue_label(&q.name), ConstGauge::new(q.scheduled as i64)));
        family(
            &mut e,
            "queue_scheduled",
            "Tasks put with a delay that are not ready yet.",
            MetricType::Gauge,
            scheduled,
        )?;
        let sessions = self
            .sessions
            .iter()
            .map(|(role, n)| (vec![("role", role.clone())], ConstGauge::new(*n as i64)));
        family(
            &mut e,
            "sessions",
            "Authenticated sessions, by role.",
            MetricType::Gauge,
            sessions,
        )?;
        single(
            &mut e,
            "stored_bytes",
            "Bytes the tasks held take, as charged to max_stored_bytes (with NATS: the stream's size).",
            ConstGauge::new(self.stored_bytes as i64),
        )?;
        single(
            &mut e,
            "auth_failures",
            "Handshakes refused: wrong or unknown keys, expired or revoked tokens.",
            ConstCounter::new(self.auth_failures),
        )?;
        single(
            &mut e,
            "slow_consumer_closes",
            "Sessions closed because they did not read their messages fast enough.",
            ConstCounter::new(self.slow_consumer_closes),
        )?;
        single(
            &mut e,
            "dropped_messages",
            "Pub/sub messages dropped for subscribers that did not keep up.",
            ConstCounter::new(self.dropped_messages),
        )?;
        let mut latency = e.encode_descriptor(
            "task_latency_seconds",
            "Time from put to ack of acked tasks.",
            None,
            MetricType::Histogram,
        )?;
        latency.encode_histogram::<Labels>(
            self.latency.sum_secs,
            self.latency.count(),
            &self.latency.buckets(),
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_snapshot_reads_as_prometheus_text() {
        let mut latency = Latency::default();
        latency.record(Duration::from_millis(3));
        latency.record(Duration::from_millis(40));
        latency.record(Duration::from_secs(7_200));
        let text = Snapshot {
            queues: vec![QueueMetrics {
                name: "jobs".into(),
                counters: QueueCounters {
                    put: 5,
                    delivered: 4,
                    redelivered: 1,
                    acked: 3,
                    failed: 1,
                    dead_lettered: 1,
                    cancelled: 2,
                },
                depth: 2,
                in_flight: 1,
                scheduled: 4,
            }],
            sessions: BTreeMap::from([("worker".into(), 2)]),
            stored_bytes: 1234,
            auth_failures: 7,
            slow_consumer_closes: 1,
            dropped_messages: 9,
            latency,
        }
        .encode();
        for line in [
            "taskhub_tasks_put_total{queue=\"jobs\"} 5",
            "taskhub_tasks_cancelled_total{queue=\"jobs\"} 2",
            "taskhub_tasks_redelivered_total{queue=\"jobs\"} 1",
            "taskhub_tasks_dead_lettered_total{queue=\"jobs\"} 1",
            "taskhub_queue_depth{queue=\"jobs\"} 2",
            "taskhub_queue_scheduled{queue=\"jobs\"} 4",
            "taskhub_sessions{role=\"worker\"} 2",
            "taskhub_stored_bytes 1234",
            "taskhub_auth_failures_total 7",
            "taskhub_dropped_messages_total 9",
            "taskhub_task_latency_seconds_bucket{le=\"0.005\"} 1",
            "taskhub_task_latency_seconds_bucket{le=\"0.05\"} 2",
            "taskhub_task_latency_seconds_bucket{le=\"3600.0\"} 2",
            "taskhub_task_latency_seconds_bucket{le=\"+Inf\"} 3",
            "taskhub_task_latency_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
