//! Reading the file into the serde structs while reporting *every* problem
//! serde finds, not only the first (as linkerd2-proxy reports every bad
//! setting at once).
//!
//! serde stops at the first error, and `deny_unknown_fields` makes an
//! unknown field such an error: one typo hid every later problem. So the
//! document is parsed into TOML's spanned tree first ([`DeTable`]) and
//! deserialized from that; on an error the offending part is cut out of
//! the tree and the deserialization repeated, until it succeeds:
//!
//! - **an unknown field**: reported at its key (with a "did you mean"), and
//!   only that key removed. A config whose only serde problems are unknown
//!   fields is then built as usual, so its semantic problems are reported
//!   in the same run;
//! - **any other error** (a wrong type, a missing field, an unknown
//!   variant): reported, and the smallest entry holding it removed (a
//!   value, or the whole table when a field is missing). An error that
//!   only follows from an earlier removal (the missing field that was just
//!   removed) is not reported again. The semantic checks are skipped then:
//!   built from a tree with parts cut out they would report problems that
//!   are not in the file.
//!
//! Syntax errors are all reported (TOML's recovering parser) and end the
//! load. Each round re-reads the document, so a load stops looking after
//! [`MAX_PROBLEMS`].

use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{ConfigError, LineIndex, Problem, suggest};

/// Problems one load reports at most before it stops looking.
const MAX_PROBLEMS: usize = 50;

/// `T` from `source`, with the unknown fields that were skipped to get it
/// (as problems: the caller goes on checking and then fails); `Err` with
/// every problem when `T` could not be had without dropping more than
/// unknown fields.
pub(super) fn deserialize<T: DeserializeOwned>(
    path: &Path,
    source: &str,
    lines: &LineIndex,
) -> Result<(T, Vec<Problem>), ConfigError> {
    let at = |offset: usize| lines.location(path, source, offset);
    let (parsed, syntax) = DeTable::parse_recoverable(source);
    if !syntax.is_empty() {
        let problems = syntax
            .iter()
            .take(MAX_PROBLEMS)
            .map(|e| Problem::at(at(e.span().map_or(0, |s| s.start)), e.message().trim_end()))
            .collect();
        return Err(ConfigError { problems });
    }
    // The first round takes the tree itself: a config without problems
    // (nearly every load) costs one parse and no copy of the tree (a tenth
    // of a one-shot command's run at fleet scale). After an error the tree
    // is parsed again, and each next round deserializes a copy of it.
    let mut first_error = match T::deserialize(toml::de::Deserializer::from(parsed)) {
        Ok(value) => return Ok((value, Vec::new())),
        Err(e) => Some(e),
    };
    let mut doc = DeTable::parse_recoverable(source).0;
    let mut problems = Vec::new();
    // Paths cut out for errors other than unknown fields, and the fields
    // suggested for unknown ones: what later errors may merely follow from.
    let mut removed: Vec<Vec<Step>> = Vec::new();
    let mut suggested: Vec<String> = Vec::new();
    let mut only_unknown_fields = true;
    loop {
        let error = match first_error.take() {
            Some(e) => e,
            None => match T::deserialize(toml::de::Deserializer::from(doc.clone())) {
                Ok(value) if only_unknown_fields => return Ok((value, problems)),
                Ok(_) => return Err(ConfigError { problems }),
                Err(e) => e,
            },
        };
        let message = error.message().trim_end();
        if problems.len() >= MAX_PROBLEMS {
            problems.push(Problem { location: None, message: format!("… stopped after {MAX_PROBLEMS} problems") });
            return Err(ConfigError { problems });
        }
        let Some(span) = error.span() else {
            // Nowhere to point at, nothing to cut out: nothing more can be learnt.
            problems.push(Problem::at(at(0), message.to_owned()));
            return Err(ConfigError { problems });
        };
        if let Some(field) = unknown_field(message)
            && let Some(key) = remove_field(doc.get_mut(), &span, field)
        {
            let close = closest_expected(message, field);
            problems.push(Problem::at(
                at(key.start),
                match &close {
                    Some(c) => format!("{message} (did you mean `{c}`?)"),
                    None => message.to_owned(),
                },
            ));
            suggested.extend(close);
            continue;
        }
        only_unknown_fields = false;
        let Some(path) = smallest_holding(doc.get_ref(), &span) else {
            // Nothing smaller than the document holds it: nothing more can be learnt.
            problems.push(Problem::at(at(span.start), message.to_owned()));
            return Err(ConfigError { problems });
        };
        let follows = removed.iter().any(|r| r.starts_with(&path))
            || missing_field(message).is_some_and(|f| suggested.iter().any(|s| s == f));
        if !follows {
            problems.push(Problem::at(at(span.start), message.to_owned()));
        }
        remove(doc.get_mut(), &path);
        removed.push(path);
    }
}

/// The field of serde's "unknown field `x`, expected …".
fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

/// The field of serde's "missing field `x`".
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// The expected field of serde's message closest to `field`, if one is close.
fn closest_expected(message: &str, field: &str) -> Option<String> {
    let expected: Vec<String> = message
        .split_once("expected")
        .map(|(_, rest)| rest.split('`').skip(1).step_by(2).map(String::from).collect())
        .unwrap_or_default();
    suggest(field, &expected).map(str::to_owned)
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// One step from a table to a value.
#[derive(Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// An entry of the tree: where it is and what it spans. A `[table]`'s
/// span is its header only, so nesting is found by paths, not by spans.
struct Node {
    path: Vec<Step>,
    key: Option<Range<usize>>,
    value: Range<usize>,
    /// The span of the array holding this item: an array of tables spans
    /// its first table's header, and errors inside an item whose type buffers
    /// its content (an internally tagged enum) point at the array's span.
    array: Option<Range<usize>>,
    /// The keys of a table value, with their spans.
    keys: Vec<(String, Range<usize>)>,
}

fn nodes(value: &Spanned<DeValue<'_>>, path: &mut Vec<Step>, out: &mut Vec<Node>) {
    match value.get_ref() {
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                path.push(Step::Key(k.get_ref().to_string()));
                out.push(node(path, Some(k.span()), None, v));
                nodes(v, path, out);
                path.pop();
            }
        }
        DeValue::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(Step::Index(i));
                out.push(node(path, None, Some(value.span()), v));
                nodes(v, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn node(path: &[Step], key: Option<Range<usize>>, array: Option<Range<usize>>, value: &Spanned<DeValue<'_>>) -> Node {
    let keys = match value.get_ref() {
        DeValue::Table(t) => t.iter().map(|(k, _)| (k.get_ref().to_string(), k.span())).collect(),
        _ => Vec::new(),
    };
    Node { path: path.to_vec(), key, value: value.span(), array, keys }
}

fn all_nodes(doc: &DeTable<'_>) -> Vec<Node> {
    let mut out = Vec::new();
    // The root's keys are its nodes' keys; the root itself has no span to match.
    let root = Spanned::new(0..0, DeValue::Table(doc.clone()));
    nodes(&root, &mut Vec::new(), &mut out);
    out
}

/// Removes the key `field` the error at `span` is about: the key itself at
/// `span`, or a key of the table spanning `span` (errors inside an
/// internally tagged enum point at the whole table). Returns the key's span.
fn remove_field(doc: &mut DeTable<'_>, span: &Range<usize>, field: &str) -> Option<Range<usize>> {
    let all = all_nodes(doc);
    let exact =
        all.iter().find(|n| n.key.as_ref() == Some(span) && matches!(n.path.last(), Some(Step::Key(k)) if k == field));
    let (path, key) = match exact {
        Some(n) => (n.path.clone(), span.clone()),
        None => {
            let owner = all.iter().find(|n| {
                (n.value == *span || n.array.as_ref() == Some(span)) && n.keys.iter().any(|(k, _)| k == field)
            })?;
            let key = owner.keys.iter().find(|(k, _)| k == field).map(|(_, s)| s.clone())?;
            let mut path = owner.path.clone();
            path.push(Step::Key(field.to_owned()));
            (path, key)
        }
    };
    remove(doc, &path);
    Some(key)
}

/// The path of the smallest entry (a key and its value, or an array item)
/// holding `span`.
fn smallest_holding(doc: &DeTable<'_>, span: &Range<usize>) -> Option<Vec<Step>> {
    all_nodes(doc)
        .into_iter()
        .filter(|n| contains(&n.value, span) || n.key.as_ref().is_some_and(|k| contains(k, span)))
        // An array of tables spans what its first table does: the item wins.
        .min_by_key(|n| (n.value.len(), std::cmp::Reverse(n.path.len())))
        .map(|n| n.path)
}

/// Removes the value at `path`.
fn remove(table: &mut DeTable<'_>, path: &[Step]) {
    match path {
        [Step::Key(k)] => {
            table.remove(k.as_str());
        }
        [Step::Key(k), rest @ ..] => {
            if let Some(value) = table.get_mut(k.as_str()) {
                remove_in(value, rest);
            }
        }
        _ => {}
    }
}

fn remove_in(value: &mut Spanned<DeValue<'_>>, path: &[Step]) {
    match (value.get_mut(), path) {
        (DeValue::Table(t), _) => remove(t, path),
        (DeValue::Array(a), [Step::Index(i)]) => {
            let kept: Vec<Spanned<DeValue<'_>>> = std::mem::replace(a, toml::de::DeArray::new())
                .into_iter()
                .enumerate()
                .filter(|(j, _)| j != i)
                .map(|(_, v)| v)
                .collect();
            *a = kept.into_iter().collect();
        }
        (DeValue::Array(a), [Step::Index(i), rest @ ..]) => {
            if let Some(item) = a.as_mut().get_mut(*i) {
                remove_in(item, rest);
            }
        }
        _ => {}
    }
}
