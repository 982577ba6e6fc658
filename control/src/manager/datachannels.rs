//! Data channels as sessions use them: `echo` answers on the same channel, a publisher's
//! channels are mirrored on its listeners (`set_type` re-points the mirrors), and a
//! WebRTC↔WebRTC proxy mirrors each leg's channels on the other. `mute_data` drops (counted)
//! at the relay point; channels stay open. The SCTP/DCEP work is the transport's
//! ([`crate::webrtc::transport`]); this is only who sends what where. A relay publisher (a
//! publisher of another cluster node) has no transport: its channels come from that node
//! (`relay_channels.rs`) and are mirrored here the same way.

use std::time::Instant;

use crate::manager::session::Kind;
use crate::manager::{Manager, SessionId};
use crate::webrtc::dcep::ChannelSpec;
use crate::webrtc::sctp::SctpEvent;
use crate::webrtc::transport::WebrtcTransport;

impl Manager {
    /// A data-channel event of the session's peer:
    /// - `echo`: every message goes back on its channel as it came;
    /// - `publish`: each channel is mirrored on every listener (same label, protocol,
    ///   ordering, reliability), messages follow, a closed channel closes its mirrors;
    /// - `listen`: once SCTP is up the publisher's channels are mirrored; what the listener
    ///   sends goes nowhere (counted).
    ///
    /// `mute_data` drops (counted) what an echo's or publisher's peer sends, and what goes to
    /// a listener's peer; channels stay open. A recording session records what it does not
    /// drop: what its peer sends, or for a listener what it is sent.
    pub(in crate::manager) fn data_event(&mut self, id: &SessionId, ev: SctpEvent) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        let muted = s.media.mute_data;
        let kind = s.kind.clone();
        if let (SctpEvent::Message { data, .. }, Some(rec)) = (&ev, &s.recording)
            && !muted
            && !matches!(kind, Kind::Listen { .. })
        {
            rec.record_data(data);
        }
        let Some(t) = s.webrtc.as_mut() else {
            return;
        };
        let now = Instant::now();
        match (kind, ev) {
            (Kind::Echo, SctpEvent::Message { sid, kind, data }) => {
                if muted {
                    t.count_muted();
                    return;
                }
                let mut out = Vec::new();
                if let Err(e) = t.send_data(now, sid, kind, &data, &mut out) {
                    tracing::debug!(session_id = %id, sid, error = %e, "data echo not sent");
                }
                self.apply_effects(id, out);
            }
            (Kind::Publish { .. }, SctpEvent::Message { .. }) if muted => t.count_muted(),
            (
                Kind::Publish { .. },
                ev @ (SctpEvent::ChannelOpen { .. }
                | SctpEvent::ChannelClosed { .. }
                | SctpEvent::Message { .. }),
            ) => self.publisher_data(id, ev, now),
            (Kind::Listen { publisher, .. }, SctpEvent::Connected) => {
                for (sid, spec) in self.publisher_channels(&publisher) {
                    self.open_mirror(id, sid, &spec, now);
                }
            }
            (Kind::Listen { .. }, SctpEvent::Message { .. }) => t.count_unrelayed(),
            (Kind::ProxyMaster { slave: Some(other) } | Kind::ProxySlave { master: other }, ev) => {
                if muted && matches!(ev, SctpEvent::Message { .. }) {
                    t.count_muted();
                    return;
                }
                self.proxy_data(id, &other, ev, now);
            }
            _ => {}
        }
    }

    /// A channel event of publisher `id` (its peer's, or for a relay publisher its origin's
    /// on another node): mirrored on every listener here, and carried to the nodes that
    /// relay the publisher.
    pub(in crate::manager) fn publisher_data(
        &mut self,
        id: &SessionId,
        ev: SctpEvent,
        now: Instant,
    ) {
        self.relay_out(id, &ev);
        match ev {
            SctpEvent::ChannelOpen { sid, spec } => {
                for l in self.listeners_of(id) {
                    self.open_mirror(&l, sid, &spec, now);
                }
            }
            SctpEvent::ChannelClosed { sid } => {
                for l in self.listeners_of(id) {
                    let mut out = Vec::new();
                    if let Some(t) = self.sessions.get_mut(&l).and_then(|s| s.webrtc.as_mut())
                        && let Some(mirror) = t.take_mirror(sid)
                    {
                        t.close_channel(now, mirror, &mut out);
                    }
                    self.apply_effects(&l, out);
                }
            }
            SctpEvent::Message { sid, kind, data } => {
                for l in self.listeners_of(id) {
                    let Some(ls) = self.sessions.get_mut(&l) else {
                        continue;
                    };
                    let muted = ls.media.mute_data;
                    let rec = &ls.recording;
                    let Some(t) = ls.webrtc.as_mut() else {
                        continue;
                    };
                    // A mirror not open yet (its SCTP still connecting) loses the message.
                    let Some(mirror) = t.mirror(sid) else {
                        t.count_unrelayed();
                        continue;
                    };
                    if muted {
                        t.count_muted();
                        continue;
                    }
                    let mut out = Vec::new();
                    if t.send_data(now, mirror, kind, &data, &mut out).is_ok()
                        && let Some(rec) = rec
                    {
                        rec.record_data(&data);
                    }
                    self.apply_effects(&l, out);
                }
            }
            SctpEvent::Connected | SctpEvent::Lost(_) => {}
        }
    }

    /// A proxy relays channels both ways: a channel either peer opens is mirrored on the
    /// other leg; a message on a channel goes to its mirror, or to the channel it mirrors.
    fn proxy_data(&mut self, id: &SessionId, other: &SessionId, ev: SctpEvent, now: Instant) {
        match ev {
            SctpEvent::Connected => {
                // The other leg's own channels (not the mirrors we opened there) get mirrors.
                let Some(o) = transport_mut(self, other) else {
                    return;
                };
                let channels: Vec<_> = o
                    .data_channels()
                    .into_iter()
                    .filter(|(sid, _)| o.mirror_source(*sid).is_none())
                    .collect();
                for (sid, spec) in channels {
                    self.open_mirror(id, sid, &spec, now);
                }
            }
            SctpEvent::ChannelOpen { sid, spec } => {
                let ours = transport_mut(self, id).is_some_and(|t| t.mirror_source(sid).is_some());
                if !ours {
                    self.open_mirror(other, sid, &spec, now);
                }
            }
            SctpEvent::Message { sid, kind, data } => {
                let source = transport_mut(self, id).and_then(|t| t.mirror_source(sid));
                let Some(o) = transport_mut(self, other) else {
                    return;
                };
                let target = match source {
                    Some(s) => Some(s),
                    None => o.mirror(sid),
                };
                let mut out = Vec::new();
                match target {
                    Some(to) => {
                        let _ = o.send_data(now, to, kind, &data, &mut out);
                    }
                    None => o.count_unrelayed(),
                }
                self.apply_effects(other, out);
            }
            SctpEvent::ChannelClosed { sid } => {
                let source = transport_mut(self, id).and_then(|t| {
                    let s = t.mirror_source(sid)?;
                    t.take_mirror(s).map(|_| s)
                });
                let Some(o) = transport_mut(self, other) else {
                    return;
                };
                let close = match source {
                    Some(s) => Some(s),
                    None => o.take_mirror(sid),
                };
                let mut out = Vec::new();
                if let Some(c) = close {
                    o.close_channel(now, c, &mut out);
                }
                self.apply_effects(other, out);
            }
            SctpEvent::Lost(_) => {}
        }
    }

    /// `set_type`: a listener's mirrors follow its new publisher. A channel of the new
    /// publisher with the label and settings of an open mirror takes that mirror over (the
    /// listener's channel goes on); the others get new mirrors; mirrors left over close.
    pub(in crate::manager) fn repoint_mirrors(&mut self, listener: &SessionId) {
        let Some(Kind::Listen { publisher, .. }) = self.sessions.get(listener).map(|s| &s.kind)
        else {
            return;
        };
        let channels = self.publisher_channels(publisher);
        let now = Instant::now();
        let Some(t) = self
            .sessions
            .get_mut(listener)
            .and_then(|s| s.webrtc.as_mut())
        else {
            return;
        };
        let open = t.data_channels();
        let mut old: Vec<u16> = t.take_mirrors().into_iter().map(|(_, m)| m).collect();
        let mut fresh = Vec::new();
        for (sid, spec) in channels {
            let same = old
                .iter()
                .position(|m| open.iter().any(|(o, s)| o == m && *s == spec));
            match same {
                Some(i) => t.set_mirror(sid, old.swap_remove(i)),
                None => fresh.push((sid, spec)),
            }
        }
        let mut out = Vec::new();
        for m in old {
            t.close_channel(now, m, &mut out);
        }
        self.apply_effects(listener, out);
        for (sid, spec) in fresh {
            self.open_mirror(listener, sid, &spec, now);
        }
    }

    /// Listeners currently fed by publisher `id`.
    pub(in crate::manager) fn listeners_of(&self, id: &SessionId) -> Vec<SessionId> {
        let Some(Kind::Publish { room }) = self.sessions.get(id).map(|s| &s.kind) else {
            return Vec::new();
        };
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.listeners
            .iter()
            .filter(|l| {
                self.sessions.get(*l).is_some_and(
                    |s| matches!(&s.kind, Kind::Listen { publisher, .. } if publisher == id),
                )
            })
            .cloned()
            .collect()
    }

    /// Opens on listener `listener` the mirror of its publisher's channel `sid`, once its
    /// SCTP is up (else [`SctpEvent::Connected`] does it later).
    fn open_mirror(&mut self, listener: &SessionId, sid: u16, spec: &ChannelSpec, now: Instant) {
        let Some(t) = self
            .sessions
            .get_mut(listener)
            .and_then(|s| s.webrtc.as_mut())
        else {
            return;
        };
        if !t.data_connected() || t.mirror(sid).is_some() {
            return;
        }
        let mut out = Vec::new();
        if let Some(mirror) = t.open_channel(now, spec.clone(), &mut out) {
            t.set_mirror(sid, mirror);
        }
        self.apply_effects(listener, out);
    }
}

fn transport_mut<'a>(m: &'a mut Manager, id: &SessionId) -> Option<&'a mut WebrtcTransport> {
    m.sessions.get_mut(id).and_then(|s| s.webrtc.as_deref_mut())
}
