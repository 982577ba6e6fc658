//! STUN messages (RFC 8489, formerly RFC 5389) as ICE uses them (RFC 8445 §7.1).
//!
//! [`StunMessage::parse`] borrows a datagram and exposes the attributes ICE reads; it never
//! panics and allocates nothing. MESSAGE-INTEGRITY is checked on demand with the short-term
//! key (the ICE password, RFC 8489 §9.1.1) and a constant-time compare; FINGERPRINT is checked
//! during parsing, since a wrong one means "not STUN" (RFC 8489 §7.3). [`MessageWriter`]
//! builds messages into a caller buffer; [`binding_success`] and [`binding_error`] are the two
//! responses an ICE-lite agent sends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;

/// RFC 8489 §5: the fixed magic cookie.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// RFC 8489 §14.8: FINGERPRINT is CRC-32 XOR this value.
const FINGERPRINT_XOR: u32 = 0x5354_554E;
const HEADER_LEN: usize = 20;
const INTEGRITY_LEN: usize = 20;

/// Attribute types used here (RFC 8489 §18.3, RFC 8445 §16.1).
mod attr {
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;
}

/// The 96-bit transaction id (RFC 8489 §5).
pub type TransactionId = [u8; 12];

/// RFC 8489 §5: the two class bits of the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

/// The 12-bit method; only Binding matters to ICE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Binding,
    Other(u16),
}

impl Method {
    fn code(self) -> u16 {
        match self {
            Method::Binding => 0x001,
            Method::Other(m) => m & 0x0FFF,
        }
    }
}

/// RFC 8489 §5, figure 3: method and class bits are interleaved in the message type.
fn message_type(class: Class, method: Method) -> u16 {
    let m = method.code();
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

fn split_type(t: u16) -> (Class, Method) {
    let m = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
    let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    let method = if m == 0x001 {
        Method::Binding
    } else {
        Method::Other(m)
    };
    (class, method)
}

/// Why a datagram is not a usable STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("not STUN: leading bits or magic cookie")]
    NotStun,
    #[error("length field disagrees with the datagram")]
    BadLength,
    #[error("attribute {0:#06x} overruns the message or has a bad value")]
    MalformedAttribute(u16),
    #[error("attribute after FINGERPRINT")]
    AttributeAfterFingerprint,
    #[error("FINGERPRINT does not match")]
    FingerprintMismatch,
    #[error("buffer too small for the message")]
    BufferTooSmall,
}

/// A parsed STUN message borrowing the datagram it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunMessage<'a> {
    pub class: Class,
    pub method: Method,
    pub transaction_id: TransactionId,
    pub username: Option<&'a str>,
    pub software: Option<&'a str>,
    pub priority: Option<u32>,
    pub use_candidate: bool,
    pub ice_controlling: Option<u64>,
    pub ice_controlled: Option<u64>,
    pub xor_mapped_address: Option<SocketAddr>,
    /// `(code, reason)`, e.g. `(401, "Unauthorized")`.
    pub error_code: Option<(u16, &'a str)>,
    pub has_fingerprint: bool,
    /// Offset of the MESSAGE-INTEGRITY attribute header, if present.
    integrity_at: Option<usize>,
    raw: &'a [u8],
}

impl<'a> StunMessage<'a> {
    /// Parses one datagram (RFC 8489 §6, §14). Unknown attributes are skipped; attributes
    /// after MESSAGE-INTEGRITY other than FINGERPRINT are ignored (§14.5).
    pub fn parse(raw: &'a [u8]) -> Result<StunMessage<'a>, StunError> {
        if raw.len() < HEADER_LEN {
            return Err(StunError::TooShort);
        }
        let msg_type = u16::from_be_bytes([raw[0], raw[1]]);
        let cookie = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        if msg_type & 0xC000 != 0 || cookie != MAGIC_COOKIE {
            return Err(StunError::NotStun);
        }
        let length = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
        if length % 4 != 0 || HEADER_LEN + length != raw.len() {
            return Err(StunError::BadLength);
        }
        let (class, method) = split_type(msg_type);
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&raw[8..20]);
        let mut msg = StunMessage {
            class,
            method,
            transaction_id,
            username: None,
            software: None,
            priority: None,
            use_candidate: false,
            ice_controlling: None,
            ice_controlled: None,
            xor_mapped_address: None,
            error_code: None,
            has_fingerprint: false,
            integrity_at: None,
            raw,
        };

        let mut at = HEADER_LEN;
        while at < raw.len() {
            let header = raw.get(at..at + 4).ok_or(StunError::BadLength)?;
            let kind = u16::from_be_bytes([header[0], header[1]]);
            let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let value = raw
                .get(at + 4..at + 4 + len)
                .ok_or(StunError::MalformedAttribute(kind))?;
            let next = at + 4 + len.next_multiple_of(4);
            if next > raw.len() {
                return Err(StunError::MalformedAttribute(kind));
            }
            if msg.has_fingerprint {
                return Err(StunError::AttributeAfterFingerprint);
            }
            if kind == attr::FINGERPRINT {
                let got = be_u32(value).ok_or(StunError::MalformedAttribute(kind))?;
                let want = crc32fast::hash(&raw[..at]) ^ FINGERPRINT_XOR;
                if got != want {
                    return Err(StunError::FingerprintMismatch);
                }
                msg.has_fingerprint = true;
            } else if msg.integrity_at.is_none() {
                msg.attribute(at, kind, value)?;
            }
            at = next;
        }
        Ok(msg)
    }

    fn attribute(&mut self, at: usize, kind: u16, value: &'a [u8]) -> Result<(), StunError> {
        let bad = || StunError::MalformedAttribute(kind);
        match kind {
            attr::USERNAME if self.username.is_none() => {
                // RFC 8489 §14.3: at most 513 bytes of UTF-8.
                if value.len() > 513 {
                    return Err(bad());
                }
                self.username = Some(std::str::from_utf8(value).map_err(|_| bad())?);
            }
            attr::SOFTWARE if self.software.is_none() => {
                self.software = std::str::from_utf8(value).ok();
            }
            attr::MESSAGE_INTEGRITY => {
                if value.len() != INTEGRITY_LEN {
                    return Err(bad());
                }
                self.integrity_at = Some(at);
            }
            attr::PRIORITY if self.priority.is_none() => {
                self.priority = Some(be_u32(value).ok_or_else(bad)?);
            }
            attr::USE_CANDIDATE => {
                if !value.is_empty() {
                    return Err(bad());
                }
                self.use_candidate = true;
            }
            attr::ICE_CONTROLLING if self.ice_controlling.is_none() => {
                self.ice_controlling = Some(be_u64(value).ok_or_else(bad)?);
            }
            attr::ICE_CONTROLLED if self.ice_controlled.is_none() => {
                self.ice_controlled = Some(be_u64(value).ok_or_else(bad)?);
            }
            attr::XOR_MAPPED_ADDRESS if self.xor_mapped_address.is_none() => {
                let addr = xor_address(value, &self.transaction_id).ok_or_else(bad)?;
                self.xor_mapped_address = Some(addr);
            }
            attr::ERROR_CODE if self.error_code.is_none() => {
                // RFC 8489 §14.8: 21 reserved bits, class (hundreds), number (0-99), reason.
                if value.len() < 4 {
                    return Err(bad());
                }
                let code = u16::from(value[2] & 0x07) * 100 + u16::from(value[3]);
                let reason = std::str::from_utf8(&value[4..]).unwrap_or("");
                self.error_code = Some((code, reason));
            }
            _ => {}
        }
        Ok(())
    }

    /// True for a Binding request.
    pub fn is_binding_request(&self) -> bool {
        self.class == Class::Request && self.method == Method::Binding
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// Verifies MESSAGE-INTEGRITY with a short-term `key` (RFC 8489 §14.5): HMAC-SHA1 over the
    /// message up to the attribute, with the length field counting up to its end. False when
    /// the attribute is missing. The compare is constant-time.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let mac = integrity(key, &self.raw[..at]);
        let got = &self.raw[at + 4..at + 4 + INTEGRITY_LEN];
        bool::from(mac.as_slice().ct_eq(got))
    }
}

/// HMAC-SHA1 over `prefix` (header + attributes before MESSAGE-INTEGRITY), the length field
/// replaced to cover the MESSAGE-INTEGRITY attribute that follows (RFC 8489 §14.5).
fn integrity(key: &[u8], prefix: &[u8]) -> [u8; INTEGRITY_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&key);
    // `prefix` always holds a header: callers index past HEADER_LEN.
    let length = (prefix.len() - HEADER_LEN + 4 + INTEGRITY_LEN) as u16;
    ctx.update(&prefix[..2]);
    ctx.update(&length.to_be_bytes());
    ctx.update(&prefix[4..]);
    let tag = ctx.sign();
    let mut out = [0u8; INTEGRITY_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

fn be_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// RFC 8489 §14.2: port XOR the cookie's top half; IPv4 XOR the cookie; IPv6 XOR cookie ‖ tid.
fn xor_address(value: &[u8], tid: &TransactionId) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let mask = xor_mask(tid);
    let ip = match (value[1], value.len()) {
        (0x01, 8) => {
            let mut b = [0u8; 4];
            for (i, out) in b.iter_mut().enumerate() {
                *out = value[4 + i] ^ mask[i];
            }
            IpAddr::V4(Ipv4Addr::from(b))
        }
        (0x02, 20) => {
            let mut b = [0u8; 16];
            for (i, out) in b.iter_mut().enumerate() {
                *out = value[4 + i] ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn xor_mask(tid: &TransactionId) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(tid);
    mask
}

/// Writes one STUN message into a caller buffer, attribute by attribute. MESSAGE-INTEGRITY
/// and FINGERPRINT, when wanted, come last and in that order (RFC 8489 §14.5, §14.7).
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    pad: u8,
}

impl<'b> MessageWriter<'b> {
    pub fn new(
        buf: &'b mut [u8],
        class: Class,
        method: Method,
        transaction_id: &TransactionId,
    ) -> Result<Self, StunError> {
        let header = buf.get_mut(..HEADER_LEN).ok_or(StunError::BufferTooSmall)?;
        header[..2].copy_from_slice(&message_type(class, method).to_be_bytes());
        header[2..4].fill(0);
        header[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        header[8..20].copy_from_slice(transaction_id);
        Ok(MessageWriter {
            buf,
            len: HEADER_LEN,
            pad: 0,
        })
    }

    /// The byte that pads attribute values to 4 bytes: zero by default; RFC 8489 §14 lets it
    /// be anything (RFC 5769's samples use spaces).
    pub fn padding(mut self, byte: u8) -> Self {
        self.pad = byte;
        self
    }

    fn attribute(&mut self, kind: u16, value: &[u8]) -> Result<(), StunError> {
        let len = u16::try_from(value.len()).map_err(|_| StunError::BufferTooSmall)?;
        let padded = value.len().next_multiple_of(4);
        let end = self.len + 4 + padded;
        let out = self
            .buf
            .get_mut(self.len..end)
            .ok_or(StunError::BufferTooSmall)?;
        out[..2].copy_from_slice(&kind.to_be_bytes());
        out[2..4].copy_from_slice(&len.to_be_bytes());
        out[4..4 + value.len()].copy_from_slice(value);
        out[4 + value.len()..].fill(self.pad);
        self.len = end;
        self.set_length(self.len);
        Ok(())
    }

    fn set_length(&mut self, end: usize) {
        // The header exists (checked in `new`); attributes are bounded by u16 lengths.
        let length = (end - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&length.to_be_bytes());
    }

    pub fn username(&mut self, username: &str) -> Result<(), StunError> {
        self.attribute(attr::USERNAME, username.as_bytes())
    }

    pub fn software(&mut self, software: &str) -> Result<(), StunError> {
        self.attribute(attr::SOFTWARE, software.as_bytes())
    }

    pub fn priority(&mut self, priority: u32) -> Result<(), StunError> {
        self.attribute(attr::PRIORITY, &priority.to_be_bytes())
    }

    pub fn use_candidate(&mut self) -> Result<(), StunError> {
        self.attribute(attr::USE_CANDIDATE, &[])
    }

    pub fn ice_controlling(&mut self, tie_breaker: u64) -> Result<(), StunError> {
        self.attribute(attr::ICE_CONTROLLING, &tie_breaker.to_be_bytes())
    }

    pub fn ice_controlled(&mut self, tie_breaker: u64) -> Result<(), StunError> {
        self.attribute(attr::ICE_CONTROLLED, &tie_breaker.to_be_bytes())
    }

    pub fn xor_mapped_address(&mut self, addr: SocketAddr) -> Result<(), StunError> {
        let tid: TransactionId = self.buf[8..20].try_into().map_err(|_| StunError::TooShort)?;
        let mask = xor_mask(&tid);
        let mut value = [0u8; 20];
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        value[2..4].copy_from_slice(&port.to_be_bytes());
        let len = match addr.ip() {
            IpAddr::V4(ip) => {
                value[1] = 0x01;
                for (i, b) in ip.octets().iter().enumerate() {
                    value[4 + i] = b ^ mask[i];
                }
                8
            }
            IpAddr::V6(ip) => {
                value[1] = 0x02;
                for (i, b) in ip.octets().iter().enumerate() {
                    value[4 + i] = b ^ mask[i];
                }
                20
            }
        };
        self.attribute(attr::XOR_MAPPED_ADDRESS, &value[..len])
    }

    /// RFC 8489 §14.8; `code` in 300..=699.
    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<(), StunError> {
        let mut value = [0u8; 4 + 128];
        let reason = &reason.as_bytes()[..reason.len().min(128)];
        value[2] = (code / 100) as u8 & 0x07;
        value[3] = (code % 100) as u8;
        value[4..4 + reason.len()].copy_from_slice(reason);
        self.attribute(attr::ERROR_CODE, &value[..4 + reason.len()])
    }

    /// Appends MESSAGE-INTEGRITY keyed with `key` (the ICE password for short-term
    /// credentials, RFC 8445 §7.2.2).
    pub fn message_integrity(&mut self, key: &[u8]) -> Result<(), StunError> {
        let mac = integrity(key, &self.buf[..self.len]);
        self.attribute(attr::MESSAGE_INTEGRITY, &mac)
    }

    /// Appends FINGERPRINT; call it last.
    pub fn fingerprint(&mut self) -> Result<(), StunError> {
        let end = self.len + 8;
        if end > self.buf.len() {
            return Err(StunError::BufferTooSmall);
        }
        self.set_length(end);
        let crc = crc32fast::hash(&self.buf[..self.len]) ^ FINGERPRINT_XOR;
        self.attribute(attr::FINGERPRINT, &crc.to_be_bytes())
    }

    /// The message length in bytes.
    pub fn finish(self) -> usize {
        self.len
    }
}

/// Longest response [`binding_success`] / [`binding_error`] write: header, an IPv6
/// XOR-MAPPED-ADDRESS (24), MESSAGE-INTEGRITY (24) and FINGERPRINT (8); or an ERROR-CODE with a
/// short reason.
pub const MAX_RESPONSE_LEN: usize = 128;

/// A Binding success response (RFC 8445 §7.3.1.4): XOR-MAPPED-ADDRESS = the request's source,
/// MESSAGE-INTEGRITY with our password, FINGERPRINT. Returns the length written.
pub fn binding_success(
    buf: &mut [u8],
    transaction_id: &TransactionId,
    mapped: SocketAddr,
    local_pwd: &str,
) -> Result<usize, StunError> {
    let mut w = MessageWriter::new(buf, Class::Success, Method::Binding, transaction_id)?;
    w.xor_mapped_address(mapped)?;
    w.message_integrity(local_pwd.as_bytes())?;
    w.fingerprint()?;
    Ok(w.finish())
}

/// A Binding error response (RFC 8489 §6.3.4): 400 for a malformed or unauthenticated request,
/// 401 for wrong credentials. No MESSAGE-INTEGRITY: the request could not be authenticated
/// (RFC 8489 §9.1.3). FINGERPRINT, as ICE requires (RFC 8445 §7.2.2).
pub fn binding_error(
    buf: &mut [u8],
    transaction_id: &TransactionId,
    code: u16,
) -> Result<usize, StunError> {
    let reason = match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        487 => "Role Conflict",
        _ => "Error",
    };
    let mut w = MessageWriter::new(buf, Class::Error, Method::Binding, transaction_id)?;
    w.error_code(code, reason)?;
    w.fingerprint()?;
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PWD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
    const TID: TransactionId = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    /// RFC 5769 §2.1 sample request.
    const REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];

    /// RFC 5769 §2.2 sample IPv4 response.
    const RESPONSE_V4: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
        0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
        0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00,
        0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];

    /// RFC 5769 §2.3 sample IPv6 response.
    const RESPONSE_V6: [u8; 92] = [
        0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01,
        0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9,
        0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb,
        0x0b, 0x4c,
    ];

    fn rfc_response(mapped: SocketAddr) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, Class::Success, Method::Binding, &TID)
            .expect("room")
            .padding(b' ');
        w.software("test vector").expect("room");
        w.xor_mapped_address(mapped).expect("room");
        w.message_integrity(PWD.as_bytes()).expect("room");
        w.fingerprint().expect("room");
        let n = w.finish();
        buf[..n].to_vec()
    }

    #[test]
    fn rfc5769_request_parses_and_verifies() {
        let m = StunMessage::parse(&REQUEST).expect("valid vector");
        assert!(m.is_binding_request());
        assert_eq!(m.transaction_id, TID);
        assert_eq!(m.username, Some("evtj:h6vY"));
        assert_eq!(m.software, Some("STUN test client"));
        assert_eq!(m.priority, Some(0x6e00_01ff));
        assert_eq!(m.ice_controlled, Some(0x932f_f9b1_5126_3b36));
        assert_eq!(m.ice_controlling, None);
        assert!(!m.use_candidate);
        assert!(m.has_fingerprint);
        assert!(m.verify_integrity(PWD.as_bytes()));
        assert!(!m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBT"));
    }

    #[test]
    fn rfc5769_responses_parse_and_verify() {
        for (bytes, addr) in [
            (&RESPONSE_V4[..], "192.0.2.1:32853"),
            (&RESPONSE_V6[..], "[2001:db8:1234:5678:11:2233:4455:6677]:32853"),
        ] {
            let m = StunMessage::parse(bytes).expect("valid vector");
            assert_eq!((m.class, m.method), (Class::Success, Method::Binding));
            assert_eq!(m.software, Some("test vector"));
            assert_eq!(m.xor_mapped_address, Some(addr.parse().expect("valid")));
            assert!(m.verify_integrity(PWD.as_bytes()));
        }
    }

    #[test]
    fn writer_reproduces_rfc5769_request() {
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, Class::Request, Method::Binding, &TID)
            .expect("room")
            .padding(b' ');
        w.software("STUN test client").expect("room");
        w.priority(0x6e00_01ff).expect("room");
        w.ice_controlled(0x932f_f9b1_5126_3b36).expect("room");
        w.username("evtj:h6vY").expect("room");
        w.message_integrity(PWD.as_bytes()).expect("room");
        w.fingerprint().expect("room");
        let n = w.finish();
        assert_eq!(&buf[..n], &REQUEST[..]);
    }

    #[test]
    fn writer_reproduces_rfc5769_responses() {
        let v4 = rfc_response("192.0.2.1:32853".parse().expect("valid"));
        assert_eq!(v4, RESPONSE_V4);
        let v6 = rfc_response(
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .expect("valid"),
        );
        assert_eq!(v6, RESPONSE_V6);
    }

    #[test]
    fn binding_success_round_trips() {
        let mut buf = [0u8; MAX_RESPONSE_LEN];
        let from: SocketAddr = "[2001:db8::7]:50000".parse().expect("valid");
        let n = binding_success(&mut buf, &TID, from, "secretpassword").expect("room");
        let m = StunMessage::parse(&buf[..n]).expect("our output parses");
        assert_eq!((m.class, m.method), (Class::Success, Method::Binding));
        assert_eq!(m.transaction_id, TID);
        assert_eq!(m.xor_mapped_address, Some(from));
        assert!(m.verify_integrity(b"secretpassword"));
        assert!(m.has_fingerprint);
    }

    #[test]
    fn binding_error_carries_code_without_integrity() {
        let mut buf = [0u8; MAX_RESPONSE_LEN];
        let n = binding_error(&mut buf, &TID, 401).expect("room");
        let m = StunMessage::parse(&buf[..n]).expect("our output parses");
        assert_eq!(m.class, Class::Error);
        assert_eq!(m.error_code, Some((401, "Unauthorized")));
        assert!(!m.has_integrity());
        let n = binding_error(&mut buf, &TID, 400).expect("room");
        let m = StunMessage::parse(&buf[..n]).expect("our output parses");
        assert_eq!(m.error_code, Some((400, "Bad Request")));
    }

    #[test]
    fn message_type_interleaves_class_bits() {
        assert_eq!(message_type(Class::Request, Method::Binding), 0x0001);
        assert_eq!(message_type(Class::Success, Method::Binding), 0x0101);
        assert_eq!(message_type(Class::Error, Method::Binding), 0x0111);
        assert_eq!(message_type(Class::Error, Method::Other(0x003)), 0x0113);
        for t in [0x0001, 0x0011, 0x0101, 0x0111, 0x0113, 0x0009] {
            let (c, m) = split_type(t);
            assert_eq!(message_type(c, m), t);
        }
    }

    #[test]
    fn tampered_fingerprint_is_rejected() {
        let mut bytes = REQUEST;
        bytes[107] ^= 1;
        assert_eq!(
            StunMessage::parse(&bytes),
            Err(StunError::FingerprintMismatch)
        );
    }

    #[test]
    fn tampered_body_fails_integrity() {
        let mut bytes = REQUEST;
        // Flip a SOFTWARE byte and fix the fingerprint so that only integrity can catch it.
        bytes[30] ^= 1;
        let crc = crc32fast::hash(&bytes[..100]) ^ FINGERPRINT_XOR;
        bytes[104..].copy_from_slice(&crc.to_be_bytes());
        let m = StunMessage::parse(&bytes).expect("still well-formed");
        assert!(!m.verify_integrity(PWD.as_bytes()));
    }

    #[test]
    fn garbage_never_panics() {
        // Every truncation and a deterministic byte walk over the vector.
        for n in 0..REQUEST.len() {
            let _ = StunMessage::parse(&REQUEST[..n]);
        }
        let mut state = 0x1234_5678_u32;
        for _ in 0..2000 {
            let mut bytes = REQUEST;
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let i = state as usize % bytes.len();
                bytes[i] = (state >> 8) as u8;
            }
            if let Ok(m) = StunMessage::parse(&bytes) {
                let _ = m.verify_integrity(PWD.as_bytes());
            }
        }
        assert_eq!(StunMessage::parse(&[0u8; 3]), Err(StunError::TooShort));
        assert_eq!(StunMessage::parse(&[0x80; 20]), Err(StunError::NotStun));
    }

    #[test]
    fn attribute_overrunning_the_message_is_malformed() {
        let mut bytes = [0u8; 28];
        bytes[..20].copy_from_slice(&REQUEST[..20]);
        bytes[3] = 8;
        bytes[20..24].copy_from_slice(&[0x00, 0x20, 0x00, 0x40]);
        assert_eq!(
            StunMessage::parse(&bytes),
            Err(StunError::MalformedAttribute(0x0020))
        );
    }

    #[test]
    fn length_field_must_match_datagram() {
        let mut bytes = REQUEST.to_vec();
        bytes.push(0);
        assert_eq!(StunMessage::parse(&bytes), Err(StunError::BadLength));
    }

    #[test]
    fn small_buffer_is_an_error_not_a_panic() {
        let mut buf = [0u8; 40];
        let from: SocketAddr = "192.0.2.1:1".parse().expect("valid");
        assert_eq!(
            binding_success(&mut buf, &TID, from, "pwd"),
            Err(StunError::BufferTooSmall)
        );
        assert!(MessageWriter::new(&mut buf[..10], Class::Request, Method::Binding, &TID).is_err());
    }
}
