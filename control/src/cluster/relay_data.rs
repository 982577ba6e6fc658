//! A publisher's data channels as they travel to the nodes that relay it.
//!
//! A relay carries a publisher's RTP between nodes, but data channels live in the
//! publisher's SCTP association, which only its own node has. So the publisher's node sends
//! each node that relays it what its channels do, over that node's Redis channel, in order
//! (one task publishes a relay connection's traffic, one at a time): a [`RelayData::Sync`]
//! when the relay opens (the receiving node asks for it), then every channel opened, closed
//! and every message. The receiving node mirrors them on its listeners as if its relay
//! publisher had a peer of its own.
//!
//! On the bus a [`RelayData`] is a JSON object (message bodies in base64); what arrives is
//! parsed here, at the edge, and anything malformed is an error the caller counts as a drop.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::webrtc::dcep::{ChannelSpec, Reliability};
use crate::webrtc::sctp::{MessageKind, SctpEvent};

/// What a publisher's data channels did, for a node that relays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayData {
    /// The whole state: whether the publisher has a data line at all, and its open channels.
    /// It replaces what the receiving node knew.
    Sync {
        has_data: bool,
        channels: Vec<(u16, ChannelSpec)>,
    },
    Open {
        sid: u16,
        spec: ChannelSpec,
    },
    Closed {
        sid: u16,
    },
    Message {
        sid: u16,
        kind: MessageKind,
        data: Vec<u8>,
    },
}

/// Why a data event from another node cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayDataError {
    #[error("malformed relay data: {0}")]
    Malformed(String),
    #[error("relay data: message body is not base64")]
    Body,
    #[error("relay data: a channel names two reliabilities")]
    Reliability,
    #[error("relay data: label or protocol longer than DCEP carries")]
    TooLong,
}

impl RelayData {
    /// The event a relay carries for a publisher's [`SctpEvent`], if any (the association's
    /// own comings and goings stay on its node).
    pub fn of(ev: &SctpEvent) -> Option<RelayData> {
        match ev {
            SctpEvent::ChannelOpen { sid, spec } => Some(RelayData::Open {
                sid: *sid,
                spec: spec.clone(),
            }),
            SctpEvent::ChannelClosed { sid } => Some(RelayData::Closed { sid: *sid }),
            SctpEvent::Message { sid, kind, data } => Some(RelayData::Message {
                sid: *sid,
                kind: *kind,
                data: data.clone(),
            }),
            SctpEvent::Connected | SctpEvent::Lost(_) => None,
        }
    }

    /// The publisher's event this stands for on the receiving node (`Sync` stands for none).
    pub fn into_event(self) -> Option<SctpEvent> {
        match self {
            RelayData::Sync { .. } => None,
            RelayData::Open { sid, spec } => Some(SctpEvent::ChannelOpen { sid, spec }),
            RelayData::Closed { sid } => Some(SctpEvent::ChannelClosed { sid }),
            RelayData::Message { sid, kind, data } => Some(SctpEvent::Message { sid, kind, data }),
        }
    }

    /// The bus form.
    pub fn to_wire(&self) -> Value {
        let wire = match self {
            RelayData::Sync { has_data, channels } => Wire::Sync {
                has_data: *has_data,
                channels: channels
                    .iter()
                    .map(|(sid, spec)| WireChannel::of(*sid, spec))
                    .collect(),
            },
            RelayData::Open { sid, spec } => Wire::Open {
                channel: WireChannel::of(*sid, spec),
            },
            RelayData::Closed { sid } => Wire::Closed { sid: *sid },
            RelayData::Message { sid, kind, data } => Wire::Msg {
                sid: *sid,
                binary: *kind == MessageKind::Binary,
                body: BASE64.encode(data),
            },
        };
        // A struct of strings, numbers and booleans always serialises.
        serde_json::to_value(wire).unwrap_or(Value::Null)
    }

    /// Parses the bus form.
    pub fn from_wire(v: Value) -> Result<RelayData, RelayDataError> {
        let wire: Wire =
            serde_json::from_value(v).map_err(|e| RelayDataError::Malformed(e.to_string()))?;
        Ok(match wire {
            Wire::Sync { has_data, channels } => RelayData::Sync {
                has_data,
                channels: channels
                    .into_iter()
                    .map(WireChannel::parse)
                    .collect::<Result<_, _>>()?,
            },
            Wire::Open { channel } => {
                let (sid, spec) = channel.parse()?;
                RelayData::Open { sid, spec }
            }
            Wire::Closed { sid } => RelayData::Closed { sid },
            Wire::Msg { sid, binary, body } => RelayData::Message {
                sid,
                kind: if binary {
                    MessageKind::Binary
                } else {
                    MessageKind::Text
                },
                data: BASE64.decode(body).map_err(|_| RelayDataError::Body)?,
            },
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum Wire {
    Sync {
        has_data: bool,
        channels: Vec<WireChannel>,
    },
    Open {
        channel: WireChannel,
    },
    Closed {
        sid: u16,
    },
    Msg {
        sid: u16,
        binary: bool,
        body: String,
    },
}

#[derive(Serialize, Deserialize)]
struct WireChannel {
    sid: u16,
    label: String,
    protocol: String,
    ordered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_retransmits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_lifetime_ms: Option<u32>,
    priority: u16,
}

impl WireChannel {
    fn of(sid: u16, spec: &ChannelSpec) -> WireChannel {
        let (max_retransmits, max_lifetime_ms) = match spec.reliability {
            Reliability::Reliable => (None, None),
            Reliability::MaxRetransmits(n) => (Some(n), None),
            Reliability::MaxLifetimeMs(n) => (None, Some(n)),
        };
        WireChannel {
            sid,
            label: spec.label.clone(),
            protocol: spec.protocol.clone(),
            ordered: spec.ordered,
            max_retransmits,
            max_lifetime_ms,
            priority: spec.priority,
        }
    }

    fn parse(self) -> Result<(u16, ChannelSpec), RelayDataError> {
        // RFC 8832 §5.1: label and protocol lengths are 16-bit.
        let limit = usize::from(u16::MAX);
        if self.label.len() > limit || self.protocol.len() > limit {
            return Err(RelayDataError::TooLong);
        }
        let reliability = match (self.max_retransmits, self.max_lifetime_ms) {
            (None, None) => Reliability::Reliable,
            (Some(n), None) => Reliability::MaxRetransmits(n),
            (None, Some(n)) => Reliability::MaxLifetimeMs(n),
            (Some(_), Some(_)) => return Err(RelayDataError::Reliability),
        };
        let spec = ChannelSpec {
            label: self.label,
            protocol: self.protocol,
            ordered: self.ordered,
            reliability,
            priority: self.priority,
        };
        Ok((self.sid, spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(label: &str, reliability: Reliability, ordered: bool) -> ChannelSpec {
        ChannelSpec {
            label: label.into(),
            protocol: "chat-v1".into(),
            ordered,
            reliability,
            priority: 128,
        }
    }

    #[test]
    fn every_event_reads_back_as_it_was_written() {
        let events = [
            RelayData::Sync {
                has_data: true,
                channels: vec![
                    (1, spec("a", Reliability::Reliable, true)),
                    (3, spec("b", Reliability::MaxRetransmits(2), false)),
                    (5, spec("ü", Reliability::MaxLifetimeMs(150), true)),
                ],
            },
            RelayData::Sync {
                has_data: false,
                channels: Vec::new(),
            },
            RelayData::Open {
                sid: 7,
                spec: spec("chat", Reliability::Reliable, true),
            },
            RelayData::Closed { sid: 7 },
            RelayData::Message {
                sid: 7,
                kind: MessageKind::Binary,
                data: vec![0, 255, 1, 2],
            },
            RelayData::Message {
                sid: 7,
                kind: MessageKind::Text,
                data: Vec::new(),
            },
        ];
        for ev in events {
            let wire = ev.to_wire();
            let text = serde_json::to_string(&wire).expect("json");
            let back = RelayData::from_wire(serde_json::from_str(&text).expect("json"));
            assert_eq!(back, Ok(ev), "{text}");
        }
    }

    #[test]
    fn malformed_data_is_an_error_not_a_panic() {
        let bad = [
            json!(null),
            json!({"k": "nope"}),
            json!({"k": "msg", "sid": 1, "binary": true, "body": "***"}),
            json!({"k": "msg", "sid": 70000, "binary": true, "body": ""}),
            json!({"k": "open", "channel": {"sid": 1, "label": "", "protocol": "",
                "ordered": true, "priority": 0, "max_retransmits": 1, "max_lifetime_ms": 1}}),
            json!({"k": "open", "channel": {"sid": 1, "label": "x".repeat(70_000),
                "protocol": "", "ordered": true, "priority": 0}}),
            json!({"k": "sync", "has_data": true, "channels": [{"sid": 1}]}),
        ];
        for v in bad {
            assert!(RelayData::from_wire(v.clone()).is_err(), "{v}");
        }
    }

    #[test]
    fn only_channel_events_travel() {
        assert_eq!(RelayData::of(&SctpEvent::Connected), None);
        assert_eq!(RelayData::of(&SctpEvent::Lost("x".into())), None);
        let ev = SctpEvent::ChannelClosed { sid: 3 };
        assert_eq!(RelayData::of(&ev).and_then(RelayData::into_event), Some(ev));
    }
}
