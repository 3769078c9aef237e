//! Subscriptions: which sessions hear which topics. Delivery is at-most-once; the driver drops a
//! message for a subscriber whose outbox is full.

use taskhub_core::{Pattern, SessionId, Topic};

#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    subs: Vec<(SessionId, Pattern)>,
}

impl Subscriptions {
    pub fn add(&mut self, session: SessionId, pattern: Pattern) {
        if !self.has(session, &pattern) {
            self.subs.push((session, pattern));
        }
    }

    pub fn has(&self, session: SessionId, pattern: &Pattern) -> bool {
        self.subs.iter().any(|(s, p)| *s == session && p == pattern)
    }

    pub fn count(&self, session: SessionId) -> usize {
        self.subs.iter().filter(|(s, _)| *s == session).count()
    }

    pub fn remove(&mut self, session: SessionId, pattern: &Pattern) {
        self.subs.retain(|(s, p)| !(*s == session && p == pattern));
    }

    pub fn remove_session(&mut self, session: SessionId) {
        self.subs.retain(|(s, _)| *s != session);
    }

    /// Each session with a matching pattern, once even if several of its patterns match.
    pub fn matching(&self, topic: &Topic) -> Vec<SessionId> {
        let mut out: Vec<SessionId> = self
            .subs
            .iter()
            .filter(|(_, p)| p.matches(topic))
            .map(|(s, _)| *s)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}
