//! Safe in a real estate (issue 15): cfgsync never deletes a wanted file
//! because of how the config was named, never lets two configs share one
//! identity silently, and refuses configs that would make it write over its
//! own files or read its reserved layout as data.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Run, run_output};

/// The binary with `args`, run in `cwd`, with no `--config` of its own.
fn cfgsync(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cfgsync"));
    for var in ["VAULT_ADDR", "VAULT_TOKEN", "ETCDCTL_ENDPOINTS", "ETCDCTL_USER", "CFGSYNC_CONFIG", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1").env("HOME", cwd).current_dir(cwd).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_output(cmd.output().unwrap())
}

const API: &str = r#"[files]
[envs.dev]

[[output]]
name = "api"
[output.entries]
HOST = "{{ key(name='api/host') }}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/api.env"
"#;

/// `<tmp>/w2/cfgsync.toml` with the `api` output, `<tmp>/w1` beside it and
/// `<tmp>/link` → `w2`.
struct Estate {
    tmp: tempfile::TempDir,
}

impl Estate {
    fn new(config: &str) -> Estate {
        let tmp = tempfile::tempdir().unwrap();
        let w2 = tmp.path().join("w2");
        std::fs::create_dir_all(w2.join("source")).unwrap();
        std::fs::create_dir_all(tmp.path().join("w1")).unwrap();
        std::fs::write(w2.join("cfgsync.toml"), config).unwrap();
        std::fs::write(w2.join("source/dev.toml"), "[keys]\n\"api/host\" = \"api.dev\"\n").unwrap();
        std::os::unix::fs::symlink("w2", tmp.path().join("link")).unwrap();
        Estate { tmp }
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The record keys of the file state (one instance, env dev).
    fn record_keys(&self) -> Vec<String> {
        let states: Vec<PathBuf> = walk_files(&self.at("w2/.cfgsync"));
        assert_eq!(states.len(), 1, "one state file: {states:?}");
        let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&states[0]).unwrap()).unwrap();
        state["files"].as_object().unwrap().keys().cloned().collect()
    }
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A pass that changes nothing and deletes nothing.
fn quiet(run: Run, how: &str) {
    assert_eq!(run.code, 0, "{how}: {run:?}");
    assert!(run.stdout.contains("(unchanged)"), "{how}: {run:?}");
    assert!(!run.stdout.contains("pruned") && !run.stdout.contains("deleted"), "{how}: nothing deleted: {run:?}");
    assert!(run.stdout.contains("0 created, 0 updated, 1 unchanged, 0 failed"), "{how}: {run:?}");
}

/// Issue 15: `--config $PWD/cfgsync.toml reconcile --once` then `reconcile
/// --once` from the same directory pruned the file the first one wrote.
#[test]
fn records_do_not_depend_on_the_cwd_or_the_spelling_of_the_config_path() {
    let e = Estate::new(API);
    let w2 = e.at("w2");
    let file = e.at("w2/out/dev/api.env");
    let absolute = w2.join("cfgsync.toml");
    let r = cfgsync(&w2, &["--config", absolute.to_str().unwrap(), "reconcile", "--once"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "HOST=api.dev\n");

    quiet(cfgsync(&w2, &["reconcile", "--once"], &[]), "the default ./cfgsync.toml");
    quiet(cfgsync(e.tmp.path(), &["--config", "w2/cfgsync.toml", "reconcile", "--once"], &[]), "from the parent");
    quiet(cfgsync(&e.at("w1"), &["--config", "../w2/cfgsync.toml", "reconcile", "--once"], &[]), "through ..");
    quiet(cfgsync(e.tmp.path(), &["--config", "link/cfgsync.toml", "reconcile", "--once"], &[]), "symlinked dir");
    let via_link = e.at("link/cfgsync.toml");
    quiet(
        cfgsync(&e.at("w1"), &["reconcile", "--once"], &[("CFGSYNC_CONFIG", via_link.to_str().unwrap())]),
        "CFGSYNC_CONFIG",
    );
    quiet(cfgsync(&e.at("w2/out"), &["--config", "../cfgsync.toml", "reconcile", "--once"], &[]), "from below");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "HOST=api.dev\n", "the wanted file is still there");
    assert_eq!(e.record_keys(), ["out/dev/api.env"], "one record, relative to the config's directory");

    // A removed output is still pruned, whatever the spelling.
    let config = std::fs::read_to_string(w2.join("cfgsync.toml")).unwrap();
    let with_old = format!(
        "{config}\n[[output]]\nname = \"old\"\n[output.entries]\nOLD = \"x\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{{{{ env }}}}/old.env\"\n"
    );
    std::fs::write(w2.join("cfgsync.toml"), &with_old).unwrap();
    let r = cfgsync(e.tmp.path(), &["--config", "link/cfgsync.toml", "reconcile", "--once"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(e.at("w2/out/dev/old.env").exists());
    std::fs::write(w2.join("cfgsync.toml"), &config).unwrap();
    let r = cfgsync(&w2, &["--config", absolute.to_str().unwrap(), "reconcile", "--once"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("deleted: output \"old\" no longer writes it"), "{r:?}");
    assert!(!e.at("w2/out/dev/old.env").exists(), "pruned");
    assert!(file.exists(), "and only that");
}

/// States of older releases keyed a file by the path as each run spelled
/// it (three records for one file): they migrate to one canonical key
/// without deleting anything, and a record nothing confirms is dropped.
#[test]
fn records_of_older_releases_migrate_without_deleting_the_file() {
    let e = Estate::new(API);
    let w2 = e.at("w2");
    let r = cfgsync(&w2, &["reconcile", "--once"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let state_path = walk_files(&e.at("w2/.cfgsync")).remove(0);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let record = state["files"]["out/dev/api.env"].clone();
    assert!(record.is_object(), "{state}");
    // What the release before this one left after three spellings, plus a
    // relative record that no reading confirms: its only reading below the
    // config's directory is a hand-made file holding something else.
    std::fs::write(e.at("w2/out/dev/hand.env"), "HAND=made\n").unwrap();
    let legacy = serde_json::json!({
        "key": state["key"],
        "files": {
            "out/dev/api.env": record,
            "w2/out/dev/api.env": record,
            w2.join("out/dev/api.env").to_str().unwrap(): record,
            "w9/out/dev/hand.env": record,
        }
    });
    std::fs::write(&state_path, serde_json::to_vec_pretty(&legacy).unwrap()).unwrap();

    quiet(cfgsync(&w2, &["--config", "cfgsync.toml", "reconcile", "--once"], &[]), "after the upgrade");
    assert_eq!(std::fs::read_to_string(e.at("w2/out/dev/api.env")).unwrap(), "HOST=api.dev\n");
    assert_eq!(e.record_keys(), ["out/dev/api.env"], "migrated to one canonical record");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(state["format"], 2, "{state}");
    quiet(cfgsync(e.tmp.path(), &["--config", "w2/cfgsync.toml", "reconcile", "--once"], &[]), "another spelling");
    assert_eq!(std::fs::read_to_string(e.at("w2/out/dev/hand.env")).unwrap(), "HAND=made\n", "never deleted");
}

/// Issue 15: two configs of one directory (`cfgsync.toml` and `app.toml` in
/// `app/`) both defaulted to instance `app`, shared one file state and
/// pruned each other's files.
#[test]
fn two_configs_of_one_directory_never_share_a_defaulted_state() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    std::fs::create_dir_all(app.join("source")).unwrap();
    std::fs::write(app.join("source/dev.toml"), "[keys]\n\"api/host\" = \"api.dev\"\n").unwrap();
    std::fs::write(app.join("cfgsync.toml"), API).unwrap();
    std::fs::write(app.join("app.toml"), API.replace("name = \"api\"", "name = \"web\"").replace("api.env", "web.env"))
        .unwrap();
    let r = cfgsync(&app, &["reconcile", "--once"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(app.join("out/dev/api.env").exists());

    let r = cfgsync(&app, &["--config", "app.toml", "reconcile", "--once"], &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("belongs to config cfgsync.toml of the same directory, which defaults to the same instance as app.toml: set `instance = \"NAME\"` in one of them"),
        "{r:?}"
    );
    assert!(app.join("out/dev/api.env").exists(), "the other config's file is never deleted");
    assert!(!app.join("out/dev/web.env").exists(), "nothing written on a state that is not this config's");

    let named = format!("instance = \"app-web\"\n{}", std::fs::read_to_string(app.join("app.toml")).unwrap());
    std::fs::write(app.join("app.toml"), named).unwrap();
    let r = cfgsync(&app, &["--config", "app.toml", "reconcile", "--once"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(app.join("out/dev/web.env").exists() && app.join("out/dev/api.env").exists());
    quiet(cfgsync(&app, &["reconcile", "--once"], &[]), "the first config again");
}

/// Issue 15: a Kubernetes, GitLab or GitHub target without `instance` is
/// refused by every command that loads the config (exit 2, file:line).
#[test]
fn a_shared_target_without_instance_is_refused_with_file_and_line() {
    let config = format!(
        "{API}[[output.target]]\nkind = \"kubernetes-secret\"\nnamespace = \"api\"\nname = \"api-{{{{ env }}}}\"\n"
    );
    let e = Estate::new(&config);
    for args in [&["validate"][..], &["plan"], &["reconcile", "--once"]] {
        let r = cfgsync(&e.at("w2"), args, &[]);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("cfgsync.toml:11:1: output \"api\": a kubernetes-secret target writes where other cfgsync configs write too"),
            "{args:?}: {r:?}"
        );
        assert!(r.stderr.contains("carries instance \"w2\""), "{r:?}");
    }
    assert!(!e.at("w2/out").exists(), "nothing written");
}
