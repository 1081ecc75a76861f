//! Vault (KV v2): secrets at `<mount>/<env>/<path>`.
//!
//! ```toml
//! [vault]                             # VAULT_ADDR, VAULT_TOKEN override
//! address = "http://127.0.0.1:8200"
//! mount = "secret"
//! auth = { method = "token" }         # VAULT_TOKEN, else token_file, else ~/.vault-token
//! # auth = { method = "approle", role_id = "...", secret_id_file = "/run/credentials/cfgsync/secret-id" }
//! ```
//!
//! KV v2 has no consistent multi-secret read, so each referenced path is read
//! once per pass and its version recorded. A 404 is not an error here: the
//! path is simply absent from the snapshot and the template that asked for it
//! fails with a message naming it. A 403 or any transport error fails the
//! whole fetch (fail closed). Response bodies are never put in errors: they
//! may hold secret values.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio::task::JoinSet;
use vaultrs::api::kv2::requests::ReadSecretRequest;
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::{Request, Secret, Snapshot, Source, SourceError, SourceKind};
use crate::config::{VaultAuth, VaultSettings};
use crate::secret::SecretString;

/// Concurrent reads per fetch: enough to hide loopback latency for 100
/// secrets, few enough not to look like a burst to a rate-limited server.
const PARALLEL_READS: usize = 8;

pub struct VaultSource {
    settings: VaultSettings,
    client: Mutex<Option<Arc<VaultClient>>>,
}

impl VaultSource {
    pub fn new(settings: VaultSettings) -> Self {
        Self { settings, client: Mutex::new(None) }
    }

    fn auth_error(&self, cause: impl Into<String>) -> SourceError {
        let method = match self.settings.auth {
            VaultAuth::Token { .. } => "token",
            VaultAuth::AppRole { .. } => "approle",
        };
        SourceError::Auth { source_kind: SourceKind::Vault, who: format!(" with {method} auth"), cause: cause.into() }
    }

    fn new_client(&self, token: &SecretString) -> Result<VaultClient, SourceError> {
        let settings = VaultClientSettingsBuilder::default()
            .address(&self.settings.address)
            .token(token.expose())
            .timeout(Some(self.settings.timeout))
            .build()
            .map_err(|e| SourceError::Connect {
                source_kind: SourceKind::Vault,
                endpoint: self.settings.address.clone(),
                cause: e.to_string(),
            })?;
        VaultClient::new(settings).map_err(|e| SourceError::Connect {
            source_kind: SourceKind::Vault,
            endpoint: self.settings.address.clone(),
            cause: e.to_string(),
        })
    }

    pub(crate) async fn client(&self) -> Result<Arc<VaultClient>, SourceError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let client = match &self.settings.auth {
            VaultAuth::Token { token, token_file } => {
                let token = match (token, token_file) {
                    (Some(t), _) => t.clone(),
                    (None, Some(f)) => read_secret_file(f).map_err(|e| self.auth_error(e))?,
                    (None, None) => {
                        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
                        read_secret_file(&home.join(".vault-token")).map_err(|_| {
                            self.auth_error("no token: set VAULT_TOKEN, `token_file`, or log in with the vault CLI")
                        })?
                    }
                };
                self.new_client(&token)?
            }
            VaultAuth::AppRole { mount, role_id, role_id_file, secret_id_file } => {
                let role_id = match (role_id, role_id_file) {
                    (Some(r), _) => r.clone(),
                    (None, Some(f)) => read_secret_file(f).map_err(|e| self.auth_error(e))?.expose().to_owned(),
                    (None, None) => return Err(self.auth_error("approle auth needs role_id or role_id_file")),
                };
                let secret_id = match secret_id_file {
                    Some(f) => read_secret_file(f).map_err(|e| self.auth_error(e))?,
                    None => return Err(self.auth_error("approle auth needs secret_id_file")),
                };
                let mut client = self.new_client(&SecretString::default())?;
                let auth =
                    vaultrs::auth::approle::login(&client, mount, &role_id, secret_id.expose()).await.map_err(|e| {
                        self.auth_error(format!("approle login at auth/{mount}: {}", client_error_text(&e)))
                    })?;
                client.set_token(&auth.client_token);
                client
            }
        };
        let client = Arc::new(client);
        *guard = Some(client.clone());
        Ok(client)
    }
}

fn read_secret_file(path: &std::path::Path) -> Result<SecretString, String> {
    std::fs::read_to_string(path)
        .map(|s| SecretString::new(s.trim()))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A Vault error as text, without any response body.
pub(crate) fn client_error_text(e: &ClientError) -> String {
    match e {
        ClientError::APIError { code, errors } => {
            let errors: Vec<&str> = errors.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
            if errors.is_empty() { format!("HTTP {code}") } else { format!("HTTP {code}: {}", errors.join("; ")) }
        }
        ClientError::RestClientError { source } => match source {
            rustify::errors::ClientError::RequestError { source, .. } => format!("request failed: {source:#}"),
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

enum ReadOutcome {
    Found(Secret),
    Absent,
}

async fn read_one(client: Arc<VaultClient>, mount: String, full_path: String) -> Result<ReadOutcome, SourceError> {
    let shown = format!("{mount}/{full_path}");
    let endpoint = ReadSecretRequest::builder().mount(&mount).path(&full_path).build().map_err(|e| {
        SourceError::Invalid { source_kind: SourceKind::Vault, path: shown.clone(), cause: e.to_string() }
    })?;
    match vaultrs::api::exec_with_result(client.as_ref(), endpoint).await {
        Ok(resp) => {
            let serde_json::Value::Object(map) = resp.data else {
                return Err(SourceError::Invalid {
                    source_kind: SourceKind::Vault,
                    path: shown,
                    cause: "secret data is not a map of fields".to_owned(),
                });
            };
            let fields = map
                .into_iter()
                .map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, SecretString::new(text))
                })
                .collect();
            Ok(ReadOutcome::Found(Secret { fields, version: Some(resp.metadata.version) }))
        }
        Err(ClientError::APIError { code: 404, .. }) => Ok(ReadOutcome::Absent),
        Err(e @ ClientError::APIError { code: 403, .. }) => Err(SourceError::Denied {
            source_kind: SourceKind::Vault,
            path: shown,
            who: String::new(),
            detail: format!(" ({})", client_error_text(&e)),
        }),
        Err(e) => Err(SourceError::Read { source_kind: SourceKind::Vault, path: shown, cause: client_error_text(&e) }),
    }
}

impl Source for VaultSource {
    async fn fetch(&self, request: &Request) -> Result<Snapshot, SourceError> {
        let mut snapshot = Snapshot { env: request.env.clone(), ..Default::default() };
        if request.secret_paths.is_empty() {
            return Ok(snapshot);
        }
        let client = self.client().await?;
        let mut pending = request.secret_paths.iter();
        let mut tasks = JoinSet::new();
        let mut found = BTreeMap::new();
        loop {
            while tasks.len() < PARALLEL_READS {
                let Some(path) = pending.next() else { break };
                let full = format!("{}/{path}", request.env);
                let (client, mount, path) = (client.clone(), self.settings.mount.clone(), path.clone());
                tasks.spawn(async move { (path, read_one(client, mount, full).await) });
            }
            let Some(joined) = tasks.join_next().await else { break };
            let (path, outcome) = joined.map_err(|e| SourceError::Read {
                source_kind: SourceKind::Vault,
                path: self.settings.mount.clone(),
                cause: format!("read task failed: {e}"),
            })?;
            // Dropping the JoinSet on error aborts the other reads.
            if let ReadOutcome::Found(secret) = outcome? {
                found.insert(path, secret);
            }
        }
        snapshot.secrets = found;
        Ok(snapshot)
    }
}
