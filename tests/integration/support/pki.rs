//! Certificates made at test time (rcgen, aws-lc-rs): a CA, server
//! certificates for 127.0.0.1 and names, client certificates with a CN,
//! and the broken ones the TLS suites need (expired, for another name,
//! from another CA). Everything is written as PEM into a temp dir that
//! lives as long as the [`Pki`].

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
use tempfile::TempDir;

pub use super::servers::CertFiles;

/// One CA and the directory its files go to.
pub struct Pki {
    pub ca_file: PathBuf,
    ca_params: CertificateParams,
    ca_key: KeyPair,
    dir: TempDir,
}

/// Validity of a made certificate.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From a year ago to ten years ahead.
    Current,
    /// Ended a year ago.
    Expired,
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::Builder::new().prefix("cfgsync-pki-").tempdir().expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        set_validity(&mut params, Validity::Current);
        let ca_key = KeyPair::generate().expect("CA key");
        let cert = params.clone().self_signed(&ca_key).expect("self-signed CA");
        let ca_file = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, cert.pem()).expect("write CA");
        Pki { ca_file, ca_params: params, ca_key, dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `127.0.0.1`, `localhost` and `names`.
    pub fn server(&self, file: &str, names: &[&str], validity: Validity) -> CertFiles {
        let mut sans: Vec<String> = vec!["localhost".to_owned()];
        sans.extend(names.iter().map(|n| (*n).to_owned()));
        let mut params = CertificateParams::new(sans).expect("params");
        params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("localhost"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params, validity);
        self.issue(file, params)
    }

    /// A server certificate only for `name` (not 127.0.0.1 or localhost):
    /// a name mismatch for a client that dials 127.0.0.1.
    pub fn server_named_only(&self, file: &str, name: &str) -> CertFiles {
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, Validity::Current);
        self.issue(file, params)
    }

    /// A client certificate whose subject CN is `cn` (etcd's user).
    pub fn client(&self, file: &str, cn: &str, validity: Validity) -> CertFiles {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params, validity);
        self.issue(file, params)
    }

    fn issue(&self, file: &str, params: CertificateParams) -> CertFiles {
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    let now = time_now_year();
    match validity {
        Validity::Current => {
            params.not_before = rcgen::date_time_ymd(now - 1, 1, 1);
            params.not_after = rcgen::date_time_ymd(now + 10, 1, 1);
        }
        Validity::Expired => {
            params.not_before = rcgen::date_time_ymd(now - 3, 1, 1);
            params.not_after = rcgen::date_time_ymd(now - 1, 1, 1);
        }
    }
}

fn time_now_year() -> i32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Close enough for validity windows of whole years.
    1970 + (secs / 31_556_952) as i32
}

/// Copies `from` over `to` the way cert-manager and agents rotate files: a
/// new file renamed into place.
pub fn replace_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("rotating");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}
