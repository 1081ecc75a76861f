//! GitLab and GitHub targets through the real binary, against the GitLab
//! and GitHub emulators of kube-emulator (in-process, over HTTP).

use std::time::Duration;

use kube_emulator::{Fault, GithubEmulator, GithubScope, GitlabEmulator, GitlabOwner, Verb};
use serde_json::Value;

use crate::support::{Etcd, Project, Run, Vault, server_config};

const PASSWORD: &str = "CANARY-4e1d-ci-password";
const GITLAB_TOKEN: &str = "CANARY-gitlab-token-9f3a";
const GITHUB_TOKEN: &str = "CANARY-github-token-77b0";

/// A tainted output `api` (a secret and a key) and an untainted `web` (a
/// one-line and a multi-line value), each to a GitLab project and a GitHub
/// repository environment.
fn outputs(gitlab: &str, github: &str, gitlab_extra: &str) -> String {
    format!(
        r#"
[[output]]
name = "api"
[output.entries]
DB_PASSWORD = "{{{{ secret(path='api/db', field='password') }}}}"
DB_USER = "{{{{ key(name='api/db_user') }}}}"
[[output.target]]
kind = "gitlab"
url = "{gitlab}"
project = "group/app"
key = "APP_{{{{ name }}}}"
{gitlab_extra}
[[output.target]]
kind = "github"
api_url = "{github}"
repo = "acme/app"
environment = "{{{{ env }}}}"

[[output]]
name = "web"
[output.entries]
HOST = "{{{{ key(name='web/host') }}}}"
CERT = "{{{{ key(name='web/cert') }}}}"
[[output.target]]
kind = "gitlab"
url = "{gitlab}"
project = "group/app"
key = "APP_{{{{ name }}}}"
[[output.target]]
kind = "github"
api_url = "{github}"
repo = "acme/app"
environment = "{{{{ env }}}}"
"#
    )
}

fn source(password: &str, host: &str) -> String {
    format!(
        "[keys]\n\"api/db_user\" = \"api-user-1\"\n\"web/host\" = \"{host}\"\n\"web/cert\" = \"line one\\nline two\"\n\n[secrets.\"api/db\"]\npassword = \"{password}\"\n\n[secrets.\"cfgsync/fingerprint\"]\nkey = \"fingerprint-key-prod\"\n"
    )
}

struct Bed {
    project: Project,
    gitlab: GitlabEmulator,
    github: GithubEmulator,
}

impl Bed {
    fn new(gitlab_extra: &str) -> Bed {
        let (gitlab, github) = (GitlabEmulator::start(), GithubEmulator::start());
        github.freeze_clock(1_767_225_600);
        github.create_environment("acme", "app", "prod");
        let config = format!(
            "instance = \"team-a\"\n[files]\n[envs.prod]\n{}",
            outputs(&gitlab.url(), &github.url(), gitlab_extra)
        );
        let project =
            Project::new(&config).with_env("GITLAB_TOKEN", GITLAB_TOKEN).with_env("GITHUB_TOKEN", GITHUB_TOKEN);
        project.write("source/prod.toml", &source(PASSWORD, "web-1.internal"));
        Bed { project, gitlab, github }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.project.run(args)
    }

    fn reset(&self) {
        self.gitlab.reset_requests();
        self.github.reset_requests();
    }
}

fn app() -> GitlabOwner {
    GitlabOwner::project("group/app")
}

fn env_scope() -> GithubScope {
    GithubScope::environment("acme", "app", "prod")
}

fn ok(run: Run) -> Run {
    assert_eq!(run.code, 0, "{run:?}");
    run
}

#[test]
fn first_pass_creates_every_variable_and_secret_second_pass_sends_no_write() {
    let bed = Bed::new("hidden = true");
    let run = ok(bed.run(&["reconcile", "--once"]));
    assert!(!run.all().contains(PASSWORD), "{run:?}");

    // GitLab: secrets masked and hidden, others plain; multi-line is a file.
    let pw = bed.gitlab.variable(&app(), "APP_DB_PASSWORD", "prod").expect("created");
    assert_eq!(pw.value, PASSWORD);
    assert!(pw.masked && pw.hidden && pw.raw && !pw.protected, "{pw:?}");
    assert_eq!(pw.description.as_deref(), Some("managed by cfgsync instance team-a, env prod, output api"));
    let user = bed.gitlab.variable(&app(), "APP_DB_USER", "prod").unwrap();
    assert!(user.masked && user.hidden, "every entry of a tainted output is secret");
    let host = bed.gitlab.variable(&app(), "APP_HOST", "prod").unwrap();
    assert_eq!((host.value.as_str(), host.masked, host.variable_type.as_str()), ("web-1.internal", false, "env_var"));
    let cert = bed.gitlab.variable(&app(), "APP_CERT", "prod").unwrap();
    assert_eq!((cert.value.as_str(), cert.variable_type.as_str()), ("line one\nline two", "file"));
    assert_eq!(bed.gitlab.variables(&app()).len(), 4);

    // GitHub: secrets sealed for the environment's key, opened by the emulator.
    assert_eq!(bed.github.secret_plaintext(&env_scope(), "DB_PASSWORD").as_deref(), Some(PASSWORD));
    assert_eq!(bed.github.secret_plaintext(&env_scope(), "DB_USER").as_deref(), Some("api-user-1"));
    assert_eq!(bed.github.variable(&env_scope(), "HOST").unwrap().value, "web-1.internal");
    assert_eq!(bed.github.variable(&env_scope(), "CERT").unwrap().value, "line one\nline two");
    assert_eq!(bed.github.secret_names(&env_scope()), ["DB_PASSWORD", "DB_USER"]);
    assert!(bed.github.secret_names(&GithubScope::repo("acme", "app")).is_empty(), "environment secrets only");
    let gh = bed.github.requests();
    assert_eq!(gh.get("GET", "/repos/{owner}/{repo}/environments/{environment_name}/secrets/public-key"), 1, "{gh:?}");

    // Second pass: reads only.
    bed.reset();
    let run = ok(bed.run(&["reconcile", "--once"]));
    assert_eq!(bed.gitlab.requests().writes(), 0, "{}", bed.gitlab.requests().total());
    assert_eq!(bed.github.requests().writes(), 0);
    assert_eq!(bed.gitlab.requests().total(), 1, "one list per project and pass");
    assert_eq!(bed.github.requests().total(), 2, "one list of secrets and one of variables");
    assert!(run.stdout.contains("0 to create") || run.stdout.contains("0 created"), "{run:?}");
}

#[test]
fn out_of_band_edits_are_drift_and_are_reverted() {
    let bed = Bed::new("protected = true");
    ok(bed.run(&["reconcile", "--once"]));
    // GitLab: a value edited, a flag switched off.
    let mut host = bed.gitlab.variable(&app(), "APP_HOST", "prod").unwrap();
    host.value = "hand.example".into();
    bed.gitlab.put_variable(&app(), host);
    let mut pw = bed.gitlab.variable(&app(), "APP_DB_PASSWORD", "prod").unwrap();
    pw.protected = false;
    bed.gitlab.put_variable(&app(), pw);
    // GitHub: a secret replaced a second later (updated_at moves), a variable edited.
    bed.github.advance_clock(Duration::from_secs(2));
    bed.github.put_secret(&env_scope(), "DB_PASSWORD", b"hand-set-password");
    bed.github.put_variable(&env_scope(), "HOST", "hand.example");

    let plan = bed.run(&["plan"]);
    let drift_lines = plan.stdout.lines().filter(|l| l.contains("drift")).count();
    assert!(drift_lines >= 4, "every edit is planned as drift: {plan:?}");
    assert!(plan.stdout.contains("hand.example"), "untainted values are shown: {plan:?}");
    assert!(!plan.all().contains("hand-set-password") && !plan.all().contains(PASSWORD), "{plan:?}");

    let run = ok(bed.run(&["reconcile", "--once"]));
    assert!(run.stdout.contains("drift"), "{run:?}");
    assert_eq!(bed.gitlab.variable(&app(), "APP_HOST", "prod").unwrap().value, "web-1.internal");
    assert!(bed.gitlab.variable(&app(), "APP_DB_PASSWORD", "prod").unwrap().protected);
    assert_eq!(bed.github.secret_plaintext(&env_scope(), "DB_PASSWORD").as_deref(), Some(PASSWORD));
    assert_eq!(bed.github.variable(&env_scope(), "HOST").unwrap().value, "web-1.internal");
    // Restored and recorded: quiet again.
    bed.reset();
    ok(bed.run(&["reconcile", "--once"]));
    assert_eq!(bed.gitlab.requests().writes() + bed.github.requests().writes(), 0);
}

#[test]
fn an_unmaskable_secret_is_refused_before_any_request() {
    let gitlab = GitlabEmulator::start();
    let config = format!(
        "instance = \"ci-tests\"\n[files]\n[envs.prod]\n[[output]]\nname = \"api\"\n[output.entries]\nPIN = \"{{{{ secret(path='api/db', field='pin') }}}}\"\n[[output.target]]\nkind = \"gitlab\"\nurl = \"{}\"\nproject = \"group/app\"\n",
        gitlab.url()
    );
    let project = Project::new(&config).with_env("GITLAB_TOKEN", GITLAB_TOKEN);
    project.write(
        "source/prod.toml",
        "[secrets.\"api/db\"]\npin = \"CANARY7\"\n[secrets.\"cfgsync/fingerprint\"]\nkey = \"k\"\n",
    );
    for args in [&["plan"][..], &["reconcile", "--once"]] {
        let run = project.run(args);
        assert_ne!(run.code, 0, "{run:?}");
        assert!(run.stderr.contains("entry \"PIN\"") && run.stderr.contains("cannot mask"), "{run:?}");
        assert!(run.stderr.contains("shorter than 8 characters"), "{run:?}");
        assert!(!run.all().contains("CANARY7"), "{run:?}");
    }
    assert_eq!(gitlab.requests().total(), 0, "nothing was sent: {:?}", gitlab.request_log());
}

#[test]
fn rate_limits_are_honoured() {
    let bed = Bed::new("");
    bed.gitlab.set_fault(Fault::RateLimited { count: 2, retry_after: Duration::from_secs(1) });
    bed.github
        .set_fault_on(&Verb::WRITES, Fault::SecondaryRateLimited { count: 1, retry_after: Duration::from_secs(1) });
    let run = ok(bed.run(&["reconcile", "--once"]));
    assert!(!run.all().contains(PASSWORD));
    let statuses: Vec<u16> = bed.gitlab.request_log().iter().map(|r| r.status.unwrap_or(0)).collect();
    assert_eq!(&statuses[..3], [429, 429, 200], "the list is retried after Retry-After: {statuses:?}");
    let github: Vec<(String, u16)> = bed
        .github
        .request_log()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| (r.method.clone(), r.status.unwrap_or(0)))
        .collect();
    assert_eq!(
        github[..2],
        [("PUT".to_owned(), 403), ("PUT".to_owned(), 201)],
        "retried after Retry-After: {github:?}"
    );
    assert_eq!(bed.gitlab.variables(&app()).len(), 4);
    assert_eq!(bed.github.secret_names(&env_scope()).len(), 2);

    // A wait longer than the deadline fails at once, naming the limit.
    bed.reset();
    bed.gitlab.set_fault(Fault::RateLimited { count: 5, retry_after: Duration::from_secs(3600) });
    let run = bed.run(&["reconcile", "--once"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("rate limited (HTTP 429, retry after 3600 s)"), "{run:?}");
    assert_eq!(bed.gitlab.requests().total(), 1, "one try, no waiting an hour");
}

#[test]
fn no_secret_or_token_reaches_a_log_line_or_the_state() {
    let bed = Bed::new("hidden = true");
    let mut all = String::new();
    let trace = |args: &[&str]| {
        let mut cmd = bed.project.command(args);
        cmd.env("RUST_LOG", "trace");
        crate::support::run_output(cmd.output().unwrap())
    };
    for args in [&["plan"][..], &["reconcile", "--once"], &["--log-format", "json", "reconcile", "--once"]] {
        let run = trace(args);
        assert_eq!(run.code, 0, "{run:?}");
        all.push_str(&run.all());
    }
    bed.github.advance_clock(Duration::from_secs(2));
    bed.github.put_secret(&env_scope(), "DB_PASSWORD", b"CANARY-hand-set");
    let run = trace(&["reconcile", "--once"]);
    all.push_str(&run.all());
    assert!(all.contains("TRACE") || all.contains("\"level\":\"TRACE\""), "trace logging was on");
    assert!(all.contains("CI request"), "requests are logged (without their bodies)");
    for canary in [PASSWORD, GITLAB_TOKEN, GITHUB_TOKEN, "CANARY-hand-set"] {
        assert!(!all.contains(canary), "{canary} leaked:\n{all}");
    }
    let mut state = String::new();
    for entry in walk(&bed.project.path(".cfgsync")) {
        state.push_str(&std::fs::read_to_string(&entry).unwrap());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&entry).unwrap().permissions().mode() & 0o077, 0, "{}", entry.display());
    }
    assert!(state.contains("hmac-sha256:"), "secret fingerprints are keyed: {state}");
    assert!(!state.contains("CANARY"), "{state}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn plan_names_every_variable_and_shows_only_plain_values() {
    let bed = Bed::new("");
    let plan = ok(bed.run(&["plan"]));
    for name in ["APP_DB_PASSWORD", "APP_DB_USER", "APP_HOST", "APP_CERT", "secret DB_PASSWORD", "variable HOST"] {
        assert!(plan.stdout.contains(name), "{name}: {plan:?}");
    }
    assert!(plan.stdout.contains("web-1.internal"), "{plan:?}");
    assert!(!plan.all().contains(PASSWORD) && !plan.all().contains("api-user-1"), "{plan:?}");
    assert_eq!(bed.gitlab.requests().writes() + bed.github.requests().writes(), 0, "plan writes nothing");
    let json = ok(bed.run(&["plan", "--output", "json"]));
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    let kinds: Vec<&str> = report["envs"][0]["outputs"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["gitlab", "github"]);
}

#[test]
fn one_failing_project_fails_only_its_targets() {
    let (good, bad, github) = (GitlabEmulator::start(), GitlabEmulator::start(), GithubEmulator::start());
    let target =
        |url: String| format!("[[output.target]]\nkind = \"gitlab\"\nurl = \"{url}\"\nproject = \"group/app\"\n");
    let config = format!(
        "instance = \"ci-tests\"\n[files]\n[envs.prod]\n[[output]]\nname = \"web\"\n[output.entries]\nHOST = \"{{{{ key(name='web/host') }}}}\"\n{}{}[[output.target]]\nkind = \"github\"\napi_url = \"{}\"\nrepo = \"acme/app\"\n",
        target(good.url()),
        target(bad.url()),
        github.url()
    );
    let project = Project::new(&config).with_env("GITLAB_TOKEN", GITLAB_TOKEN).with_env("GITHUB_TOKEN", GITHUB_TOKEN);
    project.write("source/prod.toml", "[keys]\n\"web/host\" = \"web-1\"\n");
    bad.set_fault(Fault::Errors { count: 100 });
    let run = project.run(&["reconcile", "--once"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("HTTP 500"), "{run:?}");
    assert_eq!(run.stderr.matches("error:").count(), 1, "only the failing project's target: {run:?}");
    assert_eq!(good.variable(&app(), "HOST", "prod").unwrap().value, "web-1");
    assert_eq!(github.variable(&GithubScope::repo("acme", "app"), "HOST").unwrap().value, "web-1");
    assert_eq!(bad.requests().writes(), 0);
    assert_eq!(bad.requests().total(), 3, "a failing list is tried three times");
}

#[test]
fn without_a_token_nothing_is_sent_and_the_variable_is_named() {
    let gitlab = GitlabEmulator::start();
    let config = format!(
        "instance = \"ci-tests\"\n[files]\n[envs.prod]\n[[output]]\nname = \"web\"\n[output.entries]\nHOST = \"x\"\n[[output.target]]\nkind = \"gitlab\"\nurl = \"{}\"\ngroup = \"group\"\ntoken_env = \"MY_GITLAB_TOKEN\"\n",
        gitlab.url()
    );
    let project = Project::new(&config);
    project.write("source/prod.toml", "[keys]\n");
    let run = project.run(&["reconcile", "--once"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("export MY_GITLAB_TOKEN"), "{run:?}");
    assert_eq!(gitlab.requests().total(), 0);
}

/// With `[etcd]`, the record of what was written lives in etcd under the
/// env's state prefix, not in a file.
#[test]
fn with_etcd_the_record_lives_under_the_state_prefix() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    let github = GithubEmulator::start();
    github.freeze_clock(1_767_225_600);
    etcd.put("/cfgsync/prod/web/host", "web-1");
    vault.kv_put("prod/api/db", &[("password", PASSWORD)]);
    vault.kv_put("prod/cfgsync/fingerprint", &[("key", "fingerprint-key-prod")]);
    let rest = format!(
        "[envs.prod]\n[[output]]\nname = \"api\"\n[output.entries]\nDB_PASSWORD = \"{{{{ secret(path='api/db', field='password') }}}}\"\nHOST = \"{{{{ key(name='web/host') }}}}\"\n[[output.target]]\nkind = \"github\"\napi_url = \"{}\"\nrepo = \"acme/app\"\n",
        github.url()
    );
    let project = Project::new(&format!("instance = \"ci-tests\"\n{}", server_config(&etcd, &vault, &rest)))
        .with_env("GITHUB_TOKEN", GITHUB_TOKEN);
    project.write("vault-token", &vault.root_token);
    ok(project.run(&["reconcile", "--once"]));
    let repo = GithubScope::repo("acme", "app");
    assert_eq!(github.secret_plaintext(&repo, "DB_PASSWORD").as_deref(), Some(PASSWORD));
    let keys = etcd.ctl_ok(&["get", "--prefix", "--keys-only", "/cfgsync/_state/prod/github/"]);
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 1, "one record per destination: {keys}");
    let record = etcd.ctl_ok(&["get", "--prefix", "--print-value-only", "/cfgsync/_state/prod/"]);
    assert!(record.contains("secret/DB_PASSWORD") && record.contains("hmac-sha256:"), "{record}");
    assert!(!record.contains("CANARY"), "{record}");
    assert!(!project.path(".cfgsync").exists(), "no state file");
    // Drift is judged against the record in etcd.
    github.reset_requests();
    ok(project.run(&["reconcile", "--once"]));
    assert_eq!(github.requests().writes(), 0);
    github.advance_clock(Duration::from_secs(3));
    github.put_secret(&repo, "DB_PASSWORD", b"hand-set");
    let run = ok(project.run(&["reconcile", "--once"]));
    assert!(run.stdout.contains("drift"), "{run:?}");
    assert_eq!(github.secret_plaintext(&repo, "DB_PASSWORD").as_deref(), Some(PASSWORD));
}

/// A GitLab target removed from the config: its project is found again
/// through the record, and its variables are pruned — all of them only
/// with `--allow-mass-prune`; the hand-made one never.
#[test]
fn removed_targets_are_pruned_through_the_record_within_the_guard() {
    let gitlab = GitlabEmulator::start();
    let with = |gitlab_target: bool| {
        let mut text = "instance = \"team-a\"\n[files]\n[envs.prod]\n[[output]]\nname = \"keep\"\n[output.entries]\nX = \"x\"\n[[output.target]]\nkind = \"file\"\npath = \"out/keep.env\"\n".to_owned();
        if gitlab_target {
            text.push_str(&format!(
                "[[output]]\nname = \"web\"\n[output.entries]\nHOST = \"h\"\nPORT = \"p\"\n[[output.target]]\nkind = \"gitlab\"\nurl = \"{}\"\ngroup = \"platform\"\n",
                gitlab.url()
            ));
        }
        text
    };
    let project = Project::new(&with(true)).with_env("GITLAB_TOKEN", GITLAB_TOKEN);
    project.write("source/prod.toml", "[keys]\n");
    ok(project.run(&["reconcile", "--once"]));
    let group = GitlabOwner::group("platform");
    let mut hand = kube_emulator::GitlabVariable::new("HAND", "made-by-hand");
    hand.environment_scope = "prod".into();
    gitlab.put_variable(&group, hand);
    assert_eq!(gitlab.variables(&group).len(), 3);

    project.write("cfgsync.toml", &with(false));
    let run = project.run(&["reconcile", "--once"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("refusing to delete 2 of 2"), "{run:?}");
    assert_eq!(gitlab.requests().writes(), 2, "only the first pass wrote");
    let plan = ok(project.run(&["reconcile", "--once", "--dry-run", "--allow-mass-prune"]));
    assert!(plan.stdout.contains("HOST") && plan.stdout.contains("PORT") && !plan.stdout.contains("HAND"), "{plan:?}");
    ok(project.run(&["reconcile", "--once", "--allow-mass-prune"]));
    let left: Vec<String> = gitlab.variables(&group).into_iter().map(|v| v.key).collect();
    assert_eq!(left, ["HAND"]);
    // Nothing recorded any more: the next pass does not even read GitLab.
    gitlab.reset_requests();
    ok(project.run(&["reconcile", "--once"]));
    assert_eq!(gitlab.requests().total(), 0);
}

/// Lists are read to the end: with more variables than one page holds,
/// cfgsync's own (created last, so on the last page) are found, and a
/// second pass writes nothing.
#[test]
fn every_page_of_a_list_is_read() {
    let (gitlab, github) = (GitlabEmulator::start(), GithubEmulator::start());
    let repo = GithubScope::repo("acme", "app");
    for i in 0..150 {
        let mut v = kube_emulator::GitlabVariable::new(format!("HAND_{i:03}"), "x");
        v.environment_scope = "prod".into();
        gitlab.put_variable(&app(), v);
    }
    for i in 0..45 {
        github.put_variable(&repo, &format!("HAND_{i:03}"), "x");
        github.put_secret(&repo, &format!("HAND_{i:03}"), b"x");
    }
    let config = format!(
        "instance = \"ci-tests\"\n[files]\n[envs.prod]\n[[output]]\nname = \"web\"\n[output.entries]\nZZ_HOST = \"h\"\n[[output.target]]\nkind = \"gitlab\"\nurl = \"{}\"\nproject = \"group/app\"\n[[output.target]]\nkind = \"github\"\napi_url = \"{}\"\nrepo = \"acme/app\"\n[[output]]\nname = \"api\"\n[output.entries]\nZZ_PASSWORD = \"{{{{ secret(path='api/db', field='password') }}}}\"\n[[output.target]]\nkind = \"github\"\napi_url = \"{}\"\nrepo = \"acme/app\"\n",
        gitlab.url(),
        github.url(),
        github.url()
    );
    let project = Project::new(&config).with_env("GITLAB_TOKEN", GITLAB_TOKEN).with_env("GITHUB_TOKEN", GITHUB_TOKEN);
    project.write("source/prod.toml", &source(PASSWORD, "unused"));
    ok(project.run(&["reconcile", "--once"]));
    gitlab.reset_requests();
    github.reset_requests();
    ok(project.run(&["reconcile", "--once"]));
    assert_eq!(gitlab.requests().writes() + github.requests().writes(), 0);
    let pages: Vec<String> = gitlab.request_log().iter().filter_map(|r| r.query.clone()).collect();
    assert_eq!(pages, ["per_page=100&page=1", "per_page=100&page=2"], "151 variables: two pages");
    // 46 variables at 30 a page, 46 secrets at 100.
    assert_eq!(github.requests().get("GET", "/repos/{owner}/{repo}/actions/variables"), 2);
    assert_eq!(github.requests().get("GET", "/repos/{owner}/{repo}/actions/secrets"), 1);
}

/// Issue 15, item 3: a repository variable and an environment secret made
/// by hand at names cfgsync's outputs want are someone else's. cfgsync does
/// not write them, does not record them, names them with the command that
/// adopts them, and does not delete them when the outputs go away.
#[test]
fn hand_made_github_items_are_never_written_recorded_or_deleted() {
    let github = GithubEmulator::start();
    github.freeze_clock(1_767_225_600);
    let repo = GithubScope::repo("acme", "app");
    github.put_variable(&repo, "CLASH_GH", "made-by-hand");
    github.put_secret(&env_scope(), "HAND_SECRET", b"CANARY-hand-secret");
    let before = (github.variable(&repo, "CLASH_GH").unwrap(), github.secret(&env_scope(), "HAND_SECRET").unwrap());
    let url = github.url();
    let with = |clashing: bool| {
        let target = |extra: &str| {
            format!("[[output.target]]\nkind = \"github\"\napi_url = \"{url}\"\nrepo = \"acme/app\"\n{extra}\n")
        };
        let mut text = format!(
            "instance = \"team-a\"\n[files]\n[envs.prod]\n[[output]]\nname = \"keep\"\n[output.entries]\nOTHER_GH = \"x\"\n{}",
            target("")
        );
        if clashing {
            text.push_str(&format!(
                "[[output]]\nname = \"clash\"\n[output.entries]\nCLASH_GH = \"{{{{ key(name='web/host') }}}}\"\n{}[[output]]\nname = \"hand\"\n[output.entries]\nHAND_SECRET = \"{{{{ secret(path='api/db', field='password') }}}}\"\n{}",
                target(""),
                target("environment = \"{{ env }}\"")
            ));
        }
        text
    };
    let project = Project::new(&with(true)).with_env("GITHUB_TOKEN", GITHUB_TOKEN);
    project.write("source/prod.toml", &source(PASSWORD, "web-1.internal"));
    let run = project.run(&["reconcile", "--once"]);
    assert_ne!(run.code, 0, "{run:?}");
    for (what, from) in [
        ("variable CLASH_GH exists but cfgsync has no record of writing it", "github:acme/app"),
        ("secret HAND_SECRET exists but cfgsync has no record of writing it", "github-env:acme/app/prod"),
    ] {
        assert!(run.stderr.contains(what), "{what}: {run:?}");
        let adopt = format!("`cfgsync import --env prod {from} --adopt --github-url {url}`");
        assert!(run.stderr.contains(&adopt), "{adopt}: {run:?}");
    }
    assert!(!run.all().contains("CANARY"), "{run:?}");
    let touched: Vec<String> = github
        .request_log()
        .into_iter()
        .filter(|r| r.method != "GET" && (r.path.contains("CLASH_GH") || r.path.contains("HAND_SECRET")))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(touched.is_empty(), "never written: {touched:?}");
    assert_eq!(
        (github.variable(&repo, "CLASH_GH").unwrap(), github.secret(&env_scope(), "HAND_SECRET").unwrap()),
        before
    );
    assert_eq!(github.variable(&repo, "OTHER_GH").unwrap().value, "x", "the rest of the destination is written");
    let state: String = walk(&project.path(".cfgsync")).iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    assert!(state.contains("OTHER_GH") && !state.contains("CLASH_GH") && !state.contains("HAND_SECRET"), "{state}");

    // The outputs go away: what is not ours is not pruned.
    project.write("cfgsync.toml", &with(false));
    github.reset_requests();
    ok(project.run(&["reconcile", "--once"]));
    assert_eq!(github.requests().get("DELETE", "/repos/{owner}/{repo}/actions/variables/{name}"), 0);
    assert_eq!(github.requests().writes(), 0, "{}", github.requests());
    assert_eq!(
        (github.variable(&repo, "CLASH_GH").unwrap(), github.secret(&env_scope(), "HAND_SECRET").unwrap()),
        before
    );
}

/// Issue 15, item 5: without Premium, GitLab stores group variables with
/// scope `*` whatever scope is asked for. Two envs writing the same group
/// with the default scope `{{ env }}` used to alternate create, "already
/// taken", delete of the `*` variable and create again; now each pass fails
/// those targets with a clear error, and the one `*` variable is neither
/// deleted nor flipped to the other env's value.
#[test]
fn gitlab_free_group_variables_fail_clearly_and_never_flip_or_get_deleted() {
    let gitlab = GitlabEmulator::start();
    gitlab.set_free_tier(true);
    let config = format!(
        "instance = \"team-a\"\n[files]\n[envs.prod]\n[envs.staging]\n[[output]]\nname = \"web\"\n[output.entries]\nHOST = \"{{{{ key(name='web/host') }}}}\"\n[[output.target]]\nkind = \"gitlab\"\nurl = \"{}\"\ngroup = \"platform\"\n",
        gitlab.url()
    );
    let project = Project::new(&config).with_env("GITLAB_TOKEN", GITLAB_TOKEN);
    project.write("source/prod.toml", "[keys]\n\"web/host\" = \"prod.internal\"\n");
    project.write("source/staging.toml", "[keys]\n\"web/host\" = \"staging.internal\"\n");
    let group = GitlabOwner::group("platform");
    let mut seen: Option<String> = None;
    for pass in 0..3 {
        let run = project.run(&["reconcile", "--once"]);
        assert_ne!(run.code, 0, "pass {pass}: {run:?}");
        assert!(
            run.stderr.contains("GitLab Free ignores environment_scope on group variables"),
            "pass {pass}: {run:?}"
        );
        assert!(run.stderr.contains("use a project target, or environment_scope = \"*\" with one env"), "{run:?}");
        let all: Vec<(String, String)> =
            gitlab.variables(&group).into_iter().map(|v| (v.environment_scope, v.value)).collect();
        assert_eq!(all.len(), 1, "pass {pass}: one `*` variable: {all:?}");
        assert_eq!(all[0].0, "*");
        let value = seen.get_or_insert_with(|| all[0].1.clone());
        assert_eq!(&all[0].1, value, "pass {pass}: never flipped to the other env's value");
    }
    let log = gitlab.request_log();
    let changes: Vec<String> =
        log.iter().filter(|r| matches!(r.method.as_str(), "PUT" | "DELETE")).map(|r| r.path.clone()).collect();
    assert!(changes.is_empty(), "never updated or deleted: {changes:?}");
}

/// GitHub answers 404 for the secrets and variables of an environment that
/// does not exist, and does not create one on a write: the target fails,
/// saying so, and nothing is sent.
#[test]
fn a_github_environment_that_does_not_exist_fails_its_targets_and_is_not_created() {
    let github = GithubEmulator::start();
    let config = format!(
        "instance = \"team-a\"\n[files]\n[envs.prod]\n[[output]]\nname = \"web\"\n[output.entries]\nHOST = \"h\"\n[[output.target]]\nkind = \"github\"\napi_url = \"{}\"\nrepo = \"acme/app\"\nenvironment = \"{{{{ env }}}}\"\n",
        github.url()
    );
    let project = Project::new(&config).with_env("GITHUB_TOKEN", GITHUB_TOKEN);
    project.write("source/prod.toml", "[keys]\n");
    let run = project.run(&["reconcile", "--once"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("environment \"prod\" does not exist in repository acme/app, or the token cannot see it"),
        "{run:?}"
    );
    assert!(run.stderr.contains("cfgsync does not create environments"), "{run:?}");
    assert_eq!(github.requests().writes(), 0);
    github.create_environment("acme", "app", "prod");
    ok(project.run(&["reconcile", "--once"]));
    assert_eq!(github.variable(&env_scope(), "HOST").unwrap().value, "h");
}

/// GitHub takes at most 48 KB a secret or variable: a larger value fails
/// its target with the entry named, before anything is sent.
#[test]
fn a_github_value_over_48_kb_is_refused_before_anything_is_sent() {
    let github = GithubEmulator::start();
    let config = format!(
        "instance = \"team-a\"\n[files]\n[envs.prod]\n[[output]]\nname = \"big\"\n[output.entries]\nBLOB = \"{{{{ key(name='blob') }}}}\"\n[[output.target]]\nkind = \"github\"\napi_url = \"{}\"\nrepo = \"acme/app\"\n",
        github.url()
    );
    let project = Project::new(&config).with_env("GITHUB_TOKEN", GITHUB_TOKEN);
    project.write("source/prod.toml", &format!("[keys]\nblob = \"{}\"\n", "b".repeat(48 * 1024 + 1)));
    for args in [&["plan"][..], &["reconcile", "--once"]] {
        let run = project.run(args);
        assert_ne!(run.code, 0, "{run:?}");
        assert!(
            run.stderr.contains(
                "output \"big\", entry \"BLOB\": variable BLOB would be 49153 bytes, more than GitHub's limit of 49152 bytes (48 KB)"
            ),
            "{run:?}"
        );
    }
    assert_eq!(github.requests().total(), 0, "nothing sent, not even a list: {:?}", github.request_log());
}

/// A value GitLab masks (here one cfgsync wrote from a secret) stays secret
/// when the output stops reading secrets: the plan shows the new value,
/// never the old one.
#[test]
fn an_old_masked_value_is_never_shown_when_the_output_becomes_plain() {
    let bed = Bed::new("");
    ok(bed.run(&["reconcile", "--once"]));
    assert!(bed.gitlab.variable(&app(), "APP_DB_PASSWORD", "prod").unwrap().masked);
    let config = std::fs::read_to_string(bed.project.path("cfgsync.toml")).unwrap();
    bed.project.write(
        "cfgsync.toml",
        &config
            .replace("DB_PASSWORD = \"{{ secret(path='api/db', field='password') }}\"", "DB_PASSWORD = \"now-plain\""),
    );
    let plan = bed.run(&["plan"]);
    assert!(plan.stdout.contains("APP_DB_PASSWORD") && plan.stdout.contains("now-plain"), "{plan:?}");
    assert!(!plan.all().contains(PASSWORD), "{plan:?}");
    let json = bed.run(&["plan", "--output", "json"]);
    assert!(!json.all().contains(PASSWORD), "{json:?}");
}

/// Issue 21: `entries = [...]` on a target: the GitLab project takes the
/// maskable entries of an output, the file all but one (`exclude`), from
/// one output and one rendering.
#[test]
fn a_target_takes_only_the_entries_it_selects() {
    let gitlab = GitlabEmulator::start();
    let config = format!(
        "instance = \"ci-tests\"\n[files]\n[envs.prod]\n[[output]]\nname = \"api\"\n[output.entries]\nPASSWORD = \"{{{{ secret(path='api/db', field='password') }}}}\"\nPIN = \"{{{{ secret(path='api/db', field='pin') }}}}\"\nHOST = \"{{{{ key(name='api/host') }}}}\"\n[[output.target]]\nkind = \"gitlab\"\nurl = \"{}\"\nproject = \"group/app\"\nentries = [\"PASSWORD\"]\n[[output.target]]\nkind = \"file\"\npath = \"out/api.env\"\nexclude = [\"HOST\"]\n",
        gitlab.url()
    );
    let project = Project::new(&config).with_env("GITLAB_TOKEN", GITLAB_TOKEN);
    project.write(
        "source/prod.toml",
        &format!("[keys]\n\"api/host\" = \"db\"\n[secrets.\"api/db\"]\npassword = \"{PASSWORD}\"\npin = \"CANARY7\"\n[secrets.\"cfgsync/fingerprint\"]\nkey = \"k\"\n"),
    );
    let plan = ok(project.run(&["plan"]));
    assert!(
        plan.stdout.contains("PASSWORD") && !plan.stdout.contains("PIN (") && !plan.stdout.contains("HOST"),
        "{plan:?}"
    );
    ok(project.run(&["reconcile", "--once"]));
    let names: Vec<String> = gitlab.variables(&app()).into_iter().map(|v| v.key).collect();
    assert_eq!(names, ["PASSWORD"], "the unmaskable PIN and HOST stay out of GitLab");
    let file = project.read("out/api.env");
    assert!(file.contains("PASSWORD=") && file.contains("PIN=CANARY7") && !file.contains("HOST"), "{file}");
    // An unknown name is a config error at its line, exit 2, nothing sent.
    gitlab.reset_requests();
    project.write("cfgsync.toml", &config.replace("entries = [\"PASSWORD\"]", "entries = [\"PASWORD\"]"));
    let run = project.run(&["plan"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("cfgsync.toml:14:12: ")
            && run.stderr.contains(
                "target `entries` names \"PASWORD\", which is not an entry of the output (did you mean \"PASSWORD\"?)"
            ),
        "{run:?}"
    );
    assert_eq!(gitlab.requests().total(), 0);
}

/// Issue 21: a CI target's variables are listed under one line naming the
/// project (and its URL), not each on a line repeating it.
#[test]
fn plan_names_a_ci_destination_once_per_target() {
    let bed = Bed::new("");
    let plan = ok(bed.run(&["plan"]));
    let url = bed.gitlab.url();
    assert_eq!(plan.stdout.matches(url.as_str()).count(), 2, "once per GitLab target: {plan:?}");
    let header = format!("  api → GitLab project group/app at {url} (environment scope prod):\n");
    assert!(plan.stdout.contains(&header), "{plan:?}");
    assert!(plan.stdout.contains("\n    + APP_DB_PASSWORD (create"), "{plan:?}");
    assert!(plan.stdout.contains("\n    + secret DB_PASSWORD (create"), "{plan:?}");
}
