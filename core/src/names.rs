//! Validated names and ids. Each is checked once, when a message is decoded, so the rest of the code
//! can trust it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest queue name, in bytes.
pub const MAX_QUEUE_NAME: usize = 128;
/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC: usize = 256;
/// Prefix of the per-session reply inboxes. Names under it are reserved for the hub.
pub const INBOX_PREFIX: &str = "_inbox.";
/// Suffix of a queue's dead-letter queue.
pub const DEAD_SUFFIX: &str = ".dead";

/// Why a name was refused. The message names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(String);

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':')
}

/// A queue name: 1 to 128 bytes of `A-Z a-z 0-9 _ - : .`, or such a name followed by `.dead`
/// (a dead-letter queue, so up to 133 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueName(String);

impl QueueName {
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        let base = name.strip_suffix(DEAD_SUFFIX).unwrap_or(&name);
        if name.is_empty() || base.len() > MAX_QUEUE_NAME {
            return Err(NameError(format!(
                "queue name must be 1 to {MAX_QUEUE_NAME} bytes (plus {DEAD_SUFFIX} for a dead-letter queue), got {}",
                name.len()
            )));
        }
        if let Some(c) = name.chars().find(|&c| !(token_char(c) || c == '.')) {
            return Err(NameError(format!(
                "queue name {name:?} contains {c:?}; allowed are letters, digits and _ - : ."
            )));
        }
        Ok(QueueName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The private reply inbox of a session.
    pub fn inbox(session: SessionId) -> QueueName {
        QueueName(format!("{INBOX_PREFIX}{}", session.0))
    }

    /// Whether this names a session's reply inbox.
    pub fn is_inbox(&self) -> bool {
        self.0.starts_with(INBOX_PREFIX)
    }

    /// The session whose reply inbox this is, if it is one ([`QueueName::inbox`] backwards).
    pub fn inbox_owner(&self) -> Option<SessionId> {
        self.0
            .strip_prefix(INBOX_PREFIX)?
            .parse()
            .ok()
            .map(SessionId)
    }

    /// This queue's dead-letter queue: `<name>.dead`, for every valid name. A dead-letter queue
    /// is its own (a dead letter that fails again goes back to the end of the same queue).
    pub fn dead_letter(&self) -> QueueName {
        if self.is_dead_letter() {
            return self.clone();
        }
        QueueName(format!("{}{DEAD_SUFFIX}", self.0))
    }

    /// Whether this names a dead-letter queue (`<name>.dead`).
    pub fn is_dead_letter(&self) -> bool {
        self.0.ends_with(DEAD_SUFFIX) && self.0.len() > DEAD_SUFFIX.len()
    }
}

impl TryFrom<String> for QueueName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        QueueName::new(s)
    }
}

impl From<QueueName> for String {
    fn from(q: QueueName) -> String {
        q.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_tokens(s: &str, what: &str, wildcards: bool) -> Result<(), NameError> {
    if s.is_empty() || s.len() > MAX_TOPIC {
        return Err(NameError(format!(
            "{what} must be 1 to {MAX_TOPIC} bytes, got {}",
            s.len()
        )));
    }
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        let ok = match *t {
            "" => false,
            "*" => wildcards,
            ">" => wildcards && i == tokens.len() - 1,
            t => t.chars().all(token_char),
        };
        if !ok {
            let hint = if wildcards {
                "tokens are letters, digits, _ - :, or `*`, or a final `>`"
            } else {
                "tokens are letters, digits and _ - : (no wildcards when publishing)"
            };
            return Err(NameError(format!(
                "{what} {s:?} has a bad token {t:?}: {hint}"
            )));
        }
    }
    Ok(())
}

/// A pub/sub topic: dot-separated tokens, no wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Topic(String);

impl Topic {
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        check_tokens(&s, "topic", false)?;
        Ok(Topic(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Topic {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Topic::new(s)
    }
}

impl From<Topic> for String {
    fn from(t: Topic) -> String {
        t.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subscription pattern: tokens where `*` matches exactly one token and a final `>` matches one
/// or more remaining tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern(String);

impl Pattern {
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        check_tokens(&s, "pattern", true)?;
        Ok(Pattern(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `topic` matches this pattern.
    pub fn matches(&self, topic: &Topic) -> bool {
        self.matches_name(&topic.0)
    }

    /// Whether the dot-separated name `name` (a topic or a queue name) matches this pattern.
    pub fn matches_name(&self, name: &str) -> bool {
        let mut pat = self.0.split('.');
        let mut top = name.split('.');
        loop {
            match (pat.next(), top.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(p), Some(t)) if p == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl Pattern {
    /// Whether every name `other` matches, this pattern matches too (`events.>` covers
    /// `events.*.eu`; `events.*` does not cover `events.>`).
    pub fn covers(&self, other: &Pattern) -> bool {
        let mut mine = self.0.split('.');
        let mut theirs = other.0.split('.');
        loop {
            match (mine.next(), theirs.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(t)) if t != ">" => {}
                (Some(m), Some(t)) if m == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl TryFrom<String> for Pattern {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Pattern::new(s)
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> String {
        p.0
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task id, assigned by the hub when it accepts a `put`. Unique within one hub run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A session id, assigned by the hub after a successful handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The hub URLs in `urls`: one, or several separated by commas. Clients open their session on
/// the first that answers; workers move to the next when theirs goes away.
pub fn hub_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// Hubs to try in turn (from [`hub_urls`]): the current one, and after a failed or lost
/// connection the next, round the list. Workers, tabs, dashboards and `taskhub sub` keep one.
#[derive(Debug, Clone)]
pub struct HubList {
    urls: Vec<String>,
    at: usize,
}

impl HubList {
    pub fn new(urls: &str) -> HubList {
        HubList {
            urls: hub_urls(urls),
            at: 0,
        }
    }

    /// The hub to connect to now (empty if none was given).
    pub fn current(&self) -> &str {
        self.urls.get(self.at).map_or("", String::as_str)
    }

    /// Move on to the next hub of the list.
    pub fn advance(&mut self) {
        self.at = (self.at + 1) % self.urls.len().max(1);
    }

    /// Move on to the hub after `url` (the one a session was on), or to the next if `url` is not
    /// in the list.
    pub fn advance_past(&mut self, url: &str) {
        if let Some(i) = self.urls.iter().position(|u| u == url) {
            self.at = i;
        }
        self.advance();
    }

    /// The whole list, starting at the current hub, comma-separated (for clients that open
    /// their session on the first that answers).
    pub fn from_current(&self) -> String {
        let (before, after) = self.urls.split_at(self.at.min(self.urls.len()));
        after
            .iter()
            .chain(before)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hub_list_goes_round_from_where_it_is() {
        let mut l = HubList::new(" ws://a , ws://b,,ws://c");
        assert_eq!((l.len(), l.current()), (3, "ws://a"));
        l.advance();
        assert_eq!(l.current(), "ws://b");
        assert_eq!(l.from_current(), "ws://b,ws://c,ws://a");
        l.advance_past("ws://c");
        assert_eq!(l.current(), "ws://a");
        l.advance_past("ws://elsewhere");
        assert_eq!(l.current(), "ws://b");
        let mut none = HubList::new("");
        none.advance();
        assert_eq!((none.current(), none.from_current().as_str()), ("", ""));
    }

    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Pattern::new(p).unwrap().matches(&Topic::new(t).unwrap())
    }

    #[test]
    fn wildcards() {
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "a.b.c"));
        assert!(m("a.*", "a.b"));
        assert!(!m("a.*", "a.b.c"));
        assert!(!m("a.*", "a"));
        assert!(m("a.>", "a.b.c"));
        assert!(!m("a.>", "a"));
        assert!(m("*.b.>", "x.b.c.d"));
        assert!(m(">", "anything.at.all"));
    }

    #[test]
    fn bad_names_say_why() {
        let e = QueueName::new("has space").unwrap_err().to_string();
        assert!(e.contains("has space") && e.contains("' '"), "{e}");
        assert!(Topic::new("a.*").is_err());
        assert!(Pattern::new("a.>.b").is_err());
        assert!(Pattern::new("a..b").is_err());
        assert!(QueueName::new("").is_err());
        assert!(QueueName::new("x".repeat(129)).is_err());
    }

    #[test]
    fn every_queue_has_a_dead_letter_queue() {
        let longest = QueueName::new("q".repeat(MAX_QUEUE_NAME)).unwrap();
        let dead = longest.dead_letter();
        assert_eq!(dead.as_str().len(), MAX_QUEUE_NAME + DEAD_SUFFIX.len());
        assert!(dead.is_dead_letter() && !longest.is_dead_letter());
        // Clients can name it, and it is its own dead-letter queue.
        assert_eq!(QueueName::new(dead.as_str()).unwrap(), dead);
        assert_eq!(dead.dead_letter(), dead);
        assert!(QueueName::new(format!("{}{DEAD_SUFFIX}", "q".repeat(129))).is_err());
        assert_eq!(
            QueueName::new("tasks").unwrap().dead_letter().as_str(),
            "tasks.dead"
        );
    }
}
