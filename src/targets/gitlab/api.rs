//! The GitLab REST v4 calls cfgsync makes: list, create, update and delete
//! CI/CD variables of a project or group.
//!
//! Every call by key sends `filter[environment_scope]`, and every answer's
//! `environment_scope` and `key` are checked: without the filter GitLab
//! updates the *first-created* variable with that key in a group (it keeps
//! that behaviour for compatibility), which could be another env's.

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use super::spec::Owner;
use crate::secret::{Content, SecretString};
use crate::targets::ci::{self, Answer, Call, CiError, Client};

/// Variables per page: GitLab's maximum.
pub const PER_PAGE: usize = 100;
/// A destination with more pages than this is refused rather than read forever.
const MAX_PAGES: usize = 1000;

/// A variable as listed. Its value is [`Content`]: secret (never shown,
/// `Debug` redacts it) when GitLab masks or hides it; `None` when hidden.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "RawVariable")]
pub struct LiveVariable {
    pub key: String,
    pub value: Option<Content>,
    pub variable_type: String,
    pub protected: bool,
    pub masked: bool,
    pub hidden: bool,
    pub raw: bool,
    pub environment_scope: String,
    pub description: Option<String>,
}

/// A variable as GitLab's JSON has it; turned into a [`LiveVariable`] at once.
#[derive(Deserialize)]
struct RawVariable {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default = "env_var")]
    variable_type: String,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub masked: bool,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default)]
    pub raw: bool,
    #[serde(default = "any_scope")]
    pub environment_scope: String,
    #[serde(default)]
    pub description: Option<String>,
}

impl From<RawVariable> for LiveVariable {
    fn from(r: RawVariable) -> Self {
        let secret = r.masked || r.hidden;
        LiveVariable {
            key: r.key,
            value: r.value.map(|v| Content::new(v.into_bytes(), secret)),
            variable_type: r.variable_type,
            protected: r.protected,
            masked: r.masked,
            hidden: r.hidden,
            raw: r.raw,
            environment_scope: r.environment_scope,
            description: r.description,
        }
    }
}

fn env_var() -> String {
    "env_var".to_owned()
}

fn any_scope() -> String {
    "*".to_owned()
}

/// What cfgsync sends for one variable.
pub struct Body<'a> {
    pub key: &'a str,
    /// Text: GitLab variables hold nothing else.
    pub value: &'a str,
    pub variable_type: &'a str,
    pub protected: bool,
    pub masked: bool,
    pub hidden: bool,
    pub raw: bool,
    pub environment_scope: &'a str,
    pub description: &'a str,
    pub secret: bool,
}

/// One project's or group's variables API.
pub struct Api<'a> {
    pub client: &'a Client,
    /// `https://gitlab.example.com` (no `/api/v4`).
    pub base: &'a str,
    pub owner: &'a Owner,
    pub headers: HeaderMap,
    /// For messages.
    pub dest: String,
}

impl<'a> Api<'a> {
    pub fn new(client: &'a Client, base: &'a str, owner: &'a Owner, token: &SecretString, dest: String) -> Self {
        let mut pairs = Vec::new();
        if let Some(v) = ci::sensitive(token.expose()) {
            pairs.push(("private-token", v));
        }
        Self { client, base, owner, headers: ci::headers(&pairs), dest }
    }

    fn url(&self, key: Option<&str>) -> reqwest::Url {
        let mut segments = vec!["api", "v4", self.owner.collection(), self.owner.id(), "variables"];
        segments.extend(key);
        ci::url(self.base, &segments)
    }

    fn call(&self, method: Method, url: reqwest::Url, body: Option<Vec<u8>>, secret: bool, op: String) -> Call<'_> {
        Call { method, url, headers: &self.headers, body, secret, dest: &self.dest, op }
    }

    /// Every variable, all pages (`per_page=100`, following `X-Next-Page`).
    pub async fn list(&self) -> Result<Vec<LiveVariable>, CiError> {
        let mut all = Vec::new();
        let mut page = 1usize;
        for _ in 0..MAX_PAGES {
            let mut url = self.url(None);
            url.query_pairs_mut().append_pair("per_page", &PER_PAGE.to_string()).append_pair("page", &page.to_string());
            let call = self.call(Method::GET, url, None, false, "listing variables".to_owned());
            let answer = self.client.send(&call).await?;
            if !answer.success() {
                return Err(answer.error(&call));
            }
            let vars: Vec<LiveVariable> = answer.json(&call)?;
            all.extend(vars);
            match answer.header("x-next-page").map(str::trim).filter(|n| !n.is_empty()) {
                Some(next) => match next.parse::<usize>() {
                    Ok(n) if n > page => page = n,
                    _ => {
                        return Err(CiError::Answer {
                            dest: self.dest.clone(),
                            op: call.op,
                            cause: format!("X-Next-Page {next:?} does not follow page {page}"),
                        });
                    }
                },
                None => return self.whole(all, &answer, call.op),
            }
        }
        Err(CiError::Answer {
            dest: self.dest.clone(),
            op: "listing variables".to_owned(),
            cause: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// The list as read, unless it changed while it was read: a variable
    /// twice (the pages shifted), or fewer than the last page's `X-Total`.
    /// A variable missed could be taken for absent; the next pass reads
    /// the list again.
    fn whole(&self, all: Vec<LiveVariable>, last: &Answer, op: String) -> Result<Vec<LiveVariable>, CiError> {
        let distinct: std::collections::BTreeSet<(&str, &str)> =
            all.iter().map(|v| (v.key.as_str(), v.environment_scope.as_str())).collect();
        let total = last.header("x-total").and_then(|t| t.trim().parse::<usize>().ok());
        if distinct.len() != all.len() || total.is_some_and(|t| t != all.len()) {
            return Err(CiError::Answer {
                dest: self.dest.clone(),
                op,
                cause: format!(
                    "the list changed while it was read ({} distinct variables in {} read, X-Total {}): the next pass reads it again",
                    distinct.len(),
                    all.len(),
                    total.map_or("absent".to_owned(), |t| t.to_string())
                ),
            });
        }
        Ok(all)
    }

    /// GET one variable by key and scope (never falls back to another
    /// scope): whether it still exists.
    pub async fn exists(&self, key: &str, scope: &str) -> Result<bool, CiError> {
        let mut url = self.url(Some(key));
        url.query_pairs_mut().append_pair("filter[environment_scope]", scope);
        let op = format!("reading variable {key} (environment scope {scope})");
        let call = self.call(Method::GET, url, None, false, op);
        let answer = self.client.send(&call).await?;
        match answer.status {
            404 => Ok(false),
            s if (200..300).contains(&s) => Ok(true),
            _ => Err(answer.error(&call)),
        }
    }

    /// POST: a new variable.
    pub async fn create(&self, body: &Body<'_>) -> Result<(), CiError> {
        let mut json = fields(body);
        json.insert("key".into(), body.key.into());
        json.insert("environment_scope".into(), body.environment_scope.into());
        if body.hidden {
            json.insert("masked_and_hidden".into(), true.into());
        }
        let op = format!("creating variable {} (environment scope {})", body.key, body.environment_scope);
        let call = self.call(Method::POST, self.url(None), Some(encode(json)), body.secret, op);
        let answer = self.client.send(&call).await?;
        if !answer.success() {
            return Err(answer.error(&call));
        }
        // GitLab Free creates a group variable of scope `*` whatever was
        // asked, and says so only in the answer.
        if let (Owner::Group(_), Ok(got)) = (self.owner, answer.json::<LiveVariable>(&call))
            && got.key == body.key
            && got.environment_scope == "*"
            && body.environment_scope != "*"
        {
            return Err(CiError::FreeTierScope {
                dest: self.dest.clone(),
                key: body.key.to_owned(),
                scope: body.environment_scope.to_owned(),
            });
        }
        self.check(&call, &answer, body.key, body.environment_scope)
    }

    /// PUT: a variable's value and flags (never `masked_and_hidden`, which
    /// only a create can set; `masked` is left alone on a hidden one). A
    /// group's PUT whose filter matches nothing updates *another* scope's
    /// variable of that key, so for a group the variable is looked up by
    /// key and scope (GET, which does not fall back) right before.
    pub async fn update(&self, body: &Body<'_>) -> Result<(), CiError> {
        if let Owner::Group(_) = self.owner
            && !self.exists(body.key, body.environment_scope).await?
        {
            return Err(CiError::Answer {
                dest: self.dest.clone(),
                op: format!("updating variable {} (environment scope {})", body.key, body.environment_scope),
                cause: "it was deleted since the list was read (not sent: GitLab would update the variable of another scope instead); the next pass creates it".to_owned(),
            });
        }
        let mut json = fields(body);
        if body.hidden {
            json.remove("masked");
        }
        let mut url = self.url(Some(body.key));
        url.query_pairs_mut().append_pair("filter[environment_scope]", body.environment_scope);
        let op = format!("updating variable {} (environment scope {})", body.key, body.environment_scope);
        let call = self.call(Method::PUT, url, Some(encode(json)), body.secret, op);
        let answer = self.client.send(&call).await?;
        if !answer.success() {
            return Err(answer.error(&call));
        }
        self.check(&call, &answer, body.key, body.environment_scope)
    }

    /// DELETE; a variable that is gone already is fine.
    pub async fn delete(&self, key: &str, scope: &str) -> Result<(), CiError> {
        let mut url = self.url(Some(key));
        url.query_pairs_mut().append_pair("filter[environment_scope]", scope);
        let op = format!("deleting variable {key} (environment scope {scope})");
        let call = self.call(Method::DELETE, url, None, false, op);
        let answer = self.client.send(&call).await?;
        if answer.success() || answer.status == 404 {
            return Ok(());
        }
        Err(answer.error(&call))
    }

    /// The answer is about the variable asked for (GitLab's first-created
    /// fallback would otherwise go unnoticed).
    fn check(&self, call: &Call<'_>, answer: &Answer, key: &str, scope: &str) -> Result<(), CiError> {
        let got: LiveVariable = answer.json(call)?;
        if got.key != key || got.environment_scope != scope {
            return Err(CiError::Answer {
                dest: self.dest.clone(),
                op: call.op.clone(),
                cause: format!(
                    "GitLab answered with variable {} of environment scope {:?}, not {key} of {scope:?}: check that the variable exists with that scope (GitLab's group API falls back to another scope)",
                    got.key, got.environment_scope
                ),
            });
        }
        Ok(())
    }
}

/// The attributes create and update share.
fn fields(b: &Body<'_>) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("value".into(), b.value.into());
    m.insert("variable_type".into(), b.variable_type.into());
    m.insert("protected".into(), b.protected.into());
    m.insert("masked".into(), b.masked.into());
    m.insert("raw".into(), b.raw.into());
    m.insert("description".into(), b.description.into());
    m
}

fn encode(m: serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::Value::Object(m)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(key: &str) -> LiveVariable {
        serde_json::from_value(serde_json::json!({"key": key, "value": "v", "environment_scope": "prod"})).unwrap()
    }

    #[test]
    fn a_list_that_changed_while_it_was_read_is_refused() {
        let client = Client::new(ci::Retry::default());
        let owner = Owner::Project("g/app".into());
        let api = Api::new(&client, "https://gitlab.example.com", &owner, &SecretString::new("t"), "GitLab".into());
        let last = |total: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(t) = total {
                headers.insert("x-total", t.parse().unwrap());
            }
            Answer { status: 200, headers, body: Vec::new() }
        };
        assert_eq!(api.whole(vec![var("A"), var("B")], &last(Some("2")), "listing".into()).unwrap().len(), 2);
        assert_eq!(api.whole(vec![var("A")], &last(None), "listing".into()).unwrap().len(), 1, "no X-Total: fine");
        // A page shifted by a delete: one variable read twice.
        let e = api.whole(vec![var("A"), var("B"), var("B")], &last(Some("3")), "listing".into()).unwrap_err();
        assert!(e.to_string().contains("the list changed while it was read"), "{e}");
        // A page shifted by a create: one variable never read.
        assert!(api.whole(vec![var("A"), var("B")], &last(Some("3")), "listing".into()).is_err());
    }
}
