//! File formats a `file` target can write an output in.
//!
//! An output is an ordered map of entry name to rendered text. The single-file
//! formats turn the whole map into one file's content; `dir` writes one file
//! per entry instead:
//!
//! - `dotenv`: one `NAME=value` line per entry, in name order. Quoting is the
//!   subtle part and is described below.
//! - `json`: a pretty-printed object of string values, keys sorted.
//! - `yaml`: a mapping of string values, written by `serde-saphyr`, which
//!   quotes every scalar YAML would otherwise read as something other than
//!   that string (`yes`, `null`, `~`, `0x10`, `1e3`, …).
//! - `raw`: the text of the output's only entry, byte for byte.
//! - `dir`: every entry becomes a file named after it, so names are checked to
//!   be one plain file name that cannot escape the directory or collide with
//!   cfgsync's own `.cfgsync*` bookkeeping files.
//!
//! Every file ends in a newline except `raw` and `dir` files, which hold
//! exactly the entry's text.
//!
//! # Dotenv quoting
//!
//! A dotenv file is only useful if the programs that read it get back exactly
//! the value we rendered, and the common readers disagree about nearly every
//! special character. The rules were checked against the source and behaviour
//! of the `dotenvy` crate (0.15), python-dotenv (1.x, `dotenv_values` with its
//! default `interpolate=True`) and the compose-go parser behind
//! `docker compose` (v2, the quote scanner that tracks escapes):
//!
//! - dotenvy substitutes `$VAR` and `${VAR}` in unquoted and double-quoted
//!   values and honours `\$`; in double quotes it knows only the escapes
//!   `\\ \" \' \$ \n` and `\ `, and any other escape is an error.
//! - compose substitutes in the same places, turns `\$` into a literal `$`,
//!   and keeps backslashes literally in unquoted values.
//! - python-dotenv interpolates `${VAR}` in *every* value, single-quoted ones
//!   included, and has no escape for it; it does not treat `\$` as an escape;
//!   in single quotes it decodes `\\` and `\'`. It opens the file with Python's
//!   universal newlines, so every carriage return reaches it as `\n`.
//! - Single-quoted values are literal in dotenvy and compose, and may span
//!   lines in all three. A backslash right before the closing quote makes
//!   dotenvy and compose treat that quote as escaped.
//!
//! So each value gets the first form that fits:
//!
//! 1. `NAME=''` for the empty value.
//! 2. Unquoted when every character is an ASCII letter, digit or one of
//!    `_ - . , / : @ % + = ^ ~`: nothing in that set means anything to any of
//!    the parsers.
//! 3. Single quotes, with the text verbatim (newlines included), when the value
//!    has no `'`, no two adjacent backslashes and does not end in a backslash.
//!    This is the only form python-dotenv reads `$` from exactly, so it is
//!    preferred over double quotes wherever it is exact.
//! 4. Double quotes otherwise, escaping `\` as `\\`, `"` as `\"`, `$` as `\$`
//!    and newline as `\n`; everything else (`'`, tab, carriage return,
//!    non-ASCII) is written as is, since `\t` and `\r` are errors in dotenvy.
//!    A value ending in a backslash gets a trailing ` #"` comment, explained
//!    below.
//!
//! With these rules dotenvy and compose read every value exactly (a NUL
//! character is refused, as no environment variable can hold one).
//! python-dotenv reads every value exactly except in these cases, where no
//! form is exact for it and for dotenvy at the same time:
//!
//! - a carriage return (`\r` or `\r\n`) reads back as `\n`: the only other way
//!   to write one, the `\r` escape, is an error in dotenvy;
//! - a `${…}` sequence (`\$\{[^}:]*(:-[^}]*)?\}`) is replaced by the variable,
//!   whichever quotes are used;
//! - a double-quoted value (form 4) that contains `$` keeps a backslash before
//!   each `$`: that happens when the `$` comes with a `'`, a `\\` pair or a
//!   trailing backslash, none of which single quotes can carry;
//! - a value ending in a backslash (form 4): python-dotenv takes the final
//!   `\\"` for an escaped quote and would run on into the following lines,
//!   swallowing the next entries. The ` #"` comment, which dotenvy and compose
//!   skip, gives it a closing quote on the same line, so it reads this one
//!   value with `" #` appended and every other entry correctly. Compose
//!   releases older than the escape-tracking quote scanner also cut such a
//!   value short.

use std::collections::BTreeMap;

/// How a `file` target serializes its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Dotenv,
    Json,
    Yaml,
    Raw,
    Dir,
}

/// Why an output could not be written in, or read from, a format.
///
/// Variants carry entry names and positions but never an entry's value, as
/// values are often secrets and errors end up in logs.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("entry {name:?} cannot be written to a dotenv file: names must match [A-Za-z_][A-Za-z0-9_]*")]
    InvalidEnvName { name: String },

    #[error(
        "entry {name:?} cannot be written to a dotenv file: its value holds a NUL character, which no environment variable can carry"
    )]
    NulInEnvValue { name: String },

    #[error("entry {name:?} is not text, and this format writes text: use format \"raw\" or \"dir\"")]
    NotText { name: String },

    #[error("the raw format writes exactly one entry, but the output has {count}")]
    RawNeedsOneEntry { count: usize },

    #[error("the dir format writes one file per entry and has no single-file form")]
    DirIsNotOneFile,

    #[error("entry {name:?} cannot be a file name in a dir target: {reason}")]
    UnsafeFileName { name: String, reason: &'static str },

    #[error("could not write entries as JSON")]
    Json(#[source] serde_json::Error),

    #[error("could not write entries as YAML")]
    Yaml(#[source] serde_saphyr::SerializeError),

    #[error("dotenv line {line}: {reason}")]
    DotenvSyntax { line: usize, reason: &'static str },
}

/// Serialize entries for a single-file format (Dotenv, Json, Yaml, Raw). Raw
/// requires exactly one entry and returns its text unchanged.
pub fn encode(format: Format, entries: &BTreeMap<String, String>) -> Result<String, FormatError> {
    match format {
        Format::Dotenv => encode_dotenv(entries),
        Format::Json => {
            let mut text = serde_json::to_string_pretty(entries).map_err(FormatError::Json)?;
            text.push('\n');
            Ok(text)
        }
        Format::Yaml => {
            let mut text = serde_saphyr::to_string(entries).map_err(FormatError::Yaml)?;
            if !text.ends_with('\n') {
                text.push('\n');
            }
            Ok(text)
        }
        Format::Raw => match entries.values().next() {
            Some(text) if entries.len() == 1 => Ok(text.clone()),
            _ => Err(FormatError::RawNeedsOneEntry { count: entries.len() }),
        },
        Format::Dir => Err(FormatError::DirIsNotOneFile),
    }
}

/// For Dir: check every entry name is a safe single file name and return
/// (file name, content) pairs.
///
/// Names come from configuration, so anything that could leave the target
/// directory, address it or its parent, or overwrite cfgsync's own `.cfgsync*`
/// state files is refused rather than sanitized: a silently renamed file would
/// never be found by its consumer.
pub fn encode_dir(entries: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, FormatError> {
    entries
        .iter()
        .map(|(name, content)| {
            check_file_name(name).map_err(|reason| FormatError::UnsafeFileName { name: name.clone(), reason })?;
            Ok((name.clone(), content.clone()))
        })
        .collect()
}

pub fn check_file_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("it is empty")
    } else if name == "." || name == ".." {
        Err("it names a directory, not a file")
    } else if name.contains(['/', '\\']) {
        Err("it contains a path separator")
    } else if name.contains('\0') {
        Err("it contains a NUL character")
    } else if name.starts_with(".cfgsync") {
        Err("names starting with .cfgsync are reserved for cfgsync's own files")
    } else {
        Ok(())
    }
}

fn encode_dotenv(entries: &BTreeMap<String, String>) -> Result<String, FormatError> {
    let mut out = String::new();
    for (name, value) in entries {
        if !is_env_name(name) {
            return Err(FormatError::InvalidEnvName { name: name.clone() });
        }
        if value.contains('\0') {
            return Err(FormatError::NulInEnvValue { name: name.clone() });
        }
        out.push_str(name);
        out.push('=');
        push_dotenv_value(&mut out, value);
        out.push('\n');
    }
    Ok(out)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Characters that no dotenv parser treats specially anywhere in a value.
fn is_bare_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ',' | '/' | ':' | '@' | '%' | '+' | '=' | '^' | '~')
}

/// Writes the value in the first form of the module doc's list that fits.
fn push_dotenv_value(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push_str("''");
    } else if value.chars().all(is_bare_safe) {
        out.push_str(value);
    } else if !value.contains('\'') && !value.contains("\\\\") && !value.ends_with('\\') {
        out.push('\'');
        out.push_str(value);
        out.push('\'');
    } else {
        out.push('"');
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '$' => out.push_str("\\$"),
                '\n' => out.push_str("\\n"),
                _ => out.push(c),
            }
        }
        out.push('"');
        if value.ends_with('\\') {
            // Gives python-dotenv, which reads the final `\\"` as an escaped
            // quote, a closing quote before the next entry (module doc).
            out.push_str(" #\"");
        }
    }
}

/// Parse dotenv text as written by `encode` back into a map (used by `plan`
/// to say which keys changed).
///
/// This reads the forms `encode` writes, with dotenvy's meaning, plus comments,
/// blank lines, `export` prefixes and CRLF line ends that a person editing the
/// file may add. It refuses whatever would need variable substitution (an
/// unescaped `$` outside single quotes) or that the writers disagree on,
/// because a value guessed here would make `plan` report a change wrongly.
/// A later duplicate of a name wins, as in the common readers.
pub fn decode_dotenv(text: &str) -> Result<BTreeMap<String, String>, FormatError> {
    let mut reader = DotenvReader { rest: text.strip_prefix('\u{feff}').unwrap_or(text), line: 1 };
    let mut entries = BTreeMap::new();
    while let Some((name, value)) = reader.next_entry()? {
        entries.insert(name, value);
    }
    Ok(entries)
}

struct DotenvReader<'a> {
    rest: &'a str,
    line: usize,
}

impl DotenvReader<'_> {
    fn err(&self, reason: &'static str) -> FormatError {
        FormatError::DotenvSyntax { line: self.line, reason }
    }

    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.rest = &self.rest[c.len_utf8()..];
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn skip_blanks(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    /// Consumes a line end (`\n`, `\r\n`) or the end of the text.
    fn end_of_line(&mut self) -> bool {
        if self.rest.is_empty() {
            true
        } else if let Some(rest) = self.rest.strip_prefix("\r\n") {
            self.rest = rest;
            self.line += 1;
            true
        } else if self.peek() == Some('\n') {
            self.bump();
            true
        } else {
            false
        }
    }

    fn skip_comment(&mut self) {
        let end = self.rest.find('\n').unwrap_or(self.rest.len());
        self.rest = &self.rest[end..];
        if let Some(stripped) = self.rest.strip_prefix('\n') {
            self.rest = stripped;
            self.line += 1;
        }
    }

    fn next_entry(&mut self) -> Result<Option<(String, String)>, FormatError> {
        loop {
            self.skip_blanks();
            match self.peek() {
                None => return Ok(None),
                Some('#') => self.skip_comment(),
                Some(_) if self.end_of_line() => {}
                Some(_) => break,
            }
        }
        if let Some(after) = self.rest.strip_prefix("export")
            && after.starts_with([' ', '\t'])
        {
            self.rest = after;
            self.skip_blanks();
        }
        let name_len = self.rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(self.rest.len());
        let name = &self.rest[..name_len];
        if !is_env_name(name) {
            return Err(self.err("expected a variable name"));
        }
        let name = name.to_owned();
        self.rest = &self.rest[name_len..];
        self.skip_blanks();
        if self.bump() != Some('=') {
            return Err(self.err("expected '=' after the variable name"));
        }
        self.skip_blanks();
        let value = match self.peek() {
            Some('\'') => self.single_quoted()?,
            Some('"') => self.double_quoted()?,
            _ => return self.unquoted().map(|value| Some((name, value))),
        };
        self.skip_blanks();
        if self.peek() == Some('#') {
            self.skip_comment();
        } else if !self.end_of_line() {
            return Err(self.err("unexpected text after the closing quote"));
        }
        Ok(Some((name, value)))
    }

    fn single_quoted(&mut self) -> Result<String, FormatError> {
        self.bump();
        let Some(end) = self.rest.find('\'') else {
            return Err(self.err("unterminated single-quoted value"));
        };
        let value = self.rest[..end].to_owned();
        self.line += value.matches('\n').count();
        self.rest = &self.rest[end + 1..];
        Ok(value)
    }

    fn double_quoted(&mut self) -> Result<String, FormatError> {
        self.bump();
        let mut value = String::new();
        loop {
            match self.bump() {
                None => return Err(self.err("unterminated double-quoted value")),
                Some('"') => return Ok(value),
                Some('$') => {
                    return Err(self.err("unescaped '$' would need variable substitution"));
                }
                Some('\\') => match self.bump() {
                    Some(c @ ('\\' | '"' | '\'' | '$' | ' ')) => value.push(c),
                    Some('n') => value.push('\n'),
                    _ => return Err(self.err("unsupported escape in a double-quoted value")),
                },
                Some(c) => value.push(c),
            }
        }
    }

    fn unquoted(&mut self) -> Result<String, FormatError> {
        let end = self.rest.find('\n').unwrap_or(self.rest.len());
        let line = &self.rest[..end];
        let line = line.strip_suffix('\r').unwrap_or(line);
        let value_len = line.find([' ', '\t']).unwrap_or(line.len());
        let (value, tail) = line.split_at(value_len);
        let tail = tail.trim_start_matches([' ', '\t']);
        if !(tail.is_empty() || tail.starts_with('#')) {
            return Err(self.err("unquoted value contains whitespace"));
        }
        if value.contains(['\'', '"', '\\', '$']) {
            return Err(self.err("unquoted value contains a quote, a backslash or '$', which readers disagree on"));
        }
        let value = value.to_owned();
        self.rest = &self.rest[end..];
        self.end_of_line();
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Stands in for `$HOME` in the python-dotenv subprocess so interpolated
    /// values are predictable.
    const PY_HOME: &str = "/home/cfgsync-test";

    const CANARY: &str = "CANARY-s3cr3t-9f2a";

    /// What python-dotenv reads back for a case; dotenvy and compose read
    /// every case exactly.
    #[derive(Clone, Copy)]
    enum Py {
        Exact,
        /// Not representable exactly for python-dotenv (module doc); it
        /// reads this instead.
        Reads(&'static str),
    }

    /// (value, the form `encode` must choose, what python-dotenv reads)
    #[rustfmt::skip]
    const CASES: &[(&str, &str, Py)] = &[
        ("plain", "plain", Py::Exact),
        ("a=b", "a=b", Py::Exact),
        ("postgres://u@h:5432/db?x=1", "'postgres://u@h:5432/db?x=1'", Py::Exact),
        ("", "''", Py::Exact),
        ("it's", r#""it's""#, Py::Exact),
        ("'", r#""'""#, Py::Exact),
        (r#"say "hi""#, r#"'say "hi"'"#, Py::Exact),
        ("\"", r#"'"'"#, Py::Exact),
        (r#"both ' and ""#, r#""both ' and \"""#, Py::Exact),
        (r#"{"json": "v"}"#, r#"'{"json": "v"}'"#, Py::Exact),
        ("$HOME", "'$HOME'", Py::Exact),
        ("${HOME}", "'${HOME}'", Py::Reads(PY_HOME)),
        ("x${HOME", "'x${HOME'", Py::Exact),
        ("$", "'$'", Py::Exact),
        ("$$", "'$$'", Py::Exact),
        (r"\$", r"'\$'", Py::Exact),
        (r"^\d+$", r"'^\d+$'", Py::Exact),
        ("#", "'#'", Py::Exact),
        ("a#b", "'a#b'", Py::Exact),
        (" # comment", "' # comment'", Py::Exact),
        ("  leading", "'  leading'", Py::Exact),
        ("trailing  ", "'trailing  '", Py::Exact),
        ("a\tb", "'a\tb'", Py::Exact),
        ("\ttab", "'\ttab'", Py::Exact),
        ("line1\nline2", "'line1\nline2'", Py::Exact),
        ("ends in newline\n", "'ends in newline\n'", Py::Exact),
        (
            "-----BEGIN KEY-----\nabc\n-----END KEY-----\n",
            "'-----BEGIN KEY-----\nabc\n-----END KEY-----\n'",
            Py::Exact,
        ),
        ("crlf\r\nend", "'crlf\r\nend'", Py::Reads("crlf\nend")),
        ("lone\rcr", "'lone\rcr'", Py::Reads("lone\ncr")),
        ("ends in cr\r", "'ends in cr\r'", Py::Reads("ends in cr\n")),
        (r"C:\path\to", r"'C:\path\to'", Py::Exact),
        (r"\n", r"'\n'", Py::Exact),
        (r"a\\b", r#""a\\\\b""#, Py::Exact),
        (r"\'", r#""\\'""#, Py::Exact),
        ("it's\na\\b", r#""it's\na\\b""#, Py::Exact),
        ("trailing\\", r#""trailing\\" #""#, Py::Reads("trailing\\\" #")),
        ("\\", r#""\\" #""#, Py::Reads("\\\" #")),
        ("a\\\\", r#""a\\\\" #""#, Py::Reads("a\\\\\" #")),
        ("$HOME it's", r#""\$HOME it's""#, Py::Reads(r"\$HOME it's")),
        (r"\\$x", r#""\\\\\$x""#, Py::Reads(r"\\\$x")),
        ("x$\\", r#""x\$\\" #""#, Py::Reads("x\\$\\\" #")),
        ("é", "'é'", Py::Exact),
        ("日本", "'日本'", Py::Exact),
        ("emoji 🦀", "'emoji 🦀'", Py::Exact),
        ("nbsp\u{a0}nel\u{85}ls\u{2028}", "'nbsp\u{a0}nel\u{85}ls\u{2028}'", Py::Exact),
        ("`backticks`", "'`backticks`'", Py::Exact),
        ("`echo $HOME`", "'`echo $HOME`'", Py::Exact),
        ("semi;colon|pipe&amp", "'semi;colon|pipe&amp'", Py::Exact),
    ];

    /// Entry names keep table order when sorted, and put every kind of line
    /// after every other, so one value misread into the next line shows up.
    fn case_name(i: usize) -> String {
        format!("V{i:03}")
    }

    fn table() -> BTreeMap<String, String> {
        CASES.iter().enumerate().map(|(i, (value, _, _))| (case_name(i), (*value).to_owned())).collect()
    }

    fn dotenv_of(value: &str) -> String {
        encode(Format::Dotenv, &BTreeMap::from([("K".to_owned(), value.to_owned())])).expect("encodes")
    }

    #[test]
    fn dotenv_chooses_the_documented_form() {
        for (value, form, _) in CASES {
            assert_eq!(dotenv_of(value), format!("K={form}\n"), "value {value:?}");
        }
    }

    #[test]
    fn dotenv_round_trips_through_dotenvy() {
        let text = encode(Format::Dotenv, &table()).expect("encodes");
        let read: BTreeMap<String, String> =
            dotenvy::from_read_iter(text.as_bytes()).collect::<Result<_, _>>().expect("dotenvy parses the file");
        assert_eq!(read, table());
        // Each value alone too, so no case passes only thanks to its neighbours.
        for (value, _, _) in CASES {
            let text = dotenv_of(value);
            let read: Vec<(String, String)> =
                dotenvy::from_read_iter(text.as_bytes()).collect::<Result<_, _>>().expect("dotenvy parses the file");
            assert_eq!(read, [("K".to_owned(), (*value).to_owned())], "{text:?}");
        }
    }

    #[test]
    fn dotenv_round_trips_through_compose_rules() {
        let text = encode(Format::Dotenv, &table()).expect("encodes");
        assert_eq!(compose_go::parse(&text), Ok(table()));
    }

    #[test]
    fn dotenv_reads_back_in_python_dotenv_as_documented() {
        let text = encode(Format::Dotenv, &table()).expect("encodes");
        let read = python_dotenv_values(&text);
        let expected: BTreeMap<String, Option<String>> = CASES
            .iter()
            .enumerate()
            .map(|(i, (value, _, py))| {
                let read = match py {
                    Py::Exact => value,
                    Py::Reads(other) => other,
                };
                (case_name(i), Some((*read).to_owned()))
            })
            .collect();
        for (name, want) in &expected {
            assert_eq!(read.get(name), Some(want), "python-dotenv reading {name}");
        }
        assert_eq!(read, expected);
    }

    #[test]
    fn trailing_backslash_does_not_swallow_the_next_entries_in_python() {
        let entries = BTreeMap::from([
            ("A".to_owned(), "ends\\".to_owned()),
            ("B".to_owned(), "it's".to_owned()),
            ("C".to_owned(), "a\\\\b".to_owned()),
        ]);
        let read = python_dotenv_values(&encode(Format::Dotenv, &entries).expect("encodes"));
        assert_eq!(read.get("A"), Some(&Some("ends\\\" #".to_owned())));
        assert_eq!(read.get("B"), Some(&Some("it's".to_owned())));
        assert_eq!(read.get("C"), Some(&Some("a\\\\b".to_owned())));
    }

    #[test]
    fn dotenv_decodes_what_it_encodes() {
        let text = encode(Format::Dotenv, &table()).expect("encodes");
        assert_eq!(decode_dotenv(&text).expect("decodes"), table());
        for (value, _, _) in CASES {
            let decoded = decode_dotenv(&dotenv_of(value)).expect("decodes");
            assert_eq!(decoded.get("K").map(String::as_str), Some(*value));
        }
    }

    #[test]
    fn dotenv_decodes_hand_edits_and_refuses_ambiguity() {
        let text = "\u{feff}# header\r\n\r\nexport A=1 # note\r\nB = 'x y' # note\n  C=\nD=\"q\\\"\"\nA=2\n";
        let expected = BTreeMap::from([
            ("A".to_owned(), "2".to_owned()),
            ("B".to_owned(), "x y".to_owned()),
            ("C".to_owned(), String::new()),
            ("D".to_owned(), "q\"".to_owned()),
        ]);
        assert_eq!(decode_dotenv(text).expect("decodes"), expected);
        for (bad, line) in [
            ("A=$HOME\n", 1),
            ("A=ok\nB=\"$HOME\"\n", 2),
            ("A=two words\n", 1),
            ("A='open\n", 1),
            ("A=\"open\n", 2),
            ("A=\"\\t\"\n", 1),
            ("A='x' y\n", 1),
            ("1A=x\n", 1),
            ("A x\n", 1),
        ] {
            match decode_dotenv(bad) {
                Err(FormatError::DotenvSyntax { line: got, .. }) => {
                    assert_eq!(got, line, "{bad:?}")
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn dotenv_refuses_invalid_names() {
        for name in ["", "1A", "A-B", "A.B", "A B", "É", "A=B"] {
            let entries = BTreeMap::from([(name.to_owned(), "v".to_owned())]);
            match encode(Format::Dotenv, &entries) {
                Err(FormatError::InvalidEnvName { name: got }) => assert_eq!(got, name),
                other => panic!("{name:?} gave {other:?}"),
            }
        }
        let entries = BTreeMap::from([("_ok_9".to_owned(), "v".to_owned())]);
        assert_eq!(encode(Format::Dotenv, &entries).expect("valid"), "_ok_9=v\n");
    }

    #[test]
    fn dotenv_of_nothing_is_empty() {
        assert_eq!(encode(Format::Dotenv, &BTreeMap::new()).expect("encodes"), "");
    }

    #[test]
    fn errors_never_show_values() {
        let failures = [
            encode(Format::Dotenv, &BTreeMap::from([("BAD-NAME".to_owned(), CANARY.to_owned())])),
            encode(Format::Dotenv, &BTreeMap::from([("NUL".to_owned(), format!("{CANARY}\0"))])),
            encode(
                Format::Raw,
                &BTreeMap::from([("a".to_owned(), CANARY.to_owned()), ("b".to_owned(), CANARY.to_owned())]),
            ),
            encode(Format::Dir, &BTreeMap::from([("a".to_owned(), CANARY.to_owned())])),
            encode_dir(&BTreeMap::from([("../x".to_owned(), CANARY.to_owned())])).map(|_| String::new()),
            decode_dotenv(&format!("A=\"{CANARY}\n")).map(|_| String::new()),
            decode_dotenv(&format!("A={CANARY} {CANARY}\n")).map(|_| String::new()),
            decode_dotenv(&format!("A=\"{CANARY}$x\"\n")).map(|_| String::new()),
        ];
        for failure in failures {
            let err = failure.expect_err("fails");
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(!text.contains(CANARY), "{text}");
            }
        }
    }

    /// Values YAML would read as another type or mangle unless quoted.
    const AWKWARD: &[&str] = &[
        "yes",
        "no",
        "on",
        "off",
        "true",
        "False",
        "null",
        "Null",
        "~",
        "",
        "0x10",
        "0o17",
        "1e3",
        "012",
        ".inf",
        "-.nan",
        "1_000",
        "2024-01-01",
        "  leading",
        "trailing ",
        "multi\nline\n",
        "multi\nline no end",
        "\n\nblank lines\n\n",
        "key: value",
        "a #b",
        "# c",
        "- item",
        "[x]",
        "{y}",
        "*alias",
        "&anchor",
        "!tag",
        "%dir",
        "@at",
        "`tick",
        "'single'",
        "\"double\"",
        "é 日本 🦀",
        "tab\there",
        "cr\r\nlf",
        "back\\slash",
        "---",
        "...",
        "? q",
        "|",
        ">",
    ];

    #[test]
    fn yaml_round_trips_awkward_strings() {
        let entries: BTreeMap<String, String> = AWKWARD
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("k{i:02}"), (*v).to_owned()))
            .chain(AWKWARD.iter().map(|v| ((*v).to_owned(), "as key".to_owned())))
            .collect();
        let text = encode(Format::Yaml, &entries).expect("encodes");
        assert!(text.ends_with('\n'), "{text}");
        let back: BTreeMap<String, String> = serde_saphyr::from_str(&text).expect("parses");
        assert_eq!(back, entries, "{text}");
    }

    #[test]
    fn yaml_of_nothing_is_an_empty_mapping() {
        let text = encode(Format::Yaml, &BTreeMap::new()).expect("encodes");
        assert!(text.ends_with('\n'));
        let back: BTreeMap<String, String> = serde_saphyr::from_str(&text).expect("parses");
        assert!(back.is_empty());
    }

    #[test]
    fn json_round_trips_sorted_with_newline() {
        let entries: BTreeMap<String, String> = AWKWARD
            .iter()
            .chain(CASES.iter().map(|(v, _, _)| v))
            .enumerate()
            .map(|(i, v)| (format!("k{i:03}"), (*v).to_owned()))
            .collect();
        let text = encode(Format::Json, &entries).expect("encodes");
        assert!(text.ends_with("}\n"));
        let back: BTreeMap<String, String> = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, entries);
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
            .expect("parses")
            .keys()
            .cloned()
            .collect();
        assert!(keys.is_sorted());
        assert_eq!(
            encode(Format::Json, &BTreeMap::from([("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())]))
                .expect("encodes"),
            "{\n  \"a\": \"1\",\n  \"b\": \"2\"\n}\n"
        );
    }

    #[test]
    fn raw_writes_the_only_entry_verbatim() {
        let text = "no trailing newline\r\n\tand $HOME";
        let entries = BTreeMap::from([("only".to_owned(), text.to_owned())]);
        assert_eq!(encode(Format::Raw, &entries).expect("one entry"), text);
        for count in [0, 2] {
            let entries: BTreeMap<String, String> = (0..count).map(|i| (format!("e{i}"), "v".to_owned())).collect();
            match encode(Format::Raw, &entries) {
                Err(FormatError::RawNeedsOneEntry { count: got }) => assert_eq!(got, count),
                other => panic!("{count} entries gave {other:?}"),
            }
        }
    }

    #[test]
    fn dir_has_no_single_file_form() {
        assert!(matches!(encode(Format::Dir, &BTreeMap::new()), Err(FormatError::DirIsNotOneFile)));
    }

    #[test]
    fn dir_accepts_plain_names_and_keeps_content() {
        let entries = BTreeMap::from([
            ("b.pem".to_owned(), "x\n".to_owned()),
            ("a".to_owned(), String::new()),
            (".env".to_owned(), "A=1".to_owned()),
            ("..hidden".to_owned(), "y".to_owned()),
            ("cfgsync.state".to_owned(), "z".to_owned()),
            ("日本 file".to_owned(), "w".to_owned()),
        ]);
        let files = encode_dir(&entries).expect("all safe");
        let expected: Vec<(String, String)> = entries.into_iter().collect();
        assert_eq!(files, expected);
    }

    #[test]
    fn dir_refuses_unsafe_names() {
        for name in
            ["", ".", "..", "a/b", "/abs", "a\\b", "..\\up", "nul\0", ".cfgsync", ".cfgsync-state", ".cfgsync.lock"]
        {
            let entries = BTreeMap::from([("fine".to_owned(), "v".to_owned()), (name.to_owned(), "v".to_owned())]);
            match encode_dir(&entries) {
                Err(FormatError::UnsafeFileName { name: got, .. }) => assert_eq!(got, name),
                other => panic!("{name:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn format_deserializes_from_lowercase_names() {
        #[derive(serde::Deserialize)]
        struct Target {
            format: Format,
        }
        for (text, format) in [
            ("dotenv", Format::Dotenv),
            ("json", Format::Json),
            ("yaml", Format::Yaml),
            ("raw", Format::Raw),
            ("dir", Format::Dir),
        ] {
            let target: Target = serde_json::from_str(&format!("{{\"format\":\"{text}\"}}")).expect("known");
            assert_eq!(target.format, format);
        }
        assert!(serde_json::from_str::<Target>("{\"format\":\"Dotenv\"}").is_err());
    }

    /// A file path unique to this process and call, removed on drop.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new() -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            Self(std::env::temp_dir().join(format!("cfgsync-format-test-{}-{n}.env", std::process::id())))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const PYTHON_READER: &str = r#"
import json, sys
try:
    import dotenv
except ImportError:
    sys.exit(3)
print(json.dumps(dotenv.dotenv_values(sys.argv[1])))
"#;

    /// Reads `text` the way a Python program would: from a file, through
    /// `dotenv_values` with its defaults.
    fn python_dotenv_values(text: &str) -> BTreeMap<String, Option<String>> {
        let path = TempPath::new();
        std::fs::write(&path.0, text).expect("writes the temporary file");
        run_python(&path.0)
    }

    fn run_python(path: &Path) -> BTreeMap<String, Option<String>> {
        const INSTALL: &str = "these tests need python3 with python-dotenv: run `pip install python-dotenv`";
        let output = Command::new("python3")
            .arg("-c")
            .arg(PYTHON_READER)
            .arg(path)
            .env("HOME", PY_HOME)
            .output()
            .unwrap_or_else(|e| panic!("{INSTALL} (could not start python3: {e})"));
        assert_ne!(output.status.code(), Some(3), "{INSTALL}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "python3 failed: {stderr}");
        assert!(stderr.is_empty(), "python-dotenv complained: {stderr}");
        serde_json::from_slice(&output.stdout).expect("python printed JSON")
    }

    /// The rules of compose-go's `dotenv` package (v2, `parser.go` with the
    /// escape-tracking quote scanner, and `template` substitution), reduced
    /// to the constructs a dotenv file written by `encode` can contain. Docker
    /// Compose cannot run here, so this port is what the compose claims in the
    /// module doc are checked against.
    mod compose_go {
        use std::collections::BTreeMap;

        pub fn parse(src: &str) -> Result<BTreeMap<String, String>, String> {
            let mut out = BTreeMap::new();
            let mut rest = src;
            loop {
                rest = rest.trim_start();
                if rest.is_empty() {
                    return Ok(out);
                }
                if rest.starts_with('#') {
                    rest = rest.find('\n').map_or("", |i| &rest[i..]);
                    continue;
                }
                let eq = rest.find('=').ok_or("no '='")?;
                let key = rest[..eq].trim_end().to_owned();
                rest = rest[eq + 1..].trim_start_matches(is_space);
                let value;
                match rest.as_bytes().first() {
                    Some(&quote @ (b'\'' | b'"')) => {
                        let (raw, after) = quoted(rest, quote)?;
                        value = if quote == b'"' { substitute(&expand_escapes(&raw))? } else { raw };
                        rest = after;
                    }
                    _ => {
                        let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
                        let line = line.split_once(" #").map_or(line, |(v, _)| v);
                        value = substitute(line.trim_end())?;
                        rest = after;
                    }
                }
                out.insert(key, value);
            }
        }

        /// compose-go `isSpace`: line breaks excluded.
        fn is_space(c: char) -> bool {
            matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}')
        }

        /// `extractQuotedValue`: an escaped closing quote drops its
        /// backslash, every other escape is kept for `expand_escapes`.
        fn quoted(src: &str, quote: u8) -> Result<(String, &str), String> {
            let bytes = src.as_bytes();
            let mut chars = Vec::new();
            let mut escaped = false;
            for i in 1..bytes.len() {
                let c = bytes[i];
                if escaped {
                    escaped = false;
                    if c != quote {
                        chars.push(b'\\');
                    }
                    chars.push(c);
                } else if c == b'\\' {
                    escaped = true;
                } else if c == quote {
                    let raw = String::from_utf8(chars).map_err(|e| e.to_string())?;
                    return Ok((raw, &src[i + 1..]));
                } else {
                    chars.push(c);
                }
            }
            Err("unterminated quoted value".to_owned())
        }

        /// `expandEscapes` with `escapeSeqRegex` = `\\(?:[abcfnrtv$"\\]|0\d{0,3})`.
        fn expand_escapes(s: &str) -> String {
            let mut out = String::new();
            let mut chars = s.chars().peekable();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.peek().copied() {
                    Some('$') => out.push_str("$$"),
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('a') => out.push('\u{7}'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('v') => out.push('\u{b}'),
                    Some(_) | None => {
                        // `\c`, `\0…` and unknown escapes: kept (octal is
                        // never written by `encode`).
                        out.push('\\');
                        continue;
                    }
                }
                chars.next();
            }
            out
        }

        /// `template.Substitute` with nothing defined: `$$` is a `$`, a
        /// variable reference becomes empty, a stray `$` is an error.
        fn substitute(s: &str) -> Result<String, String> {
            let mut out = String::new();
            let mut rest = s;
            while let Some(i) = rest.find('$') {
                out.push_str(&rest[..i]);
                rest = &rest[i + 1..];
                if let Some(after) = rest.strip_prefix('$') {
                    out.push('$');
                    rest = after;
                } else if let Some(after) = rest.strip_prefix('{') {
                    let end = after.find('}').ok_or("invalid template")?;
                    rest = &after[end + 1..];
                } else {
                    let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                    if len == 0 || rest.starts_with(|c: char| c.is_ascii_digit()) {
                        return Err("invalid template".to_owned());
                    }
                    rest = &rest[len..];
                }
            }
            out.push_str(rest);
            Ok(out)
        }

        #[test]
        fn port_matches_compose_go_documented_examples() {
            // From compose-go's dotenv tests and the Compose env-file docs.
            let text = "A=VAL # comment\nB=VAL# not a comment\nC=\"VAL # not a comment\"\nD='$X\\n'\nE=\"a\\nb\\$c\"\nF=\"say \\\"hi\\\"\"\nG='Let\\'s go!'\n";
            let expected = [
                ("A", "VAL"),
                ("B", "VAL# not a comment"),
                ("C", "VAL # not a comment"),
                ("D", "$X\\n"),
                ("E", "a\nb$c"),
                ("F", "say \"hi\""),
                ("G", "Let's go!"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            assert_eq!(parse(text), Ok(expected));
            assert!(parse("A=\"$\"\n").is_err());
            assert_eq!(parse("A=$HOME\n"), Ok(BTreeMap::from([("A".into(), String::new())])));
        }
    }
}
