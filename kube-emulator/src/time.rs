//! RFC 3339 timestamps in UTC with second precision, as Kubernetes writes
//! `creationTimestamp` and `managedFields[].time` and GitHub writes
//! `created_at`/`updated_at` (no date crate needed), and a clock a test
//! can freeze and move.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::plumbing::lock;

fn system_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Now, e.g. `2026-11-21T21:41:07Z`.
pub(crate) fn now_rfc3339() -> String {
    format_unix(system_secs())
}

/// Wall-clock seconds, plus an offset a test can add to, or frozen at an
/// instant: lets a test make two writes land in one second (or in two)
/// without sleeping.
#[derive(Default)]
pub(crate) struct Clock(Mutex<ClockMode>);

#[derive(Default)]
enum ClockMode {
    #[default]
    Real,
    Offset(u64),
    Frozen(u64),
}

impl Clock {
    /// Seconds since the Unix epoch.
    pub fn now(&self) -> u64 {
        match *lock(&self.0) {
            ClockMode::Real => system_secs(),
            ClockMode::Offset(o) => system_secs() + o,
            ClockMode::Frozen(t) => t,
        }
    }

    pub fn freeze(&self, unix_secs: u64) {
        *lock(&self.0) = ClockMode::Frozen(unix_secs);
    }

    /// Moves the clock on (frozen or not).
    pub fn advance(&self, by: Duration) {
        let mut mode = lock(&self.0);
        *mode = match *mode {
            ClockMode::Real => ClockMode::Offset(by.as_secs()),
            ClockMode::Offset(o) => ClockMode::Offset(o + by.as_secs()),
            ClockMode::Frozen(t) => ClockMode::Frozen(t + by.as_secs()),
        };
    }

    pub fn real(&self) {
        *lock(&self.0) = ClockMode::Real;
    }
}

/// Formats seconds since the Unix epoch.
pub(crate) fn format_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses the format above back to seconds (for `kubectl get`'s AGE column).
pub(crate) fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_known_instants() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(parse_rfc3339("2024-02-29T23:59:59Z"), Some(1_709_251_199));
    }
}
