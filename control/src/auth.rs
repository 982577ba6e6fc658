//! The API secret, checked the same way at every door: `login` on the WebSocket API, and
//! `Authorization: Bearer SECRET` on `/metrics` and `/recordings`.
//!
//! Both sides are hashed (SHA-256) before a constant-time comparison, so that neither the
//! position of the first differing byte nor the secret's length shows in the time taken.

use aws_lc_rs::digest::{SHA256, digest};
use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// True when `given` is the secret, compared in constant time.
pub fn secret_matches(secret: &str, given: &[u8]) -> bool {
    let want = digest(&SHA256, secret.as_bytes());
    let got = digest(&SHA256, given);
    want.as_ref().ct_eq(got.as_ref()).into()
}

/// `Authorization: Bearer SECRET` carries the secret; anything passes without one.
pub fn bearer_ok(secret: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(secret) = secret else {
        return true;
    };
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
    else {
        return false;
    };
    secret_matches(secret, token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_the_exact_secret_matches() {
        assert!(secret_matches("s3", b"s3"));
        assert!(!secret_matches("s3", b"s33"));
        assert!(!secret_matches("s3", b"s"));
        assert!(!secret_matches("s3", b""));
        assert!(!secret_matches("s3", b"S3"));
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(bearer_ok(None, &h));
        assert!(!bearer_ok(Some("s3"), &h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3"));
        assert!(bearer_ok(Some("s3"), &h));
        assert!(!bearer_ok(Some("s33"), &h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer s3"));
        assert!(bearer_ok(Some("s3"), &h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic s3"));
        assert!(!bearer_ok(Some("s3"), &h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert!(!bearer_ok(Some("s3"), &h));
    }
}
