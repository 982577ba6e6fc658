//! The SRTP key derivation function: RFC 3711 §4.3 with key_derivation_rate 0, the AES-CM PRF
//! (§4.3.3). RFC 7714 §11 keeps it for AES-GCM.

use aws_lc_rs::cipher::{AES_128, AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;

use super::{MAX_KEY, MAX_SALT, MasterKey, SrtpError, wipe};

/// RFC 3711 §4.3.2 labels.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub(super) enum Label {
    RtpEncryption = 0,
    RtpAuth = 1,
    RtpSalt = 2,
    RtcpEncryption = 3,
    RtcpAuth = 4,
    RtcpSalt = 5,
}

/// Session keys for one of SRTP or SRTCP.
pub(super) struct Derived {
    /// The first `profile.key_len()` bytes are meaningful.
    pub key: [u8; MAX_KEY],
    /// The first `profile.auth_key_len()` bytes are meaningful.
    pub auth: [u8; 20],
    /// The first `profile.salt_len()` bytes are meaningful.
    pub salt: [u8; MAX_SALT],
}

impl Drop for Derived {
    fn drop(&mut self) {
        wipe(&mut self.key);
        wipe(&mut self.auth);
        wipe(&mut self.salt);
    }
}

/// The session keys for SRTP (`rtcp == false`) or SRTCP from one master key.
pub(super) fn derive(master: &MasterKey, rtcp: bool) -> Result<Derived, SrtpError> {
    let profile = master.profile;
    // RFC 6188 §7 / RFC 7714 §11: the PRF is AES-CM with the master key's own size.
    let key_len = profile.key_len();
    let cipher = if key_len == 32 { &AES_256 } else { &AES_128 };
    let prf = EncryptingKey::ctr(
        UnboundCipherKey::new(cipher, &master.key[..key_len]).map_err(|_| SrtpError::Crypto)?,
    )
    .map_err(|_| SrtpError::Crypto)?;
    let (enc, auth, salt) = if rtcp {
        (Label::RtcpEncryption, Label::RtcpAuth, Label::RtcpSalt)
    } else {
        (Label::RtpEncryption, Label::RtpAuth, Label::RtpSalt)
    };
    let mut out = Derived {
        key: [0; MAX_KEY],
        auth: [0; 20],
        salt: [0; MAX_SALT],
    };
    prf_block(&prf, &master.salt, enc, &mut out.key[..key_len])?;
    prf_block(
        &prf,
        &master.salt,
        auth,
        &mut out.auth[..profile.auth_key_len()],
    )?;
    prf_block(
        &prf,
        &master.salt,
        salt,
        &mut out.salt[..profile.salt_len()],
    )?;
    Ok(out)
}

/// RFC 3711 §4.3.1: with rate 0, r = 0, so x = (label << 48) XOR master_salt, i.e. the label
/// lands on byte 7 of the 112-bit salt; the PRF output is the AES-CM keystream from IV x·2^16.
pub(super) fn prf_block(
    prf: &EncryptingKey,
    master_salt: &[u8; MAX_SALT],
    label: Label,
    out: &mut [u8],
) -> Result<(), SrtpError> {
    let mut iv = [0u8; 16];
    iv[..MAX_SALT].copy_from_slice(master_salt);
    iv[7] ^= label as u8;
    out.fill(0);
    prf.less_safe_encrypt(out, EncryptionContext::Iv128(FixedLength::from(iv)))
        .map(drop)
        .map_err(|_| SrtpError::Crypto)
}
