//! SDES (RFC 4568): SRTP master keys in `a=crypto` lines, for plain-RTP peers that secure
//! their media without DTLS (`RTP/SAVP`, `RTP/SAVPF`; many SIP phones).
//!
//! `a=crypto:<tag> <suite> inline:<base64 key||salt>[|lifetime][|MKI:length]`. Only the
//! suites the data plane implements are read (AES_CM_128_HMAC_SHA1_80, and the RFC 7714 GCM
//! suites); a line with an MKI, session parameters or several keys is skipped (no usable key).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sluice_dataplane::srtp::{MasterKey, Profile};

use super::{Attribute, Media, Proto};

/// One usable `a=crypto` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdesKey {
    pub tag: u32,
    pub profile: Profile,
    /// The master key followed by the master salt.
    pub key_salt: Vec<u8>,
}

impl SdesKey {
    /// The data plane's master key.
    pub fn master(&self) -> Option<MasterKey> {
        let (key, salt) = self.key_salt.split_at(self.profile.key_len());
        MasterKey::new(self.profile, key, salt).ok()
    }

    /// The `a=crypto` line for this key.
    pub fn attribute(&self) -> Attribute {
        let value = format!(
            "{} {} inline:{}",
            self.tag,
            suite_name(self.profile),
            STANDARD.encode(&self.key_salt)
        );
        Attribute::new("crypto", Some(&value))
    }
}

/// True for the profiles SDES keys secure (`RTP/SAVP`, `RTP/SAVPF`).
pub fn is_sdes_proto(proto: &Proto) -> bool {
    matches!(proto, Proto::RtpSavp | Proto::RtpSavpf)
}

/// RFC 4568 §6.2 and RFC 7714 §14.2 suite names.
pub fn suite_name(profile: Profile) -> &'static str {
    match profile {
        Profile::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
        Profile::AeadAes128Gcm => "AEAD_AES_128_GCM",
        Profile::AeadAes256Gcm => "AEAD_AES_256_GCM",
    }
}

fn suite(name: &str) -> Option<Profile> {
    [
        Profile::AesCm128HmacSha1_80,
        Profile::AeadAes128Gcm,
        Profile::AeadAes256Gcm,
    ]
    .into_iter()
    .find(|p| suite_name(*p) == name)
}

/// The usable keys of an m-line, in the offerer's order of preference.
pub fn keys(m: &Media) -> Vec<SdesKey> {
    m.attributes
        .iter()
        .filter(|a| a.name == "crypto")
        .filter_map(|a| parse(a.value.as_deref()?))
        .collect()
}

/// One `a=crypto` value, if we can use it.
pub fn parse(value: &str) -> Option<SdesKey> {
    let mut fields = value.split_ascii_whitespace();
    let tag: u32 = fields.next()?.parse().ok()?;
    if tag > 999_999_999 {
        return None;
    }
    let profile = suite(fields.next()?)?;
    let params = fields.next()?;
    // Session parameters (KDR, UNENCRYPTED_SRTP, ...) change how SRTP works: not for us.
    if fields.next().is_some() || params.contains(';') {
        return None;
    }
    let inline = params.strip_prefix("inline:")?;
    let mut parts = inline.split('|');
    let key_salt = STANDARD.decode(parts.next()?).ok()?;
    for p in parts {
        // A lifetime (`2^31` or a number) is fine; an MKI is not.
        if p.contains(':') {
            return None;
        }
    }
    if key_salt.len() != profile.key_len() + profile.salt_len() {
        return None;
    }
    Some(SdesKey {
        tag,
        profile,
        key_salt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4568 §9.1's example key.
    const EXAMPLE: &str =
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4";
    const NO_MKI: &str =
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20";

    #[test]
    fn a_key_without_mki_is_read_and_written_back() {
        let k = parse(NO_MKI).expect("usable");
        assert_eq!(k.tag, 1);
        assert_eq!(k.profile, Profile::AesCm128HmacSha1_80);
        assert_eq!(k.key_salt.len(), 30);
        assert!(k.master().is_some());
        let back = k.attribute();
        assert_eq!(back.name, "crypto");
        let again = parse(back.value.as_deref().expect("value")).expect("round trip");
        assert_eq!(again, k);
    }

    #[test]
    fn unusable_lines_are_skipped() {
        assert_eq!(parse(EXAMPLE), None, "an MKI");
        for bad in [
            "",
            "1",
            "x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=",
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR KDR=1",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn gcm_keys_have_a_twelve_byte_salt() {
        let k = SdesKey {
            tag: 3,
            profile: Profile::AeadAes256Gcm,
            key_salt: vec![7; 44],
        };
        let v = k.attribute().value.expect("value");
        assert!(v.starts_with("3 AEAD_AES_256_GCM inline:"), "{v}");
        assert_eq!(parse(&v), Some(k));
    }
}
