//! `<env>@<when>`: an env named at a past point, as `diff`, `explain`,
//! `plan --at` and `rollback --to` accept it.
//!
//! ```text
//! prod@rev:1234          etcd revision 1234 (a bare number is a revision too)
//! prod@2026-12-01T14:02:00Z   an RFC 3339 time (any offset; shown in UTC)
//! prod@-1h               relative: 1 hour ago ("-90m", "-1h30m", "-2d")
//! prod@-3passes          three recorded passes before the newest ("-1pass", "-3 passes")
//! ```
//!
//! Parsing is pure and happens before anything is read; what a point
//! *means* (which revision, which secret versions) is decided against the
//! history in [`crate::history::point`]. A name without `@` is the env now.
//!
//! Decisions:
//! - A bare number is a revision, not a Unix time: revisions are what
//!   `explain`, the `cfgsync.io/revision` annotation and `log` print.
//! - Relative times are in the past only (`-`): `prod@1h` is refused with a
//!   hint, as is a time in the future when the point is resolved.
//! - `@` cannot occur in an env name (env names are label values), so the
//!   split is unambiguous.
//! - Relative spans are the config's durations (humantime's syntax, so
//!   `-1y`, `-2weeks` work too). Times are parsed by `jiff`, not humantime:
//!   humantime reads only `Z` times, and an RFC 3339 time may carry any
//!   offset (`+01:00`); jiff is in the tree already (k8s-openapi).
//!   Times are printed as RFC 3339 with milliseconds ([`format_ms`]), not
//!   in [`crate::utc`]'s `… UTC` shape: a time `log` or `diff` prints can
//!   be pasted back as a point and names the same record.

use std::fmt;
use std::time::Duration;

/// A point in the past.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// An etcd revision.
    Revision(i64),
    /// A time (Unix milliseconds).
    Time(i64),
    /// This long before now.
    Ago(Duration),
    /// This many recorded passes before the newest (0: the newest).
    Passes(u32),
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::Revision(r) => write!(f, "rev:{r}"),
            When::Time(ms) => f.write_str(&format_ms(*ms)),
            When::Ago(d) => write!(f, "-{}", format_duration(*d)),
            When::Passes(1) => f.write_str("-1pass"),
            When::Passes(n) => write!(f, "-{n}passes"),
        }
    }
}

/// An env, now or at a point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvAt {
    pub env: String,
    pub at: Option<When>,
}

impl fmt::Display for EnvAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            None => f.write_str(&self.env),
            Some(w) => write!(f, "{}@{w}", self.env),
        }
    }
}

/// A `<when>` that cannot be read. The message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid point {text:?}{why}: use rev:N (an etcd revision), an RFC 3339 time like 2026-12-01T14:02:00Z, -1h (a duration ago) or -3passes"
)]
pub struct WhenError {
    pub text: String,
    why: String,
}

impl WhenError {
    fn new(text: &str, why: &str) -> Self {
        Self { text: text.to_owned(), why: if why.is_empty() { String::new() } else { format!(" ({why})") } }
    }
}

impl EnvAt {
    /// `prod`, `prod@rev:12`, `prod@-1h`.
    pub fn parse(text: &str) -> Result<Self, WhenError> {
        match text.split_once('@') {
            None => Ok(EnvAt { env: text.to_owned(), at: None }),
            Some((env, when)) => Ok(EnvAt { env: env.to_owned(), at: Some(When::parse(when)?) }),
        }
    }
}

impl When {
    pub fn parse(text: &str) -> Result<Self, WhenError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(WhenError::new(text, "empty"));
        }
        if let Some(rev) = t.strip_prefix("rev:").or_else(|| t.strip_prefix("rev=")) {
            return parse_revision(text, rev);
        }
        if t.bytes().all(|b| b.is_ascii_digit()) {
            return parse_revision(text, t);
        }
        if let Some(rel) = t.strip_prefix('-') {
            let rel = rel.trim();
            let digits = rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len());
            let unit = rel[digits..].trim();
            if matches!(unit, "pass" | "passes" | "p") {
                let n: u32 = rel[..digits].parse().map_err(|_| WhenError::new(text, "a number of passes"))?;
                return Ok(When::Passes(n));
            }
            return match crate::config::parse_duration(rel) {
                Some(d) if !d.is_zero() => Ok(When::Ago(d)),
                _ => Err(WhenError::new(text, "")),
            };
        }
        if crate::config::parse_duration(t).is_some() {
            return Err(WhenError::new(text, "a relative point is in the past: write it with a minus, like -1h"));
        }
        match t.parse::<jiff::Timestamp>() {
            Ok(ts) => Ok(When::Time(ts.as_millisecond())),
            Err(_) => Err(WhenError::new(text, "")),
        }
    }
}

fn parse_revision(text: &str, digits: &str) -> Result<When, WhenError> {
    match digits.trim().parse::<i64>() {
        Ok(r) if r > 0 => Ok(When::Revision(r)),
        _ => Err(WhenError::new(text, "a revision is a positive number")),
    }
}

fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (days, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    for (n, unit) in [(days, "d"), (h, "h"), (m, "m"), (sec, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// Unix milliseconds as RFC 3339 in UTC (milliseconds only when not 0,
/// so that what is printed names the same point when read back).
pub fn format_ms(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) if ms.rem_euclid(1000) == 0 => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Ok(ts) => format!("{}.{:03}Z", ts.strftime("%Y-%m-%dT%H:%M:%S"), ms.rem_euclid(1000)),
        Err(_) => format!("{ms} ms"),
    }
}

/// An RFC 3339 time (as Vault writes them) as Unix milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    text.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse_and_print_back() {
        let cases = [
            ("prod", None),
            ("prod@rev:1234", Some(When::Revision(1234))),
            ("prod@1234", Some(When::Revision(1234))),
            ("prod@-1h", Some(When::Ago(Duration::from_secs(3600)))),
            ("prod@-1h30m", Some(When::Ago(Duration::from_secs(5400)))),
            ("prod@-2d", Some(When::Ago(Duration::from_secs(2 * 86_400)))),
            ("prod@-3passes", Some(When::Passes(3))),
            ("prod@-3 passes", Some(When::Passes(3))),
            ("prod@-1pass", Some(When::Passes(1))),
            ("prod@2026-12-01T14:02:00Z", Some(When::Time(1_796_133_720_000))),
            ("prod@2026-12-01T15:02:00+01:00", Some(When::Time(1_796_133_720_000))),
            ("prod@2026-12-01T14:02:00.042Z", Some(When::Time(1_796_133_720_042))),
        ];
        for (text, at) in cases {
            let parsed = EnvAt::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed, EnvAt { env: "prod".into(), at: at.clone() }, "{text}");
            // What is printed parses to the same point.
            assert_eq!(EnvAt::parse(&parsed.to_string()).unwrap(), parsed, "{text} → {parsed}");
        }
        assert_eq!(EnvAt::parse("prod@2026-12-01T15:02:00+01:00").unwrap().to_string(), "prod@2026-12-01T14:02:00Z");
    }

    #[test]
    fn bad_points_say_what_is_accepted() {
        for bad in ["prod@", "prod@rev:0", "prod@rev:x", "prod@-", "prod@-1x", "prod@yesterday", "prod@-xpasses"] {
            let e = EnvAt::parse(bad).unwrap_err().to_string();
            assert!(e.contains("use rev:N"), "{bad}: {e}");
        }
        let e = EnvAt::parse("prod@1h").unwrap_err().to_string();
        assert!(e.contains("write it with a minus"), "{e}");
    }
}
