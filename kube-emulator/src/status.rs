//! `Status` error bodies shaped exactly like kube-apiserver's
//! (`k8s.io/apimachinery/pkg/api/errors`): `kind: Status`, `apiVersion: v1`,
//! `metadata: {}`, `status: Failure`, `message`, `reason`, `details`, `code`.
//!
//! Messages are copied from the real server so that a client matching on
//! them (or a human reading kubectl's output) sees what a cluster would say.

use serde_json::{Map, Value, json};

use crate::kind::Kind;

/// One failed field check, formatted like `field.Error` in Go.
#[derive(Clone, Debug)]
pub(crate) struct FieldError {
    pub reason: FieldReason,
    pub field: String,
    /// The offending value, already quoted the way Go's `%#v` prints a string.
    pub value: Option<String>,
    pub detail: String,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum FieldReason {
    Invalid,
    Required,
    TooLong,
    Forbidden,
}

impl FieldReason {
    fn cause(self) -> &'static str {
        match self {
            FieldReason::Invalid => "FieldValueInvalid",
            FieldReason::Required => "FieldValueRequired",
            FieldReason::TooLong => "FieldValueTooLong",
            FieldReason::Forbidden => "FieldValueForbidden",
        }
    }

    fn text(self) -> &'static str {
        match self {
            FieldReason::Invalid => "Invalid value",
            FieldReason::Required => "Required value",
            FieldReason::TooLong => "Too long",
            FieldReason::Forbidden => "Forbidden",
        }
    }
}

impl FieldError {
    pub fn invalid(field: impl Into<String>, value: &str, detail: impl Into<String>) -> FieldError {
        FieldError {
            reason: FieldReason::Invalid,
            field: field.into(),
            value: Some(go_quote(value)),
            detail: detail.into(),
        }
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError { reason: FieldReason::Required, field: field.into(), value: None, detail: detail.into() }
    }

    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> FieldError {
        FieldError {
            reason: FieldReason::TooLong,
            field: field.into(),
            value: None,
            detail: format!("may not be more than {max_bytes} bytes"),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError { reason: FieldReason::Forbidden, field: field.into(), value: None, detail: detail.into() }
    }

    /// `ErrorBody()` in Go: the message without the field path.
    fn body(&self) -> String {
        let mut s = self.reason.text().to_string();
        if let (FieldReason::Invalid, Some(value)) = (self.reason, &self.value) {
            s = format!("{s}: {value}");
        }
        if !self.detail.is_empty() {
            s = format!("{s}: {}", self.detail);
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Go's `%q` for a string (close enough: escapes quotes, backslashes and control characters).
pub(crate) fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// An API error: HTTP status code plus the `Status` body.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Option<Value>) -> ApiError {
        ApiError { code, reason, message, details }
    }

    fn name_details(kind: Kind, name: &str) -> Value {
        let mut d = Map::new();
        d.insert("name".into(), name.into());
        if !kind.group().is_empty() {
            d.insert("group".into(), kind.group().into());
        }
        d.insert("kind".into(), kind.plural().into());
        Value::Object(d)
    }

    /// 404 `secrets "x" not found`.
    pub fn not_found(kind: Kind, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} {} not found", kind.qualified_resource(), go_quote(name)),
            Some(ApiError::name_details(kind, name)),
        )
    }

    /// 409 `secrets "x" already exists`.
    pub fn already_exists(kind: Kind, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} {} already exists", kind.qualified_resource(), go_quote(name)),
            Some(ApiError::name_details(kind, name)),
        )
    }

    /// 409 `object is being deleted: secrets "x" already exists`: a create
    /// of a name whose object is still held by its finalizers.
    pub fn already_exists_deleting(kind: Kind, name: &str) -> ApiError {
        let mut e = ApiError::already_exists(kind, name);
        e.message = format!("object is being deleted: {}", e.message);
        e
    }

    /// 403 for a create in a namespace being deleted, with the
    /// `NamespaceTerminating` cause (the `NamespaceLifecycle` admission plugin).
    pub fn namespace_terminating(kind: Kind, name: String, namespace: &str) -> ApiError {
        let mut details = match ApiError::name_details(kind, &name) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        details.insert(
            "causes".into(),
            json!([{"reason": "NamespaceTerminating", "message": format!("namespace {namespace} is being terminated"), "field": "metadata.namespace"}]),
        );
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{} {} is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                kind.qualified_resource(),
                go_quote(&name)
            ),
            Some(Value::Object(details)),
        )
    }

    /// 409 on a stale `metadata.resourceVersion`.
    pub fn conflict_modified(kind: Kind, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {}: the object has been modified; please apply your changes to the latest version and try again",
                kind.qualified_resource(),
                go_quote(name)
            ),
            Some(ApiError::name_details(kind, name)),
        )
    }

    /// 409 on a failed delete/update precondition.
    pub fn conflict_precondition(kind: Kind, name: &str, detail: String) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} {}: {detail}", kind.qualified_resource(), go_quote(name)),
            Some(ApiError::name_details(kind, name)),
        )
    }

    /// 409 from server-side apply: `Apply failed with N conflict(s): ...`.
    pub fn apply_conflict(message: String, causes: Vec<Value>) -> ApiError {
        ApiError::new(409, "Conflict", message, Some(json!({ "causes": causes })))
    }

    /// 422 `Secret "x" is invalid: ...`, for `kind` or for an options kind such as `PatchOptions.meta.k8s.io`.
    pub fn invalid(qualified_kind: &str, kind_name: &str, group: &str, name: &str, errors: &[FieldError]) -> ApiError {
        let joined = match errors {
            [one] => one.to_string(),
            many => format!("[{}]", many.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({ "reason": e.reason.cause(), "message": e.body(), "field": e.field }))
            .collect();
        let mut d = Map::new();
        d.insert("name".into(), name.into());
        if !group.is_empty() {
            d.insert("group".into(), group.into());
        }
        d.insert("kind".into(), kind_name.into());
        d.insert("causes".into(), causes.into());
        ApiError::new(
            422,
            "Invalid",
            format!("{qualified_kind} {} is invalid: {joined}", go_quote(name)),
            Some(Value::Object(d)),
        )
    }

    /// 422 for an object of `kind`.
    pub fn invalid_object(kind: Kind, name: &str, errors: &[FieldError]) -> ApiError {
        ApiError::invalid(&kind.qualified_kind(), kind.kind(), kind.group(), name, errors)
    }

    /// 400 with a free message.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message.into(), None)
    }

    /// 403, e.g. deleting `default`.
    pub fn forbidden(kind: Kind, name: &str, detail: &str) -> ApiError {
        ApiError::new(
            403,
            "Forbidden",
            format!("{} {} is forbidden: {detail}", kind.qualified_resource(), go_quote(name)),
            Some(ApiError::name_details(kind, name)),
        )
    }

    /// 403 from RBAC: `secrets is forbidden: User "u" cannot list resource
    /// "secrets" in API group "" in the namespace "team-b"` (with the name
    /// for a request on one object; `at the cluster scope` without a namespace).
    pub fn rbac_forbidden(kind: Kind, verb: &str, user: &str, namespace: Option<&str>, name: Option<&str>) -> ApiError {
        let subject = match name {
            Some(n) => format!("{} {}", kind.qualified_resource(), go_quote(n)),
            None => kind.qualified_resource(),
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace {}", go_quote(ns)),
            None => "at the cluster scope".to_string(),
        };
        let mut d = Map::new();
        if let Some(n) = name {
            d.insert("name".into(), n.into());
        }
        if !kind.group().is_empty() {
            d.insert("group".into(), kind.group().into());
        }
        d.insert("kind".into(), kind.plural().into());
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{subject} is forbidden: User {} cannot {verb} resource {} in API group {} {scope}",
                go_quote(user),
                go_quote(kind.plural()),
                go_quote(kind.group())
            ),
            Some(Value::Object(d)),
        )
    }

    /// 401 for a token the server does not accept.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized".into(), None)
    }

    /// 410 for a `continue` token older than the compacted history.
    pub fn continue_expired() -> ApiError {
        ApiError::new(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.".into(),
            None,
        )
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            None,
        )
    }

    /// 413: the request body is larger than the apiserver's 3 MiB limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"), None)
    }

    /// 415 for a PATCH content type the server does not know.
    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
            None,
        )
    }

    /// 429 from the apiserver's max-in-flight filter, used by fault
    /// injection (the `Retry-After` header goes beside it).
    pub fn too_many_requests(retry_after_secs: u64) -> ApiError {
        ApiError::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.".into(),
            Some(json!({"retryAfterSeconds": retry_after_secs})),
        )
    }

    /// 500, used by fault injection.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message.into(), None)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut status = Map::new();
        status.insert("kind".into(), "Status".into());
        status.insert("apiVersion".into(), "v1".into());
        status.insert("metadata".into(), json!({}));
        status.insert("status".into(), "Failure".into());
        status.insert("message".into(), self.message.clone().into());
        status.insert("reason".into(), self.reason.into());
        if let Some(details) = &self.details {
            status.insert("details".into(), details.clone());
        }
        status.insert("code".into(), self.code.into());
        Value::Object(status)
    }
}
