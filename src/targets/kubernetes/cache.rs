//! The pass's cache of what it would LIST: per (env, context, namespace,
//! kind), the objects the service's watch of that scope has listed and
//! watched since (a reflector's store). While the watch is synced, a
//! pass reads its objects here instead of LISTing ([`super::KubeKind`]'s
//! `observe`); otherwise it LISTs as before.
//!
//! Decisions:
//! - **Exactly what the LIST returns**: the watch selects what the pass's
//!   LIST selects (`app.kubernetes.io/managed-by=cfgsync,cfgsync.io/env=<env>`,
//!   other instances' objects included: the pass refuses to write over
//!   them by name), and the store keeps each object as `to_live` reads it.
//!   Names the targets want that the store lacks are still GET by the pass
//!   (an object someone else made may sit there), as after a LIST.
//! - **Used only while it is synced**: listed, and its watch streaming.
//!   Before the first LIST, while a watch is down (failed, forbidden,
//!   unreachable), after a `410 Gone` until the new LIST, and wherever no
//!   watch runs (one-shot commands, a replica that does not lead the env,
//!   a fenced-off one), the pass LISTs. A watch that ends drops its
//!   store. A stream the server closes is resumed from the last version
//!   without losing a change, so the store stays in use meanwhile.
//! - **Fresh after our own writes**: a create, apply or patch answers with
//!   the object as stored; the pass puts that in the store at once, and a
//!   prune puts a tombstone, so the next pass plans from what it wrote,
//!   not from a watch event still on its way (which would plan the same
//!   write again and fail it with `409`). Rather than making the pass wait
//!   for the watch to catch up with its writes (a pass held by a slow
//!   watch, and a timeout to choose), everything the store learns is merged
//!   by resourceVersion: the newer wins, so a late event older than a
//!   write's answer is ignored. Versions are compared as Kubernetes
//!   defines it since 1.35 (KEP-5504: decimal integers, longer is newer);
//!   a scope that sees a version not of that form is not used until its
//!   next LIST. A stale entry can still only cost a conflict: every write
//!   carries the observed resourceVersion (and a delete the uid) as a
//!   precondition, and a `409` means "the next pass plans again".
//! - **Secret data** stays in [`crate::secret::Content`] as the pass held
//!   it; the store's `Debug` prints counts only.
//!
//! Cost: per cached object what the pass held transiently before: its
//! data, labels, annotations, uid and version (a few hundred bytes plus
//! the values).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{LiveObject, ObjectKind};

/// One store: what the pass's LIST of `kind` in `namespace` of `context`
/// for `env` returns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeKey {
    pub env: String,
    pub context: String,
    pub namespace: String,
    pub kind: ObjectKind,
}

/// A resourceVersion as KEP-5504 compares them: a positive decimal
/// integer without leading zeros; the longer is newer, then by digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Version {
    len: usize,
    digits: String,
}

impl Version {
    fn parse(s: &str) -> Option<Version> {
        let valid = !s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit());
        valid.then(|| Version { len: s.len(), digits: s.to_owned() })
    }
}

enum Entry {
    Live(Box<LiveObject>, Version),
    /// Deleted at or after this version (a prune's tombstone, until the
    /// watch has gone past it).
    Gone(Version),
}

impl Entry {
    fn version(&self) -> &Version {
        match self {
            Entry::Live(_, v) | Entry::Gone(v) => v,
        }
    }

    /// Which of two is newer: by version, and a tombstone after the
    /// object at its own version (a prune deletes the version it saw).
    fn order(&self) -> (&Version, bool) {
        (self.version(), matches!(self, Entry::Gone(_)))
    }
}

#[derive(Default)]
struct Store {
    /// The watch that fills it (a restarted watch replaces an old one
    /// whose task may end later).
    owner: u64,
    synced: bool,
    /// A version not comparable was seen since the last LIST.
    incomparable: bool,
    objects: BTreeMap<String, Entry>,
    /// The watch has delivered every change up to this version.
    seen: Option<Version>,
}

impl Store {
    fn usable(&self) -> bool {
        self.synced && !self.incomparable
    }

    /// Takes in `entry` for `name` unless what the store has is newer.
    fn merge(&mut self, name: &str, entry: Entry) {
        if self.objects.get(name).is_some_and(|old| old.order() > entry.order()) {
            return;
        }
        self.objects.insert(name.to_owned(), entry);
    }

    fn object(&mut self, live: &LiveObject) {
        match Version::parse(&live.resource_version) {
            Some(v) => self.merge(&live.name, Entry::Live(Box::new(live.clone()), v)),
            None => self.incomparable = true,
        }
    }

    fn gone(&mut self, name: &str, version: &str) {
        match Version::parse(version) {
            Some(v) => self.merge(name, Entry::Gone(v)),
            None => self.incomparable = true,
        }
    }

    /// The watch has seen every change up to `version`: tombstones at or
    /// below it guard against nothing any more.
    fn progress(&mut self, version: &str) {
        let Some(v) = Version::parse(version) else {
            self.incomparable = true;
            return;
        };
        if self.seen.as_ref().is_none_or(|s| *s < v) {
            self.objects.retain(|_, e| !matches!(e, Entry::Gone(g) if *g <= v));
            self.seen = Some(v);
        }
    }
}

/// The stores of one loaded config (every scope of every env its
/// watches cover).
#[derive(Default)]
pub struct ObjectCache {
    stores: Mutex<HashMap<ScopeKey, Arc<Mutex<Store>>>>,
    watches: AtomicU64,
}

impl std::fmt::Debug for ObjectCache {
    /// Scopes and counts, never an object.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stores = lock(&self.stores);
        let objects: usize = stores.values().map(|s| lock(s).objects.len()).sum();
        f.debug_struct("ObjectCache").field("scopes", &stores.len()).field("entries", &objects).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ObjectCache {
    fn store(&self, key: &ScopeKey) -> Option<Arc<Mutex<Store>>> {
        lock(&self.stores).get(key).cloned()
    }

    /// The store of `key` for the watch that fills it from now on; it
    /// is dropped with the returned handle.
    pub fn fill(self: &Arc<Self>, key: ScopeKey) -> Filler {
        let owner = self.watches.fetch_add(1, Ordering::Relaxed) + 1;
        let store = Arc::new(Mutex::new(Store { owner, ..Store::default() }));
        lock(&self.stores).insert(key.clone(), store.clone());
        Filler { cache: self.clone(), key, store, owner }
    }

    /// What the pass's LIST of `key` would return, when a synced watch
    /// keeps it; `None`: LIST.
    pub fn read(&self, key: &ScopeKey) -> Option<Vec<LiveObject>> {
        let store = self.store(key)?;
        let store = lock(&store);
        store.usable().then(|| {
            store
                .objects
                .values()
                .filter_map(|e| match e {
                    Entry::Live(o, _) => Some(LiveObject::clone(o)),
                    Entry::Gone(_) => None,
                })
                .collect()
        })
    }

    /// A write of the pass answered with `live` (the object as stored).
    pub fn wrote(&self, env: &str, context: &str, live: &LiveObject) {
        if let Some(store) = self.store(&key_of(env, context, live)) {
            lock(&store).object(live);
        }
    }

    /// The pass deleted `observed` (or found it gone).
    pub fn deleted(&self, env: &str, context: &str, observed: &LiveObject) {
        if let Some(store) = self.store(&key_of(env, context, observed)) {
            lock(&store).gone(&observed.name, &observed.resource_version);
        }
    }
}

fn key_of(env: &str, context: &str, o: &LiveObject) -> ScopeKey {
    ScopeKey { env: env.to_owned(), context: context.to_owned(), namespace: o.namespace.clone(), kind: o.kind }
}

/// A watch's hold on its store: what it lists and sees goes in, and the
/// store is in use only while the watch says it is synced.
pub struct Filler {
    cache: Arc<ObjectCache>,
    key: ScopeKey,
    store: Arc<Mutex<Store>>,
    owner: u64,
}

impl std::fmt::Debug for Filler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filler").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Filler {
    /// A LIST answered `items` at `version`: the store becomes that list,
    /// except for what it learnt since that is newer (a write of a pass
    /// that answered after the LIST was taken). Not in use until
    /// [`Filler::synced`].
    pub fn listed(&self, items: &[LiveObject], version: Option<&str>) {
        let mut store = lock(&self.store);
        let list = version.and_then(Version::parse);
        store.incomparable = list.is_none();
        let Some(list) = list else { return };
        // Absent from a list at `list`: gone, unless learnt after it.
        store.objects.retain(|_, e| *e.version() > list);
        for live in items {
            store.object(live);
        }
        store.seen = Some(list);
    }

    /// Whether the store is in use: true once the watch streams after a
    /// LIST, false when it failed or its version expired.
    pub fn synced(&self, synced: bool) {
        lock(&self.store).synced = synced;
    }

    /// A watch event: the object added or changed.
    pub fn changed(&self, live: &LiveObject) {
        let mut store = lock(&self.store);
        store.object(live);
        store.progress(&live.resource_version);
    }

    /// A watch event: the object deleted (as last seen, at the version of
    /// its deletion).
    pub fn deleted(&self, last: &LiveObject) {
        let mut store = lock(&self.store);
        store.gone(&last.name, &last.resource_version);
        store.progress(&last.resource_version);
    }

    /// A bookmark: every change up to `version` has been delivered.
    pub fn bookmark(&self, version: &str) {
        lock(&self.store).progress(version);
    }
}

impl Drop for Filler {
    /// The watch ended: its store goes (a newer watch's stays).
    fn drop(&mut self) {
        let mut stores = lock(&self.cache.stores);
        if stores.get(&self.key).is_some_and(|s| lock(s).owner == self.owner) {
            stores.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Content;

    fn live(name: &str, version: &str, value: &str) -> LiveObject {
        LiveObject {
            kind: ObjectKind::Secret,
            namespace: "api".into(),
            name: name.into(),
            data: BTreeMap::from([("K".to_owned(), Content::secret(value.as_bytes().to_vec()))]),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            type_: Some("Opaque".into()),
            uid: format!("uid-{name}"),
            resource_version: version.into(),
            deleting: false,
            finalizers: Vec::new(),
            legacy_manager: false,
        }
    }

    fn key() -> ScopeKey {
        ScopeKey { env: "prod".into(), context: "prod".into(), namespace: "api".into(), kind: ObjectKind::Secret }
    }

    fn versions(cache: &ObjectCache) -> Vec<(String, String)> {
        cache.read(&key()).unwrap().into_iter().map(|o| (o.name, o.resource_version)).collect()
    }

    #[test]
    fn versions_compare_as_kubernetes_defines() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("10") > v("9") && v("100") > v("99") && v("12") > v("11"));
        for bad in ["", "0", "012", "1a", "-1", " 1"] {
            assert!(Version::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn in_use_only_while_a_synced_watch_fills_it() {
        let cache = Arc::new(ObjectCache::default());
        assert!(cache.read(&key()).is_none(), "no watch: LIST");
        let filler = cache.fill(key());
        filler.listed(&[live("a", "5", "x")], Some("7"));
        assert!(cache.read(&key()).is_none(), "listed, not yet watching");
        filler.synced(true);
        assert_eq!(versions(&cache), [("a".to_owned(), "5".to_owned())]);
        filler.synced(false);
        assert!(cache.read(&key()).is_none(), "the watch failed");
        filler.synced(true);
        // A restarted watch takes over; the old one ending later leaves it be.
        let newer = cache.fill(key());
        newer.listed(&[], Some("8"));
        newer.synced(true);
        drop(filler);
        assert_eq!(versions(&cache), []);
        drop(newer);
        assert!(cache.read(&key()).is_none(), "the watch ended");
        // A version not as KEP-5504 says: not used until a LIST with good ones.
        let filler = cache.fill(key());
        filler.listed(&[live("a", "5", "x")], Some("7"));
        filler.synced(true);
        filler.changed(&live("a", "opaque", "y"));
        assert!(cache.read(&key()).is_none());
        filler.listed(&[live("a", "9", "y")], Some("9"));
        assert_eq!(versions(&cache), [("a".to_owned(), "9".to_owned())]);
    }

    /// The pass's writes are in the store at once, and a late watch event
    /// older than them changes nothing; newer ones do.
    #[test]
    fn writes_are_seen_at_once_and_older_events_do_not_undo_them() {
        let cache = Arc::new(ObjectCache::default());
        let filler = cache.fill(key());
        filler.listed(&[live("a", "5", "old"), live("b", "6", "b")], Some("6"));
        filler.synced(true);
        cache.wrote("prod", "prod", &live("a", "9", "new"));
        cache.wrote("prod", "prod", &live("c", "10", "created"));
        cache.deleted("prod", "prod", &live("b", "6", "b"));
        let want = [("a".to_owned(), "9".to_owned()), ("c".to_owned(), "10".to_owned())];
        assert_eq!(versions(&cache), want);
        // The pruned object's last change, delivered late: still gone.
        filler.changed(&live("b", "6", "b"));
        assert_eq!(versions(&cache), want);
        // The apply's own first steps (apply, then a merge patch) arrive
        // after its answer: ignored.
        filler.changed(&live("a", "7", "half"));
        filler.changed(&live("a", "8", "half"));
        assert_eq!(versions(&cache), want);
        // The writes' own events, then a later hand edit and a deletion.
        filler.changed(&live("a", "9", "new"));
        filler.deleted(&live("b", "11", "b"));
        filler.changed(&live("c", "10", "created"));
        filler.changed(&live("a", "12", "hand"));
        filler.deleted(&live("c", "13", "created"));
        assert_eq!(versions(&cache), [("a".to_owned(), "12".to_owned())]);
        // Another env's or context's writes are not this store's.
        cache.wrote("staging", "prod", &live("z", "20", "z"));
        cache.wrote("prod", "staging", &live("z", "20", "z"));
        assert_eq!(versions(&cache).len(), 1);
        // A LIST taken before a write that answered first keeps the write.
        cache.wrote("prod", "prod", &live("d", "30", "d"));
        filler.listed(&[live("a", "12", "hand")], Some("29"));
        assert_eq!(versions(&cache), [("a".to_owned(), "12".to_owned()), ("d".to_owned(), "30".to_owned())]);
        filler.listed(&[live("a", "12", "hand")], Some("31"));
        assert_eq!(versions(&cache), [("a".to_owned(), "12".to_owned())], "gone by a later LIST");
    }

    #[test]
    fn debug_shows_no_value() {
        let cache = Arc::new(ObjectCache::default());
        let filler = cache.fill(key());
        filler.listed(&[live("a", "5", "CANARY-value")], Some("5"));
        let shown = format!("{cache:?} {filler:?}");
        assert!(!shown.contains("CANARY") && shown.contains("entries: 1"), "{shown}");
    }
}
