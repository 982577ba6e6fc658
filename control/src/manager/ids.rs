//! Ids and random values: from the operating system's CSPRNG, through aws-lc.

use sluice_dataplane::api::Ssrc;

/// A session or room id: a version-4 UUID.
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
        let ids: std::collections::HashSet<String> = (0..256).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 256);
    }

    #[test]
    fn random_ssrcs_are_non_zero_and_differ() {
        let a = random_ssrc();
        let b = random_ssrc();
        assert!(a.0 != 0 && b.0 != 0 && a != b);
    }
}
