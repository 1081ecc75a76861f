//! Trust boundaries through the real binary: two configs sharing a
//! namespace, special files at target paths, secret files with modes for
//! others, and a value that is not text in a real etcd.

use kube_emulator::{Emulator, Kind};

use crate::support::{Etcd, Project};

/// A config writing ConfigMap `name` in namespace `shared` of context
/// `prod`, as instance `instance`.
fn instance_config(instance: &str, name: &str) -> String {
    format!(
        r#"instance = "{instance}"

[files]

[kubernetes]
kubeconfig = "kubeconfig"

[envs.prod]

[[output]]
name = "{name}"
[output.entries]
HOST = "{{{{ key(name='host') }}}}"
[[output.target]]
kind = "kubernetes-configmap"
context = "prod"
namespace = "shared"
name = "{name}"
"#
    )
}

fn project(config: &str, cluster: &Emulator) -> Project {
    let p = Project::new(config);
    p.write("source/prod.toml", "[keys]\nhost = \"db.prod\"\n");
    p.write("kubeconfig", &Emulator::merged_kubeconfig_yaml(&[cluster]));
    p
}

#[test]
fn two_instances_in_one_namespace_never_prune_each_other() {
    let cluster = Emulator::start("prod");
    cluster.create_namespace("shared");
    let a = project(&instance_config("team-a", "a-config"), &cluster);
    let b = project(&instance_config("team-b", "b-config"), &cluster);
    for p in [&a, &b] {
        let r = p.run(&["reconcile", "--once"]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    let owner = |name: &str| {
        cluster
            .get_object(Kind::ConfigMap, "shared", name)
            .map(|o| o["metadata"]["labels"]["cfgsync.io/instance"].clone())
    };
    assert_eq!(owner("a-config"), Some("team-a".into()));
    assert_eq!(owner("b-config"), Some("team-b".into()));

    // Each pass of each instance sees the other's object in the same
    // namespace, and leaves it alone.
    for p in [&a, &b, &a] {
        let r = p.run(&["reconcile", "--once"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(!r.stdout.contains("delete"), "{r:?}");
    }
    assert!(cluster.get_object(Kind::ConfigMap, "shared", "a-config").is_some());
    assert!(cluster.get_object(Kind::ConfigMap, "shared", "b-config").is_some());

    // b drops its output: it prunes its own object, not a's.
    b.write("cfgsync.toml", &instance_config("team-b", "b-other"));
    let r = b.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(cluster.get_object(Kind::ConfigMap, "shared", "b-config").is_none(), "its own: pruned");
    assert!(cluster.get_object(Kind::ConfigMap, "shared", "a-config").is_some(), "another instance's: kept");

    // b targeting a's object is refused, naming the owner; nothing written.
    b.write("cfgsync.toml", &instance_config("team-b", "a-config"));
    let r = b.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("owned by cfgsync instance \"team-a\""), "{r:?}");
    assert_eq!(owner("a-config"), Some("team-a".into()));
}

fn file_config(path: &str, extra: &str) -> String {
    format!(
        r#"[files]
[envs.prod]

[[output]]
name = "app"
[output.entries]
PW = "{{{{ secret(path='db', field='password') }}}}"
[[output.target]]
kind = "file"
path = "{path}"
{extra}

[[output]]
name = "plain"
[output.entries]
HOST = "{{{{ key(name='host') }}}}"
[[output.target]]
kind = "file"
path = "out/plain.env"
"#
    )
}

fn file_project(config: &str) -> Project {
    let p = Project::new(config);
    p.write("source/prod.toml", "[keys]\nhost = \"db.prod\"\n\n[secrets.db]\npassword = \"CANARY-b0d5\"\n");
    p
}

#[test]
fn special_files_and_symlinked_files_are_refused_and_never_block() {
    for (path, want) in [("/dev/null", "is a character device"), ("/dev/zero", "is a character device")] {
        let p = file_project(&file_config(path, ""));
        let r = p.run(&["reconcile", "--once"]);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.stderr.contains(want), "{path}: {r:?}");
        assert_eq!(p.read("out/plain.env"), "HOST=db.prod\n", "the other output converges");
    }
    // A symlinked target file: refused, the file it points to untouched and
    // not shown.
    let p = file_project(&file_config("out/app.env", ""));
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = elsewhere.path().join("victim");
    std::fs::write(&victim, "ORIGINAL CONTENT\n").unwrap();
    std::fs::create_dir_all(p.path("out")).unwrap();
    std::os::unix::fs::symlink(&victim, p.path("out/app.env")).unwrap();
    for args in [&["plan"][..], &["reconcile", "--once"], &["pull", "--env", "prod"]] {
        let r = p.run(args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(r.stderr.contains("out/app.env is a symlink, not a regular file"), "{args:?}: {r:?}");
        assert!(!r.all().contains("ORIGINAL"), "nothing printed from the other side: {r:?}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "ORIGINAL CONTENT\n");
}

#[test]
fn a_secret_file_with_bits_for_others_is_refused_at_validate() {
    for mode in ["0644", "0666", "0604"] {
        let p = file_project(&file_config("out/app.env", &format!("mode = \"{mode}\"")));
        let r = p.run(&["validate"]);
        assert_eq!(r.code, 2, "{mode}: {r:?}");
        assert!(
            r.stderr.contains("cfgsync.toml:8:1: output \"app\" reads secret \"db\": mode")
                && r.stderr.contains("drop the bits for others"),
            "{r:?}"
        );
        let r = p.run(&["reconcile", "--once"]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(!p.path("out").exists(), "nothing written");
    }
    let p = file_project(&file_config("out/app.env", "mode = \"0640\""));
    assert_eq!(p.run(&["reconcile", "--once"]).code, 0, "group bits asked for explicitly are allowed");
    assert_eq!(crate::support::mode(&p.path("out/app.env")), 0o640);
}

#[test]
fn a_value_that_is_not_text_stops_only_its_readers() {
    let etcd = Etcd::start();
    etcd.put("/cfgsync/prod/host", "db.prod");
    // Raw bytes through etcdctl's stdin-free path: a value with invalid UTF-8.
    let status = std::process::Command::new(std::env::var("CFGSYNC_TEST_ETCDCTL").unwrap())
        .args(["--endpoints", &etcd.endpoint, "put", "/cfgsync/prod/bad"])
        .arg(std::ffi::OsStr::new(std::str::from_utf8(b"\x1b[2J").unwrap()))
        .status()
        .unwrap();
    assert!(status.success());
    {
        use std::os::unix::ffi::OsStrExt;
        let status = std::process::Command::new(std::env::var("CFGSYNC_TEST_ETCDCTL").unwrap())
            .args(["--endpoints", &etcd.endpoint, "put", "/cfgsync/prod/binary"])
            .arg(std::ffi::OsStr::from_bytes(b"\xff\xfe-not-utf8"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let p = Project::new(&format!(
        r#"[etcd]
endpoints = ["{}"]

[envs.prod]

[[output]]
name = "reader"
[output.entries]
X = "{{{{ key(name='binary') }}}}"
[[output.target]]
kind = "file"
path = "out/reader.env"

[[output]]
name = "other"
[output.entries]
HOST = "{{{{ key(name='host') }}}}"
[[output.target]]
kind = "file"
path = "out/other.env"
"#,
        etcd.endpoint
    ));
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("key \"binary\" holds bytes that are not UTF-8 (at byte 0)"), "{r:?}");
    assert_eq!(p.read("out/other.env"), "HOST=db.prod\n");
    assert!(!p.path("out/reader.env").exists());
    // A terminal escape in a value reaches `diff`/`explain` escaped.
    let r = p.run(&["explain", "prod", "bad"]);
    assert!(r.stdout.contains("\\e[2J") && !r.stdout.contains('\x1b'), "{r:?}");
}
