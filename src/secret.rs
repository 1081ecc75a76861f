//! The types plaintext lives in: [`SecretString`] for every secret value
//! and credential, [`Content`] for everything a rendering produced.
//!
//! `Debug` and `Display` of a secret print `**REDACTED**`, so a secret that
//! ends up in a log line, an error or a `{:?}` by mistake shows nothing.
//! Reading the value needs an explicit call to `expose`, which is easy to
//! find in review: the call sites are the writers (a file, a Kubernetes
//! object, a CI variable), comparisons and keyed fingerprints.
//!
//! [`Content`] is an allow-list rather than a scrubber: the only way to get
//! text *to show a person* is [`Content::shown`], which answers `None` for
//! secret content. Neither type implements `Display` or `Serialize`.

use std::fmt;
use std::sync::Arc;

/// A string that must never be printed: a Vault field, a password, a token.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself. Call sites are the places that may handle plaintext:
    /// rendering, writing a target, authenticating.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// Rendered bytes and whether they are secret (the output that produced
/// them read a secret: taint is per output, so every entry of a tainted
/// output is secret).
///
/// The bytes are shared, never copied by a clone: a rendered output is
/// held by its rendering, the items its targets want and what a file
/// target found equal to it, and a pass over megabytes of output paid a
/// copy (and its fresh pages) for each.
#[derive(Clone, PartialEq, Eq)]
pub struct Content {
    bytes: Arc<Vec<u8>>,
    secret: bool,
}

impl Content {
    /// Content that read no secret.
    pub fn plain(bytes: impl Into<Vec<u8>>) -> Self {
        Self { bytes: Arc::new(bytes.into()), secret: false }
    }

    /// Content derived from a secret.
    pub fn secret(bytes: impl Into<Vec<u8>>) -> Self {
        Self { bytes: Arc::new(bytes.into()), secret: true }
    }

    /// `secret` or plain, as `tainted` says.
    pub fn new(bytes: impl Into<Vec<u8>>, tainted: bool) -> Self {
        Self { bytes: Arc::new(bytes.into()), secret: tainted }
    }

    /// The same bytes (shared, not copied), secret as `secret` says.
    pub fn with_secret(&self, secret: bool) -> Self {
        Self { bytes: self.bytes.clone(), secret }
    }

    /// Whether `other` holds the same bytes: at once when they are shared.
    pub fn same_bytes(&self, other: &[u8]) -> bool {
        std::ptr::eq(self.bytes.as_slice(), other) || self.bytes.as_slice() == other
    }

    pub fn is_secret(&self) -> bool {
        self.secret
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes, for a writer, a comparison or a keyed fingerprint.
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes as text, for an encoder (dotenv, JSON, YAML) whose result
    /// is again a [`Content`] with the same taint. `None` when not UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }

    /// The text, for showing to a person (a diff, a plan): `None` when
    /// secret, lossy when not UTF-8.
    pub fn shown(&self) -> Option<std::borrow::Cow<'_, str>> {
        (!self.secret).then(|| String::from_utf8_lossy(&self.bytes))
    }

    /// Applies an encoder to the bytes, keeping the taint.
    pub fn map<E>(&self, f: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>) -> Result<Content, E> {
        Ok(Content { bytes: Arc::new(f(&self.bytes)?), secret: self.secret })
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shown() {
            Some(text) => write!(f, "Content({text:?})"),
            None => write!(f, "Content(**REDACTED**, {} bytes)", self.bytes.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_content_is_shown_nowhere() {
        let c = Content::secret("CANARY-hunter2");
        assert_eq!(format!("{c:?}"), "Content(**REDACTED**, 14 bytes)");
        assert!(c.shown().is_none());
        assert_eq!(c.expose(), b"CANARY-hunter2");
        let encoded = c.map(|b| Ok::<_, ()>([b"X=", b].concat())).unwrap();
        assert!(encoded.is_secret() && encoded.shown().is_none(), "encoding keeps the taint");
        let plain = Content::plain("visible");
        assert_eq!(plain.shown().as_deref(), Some("visible"));
        assert_eq!(format!("{plain:?}"), "Content(\"visible\")");
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = SecretString::new("CANARY-hunter2");
        assert_eq!(format!("{s:?}"), "**REDACTED**");
        assert_eq!(format!("{s}"), "**REDACTED**");
        assert_eq!(format!("{:?}", Some(&s)), "Some(**REDACTED**)");
        assert_eq!(s.expose(), "CANARY-hunter2");
    }
}
