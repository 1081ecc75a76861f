//! TLS settings of the sources (`[etcd]`, `[vault]`) and the CI targets:
//! which CA to trust, which client certificate to present, which name the
//! server's certificate must carry, and when plain `http://` is allowed.
//!
//! ```toml
//! [etcd]                                   # etcdctl's variables override:
//! endpoints = ["https://etcd-1.internal:2379"]
//! ca_file = "/etc/cfgsync/etcd-ca.pem"     # ETCDCTL_CACERT
//! cert_file = "/etc/cfgsync/etcd.pem"      # ETCDCTL_CERT   mutual TLS; with no `user`,
//! key_file = "/etc/cfgsync/etcd-key.pem"   # ETCDCTL_KEY    etcd takes the certificate's CN as the user
//! server_name = "etcd.internal"            # the name the server's certificate must carry
//!
//! [vault]                                  # the vault CLI's variables override:
//! address = "https://vault.internal:8200"
//! ca_file = "/etc/cfgsync/vault-ca.pem"    # VAULT_CACERT
//! cert_file = "/etc/cfgsync/vault.pem"     # VAULT_CLIENT_CERT
//! key_file = "/etc/cfgsync/vault-key.pem"  # VAULT_CLIENT_KEY
//! server_name = "vault.internal"           # VAULT_TLS_SERVER_NAME
//! ```
//!
//! Decisions:
//! - **Plain `http://` only on this machine.** An etcd endpoint or a Vault
//!   address that is `http://` and not loopback is refused unless the
//!   section says `insecure = true`: keys, passwords, tokens and secret
//!   values would cross the network in clear. With it, every pass warns.
//! - **`VAULT_SKIP_VERIFY` is refused** (exit 2) unless `[vault]
//!   allow_skip_verify = true`; allowed, every pass warns. The vault CLI
//!   honours it silently, and so did the Vault client library cfgsync uses:
//!   a variable left in a shell would have turned verification off.
//!   `VAULT_CAPATH` (a directory of CAs) is refused with a hint: point
//!   `VAULT_CACERT` or `ca_file` at a bundle.
//! - The variables win over the file, as they do for `ETCDCTL_ENDPOINTS`
//!   and `VAULT_ADDR`, and only for a section that exists. Paths in the
//!   file are relative to the config's directory; paths in variables are
//!   taken as they are.
//! - A client certificate needs its key and the other way round; TLS files
//!   with an `http://` endpoint are a mistake, not something to ignore.
//!   Endpoints of one cluster are all `https://` or all `http://`.
//! - The files are read when a client is built, and again whenever one of
//!   them changes on disk (see [`crate::source::tls`]): nothing here opens
//!   them, so `validate` works where the certificates are not.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{Environment, Location};

/// The TLS side of one connection's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM bundle of the CAs the server's certificate must chain to. None:
    /// the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate (chain) to present: mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must be valid for, when it is not
    /// the host of the URL (an address by IP, a load balancer's name).
    pub server_name: Option<String>,
    /// Vault only: `VAULT_SKIP_VERIFY` set and allowed by `allow_skip_verify`.
    pub skip_verify: bool,
    /// `insecure = true`: `http://` to another machine is allowed (and warned
    /// about on every pass).
    pub insecure: bool,
}

impl TlsSettings {
    /// Whether anything asks for a non-default TLS client.
    pub fn is_custom(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.server_name.is_some()
            || self.skip_verify
    }

    /// The files to watch for changes.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        [&self.ca_file, &self.cert_file, &self.key_file].into_iter().flatten().map(PathBuf::as_path)
    }
}

/// The TLS fields of `[etcd]` or `[vault]`, as written.
#[derive(Default)]
pub(super) struct RawTls {
    pub ca_file: Option<Spanned<PathBuf>>,
    pub cert_file: Option<Spanned<PathBuf>>,
    pub key_file: Option<Spanned<PathBuf>>,
    pub server_name: Option<Spanned<String>>,
    pub insecure: Option<Spanned<bool>>,
    /// Vault only.
    pub allow_skip_verify: Option<Spanned<bool>>,
}

/// The variables that override a section's TLS fields.
struct Variables {
    ca: &'static str,
    cert: &'static str,
    key: &'static str,
    server_name: Option<&'static str>,
}

const ETCD: Variables = Variables { ca: "ETCDCTL_CACERT", cert: "ETCDCTL_CERT", key: "ETCDCTL_KEY", server_name: None };
const VAULT: Variables = Variables {
    ca: "VAULT_CACERT",
    cert: "VAULT_CLIENT_CERT",
    key: "VAULT_CLIENT_KEY",
    server_name: Some("VAULT_TLS_SERVER_NAME"),
};

/// Turns a section's fields into settings. `problem(offset, message)`
/// records a problem at a byte offset of the config; `section_at` is where
/// problems without a field of their own point.
pub(super) struct Resolve<'a> {
    pub env: &'a dyn Environment,
    pub dir: &'a Path,
    pub section_at: usize,
    pub problems: Vec<(usize, String)>,
}

impl Resolve<'_> {
    fn path(&self, var: &str, field: Option<Spanned<PathBuf>>) -> (Option<PathBuf>, usize) {
        match (self.env.var(var), field) {
            (Some(v), f) => (Some(PathBuf::from(v)), f.map_or(self.section_at, |f| f.span().start)),
            (None, Some(f)) => (Some(self.dir.join(f.get_ref())), f.span().start),
            (None, None) => (None, self.section_at),
        }
    }

    fn common(&mut self, what: &str, raw: RawTls, vars: &Variables) -> TlsSettings {
        let (ca_file, _) = self.path(vars.ca, raw.ca_file);
        let (cert_file, cert_at) = self.path(vars.cert, raw.cert_file);
        let (key_file, key_at) = self.path(vars.key, raw.key_file);
        match (&cert_file, &key_file) {
            (Some(_), None) => self.problems.push((
                cert_at,
                format!(
                    "{what}: cert_file (or {}) needs key_file (or {}): the client certificate's private key",
                    vars.cert, vars.key
                ),
            )),
            (None, Some(_)) => self.problems.push((
                key_at,
                format!(
                    "{what}: key_file (or {}) needs cert_file (or {}): the certificate the key belongs to",
                    vars.key, vars.cert
                ),
            )),
            _ => {}
        }
        let server_name = match (vars.server_name.and_then(|v| self.env.var(v)), raw.server_name) {
            (Some(v), _) => Some(v),
            (None, Some(s)) => {
                if rustls::pki_types::ServerName::try_from(s.get_ref().as_str()).is_err() {
                    self.problems.push((
                        s.span().start,
                        format!("{what}: server_name {:?} is not a DNS name or an IP address", s.get_ref()),
                    ));
                }
                Some(s.into_inner())
            }
            (None, None) => None,
        };
        TlsSettings {
            ca_file,
            cert_file,
            key_file,
            server_name,
            skip_verify: false,
            insecure: raw.insecure.is_some_and(|i| *i.get_ref()),
        }
    }

    /// `[etcd]`: checked against its endpoints.
    pub fn etcd(&mut self, raw: RawTls, endpoints: &[String]) -> TlsSettings {
        if let Some(a) = &raw.allow_skip_verify {
            self.problems.push((a.span().start, "etcd: allow_skip_verify is a [vault] setting".to_owned()));
        }
        let tls = self.common("etcd", raw, &ETCD);
        let https = endpoints.iter().filter(|e| e.starts_with("https://")).count();
        if https != 0 && https != endpoints.len() {
            self.problems.push((
                self.section_at,
                format!(
                    "etcd: endpoints mix https:// and http:// ({}): one cluster speaks one of them",
                    endpoints.join(", ")
                ),
            ));
        }
        for endpoint in endpoints {
            self.check_scheme("etcd endpoint", endpoint, &tls);
        }
        tls
    }

    /// `[vault]`: checked against its address; `VAULT_SKIP_VERIFY` and
    /// `VAULT_CAPATH` handled here.
    pub fn vault(&mut self, raw: RawTls, address: &str) -> TlsSettings {
        let allowed = raw.allow_skip_verify.as_ref().is_some_and(|a| *a.get_ref());
        let allow_at = raw.allow_skip_verify.as_ref().map_or(self.section_at, |a| a.span().start);
        let mut tls = self.common("vault", raw, &VAULT);
        if self.env.var("VAULT_CAPATH").is_some() {
            self.problems.push((
                self.section_at,
                "VAULT_CAPATH (a directory of CA certificates) is not supported: point VAULT_CACERT or [vault] ca_file at a PEM bundle of them".to_owned(),
            ));
        }
        if let Some(v) = self.env.var("VAULT_SKIP_VERIFY") {
            match parse_bool(&v) {
                Some(false) => {}
                Some(true) if allowed => tls.skip_verify = true,
                Some(true) => self.problems.push((
                    allow_at,
                    "VAULT_SKIP_VERIFY is set: cfgsync does not turn off Vault's certificate verification unless the config allows it with `[vault] allow_skip_verify = true`; unset it, or give the CA with VAULT_CACERT or ca_file".to_owned(),
                )),
                None => self.problems.push((
                    self.section_at,
                    format!("VAULT_SKIP_VERIFY={v:?} is not a boolean (true, false, 1, 0)"),
                )),
            }
        }
        self.check_scheme("vault address", address, &tls);
        tls
    }

    fn check_scheme(&mut self, what: &str, url: &str, tls: &TlsSettings) {
        let Some(rest) = url.strip_prefix("http://") else { return };
        let files = tls.ca_file.is_some() || tls.cert_file.is_some() || tls.key_file.is_some();
        if files || tls.server_name.is_some() {
            self.problems.push((
                self.section_at,
                format!("{what} {url} is plain http://, but TLS settings are given: use https://"),
            ));
        }
        if !tls.insecure && !is_loopback(host_of(rest)) {
            self.problems.push((
                self.section_at,
                format!(
                    "{what} {url} is plain http:// to another machine: credentials and values would cross the network in clear; use https:// (with ca_file), or set `insecure = true` in the section to accept that"
                ),
            ));
        }
    }
}

/// The host of `host[:port][/...]` (brackets kept off an IPv6 address).
pub fn host_of(authority_and_path: &str) -> &str {
    let authority = authority_and_path.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    authority.split(':').next().unwrap_or_default()
}

/// `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Go's `strconv.ParseBool`, which the vault CLI reads its flags with.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Where a problem of [`Resolve`] is, for the builder.
pub(super) fn locate(problems: Vec<(usize, String)>, at: impl Fn(usize) -> Location) -> Vec<super::Problem> {
    problems.into_iter().map(|(offset, message)| super::Problem::at(at(offset), message)).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{KeysSource, SecretsSource};

    const REST: &str = "[envs.prod]\n[[output]]\nname = \"o\"\n[output.entries]\nX = \"x\"\n[[output.target]]\nkind = \"file\"\npath = \"o.env\"\n";

    fn parse(sections: &str, vars: &[(&str, &str)]) -> Result<crate::config::Config, String> {
        let env: BTreeMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        crate::config::parse(Path::new("/etc/cfgsync/cfgsync.toml"), &format!("{sections}\n{REST}"), &env)
            .map_err(|e| e.to_string())
    }

    fn etcd_tls(c: &crate::config::Config) -> &TlsSettings {
        match &c.keys {
            KeysSource::Etcd(e) => &e.tls,
            KeysSource::Files(_) => panic!("etcd expected"),
        }
    }

    fn vault_tls(c: &crate::config::Config) -> &TlsSettings {
        match &c.secrets {
            Some(SecretsSource::Vault(v)) => &v.tls,
            _ => panic!("vault expected"),
        }
    }

    #[test]
    fn files_are_relative_to_the_config_and_the_cli_variables_win() {
        let etcd = "[etcd]\nendpoints = [\"https://etcd.internal:2379\"]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nserver_name = \"etcd.internal\"\n";
        let c = parse(etcd, &[]).unwrap();
        let tls = etcd_tls(&c);
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/cfgsync/ca.pem")));
        assert_eq!(tls.cert_file.as_deref(), Some(Path::new("/etc/cfgsync/c.pem")));
        assert_eq!(tls.server_name.as_deref(), Some("etcd.internal"));
        let c = parse(
            etcd,
            &[("ETCDCTL_CACERT", "/run/ca.pem"), ("ETCDCTL_CERT", "/run/c.pem"), ("ETCDCTL_KEY", "/run/k.pem")],
        )
        .unwrap();
        let tls = etcd_tls(&c);
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/run/ca.pem")));
        assert_eq!(tls.key_file.as_deref(), Some(Path::new("/run/k.pem")));

        let vault = "[files]\n[vault]\naddress = \"https://vault.internal:8200\"\nca_file = \"vault-ca.pem\"\n";
        let err = parse(vault, &[]).unwrap_err();
        assert!(err.contains("both [vault] and [files]"), "{err}");
        let vault = "[etcd]\n[vault]\naddress = \"https://vault.internal:8200\"\nca_file = \"vault-ca.pem\"\n";
        let c = parse(
            vault,
            &[
                ("VAULT_CLIENT_CERT", "/run/v.pem"),
                ("VAULT_CLIENT_KEY", "/run/vk.pem"),
                ("VAULT_TLS_SERVER_NAME", "vault"),
            ],
        )
        .unwrap();
        let tls = vault_tls(&c);
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/cfgsync/vault-ca.pem")));
        assert_eq!(tls.cert_file.as_deref(), Some(Path::new("/run/v.pem")));
        assert_eq!(tls.server_name.as_deref(), Some("vault"));
        assert!(!tls.skip_verify);
    }

    #[test]
    fn plain_http_to_another_machine_needs_insecure() {
        let err = parse("[etcd]\nendpoints = [\"http://10.0.0.5:2379\"]\n", &[]).unwrap_err();
        assert_eq!(
            err,
            "/etc/cfgsync/cfgsync.toml:1:1: etcd endpoint http://10.0.0.5:2379 is plain http:// to another machine: credentials and values would cross the network in clear; use https:// (with ca_file), or set `insecure = true` in the section to accept that"
        );
        let c = parse("[etcd]\nendpoints = [\"http://10.0.0.5:2379\"]\ninsecure = true\n", &[]).unwrap();
        assert!(etcd_tls(&c).insecure);
        // Loopback needs nothing; VAULT_ADDR is checked like the file.
        parse("[etcd]\nendpoints = [\"http://127.0.0.1:2379\", \"http://localhost:2379\"]\n", &[]).unwrap();
        let err = parse("[etcd]\n\n[vault]\n", &[("VAULT_ADDR", "http://vault.internal:8200")]).unwrap_err();
        assert!(err.contains("vault address http://vault.internal:8200 is plain http:// to another machine"), "{err}");
    }

    #[test]
    fn mistakes_are_each_reported_with_their_line() {
        let err = parse(
            "[etcd]\nendpoints = [\"https://a:2379\", \"http://127.0.0.1:2379\"]\ncert_file = \"c.pem\"\nserver_name = \"not a name\"\n",
            &[],
        )
        .unwrap_err();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines,
            [
                "/etc/cfgsync/cfgsync.toml:3:13: etcd: cert_file (or ETCDCTL_CERT) needs key_file (or ETCDCTL_KEY): the client certificate's private key",
                "/etc/cfgsync/cfgsync.toml:4:15: etcd: server_name \"not a name\" is not a DNS name or an IP address",
                "/etc/cfgsync/cfgsync.toml:1:1: etcd: endpoints mix https:// and http:// (https://a:2379, http://127.0.0.1:2379): one cluster speaks one of them",
                "/etc/cfgsync/cfgsync.toml:1:1: etcd endpoint http://127.0.0.1:2379 is plain http://, but TLS settings are given: use https://",
            ]
        );
    }

    #[test]
    fn vault_skip_verify_is_refused_unless_the_config_allows_it() {
        let vault = "[etcd]\n\n[vault]\naddress = \"https://vault.internal:8200\"\n";
        let err = parse(vault, &[("VAULT_SKIP_VERIFY", "true")]).unwrap_err();
        assert_eq!(
            err,
            "/etc/cfgsync/cfgsync.toml:3:1: VAULT_SKIP_VERIFY is set: cfgsync does not turn off Vault's certificate verification unless the config allows it with `[vault] allow_skip_verify = true`; unset it, or give the CA with VAULT_CACERT or ca_file"
        );
        let c = parse(vault, &[("VAULT_SKIP_VERIFY", "0")]).unwrap();
        assert!(!vault_tls(&c).skip_verify);
        let allowed = format!("{vault}allow_skip_verify = true\n");
        assert!(!vault_tls(&parse(&allowed, &[]).unwrap()).skip_verify, "allowed, not asked for");
        assert!(vault_tls(&parse(&allowed, &[("VAULT_SKIP_VERIFY", "1")]).unwrap()).skip_verify);
        let err = parse(vault, &[("VAULT_CAPATH", "/etc/ssl/certs")]).unwrap_err();
        assert!(err.contains("VAULT_CAPATH (a directory of CA certificates) is not supported"), "{err}");
    }

    #[test]
    fn hosts_and_loopback() {
        assert_eq!(host_of("127.0.0.1:2379"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2379/x"), "::1");
        assert_eq!(host_of("etcd.internal"), "etcd.internal");
        assert!(is_loopback("localhost") && is_loopback("127.3.4.5") && is_loopback("::1"));
        assert!(!is_loopback("10.0.0.1") && !is_loopback("etcd.internal") && !is_loopback(""));
    }
}
