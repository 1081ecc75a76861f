//! README.md's examples work when pasted, and `validate` checks what the
//! first run would hit.
//!
//! Every ```` ```toml ```` block of README.md is checked, by kind:
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
//!   then `[files]` — or `[etcd]` when the fragment has only `[vault]` —,
//!   `[envs.staging]`, `[envs.prod]`, an output `readme` with one entry and,
//!   unless the fragment brings its own, a file target; then the
//!   fragment's tables); `validate` must pass.
//!
//! A commented-out alternative (`# auth = { … }` below `auth = { … }` in
//! the same table) is checked as well, in place of the line it replaces.
//! A block that fails names its line in README.md.

use std::collections::BTreeMap;
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

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// (line in README.md, text) of each ```` ```toml ```` block, indentation
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

fn check_config(line: usize, text: &str) {
    let p = Project::new("");
    let config = with_credentials(&p, text);
    p.write("cfgsync.toml", &config);
    with_template_files(&p, &toml::from_str(&config).unwrap());
    assert_ok(&p.run(&["validate"]), "validate", &format!("README.md:{line}"), &config);

    // Targets that need servers (Kubernetes, GitLab, GitHub): `validate`
    // only here; the TLS deployment block runs against servers below.
    if ["kubernetes-secret", "kubernetes-configmap", "\"gitlab\"", "\"github\""].iter().any(|k| text.contains(k)) {
        return;
    }
    let p = Project::new("");
    let config = on_file_source(&p, text);
    p.write("cfgsync.toml", &config);
    let run = p.run(&["plan"]);
    assert_ok(&run, "plan", &format!("README.md:{line}"), &config);
    assert!(run.stdout.ends_with(" 0 failed\n"), "README.md:{line}: {run:?}");
}

fn check_file_source(line: usize, text: &str) {
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
    assert!(!want.is_empty(), "README.md:{line}: a file source without keys or secrets");
    let p = Project::new(&format!(
        "[files]\n[envs.staging]\n[[output]]\nname = \"readme\"\n[output.entries]\n{entries}[[output.target]]\nkind = \"file\"\npath = \"out.json\"\nformat = \"json\"\n"
    ));
    p.write("source/staging.toml", text);
    let run = p.run(&["reconcile", "--once"]);
    assert_ok(&run, "reconcile --once", &format!("README.md:{line}"), text);
    let got: BTreeMap<String, String> = serde_json::from_str(&p.read("out.json")).unwrap();
    assert_eq!(got, want, "README.md:{line}: the file source reads back what the block says");
}

#[test]
fn every_toml_example_in_the_readme_works() {
    let blocks = toml_blocks(&readme());
    assert!(blocks.len() >= 6, "found {} ```toml blocks", blocks.len());
    let mut kinds = BTreeMap::<&str, usize>::new();
    for (line, block) in &blocks {
        for text in variants(block) {
            let kind = if text.contains("[[output]]") || text.contains("[envs.") {
                check_config(*line, &text);
                "config"
            } else if text.contains("[keys]") || text.contains("[secrets.") {
                check_file_source(*line, &text);
                "file source"
            } else {
                let p = Project::new("");
                let config = with_credentials(&p, &wrapped(&text));
                p.write("cfgsync.toml", &config);
                assert_ok(&p.run(&["validate"]), "validate", &format!("README.md:{line}"), &config);
                "fragment"
            };
            *kinds.entry(kind).or_default() += 1;
        }
    }
    // The README's main example and its alternatives, the file source, and
    // the fragments (targets, settings, credentials) are all there.
    assert!(kinds["config"] >= 2 && kinds["file source"] >= 1 && kinds["fragment"] >= 5, "{kinds:?}");
}

#[test]
fn fragments_are_wrapped_and_alternatives_found() {
    let v = variants(
        "[vault]\nauth = { method = \"token\" }   # note\n# auth = { method = \"jwt\", token_file = \"t\" }\n# dir = \"x\"\n",
    );
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[1], "[vault]\nauth = { method = \"jwt\", token_file = \"t\" }\n# dir = \"x\"\n");
    let w = wrapped("interval = \"1m\"\n[service]\ngrace = \"5s\"\n");
    assert!(w.starts_with("interval = \"1m\"\n[files]\n") && w.ends_with("[service]\ngrace = \"5s\"\n"), "{w}");
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

/// The `toml` block under `heading` in README.md.
fn block_under(heading: &str) -> String {
    let readme = readme();
    let at = readme.find(heading).unwrap_or_else(|| panic!("README.md has no {heading:?}"));
    let line = readme[..at].lines().count();
    toml_blocks(&readme).into_iter().find(|(l, _)| *l > line).map(|(_, b)| b).expect("a toml block below it")
}

/// The deployment section's TLS and mutual TLS example, run as written
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

    let text = block_under("### TLS and mutual TLS");
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
