//! Fingerprints: "same or differs" without the value. Two kinds, one home:
//!
//! - [`EnvFingerprinter`]: what cfgsync writes beside what it writes (the
//!   `cfgsync.io/fingerprint` annotation, the CI kinds' records), stable
//!   across runs, keyed with the env's fingerprint key for secret content;
//! - [`RunFingerprinter`]: what a person is shown (below).
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

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::{digest, hmac};

use crate::secret::SecretString;

/// The system random generator failed; nothing can be fingerprinted safely.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw a random fingerprint key from the system")]
pub struct KeyError;

/// HMAC-SHA256 under a key drawn for this process only: what is shown.
pub struct RunFingerprinter {
    key: hmac::Key,
}

impl RunFingerprinter {
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

/// The fingerprints written beside what cfgsync writes (annotations,
/// records), equal across runs: SHA-256 of plain content, HMAC-SHA256
/// under the env's key (`[fingerprint] key`, read with the env's secrets)
/// of secret content, so that a stored fingerprint is never a plain hash
/// of a password.
#[derive(Clone)]
pub struct EnvFingerprinter {
    key: Option<SecretString>,
}

impl EnvFingerprinter {
    pub fn new(key: Option<SecretString>) -> Self {
        Self { key }
    }

    /// `sha256:<hex>` for untainted content, `hmac-sha256:<hex>` for tainted.
    /// `None` when the content is tainted and there is no key.
    ///
    /// What is hashed is each entry's name and bytes, each preceded by its
    /// length (8 bytes, big-endian), fed to the hash as they are: no
    /// canonical copy of the content is built (a pass over megabytes of
    /// rendered output paid a copy and its fresh pages for nothing).
    pub fn fingerprint<'a>(
        &self,
        data: impl IntoIterator<Item = (&'a String, &'a [u8])>,
        tainted: bool,
    ) -> Option<String> {
        if tainted {
            let key = hmac::Key::new(hmac::HMAC_SHA256, self.key.as_ref()?.expose().as_bytes());
            let mut ctx = hmac::Context::with_key(&key);
            feed(data, |part| ctx.update(part));
            Some(format!("hmac-sha256:{}", hex(&ctx.sign().as_ref()[..16])))
        } else {
            let mut ctx = digest::Context::new(&digest::SHA256);
            feed(data, |part| ctx.update(part));
            Some(format!("sha256:{}", hex(&ctx.finish().as_ref()[..16])))
        }
    }
}

/// The canonical form of `data`, in parts: for each entry, its name's
/// length, the name, its value's length, the value.
fn feed<'a>(data: impl IntoIterator<Item = (&'a String, &'a [u8])>, mut update: impl FnMut(&[u8])) {
    for (k, v) in data {
        update(&(k.len() as u64).to_be_bytes());
        update(k.as_bytes());
        update(&(v.len() as u64).to_be_bytes());
        update(v);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    /// The canonical form the stored fingerprints were always computed over
    /// (one buffer), which the incremental hashing must reproduce exactly:
    /// a changed fingerprint would read as drift on every object written
    /// before.
    #[test]
    fn fingerprints_are_those_of_the_canonical_buffer() {
        let (a, b, c) = ("A".to_owned(), "BB".to_owned(), String::new());
        let data = [(&a, &b"CANARY-1"[..]), (&b, &b""[..]), (&c, &b"x"[..])];
        let mut canonical = Vec::new();
        for (k, v) in data {
            canonical.extend_from_slice(&(k.len() as u64).to_be_bytes());
            canonical.extend_from_slice(k.as_bytes());
            canonical.extend_from_slice(&(v.len() as u64).to_be_bytes());
            canonical.extend_from_slice(v);
        }
        let plain = EnvFingerprinter::new(None);
        let sha = hex(&digest::digest(&digest::SHA256, &canonical).as_ref()[..16]);
        assert_eq!(plain.fingerprint(data, false), Some(format!("sha256:{sha}")));
        assert_eq!(plain.fingerprint(data, true), None, "no key: no fingerprint of secret content");
        let keyed = EnvFingerprinter::new(Some(SecretString::new("k")));
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        let mac = hex(&hmac::sign(&key, &canonical).as_ref()[..16]);
        assert_eq!(keyed.fingerprint(data, true), Some(format!("hmac-sha256:{mac}")));
    }

    #[test]
    fn equal_values_match_within_a_run_and_keys_differ_between_runs() {
        let a = RunFingerprinter::new().unwrap();
        assert_eq!(a.of(b"CANARY-x"), a.of(b"CANARY-x"));
        assert_ne!(a.of(b"CANARY-x"), a.of(b"CANARY-y"));
        let b = RunFingerprinter::new().unwrap();
        assert_ne!(a.of(b"CANARY-x"), b.of(b"CANARY-x"), "a fresh key per run");
        let shown = a.of(b"CANARY-x").to_string();
        assert_eq!(shown.len(), 16);
        assert!(shown.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
