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
        keys.insert(k.to_owned(), KeyValue { value: v.to_owned(), origin: KeyOrigin::File });
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
    t.for_snapshot(snapshot()).render(0)
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
    assert_eq!(r.entries["URL"], "api@db.internal");
    assert_eq!(r.entries["LEVEL"], "info");
    assert_eq!(r.entries["HAS"], "true/false");
    assert_eq!(r.entries["FLAGS"], "alpha=a,zeta=z,", "sorted, prefix stripped, flagsx excluded");
    assert_eq!(r.entries["ENV"], "prod");
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
    assert_eq!(r.entries["PW"], CANARY);
    assert_eq!(r.entries["ALL"], "password;user;");
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
    let r = t.for_snapshot(snapshot()).render(0).unwrap();
    assert_eq!(r.entries["A"], "admin|prod");
    assert!(r.tainted);

    std::fs::write(dir.path().join("templates/parts/db.tera"), "line 1\n{{ nope(x=1) }}").unwrap();
    let e = Templates::compile(&c).err().unwrap().to_string();
    assert!(e.contains("templates/parts/db.tera:2:4: output \"app\", entry \"A\": unknown function `nope`"), "{e}");

    let c = config(dir.path(), "A = { template = \"missing.tera\" }");
    let e = Templates::compile(&c).err().unwrap().to_string();
    assert!(e.contains("template file") && e.contains("missing.tera not found"), "{e}");
}

#[test]
fn renders_are_independent_per_output_call() {
    let (_d, t) = compile("A = \"{{ secret(path='db', field='user') }}\"");
    let t = t.unwrap();
    let r = t.for_snapshot(snapshot());
    assert!(r.render(0).unwrap().tainted);
    // A second render starts from a clean log.
    let again = r.render(0).unwrap();
    assert_eq!(again.used.len(), 1);
}
