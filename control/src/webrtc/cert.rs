//! The DTLS certificate and SDP fingerprints (RFC 8122 §5).
//!
//! The server generates one self-signed ECDSA P-256 certificate at start ([`Certificate`])
//! and announces its SHA-256 digest in every WebRTC SDP (`a=fingerprint:sha-256 AB:CD:…`).
//! A peer's certificate is trusted exactly when its digest equals the [`Fingerprint`] of
//! its SDP (RFC 8842 §5): there is no PKI.

use std::fmt;

use aws_lc_rs::digest;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate the DTLS certificate")]
    Generation,
    #[error("malformed a=fingerprint {0:?}: expected \"<hash> XX:XX:…\"")]
    MalformedFingerprint(String),
    #[error("unsupported fingerprint hash {0:?}")]
    UnsupportedHash(String),
}

/// Our DTLS identity: a self-signed certificate and its private key.
#[derive(Clone)]
pub struct Certificate {
    inner: dimpl::DtlsCertificate,
    fingerprint: String,
}

impl Certificate {
    /// A fresh self-signed ECDSA P-256 certificate (dimpl's generator: random 128-bit serial,
    /// as Firefox requires serials to differ between certificates).
    pub fn generate() -> Result<Certificate, CertError> {
        let inner = dimpl::certificate::generate_self_signed_certificate()
            .map_err(|_| CertError::Generation)?;
        Ok(Certificate::from_dimpl(inner))
    }

    fn from_dimpl(inner: dimpl::DtlsCertificate) -> Certificate {
        let fingerprint = hex_colon(digest::digest(&digest::SHA256, &inner.certificate).as_ref());
        Certificate { inner, fingerprint }
    }

    /// The SHA-256 fingerprint as SDP writes it: upper-case hex pairs joined by `:`.
    pub fn fingerprint_sha256(&self) -> &str {
        &self.fingerprint
    }

    /// The value of our `a=fingerprint` line: `sha-256 AB:CD:…`.
    pub fn sdp_fingerprint(&self) -> String {
        format!("sha-256 {}", self.fingerprint)
    }

    /// The DER certificate.
    pub fn der(&self) -> &[u8] {
        &self.inner.certificate
    }

    pub(super) fn dimpl(&self) -> dimpl::DtlsCertificate {
        self.inner.clone()
    }
}

/// The private key never reaches logs.
impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn hex_colon(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// Hash functions of RFC 8122 §5 that WebRTC peers use (RFC 8827 §6.5 requires sha-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFunction {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashFunction {
    pub fn parse(name: &str) -> Option<HashFunction> {
        match name.to_ascii_lowercase().as_str() {
            "sha-1" => Some(HashFunction::Sha1),
            "sha-256" => Some(HashFunction::Sha256),
            "sha-384" => Some(HashFunction::Sha384),
            "sha-512" => Some(HashFunction::Sha512),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HashFunction::Sha1 => "sha-1",
            HashFunction::Sha256 => "sha-256",
            HashFunction::Sha384 => "sha-384",
            HashFunction::Sha512 => "sha-512",
        }
    }

    fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            HashFunction::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashFunction::Sha256 => &digest::SHA256,
            HashFunction::Sha384 => &digest::SHA384,
            HashFunction::Sha512 => &digest::SHA512,
        }
    }
}

/// A parsed `a=fingerprint` value (RFC 8122 §5): hash function and digest bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub hash: HashFunction,
    pub digest: Vec<u8>,
}

impl Fingerprint {
    /// Parses `sha-256 AB:CD:…` (hex case-insensitive, RFC 8122 §5).
    pub fn parse(value: &str) -> Result<Fingerprint, CertError> {
        let malformed = || CertError::MalformedFingerprint(value.chars().take(120).collect());
        let (name, hex) = value.trim().split_once(' ').ok_or_else(malformed)?;
        let hash =
            HashFunction::parse(name).ok_or_else(|| CertError::UnsupportedHash(name.to_owned()))?;
        let digest = hex
            .trim()
            .split(':')
            .map(|pair| match pair.len() {
                2 => u8::from_str_radix(pair, 16).ok(),
                _ => None,
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(malformed)?;
        if digest.len() != hash.algorithm().output_len() {
            return Err(malformed());
        }
        Ok(Fingerprint { hash, digest })
    }

    /// The fingerprint of a DER certificate with `hash`.
    pub fn of(hash: HashFunction, der: &[u8]) -> Fingerprint {
        Fingerprint {
            hash,
            digest: digest::digest(hash.algorithm(), der).as_ref().to_vec(),
        }
    }

    /// True if `der` hashes to this fingerprint (constant-time compare).
    pub fn matches(&self, der: &[u8]) -> bool {
        let actual = digest::digest(self.hash.algorithm(), der);
        bool::from(actual.as_ref().ct_eq(&self.digest))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.hash.as_str(), hex_colon(&self.digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_has_upper_case_sha256_fingerprint() {
        let cert = Certificate::generate().expect("generation works");
        let fp = cert.fingerprint_sha256();
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(
            fp.bytes()
                .all(|b| b == b':' || b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        );
        let parsed = Fingerprint::parse(&cert.sdp_fingerprint()).expect("our own parses");
        assert!(parsed.matches(cert.der()));
        assert_eq!(parsed.to_string(), cert.sdp_fingerprint());
        assert!(!format!("{cert:?}").contains("private"));
    }

    #[test]
    fn fingerprint_matches_only_its_certificate() {
        let a = Certificate::generate().expect("generation works");
        let b = Certificate::generate().expect("generation works");
        let fa = Fingerprint::parse(&a.sdp_fingerprint()).expect("valid");
        assert!(fa.matches(a.der()));
        assert!(!fa.matches(b.der()));
        let sha1 = Fingerprint::of(HashFunction::Sha1, a.der());
        let reparsed = Fingerprint::parse(&sha1.to_string().to_lowercase()).expect("valid");
        assert!(reparsed.matches(a.der()));
    }

    #[test]
    fn malformed_fingerprints_are_refused() {
        for bad in [
            "",
            "sha-256",
            "sha-256 zz:11",
            "sha-256 AB:CD",
            "sha-256 ABC:D",
            "md5 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89",
        ] {
            assert!(Fingerprint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
