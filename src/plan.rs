//! The plan: what a pass will change, decided before anything is written.
//!
//! Every target kind plans into the same shapes, purely (no clients, no
//! async): a [`Change`] is what people and scripts are shown, a
//! [`Planned`] pairs it with the operation that carries it out, and a
//! kind collects one destination's changes (a directory, a cluster, a CI
//! project) in a `crate::targets::DestPlan`, pruning by one rule
//! ([`mass_prune`]). `plan`, `reconcile --dry-run`, `reconcile`, `pull` and the
//! service all build the same plan; applying it only executes what it
//! says, so "nothing happens that `plan` would not have shown" holds by
//! construction.
//!
//! Confd's `sync()` compares, checks, renames and reloads in one method;
//! here comparing is planning and doing is [`crate::targets`]' `apply`.
//!
//! A [`Change`] never holds a secret value: values and diffs are only
//! filled in when *both* sides may be shown ([`crate::secret::Content::shown`]),
//! and even then with control characters escaped and long lines cut.
//!
//! # What a target held is judged too
//!
//! An output that stops reading secrets (a password replaced by a literal)
//! renders plain content, but the target still holds the old, secret one:
//! a diff of the two would print the password. So the read side of every
//! kind hands its observed bytes over as [`Content`], secret when the
//! target held them while tainted (a file that others cannot read or whose
//! record says tainted, a Kubernetes Secret written from a tainted output,
//! a masked or secret CI item), and plain only when proven plain. Once
//! secret, always secret: nothing that was secret is ever shown, not in a
//! diff, not in the `entry: old → new` lines, not in JSON.
//!
//! The API a target kind calls:
//! - [`Change::diff_between`]`(old, new, path)`: fills in the unified diff,
//!   or notes why there is none;
//! - [`value_lines`]`(names, new, old)` and [`changed_entries`]`(new, old)`
//!   take the observed side as [`Content`], judged by the read side: there
//!   is no other type a value read back can come in.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::secret::Content;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    /// Someone changed it after cfgsync wrote it: restore it.
    Drift,
    Delete,
    Unchanged,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Drift => "drift",
            Action::Delete => "delete",
            Action::Unchanged => "unchanged",
        }
    }

    pub fn writes(self) -> bool {
        self != Action::Unchanged
    }
}

/// One planned change, as shown: names, never secret values.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The target kind (`file`, `kubernetes-secret`, `gitlab`, …).
    pub kind: &'static str,
    /// What is changed: a path, `context/namespace/name`, `project:KEY`.
    pub address: String,
    pub action: Action,
    /// True when the content is secret: no values, no diff.
    pub secret: bool,
    /// Entries (keys, variables) whose value changes: names only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<String>,
    /// `entry: old → new`, only for content that read no secret.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// A unified diff, only for content that read no secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// What else happens: a mode change, labels only, a workload restart,
    /// a stale temp file removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Keyed fingerprints of the secret entries that change (`pull`):
    /// equal exactly when the values are, meaningless outside this run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fingerprints: Vec<EntryFingerprint>,
    /// A hash of what the target should hold, equal across passes exactly
    /// when the desired content is (the service remembers it to recognise
    /// a target changed behind its back). Never shown.
    #[serde(skip)]
    pub content_hash: u64,
}

/// A process-local hash of desired content (not a fingerprint: never shown
/// or stored).
pub fn content_hash(parts: &[&[u8]]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

impl Change {
    /// Fills in the unified diff of `old` (`None`: absent, an empty file
    /// to diff against) → `new`, when both may be shown. When `new` is
    /// secret nothing is added (the caller says how its content is
    /// masked); when only `old` is, a note says why there is no diff (and
    /// names the changed [`Change::entries`], set before): what the target
    /// held while secret is never shown, even once the new content is plain.
    pub fn diff_between(&mut self, old: Option<&Content>, new: &Content, path: &Path) {
        let Some(new) = new.shown() else { return };
        let old = match old {
            None => Cow::Borrowed(""),
            Some(old) => match old.shown() {
                Some(text) => text,
                None => {
                    let mut note = PREVIOUS_SECRET.to_owned();
                    if !self.entries.is_empty() {
                        note.push_str(&format!("; entries changed: {}", self.entries.join(", ")));
                    }
                    self.notes.push(note);
                    return;
                }
            },
        };
        self.diff = Some(unified_diff(&old, &new, path));
    }

    pub fn new(kind: &'static str, address: String, action: Action, secret: bool) -> Self {
        Self {
            kind,
            address,
            action,
            secret,
            entries: Vec::new(),
            values: Vec::new(),
            diff: None,
            notes: Vec::new(),
            fingerprints: Vec::new(),
            content_hash: 0,
        }
    }
}

/// `entry`: fingerprint before → after (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryFingerprint {
    pub entry: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// Where a change's outcome is reported: a config target of the env (by
/// position in the env's report), or the env's prune list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    Target { output: usize, target: usize },
    Prune,
}

/// A change with the operation that carries it out.
#[derive(Debug)]
pub struct Planned<Op> {
    pub slot: Slot,
    pub change: Change,
    pub op: Op,
}

/// A prune refused whole: it would delete more than one and more than the
/// allowed share of what this instance wrote at one destination.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{dest}: refusing to delete {deletes} of {total} objects this instance wrote ({share:.0}% > {max:.0}%): re-run with --allow-mass-prune if that is intended"
)]
pub struct MassPrune {
    pub dest: String,
    pub deletes: usize,
    pub total: usize,
    /// Percent.
    pub share: f64,
    /// Percent.
    pub max: f64,
}

/// The one prune rule of every target kind: `deletes` of the `total`
/// objects this instance wrote at `dest` are a mass prune when they are
/// more than one and more than `max` (a share); `allow`
/// (`--allow-mass-prune`) lifts the guard.
pub fn mass_prune(
    deletes: usize,
    total: usize,
    max: f64,
    allow: bool,
    dest: impl FnOnce() -> String,
) -> Result<(), MassPrune> {
    let share = deletes as f64 / total.max(1) as f64;
    if deletes > 1 && share > max && !allow {
        return Err(MassPrune { dest: dest(), deletes, total, share: share * 100.0, max: max * 100.0 });
    }
    Ok(())
}

/// The note of a change whose target held secret content that is not
/// shown although the new content may be.
pub const PREVIOUS_SECRET: &str = "previous content was secret: not shown";

/// Names of the entries whose bytes differ between `old` and `new`.
pub fn changed_entries<'a>(
    new: impl IntoIterator<Item = (&'a String, &'a [u8])>,
    old: &BTreeMap<String, Content>,
) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut names = Vec::new();
    for (k, v) in new {
        seen.insert(k.as_str());
        if old.get(k).map(Content::expose) != Some(v) {
            names.push(k.clone());
        }
    }
    names.extend(old.keys().filter(|k| !seen.contains(k.as_str())).cloned());
    names.sort();
    names
}

/// `entry: "old" → "new"` lines, quoted (so control characters are escaped)
/// and cut to a readable length, for the entries whose every side present
/// may be shown: an entry whose new value or whose old value is secret gets
/// no line at all.
pub fn value_lines(names: &[String], new: &BTreeMap<String, Content>, old: &BTreeMap<String, Content>) -> Vec<String> {
    names
        .iter()
        .filter_map(|k| {
            let shown_new = match new.get(k) {
                Some(c) => show(&c.shown()?),
                None => "(absent)".to_owned(),
            };
            Some(match old.get(k) {
                Some(o) => format!("{k}: {} → {shown_new}", show(&o.shown()?)),
                None => format!("{k}: {shown_new}"),
            })
        })
        .collect()
}

/// A value in a plan: quoted (so control characters are escaped) and cut.
pub fn show(v: &str) -> String {
    crate::text::shorten(&format!("{v:?}"), 200).into_owned()
}

/// A unified diff of two texts, with terminal controls escaped.
pub fn unified_diff(old: &str, new: &str, path: &Path) -> String {
    let name = crate::text::display_path(path);
    let (old, new) = (crate::text::escape_controls(old, true), crate::text::escape_controls(new, true));
    similar::TextDiff::from_lines(old.as_ref(), new.as_ref())
        .unified_diff()
        .context_radius(2)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prunes_beyond_the_share_are_refused_unless_allowed() {
        let d = || "d".to_owned();
        // One delete is never a mass prune, even of everything.
        assert!(mass_prune(1, 1, 0.5, false, d).is_ok());
        // At the share: allowed.
        assert!(mass_prune(2, 4, 0.5, false, d).is_ok());
        // Beyond it: refused, naming the counts.
        let e = mass_prune(3, 4, 0.5, false, d).unwrap_err();
        assert_eq!((e.deletes, e.total), (3, 4));
        assert!(
            e.to_string().starts_with("d: refusing to delete 3 of 4 objects this instance wrote (75% > 50%)"),
            "{e}"
        );
        // --allow-mass-prune lifts the guard.
        assert!(mass_prune(3, 4, 0.5, true, d).is_ok());
    }

    #[test]
    fn changed_entries_name_updates_additions_and_removals() {
        let new: BTreeMap<String, Content> =
            [("A".into(), Content::secret("CANARY-new")), ("B".into(), Content::secret("same"))].into();
        let old: BTreeMap<String, Content> = [
            ("A".into(), Content::plain("CANARY-old")),
            ("B".into(), Content::plain("same")),
            ("C".into(), Content::plain("x")),
        ]
        .into();
        let names = changed_entries(new.iter().map(|(k, v)| (k, v.expose())), &old);
        assert_eq!(names, ["A", "C"]);
        assert!(
            value_lines(&names, &new, &old).iter().all(|l| !l.contains("CANARY")),
            "secret content shows no values"
        );
        let plain: BTreeMap<String, Content> = [("A".into(), Content::plain("new\x1b[2J"))].into();
        let old_plain: BTreeMap<String, Content> = [("A".into(), Content::plain("old"))].into();
        assert_eq!(value_lines(&["A".into()], &plain, &old_plain), ["A: \"old\" → \"new\\u{1b}[2J\""]);
        // What the target held while secret stays secret when the new value is plain.
        let old_secret: BTreeMap<String, Content> = [("A".into(), Content::secret("CANARY-old"))].into();
        assert!(value_lines(&["A".into()], &plain, &old_secret).is_empty(), "no line shows a secret old value");
        assert_eq!(changed_entries(plain.iter().map(|(k, v)| (k, v.expose())), &old_secret), ["A"]);
    }

    #[test]
    fn a_diff_needs_both_sides_shown() {
        let path = Path::new("out/a.env");
        let mut c = Change::new("file", "out/a.env".into(), Action::Update, false);
        c.diff_between(Some(&Content::secret("PW=CANARY-old\n")), &Content::plain("PW=literal\n"), path);
        assert_eq!((c.diff.as_deref(), c.notes.as_slice()), (None, &[PREVIOUS_SECRET.to_owned()][..]));
        let mut c = Change::new("file", "out/a.env".into(), Action::Update, true);
        c.diff_between(Some(&Content::plain("A=1\n")), &Content::secret("A=CANARY\n"), path);
        assert!(c.diff.is_none() && c.notes.is_empty(), "the caller notes masked new content");
        let mut c = Change::new("file", "out/a.env".into(), Action::Update, false);
        c.diff_between(Some(&Content::plain("A=1\n")), &Content::plain("A=2\n"), path);
        assert!(c.diff.as_deref().is_some_and(|d| d.contains("-A=1\n+A=2")), "{c:?}");
        let mut c = Change::new("file", "out/a.env".into(), Action::Create, false);
        c.diff_between(None, &Content::plain("A=2\n"), path);
        assert!(c.diff.as_deref().is_some_and(|d| d.contains("+A=2")), "{c:?}");
    }

    #[test]
    fn diffs_escape_terminal_controls() {
        let d = unified_diff("A=1\n", "A=\x1b]0;owned\x07\n", Path::new("out/a.env"));
        assert!(d.contains("+A=\\e]0;owned\\u{7}"), "{d}");
        assert!(d.starts_with("--- a/out/a.env\n+++ b/out/a.env\n"), "{d}");
    }
}
