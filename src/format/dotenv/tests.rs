//! Unit tests of the dotenv dialects: the form each value gets, in a table,
//! and round trips through the readers that run in-process (dotenvy, and a
//! port of compose-go's parser). The readers that run as programs (docker
//! compose, python-dotenv, bash) are driven by
//! `tests/integration/dotenv_readers.rs`.

use super::*;

const CANARY: &str = "CANARY-s3cr3t-9f2a";

const DIALECTS: [Dialect; 4] = [Dialect::Portable, Dialect::Compose, Dialect::PythonDotenv, Dialect::Shell];

/// What a dialect does with a value.
#[derive(Clone, Copy, Debug)]
enum Form {
    /// Writes it as this text after `NAME=`.
    W(&'static str),
    /// Refuses it with `DotenvUnrepresentable`.
    X,
}
use Form::{W, X};

/// (value, default dialect, compose, python-dotenv, shell)
#[rustfmt::skip]
const CASES: &[(&str, Form, Form, Form, Form)] = &[
    ("plain", W("plain"), W("plain"), W("plain"), W("plain")),
    ("a=b", W("a=b"), W("a=b"), W("a=b"), W("a=b")),
    ("=", W("="), W("="), W("="), W("=")),
    ("~", W("~"), W("~"), W("~"), W("'~'")),
    ("~/x:~", W("~/x:~"), W("~/x:~"), W("~/x:~"), W("'~/x:~'")),
    ("", W("''"), W("''"), W("''"), W("''")),
    ("postgres://u@h:5432/db?x=1", W("'postgres://u@h:5432/db?x=1'"), W("'postgres://u@h:5432/db?x=1'"), W("postgres://u@h:5432/db?x=1"), W("'postgres://u@h:5432/db?x=1'")),
    ("it's", W(r#""it's""#), W(r#""it's""#), W("it's"), W(r"'it'\''s'")),
    ("it's $5", X, W(r#""it's \$5""#), W(r#""it's $5""#), W(r"'it'\''s $5'")),
    ("'", W(r#""'""#), W(r#""'""#), W(r#""'""#), W(r"''\'''")),
    ("'quoted'", W(r#""'quoted'""#), W(r#""'quoted'""#), W(r#""'quoted'""#), W(r"''\''quoted'\'''")),
    (r#"say "hi""#, W(r#"'say "hi"'"#), W(r#"'say "hi"'"#), W(r#""say \"hi\"""#), W(r#"'say "hi"'"#)),
    ("\"", W(r#"'"'"#), W(r#"'"'"#), W(r#""\"""#), W(r#"'"'"#)),
    (r#""dq""#, W(r#"'"dq"'"#), W(r#"'"dq"'"#), W(r#""\"dq\"""#), W(r#"'"dq"'"#)),
    (r#"both ' and ""#, W(r#""both ' and \"""#), W(r#""both ' and \"""#), W(r#""both ' and \"""#), W(r#"'both '\'' and "'"#)),
    (r#"{"json": "v"}"#, W(r#"'{"json": "v"}'"#), W(r#"'{"json": "v"}'"#), W(r#""{\"json\": \"v\"}""#), W(r#"'{"json": "v"}'"#)),
    ("`backticks`", W("'`backticks`'"), W("'`backticks`'"), W("`backticks`"), W("'`backticks`'")),
    ("`echo $HOME`", W("'`echo $HOME`'"), W("'`echo $HOME`'"), W(r#""`echo $HOME`""#), W("'`echo $HOME`'")),
    ("$HOME", W("'$HOME'"), W("'$HOME'"), W("$HOME"), W("'$HOME'")),
    ("${HOME}", X, W("'${HOME}'"), X, W("'${HOME}'")),
    ("x${HOME", W("'x${HOME'"), W("'x${HOME'"), W("x${HOME"), W("'x${HOME'")),
    ("${a:b}", W("'${a:b}'"), W("'${a:b}'"), W("${a:b}"), W("'${a:b}'")),
    ("${a:-b}", X, W("'${a:-b}'"), X, W("'${a:-b}'")),
    ("${:-}", X, W("'${:-}'"), X, W("'${:-}'")),
    ("$", W("'$'"), W("'$'"), W("$"), W("'$'")),
    ("$$", W("'$$'"), W("'$$'"), W("$$"), W("'$$'")),
    (r"\$", W(r"'\$'"), W(r"'\$'"), W(r"\$"), W(r"'\$'")),
    (r"^\d+$", W(r"'^\d+$'"), W(r"'^\d+$'"), W(r"^\d+$"), W(r"'^\d+$'")),
    ("#", W("'#'"), W("'#'"), W("#"), W("'#'")),
    ("a#b", W("'a#b'"), W("'a#b'"), W("a#b"), W("'a#b'")),
    (" # comment", W("' # comment'"), W("' # comment'"), W(r#"" # comment""#), W("' # comment'")),
    ("  leading", W("'  leading'"), W("'  leading'"), W(r#""  leading""#), W("'  leading'")),
    ("trailing  ", W("'trailing  '"), W("'trailing  '"), W(r#""trailing  ""#), W("'trailing  '")),
    ("a\tb", W("'a\tb'"), W("'a\tb'"), W("\"a\tb\""), W("'a\tb'")),
    ("\n", W("'\n'"), W("'\n'"), W(r#""\n""#), W("'\n'")),
    ("line1\nline2", W("'line1\nline2'"), W("'line1\nline2'"), W(r#""line1\nline2""#), W("'line1\nline2'")),
    (
        "-----BEGIN KEY-----\nabc\n-----END KEY-----\n",
        W("'-----BEGIN KEY-----\nabc\n-----END KEY-----\n'"),
        W("'-----BEGIN KEY-----\nabc\n-----END KEY-----\n'"),
        W(r#""-----BEGIN KEY-----\nabc\n-----END KEY-----\n""#),
        W("'-----BEGIN KEY-----\nabc\n-----END KEY-----\n'"),
    ),
    ("crlf\r\nend", X, W(r#""crlf\r\nend""#), W(r#""crlf\r\nend""#), W("'crlf\r\nend'")),
    ("lone\rcr", X, W(r#""lone\rcr""#), W(r#""lone\rcr""#), W("'lone\rcr'")),
    ("\r", X, W(r#""\r""#), W(r#""\r""#), W("'\r'")),
    (r"C:\path\to", W(r"'C:\path\to'"), W(r"'C:\path\to'"), W(r"C:\path\to"), W(r"'C:\path\to'")),
    (r"\n", W(r"'\n'"), W(r"'\n'"), W(r"\n"), W(r"'\n'")),
    (r"a\\b", W(r#""a\\\\b""#), W(r"'a\\b'"), W(r"a\\b"), W(r"'a\\b'")),
    (r"\'", W(r#""\\'""#), W(r#""\\'""#), W(r"\'"), W(r"'\'\'''")),
    (r#"\""#, W(r#"'\"'"#), W(r#"'\"'"#), W(r#"\""#), W(r#"'\"'"#)),
    ("it's\na\\b", W(r#""it's\na\\b""#), W(r#""it's\na\\b""#), W(r#""it's\na\\b""#), W("'it'\\''s\na\\b'")),
    ("trailing\\", X, W(r#""trailing\\""#), W("trailing\\"), W("'trailing\\'")),
    ("\\", X, W(r#""\\""#), W("\\"), W("'\\'")),
    ("a\\\\", X, W(r#""a\\\\""#), W("a\\\\"), W("'a\\\\'")),
    ("a b\\", X, W(r#""a b\\""#), X, W("'a b\\'")),
    ("'x\\", X, W(r#""'x\\""#), X, W(r"''\''x\'")),
    ("$HOME it's", X, W(r#""\$HOME it's""#), W(r#""$HOME it's""#), W(r"'$HOME it'\''s'")),
    (r"\\$x", X, W(r"'\\$x'"), W(r"\\$x"), W(r"'\\$x'")),
    ("x$\\", X, W(r#""x\$\\""#), W("x$\\"), W("'x$\\'")),
    ("é", W("'é'"), W("'é'"), W("é"), W("'é'")),
    ("emoji 🦀", W("'emoji 🦀'"), W("'emoji 🦀'"), W("\"emoji 🦀\""), W("'emoji 🦀'")),
    ("nbsp\u{a0}nel\u{85}ls\u{2028}", W("'nbsp\u{a0}nel\u{85}ls\u{2028}'"), W("'nbsp\u{a0}nel\u{85}ls\u{2028}'"), W("\"nbsp\u{a0}nel\u{85}ls\u{2028}\""), W("'nbsp\u{a0}nel\u{85}ls\u{2028}'")),
    ("us\u{1f}sep", W("'us\u{1f}sep'"), W("'us\u{1f}sep'"), W("\"us\u{1f}sep\""), W("'us\u{1f}sep'")),
    ("zw\u{200b}sp", W("'zw\u{200b}sp'"), W("'zw\u{200b}sp'"), W("zw\u{200b}sp"), W("'zw\u{200b}sp'")),
    ("semi;colon|pipe&amp", W("'semi;colon|pipe&amp'"), W("'semi;colon|pipe&amp'"), W("semi;colon|pipe&amp"), W("'semi;colon|pipe&amp'")),
];

fn form(case: &(&str, Form, Form, Form, Form), dialect: Dialect) -> Form {
    match dialect {
        Dialect::Portable => case.1,
        Dialect::Compose => case.2,
        Dialect::PythonDotenv => case.3,
        Dialect::Shell => case.4,
    }
}

fn one(name: &str, value: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(name.to_owned(), value.to_owned())])
}

/// Entry names keep table order when sorted, so one value misread into the
/// next line shows up.
fn case_name(i: usize) -> String {
    format!("V{i:03}")
}

/// Every value of the table that `dialect` writes, under its case name.
fn accepted(dialect: Dialect) -> BTreeMap<String, String> {
    CASES
        .iter()
        .enumerate()
        .filter(|(_, case)| matches!(form(case, dialect), W(_)))
        .map(|(i, case)| (case_name(i), case.0.to_owned()))
        .collect()
}

#[test]
fn each_dialect_writes_the_documented_form_or_refuses() {
    for case in CASES {
        for dialect in DIALECTS {
            let value = case.0;
            match (form(case, dialect), encode(dialect, &one("K", value))) {
                (W(text), Ok(file)) => assert_eq!(file, format!("K={text}\n"), "{dialect:?} {value:?}"),
                (X, Err(FormatError::DotenvUnrepresentable { name, dialect: got, .. })) => {
                    assert_eq!((name.as_str(), got), ("K", dialect), "{value:?}")
                }
                (want, got) => panic!("{dialect:?} {value:?}: wanted {want:?}, got {got:?}"),
            }
        }
    }
}

#[test]
fn the_default_round_trips_through_dotenvy() {
    let entries = accepted(Dialect::Portable);
    let text = encode(Dialect::Portable, &entries).expect("encodes");
    let read: BTreeMap<String, String> =
        dotenvy::from_read_iter(text.as_bytes()).collect::<Result<_, _>>().expect("dotenvy parses the file");
    assert_eq!(read, entries);
    // Each value alone too, so no case passes only thanks to its neighbours.
    for value in entries.values() {
        let text = encode(Dialect::Portable, &one("K", value)).expect("encodes");
        let read: Vec<(String, String)> =
            dotenvy::from_read_iter(text.as_bytes()).collect::<Result<_, _>>().expect("dotenvy parses the file");
        assert_eq!(read, [("K".to_owned(), value.clone())], "{text:?}");
    }
}

#[test]
fn the_default_and_compose_round_trip_through_the_compose_port() {
    for dialect in [Dialect::Portable, Dialect::Compose] {
        let entries = accepted(dialect);
        let text = encode(dialect, &entries).expect("encodes");
        assert_eq!(compose_go::parse(&text), Ok(entries), "{dialect:?}");
    }
}

#[test]
fn decode_reads_every_dialect_exactly_or_refuses() {
    let text = encode(Dialect::Portable, &accepted(Dialect::Portable)).expect("encodes");
    assert_eq!(decode(&text).expect("decodes the default dialect"), accepted(Dialect::Portable));
    let mut decoded = 0;
    for dialect in DIALECTS {
        for (name, value) in accepted(dialect) {
            let entries = one(&name, &value);
            let text = encode(dialect, &entries).expect("encodes");
            if let Ok(read) = decode(&text) {
                assert_eq!(read, entries, "{dialect:?}: {text:?}");
                decoded += 1;
            }
        }
    }
    // Not vacuous: most values of every dialect decode.
    assert!(decoded > 3 * CASES.len(), "{decoded}");
}

#[test]
fn decode_reads_hand_edits_and_refuses_ambiguity() {
    let text = "\u{feff}# header\r\n\r\nexport A=1 # note\r\nB = 'x y' # note\n  C=\nD=\"q\\\"\"\nA=2\n";
    let expected = BTreeMap::from([
        ("A".to_owned(), "2".to_owned()),
        ("B".to_owned(), "x y".to_owned()),
        ("C".to_owned(), String::new()),
        ("D".to_owned(), "q\"".to_owned()),
    ]);
    assert_eq!(decode(text).expect("decodes"), expected);
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
        match decode(bad) {
            Err(FormatError::DotenvSyntax { line: got, .. }) => assert_eq!(got, line, "{bad:?}"),
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
}

#[test]
fn every_dialect_refuses_invalid_names_and_nul() {
    for dialect in DIALECTS {
        for name in ["", "1A", "A-B", "A.B", "A B", "É", "A=B"] {
            match encode(dialect, &one(name, "v")) {
                Err(FormatError::InvalidEnvName { name: got }) => assert_eq!(got, name),
                other => panic!("{dialect:?} {name:?} gave {other:?}"),
            }
        }
        for value in ["\0", "a\0b", "it's\0$"] {
            assert!(
                matches!(encode(dialect, &one("N", value)), Err(FormatError::NulInEnvValue { name }) if name == "N"),
                "{dialect:?} {value:?}"
            );
        }
        assert_eq!(encode(dialect, &one("_ok_9", "v")).expect("valid"), "_ok_9=v\n");
        assert_eq!(encode(dialect, &BTreeMap::new()).expect("encodes"), "");
    }
}

#[test]
fn only_the_shell_refuses_names_bash_manages() {
    assert!(SHELL_MANAGED_NAMES.is_sorted_by(|a, b| a < b), "kept sorted, without duplicates");
    for &name in SHELL_MANAGED_NAMES {
        assert!(is_env_name(name), "{name}");
        match encode(Dialect::Shell, &one(name, "v")) {
            Err(FormatError::ShellManagedName { name: got }) => assert_eq!(got, name),
            other => panic!("{name} gave {other:?}"),
        }
        for dialect in [Dialect::Portable, Dialect::Compose, Dialect::PythonDotenv] {
            assert_eq!(encode(dialect, &one(name, "v")).expect("not managed here"), format!("{name}=v\n"));
        }
    }
    for name in ["PATH", "HOME", "IFS", "BASH_ENV", "U_ID", "uid"] {
        assert!(encode(Dialect::Shell, &one(name, "v")).is_ok(), "{name}");
    }
}

#[test]
fn python_interpolation_is_found_where_python_dotenv_finds_it() {
    // python-dotenv's pattern: \$\{[^}:]*(?::-[^}]*)?\}
    for (value, interpolated) in [
        ("${A}", true),
        ("${}", true),
        ("x${A}y", true),
        ("${A:-}", true),
        ("${A:-d}", true),
        ("${A:-${B}", true),
        ("${\n}", true),
        ("$${A}", true),
        ("${A:b}", false),
        ("${A:-b", false),
        ("${A", false),
        ("$A", false),
        ("$ {A}", false),
        ("{A}", false),
        ("${A:b}${C}", true),
        ("${A:b} ${C", false),
    ] {
        assert_eq!(python_interpolates(value), interpolated, "{value:?}");
    }
}

#[test]
fn dialects_are_spelled_in_kebab_case_and_the_default_is_not_spelled() {
    #[derive(serde::Deserialize)]
    struct Target {
        dialect: Dialect,
    }
    for (text, dialect) in
        [("compose", Dialect::Compose), ("python-dotenv", Dialect::PythonDotenv), ("shell", Dialect::Shell)]
    {
        let target: Target = serde_json::from_str(&format!("{{\"dialect\":\"{text}\"}}")).expect("known");
        assert_eq!(target.dialect, dialect);
    }
    for text in ["portable", "Portable", "Compose", "python_dotenv", "dotenv", "bash"] {
        assert!(serde_json::from_str::<Target>(&format!("{{\"dialect\":\"{text}\"}}")).is_err(), "{text}");
    }
    assert_eq!(Dialect::default(), Dialect::Portable);
}

#[test]
fn errors_name_the_entry_and_never_show_values() {
    let failures = [
        encode(Dialect::Portable, &one("BAD-NAME", CANARY)),
        encode(Dialect::Compose, &one("NUL", &format!("{CANARY}\0"))),
        encode(Dialect::Portable, &one("CR", &format!("{CANARY}\r"))),
        encode(Dialect::Portable, &one("BRACE", &format!("${{{CANARY}}}"))),
        encode(Dialect::Portable, &one("DOLLAR", &format!("{CANARY}'$"))),
        encode(Dialect::Portable, &one("BACKSLASH", &format!("{CANARY}\\"))),
        encode(Dialect::PythonDotenv, &one("BRACE", &format!("${{{CANARY}}}"))),
        encode(Dialect::PythonDotenv, &one("BACKSLASH", &format!("{CANARY} \\"))),
        encode(Dialect::Shell, &one("UID", CANARY)),
        decode(&format!("A=\"{CANARY}\n")).map(|_| String::new()),
        decode(&format!("A={CANARY} {CANARY}\n")).map(|_| String::new()),
        decode(&format!("A=\"{CANARY}$x\"\n")).map(|_| String::new()),
    ];
    for failure in failures {
        let err = failure.expect_err("fails");
        let text = err.to_string();
        assert!(!text.contains(CANARY) && !format!("{err:?}").contains(CANARY), "{text}");
        if let FormatError::DotenvUnrepresentable { name, .. } = &err {
            assert!(text.starts_with(&format!("entry {name:?} cannot be written")), "{text}");
            assert!(text.contains("dialect"), "says what to do: {text}");
        }
    }
}

/// The rules of compose-go's `dotenv` package (v2, `parser.go` with the
/// escape-tracking quote scanner, and `template` substitution), reduced
/// to the constructs a dotenv file written by `encode` can contain. The
/// integration tests run docker compose itself; this port gives the unit
/// tests the same rules without it.
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
