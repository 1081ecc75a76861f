//! The GitHub kind's pure parts: names, secrets vs variables, drift by
//! `updated_at`, ownership by record, by tables.

use std::collections::BTreeMap;

use super::*;
use crate::config::{self, Config};
use crate::fingerprint::EnvFingerprinter;
use crate::secret::SecretString;
use crate::targets::Registered;
use crate::targets::ci::test_support::rendered;

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

fn ctx<'a>(c: &'a Config, keyed: &'a EnvFingerprinter) -> Ctx<'a> {
    Ctx { prune: true, ..Ctx::new(c, "prod", keyed) }
}

fn kind() -> GithubKind {
    GithubKind::new(ci::Client::new(ci::Retry::default()), Arc::new(StateStore::Dir("/nonexistent".into())))
}

fn plan_of(c: &Config, keyed: &EnvFingerprinter, items: Option<Vec<DesiredItem>>, observed: &Observed) -> DestPlan<Op> {
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
    let keyed = EnvFingerprinter::new(Some(SecretString::new("k")));
    let items = kind().desired(spec(&c), &rendered(&[("PW", CANARY)], true), &ctx(&c, &keyed)).unwrap();
    assert_eq!((items[0].part, items[0].fingerprint.starts_with("hmac-sha256:")), (Part::Secret, true));
    let items = kind().desired(spec(&c), &rendered(&[("HOST", "db")], false), &ctx(&c, &keyed)).unwrap();
    assert_eq!(items[0].part, Part::Variable);
}

#[test]
fn secret_drift_is_a_newer_updated_at() {
    let c = config("repo = \"acme/{{ env }}\"");
    let keyed = EnvFingerprinter::new(Some(SecretString::new("k")));
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
    let keyed = EnvFingerprinter::new(None);
    let items = kind().desired(spec(&c), &rendered(&[("HOST", "db.new")], false), &ctx(&c, &keyed)).unwrap();
    let var = |value: &str| api::LiveVariable {
        name: "HOST".into(),
        value: Content::plain(value),
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
fn prune_only_what_the_record_names_and_only_as_written() {
    let c = config("repo = \"acme/{{ env }}\"");
    let keyed = EnvFingerprinter::new(Some(SecretString::new("k")));
    let record = |output: &str, at: &str| Record {
        fingerprint: "x".into(),
        output: output.into(),
        updated_at: Some(at.into()),
        ..Default::default()
    };
    let mut state = DestState::default();
    state.items.insert("secret/OLD".into(), record("old", "t"));
    state.items.insert("secret/GONE".into(), record("old", "t"));
    // Written again by someone after cfgsync: not the secret cfgsync wrote.
    state.items.insert("secret/REWRITTEN".into(), record("old", "t"));
    // Adopted, never written by a target: not this instance's to delete yet.
    state
        .items
        .insert("secret/ADOPTED".into(), Record { fingerprint: ci::ADOPTED_FINGERPRINT.into(), ..Default::default() });
    // PW: claimed by the target, which did not render this pass.
    state.items.insert("secret/PW".into(), record("api", "t"));
    let observed = Observed {
        secrets: vec![
            secret("OLD", "t"),
            secret("PW", "t"),
            secret("HANDMADE", "t"),
            secret("OTHER", "t"),
            secret("REWRITTEN", "t2"),
            secret("ADOPTED", "t"),
        ],
        variables: vec![],
        state,
        skipped: false,
    };
    let p = plan_of(&c, &keyed, None, &observed);
    let deletes: Vec<String> = p.changes.iter().map(|c| c.change.address.clone()).collect();
    assert_eq!(deletes, ["GitHub repository acme/prod: secret OLD"]);
    let errors: Vec<String> = p.errors.iter().map(|(_, e)| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("secret REWRITTEN is not deleted: it was written at t2 (cfgsync wrote it at t)"),
        "{errors:?}"
    );
}

/// Issue 15, item 3: a hand-made variable and environment secret at the
/// names cfgsync would write are someone else's: not written, not
/// recorded, and the error says how to adopt them.
#[test]
fn items_without_a_record_are_someone_elses() {
    let c = config("repo = \"acme/app\"\nenvironment = \"{{ env }}\"\nkey = \"{{ name }}_GH\"");
    let keyed = EnvFingerprinter::new(Some(SecretString::new("k")));
    let at = "2026-01-01T00:00:00Z";
    for (tainted, value) in [(true, CANARY), (false, "db")] {
        let items = kind().desired(spec(&c), &rendered(&[("HOST", value)], tainted), &ctx(&c, &keyed)).unwrap();
        let observed = Observed {
            secrets: vec![secret("HOST_GH", at)],
            variables: vec![api::LiveVariable {
                name: "HOST_GH".into(),
                value: Content::plain(value),
                updated_at: at.into(),
                visibility: None,
            }],
            ..Default::default()
        };
        let p = plan_of(&c, &keyed, Some(items.clone()), &observed);
        assert!(p.changes.is_empty(), "nothing written, not even recorded: {:?}", p.changes);
        let e = p.errors[0].1.to_string();
        let what = if tainted { "secret HOST_GH" } else { "variable HOST_GH" };
        assert!(
            e.contains(&format!(
                "environment \"prod\" of repository acme/app: {what} exists but cfgsync has no record"
            )),
            "{e}"
        );
        assert!(e.contains("`cfgsync import --env prod github-env:acme/app/prod --adopt`"), "{e}");
        assert!(!e.contains(CANARY), "{e}");
        // Adopted: the variable (same value) is taken over without a
        // write; the secret, unreadable, is written with cfgsync's value.
        let mut state = DestState::default();
        state.items.insert(items[0].id(), Record { fingerprint: ci::ADOPTED_FINGERPRINT.into(), ..Default::default() });
        // (Only the item's own kind there: the name held by the other kind,
        // unrecorded, would be someone else's too.)
        let p = plan_of(&c, &keyed, Some(items.clone()), &Observed { state: state.clone(), ..observed.clone() });
        let other = if tainted { "variable HOST_GH" } else { "secret HOST_GH" };
        assert!(p.errors[0].1.to_string().contains(&format!("{other} exists but cfgsync has no record")));
        let mut own = observed;
        if tainted {
            own.variables.clear();
        } else {
            own.secrets.clear();
        }
        let p = plan_of(&c, &keyed, Some(items), &Observed { state, ..own });
        assert!(p.errors.is_empty());
        let change = &p.changes[0].change;
        if tainted {
            assert_eq!(change.action, Action::Update);
            assert!(change.notes.iter().any(|n| n.contains("adopted with `cfgsync import --adopt`")), "{change:?}");
        } else {
            assert_eq!(change.action, Action::Unchanged);
            assert!(matches!(&p.changes[0].op.what, OpKind::Keep { record: Some(r), .. } if r.output == "api"));
        }
    }
}

#[test]
fn values_over_48_kb_and_scopes_over_their_count_are_refused_before_anything_is_sent() {
    let c = config("repo = \"acme/{{ env }}\"");
    let keyed = EnvFingerprinter::new(Some(SecretString::new("k")));
    let big = "x".repeat(48 * 1024 + 1);
    let e = kind().desired(spec(&c), &rendered(&[("PW", &big)], true), &ctx(&c, &keyed)).unwrap_err().to_string();
    assert!(e.contains("entry \"PW\": secret PW would be 49153 bytes, more than GitHub's limit of 49152 bytes"), "{e}");
    assert!(kind().desired(spec(&c), &rendered(&[("PW", &big[1..])], true), &ctx(&c, &keyed)).is_ok());
    // 99 secrets there, two more wanted: 101 > 100 for a repository.
    let items =
        kind().desired(spec(&c), &rendered(&[("PW", CANARY), ("HOST", CANARY)], true), &ctx(&c, &keyed)).unwrap();
    let observed =
        Observed { secrets: (0..99).map(|i| secret(&format!("HAND_{i}"), "t")).collect(), ..Default::default() };
    let p = plan_of(&c, &keyed, Some(items.clone()), &observed);
    assert!(p.changes.is_empty(), "{:?}", p.changes);
    let e = p.errors[0].1.to_string();
    assert!(e.contains("would hold 101 secrets, more than GitHub's limit of 100 per repository"), "{e}");
    let observed = Observed { secrets: (0..98).map(|i| secret(&format!("HAND_{i}"), "t")).collect(), ..observed };
    assert!(plan_of(&c, &keyed, Some(items), &observed).errors.is_empty(), "exactly 100 is fine");
}

/// The client's clock, moved by the waits it asks for instead of sleeping.
#[derive(Default)]
struct FakeClock {
    slept: std::sync::Mutex<Vec<std::time::Duration>>,
}

const EPOCH: u64 = 1_767_225_600;

impl ci::Clock for FakeClock {
    fn now(&self) -> std::time::Duration {
        self.slept.lock().unwrap().iter().sum()
    }

    fn unix_now(&self) -> u64 {
        EPOCH + self.now().as_secs()
    }

    fn sleep(&self, wait: std::time::Duration) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.slept.lock().unwrap().push(wait);
        Box::pin(async {})
    }
}

/// GitHub's REST docs: a secondary rate limit answered without
/// `retry-after` (and without `x-ratelimit-remaining: 0`) is waited out
/// for at least a minute; the primary limit until `x-ratelimit-reset`.
#[tokio::test]
async fn rate_limits_without_retry_after_wait_a_minute_or_until_the_reset() {
    use kube_emulator::github::Limit;
    let gh = kube_emulator::GithubEmulator::start();
    gh.rate_limit_next(&[Limit::SecondaryWithoutRetryAfter, Limit::PrimaryExhausted { reset_unix: EPOCH + 60 + 30 }]);
    let clock = Arc::new(FakeClock::default());
    let client = ci::Client::new(ci::Retry::default()).with_clock(clock.clone());
    let scope = Scope::Repo { owner: "acme".into(), repo: "app".into() };
    let token = SecretString::new("t");
    let url = gh.url();
    let api = api::Api::new(&client, &url, &scope, &token, "GitHub repository acme/app".into());
    assert!(api.list_secrets().await.unwrap().is_empty());
    let waits: Vec<u64> = clock.slept.lock().unwrap().iter().map(|d| d.as_secs()).collect();
    assert_eq!(waits, [60, 30], "a minute, then until the reset");
    let statuses: Vec<u16> = gh.request_log().iter().map(|r| r.status.unwrap_or(0)).collect();
    assert_eq!(statuses, [403, 403, 200]);
    // Repeated secondary limits wait longer each time, within the deadline.
    gh.reset_requests();
    gh.rate_limit_next(&[Limit::SecondaryWithoutRetryAfter; 3]);
    let clock = Arc::new(FakeClock::default());
    let client = ci::Client::new(ci::Retry::default()).with_clock(clock.clone());
    let api = api::Api::new(&client, &url, &scope, &token, "GitHub repository acme/app".into());
    let e = api.list_secrets().await.unwrap_err().to_string();
    assert!(e.contains("rate limited (HTTP 403, retry after 120 s); gave up after 2 attempt(s)"), "{e}");
    assert_eq!(clock.slept.lock().unwrap().len(), 1, "a 120 s wait does not fit in what is left of 120 s");
}

/// GitHub's PUT creates *or replaces* a secret: one made by someone after
/// the pass listed the scope is not written over (the names are listed
/// again right before the first create).
#[tokio::test]
async fn a_secret_made_between_plan_and_apply_is_not_written_over() {
    let github = kube_emulator::GithubEmulator::start();
    let c = config(&format!("repo = \"acme/{{{{ env }}}}\"\napi_url = \"{}\"\ntoken_env = \"HOME\"", github.url()));
    let keyed = EnvFingerprinter::new(Some(SecretString::new("k")));
    let items = kind().desired(spec(&c), &rendered(&[("PW", CANARY)], true), &ctx(&c, &keyed)).unwrap();
    let p = plan_of(&c, &keyed, Some(items), &Observed::default());
    assert_eq!(p.changes[0].change.action, Action::Create);
    let repo = kube_emulator::GithubScope::repo("acme", "prod");
    github.put_secret(&repo, "PW", b"made-by-hand-meanwhile");
    let dir = tempfile::tempdir().unwrap();
    let kind = GithubKind::new(ci::Client::new(ci::Retry::default()), Arc::new(StateStore::Dir(dir.path().into())));
    let dest = GithubKind::dest_of(spec(&c), "prod");
    let applied = kind.apply(&dest, p.changes, &ctx(&c, &keyed)).await;
    let e = applied[0].result.as_ref().unwrap_err().to_string();
    assert!(e.contains("secret PW exists but cfgsync has no record of writing it"), "{e}");
    assert_eq!(github.secret_plaintext(&repo, "PW").as_deref(), Some("made-by-hand-meanwhile"));
    assert_eq!(github.requests().writes(), 0, "{:?}", github.request_log());
}

/// An item is recorded before it is created: when the record cannot be
/// saved after the write (the store failed meanwhile), the next pass still
/// knows the item as this instance's, instead of refusing it as someone
/// else's for good.
#[tokio::test]
async fn an_item_is_recorded_before_it_is_created() {
    let github = kube_emulator::GithubEmulator::start();
    let c = config(&format!("repo = \"acme/{{{{ env }}}}\"\napi_url = \"{}\"\ntoken_env = \"HOME\"", github.url()));
    let keyed = EnvFingerprinter::new(None);
    let items = kind().desired(spec(&c), &rendered(&[("HOST", "db")], false), &ctx(&c, &keyed)).unwrap();
    let p = plan_of(&c, &keyed, Some(items.clone()), &Observed::default());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let store = Arc::new(StateStore::Dir(state.clone()));
    let kind = GithubKind::new(ci::Client::new(ci::Retry::default()), store.clone());
    let dest = GithubKind::dest_of(spec(&c), "prod");
    // The create is answered late; meanwhile the store breaks.
    github.set_fault_on(
        &kube_emulator::Verb::WRITES,
        kube_emulator::Fault::Latency(std::time::Duration::from_millis(500)),
    );
    let applying = async { kind.apply(&dest, p.changes, &ctx(&c, &keyed)).await };
    let breaking = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while github.requests().writes() == 0 {
            assert!(std::time::Instant::now() < deadline, "the create was never sent");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        std::fs::rename(&state, dir.path().join("state.aside")).unwrap();
        std::fs::write(&state, "not a directory").unwrap();
    };
    let (applied, ()) = tokio::join!(applying, breaking);
    let e = applied[0].result.as_ref().unwrap_err().to_string();
    assert!(e.starts_with("state "), "the save after the write failed: {e}");
    assert_eq!(github.variable(&kube_emulator::GithubScope::repo("acme", "prod"), "HOST").unwrap().value, "db");
    std::fs::remove_file(&state).unwrap();
    std::fs::rename(dir.path().join("state.aside"), &state).unwrap();
    let record = store.load(&dest.state_key("team-a", "prod")).await.unwrap();
    assert!(record.items.contains_key("variable/HOST"), "{record:?}");
    let live = api::LiveVariable {
        name: "HOST".into(),
        value: Content::plain("db"),
        updated_at: "2026-01-01T00:00:00Z".into(),
        visibility: None,
    };
    let next =
        plan_of(&c, &keyed, Some(items), &Observed { variables: vec![live], state: record, ..Default::default() });
    assert!(next.errors.is_empty(), "{:?}", next.errors.iter().map(|e| e.1.to_string()).collect::<Vec<_>>());
    assert!(!next.needs_write());
}
