//! A connection as the actor sees it: its outbox and what it subscribed to.

use std::collections::HashSet;

use tokio::sync::mpsc;

use super::{Outgoing, SessionId};
use crate::request::EventPattern;

pub(super) struct Conn {
    pub(super) outbox: mpsc::Sender<Outgoing>,
    /// Subscriptions other than to one session's events.
    pub(super) patterns: Vec<EventPattern>,
    /// Sessions whose events this connection gets (`session_pattern`): the sessions it
    /// created, and explicit subscriptions of that shape. A set, so that events and
    /// destroys cost the same with 10,000 sessions on the connection as with one.
    pub(super) sessions: HashSet<SessionId>,
    pub(super) dropped_events: u64,
}

impl Conn {
    pub(super) fn new(outbox: mpsc::Sender<Outgoing>) -> Self {
        Conn {
            outbox,
            patterns: Vec::new(),
            sessions: HashSet::new(),
            dropped_events: 0,
        }
    }

    pub(super) fn wants(&self, subclass: &str, kind: &str, obj_id: &str) -> bool {
        (subclass == "session" && self.sessions.contains(obj_id))
            || self
                .patterns
                .iter()
                .any(|p| p.matches("media", subclass, kind, obj_id))
    }

    pub(super) fn subscribe(&mut self, p: EventPattern) {
        match session_of(&p) {
            Some(id) => {
                self.sessions.insert(SessionId::from(id));
            }
            None if !self.patterns.contains(&p) => self.patterns.push(p),
            None => {}
        }
    }

    pub(super) fn unsubscribe(&mut self, p: &EventPattern) {
        if let Some(id) = session_of(p) {
            self.sessions.remove(id);
        }
        self.patterns.retain(|q| q != p);
    }
}

/// The session a pattern of `session_pattern`'s shape names.
fn session_of(p: &EventPattern) -> Option<&str> {
    (p.class == "media" && p.subclass == "session" && p.kind == "*" && p.obj_id != "*")
        .then_some(p.obj_id.as_str())
}

/// The subscription to one session's events (what `create` gives its connection).
pub fn session_pattern(id: &SessionId) -> EventPattern {
    EventPattern {
        class: "media".into(),
        subclass: "session".into(),
        kind: "*".into(),
        obj_id: id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(subclass: &str, kind: &str, obj_id: &str) -> EventPattern {
        EventPattern {
            class: "media".into(),
            subclass: subclass.into(),
            kind: kind.into(),
            obj_id: obj_id.into(),
        }
    }

    #[test]
    fn connection_subscriptions_by_session_and_by_pattern() {
        let (tx, _rx) = mpsc::channel(1);
        let mut c = Conn::new(tx);
        assert!(!c.wants("session", "stop", "s1"));
        // A session's own subscription (what `create` makes) goes into the set.
        c.subscribe(session_pattern(&"s1".into()));
        assert!(c.patterns.is_empty());
        assert!(c.wants("session", "stop", "s1"));
        assert!(!c.wants("session", "stop", "s2"));
        assert!(!c.wants("room", "stop", "s1"), "only session events");
        // Anything else is a pattern, matched as before; duplicates are kept once.
        c.subscribe(pattern("*", "destroyed", "*"));
        c.subscribe(pattern("*", "destroyed", "*"));
        assert_eq!(c.patterns.len(), 1);
        assert!(c.wants("session", "destroyed", "s2"));
        assert!(c.wants("room", "destroyed", "r1"));
        c.unsubscribe(&session_pattern(&"s1".into()));
        assert!(!c.wants("session", "stop", "s1"));
        assert!(c.wants("session", "destroyed", "s1"));
        c.unsubscribe(&pattern("*", "destroyed", "*"));
        assert!(!c.wants("session", "destroyed", "s1"));
    }
}
