//! What a key or token may do: per queue (put, consume, get), per topic (publish, subscribe),
//! `stats`, and `admin` (delete queues, create and revoke tokens); and where its results are
//! `trusted` without a quorum.
//!
//! Queues and topics are named by patterns with the topics' wildcards (`*` one dot-separated
//! token, `>` the rest), so `jobs.*` grants every `jobs.X` queue and `>` every queue.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{Pattern, QueueName, Topic};

/// A set of rights. The default is none; [`Rights::all`] is every right.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rights {
    /// Queues it may `put` to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub put: Vec<Pattern>,
    /// Queues it may `consume` (take leased tasks from, as a worker).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consume: Vec<Pattern>,
    /// Queues it may `get` from (take tasks for good: results, dead letters), and name as a
    /// `put`'s `reply_to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub get: Vec<Pattern>,
    /// Topics it may publish to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<Pattern>,
    /// Patterns it may subscribe to (a subscription must lie within one of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<Pattern>,
    /// Queues on which its results are trusted: a redundant task (`replicas`) that one of its
    /// sessions completes is accepted on that one result, with no quorum. A marking, not a
    /// capability: [`Rights::all`] leaves it out, so a key is trusted only where it says so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted: Vec<Pattern>,
    /// It may read `stats`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stats: bool,
    /// It may delete queues and create and revoke tokens.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// One right on one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRight {
    Put,
    Consume,
    Get,
}

impl fmt::Display for QueueRight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueueRight::Put => "put",
            QueueRight::Consume => "consume",
            QueueRight::Get => "get",
        })
    }
}

fn everything() -> Vec<Pattern> {
    vec![Pattern::new(">").unwrap_or_else(|_| unreachable!("`>` is a valid pattern"))]
}

impl Rights {
    /// Every right: what `--key` gives.
    pub fn all() -> Rights {
        Rights {
            put: everything(),
            consume: everything(),
            get: everything(),
            publish: everything(),
            subscribe: everything(),
            trusted: Vec::new(),
            stats: true,
            admin: true,
        }
    }

    fn queue_patterns(&self, right: QueueRight) -> &[Pattern] {
        match right {
            QueueRight::Put => &self.put,
            QueueRight::Consume => &self.consume,
            QueueRight::Get => &self.get,
        }
    }

    /// Whether its results on `queue` count alone for a redundant task.
    pub fn trusts(&self, queue: &QueueName) -> bool {
        self.trusted.iter().any(|p| p.matches_name(queue.as_str()))
    }

    /// Whether it may `right` the queue `queue`.
    pub fn allows_queue(&self, right: QueueRight, queue: &QueueName) -> bool {
        self.queue_patterns(right)
            .iter()
            .any(|p| p.matches_name(queue.as_str()))
    }

    pub fn allows_publish(&self, topic: &Topic) -> bool {
        self.publish.iter().any(|p| p.matches(topic))
    }

    /// Whether every topic `pattern` matches is one it may subscribe to.
    pub fn allows_subscribe(&self, pattern: &Pattern) -> bool {
        self.subscribe.iter().any(|p| p.covers(pattern))
    }

    /// The first right of `wanted` that this set does not include, in words (`consume on
    /// "jobs.>"`); `None` when it includes them all. A token may only carry rights its creator
    /// has.
    pub fn missing_from(&self, wanted: &Rights) -> Option<String> {
        let lists = [
            ("put on queue", &self.put, &wanted.put),
            ("consume on queue", &self.consume, &wanted.consume),
            ("get on queue", &self.get, &wanted.get),
            ("publish on topic", &self.publish, &wanted.publish),
            ("subscribe to", &self.subscribe, &wanted.subscribe),
            ("trusted on queue", &self.trusted, &wanted.trusted),
        ];
        for (what, have, want) in lists {
            if let Some(p) = want.iter().find(|w| !have.iter().any(|h| h.covers(w))) {
                return Some(format!("{what} {:?}", p.as_str()));
            }
        }
        if wanted.stats && !self.stats {
            return Some("stats".into());
        }
        if wanted.admin && !self.admin {
            return Some("admin".into());
        }
        None
    }

    /// Whether it grants nothing at all.
    pub fn is_empty(&self) -> bool {
        *self == Rights::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(list: &[&str]) -> Vec<Pattern> {
        list.iter().map(|p| Pattern::new(*p).unwrap()).collect()
    }

    #[test]
    fn queue_rights_match_names_with_wildcards() {
        let r = Rights {
            consume: pats(&["tasks", "jobs.*"]),
            get: pats(&["results.>"]),
            ..Rights::default()
        };
        let q = |n: &str| QueueName::new(n).unwrap();
        assert!(r.allows_queue(QueueRight::Consume, &q("tasks")));
        assert!(r.allows_queue(QueueRight::Consume, &q("jobs.eu")));
        assert!(!r.allows_queue(QueueRight::Consume, &q("jobs.eu.x")));
        assert!(!r.allows_queue(QueueRight::Consume, &q("tasks.dead")));
        assert!(!r.allows_queue(QueueRight::Put, &q("tasks")));
        assert!(r.allows_queue(QueueRight::Get, &q("results.a.b")));
        assert!(!r.allows_queue(QueueRight::Get, &q("results")));
    }

    #[test]
    fn a_subscription_must_lie_within_a_granted_pattern() {
        let r = Rights {
            subscribe: pats(&["events.>", "logs.*"]),
            ..Rights::default()
        };
        let p = |s: &str| Pattern::new(s).unwrap();
        assert!(r.allows_subscribe(&p("events.>")));
        assert!(r.allows_subscribe(&p("events.*.eu")));
        assert!(r.allows_subscribe(&p("logs.web")));
        assert!(r.allows_subscribe(&p("logs.*")));
        assert!(!r.allows_subscribe(&p("logs.>")));
        assert!(!r.allows_subscribe(&p(">")));
        assert!(!r.allows_subscribe(&p("events")));
    }

    #[test]
    fn a_token_may_only_carry_its_creators_rights() {
        let creator = Rights {
            consume: pats(&["jobs.>"]),
            stats: true,
            ..Rights::default()
        };
        let ok = Rights {
            consume: pats(&["jobs.eu"]),
            ..Rights::default()
        };
        assert_eq!(creator.missing_from(&ok), None);
        let too_much = Rights {
            consume: pats(&["jobs.eu", "other"]),
            ..Rights::default()
        };
        assert_eq!(
            creator.missing_from(&too_much).as_deref(),
            Some("consume on queue \"other\"")
        );
        let admin = Rights {
            admin: true,
            ..Rights::default()
        };
        assert_eq!(creator.missing_from(&admin).as_deref(), Some("admin"));
        assert_eq!(Rights::all().missing_from(&Rights::all()), None);
    }

    #[test]
    fn rights_read_from_json_refuse_unknown_names() {
        let r: Rights = serde_json::from_str(r#"{"consume":["tasks"],"stats":true}"#).unwrap();
        assert!(r.stats && r.consume.len() == 1);
        let err = serde_json::from_str::<Rights>(r#"{"consumee":["tasks"]}"#).unwrap_err();
        assert!(err.to_string().contains("consumee"), "{err}");
    }
}
