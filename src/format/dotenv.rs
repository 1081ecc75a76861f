//! The `dotenv` format: one `NAME=value` line per entry, in name order, each
//! value quoted so that the program reading the file gets back exactly the
//! rendered text.
//!
//! The common readers disagree about nearly every special character, so a
//! file target says which reader it is for with `dialect`:
//!
//! | dialect | reads back exactly in |
//! |---|---|
//! | none (the default, [`Dialect::Portable`]) | dotenvy 0.15, docker compose v2 and python-dotenv 1.x, all at once |
//! | `compose` | docker compose v2 (`env_file`): compose-go's `dotenv` package |
//! | `python-dotenv` | python-dotenv 1.x `dotenv_values` / `load_dotenv` with the default `interpolate=True` |
//! | `shell` | a POSIX shell sourcing the file: `set -a; . ./file` |
//!
//! Whatever the dialect, a value its readers would read differently is an
//! error naming the entry ([`FormatError::DotenvUnrepresentable`]), never a
//! file that reads back something else: NUL always (no environment variable
//! can hold one), and the dialect's own cases listed below.
//!
//! # Decision: the default promises all three readers
//!
//! A target without `dialect` is read by whoever picks the file up, so the
//! default promises every reader it names, not the first two "and python
//! where exact": each value gets the form that all three read alike, and a
//! value for which no such form exists is refused with a hint to set the
//! dialect of the one reader that really reads the file. Before dialects
//! existed those values were written anyway and read differently by
//! python-dotenv (`it's $5` as `it's \$5`, `${HOME}` replaced, CRLF as LF, a
//! trailing backslash with `" #` appended); now they fail loudly.
//!
//! # What the readers do
//!
//! Checked against their source and, in the tests, against the readers
//! themselves (see `tests/integration/dotenv_readers.rs`):
//!
//! - **dotenvy** reads a value like a shell word: unquoted, `'…'` and `"…"`
//!   parts may follow each other; it substitutes `$VAR` and `${VAR}` outside
//!   single quotes and honours `\$`; in double quotes it knows only the
//!   escapes `\\ \" \' \$ \n` and `\ `, any other is an error; a backslash at
//!   the end of an unquoted value is dropped.
//! - **compose-go** (docker compose v2): single quotes are literal except
//!   that `\'` is a quote (so a value there cannot end in a lone backslash);
//!   leading whitespace, U+0085 and U+00A0 before a value are skipped; double
//!   quotes decode `\\ \" \$ \n \r \t` (and `\a \b \f \v`,
//!   octal `\0NNN`) and keep unknown escapes, then substitute variables
//!   (`$$` is a `$`); unquoted values end at ` #`, lose trailing whitespace,
//!   keep backslashes and substitute variables. Every substitution also
//!   looks into the process environment.
//! - **python-dotenv** replaces `${NAME}` and `${NAME:-default}` (its
//!   regex `\$\{[^}:]*(:-[^}]*)?\}`) in *every* value, quoted or not, with no
//!   escape; a lone `$` is literal. Single quotes decode `\\ \'`, double
//!   quotes decode `\\ \' \" \a \b \f \n \r \t \v`. Its quote scanner takes
//!   any `\"` (`\'`) for an escaped quote, even after another backslash, so
//!   a quoted value cannot end in a backslash. Unquoted values end at
//!   whitespace followed by `#`, lose surrounding whitespace and keep
//!   backslashes. It opens the file with universal newlines, so a carriage
//!   return in the file reaches it as `\n`.
//! - **POSIX shell**: single quotes are literal, newlines and carriage
//!   returns included, and cannot hold `'`; a `'` is written `'\''`. `~`
//!   expands after `=` and `:` in an unquoted assignment. `$'…'` is left out:
//!   bash reads it, `dash` (Debian's `sh`) does not.
//!
//! # The forms
//!
//! Every dialect writes `NAME=''` for the empty value and writes a value
//! unquoted when each character is an ASCII letter or digit or one of
//! `_ - . , / : @ % + = ^ ~` (not `~` for `shell`): nothing in that set means
//! anything to any reader. Otherwise:
//!
//! - **default**: single quotes, verbatim, when the value has no `'`, no `\\`
//!   pair and does not end in a backslash: the only form that python-dotenv
//!   reads `$` from exactly. Else double quotes with `\\ \" \$ \n` escaped
//!   and everything else verbatim (`\t` and `\r` are errors in dotenvy).
//!   Refused: a carriage return (python-dotenv reads it as `\n`, dotenvy has
//!   no escape for it), a `${…}` sequence python-dotenv would replace, a
//!   trailing backslash (dotenvy drops it unquoted, python-dotenv misreads
//!   it quoted), and a `$` in a value that needs double quotes (dotenvy and
//!   compose need `\$`, python-dotenv keeps the backslash).
//! - **compose**: single quotes, verbatim, when the value has no `'`, no
//!   carriage return and does not end in a backslash; else double quotes
//!   with `\\ \" \$ \n \r` escaped. Every value except NUL is carried.
//! - **python-dotenv**: unquoted, verbatim, when the value has no whitespace
//!   (Python's `str.isspace`) and does not start with a quote; else double
//!   quotes with `\\ \" \n \r` escaped and `$` verbatim. Refused: a `${…}`
//!   sequence, and a value that needs quotes and ends in a backslash.
//! - **shell**: single quotes with `'` as `'\''`; every value except NUL is
//!   carried. Refused instead are the names bash sets or ignores itself
//!   (`UID`, `RANDOM`, `LINENO`, `_`, …: [`SHELL_MANAGED_NAMES`]), whose
//!   assignment would not read back.
//!
//! Names must match `[A-Za-z_][A-Za-z0-9_]*` in every dialect.

use std::collections::BTreeMap;
use std::fmt;

use super::FormatError;

/// The reader a dotenv file is written for (module doc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// dotenvy, docker compose and python-dotenv at once: what a target
    /// without `dialect` gets. Not spelled in configuration, so that the
    /// default is simply the absence of a choice.
    #[default]
    #[serde(skip)]
    Portable,
    Compose,
    PythonDotenv,
    Shell,
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Portable => "dotenvy, docker compose and python-dotenv alike (no `dialect` set)",
            Dialect::Compose => "docker compose (`dialect = \"compose\"`)",
            Dialect::PythonDotenv => "python-dotenv (`dialect = \"python-dotenv\"`)",
            Dialect::Shell => "a POSIX shell (`dialect = \"shell\"`)",
        })
    }
}

/// Variables bash 5 sets, computes or keeps read-only itself: after
/// `set -a; . file; exec program` the program does not see the value the
/// file assigned (checked against bash in the tests). `SHLVL` is among them
/// because bash lowers it when it execs.
pub const SHELL_MANAGED_NAMES: &[&str] = &[
    "BASHOPTS",
    "BASHPID",
    "BASH_ALIASES",
    "BASH_ARGC",
    "BASH_ARGV",
    "BASH_ARGV0",
    "BASH_CMDS",
    "BASH_LINENO",
    "BASH_SOURCE",
    "BASH_SUBSHELL",
    "BASH_VERSINFO",
    "COMP_WORDBREAKS",
    "DIRSTACK",
    "EPOCHREALTIME",
    "EPOCHSECONDS",
    "EUID",
    "FUNCNAME",
    "GROUPS",
    "HISTCMD",
    "LINENO",
    "OPTIND",
    "PIPESTATUS",
    "PPID",
    "RANDOM",
    "SECONDS",
    "SHELLOPTS",
    "SHLVL",
    "SRANDOM",
    "UID",
    "_",
];

const PORTABLE_CR: &str = "python-dotenv reads a carriage return as a newline and dotenvy has no escape for one; \
     if one kind of reader reads this file, set `dialect` on the target (\"compose\", \"python-dotenv\" and \"shell\" carry it)";
const PORTABLE_INTERPOLATION: &str = "python-dotenv replaces a `${…}` sequence with a variable however it is quoted; \
     if python-dotenv does not read this file, set `dialect = \"compose\"` or `dialect = \"shell\"` on the target";
const PORTABLE_TRAILING_BACKSLASH: &str = "no quoting keeps a trailing backslash in both dotenvy and python-dotenv; \
     set `dialect` on the target to the reader of this file (\"compose\" and \"shell\" carry it)";
const PORTABLE_DOLLAR: &str = "the value needs double quotes (it holds a `'` or a `\\\\` pair) and holds a `$`, \
     which dotenvy and docker compose need escaped as `\\$` and python-dotenv reads with the backslash; \
     set `dialect` on the target to the reader of this file";
const PYTHON_INTERPOLATION: &str = "python-dotenv replaces a `${…}` sequence with a variable however it is quoted, \
     and has no escape for it";
const PYTHON_TRAILING_BACKSLASH: &str = "python-dotenv reads a backslash before a closing quote as escaping it, \
     and this value ends in a backslash but needs quotes (it holds whitespace or starts with a quote)";

/// Serializes entries as a dotenv file for `dialect`.
pub(super) fn encode(dialect: Dialect, entries: &BTreeMap<String, String>) -> Result<String, FormatError> {
    let mut out = String::new();
    for (name, value) in entries {
        if !is_env_name(name) {
            return Err(FormatError::InvalidEnvName { name: name.clone() });
        }
        if dialect == Dialect::Shell && SHELL_MANAGED_NAMES.contains(&name.as_str()) {
            return Err(FormatError::ShellManagedName { name: name.clone() });
        }
        if value.contains('\0') {
            return Err(FormatError::NulInEnvValue { name: name.clone() });
        }
        out.push_str(name);
        out.push('=');
        let written = match dialect {
            Dialect::Portable => push_portable(&mut out, value),
            Dialect::Compose => {
                push_compose(&mut out, value);
                Ok(())
            }
            Dialect::PythonDotenv => push_python(&mut out, value),
            Dialect::Shell => {
                push_shell(&mut out, value);
                Ok(())
            }
        };
        written.map_err(|reason| FormatError::DotenvUnrepresentable { name: name.clone(), dialect, reason })?;
        out.push('\n');
    }
    Ok(out)
}

pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Characters that no reader treats specially anywhere in a value (but `~`
/// is a tilde expansion in a shell assignment).
fn is_bare_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ',' | '/' | ':' | '@' | '%' | '+' | '=' | '^' | '~')
}

/// Whether python-dotenv's `\$\{[^}:]*(:-[^}]*)?\}` matches anywhere in the
/// value, i.e. whether it would replace part of it with a variable.
fn python_interpolates(value: &str) -> bool {
    value.match_indices("${").any(|(at, _)| {
        let rest = &value[at + 2..];
        let after_name = &rest[rest.find(['}', ':']).unwrap_or(rest.len())..];
        after_name.starts_with('}') || after_name.strip_prefix(":-").is_some_and(|default| default.contains('}'))
    })
}

/// Python's `str.isspace`, which its `\s` and `strip()` use: Unicode
/// `White_Space` plus the separators U+001C to U+001F.
fn python_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn push_single_quoted(out: &mut String, value: &str) {
    out.push('\'');
    out.push_str(value);
    out.push('\'');
}

/// Double quotes, with the characters `escape` names written as escapes.
fn push_double_quoted(out: &mut String, value: &str, escape: fn(char) -> Option<&'static str>) {
    out.push('"');
    for c in value.chars() {
        match escape(c) {
            Some(escaped) => out.push_str(escaped),
            None => out.push(c),
        }
    }
    out.push('"');
}

/// Writes `value` in the default form (module doc), or says why none fits.
fn push_portable(out: &mut String, value: &str) -> Result<(), &'static str> {
    if value.contains('\r') {
        return Err(PORTABLE_CR);
    }
    if python_interpolates(value) {
        return Err(PORTABLE_INTERPOLATION);
    }
    if value.is_empty() {
        out.push_str("''");
    } else if value.chars().all(is_bare_safe) {
        out.push_str(value);
    } else if value.ends_with('\\') {
        return Err(PORTABLE_TRAILING_BACKSLASH);
    } else if !value.contains('\'') && !value.contains("\\\\") {
        push_single_quoted(out, value);
    } else if value.contains('$') {
        return Err(PORTABLE_DOLLAR);
    } else {
        push_double_quoted(out, value, |c| match c {
            '\\' => Some("\\\\"),
            '"' => Some("\\\""),
            '\n' => Some("\\n"),
            _ => None,
        });
    }
    Ok(())
}

fn push_compose(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push_str("''");
    } else if value.chars().all(is_bare_safe) {
        out.push_str(value);
    } else if !value.contains(['\'', '\r']) && !value.ends_with('\\') {
        push_single_quoted(out, value);
    } else {
        push_double_quoted(out, value, |c| match c {
            '\\' => Some("\\\\"),
            '"' => Some("\\\""),
            '$' => Some("\\$"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            _ => None,
        });
    }
}

fn push_python(out: &mut String, value: &str) -> Result<(), &'static str> {
    if python_interpolates(value) {
        return Err(PYTHON_INTERPOLATION);
    }
    if value.is_empty() {
        out.push_str("''");
    } else if !value.contains(python_isspace) && !value.starts_with(['\'', '"']) {
        out.push_str(value);
    } else if value.ends_with('\\') {
        return Err(PYTHON_TRAILING_BACKSLASH);
    } else {
        push_double_quoted(out, value, |c| match c {
            '\\' => Some("\\\\"),
            '"' => Some("\\\""),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            _ => None,
        });
    }
    Ok(())
}

fn push_shell(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push_str("''");
    } else if value.chars().all(|c| is_bare_safe(c) && c != '~') {
        out.push_str(value);
    } else {
        out.push('\'');
        out.push_str(&value.replace('\'', r"'\''"));
        out.push('\'');
    }
}

/// Parse dotenv text as written by `encode` back into a map (used by `plan`
/// to say which keys changed).
///
/// This reads the forms the default dialect writes, with dotenvy's meaning,
/// plus comments, blank lines, `export` prefixes and CRLF line ends that a
/// person editing the file may add. It refuses whatever would need variable
/// substitution (an unescaped `$` outside single quotes) or that the readers
/// disagree on, because a value guessed here would make `plan` report a
/// change wrongly. It takes no dialect: every construct it accepts means the
/// same in each dialect's output (tested), so a file written for another
/// dialect either decodes to its true entries or is refused.
/// A later duplicate of a name wins, as in the common readers.
pub fn decode(text: &str) -> Result<BTreeMap<String, String>, FormatError> {
    Ok(decode_entries(text)?.into_iter().map(|(_, name, value)| (name, value)).collect())
}

/// [`decode`], but every entry in file order with the line it starts on,
/// duplicates included (`cfgsync import` refuses a name set twice: the
/// readers disagree on which one wins).
pub fn decode_entries(text: &str) -> Result<Vec<(usize, String, String)>, FormatError> {
    let mut reader = DotenvReader { rest: text.strip_prefix('\u{feff}').unwrap_or(text), line: 1 };
    let mut entries = Vec::new();
    while let Some(entry) = reader.next_entry()? {
        entries.push(entry);
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

    fn next_entry(&mut self) -> Result<Option<(usize, String, String)>, FormatError> {
        loop {
            self.skip_blanks();
            match self.peek() {
                None => return Ok(None),
                Some('#') => self.skip_comment(),
                Some(_) if self.end_of_line() => {}
                Some(_) => break,
            }
        }
        let line = self.line;
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
            _ => return self.unquoted().map(|value| Some((line, name, value))),
        };
        self.skip_blanks();
        if self.peek() == Some('#') {
            self.skip_comment();
        } else if !self.end_of_line() {
            return Err(self.err("unexpected text after the closing quote"));
        }
        Ok(Some((line, name, value)))
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
mod tests;
