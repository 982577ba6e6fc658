//! The manager's side of operations: admission (`--max-sessions`, draining), the drain
//! command, the waiters for "no session left", and the snapshot a `/metrics` scrape sums.
//!
//! The counters of a closed leg are taken when its `Event::LegClosed` arrives: its worker has
//! let go of it then, so the value is final and the node's totals only grow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_dataplane::api::{LegId, LegInfo, LegStats};
use tokio::sync::oneshot;

use super::{Manager, Outcome};
use crate::errors::{ApiError, ErrorCode};
use crate::metrics::{Snapshot, Traffic, session_type_index};
use crate::ops::Ops;

/// Admission settings, node state and leg counters, owned by the actor.
#[derive(Debug)]
pub struct Operations {
    ops: Arc<Ops>,
    /// 0 = unlimited.
    max_sessions: usize,
    /// The counters of every open leg, by leg (a bundled leg once).
    live: HashMap<LegId, Arc<LegStats>>,
    /// What the closed legs had counted.
    closed: Traffic,
    /// Drain supervisors waiting for the last session to end.
    idle: Vec<oneshot::Sender<()>>,
}

impl Default for Operations {
    fn default() -> Self {
        Operations::new(Arc::new(Ops::new(Duration::ZERO)), 0)
    }
}

impl Operations {
    pub fn new(ops: Arc<Ops>, max_sessions: usize) -> Self {
        Operations {
            ops,
            max_sessions,
            live: HashMap::new(),
            closed: Traffic::default(),
            idle: Vec::new(),
        }
    }

    /// A leg the data plane opened.
    pub fn opened(&mut self, info: &LegInfo) {
        self.live.insert(info.id, Arc::clone(&info.stats));
    }

    /// A leg whose closing the data plane confirmed: its counters are final.
    pub fn closed(&mut self, leg: LegId) {
        if let Some(stats) = self.live.remove(&leg) {
            self.closed.add(&stats.snapshot());
        }
    }
}

impl Manager {
    /// Replaces the defaults (no session limit, a node state of its own).
    pub fn with_operations(mut self, ops: Arc<Ops>, max_sessions: usize) -> Self {
        self.operations = Operations::new(ops, max_sessions);
        self
    }

    /// A `create` may go ahead: the node is not draining and below `--max-sessions`.
    /// Checked before anything is allocated.
    pub(super) fn admit_create(&self) -> Result<(), ApiError> {
        if self.operations.ops.is_draining() {
            return Err(ApiError::new(
                ErrorCode::NoMediaserver,
                "this node is draining and accepts no new session",
            ));
        }
        self.admit_session()
    }

    /// One more session fits under `--max-sessions` (also for a proxy slave made by
    /// `get_proxy_offer`).
    pub(super) fn admit_session(&self) -> Result<(), ApiError> {
        let max = self.operations.max_sessions;
        if max > 0 && self.sessions.len() >= max {
            return Err(ApiError::new(
                ErrorCode::NoMediaserver,
                format!("session limit reached: {max} sessions (--max-sessions)"),
            ));
        }
        Ok(())
    }

    /// `media/node/drain`.
    pub(super) fn drain_request(&mut self, timeout: Option<Duration>) -> Outcome {
        if self.operations.ops.start_drain(timeout) {
            tracing::info!(
                sessions = self.sessions.len(),
                "drain requested over the API"
            );
        }
        Ok(json!({ "state": "draining", "sessions": self.sessions.len() }))
    }

    /// `Msg::WhenIdle`: answered once no session is left (at once if none is).
    pub(super) fn when_idle(&mut self, reply: oneshot::Sender<()>) {
        self.operations.idle.push(reply);
        self.notify_idle();
    }

    /// Answers the idle waiters when the last session is gone, and with it the last
    /// `destroy` waiting for its ports (that reply goes out before the node stops).
    pub(super) fn notify_idle(&mut self) {
        if self.operations.idle.is_empty() || !self.sessions.is_empty() || !self.closings.is_empty()
        {
            return;
        }
        for w in self.operations.idle.drain(..) {
            let _ = w.send(());
        }
    }

    pub(super) fn register_opened(&mut self, info: &LegInfo) {
        self.operations.opened(info);
    }

    pub(super) fn register_closed(&mut self, leg: LegId) {
        self.operations.closed(leg);
    }

    /// What a `/metrics` scrape sums (cheap: counts and `Arc` clones, no counter is read).
    pub(super) fn snapshot(&self) -> Snapshot {
        let mut sessions = [0u64; 4];
        let mut recordings_active = 0;
        for s in self.sessions.values() {
            sessions[session_type_index(s.kind.session_type())] += 1;
            if s.recording.as_ref().is_some_and(|r| r.active) {
                recordings_active += 1;
            }
        }
        Snapshot {
            sessions,
            rooms: self.rooms.len() as u64,
            recordings_active,
            live_legs: self.operations.live.values().cloned().collect(),
            closed: self.operations.closed,
            draining: self.operations.ops.is_draining(),
        }
    }
}
