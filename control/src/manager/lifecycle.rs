//! Birth and death of sessions: registration, timeouts, linked destruction, shutdown.

use std::collections::VecDeque;

use serde_json::json;
use sluice_dataplane::api::{Command, LegId};
use tokio::sync::oneshot;

use super::flows::created_body;
use super::session::{ConnId, Kind, Session};
use super::{Manager, Reply, Timer, session_pattern};
use crate::errors::{ApiError, ErrorCode};

impl Manager {
    /// Registers a new session: leg ownership, the creator's subscription, the `created` event,
    /// mute flags and the first timeout.
    pub(super) fn insert_session(&mut self, s: Session, subscribe: bool) {
        let id = s.id.clone();
        let owner: ConnId = s.owner;
        self.register_legs(&id, &s.legs);
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
                    tracing::info!(%session, "no answer in time: session destroyed");
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
                    tracing::info!(%session, "ready timeout: session destroyed");
                    self.destroy(&session, ErrorCode::SessionTimeout);
                }
            }
            Timer::Grace { conn } => {
                if !self.conns.contains_key(&conn) {
                    self.destroy_owned_by(conn);
                }
            }
        }
    }

    /// The API's `destroy`: the session (and those linked to it) is gone from the actor at
    /// once, but its legs are closed on a blocking thread and the reply waits for that.
    /// `close_leg` blocks until the leg's worker has let go of the sockets, a round trip
    /// through the worker's queue and wake-up; made on the actor it serialised every
    /// create and destroy behind it (≈ 1.3k create+destroy/s, see bench/README.md `churn`).
    /// Waiting in the reply instead keeps the promise that a destroyed session's ports are
    /// reusable once its destroy is answered.
    pub(super) fn destroy_request(&mut self, id: &str) -> Reply {
        if !self.sessions.contains_key(id) {
            return Reply::Done(Err(ApiError::session_not_found(id)));
        }
        let mut legs = Vec::new();
        self.destroy_closing(id, ErrorCode::UserStop, Some(&mut legs));
        let (tx, rx) = oneshot::channel();
        let dp = self.dp.clone();
        tokio::task::spawn_blocking(move || {
            for leg in legs {
                if let Err(e) = dp.close_leg(leg) {
                    tracing::warn!(?leg, "close_leg: {e}");
                }
            }
            let _ = tx.send(Ok(json!({})));
        });
        Reply::Wait(rx)
    }

    /// Destroys a session and, transitively, the sessions linked to it: a proxy's peer
    /// (`peer_stopped`, unless that peer has `stop_after_peer: false`) and a publisher's
    /// listeners (`publisher_stop`).
    pub(super) fn destroy(&mut self, id: &str, reason: ErrorCode) {
        self.destroy_closing(id, reason, None);
    }

    /// `destroy`, closing the legs here, or leaving them in `to_close` for the caller.
    fn destroy_closing(
        &mut self,
        id: &str,
        reason: ErrorCode,
        mut to_close: Option<&mut Vec<LegId>>,
    ) {
        let mut queue = VecDeque::from([(id.to_owned(), reason)]);
        while let Some((id, reason)) = queue.pop_front() {
            let Some(mut s) = self.sessions.remove(&id) else {
                continue;
            };
            self.webrtc_sessions.remove(&id);
            tracing::debug!(session = %id, %reason, "destroying session");
            self.recording_ended(&id, &mut s);
            for leg in &s.legs {
                self.leg_owner.remove(&leg.info.id);
            }
            // A bundled leg serves several m-lines: closed once.
            match to_close.as_deref_mut() {
                Some(out) => {
                    for l in &s.legs {
                        if !out.contains(&l.info.id) {
                            out.push(l.info.id);
                        }
                    }
                }
                None => self.close_legs(&s.legs),
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
                    let mut listeners: Vec<String> = self
                        .sessions
                        .values()
                        .filter(|l| matches!(&l.kind, Kind::Listen { publisher, .. } if *publisher == id))
                        .map(|l| l.id.clone())
                        .collect();
                    listeners.sort();
                    queue.extend(listeners.into_iter().map(|l| (l, ErrorCode::PublisherStop)));
                    self.left_room(room, &id, true);
                }
                Kind::Listen { room, .. } => self.left_room(room, &id, false),
            }
        }
    }

    /// The proxy peer of a destroyed session: destroyed too, or merely cut off.
    fn peer_gone(&mut self, peer: &str, queue: &mut VecDeque<(String, ErrorCode)>) {
        let Some(p) = self.sessions.get(peer) else {
            return;
        };
        if p.stop_after_peer {
            queue.push_back((peer.to_owned(), ErrorCode::PeerStopped));
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
        let mut ids: Vec<String> = self.sessions.keys().cloned().collect();
        ids.sort();
        for id in ids {
            self.destroy(&id, ErrorCode::ProcessDown);
        }
        let mut rooms: Vec<String> = self.rooms.keys().cloned().collect();
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
