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
        let tid: TransactionId = self.buf[8..20]
            .try_into()
            .map_err(|_| StunError::TooShort)?;
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

    /// RFC 8489 §14.8; `code` in 300..=699. The reason is cut to 128 bytes, at a character
    /// boundary: it stays UTF-8.
    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<(), StunError> {
        let mut value = [0u8; 4 + 128];
        let mut end = reason.len().min(128);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let reason = &reason.as_bytes()[..end];
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
#[path = "stun_tests.rs"]
mod tests;
