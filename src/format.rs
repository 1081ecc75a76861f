//! File formats a `file` target can write an output in.
//!
//! An output is an ordered map of entry name to rendered text. The single-file
//! formats turn the whole map into one file's content; `dir` writes one file
//! per entry instead:
//!
//! - `dotenv`: one `NAME=value` line per entry, in name order, quoted for the
//!   reader the target names with `dialect` ([`dotenv`] has the rules):
//!   - no `dialect` (the default): read back exactly by dotenvy, docker compose
//!     and python-dotenv alike. A value that any of the three would read
//!     differently (a carriage return, a `${…}` python-dotenv would replace, a
//!     trailing backslash, a `$` in a value that also holds a `'` or a `\\`
//!     pair) is refused, naming the entry, rather than written so that one of
//!     them misreads it.
//!   - `compose`: docker compose v2 (compose-go); carries every value but NUL.
//!   - `python-dotenv`: python-dotenv 1.x with its default interpolation;
//!     refuses `${…}` sequences and a trailing backslash in a value that needs
//!     quotes.
//!   - `shell`: `set -a; . file` in a POSIX shell (single quotes, `'\''`);
//!     carries every value but NUL, refuses names bash manages itself.
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
//! exactly the entry's text. Errors name entries, never their values.

use std::collections::BTreeMap;

pub mod dotenv;

pub use dotenv::{Dialect, decode as decode_dotenv};

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

    #[error("entry {name:?} cannot be written to a dotenv file exactly for {dialect}: {reason}")]
    DotenvUnrepresentable { name: String, dialect: Dialect, reason: &'static str },

    #[error(
        "entry {name:?} cannot be written to a dotenv file for a shell: the shell sets or ignores {name} itself, so sourcing the file would not set it"
    )]
    ShellManagedName { name: String },

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
/// requires exactly one entry and returns its text unchanged. `dialect` is
/// the dotenv reader to write for; the other formats have only one.
pub fn encode(format: Format, dialect: Dialect, entries: &BTreeMap<String, String>) -> Result<String, FormatError> {
    match format {
        Format::Dotenv => dotenv::encode(dialect, entries),
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

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "CANARY-s3cr3t-9f2a";

    fn enc(format: Format, entries: &BTreeMap<String, String>) -> Result<String, FormatError> {
        encode(format, Dialect::Portable, entries)
    }

    #[test]
    fn errors_never_show_values() {
        let failures = [
            enc(
                Format::Raw,
                &BTreeMap::from([("a".to_owned(), CANARY.to_owned()), ("b".to_owned(), CANARY.to_owned())]),
            ),
            enc(Format::Dir, &BTreeMap::from([("a".to_owned(), CANARY.to_owned())])),
            encode_dir(&BTreeMap::from([("../x".to_owned(), CANARY.to_owned())])).map(|_| String::new()),
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
        let text = enc(Format::Yaml, &entries).expect("encodes");
        assert!(text.ends_with('\n'), "{text}");
        let back: BTreeMap<String, String> = serde_saphyr::from_str(&text).expect("parses");
        assert_eq!(back, entries, "{text}");
    }

    #[test]
    fn yaml_of_nothing_is_an_empty_mapping() {
        let text = enc(Format::Yaml, &BTreeMap::new()).expect("encodes");
        assert!(text.ends_with('\n'));
        let back: BTreeMap<String, String> = serde_saphyr::from_str(&text).expect("parses");
        assert!(back.is_empty());
    }

    #[test]
    fn json_round_trips_sorted_with_newline() {
        let entries: BTreeMap<String, String> =
            AWKWARD.iter().enumerate().map(|(i, v)| (format!("k{i:03}"), (*v).to_owned())).collect();
        let text = enc(Format::Json, &entries).expect("encodes");
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
            enc(Format::Json, &BTreeMap::from([("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())]))
                .expect("encodes"),
            "{\n  \"a\": \"1\",\n  \"b\": \"2\"\n}\n"
        );
    }

    #[test]
    fn raw_writes_the_only_entry_verbatim() {
        let text = "no trailing newline\r\n\tand $HOME";
        let entries = BTreeMap::from([("only".to_owned(), text.to_owned())]);
        assert_eq!(enc(Format::Raw, &entries).expect("one entry"), text);
        for count in [0, 2] {
            let entries: BTreeMap<String, String> = (0..count).map(|i| (format!("e{i}"), "v".to_owned())).collect();
            match enc(Format::Raw, &entries) {
                Err(FormatError::RawNeedsOneEntry { count: got }) => assert_eq!(got, count),
                other => panic!("{count} entries gave {other:?}"),
            }
        }
    }

    #[test]
    fn dir_has_no_single_file_form() {
        assert!(matches!(enc(Format::Dir, &BTreeMap::new()), Err(FormatError::DirIsNotOneFile)));
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
}
