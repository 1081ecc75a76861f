//! Text that reaches a person's terminal.
//!
//! Paths are shown relative to the working directory when below it
//! ([`display_path`]), the same in plans, errors and logs.
//!
//! Values come from the source of truth, which many people can write; a
//! value holding ESC, CR or a bidi override would otherwise rewrite what a
//! reviewer sees in `diff`, `plan` or `explain` (move the cursor, hide a
//! line, reorder characters). Every value shown to a person goes through
//! [`escape_controls`]; JSON output is escaped by JSON itself.
//!
//! URLs come from the config, the environment (`VAULT_ADDR`,
//! `ETCDCTL_ENDPOINTS`), kubeconfigs and server answers, and may carry a
//! credential: `https://user:password@host`, `https://TOKEN@github.com`,
//! `?private_token=…`. [`redact_urls`] replaces the userinfo with `***`
//! and the values of query parameters named like a credential with `***`,
//! wherever a URL appears in a text. It is applied where a URL enters an
//! error (the source and CI clients' errors, the config's URL checks) and,
//! as a net under those, to every `error:` line ([`one_line`]) and every
//! log event (`crate::telemetry`). It errs on the side of hiding: text
//! between `://` and the last `@` of a URL is userinfo unless it is
//! clearly a host and a path (`host/users/@me`).

use std::borrow::Cow;
use std::fmt::Write;
use std::path::{Path, PathBuf};

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
/// body, a command's output) folded to one space, terminal controls
/// escaped, credentials in URLs redacted ([`redact_urls`]).
pub fn one_line(text: &str) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    redact_urls(&escape_controls(&folded, false)).into_owned()
}

/// Query parameters whose value is a credential, by a part of their name
/// (compared in lower case): `private_token`, `access_token`, `api_key`,
/// `X-Amz-Signature`, `client_secret`, `password`, `sig`, `code`, …
const CREDENTIAL_PARAMS: &[&str] =
    &["token", "key", "secret", "pass", "pwd", "auth", "sig", "session", "jwt", "credential", "code"];

/// `text` with every URL's userinfo (`user:password@`, `TOKEN@`) written
/// as `***@`, and the value of every query parameter named like a
/// credential as `***`. Text without `://` is returned as is.
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The URL as far as it can reach: a password may hold `)` or `,`.
        let end =
            tail.find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`')).unwrap_or(tail.len());
        let url = &tail[..end];
        let mut host_at = 0;
        if let Some(at) = url.rfind('@') {
            let userinfo = &url[..at];
            let is_userinfo = !userinfo.is_empty()
                && userinfo.find(['/', '?', '#']).is_none_or(|path| userinfo[..path].contains(':'));
            if is_userinfo {
                out.push_str("***@");
                host_at = at + 1;
                changed = true;
            }
        }
        let query = redact_query(&url[host_at..]);
        changed |= matches!(query, Cow::Owned(_));
        out.push_str(&query);
        rest = &tail[end..];
    }
    out.push_str(rest);
    if changed { Cow::Owned(out) } else { Cow::Borrowed(text) }
}

/// `url` (from its host on) with the values of credential parameters of
/// its query written as `***`.
fn redact_query(url: &str) -> Cow<'_, str> {
    let Some(q) = url.find('?') else { return Cow::Borrowed(url) };
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..=q]);
    let mut changed = false;
    let mut rest = &url[q + 1..];
    loop {
        // A parameter ends at `&` or `;`; the query at `#` or where the URL
        // is closed by what surrounds it.
        let end = rest.find(['&', ';', '#', ')', ']', ',']).unwrap_or(rest.len());
        let param = &rest[..end];
        match param.split_once('=') {
            Some((name, value))
                if !value.is_empty() && CREDENTIAL_PARAMS.iter().any(|p| name.to_ascii_lowercase().contains(p)) =>
            {
                out.push_str(name);
                out.push_str("=***");
                changed = true;
            }
            _ => out.push_str(param),
        }
        let Some(sep) = rest[end..].chars().next() else { break };
        out.push(sep);
        rest = &rest[end + 1..];
        if sep != '&' && sep != ';' {
            out.push_str(rest);
            break;
        }
    }
    if changed { Cow::Owned(out) } else { Cow::Borrowed(url) }
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

/// The path as shown: relative to the working directory when below it.
pub fn display_path(path: &Path) -> String {
    if path.is_relative() {
        let clean: PathBuf = path.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect();
        return clean.display().to_string();
    }
    let cwd = std::env::current_dir().ok();
    match cwd.as_deref().and_then(|c| path.strip_prefix(c).ok()) {
        Some(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
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
    fn credentials_in_urls_are_redacted_wherever_they_appear() {
        let cases = [
            ("http://user:pw@host:8200/v1/x", "http://***@host:8200/v1/x"),
            ("https://TOKEN@github.com/acme/api.git", "https://***@github.com/acme/api.git"),
            (
                "error sending request for url (http://root:s3cr3t@127.0.0.1:1/v1/auth): client error",
                "error sending request for url (http://***@127.0.0.1:1/v1/auth): client error",
            ),
            ("\"https://ci:p/w@gitlab.example.com\" is not a URL", "\"https://***@gitlab.example.com\" is not a URL"),
            ("http://u:p@ss@host", "http://***@host"),
            ("http://u:a)b,c@host", "http://***@host"),
            ("http://a:2379,http://u:p@b:2379", "http://***@b:2379"),
            (
                "https://x.example/api?private_token=abc&per_page=100",
                "https://x.example/api?private_token=***&per_page=100",
            ),
            ("(https://x/?X-Amz-Signature=abc#frag)", "(https://x/?X-Amz-Signature=***#frag)"),
            (
                "https://a.example?access_token=t1 and http://b:pw@c",
                "https://a.example?access_token=*** and http://***@c",
            ),
            ("http://[::1]:8080/p?page=2", "http://[::1]:8080/p?page=2"),
        ];
        for (text, want) in cases {
            assert_eq!(redact_urls(text), want, "{text}");
        }
        for plain in
            ["no url here", "https://gitlab.com/api/v4/users/@me", "mailto:a@b", "http://host/a@b", "a :// b@c"]
        {
            assert!(matches!(redact_urls(plain), Cow::Borrowed(_)), "{plain}: {}", redact_urls(plain));
        }
        assert_eq!(one_line("cannot reach\n  http://u:pw@h/"), "cannot reach http://***@h/");
    }

    #[test]
    fn long_values_are_shortened_with_a_count() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("abcdefgh", 3), "abc… (5 more characters)");
    }
}
