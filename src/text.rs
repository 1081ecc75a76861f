//! Text that reaches a person's terminal.
//!
//! Values come from the source of truth, which many people can write; a
//! value holding ESC, CR or a bidi override would otherwise rewrite what a
//! reviewer sees in `diff`, `plan` or `explain` (move the cursor, hide a
//! line, reorder characters). Every value shown to a person goes through
//! [`escape_controls`]; JSON output is escaped by JSON itself.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a terminal as is.
fn is_hazard(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// `s` with control characters (C0 but tab, DEL, C1), bidi controls and —
/// when `keep_newlines` is false — newlines written as escapes (`\n`, `\r`,
/// `\e`, `\u{202e}`).
pub fn escape_controls(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_hazard(c) && c != '\t' && !(keep_newlines && c == '\n')) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\t' => out.push('\t'),
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            c if is_hazard(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` on one line: every run of whitespace (a backend's multi-line error
/// body, a command's output) folded to one space, terminal controls escaped.
pub fn one_line(text: &str) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    escape_controls(&folded, false).into_owned()
}

/// Shortens `s` to about `max` characters for a one-line display, saying
/// how much was left out.
pub fn shorten(s: &str, max: usize) -> Cow<'_, str> {
    let count = s.chars().count();
    if count <= max {
        return Cow::Borrowed(s);
    }
    let keep: String = s.chars().take(max).collect();
    Cow::Owned(format!("{keep}… ({} more characters)", count - max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_escaped() {
        assert_eq!(escape_controls("plain text\twith tab", false), "plain text\twith tab");
        assert_eq!(escape_controls("a\x1b[2Jb\rc\nd", false), "a\\e[2Jb\\rc\\nd");
        assert_eq!(escape_controls("a\nb", true), "a\nb");
        assert_eq!(escape_controls("x\u{202e}y\u{7f}z\u{9b}", true), "x\\u{202e}y\\u{7f}z\\u{9b}");
    }

    #[test]
    fn long_values_are_shortened_with_a_count() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("abcdefgh", 3), "abc… (5 more characters)");
    }
}
