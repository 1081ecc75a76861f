//! The GitHub REST calls cfgsync makes for Actions secrets and variables
//! of an organization, a repository or a repository environment, in the
//! shapes of GitHub's OpenAPI description (checked by a test through Prism).
//!
//! Lists are paged by `page` until `total_count` items were read, not by
//! following `Link` (whose host is the server's idea of itself, which a
//! proxy in between does not change).

use base64::Engine;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;

use super::spec::Scope;
use crate::secret::{Content, SecretString};
use crate::targets::ci::{self, Call, CiError, Client};

/// GitHub's maxima per page.
pub const SECRETS_PER_PAGE: usize = 100;
pub const VARIABLES_PER_PAGE: usize = 30;
const MAX_PAGES: usize = 1000;
const API_VERSION: &str = "2022-11-28";

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct LiveSecret {
    pub name: String,
    pub updated_at: String,
    #[serde(default)]
    pub visibility: Option<String>,
}

/// A variable as listed; its value read back lives in [`Content`] like
/// every other value (plain: GitHub variables are readable by design).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "RawVariable")]
pub struct LiveVariable {
    pub name: String,
    pub value: Content,
    pub updated_at: String,
    pub visibility: Option<String>,
}

#[derive(Deserialize)]
struct RawVariable {
    name: String,
    value: String,
    updated_at: String,
    #[serde(default)]
    visibility: Option<String>,
}

impl From<RawVariable> for LiveVariable {
    fn from(r: RawVariable) -> Self {
        LiveVariable {
            name: r.name,
            value: Content::plain(r.value.into_bytes()),
            updated_at: r.updated_at,
            visibility: r.visibility,
        }
    }
}

#[derive(Deserialize)]
struct SecretPage {
    total_count: usize,
    secrets: Vec<LiveSecret>,
}

#[derive(Deserialize)]
struct VariablePage {
    total_count: usize,
    variables: Vec<LiveVariable>,
}

/// The most bytes GitHub takes in one secret (its plaintext) or variable
/// value: 48 KB ("Secrets reference", "Variables reference").
pub const MAX_VALUE_BYTES: usize = 48 * 1024;

/// How many secrets and variables GitHub lets one scope hold.
pub fn max_items(scope: &Scope, secrets: bool) -> (usize, &'static str) {
    match (scope, secrets) {
        (Scope::Org { .. }, _) => (1000, "organization"),
        (Scope::Repo { .. }, true) => (100, "repository"),
        (Scope::Repo { .. }, false) => (500, "repository"),
        (Scope::Environment { .. }, _) => (100, "environment"),
    }
}

/// A scope's public key, to seal secrets for it.
#[derive(Deserialize)]
pub struct PublicKey {
    pub key_id: String,
    key: String,
}

impl PublicKey {
    /// `plaintext` in a libsodium sealed box for this key, Base64.
    pub fn seal(&self, plaintext: &[u8]) -> Result<String, String> {
        let engine = base64::engine::general_purpose::STANDARD;
        let bytes = engine.decode(self.key.trim()).map_err(|e| format!("the public key is not Base64: {e}"))?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| format!("the public key has {} bytes, not 32", b.len()))?;
        let key = crypto_box::PublicKey::from(bytes);
        let sealed = key.seal(&mut crypto_box::aead::OsRng, plaintext).map_err(|e| format!("sealing: {e}"))?;
        Ok(engine.encode(sealed))
    }
}

/// Organization visibility of a write.
pub struct Visibility<'a> {
    pub visibility: &'a str,
    pub selected_repository_ids: &'a [u64],
}

/// One scope's secrets and variables API.
pub struct Api<'a> {
    pub client: &'a Client,
    pub base: &'a str,
    pub scope: &'a Scope,
    pub headers: HeaderMap,
    pub dest: String,
}

impl<'a> Api<'a> {
    pub fn new(client: &'a Client, base: &'a str, scope: &'a Scope, token: &SecretString, dest: String) -> Self {
        let mut pairs = vec![
            ("accept", HeaderValue::from_static("application/vnd.github+json")),
            ("x-github-api-version", HeaderValue::from_static(API_VERSION)),
        ];
        if let Some(v) = ci::sensitive(&format!("Bearer {}", token.expose())) {
            pairs.push(("authorization", v));
        }
        Self { client, base, scope, headers: ci::headers(&pairs), dest }
    }

    fn url(&self, tail: &[&str]) -> reqwest::Url {
        let mut segments = self.scope.segments();
        segments.extend(tail);
        ci::url(self.base, &segments)
    }

    fn call(&self, method: Method, url: reqwest::Url, body: Option<Vec<u8>>, secret: bool, op: String) -> Call<'_> {
        Call { method, url, headers: &self.headers, body, secret, dest: &self.dest, op }
    }

    async fn send_ok(&self, call: &Call<'_>, tolerate: &[u16]) -> Result<ci::Answer, CiError> {
        let answer = self.client.send(call).await?;
        if answer.success() || tolerate.contains(&answer.status) {
            return Ok(answer);
        }
        if answer.status == 404 {
            return Err(CiError::NotFound { dest: self.dest.clone(), op: call.op.clone(), hint: self.missing() });
        }
        Err(answer.error(call))
    }

    /// What a 404 from this scope most likely means.
    fn missing(&self) -> String {
        match self.scope {
            Scope::Environment { owner, repo, environment } => format!(
                "environment {environment:?} does not exist in repository {owner}/{repo}, or the token cannot see it: create it in the repository's settings (Environments); cfgsync does not create environments"
            ),
            Scope::Repo { owner, repo } => {
                format!("repository {owner}/{repo} does not exist, or the token cannot see it")
            }
            Scope::Org { org } => format!("organization {org} does not exist, or the token cannot see it"),
        }
    }

    /// Every page of a list, by `page` until `total_count` items were
    /// read. A list that changed while it was read (a name twice, or fewer
    /// names than the last page counted) is refused: a missed item could
    /// be written over as if it were absent. The next pass reads it again.
    async fn list_all<T, P>(
        &self,
        collection: &str,
        per_page: usize,
        page_of: impl Fn(P) -> (usize, Vec<T>),
        name: impl Fn(&T) -> String,
    ) -> Result<Vec<T>, CiError>
    where
        P: serde::de::DeserializeOwned,
    {
        let op = format!("listing {collection}");
        let mut all: Vec<T> = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut url = self.url(&[collection]);
            url.query_pairs_mut().append_pair("per_page", &per_page.to_string()).append_pair("page", &page.to_string());
            let call = self.call(Method::GET, url, None, false, op.clone());
            let answer = self.send_ok(&call, &[]).await?;
            let (total, items) = page_of(answer.json(&call)?);
            let empty = items.is_empty();
            all.extend(items);
            if empty || all.len() >= total {
                let names: Vec<String> = all.iter().map(&name).collect();
                if let Some(cause) = changed_while_read(&names, total) {
                    return Err(CiError::Answer { dest: self.dest.clone(), op, cause });
                }
                return Ok(all);
            }
        }
        Err(CiError::Answer { dest: self.dest.clone(), op, cause: format!("more than {MAX_PAGES} pages") })
    }

    pub async fn list_secrets(&self) -> Result<Vec<LiveSecret>, CiError> {
        self.list_all("secrets", SECRETS_PER_PAGE, |p: SecretPage| (p.total_count, p.secrets), |s| s.name.clone()).await
    }

    pub async fn list_variables(&self) -> Result<Vec<LiveVariable>, CiError> {
        self.list_all(
            "variables",
            VARIABLES_PER_PAGE,
            |p: VariablePage| (p.total_count, p.variables),
            |v| v.name.clone(),
        )
        .await
    }

    pub async fn public_key(&self) -> Result<PublicKey, CiError> {
        let op = "reading the public key for secrets".to_owned();
        let call = self.call(Method::GET, self.url(&["secrets", "public-key"]), None, false, op);
        self.send_ok(&call, &[]).await?.json(&call)
    }

    /// PUT a sealed secret (created or replaced).
    pub async fn put_secret(
        &self,
        name: &str,
        key: &PublicKey,
        plaintext: &[u8],
        visibility: Option<Visibility<'_>>,
    ) -> Result<(), CiError> {
        let sealed = key.seal(plaintext).map_err(|cause| CiError::Seal {
            dest: self.dest.clone(),
            name: name.to_owned(),
            cause,
        })?;
        let mut body = serde_json::json!({ "encrypted_value": sealed, "key_id": key.key_id });
        add_visibility(&mut body, visibility);
        let call = self.call(
            Method::PUT,
            self.url(&["secrets", name]),
            Some(body.to_string().into_bytes()),
            true,
            format!("writing secret {name}"),
        );
        self.send_ok(&call, &[]).await.map(drop)
    }

    pub async fn create_variable(
        &self,
        name: &str,
        value: &str,
        visibility: Option<Visibility<'_>>,
    ) -> Result<(), CiError> {
        let mut body = serde_json::json!({ "name": name, "value": value });
        add_visibility(&mut body, visibility);
        let call = self.call(
            Method::POST,
            self.url(&["variables"]),
            Some(body.to_string().into_bytes()),
            false,
            format!("creating variable {name}"),
        );
        self.send_ok(&call, &[]).await.map(drop)
    }

    pub async fn update_variable(
        &self,
        name: &str,
        value: &str,
        visibility: Option<Visibility<'_>>,
    ) -> Result<(), CiError> {
        let mut body = serde_json::json!({ "value": value });
        add_visibility(&mut body, visibility);
        let call = self.call(
            Method::PATCH,
            self.url(&["variables", name]),
            Some(body.to_string().into_bytes()),
            false,
            format!("updating variable {name}"),
        );
        self.send_ok(&call, &[]).await.map(drop)
    }

    /// DELETE a secret (`secrets`) or variable (`variables`); one that is
    /// gone already is fine.
    pub async fn delete(&self, collection: &str, name: &str) -> Result<(), CiError> {
        let what = if collection == "secrets" { "secret" } else { "variable" };
        let call =
            self.call(Method::DELETE, self.url(&[collection, name]), None, false, format!("deleting {what} {name}"));
        self.send_ok(&call, &[404]).await.map(drop)
    }
}

/// Why a list read page by page is not one consistent list: a name twice
/// (a page shifted back), or fewer names than the last page's
/// `total_count` (one shifted away unseen).
fn changed_while_read(names: &[String], total: usize) -> Option<String> {
    let distinct: std::collections::BTreeSet<String> = names.iter().map(|n| n.to_ascii_uppercase()).collect();
    (distinct.len() != names.len() || distinct.len() < total).then(|| {
        format!(
            "the list changed while it was read ({} distinct names in {} items, {total} counted): the next pass reads it again",
            distinct.len(),
            names.len()
        )
    })
}

fn add_visibility(body: &mut serde_json::Value, visibility: Option<Visibility<'_>>) {
    if let Some(v) = visibility {
        body["visibility"] = v.visibility.into();
        if v.visibility == "selected" {
            body["selected_repository_ids"] = serde_json::json!(v.selected_repository_ids);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_that_changed_while_it_was_read_is_refused() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(changed_while_read(&names(&["A", "B"]), 2), None);
        assert!(changed_while_read(&names(&["A", "B", "b"]), 3).is_some(), "one read twice");
        assert!(changed_while_read(&names(&["A", "B"]), 3).is_some(), "one never read");
    }

    #[test]
    fn sealed_boxes_open_with_the_secret_key() {
        use crypto_box::SecretKey;
        let secret = SecretKey::generate(&mut crypto_box::aead::OsRng);
        let engine = base64::engine::general_purpose::STANDARD;
        let key = PublicKey { key_id: "1".into(), key: engine.encode(secret.public_key().as_bytes()) };
        let sealed = engine.decode(key.seal(b"CANARY-seal").unwrap()).unwrap();
        assert_eq!(secret.unseal(&sealed).unwrap(), b"CANARY-seal");
        assert_ne!(key.seal(b"CANARY-seal").unwrap(), key.seal(b"CANARY-seal").unwrap(), "ephemeral keys");
        let bad = PublicKey { key_id: "1".into(), key: engine.encode([1u8; 31]) };
        assert!(bad.seal(b"x").unwrap_err().contains("31 bytes"));
    }
}
