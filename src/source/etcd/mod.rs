//! etcd: plain configuration at `<prefix>/<env>/<name>`.
//!
//! ```toml
//! [etcd]                              # ETCDCTL_ENDPOINTS, ETCDCTL_USER=name:password override
//! endpoints = ["http://127.0.0.1:2379"]
//! prefix = "/cfgsync"
//! user = "cfgsync-prod"               # password from password_file or ETCDCTL_USER
//! password_file = "/run/credentials/cfgsync/etcd-password"
//! ```
//!
//! One pass reads one env with a paginated prefix range pinned to the
//! revision of its first page, so every template of the pass sees the same
//! point in time however many keys there are. The gRPC decode limit is
//! raised as well, so a page of large values does not trip tonic's 4 MiB
//! default.
//!
//! # TLS
//!
//! ```toml
//! endpoints = ["https://etcd-1.internal:2379"]
//! ca_file = "/etc/cfgsync/etcd-ca.pem"     # ETCDCTL_CACERT
//! cert_file = "/etc/cfgsync/etcd.pem"      # ETCDCTL_CERT, with key_file (ETCDCTL_KEY)
//! key_file = "/etc/cfgsync/etcd-key.pem"
//! ```
//!
//! `https://` endpoints use tonic's rustls (aws-lc-rs). With a client
//! certificate and no `user`, etcd started with `--client-cert-auth` takes
//! the certificate's CN as the user: no password. Every etcd use goes
//! through [`EtcdSource::connect`] (reads, the watch, point reads, the
//! election, state, `set`, `import`, `policy`), which builds a new client
//! when a TLS file changed on disk (see [`super::tls`]), and checks one
//! handshake per endpoint before building one, so that a wrong CA, an
//! expired certificate or a name mismatch is one line naming the endpoint.
//! A failure there fails the env closed like any other read failure.
//!
//! Where each of cfgsync's own records lives beside the envs' keys is
//! [`keyspace`].
//!
//! An `invalid auth token` (etcd restarted and forgot its simple tokens)
//! is refreshed by etcd-client inside unary calls
//! (`with_auto_token_refresh`); streams (the watch) and callers that see it
//! in an error of their own call [`refresh_token_if_invalid`].

pub mod keyspace;

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::sync::Mutex;

use super::tls::{Material, Probe, Stamp, check_handshake};
use super::{KeyData, KeyOrigin, KeyValue, Request, Snapshot, Source, SourceError, SourceKind};
use crate::config::EtcdSettings;
use crate::secret::SecretString;

/// Keys per range request: large enough that a fleet of thousands of apps
/// (10,000+ keys per env) is one round trip, small enough that a page of
/// values averaging up to ~3 KiB stays below the decode limit.
const PAGE: i64 = 20_000;
/// tonic's default is 4 MiB; a range of ~5k keys of 1 KiB already exceeds it.
const MAX_DECODE: usize = 64 * 1024 * 1024;

pub struct EtcdSource {
    settings: EtcdSettings,
    /// The client, and the TLS files' stamp it was built with.
    client: Mutex<Option<(Client, Stamp)>>,
    /// The client certificate's CN, once read: the etcd user when there is
    /// no `user` (etcd's certificate auth).
    common_name: std::sync::Mutex<Option<String>>,
    /// How many connection attempts failed, and the last one's error.
    failed: std::sync::Mutex<(u64, Option<SourceError>)>,
}

impl EtcdSource {
    pub fn new(settings: EtcdSettings) -> Self {
        Self {
            settings,
            client: Mutex::new(None),
            common_name: std::sync::Mutex::new(None),
            failed: std::sync::Mutex::new((0, None)),
        }
    }

    fn who(&self) -> String {
        if let Some(u) = &self.settings.user {
            return format!(" as user {u:?}");
        }
        match &*self.common_name.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(cn) => format!(" as certificate CN {cn:?}"),
            None => String::new(),
        }
    }

    /// Who the server takes us for: the `user`, else the client
    /// certificate's CN (known once connected), else nobody (no auth).
    pub fn identity(&self) -> Identity {
        if let Some(u) = &self.settings.user {
            return Identity::User(u.clone());
        }
        match &*self.common_name.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(cn) => Identity::Certificate(cn.clone()),
            None => Identity::Anonymous,
        }
    }

    pub fn settings(&self) -> &EtcdSettings {
        &self.settings
    }

    /// Whether the endpoints are `https://`.
    fn uses_tls(&self) -> bool {
        self.settings.endpoints.iter().all(|e| e.starts_with("https://"))
    }

    /// The per-pass warning of `insecure = true` with a plain endpoint
    /// that is not on this machine.
    fn warn_if_insecure(&self, env: &str) {
        if !self.settings.tls.insecure {
            return;
        }
        let remote: Vec<&str> = self
            .settings
            .endpoints
            .iter()
            .filter(|e| {
                e.strip_prefix("http://").is_some_and(|r| !crate::config::is_loopback(crate::config::host_of(r)))
            })
            .map(String::as_str)
            .collect();
        if !remote.is_empty() {
            tracing::warn!(
                env,
                endpoints = remote.join(","),
                "etcd: plain http:// to another machine (insecure = true): keys and credentials cross the network in clear"
            );
        }
    }

    fn password(&self) -> Result<Option<SecretString>, SourceError> {
        if let Some(p) = &self.settings.password {
            return Ok(Some(p.clone()));
        }
        match &self.settings.password_file {
            None => Ok(None),
            Some(path) => std::fs::read_to_string(path)
                .map(|s| Some(SecretString::new(s.trim_end_matches(['\n', '\r']))))
                .map_err(|e| SourceError::Auth {
                    source_kind: SourceKind::Etcd,
                    who: self.who(),
                    cause: format!("cannot read password_file {}: {e}", path.display()),
                }),
        }
    }

    /// The shared client, connected (and authenticated) on first use. The
    /// service's watches and election use it too.
    ///
    /// One attempt at a time, and a failed attempt is the answer of every
    /// caller that waited for it: otherwise each env of a pass would try in
    /// turn against a hung etcd, and N envs would wait N connect timeouts
    /// instead of one.
    pub(crate) async fn connect(&self) -> Result<Client, SourceError> {
        let failures_before = self.failed.lock().unwrap_or_else(|p| p.into_inner()).0;
        let mut guard = self.client.lock().await;
        if let Some((c, stamp)) = guard.as_ref() {
            if !self.uses_tls() || *stamp == Stamp::of(&self.settings.tls) {
                return Ok(c.clone());
            }
            tracing::info!("etcd: a TLS file changed on disk; connecting again with it");
            *guard = None;
        }
        if let (failures, Some(e)) = &*self.failed.lock().unwrap_or_else(|p| p.into_inner())
            && *failures != failures_before
        {
            return Err(e.clone());
        }
        match self.dial().await {
            Ok((client, stamp)) => {
                *guard = Some((client.clone(), stamp));
                Ok(client)
            }
            Err(e) => {
                let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                *failed = (failed.0 + 1, Some(e.clone()));
                Err(e)
            }
        }
    }

    /// The TLS options for tonic, after reading the files and checking a
    /// handshake with the endpoints (see the module doc).
    async fn tls(&self) -> Result<(etcd_client::TlsOptions, Stamp), SourceError> {
        let tls = &self.settings.tls;
        let endpoints = self.settings.endpoints.join(",");
        let error =
            |endpoint: String, cause: String| SourceError::Tls { source_kind: SourceKind::Etcd, endpoint, cause };
        let material = Material::read(tls).map_err(|cause| error(endpoints.clone(), cause))?;
        *self.common_name.lock().unwrap_or_else(|p| p.into_inner()) = material.common_name.clone();
        let config = std::sync::Arc::new(material.rustls(tls, &[b"h2"]).map_err(|c| error(endpoints.clone(), c))?);
        let checks = self.settings.endpoints.iter().map(|endpoint| {
            let config = config.clone();
            async move { (endpoint, check_handshake(endpoint, tls, config, self.settings.timeout, Probe::Http2).await) }
        });
        let results = futures_util::future::join_all(checks).await;
        if results.iter().all(|(_, r)| r.is_err()) {
            let mut failed = results.into_iter().filter_map(|(endpoint, r)| r.err().map(|cause| (endpoint, cause)));
            let (endpoint, cause) = failed.next().expect("at least one endpoint");
            let others: Vec<String> = failed.map(|(e, c)| format!("{e}: {c}")).collect();
            let cause = if others.is_empty() { cause } else { format!("{cause}; {}", others.join("; ")) };
            return Err(error(endpoint.clone(), cause));
        }
        Ok((material.tonic(tls), material.stamp))
    }

    /// One attempt to connect (and log in).
    async fn dial(&self) -> Result<(Client, Stamp), SourceError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.settings.timeout)
            .with_timeout(self.settings.timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let mut stamp = Stamp::default();
        if self.uses_tls() {
            let (tls, s) = self.tls().await?;
            options = options.with_tls(tls);
            stamp = s;
        }
        if let Some(user) = &self.settings.user {
            let password = self.password()?.ok_or_else(|| SourceError::Auth {
                source_kind: SourceKind::Etcd,
                who: self.who(),
                cause: "no password: set password_file or ETCDCTL_USER=name:password".to_owned(),
            })?;
            options = options.with_user(user.clone(), password.expose()).with_auto_token_refresh(true);
        }
        let endpoints = crate::text::redact_urls(&self.settings.endpoints.join(",")).into_owned();
        let connect = Client::connect(&self.settings.endpoints, Some(options));
        // TCP connect and the log-in are bounded by `timeout` each inside the
        // client; this bounds the whole.
        let client = match tokio::time::timeout(self.settings.timeout * 2, connect).await {
            Err(_) => {
                return Err(SourceError::Connect {
                    source_kind: SourceKind::Etcd,
                    endpoint: endpoints,
                    cause: format!("timed out after {} s", (self.settings.timeout * 2).as_secs()),
                });
            }
            // The log-in itself timed out or lost the server: a transport
            // failure, named by endpoint like any other, not an auth verdict
            // (which of the two timeouts fires first is a race).
            Ok(Err(etcd_client::Error::GRpcStatus(s)))
                if matches!(
                    s.code(),
                    tonic::Code::DeadlineExceeded | tonic::Code::Unavailable | tonic::Code::Cancelled
                ) =>
            {
                return Err(SourceError::Connect {
                    source_kind: SourceKind::Etcd,
                    endpoint: endpoints,
                    cause: crate::text::redact_urls(&status_text(&s)).into_owned(),
                });
            }
            Ok(Err(etcd_client::Error::GRpcStatus(s))) => {
                return Err(SourceError::Auth {
                    source_kind: SourceKind::Etcd,
                    who: self.who(),
                    cause: status_text(&s),
                });
            }
            Ok(Err(e)) => {
                return Err(SourceError::Connect {
                    source_kind: SourceKind::Etcd,
                    endpoint: endpoints,
                    cause: crate::text::redact_urls(&e.to_string()).into_owned(),
                });
            }
            Ok(Ok(c)) => c,
        };
        Ok((client, stamp))
    }

    /// Reads every key under `prefix` at one revision.
    async fn read_prefix(&self, prefix: &str) -> Result<(BTreeMap<String, KeyValue>, i64), SourceError> {
        let client = self.connect().await?;
        let mut kv = client.kv_client().max_decoding_message_size(MAX_DECODE);
        let end = prefix_end(prefix.as_bytes());
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut keys = BTreeMap::new();
        loop {
            let options = GetOptions::new().with_range(end.clone()).with_limit(PAGE).with_revision(revision);
            let mut resp = kv.get(start.clone(), Some(options)).await.map_err(|e| self.read_error(prefix, e))?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            for item in &kvs {
                let (name, value) = entry(prefix, item);
                keys.insert(name, value);
            }
            match kvs.last() {
                Some(last) if more => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok((keys, revision))
    }

    /// The service's watch passes: `base` (a snapshot of the env read at
    /// an earlier revision) brought to revision `at` by reading only the
    /// keys `changed` names, one point read each, pinned to `at`. Exact
    /// when `changed` holds every key an event changed between the base's
    /// revision and `at` — the watch guarantees that (its events arrive in
    /// revision order, and a lost or overflowing watch asks for a full
    /// pass instead). A key absent at `at` was deleted.
    pub async fn read_changed(
        &self,
        env: &str,
        base: &BTreeMap<String, KeyValue>,
        changed: &std::collections::BTreeSet<String>,
        at: i64,
    ) -> Result<BTreeMap<String, KeyValue>, SourceError> {
        let prefix = self.settings.env_prefix(env);
        let prefix = prefix.as_str();
        let values = self
            .bounded(prefix, async {
                let client = self.connect().await?;
                let reads = changed.iter().map(|name| {
                    let mut kv = client.kv_client().max_decoding_message_size(MAX_DECODE);
                    let key = format!("{prefix}{name}");
                    async move {
                        let mut resp = kv
                            .get(key, Some(GetOptions::new().with_revision(at)))
                            .await
                            .map_err(|e| self.read_error(prefix, e))?;
                        Ok::<_, SourceError>((name, resp.take_kvs().first().map(|item| entry(prefix, item).1)))
                    }
                });
                futures_util::future::try_join_all(reads).await
            })
            .await?;
        let mut keys = base.clone();
        for (name, value) in values {
            match value {
                Some(v) => keys.insert(name.clone(), v),
                None => keys.remove(name),
            };
        }
        Ok(keys)
    }

    /// `read` (a read of the env at `prefix`), failing as a timeout after
    /// three times the etcd timeout (connecting included).
    async fn bounded<T>(
        &self,
        prefix: &str,
        read: impl Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        let timeout = self.settings.timeout * 3;
        tokio::time::timeout(timeout, read).await.unwrap_or_else(|_| {
            Err(SourceError::Timeout {
                source_kind: SourceKind::Etcd,
                path: prefix.to_owned(),
                seconds: timeout.as_secs(),
            })
        })
    }

    fn read_error(&self, prefix: &str, e: etcd_client::Error) -> SourceError {
        match e {
            etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::PermissionDenied => SourceError::Denied {
                source_kind: SourceKind::Etcd,
                path: prefix.to_owned(),
                who: self.who(),
                detail: format!(" ({})", s.message()),
            },
            etcd_client::Error::GRpcStatus(s) => {
                SourceError::Read { source_kind: SourceKind::Etcd, path: prefix.to_owned(), cause: status_text(&s) }
            }
            other => {
                SourceError::Read { source_kind: SourceKind::Etcd, path: prefix.to_owned(), cause: other.to_string() }
            }
        }
    }
}

fn status_text(s: &tonic::Status) -> String {
    format!("{} ({:?})", s.message(), s.code())
}

/// One key of an env: its name below `prefix`, and its value.
fn entry(prefix: &str, item: &etcd_client::KeyValue) -> (String, KeyValue) {
    let origin = KeyOrigin::Etcd { create_revision: item.create_revision(), mod_revision: item.mod_revision() };
    match item.key_str() {
        Ok(key) => (key.strip_prefix(prefix).unwrap_or(key).to_owned(), KeyValue::new(item.value().to_vec(), origin)),
        // A name that is not text cannot be asked for by name, but
        // `keys(prefix)` would silently miss it: keep it, marked
        // unusable, so the outputs that read its prefix fail naming it.
        Err(_) => {
            let lossy = String::from_utf8_lossy(item.key());
            let name = lossy.strip_prefix(prefix).unwrap_or(&lossy).to_owned();
            (name, KeyValue { data: KeyData::Bytes(item.value().to_vec()), origin })
        }
    }
}

/// The smallest key greater than every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whom etcd takes the client for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "by", content = "name", rename_all = "snake_case")]
pub enum Identity {
    /// `user` with a password.
    User(String),
    /// No user: the client certificate's CN (etcd's `--client-cert-auth`).
    Certificate(String),
    /// Neither: etcd without auth (or refusing everything).
    Anonymous,
}

/// Refreshes `client`'s auth token when `e` says it is invalid (etcd
/// forgets its simple tokens when it restarts). Unary calls refresh inside
/// etcd-client (`with_auto_token_refresh`); a stream reports it in the
/// stream, where that does not look, so the watch calls this, as does the
/// election, which classifies its errors itself.
pub async fn refresh_token_if_invalid(client: &Client, e: &etcd_client::Error) {
    if let etcd_client::Error::GRpcStatus(s) = e
        && (s.code() == tonic::Code::Unauthenticated || s.message().contains("invalid auth token"))
    {
        match client.refresh_token().await {
            Ok(()) => tracing::info!("etcd: auth token refreshed"),
            Err(e) => tracing::warn!(error = %e, "etcd: cannot refresh the auth token"),
        }
    }
}

impl EtcdSource {
    /// [`refresh_token_if_invalid`] on this source's client.
    pub async fn refresh_token_if_invalid(&self, e: &etcd_client::Error) {
        if let Ok(client) = self.connect().await {
            refresh_token_if_invalid(&client, e).await;
        }
    }
}

impl Source for EtcdSource {
    async fn fetch(&self, request: &Request) -> Result<Snapshot, SourceError> {
        self.warn_if_insecure(&request.env);
        let prefix = self.settings.env_prefix(&request.env);
        let (keys, revision) = self.bounded(&prefix, self.read_prefix(&prefix)).await?;
        Ok(Snapshot { env: request.env.clone(), keys, secrets: BTreeMap::new(), revision: Some(revision) })
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/cfgsync/prod/"), b"/cfgsync/prod0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
