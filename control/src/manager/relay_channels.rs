//! Data channels across cluster nodes.
//!
//! A listener on node B of a publisher on node A listens to B's relay publisher, which has
//! no WebRTC transport of its own: its media comes over the relay stream, its data channels
//! over Redis (`cluster/relay_data.rs`). Both ends are here:
//! - on A, a relay listener whose node asked ([`Msg::RelaySync`](super::Msg::RelaySync)) gets
//!   a [`RelayData::Sync`] of its publisher's channels, then every channel event of that
//!   publisher, in its owner's outbox (the relay connection's, published to B in order);
//! - on B, each relay publisher keeps its origin's channels (so listeners that connect later,
//!   and `set_type`, get their mirrors) and whether the origin has a data line at all (so its
//!   listeners' offers carry one); the events become the relay publisher's, mirrored by
//!   [`Manager::publisher_data`] exactly as a local publisher's.
//!
//! What B cannot use is a counted drop (`sluice_cluster_data_dropped_total`): an event for no
//! relay, a message larger than `--data-max-message-size`, a channel beyond
//! `--data-max-channels`, a message on no open channel or for a muted relay publisher.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use super::session::{ConnId, Kind};
use super::{Manager, Outgoing, SessionId};
use crate::cluster::RelayData;
use crate::webrtc::data_limits::DataLimits;
use crate::webrtc::dcep::ChannelSpec;
use crate::webrtc::sctp::SctpEvent;

/// The manager's state of data channels across nodes.
#[derive(Debug, Default)]
pub struct RelayChannels {
    /// Publisher's node: relay listeners whose node gets their publisher's channel events.
    synced: BTreeSet<SessionId>,
    /// Relay's node: the relay publisher each relay listener (there) feeds.
    feeds: HashMap<SessionId, SessionId>,
    /// Relay's node: what each relay publisher's origin has.
    origins: HashMap<SessionId, Origin>,
}

/// A remote publisher's data channels, as its node last said.
#[derive(Debug, Default)]
struct Origin {
    has_data: bool,
    channels: BTreeMap<u16, ChannelSpec>,
}

impl RelayChannels {
    /// Relay publisher `relay` is fed by relay listener `listen` on the publisher's node.
    pub fn fed_by(&mut self, listen: SessionId, relay: SessionId) {
        self.feeds.insert(listen, relay.clone());
        self.origins.entry(relay).or_default();
    }

    /// A session ended: whatever it was in the relays, it is no more.
    pub fn forget(&mut self, id: &SessionId) {
        self.synced.remove(id);
        if self.origins.remove(id).is_some() {
            self.feeds.retain(|_, relay| relay != id);
        }
    }
}

impl Origin {
    /// Applies what the origin's node said: the events the relay publisher's listeners
    /// get, and how many of what was said could not be used.
    fn apply(
        &mut self,
        data: RelayData,
        limits: &DataLimits,
        muted: bool,
    ) -> (Vec<SctpEvent>, u64) {
        let mut events = Vec::new();
        let mut dropped = 0;
        match data {
            RelayData::Sync { has_data, channels } => {
                self.has_data = has_data;
                let mut now_open = BTreeMap::new();
                for (sid, spec) in channels {
                    if now_open.len() < limits.max_channels {
                        now_open.insert(sid, spec);
                    } else {
                        dropped += 1;
                    }
                }
                let before = std::mem::replace(&mut self.channels, now_open.clone());
                // Closed or changed: their mirrors close; new or changed: mirrors open.
                for (sid, spec) in &before {
                    if now_open.get(sid) != Some(spec) {
                        events.push(SctpEvent::ChannelClosed { sid: *sid });
                    }
                }
                for (sid, spec) in now_open {
                    if before.get(&sid) != Some(&spec) {
                        events.push(SctpEvent::ChannelOpen { sid, spec });
                    }
                }
            }
            RelayData::Open { sid, spec } => match self.channels.get(&sid) {
                Some(open) if *open == spec => {}
                Some(_) => {
                    self.channels.insert(sid, spec.clone());
                    events.push(SctpEvent::ChannelClosed { sid });
                    events.push(SctpEvent::ChannelOpen { sid, spec });
                }
                None if self.channels.len() >= limits.max_channels => dropped += 1,
                None => {
                    self.channels.insert(sid, spec.clone());
                    events.push(SctpEvent::ChannelOpen { sid, spec });
                }
            },
            RelayData::Closed { sid } => {
                if self.channels.remove(&sid).is_some() {
                    events.push(SctpEvent::ChannelClosed { sid });
                }
            }
            RelayData::Message { sid, kind, data } => {
                let usable = !muted
                    && data.len() <= limits.max_message_size as usize
                    && self.channels.contains_key(&sid);
                if usable {
                    events.push(SctpEvent::Message { sid, kind, data });
                } else {
                    dropped += 1;
                }
            }
        }
        (events, dropped)
    }
}

impl Manager {
    /// The open channels of publisher `id`: its peer's, or, for a relay publisher, its
    /// origin's on another node.
    pub(super) fn publisher_channels(&self, id: &SessionId) -> Vec<(u16, ChannelSpec)> {
        if let Some(o) = self.relay_data.origins.get(id) {
            return o
                .channels
                .iter()
                .map(|(sid, spec)| (*sid, spec.clone()))
                .collect();
        }
        self.sessions
            .get(id)
            .and_then(|p| p.webrtc.as_ref())
            .map(|t| t.data_channels())
            .unwrap_or_default()
    }

    /// True when publisher `id` has a data line (its listeners are offered one).
    pub(super) fn publisher_has_data(&self, id: &SessionId) -> bool {
        if let Some(o) = self.relay_data.origins.get(id) {
            return o.has_data;
        }
        self.sessions
            .get(id)
            .and_then(|p| p.webrtc.as_ref())
            .is_some_and(|t| t.has_data())
    }

    /// Publisher's node: relay listener `listen` of relay connection `conn` asks for its
    /// publisher's channels; from now on their events follow.
    pub(super) fn relay_sync(&mut self, conn: ConnId, listen: &SessionId) {
        let publisher = match self.sessions.get(listen) {
            Some(s) if s.owner == conn => match &s.kind {
                Kind::Listen { publisher, .. } => publisher.clone(),
                _ => return,
            },
            _ => {
                tracing::debug!(session_id = %listen, "data sync for no relay listener");
                return;
            }
        };
        self.relay_data.synced.insert(listen.clone());
        let data = RelayData::Sync {
            has_data: self.publisher_has_data(&publisher),
            channels: self.publisher_channels(&publisher),
        };
        self.relay_send(conn, listen, data);
    }

    /// Publisher's node: a channel event of publisher `id` goes to each node that relays it.
    pub(super) fn relay_out(&mut self, id: &SessionId, ev: &SctpEvent) {
        if self.relay_data.synced.is_empty() {
            return;
        }
        let relays: Vec<(ConnId, SessionId)> = self
            .listeners_of(id)
            .into_iter()
            .filter(|l| self.relay_data.synced.contains(l))
            .filter_map(|l| self.sessions.get(&l).map(|s| (s.owner, l)))
            .collect();
        if relays.is_empty() {
            return;
        }
        let Some(data) = RelayData::of(ev) else {
            return;
        };
        for (conn, listen) in relays {
            self.relay_send(conn, &listen, data.clone());
        }
    }

    fn relay_send(&mut self, conn: ConnId, listen: &SessionId, data: RelayData) {
        let out = Outgoing::Relay {
            listen: listen.clone(),
            data,
        };
        let sent = self
            .conns
            .get(&conn)
            .is_some_and(|c| c.outbox.try_send(out).is_ok());
        if !sent {
            self.operations.relay_data_dropped(1);
            tracing::debug!(session_id = %listen, "relay data not queued");
        }
    }

    /// Relay's node: a channel event of the publisher that relay listener `listen` (on its
    /// node) carries, applied to the relay publisher it feeds here.
    pub(super) fn relay_data_in(&mut self, listen: &SessionId, data: RelayData) {
        let limits = self.data_limits;
        let Some(relay) = self.relay_data.feeds.get(listen).cloned() else {
            self.operations.relay_data_dropped(1);
            return;
        };
        let muted = self.sessions.get(&relay).is_some_and(|s| s.media.mute_data);
        let Some(origin) = self.relay_data.origins.get_mut(&relay) else {
            self.operations.relay_data_dropped(1);
            return;
        };
        let now = Instant::now();
        let (events, dropped) = origin.apply(data, &limits, muted);
        if dropped > 0 {
            self.operations.relay_data_dropped(dropped);
        }
        for ev in events {
            self.publisher_data(&relay, ev, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webrtc::dcep::Reliability;
    use crate::webrtc::sctp::MessageKind;

    fn limits(max_channels: usize, max_message_size: u32) -> DataLimits {
        DataLimits {
            max_channels,
            max_message_size,
            ..DataLimits::default()
        }
    }

    fn msg(sid: u16, len: usize) -> RelayData {
        RelayData::Message {
            sid,
            kind: MessageKind::Binary,
            data: vec![7; len],
        }
    }

    #[test]
    fn a_sync_replaces_what_was_known() {
        let mut o = Origin::default();
        let l = limits(16, 100);
        let (events, dropped) = o.apply(
            RelayData::Sync {
                has_data: true,
                channels: vec![
                    (1, ChannelSpec::reliable("a")),
                    (3, ChannelSpec::reliable("b")),
                ],
            },
            &l,
            false,
        );
        assert_eq!(dropped, 0);
        assert_eq!(events.len(), 2);
        assert!(o.has_data);
        // "a" goes on, "b" changed its reliability, "c" is new.
        let mut b = ChannelSpec::reliable("b");
        b.reliability = Reliability::MaxRetransmits(2);
        let (events, _) = o.apply(
            RelayData::Sync {
                has_data: true,
                channels: vec![
                    (1, ChannelSpec::reliable("a")),
                    (3, b.clone()),
                    (5, ChannelSpec::reliable("c")),
                ],
            },
            &l,
            false,
        );
        assert_eq!(
            events,
            [
                SctpEvent::ChannelClosed { sid: 3 },
                SctpEvent::ChannelOpen { sid: 3, spec: b },
                SctpEvent::ChannelOpen {
                    sid: 5,
                    spec: ChannelSpec::reliable("c")
                },
            ]
        );
        let (events, _) = o.apply(
            RelayData::Sync {
                has_data: true,
                channels: Vec::new(),
            },
            &l,
            false,
        );
        assert_eq!(events.len(), 3, "every mirror closes");
        assert!(o.channels.is_empty());
    }

    #[test]
    fn channels_beyond_the_limit_are_counted_drops() {
        let mut o = Origin::default();
        let l = limits(1, 100);
        let open = |sid, label| RelayData::Open {
            sid,
            spec: ChannelSpec::reliable(label),
        };
        assert_eq!(o.apply(open(1, "a"), &l, false).1, 0);
        assert_eq!(o.apply(open(1, "a"), &l, false), (Vec::new(), 0), "known");
        let (events, dropped) = o.apply(open(3, "b"), &l, false);
        assert_eq!((events.len(), dropped), (0, 1));
        // Its messages have no channel here: dropped too.
        assert_eq!(o.apply(msg(3, 1), &l, false).1, 1);
        assert_eq!(o.apply(RelayData::Closed { sid: 3 }, &l, false).0, []);
        assert_eq!(o.apply(RelayData::Closed { sid: 1 }, &l, false).0.len(), 1);
        assert_eq!(o.apply(open(3, "b"), &l, false).1, 0, "room again");
    }

    #[test]
    fn messages_too_large_or_muted_are_counted_drops() {
        let mut o = Origin::default();
        let l = limits(16, 100);
        let open = RelayData::Open {
            sid: 1,
            spec: ChannelSpec::reliable("a"),
        };
        o.apply(open, &l, false);
        assert_eq!(o.apply(msg(1, 100), &l, false).0.len(), 1);
        assert_eq!(o.apply(msg(1, 101), &l, false), (Vec::new(), 1));
        assert_eq!(o.apply(msg(1, 1), &l, true), (Vec::new(), 1));
    }

    #[test]
    fn a_relay_publisher_is_forgotten_with_its_feed() {
        let mut r = RelayChannels::default();
        r.fed_by("listen-a".into(), "relay".into());
        r.fed_by("listen-b".into(), "other".into());
        r.synced.insert("listen-here".into());
        r.forget(&"relay".into());
        r.forget(&"listen-here".into());
        assert!(!r.feeds.contains_key(&SessionId::from("listen-a")));
        assert!(r.feeds.contains_key(&SessionId::from("listen-b")));
        assert!(r.synced.is_empty());
        assert!(!r.origins.contains_key(&SessionId::from("relay")));
    }
}
