//! README.md and every page of docs/ work when pasted, their links lead
//! somewhere, and `validate` checks what the first run would hit.
//!
//! The pages are README.md and `docs/*.md`, whoever wrote them. Every
//! ```` ```toml ```` block of every page is checked, by kind:
//!
//! - **a config** (it has `[[output]]` or `[envs.`): written as
//!   `cfgsync.toml` as shown, except that absolute credential paths
//!   (`"/run/…"`) are moved into the test bed, where the test creates those
//!   files, and a one-line template for each `{ template = "…" }`;
//!   `validate` must pass. Then, with `[etcd]` and `[vault]` replaced by
//!   `[files]` (the file source stands in for both, with the keys and
//!   secrets of [`BED_KEYS`] and [`BED_SECRETS`]), `plan` must pass too.
//! - **a file source** (`[keys]`, `[secrets.…]`): used as
//!   `source/staging.toml` of a config that reads every key and secret
//!   field it defines; `reconcile --once` must write each value back.
//! - **a fragment** (anything else, e.g. a `[vault]` table or a target):
//!   wrapped into a minimal config (the fragment's top-level keys first,
//!   `instance = "docs"` unless the fragment names one, then `[files]` — or
//!   `[etcd]` when the fragment has only `[vault]` —, `[envs.staging]`,
//!   `[envs.prod]`, an output `readme` with one entry and, unless the
//!   fragment brings its own, a file target; then the fragment's tables);
//!   `validate` must pass.
//!
//! A commented-out alternative (`# auth = { … }` below `auth = { … }` in
//! the same table) is checked as well, in place of the line it replaces.
//! A block that fails names its page and line (`docs/operations.md:42`).
//!
//! Sessions (a fenced block of `$ cfgsync …` lines, each followed by what
//! it prints) that a test below names by their page and heading are run
//! against the servers they show — the file source, kube-emulator, real
//! etcd and OpenBao — and must print exactly what the page shows. Every
//! relative link of every page must lead to a file, and its `#anchor` to a
//! heading of that file. Figures the pages state about behaviour (a burst
//! of etcd puts is two passes) or about the build (how many crates) are
//! checked where that is cheap.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::{Project, Run, mode};

const BED_KEYS: &[(&str, &str)] = &[
    ("api/db_user", "api"),
    ("api/db_host", "db.internal"),
    ("api/log_level", "info"),
    ("web/host", "www.internal"),
    ("api/servers/a", "10.0.0.1:8080"),
    ("api/env/log_level", "info"),
];
const BED_SECRETS: &[(&str, &str, &str)] = &[("api/db", "password", "readme-password")];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A page by its path from the repository root (`docs/operations.md`).
fn page(name: &str) -> String {
    std::fs::read_to_string(root().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn readme() -> String {
    page("README.md")
}

/// README.md, then every `docs/*.md` in name order: (name, text).
fn pages() -> Vec<(String, String)> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    names.sort();
    names.insert(0, "README.md".to_owned());
    names.into_iter().map(|n| (n.clone(), page(&n))).collect()
}

/// (line in the page, text) of each ```` ```toml ```` block, indentation
/// (a block inside a list item) removed.
fn toml_blocks(readme: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if line.trim() != "```toml" {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut text = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            text.push_str(l.get(indent..).unwrap_or(l.trim_start()));
            text.push('\n');
        }
        blocks.push((i + 1, text));
    }
    blocks
}

fn is_header(line: &str) -> bool {
    line.trim_start().starts_with('[')
}

/// The block, and the block with each commented-out alternative in place
/// of the line above it that sets the same key.
fn variants(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = vec![text.to_owned()];
    for (i, line) in lines.iter().enumerate() {
        let Some(alternative) = line.trim_start().strip_prefix('#').map(str::trim_start) else { continue };
        let Some((key, _)) = alternative.split_once('=') else { continue };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let replaced = lines[..i]
            .iter()
            .rposition(|l| is_header(l) || l.split_once('=').is_some_and(|(k, _)| k.trim() == key))
            .filter(|&j| !is_header(lines[j]));
        if let Some(j) = replaced {
            let mut changed = lines.clone();
            changed[j] = alternative;
            changed.remove(i);
            out.push(changed.join("\n") + "\n");
        }
    }
    out
}

/// Moves absolute `/run/…` and `/var/run/…` credential paths into `p` and
/// creates the files.
fn with_credentials(p: &Project, text: &str) -> String {
    let root = p.dir.path().display().to_string();
    let text = text.replace("\"/run/", &format!("\"{root}/run/")).replace("\"/var/run/", &format!("\"{root}/var/run/"));
    for piece in
        text.split('"').filter(|s| s.starts_with(&format!("{root}/run/")) || s.starts_with(&format!("{root}/var/run/")))
    {
        std::fs::create_dir_all(Path::new(piece).parent().unwrap()).unwrap();
        std::fs::write(piece, "readme-credential\n").unwrap();
    }
    text
}

/// The fragment inside a minimal config (module doc).
fn wrapped(fragment: &str) -> String {
    let split = fragment.lines().position(is_header).unwrap_or(fragment.lines().count());
    let head: Vec<&str> = fragment.lines().take(split).collect();
    let body: Vec<&str> = fragment.lines().skip(split).collect();
    let mut text = head.join("\n") + "\n";
    if !head.iter().any(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == "instance")) {
        text.push_str("instance = \"docs\"\n");
    }
    if !fragment.contains("[etcd]") && !fragment.contains("[files]") {
        text.push_str(if fragment.contains("[vault]") { "[etcd]\n" } else { "[files]\n" });
    }
    if !fragment.contains("[envs.") {
        text.push_str("[envs.staging]\n[envs.prod]\n");
    }
    if !fragment.contains("[[output]]") {
        text.push_str("[[output]]\nname = \"readme\"\n[output.entries]\nA = \"{{ env }}\"\n");
        if !fragment.contains("[[output.target]]") {
            text.push_str("[[output.target]]\nkind = \"file\"\npath = \"out/{{ env }}.env\"\n");
        }
    }
    text + &body.join("\n") + "\n"
}

/// The config with its sources replaced by the file source over the bed.
fn on_file_source(p: &Project, config: &str) -> String {
    let mut table: toml::Table = toml::from_str(config).unwrap();
    table.remove("etcd");
    table.remove("vault");
    table.insert("files".into(), toml::Value::Table(toml::Table::from_iter([("dir".into(), "source".into())])));
    let envs: Vec<String> = table["envs"].as_table().unwrap().keys().cloned().collect();
    for env in envs {
        let mut source = String::from("[keys]\n");
        for (k, v) in BED_KEYS {
            source.push_str(&format!("{k:?} = {v:?}\n"));
        }
        for (path, field, v) in BED_SECRETS {
            source.push_str(&format!("\n[secrets.{path:?}]\n{field} = {v:?}\n"));
        }
        p.write(&format!("source/{env}.toml"), &source);
    }
    with_template_files(p, &table);
    toml::to_string(&table).unwrap()
}

/// A one-line template for each `{ template = "…" }` entry of `config`.
fn with_template_files(p: &Project, config: &toml::Table) {
    for output in config.get("output").and_then(|o| o.as_array()).into_iter().flatten() {
        for entry in output.get("entries").and_then(|e| e.as_table()).into_iter().flat_map(|e| e.values()) {
            if let Some(file) = entry.get("template").and_then(|t| t.as_str()) {
                p.write(&format!("templates/{file}"), "rendered for {{ env }}\n");
            }
        }
    }
}

#[track_caller]
fn assert_ok(run: &Run, what: &str, block: &str, text: &str) {
    assert_eq!(run.code, 0, "{block}: `{what}` fails on\n{text}\n{run:?}");
}

fn check_config(at: &str, text: &str) {
    let p = Project::new("");
    let config = with_credentials(&p, text);
    p.write("cfgsync.toml", &config);
    with_template_files(&p, &toml::from_str(&config).unwrap());
    assert_ok(&p.run(&["validate"]), "validate", at, &config);

    // Targets that need servers (Kubernetes, GitLab, GitHub): `validate`
    // only here; the TLS deployment block runs against servers below.
    if ["kubernetes-secret", "kubernetes-configmap", "\"gitlab\"", "\"github\""].iter().any(|k| text.contains(k)) {
        return;
    }
    let p = Project::new("");
    let config = on_file_source(&p, text);
    p.write("cfgsync.toml", &config);
    let run = p.run(&["plan"]);
    assert_ok(&run, "plan", at, &config);
    assert!(run.stdout.ends_with(" 0 failed\n"), "{at}: {run:?}");
}

fn check_file_source(at: &str, text: &str) {
    let source: toml::Table = toml::from_str(text).unwrap();
    let mut entries = String::new();
    let mut want = BTreeMap::new();
    for (i, (key, value)) in source.get("keys").and_then(|k| k.as_table()).into_iter().flatten().enumerate() {
        entries.push_str(&format!("K{i} = \"{{{{ key(name='{key}') }}}}\"\n"));
        want.insert(format!("K{i}"), value.as_str().unwrap().to_owned());
    }
    for (i, (path, fields)) in source.get("secrets").and_then(|s| s.as_table()).into_iter().flatten().enumerate() {
        for (j, (field, value)) in fields.as_table().unwrap().iter().enumerate() {
            entries.push_str(&format!("S{i}_{j} = \"{{{{ secret(path='{path}', field='{field}') }}}}\"\n"));
            want.insert(format!("S{i}_{j}"), value.as_str().unwrap().to_owned());
        }
    }
    assert!(!want.is_empty(), "{at}: a file source without keys or secrets");
    let p = Project::new(&format!(
        "[files]\n[envs.staging]\n[[output]]\nname = \"readme\"\n[output.entries]\n{entries}[[output.target]]\nkind = \"file\"\npath = \"out.json\"\nformat = \"json\"\n"
    ));
    p.write("source/staging.toml", text);
    let run = p.run(&["reconcile", "--once"]);
    assert_ok(&run, "reconcile --once", at, text);
    let got: BTreeMap<String, String> = serde_json::from_str(&p.read("out.json")).unwrap();
    assert_eq!(got, want, "{at}: the file source reads back what the block says");
}

#[test]
fn every_toml_example_in_the_docs_works() {
    let mut blocks = 0;
    let mut kinds = BTreeMap::<&str, usize>::new();
    for (name, text) in pages() {
        for (line, block) in toml_blocks(&text) {
            blocks += 1;
            let at = format!("{name}:{line}");
            for text in variants(&block) {
                let kind = if text.contains("[[output]]") || text.contains("[envs.") {
                    check_config(&at, &text);
                    "config"
                } else if text.contains("[keys]") || text.contains("[secrets.") {
                    check_file_source(&at, &text);
                    "file source"
                } else {
                    let p = Project::new("");
                    let config = with_credentials(&p, &wrapped(&text));
                    p.write("cfgsync.toml", &config);
                    assert_ok(&p.run(&["validate"]), "validate", &at, &config);
                    "fragment"
                };
                *kinds.entry(kind).or_default() += 1;
            }
        }
    }
    // The README's 10 blocks before the manual moved to docs/, and
    // docs/ci-targets.md's 2: none got lost on the way.
    assert!(blocks >= 12, "found {blocks} ```toml blocks");
    // The main example and its alternatives, the file source, and the
    // fragments (targets, settings, credentials) are all there.
    assert!(kinds["config"] >= 4 && kinds["file source"] >= 1 && kinds["fragment"] >= 10, "{kinds:?}");
}

#[test]
fn fragments_are_wrapped_and_alternatives_found() {
    let v = variants(
        "[vault]\nauth = { method = \"token\" }   # note\n# auth = { method = \"jwt\", token_file = \"t\" }\n# dir = \"x\"\n",
    );
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[1], "[vault]\nauth = { method = \"jwt\", token_file = \"t\" }\n# dir = \"x\"\n");
    let w = wrapped("interval = \"1m\"\n[service]\ngrace = \"5s\"\n");
    assert!(
        w.starts_with("interval = \"1m\"\ninstance = \"docs\"\n[files]\n")
            && w.ends_with("[service]\ngrace = \"5s\"\n"),
        "{w}"
    );
    let w = wrapped("instance = \"payments\"\n[kubernetes]\n");
    assert!(w.starts_with("instance = \"payments\"\n[files]\n"), "{w}");
    let w = wrapped("[[output.target]]\nkind = \"file\"\npath = \"x\"\n");
    assert_eq!(w.matches("[[output.target]]").count(), 1, "{w}");
}

/// The quickstart (`examples/quickstart`, the file source) writes what the
/// README's "Two commands" section says.
#[test]
fn the_quickstart_does_what_the_readme_says() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    let p = Project::new("");
    let copy = std::process::Command::new("cp").arg("-r").arg(src.join(".")).arg(p.dir.path()).status().unwrap();
    assert!(copy.success());
    let _ = std::fs::remove_dir_all(p.path("out"));
    let run = p.run(&["reconcile", "--once"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        p.read("out/prod/api.env"),
        "DATABASE_URL=postgres://api:prod-password-from-the-vault@db.prod.internal:5432/api\nFEATURES=dark_mode\nLOG_LEVEL=info\n"
    );
    assert_eq!(
        p.read("out/staging/api.env"),
        "DATABASE_URL=postgres://api:staging-only-password@db.staging.internal:5432/api\nFEATURES=new_checkout\nLOG_LEVEL=debug\n"
    );
    assert_eq!(mode(&p.path("out/prod/api.env")), 0o600, "api.env holds a secret");
    for env in ["staging", "prod"] {
        let mut files: Vec<String> = std::fs::read_dir(p.path(&format!("out/{env}/web")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["config.yaml", "robots.txt"], "web/ has one file per entry");
    }

    let readme = readme();
    let claim = readme.split("Run it again: `").nth(1).and_then(|r| r.split('`').next()).expect("the README's claim");
    let claim = claim.split_whitespace().collect::<Vec<_>>().join(" ");
    let before = p.state();
    let run = p.run(&["reconcile", "--once"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.ends_with(&format!("{claim}, 0 failed\n")), "README says `{claim}`: {run:?}");
    assert_eq!(p.state(), before, "not one file is touched");

    // FEATURES joins the flags that are on, with no trailing comma.
    let source = p.read("source/prod.toml").replace("[keys]\n", "[keys]\n\"features/search\" = \"true\"\n");
    p.write("source/prod.toml", &source);
    let run = p.run(&["reconcile", "--once"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(p.read("out/prod/api.env").contains("\nFEATURES=dark_mode,search\n"), "{}", p.read("out/prod/api.env"));
}

/// `validate` reports the credential files the first pass would fail to
/// read, each at its setting, together with the template problems; the
/// other commands leave that to the sources, which read them at login.
#[test]
fn validate_checks_credential_files() {
    let config = "\
[etcd]
endpoints = [\"http://127.0.0.1:1\"]
user = \"cfgsync\"
password_file = \"secrets/etcd-password\"
timeout = \"1s\"

[vault]
auth = { method = \"approle\", role_id_file = \"secrets/role-id\", secret_id_file = \"secrets\" }

[envs.prod]

[[output]]
name = \"api\"
[output.entries]
A = \"{{ nope() }}\"
[[output.target]]
kind = \"file\"
path = \"out/api.env\"
";
    let p = Project::new(config);
    p.write("secrets/role-id", " \n");
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 2, "{run:?}");
    let cfg = p.path("cfgsync.toml").display().to_string();
    let dir = p.dir.path().display().to_string();
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines[..3],
        [
            format!(
                "error: {cfg}:4:17: etcd password_file {dir}/secrets/etcd-password: cannot be read: No such file or directory (os error 2)"
            ),
            format!("error: {cfg}:8:30: vault role_id_file {dir}/secrets/role-id: is empty"),
            format!("error: {cfg}:8:64: vault secret_id_file {dir}/secrets: is a directory, not a file"),
        ],
        "{run:?}"
    );
    assert_eq!(lines.len(), 4, "and the template problem: {run:?}");
    assert!(lines[3].contains("unknown function `nope`"), "{run:?}");

    // Fixed, all is well; the files' content is never shown.
    p.write("secrets/etcd-password", "CANARY-etcd-pw\n");
    p.write("secrets/role-id", "CANARY-role\n");
    let config = config.replace("secret_id_file = \"secrets\"", "secret_id_file = \"secrets/secret-id\"");
    p.write("cfgsync.toml", &config.replace("{{ nope() }}", "x"));
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "error: {cfg}:8:64: vault secret_id_file {dir}/secrets/secret-id: cannot be read: No such file or directory (os error 2)\n"
        )
    );
    std::fs::write(p.path("secrets/secret-id"), [0xff, 0xfe]).unwrap();
    let run = p.run(&["validate"]);
    assert!(run.stderr.ends_with("secrets/secret-id: is not UTF-8 text\n"), "{run:?}");
    p.write("secrets/secret-id", "CANARY-secret-id");
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.all().contains("CANARY"), "{run:?}");

    // Only `validate` checks: a pass reads the files at login and fails there.
    std::fs::remove_file(p.path("secrets/etcd-password")).unwrap();
    let run = p.run(&["plan"]);
    assert_eq!(run.code, 1, "a source failure, not a config error: {run:?}");
    assert!(run.stderr.contains("cannot read password_file"), "{run:?}");
}

#[test]
fn validate_credential_settings_and_overrides() {
    let p = Project::new(
        "\
[etcd]
user = \"cfgsync\"

[vault.auth]
method = \"jwt\"
role = \"ci\"
token_file = \"jwt\"

[envs.prod]

[[output]]
name = \"api\"
[output.entries]
A = \"x\"
[[output.target]]
kind = \"file\"
path = \"out/api.env\"
",
    );
    let cfg = p.path("cfgsync.toml").display().to_string();
    let dir = p.dir.path().display().to_string();
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "error: {cfg}:7:1: vault token_file {dir}/jwt: cannot be read: No such file or directory (os error 2)\n\
             error: {cfg}:2:8: etcd user \"cfgsync\" has no password: set password_file, or ETCDCTL_USER=name:password in the environment\n"
        )
    );
    // The environment's credentials replace the files, as in a pass.
    let run = p.command(&["validate"]).env("ETCDCTL_USER", "cfgsync:pw").env("VAULT_TOKEN", "t").output().unwrap();
    let run = crate::support::run_output(run);
    assert_eq!(run.code, 0, "{run:?}");

    // approle needs its secret id; kubernetes' default token file is not
    // checked (it exists only in the pod), a written one is.
    for (auth, want) in [
        ("{ method = \"approle\", role_id = \"r\" }", Some("9:8: vault approle auth needs secret_id_file")),
        ("{ method = \"kubernetes\", role = \"r\" }", None),
        ("{ method = \"kubernetes\", role = \"r\", token_file = \"sa\" }", Some("9:45: vault token_file")),
        ("{ method = \"token\", token_file = \"tok\" }", Some("9:28: vault token_file")),
        ("{ method = \"token\" }", None),
    ] {
        // `auth` on line 9.
        let p = Project::new(&format!(
            "[etcd]\n\n\n\n\n\n\n[vault]\nauth = {auth}\n[envs.prod]\n[[output]]\nname = \"a\"\n[output.entries]\nA = \"x\"\n[[output.target]]\nkind = \"file\"\npath = \"o\"\n"
        ));
        let run = p.run(&["validate"]);
        match want {
            None => assert_eq!(run.code, 0, "{auth}: {run:?}"),
            Some(want) => {
                assert_eq!(run.code, 2, "{auth}: {run:?}");
                assert!(run.stderr.contains(&format!("cfgsync.toml:{want}")), "{auth}: {run:?}");
            }
        }
    }
}

/// The reference deployment's `cfgsync.toml` (in its ConfigMap) is valid and
/// renders through the shipped library.
#[test]
fn the_reference_deployments_config_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/management/configmap.yaml");
    let configmap: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let text = configmap["data"]["cfgsync.toml"].as_str().expect("data.cfgsync.toml");
    assert!(text.contains("{% import 'cfgsync/"), "it uses the template library");
    let p = Project::new("");
    let config = with_credentials(&p, text);
    p.write("cfgsync.toml", &config);
    assert_ok(&p.run(&["validate"]), "validate", "deploy/kubernetes/management/configmap.yaml", &config);
}

/// The first line of `heading` in page `name`, as in the file.
fn line_of(name: &str, text: &str, heading: &str) -> usize {
    let at = text.find(heading).unwrap_or_else(|| panic!("{name} has no {heading:?}"));
    text[..at].lines().count()
}

/// The `toml` block under `heading` in page `name`.
fn block_under(name: &str, heading: &str) -> String {
    let text = page(name);
    let line = line_of(name, &text, heading);
    toml_blocks(&text).into_iter().find(|(l, _)| *l > line).map(|(_, b)| b).expect("a toml block below it")
}

/// docs/operations.md's TLS and mutual TLS example, run as written
/// against real servers: etcd requiring client certificates, OpenBao
/// requiring them too, two Kubernetes API servers (one per env's context)
/// requiring them through the kubeconfig, and a GitLab behind a private CA.
/// Only the addresses and file paths are replaced by the test bed's.
#[test]
fn the_tls_deployment_example_runs_against_tls_servers() {
    use base64::Engine;
    use kube_emulator::tls::{TlsFront, TlsIdentity};

    use crate::support::pki::{Pki, Validity};
    use crate::support::servers::{EtcdTls, VaultTls};
    use crate::support::{Etcd, Vault};

    let text = block_under("docs/operations.md", "## TLS and mutual TLS");
    let pki = Pki::new("estate");
    let etcd = Etcd::start_tls(EtcdTls {
        trusted_ca: pki.ca_file.clone(),
        server: pki.server("etcd", &[], Validity::Current),
        client_cert_auth: true,
        ctl_ca: pki.ca_file.clone(),
        ctl_client: pki.client("etcdctl", "root", Validity::Current),
    });
    let vault = Vault::start_tls(VaultTls {
        server: pki.server("vault", &[], Validity::Current),
        client_ca: Some(pki.ca_file.clone()),
    });
    let front_identity = |client_ca: bool| {
        let server = pki.server("front", &[], Validity::Current);
        TlsIdentity {
            cert_pem: std::fs::read(&server.cert).unwrap(),
            key_pem: std::fs::read(&server.key).unwrap(),
            client_ca_pem: client_ca.then(|| std::fs::read(&pki.ca_file).unwrap()),
        }
    };
    let gitlab = kube_emulator::GitlabEmulator::start();
    let gitlab_tls = TlsFront::start(gitlab.addr(), &front_identity(false)).unwrap();
    let clusters: Vec<(&str, kube_emulator::Emulator)> =
        ["staging", "prod"].into_iter().map(|env| (env, kube_emulator::Emulator::start(env))).collect();
    let fronts: Vec<TlsFront> =
        clusters.iter().map(|(_, e)| TlsFront::start(e.addr(), &front_identity(true)).unwrap()).collect();
    for (env, cluster) in &clusters {
        cluster.create_namespace("api");
        etcd.put(&format!("/cfgsync/{env}/api/db_host"), &format!("db.{env}.internal"));
        vault.kv_put(&format!("{env}/api/db"), &[("password", &format!("readme-tls-{env}"))]);
        vault.kv_put(&format!("{env}/cfgsync/fingerprint"), &[("key", &format!("fingerprint-{env}"))]);
    }

    // The files the example names, made for the bed.
    let p = Project::new("");
    let client = pki.client("cfgsync", "cfgsync", Validity::Current);
    let b64 = |path: &std::path::Path| base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap());
    let mut kubeconfig = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for ((env, _), front) in clusters.iter().zip(&fronts) {
        kubeconfig.push_str(&format!(
            "- name: {env}\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n",
            front.url(),
            b64(&pki.ca_file)
        ));
    }
    kubeconfig.push_str("contexts:\n");
    for (env, _) in &clusters {
        kubeconfig.push_str(&format!("- name: {env}\n  context:\n    cluster: {env}\n    user: cfgsync\n"));
    }
    kubeconfig.push_str(&format!(
        "current-context: prod\nusers:\n- name: cfgsync\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&client.cert),
        b64(&client.key)
    ));
    p.write("kubeconfig", &kubeconfig);
    p.write("run/credentials/cfgsync/vault-token", &vault.root_token);
    let bed = p.dir.path().display().to_string();
    let mut config = text
        .replace(
            "[\"https://etcd-1.internal:2379\", \"https://etcd-2.internal:2379\"]",
            &format!("[\"{}\"]", etcd.endpoint),
        )
        .replace("https://vault.internal:8200", vault.tls_addr.as_ref().unwrap())
        .replace("https://gitlab.internal", &gitlab_tls.url())
        .replace("/etc/cfgsync/kubeconfig", &format!("{bed}/kubeconfig"))
        .replace("\"/run/", &format!("\"{bed}/run/"));
    let files = [
        ("etcd-ca.pem", &pki.ca_file),
        ("etcd-client.pem", &client.cert),
        ("etcd-client-key.pem", &client.key),
        ("vault-ca.pem", &pki.ca_file),
        ("vault-client.pem", &client.cert),
        ("vault-client-key.pem", &client.key),
        ("gitlab-ca.pem", &pki.ca_file),
    ];
    for (name, path) in files {
        let placeholder = format!("/etc/cfgsync/tls/{name}");
        assert!(config.contains(&placeholder), "the example names {placeholder}");
        config = config.replace(&placeholder, &path.display().to_string());
    }
    assert!(!config.contains(".internal"), "every address replaced:\n{config}");
    p.write("cfgsync.toml", &config);
    let p = p.with_env("GITLAB_TOKEN", "glpat-readme");

    let run = p.run(&["reconcile", "--once"]);
    assert_eq!(run.code, 0, "{run:?}\n{config}");
    for (env, cluster) in &clusters {
        let secret = cluster.get_object(kube_emulator::Kind::Secret, "api", "api").expect("the Secret");
        let host = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["DATABASE_HOST"].as_str().unwrap())
            .unwrap();
        assert_eq!(host, format!("db.{env}.internal").as_bytes());
        let variable = gitlab
            .variable(&kube_emulator::GitlabOwner::project("platform/api"), "DATABASE_PASSWORD", env)
            .expect("the GitLab variable");
        assert_eq!(variable.value, format!("readme-tls-{env}"));
    }
}

// ---------------------------------------------------------------------------
// Sessions: `$ cfgsync …` and what it printed.

/// One command of a session and what the page shows it printing.
#[derive(Debug)]
struct Step {
    /// The arguments after `cfgsync`; variables before it (`VAULT_TOKEN=…
    /// cfgsync …`) and a trailing `# comment` left out: the test supplies
    /// the credentials.
    args: Vec<String>,
    /// stdout, then stderr.
    output: String,
    /// The exit code a following `$ echo $?` shows.
    code: Option<i32>,
}

/// The first fenced block under `heading` in page `name` that starts with
/// a `$ ` line, parsed as a session.
fn session_under(name: &str, heading: &str) -> Vec<Step> {
    let text = page(name);
    let start = line_of(name, &text, heading);
    let mut lines = text.lines().skip(start);
    loop {
        let mut rest = lines.by_ref().skip_while(|l| !l.trim_start().starts_with("```"));
        assert!(rest.next().is_some(), "{name}: no session below {heading:?}");
        let block: Vec<&str> = rest.take_while(|l| l.trim() != "```").collect();
        if block.first().is_some_and(|l| l.starts_with("$ ")) {
            return parse_session(&format!("{name}, {heading}"), &block.join("\n"));
        }
    }
}

/// The steps of a session; panics unless it holds at least one command.
fn parse_session(what: &str, block: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut code_next = false;
    for line in block.lines() {
        let Some(command) = line.strip_prefix("$ ") else {
            let step = steps.last_mut().unwrap_or_else(|| panic!("{what}: output before a command"));
            if std::mem::take(&mut code_next) {
                step.code = Some(line.parse().unwrap_or_else(|_| panic!("{what}: `echo $?` printed {line:?}")));
            } else {
                step.output.push_str(line);
                step.output.push('\n');
            }
            continue;
        };
        let command = command.split(" # ").next().unwrap().trim();
        if command == "echo $?" {
            assert!(!steps.is_empty(), "{what}: `echo $?` before a command");
            code_next = true;
            continue;
        }
        let words: Vec<&str> = command.split_whitespace().skip_while(|w| w.contains('=')).collect();
        assert_eq!(words.first(), Some(&"cfgsync"), "{what}: `{command}` is not a cfgsync command");
        steps.push(Step {
            args: words[1..].iter().map(|w| w.to_string()).collect(),
            output: String::new(),
            code: None,
        });
    }
    assert!(!steps.is_empty(), "{what}: no `$ cfgsync` command in the block");
    steps
}

/// Runs each step with `run` and compares what it prints with the page.
fn replay(what: &str, steps: &[Step], run: impl Fn(&[&str]) -> Run) {
    for step in steps {
        let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
        let got = run(&args);
        assert_eq!(
            format!("{}{}", got.stdout, got.stderr),
            step.output,
            "{what}: `cfgsync {}` prints something else than the page shows ({got:?})",
            args.join(" ")
        );
        if let Some(code) = step.code {
            assert_eq!(got.code, code, "{what}: the exit code of `cfgsync {}`", args.join(" "));
        }
    }
}

#[test]
fn sessions_are_parsed_as_a_shell_shows_them() {
    let steps = parse_session(
        "test",
        "$ ETCDCTL_USER=root:… cfgsync diff a b   # note\nx\n  y\n$ echo $?\n1\n$ cfgsync plan --env prod\n",
    );
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(
        (steps[0].args.join(" "), steps[0].output.as_str(), steps[0].code),
        ("diff a b".into(), "x\n  y\n", Some(1))
    );
    assert_eq!(
        (steps[1].args.join(" "), steps[1].output.as_str(), steps[1].code),
        ("plan --env prod".into(), "", None)
    );
}

/// The `cfgsync` binary run in `dir` with `args` as they are, as a person
/// at a shell in that directory would (no `--config` added).
fn run_in(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cfgsync"));
    for var in ["VAULT_ADDR", "VAULT_TOKEN", "ETCDCTL_ENDPOINTS", "ETCDCTL_USER", "CFGSYNC_CONFIG", "RUST_LOG"]
        .into_iter()
        .chain(crate::support::TLS_VARIABLES)
    {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1").env("HOME", dir).current_dir(dir).args(args);
    crate::support::run_output(cmd.output().unwrap())
}

/// docs/commands.md's `plan` example: the quickstart after `api/log_level`
/// changed in prod, from the repository's root.
#[test]
fn the_plan_example_in_the_command_reference_is_what_plan_prints() {
    let repo = tempfile::tempdir().unwrap();
    let copy =
        std::process::Command::new("cp").arg("-r").arg(root().join("examples")).arg(repo.path()).status().unwrap();
    assert!(copy.success());
    let quickstart = repo.path().join("examples/quickstart");
    let _ = std::fs::remove_dir_all(quickstart.join("out"));
    let run = run_in(repo.path(), &["--config", "examples/quickstart/cfgsync.toml", "reconcile", "--once"]);
    assert_eq!(run.code, 0, "{run:?}");
    let source = quickstart.join("source/prod.toml");
    let text = std::fs::read_to_string(&source).unwrap();
    assert!(!text.contains("api/log_level"), "prod uses the default log level: {text}");
    std::fs::write(&source, text.replace("[keys]\n", "[keys]\n\"api/log_level\" = \"debug\"\n")).unwrap();

    let (name, heading) = ("docs/commands.md", "## Example");
    replay(&format!("{name}, {heading}"), &session_under(name, heading), |args| run_in(repo.path(), args));
}

/// docs/kubernetes.md's session against kube-emulator: after a hand edit
/// of the Secret (`kubectl patch`), a change in the source, and two of the
/// four outputs removed from the config, `plan` shows the drift, the
/// update and the refused mass prune; `--allow-mass-prune` applies all of
/// it; the next pass is quiet.
#[test]
fn the_kubernetes_session_is_what_cfgsync_prints() {
    use kube_emulator::{Emulator, Kind};

    let outputs = |removed: bool| {
        let mut text = String::from(
            "instance = \"payments\"\n[files]\n\n[kubernetes]\nkubeconfig = \"kubeconfig\"\n\n[envs.prod]\n\n\
             [[output]]\nname = \"api\"\n[output.entries]\nDB_HOST = \"{{ key(name='api/db_host') }}\"\n\
             DB_PASSWORD = \"{{ secret(path='api/db', field='password') }}\"\n\
             [[output.target]]\nkind = \"kubernetes-secret\"\ncontext = \"{{ env }}\"\nnamespace = \"default\"\nname = \"api\"\n\n\
             [[output]]\nname = \"web\"\n[output.entries]\nHOST = \"{{ key(name='web/host') }}\"\n\
             [[output.target]]\nkind = \"kubernetes-configmap\"\ncontext = \"{{ env }}\"\nnamespace = \"default\"\nname = \"web\"\n",
        );
        if !removed {
            for name in ["cron", "worker"] {
                text.push_str(&format!(
                    "\n[[output]]\nname = \"{name}\"\n[output.entries]\nQUEUE = \"{{{{ key(name='{name}/queue') }}}}\"\n\
                     [[output.target]]\nkind = \"kubernetes-configmap\"\ncontext = \"{{{{ env }}}}\"\nnamespace = \"default\"\nname = \"{name}\"\n"
                ));
            }
        }
        text
    };
    let source = |host: &str| {
        format!(
            "[keys]\n\"api/db_host\" = \"db.prod\"\n\"web/host\" = \"{host}\"\n\"cron/queue\" = \"cron\"\n\"worker/queue\" = \"jobs\"\n\n\
             [secrets.\"api/db\"]\npassword = \"readme-kube-password\"\n\n[secrets.\"cfgsync/fingerprint\"]\nkey = \"readme-fingerprint-key\"\n"
        )
    };
    let p = Project::new(&outputs(false));
    p.write("source/prod.toml", &source("www.prod"));
    let prod = Emulator::start("prod");
    p.write("kubeconfig", &prod.kubeconfig_yaml());
    let run = p.run(&["reconcile", "--once"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(prod.list_objects(Kind::ConfigMap, Some("default")).len(), 3, "web, cron and worker");

    // A hand edit with a real kubectl, a change in the source, two outputs gone.
    let kubectl = std::env::var("CFGSYNC_TEST_KUBECTL")
        .unwrap_or_else(|_| panic!("CFGSYNC_TEST_KUBECTL is not set: run the tests through scripts/test.sh"));
    let patch = std::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(p.path("kubeconfig"))
        .args(["patch", "secret", "api", "-p", r#"{"stringData":{"DB_HOST":"db.hand-edited"}}"#])
        .output()
        .unwrap();
    assert!(patch.status.success(), "{patch:?}");
    p.write("source/prod.toml", &source("www2.prod"));
    p.write("cfgsync.toml", &outputs(true));

    let (name, heading) = ("docs/kubernetes.md", "## A session");
    replay(&format!("{name}, {heading}"), &session_under(name, heading), |args| p.run(args));
    assert!(prod.get_object(Kind::ConfigMap, "default", "worker").is_none(), "pruned");
}

/// docs/developer.md's `policy apply` session, against real etcd (auth
/// enabled, as root) and OpenBao, with the repository's `policies/`.
#[test]
fn the_policy_apply_session_is_what_cfgsync_prints() {
    use crate::support::{Etcd, Vault, server_config};

    let (etcd, vault) = (Etcd::start(), Vault::start());
    etcd.enable_auth_with_reader("rootpw", "alice", "alicepw", &[]);
    let p = Project::new(&server_config(
        &etcd,
        &vault,
        "[envs.staging]\n[envs.prod]\n\n[[output]]\nname = \"api\"\n[output.entries]\nA = \"x\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{{ env }}.env\"\n",
    ));
    for policy in std::fs::read_dir(root().join("policies")).unwrap() {
        let policy = policy.unwrap();
        std::fs::create_dir_all(p.path("policies")).unwrap();
        std::fs::copy(policy.path(), p.path("policies").join(policy.file_name())).unwrap();
    }
    let p = p.with_env("ETCDCTL_USER", "root:rootpw").with_env("VAULT_TOKEN", &vault.root_token);
    let (name, heading) = ("docs/developer.md", "## Roles as code");
    replay(&format!("{name}, {heading}"), &session_under(name, heading), |args| p.run(args));
}

// ---------------------------------------------------------------------------
// Links.

/// The lines of `text` outside fenced blocks, numbered from 1, with code
/// spans (`` `…` ``) blanked out.
fn prose(text: &str) -> Vec<(usize, String)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        out.push((i + 1, prose));
    }
    out
}

/// GitHub's anchor for a heading: lower case, letters, digits, `-` and
/// `_` kept, spaces made `-`, everything else dropped; a repeated one gets
/// `-1`, `-2`, ….
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut seen = BTreeMap::<String, usize>::new();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let Some(heading) = line.strip_prefix('#').map(|h| h.trim_start_matches('#')) else { continue };
        if fenced || !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let n = seen.entry(slug.clone()).or_default();
        out.insert(if *n == 0 { slug.clone() } else { format!("{slug}-{n}") });
        *n += 1;
    }
    out
}

/// The targets of the inline links (`[text](target)`) of one line of prose.
fn link_targets(line: &str) -> Vec<&str> {
    line.match_indices("](")
        .filter_map(|(i, _)| {
            line[i + 2..].split_once(')').map(|(target, _)| target.split_whitespace().next().unwrap_or(""))
        })
        .collect()
}

#[test]
fn anchors_and_links_are_found_as_github_makes_them() {
    let a = anchors(
        "# cfgsync\n## `cfgsync import --env E FROM`: day one\n```\n# not a heading\n```\n## Two\n## Two\n#nope\n",
    );
    assert_eq!(a.into_iter().collect::<Vec<_>>(), ["cfgsync", "cfgsync-import---env-e-from-day-one", "two", "two-1"],);
    assert_eq!(link_targets("see [a](docs/a.md#x) and [`b`](../b/ \"t\"), not (c)"), ["docs/a.md#x", "../b/"]);
    assert_eq!(prose("a `[x](y)` [z](w)\n```\n[q](r)\n```\n")[0], (1, "a   [z](w)".to_owned()));
}

/// Every relative link of README.md and docs/*.md leads to a file or
/// directory of the repository, and its `#anchor` to a heading there.
#[test]
fn every_relative_link_leads_somewhere() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for (name, text) in pages() {
        let dir = root().join(&name).parent().unwrap().to_path_buf();
        for (line, prose) in prose(&text) {
            for target in link_targets(&prose) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = target.split_once('#').map_or((target, None), |(p, a)| (p, Some(a)));
                let file = if path.is_empty() { root().join(&name) } else { dir.join(path) };
                if !file.exists() {
                    broken.push(format!("{name}:{line}: {target}: no file {}", file.display()));
                    continue;
                }
                if let Some(anchor) = anchor {
                    let target_text = std::fs::read_to_string(&file).unwrap_or_default();
                    if !anchors(&target_text).contains(anchor) {
                        broken.push(format!("{name}:{line}: {target}: no heading with the anchor #{anchor}"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked >= 30, "only {checked} relative links found");
}

/// docs/ci-targets.md's session: the page's GitLab and GitHub targets on
/// two outputs, after hand edits in both, against the emulators. The
/// emulators' addresses are put back in what `plan` prints as the page's
/// config has them (`https://gitlab.example.com`; GitHub's default, which
/// is not shown).
#[test]
fn the_ci_session_is_what_cfgsync_prints() {
    use kube_emulator::{GithubEmulator, GithubScope, GitlabEmulator, GitlabOwner};

    let (gitlab, github) = (GitlabEmulator::start(), GithubEmulator::start());
    github.freeze_clock(1_767_225_600);
    github.create_environment("acme", "app", "prod");
    let targets = format!(
        "[[output.target]]\nkind = \"gitlab\"\nurl = \"{}\"\nproject = \"group/app\"\nkey = \"APP_{{{{ name }}}}\"\nhidden = true\n\
         [[output.target]]\nkind = \"github\"\napi_url = \"{}\"\nrepo = \"acme/app\"\nenvironment = \"{{{{ env }}}}\"\n",
        gitlab.url(),
        github.url()
    );
    let p = Project::new(&format!(
        "instance = \"payments\"\n[files]\n[envs.prod]\n\n\
         [[output]]\nname = \"api\"\n[output.entries]\nDB_PASSWORD = \"{{{{ secret(path='api/db', field='password') }}}}\"\n{targets}\n\
         [[output]]\nname = \"web\"\n[output.entries]\nHOST = \"{{{{ key(name='web/host') }}}}\"\n{targets}"
    ))
    .with_env("GITLAB_TOKEN", "glpat-readme")
    .with_env("GITHUB_TOKEN", "ghp-readme");
    p.write(
        "source/prod.toml",
        "[keys]\n\"web/host\" = \"www2.prod\"\n\n[secrets.\"api/db\"]\npassword = \"readme-ci-password\"\n\n\
         [secrets.\"cfgsync/fingerprint\"]\nkey = \"readme-fingerprint-key\"\n",
    );
    let run = p.run(&["reconcile", "--once"]);
    assert_eq!(run.code, 0, "{run:?}");

    let project = GitlabOwner::project("group/app");
    let mut host = gitlab.variable(&project, "APP_HOST", "prod").expect("written");
    (host.value, host.protected) = ("hand.example".into(), true);
    gitlab.put_variable(&project, host);
    github.advance_clock(std::time::Duration::from_secs(2));
    github.put_variable(&GithubScope::environment("acme", "app", "prod"), "HOST", "hand.example");

    let (name, heading) = ("docs/ci-targets.md", "### Both kinds in one config");
    replay(&format!("{name}, {heading}"), &session_under(name, heading), |args| {
        let mut run = p.run(args);
        for text in [&mut run.stdout, &mut run.stderr] {
            *text =
                text.replace(&gitlab.url(), "https://gitlab.example.com").replace(&format!(" at {}", github.url()), "");
        }
        run
    });
}

/// docs/benchmarks.md ("The service"): a burst of puts, each within a
/// debounce of the previous one, is two passes and two writes — the first
/// change at once (the leading edge), the rest together once the burst is
/// over. (The debounce is long here so that a slow `etcdctl` cannot make
/// two bursts of one.)
#[test]
fn a_burst_of_puts_is_two_passes_and_two_writes() {
    use std::time::{Duration, Instant};

    use crate::service::{Service, read_or_empty};
    use crate::support::Etcd;
    use crate::support::wait_until;

    let debounce = Duration::from_secs(3);
    let etcd = Etcd::start();
    etcd.put("/cfgsync/prod/a", "0");
    let p = Project::new(&format!(
        "interval = \"1h\"\n[etcd]\nendpoints = [\"{}\"]\n[service]\ndebounce = \"3s\"\n[envs.prod]\n\
         [[output]]\nname = \"a\"\n[output.entries]\nA = \"{{{{ key(name='a') }}}}\"\n\
         [[output.target]]\nkind = \"file\"\npath = \"out/a.env\"\n",
        etcd.endpoint
    ));
    let svc = Service::start(&p, &[], &[]);
    svc.wait_ready(Duration::from_secs(30));
    let file = p.path("out/a.env");
    wait_until("the first pass", Duration::from_secs(10), || (read_or_empty(&file) == "A=0\n").then_some(()));
    let writes = || svc.log().lines().filter(|l| l.contains("file written") && l.contains("action=\"update\"")).count();
    let watch_passes = || svc.log().matches("reason=\"etcd watch\"").count();
    assert_eq!((writes(), watch_passes()), (0, 0), "{}", svc.log());

    let first = Instant::now();
    etcd.put("/cfgsync/prod/a", "1");
    wait_until("the leading edge", Duration::from_secs(10), || (read_or_empty(&file) == "A=1\n").then_some(()));
    assert!(first.elapsed() < debounce, "the first change of a burst goes at once: {:?}", first.elapsed());
    let rest = Instant::now();
    for value in 2..=5 {
        etcd.put("/cfgsync/prod/a", &value.to_string());
    }
    assert!(rest.elapsed() < debounce, "the puts came within a debounce of each other: {:?}", rest.elapsed());
    wait_until("the rest of the burst", Duration::from_secs(30), || (read_or_empty(&file) == "A=5\n").then_some(()));
    wait_until("the pass's log line", Duration::from_secs(10), || (watch_passes() == 2).then_some(()));
    assert_eq!(writes(), 2, "two writes, A=1 and A=5: {}", svc.log());
}

/// The number of crates README.md and docs/building.md say the first
/// build compiles is the release build's dependency graph now: a change of
/// dependencies changes the figure (and makes the dated cold-build time a
/// measurement of another graph, which the pages must then say).
#[test]
fn the_crate_count_on_the_pages_is_the_dependency_graphs() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let tree = std::process::Command::new(cargo)
        .args(["tree", "--offline", "--locked", "-e", "normal,build", "--prefix", "none", "-p", "cfgsync"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(tree.status.success(), "{}", String::from_utf8_lossy(&tree.stderr));
    let crates: BTreeSet<String> = String::from_utf8(tree.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some(format!("{} {}", words.next()?, words.next()?))
        })
        .collect();
    for name in ["README.md", "docs/building.md"] {
        let text = page(name).split_whitespace().collect::<Vec<_>>().join(" ");
        let said = text
            .split("downloads and compiles ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("{name} says how many crates the first build compiles"));
        assert_eq!(
            said,
            crates.len().to_string(),
            "{name}: the first build compiles {} crates now; update the figure, and say that the cold-build time was measured with another graph",
            crates.len()
        );
    }
}
