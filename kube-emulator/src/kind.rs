//! The four resource kinds the emulator serves, their names in every form the
//! API uses, and the small part of their OpenAPI schema that server-side apply
//! needs (which objects are structs, which are maps, which lists are keyed).
//!
//! Decision: the schema is written out by hand for the fields cfgsync and
//! kubectl touch, instead of loading the real OpenAPI document. A field the
//! table does not know is treated like structured-merge-diff treats a
//! "deduced" type: objects are granular structs, arrays are atomic.

use std::fmt;
use std::str::FromStr;

/// A resource kind served by the emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `namespaces`, core v1, cluster-scoped.
    Namespace,
    /// `secrets`, core v1, namespaced.
    Secret,
    /// `configmaps`, core v1, namespaced.
    ConfigMap,
    /// `deployments`, apps/v1, namespaced.
    Deployment,
}

impl Kind {
    /// Every kind, in the order discovery lists them.
    pub const ALL: [Kind; 4] = [Kind::ConfigMap, Kind::Namespace, Kind::Secret, Kind::Deployment];

    /// The resource name used in URLs, e.g. `secrets`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
            Kind::Deployment => "deployments",
        }
    }

    /// The singular resource name, e.g. `secret`.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Secret => "secret",
            Kind::ConfigMap => "configmap",
            Kind::Deployment => "deployment",
        }
    }

    /// The `kind` field, e.g. `Secret`.
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::Deployment => "Deployment",
        }
    }

    /// The API group (`""` for core).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Deployment => "apps",
            _ => "",
        }
    }

    /// The `apiVersion` field, e.g. `v1` or `apps/v1`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment => "apps/v1",
            _ => "v1",
        }
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// kubectl's short names.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace => &["ns"],
            Kind::Secret => &[],
            Kind::ConfigMap => &["cm"],
            Kind::Deployment => &["deploy"],
        }
    }

    /// `secrets` or `deployments.apps`: how NotFound/AlreadyExists/Conflict name the resource.
    pub fn qualified_resource(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// `Secret` or `Deployment.apps`: how Invalid names the kind.
    pub fn qualified_kind(self) -> String {
        match self.group() {
            "" => self.kind().to_string(),
            group => format!("{}.{group}", self.kind()),
        }
    }

    /// The list kind, e.g. `SecretList`.
    pub fn list_kind(self) -> String {
        format!("{}List", self.kind())
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// Error for [`Kind::from_str`].
#[derive(Debug, thiserror::Error)]
#[error("unknown kind {0:?}: expected one of Namespace, Secret, ConfigMap, Deployment (or their plural/short names)")]
pub struct UnknownKind(String);

impl FromStr for Kind {
    type Err = UnknownKind;

    /// Accepts the kind (`Secret`), the plural (`secrets`), the singular or a short name (`cm`).
    fn from_str(s: &str) -> Result<Kind, UnknownKind> {
        Kind::ALL
            .into_iter()
            .find(|k| {
                k.kind().eq_ignore_ascii_case(s) || k.plural() == s || k.singular() == s || k.short_names().contains(&s)
            })
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

/// How structured-merge-diff treats a node of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NodeType {
    /// A Go struct: fields are owned one by one; the struct itself is only a
    /// member of a field set when an update creates it.
    Struct,
    /// A struct owned as a whole (`+structType=atomic`, e.g. a LabelSelector).
    AtomicStruct,
    /// A `map[string]T`: each entry is a member (e.g. `data`, `labels`).
    Map,
    /// A list owned as a whole.
    AtomicList,
    /// A list of objects keyed by these fields (e.g. containers by `name`).
    KeyedList(&'static [&'static str]),
    /// A list of unique scalars (e.g. `finalizers`).
    SetList,
    /// A string, number, bool or null.
    Scalar,
}

/// The type of the node at `path` (field names only; list items are skipped)
/// in an object of `kind`, whose value is `value`.
pub(crate) fn node_type(kind: Kind, path: &[&str], value: &serde_json::Value) -> NodeType {
    use NodeType::*;
    let fallback = || match value {
        serde_json::Value::Object(_) => Struct,
        serde_json::Value::Array(_) => AtomicList,
        _ => Scalar,
    };
    match path {
        [] | ["metadata"] | ["spec"] | ["status"] => Struct,
        ["metadata", rest @ ..] => meta_type(rest).unwrap_or_else(fallback),
        ["data"] | ["binaryData"] | ["stringData"] if kind != Kind::Deployment => Map,
        ["spec", rest @ ..] if kind == Kind::Deployment => deployment_spec_type(rest).unwrap_or_else(fallback),
        _ => fallback(),
    }
}

/// Whether the node exists even in an empty object of `kind`: a non-pointer
/// Go struct or a field without `omitempty`. An update never "adds" such a
/// node, so it never shows up as `.` in `managedFields`, exactly as with
/// kube-apiserver (compare `f:containers`, which has no `.`, with `f:env`).
pub(crate) fn always_present(kind: Kind, path: &[&str]) -> bool {
    matches!(path, [] | ["metadata"] | ["spec"] | ["status"])
        || (kind == Kind::Deployment
            && matches!(
                path,
                ["spec", "strategy" | "template" | "selector"]
                    | ["spec", "template", "metadata" | "spec"]
                    | ["spec", "template", "spec", "containers"]
            ))
}

fn meta_type(rest: &[&str]) -> Option<NodeType> {
    use NodeType::*;
    Some(match rest {
        ["labels"] | ["annotations"] => Map,
        ["finalizers"] => SetList,
        ["ownerReferences"] => KeyedList(&["uid"]),
        _ => return None,
    })
}

fn deployment_spec_type(rest: &[&str]) -> Option<NodeType> {
    use NodeType::*;
    Some(match rest {
        ["selector"] => AtomicStruct,
        ["template"] | ["strategy"] | ["template", "spec"] | ["template", "metadata"] => Struct,
        ["template", "metadata", meta @ ..] => return meta_type(meta),
        ["template", "spec", pod @ ..] => return pod_spec_type(pod),
        _ => return None,
    })
}

fn pod_spec_type(rest: &[&str]) -> Option<NodeType> {
    use NodeType::*;
    Some(match rest {
        ["containers"] | ["initContainers"] | ["volumes"] | ["imagePullSecrets"] => KeyedList(&["name"]),
        ["nodeSelector"] => Map,
        ["containers" | "initContainers", container @ ..] => match container {
            ["env"] => KeyedList(&["name"]),
            ["ports"] => KeyedList(&["containerPort", "protocol"]),
            ["volumeMounts"] => KeyedList(&["mountPath"]),
            ["resources", "limits" | "requests"] => Map,
            _ => return None,
        },
        _ => return None,
    })
}
