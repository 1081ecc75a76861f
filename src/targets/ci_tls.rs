//! A private CA for GitLab and GitHub Enterprise Server: `ca_file` on a
//! `gitlab` or `github` target.
//!
//! ```toml
//! [[output.target]]
//! kind = "gitlab"
//! url = "https://gitlab.internal"
//! ca_file = "/etc/cfgsync/gitlab-ca.pem"   # relative: to the config's directory
//! ```
//!
//! Decisions:
//! - Trust is per server (scheme, host and port of `url` / `api_url`):
//!   every target on one server uses one CA, and two targets naming
//!   different CAs for one server is a config error (which one would be
//!   right?). Servers without `ca_file` use the system's roots, as before.
//! - The HTTP client of a server with a CA is built on first use from
//!   [`crate::source::tls`] (rustls, aws-lc-rs) and built again when the
//!   file changes on disk, like the sources' certificates.
//! - A CA file that cannot be read fails that server's destinations with
//!   one line naming the file; other servers are not affected.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::config::{Config, Output, TlsSettings};
use crate::source::tls::{Material, Stamp};

/// Which CA each CI server is trusted with, and the clients built for it.
#[derive(Default)]
pub struct Trust {
    /// Origin (`https://gitlab.internal:443`) → its TLS settings.
    by_origin: BTreeMap<String, TlsSettings>,
    clients: Mutex<BTreeMap<String, (reqwest::Client, Stamp)>>,
}

/// `scheme://host:port` of a URL, the key of [`Trust`].
pub fn origin(url: &reqwest::Url) -> String {
    format!("{}://{}:{}", url.scheme(), url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(0))
}

/// The CA files the CI targets of `outputs` name, by server; a server named
/// with two different CAs is a problem (returned as text).
pub fn ca_files(outputs: &[Output]) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    for output in outputs {
        for target in &output.targets {
            let Some((url, ca)) = target.kind.server_ca() else { continue };
            let Ok(url) = reqwest::Url::parse(url) else { continue };
            let key = origin(&url);
            match found.get(&key) {
                Some(other) if other.as_path() != ca => {
                    return Err(format!(
                        "{key} is given two CAs ({} and {}): every target on one server uses one ca_file",
                        other.display(),
                        ca.display()
                    ));
                }
                _ => {
                    found.insert(key, ca.to_path_buf());
                }
            }
        }
    }
    Ok(found)
}

impl Trust {
    /// The trust of `config`'s CI targets (conflicts were refused when the
    /// config was loaded).
    pub fn from_config(config: &Config) -> Self {
        let by_origin = ca_files(&config.outputs)
            .unwrap_or_default()
            .into_iter()
            .map(|(origin, ca)| (origin, TlsSettings { ca_file: Some(ca), ..Default::default() }))
            .collect();
        Self { by_origin, clients: Mutex::default() }
    }

    /// The client for `url` when its server has a CA of its own (`None`:
    /// the default client). `builder` makes the client's other settings.
    pub fn client_for(
        &self,
        url: &reqwest::Url,
        builder: impl FnOnce() -> reqwest::ClientBuilder,
    ) -> Option<Result<reqwest::Client, String>> {
        let key = origin(url);
        let settings = self.by_origin.get(&key)?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((client, stamp)) = clients.get(&key)
            && *stamp == Stamp::of(settings)
        {
            return Some(Ok(client.clone()));
        }
        let built = Material::read(settings).and_then(|m| {
            let client = m.reqwest(settings, builder())?;
            Ok((client, m.stamp))
        });
        Some(built.map(|(client, stamp)| {
            clients.insert(key, (client.clone(), stamp));
            client
        }))
    }
}
