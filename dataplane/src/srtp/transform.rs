//! The per-profile cryptographic transforms, over already-parsed packets. Packet indexes and
//! replay are the context's business; this file only encrypts, authenticates and lays out
//! trailers.

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use subtle::ConstantTimeEq;

use super::kdf::{self, Derived};
use super::{MAX_SALT, MasterKey, Profile, SrtpError};

/// RFC 3711 §3.4: the E flag on the SRTCP index word.
const E_FLAG: u32 = 0x8000_0000;
/// Bytes of the RTCP header (first 4 bytes plus the sender SSRC) left in the clear.
pub(super) const RTCP_CLEAR: usize = 8;

/// Session state for one of SRTP or SRTCP.
pub(super) enum Session {
    /// Boxed: the expanded AES key and the HMAC pad states are ~1.7 KB, GCM's handle 40 bytes.
    AesCm(Box<AesCm>),
    Gcm(Gcm),
}

/// `AES_CM_128_HMAC_SHA1_80`: AES-128 in counter mode, then HMAC-SHA1 truncated to 80 bits.
pub(super) struct AesCm {
    cipher: EncryptingKey,
    /// Holds the precomputed inner/outer pads; cloning it per packet copies those states
    /// (no allocation in aws-lc) instead of rehashing the key.
    auth: hmac::Key,
    salt: [u8; MAX_SALT],
}

/// `AEAD_AES_128_GCM` and `AEAD_AES_256_GCM` (RFC 7714).
pub(super) struct Gcm {
    aead: LessSafeKey,
    salt: [u8; 12],
}

impl Session {
    pub(super) fn new(master: &MasterKey, rtcp: bool) -> Result<Session, SrtpError> {
        Session::from_derived(master.profile, &kdf::derive(master, rtcp)?)
    }

    pub(super) fn from_derived(profile: Profile, derived: &Derived) -> Result<Session, SrtpError> {
        match profile {
            Profile::AesCm128HmacSha1_80 => {
                AesCm::new(derived).map(|s| Session::AesCm(Box::new(s)))
            }
            Profile::AeadAes128Gcm => Gcm::new(derived, false).map(Session::Gcm),
            Profile::AeadAes256Gcm => Gcm::new(derived, true).map(Session::Gcm),
        }
    }

    /// Encrypts `buf[header..len]` and appends the tag; `buf` has been checked to hold it.
    pub(super) fn protect_rtp(
        &self,
        buf: &mut [u8],
        header: usize,
        len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        match self {
            Session::AesCm(s) => {
                s.apply_keystream(&mut buf[header..len], ssrc, index)?;
                let tag = s.mac(&buf[..len], &roc(index));
                buf[len..len + TAG_CM].copy_from_slice(&tag);
                Ok(len + TAG_CM)
            }
            Session::Gcm(s) => {
                let nonce = s.rtp_nonce(ssrc, index);
                let (head, body) = buf.split_at_mut(header);
                let tag = s
                    .aead
                    .seal_in_place_separate_tag(nonce, Aad::from(&*head), &mut body[..len - header])
                    .map_err(|_| SrtpError::Crypto)?;
                buf[len..len + TAG_GCM].copy_from_slice(tag.as_ref());
                Ok(len + TAG_GCM)
            }
        }
    }

    /// Authenticates `buf` (header, ciphertext, tag), then decrypts in place. Returns the
    /// plaintext length. The caller checked `buf.len() >= header + tag_len`.
    pub(super) fn unprotect_rtp(
        &self,
        buf: &mut [u8],
        header: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        match self {
            Session::AesCm(s) => {
                let end = buf.len() - TAG_CM;
                let tag = s.mac(&buf[..end], &roc(index));
                if !bool::from(tag.ct_eq(&buf[end..])) {
                    return Err(SrtpError::AuthFailed);
                }
                s.apply_keystream(&mut buf[header..end], ssrc, index)?;
                Ok(end)
            }
            Session::Gcm(s) => {
                let nonce = s.rtp_nonce(ssrc, index);
                let (head, body) = buf.split_at_mut(header);
                let plain = s
                    .aead
                    .open_in_place(nonce, Aad::from(&*head), body)
                    .map_err(|_| SrtpError::AuthFailed)?;
                Ok(header + plain.len())
            }
        }
    }

    /// Encrypts `buf[8..len]` and appends the E flag, SRTCP index and tag in the profile's
    /// order: `E|index, tag` for AES-CM (RFC 3711 §3.4), `tag, E|index` for GCM (RFC 7714 §9).
    pub(super) fn protect_rtcp(
        &self,
        buf: &mut [u8],
        len: usize,
        ssrc: u32,
        index: u32,
    ) -> Result<usize, SrtpError> {
        let trailer = (E_FLAG | index).to_be_bytes();
        match self {
            Session::AesCm(s) => {
                s.apply_keystream(&mut buf[RTCP_CLEAR..len], ssrc, u64::from(index))?;
                buf[len..len + 4].copy_from_slice(&trailer);
                let tag = s.mac(&buf[..len + 4], &[]);
                buf[len + 4..len + 4 + TAG_CM].copy_from_slice(&tag);
                Ok(len + 4 + TAG_CM)
            }
            Session::Gcm(s) => {
                let nonce = s.rtcp_nonce(ssrc, index);
                let aad = rtcp_aad(&buf[..RTCP_CLEAR], trailer);
                let tag = s
                    .aead
                    .seal_in_place_separate_tag(nonce, Aad::from(&aad), &mut buf[RTCP_CLEAR..len])
                    .map_err(|_| SrtpError::Crypto)?;
                buf[len..len + TAG_GCM].copy_from_slice(tag.as_ref());
                buf[len + TAG_GCM..len + TAG_GCM + 4].copy_from_slice(&trailer);
                Ok(len + TAG_GCM + 4)
            }
        }
    }

    /// Where the 4-byte `E|index` word starts in an SRTCP packet of `len` bytes (`len` has
    /// been checked to hold header, word and tag).
    pub(super) fn srtcp_index_at(&self, len: usize) -> usize {
        match self {
            Session::AesCm(_) => len - TAG_CM - 4,
            Session::Gcm(_) => len - 4,
        }
    }

    /// Authenticates an SRTCP packet and, if its E flag is set, decrypts it in place. Returns
    /// the RTCP length. `word` is the `E|index` word the caller read at `srtcp_index_at`.
    pub(super) fn unprotect_rtcp(
        &self,
        buf: &mut [u8],
        ssrc: u32,
        word: u32,
    ) -> Result<usize, SrtpError> {
        let encrypted = word & E_FLAG != 0;
        let index = word & !E_FLAG;
        let len = buf.len();
        match self {
            Session::AesCm(s) => {
                let end = len - TAG_CM;
                let tag = s.mac(&buf[..end], &[]);
                if !bool::from(tag.ct_eq(&buf[end..])) {
                    return Err(SrtpError::AuthFailed);
                }
                let body_end = end - 4;
                if encrypted {
                    s.apply_keystream(&mut buf[RTCP_CLEAR..body_end], ssrc, u64::from(index))?;
                }
                Ok(body_end)
            }
            Session::Gcm(s) => {
                let nonce = s.rtcp_nonce(ssrc, index);
                let trailer = word.to_be_bytes();
                let body_end = len - 4 - TAG_GCM;
                if encrypted {
                    // RFC 7714 §9.2: AAD is the 8 clear bytes and the E|index word.
                    let aad = rtcp_aad(&buf[..RTCP_CLEAR], trailer);
                    s.aead
                        .open_in_place(nonce, Aad::from(&aad), &mut buf[RTCP_CLEAR..len - 4])
                        .map_err(|_| SrtpError::AuthFailed)?;
                } else {
                    // RFC 7714 §9.3: the whole packet then the E|index word is AAD and the
                    // plaintext is empty. Make the AAD contiguous by moving the word over the
                    // (saved) tag.
                    let mut tag = [0u8; TAG_GCM];
                    tag.copy_from_slice(&buf[body_end..body_end + TAG_GCM]);
                    buf[body_end..body_end + 4].copy_from_slice(&trailer);
                    s.aead
                        .open_in_place_separate_tag(
                            nonce,
                            Aad::from(&buf[..body_end + 4]),
                            &tag,
                            &mut [],
                        )
                        .map_err(|_| SrtpError::AuthFailed)?;
                }
                Ok(body_end)
            }
        }
    }
}

const TAG_CM: usize = 10;
const TAG_GCM: usize = 16;

impl AesCm {
    pub(super) fn new(derived: &Derived) -> Result<AesCm, SrtpError> {
        let key =
            UnboundCipherKey::new(&AES_128, &derived.key[..16]).map_err(|_| SrtpError::Crypto)?;
        Ok(AesCm {
            cipher: EncryptingKey::ctr(key).map_err(|_| SrtpError::Crypto)?,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &derived.auth),
            salt: derived.salt,
        })
    }

    /// RFC 3711 §4.1.1: IV = (k_s·2^16) XOR (SSRC·2^64) XOR (i·2^16); XORs in place.
    /// The SRTCP index takes the place of i (§3.4).
    pub(super) fn apply_keystream(
        &self,
        data: &mut [u8],
        ssrc: u32,
        index: u64,
    ) -> Result<(), SrtpError> {
        let mut iv = [0u8; 16];
        iv[..MAX_SALT].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= s;
        }
        // Cannot fail for CTR with an Iv128 context, but a failure must never let plaintext
        // out, so it is propagated rather than ignored.
        self.cipher
            .less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
            .map(drop)
            .map_err(|_| SrtpError::Crypto)
    }

    /// HMAC-SHA1 over `data || extra`, truncated to 80 bits (RFC 3711 §4.2: extra is the
    /// ROC for SRTP, empty for SRTCP, whose index word is already in `data`).
    fn mac(&self, data: &[u8], extra: &[u8]) -> [u8; TAG_CM] {
        let mut ctx = hmac::Context::with_key(&self.auth);
        ctx.update(data);
        ctx.update(extra);
        let mut tag = [0u8; TAG_CM];
        tag.copy_from_slice(&ctx.sign().as_ref()[..TAG_CM]);
        tag
    }
}

impl Gcm {
    fn new(derived: &Derived, aes256: bool) -> Result<Gcm, SrtpError> {
        let key = if aes256 {
            UnboundKey::new(&AES_256_GCM, &derived.key[..32])
        } else {
            UnboundKey::new(&AES_128_GCM, &derived.key[..16])
        }
        .map_err(|_| SrtpError::Crypto)?;
        let mut salt = [0u8; 12];
        salt.copy_from_slice(&derived.salt[..12]);
        Ok(Gcm {
            aead: LessSafeKey::new(key),
            salt,
        })
    }

    /// RFC 7714 §8.1: IV = (00 00 || SSRC || ROC || SEQ) XOR salt.
    fn rtp_nonce(&self, ssrc: u32, index: u64) -> Nonce {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
        self.xor_salt(iv)
    }

    /// RFC 7714 §9.1: IV = (00 00 || SSRC || 00 00 || 0 || SRTCP index) XOR salt.
    fn rtcp_nonce(&self, ssrc: u32, index: u32) -> Nonce {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[8..12].copy_from_slice(&(index & !E_FLAG).to_be_bytes());
        self.xor_salt(iv)
    }

    fn xor_salt(&self, mut iv: [u8; 12]) -> Nonce {
        for (b, s) in iv.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        Nonce::assume_unique_for_key(iv)
    }
}

/// The 32-bit rollover counter of a 48-bit packet index.
fn roc(index: u64) -> [u8; 4] {
    ((index >> 16) as u32).to_be_bytes()
}

/// RFC 7714 §9.1 AAD for an encrypted SRTCP packet: the 8 clear bytes, then `E|index`.
fn rtcp_aad(clear: &[u8], trailer: [u8; 4]) -> [u8; 12] {
    let mut aad = [0u8; 12];
    aad[..RTCP_CLEAR].copy_from_slice(clear);
    aad[RTCP_CLEAR..].copy_from_slice(&trailer);
    aad
}
