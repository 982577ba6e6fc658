//! The Data Channel Establishment Protocol (RFC 8832): the two messages that open a WebRTC
//! data channel in-band on an SCTP stream, with PPID 50.
//!
//! `DATA_CHANNEL_OPEN` (RFC 8832 §5.1) carries the channel type (ordering and partial
//! reliability), a priority, the reliability parameter, the label and the sub-protocol;
//! `DATA_CHANNEL_ACK` (§5.2) is one byte. Parsing is total: any byte string becomes a
//! [`Dcep`] or a [`DcepError`], never a panic.

/// Message types (RFC 8832 §8.2.1).
const MSG_ACK: u8 = 0x02;
const MSG_OPEN: u8 = 0x03;
/// Fixed part of `DATA_CHANNEL_OPEN` before the label.
const OPEN_HEADER: usize = 12;
/// The unordered bit of the channel type (RFC 8832 §5.1).
const UNORDERED: u8 = 0x80;

/// How reliably a channel delivers (RFC 8832 §5.1, channel types 0x00/0x01/0x02).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Reliability {
    #[default]
    Reliable,
    /// Partial reliability: at most this many retransmissions (RFC 3758).
    MaxRetransmits(u32),
    /// Partial reliability: abandoned after this many milliseconds.
    MaxLifetimeMs(u32),
}

/// What a `DATA_CHANNEL_OPEN` says about a channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ChannelSpec {
    pub label: String,
    pub protocol: String,
    pub ordered: bool,
    pub reliability: Reliability,
    /// RFC 8832 §5.1 priority (RFC 8831 §6.4: 128 below normal, 256 normal, ...).
    pub priority: u16,
}

impl ChannelSpec {
    /// An ordered, reliable channel of normal priority.
    pub fn reliable(label: &str) -> ChannelSpec {
        ChannelSpec {
            label: label.to_owned(),
            protocol: String::new(),
            ordered: true,
            reliability: Reliability::Reliable,
            priority: 256,
        }
    }

    /// RFC 8832 §5.1 channel type byte.
    fn channel_type(&self) -> u8 {
        let base = match self.reliability {
            Reliability::Reliable => 0x00,
            Reliability::MaxRetransmits(_) => 0x01,
            Reliability::MaxLifetimeMs(_) => 0x02,
        };
        if self.ordered { base } else { base | UNORDERED }
    }

    fn reliability_parameter(&self) -> u32 {
        match self.reliability {
            Reliability::Reliable => 0,
            Reliability::MaxRetransmits(n) | Reliability::MaxLifetimeMs(n) => n,
        }
    }
}

/// One DCEP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dcep {
    Open(ChannelSpec),
    Ack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DcepError {
    #[error("empty DCEP message")]
    Empty,
    #[error("unknown DCEP message type {0:#04x}")]
    UnknownType(u8),
    #[error("unknown DCEP channel type {0:#04x}")]
    UnknownChannelType(u8),
    #[error("DCEP message truncated")]
    Truncated,
    #[error("DCEP label or protocol is not UTF-8")]
    NotUtf8,
}

impl Dcep {
    /// Parses one DCEP message (the whole SCTP user message of PPID 50).
    pub fn parse(bytes: &[u8]) -> Result<Dcep, DcepError> {
        match *bytes.first().ok_or(DcepError::Empty)? {
            // RFC 8832 §5.2: the ACK is the type byte alone; extra bytes are tolerated.
            MSG_ACK => Ok(Dcep::Ack),
            MSG_OPEN => parse_open(bytes).map(Dcep::Open),
            t => Err(DcepError::UnknownType(t)),
        }
    }

    /// The message as sent on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Dcep::Ack => vec![MSG_ACK],
            Dcep::Open(spec) => {
                let label = clip(&spec.label);
                let protocol = clip(&spec.protocol);
                let mut b = Vec::with_capacity(OPEN_HEADER + label.len() + protocol.len());
                b.push(MSG_OPEN);
                b.push(spec.channel_type());
                b.extend_from_slice(&spec.priority.to_be_bytes());
                b.extend_from_slice(&spec.reliability_parameter().to_be_bytes());
                b.extend_from_slice(&(label.len() as u16).to_be_bytes());
                b.extend_from_slice(&(protocol.len() as u16).to_be_bytes());
                b.extend_from_slice(label.as_bytes());
                b.extend_from_slice(protocol.as_bytes());
                b
            }
        }
    }
}

/// Labels and protocols longer than a 16-bit length allows are cut at a character boundary.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn parse_open(b: &[u8]) -> Result<ChannelSpec, DcepError> {
    let header = b.get(..OPEN_HEADER).ok_or(DcepError::Truncated)?;
    let channel_type = header[1];
    let priority = u16::from_be_bytes([header[2], header[3]]);
    let parameter = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let label_len = usize::from(u16::from_be_bytes([header[8], header[9]]));
    let protocol_len = usize::from(u16::from_be_bytes([header[10], header[11]]));
    let reliability = match channel_type & !UNORDERED {
        0x00 => Reliability::Reliable,
        0x01 => Reliability::MaxRetransmits(parameter),
        0x02 => Reliability::MaxLifetimeMs(parameter),
        _ => return Err(DcepError::UnknownChannelType(channel_type)),
    };
    let label = b
        .get(OPEN_HEADER..OPEN_HEADER + label_len)
        .ok_or(DcepError::Truncated)?;
    let start = OPEN_HEADER + label_len;
    let protocol = b
        .get(start..start + protocol_len)
        .ok_or(DcepError::Truncated)?;
    let text = |v: &[u8]| {
        std::str::from_utf8(v)
            .map(str::to_owned)
            .map_err(|_| DcepError::NotUtf8)
    };
    Ok(ChannelSpec {
        label: text(label)?,
        protocol: text(protocol)?,
        ordered: channel_type & UNORDERED == 0,
        reliability,
        priority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_round_trips_every_channel_type() {
        for (ordered, reliability, ty) in [
            (true, Reliability::Reliable, 0x00),
            (false, Reliability::Reliable, 0x80),
            (true, Reliability::MaxRetransmits(3), 0x01),
            (false, Reliability::MaxRetransmits(0), 0x81),
            (true, Reliability::MaxLifetimeMs(1500), 0x02),
            (false, Reliability::MaxLifetimeMs(10), 0x82),
        ] {
            let spec = ChannelSpec {
                label: "chat é".into(),
                protocol: "json".into(),
                ordered,
                reliability,
                priority: 512,
            };
            let bytes = Dcep::Open(spec.clone()).to_bytes();
            assert_eq!(bytes[1], ty);
            assert_eq!(Dcep::parse(&bytes), Ok(Dcep::Open(spec)));
        }
    }

    /// RFC 8832 §5.1 layout, byte for byte: what Chrome sends for `createDataChannel("a")`.
    #[test]
    fn open_matches_the_rfc_layout() {
        let wire = [
            0x03, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0x00, 0x01, 0x00, 0x00, b'a',
        ];
        let Ok(Dcep::Open(spec)) = Dcep::parse(&wire) else {
            panic!("an OPEN");
        };
        assert_eq!(spec, ChannelSpec::reliable("a"));
        assert_eq!(Dcep::Open(spec).to_bytes(), wire);
    }

    #[test]
    fn ack_is_one_byte() {
        assert_eq!(Dcep::Ack.to_bytes(), [0x02]);
        assert_eq!(Dcep::parse(&[0x02]), Ok(Dcep::Ack));
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(Dcep::parse(&[]), Err(DcepError::Empty));
        assert_eq!(Dcep::parse(&[0x07]), Err(DcepError::UnknownType(0x07)));
        assert_eq!(Dcep::parse(&[0x03, 0, 1]), Err(DcepError::Truncated));
        // Label length 5, one byte present.
        let short = [0x03, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, b'x'];
        assert_eq!(Dcep::parse(&short), Err(DcepError::Truncated));
        // Protocol length runs past the end.
        let short = [0x03, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 9, b'x', b'y'];
        assert_eq!(Dcep::parse(&short), Err(DcepError::Truncated));
        let bad_type = [0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            Dcep::parse(&bad_type),
            Err(DcepError::UnknownChannelType(0x03))
        );
        let not_utf8 = [0x03, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0xff];
        assert_eq!(Dcep::parse(&not_utf8), Err(DcepError::NotUtf8));
    }

    /// Every prefix and every single-byte corruption of a valid OPEN parses or errs: no panic.
    #[test]
    fn prefixes_and_corruptions_never_panic() {
        let good = Dcep::Open(ChannelSpec {
            label: "label".into(),
            protocol: "proto".into(),
            ..ChannelSpec::reliable("")
        })
        .to_bytes();
        for n in 0..good.len() {
            let _ = Dcep::parse(&good[..n]);
        }
        for i in 0..good.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = Dcep::parse(&b);
            }
        }
    }

    #[test]
    fn long_labels_are_clipped_at_a_char_boundary() {
        let label = "é".repeat(40_000);
        let bytes = Dcep::Open(ChannelSpec::reliable(&label)).to_bytes();
        let Ok(Dcep::Open(spec)) = Dcep::parse(&bytes) else {
            panic!("an OPEN");
        };
        assert_eq!(spec.label.len(), 65_534);
    }
}
