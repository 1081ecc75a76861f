//! etcd beyond the one range read a pass needs: single keys with their
//! revisions, the `<prefix>/_meta/<env>/<name>` sibling keys that record who
//! decided a value and why, guarded writes for `cfgsync set`, and the roles
//! `cfgsync policy apply` creates.
//!
//! Decisions:
//! - **Metadata** lives next to the value, not inside it: a key's value stays
//!   exactly what templates read. The sibling holds a small TOML or JSON
//!   table with `owner` and `reason`; cfgsync writes JSON (what `etcdctl get`
//!   users read most easily) and reads either. Other fields are kept as they
//!   are when cfgsync rewrites the sibling.
//! - **Writes are compare-and-swap**: `set` shows the current value, asks,
//!   then writes in one transaction that checks neither the key nor its
//!   sibling changed since it was shown (their `mod_revision`), so a
//!   confirmation can never approve a value someone else just replaced. Value
//!   and metadata are written together or not at all.
//! - **Roles are made to agree** with `policies/`: missing permissions are
//!   granted and permissions the file does not list are revoked, like every
//!   other thing cfgsync manages. Users are not created here: people are
//!   added by an administrator (`etcdctl user add`, `user grant-role`).

use std::collections::BTreeMap;

use etcd_client::{Client, Compare, CompareOp, Permission, PermissionType, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::etcd::prefix_end;
use super::{SourceError, SourceKind};
use crate::config::EtcdSettings;

/// One key as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// How many times the key was written since it was created.
    pub version: i64,
}

/// `owner` and `reason` of a key or secret, plus any other fields the
/// sibling key holds (kept as they are on rewrite).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl Meta {
    /// Parses a sibling key's value: JSON when it starts with `{`, TOML
    /// otherwise (both are documented formats).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("not a JSON object with owner/reason: {e}"))
        } else {
            let table: toml::Table = toml::from_str(text).map_err(|e| format!("not TOML or JSON: {}", e.message()))?;
            let json = serde_json::to_value(table).map_err(|e| e.to_string())?;
            serde_json::from_value(json).map_err(|e| format!("owner/reason must be strings: {e}"))
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a map of strings and JSON values serializes")
    }

    pub fn is_empty(&self) -> bool {
        self.owner.is_none() && self.reason.is_none() && self.other.is_empty()
    }
}

/// A failed write or role change. Names the key or role, never a value.
#[derive(Debug, thiserror::Error)]
pub enum EtcdAdminError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("etcd: permission denied writing {key}{who} ({reason})")]
    WriteDenied { key: String, who: String, reason: String },
    #[error("etcd: writing {key}: {cause}")]
    Write { key: String, cause: String },
    #[error(
        "etcd: {key} changed since it was shown (now at revision {now}); nothing was written: run the command again"
    )]
    Conflict { key: String, now: i64 },
    #[error("etcd: {key}: {cause}")]
    InvalidMeta { key: String, cause: String },
    #[error("etcd: role {role}: {operation}: {cause}")]
    Role { role: String, operation: &'static str, cause: String },
}

/// `" as user \"name\""`, for messages.
pub fn who(settings: &EtcdSettings) -> String {
    settings.user.as_ref().map(|u| format!(" as user {u:?}")).unwrap_or_default()
}

/// `<prefix>/<env>/<name>`.
pub fn key_path(settings: &EtcdSettings, env: &str, name: &str) -> String {
    format!("{}{name}", settings.env_prefix(env))
}

/// `<prefix>/_meta/<env>/<name>`: where a key's owner and reason live.
pub fn meta_path(settings: &EtcdSettings, env: &str, name: &str) -> String {
    super::etcd::keyspace::meta_key(&settings.prefix, env, name)
}

fn status_text(s: &tonic::Status) -> String {
    let message = s.message().trim();
    if message.is_empty() { format!("{:?}", s.code()) } else { message.to_owned() }
}

fn read_error(settings: &EtcdSettings, key: &str, e: etcd_client::Error) -> SourceError {
    match e {
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::PermissionDenied => SourceError::Denied {
            source_kind: SourceKind::Etcd,
            path: key.to_owned(),
            who: who(settings),
            detail: format!(" ({})", status_text(&s)),
        },
        etcd_client::Error::GRpcStatus(s) => {
            SourceError::Read { source_kind: SourceKind::Etcd, path: key.to_owned(), cause: status_text(&s) }
        }
        other => SourceError::Read { source_kind: SourceKind::Etcd, path: key.to_owned(), cause: other.to_string() },
    }
}

/// Reads one key with its revisions; `None` when it does not exist.
pub async fn get(client: &Client, settings: &EtcdSettings, key: &str) -> Result<Option<KeyRecord>, SourceError> {
    let mut kv = client.kv_client();
    let resp = kv.get(key, None).await.map_err(|e| read_error(settings, key, e))?;
    let Some(item) = resp.kvs().first() else { return Ok(None) };
    let value = item.value_str().map_err(|_| SourceError::Invalid {
        source_kind: SourceKind::Etcd,
        path: key.to_owned(),
        cause: "value is not UTF-8".to_owned(),
    })?;
    Ok(Some(KeyRecord {
        value: value.to_owned(),
        create_revision: item.create_revision(),
        mod_revision: item.mod_revision(),
        version: item.version(),
    }))
}

/// etcd's default `--max-txn-ops`: the most operations (and compares) one
/// transaction may hold.
pub const MAX_TXN_OPS: usize = 128;

/// Reads many keys, [`MAX_TXN_OPS`] per request (a transaction of gets,
/// each at one revision): the value's bytes and `mod_revision` of every
/// key that exists. One round trip per 128 keys instead of one per key.
pub async fn get_many(
    client: &Client,
    settings: &EtcdSettings,
    keys: &[String],
) -> Result<BTreeMap<String, (Vec<u8>, i64)>, SourceError> {
    let mut found = BTreeMap::new();
    let mut kv = client.kv_client();
    for chunk in keys.chunks(MAX_TXN_OPS) {
        let gets: Vec<TxnOp> = chunk.iter().map(|k| TxnOp::get(k.as_str(), None)).collect();
        let resp = kv.txn(Txn::new().and_then(gets)).await.map_err(|e| read_error(settings, &chunk[0], e))?;
        for op in resp.op_responses() {
            if let etcd_client::TxnOpResponse::Get(g) = op {
                for item in g.kvs() {
                    let key = String::from_utf8_lossy(item.key()).into_owned();
                    found.insert(key, (item.value().to_vec(), item.mod_revision()));
                }
            }
        }
    }
    Ok(found)
}

/// Reads and parses a metadata sibling key. A sibling that cannot be parsed
/// is an error naming it: silently showing "no owner" would hide it.
pub async fn get_meta(
    client: &Client,
    settings: &EtcdSettings,
    env: &str,
    name: &str,
) -> Result<Option<(Meta, KeyRecord)>, EtcdAdminError> {
    let key = meta_path(settings, env, name);
    let Some(record) = get(client, settings, &key).await? else { return Ok(None) };
    let meta = Meta::parse(&record.value).map_err(|cause| EtcdAdminError::InvalidMeta { key: key.clone(), cause })?;
    Ok(Some((meta, record)))
}

/// One write of a guarded transaction: the key, its new value, and the
/// `mod_revision` it had when it was shown (0: it did not exist).
pub struct GuardedPut {
    pub key: String,
    pub value: String,
    pub seen_mod_revision: i64,
}

/// Writes every put in one transaction that succeeds only if no key changed
/// since it was shown. Returns the revision of the write.
pub async fn put_guarded(client: &Client, settings: &EtcdSettings, puts: &[GuardedPut]) -> Result<i64, EtcdAdminError> {
    let Some(first) = puts.first() else { return Ok(0) };
    let compares: Vec<Compare> =
        puts.iter().map(|p| Compare::mod_revision(p.key.as_str(), CompareOp::Equal, p.seen_mod_revision)).collect();
    let ops: Vec<TxnOp> = puts.iter().map(|p| TxnOp::put(p.key.as_str(), p.value.as_str(), None)).collect();
    let reads: Vec<TxnOp> = puts.iter().map(|p| TxnOp::get(p.key.as_str(), None)).collect();
    let txn = Txn::new().when(compares).and_then(ops).or_else(reads);
    let mut kv = client.kv_client();
    let resp = kv.txn(txn).await.map_err(|e| match e {
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::PermissionDenied => {
            EtcdAdminError::WriteDenied { key: first.key.clone(), who: who(settings), reason: status_text(&s) }
        }
        etcd_client::Error::GRpcStatus(s) => EtcdAdminError::Write { key: first.key.clone(), cause: status_text(&s) },
        other => EtcdAdminError::Write { key: first.key.clone(), cause: other.to_string() },
    })?;
    let revision = resp.header().map_or(0, |h| h.revision());
    if resp.succeeded() {
        return Ok(revision);
    }
    // Name the key that moved, with its revision now.
    for (put, op) in puts.iter().zip(resp.op_responses()) {
        if let etcd_client::TxnOpResponse::Get(g) = op {
            let now = g.kvs().first().map_or(0, |kv| kv.mod_revision());
            if now != put.seen_mod_revision {
                return Err(EtcdAdminError::Conflict { key: put.key.clone(), now });
            }
        }
    }
    Err(EtcdAdminError::Conflict { key: first.key.clone(), now: revision })
}

/// Whether a permission covers one key or every key under a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
    Readwrite,
}

impl Access {
    fn permission_type(self) -> PermissionType {
        match self {
            Access::Read => PermissionType::Read,
            Access::Write => PermissionType::Write,
            Access::Readwrite => PermissionType::Readwrite,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Readwrite => "readwrite",
        }
    }
}

/// One permission of a role: an access on every key starting with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PrefixGrant {
    pub access: Access,
    pub prefix: String,
}

/// What making a role agree did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoleChange {
    pub created: bool,
    pub granted: Vec<PrefixGrant>,
    pub revoked: Vec<PrefixGrant>,
}

/// Makes role `role` hold exactly `grants`.
pub async fn apply_role(
    client: &Client,
    role: &str,
    grants: &[PrefixGrant],
    dry_run: bool,
) -> Result<RoleChange, EtcdAdminError> {
    let err = |operation: &'static str| {
        move |e: etcd_client::Error| EtcdAdminError::Role {
            role: role.to_owned(),
            operation,
            cause: match e {
                etcd_client::Error::GRpcStatus(s) => status_text(&s),
                other => other.to_string(),
            },
        }
    };
    let mut auth = client.auth_client();
    let mut change = RoleChange::default();
    // (type, key, range_end) of what the role holds now.
    let current: Vec<(i32, Vec<u8>, Vec<u8>)> = match auth.role_get(role).await {
        Ok(resp) => {
            resp.permissions().iter().map(|p| (p.get_type(), p.key().to_vec(), p.range_end().to_vec())).collect()
        }
        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("role name not found") => {
            change.created = true;
            if !dry_run {
                auth.role_add(role).await.map_err(err("adding"))?;
            }
            Vec::new()
        }
        Err(e) => return Err(err("reading")(e)),
    };
    let wanted: Vec<(i32, Vec<u8>, Vec<u8>)> = grants
        .iter()
        .map(|g| (g.access.permission_type() as i32, g.prefix.as_bytes().to_vec(), prefix_end(g.prefix.as_bytes())))
        .collect();
    for (grant, w) in grants.iter().zip(&wanted) {
        if !current.contains(w) {
            change.granted.push(grant.clone());
            if !dry_run {
                let perm = Permission::new(grant.access.permission_type(), grant.prefix.as_str()).with_prefix();
                auth.role_grant_permission(role, perm).await.map_err(err("granting"))?;
            }
        }
    }
    for (kind, key, end) in &current {
        // A wanted grant on the same range with another access replaces it
        // in place (etcd keeps one permission per range): not a revoke.
        if wanted.iter().any(|(_, k, e)| k == key && e == end) {
            continue;
        }
        let access = match PermissionType::try_from(*kind) {
            Ok(PermissionType::Read) => Access::Read,
            Ok(PermissionType::Write) => Access::Write,
            _ => Access::Readwrite,
        };
        change.revoked.push(PrefixGrant { access, prefix: String::from_utf8_lossy(key).into_owned() });
        if !dry_run {
            let options = etcd_client::RoleRevokePermissionOptions::new().with_range_end(end.clone());
            auth.role_revoke_permission(role, key.clone(), Some(options)).await.map_err(err("revoking"))?;
        }
    }
    Ok(change)
}

/// Whether the caller may read keys under `prefix`, asked of the server:
/// a count-only range, which etcd checks like any read.
pub async fn can_read(client: &Client, settings: &EtcdSettings, prefix: &str) -> Result<bool, SourceError> {
    let options = etcd_client::GetOptions::new().with_range(prefix_end(prefix.as_bytes())).with_count_only();
    match client.kv_client().get(prefix, Some(options)).await {
        Ok(_) => Ok(true),
        Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::PermissionDenied => Ok(false),
        Err(e) => Err(read_error(settings, prefix, e)),
    }
}

/// Whether the caller may write keys under `prefix`, asked of the server
/// without writing: a transaction whose condition never holds (a key's
/// version below 0) and whose branch puts a key under `prefix`. etcd checks
/// the permissions of both branches before evaluating the condition, so a
/// denial is an answer and an allowed put is never executed. The condition
/// reads the key, so a role that may write but not read answers "no".
pub async fn can_write(client: &Client, settings: &EtcdSettings, prefix: &str) -> Result<bool, SourceError> {
    let key = format!("{prefix}cfgsync-whoami-probe");
    let txn = Txn::new().when([Compare::version(key.as_str(), CompareOp::Less, 0)]).and_then([TxnOp::put(
        key.as_str(),
        "never written",
        None,
    )]);
    match client.kv_client().txn(txn).await {
        Ok(resp) if !resp.succeeded() => Ok(true),
        Ok(_) => Err(SourceError::Invalid {
            source_kind: SourceKind::Etcd,
            path: key,
            cause: "a condition that cannot hold held: the probe key was written".to_owned(),
        }),
        Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::PermissionDenied => Ok(false),
        Err(e) => Err(read_error(settings, prefix, e)),
    }
}

/// The roles of etcd user `name`, as the server says (etcd lets a user read
/// their own record); `Err` is why not, in words.
pub async fn user_roles(client: &Client, name: &str) -> Result<Vec<String>, String> {
    match client.auth_client().user_get(name).await {
        Ok(resp) => Ok(resp.roles().to_vec()),
        Err(etcd_client::Error::GRpcStatus(s)) => Err(status_text(&s)),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_reads_toml_and_json_and_keeps_other_fields() {
        let m = Meta::parse("owner = \"team-db\"\nreason = \"why\"\nticket = \"INC-1\"\n").unwrap();
        assert_eq!(m.owner.as_deref(), Some("team-db"));
        assert_eq!(m.reason.as_deref(), Some("why"));
        assert_eq!(m.to_json(), r#"{"owner":"team-db","reason":"why","ticket":"INC-1"}"#);
        let m = Meta::parse(r#" {"reason": "because"}"#).unwrap();
        assert_eq!((m.owner, m.reason.as_deref()), (None, Some("because")));
        assert!(Meta::parse("owner = 3").unwrap_err().contains("must be strings"));
        assert!(Meta::parse("{").is_err());
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/cfgsync/prod/"), b"/cfgsync/prod0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }
}
