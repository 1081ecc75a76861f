//! The GitLab kind's pure parts: desired variables, the plan of one
//! project (ownership, drift, hidden values, prune), by tables.

use std::collections::BTreeMap;

use super::*;
use crate::config::{self, Config};
use crate::fingerprint::EnvFingerprinter;
use crate::secret::SecretString;
use crate::targets::Registered;
use crate::targets::ci::test_support::rendered;

const CANARY: &str = "CANARY-91ab-gitlab";

fn config(target: &str) -> Config {
    let text = format!(
        "instance = \"team-a\"\n[files]\n[envs.prod]\n[envs.staging]\n\n[[output]]\nname = \"api\"\n[output.entries]\nPW = \"x\"\nHOST = \"y\"\n[[output.target]]\nkind = \"gitlab\"\n{target}\n"
    );
    config::parse(std::path::Path::new("/cfg/cfgsync.toml"), &text, &BTreeMap::<String, String>::new())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn problems(target: &str) -> String {
    let text = format!(
        "instance = \"team-a\"\n[files]\n[envs.prod]\n[envs.staging]\n\n[[output]]\nname = \"api\"\n[output.entries]\npw = \"x\"\nhost = \"y\"\n[[output.target]]\nkind = \"gitlab\"\n{target}\n"
    );
    match config::parse(std::path::Path::new("/cfg/cfgsync.toml"), &text, &BTreeMap::<String, String>::new()) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

fn spec(c: &Config) -> &GitlabTarget {
    GitlabKind::spec(&c.outputs[0].targets[0].kind).unwrap()
}

fn ctx<'a>(c: &'a Config, keyed: &'a EnvFingerprinter, prune: bool) -> Ctx<'a> {
    Ctx { revision: Some(7), prune, ..Ctx::new(c, "prod", keyed) }
}

fn kind() -> GitlabKind {
    GitlabKind::new(ci::Client::new(ci::Retry::default()), Arc::new(StateStore::Dir("/nonexistent".into())))
}

fn live_of(v: &DesiredVar) -> api::LiveVariable {
    api::LiveVariable {
        key: v.key.clone(),
        value: (!v.hidden).then(|| Content::new(v.value.expose(), v.masked)),
        variable_type: v.variable_type.clone(),
        protected: v.protected,
        masked: v.masked,
        hidden: v.hidden,
        raw: v.raw,
        environment_scope: v.environment_scope.clone(),
        description: Some(v.description.clone()),
    }
}

fn plan_of(
    c: &Config,
    keyed: &EnvFingerprinter,
    items: Option<Vec<DesiredVar>>,
    observed: &Observed,
    prune: bool,
) -> DestPlan<Op> {
    let k = kind();
    let s = spec(c);
    let ctx = ctx(c, keyed, prune);
    let dest = GitlabKind::dest_of(s, "prod");
    let claims = vec![Claim { slot: Slot::Target { output: 0, target: 0 }, spec: s, items }];
    k.plan(&dest, claims, observed, &ctx)
}

fn actions(p: &DestPlan<Op>) -> Vec<(String, Action)> {
    p.changes.iter().map(|c| (c.change.address.rsplit(": ").next().unwrap().to_owned(), c.change.action)).collect()
}

#[test]
fn config_renders_keys_scopes_and_refuses_what_gitlab_would() {
    let c = config("project = \"group/{{ env }}-app\"\nkey = \"APP_{{ name }}\"");
    let s = spec(&c);
    let a = &s.addresses["prod"];
    assert_eq!(a.owner, Owner::Project("group/prod-app".into()));
    assert_eq!(a.environment_scope, "prod");
    assert_eq!(a.keys["PW"], "APP_PW");
    assert_eq!(
        (s.url.as_str(), s.token_env.as_str(), s.raw, s.hidden),
        ("https://gitlab.com", "GITLAB_TOKEN", None, None)
    );

    assert!(problems("project = \"g/app\"\ngroup = \"g\"").contains("exactly one of `project` and `group`"));
    assert!(problems("project = \"g/app\"\nkey = \"A-{{ name }}\"").contains("keys may only hold letters"));
    assert!(
        problems("project = \"g/app\"\nenvironment_scope = \"*\"").contains("envs prod and staging would both write")
    );
    assert!(problems("project = \"g/app\"\nurl = \"http://gitlab.example.com\"").contains("unencrypted"));
    assert!(problems("project = \"/g/app\"").contains("is not a GitLab path"));
    assert!(problems("group = \"g\"\ntoken_env = \"1X\"").contains("token_env"));
    assert!(problems("project = \"g/app\"\nkey = \"K\"").contains("would both be GitLab variable K"));
    assert_eq!(problems("project = \"g/app\""), "", "lower-case keys are fine in GitLab");
    assert_eq!(problems("project = \"g/app\"\nsecret = 1").lines().count(), 1, "unknown fields are refused");
}

#[test]
fn masking_follows_gitlab() {
    assert_eq!(mask_problem("abcdefgh", true), None);
    assert_eq!(mask_problem("ab$cd%ef!", true), None, "raw values may hold any non-space");
    assert!(mask_problem("ab$cd%ef!", false).is_some());
    assert_eq!(mask_problem("short", true), Some("shorter than 8 characters"));
    assert_eq!(mask_problem("two\nlines!!", true), Some("it has a line break"));
    assert_eq!(mask_problem("has space in it", true), Some("it has white space"));
}

#[test]
fn markers_round_trip() {
    let m = marker("team-a", "prod", "api");
    assert_eq!(parse_marker(Some(&m)), Some(("team-a", "prod", "api")));
    assert_eq!(parse_marker(Some("made by hand")), None);
    assert_eq!(parse_marker(None), None);
}

#[test]
fn unmaskable_secrets_are_refused_naming_the_entry_and_never_the_value() {
    let c = config("project = \"g/app\"");
    let keyed = EnvFingerprinter::new(Some(SecretString::new("k")));
    let e = kind().desired(spec(&c), &rendered(&[("PW", "CANARY\nsecond line")], true), &ctx(&c, &keyed, true));
    let text = e.expect_err("refused").to_string();
    assert!(text.contains("entry \"PW\"") && text.contains("line break"), "{text}");
    assert!(!text.contains("CANARY"), "{text}");
    // The same value in an output that read no secret is a file variable.
    let vars = kind().desired(spec(&c), &rendered(&[("PW", "a\nb")], false), &ctx(&c, &keyed, true)).unwrap();
    assert_eq!((vars[0].variable_type.as_str(), vars[0].masked), ("file", false));
    // No key: no fingerprint for secret content.
    let none = EnvFingerprinter::new(None);
    let e = kind().desired(spec(&c), &rendered(&[("PW", CANARY)], true), &ctx(&c, &none, true));
    assert!(e.err().unwrap().to_string().contains("fingerprint key"));
}

#[test]
fn create_unchanged_update_drift() {
    let c = config("project = \"g/app\"\nprotected = true");
    let keyed = EnvFingerprinter::new(Some(SecretString::new("k")));
    let ctx = ctx(&c, &keyed, true);
    let want = kind().desired(spec(&c), &rendered(&[("PW", CANARY)], true), &ctx).unwrap();
    let v = &want[0];
    assert!(v.masked && v.protected && !v.hidden);
    assert_eq!(v.description, "managed by cfgsync instance team-a, env prod, output api");

    let empty = Observed::default();
    let p = plan_of(&c, &keyed, Some(want.clone()), &empty, true);
    assert_eq!(actions(&p), [("PW (environment scope prod)".into(), Action::Create)]);
    assert!(p.changes[0].change.values.is_empty(), "secret: no values shown");

    let mut state = DestState::default();
    state.items.insert(v.id(), v.record());
    let observed = Observed { variables: vec![live_of(v)], state: state.clone(), skipped: false };
    let p = plan_of(&c, &keyed, Some(want.clone()), &observed, true);
    assert_eq!(p.changes[0].change.action, Action::Unchanged);
    assert!(!p.needs_write());

    // Edited in GitLab (value, or a flag) while the source stayed: drift.
    for edit in [
        |l: &mut api::LiveVariable| l.value = Some(Content::secret("hand-edited")),
        |l: &mut api::LiveVariable| l.protected = false,
        |l: &mut api::LiveVariable| l.masked = false,
    ] {
        let mut live = live_of(v);
        edit(&mut live);
        let observed = Observed { variables: vec![live], state: state.clone(), skipped: false };
        let p = plan_of(&c, &keyed, Some(want.clone()), &observed, true);
        assert_eq!(p.changes[0].change.action, Action::Drift);
    }
    // The source changed: update.
    let newer = kind().desired(spec(&c), &rendered(&[("PW", "CANARY-new-value")], true), &ctx).unwrap();
    let p = plan_of(&c, &keyed, Some(newer), &observed, true);
    assert_eq!(p.changes[0].change.action, Action::Update);
    assert_eq!(p.changes[0].change.entries, ["PW"]);
}

#[test]
fn hidden_values_are_judged_by_the_record() {
    let c = config("project = \"g/app\"\nhidden = true");
    let keyed = EnvFingerprinter::new(Some(SecretString::new("k")));
    let ctx = ctx(&c, &keyed, true);
    let want = kind().desired(spec(&c), &rendered(&[("PW", CANARY)], true), &ctx).unwrap();
    let v = &want[0];
    assert!(v.hidden && v.masked);
    let live = live_of(v);
    assert_eq!(live.value, None);
    // No record: written to be sure.
    let observed = Observed { variables: vec![live.clone()], state: DestState::default(), skipped: false };
    let p = plan_of(&c, &keyed, Some(want.clone()), &observed, true);
    assert_eq!(p.changes[0].change.action, Action::Update);
    assert!(p.changes[0].change.notes.iter().any(|n| n.contains("no record")), "{:?}", p.changes[0].change.notes);
    // Recorded: unchanged.
    let mut state = DestState::default();
    state.items.insert(v.id(), v.record());
    let observed = Observed { variables: vec![live.clone()], state, skipped: false };
    let p = plan_of(&c, &keyed, Some(want.clone()), &observed, true);
    assert_eq!(p.changes[0].change.action, Action::Unchanged);
    // A visible variable that must become hidden: deleted and created again.
    let mut visible = live;
    visible.hidden = false;
    visible.value = Some(Content::secret(CANARY));
    let observed = Observed { variables: vec![visible], state: DestState::default(), skipped: false };
    let p = plan_of(&c, &keyed, Some(want), &observed, true);
    assert!(matches!(p.changes[0].op.what, OpKind::Recreate(_)));
}

#[test]
fn only_own_variables_are_written_or_pruned() {
    let c = config("project = \"g/app\"");
    let keyed = EnvFingerprinter::new(None);
    let ctx = ctx(&c, &keyed, true);
    let want = kind().desired(spec(&c), &rendered(&[("HOST", "db")], false), &ctx).unwrap();
    let mut other = live_of(&want[0]);
    other.description = Some(marker("team-b", "prod", "api"));
    let observed = Observed { variables: vec![other], ..Default::default() };
    let p = plan_of(&c, &keyed, Some(want.clone()), &observed, true);
    assert!(p.changes.is_empty());
    let e = p.errors[0].1.to_string();
    assert!(e.contains("is written by cfgsync instance \"team-b\", not this one (\"team-a\")"), "{e}");
    assert!(e.contains("to hand it over") && e.contains("never deleted"), "{e}");

    let mut hand = live_of(&want[0]);
    hand.description = None;
    let observed = Observed { variables: vec![hand], ..Default::default() };
    let p = plan_of(&c, &keyed, Some(want.clone()), &observed, true);
    let e = p.errors[0].1.to_string();
    assert!(e.contains("not written by cfgsync"), "{e}");
    assert!(e.contains("`cfgsync import --adopt` (here: `cfgsync import --env prod gitlab:g/app --adopt`)"), "{e}");
    // Unless the record says cfgsync wrote it: a cleared description is drift.
    let mut state = DestState::default();
    state.items.insert(want[0].id(), want[0].record());
    let observed = Observed { variables: observed.variables, state, skipped: false };
    let p = plan_of(&c, &keyed, Some(want.clone()), &observed, true);
    assert!(p.errors.is_empty());
    assert_eq!(p.changes[0].change.action, Action::Drift);

    // Prune: ours for this env and unclaimed only; PW is claimed by the
    // target even though it did not render here.
    let var = |key: &str, scope: &str, description: Option<String>| api::LiveVariable {
        key: key.into(),
        value: Some(Content::plain("v")),
        variable_type: "env_var".into(),
        protected: false,
        masked: false,
        hidden: false,
        raw: true,
        environment_scope: scope.into(),
        description,
    };
    let mine = || Some(marker("team-a", "prod", "old"));
    let variables = vec![
        var("OLD", "prod", mine()),
        var("PW", "prod", mine()),
        var("OTHER_ENV", "staging", Some(marker("team-a", "staging", "old"))),
        var("THEIRS", "prod", Some(marker("team-b", "prod", "old"))),
        var("HAND", "prod", None),
        var("A1", "prod", mine()),
        var("A2", "prod", mine()),
        var("A3", "prod", mine()),
        var("A4", "prod", mine()),
        var("A5", "prod", mine()),
    ];
    // What this instance recorded writing, as it wrote it.
    let mut state = DestState::default();
    for v in &variables {
        let written = Record {
            fingerprint: keyed.fingerprint([(&v.key, b"v".as_slice())], false).unwrap(),
            output: "old".into(),
            ..Default::default()
        };
        state.items.insert(item_id(&v.key, &v.environment_scope), written);
    }
    let observed = Observed { variables, state, skipped: false };
    let p = plan_of(&c, &keyed, Some(want.clone()), &observed, false);
    assert!(p.changes.iter().all(|c| c.change.action != Action::Delete), "no prune unless allowed");
    let p = plan_of(&c, &keyed, Some(want.clone()), &observed, true);
    assert!(
        p.errors
            .iter()
            .any(|(_, e)| matches!(e, TargetError::MassPrune(crate::plan::MassPrune { deletes: 6, total: 7, .. })))
    );
    let few = Observed {
        variables: observed.variables.iter().filter(|v| !v.key.starts_with('A')).cloned().collect(),
        state: observed.state.clone(),
        skipped: false,
    };
    let p = plan_of(&c, &keyed, Some(want.clone()), &few, true);
    let deletes: Vec<_> =
        p.changes.iter().filter(|c| c.change.action == Action::Delete).map(|c| c.change.address.clone()).collect();
    assert_eq!(deletes, ["GitLab project g/app: OLD (environment scope prod)"]);

    // Marked but not recorded (copied by hand, or a record lost): never
    // deleted. Recorded but changed since: not deleted, and said so.
    let mut unrecorded = few.state.clone();
    unrecorded.items.remove("OLD@prod");
    let p = plan_of(&c, &keyed, Some(want.clone()), &Observed { state: unrecorded, ..few.clone() }, true);
    assert!(p.changes.iter().all(|c| c.change.action != Action::Delete) && p.errors.is_empty());
    for (edit, why) in [
        (
            Box::new(|v: &mut api::LiveVariable| v.value = Some(Content::plain("edited"))) as Box<dyn Fn(&mut _)>,
            "its value changed",
        ),
        (Box::new(|v: &mut api::LiveVariable| v.protected = true), "its flags changed (protected false → true)"),
    ] {
        let mut edited = few.clone();
        edit(edited.variables.iter_mut().find(|v| v.key == "OLD").unwrap());
        let mut state = edited.state.clone();
        state.items.get_mut("OLD@prod").unwrap().attributes.insert("protected".into(), "false".into());
        let p = plan_of(&c, &keyed, Some(want.clone()), &Observed { state, ..edited }, true);
        assert!(p.changes.iter().all(|c| c.change.action != Action::Delete), "{why}");
        let errors: Vec<String> = p.errors.iter().map(|(_, e)| e.to_string()).collect();
        assert_eq!(
            errors,
            [format!(
                "GitLab project g/app: variable OLD (environment scope prod) is not deleted: {why} since cfgsync wrote it; delete it by hand if it is not wanted any more"
            )]
        );
    }
}

/// Issue 15, item 4: what `import --adopt` recorded of a variable's flags
/// is kept where the target's config says nothing, and a pass that would
/// change a flag says what that changes, in words.
#[test]
fn adopted_flags_are_kept_and_flag_changes_are_said_in_words() {
    let c = config("project = \"g/app\"");
    let keyed = EnvFingerprinter::new(None);
    let ctx = ctx(&c, &keyed, true);
    let want = kind().desired(spec(&c), &rendered(&[("HOST", "pre-$CI_COMMIT_SHA")], false), &ctx).unwrap();
    let hand = api::LiveVariable {
        key: "HOST".into(),
        value: Some(Content::plain("pre-$CI_COMMIT_SHA")),
        variable_type: "file".into(),
        protected: true,
        masked: false,
        hidden: false,
        raw: false,
        environment_scope: "prod".into(),
        description: None,
    };
    let adopted = Record {
        fingerprint: ci::ADOPTED_FINGERPRINT.into(),
        adopted: [("protected", "true"), ("raw", "false"), ("variable_type", "file")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ..Default::default()
    };
    let mut state = DestState::default();
    state.items.insert("HOST@prod".into(), adopted);
    let observed = Observed { variables: vec![hand.clone()], state, skipped: false };
    let p = plan_of(&c, &keyed, Some(want.clone()), &observed, true);
    let change = &p.changes[0].change;
    assert_eq!(change.action, Action::Update, "{change:?}");
    assert!(
        change
            .notes
            .iter()
            .all(|n| !n.starts_with("protected") && !n.starts_with("raw") && !n.starts_with("variable_type")),
        "only the description changes: {:?}",
        change.notes
    );
    let OpKind::Update(v) = &p.changes[0].op.what else { panic!("an update") };
    assert_eq!((v.protected, v.raw, v.variable_type.as_str()), (true, false, "file"));
    // Recorded with the flags kept, so the next pass is quiet.
    let r = v.record();
    assert_eq!(r.adopted["raw"], "false");
    let mut after = hand.clone();
    after.description = Some(v.description.clone());
    let mut state = DestState::default();
    state.items.insert("HOST@prod".into(), r);
    let p = plan_of(&c, &keyed, Some(want), &Observed { variables: vec![after.clone()], state, skipped: false }, true);
    assert!(!p.needs_write(), "{:?}", p.changes.iter().map(|c| &c.change).collect::<Vec<_>>());

    // A config that sets the flags wins, and the plan says what it means.
    let c = config("project = \"g/app\"\nprotected = false\nraw = true");
    let want = kind().desired(spec(&c), &rendered(&[("HOST", "pre-$CI_COMMIT_SHA")], false), &ctx).unwrap();
    let mut state = DestState::default();
    state.items.insert("HOST@prod".into(), want[0].record());
    let p = plan_of(&c, &keyed, Some(want), &Observed { variables: vec![after], state, skipped: false }, true);
    let notes = &p.changes[0].change.notes;
    for note in [
        "protected: true → false (exposes it to unprotected branches and tags)",
        "raw: false → true (stops expanding $ references in its value)",
        "variable_type: file → env_var (jobs get the value itself, not the path of a file holding it)",
    ] {
        assert!(notes.iter().any(|n| n == note), "{note}: {notes:?}");
    }
}

/// Issue 15, item 6: a value GitLab masks, or that cfgsync wrote from a
/// secret, is never shown as the old value, even when the new one is plain.
#[test]
fn a_masked_or_once_secret_old_value_is_never_shown() {
    let c = config("project = \"g/app\"");
    let keyed = EnvFingerprinter::new(Some(SecretString::new("k")));
    let ctx = ctx(&c, &keyed, true);
    let want = kind().desired(spec(&c), &rendered(&[("HOST", "now-plain")], false), &ctx).unwrap();
    let mut live = live_of(&want[0]);
    live.value = Some(Content::new(CANARY, true));
    live.masked = true;
    let mut state = DestState::default();
    state.items.insert(
        want[0].id(),
        Record { fingerprint: "hmac-sha256:old".into(), output: "api".into(), ..Default::default() },
    );
    let p = plan_of(
        &c,
        &keyed,
        Some(want.clone()),
        &Observed { variables: vec![live.clone()], state: state.clone(), skipped: false },
        true,
    );
    let shown = format!("{:?}", p.changes[0].change);
    assert!(!shown.contains(CANARY), "{shown}");
    assert_eq!(p.changes[0].change.values, ["HOST: (secret) → \"now-plain\""]);
    assert!(!format!("{live:?}").contains(CANARY), "Debug of a read-back value redacts it");
    // Unmasked by hand since, but cfgsync wrote it from a secret: still secret.
    live.masked = false;
    live.value = Some(Content::plain(CANARY));
    let p = plan_of(&c, &keyed, Some(want), &Observed { variables: vec![live], state, skipped: false }, true);
    assert!(!format!("{:?}", p.changes[0].change).contains(CANARY));
}

/// Issue 15, item 5: GitLab Free keeps one `*` group variable whatever
/// scope is asked for. A pass that finds this env's unrecorded `*`
/// variable where it wants a scoped one refuses, creating and deleting nothing.
#[test]
fn gitlab_free_group_variables_are_refused_not_flipped() {
    let c = config("group = \"platform\"");
    let keyed = EnvFingerprinter::new(None);
    let ctx = ctx(&c, &keyed, true);
    let want = kind().desired(spec(&c), &rendered(&[("HOST", "db")], false), &ctx).unwrap();
    let mut any = live_of(&want[0]);
    any.environment_scope = "*".into();
    let observed = Observed { variables: vec![any], ..Default::default() };
    let p = plan_of(&c, &keyed, Some(want.clone()), &observed, true);
    assert!(
        p.changes.is_empty(),
        "no create, no delete: {:?}",
        p.changes.iter().map(|c| &c.change).collect::<Vec<_>>()
    );
    let e = p.errors[0].1.to_string();
    assert!(e.contains("GitLab Free ignores environment_scope on group variables"), "{e}");
    assert!(e.contains("use a project target, or environment_scope = \"*\" with one env"), "{e}");
    // Recorded `*` (the config used scope `*` before, on Premium): a
    // change of scope, planned as a create and a prune.
    let mut state = DestState::default();
    state
        .items
        .insert("HOST@*".into(), Record { fingerprint: "sha256:x".into(), output: "api".into(), ..Default::default() });
    let p = plan_of(&c, &keyed, Some(want), &Observed { state, ..observed }, true);
    assert!(p.errors.iter().all(|(_, e)| !e.to_string().contains("GitLab Free")));
    assert_eq!(p.changes[0].change.action, Action::Create);
}

#[test]
fn a_destination_nothing_rendered_for_is_not_read() {
    let c = config("project = \"g/app\"");
    let keyed = EnvFingerprinter::new(None);
    let mut need = Need::default();
    let dest = kind().locate(spec(&c), None, &ctx(&c, &keyed, true), &mut need);
    assert!(!need.0);
    let observed = futures_util::FutureExt::now_or_never(kind().observe(&dest, &need, &ctx(&c, &keyed, true)))
        .expect("no request, so no waiting")
        .unwrap();
    assert!(observed.skipped);
}

fn emulated_api<'a>(client: &'a ci::Client, url: &'a str, owner: &'a Owner, token: &SecretString) -> api::Api<'a> {
    api::Api::new(client, url, owner, token, format!("GitLab {owner}"))
}

/// A group's PUT whose filter matches nothing updates the first variable
/// of that key, whatever its scope: an update of a variable deleted since
/// the list was read must not be sent.
#[tokio::test]
async fn a_group_update_never_falls_back_to_another_scopes_variable() {
    let gitlab = kube_emulator::GitlabEmulator::start();
    let group = kube_emulator::GitlabOwner::group("platform");
    let mut theirs = kube_emulator::GitlabVariable::new("HOST", "staging-by-hand");
    theirs.environment_scope = "staging".into();
    gitlab.put_variable(&group, theirs);
    let client = ci::Client::new(ci::Retry::default());
    let (url, owner, token) = (gitlab.url(), Owner::Group("platform".into()), SecretString::new("t"));
    let api = emulated_api(&client, &url, &owner, &token);
    let body = api::Body {
        key: "HOST",
        value: "prod-value",
        variable_type: "env_var",
        protected: false,
        masked: false,
        hidden: false,
        raw: true,
        environment_scope: "prod",
        description: "managed by cfgsync instance team-a, env prod, output web",
        secret: false,
    };
    let e = api.update(&body).await.unwrap_err().to_string();
    assert!(e.contains("it was deleted since the list was read"), "{e}");
    assert_eq!(gitlab.variable(&group, "HOST", "staging").unwrap().value, "staging-by-hand");
    let writes: Vec<String> =
        gitlab.request_log().into_iter().filter(|r| r.method != "GET").map(|r| r.method).collect();
    assert!(writes.is_empty(), "{writes:?}");
}

/// An adopted hidden variable stays hidden (its value is never made
/// readable behind the config's back) and its value, which GitLab never
/// shows, is written once; a config that unhides it says what that means.
#[test]
fn an_adopted_hidden_variable_stays_hidden() {
    let c = config("project = \"g/app\"");
    let keyed = EnvFingerprinter::new(Some(SecretString::new("k")));
    let ctx = ctx(&c, &keyed, true);
    let want = kind().desired(spec(&c), &rendered(&[("PW", CANARY)], true), &ctx).unwrap();
    assert!(!want[0].hidden, "the config does not ask for hidden");
    let mut live = live_of(&want[0]);
    (live.hidden, live.value, live.description) = (true, None, None);
    let mut state = DestState::default();
    let adopted = Record {
        fingerprint: ci::ADOPTED_FINGERPRINT.into(),
        adopted: [("hidden", "true"), ("protected", "false"), ("raw", "true"), ("variable_type", "env_var")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ..Default::default()
    };
    state.items.insert(want[0].id(), adopted);
    let observed = Observed { variables: vec![live], state, skipped: false };
    let p = plan_of(&c, &keyed, Some(want), &observed, true);
    assert!(matches!(&p.changes[0].op.what, OpKind::Update(v) if v.hidden), "kept hidden, not recreated");
    assert!(
        p.changes[0].change.notes.iter().any(|n| n.contains("adopted hidden variable")),
        "{:?}",
        p.changes[0].change.notes
    );
    let c = config("project = \"g/app\"\nhidden = false");
    let want = kind().desired(spec(&c), &rendered(&[("PW", CANARY)], true), &ctx).unwrap();
    let p = plan_of(&c, &keyed, Some(want), &observed, true);
    assert!(matches!(&p.changes[0].op.what, OpKind::Recreate(_)));
    assert!(
        p.changes[0]
            .change
            .notes
            .iter()
            .any(|n| n.starts_with("hidden: true → false (its value becomes readable in GitLab)")),
        "{:?}",
        p.changes[0].change.notes
    );
}
