//! The GitHub kind's pure parts: names, secrets vs variables, drift by
//! `updated_at`, ownership by record, by tables.

use std::collections::BTreeMap;

use super::*;
use crate::config::{self, Config};
use crate::secret::SecretString;
use crate::targets::kubernetes::Fingerprinter;

const CANARY: &str = "CANARY-77c2-github";

fn parse(target: &str) -> Result<Config, String> {
    let text = format!(
        "instance = \"team-a\"\n[files]\n[envs.prod]\n[envs.staging]\n\n[[output]]\nname = \"api\"\n[output.entries]\nPW = \"x\"\nHOST = \"y\"\n[[output.target]]\nkind = \"github\"\n{target}\n"
    );
    config::parse(std::path::Path::new("/cfg/cfgsync.toml"), &text, &BTreeMap::<String, String>::new())
        .map_err(|e| e.to_string())
}

fn config(target: &str) -> Config {
    parse(target).unwrap_or_else(|e| panic!("{e}"))
}

fn spec(c: &Config) -> &GithubTarget {
    GithubKind::spec(&c.outputs[0].targets[0].kind).unwrap()
}

fn ctx<'a>(c: &'a Config, keyed: &'a Fingerprinter) -> Ctx<'a> {
    Ctx {
        config: c,
        env: "prod",
        revision: None,
        instance: &c.instance,
        keyed,
        shown: None,
        prune: true,
        allow_mass_prune: false,
        run_reload: false,
    }
}

fn rendered(entries: &[(&str, &str)], tainted: bool) -> Rendered {
    Rendered {
        output: "api".into(),
        env: "prod".into(),
        entries: entries.iter().map(|(k, v)| (k.to_string(), Content::new(v.as_bytes(), tainted))).collect(),
        tainted,
        used: Default::default(),
    }
}

fn kind() -> GithubKind {
    GithubKind::new(ci::Client::new(ci::Retry::default()), Arc::new(StateStore::Dir("/nonexistent".into())))
}

fn plan_of(c: &Config, keyed: &Fingerprinter, items: Option<Vec<DesiredItem>>, observed: &Observed) -> DestPlan<Op> {
    let s = spec(c);
    let dest = GithubKind::dest_of(s, "prod");
    let claims = vec![Claim { slot: Slot::Target { output: 0, target: 0 }, spec: s, items }];
    kind().plan(&dest, claims, observed, &ctx(c, keyed))
}

fn secret(name: &str, at: &str) -> api::LiveSecret {
    api::LiveSecret { name: name.into(), updated_at: at.into(), visibility: None }
}

#[test]
fn config_checks_names_and_scopes() {
    let c = config("repo = \"acme/app\"\nenvironment = \"{{ env }}\"");
    let a = &spec(&c).addresses["prod"];
    assert_eq!(a.scope, Scope::Environment { owner: "acme".into(), repo: "app".into(), environment: "prod".into() });
    assert_eq!(spec(&c).visibility, None);
    let org = config("org = \"acme-{{ env }}\"");
    assert_eq!(spec(&org).visibility.as_deref(), Some("private"), "org items default to private");

    let err = |t: &str| parse(t).err().unwrap_or_default();
    assert!(err("repo = \"acme/app\"").contains("envs prod and staging would both write"));
    assert!(err("repo = \"acme/{{ env }}\"\nkey = \"{{ name | lower }}\"").contains("A-Z, 0-9"));
    assert!(err("repo = \"acme/{{ env }}\"\nkey = \"GITHUB_{{ name }}\"").contains("GITHUB_"));
    assert!(err("repo = \"acme/{{ env }}\"\nkey = \"1{{ name }}\"").contains("digit"));
    let two = err("repo = \"acme/{{ env }}\"\nkey = \"K\"");
    assert!(two.contains("entries") && two.contains("would both be GitHub secret/variable K"), "{two}");
    let lower = err("repo = \"acme/{{ env }}\"\nkey = \"{{ name | lower }}\"");
    assert!(lower.contains("would be GitHub secret/variable") && lower.contains("(env \"prod\"): "), "{lower}");
    assert!(err("repo = \"acme\"").contains("owner/name"));
    assert!(err("org = \"acme-{{ env }}\"\nenvironment = \"x\"").contains("goes with `repo`"));
    assert!(err("repo = \"acme/{{ env }}\"\nvisibility = \"all\"").contains("organization targets only"));
    assert!(err("org = \"acme-{{ env }}\"\nvisibility = \"public\"").contains("\"all\", \"private\" or \"selected\""));
    assert!(err("org = \"acme-{{ env }}\"\nselected_repository_ids = [1]").contains("needs visibility = \"selected\""));
    assert!(err("repo = \"acme/{{ env }}\"\napi_url = \"http://github.example.com\"").contains("unencrypted"));
    assert!(parse("repo = \"acme/{{ env }}\"\nkey = \"APP_{{ name | upper }}\"").is_ok());
}

#[test]
fn secrets_for_tainted_outputs_variables_for_the_others() {
    let c = config("repo = \"acme/{{ env }}\"");
    let keyed = Fingerprinter::new(Some(SecretString::new("k")));
    let items = kind().desired(spec(&c), &rendered(&[("PW", CANARY)], true), &ctx(&c, &keyed)).unwrap();
    assert_eq!((items[0].part, items[0].fingerprint.starts_with("hmac-sha256:")), (Part::Secret, true));
    let items = kind().desired(spec(&c), &rendered(&[("HOST", "db")], false), &ctx(&c, &keyed)).unwrap();
    assert_eq!(items[0].part, Part::Variable);
}

#[test]
fn secret_drift_is_a_newer_updated_at() {
    let c = config("repo = \"acme/{{ env }}\"");
    let keyed = Fingerprinter::new(Some(SecretString::new("k")));
    let items = kind().desired(spec(&c), &rendered(&[("PW", CANARY)], true), &ctx(&c, &keyed)).unwrap();
    let item = &items[0];
    let at = "2026-01-01T00:00:00Z";
    let action = |live: Vec<api::LiveSecret>, record: Option<Record>| {
        let mut state = DestState::default();
        state.items.extend(record.map(|r| (item.id(), r)));
        let observed = Observed { secrets: live, state, ..Default::default() };
        let p = plan_of(&c, &keyed, Some(items.clone()), &observed);
        assert!(p.errors.is_empty(), "{:?}", p.errors.iter().map(|e| e.1.to_string()).collect::<Vec<_>>());
        p.changes[0].change.clone()
    };
    assert_eq!(action(vec![], None).action, Action::Create);
    let c0 = action(vec![secret("PW", at)], None);
    assert_eq!(c0.action, Action::Update, "no record: written again");
    assert_eq!(action(vec![secret("PW", at)], Some(item.record(Some(at.into())))).action, Action::Unchanged);
    let drift = action(vec![secret("PW", "2026-01-01T00:05:00Z")], Some(item.record(Some(at.into()))));
    assert_eq!(drift.action, Action::Drift);
    assert!(drift.values.is_empty() && drift.diff.is_none() && drift.secret);
    let mut old = item.record(Some(at.into()));
    old.fingerprint = "hmac-sha256:older".into();
    assert_eq!(action(vec![secret("PW", "2026-01-01T00:05:00Z")], Some(old)).action, Action::Update);
}

#[test]
fn variables_compare_values() {
    let c = config("repo = \"acme/{{ env }}\"");
    let keyed = Fingerprinter::new(None);
    let items = kind().desired(spec(&c), &rendered(&[("HOST", "db.new")], false), &ctx(&c, &keyed)).unwrap();
    let var = |value: &str| api::LiveVariable {
        name: "HOST".into(),
        value: value.into(),
        updated_at: "2026-01-01T00:00:00Z".into(),
        visibility: None,
    };
    let mut state = DestState::default();
    state.items.insert(items[0].id(), items[0].record(None));
    let observed = Observed { variables: vec![var("db.hand")], state: state.clone(), ..Default::default() };
    let p = plan_of(&c, &keyed, Some(items.clone()), &observed);
    assert_eq!(p.changes[0].change.action, Action::Drift);
    assert_eq!(p.changes[0].change.values, ["HOST: \"db.hand\" → \"db.new\""]);
    let observed = Observed { variables: vec![var("db.new")], state, ..Default::default() };
    assert!(!plan_of(&c, &keyed, Some(items), &observed).needs_write());
}

#[test]
fn prune_only_what_the_record_names() {
    let c = config("repo = \"acme/{{ env }}\"");
    let keyed = Fingerprinter::new(Some(SecretString::new("k")));
    let record = |output: &str| Record { fingerprint: "x".into(), updated_at: None, output: output.into() };
    let mut state = DestState::default();
    state.items.insert("secret/OLD".into(), record("old"));
    state.items.insert("secret/GONE".into(), record("old"));
    // PW: claimed by the target, which did not render this pass.
    state.items.insert("secret/PW".into(), record("api"));
    let observed = Observed {
        secrets: vec![secret("OLD", "t"), secret("PW", "t"), secret("HANDMADE", "t"), secret("OTHER", "t")],
        variables: vec![],
        state,
        skipped: false,
    };
    let p = plan_of(&c, &keyed, None, &observed);
    let deletes: Vec<String> = p.changes.iter().map(|c| c.change.address.clone()).collect();
    assert_eq!(deletes, ["GitHub repository acme/prod: secret OLD"]);
    assert!(p.errors.is_empty());
}
