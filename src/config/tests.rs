//! Unit tests of loading and validation.

use super::*;
use crate::format::Format;
use crate::targets::TargetKind;
use crate::targets::file::spec::normalize_within;

fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

const BASE: &str = r#"
[files]
[envs.staging]
[envs.prod]

[[output]]
name = "api"
[output.entries]
A = "{{ key(name='a') }}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/api.env"
"#;

#[test]
fn a_minimal_config_loads_with_defaults() {
    let c = parse(Path::new("/etc/cfgsync/cfgsync.toml"), BASE, &no_env()).unwrap();
    assert_eq!(c.interval, DEFAULT_INTERVAL);
    assert_eq!(c.envs, ["prod", "staging"]);
    assert!(matches!(&c.keys, KeysSource::Files(d) if d == Path::new("/etc/cfgsync/source")));
    let TargetKind::File(f) = &c.outputs[0].targets[0].kind else { panic!("file target expected") };
    assert_eq!(f.paths["prod"], Path::new("/etc/cfgsync/out/prod/api.env"));
    assert_eq!(f.format, Format::Dotenv);
}

#[test]
fn unknown_field_names_file_line_and_column() {
    let text = BASE.replace("[envs.prod]", "[envs.prod]\ncolour = 1");
    let err = parse(Path::new("c.toml"), &text, &no_env()).unwrap_err().to_string();
    assert!(err.starts_with("c.toml:5:1: unknown field `colour`"), "{err}");
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let text = format!(
        "{BASE}\n[[output]]\nname = \"web\"\nenvs = [\"prd\"]\n[output.entries]\nX = \"x\"\n\n[[output]]\nname = \"db\"\n[output.entries]\nY = \"y\"\n[[output.target]]\nkind = \"file\"\npath = \"../../etc/{{{{ env }}}}.env\"\n"
    );
    let err = parse(Path::new("c.toml"), &text, &no_env()).unwrap_err();
    let all = err.to_string();
    assert_eq!(err.problems.len(), 4, "{all}");
    assert!(all.contains("c.toml:16:9: output \"web\": unknown env \"prd\" (did you mean \"prod\"?)"), "{all}");
    assert!(all.contains("output \"web\" has no targets"), "{all}");
    assert!(all.contains("c.toml:24:1: output \"db\": path \"../../etc/prod.env\" (env \"prod\") leaves"), "{all}");
}

#[test]
fn env_vars_override_only_existing_sections() {
    let mut env = no_env();
    env.insert("ETCDCTL_ENDPOINTS".into(), "http://a:1,http://b:2".into());
    env.insert("ETCDCTL_USER".into(), "reader:pw".into());
    env.insert("VAULT_ADDR".into(), "http://v:8200/".into());
    env.insert("VAULT_TOKEN".into(), "tok".into());
    let files = parse(Path::new("c.toml"), BASE, &env).unwrap();
    assert!(matches!(files.keys, KeysSource::Files(_)));
    let text = BASE.replace(
        "[files]",
        "[etcd]\nendpoints = [\"http://x:1\"]\ninsecure = true\n[vault]\ninsecure = true\nauth = { method = \"approle\", role_id = \"r\" }",
    );
    let c = parse(Path::new("c.toml"), &text, &env).unwrap();
    let KeysSource::Etcd(e) = &c.keys else { panic!("etcd expected") };
    assert_eq!(e.endpoints, ["http://a:1", "http://b:2"]);
    assert_eq!(e.user.as_deref(), Some("reader"));
    assert_eq!(e.password.as_ref().map(|p| p.expose()), Some("pw"));
    let Some(SecretsSource::Vault(v)) = &c.secrets else { panic!("vault expected") };
    assert_eq!(v.address, "http://v:8200");
    assert!(matches!(&v.auth, VaultAuth::Token { token: Some(t), .. } if t.expose() == "tok"));
}

#[test]
fn service_settings_have_defaults_and_are_validated() {
    let c = parse(Path::new("c.toml"), BASE, &no_env()).unwrap();
    assert_eq!(c.service, ServiceSettings::default());
    assert_eq!(c.service.debounce, Duration::from_millis(200));
    let text = format!("{BASE}\n[service]\ndebounce = \"0s\"\ngrace = \"5s\"\n[service.election]\nttl = \"2500ms\"\n");
    let c = parse(Path::new("c.toml"), &text, &no_env()).unwrap();
    assert_eq!(
        c.service,
        ServiceSettings {
            debounce: Duration::ZERO,
            grace: Duration::from_secs(5),
            election_ttl: Duration::from_secs(3)
        }
    );
    let text = format!("{BASE}\n[service]\ndebounce = \"soon\"\n[service.election]\nttl = \"1s\"\n");
    let err = parse(Path::new("c.toml"), &text, &no_env()).unwrap_err().to_string();
    assert!(err.contains("invalid service debounce \"soon\""), "{err}");
    assert!(err.contains("service election ttl must be at least \"2s\""), "{err}");
}

#[test]
fn kubernetes_and_jwt_vault_auth() {
    let with = |auth: &str| {
        let text = BASE.replace("[files]", &format!("[etcd]\n[vault]\nauth = {auth}"));
        let c = parse(Path::new("/etc/cfgsync/c.toml"), &text, &no_env()).unwrap();
        let Some(SecretsSource::Vault(v)) = c.secrets else { panic!("vault expected") };
        v.auth
    };
    let VaultAuth::Kubernetes { mount, role, token_file } = with("{ method = \"kubernetes\", role = \"r\" }") else {
        panic!("kubernetes expected")
    };
    assert_eq!((mount.as_str(), role.as_str()), ("kubernetes", "r"));
    assert_eq!(token_file, Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token"));
    let VaultAuth::Jwt { mount, role, token_file } =
        with("{ method = \"jwt\", mount = \"gitlab\", token_file = \"ci.jwt\" }")
    else {
        panic!("jwt expected")
    };
    assert_eq!((mount.as_str(), role), ("gitlab", None));
    assert_eq!(token_file, Path::new("/etc/cfgsync/ci.jwt"));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration(" 30s "), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("10"), None);
    assert_eq!(parse_duration("m"), None);
    assert_eq!(parse_duration(""), None);
    assert_eq!(parse_duration("99999999999999999999h"), None, "overflow");
    // humantime's syntax is a superset of the hand parser's it replaced.
    assert_eq!(parse_duration("1h 30min"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("5d"), Some(Duration::from_secs(5 * 86_400)));
}

#[test]
fn line_index_agrees_with_a_scan_from_the_start() {
    let text = "a = 1\nnamé = \"x\"\n\n[[output]]\nname = \"é€\"\n";
    let index = LineIndex::new(text);
    for (offset, _) in text.char_indices().chain([(text.len(), ' ')]) {
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        assert_eq!(index.line_column(text, offset), (line, column), "offset {offset}");
    }
    assert_eq!(index.line_column(text, 10_000), index.line_column(text, text.len()), "clamped");
}

#[test]
fn relative_paths_must_stay_inside() {
    assert_eq!(normalize_within(Path::new("a/../b/c")), Some(PathBuf::from("b/c")));
    assert_eq!(normalize_within(Path::new("a/../../b")), None);
    assert_eq!(normalize_within(Path::new("./")), None);
}

/// Issue 15: an unknown field used to hide every later problem.
#[test]
fn every_unknown_field_and_the_semantic_problems_are_reported_at_once() {
    let text = BASE
        .replace("[files]", "[files]\ndirr = \"src\"")
        .replace("kind = \"file\"", "kind = \"file\"\nmod = \"0600\"")
        .replace("[envs.prod]", "[envs.prod]\n[vault]\nauth = { method = \"token\", tokn_file = \"t\" }")
        + "\n[[output]]\nname = \"web\"\nenvs = [\"prd\"]\n[output.entries]\nX = { templat = \"x.tera\", key = \"k\" }\n";
    let err = parse(Path::new("c.toml"), &text, &no_env()).unwrap_err();
    let all = err.to_string();
    let lines: Vec<&str> = all.lines().collect();
    assert!(lines[0].starts_with("c.toml:3:1: unknown field `dirr`"), "{all}");
    assert!(
        all.contains("c.toml:7:28: unknown field `tokn_file`, expected `token_file` (did you mean `token_file`?)"),
        "{all}"
    );
    assert!(all.contains("c.toml:15:1: unknown field `mod`, expected one of `path`"), "{all}");
    assert!(all.contains("(did you mean `mode`?)"), "{all}");
    assert!(all.contains("c.toml:22:7: unknown field `templat`"), "{all}");
    // The semantic checks ran too.
    assert!(all.contains("output \"web\": unknown env \"prd\" (did you mean \"prod\"?)"), "{all}");
    assert!(all.contains("both [vault] and [files] provide secrets"), "{all}");
    assert!(all.contains("output \"web\" has no targets"), "{all}");
    assert_eq!(err.problems.len(), 7, "{all}");
}

#[test]
fn type_errors_are_all_reported_and_what_follows_from_them_is_not() {
    let text = format!(
        "interval = 5\n{}\n[[output]]\nname = \"w\"\n[output.entries]\nX = \"x\"\n[[output.target]]\nkind = \"fil\"\npath = \"x\"\n[[output.target]]\nkind = \"file\"\npth = \"x\"\n",
        BASE.replace("[envs.prod]", "[envs.prod]\n[service]\ngrace = 20")
    );
    let err = parse(Path::new("c.toml"), &text, &no_env()).unwrap_err();
    let all = err.to_string();
    assert!(all.contains("c.toml:1:12: invalid type: integer `5`, expected a string"), "{all}");
    assert!(all.contains("c.toml:7:9: invalid type: integer `20`, expected a string"), "{all}");
    assert!(all.contains("unknown variant `fil`, expected one of `file`"), "{all}");
    assert!(all.contains("unknown field `pth`"), "{all}");
    assert!(!all.contains("missing field"), "what follows from a reported problem is not reported again: {all}");
    assert_eq!(err.problems.len(), 4, "{all}");
    // Syntax errors end the load, all of them reported.
    let err = parse(Path::new("c.toml"), "a = \n[b\nc = 1\n", &no_env()).unwrap_err();
    assert!(err.problems.len() >= 2, "{err}");
}

/// Issue 15: `[envs._service]` read the election records as keys.
#[test]
fn env_names_of_the_reserved_layout_are_refused_where_they_are_written() {
    for name in ["_service", "_state", "_meta", "_history", "_x", ".", ".."] {
        let text = BASE.replace("[envs.prod]", &format!("[envs.prod]\n[envs.\"{name}\"]"));
        let err = parse(Path::new("c.toml"), &text, &no_env()).unwrap_err().to_string();
        assert!(err.starts_with(&format!("c.toml:5:7: invalid env name {name:?}: names starting with")), "{err}");
    }
    let text = BASE.replace("[envs.prod]", "[envs.prod]\n[envs.\"a b\"]");
    let err = parse(Path::new("c.toml"), &text, &no_env()).unwrap_err().to_string();
    assert!(err.starts_with("c.toml:5:7: invalid env name \"a b\": use letters"), "{err}");
    let text = BASE.replace("[envs.prod]", "[envs.prod]\n[envs.pre_prod]\n[envs.\"v1.2\"]");
    parse(Path::new("c.toml"), &text, &no_env()).unwrap();
}

/// Issue 15: a target at `.cfgsync/…` overwrote the state, one named like a
/// temp file was removed as a leftover by a later pass.
#[test]
fn target_paths_through_cfgsyncs_own_names_are_refused() {
    for path in [".cfgsync/inst/files-{{ env }}.json", "out/.cfgsync-tmp-1-{{ env }}-00", "/srv/.cfgsync/{{ env }}.env"]
    {
        let text = BASE.replace("out/{{ env }}/api.env", path);
        let err = parse(Path::new("/etc/cfgsync/c.toml"), &text, &no_env()).unwrap_err().to_string();
        assert!(err.contains("c.toml:10:1: output \"api\": path"), "{path}: {err}");
        assert!(err.contains("names starting with .cfgsync are cfgsync's own state and temp files"), "{path}: {err}");
    }
}

/// Issue 15: a target could write over the config, a credential, a template.
#[test]
fn targets_never_write_over_what_cfgsync_reads() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("cfgsync.toml");
    let vault = "instance = \"x\"\n[etcd]\npassword_file = \"creds/etcd\"\n[vault]\nauth = { method = \"approle\", role_id = \"r\", secret_id_file = \"/run/creds/secret-id\" }\n[kubernetes]\nkubeconfig = \"kube/config\"\n[state]\ndir = \"/var/lib/cfgsync\"\n";
    let cases = [
        ("cfgsync.toml", "the config file"),
        ("out/../cfgsync.toml", "the config file"),
        ("creds/etcd", "the etcd password_file"),
        ("/run/creds/secret-id", "the vault secret_id_file"),
        ("kube/config", "the kubeconfig"),
        ("templates/api/config.tera", "the templates directory"),
        ("policies/prod.toml", "the policies directory"),
        ("/var/lib/cfgsync/inst/x.json", "the state directory"),
    ];
    let one_env = BASE.replace("[envs.staging]\n", "");
    for (path, what) in cases {
        let text = one_env.replace("[files]", vault).replace("out/{{ env }}/api.env", path);
        let err = parse(&config_path, &text, &no_env()).unwrap_err().to_string();
        assert!(err.contains(&format!("would write over {what}")), "{path}: {err}");
        assert!(err.contains("cfgsync.toml:18:1: output \"api\": file target"), "{path}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // The file source, and a dir target whose entry would be the config file.
    let err = parse(&config_path, &BASE.replace("out/{{ env }}/api.env", "source/{{ env }}.toml"), &no_env())
        .unwrap_err()
        .to_string();
    assert!(err.contains("would write over the file source"), "{err}");
    let dir_target = one_env
        .replace("A = \"{{ key(name='a') }}\"", "\"cfgsync.toml\" = \"x\"")
        .replace("path = \"out/{{ env }}/api.env\"", &format!("path = \"{}\"\nformat = \"dir\"", dir.path().display()));
    let err = parse(&config_path, &dir_target, &no_env()).unwrap_err().to_string();
    assert!(err.contains("would write over the config file"), "{err}");
    // Through a symlinked directory.
    std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
    let err = parse(&config_path, &one_env.replace("out/{{ env }}/api.env", "link/cfgsync.toml"), &no_env())
        .unwrap_err()
        .to_string();
    assert!(err.contains("would write over the config file"), "{err}");
    // Anything else is fine.
    parse(&config_path, &BASE.replace("out/{{ env }}/api.env", "out/{{ env }}/cfgsync.toml"), &no_env()).unwrap();
}

/// Issue 15: every shipped deployment is `/etc/cfgsync/cfgsync.toml`, so
/// every config without `instance` was instance `cfgsync`, and
/// `x/app/cfgsync.toml` and `y/app/cfgsync.toml` were both `app`.
#[test]
fn instance_is_required_where_another_config_can_see_what_this_one_writes() {
    let shared = [
        "kind = \"kubernetes-secret\"\nnamespace = \"api\"\nname = \"api-{{ env }}\"",
        "kind = \"gitlab\"\nproject = \"group/app\"\nenvironment_scope = \"{{ env }}\"",
        "kind = \"github\"\nrepo = \"acme/app\"\nenvironment = \"{{ env }}\"",
    ];
    for target in shared {
        let text = format!("{BASE}[[output.target]]\n{target}\n");
        let err = parse(Path::new("/etc/cfgsync/cfgsync.toml"), &text, &no_env()).unwrap_err().to_string();
        assert!(err.starts_with("/etc/cfgsync/cfgsync.toml:13:1: output \"api\": a "), "{err}");
        assert!(err.contains("set `instance = \"NAME\"` at the top of the config"), "{err}");
        assert!(err.contains("carries instance \"cfgsync\": keep that name"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        parse(Path::new("/etc/cfgsync/cfgsync.toml"), &format!("instance = \"payments\"\n{text}"), &no_env())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let text = BASE.replace("[files]", "[files]\n[state]\ndir = \"/var/lib/cfgsync\"");
    let err = parse(Path::new("/srv/app/cfgsync.toml"), &text, &no_env()).unwrap_err().to_string();
    assert!(err.starts_with("/srv/app/cfgsync.toml:4:7: `[state] dir` may be shared"), "{err}");
    // File targets with the state in the config's own directory: the default stays.
    let c = parse(Path::new("/srv/app/cfgsync.toml"), BASE, &no_env()).unwrap();
    assert_eq!((c.instance.as_str(), c.instance_set), ("app", false));
}

#[test]
fn the_default_instance_does_not_depend_on_how_the_config_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("payments")).unwrap();
    let real = tmp.path().join("payments/cfgsync.toml");
    std::fs::write(&real, BASE).unwrap();
    std::os::unix::fs::symlink(&real, tmp.path().join("prod.toml")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("payments"), tmp.path().join("link")).unwrap();
    for spelling in ["payments/cfgsync.toml", "prod.toml", "link/cfgsync.toml", "link/../payments/cfgsync.toml"] {
        assert_eq!(default_instance(&tmp.path().join(spelling)), "payments", "{spelling}");
    }
}

#[test]
fn suggestions_are_the_closest_name_within_a_third_of_its_length() {
    let names: Vec<String> = ["prod", "staging", "dev", "prodé"].map(String::from).into();
    assert_eq!(suggest("prd", &names), Some("prod"));
    assert_eq!(suggest("stagign", &names), Some("staging"));
    assert_eq!(suggest("prodè", &names), Some("prod"), "the first of equally close names, counted in characters");
    assert_eq!(suggest("qa", &names), None);
}

#[test]
fn the_fingerprint_key_has_its_own_table_and_keeps_its_old_name() {
    let key = |extra: &str| parse(Path::new("/c/cfgsync.toml"), &format!("{extra}\n{BASE}"), &no_env());
    let pair = |p: &str, f: &str| Some((p.to_owned(), f.to_owned()));
    assert_eq!(key("").unwrap().fingerprint_key, pair("cfgsync/fingerprint", "key"));
    assert_eq!(key("[fingerprint]\nkey = \"ops/fp#k\"").unwrap().fingerprint_key, pair("ops/fp", "k"));
    assert_eq!(key("[kubernetes]\nfingerprint_key = \"old/fp#k\"").unwrap().fingerprint_key, pair("old/fp", "k"));
    let both = key("[fingerprint]\nkey = \"a#b\"\n[kubernetes]\nfingerprint_key = \"c#d\"").unwrap_err().to_string();
    assert!(both.contains("/c/cfgsync.toml:4:19: the fingerprint key is set twice"), "{both}");
    let bad = key("[fingerprint]\nkey = \"nofield\"").unwrap_err().to_string();
    assert!(bad.contains("/c/cfgsync.toml:2:7: [fingerprint] key must be \"<secret path>#<field>\""), "{bad}");
}

/// Issue 21: `entries`/`exclude` on a target, on every kind.
#[test]
fn a_target_selects_entries_by_name_and_unknown_names_are_errors_at_their_line() {
    let output = |selection: &str| {
        format!(
            "{BASE}\n[[output]]\nname = \"web\"\n[output.entries]\nA = \"a\"\nB = \"b\"\nC = \"c\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{{{{ env }}}}.env\"\n{selection}\n"
        )
    };
    let ok = parse(Path::new("c.toml"), &output("entries = [\"A\", \"C\"]"), &no_env()).unwrap();
    let target = &ok.outputs.last().unwrap().targets[0];
    assert!(target.selects("A") && !target.selects("B") && target.selects("C"));
    let ok = parse(Path::new("c.toml"), &output("exclude = [\"B\"]"), &no_env()).unwrap();
    let target = &ok.outputs.last().unwrap().targets[0];
    assert_eq!(target.selected.as_ref().unwrap().iter().collect::<Vec<_>>(), ["A", "C"]);
    let text = output("exclude = [\"NOPE\", \"A\"]");
    let line = text.lines().position(|l| l.starts_with("exclude")).unwrap() + 1;
    let err = parse(Path::new("c.toml"), &text, &no_env()).unwrap_err().to_string();
    assert!(
        err.contains(&format!("c.toml:{line}:12: output \"web\": target `exclude` names \"NOPE\", which is not an entry of the output; entries: A, B, C")),
        "{err}"
    );
    let err = parse(Path::new("c.toml"), &output("entries = [\"A\"]\nexclude = [\"B\"]"), &no_env()).unwrap_err();
    assert!(err.to_string().contains("`entries` or `exclude`, not both"), "{err}");
    let err = parse(Path::new("c.toml"), &output("entries = []"), &no_env()).unwrap_err();
    assert!(err.to_string().contains("the target takes nothing"), "{err}");
    // Every kind takes the fields (the selection is not the kind's).
    let kube = output("entries = [\"A\"]").replace(
        "kind = \"file\"\npath = \"out/{{ env }}.env\"",
        "kind = \"kubernetes-configmap\"\nnamespace = \"web\"\nname = \"web-{{ env }}\"",
    );
    let kube = format!("instance = \"t\"\n{kube}");
    let c = parse(Path::new("c.toml"), &kube, &no_env()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.outputs.last().unwrap().targets[0].selects("B"));
}

#[test]
fn vault_refresh_defaults_to_ten_minutes_and_is_located_when_invalid() {
    let vault = "[etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n[vault]\naddress = \"http://127.0.0.1:8200\"\nauth = { method = \"token\", token_file = \"t\" }\n";
    let text = BASE.replace("[files]", vault);
    let c = parse(Path::new("c.toml"), &text, &no_env()).unwrap();
    let Some(SecretsSource::Vault(v)) = &c.secrets else { panic!("vault expected") };
    assert_eq!(v.refresh, Duration::from_secs(600));
    let c =
        parse(Path::new("c.toml"), &text.replace("[vault]\n", "[vault]\nrefresh = \"1h30m\"\n"), &no_env()).unwrap();
    let Some(SecretsSource::Vault(v)) = &c.secrets else { panic!("vault expected") };
    assert_eq!(v.refresh, Duration::from_secs(5400));
    for bad in ["0s", "often"] {
        let text = text.replace("[vault]\n", &format!("[vault]\nrefresh = \"{bad}\"\n"));
        let line = text.lines().position(|l| l.starts_with("refresh")).unwrap() + 1;
        let err = parse(Path::new("c.toml"), &text, &no_env()).unwrap_err().to_string();
        assert!(err.contains(&format!("c.toml:{line}:")), "{err}");
        assert!(err.contains(&format!("invalid vault refresh \"{bad}\"")), "{err}");
    }
}
