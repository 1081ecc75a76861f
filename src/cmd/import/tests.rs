use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::destination::batches;
use super::*;
use crate::cli::Cli;
use crate::secret::SecretString;
use crate::source::Secret;
use crate::source::etcd_admin::GuardedPut;
use crate::targets::gitlab::Owner;
use crate::targets::kubernetes::ObjectKind;
use clap::Parser;

const CANARY: &str = "CANARY-7c1e-import";

fn config() -> Config {
    let text = "[files]\n[envs.prod]\n[envs.staging]\n[[output]]\nname = \"o\"\n[output.entries]\nA = \"a\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{{ env }}.env\"\n";
    crate::config::parse(Path::new("/cfg/cfgsync.toml"), text, &BTreeMap::<String, String>::new()).unwrap()
}

/// The request `cfgsync … import ARGS` makes.
fn request(args: &[&str]) -> Result<Request, CmdError> {
    let cli = Cli::try_parse_from(["cfgsync"].iter().chain(args)).unwrap();
    let crate::cli::Command::Import(import) = cli.command else { panic!("not import") };
    Request::new(&config(), &import, cli.output)
}

fn error(args: &[&str]) -> String {
    match request(args) {
        Ok(_) => panic!("{args:?} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_from_form_parses_and_prints_back_as_typed() {
    let cases: &[(&str, Origin)] = &[
        ("dotenv:.env", Origin::Dotenv(PathBuf::from(".env"))),
        ("dotenv:/srv/app/prod.env", Origin::Dotenv(PathBuf::from("/srv/app/prod.env"))),
        (
            "kubernetes-secret:prod/api/api",
            Origin::Kubernetes {
                object: ObjectKind::Secret,
                context: "prod".into(),
                namespace: "api".into(),
                name: "api".into(),
            },
        ),
        (
            // EKS context names hold slashes: namespace and name are the last two segments.
            "kubernetes-configmap:arn:aws:eks:eu-west-1:123:cluster/prod/web/web-config",
            Origin::Kubernetes {
                object: ObjectKind::ConfigMap,
                context: "arn:aws:eks:eu-west-1:123:cluster/prod".into(),
                namespace: "web".into(),
                name: "web-config".into(),
            },
        ),
        ("gitlab:group/app", Origin::Gitlab(Owner::Project("group/app".into()))),
        ("gitlab:group/sub/app", Origin::Gitlab(Owner::Project("group/sub/app".into()))),
        ("gitlab:4242", Origin::Gitlab(Owner::Project("4242".into()))),
        ("gitlab-group:platform", Origin::Gitlab(Owner::Group("platform".into()))),
        ("gitlab-group:platform/team", Origin::Gitlab(Owner::Group("platform/team".into()))),
    ];
    for (text, want) in cases {
        let got: Origin = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(&got, want, "{text}");
        assert_eq!(got.to_string(), *text);
    }
    assert_eq!(
        "kubernetes-secret:prod/api/db".parse::<Origin>().unwrap().describe(),
        "Kubernetes Secret api/db (context prod)"
    );
    assert_eq!("gitlab:group/app".parse::<Origin>().unwrap().describe(), "GitLab project group/app");
}

#[test]
fn a_malformed_from_says_what_to_type() {
    let cases = [
        ("dotenv:", "give the file: dotenv:PATH"),
        ("kubernetes-secret:api/api", "give kubernetes-secret:CONTEXT/NAMESPACE/NAME"),
        ("kubernetes-secret:/api/api", "CONTEXT/NAMESPACE/NAME"),
        ("kubernetes-configmap:prod//web", "CONTEXT/NAMESPACE/NAME"),
        ("kubernetes-secret:prod/api/", "CONTEXT/NAMESPACE/NAME"),
        ("gitlab:app", "gitlab:GROUP/PROJECT"),
        ("gitlab:group//app", "gitlab:GROUP/PROJECT"),
        ("gitlab:group/my app", "gitlab:GROUP/PROJECT"),
        ("gitlab-group:", "gitlab-group:GROUP"),
        ("kubernetes-secrets:prod/api/api", "unknown kind \"kubernetes-secrets\" (did you mean kubernetes-secret:?)"),
        ("gitlabs:group/app", "did you mean gitlab:?"),
        ("just-a-name", "give the kind first: dotenv:PATH, kubernetes-secret:"),
    ];
    for (text, want) in cases {
        let e = text.parse::<Origin>().expect_err(text).to_string();
        assert!(e.starts_with(&format!("FROM {text:?}: ")) && e.contains(want), "{text}: {e}");
    }
    // A bare path that exists gets the spelling for it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.env");
    std::fs::write(&file, "A=1\n").unwrap();
    let e = file.to_str().unwrap().parse::<Origin>().unwrap_err().to_string();
    assert!(e.contains(&format!("(for this file: dotenv:{})", file.display())), "{e}");
}

#[test]
fn globs_match_whole_names() {
    for (pattern, name, want) in [
        ("LOG_*", "LOG_LEVEL", true),
        ("LOG_*", "LOG_", true),
        ("LOG_*", "XLOG_LEVEL", false),
        ("*_URL", "API_URL", true),
        ("*_URL", "API_URL_2", false),
        ("API_?", "API_1", true),
        ("API_?", "API_12", false),
        ("*", "", true),
        ("a*b*c", "aXbYbZc", true),
        ("a*b*c", "aXbYbZ", false),
        ("DB_HOST", "DB_HOST", true),
        ("DB_HOST", "db_host", false),
        ("**", "x", true),
    ] {
        assert_eq!(glob_match(pattern, name), want, "{pattern} ~ {name}");
    }
}

#[test]
fn flags_are_checked_before_anything_is_read() {
    let ok = request(&["import", "--env", "prod", "dotenv:.env", "--plain", "LOG_*", "--secret-path", "api/x"]);
    assert!(ok.is_ok());
    for (args, want) in [
        (&["import", "--env", "qa", "dotenv:.env"][..], "unknown env \"qa\""),
        (
            &["import", "--env", "prod", "kubernetes-secret:prod/api/api", "--plain", "HOST"],
            "--plain \"HOST\": applies to dotenv files only",
        ),
        (&["import", "--env", "prod", "gitlab:g/app", "--plain", "HOST"], "import never makes a secret plain"),
        (
            &["import", "--env", "prod", "dotenv:.env", "--adopt"],
            "--adopt: applies to gitlab: and github: origins only",
        ),
        (
            &["import", "--env", "prod", "gitlab:g/app", "--github-url", "https://ghe.example.com/api/v3"],
            "--github-url \"https://ghe.example.com/api/v3\": applies to github:",
        ),
        (&["import", "--env", "prod", "github:acme/app", "--gitlab-url", "https://x.example"], "applies to gitlab:"),
        (&["import", "--env", "prod", "github:acme/app", "--github-url", "http://ghe.example.com"], "unencrypted"),
        (&["import", "--env", "prod", "github:acme"], "give github:OWNER/REPO"),
        (&["import", "--env", "prod", "github-env:acme/app"], "give github-env:OWNER/REPO/ENVIRONMENT"),
        (&["import", "--env", "prod", "github-org:"], "give github-org:ORG"),
        (
            &["import", "--env", "prod", "dotenv:.env", "--environment-scope", "prod"],
            "--environment-scope \"prod\": applies to gitlab:",
        ),
        (&["import", "--env", "prod", "dotenv:.env", "--token-env", "T"], "--token-env \"T\": applies to gitlab:"),
        (&["import", "--env", "prod", "gitlab:g/app", "--gitlab-url", "http://gitlab.example.com"], "unencrypted"),
        (&["import", "--env", "prod", "gitlab:g/app", "--token-env", "MY-TOKEN"], "not an environment variable name"),
        (&["import", "--env", "prod", "dotenv:.env", "--key-prefix", "/api/"], "--key-prefix \"/api/\""),
        (&["import", "--env", "prod", "dotenv:.env", "--key-prefix", "api//"], "--key-prefix"),
        (&["import", "--env", "prod", "dotenv:.env", "--secret-path", "../prod/x"], "invalid secret path"),
        (&["import", "--env", "prod", "dotenv:.env", "--secret", ""], "--secret \"\": an empty pattern"),
        (&["--output", "json", "import", "--env", "prod", "dotenv:.env"], "--output json needs --yes or --dry-run"),
    ] {
        let e = error(args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    assert!(request(&["--output", "json", "import", "--env", "prod", "dotenv:.env", "--yes"]).is_ok());
    let r = request(&["import", "--env", "prod", "gitlab-group:platform", "--gitlab-url", "https://gl.example.com/"])
        .unwrap();
    let g = r.gitlab.unwrap();
    assert_eq!(
        (g.url.as_str(), g.token_env.as_str(), g.scope.as_str()),
        ("https://gl.example.com", "GITLAB_TOKEN", "prod")
    );
    let r = request(&["import", "--env", "prod", "github-env:acme/app/prod east", "--adopt"]).unwrap();
    let g = r.github.as_ref().unwrap();
    assert_eq!((g.url.as_str(), g.token_env.as_str()), ("https://api.github.com", "GITHUB_TOKEN"));
    assert_eq!(r.origin.to_string(), "github-env:acme/app/prod east");
    assert_eq!(r.origin.describe(), "GitHub environment \"prod east\" of repository acme/app");
    let r = request(&["import", "--env", "prod", "github-org:acme", "--token-env", "ORG_TOKEN"]).unwrap();
    assert_eq!((r.origin.to_string().as_str(), r.github.unwrap().token_env.as_str()), ("github-org:acme", "ORG_TOKEN"));
}

fn found(name: &str, value: &str, secret: bool) -> Found {
    Found { name: name.into(), value: Content::new(value, secret), notes: Vec::new(), adoptable: None }
}

fn fetched(values: &[(&str, &str, bool)]) -> Fetched {
    Fetched { found: values.iter().map(|(n, v, s)| found(n, v, *s)).collect(), ..Default::default() }
}

#[test]
fn what_the_origin_protects_stays_secret_and_dotenv_is_secret_by_default() {
    let dotenv = request(&[
        "import",
        "--env",
        "prod",
        "dotenv:.env",
        "--plain",
        "LOG_*",
        "--plain",
        "*_URL",
        "--secret",
        "SECRET_URL",
    ])
    .unwrap();
    let values = fetched(&[
        ("LOG_LEVEL", "info", true),
        ("API_URL", "u", true),
        ("SECRET_URL", "s", true),
        ("DB_PASSWORD", "p", true),
    ]);
    let (mapped, _) = classify(&dotenv, values);
    let secret: BTreeMap<&str, bool> = mapped.iter().map(|(f, s, _)| (f.name.as_str(), *s)).collect();
    assert_eq!(
        secret,
        BTreeMap::from([("API_URL", false), ("DB_PASSWORD", true), ("LOG_LEVEL", false), ("SECRET_URL", true)]),
        "--secret wins over --plain"
    );
    let kube = request(&["import", "--env", "prod", "kubernetes-configmap:prod/web/web", "--secret", "TOKEN"]).unwrap();
    let (mapped, _) = classify(&kube, fetched(&[("HOST", "h", false), ("TOKEN", "t", false), ("KEY", "k", true)]));
    let secret: Vec<bool> = mapped.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(secret, [false, true, true]);
}

#[test]
fn names_map_to_keys_and_fields_or_are_not_importable() {
    let r = request(&[
        "import",
        "--env",
        "prod",
        "kubernetes-configmap:prod/web/web",
        "--key-prefix",
        "web/",
        "--secret",
        "TOKEN",
    ])
    .unwrap();
    let (mapped, unimportable) = classify(
        &r,
        fetched(&[("config.yaml", "x", false), ("..", "x", false), ("TOKEN", "t", false), ("a#b", "t", true)]),
    );
    let dests: Vec<&Dest> = mapped.iter().map(|(_, _, d)| d).collect();
    assert_eq!(
        dests,
        [&Dest::Key { name: "web/config.yaml".into(), path: String::new() }, &Dest::Field { field: "TOKEN".into() }]
    );
    let names: Vec<&str> = unimportable.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["..", "a#b"]);
    assert!(unimportable[0].reason.contains("cannot be an etcd key name"), "{:?}", unimportable[0]);
}

fn current_with(keys: &[(&str, &str)], fields: &[(&str, &str)]) -> Current {
    Current {
        keys: keys.iter().map(|(k, v)| ((*k).to_owned(), (v.as_bytes().to_vec(), 7))).collect(),
        secret: Some(Secret {
            fields: fields.iter().map(|(k, v)| ((*k).to_owned(), SecretString::new(*v))).collect(),
            version: Some(3),
        }),
        ..Default::default()
    }
}

/// A dotenv import with a new, a same and a differing key and field.
fn sample(overwrite: bool) -> (Request, Plan) {
    let mut args = vec![
        "import",
        "--env",
        "prod",
        "dotenv:.env",
        "--plain",
        "P_*",
        "--key-prefix",
        "api/",
        "--secret-path",
        "api/imported",
    ];
    if overwrite {
        args.push("--overwrite");
    }
    let r = request(&args).unwrap();
    let mut values = fetched(&[
        ("P_NEW", "new\x1b[2Jvalue", true),
        ("P_SAME", "same", true),
        ("P_DIFF", "imported", true),
        ("S_NEW", &format!("{CANARY}-new"), true),
        ("S_SAME", &format!("{CANARY}-same"), true),
        ("S_DIFF", &format!("{CANARY}-imported"), true),
    ]);
    values.unimportable.push(Unimportable { name: "HIDDEN".into(), reason: "hidden in GitLab".into() });
    values.notes.push("a note about the origin".into());
    let (mut mapped, unimportable) = classify(&r, values);
    for (_, _, d) in &mut mapped {
        if let Dest::Key { name, path } = d {
            *path = format!("/cfgsync/prod/{name}");
        }
    }
    let current = current_with(
        &[("/cfgsync/prod/api/P_SAME", "same"), ("/cfgsync/prod/api/P_DIFF", "in etcd")],
        &[("S_SAME", &format!("{CANARY}-same")), ("S_DIFF", &format!("{CANARY}-in-vault")), ("OTHER", CANARY)],
    );
    let p = plan(&r, mapped, unimportable, vec!["a note about the origin".into()], Vec::new(), &current);
    (r, p)
}

fn places() -> Places {
    Places {
        secret: Some("secret/prod/api/imported".into()),
        record: None,
        instance: "team-a".into(),
        adopted_noun: "GitLab variable(s)",
    }
}

#[test]
fn states_and_outcomes_follow_what_is_there() {
    for overwrite in [false, true] {
        let (_, p) = sample(overwrite);
        let got: Vec<(&str, State, Outcome, i64)> =
            p.items.iter().map(|i| (i.name.as_str(), i.state, i.outcome, i.seen)).collect();
        let differs = if overwrite { Outcome::Replace } else { Outcome::Keep };
        assert_eq!(
            got,
            [
                ("P_NEW", State::New, Outcome::Import, 0),
                ("P_SAME", State::Same, Outcome::Unchanged, 7),
                ("P_DIFF", State::Differs, differs, 7),
                ("S_NEW", State::New, Outcome::Import, 0),
                ("S_SAME", State::Same, Outcome::Unchanged, 0),
                ("S_DIFF", State::Differs, differs, 0),
            ]
        );
        assert_eq!(p.writes(), if overwrite { 4 } else { 2 });
        assert!(p.incomplete(), "HIDDEN is not importable either way");
    }
}

#[test]
fn the_plan_shows_plain_values_escaped_and_no_secret_in_text_or_json() {
    let (r, p) = sample(false);
    let mut text = Vec::new();
    print_plan(&r, &p, &places(), Style::plain(), &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert_eq!(
        text,
        "import into env prod from dotenv file .env
  + P_NEW → etcd /cfgsync/prod/api/P_NEW (new)
      + new\\e[2Jvalue
  = P_SAME → etcd /cfgsync/prod/api/P_SAME (same)
  ! P_DIFF → etcd /cfgsync/prod/api/P_DIFF (differs: keep, --overwrite replaces it)
      - in etcd
      + imported
  + S_NEW → vault secret/prod/api/imported#S_NEW (secret, new)
  = S_SAME → vault secret/prod/api/imported#S_SAME (secret, same)
  ! S_DIFF → vault secret/prod/api/imported#S_DIFF (secret, differs: keep, --overwrite replaces it)
  x HIDDEN: not importable: hidden in GitLab
note: a note about the origin
2 new, 2 same, 2 differ (kept), 1 not importable
"
    );
    let json = json_document(&r, &p, &places(), Some(&Written::default()), &[]).to_string();
    assert!(!json.contains("CANARY"), "{json}");
    assert!(json.contains(r#""value":"new\u001b[2Jvalue""#) && json.contains(r#""current":"in etcd""#), "{json}");
    // Debug of a plan item never shows the value either.
    let debug = format!("{:?}", p.items.iter().map(|i| &i.value).collect::<Vec<_>>());
    assert!(!debug.contains("CANARY"), "{debug}");
}

#[test]
fn names_and_notes_from_a_server_are_escaped_too() {
    let r = request(&["import", "--env", "prod", "gitlab:g/app", "--secret-path", "ci"]).unwrap();
    let mut values = fetched(&[("OK\x1b[2J", "v", true)]);
    values.found[0].notes.push("scope \u{202e}x".into());
    values.unimportable.push(Unimportable { name: "BAD\r".into(), reason: "hidden\x1b]0;t\x07".into() });
    values.notes.push("note\nsecond line".into());
    let notes = values.notes.clone();
    let (mapped, unimportable) = classify(&r, values);
    let p = plan(&r, mapped, unimportable, notes, Vec::new(), &Current::default());
    let mut text = Vec::new();
    print_plan(&r, &p, &places(), Style::plain(), &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(!text.contains(['\x1b', '\r', '\x07', '\u{202e}']), "{text:?}");
    assert!(text.contains("OK\\e[2J → vault secret/prod/api/imported#OK\\e[2J (secret, new)"), "{text}");
    assert!(text.contains("x BAD\\r: not importable: hidden\\e]0;t\\u{7}"), "{text}");
    assert!(text.contains("note: note\\nsecond line\n"), "{text}");
}

#[test]
fn adoption_takes_what_etcd_and_vault_will_hold_and_not_what_is_recorded() {
    let r = request(&["import", "--env", "prod", "gitlab:g/app", "--secret-path", "ci", "--adopt"]).unwrap();
    let mut values = fetched(&[
        ("NEW", "n", false),
        ("SAME", "s", false),
        ("DIFF", "d", false),
        ("OURS", "o", false),
        ("KNOWN", "k", false),
    ]);
    for f in &mut values.found {
        f.adoptable = (f.name != "OURS").then(|| adoptable(&f.name));
    }
    let (mut mapped, unimportable) = classify(&r, values);
    for (_, _, d) in &mut mapped {
        if let Dest::Key { name, path } = d {
            *path = format!("/cfgsync/prod/{name}");
        }
    }
    let mut current = current_with(&[("/cfgsync/prod/SAME", "s"), ("/cfgsync/prod/DIFF", "other")], &[]);
    current.recorded.insert("KNOWN@prod".into());
    let p = plan(&r, mapped, unimportable, Vec::new(), vec![adoptable("HIDDEN"), adoptable("KNOWN")], &current);
    let ids: Vec<&str> = p.adopt.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["NEW@prod", "SAME@prod", "HIDDEN@prod"], "what cannot be imported is adopted all the same");
    assert_eq!(p.adopt[0].attributes["protected"], "true", "the flags to keep go with it");
    let without = request(&["import", "--env", "prod", "gitlab:g/app", "--secret-path", "ci"]).unwrap();
    let p = plan(&without, Vec::new(), Vec::new(), Vec::new(), vec![adoptable("HIDDEN")], &Current::default());
    assert!(p.adopt.is_empty(), "only with --adopt");
}

fn adoptable(name: &str) -> Adoptable {
    Adoptable {
        id: format!("{name}@prod"),
        name: name.into(),
        group: "environment scope prod".into(),
        attributes: [("protected".to_owned(), "true".to_owned())].into(),
        scope: Some("prod".into()),
    }
}

#[test]
fn etcd_writes_are_batched_within_etcds_limits_keeping_a_key_with_its_sibling() {
    let put =
        |i: usize, size: usize| GuardedPut { key: format!("/k/{i}"), value: "x".repeat(size), seen_mod_revision: 0 };
    let groups: Vec<Vec<GuardedPut>> = (0..300).map(|i| vec![put(i, 1), put(i + 1000, 1)]).collect();
    let b = batches(groups);
    let sizes: Vec<(usize, usize)> = b.iter().map(|(puts, n)| (puts.len(), *n)).collect();
    assert_eq!(sizes, [(128, 64), (128, 64), (128, 64), (128, 64), (88, 44)]);
    let big: Vec<Vec<GuardedPut>> = (0..5).map(|i| vec![put(i, 400 * 1024)]).collect();
    let sizes: Vec<usize> = batches(big).iter().map(|(_, n)| *n).collect();
    assert_eq!(sizes, [2, 2, 1], "at most 1 MiB of keys and values per transaction");
    assert!(batches(Vec::new()).is_empty());
}

// ---------------------------------------------------------------------------
// dotenv files
// ---------------------------------------------------------------------------

fn read(dir: &Path, name: &str) -> Result<BTreeMap<String, String>, String> {
    origin::read_dotenv(&dir.join(name))
        .map(|f| f.found.into_iter().map(|v| (v.name, v.value.expose_str().unwrap().to_owned())).collect())
        .map_err(|e| e.to_string())
}

#[test]
fn a_file_cfgsync_wrote_imports_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let entries: BTreeMap<String, String> = [
        ("PLAIN", "db.internal:5432"),
        ("EMPTY", ""),
        ("SPACES", "two words  and\ttab"),
        ("QUOTES", "it's \"quoted\""),
        ("DOLLAR", "pa$$word"),
        ("MULTILINE", "line one\nline two\n"),
        ("BACKSLASH", "a\\\\b \\n literally"),
        ("HASH", "value # not a comment"),
        ("UNICODE", "grüße ☃"),
        ("SECRET", CANARY),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let text =
        crate::format::encode(crate::format::Format::Dotenv, crate::format::Dialect::Portable, &entries).unwrap();
    std::fs::write(dir.path().join("app.env"), &text).unwrap();
    assert_eq!(read(dir.path(), "app.env").unwrap(), entries);
    // Hand edits cfgsync does not write are read too.
    std::fs::write(dir.path().join("hand.env"), "\u{feff}# comment\r\n\r\nexport A=1\r\nB = 'x y' # trailing\r\n")
        .unwrap();
    let got = read(dir.path(), "hand.env").unwrap();
    assert_eq!(got, BTreeMap::from([("A".to_owned(), "1".to_owned()), ("B".to_owned(), "x y".to_owned())]));
}

#[test]
fn a_bad_dotenv_file_is_refused_naming_file_and_line_never_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dup.env", b"A=1\nB=2\n\nA=3\n".to_vec(), "dup.env:4: A is set again (first on line 1)"),
        (
            "syntax.env",
            format!("A=1\nB={CANARY} {CANARY}\n").into_bytes(),
            "syntax.env:2: unquoted value contains whitespace",
        ),
        (
            "dollar.env",
            format!("A=\"{CANARY}$HOME\"\n").into_bytes(),
            "dollar.env:1: unescaped '$' would need variable substitution",
        ),
        ("open.env", format!("A=1\nB='{CANARY}\n").into_bytes(), "open.env:2: unterminated single-quoted value"),
        ("name.env", b"A=1\n9X=2\n".to_vec(), "name.env:2: expected a variable name"),
        ("bytes.env", b"A=1\nB=\xff\xfe\n".to_vec(), "bytes.env:2: not UTF-8 text"),
    ];
    for (name, content, want) in cases {
        std::fs::write(dir.path().join(name), &content).unwrap();
        let e = read(dir.path(), name).expect_err(name);
        assert!(e.contains(want) && e.ends_with("; nothing written"), "{name}: {e}");
        assert!(!e.contains("CANARY"), "{e}");
    }
    // A NUL reads but cannot be imported (no environment variable carries one).
    std::fs::write(dir.path().join("nul.env"), "A='x\0y'\nB=1\n").unwrap();
    let f = origin::read_dotenv(&dir.path().join("nul.env")).unwrap();
    assert_eq!(f.found.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["B"]);
    assert_eq!(f.unimportable[0].name, "A");
    assert!(f.unimportable[0].reason.contains("a NUL character (at byte 1)"), "{:?}", f.unimportable);
}

#[test]
fn a_dotenv_file_is_read_only_if_regular_not_through_a_symlink_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("real.env"), "A=1\n").unwrap();
    std::os::unix::fs::symlink("real.env", dir.path().join("link.env")).unwrap();
    let e = read(dir.path(), "link.env").unwrap_err();
    assert!(e.contains("is a symlink; cfgsync does not follow it: name the file it points to (real.env)"), "{e}");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.path().join("fifo.env"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let e = read(dir.path(), "fifo.env").unwrap_err();
    assert!(e.contains("is not a regular file (Fifo)"), "{e}");
    let e = read(dir.path(), "missing.env").unwrap_err();
    assert!(e.contains("missing.env: No such file or directory"), "{e}");
    let at_limit = format!("A={}\n", "x".repeat(origin::MAX_DOTENV_BYTES as usize - 3));
    std::fs::write(dir.path().join("limit.env"), &at_limit).unwrap();
    assert_eq!(read(dir.path(), "limit.env").unwrap()["A"].len(), origin::MAX_DOTENV_BYTES as usize - 3);
    std::fs::write(dir.path().join("big.env"), format!("{at_limit}B=1\n")).unwrap();
    let e = read(dir.path(), "big.env").unwrap_err();
    assert!(e.contains("is larger than 1048576 bytes"), "{e}");
}
