//! Object validation with kube-apiserver's rules and messages
//! (`k8s.io/apimachinery/pkg/util/validation`, `pkg/apis/core/validation`).
//!
//! Checked: object names (DNS-1123 subdomain; DNS-1123 label for
//! namespaces), label keys and values, annotation keys and their 256 KiB
//! total, Secret/ConfigMap keys, the 1 MiB data limit, `immutable`, a Secret's
//! `type` never changing and the keys each built-in Secret type requires
//! (`ValidateSecret`: `kubernetes.io/tls` needs `tls.crt` and `tls.key`,
//! `kubernetes.io/dockerconfigjson` a `.dockerconfigjson` holding a JSON
//! object, `kubernetes.io/dockercfg` a `.dockercfg`, `kubernetes.io/basic-auth`
//! `username` or `password`, `kubernetes.io/ssh-auth` a non-empty
//! `ssh-privatekey`, `kubernetes.io/service-account-token` the annotation
//! `kubernetes.io/service-account.name`), no finalizer added to an object
//! being deleted, and a Deployment's selector, template labels and
//! containers. Not checked: everything else the real server validates (pod
//! spec details, resource quantities, ...).
//!
//! The 1 MiB limit is the real server's, and like it counts the values only
//! (`totalSize += len(value)` in `ValidateSecret` and `ValidateConfigMap`;
//! keys are not counted, and a Secret's values are counted decoded): a
//! Secret whose values exceed 1,048,576 bytes is 422 Invalid with
//! `data: Too long: may not be more than 1048576 bytes`; a ConfigMap says
//! `[]: Too long: ...`. A request body over 3 MiB is refused earlier with 413
//! RequestEntityTooLarge (see [`crate::server`]).

use base64::Engine;
use serde_json::Value;

use crate::kind::Kind;
use crate::status::{ApiError, FieldError};

/// The apiserver's limit on a Secret's or ConfigMap's data.
pub(crate) const MAX_DATA_BYTES: usize = 1024 * 1024;
/// The apiserver's limit on the total size of an object's annotations.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The messages for a DNS-1123 subdomain (empty when valid).
pub(crate) fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if !s.split('.').all(is_dns1123_label) {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    errs
}

fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !is_dns1123_label(s) {
        errs.push(DNS1123_LABEL_MSG.to_string());
    }
    errs
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

pub(crate) fn qualified_name_errors(s: &str) -> Vec<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let mut errs = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(dns1123_subdomain_errors(prefix).into_iter().map(|e| format!("prefix part {e}")));
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            errs.push("name part must be no more than 63 characters".to_string());
        }
        if !is_qualified_name_part(name) {
            errs.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    errs
}

pub(crate) fn label_value_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !s.is_empty() && !is_qualified_name_part(s) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

fn config_key_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        errs.push(CONFIG_KEY_MSG.to_string());
    }
    if s == "." {
        errs.push("must not be '.'".to_string());
    } else if s == ".." {
        errs.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

fn push_all(out: &mut Vec<FieldError>, field: &str, value: &str, messages: Vec<String>) {
    out.extend(messages.into_iter().map(|m| FieldError::invalid(field, value, m)));
}

/// Decodes a Secret's `data` like the apiserver's JSON decoder and returns
/// the decoded values' total size; the error is the 400 BadRequest it
/// answers for a value that is not base64.
pub(crate) fn decode_secret_data(obj: &Value) -> Result<usize, ApiError> {
    let mut total = 0;
    if let Some(data) = obj.get("data").and_then(Value::as_object) {
        for v in data.values() {
            let s = v.as_str().unwrap_or_default();
            let cleaned: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            match base64::engine::general_purpose::STANDARD.decode(cleaned.as_bytes()) {
                Ok(bytes) => total += bytes.len(),
                Err(e) => {
                    let at = match e {
                        base64::DecodeError::InvalidByte(i, _) | base64::DecodeError::InvalidLastSymbol(i, _) => i,
                        _ => cleaned.len() - cleaned.len() % 4,
                    };
                    return Err(ApiError::bad_request(format!(
                        "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte {at}"
                    )));
                }
            }
        }
    }
    Ok(total)
}

/// Validates an object about to be stored; `old` is the live object on update.
pub(crate) fn validate(kind: Kind, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else if kind == Kind::Namespace {
        push_all(&mut errs, "metadata.name", name, dns1123_label_errors(name));
    } else {
        push_all(&mut errs, "metadata.name", name, dns1123_subdomain_errors(name));
    }
    validate_meta(obj.get("metadata"), "metadata", &mut errs);
    if let Some(old) = old.filter(|o| crate::api::is_deleting(o)) {
        let list = |v: &Value| -> Vec<String> {
            v.pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let before = list(old);
        let added: Vec<String> = list(obj).into_iter().filter(|f| !before.contains(f)).collect();
        if !added.is_empty() {
            let shown: Vec<String> = added.iter().map(|f| crate::status::go_quote(f)).collect();
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    shown.join(", ")
                ),
            ));
        }
    }

    match kind {
        Kind::Secret => {
            let size = decode_secret_data(obj)?;
            for (k, _) in obj.get("data").and_then(Value::as_object).into_iter().flatten() {
                push_all(&mut errs, &format!("data[{k}]"), k, config_key_errors(k));
            }
            if size > MAX_DATA_BYTES {
                errs.push(FieldError::too_long("data", MAX_DATA_BYTES));
            }
            if let Some(old) = old
                && old.get("type") != obj.get("type")
            {
                let t = obj.get("type").and_then(Value::as_str).unwrap_or_default();
                errs.push(FieldError::invalid("type", t, "field is immutable"));
            }
            validate_secret_type(obj, &mut errs)?;
        }
        Kind::ConfigMap => {
            let mut size = 0;
            let data = obj.get("data").and_then(Value::as_object);
            let binary = obj.get("binaryData").and_then(Value::as_object);
            for (k, v) in data.into_iter().flatten() {
                push_all(&mut errs, &format!("data[{k}]"), k, config_key_errors(k));
                if binary.is_some_and(|b| b.contains_key(k)) {
                    errs.push(FieldError::invalid(format!("data[{k}]"), k, "duplicate of key present in binaryData"));
                }
                size += v.as_str().map_or(0, str::len);
            }
            for (k, v) in binary.into_iter().flatten() {
                push_all(&mut errs, &format!("binaryData[{k}]"), k, config_key_errors(k));
                let decoded =
                    base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).map_err(|_| {
                        ApiError::bad_request(
                            "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: illegal base64 data",
                        )
                    })?;
                size += decoded.len();
            }
            if size > MAX_DATA_BYTES {
                errs.push(FieldError::too_long("[]", MAX_DATA_BYTES));
            }
        }
        Kind::Deployment => validate_deployment(obj, old, &mut errs),
        Kind::Namespace => {}
    }
    if let (Some(old), Kind::Secret | Kind::ConfigMap) = (old, kind)
        && old.get("immutable") == Some(&Value::Bool(true))
    {
        const MSG: &str = "field is immutable when `immutable` is set";
        for field in ["data", "binaryData", "stringData"] {
            if old.get(field) != obj.get(field) {
                errs.push(FieldError::forbidden(field, MSG));
            }
        }
        if obj.get("immutable") != Some(&Value::Bool(true)) {
            errs.push(FieldError::forbidden("immutable", MSG));
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(ApiError::invalid_object(kind, name, &errs)) }
}

/// The keys a built-in Secret type requires (`ValidateSecret`'s `switch
/// secret.Type`), with its field paths, including the literal `data[%s]`
/// that the real server prints for basic-auth and ssh-auth.
fn validate_secret_type(obj: &Value, errs: &mut Vec<FieldError>) -> Result<(), ApiError> {
    let data = obj.get("data").and_then(Value::as_object);
    let decoded = |key: &str| -> Result<Option<Vec<u8>>, ApiError> {
        match data.and_then(|d| d.get(key)).and_then(Value::as_str) {
            None => Ok(None),
            Some(v) => base64::engine::general_purpose::STANDARD
                .decode(v.chars().filter(|c| *c != '\r' && *c != '\n').collect::<String>())
                .map(Some)
                .map_err(|_| {
                    ApiError::bad_request("Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data")
                }),
        }
    };
    let has = |key: &str| data.is_some_and(|d| d.contains_key(key));
    let json_object = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).map(|v| v.is_object());
    match obj.get("type").and_then(Value::as_str).unwrap_or_default() {
        "kubernetes.io/service-account-token" => {
            let name = obj.pointer("/metadata/annotations/kubernetes.io~1service-account.name").and_then(Value::as_str);
            if name.is_none_or(str::is_empty) {
                errs.push(FieldError::required("metadata.annotations[kubernetes.io/service-account.name]", ""));
            }
        }
        t @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let key = if t == "kubernetes.io/dockercfg" { ".dockercfg" } else { ".dockerconfigjson" };
            match decoded(key)? {
                None => errs.push(FieldError::required(format!("data[{key}]"), "")),
                Some(bytes) => match json_object(&bytes) {
                    Ok(true) => {}
                    Ok(false) => errs.push(FieldError::invalid(
                        format!("data[{key}]"),
                        "<secret contents redacted>",
                        "json: cannot unmarshal into Go value of type map[string]interface {}",
                    )),
                    Err(e) => errs.push(FieldError::invalid(
                        format!("data[{key}]"),
                        "<secret contents redacted>",
                        e.to_string(),
                    )),
                },
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(FieldError::required("data[%s][username]", ""));
            errs.push(FieldError::required("data[%s][password]", ""));
        }
        "kubernetes.io/ssh-auth" if decoded("ssh-privatekey")?.is_none_or(|v| v.is_empty()) => {
            errs.push(FieldError::required("data[%s][ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    errs.push(FieldError::required(format!("data[{key}]"), ""));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn validate_meta(meta: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(meta) = meta else { return };
    let labels_path = format!("{path}.labels");
    for (k, v) in meta.get("labels").and_then(Value::as_object).into_iter().flatten() {
        push_all(errs, &labels_path, k, qualified_name_errors(k));
        match v.as_str() {
            Some(s) => push_all(errs, &labels_path, s, label_value_errors(s)),
            None => errs.push(FieldError::invalid(&labels_path, &v.to_string(), "must be a string")),
        }
    }
    let annotations_path = format!("{path}.annotations");
    let mut total = 0;
    for (k, v) in meta.get("annotations").and_then(Value::as_object).into_iter().flatten() {
        push_all(errs, &annotations_path, k, qualified_name_errors(&k.to_ascii_lowercase()));
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > MAX_ANNOTATIONS_BYTES {
        errs.push(FieldError::too_long(annotations_path, MAX_ANNOTATIONS_BYTES));
    }
}

fn validate_deployment(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let selector = obj.pointer("/spec/selector/matchLabels").and_then(Value::as_object);
    match selector {
        None if obj.pointer("/spec/selector/matchExpressions").is_none() => {
            errs.push(FieldError::required("spec.selector", ""));
        }
        None => {}
        Some(sel) => {
            let template_labels = obj.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
            let matches = sel.iter().all(|(k, v)| template_labels.and_then(|t| t.get(k)) == Some(v));
            if !matches {
                let shown = serde_json::to_string(&template_labels).unwrap_or_default();
                errs.push(FieldError {
                    reason: crate::status::FieldReason::Invalid,
                    field: "spec.template.metadata.labels".into(),
                    value: Some(format!("map[string]string{shown}")),
                    detail: "`selector` does not match template `labels`".into(),
                });
            }
        }
    }
    if let Some(old) = old
        && old.pointer("/spec/selector") != obj.pointer("/spec/selector")
    {
        errs.push(FieldError::invalid(
            "spec.selector",
            &obj.pointer("/spec/selector").map(Value::to_string).unwrap_or_default(),
            "field is immutable",
        ));
    }
    validate_meta(obj.pointer("/spec/template/metadata"), "spec.template.metadata", errs);
    match obj.pointer("/spec/template/spec/containers").and_then(Value::as_array) {
        Some(containers) if !containers.is_empty() => {
            for (i, c) in containers.iter().enumerate() {
                for field in ["name", "image"] {
                    if c.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                        errs.push(FieldError::required(format!("spec.template.spec.containers[{i}].{field}"), ""));
                    }
                }
            }
        }
        _ => errs.push(FieldError::required("spec.template.spec.containers", "")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_follow_kubernetes_rules() {
        assert!(dns1123_subdomain_errors("api.example-1").is_empty());
        assert!(!dns1123_subdomain_errors("Api").is_empty());
        assert!(!dns1123_subdomain_errors("-api").is_empty());
        assert!(qualified_name_errors("app.kubernetes.io/managed-by").is_empty());
        assert!(!qualified_name_errors("bad key").is_empty());
        assert!(label_value_errors("").is_empty());
        assert!(!label_value_errors(&"a".repeat(64)).is_empty());
        assert!(config_key_errors("KEY_name-1.x").is_empty());
        assert!(!config_key_errors("a/b").is_empty());
    }
}
