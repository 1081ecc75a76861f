//! Every dotenv dialect against the programs that really read it: a corpus
//! of hostile values is written by `cfgsync::format::encode` and read back
//! by each dialect's reference readers, run for real; every value a dialect
//! accepts must come back byte for byte, every value it refuses must be
//! refused by name.
//!
//! | dialect | readers |
//! |---|---|
//! | default | dotenvy (in-process), docker compose, python-dotenv |
//! | `compose` | docker compose |
//! | `python-dotenv` | python-dotenv |
//! | `shell` | `bash` and `sh` (dash), `set -a; . file; env -0` |
//!
//! Docker compose is the real v2 binary (`docker-compose config`, which needs
//! no Docker daemon), from `CFGSYNC_TEST_COMPOSE`; python-dotenv runs in
//! `CFGSYNC_TEST_PYTHON`; `scripts/test.sh` installs and exports both.
//! A missing reader is a failure, never a skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cfgsync::format::{Dialect, Format, FormatError, encode};

use crate::support::Project;

const DIALECTS: [Dialect; 4] = [Dialect::Portable, Dialect::Compose, Dialect::PythonDotenv, Dialect::Shell];

const PORTABLE: &[Dialect] = &[Dialect::Portable];
const PORTABLE_AND_PYTHON: &[Dialect] = &[Dialect::Portable, Dialect::PythonDotenv];
const NONE: &[Dialect] = &[];

/// What the readers' environment holds, so that a substitution shows.
const READER_HOME: &str = "/home/cfgsync-reader";

/// The hostile values and the dialects that must refuse each.
pub(crate) fn corpus(python_whitespace: &[char]) -> Vec<(String, &'static [Dialect])> {
    let fixed: &[(&str, &[Dialect])] = &[
        ("it's $5", PORTABLE),
        ("${HOME}", PORTABLE_AND_PYTHON),
        ("x${HOME}y", PORTABLE_AND_PYTHON),
        ("${HOME:-fallback}", PORTABLE_AND_PYTHON),
        ("${:-}", PORTABLE_AND_PYTHON),
        ("${HOME:x}", NONE),
        ("${HOME", NONE),
        ("$HOME", NONE),
        ("$HOME/bin:$PATH", NONE),
        ("$", NONE),
        ("$$", NONE),
        ("$1", NONE),
        ("$(id)", NONE),
        ("`id`", NONE),
        ("\\$", NONE),
        ("\\${HOME}", PORTABLE_AND_PYTHON),
        ("\\\\$HOME", PORTABLE),
        ("trailing\\", PORTABLE),
        ("\\", PORTABLE),
        ("C:\\dir\\", PORTABLE),
        ("two words\\", PORTABLE_AND_PYTHON),
        ("'quoted\\", PORTABLE_AND_PYTHON),
        ("\"quoted\\", PORTABLE_AND_PYTHON),
        ("x$\\", PORTABLE),
        ("\\\\", PORTABLE),
        ("a\\\\b", NONE),
        ("\\\\\\", PORTABLE),
        ("\\n\\t\\r\\0\\x41\\u0041\\a", NONE),
        ("it's \\n \\0 \\x41", NONE),
        ("crlf\r\nend", PORTABLE),
        ("lone\rcr", PORTABLE),
        ("\r", PORTABLE),
        ("\r\n", PORTABLE),
        ("ends in cr\r", PORTABLE),
        ("it's\r$", PORTABLE),
        ("\t", NONE),
        ("a\tb", NONE),
        ("\ttabs\t", NONE),
        ("a #b", NONE),
        ("a\t#b", NONE),
        ("a  #b  #c", NONE),
        ("#", NONE),
        ("#start", NONE),
        (" # comment", NONE),
        ("  leading", NONE),
        ("trailing  ", NONE),
        ("  both  ", NONE),
        (" ", NONE),
        ("=", NONE),
        ("==", NONE),
        ("a=b=c", NONE),
        ("=leading", NONE),
        ("'", NONE),
        ("\"", NONE),
        ("`", NONE),
        ("''", NONE),
        ("\"\"", NONE),
        ("'single'", NONE),
        ("\"double\"", NONE),
        ("'\"'", NONE),
        ("\"'\"", NONE),
        ("it's", NONE),
        ("say \"hi\"", NONE),
        ("both ' and \"", NONE),
        ("\\'", NONE),
        ("\\\"", NONE),
        ("'\\''", NONE),
        ("$'x'", PORTABLE),
        ("it's \"$x\"", PORTABLE),
        ("{\"json\": [1, \"two\"]}", NONE),
        ("~", NONE),
        ("~/x:~", NONE),
        ("é", NONE),
        ("日本語", NONE),
        ("emoji 🦀", NONE),
        ("\u{feff}bom", NONE),
        ("e\u{301}", NONE),
        ("", NONE),
        ("\n", NONE),
        ("\n\n", NONE),
        ("line1\nline2", NONE),
        ("ends in newline\n", NONE),
        ("-----BEGIN KEY-----\nMIIB+/=\n-----END KEY-----\n", NONE),
        ("A=1\nB=2", NONE),
        ("x\nCASE_000=hijack", NONE),
        ("semi;colon|pipe&amp<>", NONE),
        ("*?[glob]{a,b}", NONE),
        ("!history", NONE),
        ("postgres://u:p%40ss@h:5432/db?sslmode=require", NONE),
    ];
    let mut cases: Vec<(String, &'static [Dialect])> =
        fixed.iter().map(|&(value, refused)| (value.to_owned(), refused)).collect();
    // Each character Python calls whitespace (and so python-dotenv strips or
    // cuts at when unquoted) around a value, and characters that only look
    // like whitespace.
    for &c in python_whitespace.iter().chain(&['\u{180e}', '\u{200b}', '\u{2060}', '\u{feff}']) {
        cases.push((format!("{c}x{c}y{c}"), if c == '\r' { PORTABLE } else { NONE }));
    }
    cases.push(("long-".repeat(20_000), NONE));
    cases.push(("a \"quoted\" #word é\n\t".repeat(3_000), NONE));
    cases.push(("it's a \\ \"b\"\n".repeat(5_000), NONE));
    cases
}

fn case_name(i: usize) -> String {
    format!("CASE_{i:03}")
}

/// The accepted values under case names, in corpus order and reversed, so
/// that no value reads back right only thanks to the line after it.
fn files_for(cases: &[(String, &[Dialect])], dialect: Dialect) -> [BTreeMap<String, String>; 2] {
    let accepted: Vec<&String> =
        cases.iter().filter(|(_, refused)| !refused.contains(&dialect)).map(|(value, _)| value).collect();
    let forward = accepted.iter().enumerate().map(|(i, v)| (case_name(i), (*v).clone())).collect();
    let reversed = accepted.iter().rev().enumerate().map(|(i, v)| (case_name(i), (*v).clone())).collect();
    [forward, reversed]
}

/// The reader's path from `var`, else `name` on PATH; missing is a failure.
fn reader(var: &str, name: &str) -> PathBuf {
    const HINT: &str = "run the tests with `scripts/test.sh`, which installs the reference readers";
    if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found ({var} is unset and it is not on PATH); {HINT}"))
}

/// Runs a reader; an exit other than 0, or anything on stderr, is an error.
fn run(cmd: &mut Command, what: &str) -> Result<Vec<u8>, String> {
    let out = cmd.output().unwrap_or_else(|e| panic!("could not start {what}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && stderr.is_empty() {
        Ok(out.stdout)
    } else {
        Err(format!("{what} failed ({}): {stderr}", out.status))
    }
}

/// What a reader made of a dotenv file, or why it refused it.
type Read = Result<BTreeMap<String, String>, String>;
type ReadFn = fn(&Path) -> Read;

fn readers(dialect: Dialect) -> &'static [(&'static str, ReadFn)] {
    match dialect {
        Dialect::Portable => {
            &[("dotenvy", dotenvy_reads), ("docker compose", compose_reads), ("python-dotenv", python_reads)]
        }
        Dialect::Compose => &[("docker compose", compose_reads)],
        Dialect::PythonDotenv => &[("python-dotenv", python_reads)],
        Dialect::Shell => &[("bash", bash_reads), ("sh", sh_reads)],
    }
}

pub(crate) fn dotenvy_reads(file: &Path) -> Read {
    dotenvy::from_path_iter(file).expect("dotenvy opens the file").collect::<Result<_, _>>().map_err(|e| e.to_string())
}

/// The environment docker compose gives a service whose `env_file` is
/// `file`, from `docker-compose config --format json`. That output is a
/// compose file, so it writes each `$` as `$$`; no other `$` may appear.
pub(crate) fn compose_reads(file: &Path) -> Read {
    let dir = tempfile::tempdir().unwrap();
    let env_file = serde_json::to_string(file.to_str().unwrap()).unwrap();
    let compose_file = dir.path().join("compose.yaml");
    std::fs::write(&compose_file, format!("services:\n  s:\n    image: scratch\n    env_file: [{env_file}]\n"))
        .unwrap();
    let stdout = run(
        Command::new(reader("CFGSYNC_TEST_COMPOSE", "docker-compose"))
            .env_clear()
            .env("HOME", READER_HOME)
            .env("PATH", "/usr/bin:/bin")
            .arg("--project-directory")
            .arg(dir.path())
            .args(["--project-name", "cfgsync-dotenv"])
            .arg("--file")
            .arg(&compose_file)
            .args(["config", "--format", "json"]),
        "docker compose",
    )?;
    let config: serde_json::Value = serde_json::from_slice(&stdout).expect("compose prints JSON");
    let environment = config["services"]["s"]["environment"].as_object().expect("the service has an environment");
    Ok(environment
        .iter()
        .map(|(name, value)| {
            let printed = value.as_str().unwrap_or_else(|| panic!("{name} is {value}, not a string"));
            let mut read = String::new();
            let mut chars = printed.chars();
            while let Some(c) = chars.next() {
                if c == '$' {
                    assert_eq!(chars.next(), Some('$'), "compose printed a lone `$` for {name}: {printed:?}");
                }
                read.push(c);
            }
            (name.clone(), read)
        })
        .collect())
}

const PYTHON_READER: &str = r#"
import json, sys
from dotenv import dotenv_values
print(json.dumps(dotenv_values(sys.argv[1])))
"#;

/// `dotenv_values(path)` with its defaults (interpolation on), as a Python
/// program would call it.
/// python-dotenv warns on stderr about lines it cannot parse: an error here.
pub(crate) fn python_reads(file: &Path) -> Read {
    let stdout = run(
        Command::new(reader("CFGSYNC_TEST_PYTHON", "python3"))
            .env_clear()
            .env("HOME", READER_HOME)
            .args(["-c", PYTHON_READER])
            .arg(file),
        "python-dotenv",
    )?;
    let read: BTreeMap<String, Option<String>> = serde_json::from_slice(&stdout).expect("python prints JSON");
    read.into_iter().map(|(name, value)| Ok((name.clone(), value.ok_or(format!("{name} has no value"))?))).collect()
}

fn bash_reads(file: &Path) -> Read {
    shell_reads("bash", file)
}

fn sh_reads(file: &Path) -> Read {
    shell_reads("sh", file)
}

/// What `set -a; . file` exports, printed NUL-separated by `env -0`; only
/// the corpus's own names (the shell adds `PWD`, `SHLVL`, `_`).
fn shell_reads(shell: &str, file: &Path) -> Read {
    let stdout = run(
        Command::new(shell)
            .env_clear()
            .env("HOME", READER_HOME)
            .env("PATH", "/usr/bin:/bin")
            .args(["-c", "set -a; . \"$1\"; exec env -0", shell])
            .arg(file),
        shell,
    )?;
    let text = String::from_utf8(stdout).expect("UTF-8 back from the shell");
    Ok(text
        .split_terminator('\0')
        .map(|pair| pair.split_once('=').expect("NAME=value"))
        .filter(|(name, _)| name.starts_with("CASE_") || name.starts_with("E2E_"))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

/// Python's own list of whitespace characters, so the corpus follows the
/// interpreter that reads it.
pub(crate) fn python_whitespace() -> Vec<char> {
    let stdout = run(
        Command::new(reader("CFGSYNC_TEST_PYTHON", "python3")).args([
            "-c",
            "import sys; print(''.join(f'{ord(c)} ' for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()))",
        ]),
        "python",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8(stdout).unwrap();
    let chars: Vec<char> = text.split_whitespace().map(|n| char::from_u32(n.parse().unwrap()).unwrap()).collect();
    assert!(chars.contains(&' ') && chars.contains(&'\u{1f}') && chars.contains(&'\u{3000}'), "{chars:?}");
    chars
}

fn assert_reads_back(dialect: Dialect, written: &BTreeMap<String, String>) {
    let text = encode(Format::Dotenv, dialect, written).unwrap_or_else(|e| panic!("{dialect:?}: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.env");
    std::fs::write(&file, &text).unwrap();
    for (reader, read) in readers(dialect) {
        let got = read(&file).unwrap_or_else(|e| panic!("{reader} ({dialect:?}) refused the file: {e}"));
        for (name, want) in written {
            let got = got.get(name).unwrap_or_else(|| panic!("{reader} ({dialect:?}) lost {name} = {want:?}"));
            assert!(got == want, "{reader} ({dialect:?}) read {name} as {got:?}, written {want:?}");
        }
        assert_eq!(got.len(), written.len(), "{reader} ({dialect:?}) read entries nobody wrote");
    }
}

#[test]
fn every_dialect_round_trips_the_corpus_through_its_real_readers() {
    let cases = corpus(&python_whitespace());
    for dialect in DIALECTS {
        let [forward, reversed] = files_for(&cases, dialect);
        assert!(forward.len() > 90, "{dialect:?} accepts most of the corpus: {}", forward.len());
        assert_reads_back(dialect, &forward);
        assert_reads_back(dialect, &reversed);
    }
}

#[test]
fn every_dialect_refuses_what_its_readers_would_misread() {
    let cases = corpus(&python_whitespace());
    for dialect in DIALECTS {
        for (value, refused) in &cases {
            let entries = BTreeMap::from([("CASE_X".to_owned(), value.clone())]);
            let result = encode(Format::Dotenv, dialect, &entries);
            if refused.contains(&dialect) {
                match result {
                    Err(FormatError::DotenvUnrepresentable { name, dialect: got, .. }) => {
                        assert_eq!((name.as_str(), got), ("CASE_X", dialect), "{value:?}")
                    }
                    other => panic!("{dialect:?} should refuse {value:?}, gave {other:?}"),
                }
            } else {
                assert!(result.is_ok(), "{dialect:?} refused {value:?}: {result:?}");
            }
        }
        let nul = BTreeMap::from([("CASE_NUL".to_owned(), "a\0b".to_owned())]);
        assert!(matches!(
            encode(Format::Dotenv, dialect, &nul),
            Err(FormatError::NulInEnvValue { name }) if name == "CASE_NUL"
        ));
    }
}

/// The refusals are not over-cautious: each refused value is misread, or the
/// file refused, by one of the readers in the form another dialect writes.
#[test]
fn refused_values_really_are_misread() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("misread.env");
    // (value, written as, reader, what the reader makes of it: None = refuses the file)
    for (value, written_as, reader, misread) in [
        ("it's $5", r#""it's \$5""#, python_reads as ReadFn, Some(r"it's \$5")),
        ("it's $5", r#""it's $5""#, dotenvy_reads, None),
        ("it's $5", r"'it'\''s $5'", compose_reads, None),
        ("${HOME}", "'${HOME}'", python_reads, Some(READER_HOME)),
        ("crlf\r\nend", "'crlf\r\nend'", python_reads, Some("crlf\nend")),
        ("crlf\r\nend", r#""crlf\r\nend""#, dotenvy_reads, None),
        ("trailing\\", "trailing\\", dotenvy_reads, Some("trailing")),
        ("trailing\\", r#""trailing\\""#, python_reads, None),
        ("two words\\", r#""two words\\""#, python_reads, None),
    ] {
        // A later double quote, as the next entries of a real file may hold.
        std::fs::write(&file, format!("CASE_000={written_as}\nCASE_001=\"x\"\n")).unwrap();
        let read = reader(&file);
        let got = read.as_ref().ok().map(|entries| entries.get("CASE_000").map(String::as_str).unwrap_or_default());
        assert_eq!(got, misread, "{value:?} written as {written_as:?}: {read:?}");
        assert_ne!(got, Some(value));
    }
}

/// The bash variables the shell dialect refuses really do not reach a
/// program started from the shell, and a few it need not refuse do.
#[test]
fn names_bash_manages_do_not_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("managed.env");
    let managed = cfgsync::format::dotenv::SHELL_MANAGED_NAMES;
    for name in managed.iter().chain(&["BASH_COMMAND", "BASH_ENV", "HOSTNAME", "IFS", "OLDPWD", "PWD", "PS4"]) {
        std::fs::write(&file, format!("{name}='set by file'\n")).unwrap();
        let out = Command::new("bash")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(["-c", "set -a; . \"$1\" 2>/dev/null; exec env -0", "bash"])
            .arg(&file)
            .output()
            .expect("bash runs");
        // Some (HISTCMD, …) make bash abort the script: not read back either.
        let text = String::from_utf8_lossy(&out.stdout);
        let reads_back = out.status.success() && text.split('\0').any(|pair| pair == format!("{name}=set by file"));
        assert_eq!(reads_back, !managed.contains(name), "{name}");
    }
}

const E2E_CONFIG: &str = r#"[files]

[envs.dev]

[[output]]
name = "app"
[output.entries]
E2E_PRICE = "{{ key(name='price') }}"
E2E_LINES = "{{ key(name='lines') }}"
[[output.target]]
kind = "file"
path = "out/compose.env"
dialect = "compose"
[[output.target]]
kind = "file"
path = "out/python.env"
dialect = "python-dotenv"
[[output.target]]
kind = "file"
path = "out/shell.env"
dialect = "shell"
[[output.target]]
kind = "file"
path = "out/default.env"
"#;

const E2E_CANARY: &str = "CANARY-dotenv-7c41";

/// `dialect` goes from the config to the written file: each target's file
/// reads back exactly in its reader, and the target without a dialect
/// refuses the values python-dotenv would misread, naming the entry and not
/// the value, while the others are still written.
#[test]
fn the_dialect_of_a_file_target_reaches_the_file() {
    let p = Project::new(E2E_CONFIG);
    let price = format!("it's $5 {E2E_CANARY}");
    let lines = format!("{E2E_CANARY}\r\nsecond line\r\n");
    p.write("source/dev.toml", &format!("[keys]\nprice = {}\nlines = {}\n", toml_string(&price), toml_string(&lines)));
    let run = p.run(&["reconcile", "--once"]);
    assert_ne!(run.code, 0, "a target failed: {run:?}");
    assert!(run.all().contains("entry \"E2E_LINES\" cannot be written to a dotenv file exactly"), "{run:?}");
    assert!(!run.all().contains(E2E_CANARY), "a value leaked: {run:?}");
    assert!(!p.path("out/default.env").exists());
    let want = BTreeMap::from([("E2E_LINES".to_owned(), lines), ("E2E_PRICE".to_owned(), price)]);
    for (file, read) in [
        ("out/compose.env", compose_reads as ReadFn),
        ("out/python.env", python_reads),
        ("out/shell.env", bash_reads),
        ("out/shell.env", sh_reads),
    ] {
        assert_eq!(read(&p.path(file)).as_ref(), Ok(&want), "{file}");
    }
    assert_ne!(p.read("out/compose.env"), p.read("out/shell.env"), "the dialects differ for these values");
}

/// A basic TOML string with every non-printable character escaped.
fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn dialect_is_checked_with_the_config() {
    let with = |replace: &str| E2E_CONFIG.replace("dialect = \"compose\"", replace);
    for (config, message) in [
        (
            with("dialect = \"compose\"\nformat = \"json\""),
            "output \"app\": `dialect` applies to format \"dotenv\" only",
        ),
        (with("dialect = \"bash\""), "unknown variant `bash`, expected one of `compose`, `python-dotenv`, `shell`"),
    ] {
        let p = Project::new(&config);
        p.write("source/dev.toml", "[keys]\nprice = \"1\"\nlines = \"2\"\n");
        let run = p.run(&["validate"]);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.contains(message), "{run:?}");
    }
    let p = Project::new(E2E_CONFIG);
    p.write("source/dev.toml", "[keys]\nprice = \"1\"\nlines = \"2\"\n");
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 0, "{run:?}");
}
