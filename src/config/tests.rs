//! Unit tests of loading and validation.

use super::builder::normalize_within;
use super::*;

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
    assert_eq!(parse_duration("10"), None);
    assert_eq!(parse_duration("m"), None);
    assert_eq!(parse_duration("5d"), None);
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
