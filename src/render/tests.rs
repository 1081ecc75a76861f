//! Pure rendering tests: hand-built snapshots, no I/O beyond a temp
//! `templates/` directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::config::{self, Config};
use crate::secret::SecretString;
use crate::source::{KeyOrigin, KeyValue, Secret, Snapshot};

const CANARY: &str = "CANARY-4c1d-pw";

fn config(dir: &Path, entries: &str) -> Config {
    let text = format!(
        "[files]\n[envs.prod]\n[envs.dev]\n\n[[output]]\nname = \"app\"\n[output.entries]\n{entries}\n[[output.target]]\nkind = \"file\"\npath = \"out/{{{{ env }}}}.env\"\n"
    );
    config::parse(&dir.join("cfgsync.toml"), &text, &BTreeMap::<String, String>::new()).unwrap()
}

fn snapshot() -> Arc<Snapshot> {
    let mut keys = BTreeMap::new();
    for (k, v) in
        [("db/user", "api"), ("db/host", "db.internal"), ("flags/zeta", "z"), ("flags/alpha", "a"), ("flagsx", "no")]
    {
        keys.insert(k.to_owned(), KeyValue::new(v.to_owned().into(), KeyOrigin::File));
    }
    let mut secrets = BTreeMap::new();
    let fields = [("password".to_owned(), SecretString::new(CANARY)), ("user".to_owned(), SecretString::new("admin"))];
    secrets.insert("db".to_owned(), Secret { fields: fields.into_iter().collect(), version: Some(3) });
    Arc::new(Snapshot { env: "prod".into(), keys, secrets, revision: Some(7) })
}

fn compile(entries: &str) -> (tempfile::TempDir, Result<Templates, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), entries);
    let t = Templates::compile(&c);
    (dir, t)
}

fn render(entries: &str) -> Result<Rendered, RenderError> {
    let (_dir, t) = compile(entries);
    let t = t.unwrap();
    t.render(0, &snapshot())
}

#[test]
fn functions_render_from_the_snapshot() {
    let r = render(
        r#"URL = "{{ key(name='db/user') }}@{{ key(name='db/host') }}"
LEVEL = "{{ key_or(name='log/level', default='info') }}"
HAS = "{{ exists(name='db/host') }}/{{ exists(name='nope') }}"
FLAGS = "{% for k, v in keys(prefix='flags/') %}{{ k }}={{ v }},{% endfor %}"
ENV = "{{ env }}""#,
    )
    .unwrap();
    assert_eq!(r.entries["URL"].expose_str().unwrap(), "api@db.internal");
    assert_eq!(r.entries["LEVEL"].expose_str().unwrap(), "info");
    assert_eq!(r.entries["HAS"].expose_str().unwrap(), "true/false");
    assert_eq!(r.entries["FLAGS"].expose_str().unwrap(), "alpha=a,zeta=z,", "sorted, prefix stripped, flagsx excluded");
    assert_eq!(r.entries["ENV"].expose_str().unwrap(), "prod");
    assert!(!r.tainted);
    assert!(r.used.contains(&Use::KeyPrefix("flags/".into())));
    assert!(r.used.contains(&Use::Key("log/level".into())));
}

#[test]
fn reading_any_secret_taints_the_whole_output() {
    let r = render(
        r#"PLAIN = "{{ key(name='db/host') }}"
PW = "{{ secret(path='db', field='password') }}"
ALL = "{% for f, v in secrets(path='db') %}{{ f }};{% endfor %}""#,
    )
    .unwrap();
    assert!(r.tainted);
    assert_eq!(r.entries["PW"].expose_str().unwrap(), CANARY);
    assert_eq!(r.entries["ALL"].expose_str().unwrap(), "password;user;");
    assert!(r.used.contains(&Use::Secret("db".into())));
}

#[test]
fn missing_values_are_errors_naming_what_output_and_env() {
    let cases = [
        ("A = \"{{ key(name='db/port') }}\"", "output \"app\", env \"prod\", entry \"A\": key \"db/port\" not found"),
        (
            "A = \"{{ secret(path='cache', field='pw') }}\"",
            "output \"app\", env \"prod\", entry \"A\": secret \"cache\" not found",
        ),
        ("A = \"{{ secret(path='db', field='pin') }}\"", "secret \"db\" has no field \"pin\""),
    ];
    for (entries, want) in cases {
        let e = render(entries).unwrap_err();
        assert!(matches!(e, RenderError::Missing { .. }), "{e:?}");
        assert!(e.to_string().contains(want), "{e} / want {want}");
    }
}

#[test]
fn template_errors_do_not_quote_secret_values() {
    // Tera's own message for a bad filter input quotes the value.
    let e = render("A = \"{{ secret(path='db', field='password') | int | round(method='x') }}\"").unwrap_err();
    assert!(!e.to_string().contains(CANARY), "{e}");
    let e = render("A = \"{% set p = secret(path='db', field='password') %}{{ p | slice(start=1) }}\"").unwrap_err();
    assert!(!e.to_string().contains(CANARY), "{e}");
}

#[test]
fn static_checks_find_unknown_names_and_secret_paths() {
    let (_d, t) = compile(
        r#"A = "{{ secret(path='db', field='password') }}{{ secrets(path='api/tls') }}"
B = "{{ key(name='x') }}""#,
    );
    let t = t.unwrap();
    assert_eq!(t.analysis(0).secret_paths.iter().collect::<Vec<_>>(), ["api/tls", "db"]);
    assert!(t.analysis(0).reads_secrets());
    assert_eq!(t.secret_paths("prod").len(), 2);

    let cases = [
        ("A = \"{{ kee(name='x') }}\"", "unknown function `kee` (did you mean `key`?)"),
        ("A = \"{{ key(name='x') | upcase }}\"", "unknown filter `upcase`"),
        ("A = \"{% if x is oddd %}{% endif %}\"", "unknown test `oddd`"),
        ("A = \"{{ secret(path=env, field='f') }}\"", "`path` must be a string literal"),
        ("A = \"{% if true %}{{ nope() }}{% endif %}\"", "unknown function `nope`"),
    ];
    for (entries, want) in cases {
        let (_d, t) = compile(entries);
        let Err(e) = t else { panic!("{entries} compiled") };
        assert!(e.to_string().contains(want), "{e} / want {want}");
        assert!(e.to_string().contains("cfgsync.toml:8:"), "{e}");
    }
}

#[test]
fn template_files_include_and_locate_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("templates/parts")).unwrap();
    std::fs::write(dir.path().join("templates/main.tera"), "{% include \"parts/db.tera\" %}|{{ env }}").unwrap();
    std::fs::write(dir.path().join("templates/parts/db.tera"), "{{ secret(path='db', field='user') }}").unwrap();
    let c = config(dir.path(), "A = { template = \"main.tera\" }");
    let t = Templates::compile(&c).unwrap();
    assert_eq!(t.analysis(0).secret_paths.iter().collect::<Vec<_>>(), ["db"], "found through the include");
    let r = t.render(0, &snapshot()).unwrap();
    assert_eq!(r.entries["A"].expose_str().unwrap(), "admin|prod");
    assert!(r.tainted);

    std::fs::write(dir.path().join("templates/parts/db.tera"), "line 1\n{{ nope(x=1) }}").unwrap();
    let e = Templates::compile(&c).err().unwrap().to_string();
    assert!(
        e.contains("templates/parts/db.tera:2:4: unknown function `nope` (used by output \"app\", entry \"A\")"),
        "{e}"
    );

    let c = config(dir.path(), "A = { template = \"missing.tera\" }");
    let e = Templates::compile(&c).err().unwrap().to_string();
    assert!(e.contains("template file") && e.contains("missing.tera not found"), "{e}");
}

/// A render starts from a clean log: what an earlier render on the same
/// thread read (a secret) neither shows in the next one's `used` nor taints
/// it.
#[test]
fn renders_are_independent_per_output_call() {
    let dir = tempfile::tempdir().unwrap();
    let output = |name: &str, entry: &str| {
        format!(
            "[[output]]\nname = \"{name}\"\n[output.entries]\n{entry}\n[[output.target]]\nkind = \"file\"\npath = \"out/{name}.env\"\n"
        )
    };
    let text = format!(
        "[files]\n[envs.prod]\n\n{}\n{}",
        output("secret", "A = \"{{ secret(path='db', field='user') }}\""),
        output("plain", "B = \"{{ key(name='db/host') }}\"")
    );
    let c = config::parse(&dir.path().join("cfgsync.toml"), &text, &BTreeMap::<String, String>::new()).unwrap();
    let t = Templates::compile(&c).unwrap();
    let s = snapshot();
    let secret = t.render(0, &s).unwrap();
    assert!(secret.tainted);
    assert_eq!(secret.used, [Use::Secret("db".into())].into());
    let plain = t.render(1, &s).unwrap();
    assert!(!plain.tainted);
    assert_eq!(plain.used, [Use::Key("db/host".into())].into());
    assert_eq!(t.render(0, &s).unwrap().used, secret.used, "the same render again reads the same");
}

// ---------------------------------------------------------------------------
// The sandbox and the error allow-list (issue: trust boundaries).

/// Every way a transformed canary could still be recognised in text.
fn assert_no_canary(text: &str) {
    let stripped: String = CANARY.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let lower = text.to_lowercase();
    let squeezed: String = lower.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let reversed: String = stripped.chars().rev().collect();
    for needle in [stripped.to_lowercase(), reversed.to_lowercase(), "4c1d".to_owned()] {
        assert!(!squeezed.contains(&needle), "canary ({needle}) in: {text}");
    }
}

#[test]
fn errors_after_transforming_a_secret_never_carry_it() {
    let pw = "secret(path='db', field='password')";
    let filters = [
        "lower",
        "upper",
        "capitalize",
        "title",
        "trim",
        "trim_start",
        "trim_end",
        "reverse",
        "escape",
        "escape_xml",
        "addslashes",
        "spaceless",
        "striptags",
        "linebreaksbr",
        "urlencode",
        "urlencode_strict",
        "json_encode",
        "as_str",
        "truncate(length=8)",
        "replace(from='-', to='_')",
        "trim_start_matches(pat='C')",
        "trim_end_matches(pat='w')",
        "split(pat='-') | join(sep='')",
        "slice(start=1) | join(sep='')",
        "indent(prefix='  ')",
        "wordcount",
        "first",
        "last",
        "length",
    ];
    for f in filters {
        for failing in [
            format!("{{{{ key(name={pw} | {f}) }}}}"),
            format!("{{{{ {pw} | {f} | int | round(method='x') }}}}"),
            format!("{{{{ throw(message={pw} | {f}) }}}}"),
            format!("{{{{ secret(path='db', field={pw} | {f}) }}}}"),
            format!("{{% set v = {pw} | {f} %}}{{{{ v | filter(attribute='x') }}}}"),
            format!("{{{{ {pw} | {f} | get(key='x') }}}}"),
        ] {
            let entry = format!("A = \"{}\"", failing.replace('"', "\\\""));
            let (_d, t) = compile(&entry);
            let t = t.unwrap_or_else(|e| panic!("{entry}: {e}"));
            let Err(e) = t.render(0, &snapshot()) else { continue };
            assert_no_canary(&e.to_string());
            assert_no_canary(&format!("{e:?}"));
            assert_no_canary(&serde_json::to_string(&e).unwrap());
        }
    }
    // The same failure in an output that reads no secret keeps Tera's words.
    let e = render("A = \"{{ key(name='db/host') | round }}\"").unwrap_err().to_string();
    assert!(e.contains("db.internal"), "plain outputs keep the detail: {e}");
    // A secret-reading one says which filter failed, and why no more.
    let e = render(&format!("A = \"{{{{ {pw} | round }}}}\"")).unwrap_err().to_string();
    assert!(e.contains("filter `round` failed") && e.contains("withheld"), "{e}");
    // A literal key name is safe to repeat, a computed one is not.
    let e = render(&format!("A = \"{{{{ {pw} }}}}{{{{ key(name='db/port') }}}}\"")).unwrap_err().to_string();
    assert!(e.contains("key \"db/port\" not found"), "{e}");
}

#[test]
fn templates_cannot_read_the_environment_clock_or_randomness() {
    for (entries, want) in [
        ("A = \"{{ get_env(name='VAULT_TOKEN') }}\"", "function `get_env` is not allowed"),
        ("A = \"{% if true %}{{ get_env(name='HOME', default='x') }}{% endif %}\"", "`get_env` is not allowed"),
        ("A = \"{{ now() }}\"", "function `now` is not allowed"),
        ("A = \"{{ get_random(end=9) }}\"", "function `get_random` is not allowed"),
        ("A = \"{{ 'a' ~ get_env(name='HOME') }}\"", "`get_env` is not allowed"),
    ] {
        let (_d, t) = compile(entries);
        let e = t.err().unwrap_or_else(|| panic!("{entries} compiled")).to_string();
        assert!(e.contains(want), "{e} / want {want}");
    }
    // Config fields (paths, contexts) are rendered in the same sandbox.
    let e = crate::render::render_field("out/{{ get_env(name='HOME') }}", &[("env", "prod")]).unwrap_err();
    assert!(e.contains("not allowed"), "{e}");
}

#[test]
fn function_arguments_are_checked_statically() {
    for (entries, want) in [
        ("A = \"{{ key(nmae='x') }}\"", "key(): unknown argument `nmae` (did you mean `name`?)"),
        ("A = \"{{ key() }}\"", "key(): missing argument `name`"),
        ("A = \"{{ secret(path='db') }}\"", "secret(): missing argument `field`"),
        ("A = \"{{ range(ned=3) }}\"", "range(): unknown argument `ned`"),
    ] {
        let (_d, t) = compile(entries);
        let e = t.err().unwrap_or_else(|| panic!("{entries} compiled")).to_string();
        assert!(e.contains(want), "{e} / want {want}");
    }
}

fn with_templates(files: &[(&str, &str)], entries: &str) -> (tempfile::TempDir, Result<Templates, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join("templates").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let c = config(dir.path(), entries);
    let t = Templates::compile(&c);
    (dir, t)
}

#[test]
fn recursion_is_refused_before_it_can_overflow_the_stack() {
    type Files<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Files, &str, &str); 4] = [
        (&[("self.tera", "x{% include \"self.tera\" %}")], "A = { template = \"self.tera\" }", "refers to itself"),
        (
            &[("a.tera", "{% include \"b.tera\" %}"), ("b.tera", "{% include \"a.tera\" %}")],
            "A = { template = \"a.tera\" }",
            "is part of a cycle",
        ),
        (
            &[("m.tera", "{% macro f(n) %}{{ self::f(n=n) }}{% endmacro f %}")],
            "A = \"{% import 'm.tera' as m %}{{ m::f(n=1) }}\"",
            "macro f (",
        ),
        (
            &[
                ("m.tera", "{% import 'n.tera' as n %}{% macro f() %}{{ n::g() }}{% endmacro f %}"),
                ("n.tera", "{% import 'm.tera' as m %}{% macro g() %}{{ m::f() }}{% endmacro g %}"),
            ],
            "A = \"{% import 'm.tera' as m %}{{ m::f() }}\"",
            "is part of a cycle",
        ),
    ];
    for (files, entries, want) in cases {
        let (_d, t) = with_templates(files, entries);
        let e = t.err().unwrap_or_else(|| panic!("{entries} compiled")).to_string();
        assert!(e.contains(want), "{e} / want {want}");
    }
    // A deep but finite chain beyond the limit is refused too.
    let mut files: Vec<(String, String)> =
        (0..40).map(|i| (format!("t{i}.tera"), format!("{{% include \"t{}.tera\" %}}", i + 1))).collect();
    files.push(("t40.tera".into(), "end".into()));
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (_d, t) = with_templates(&files, "A = { template = \"t0.tera\" }");
    let e = t.err().unwrap().to_string();
    assert!(e.contains("deep; at most 32"), "{e}");
    // Text nested deeper than the parser's stack can take.
    let deep = format!("A = \"{}x{}\"", "{% if true %}".repeat(200), "{% endif %}".repeat(200));
    let (_d, t) = compile(&deep);
    assert!(t.err().unwrap().to_string().contains("too deeply nested"));
    let brackets = format!("A = \"{{{{ {}1{} }}}}\"", "(".repeat(5000), ")".repeat(5000));
    let (_d, t) = compile(&brackets);
    assert!(t.err().unwrap().to_string().contains("too deeply nested"));
}

#[test]
fn imports_and_the_shipped_library_work() {
    let (_d, t) = with_templates(
        &[("macros.tera", "{% macro url(host) %}https://{{ host }}/{% endmacro url %}")],
        "A = \"{% import 'macros.tera' as m %}{{ m::url(host=key(name='db/host')) }}\"\nB = \"{% import 'cfgsync/dsn.tera' as dsn %}{{ dsn::postgres(user='a@b', password=secret(path='db', field='password'), host='h', database='d') }}\"",
    );
    let t = t.unwrap();
    let r = t.render(0, &snapshot()).unwrap();
    assert_eq!(r.entries["A"].expose_str().unwrap(), "https://db.internal/");
    // Everything but RFC 3986's unreserved characters is percent-encoded.
    assert_eq!(r.entries["B"].expose_str().unwrap(), format!("postgres://a%40b:{CANARY}@h:5432/d"));
    assert!(r.tainted);
    // The config's own templates/ comes first.
    let (_d, t) = with_templates(
        &[("cfgsync/dsn.tera", "{% macro postgres(user, password, host, database) %}mine{% endmacro postgres %}")],
        "B = \"{% import 'cfgsync/dsn.tera' as dsn %}{{ dsn::postgres(user='u', password='p', host='h', database='d') }}\"",
    );
    assert_eq!(t.unwrap().render(0, &snapshot()).unwrap().entries["B"].expose_str(), Some("mine"));
}

#[test]
fn template_files_stay_inside_templates() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside.tera");
    std::fs::write(&outside, "{{ secret(path='db', field='password') }}").unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.path().join("templates/link.tera")).unwrap();
    let c = config(dir.path(), "A = { template = \"link.tera\" }");
    let e = Templates::compile(&c).err().unwrap().to_string();
    assert!(e.contains("link.tera: a symlink to a file outside templates/"), "{e}");
    // A FIFO is refused without being opened (opening it would block).
    std::fs::remove_file(dir.path().join("templates/link.tera")).unwrap();
    let status = std::process::Command::new("mkfifo").arg(dir.path().join("templates/pipe.tera")).status().unwrap();
    assert!(status.success());
    let c = config(dir.path(), "A = \"x\"");
    let e = Templates::compile(&c).err().unwrap().to_string();
    assert!(e.contains("pipe.tera: not a regular file"), "{e}");
}

fn limited(entries: &str, limits: Limits) -> Result<Rendered, RenderError> {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), entries);
    c.render = limits;
    let t = Templates::compile(&c).unwrap();
    t.render(0, &snapshot())
}

#[test]
fn loops_sizes_and_time_are_bounded() {
    let start = std::time::Instant::now();
    let e = limited("A = \"{% for i in range(end=100000000) %}x{% endfor %}\"", Limits::default()).unwrap_err();
    assert!(matches!(e, RenderError::Limit { limit: LimitHit::Range, .. }), "{e}");
    let e = limited(
        "A = \"{% for i in range(end=1000) %}{% for j in range(end=1000) %}xxxxxxxx{% endfor %}{% endfor %}\"",
        Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(e, RenderError::Limit { limit: LimitHit::Range, .. }), "{e}");
    let small = Limits { max_entry_bytes: 1000, max_output_bytes: 1500, ..Limits::default() };
    let e = limited("A = \"{% for i in range(end=2000) %}x{% endfor %}\"", small).unwrap_err();
    assert!(matches!(e, RenderError::Limit { limit: LimitHit::EntrySize, .. }), "{e}");
    let e = limited(
        "A = \"{% for i in range(end=900) %}x{% endfor %}\"\nB = \"{% for i in range(end=900) %}x{% endfor %}\"",
        small,
    )
    .unwrap_err();
    assert!(matches!(e, RenderError::Limit { limit: LimitHit::OutputSize, .. }), "{e}");
    // 4·10⁶ lookups writing nothing: far more than 50 ms in any build (the range budget is
    // raised so that the time budget is what stops it).
    let quick = Limits { timeout: std::time::Duration::from_millis(50), max_range: 10_000_000, ..Limits::default() };
    let e = limited(
        "A = \"{% for i in range(end=2000) %}{% for j in range(end=2000) %}{% if exists(name='db/host') %}{% endif %}{% endfor %}{% endfor %}\"",
        quick,
    )
    .unwrap_err();
    assert!(matches!(e, RenderError::Limit { limit: LimitHit::Time, .. }), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(20), "every bomb stopped early");
}

#[test]
fn a_value_that_is_not_text_fails_only_its_readers() {
    let mut s = (*snapshot()).clone();
    s.keys.insert("bin".into(), KeyValue::new(vec![0xff, 0xfe, b'a'], KeyOrigin::File));
    s.keys.insert("nul".into(), KeyValue::new(b"a\0b".to_vec(), KeyOrigin::File));
    let s = Arc::new(s);
    let (_d, t) = compile("A = \"{{ key(name='bin') }}\"");
    let e = t.unwrap().render(0, &s).unwrap_err().to_string();
    assert!(e.contains("key \"bin\" holds bytes that are not UTF-8 (at byte 0)"), "{e}");
    let (_d, t) = compile("A = \"{% for k, v in keys(prefix='') %}{{ k }}{% endfor %}\"");
    let e = t.unwrap().render(0, &s).unwrap_err().to_string();
    assert!(e.contains("key \"bin\"") && e.contains("not UTF-8"), "{e}");
    let (_d, t) = compile("A = \"{{ key(name='nul') }}\"");
    let e = t.unwrap().render(0, &s).unwrap_err().to_string();
    assert!(e.contains("a NUL character (at byte 1)"), "{e}");
    let (_d, t) = compile("A = \"{{ key(name='db/host') }}\"");
    assert_eq!(t.unwrap().render(0, &s).unwrap().entries["A"].expose_str(), Some("db.internal"));
}

#[test]
fn throw_messages_are_withheld_only_where_a_secret_was_read() {
    let e = render("A = \"{{ throw(message='bad ' ~ key(name='db/host')) }}\"").unwrap_err().to_string();
    assert!(e.contains("bad db.internal"), "{e}");
    let e = render("A = \"{{ secret(path='db', field='user') }}{{ throw(message='bad ' ~ key(name='db/host')) }}\"")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("db.internal") && e.contains("throw at line 1 of the entry: bad …"), "{e}");
}

#[test]
fn a_key_entry_carries_bytes_verbatim() {
    let mut s = (*snapshot()).clone();
    s.keys.insert("tls/der".into(), KeyValue::new(vec![0x30, 0x82, 0x00, 0xff], KeyOrigin::File));
    let s = Arc::new(s);
    let (_d, t) = compile("DER = { key = \"tls/der\" }\nHOST = \"{{ key(name='db/host') }}\"");
    let r = t.unwrap().render(0, &s).unwrap();
    assert_eq!(r.entries["DER"].expose(), &[0x30, 0x82, 0x00, 0xff]);
    assert!(!r.tainted && r.used.contains(&Use::Key("tls/der".into())));
    let (_d, t) = compile("DER = { key = \"tls/missing\" }");
    let e = t.unwrap().render(0, &s).unwrap_err().to_string();
    assert!(e.contains("entry \"DER\": key \"tls/missing\" not found"), "{e}");
}

/// What one rendering produced and recorded, to compare two renderers.
#[derive(Debug, PartialEq)]
struct Outcome {
    bytes: Option<Vec<u8>>,
    hit: Option<LimitHit>,
    used: std::collections::BTreeSet<Use>,
    tainted: bool,
    missing: Option<Missing>,
    function_error: Option<String>,
}

fn outcome(snapshot: &Arc<Snapshot>, room: usize, f: impl FnOnce(&mut LimitedWriter) -> tera::Result<()>) -> Outcome {
    let scope = functions::Scope {
        names: None,
        snapshot: snapshot.clone(),
        log: Default::default(),
        deadline: std::time::Instant::now() + std::time::Duration::from_secs(10),
        range_budget: 1000.into(),
    };
    let mut out = LimitedWriter { buf: Vec::new(), room, hit: None, writes: 0 };
    let (result, log) = functions::with_scope(scope, || f(&mut out));
    Outcome {
        bytes: result.ok().map(|()| out.buf),
        hit: out.hit,
        used: log.used,
        tainted: log.tainted,
        missing: log.missing,
        function_error: log.function_error,
    }
}

fn simple_snapshot() -> Arc<Snapshot> {
    let mut s = (*snapshot()).clone();
    s.keys.insert("bin".into(), KeyValue::new(vec![0xff, 0x00, 0x41], KeyOrigin::File));
    s.keys.insert("braces".into(), KeyValue::new(b"{{ not a tag }}".to_vec(), KeyOrigin::File));
    Arc::new(s)
}

/// Renders `text` as a simple template and through Tera; `None` when it is
/// not simple.
fn both_ways(text: &str, room: usize) -> Option<(Outcome, Outcome)> {
    let simple = simple::parse(text)?;
    let snapshot = simple_snapshot();
    let name = "@output/t/E".to_owned();
    let (tera, problems) =
        build_tera(&[(name.clone(), text.to_owned())], |_, _, message| Problem { location: None, message });
    assert!(problems.is_empty(), "{text:?} is simple, but Tera refuses it: {problems:?}");
    let mut context = tera::Context::new();
    context.insert("env", &snapshot.env);
    let ours = outcome(&snapshot, room, |out| simple.render(&snapshot.env, out));
    let teras = outcome(&snapshot, room, |out| tera.render_to(&name, &context, out));
    Some((ours, teras))
}

#[test]
fn simple_templates_render_as_tera_does() {
    use proptest::prelude::*;
    let quote = prop::sample::select(vec!['\'', '"', '`']);
    let ws = prop::sample::select(vec!["", " ", "  ", "\t", "\n", " \r\n "]);
    let name = prop::sample::select(vec!["db/user", "db/host", "nope", "bin", "braces", "a'b", "}}", "x\ny"]);
    let field = prop::sample::select(vec!["password", "user", "missing"]);
    let path = prop::sample::select(vec!["db", "nodb"]);
    let call = (0..6u8, quote, name, field, path, ws.clone(), ws.clone(), any::<bool>()).prop_map(
        |(which, q, name, field, path, w1, w2, swap)| {
            let lit = |v: &str| format!("{q}{v}{q}");
            let (a, b) = match which {
                0 => return format!("{{{{{w1}env{w2}}}}}"),
                1 => return format!("{{{{{w1}key{w2}(name{w2}={w1}{}){w1}}}}}", lit(name)),
                2 => (format!("name={}", lit(name)), format!("default={}", lit("dflt"))),
                3 => (format!("path={}", lit(path)), format!("field={}", lit(field))),
                4 => return format!("{{{{{w1}key(name={}) | upper{w2}}}}}", lit(name)),
                _ => return format!("{{{{-{w1}key(name={}){w2}}}}}", lit(name)),
            };
            let (a, b) = if swap { (b, a) } else { (a, b) };
            let f = if which == 2 { "key_or" } else { "secret" };
            format!("{{{{{w1}{f}({a},{w2}{b}){w1}}}}}")
        },
    );
    let text = prop::sample::select(vec!["", "x", " ", "}}", "}", "{", "a-b", "%", "#", "\n", "'\"`", "=,()"]);
    let piece = prop_oneof![text.prop_map(str::to_owned), call];
    let template = prop::collection::vec(piece, 0..8).prop_map(|p| p.concat());
    let mut runner =
        proptest::test_runner::TestRunner::new(proptest::test_runner::Config { cases: 2000, ..Default::default() });
    let simple_seen = std::cell::Cell::new(0u32);
    runner
        .run(&(template, 0usize..64), |(text, room)| {
            if let Some((ours, teras)) = both_ways(&text, room) {
                simple_seen.set(simple_seen.get() + 1);
                prop_assert_eq!(ours, teras, "{:?} with room {}", text, room);
            }
            Ok(())
        })
        .unwrap();
    assert!(simple_seen.get() > 500, "only {} of 2000 generated templates were simple", simple_seen.get());
}

#[test]
fn simple_and_tera_templates_of_one_output_agree_on_taint_and_errors() {
    let r = render(
        r#"A = "{{ key(name='db/user') }}"
B = "{{ key(name='db/host') | upper }}"
C = "{{ secret(path='db', field='user') }}""#,
    )
    .unwrap();
    assert!(r.tainted && r.entries.values().all(|c| c.is_secret()), "taint is per output, whatever the renderer");
    assert_eq!(r.entries["A"].expose_str(), Some("api"));
    assert_eq!(r.entries["B"].expose_str(), Some("DB.INTERNAL"));
    let e = render("A = \"{{ key(name='nope') }}\"").unwrap_err().to_string();
    assert_eq!(e, "output \"app\", env \"prod\", entry \"A\": key \"nope\" not found");
}

#[test]
fn no_template_text_can_overflow_a_stack() {
    let refused = |text: &str, want: &str| {
        let (_d, t) = with_templates(&[("main.tera", text)], "A = { template = \"main.tera\" }");
        let e = t.err().unwrap_or_else(|| panic!("compiled: {}", &text[..text.len().min(80)])).to_string();
        assert!(e.contains("main.tera:1:") && e.contains(want), "{e}");
    };
    // A long operator chain: a tree as deep as the chain is long.
    let chain = format!("{{{{ {} }}}}", vec!["1"; 150_000].join(" + "));
    assert!(chain.len() < 1024 * 1024, "under the template size limit");
    refused(&chain, "more than 100 operators");
    refused(&format!("{{% if {} %}}y{{% endif %}}", vec!["true"; 300].join(" and ")), "operators");
    refused(&format!("{{{{ {} }}}}", vec!["1"; 300].join(" < ")), "operators");
    // Nested filters nest through their arguments' brackets.
    let filters = format!("{{{{ x{} }}}}", " | default(value=y".repeat(100) + &")".repeat(100));
    refused(&filters, "brackets more than 64 deep");
    // Nothing hides a tag from the scan: a comment or raw text holding a
    // quote, a closing delimiter inside a string.
    let tail = vec!["1"; 1000].join(" + ");
    refused(&format!("{{# {{{{ \" #}}{{{{ {tail} }}}}"), "operators");
    refused(&format!("{{% raw %}}{{{{ \"{{% endraw %}}{{{{ {tail} }}}}"), "operators");
    refused(&format!("{{{{ \"}}}}\" ~ {tail} }}}}"), "operators");
    refused(&format!("{{{{ 1 + {tail}"), "operators");
    // What is text to Tera is not counted, and up to the limit is fine.
    let raw = format!("{{% raw %}}{{{{ {tail} }}}}{{% endraw %}}ok");
    let (_d, t) = with_templates(&[("main.tera", &raw)], "A = { template = \"main.tera\" }");
    let t = t.unwrap();
    assert!(t.render(0, &snapshot()).unwrap().entries["A"].expose().ends_with(b"}}ok"));
    let at_limit = format!("{{{{ {} }}}}", vec!["1"; 101].join(" + "));
    let (_d, t) = with_templates(&[("main.tera", &at_limit)], "A = { template = \"main.tera\" }");
    assert_eq!(t.unwrap().render(0, &snapshot()).unwrap().entries["A"].expose(), b"101");
}

#[test]
fn a_macro_call_in_arithmetic_is_refused_rather_than_crashing_tera() {
    let files = [("m.tera", "{% macro one() %}1{% endmacro one %}")];
    let (_d, t) = with_templates(&files, "A = \"{% import 'm.tera' as m %}{{ m::one() + 1 }}\"");
    let e = t.err().expect("refused").to_string();
    assert!(e.contains("macro `m::one` is used in arithmetic"), "{e}");
    // As a value of its own, or compared, it is fine.
    let (_d, t) =
        with_templates(&files, "A = \"{% import 'm.tera' as m %}{{ m::one() }}{% if m::one() == '1' %}!{% endif %}\"");
    assert_eq!(t.unwrap().render(0, &snapshot()).unwrap().entries["A"].expose(), b"1!");
}

#[test]
fn extends_chains_are_refused_before_tera_links_them() {
    // Tera's linking would recurse without end: the cycle does not come
    // back to a.tera.
    let files = [
        ("a.tera", "{% extends \"b.tera\" %}"),
        ("b.tera", "{% extends \"c.tera\" %}"),
        ("c.tera", "{% extends \"b.tera\" %}"),
    ];
    let (_d, t) = with_templates(&files, "A = { template = \"a.tera\" }");
    let e = t.err().unwrap().to_string();
    assert!(e.contains("extend each other in a cycle: a.tera → b.tera → c.tera → b.tera"), "{e}");
    let mut chain: Vec<(String, String)> =
        (0..40).map(|i| (format!("t{i}.tera"), format!("{{% extends \"t{}.tera\" %}}", i + 1))).collect();
    chain.push(("t40.tera".into(), "end".into()));
    let files: Vec<(&str, &str)> = chain.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (_d, t) = with_templates(&files, "A = { template = \"t0.tera\" }");
    assert!(t.err().unwrap().to_string().contains("more than 32 deep"));
}

/// The deepest a render can go within the limits: 32 macro calls, each from
/// inside 64 blocks (the macro, 62 `if`s, the condition's `if`) at the bottom
/// of a condition 100 operators and 63
/// brackets deep. It renders on the render thread's stack, in a debug build
/// too.
#[test]
fn the_deepest_render_the_limits_allow_fits_the_render_stack() {
    let mut files = Vec::new();
    for i in 0..32 {
        let (import, call) = match i {
            31 => (String::new(), "'x'".to_owned()),
            _ => (format!("{{% import \"m{}.tera\" as n %}}", i + 1), "n::m()".to_owned()),
        };
        let condition = format!("{}{call} == 'x'{}{}", "(".repeat(63), " and true".repeat(99), ")".repeat(63));
        let body =
            format!("{}{{% if {condition} %}}x{{% endif %}}{}", "{% if true %}".repeat(62), "{% endif %}".repeat(62));
        files.push((format!("m{i}.tera"), format!("{import}{{% macro m() %}}{body}{{% endmacro m %}}")));
    }
    files.push(("main.tera".into(), "{% import \"m0.tera\" as n %}{{ n::m() }}".into()));
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (_d, t) = with_templates(&files, "A = { template = \"main.tera\" }");
    let t = t.unwrap();
    let rendered = std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(move || t.render(0, &snapshot()).map(|r| r.entries["A"].expose().to_vec()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(rendered.unwrap(), b"x");
}

#[test]
fn a_throw_written_in_a_template_is_shown_with_its_line_even_where_secrets_are_read() {
    let pw = "secret(path='db', field='password')";
    let check = "{# checks #}\n{% macro port(p) %}\n{% if p is not matching('^[0-9]+$') %}\n{{ throw(message='the port must be a number') }}\n{% endif %}\n{% endmacro port %}\n{% macro url(u) %}{{ throw(message='bad url ' ~ u ~ ' (needs a scheme)') }}{% endmacro url %}\n";
    // A literal message: template text, shown with its file and line.
    let (_d, t) = with_templates(
        &[("check.tera", check)],
        &format!("A = \"{{% import 'check.tera' as c %}}{{{{ {pw} }}}}{{{{ c::port(p={pw}) }}}}\""),
    );
    let e = t.unwrap().render(0, &snapshot()).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("throw at check.tera line 4: the port must be a number"), "{text}");
    assert!(text.contains("entry \"A\""), "{text}");
    for shown in [text, format!("{e:?}"), serde_json::to_string(&e).unwrap()] {
        assert_no_canary(&shown);
    }
    // A message with a computed part: the literal parts, the rest withheld.
    let (_d, t) = with_templates(
        &[("check.tera", check)],
        &format!("A = \"{{% import 'check.tera' as c %}}{{{{ c::url(u={pw}) }}}}\""),
    );
    let e = t.unwrap().render(0, &snapshot()).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("throw at check.tera line 7: bad url … (needs a scheme)") && text.contains("withheld"),
        "{text}"
    );
    for shown in [text, format!("{e:?}"), serde_json::to_string(&e).unwrap()] {
        assert_no_canary(&shown);
    }
    // A message computed as a whole stays withheld.
    let e = render(&format!("A = \"{{{{ throw(message='x' ~ {pw} | lower) }}}}\"")).unwrap_err().to_string();
    assert!(e.contains("function `throw` failed") && e.contains("withheld"), "{e}");
    assert_no_canary(&e);
    // The shipped library's refusals are readable too.
    let e = render(&format!(
        "A = \"{{% import 'cfgsync/dsn.tera' as dsn %}}{{{{ dsn::postgres(user='u', password={pw}, host='a host', database='d') }}}}\""
    ))
    .unwrap_err()
    .to_string();
    assert_no_canary(&e);
    assert!(e.contains("throw at cfgsync/dsn.tera line 33: dsn::…: host must be a DNS name"), "{e}");
    // An output that reads no secret shows the whole message, and where.
    let (_d, t) = with_templates(
        &[("check.tera", check)],
        "A = \"{% import 'check.tera' as c %}{{ c::url(u=key(name='db/host')) }}\"",
    );
    let e = t.unwrap().render(0, &snapshot()).unwrap_err().to_string();
    assert!(e.contains("throw at check.tera line 7: bad url db.internal (needs a scheme)"), "{e}");
}

/// `keys()` lists a prefix once per snapshot on a thread (the worker's),
/// and never serves one snapshot's keys to another's rendering, even on
/// the same thread one after the other; each rendering still records its
/// read, and a key that is not text fails every call.
#[test]
fn keys_listed_once_per_snapshot_never_leak_into_another() {
    let (_d, t) = compile(
        "A = \"{% for k, v in keys(prefix='flags/') %}{{ k }}={{ v }},{% endfor %}\"\nB = \"{% for k, v in keys(prefix='flags/') %}{{ v }}{% endfor %}\"",
    );
    let t = t.unwrap();
    let first = snapshot();
    let r = t.render(0, &first).unwrap();
    assert_eq!(r.entries["A"].expose_str(), Some("alpha=a,zeta=z,"));
    assert_eq!(r.entries["B"].expose_str(), Some("az"));
    let mut next = (*first).clone();
    next.keys.insert("flags/alpha".into(), KeyValue::new(b"A2".to_vec(), KeyOrigin::File));
    next.keys.remove("flags/zeta");
    let next = Arc::new(next);
    let r = t.render(0, &next).unwrap();
    assert_eq!(r.entries["A"].expose_str(), Some("alpha=A2,"), "the second snapshot's keys");
    assert!(r.used.contains(&Use::KeyPrefix("flags/".into())));
    let r = t.render(0, &first).unwrap();
    assert_eq!(r.entries["A"].expose_str(), Some("alpha=a,zeta=z,"), "and the first's again");
    drop(first);
    // A snapshot built after one was dropped may take its memory: still its own keys.
    for i in 0..20 {
        let mut s = (*next).clone();
        s.keys.insert("flags/alpha".into(), KeyValue::new(format!("v{i}").into_bytes(), KeyOrigin::File));
        let s = Arc::new(s);
        assert_eq!(t.render(0, &s).unwrap().entries["A"].expose_str(), Some(format!("alpha=v{i},").as_str()));
    }
    let mut bad = (*next).clone();
    bad.keys.insert("flags/bin".into(), KeyValue::new(vec![0xff], KeyOrigin::File));
    let bad = Arc::new(bad);
    for _ in 0..2 {
        let e = t.render(0, &bad).unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
    }
}
