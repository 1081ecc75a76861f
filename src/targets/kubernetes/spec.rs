//! `kind = "kubernetes-secret"` and `"kubernetes-configmap"` in the config:
//! the fields as written, the typed target, and what `cfgsync validate`
//! checks of it — everything the API server would refuse at apply that the
//! config alone decides, by the API server's own rules
//! (`k8s.io/apimachinery/pkg/util/validation`, `pkg/apis/core/validation`),
//! so that a bad name fails on the laptop and not in the first pass:
//!
//! - what becomes a label value — the output's name (`cfgsync.io/output`),
//!   each env's name (`cfgsync.io/env`) — is at most 63 of
//!   `[A-Za-z0-9_.-]`, alphanumeric at both ends (the instance is checked
//!   where it is read);
//! - the namespace is a DNS-1123 label, the name a DNS-1123 subdomain (dot
//!   separated labels, none empty: `a..b` is refused), at most 253;
//! - entry names are config keys: `[-._a-zA-Z0-9]+`, at most 253, not `.`
//!   or `..` nor starting with `..`;
//! - `labels`: qualified-name keys, label values; `annotations`: qualified
//!   names (case-insensitive), at most 256 KiB together with cfgsync's own;
//!   neither may set cfgsync's own keys;
//! - a built-in Secret `type` has the entries the API server requires:
//!   `kubernetes.io/tls` needs `tls.crt` and `tls.key`,
//!   `kubernetes.io/dockerconfigjson` `.dockerconfigjson`,
//!   `kubernetes.io/dockercfg` `.dockercfg`, `kubernetes.io/basic-auth`
//!   `username` or `password`, `kubernetes.io/ssh-auth` `ssh-privatekey`,
//!   `kubernetes.io/service-account-token` the annotation
//!   `kubernetes.io/service-account.name`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::{ANNOTATION_ADOPT, LABEL_MANAGED_BY};
use crate::config::Entry;
use crate::targets::registry::{Problems, SpecInput};

/// The target as written (`kind = "kubernetes-secret"` or
/// `"kubernetes-configmap"`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubeTarget {
    /// Kubeconfig context, templated by env. Empty: the current context (or
    /// in-cluster config when there is no kubeconfig).
    context: Option<String>,
    namespace: String,
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(rename = "type")]
    secret_type: Option<String>,
    #[serde(default)]
    restart: Vec<RawRestart>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    kind: String,
    name: String,
}

/// Which Kubernetes object a target writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum ObjectKind {
    Secret,
    ConfigMap,
}

impl ObjectKind {
    /// The `kind = "..."` of the target.
    pub fn kind_name(self) -> &'static str {
        match self {
            ObjectKind::Secret => "kubernetes-secret",
            ObjectKind::ConfigMap => "kubernetes-configmap",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Secret => "Secret",
            ObjectKind::ConfigMap => "ConfigMap",
        })
    }
}

/// Where one Kubernetes object lives, for one env.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectAddress {
    /// Kubeconfig context; empty means the current context / in-cluster.
    pub context: String,
    pub namespace: String,
    pub name: String,
}

/// A Kubernetes target, rendered for each env.
#[derive(Debug)]
pub struct KubeTarget {
    pub object: ObjectKind,
    /// The address for each env, rendered.
    pub addresses: BTreeMap<String, ObjectAddress>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Secret `type`; `Opaque` when unset.
    pub secret_type: Option<String>,
    /// Workloads to roll when the object's content really changes.
    pub restart: Vec<Restart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// `Deployment`, `StatefulSet` or `DaemonSet`, in the object's namespace.
    pub kind: String,
    pub name: String,
}

/// Builds the typed target of `object`; every problem, at an entry's
/// location when it is about one entry (else `None`: the target's).
pub fn build(object: ObjectKind, raw: RawKubeTarget, input: &SpecInput<'_>) -> Result<KubeTarget, Problems> {
    let output = input.output;
    let mut problems = Problems::new();
    let addresses = addresses(object, &raw, input, &mut problems);
    problems.extend(self::problems(&TargetSpec {
        output,
        object,
        addresses: &addresses,
        labels: &raw.labels,
        annotations: &raw.annotations,
        secret_type: raw.secret_type.as_deref(),
        entries: input.entries,
    }));
    let mut restart = Vec::new();
    for r in raw.restart {
        if !matches!(r.kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet") {
            problems.push((
                None,
                format!(
                    "output {output:?}: restart kind {:?} is not supported: use Deployment, StatefulSet or DaemonSet",
                    r.kind
                ),
            ));
        }
        restart.push(Restart { kind: r.kind, name: r.name });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(KubeTarget {
        object,
        addresses,
        labels: raw.labels,
        annotations: raw.annotations,
        secret_type: raw.secret_type,
        restart,
    })
}

/// The context, namespace and name rendered for each env; two envs may
/// not write one object.
fn addresses(
    object: ObjectKind,
    raw: &RawKubeTarget,
    input: &SpecInput<'_>,
    problems: &mut Problems,
) -> BTreeMap<String, ObjectAddress> {
    let output = input.output;
    let mut addresses = BTreeMap::new();
    for env in input.envs {
        let mut field = |what: &str, template: &str| match crate::config::render_field(template, env) {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push((None, format!("output {output:?}: {what} {template:?}: {e}")));
                None
            }
        };
        let context = field("context", raw.context.as_deref().unwrap_or(""));
        let namespace = field("namespace", &raw.namespace);
        let name = field("name", &raw.name);
        let (Some(context), Some(namespace), Some(name)) = (context, namespace, name) else { break };
        addresses.insert(env.clone(), ObjectAddress { context, namespace, name });
    }
    let mut seen: BTreeMap<&ObjectAddress, &String> = BTreeMap::new();
    for (env, a) in &addresses {
        if let Some(other) = seen.insert(a, env) {
            problems.push((
                None,
                format!("output {output:?}: envs {other} and {env} would both write {object} {}/{} in context {:?}; template the name, namespace or context with {{{{ env }}}}", a.namespace, a.name, a.context),
            ));
        }
    }
    addresses
}

/// The API server's limit on an object's annotations, keys and values.
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;
/// Room for cfgsync's own annotations (fingerprint, revision).
const OWN_ANNOTATION_BYTES: usize = 256;

/// A Kubernetes target's settings, as the builder has them.
pub struct TargetSpec<'a> {
    pub output: &'a str,
    pub object: ObjectKind,
    pub addresses: &'a BTreeMap<String, ObjectAddress>,
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    pub secret_type: Option<&'a str>,
    pub entries: &'a [Entry],
}

/// Every problem, at an entry's location or (None) the target's.
pub fn problems(t: &TargetSpec<'_>) -> Problems {
    let mut out = Problems::new();
    let output = t.output;
    let mut target = |message: String| out.push((None, message));
    if let Err(why) = label_value(output) {
        target(format!("output name {output:?} cannot be a Kubernetes label value (cfgsync.io/output): {why}"));
    }
    for (env, a) in t.addresses {
        if let Err(why) = label_value(env) {
            target(format!(
                "output {output:?}: env {env:?} cannot be a Kubernetes label value (cfgsync.io/env): {why}"
            ));
        }
        if let Err(why) = dns_label(&a.namespace) {
            target(format!(
                "output {output:?}: namespace {:?} (env {env:?}) is not a valid namespace: {why}",
                a.namespace
            ));
        }
        if let Err(why) = dns_subdomain(&a.name) {
            target(format!(
                "output {output:?}: name {:?} (env {env:?}) is not a valid {} name: {why}",
                a.name, t.object
            ));
        }
    }
    for (key, value) in t.labels {
        if key.starts_with("cfgsync.io/") || key == LABEL_MANAGED_BY {
            target(format!("output {output:?}: label {key:?} is set by cfgsync itself"));
        } else if let Err(why) = qualified_name(key) {
            target(format!("output {output:?}: label key {key:?} is not valid: {why}"));
        } else if let Err(why) = label_value(value) {
            target(format!("output {output:?}: label {key} = {value:?} is not a valid label value: {why}"));
        }
    }
    let mut annotation_bytes = OWN_ANNOTATION_BYTES;
    for (key, value) in t.annotations {
        annotation_bytes += key.len() + value.len();
        if key.starts_with("cfgsync.io/") && key != ANNOTATION_ADOPT || key == LABEL_MANAGED_BY {
            target(format!("output {output:?}: annotation {key:?} is set by cfgsync itself"));
        } else if let Err(why) = qualified_name(&key.to_ascii_lowercase()) {
            target(format!("output {output:?}: annotation key {key:?} is not valid: {why}"));
        }
    }
    if annotation_bytes > MAX_ANNOTATION_BYTES {
        target(format!(
            "output {output:?}: annotations add up to {annotation_bytes} bytes with cfgsync's own, over the 262144 (256 KiB) the API server accepts"
        ));
    }
    if let Some(type_) = t.secret_type {
        if t.object == ObjectKind::ConfigMap {
            target(format!("output {output:?}: `type` applies to kubernetes-secret targets only"));
        } else if let Some(why) = type_problem(type_, t.entries, t.annotations) {
            target(format!("output {output:?}: type {type_} needs {why}"));
        }
    }
    for e in t.entries {
        if let Err(why) = config_key(&e.name) {
            out.push((
                Some(e.location.clone()),
                format!("output {output:?}: entry name {:?} is not a valid {} key: {why}", e.name, t.object),
            ));
        }
    }
    out
}

/// What a built-in Secret type lacks (`ValidateSecret`), if anything.
fn type_problem(type_: &str, entries: &[Entry], annotations: &BTreeMap<String, String>) -> Option<String> {
    let has = |k: &str| entries.iter().any(|e| e.name == k);
    let need_all = |keys: &[&str]| {
        let missing: Vec<&str> = keys.iter().copied().filter(|k| !has(k)).collect();
        (!missing.is_empty()).then(|| format!("entries {}", keys.join(" and ")))
    };
    match type_ {
        "kubernetes.io/tls" => need_all(&["tls.crt", "tls.key"]),
        "kubernetes.io/dockerconfigjson" => need_all(&[".dockerconfigjson"]),
        "kubernetes.io/dockercfg" => need_all(&[".dockercfg"]),
        "kubernetes.io/ssh-auth" => need_all(&["ssh-privatekey"]),
        "kubernetes.io/basic-auth" => {
            (!has("username") && !has("password")).then(|| "an entry username or password".to_owned())
        }
        "kubernetes.io/service-account-token" => annotations
            .get("kubernetes.io/service-account.name")
            .is_none_or(String::is_empty)
            .then(|| "the annotation kubernetes.io/service-account.name".to_owned()),
        _ => None,
    }
}

fn alnum_ends(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphanumeric()) && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `IsValidLabelValue`: empty, or at most 63 of `[A-Za-z0-9_.-]` with
/// alphanumeric ends.
pub fn label_value(v: &str) -> Result<(), &'static str> {
    if v.len() > 63 {
        return Err("at most 63 characters");
    }
    if !v.is_empty()
        && (!alnum_ends(v) || !v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err("use letters, digits, '-', '_' and '.', starting and ending with a letter or digit");
    }
    Ok(())
}

/// `IsDNS1123Label`.
fn dns_label(v: &str) -> Result<(), &'static str> {
    if v.len() > 63 {
        return Err("at most 63 characters");
    }
    if v.is_empty() || !alnum_ends(v) || !v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err("use lowercase letters, digits and '-', starting and ending with a letter or digit");
    }
    Ok(())
}

/// `IsDNS1123Subdomain`: dot-separated DNS labels (no label length limit
/// of its own), at most 253 in all.
fn dns_subdomain(v: &str) -> Result<(), &'static str> {
    if v.len() > 253 {
        return Err("at most 253 characters");
    }
    let part_ok = |p: &str| {
        !p.is_empty() && alnum_ends(p) && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if !v.split('.').all(part_ok) {
        return Err(
            "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, with something between two dots",
        );
    }
    Ok(())
}

/// `IsQualifiedName`: `[prefix/]name`, the prefix a DNS subdomain, the
/// name at most 63 of `[A-Za-z0-9_.-]` with alphanumeric ends.
fn qualified_name(v: &str) -> Result<(), &'static str> {
    let (prefix, name) = match v.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, v),
    };
    if let Some(p) = prefix {
        dns_subdomain(p).map_err(|_| "the prefix before '/' must be a DNS subdomain, e.g. example.com")?;
    }
    if name.is_empty() || name.len() > 63 {
        return Err("the name must have 1 to 63 characters");
    }
    if !alnum_ends(name) || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err("use letters, digits, '-', '_' and '.', starting and ending with a letter or digit");
    }
    Ok(())
}

/// `IsConfigMapKey`.
fn config_key(v: &str) -> Result<(), &'static str> {
    if v.is_empty() || v.len() > 253 {
        return Err("it must have 1 to 253 characters");
    }
    if !v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err("use letters, digits, '-', '_' and '.'");
    }
    if v == "." || v == ".." || v.starts_with("..") {
        return Err("it must not be '.' or '..', nor start with '..'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_api_server() {
        assert!(label_value("prod").is_ok() && label_value("").is_ok() && label_value(&"a".repeat(63)).is_ok());
        for bad in ["-prod", "prod.", &"a".repeat(64), "a b", "é"] {
            assert!(label_value(bad).is_err(), "{bad:?}");
        }
        assert!(dns_subdomain("a.b-c.d").is_ok());
        for bad in ["a..b", ".a", "a.", "A", "-a", "a_b", &"a".repeat(254)] {
            assert!(dns_subdomain(bad).is_err(), "{bad:?}");
        }
        assert!(dns_label("api").is_ok() && dns_label("a.b").is_err());
        assert!(qualified_name("app.kubernetes.io/name").is_ok() && qualified_name("team").is_ok());
        for bad in ["/x", "a/", "bad key", "a..b/x", "x/y/z"] {
            assert!(qualified_name(bad).is_err(), "{bad:?}");
        }
        assert!(config_key("tls.crt").is_ok() && config_key(".dockerconfigjson").is_ok());
        for bad in [".", "..", "..x", "a/b", ""] {
            assert!(config_key(bad).is_err(), "{bad:?}");
        }
    }
}
