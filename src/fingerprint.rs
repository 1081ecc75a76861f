//! Keyed fingerprints of secret values, for "same or differs" without the value.
//!
//! `diff --rendered` and `pull` have to say whether a secret-bearing entry
//! changed without showing it. A plain hash would let anyone holding the
//! output test guesses offline (a short password falls to a dictionary), so
//! each invocation draws a fresh random key and fingerprints are
//! HMAC-SHA256 under it: equal within one run exactly when the values are
//! equal, meaningless outside it. They are shown shortened (8 bytes): enough
//! to tell two values apart on screen, useless as an oracle.
//!
//! The HMAC comes from aws-lc-rs, the crypto provider rustls already uses,
//! so this adds no crypto crate.

use std::fmt;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;

/// The system random generator failed; nothing can be fingerprinted safely.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw a random fingerprint key from the system")]
pub struct KeyError;

/// HMAC-SHA256 under a key drawn for this process only.
pub struct Fingerprinter {
    key: hmac::Key,
}

impl Fingerprinter {
    pub fn new() -> Result<Self, KeyError> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).map_err(|_| KeyError)?;
        Ok(Self { key })
    }

    pub fn of(&self, value: &[u8]) -> Fingerprint {
        let tag = hmac::sign(&self.key, value);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(tag.as_ref());
        Fingerprint(bytes)
    }
}

/// A keyed fingerprint. Compares the whole tag; shows the first 8 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_match_within_a_run_and_keys_differ_between_runs() {
        let a = Fingerprinter::new().unwrap();
        assert_eq!(a.of(b"CANARY-x"), a.of(b"CANARY-x"));
        assert_ne!(a.of(b"CANARY-x"), a.of(b"CANARY-y"));
        let b = Fingerprinter::new().unwrap();
        assert_ne!(a.of(b"CANARY-x"), b.of(b"CANARY-x"), "a fresh key per run");
        let shown = a.of(b"CANARY-x").to_string();
        assert_eq!(shown.len(), 16);
        assert!(shown.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
