//! What an error may say when a template stopped the rendering with
//! `throw`.
//!
//! The shipped library (and any careful template) refuses what its format
//! cannot encode with `throw(message="dotenv::block: … holds a NUL …")`.
//! In an output that reads secrets, Tera's message text is withheld (see
//! "Errors are an allow-list" in [`super`]), which used to make these
//! errors useless. Decisions:
//! - The text written in a template is known safe: the static analysis
//!   ([`super::check::ThrowSite`]) records every `throw` whose message is a
//!   literal, or a concatenation with literal parts.
//! - A thrown message is matched against the sites the failing entry's
//!   template reaches: literal parts in order, a computed part matching any
//!   text. The error shows the matching site's template, its line, and its
//!   literal parts, each computed part as `…`. What is shown is built from
//!   template text only, never from the thrown message itself, so a
//!   computed part (which may hold a secret) cannot reach the error.
//! - A message computed as a whole (`throw(message=x)`, or one with a
//!   filter) matches no site and stays withheld.
//! - In an output that reads no secret, the full message is shown, with the
//!   site's template and line when one matches.
//!
//! The analysis runs again here, on the error path only: a failed render
//! is rare, and the templates are already parsed.

use tera::Tera;

use super::check::{Analyzer, ThrowSite};

/// The message of a `RenderError` for a `throw` of `message` while
/// rendering `template`, or `None` when no site of the templates it
/// reaches matches and nothing more than the allow-list may be said.
pub(super) fn describe(
    tera: &Tera,
    sources: &[(String, String)],
    template: &str,
    message: &str,
    secret: bool,
) -> Option<String> {
    let mut analyzer = Analyzer::new(tera);
    let site = analyzer
        .throws(template)
        .into_iter()
        .filter(|site| matches(&site.parts, message))
        .max_by_key(|site| site.parts.iter().flatten().map(String::len).sum::<usize>())?;
    let text = sources.iter().find(|(n, _)| *n == site.template).map_or("", |(_, t)| t.as_str());
    // The entry is named by the error already.
    let at = match (line_of(&site, text), site.template == template) {
        (Some(line), true) if template.starts_with(super::INLINE_PREFIX) => format!("line {line} of the entry"),
        (Some(line), _) => format!("{} line {line}", super::shown_plain(&site.template)),
        (None, _) => super::shown_plain(&site.template),
    };
    if !secret {
        return Some(format!("throw at {at}: {message}"));
    }
    let shown: String = site.parts.iter().map(|p| p.as_deref().unwrap_or("…")).collect();
    let withheld = if site.parts.iter().any(Option::is_none) {
        " (the parts computed while rendering are withheld: this output reads secrets)"
    } else {
        ""
    };
    Some(format!("throw at {at}: {shown}{withheld}"))
}

/// Whether `text` is what `parts` make when each computed part is some
/// text (a glob with `*` for each `None`).
fn matches(parts: &[Option<String>], text: &str) -> bool {
    let (mut lo, mut hi) = (0, parts.len());
    let mut rest = text;
    // Anchored at the start up to the first computed part…
    if let Some(Some(first)) = parts.first() {
        let Some(r) = rest.strip_prefix(first.as_str()) else { return false };
        rest = r;
        lo = 1;
        if parts.len() == 1 {
            return rest.is_empty();
        }
    }
    // …and at the end after the last one.
    if let Some(Some(last)) = parts.last().filter(|_| hi > lo) {
        let Some(r) = rest.strip_suffix(last.as_str()) else { return false };
        rest = r;
        hi -= 1;
    }
    // In between, each literal at its leftmost place (enough for a glob).
    for lit in parts[lo..hi].iter().flatten() {
        match rest.find(lit.as_str()) {
            Some(i) => rest = &rest[i + lit.len()..],
            None => return false,
        }
    }
    true
}

/// The line of the site's longest literal part in its template's text,
/// preferring a line that calls `throw(`.
fn line_of(site: &ThrowSite, text: &str) -> Option<usize> {
    let needle = site.parts.iter().flatten().max_by_key(|p| p.len())?;
    let offsets: Vec<usize> = text.match_indices(needle.as_str()).map(|(i, _)| i).collect();
    let on_throw_line = |&&i: &&usize| {
        let start = text[..i].rfind('\n').map_or(0, |n| n + 1);
        text[start..i].contains("throw(")
    };
    let offset = offsets.iter().find(on_throw_line).or(offsets.first())?;
    Some(text[..*offset].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn parts(p: &[Option<&str>]) -> Vec<Option<String>> {
        p.iter().map(|p| p.map(str::to_owned)).collect()
    }

    #[test]
    fn a_site_matches_its_messages_and_no_other() {
        let whole = parts(&[Some("dotenv cannot encode a NUL")]);
        assert!(matches(&whole, "dotenv cannot encode a NUL"));
        assert!(!matches(&whole, "dotenv cannot encode a NUL!"));
        assert!(!matches(&whole, "xdotenv cannot encode a NUL"));
        let concat = parts(&[Some("dsn::"), None, Some(": port must be a number")]);
        assert!(matches(&concat, "dsn::postgres: port must be a number"));
        assert!(matches(&concat, "dsn::: port must be a number"));
        assert!(!matches(&concat, "dsn::postgres: host must be a name"));
        // The prefix and the suffix may not share text.
        assert!(!matches(&parts(&[Some("ab"), None, Some("ba")]), "aba"));
        let inner = parts(&[None, Some(" is "), None, Some(" bad "), None]);
        assert!(matches(&inner, "x is y bad z"));
        assert!(!matches(&inner, "x bad y is z"));
        let tail = parts(&[None, Some(" is bad")]);
        assert!(matches(&tail, "anything is bad"));
        assert!(!matches(&tail, "anything is bad!"));
        let head = parts(&[Some("bad: "), None]);
        assert!(matches(&head, "bad: anything"));
        assert!(!matches(&head, "so bad: anything"));
    }
}
