//! One contract, every target kind: files (a temp directory), Kubernetes
//! Secrets (kube-emulator), GitLab variables and GitHub Actions secrets and
//! variables (their emulators). Each kind runs the same steps, in order, on
//! one destination it shares with another cfgsync instance and with things
//! made by hand:
//!
//! 1. create: the first `reconcile --once` writes every entry;
//! 2. no-op: the second sends no write (emulator request counts; for files,
//!    no file's content, inode or mtime changes);
//! 3. update: a changed source value is planned as `update` and written;
//! 4. drift: an out-of-band edit is planned as `drift`, restored, and the
//!    pass after that is quiet again;
//! 5. fence closed (in-process `plan_env`/`apply_env`): nothing written,
//!    every target fails as fenced;
//! 6. fail closed on a source failure: an output removed from the config is
//!    not pruned and nothing is written while the source is broken;
//! 7. fail closed on a destination failure: nothing written or deleted;
//! 8. prune: once everything is readable again, the removed output's items
//!    are deleted — and only those: the other instance's and the hand-made
//!    ones are untouched.
//!
//! The kind-specific parts (where a value is read back, how a hand edit is
//! made, how a destination is broken) are the [`Kind`] implementations.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use kube_emulator::{
    Emulator, Fault, GithubEmulator, GithubScope, GitlabEmulator, GitlabOwner, GitlabVariable, Kind as KubeKind,
};
use serde_json::Value;

use crate::support::{FileState, Project, Run};

const PASSWORD: &str = "CANARY-contract-password";

/// What differs between kinds.
trait Kind {
    fn name(&self) -> &'static str;
    /// Top-level config tables the kind needs.
    fn preamble(&self) -> String {
        String::new()
    }
    /// The `[[output.target]]` body of `output`; `base`: the main project's
    /// directory (a file target of another instance writes there too).
    fn target(&self, base: &Path, output: &str) -> String;
    /// Files the kind needs next to a config (a kubeconfig).
    fn prepare(&self, _project: &Project) {}
    /// The value of an entry as the destination holds it.
    fn read(&self, base: &Path, output: &str, entry: &str) -> Option<String>;
    /// Starts counting writes.
    fn reset(&self, base: &Path);
    /// Writes since [`Kind::reset`].
    fn writes(&self, base: &Path) -> u64;
    /// Changes an entry behind cfgsync's back.
    fn edit(&self, base: &Path, output: &str, entry: &str, value: &str);
    /// Makes something by hand at the destination; [`Kind::hand_made`] reads it back.
    fn make_by_hand(&self, base: &Path);
    fn hand_made(&self, base: &Path) -> bool;
    fn break_destination(&self, base: &Path);
    fn heal(&self, base: &Path);
}

fn outputs(kind: &dyn Kind, base: &Path, names: &[&str]) -> String {
    let mut text = String::new();
    for name in names {
        let entries = match *name {
            "api" => {
                "DB_PASSWORD = \"{{ secret(path='api/db', field='password') }}\"\nDB_USER = \"{{ key(name='api/db_user') }}\""
            }
            "web" => "HOST = \"{{ key(name='web/host') }}\"",
            "old" => "OLD = \"{{ key(name='old/value') }}\"",
            "other" => "OTHER = \"{{ key(name='other/value') }}\"",
            _ => unreachable!(),
        };
        text.push_str(&format!(
            "\n[[output]]\nname = \"{name}\"\n[output.entries]\n{entries}\n[[output.target]]\n{}\n",
            kind.target(base, name)
        ));
    }
    text
}

fn config(kind: &dyn Kind, base: &Path, instance: &str, names: &[&str]) -> String {
    format!("instance = \"{instance}\"\n[files]\n{}\n[envs.prod]\n{}", kind.preamble(), outputs(kind, base, names))
}

fn source(host: &str) -> String {
    format!(
        "[keys]\n\"api/db_user\" = \"api-user-1\"\n\"web/host\" = \"{host}\"\n\"old/value\" = \"old-value-1\"\n\"other/value\" = \"other-value-1\"\n\n[secrets.\"api/db\"]\npassword = \"{PASSWORD}\"\n\n[secrets.\"cfgsync/fingerprint\"]\nkey = \"fingerprint-key-prod\"\n"
    )
}

/// The actions `plan --output json` shows, as `(output, action)`.
fn planned(project: &Project) -> Vec<(String, String)> {
    let run = project.run(&["plan", "--output", "json"]);
    let report: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("plan JSON: {e}\n{run:?}"));
    let mut out = Vec::new();
    for env in report["envs"].as_array().into_iter().flatten() {
        for o in env["outputs"].as_array().into_iter().flatten() {
            for t in o["targets"].as_array().into_iter().flatten() {
                for c in t["changes"].as_array().into_iter().flatten() {
                    if c["action"] != "unchanged" {
                        out.push((o["output"].as_str().unwrap().to_owned(), c["action"].as_str().unwrap().to_owned()));
                    }
                }
            }
        }
        for p in env["pruned"].as_array().into_iter().flatten() {
            out.push(("(pruned)".to_owned(), p["action"].as_str().unwrap().to_owned()));
        }
    }
    out
}

fn ok(run: Run, step: &str) -> Run {
    assert_eq!(run.code, 0, "{step}: {run:?}");
    run
}

fn failed(run: Run, step: &str) -> Run {
    assert_ne!(run.code, 0, "{step}: should fail: {run:?}");
    run
}

/// The fence of a replica that lost its env's lease.
#[derive(Debug)]
struct Closed;

impl cfgsync::reconcile::Fence for Closed {
    fn check(&self, _env: &str) -> Result<(), String> {
        Err("this replica no longer leads env prod".to_owned())
    }
}

/// One in-process pass behind a closed fence.
fn fenced_pass(project: &Project) -> cfgsync::reconcile::EnvReport {
    use cfgsync::reconcile::{self, PassOptions, Targets};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = cfgsync::config::load(&project.path("cfgsync.toml"), &cfgsync::config::ProcessEnv).unwrap();
        let templates = cfgsync::render::Templates::compile(&config).unwrap_or_else(|e| panic!("{e}"));
        let sources = cfgsync::source::Sources::new(&config);
        let snapshot = sources.fetch(&reconcile::request(&config, &templates, "prod", None)).await.unwrap();
        let targets = Targets::new(&config, None);
        let options = PassOptions::default();
        let plan =
            reconcile::plan_env(&config, &templates, &targets, Arc::new(snapshot), true, &options, &Default::default())
                .await;
        reconcile::apply_env(plan, Some(&Closed)).await
    })
}

fn contract(kind: &dyn Kind) {
    let name = kind.name();
    let project = Project::new("");
    let base = project.dir.path().to_path_buf();
    let write_config = |names: &[&str]| project.write("cfgsync.toml", &config(kind, &base, "team-a", names));
    write_config(&["api", "web", "old"]);
    project.write("source/prod.toml", &source("web-host-1"));
    kind.prepare(&project);
    // Another instance writes to the same destination; someone makes
    // something there by hand.
    let other = Project::new(&config(kind, &base, "team-b", &["other"]));
    other.write("source/prod.toml", &source("web-host-1"));
    kind.prepare(&other);
    ok(other.run(&["reconcile", "--once"]), &format!("{name}: the other instance"));
    assert_eq!(kind.read(&base, "other", "OTHER").as_deref(), Some("other-value-1"), "{name}: other instance wrote");
    kind.make_by_hand(&base);
    assert!(kind.hand_made(&base), "{name}: made by hand");

    // 1. create
    let plan = planned(&project);
    assert!(plan.iter().all(|(_, a)| a == "create") && plan.len() >= 3, "{name}: plan before the first pass: {plan:?}");
    let run = ok(project.run(&["reconcile", "--once"]), &format!("{name}: create"));
    assert!(!run.all().contains(PASSWORD), "{name}: the secret is never shown: {run:?}");
    assert_eq!(kind.read(&base, "api", "DB_PASSWORD").as_deref(), Some(PASSWORD), "{name}: create");
    assert_eq!(kind.read(&base, "api", "DB_USER").as_deref(), Some("api-user-1"), "{name}: create");
    assert_eq!(kind.read(&base, "web", "HOST").as_deref(), Some("web-host-1"), "{name}: create");
    assert_eq!(kind.read(&base, "old", "OLD").as_deref(), Some("old-value-1"), "{name}: create");

    // 2. no-op
    kind.reset(&base);
    ok(project.run(&["reconcile", "--once"]), &format!("{name}: no-op"));
    assert_eq!(kind.writes(&base), 0, "{name}: a pass with nothing changed writes nothing");
    assert_eq!(planned(&project), [], "{name}: plan after convergence");

    // 3. update
    project.write("source/prod.toml", &source("web-host-2"));
    assert_eq!(planned(&project), [("web".to_owned(), "update".to_owned())], "{name}: plan of an update");
    ok(project.run(&["reconcile", "--once"]), &format!("{name}: update"));
    assert_eq!(kind.read(&base, "web", "HOST").as_deref(), Some("web-host-2"), "{name}: updated");

    // 4. drift
    kind.edit(&base, "api", "DB_USER", "hand-edited-user");
    assert_eq!(kind.read(&base, "api", "DB_USER").as_deref(), Some("hand-edited-user"));
    assert_eq!(planned(&project), [("api".to_owned(), "drift".to_owned())], "{name}: plan of a hand edit");
    ok(project.run(&["reconcile", "--once"]), &format!("{name}: drift"));
    assert_eq!(kind.read(&base, "api", "DB_USER").as_deref(), Some("api-user-1"), "{name}: drift reverted");
    assert_eq!(kind.read(&base, "api", "DB_PASSWORD").as_deref(), Some(PASSWORD), "{name}: drift reverted");
    kind.reset(&base);
    ok(project.run(&["reconcile", "--once"]), &format!("{name}: after drift"));
    assert_eq!(kind.writes(&base), 0, "{name}: quiet again after restoring drift");

    // 5. fence closed: a change is pending, nothing is written.
    project.write("source/prod.toml", &source("web-host-3"));
    kind.reset(&base);
    let report = fenced_pass(&project);
    let fenced: Vec<String> = report
        .outputs
        .iter()
        .flat_map(|o| &o.targets)
        .filter_map(|t| t.error.as_ref().map(|e| e.to_string()))
        .collect();
    assert!(fenced.iter().any(|e| e.contains("no longer leads")), "{name}: fenced: {fenced:?}");
    assert_eq!(kind.writes(&base), 0, "{name}: nothing written behind a closed fence");
    assert_eq!(kind.read(&base, "web", "HOST").as_deref(), Some("web-host-2"), "{name}: fenced");

    // 6. source failure: output `old` removed and the source broken.
    write_config(&["api", "web"]);
    project.write("source/prod.toml", "[keys\nnot toml");
    kind.reset(&base);
    failed(project.run(&["reconcile", "--once"]), &format!("{name}: source failure"));
    assert_eq!(kind.writes(&base), 0, "{name}: nothing written or deleted while the source fails");
    assert_eq!(
        kind.read(&base, "old", "OLD").as_deref(),
        Some("old-value-1"),
        "{name}: not pruned on a source failure"
    );
    project.write("source/prod.toml", &source("web-host-3"));

    // 7. destination failure: an update and a prune are pending.
    kind.break_destination(&base);
    kind.reset(&base);
    let run = failed(project.run(&["reconcile", "--once"]), &format!("{name}: destination failure"));
    assert_eq!(kind.writes(&base), 0, "{name}: nothing written or deleted at a failing destination: {run:?}");
    kind.heal(&base);
    assert_eq!(
        kind.read(&base, "old", "OLD").as_deref(),
        Some("old-value-1"),
        "{name}: not pruned on a destination failure"
    );
    assert_eq!(
        kind.read(&base, "web", "HOST").as_deref(),
        Some("web-host-2"),
        "{name}: not updated at a failing destination"
    );

    // 8. prune: only what this instance wrote and no target claims.
    let plan = planned(&project);
    assert!(plan.contains(&("(pruned)".to_owned(), "delete".to_owned())), "{name}: plan shows the prune: {plan:?}");
    ok(project.run(&["reconcile", "--once"]), &format!("{name}: prune"));
    assert_eq!(kind.read(&base, "old", "OLD"), None, "{name}: the removed output's item is pruned");
    assert_eq!(kind.read(&base, "web", "HOST").as_deref(), Some("web-host-3"), "{name}: converged");
    assert_eq!(
        kind.read(&base, "other", "OTHER").as_deref(),
        Some("other-value-1"),
        "{name}: other instance untouched"
    );
    assert!(kind.hand_made(&base), "{name}: hand-made untouched");
    kind.reset(&base);
    ok(project.run(&["reconcile", "--once"]), &format!("{name}: final"));
    assert_eq!(kind.writes(&base), 0, "{name}: quiet at the end");
}

// --- files -----------------------------------------------------------------

#[derive(Default)]
struct Files {
    before: RefCell<Vec<FileState>>,
}

fn snapshot(base: &Path) -> Vec<FileState> {
    // The main project's files but its config and source, which the test rewrites.
    let mut out: Vec<FileState> = Vec::new();
    walk(base, &mut out);
    out.retain(|f| !f.0.ends_with("cfgsync.toml") && !f.0.starts_with(base.join("source")));
    out.sort();
    out
}

fn walk(dir: &Path, out: &mut Vec<FileState>) {
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            walk(&p, out);
        } else if m.is_file() {
            out.push((p.clone(), std::fs::read(&p).unwrap(), m.mode() & 0o7777, m.ino(), m.mtime(), m.mtime_nsec()));
        }
    }
}

impl Kind for Files {
    fn name(&self) -> &'static str {
        "file"
    }

    fn target(&self, base: &Path, output: &str) -> String {
        format!("kind = \"file\"\npath = \"{}/out/{output}.env\"", base.display())
    }

    fn read(&self, base: &Path, output: &str, entry: &str) -> Option<String> {
        let path = base.join("out").join(format!("{output}.env"));
        let iter = dotenvy::from_path_iter(&path).ok()?;
        iter.filter_map(Result::ok).find(|(k, _)| k == entry).map(|(_, v)| v)
    }

    fn reset(&self, base: &Path) {
        *self.before.borrow_mut() = snapshot(base);
    }

    fn writes(&self, base: &Path) -> u64 {
        let now = snapshot(base);
        let before = self.before.borrow();
        let changed =
            now.iter().filter(|f| !before.contains(f)).count() + before.iter().filter(|f| !now.contains(f)).count();
        changed as u64
    }

    fn edit(&self, base: &Path, output: &str, entry: &str, value: &str) {
        let path = base.join("out").join(format!("{output}.env"));
        let old = self.read(base, output, entry).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&old));
        std::fs::write(&path, text.replace(&old, value)).unwrap();
    }

    fn make_by_hand(&self, base: &Path) {
        std::fs::create_dir_all(base.join("out")).unwrap();
        std::fs::write(base.join("out/hand.env"), "HAND=made-by-hand\n").unwrap();
    }

    fn hand_made(&self, base: &Path) -> bool {
        std::fs::read_to_string(base.join("out/hand.env")).is_ok_and(|t| t == "HAND=made-by-hand\n")
    }

    /// `out` becomes a symlink: cfgsync refuses to observe through it.
    fn break_destination(&self, base: &Path) {
        std::fs::rename(base.join("out"), base.join("out.real")).unwrap();
        std::os::unix::fs::symlink(base.join("out.real"), base.join("out")).unwrap();
    }

    fn heal(&self, base: &Path) {
        std::fs::remove_file(base.join("out")).unwrap();
        std::fs::rename(base.join("out.real"), base.join("out")).unwrap();
    }
}

#[test]
fn contract_file() {
    contract(&Files::default());
}

// --- Kubernetes --------------------------------------------------------------

struct Kube {
    cluster: Emulator,
}

impl Kind for Kube {
    fn name(&self) -> &'static str {
        "kubernetes-secret"
    }

    fn preamble(&self) -> String {
        "[kubernetes]\nkubeconfig = \"kubeconfig\"\n".to_owned()
    }

    fn prepare(&self, project: &Project) {
        project.write("kubeconfig", &self.cluster.kubeconfig_yaml());
    }

    fn target(&self, _base: &Path, output: &str) -> String {
        format!("kind = \"kubernetes-secret\"\ncontext = \"prod\"\nnamespace = \"apps\"\nname = \"{output}\"")
    }

    fn read(&self, _base: &Path, output: &str, entry: &str) -> Option<String> {
        let o = self.cluster.get_object(KubeKind::Secret, "apps", output)?;
        let b64 = o["data"][entry].as_str()?;
        Some(String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap())
    }

    fn reset(&self, _base: &Path) {
        self.cluster.reset_requests();
    }

    fn writes(&self, _base: &Path) -> u64 {
        self.cluster.requests().writes()
    }

    fn edit(&self, _base: &Path, output: &str, entry: &str, value: &str) {
        let mut o = self.cluster.get_object(KubeKind::Secret, "apps", output).unwrap();
        o["data"][entry] = base64::engine::general_purpose::STANDARD.encode(value).into();
        if let Some(m) = o["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        self.cluster.put_object(o).unwrap();
    }

    fn make_by_hand(&self, _base: &Path) {
        self.cluster
            .put_object(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "hand", "namespace": "apps"},
                "data": {"HAND": "bWFkZS1ieS1oYW5k"}
            }))
            .unwrap();
    }

    fn hand_made(&self, _base: &Path) -> bool {
        self.cluster
            .get_object(KubeKind::Secret, "apps", "hand")
            .is_some_and(|o| o["data"]["HAND"] == "bWFkZS1ieS1oYW5k")
    }

    fn break_destination(&self, _base: &Path) {
        self.cluster.set_fault(Fault::Down);
    }

    fn heal(&self, _base: &Path) {
        self.cluster.clear_fault();
    }
}

#[test]
fn contract_kubernetes() {
    let cluster = Emulator::start("prod");
    cluster.create_namespace("apps");
    contract(&Kube { cluster });
}

// --- GitLab ------------------------------------------------------------------

struct Gitlab {
    gitlab: GitlabEmulator,
}

fn project() -> GitlabOwner {
    GitlabOwner::project("group/app")
}

impl Kind for Gitlab {
    fn name(&self) -> &'static str {
        "gitlab"
    }

    /// The emulator takes any token; HOME is set in every process the
    /// tests start (in-process too), so it serves as one.
    fn target(&self, _base: &Path, _output: &str) -> String {
        format!("kind = \"gitlab\"\nurl = \"{}\"\nproject = \"group/app\"\ntoken_env = \"HOME\"", self.gitlab.url())
    }

    fn read(&self, _base: &Path, _output: &str, entry: &str) -> Option<String> {
        self.gitlab.variable(&project(), entry, "prod").map(|v| v.value)
    }

    fn reset(&self, _base: &Path) {
        self.gitlab.reset_requests();
    }

    fn writes(&self, _base: &Path) -> u64 {
        self.gitlab.requests().writes()
    }

    fn edit(&self, _base: &Path, _output: &str, entry: &str, value: &str) {
        let mut v = self.gitlab.variable(&project(), entry, "prod").unwrap();
        v.value = value.to_owned();
        self.gitlab.put_variable(&project(), v);
    }

    fn make_by_hand(&self, _base: &Path) {
        let mut v = GitlabVariable::new("HAND", "made-by-hand");
        v.environment_scope = "prod".into();
        self.gitlab.put_variable(&project(), v);
    }

    fn hand_made(&self, _base: &Path) -> bool {
        self.gitlab.variable(&project(), "HAND", "prod").is_some_and(|v| v.value == "made-by-hand")
    }

    fn break_destination(&self, _base: &Path) {
        self.gitlab.set_fault(Fault::Down);
    }

    fn heal(&self, _base: &Path) {
        self.gitlab.clear_fault();
    }
}

#[test]
fn contract_gitlab() {
    contract(&Gitlab { gitlab: GitlabEmulator::start() });
}

// --- GitHub ------------------------------------------------------------------

struct Github {
    github: GithubEmulator,
}

fn repo() -> GithubScope {
    GithubScope::repo("acme", "app")
}

impl Kind for Github {
    fn name(&self) -> &'static str {
        "github"
    }

    fn target(&self, _base: &Path, _output: &str) -> String {
        format!("kind = \"github\"\napi_url = \"{}\"\nrepo = \"acme/app\"\ntoken_env = \"HOME\"", self.github.url())
    }

    fn read(&self, _base: &Path, _output: &str, entry: &str) -> Option<String> {
        self.github.secret_plaintext(&repo(), entry).or_else(|| self.github.variable(&repo(), entry).map(|v| v.value))
    }

    fn reset(&self, _base: &Path) {
        self.github.reset_requests();
    }

    fn writes(&self, _base: &Path) -> u64 {
        self.github.requests().writes()
    }

    /// A write in a later second than cfgsync's: `updated_at` moves on.
    fn edit(&self, _base: &Path, _output: &str, entry: &str, value: &str) {
        self.github.advance_clock(std::time::Duration::from_secs(5));
        if self.github.secret(&repo(), entry).is_some() {
            self.github.put_secret(&repo(), entry, value.as_bytes());
        } else {
            self.github.put_variable(&repo(), entry, value);
        }
    }

    fn make_by_hand(&self, _base: &Path) {
        self.github.put_secret(&repo(), "HAND", b"made-by-hand");
        self.github.put_variable(&repo(), "HAND_VAR", "made-by-hand");
    }

    fn hand_made(&self, _base: &Path) -> bool {
        self.github.secret_plaintext(&repo(), "HAND").as_deref() == Some("made-by-hand")
            && self.github.variable(&repo(), "HAND_VAR").is_some_and(|v| v.value == "made-by-hand")
    }

    fn break_destination(&self, _base: &Path) {
        self.github.set_fault(Fault::Down);
    }

    fn heal(&self, _base: &Path) {
        self.github.clear_fault();
    }
}

#[test]
fn contract_github() {
    let github = GithubEmulator::start();
    // Writes land in distinct seconds only when the clock moves: freeze it
    // so that the edit below is the only thing that moves `updated_at`.
    github.freeze_clock(1_767_225_600);
    contract(&Github { github });
}
