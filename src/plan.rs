//! The plan: desired state vs observed state → a list of changes.
//!
//! Pure (no clients, no async), so `plan`, `--dry-run` and `reconcile` all
//! go through exactly the same decision and "nothing is written that `plan`
//! would not have shown" holds by construction: apply only executes a plan.
//!
//! Confd's `sync()` compares, checks, renames and reloads in one method;
//! here comparing is this module and doing is [`crate::target::file`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::secret::Content;

/// One file as it should be.
#[derive(Debug, Clone)]
pub struct DesiredFile {
    pub path: PathBuf,
    pub content: Content,
    pub mode: u32,
}

/// One file as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedFile {
    pub content: Vec<u8>,
    pub mode: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Unchanged,
}

/// A decided change to one file, with what a reader may be shown.
#[derive(Debug, Clone, Serialize)]
pub struct FileChange {
    pub path: PathBuf,
    pub action: Action,
    pub content_changed: bool,
    /// `Some((old, new))` when only the mode differs or changes too.
    #[serde(serialize_with = "serialize_mode_change")]
    pub mode_change: Option<(Option<u32>, u32)>,
    /// Entries whose value differs, when the format lets us tell (names only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed_entries: Vec<String>,
    /// A unified diff, only for outputs that read no secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(skip)]
    pub desired: DesiredFile,
}

fn serialize_mode_change<S: serde::Serializer>(v: &Option<(Option<u32>, u32)>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some((old, new)) => {
            let text = match old {
                Some(o) => format!("{o:04o} -> {new:04o}"),
                None => format!("{new:04o}"),
            };
            s.serialize_str(&text)
        }
    }
}

/// The entries of a single-file output, for naming the entries that changed:
/// the rendered ones, and those decoded from the observed file when its
/// format can be read back.
pub struct EntryNames<'a> {
    pub new: &'a BTreeMap<String, Content>,
    pub old: Option<BTreeMap<String, String>>,
}

/// Decides the change for one file.
pub fn plan_file(
    desired: DesiredFile,
    observed: Option<&ObservedFile>,
    tainted: bool,
    entries: Option<EntryNames<'_>>,
) -> FileChange {
    let Some(observed) = observed else {
        let diff =
            (!tainted).then(|| desired.content.shown().map(|new| unified_diff("", &new, &desired.path))).flatten();
        return FileChange {
            path: desired.path.clone(),
            action: Action::Create,
            content_changed: true,
            mode_change: Some((None, desired.mode)),
            changed_entries: entries.map(|e| e.new.keys().cloned().collect()).unwrap_or_default(),
            diff,
            desired,
        };
    };
    let content_changed = observed.content != desired.content.expose();
    let mode_changed = observed.mode != desired.mode;
    let action = if content_changed || mode_changed { Action::Update } else { Action::Unchanged };
    let changed_entries = match (content_changed, entries) {
        (true, Some(EntryNames { new, old: Some(old) })) => {
            let mut names: Vec<String> = new
                .iter()
                .filter(|(k, v)| old.get(*k).map(String::as_bytes) != Some(v.expose()))
                .map(|(k, _)| k.clone())
                .collect();
            names.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
            names.sort();
            names
        }
        _ => Vec::new(),
    };
    let diff = (content_changed && !tainted)
        .then(|| {
            let old = String::from_utf8_lossy(&observed.content);
            desired.content.shown().map(|new| unified_diff(&old, &new, &desired.path))
        })
        .flatten();
    FileChange {
        path: desired.path.clone(),
        action,
        content_changed,
        mode_change: mode_changed.then_some((Some(observed.mode), desired.mode)),
        changed_entries,
        diff,
        desired,
    }
}

fn unified_diff(old: &str, new: &str, path: &std::path::Path) -> String {
    let name = path.display().to_string();
    let (old, new) = (crate::text::escape_controls(old, true), crate::text::escape_controls(new, true));
    similar::TextDiff::from_lines(old.as_ref(), new.as_ref())
        .unified_diff()
        .context_radius(2)
        .header(
            &format!("a{}{name}", if name.starts_with('/') { "" } else { "/" }),
            &format!("b{}{name}", if name.starts_with('/') { "" } else { "/" }),
        )
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(content: &str, mode: u32) -> DesiredFile {
        DesiredFile { path: PathBuf::from("/o/api.env"), content: Content::plain(content), mode }
    }

    fn observed(content: &str, mode: u32) -> ObservedFile {
        ObservedFile { content: content.as_bytes().to_vec(), mode }
    }

    #[test]
    fn decisions() {
        let cases = [
            (None, "A=1\n", 0o644, Action::Create),
            (Some(observed("A=1\n", 0o644)), "A=1\n", 0o644, Action::Unchanged),
            (Some(observed("A=1\n", 0o644)), "A=2\n", 0o644, Action::Update),
            (Some(observed("A=1\n", 0o644)), "A=1\n", 0o600, Action::Update),
        ];
        for (obs, content, mode, want) in cases {
            let c = plan_file(desired(content, mode), obs.as_ref(), false, None);
            assert_eq!(c.action, want, "{obs:?} -> {content:?} {mode:o}");
        }
    }

    #[test]
    fn tainted_changes_name_entries_but_show_no_diff() {
        let new: BTreeMap<String, Content> =
            [("A".into(), Content::secret("CANARY-new")), ("B".into(), Content::secret("same"))].into();
        let old: BTreeMap<String, String> =
            [("A".into(), "CANARY-old".into()), ("B".into(), "same".into()), ("C".into(), "x".into())].into();
        let c = plan_file(
            desired("A=CANARY-new\nB=same\n", 0o600),
            Some(&observed("A=CANARY-old\nB=same\nC=x\n", 0o600)),
            true,
            Some(EntryNames { new: &new, old: Some(old) }),
        );
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.changed_entries, ["A", "C"]);
        assert!(c.diff.is_none());
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("CANARY"), "{json}");
    }

    #[test]
    fn untainted_changes_carry_a_unified_diff() {
        let c = plan_file(desired("A=2\n", 0o644), Some(&observed("A=1\n", 0o644)), false, None);
        let diff = c.diff.unwrap();
        assert!(diff.contains("-A=1\n+A=2\n"), "{diff}");
        assert!(diff.starts_with("--- a/o/api.env\n+++ b/o/api.env\n"), "{diff}");
    }
}
