//! The three non-apply PATCH flavours kube-apiserver accepts:
//!
//! - `application/merge-patch+json` (RFC 7386): objects merge, `null` deletes,
//!   everything else (lists included) replaces;
//! - `application/strategic-merge-patch+json` (what `kubectl edit` and
//!   `kubectl patch` send by default): a merge patch where lists with a patch
//!   merge key (containers by `name`, ...) merge item by item, primitive
//!   lists with the merge strategy (`finalizers`) are unions, and the
//!   directives `$patch: replace|delete`, `$retainKeys`,
//!   `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>` work;
//! - `application/json-patch+json` (RFC 6902): add, remove, replace, move,
//!   copy, test.
//!
//! The merge keys come from the same hand-written schema as server-side apply
//! ([`crate::kind::node_type`]); for maps a strategic merge is a merge.

use serde_json::{Map, Value};

use crate::kind::{Kind, NodeType, node_type};

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(pm) => {
            let mut out = target.as_object().cloned().unwrap_or_default();
            for (k, pv) in pm {
                if pv.is_null() {
                    out.shift_remove(k);
                } else {
                    let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), pv);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Error of a strategic merge or JSON patch: the message for a 400/422.
#[derive(Debug)]
pub(crate) struct PatchError(pub String);

/// Strategic merge patch for an object of `kind`.
pub(crate) fn strategic_merge_patch(kind: Kind, target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let mut names = Vec::new();
    smp_object(kind, &mut names, target, patch)
}

fn smp_object<'a>(kind: Kind, names: &mut Vec<&'a str>, target: &Value, patch: &'a Value) -> Result<Value, PatchError> {
    let Some(pm) = patch.as_object() else {
        return Ok(patch.clone());
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = pm.clone();
            replaced.shift_remove("$patch");
            return Ok(Value::Object(strip_directives(replaced)));
        }
        Some("delete") => return Ok(Value::Null),
        Some(other) => return Err(PatchError(format!("unknown patch type: {other} in map"))),
        None => {}
    }
    let mut out = target.as_object().cloned().unwrap_or_default();
    let mut retain: Option<Vec<String>> = None;
    for (k, pv) in pm {
        if k == "$retainKeys" {
            retain = pv.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect());
            continue;
        }
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(remove)) = (out.get_mut(list), pv.as_array()) {
                items.retain(|i| !remove.contains(i));
            }
            continue;
        }
        if k.starts_with("$setElementOrder/") || k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            out.shift_remove(k);
            continue;
        }
        names.push(k);
        let current = out.get(k).cloned().unwrap_or(Value::Null);
        let ty = node_type(kind, names, pv);
        let merged = match (ty, pv) {
            (NodeType::Struct | NodeType::Map, Value::Object(_)) => smp_object(kind, names, &current, pv)?,
            (NodeType::KeyedList(keys), Value::Array(items)) => smp_keyed_list(kind, names, &current, items, keys[0])?,
            (NodeType::SetList, Value::Array(items)) => {
                let mut union = current.as_array().cloned().unwrap_or_default();
                for i in items {
                    if !union.contains(i) {
                        union.push(i.clone());
                    }
                }
                Value::Array(union)
            }
            _ => pv.clone(),
        };
        names.pop();
        if merged.is_null() {
            out.shift_remove(k);
        } else {
            out.insert(k.clone(), merged);
        }
    }
    // $setElementOrder only orders; apply it after the merge.
    for (k, pv) in pm {
        let Some(list) = k.strip_prefix("$setElementOrder/") else { continue };
        if let (Some(Value::Array(items)), Some(order)) = (out.get_mut(list), pv.as_array()) {
            items.sort_by_key(|item| {
                order
                    .iter()
                    .position(|o| {
                        o == item || o.as_object().is_some_and(|om| om.iter().all(|(k, v)| item.get(k) == Some(v)))
                    })
                    .unwrap_or(usize::MAX)
            });
        }
    }
    if let Some(keep) = retain {
        out.retain(|k, _| keep.contains(k));
    }
    Ok(Value::Object(out))
}

fn smp_keyed_list<'a>(
    kind: Kind,
    names: &mut Vec<&'a str>,
    current: &Value,
    items: &'a [Value],
    key: &str,
) -> Result<Value, PatchError> {
    if items.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        let kept: Vec<Value> = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(|i| i.as_object().cloned().map(strip_directives).map(Value::Object).unwrap_or(i.clone()))
            .collect();
        return Ok(Value::Array(kept));
    }
    let mut out = current.as_array().cloned().unwrap_or_default();
    for item in items {
        let Some(id) = item.get(key) else {
            return Err(PatchError(format!("map: {item} does not contain declared merge key: {key}")));
        };
        let pos = out.iter().position(|o| o.get(key) == Some(id));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(pos) = pos {
                out.remove(pos);
            }
            continue;
        }
        match pos {
            Some(pos) => out[pos] = smp_object(kind, names, &out[pos], item)?,
            None => out.push(smp_object(kind, names, &Value::Null, item)?),
        }
    }
    Ok(Value::Array(out))
}

fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    m
}

/// RFC 6902 JSON patch.
pub(crate) fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops = patch.as_array().ok_or_else(|| PatchError("a JSON patch must be a list of operations".into()))?;
    let mut doc = target.clone();
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError(format!("missing path in operation {op}")))?;
        let value = || op.get("value").cloned().ok_or_else(|| PatchError(format!("missing value in operation {op}")));
        let from = || {
            op.get("from").and_then(Value::as_str).ok_or_else(|| PatchError(format!("missing from in operation {op}")))
        };
        match name {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                remove(&mut doc, path)?;
                add(&mut doc, path, value()?)?;
            }
            "move" => {
                let v = remove(&mut doc, from()?)?;
                add(&mut doc, path, v)?;
            }
            "copy" => {
                let v = doc.pointer(from()?).cloned().ok_or_else(|| {
                    PatchError(format!("copy from {} which does not exist", from().unwrap_or_default()))
                })?;
                add(&mut doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(PatchError(format!("testing value {path} failed")));
                }
            }
            other => return Err(PatchError(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(doc)
}

fn split_pointer(path: &str) -> Result<(String, String), PatchError> {
    let (parent, last) = path.rsplit_once('/').ok_or_else(|| PatchError(format!("invalid JSON pointer {path:?}")))?;
    Ok((parent.to_string(), last.replace("~1", "/").replace("~0", "~")))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    let missing = || PatchError(format!("add operation does not apply: doc is missing path: {path:?}"));
    match doc.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            let idx = if last == "-" { a.len() } else { last.parse().map_err(|_| missing())? };
            if idx > a.len() {
                return Err(missing());
            }
            a.insert(idx, value);
        }
        _ => return Err(missing()),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let (parent, last) = split_pointer(path)?;
    let missing = || PatchError(format!("remove operation does not apply: doc is missing path: {path:?}"));
    match doc.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(m) => m.shift_remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let idx: usize = last.parse().map_err(|_| missing())?;
            if idx >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(idx))
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        let patch = json!({"a": "z", "c": {"f": null}, "l": [3]});
        assert_eq!(merge_patch(&target, &patch), json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_honours_delete() {
        let target = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "a"}],
            "containers": [{"name": "a", "image": "2"}, {"name": "b", "$patch": "delete"}]}}}});
        let out = strategic_merge_patch(Kind::Deployment, &target, &patch).unwrap();
        assert_eq!(out, json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "2"}]}}}}));
    }

    #[test]
    fn json_patch_adds_replaces_and_tests() {
        let target = json!({"data": {"a": "1"}});
        let patch = json!([
            {"op": "test", "path": "/data/a", "value": "1"},
            {"op": "replace", "path": "/data/a", "value": "2"},
            {"op": "add", "path": "/data/b~1c", "value": "3"}
        ]);
        assert_eq!(json_patch(&target, &patch).unwrap(), json!({"data": {"a": "2", "b/c": "3"}}));
        assert!(json_patch(&target, &json!([{"op": "remove", "path": "/data/zz"}])).is_err());
    }
}
