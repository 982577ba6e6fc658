//! The manager's side of operations: admission (`--max-sessions`, `--max-bitrate`,
//! draining), the drain command, the waiters for "no session left", and the snapshot a
//! `/metrics` scrape sums.
//!
//! `--max-bitrate` weighs each session by the ingress it may bring: its effective cap
//! (`bitrate`, or its room's `room_bitrate`) when it has one, else [`DEFAULT_AUDIO_BPS`] per
//! audio and [`DEFAULT_VIDEO_BPS`] per video m-line. A listener's peer sends no media (0); a
//! proxy master without its slave yet also holds an uncapped estimate for the slave's peer,
//! so that the slave, made later, needs no admission of its own. Estimates, not
//! measurements: a node is filled by what its sessions are allowed to send.
//!
//! The counters of a closed leg are taken when its `Event::LegClosed` arrives: its worker has
//! let go of it then, so the value is final and the node's totals only grow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_dataplane::api::{Event, LegId, LegInfo, LegStats, MediaKind};
use tokio::sync::oneshot;
use tracing::Span;

use super::quality::min_cap;
use super::session::{Kind, MediaLine, Session};
use super::{Manager, Outcome};
use crate::errors::{ApiError, ErrorCode};
use crate::metrics::{Snapshot, Traffic, session_type_index};
use crate::ops::Ops;
use crate::request::{CreateSession, Request, SessionType};
use crate::sdp::{self, Sdp};

/// What an audio m-line without a cap counts for `--max-bitrate` (bits/s).
pub const DEFAULT_AUDIO_BPS: u64 = 64_000;
/// What a video m-line without a cap counts for `--max-bitrate` (bits/s).
pub const DEFAULT_VIDEO_BPS: u64 = 2_000_000;

/// Admission settings, node state and leg counters, owned by the actor.
#[derive(Debug)]
pub struct Operations {
    ops: Arc<Ops>,
    /// 0 = unlimited.
    max_sessions: usize,
    /// Total estimated ingress, bits/s; 0 = unlimited.
    max_bitrate: u64,
    /// The counters of every open leg, by leg (a bundled leg once).
    live: HashMap<LegId, Arc<LegStats>>,
    /// What the closed legs had counted.
    closed: Traffic,
    /// Data-channel messages (in, out) of the sessions already gone.
    closed_data: [u64; 2],
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
            max_bitrate: 0,
            live: HashMap::new(),
            closed: Traffic::default(),
            closed_data: [0, 0],
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

    /// A session with data channels is gone: its counts stay in the sums.
    pub fn data_closed(&mut self, messages: [u64; 2]) {
        self.closed_data[0] += messages[0];
        self.closed_data[1] += messages[1];
    }

    /// `n` data-channel events of a relayed publisher dropped (`relay_channels.rs`).
    pub fn relay_data_dropped(&self, n: u64) {
        self.ops.cluster.data_dropped(n);
    }
}

impl Manager {
    /// Replaces the defaults (no session limit, a node state of its own).
    pub fn with_operations(mut self, ops: Arc<Ops>, max_sessions: usize) -> Self {
        self.operations = Operations::new(ops, max_sessions);
        self
    }

    /// Sets `--max-bitrate` (0 = unlimited).
    pub fn with_max_bitrate(mut self, bps: u64) -> Self {
        self.operations.max_bitrate = bps;
        self
    }

    /// A `create` may go ahead: the node is not draining, below `--max-sessions`, and the
    /// new session's estimated ingress fits under `--max-bitrate`. Checked before anything is
    /// allocated.
    pub(super) fn admit_create(&self, c: &CreateSession) -> Result<(), ApiError> {
        if self.operations.ops.is_draining() {
            return Err(ApiError::new(
                ErrorCode::NoMediaserver,
                "this node is draining and accepts no new session",
            ));
        }
        self.admit_session()?;
        let max = self.operations.max_bitrate;
        if max == 0 {
            return Ok(());
        }
        let new = self.create_ingress(c);
        let now: u64 = self
            .sessions
            .values()
            .map(|s| self.session_ingress(s))
            .sum();
        if new > 0 && now.saturating_add(new) > max {
            return Err(ApiError::new(
                ErrorCode::NoMediaserver,
                format!(
                    "bitrate limit reached: {now} bps in use + {new} bps for this session > \
                     {max} bps (--max-bitrate)"
                ),
            ));
        }
        Ok(())
    }

    /// The ingress a live session counts for (see the module docs).
    pub(super) fn session_ingress(&self, s: &Session) -> u64 {
        let uncapped = lines_bps(&s.legs);
        let own = match self.effective_bitrate(s) {
            0 => uncapped,
            cap => cap,
        };
        match &s.kind {
            Kind::Listen { .. } => 0,
            Kind::ProxyMaster { slave: None } => own.saturating_add(uncapped),
            _ => own,
        }
    }

    /// The ingress a `create` would add, from its offer and caps.
    fn create_ingress(&self, c: &CreateSession) -> u64 {
        let offered = || {
            c.offer
                .as_ref()
                .and_then(|o| o.sdp.as_deref())
                .and_then(|text| Sdp::parse(text).ok())
                .map_or(0, |sdp| offer_bps(&sdp))
        };
        let capped = |uncapped: u64, room_kbps: u64| match min_cap(
            c.media.bitrate.unwrap_or(0),
            room_kbps.saturating_mul(1000),
        ) {
            0 => uncapped,
            cap => cap,
        };
        match (c.session_type, &c.master_id) {
            (SessionType::Listen, _) | (SessionType::Proxy, Some(_)) => 0,
            (SessionType::Echo, _) => capped(offered(), 0),
            (SessionType::Proxy, None) => {
                let uncapped = offered();
                capped(uncapped, 0).saturating_add(uncapped)
            }
            (SessionType::Publish, _) => {
                let room = c
                    .room_id
                    .as_ref()
                    .and_then(|r| self.rooms.get(r))
                    .map_or(c.room_bitrate.unwrap_or(0), |r| r.bitrate);
                capped(offered(), room)
            }
        }
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

    /// True while the node drains.
    pub(super) fn draining(&self) -> bool {
        self.operations.ops.is_draining()
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

    /// The span of a request about one session: every log line while the manager handles it
    /// carries `session_id`.
    pub(super) fn request_span(&self, request: &Request) -> Span {
        match request.session_id() {
            Some(id) => tracing::info_span!("request", session_id = %id),
            None => Span::none(),
        }
    }

    /// The span of a data-plane event on a session's leg.
    pub(super) fn event_span(&self, ev: &Event) -> Span {
        let leg = match ev {
            Event::SlowPath { leg, .. }
            | Event::SrtpRefused { leg, .. }
            | Event::LegClosed { leg }
            | Event::MediaUp { leg, .. }
            | Event::MediaDown { leg, .. }
            | Event::SlowLink { leg, .. }
            | Event::Latched { leg, .. } => *leg,
            #[allow(unreachable_patterns)]
            _ => return Span::none(),
        };
        match self.leg_owner.get(&leg) {
            Some(id) => tracing::info_span!("media", session_id = %id),
            None => Span::none(),
        }
    }

    /// Estimated ingress of every session, bits/s (for `/metrics`).
    pub(super) fn ingress_estimate(&self) -> u64 {
        self.sessions
            .values()
            .map(|s| self.session_ingress(s))
            .sum()
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
        let closed = self.operations.closed;
        Snapshot {
            sessions,
            rooms: self.rooms.len() as u64,
            recordings_active,
            live_legs: self.operations.live.values().cloned().collect(),
            closed,
            draining: self.operations.ops.is_draining(),
            ingress_bps: self.ingress_estimate(),
            workers: self.dp.worker_busy(),
            data_messages: self
                .sessions
                .values()
                .filter_map(|s| s.webrtc.as_ref())
                .fold(self.operations.closed_data, |[i, o], t| {
                    let [ti, to] = t.data_messages();
                    [i + ti, o + to]
                }),
        }
    }
}

fn kind_bps(kind: MediaKind) -> u64 {
    if matches!(kind, MediaKind::Video) {
        DEFAULT_VIDEO_BPS
    } else if matches!(kind, MediaKind::Audio) {
        DEFAULT_AUDIO_BPS
    } else {
        0
    }
}

/// The uncapped estimate of a session's own m-lines.
fn lines_bps(lines: &[MediaLine]) -> u64 {
    lines.iter().map(|l| kind_bps(l.kind)).sum()
}

/// The uncapped estimate of an offer: its audio and video m-lines.
fn offer_bps(offer: &Sdp) -> u64 {
    offer
        .media
        .iter()
        .map(|m| match m.kind {
            sdp::MediaKind::Audio => DEFAULT_AUDIO_BPS,
            sdp::MediaKind::Video => DEFAULT_VIDEO_BPS,
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_counts_its_audio_and_video_lines() {
        let text = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 96\r\n\
                    m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        let sdp = Sdp::parse(text).expect("valid SDP");
        assert_eq!(offer_bps(&sdp), DEFAULT_AUDIO_BPS + DEFAULT_VIDEO_BPS);
    }
}
