//! Field ownership: `metadata.managedFields`, and the server-side apply merge.
//!
//! This is a small re-implementation of what kube-apiserver does with
//! structured-merge-diff (SMD), for the schema in [`crate::kind`]:
//!
//! - a field set is a set of paths (`.data.password`,
//!   `.spec.template.spec.containers[name="api"].image`); it is stored as
//!   `fieldsV1` (`{"f:data":{"f:password":{}}}`, with `".":{}` when a node is
//!   itself a member and has children);
//! - **Apply** (`PATCH application/apply-patch+yaml`): the applier's set is
//!   exactly the fields of its applied configuration (SMD `ToFieldSet`:
//!   scalars, atomic values, map entries and list items); the configuration
//!   is merged into the live object; fields the same manager applied last
//!   time and dropped now are removed unless another *applier* owns them
//!   (SMD `prune`); a change to a field another manager owns is a conflict
//!   (409) unless `force`, which moves the field to the applier;
//! - **Update** (create, PUT, merge/strategic/JSON patch): the updater's set
//!   grows by what changed (added and modified leaves, and nodes the update
//!   created), and those fields leave every other manager (SMD `Compare` +
//!   `Updater.Update`); removed fields leave everyone.
//!
//! Paths the apiserver strips (`apiVersion`, `kind`, `metadata.name`,
//! `metadata.namespace`, `metadata.uid`, `metadata.resourceVersion`, ...,
//! and `status`, which the main resource ignores) are never owned.
//!
//! Differences from SMD, on purpose: no conversion between API versions (one
//! version per kind), a keyed list keeps the live order and appends new items,
//! and `null` in an applied configuration is dropped rather than owned.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::kind::{Kind, NodeType, always_present, node_type};
use crate::status::ApiError;

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PathElement {
    /// `f:name`
    Field(String),
    /// `k:{"name":"api"}`: a keyed list item; the canonical JSON of its keys.
    Key(String),
    /// `v:"x"`: a set member; its canonical JSON.
    Value(String),
    /// `i:3`
    Index(usize),
}

pub(crate) type Path = Vec<PathElement>;
pub(crate) type FieldSet = BTreeSet<Path>;

/// SMD's `Path.String()`: `.data.key`, `[name="api"]`, `[="x"]`, `[3]`.
pub(crate) fn path_string(path: &Path) -> String {
    let mut s = String::new();
    for pe in path {
        match pe {
            PathElement::Field(name) => {
                s.push('.');
                s.push_str(name);
            }
            PathElement::Key(json) => {
                let keys: Map<String, Value> = serde_json::from_str(json).unwrap_or_default();
                let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            PathElement::Value(json) => s.push_str(&format!("[={json}]")),
            PathElement::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn element_key(pe: &PathElement) -> String {
    match pe {
        PathElement::Field(name) => format!("f:{name}"),
        PathElement::Key(json) => format!("k:{json}"),
        PathElement::Value(json) => format!("v:{json}"),
        PathElement::Index(i) => format!("i:{i}"),
    }
}

fn parse_element(key: &str) -> Option<PathElement> {
    let (prefix, rest) = key.split_at_checked(2)?;
    Some(match prefix {
        "f:" => PathElement::Field(rest.to_string()),
        "k:" => PathElement::Key(rest.to_string()),
        "v:" => PathElement::Value(rest.to_string()),
        "i:" => PathElement::Index(rest.parse().ok()?),
        _ => return None,
    })
}

/// Encodes a set as `fieldsV1`.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<PathElement, Node>,
    }
    fn emit(node: &Node, include_self: bool) -> Value {
        let mut out = Map::new();
        if include_self && node.member && !node.children.is_empty() {
            out.insert(".".into(), Value::Object(Map::new()));
        }
        for (pe, child) in &node.children {
            out.insert(element_key(pe), emit(child, true));
        }
        Value::Object(out)
    }
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for pe in path {
            node = node.children.entry(pe.clone()).or_default();
        }
        node.member = true;
    }
    emit(&root, false)
}

/// Decodes `fieldsV1` into a set (unknown keys are ignored).
pub(crate) fn from_fields_v1(value: &Value) -> FieldSet {
    fn walk(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(map) = v.as_object() else { return };
        for (key, child) in map {
            if key == "." {
                out.insert(path.clone());
                continue;
            }
            let Some(pe) = parse_element(key) else { continue };
            path.push(pe);
            let has_children = child.as_object().is_some_and(|m| !m.is_empty());
            if !has_children {
                out.insert(path.clone());
            }
            walk(child, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// Canonical JSON (sorted object keys) for key and set elements.
fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sort(v)).unwrap_or_default()
}

/// The path element of a keyed list item (its key fields that are present).
fn key_element(item: &Value, keys: &[&str]) -> PathElement {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(*k) {
            m.insert((*k).to_string(), v.clone());
        }
    }
    PathElement::Key(canonical(&Value::Object(m)))
}

/// A walk position: the field-name path (for the schema) and the full path.
struct Cursor<'a> {
    kind: Kind,
    names: Vec<&'a str>,
    path: Path,
}

impl<'a> Cursor<'a> {
    fn new(kind: Kind) -> Cursor<'a> {
        Cursor { kind, names: Vec::new(), path: Vec::new() }
    }

    fn node_type(&self, value: &Value) -> NodeType {
        node_type(self.kind, &self.names, value)
    }

    fn always_present(&self) -> bool {
        always_present(self.kind, &self.names)
    }
}

// ---------------------------------------------------------------------------
// ToFieldSet (the applier's set)
// ---------------------------------------------------------------------------

/// The set of fields an applied configuration specifies (SMD `ToFieldSet`), stripped.
pub(crate) fn applied_set(kind: Kind, obj: &Value) -> FieldSet {
    fn walk<'a>(c: &mut Cursor<'a>, v: &'a Value, ty: NodeType, out: &mut FieldSet) {
        match (ty, v) {
            (NodeType::Struct, Value::Object(m)) => {
                for (k, child) in m {
                    c.names.push(k);
                    c.path.push(PathElement::Field(k.clone()));
                    let ty = c.node_type(child);
                    walk(c, child, ty, out);
                    c.path.pop();
                    c.names.pop();
                }
            }
            (NodeType::Map, Value::Object(m)) => {
                for (k, child) in m {
                    c.names.push(k);
                    c.path.push(PathElement::Field(k.clone()));
                    out.insert(c.path.clone());
                    if child.is_object() {
                        let ty = c.node_type(child);
                        walk(c, child, ty, out);
                    }
                    c.path.pop();
                    c.names.pop();
                }
            }
            (NodeType::KeyedList(keys), Value::Array(items)) => {
                for item in items {
                    c.path.push(key_element(item, keys));
                    out.insert(c.path.clone());
                    walk(c, item, NodeType::Struct, out);
                    c.path.pop();
                }
            }
            (NodeType::SetList, Value::Array(items)) => {
                for item in items {
                    c.path.push(PathElement::Value(canonical(item)));
                    out.insert(c.path.clone());
                    c.path.pop();
                }
            }
            _ => {
                out.insert(c.path.clone());
            }
        }
    }
    let mut out = FieldSet::new();
    walk(&mut Cursor::new(kind), obj, NodeType::Struct, &mut out);
    strip(kind, &mut out);
    out
}

/// Removes the paths kube-apiserver never tracks.
fn strip(kind: Kind, set: &mut FieldSet) {
    set.retain(|path| {
        let names: Vec<&str> = path
            .iter()
            .map(|pe| match pe {
                PathElement::Field(f) => f.as_str(),
                _ => "",
            })
            .collect();
        let never_owned = matches!(
            names.as_slice(),
            [] | ["apiVersion"]
                | ["kind"]
                | ["metadata"]
                | [
                    "metadata",
                    "name"
                        | "namespace"
                        | "creationTimestamp"
                        | "selfLink"
                        | "uid"
                        | "generation"
                        | "managedFields"
                        | "resourceVersion"
                        | "deletionTimestamp"
                        | "deletionGracePeriodSeconds",
                    ..
                ]
        );
        // the main resource of a kind with a status subresource ignores status
        let status = matches!(kind, Kind::Deployment | Kind::Namespace) && names.first() == Some(&"status");
        !never_owned && !status
    });
}

// ---------------------------------------------------------------------------
// Compare (what an update changed)
// ---------------------------------------------------------------------------

#[derive(Default, Debug)]
pub(crate) struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    fn changed(&self) -> FieldSet {
        self.added.union(&self.modified).cloned().collect()
    }
}

fn is_empty_container(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

/// SMD `Compare(live, new)` for objects of `kind` (managedFields excluded), stripped.
pub(crate) fn compare(kind: Kind, old: Option<&Value>, new: Option<&Value>) -> Comparison {
    fn leaf(c: &Cursor<'_>, l: Option<&Value>, r: Option<&Value>, out: &mut Comparison) {
        match (l, r) {
            (None, Some(_)) => {
                out.added.insert(c.path.clone());
            }
            (Some(_), None) => {
                out.removed.insert(c.path.clone());
            }
            (Some(a), Some(b)) if a != b => {
                out.modified.insert(c.path.clone());
            }
            _ => {}
        }
    }
    fn node<'a>(c: &mut Cursor<'a>, l: Option<&'a Value>, r: Option<&'a Value>, ty: NodeType, out: &mut Comparison) {
        let both_empty = is_empty_container(l) && is_empty_container(r);
        let l = l.filter(|v| !v.is_null());
        let r = r.filter(|v| !v.is_null());
        let is_item = matches!(c.path.last(), Some(PathElement::Key(_)));
        if both_empty && !is_item && c.always_present() {
            // exists (empty) in the Go zero value: absent and empty are the same
            return;
        }
        match ty {
            NodeType::Struct | NodeType::Map if !both_empty => {
                let (lm, rm) = (l.and_then(Value::as_object), r.and_then(Value::as_object));
                if (l.is_some() && lm.is_none()) || (r.is_some() && rm.is_none()) {
                    return leaf(c, l, r, out);
                }
                let mut keys: Vec<&'a String> = lm.map(|m| m.keys().collect()).unwrap_or_default();
                if let Some(rm) = rm {
                    keys.extend(rm.keys().filter(|k| !lm.is_some_and(|lm| lm.contains_key(*k))));
                }
                for k in keys {
                    let (lc, rc) = (lm.and_then(|m| m.get(k)), rm.and_then(|m| m.get(k)));
                    c.names.push(k);
                    c.path.push(PathElement::Field(k.clone()));
                    let ty = c.node_type(rc.or(lc).unwrap_or(&Value::Null));
                    node(c, lc, rc, ty, out);
                    c.path.pop();
                    c.names.pop();
                }
                post(c, l, r, out);
            }
            NodeType::KeyedList(_) | NodeType::SetList if !both_empty => {
                let (la, ra) = (l.and_then(Value::as_array), r.and_then(Value::as_array));
                if (l.is_some() && la.is_none()) || (r.is_some() && ra.is_none()) {
                    return leaf(c, l, r, out);
                }
                let element = |item: &Value| match ty {
                    NodeType::KeyedList(keys) => key_element(item, keys),
                    _ => PathElement::Value(canonical(item)),
                };
                let index = |a: Option<&'a Vec<Value>>| -> Vec<(PathElement, &'a Value)> {
                    a.map(|a| a.iter().map(|i| (element(i), i)).collect()).unwrap_or_default()
                };
                let (li, ri) = (index(la), index(ra));
                let mut elements: Vec<&PathElement> = li.iter().map(|(pe, _)| pe).collect();
                elements.extend(ri.iter().map(|(pe, _)| pe).filter(|pe| !li.iter().any(|(l, _)| l == *pe)));
                let elements: Vec<PathElement> = elements.into_iter().cloned().collect();
                for pe in elements {
                    let lc = li.iter().find(|(p, _)| *p == pe).map(|(_, v)| *v);
                    let rc = ri.iter().find(|(p, _)| *p == pe).map(|(_, v)| *v);
                    c.path.push(pe);
                    if matches!(ty, NodeType::KeyedList(_)) {
                        node(c, lc, rc, NodeType::Struct, out);
                    } else {
                        leaf(c, lc, rc, out);
                    }
                    c.path.pop();
                }
                post(c, l, r, out);
            }
            _ => leaf(c, l, r, out),
        }
    }
    fn post(c: &Cursor<'_>, l: Option<&Value>, r: Option<&Value>, out: &mut Comparison) {
        // A keyed list item is created and deleted as a whole, whatever its list.
        let is_item = matches!(c.path.last(), Some(PathElement::Key(_)));
        if !is_item && c.always_present() {
            return;
        }
        match (l, r) {
            (None, Some(_)) => {
                out.added.insert(c.path.clone());
            }
            (Some(_), None) => {
                out.removed.insert(c.path.clone());
            }
            _ => {}
        }
    }
    let strip_managed = |v: Option<&Value>| {
        v.map(|v| {
            let mut v = v.clone();
            if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("managedFields");
            }
            v
        })
    };
    let (old, new) = (strip_managed(old), strip_managed(new));
    let mut out = Comparison::default();
    node(&mut Cursor::new(kind), old.as_ref(), new.as_ref(), NodeType::Struct, &mut out);
    strip(kind, &mut out.added);
    strip(kind, &mut out.modified);
    strip(kind, &mut out.removed);
    out
}

// ---------------------------------------------------------------------------
// Merge and remove (the apply itself)
// ---------------------------------------------------------------------------

/// SMD `Merge`: the applied configuration over the live object.
pub(crate) fn merge(kind: Kind, live: &Value, applied: &Value) -> Value {
    fn walk<'a>(c: &mut Cursor<'a>, l: Option<&'a Value>, r: &'a Value, ty: NodeType) -> Value {
        match (ty, r) {
            (NodeType::Struct | NodeType::Map, Value::Object(rm)) => {
                let mut out = l.and_then(Value::as_object).cloned().unwrap_or_default();
                for (k, rv) in rm {
                    c.names.push(k);
                    let lv = l.and_then(|l| l.get(k));
                    let ty = c.node_type(rv);
                    let merged = walk(c, lv, rv, ty);
                    c.names.pop();
                    out.insert(k.clone(), merged);
                }
                Value::Object(out)
            }
            (NodeType::KeyedList(keys), Value::Array(ra)) => {
                static EMPTY: Vec<Value> = Vec::new();
                let la: &'a Vec<Value> = l.and_then(Value::as_array).unwrap_or(&EMPTY);
                let mut out: Vec<Value> = Vec::with_capacity(la.len().max(ra.len()));
                for li in la {
                    let pe = key_element(li, keys);
                    match ra.iter().find(|ri| key_element(ri, keys) == pe) {
                        Some(ri) => out.push(walk(c, Some(li), ri, NodeType::Struct)),
                        None => out.push(li.clone()),
                    }
                }
                for ri in ra {
                    let pe = key_element(ri, keys);
                    if !la.iter().any(|li| key_element(li, keys) == pe) {
                        out.push(ri.clone());
                    }
                }
                Value::Array(out)
            }
            (NodeType::SetList, Value::Array(ra)) => {
                let mut out = l.and_then(Value::as_array).cloned().unwrap_or_default();
                for ri in ra {
                    if !out.contains(ri) {
                        out.push(ri.clone());
                    }
                }
                Value::Array(out)
            }
            _ => r.clone(),
        }
    }
    walk(&mut Cursor::new(kind), Some(live), applied, NodeType::Struct)
}

/// Removes the nodes named by `paths` (map entries, struct fields, list items).
pub(crate) fn remove_paths(obj: &mut Value, paths: &FieldSet) {
    fn remove(v: &mut Value, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else { return };
        match (first, v) {
            (PathElement::Field(name), Value::Object(m)) => {
                if rest.is_empty() {
                    m.shift_remove(name);
                } else if let Some(child) = m.get_mut(name) {
                    remove(child, rest);
                }
            }
            (PathElement::Key(_), Value::Array(items)) => {
                let Some(pos) = items.iter().position(|item| key_matches(item, first)) else {
                    return;
                };
                if rest.is_empty() {
                    items.remove(pos);
                } else {
                    remove(&mut items[pos], rest);
                }
            }
            (PathElement::Value(json), Value::Array(items)) if rest.is_empty() => {
                items.retain(|item| canonical(item) != *json);
            }
            _ => {}
        }
    }
    fn key_matches(item: &Value, pe: &PathElement) -> bool {
        let PathElement::Key(json) = pe else { return false };
        let keys: Map<String, Value> = serde_json::from_str(json).unwrap_or_default();
        let names: Vec<&str> = keys.keys().map(String::as_str).collect();
        key_element(item, &names) == *pe
    }
    // Deepest first, so that removing a parent never hides a child path.
    let mut sorted: Vec<&Path> = paths.iter().collect();
    sorted.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in sorted {
        remove(obj, path);
    }
}

// ---------------------------------------------------------------------------
// managedFields
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: String,
    pub set: FieldSet,
}

impl Entry {
    /// SMD identifies a manager by name and operation (and version for updates).
    fn same_identity(&self, manager: &str, operation: Operation, api_version: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && (operation == Operation::Apply || self.api_version == api_version)
    }

    /// How a conflict message names this manager (`printManager` in apiserver).
    fn printed(&self) -> String {
        let name = crate::status::go_quote(&self.manager);
        match self.operation {
            Operation::Apply => name,
            Operation::Update => format!("{name} using {} at {}", self.api_version, self.time),
        }
    }
}

/// Reads `metadata.managedFields` of an object.
pub(crate) fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            Some(Entry {
                manager: e.get("manager")?.as_str()?.to_string(),
                operation: match e.get("operation")?.as_str()? {
                    "Apply" => Operation::Apply,
                    _ => Operation::Update,
                },
                api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
                time: e.get("time").and_then(Value::as_str).unwrap_or_default().to_string(),
                set: from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null)),
            })
        })
        .collect()
}

/// Writes `metadata.managedFields` (sorted like apiserver: Apply before Update, then time, then name).
pub(crate) fn write_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (a.operation.as_str(), &a.time, &a.manager, &a.api_version).cmp(&(
            b.operation.as_str(),
            &b.time,
            &b.manager,
            &b.api_version,
        ))
    });
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), e.manager.clone().into());
            m.insert("operation".into(), e.operation.as_str().into());
            m.insert("apiVersion".into(), e.api_version.clone().into());
            m.insert("time".into(), e.time.clone().into());
            m.insert("fieldsType".into(), "FieldsV1".into());
            m.insert("fieldsV1".into(), to_fields_v1(&e.set));
            Value::Object(m)
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.shift_remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Records an Update-operation by `manager` that turned `live` into `new`
/// (both with their managedFields; `new` gets the result).
pub(crate) fn record_update(kind: Kind, live: Option<&Value>, new: &mut Value, manager: &str, now: &str) {
    let mut entries = live.map(read_entries).unwrap_or_default();
    let cmp = compare(kind, live, Some(new));
    let changed = cmp.changed();
    for e in &mut entries {
        e.set.retain(|p| !changed.contains(p) && !cmp.removed.contains(p));
    }
    let api_version = kind.api_version();
    let content_changed = !(changed.is_empty() && cmp.removed.is_empty());
    match entries.iter_mut().find(|e| e.same_identity(manager, Operation::Update, api_version)) {
        Some(e) => {
            e.set.extend(changed);
            if content_changed {
                e.time = now.to_string();
            }
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: Operation::Update,
            api_version: api_version.to_string(),
            time: now.to_string(),
            set: changed,
        }),
    }
    write_entries(new, entries);
}

/// Server-side apply of `applied` by `manager` onto `live` (None: the object
/// does not exist yet). Returns the new object with its managedFields;
/// `finish` runs the server's defaulting on the merged object before
/// ownership is computed, as the apiserver does.
pub(crate) fn apply(
    kind: Kind,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
    finish: impl FnOnce(&mut Value) -> Result<(), ApiError>,
) -> Result<Value, ApiError> {
    let mut entries = live.map(read_entries).unwrap_or_default();
    let new_set = applied_set(kind, applied);
    let empty = Value::Object(Map::new());
    let base = live.unwrap_or(&empty);
    let mut merged = merge(kind, base, applied);

    // Prune: fields this manager applied before and not now, unless another applier owns them.
    let previous = entries
        .iter()
        .find(|e| e.same_identity(manager, Operation::Apply, ""))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let others_applied: FieldSet = entries
        .iter()
        .filter(|e| e.operation == Operation::Apply && e.manager != manager)
        .flat_map(|e| e.set.iter().cloned())
        .collect();
    let dropped: FieldSet =
        previous.iter().filter(|p| !new_set.contains(*p) && !others_applied.contains(*p)).cloned().collect();
    remove_paths(&mut merged, &dropped);
    finish(&mut merged)?;

    // Ownership: the applier owns exactly what it applied; changed fields
    // owned by others are conflicts (or, forced, move to the applier).
    let cmp = compare(kind, live, Some(&merged));
    let changed = cmp.changed();
    let mut conflicts: Vec<(&Entry, Path)> = Vec::new();
    for e in entries.iter().filter(|e| !e.same_identity(manager, Operation::Apply, "")) {
        for p in e.set.intersection(&changed) {
            conflicts.push((e, p.clone()));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    let changed_or_removed: FieldSet = changed.union(&cmp.removed).cloned().collect();
    for e in &mut entries {
        if !e.same_identity(manager, Operation::Apply, "") {
            e.set.retain(|p| !changed_or_removed.contains(p));
        }
    }
    let content_changed = !changed_or_removed.is_empty();
    match entries.iter_mut().find(|e| e.same_identity(manager, Operation::Apply, "")) {
        Some(e) => {
            if content_changed || e.set != new_set {
                e.time = now.to_string();
            }
            e.set = new_set;
            e.api_version = kind.api_version().to_string();
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: Operation::Apply,
            api_version: kind.api_version().to_string(),
            time: now.to_string(),
            set: new_set,
        }),
    }
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// The 409 of a conflicting apply (`NewConflictError` in apiserver).
fn conflict_error(conflicts: &[(&Entry, Path)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(e, p)| {
            serde_json::json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", e.printed()),
                "field": path_string(p),
            })
        })
        .collect();
    let message = if let [(e, p)] = conflicts {
        format!("Apply failed with 1 conflict: conflict with {}: {}", e.printed(), path_string(p))
    } else {
        let mut by_manager: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (e, p) in conflicts {
            by_manager.entry(e.printed()).or_default().push(path_string(p));
        }
        let lines: Vec<String> = by_manager
            .iter()
            .flat_map(|(m, paths)| {
                std::iter::once(format!("conflicts with {m}:")).chain(paths.iter().map(|p| format!("- {p}")))
            })
            .collect();
        format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
    };
    ApiError::apply_conflict(message, causes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_v1_round_trips_with_dot_for_members_with_children() {
        let set: FieldSet = [
            vec![PathElement::Field("data".into())],
            vec![PathElement::Field("data".into()), PathElement::Field("a".into())],
            vec![PathElement::Field("type".into())],
        ]
        .into_iter()
        .collect();
        let v1 = to_fields_v1(&set);
        assert_eq!(v1, json!({"f:data": {".": {}, "f:a": {}}, "f:type": {}}));
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn update_on_create_owns_new_maps_but_not_structs_or_containers() {
        let deploy = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"app": "d"}},
            "spec": {"selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "E", "value": "v"}]}]}}}
        });
        let cmp = compare(Kind::Deployment, None, Some(&deploy));
        let v1 = to_fields_v1(&cmp.added);
        assert_eq!(
            v1,
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {"f:selector": {}, "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                        ".": {}, "f:env": {".": {}, "k:{\"name\":\"E\"}": {".": {}, "f:name": {}, "f:value": {}}},
                        "f:image": {}, "f:name": {}}}}}}
            })
        );
    }

    #[test]
    fn applied_set_has_entries_and_items_but_no_struct_nodes() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "n", "labels": {"a": "b"}}, "data": {"k": "dg=="}});
        let set = applied_set(Kind::Secret, &secret);
        assert_eq!(to_fields_v1(&set), json!({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:a": {}}}}));
    }

    #[test]
    fn path_strings_match_structured_merge_diff() {
        let p = vec![
            PathElement::Field("spec".into()),
            PathElement::Key(r#"{"name":"api"}"#.into()),
            PathElement::Field("image".into()),
        ];
        assert_eq!(path_string(&p), r#".spec[name="api"].image"#);
    }
}
