//! SRTP and SRTCP (RFC 3711, RFC 7714), sans-IO and in place.
//!
//! Model: DTLS-SRTP (RFC 5764) hands us keying material; [`SessionKeys`] splits it into the
//! [`MasterKey`] we send with and the one the peer sends with. Each direction of a leg gets its
//! own [`SrtpContext`], which derives the session keys once (RFC 3711 §4.3, key derivation rate
//! 0) and then protects or unprotects packets in the caller's buffer, keeping per-SSRC
//! rollover counters and replay windows. Nothing is allocated per packet: cipher and MAC state
//! are built at construction, IVs and nonces live on the stack, and the SSRC table grows only
//! when a new, authenticated SSRC appears (and is capped).
//!
//! Profiles: `SRTP_AEAD_AES_128_GCM` (RFC 7714, preferred: 2-3x cheaper per packet here) and
//! `SRTP_AES128_CM_HMAC_SHA1_80` (RFC 3711 default transform). No MKI, no encrypted header
//! extensions (RFC 6904), no cryptex (RFC 9335).
//!
//! Not here: choosing the profile (the DTLS handshake does), demultiplexing RTP from RTCP
//! (RFC 5761; the caller does), rekeying (a new context per handshake).

mod context;
mod kdf;
mod replay;
mod transform;

#[cfg(test)]
mod tests;

use std::fmt;

pub use context::{MAX_STREAMS, SrtpContext};

/// An SRTP protection profile (RFC 5764 §4.1.2, RFC 7714 §14.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// `SRTP_AEAD_AES_128_GCM`, id 0x0007.
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM`, id 0x0008: what DTLS stacks (dimpl, browsers) pick first.
    AeadAes256Gcm,
    /// `SRTP_AES128_CM_HMAC_SHA1_80`, id 0x0001.
    AesCm128HmacSha1_80,
}

impl Profile {
    /// The profile for a DTLS `use_srtp` protection profile id, if we support it.
    pub fn from_dtls_id(id: u16) -> Option<Profile> {
        match id {
            0x0007 => Some(Profile::AeadAes128Gcm),
            0x0008 => Some(Profile::AeadAes256Gcm),
            0x0001 => Some(Profile::AesCm128HmacSha1_80),
            _ => None,
        }
    }

    /// The DTLS `use_srtp` protection profile id.
    pub fn dtls_id(self) -> u16 {
        match self {
            Profile::AeadAes128Gcm => 0x0007,
            Profile::AeadAes256Gcm => 0x0008,
            Profile::AesCm128HmacSha1_80 => 0x0001,
        }
    }

    /// Master (and session) encryption key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Profile::AeadAes256Gcm => 32,
            Profile::AeadAes128Gcm | Profile::AesCm128HmacSha1_80 => 16,
        }
    }

    /// Master (and session) salt length in bytes: 96 bits for GCM (RFC 7714 §12), 112 bits
    /// for AES-CM (RFC 3711 §8.2).
    pub fn salt_len(self) -> usize {
        match self {
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => 12,
            Profile::AesCm128HmacSha1_80 => 14,
        }
    }

    /// Authentication tag length in bytes, the same for SRTP and SRTCP.
    pub fn tag_len(self) -> usize {
        match self {
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => 16,
            Profile::AesCm128HmacSha1_80 => 10,
        }
    }

    /// Bytes `protect_rtp` appends: the buffer needs this much spare room.
    pub fn rtp_overhead(self) -> usize {
        self.tag_len()
    }

    /// Bytes `protect_rtcp` appends: the tag and the 4-byte E flag + SRTCP index.
    pub fn rtcp_overhead(self) -> usize {
        self.tag_len() + 4
    }

    /// Session authentication key length (RFC 3711 §8.2: 160 bits for HMAC-SHA1); GCM has none.
    fn auth_key_len(self) -> usize {
        match self {
            Profile::AeadAes128Gcm | Profile::AeadAes256Gcm => 0,
            Profile::AesCm128HmacSha1_80 => 20,
        }
    }
}

/// Longest salt of any supported profile.
const MAX_SALT: usize = 14;
/// Longest master/session key of any supported profile.
const MAX_KEY: usize = 32;

/// One direction's master key and master salt.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    profile: Profile,
    /// `profile.key_len()` bytes, zero-padded.
    key: [u8; MAX_KEY],
    /// `profile.salt_len()` bytes, zero-padded: the KDF reads a 112-bit salt, and pads the
    /// 96-bit GCM salt with zeros as libsrtp does (RFC 7714 §11 keeps the RFC 3711 KDF).
    salt: [u8; MAX_SALT],
}

impl MasterKey {
    /// A master key from its parts, e.g. from SDES (RFC 4568) or a test vector.
    pub fn new(profile: Profile, key: &[u8], salt: &[u8]) -> Result<MasterKey, SrtpError> {
        if key.len() != profile.key_len() || salt.len() != profile.salt_len() {
            return Err(SrtpError::KeyLength);
        }
        let mut master = MasterKey {
            profile,
            key: [0; MAX_KEY],
            salt: [0; MAX_SALT],
        };
        master.key[..key.len()].copy_from_slice(key);
        master.salt[..salt.len()].copy_from_slice(salt);
        Ok(master)
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }
}

/// Best effort: copies made by moves are not reached, and aws-lc keeps its own expanded keys
/// (which it clears on drop).
impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.key);
        wipe(&mut self.salt);
    }
}

/// Zeroes key bytes; `black_box` keeps the stores from being elided as dead.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

/// Key material never reaches logs.
impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// Both directions' master keys from one DTLS-SRTP handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionKeys {
    /// What we protect with.
    pub local: MasterKey,
    /// What we unprotect the peer's packets with.
    pub remote: MasterKey,
}

impl SessionKeys {
    /// Bytes to export from DTLS with the label `EXTRACTOR-dtls_srtp` (RFC 5764 §4.2).
    pub fn keying_material_len(profile: Profile) -> usize {
        2 * (profile.key_len() + profile.salt_len())
    }

    /// Splits exported keying material, laid out as client_write_SRTP_master_key,
    /// server_write_SRTP_master_key, client_write_SRTP_master_salt,
    /// server_write_SRTP_master_salt (RFC 5764 §4.2).
    pub fn from_keying_material(
        profile: Profile,
        material: &[u8],
        we_are_dtls_client: bool,
    ) -> Result<SessionKeys, SrtpError> {
        if material.len() != Self::keying_material_len(profile) {
            return Err(SrtpError::KeyLength);
        }
        let (keys, salts) = material.split_at(2 * profile.key_len());
        let (client_key, server_key) = keys.split_at(profile.key_len());
        let (client_salt, server_salt) = salts.split_at(profile.salt_len());
        let client = MasterKey::new(profile, client_key, client_salt)?;
        let server = MasterKey::new(profile, server_key, server_salt)?;
        Ok(if we_are_dtls_client {
            SessionKeys {
                local: client,
                remote: server,
            }
        } else {
            SessionKeys {
                local: server,
                remote: client,
            }
        })
    }
}

/// Why a packet was not protected or unprotected. On the packet path each maps to a counted
/// drop reason; none is fatal to the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("key or keying material has the wrong length for the profile")]
    KeyLength,
    #[error("the crypto library refused the key")]
    Crypto,
    #[error("the two directions' keys are for different protection profiles")]
    ProfileMismatch,
    #[error("packet too short for its header and tag")]
    TooShort,
    #[error("not an RTP/RTCP version 2 packet, or its header overruns it")]
    Malformed,
    #[error("no room in the buffer for the authentication tag")]
    BufferTooSmall,
    #[error("authentication failed")]
    AuthFailed,
    #[error("replayed or too old for the replay window")]
    Replayed,
    #[error("too many SSRCs in one context")]
    TooManyStreams,
    #[error("packet index exhausted: the session must be rekeyed")]
    IndexExhausted,
}
