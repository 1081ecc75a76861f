//! The one type every secret value and credential lives in.
//!
//! `Debug` and `Display` print `**REDACTED**`, so a secret that ends up in a
//! log line, an error or a `{:?}` by mistake shows nothing. Reading the value
//! needs an explicit call to [`SecretString::expose`], which is easy to find
//! in review.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = SecretString::new("CANARY-hunter2");
        assert_eq!(format!("{s:?}"), "**REDACTED**");
        assert_eq!(format!("{s}"), "**REDACTED**");
        assert_eq!(format!("{:?}", Some(&s)), "Some(**REDACTED**)");
        assert_eq!(s.expose(), "CANARY-hunter2");
    }
}
