//! Points in time as people read them: `YYYY-MM-DD hh:mm:ss UTC`.
//!
//! Decisions:
//! - The calendar is humantime's ([`humantime::format_rfc3339_seconds`]);
//!   this module only puts its RFC 3339 text in the shape messages and the
//!   status page have always used (a space for `T`, ` UTC` for `Z`).
//! - **Any input is shown, none panics.** Times come from certificates and
//!   from records in etcd, so they may lie anywhere in `i64`/`u64`;
//!   humantime formats 1970-01-01 to 9999-12-31 only (it panics before the
//!   epoch and fails after 9999). Outside that range the time is shown as
//!   its Unix seconds, `Unix time -86400 s`.

use std::time::{Duration, SystemTime};

/// The last second humantime can format (9999-12-31 23:59:59).
const LAST_SECOND: i64 = 253_402_300_799;

/// `secs` since the Unix epoch as `YYYY-MM-DD hh:mm:ss UTC`.
pub fn from_unix_secs(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(s) if secs <= LAST_SECOND => {
            let rfc3339 =
                humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(s)).to_string();
            // `2024-02-29T00:00:00Z`
            format!("{} {} UTC", &rfc3339[..10], &rfc3339[11..19])
        }
        _ => format!("Unix time {secs} s"),
    }
}

/// Unix milliseconds as `YYYY-MM-DD hh:mm:ss UTC` (the milliseconds dropped).
pub fn from_unix_ms(ms: u64) -> String {
    from_unix_secs(i64::try_from(ms / 1000).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(from_unix_secs(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(from_unix_ms(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(from_unix_ms(1_735_689_599_999), "2024-12-31 23:59:59 UTC");
        assert_eq!(from_unix_secs(LAST_SECOND), "9999-12-31 23:59:59 UTC");
    }

    #[test]
    fn times_outside_the_calendar_are_shown_without_panicking() {
        assert_eq!(from_unix_secs(-86_400), "Unix time -86400 s");
        assert_eq!(from_unix_secs(LAST_SECOND + 1), "Unix time 253402300800 s");
        assert_eq!(from_unix_secs(i64::MIN), format!("Unix time {} s", i64::MIN));
        assert_eq!(from_unix_ms(u64::MAX), format!("Unix time {} s", u64::MAX / 1000));
    }
}
