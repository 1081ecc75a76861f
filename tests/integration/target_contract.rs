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
//!    ones are untouched;
//! 9. records are the same whatever the cwd and the spelling of `--config`:
//!    after runs with `--config` absolute, relative from another cwd and
//!    through a symlinked directory, the later runs write and prune nothing;
//! 10. a foreign item at our address (made by hand, another tool's, another
//!     instance's under another env) is neither written nor deleted: the
//!     target fails naming it and how to adopt it, and once its output is
//!     removed from the config it is still there;
//! 11. prune deletes only the exact object observed: between the plan
//!     (in-process `plan_env`) and its apply, the object planned for deletion
//!     is replaced by someone else's — it is not deleted;
//! 12. reports the fingerprint it holds (`Target::held`, in-process, after
//!     steps 1 and 4): every item matches what its output wants once
//!     written — read back, or by the record for GitHub secrets (which
//!     cannot be read back) —, and a hand-edited one does not.
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
    /// directory (a file target of another instance writes there too);
    /// `here`: the config is the main project's, in `base`.
    fn target(&self, base: &Path, output: &str, here: bool) -> String;
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
    /// Makes items by hand exactly where outputs `taken` (entry `TAKEN`)
    /// and `taken2` (`TAKEN2`) write: one made by a person or another tool,
    /// one of another cfgsync instance for another env where the kind
    /// marks those (else another hand-made one).
    fn make_foreign(&self, base: &Path);
    /// Whether the items of [`Kind::make_foreign`] are exactly as made.
    fn foreign_intact(&self, base: &Path) -> bool;
    /// Replaces the item of `output`'s `entry` by someone else's, as could
    /// happen between a plan and its apply.
    fn replace(&self, base: &Path, output: &str, entry: &str);
    /// Whether the replacement of [`Kind::replace`] is still there.
    fn replaced(&self, base: &Path, output: &str, entry: &str) -> bool;
}

fn outputs(kind: &dyn Kind, base: &Path, here: bool, names: &[&str]) -> String {
    let mut text = String::new();
    for name in names {
        let entries = match *name {
            "api" => {
                "DB_PASSWORD = \"{{ secret(path='api/db', field='password') }}\"\nDB_USER = \"{{ key(name='api/db_user') }}\""
            }
            "web" => "HOST = \"{{ key(name='web/host') }}\"",
            "old" => "OLD = \"{{ key(name='old/value') }}\"",
            "other" => "OTHER = \"{{ key(name='other/value') }}\"",
            "taken" => "TAKEN = \"{{ key(name='other/value') }}\"",
            "taken2" => "TAKEN2 = \"{{ key(name='other/value') }}\"",
            "gone" => "GONE = \"{{ key(name='old/value') }}\"",
            _ => unreachable!(),
        };
        text.push_str(&format!(
            "\n[[output]]\nname = \"{name}\"\n[output.entries]\n{entries}\n[[output.target]]\n{}\n",
            kind.target(base, name, here)
        ));
    }
    text
}

/// A config of `instance`; the main project's (team-a, in `base`) or another one's.
fn config(kind: &dyn Kind, base: &Path, instance: &str, names: &[&str]) -> String {
    let here = instance == "team-a";
    format!(
        "instance = \"{instance}\"\n[files]\n{}\n[envs.prod]\n{}",
        kind.preamble(),
        outputs(kind, base, here, names)
    )
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

/// One in-process pass with `between` run after the plan and before its apply.
fn pass_between(project: &Project, between: impl FnOnce()) -> cfgsync::reconcile::EnvReport {
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
        between();
        reconcile::apply_env(plan, None).await
    })
}

/// What every target of outputs `api` and `web` holds (step 12, in-process).
fn held(project: &Project) -> Vec<cfgsync::targets::HeldItem> {
    use cfgsync::reconcile::{self, Targets};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = cfgsync::config::load(&project.path("cfgsync.toml"), &cfgsync::config::ProcessEnv).unwrap();
        let templates = cfgsync::render::Templates::compile(&config).unwrap_or_else(|e| panic!("{e}"));
        let sources = cfgsync::source::Sources::new(&config);
        let snapshot = Arc::new(sources.fetch(&reconcile::request(&config, &templates, "prod", None)).await.unwrap());
        let targets = Targets::new(&config, None);
        let keyed = reconcile::fingerprinter(&config, &snapshot);
        let ctx = cfgsync::targets::Ctx {
            revision: snapshot.revision,
            ..cfgsync::targets::Ctx::new(&config, "prod", &keyed)
        };
        let mut out = Vec::new();
        for (i, output) in config.outputs.iter().enumerate() {
            if !["api", "web"].contains(&output.name.as_str()) {
                continue;
            }
            let rendered = templates.render(i, &snapshot).unwrap();
            for t in &output.targets {
                out.extend(targets.held(&t.kind, &[&rendered], &ctx).await.unwrap().remove(0));
            }
        }
        out
    })
}

/// The binary run in `cwd` with `--config` spelled `config`, with the
/// environment [`Project::command`] gives it.
fn run_in(project: &Project, cwd: &Path, config: &str, args: &[&str]) -> Run {
    let template = project.command(args);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cfgsync"));
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.current_dir(cwd).arg("--config").arg(config).args(args);
    crate::support::run_output(cmd.output().unwrap())
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
    // 12. reports the fingerprint it holds.
    let items = held(&project);
    assert!(items.len() >= 2, "{name}: {items:?}");
    for item in &items {
        assert!(item.matches(), "{name}: {} holds what it should: {item:?}", item.item);
        let by_record = matches!(item.held, cfgsync::targets::Held::Recorded { .. });
        let github_secret = name == "github" && item.item.starts_with("secret ");
        assert_eq!(by_record, github_secret, "{name}: read back unless it cannot be: {item:?}");
        assert!(!format!("{item:?}").contains(PASSWORD), "{name}: no value in what is held: {item:?}");
    }

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
    let edited: Vec<_> = held(&project).into_iter().filter(|i| !i.matches()).collect();
    assert!(!edited.is_empty(), "{name}: step 12: the hand-edited item does not hold what it should");
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
    assert_eq!(kind.writes(&base), 0, "{name}: quiet after the prune");

    // 9. the same records whatever the cwd and the spelling of --config.
    let parent = base.parent().unwrap();
    let dir_name = base.file_name().unwrap().to_str().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&base, elsewhere.path().join("link")).unwrap();
    let absolute = project.path("cfgsync.toml");
    let spellings = [
        (parent.to_path_buf(), absolute.to_str().unwrap().to_owned(), "absolute, from the parent"),
        (parent.to_path_buf(), format!("{dir_name}/cfgsync.toml"), "relative, from the parent"),
        (elsewhere.path().to_path_buf(), "link/cfgsync.toml".to_owned(), "through a symlinked directory"),
        (base.join("out"), "../cfgsync.toml".to_owned(), "relative, from below"),
    ];
    for (cwd, config, how) in &spellings {
        std::fs::create_dir_all(cwd).unwrap();
        kind.reset(&base);
        let run = ok(run_in(&project, cwd, config, &["reconcile", "--once"]), &format!("{name}: {how}"));
        assert_eq!(kind.writes(&base), 0, "{name}: {how}: nothing written: {run:?}");
        assert!(!run.stdout.contains("pruned") && !run.stdout.contains("deleted"), "{name}: {how}: {run:?}");
    }
    assert_eq!(kind.read(&base, "web", "HOST").as_deref(), Some("web-host-3"), "{name}: still converged");
    assert_eq!(kind.read(&base, "api", "DB_PASSWORD").as_deref(), Some(PASSWORD), "{name}: still converged");

    // 10. a foreign item at our address: neither written nor deleted.
    kind.make_foreign(&base);
    assert!(kind.foreign_intact(&base), "{name}: made by hand");
    write_config(&["api", "web", "taken", "taken2"]);
    let run = failed(project.run(&["reconcile", "--once"]), &format!("{name}: foreign items at our address"));
    assert!(kind.foreign_intact(&base), "{name}: a foreign item is not written: {run:?}");
    let said = run.all().to_lowercase();
    assert!(
        said.contains("taken") && said.contains("adopt"),
        "{name}: the error names it and how to adopt it: {run:?}"
    );
    assert_eq!(kind.read(&base, "web", "HOST").as_deref(), Some("web-host-3"), "{name}: the others converge");
    write_config(&["api", "web"]);
    let run = ok(project.run(&["reconcile", "--once"]), &format!("{name}: foreign items' outputs removed"));
    assert!(kind.foreign_intact(&base), "{name}: a foreign item is not deleted: {run:?}");

    // 11. prune deletes only the exact object observed.
    write_config(&["api", "web", "gone"]);
    ok(project.run(&["reconcile", "--once"]), &format!("{name}: gone created"));
    assert_eq!(kind.read(&base, "gone", "GONE").as_deref(), Some("old-value-1"), "{name}: gone created");
    write_config(&["api", "web"]);
    let report = pass_between(&project, || kind.replace(&base, "gone", "GONE"));
    let pruned: Vec<String> = report.pruned.iter().map(|c| format!("{} {:?}", c.address, c.action)).collect();
    assert!(
        kind.replaced(&base, "gone", "GONE"),
        "{name}: an object replaced between the plan and its apply is not deleted (pruned: {pruned:?})"
    );
}

// --- files -----------------------------------------------------------------

#[derive(Default)]
struct Files {
    before: RefCell<Vec<FileState>>,
    /// The inode of [`Kind::replace`]'s file.
    replacement: RefCell<Option<u64>>,
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

    /// Relative to the config's directory in the main project (so that the
    /// spelling of `--config` matters, step 9), absolute in the other one.
    fn target(&self, base: &Path, output: &str, here: bool) -> String {
        match here {
            true => format!("kind = \"file\"\npath = \"out/{output}.env\""),
            false => format!("kind = \"file\"\npath = \"{}/out/{output}.env\"", base.display()),
        }
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

    /// Files cfgsync has no record of, at the targets' paths.
    fn make_foreign(&self, base: &Path) {
        std::fs::write(base.join("out/taken.env"), "TAKEN=made-by-hand\n").unwrap();
        std::fs::write(base.join("out/taken2.env"), "TAKEN2=another-tool\n").unwrap();
    }

    fn foreign_intact(&self, base: &Path) -> bool {
        std::fs::read_to_string(base.join("out/taken.env")).is_ok_and(|t| t == "TAKEN=made-by-hand\n")
            && std::fs::read_to_string(base.join("out/taken2.env")).is_ok_and(|t| t == "TAKEN2=another-tool\n")
    }

    /// Another file, same content, in its place (a new inode).
    fn replace(&self, base: &Path, output: &str, _entry: &str) {
        use std::os::unix::fs::MetadataExt;
        let path = base.join("out").join(format!("{output}.env"));
        let content = std::fs::read(&path).unwrap();
        let other = base.join("out").join(format!("{output}.env.new"));
        std::fs::write(&other, content).unwrap();
        std::fs::set_permissions(&other, std::fs::metadata(&path).unwrap().permissions()).unwrap();
        std::fs::rename(&other, &path).unwrap();
        *self.replacement.borrow_mut() = Some(std::fs::metadata(&path).unwrap().ino());
    }

    fn replaced(&self, base: &Path, output: &str, _entry: &str) -> bool {
        use std::os::unix::fs::MetadataExt;
        let path = base.join("out").join(format!("{output}.env"));
        std::fs::metadata(path).is_ok_and(|m| Some(m.ino()) == *self.replacement.borrow())
    }
}

#[test]
fn contract_file() {
    contract(&Files::default());
}

// --- Kubernetes --------------------------------------------------------------

struct Kube {
    cluster: Emulator,
    /// The uid of the object [`Kind::replace`] replaced.
    replaced_uid: RefCell<Option<Value>>,
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

    fn target(&self, _base: &Path, output: &str, _here: bool) -> String {
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

    /// `taken`: a Secret another tool (Helm) manages; `taken2`: another
    /// cfgsync instance's, for another env.
    fn make_foreign(&self, _base: &Path) {
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        self.cluster
            .put_object(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "taken", "namespace": "apps", "labels": {"app.kubernetes.io/managed-by": "Helm"}},
                "data": {"TAKEN": b64("helm-value")}
            }))
            .unwrap();
        self.cluster
            .put_object(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "taken2", "namespace": "apps", "labels": {
                    "app.kubernetes.io/managed-by": "cfgsync", "cfgsync.io/instance": "team-b",
                    "cfgsync.io/env": "staging", "cfgsync.io/output": "taken2"
                }},
                "data": {"TAKEN2": b64("team-b-staging-value")}
            }))
            .unwrap();
    }

    fn foreign_intact(&self, _base: &Path) -> bool {
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        let intact = |name: &str, entry: &str, value: &str, labels: Value| {
            self.cluster.get_object(KubeKind::Secret, "apps", name).is_some_and(|o| {
                o["data"] == serde_json::json!({ entry: b64(value) }) && o["metadata"]["labels"] == labels
            })
        };
        intact("taken", "TAKEN", "helm-value", serde_json::json!({"app.kubernetes.io/managed-by": "Helm"}))
            && intact(
                "taken2",
                "TAKEN2",
                "team-b-staging-value",
                serde_json::json!({
                    "app.kubernetes.io/managed-by": "cfgsync", "cfgsync.io/instance": "team-b",
                    "cfgsync.io/env": "staging", "cfgsync.io/output": "taken2"
                }),
            )
    }

    /// Deleted and made again (same name, labels and data; a new uid).
    fn replace(&self, _base: &Path, output: &str, _entry: &str) {
        let mut o = self.cluster.get_object(KubeKind::Secret, "apps", output).unwrap();
        *self.replaced_uid.borrow_mut() = Some(o["metadata"]["uid"].clone());
        assert!(self.cluster.delete_object(KubeKind::Secret, "apps", output));
        if let Some(m) = o["metadata"].as_object_mut() {
            for field in ["uid", "resourceVersion", "creationTimestamp", "managedFields"] {
                m.remove(field);
            }
        }
        self.cluster.put_object(o).unwrap();
    }

    fn replaced(&self, _base: &Path, output: &str, _entry: &str) -> bool {
        self.cluster
            .get_object(KubeKind::Secret, "apps", output)
            .is_some_and(|o| Some(&o["metadata"]["uid"]) != self.replaced_uid.borrow().as_ref())
    }
}

#[test]
fn contract_kubernetes() {
    let cluster = Emulator::start("prod");
    cluster.create_namespace("apps");
    contract(&Kube { cluster, replaced_uid: RefCell::new(None) });
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
    fn target(&self, _base: &Path, _output: &str, _here: bool) -> String {
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

    /// `TAKEN`: made by hand; `TAKEN2`: marked by another instance, for another env.
    fn make_foreign(&self, _base: &Path) {
        for v in foreign_gitlab_variables() {
            self.gitlab.put_variable(&project(), v);
        }
    }

    fn foreign_intact(&self, _base: &Path) -> bool {
        foreign_gitlab_variables()
            .into_iter()
            .all(|v| self.gitlab.variable(&project(), &v.key, "prod").is_some_and(|live| live == v))
    }

    /// Changed by hand after cfgsync recorded it.
    fn replace(&self, _base: &Path, _output: &str, entry: &str) {
        let mut v = self.gitlab.variable(&project(), entry, "prod").unwrap();
        v.value = "changed-by-hand".to_owned();
        self.gitlab.put_variable(&project(), v);
    }

    fn replaced(&self, _base: &Path, _output: &str, entry: &str) -> bool {
        self.gitlab.variable(&project(), entry, "prod").is_some_and(|v| v.value == "changed-by-hand")
    }
}

fn foreign_gitlab_variables() -> Vec<GitlabVariable> {
    let mut hand = GitlabVariable::new("TAKEN", "made-by-hand");
    hand.environment_scope = "prod".into();
    let mut other = GitlabVariable::new("TAKEN2", "team-b-value");
    other.environment_scope = "prod".into();
    other.description = Some("managed by cfgsync instance team-b, env staging, output taken2".into());
    vec![hand, other]
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

    fn target(&self, _base: &Path, _output: &str, _here: bool) -> String {
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

    /// A variable and a secret made by hand at the names cfgsync would write.
    fn make_foreign(&self, _base: &Path) {
        self.github.put_variable(&repo(), "TAKEN", "made-by-hand");
        self.github.put_secret(&repo(), "TAKEN2", b"another-tool");
    }

    fn foreign_intact(&self, _base: &Path) -> bool {
        self.github.variable(&repo(), "TAKEN").is_some_and(|v| v.value == "made-by-hand")
            && self.github.secret_plaintext(&repo(), "TAKEN2").as_deref() == Some("another-tool")
            && self.github.variable(&repo(), "TAKEN2").is_none()
            && self.github.secret(&repo(), "TAKEN").is_none()
    }

    /// Changed by hand after cfgsync recorded it (a later `updated_at`).
    fn replace(&self, _base: &Path, _output: &str, entry: &str) {
        self.github.advance_clock(std::time::Duration::from_secs(5));
        self.github.put_variable(&repo(), entry, "changed-by-hand");
    }

    fn replaced(&self, _base: &Path, _output: &str, entry: &str) -> bool {
        self.github.variable(&repo(), entry).is_some_and(|v| v.value == "changed-by-hand")
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
