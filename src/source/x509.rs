//! The two things cfgsync reads from its own client certificate: the
//! subject's common name (etcd's user name when it authenticates by
//! certificate, shown by `whoami`) and the validity window (an expired
//! certificate is named before the server answers with a bare "bad
//! certificate" alert).
//!
//! Decision: a small bounded DER walk instead of an X.509 crate. rustls and
//! webpki parse certificates but do not expose the subject; x509-parser
//! would bring nom, asn1-rs, der-parser and time for two fields. Only the
//! outer structure is walked (`Certificate → TBSCertificate → validity,
//! subject`); every length is checked against what is left, so a hostile or
//! truncated file is `None`, never a panic (a property test feeds it noise).

/// What cfgsync needs from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's first common name, when it has one.
    pub common_name: Option<String>,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

/// One DER element: tag, contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// 2.5.4.3, id-at-commonName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// Reads a DER certificate.
pub fn parse(der: &[u8]) -> Option<CertInfo> {
    let (SEQUENCE, cert, _) = element(der)? else { return None };
    let (SEQUENCE, tbs, _) = element(cert)? else { return None };
    let mut rest = tbs;
    // [0] EXPLICIT version, when present.
    let (tag, _, after) = element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    let (_serial, _, rest) = element(rest)?;
    let (_signature, _, rest) = element(rest)?;
    let (_issuer, _, rest) = element(rest)?;
    let (SEQUENCE, validity, rest) = element(rest)? else { return None };
    let (SEQUENCE, subject, _) = element(rest)? else { return None };
    let (t1, before, validity) = element(validity)?;
    let (t2, after, _) = element(validity)?;
    Some(CertInfo { common_name: common_name(subject), not_before: time(t1, before)?, not_after: time(t2, after)? })
}

/// The first CN of a `Name` (a SEQUENCE OF SET OF AttributeTypeAndValue).
fn common_name(mut name: &[u8]) -> Option<String> {
    while !name.is_empty() {
        let (SET, mut set, rest) = element(name)? else { return None };
        name = rest;
        while !set.is_empty() {
            let (SEQUENCE, attribute, next) = element(set)? else { return None };
            set = next;
            let (OID, oid, value) = element(attribute)? else { return None };
            if oid == COMMON_NAME {
                let (_string_type, text, _) = element(value)?;
                return std::str::from_utf8(text).ok().map(str::to_owned);
            }
        }
    }
    None
}

/// A UTCTime (`YYMMDDHHMMSSZ`, 1950–2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        UTC_TIME if text.len() == 12 => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_common_name_and_validity_of_a_real_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["etcd.internal".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "ops");
        params.distinguished_name.push(rcgen::DnType::CommonName, "cfgsync-reconciler");
        params.not_before = rcgen::date_time_ymd(2024, 2, 29);
        params.not_after = rcgen::date_time_ymd(2051, 1, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = parse(cert.der()).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("cfgsync-reconciler"));
        assert_eq!(crate::utc::from_unix_secs(info.not_before), "2024-02-29 00:00:00 UTC");
        // 2051: a GeneralizedTime (UTCTime ends in 2049).
        assert_eq!(crate::utc::from_unix_secs(info.not_after), "2051-01-02 00:00:00 UTC");
        assert_eq!(info.not_before, 1_709_164_800);
    }

    #[test]
    fn a_certificate_without_a_common_name_has_none() {
        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
        assert_eq!(parse(cert.der()).unwrap().common_name, None);
    }

    proptest::proptest! {
        #[test]
        fn noise_is_none_or_a_value_never_a_panic(bytes in proptest::collection::vec(0u8..=255, 0..400)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn a_truncated_certificate_never_panics(cut in 0usize..600) {
            let params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
            let cert = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
            let der = cert.der();
            let _ = parse(&der[..cut.min(der.len())]);
        }
    }
}
