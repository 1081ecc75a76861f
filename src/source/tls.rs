//! TLS clients from [`TlsSettings`]: the files read (and read again when
//! they change), a rustls configuration, and a handshake that explains a
//! refusal in one line.
//!
//! Decisions:
//! - **One stack**: rustls with the aws-lc-rs provider, as kube, reqwest and
//!   tonic (etcd) use here. Vault and the CI targets get a
//!   [`rustls::ClientConfig`] built here; etcd gets tonic's TLS options
//!   (tonic builds its own rustls configuration from the same PEM files) and
//!   the same configuration for [`check_handshake`].
//! - **Rotation without restart**: a [`Stamp`] (device, inode, size and
//!   modification time of each file, through symlinks, as cert-manager and
//!   Vault agent replace them) is taken whenever a client is built. Each
//!   use compares it with the files now; a change builds a new client, so the
//!   next pass presents the new certificate and trusts the new CA.
//!   Connections already open (a running watch) keep the certificate they
//!   were opened with until they are opened again.
//! - **One clear line**: tonic reports a refused handshake as "transport
//!   error". Before an etcd client is built, one TLS handshake per endpoint
//!   (and an HTTP/2 preface, which is when a TLS 1.3 server says whether it
//!   took our certificate) names what is wrong: the CA, an expired or
//!   not-yet-valid certificate, a name mismatch, a client certificate the
//!   server refused or wanted. Our own certificate's validity is checked
//!   before any connection, from the file.
//! - Files are bounded (1 MiB each) and never logged; a private key lives
//!   only in rustls's structures and the bytes tonic holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::x509;
use crate::config::TlsSettings;

/// The most any one certificate or key file may hold.
const MAX_FILE: u64 = 1024 * 1024;

/// What the files looked like when they were read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stamp(Vec<Option<FileStamp>>);

/// Device, inode, size, modification time (seconds, nanoseconds).
type FileStamp = (u64, u64, u64, i64, i64);

impl Stamp {
    /// The files of `settings` now. A file that cannot be looked at counts
    /// as a state of its own: when it comes back, that is a change.
    pub fn of(settings: &TlsSettings) -> Self {
        Self::of_files(settings.files())
    }

    /// The same for any files (a kubeconfig and the files it names).
    pub fn of_files<'a>(files: impl IntoIterator<Item = &'a Path>) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stamp(
            files
                .into_iter()
                .map(|p| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec())))
                .collect(),
        )
    }
}

/// The PEM files, read.
pub struct Material {
    pub ca: Option<Vec<u8>>,
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
    /// The stamp taken just before reading: a change during the read shows
    /// up as a change at the next use.
    pub stamp: Stamp,
    /// The client certificate's subject CN (etcd's user name when it
    /// authenticates by certificate).
    pub common_name: Option<String>,
}

fn read_bounded(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let meta = file.metadata().map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{what} {} is not a regular file", path.display()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("{what} {} is larger than 1 MiB: not a certificate or key", path.display()));
    }
    Ok(bytes)
}

fn certificates(what: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Material {
    /// Reads the files of `settings` and checks what can be checked
    /// without a server: that they parse, and that our own certificate is
    /// valid now.
    pub fn read(settings: &TlsSettings) -> Result<Self, String> {
        let stamp = Stamp::of(settings);
        let read = |what: &str, p: &Option<PathBuf>| p.as_deref().map(|p| read_bounded(what, p)).transpose();
        let ca = read("ca_file", &settings.ca_file)?;
        let cert = read("cert_file", &settings.cert_file)?;
        let key = read("key_file", &settings.key_file)?;
        if let (Some(ca), Some(path)) = (&ca, &settings.ca_file) {
            certificates("ca_file", path, ca)?;
        }
        let mut common_name = None;
        if let (Some(cert), Some(path)) = (&cert, &settings.cert_file) {
            let leaf = certificates("cert_file", path, cert)?.remove(0);
            let info = x509::parse(&leaf)
                .ok_or_else(|| format!("cert_file {}: not an X.509 certificate cfgsync can read", path.display()))?;
            let now = now();
            if now > info.not_after {
                return Err(format!(
                    "the client certificate {} expired on {}: renew it",
                    path.display(),
                    crate::utc::from_unix_secs(info.not_after)
                ));
            }
            if now < info.not_before {
                return Err(format!(
                    "the client certificate {} is not valid before {}",
                    path.display(),
                    crate::utc::from_unix_secs(info.not_before)
                ));
            }
            common_name = info.common_name;
        }
        if let (Some(key), Some(path)) = (&key, &settings.key_file) {
            PrivateKeyDer::from_pem_slice(key)
                .map_err(|_| format!("key_file {} holds no PEM private key", path.display()))?;
        }
        Ok(Material { ca, cert, key, stamp, common_name })
    }

    /// tonic's TLS options for etcd (its rustls, aws-lc-rs).
    pub fn tonic(&self, settings: &TlsSettings) -> etcd_client::TlsOptions {
        let mut options = etcd_client::TlsOptions::new();
        options = match &self.ca {
            Some(ca) => options.ca_certificate(etcd_client::Certificate::from_pem(ca)),
            None => options.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            options = options.identity(etcd_client::Identity::from_pem(cert, key));
        }
        if let Some(name) = &settings.server_name {
            options = options.domain_name(name.clone());
        }
        options
    }

    /// A rustls client configuration: the CA (else the system's roots),
    /// the client certificate, the server name override.
    pub fn rustls(&self, settings: &TlsSettings, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if settings.skip_verify {
            Arc::new(NoVerification(provider.clone()))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match (&self.ca, &settings.ca_file) {
                (Some(ca), Some(path)) => {
                    for cert in certificates("ca_file", path, ca)? {
                        roots.add(cert).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                    }
                }
                _ => {
                    let native = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(native.certs);
                }
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("TLS setup: {e}"))?;
            match &settings.server_name {
                Some(name) => {
                    let name = ServerName::try_from(name.clone()).map_err(|e| format!("server_name {name:?}: {e}"))?;
                    Arc::new(OverrideName { inner: webpki, name })
                }
                None => webpki,
            }
        };
        let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
        let mut config = match (&self.cert, &self.key, &settings.cert_file, &settings.key_file) {
            (Some(cert), Some(key), Some(cert_path), Some(key_path)) => {
                let chain = certificates("cert_file", cert_path, cert)?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|_| format!("key_file {} holds no PEM private key", key_path.display()))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    format!("cert_file {} and key_file {}: {e}", cert_path.display(), key_path.display())
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// A reqwest client over [`Material::rustls`].
    pub fn reqwest(&self, settings: &TlsSettings, builder: reqwest::ClientBuilder) -> Result<reqwest::Client, String> {
        let config = self.rustls(settings, &[b"h2", b"http/1.1"])?;
        builder.use_preconfigured_tls(config).build().map_err(|e| format!("TLS setup: {e}"))
    }
}

/// Verifies the server's certificate for a name other than the URL's host
/// (`server_name`, `VAULT_TLS_SERVER_NAME`).
#[derive(Debug)]
struct OverrideName {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for OverrideName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `VAULT_SKIP_VERIFY`, allowed by the config: any certificate, but the
/// handshake's signatures are still checked (it is still the holder of
/// the certificate's key that answers).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What [`check_handshake`] says after the handshake, to hear the server's
/// first answer (or its alert).
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// gRPC (etcd): the HTTP/2 preface; the server answers with SETTINGS.
    Http2,
    /// Vault: `GET /v1/sys/health`.
    Http1,
}

/// One TLS handshake with `endpoint` (`https://host:port`) and, since a TLS
/// 1.3 server judges our certificate only after the client's side of the
/// handshake is done, a first request ([`Probe`]) and the wait for the
/// server's first bytes. `Err` is the reason, in words, for a message that
/// names the endpoint.
pub async fn check_handshake(
    endpoint: &str,
    settings: &TlsSettings,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
    probe: Probe,
) -> Result<(), String> {
    let authority = endpoint.strip_prefix("https://").unwrap_or(endpoint);
    let authority = authority.split('/').next().unwrap_or_default();
    let host = crate::config::host_of(authority).to_owned();
    let name = settings.server_name.clone().unwrap_or_else(|| host.clone());
    let server_name = ServerName::try_from(name.clone()).map_err(|e| format!("server name {name:?}: {e}"))?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(authority).await.map_err(|e| format!("cannot connect: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let mut tls = connector.connect(server_name, tcp).await.map_err(|e| explain(&e, settings, &name))?;
        let hello = match probe {
            // The client preface and an empty SETTINGS frame; the server's
            // answer (its SETTINGS) or its alert follows.
            Probe::Http2 => {
                let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
                hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
                hello
            }
            Probe::Http1 => {
                format!("GET /v1/sys/health HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").into_bytes()
            }
        };
        tls.write_all(&hello).await.map_err(|e| explain(&e, settings, &name))?;
        let mut first = [0u8; 9];
        match tls.read(&mut first).await {
            Ok(0) => Err("the server closed the connection after the TLS handshake".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(explain(&e, settings, &name)),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no TLS answer within {} s", timeout.as_secs())),
    }
}

/// A handshake failure in words.
pub fn explain(e: &std::io::Error, settings: &TlsSettings, name: &str) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let ca =
        settings.ca_file.as_ref().map_or_else(|| "the system's CAs".to_owned(), |p| format!("ca_file {}", p.display()));
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) else {
        return e.to_string();
    };
    match tls {
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => {
                format!("the server's certificate is not signed by a CA in {ca} (wrong CA?)")
            }
            C::Expired | C::ExpiredContext { .. } => format!("the server's certificate has expired ({c})"),
            C::NotValidYet | C::NotValidYetContext { .. } => format!("the server's certificate is not valid yet ({c})"),
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "the server's certificate is not valid for the name {name:?} (set server_name to the name it carries)"
            ),
            other => format!("the server's certificate was refused: {other}"),
        },
        // Go's TLS 1.2 says BadCertificate for a missing one, 1.3 CertificateRequired.
        E::AlertReceived(A::CertificateRequired | A::HandshakeFailure | A::BadCertificate)
            if settings.cert_file.is_none() =>
        {
            "the server requires a client certificate: set cert_file and key_file".to_owned()
        }
        E::AlertReceived(
            alert @ (A::BadCertificate
            | A::UnknownCA
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::CertificateRevoked
            | A::AccessDenied),
        ) => {
            let cert = settings.cert_file.as_ref().map_or_else(String::new, |p| format!(" {}", p.display()));
            format!(
                "the server refused our client certificate{cert} (TLS alert {alert:?}): is it signed by a CA the server trusts?"
            )
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_changes_when_a_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "one").unwrap();
        let settings = TlsSettings { ca_file: Some(ca.clone()), ..Default::default() };
        let before = Stamp::of(&settings);
        assert_eq!(before, Stamp::of(&settings));
        // Replaced the way cert-manager and agents do: a new file renamed over it.
        let new = dir.path().join("ca.pem.new");
        std::fs::write(&new, "two").unwrap();
        std::fs::rename(&new, &ca).unwrap();
        assert_ne!(before, Stamp::of(&settings));
    }

    #[test]
    fn an_expired_client_certificate_is_named_before_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["me".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_file, key_file) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let settings =
            TlsSettings { cert_file: Some(cert_file.clone()), key_file: Some(key_file), ..Default::default() };
        let err = Material::read(&settings).err().unwrap();
        assert_eq!(
            err,
            format!("the client certificate {} expired on 2021-01-01 00:00:00 UTC: renew it", cert_file.display())
        );
    }

    #[test]
    fn files_that_are_not_pem_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let settings = TlsSettings { ca_file: Some(ca.clone()), ..Default::default() };
        let err = Material::read(&settings).err().unwrap();
        assert_eq!(err, format!("ca_file {} holds no PEM certificate", ca.display()));
        let missing = TlsSettings { ca_file: Some(dir.path().join("nope.pem")), ..Default::default() };
        assert!(Material::read(&missing).err().unwrap().starts_with("cannot read ca_file "));
    }
}
