//! Birth and death of sessions: registration, timeouts, linked destruction, shutdown.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::json;
use sluice_dataplane::api::{Command, LegId};
use tokio::sync::oneshot;

use super::flows::created_body;
use super::session::{ConnId, Kind, Session};
use super::{Manager, Outcome, Reply, RoomId, SessionId, Timer, session_pattern};
use crate::errors::{ApiError, ErrorCode};

/// How long a `destroy` waits for its legs' closings before it is answered anyway (a worker
/// that stalls that long has bigger problems; its ports come back when it confirms).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// `destroy` replies waiting for their legs to close (`Event::LegClosed`).
#[derive(Debug, Default)]
pub struct Closings {
    /// The wait each closing leg counts towards.
    by_leg: HashMap<LegId, u64>,
    waits: HashMap<u64, CloseWait>,
    next_id: u64,
}

#[derive(Debug)]
struct CloseWait {
    open_legs: usize,
    reply: oneshot::Sender<Outcome>,
}

impl Closings {
    /// Registers a reply that waits for `legs`; `None` when there is nothing to wait for.
    fn wait(&mut self, legs: &[LegId], reply: oneshot::Sender<Outcome>) -> Option<u64> {
        if legs.is_empty() {
            let _ = reply.send(Ok(json!({})));
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        for &leg in legs {
            self.by_leg.insert(leg, id);
        }
        let open_legs = legs.len();
        self.waits.insert(id, CloseWait { open_legs, reply });
        Some(id)
    }

    /// One leg closed: answers its wait if it was the last.
    fn closed(&mut self, leg: LegId) {
        let Some(id) = self.by_leg.remove(&leg) else {
            return;
        };
        let Some(w) = self.waits.get_mut(&id) else {
            return;
        };
        w.open_legs -= 1;
        if w.open_legs == 0 {
            self.answer(id);
        }
    }

    /// Answers a wait now (all closed, or its deadline passed).
    fn answer(&mut self, id: u64) {
        if let Some(w) = self.waits.remove(&id) {
            let _ = w.reply.send(Ok(json!({})));
        }
        self.by_leg.retain(|_, w| *w != id);
    }

    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.waits.len()
    }

    /// No `destroy` reply is waiting for its legs.
    pub fn is_empty(&self) -> bool {
        self.waits.is_empty()
    }
}

impl Manager {
    /// Registers a new session: leg ownership, the creator's subscription, the `created` event,
    /// mute flags and the first timeout.
    pub(super) fn insert_session(&mut self, s: Session, subscribe: bool) {
        let id = s.id.clone();
        let owner: ConnId = s.owner;
        self.register_legs(&id, &s.leg_ids());
        let body = created_body(&s);
        let (after, timer) = if s.is_ready() {
            (
                s.ready_timeout,
                Timer::Ready {
                    session: id.clone(),
                    generation: s.timer_gen,
                },
            )
        } else {
            (
                s.wait_timeout,
                Timer::Wait {
                    session: id.clone(),
                    generation: s.timer_gen,
                },
            )
        };
        if s.webrtc.is_some() {
            self.webrtc_sessions.insert(id.clone());
        }
        self.sessions.insert(id.clone(), s);
        if subscribe {
            self.subscribe_to_session(owner, &id);
        }
        self.emit_session(&id, "created", body);
        self.apply_mute(&id);
        self.push_bitrate(&id, false);
        self.schedule(after, timer);
    }

    pub(super) fn timer(&mut self, t: Timer) {
        match t {
            Timer::Wait {
                session,
                generation,
            } => {
                let expired = self
                    .sessions
                    .get(&session)
                    .is_some_and(|s| s.timer_gen == generation && !s.is_ready());
                if expired {
                    tracing::info!(session_id = %session, "no answer in time: session destroyed");
                    self.destroy(&session, ErrorCode::SessionTimeout);
                }
            }
            Timer::Ready {
                session,
                generation,
            } => {
                if self
                    .sessions
                    .get(&session)
                    .is_some_and(|s| s.timer_gen == generation)
                {
                    tracing::info!(session_id = %session, "ready timeout: session destroyed");
                    self.destroy(&session, ErrorCode::SessionTimeout);
                }
            }
            Timer::RelayLinger { publisher } => self.relay_linger_over(&publisher),
            Timer::Grace { conn } => {
                if !self.conns.contains_key(&conn) {
                    self.destroy_owned_by(conn);
                }
            }
            Timer::Closing { wait } => {
                if self.closings.waits.contains_key(&wait) {
                    tracing::warn!("legs not confirmed closed in time: destroy answered anyway");
                    self.closings.answer(wait);
                }
            }
        }
    }

    /// The API's `destroy`: the session (and those linked to it) is gone from the actor at
    /// once and its legs' closings are handed to the data plane; the reply waits for their
    /// `Event::LegClosed`, so a destroyed session's ports are reusable once its destroy is
    /// answered, while the actor serves other requests meanwhile.
    pub(super) fn destroy_request(&mut self, id: &SessionId) -> Reply {
        if !self.sessions.contains_key(id) {
            return Reply::Done(Err(ApiError::session_not_found(id.as_str())));
        }
        let mut legs = Vec::new();
        self.destroy_closing(id, ErrorCode::UserStop, Some(&mut legs));
        // A leg the data plane would not take is not waited for.
        legs.retain(|&leg| match self.dp.start_close(leg) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(?leg, "close_leg: {e}");
                false
            }
        });
        let (tx, rx) = oneshot::channel();
        if let Some(wait) = self.closings.wait(&legs, tx) {
            self.schedule(CLOSE_WAIT, Timer::Closing { wait });
        }
        Reply::Wait(rx)
    }

    /// `Event::LegClosed`: a `destroy` waiting for that leg may be answered.
    pub(super) fn leg_closed(&mut self, leg: LegId) {
        self.register_closed(leg);
        self.closings.closed(leg);
    }

    /// Destroys a session and, transitively, the sessions linked to it: a proxy's peer
    /// (`peer_stopped`, unless that peer has `stop_after_peer: false`) and a publisher's
    /// listeners (`publisher_stop`).
    pub(super) fn destroy(&mut self, id: &SessionId, reason: ErrorCode) {
        self.destroy_closing(id, reason, None);
    }

    /// `destroy`, closing the legs here, or leaving them in `to_close` for the caller.
    fn destroy_closing(
        &mut self,
        id: &SessionId,
        reason: ErrorCode,
        mut to_close: Option<&mut Vec<LegId>>,
    ) {
        let mut queue = VecDeque::from([(id.clone(), reason)]);
        while let Some((id, reason)) = queue.pop_front() {
            let Some(mut s) = self.sessions.remove(&id) else {
                continue;
            };
            self.webrtc_sessions.remove(&id);
            self.cluster_disown(crate::cluster::Owned::Session, id.as_str());
            self.relay_origins.remove(&id);
            self.relay_data.forget(&id);
            tracing::debug!(session_id = %id, %reason, "destroying session");
            self.recording_ended(&id, &mut s);
            if let Some(t) = &s.webrtc {
                self.operations.data_closed(t.data_messages());
            }
            for leg in s.leg_ids() {
                self.leg_owner.remove(&leg);
                match to_close.as_deref_mut() {
                    Some(out) if !out.contains(&leg) => out.push(leg),
                    Some(_) => {}
                    None => self.close_leg(leg),
                }
            }
            let gone = ApiError::new(
                ErrorCode::SessionStop,
                format!("session destroyed ({reason})"),
            );
            for w in s.answer_waiters.drain(..) {
                let _ = w.send(Err(gone.clone()));
            }
            self.emit_session(
                &id,
                "destroyed",
                json!({ "code": reason.code(), "reason": reason.name() }),
            );
            let own = session_pattern(&id);
            for c in self.conns.values_mut() {
                c.unsubscribe(&own);
            }
            match &s.kind {
                Kind::Echo => {}
                Kind::ProxyMaster { slave } => {
                    if let Some(slave) = slave {
                        self.peer_gone(slave, &mut queue);
                    }
                }
                Kind::ProxySlave { master } => {
                    if let Some(m) = self.sessions.get_mut(master)
                        && let Kind::ProxyMaster { slave } = &mut m.kind
                    {
                        *slave = None;
                    }
                    self.peer_gone(master, &mut queue);
                }
                Kind::Publish { room } => {
                    let mut listeners: Vec<SessionId> = self
                        .sessions
                        .values()
                        .filter(|l| matches!(&l.kind, Kind::Listen { publisher, .. } if *publisher == id))
                        .map(|l| l.id.clone())
                        .collect();
                    listeners.sort();
                    queue.extend(listeners.into_iter().map(|l| (l, ErrorCode::PublisherStop)));
                    self.left_room(room, &id, true);
                }
                Kind::Listen { room, publisher } => {
                    self.left_room(room, &id, false);
                    self.relay_maybe_idle(publisher);
                }
            }
        }
    }

    /// A relay publisher (fed from another cluster node) whose last listener may have left:
    /// it lingers a few seconds for a new one, then ends (and with it the relay stream).
    pub(super) fn relay_maybe_idle(&mut self, publisher: &SessionId) {
        let relay = self
            .sessions
            .get(publisher)
            .is_some_and(|p| crate::cluster::is_relay(p.owner));
        if relay && !self.has_listeners(publisher) {
            self.schedule(
                crate::cluster::RELAY_LINGER,
                Timer::RelayLinger {
                    publisher: publisher.clone(),
                },
            );
        }
    }

    fn has_listeners(&self, publisher: &SessionId) -> bool {
        self.sessions
            .values()
            .any(|l| matches!(&l.kind, Kind::Listen { publisher: p, .. } if p == publisher))
    }

    fn relay_linger_over(&mut self, publisher: &SessionId) {
        if self.sessions.contains_key(publisher) && !self.has_listeners(publisher) {
            tracing::info!(session_id = %publisher, "relay without listeners: closed");
            self.destroy(publisher, ErrorCode::UserStop);
        }
    }

    /// The proxy peer of a destroyed session: destroyed too, or merely cut off.
    fn peer_gone(&mut self, peer: &SessionId, queue: &mut VecDeque<(SessionId, ErrorCode)>) {
        let Some(p) = self.sessions.get(peer) else {
            return;
        };
        if p.stop_after_peer {
            queue.push_back((peer.clone(), ErrorCode::PeerStopped));
            return;
        }
        let mut legs: Vec<_> = p.legs.iter().map(|l| l.info.id).collect();
        legs.dedup();
        for leg in legs {
            let _ = self.send(Command::Disconnect { to: leg });
        }
    }

    /// Stops everything: every session gets `destroyed` with `process_down`, then the
    /// connections' outboxes are dropped so that their writers flush and close.
    pub(super) fn shutdown(&mut self) {
        let mut ids: Vec<SessionId> = self.sessions.keys().cloned().collect();
        ids.sort();
        for id in ids {
            self.destroy(&id, ErrorCode::ProcessDown);
        }
        let mut rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
        rooms.sort();
        for room in rooms {
            self.rooms.remove(&room);
            self.emit_room(
                &room,
                "destroyed",
                super::rooms::stop_body(ErrorCode::ProcessDown),
            );
        }
        self.conns.clear();
    }
}
