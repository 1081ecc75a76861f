//! The emulator's state: every object by (kind, namespace, name), the global
//! resourceVersion counter, and a short history of changes for watches.
//!
//! Like etcd behind kube-apiserver, one counter orders every write in the
//! cluster: an object's `metadata.resourceVersion` is the counter value of
//! its last write, and a list carries the current value. The counter moves
//! only when something is really written (a no-op apply or patch does not
//! write). Objects are kept in key order, so lists come out sorted by
//! namespace then name, as from etcd.

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::kind::Kind;

/// How many past changes a watch can replay from an older resourceVersion.
const HISTORY: usize = 4096;

/// Key of an object: namespace is `""` for cluster-scoped kinds.
pub(crate) type Key = (Kind, String, String);

/// One change, as a watch event.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub kind: Kind,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub event: &'static str,
    pub resource_version: u64,
    pub object: Value,
    /// The object before a `MODIFIED` change: a watch filtered by labels
    /// turns a change that makes an object (stop) match into `ADDED`
    /// (`DELETED`), as kube-apiserver's watch cache does.
    pub previous: Option<Value>,
}

pub(crate) struct Store {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    /// Seed of the uid generator (splitmix64).
    uid_state: u64,
    history: VecDeque<Change>,
    /// The newest resourceVersion that fell out of `history` (or was
    /// compacted away by [`Store::compact`]).
    forgotten: u64,
    /// Where new changes are announced to running watches.
    pub changes: tokio::sync::broadcast::Sender<Change>,
}

impl Store {
    /// A cluster with the namespaces `default`, `kube-system`, `kube-public` and `kube-node-lease`.
    pub fn new() -> Store {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        let mut store = Store {
            objects: BTreeMap::new(),
            resource_version: 0,
            uid_state: seed,
            history: VecDeque::new(),
            forgotten: 0,
            changes: tokio::sync::broadcast::channel(1024).0,
        };
        for ns in ["default", "kube-node-lease", "kube-public", "kube-system"] {
            let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            crate::api::default_fields(Kind::Namespace, &mut obj);
            store.stamp_new(Kind::Namespace, &mut obj);
            store.put(Kind::Namespace, obj);
        }
        store
    }

    /// The current (last written) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// Takes the next resourceVersion.
    pub fn next_resource_version(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    /// A fresh RFC 4122-shaped uid.
    pub fn new_uid(&mut self) -> String {
        let mut next = || {
            self.uid_state = self.uid_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.uid_state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let (a, b) = (next(), next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// Sets the fields the server owns on a new object: uid, creationTimestamp, generation.
    pub fn stamp_new(&mut self, kind: Kind, obj: &mut Value) {
        let uid = self.new_uid();
        let meta = obj["metadata"].as_object_mut().expect("metadata is an object");
        meta.insert("uid".into(), uid.into());
        meta.insert("creationTimestamp".into(), crate::time::now_rfc3339().into());
        if kind == Kind::Deployment {
            meta.insert("generation".into(), 1.into());
        }
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(kind, namespace.to_string(), name.to_string()))
    }

    pub fn namespace_exists(&self, namespace: &str) -> bool {
        self.get(Kind::Namespace, "", namespace).is_some()
    }

    /// Objects of `kind`, in `namespace` or in all namespaces, in key order.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> impl Iterator<Item = (&Key, &Value)> {
        self.objects
            .range((kind, String::new(), String::new())..)
            .take_while(move |((k, _, _), _)| *k == kind)
            .filter(move |((_, ns, _), _)| namespace.is_none_or(|n| n == ns))
    }

    /// Writes `obj` with a new resourceVersion and announces it; returns the stored object.
    pub fn put(&mut self, kind: Kind, mut obj: Value) -> Value {
        let rv = self.next_resource_version();
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        let key = key_of(kind, &obj);
        let previous = self.objects.insert(key.clone(), obj.clone());
        let event = if previous.is_some() { "MODIFIED" } else { "ADDED" };
        self.announce(Change { kind, namespace: key.1, event, resource_version: rv, object: obj.clone(), previous });
        obj
    }

    /// Deletes an object (a write: it takes a resourceVersion); returns it as last seen.
    pub fn remove(&mut self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let mut obj = self.objects.remove(&(kind, namespace.to_string(), name.to_string()))?;
        let rv = self.next_resource_version();
        obj["metadata"]["resourceVersion"] = rv.to_string().into();
        self.announce(Change {
            kind,
            namespace: namespace.to_string(),
            event: "DELETED",
            resource_version: rv,
            object: obj.clone(),
            previous: None,
        });
        Some(obj)
    }

    fn announce(&mut self, change: Change) {
        if self.history.len() == HISTORY
            && let Some(old) = self.history.pop_front()
        {
            self.forgotten = old.resource_version;
        }
        self.history.push_back(change.clone());
        // No receiver is fine: nobody is watching.
        let _ = self.changes.send(change);
    }

    /// Forgets every change so far, as etcd's compaction does.
    pub fn compact(&mut self) {
        self.history.clear();
        self.forgotten = self.resource_version;
    }

    /// Whether a list or watch can still resume from `resource_version`.
    pub fn resumable(&self, resource_version: u64) -> bool {
        resource_version >= self.forgotten
    }

    /// Changes after `resource_version`, or None when they are no longer in the history.
    pub fn changes_since(&self, resource_version: u64) -> Option<Vec<Change>> {
        if resource_version < self.forgotten {
            return None;
        }
        Some(self.history.iter().filter(|c| c.resource_version > resource_version).cloned().collect())
    }
}

/// The key of an object of `kind`.
pub(crate) fn key_of(kind: Kind, obj: &Value) -> Key {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    let namespace = if kind.namespaced() { s("/metadata/namespace") } else { String::new() };
    (kind, namespace, s("/metadata/name"))
}
