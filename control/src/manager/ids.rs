//! Ids and random values: from the operating system's CSPRNG, through aws-lc.
//!
//! Session and room ids are newtypes, so that one cannot be passed where the other is
//! expected. On the wire (JSON, logs) both are plain strings; a map keyed by either is looked
//! up by `&str` too (`Borrow<str>`). Clones are cheap (`Arc<str>`): the actor copies ids into
//! its leg table, room member lists, links between sessions and timers.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sluice_dataplane::api::Ssrc;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// A fresh id: a version-4 UUID from the system's CSPRNG.
            pub fn random() -> Self {
                $name(new_id().into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.into())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s.into())
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        /// A JSON string, as before the newtype.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map($name::from)
            }
        }
    };
}

string_id! {
    /// A media session's id (`session_id`, `master_id`, `publisher_id`, ...).
    SessionId
}

string_id! {
    /// An SFU room's id (`room_id`).
    RoomId
}

/// A random id (a version-4 UUID) for anything else: a WebSocket connection's login session.
pub fn new_id() -> String {
    uuid::Builder::from_random_bytes(random_bytes())
        .into_uuid()
        .to_string()
}

/// Random bytes from the operating system's CSPRNG (through aws-lc).
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).expect("the system random generator works");
    b
}

/// `n` random bytes (e.g. an SRTP master key and salt).
pub fn random_vec(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).expect("the system random generator works");
    b
}

pub fn random_u64() -> u64 {
    u64::from_ne_bytes(random_bytes())
}

/// A non-zero random SSRC.
pub fn random_ssrc() -> Ssrc {
    loop {
        let v = random_u64() as u32;
        if v != 0 {
            return Ssrc(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bit of a generated SSRC is a coin toss: over 4096 draws each is set about
    /// 2048 times (σ = 32; the bounds are 10σ away). A UUID v4's fixed version nibble once
    /// pinned bits 12-15.
    #[test]
    fn random_ssrcs_have_no_fixed_bits() {
        let mut ones = [0u32; 32];
        for _ in 0..4096 {
            let v = random_ssrc().0;
            for (bit, n) in ones.iter_mut().enumerate() {
                *n += (v >> bit) & 1;
            }
        }
        for (bit, n) in ones.iter().enumerate() {
            assert!((1728..=2368).contains(n), "bit {bit} set {n} times in 4096");
        }
        let ids: std::collections::HashSet<SessionId> =
            (0..256).map(|_| SessionId::random()).collect();
        assert_eq!(ids.len(), 256);
    }

    #[test]
    fn random_ssrcs_are_non_zero_and_differ() {
        let a = random_ssrc();
        let b = random_ssrc();
        assert!(a.0 != 0 && b.0 != 0 && a != b);
    }

    /// Ids are strings on the wire and in maps: JSON round trip, `&str` lookups, `Display`.
    #[test]
    fn ids_are_strings_on_the_wire() {
        let id = SessionId::from("s-1");
        assert_eq!(serde_json::to_value(&id).expect("serializes"), "s-1");
        let back: SessionId = serde_json::from_value("s-1".into()).expect("deserializes");
        assert_eq!(back, id);
        assert!(serde_json::from_value::<RoomId>(5.into()).is_err());
        let mut m = std::collections::HashMap::new();
        m.insert(id.clone(), 1);
        assert_eq!(m.get("s-1"), Some(&1));
        assert_eq!(format!("{id} {id:?}"), "s-1 \"s-1\"");
        assert_eq!(RoomId::random().as_str().len(), 36);
    }
}
