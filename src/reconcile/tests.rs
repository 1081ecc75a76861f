//! The pipeline with the file kind on a temp directory: hand-built
//! snapshots, the in-process renderer.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{self, Config};
use crate::plan::Action;
use crate::reconcile::{self, EnvReport, PassOptions, Targets};
use crate::render::Templates;
use crate::source::{KeyOrigin, KeyValue, Secret, Snapshot};

const CANARY: &str = "CANARY-f11e-pw";

struct Bed {
    dir: tempfile::TempDir,
    config: Config,
    templates: Templates,
}

impl Bed {
    fn new(outputs: &str) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("[files]\n[envs.prod]\n{outputs}");
        let config =
            config::parse(&dir.path().join("cfgsync.toml"), &text, &BTreeMap::<String, String>::new()).unwrap();
        let templates = Templates::compile(&config).unwrap();
        Bed { dir, config, templates }
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    async fn pass(&self, keys: &[(&str, &str)], dry_run: bool) -> EnvReport {
        self.pass_with(keys, PassOptions { dry_run, ..Default::default() }).await
    }

    async fn pass_with(&self, keys: &[(&str, &str)], options: PassOptions) -> EnvReport {
        let mut snapshot = Snapshot { env: "prod".into(), ..Default::default() };
        for (k, v) in keys {
            snapshot.keys.insert(k.to_string(), KeyValue::new(v.as_bytes().to_vec(), KeyOrigin::File));
        }
        let fields = [("pw".to_owned(), crate::secret::SecretString::new(CANARY))].into();
        snapshot.secrets.insert("db".into(), Secret { fields, version: None });
        self.pass_on(snapshot, options).await
    }

    /// One pass of `snapshot` (planned only on a dry run).
    async fn pass_on(&self, snapshot: Snapshot, options: PassOptions) -> EnvReport {
        let targets = Targets::new(&self.config, None);
        let dry_run = options.dry_run;
        let plan = reconcile::plan_env(
            &self.config,
            &self.templates,
            &targets,
            Arc::new(snapshot),
            true,
            &options,
            &BTreeMap::new(),
        )
        .await;
        if dry_run { plan.report } else { reconcile::apply_env(plan, None).await }
    }
}

fn actions(r: &EnvReport) -> Vec<(String, Action)> {
    let mut out: Vec<(String, Action)> = r
        .outputs
        .iter()
        .flat_map(|o| &o.targets)
        .flat_map(|t| &t.changes)
        .chain(&r.pruned)
        .map(|c| (c.address.rsplit('/').next().unwrap_or_default().to_owned(), c.action))
        .collect();
    out.sort();
    out
}

fn errors(r: &EnvReport) -> String {
    let mut all: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
    for o in &r.outputs {
        all.extend(o.error.iter().map(|e| e.to_string()));
        all.extend(o.targets.iter().filter_map(|t| t.error.as_ref()).map(|e| e.to_string()));
    }
    all.join("\n")
}

const APP: &str = r#"
[[output]]
name = "app"
[output.entries]
HOST = "{{ key(name='host') }}"
[[output.target]]
kind = "file"
path = "out/app.env"

[[output]]
name = "web"
[output.entries]
"index.txt" = "{{ key(name='host') }}"
"extra.txt" = "{% if exists(name='extra') %}{{ key(name='extra') }}{% endif %}"
[[output.target]]
kind = "file"
format = "dir"
path = "out/web"
"#;

#[tokio::test]
async fn create_noop_update_drift() {
    let bed = Bed::new(APP);
    let r = bed.pass(&[("host", "a")], false).await;
    assert_eq!(errors(&r), "");
    assert_eq!(
        actions(&r),
        [
            ("app.env".into(), Action::Create),
            ("extra.txt".into(), Action::Create),
            ("index.txt".into(), Action::Create)
        ]
    );
    assert_eq!(std::fs::read_to_string(bed.path("out/app.env")).unwrap(), "HOST=a\n");
    let before = std::fs::metadata(bed.path("out/app.env")).unwrap();

    let r = bed.pass(&[("host", "a")], false).await;
    assert!(actions(&r).iter().all(|(_, a)| *a == Action::Unchanged), "{:?}", actions(&r));
    let after = std::fs::metadata(bed.path("out/app.env")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((before.ino(), before.mtime_nsec()), (after.ino(), after.mtime_nsec()), "nothing rewritten");

    let r = bed.pass(&[("host", "b")], false).await;
    assert!(actions(&r).contains(&("app.env".into(), Action::Update)), "{:?}", actions(&r));

    std::fs::write(bed.path("out/app.env"), "HOST=hand-edit\n").unwrap();
    let r = bed.pass(&[("host", "b")], true).await;
    assert!(actions(&r).contains(&("app.env".into(), Action::Drift)), "{:?}", actions(&r));
    let r = bed.pass(&[("host", "b")], false).await;
    assert!(actions(&r).contains(&("app.env".into(), Action::Drift)));
    assert_eq!(std::fs::read_to_string(bed.path("out/app.env")).unwrap(), "HOST=b\n");
}

/// Files are compared with what they should hold while they are read, and
/// an unchanged file is fingerprinted once (the record apply keeps comes
/// from the plan): a hand edit that keeps the length is still drift, at
/// any byte; and a file found already holding the new content records
/// that content, so that a later hand edit of it is drift too.
#[tokio::test]
async fn hand_edits_of_the_same_length_are_drift_and_records_follow_unchanged_files() {
    let bed = Bed::new(APP);
    bed.pass(&[("host", "abcdef")], false).await;
    let file = bed.path("out/app.env");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "HOST=abcdef\n");
    for edit in ["XOST=abcdef\n", "HOST=abXdef\n", "HOST=abcdef\r"] {
        std::fs::write(&file, edit).unwrap();
        let r = bed.pass(&[("host", "abcdef")], false).await;
        assert!(actions(&r).contains(&("app.env".into(), Action::Drift)), "{edit:?}: {:?}", actions(&r));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "HOST=abcdef\n", "{edit:?} reverted");
    }
    // Someone puts the next content in place before the source changes.
    std::fs::write(&file, "HOST=ghijkl\n").unwrap();
    let r = bed.pass(&[("host", "ghijkl")], false).await;
    assert!(actions(&r).contains(&("app.env".into(), Action::Unchanged)), "{:?}", actions(&r));
    std::fs::write(&file, "HOST=ghXjkl\n").unwrap();
    let r = bed.pass(&[("host", "ghijkl")], false).await;
    assert!(actions(&r).contains(&("app.env".into(), Action::Drift)), "{:?}", actions(&r));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "HOST=ghijkl\n");
}

#[tokio::test]
async fn only_what_this_instance_wrote_is_pruned() {
    let bed = Bed::new(APP);
    bed.pass(&[("host", "a"), ("extra", "x")], false).await;
    std::fs::write(bed.path("out/web/hand-made.txt"), "mine").unwrap();
    std::fs::write(bed.path("out/other.env"), "not cfgsync's").unwrap();

    // An entry removed from the dir output: its file goes, nothing else.
    let bed2 = Bed {
        config: config::parse(
            &bed.path("cfgsync.toml"),
            &format!(
                "[files]\n[envs.prod]\n{}",
                APP.replace(
                    "\"extra.txt\" = \"{% if exists(name='extra') %}{{ key(name='extra') }}{% endif %}\"\n",
                    ""
                )
            ),
            &BTreeMap::<String, String>::new(),
        )
        .unwrap(),
        ..bed
    };
    let bed = Bed { templates: Templates::compile(&bed2.config).unwrap(), ..bed2 };
    let plan = bed.pass(&[("host", "a")], true).await;
    assert!(actions(&plan).contains(&("extra.txt".into(), Action::Delete)), "{:?}", actions(&plan));
    assert!(bed.path("out/web/extra.txt").exists(), "a plan deletes nothing");
    let r = bed.pass(&[("host", "a")], false).await;
    assert_eq!(errors(&r), "");
    assert!(!bed.path("out/web/extra.txt").exists());
    assert!(
        bed.path("out/web/hand-made.txt").exists() && bed.path("out/other.env").exists(),
        "never what it did not write"
    );

    // A file edited since it was written is not deleted.
    std::fs::write(bed.path("out/web/index.txt"), "edited").unwrap();
    let only_app = APP.split("[[output]]\nname = \"web\"").next().unwrap();
    let config = config::parse(
        &bed.path("cfgsync.toml"),
        &format!("[files]\n[envs.prod]\n{only_app}"),
        &BTreeMap::<String, String>::new(),
    )
    .unwrap();
    let bed = Bed { templates: Templates::compile(&config).unwrap(), config, ..bed };
    let r = bed.pass(&[("host", "a")], false).await;
    assert!(errors(&r).contains("index.txt: not deleted: it changed since cfgsync wrote it"), "{}", errors(&r));
    assert!(bed.path("out/web/index.txt").exists());
}

#[tokio::test]
async fn a_prune_of_more_than_the_share_deletes_nothing_unless_allowed() {
    let four = r#"
[[output]]
name = "web"
[output.entries]
"a.txt" = "a"
"b.txt" = "b"
"c.txt" = "c"
"d.txt" = "d"
[[output.target]]
kind = "file"
format = "dir"
path = "out/web"
"#;
    let bed = Bed::new(four);
    assert_eq!(errors(&bed.pass(&[], false).await), "");
    let two = four.replace("\"c.txt\" = \"c\"\n\"d.txt\" = \"d\"\n", "");
    let bed = Bed {
        config: config::parse(
            &bed.path("cfgsync.toml"),
            &format!("[files]\n[envs.prod]\n{two}"),
            &BTreeMap::<String, String>::new(),
        )
        .unwrap(),
        ..bed
    };
    let bed = Bed { templates: Templates::compile(&bed.config).unwrap(), ..bed };

    // 2 of 4 (50%) is over the default 25%: refused, every file kept.
    let r = bed.pass(&[], false).await;
    assert!(errors(&r).contains("refusing to delete 2 of 4 objects"), "{}", errors(&r));
    assert!(bed.path("out/web/c.txt").exists() && bed.path("out/web/d.txt").exists());
    // --allow-mass-prune: both go, the others stay.
    let r = bed.pass_with(&[], PassOptions { allow_mass_prune: true, ..Default::default() }).await;
    assert_eq!(errors(&r), "");
    assert!(!bed.path("out/web/c.txt").exists() && !bed.path("out/web/d.txt").exists());
    assert!(bed.path("out/web/a.txt").exists() && bed.path("out/web/b.txt").exists());
}

#[tokio::test]
async fn links_fifos_and_leftovers() {
    let bed = Bed::new(APP);
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(bed.path("out")).unwrap();
    std::os::unix::fs::symlink(outside.path(), bed.path("out/web")).unwrap();
    let r = bed.pass(&[("host", "a")], false).await;
    assert!(errors(&r).contains("out/web is a symlink"), "{}", errors(&r));
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written through the link");
    assert_eq!(std::fs::read_to_string(bed.path("out/app.env")).unwrap(), "HOST=a\n", "the other target converges");

    std::fs::remove_file(bed.path("out/web")).unwrap();
    std::fs::remove_file(bed.path("out/app.env")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(bed.path("out/app.env")).status().unwrap().success());
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), bed.pass(&[("host", "a")], false))
        .await
        .expect("never blocks");
    assert!(errors(&r).contains("is a FIFO"), "{}", errors(&r));

    std::fs::remove_file(bed.path("out/app.env")).unwrap();
    std::fs::write(bed.path("out/.cfgsync-tmp-999999999-prod-0011223344556677"), "partial").unwrap();
    let r = bed.pass(&[("host", "a")], false).await;
    assert_eq!(errors(&r), "");
    assert!(
        !bed.path("out/.cfgsync-tmp-999999999-prod-0011223344556677").exists(),
        "a dead writer's temp file is removed"
    );
}

#[tokio::test]
async fn secret_files_never_get_bits_for_others_and_check_output_stays_hidden() {
    let bed = Bed::new(
        r#"
[[output]]
name = "db"
[output.entries]
PW = "{{ secret(path='db', field='pw') }}"
[[output.target]]
kind = "file"
path = "out/db.env"
check_cmd = "cat {{src}} >&2; exit 3"
"#,
    );
    let r = bed.pass(&[], false).await;
    let e = errors(&r);
    assert!(e.contains("check_cmd rejected") && e.contains("exited with exit status: 3"), "{e}");
    assert!(!e.contains(CANARY), "{e}");
    assert!(!bed.path("out/db.env").exists());
    assert_eq!(std::fs::read_dir(bed.path("out")).unwrap().count(), 0, "the staged file is gone too");

    // A mode with bits for others is refused even if it slipped past validate.
    let Bed { dir, mut config, templates } = bed;
    let crate::targets::TargetKind::File(f) = &mut config.outputs[0].targets[0].kind else { unreachable!() };
    f.mode = Some(0o644);
    f.check_cmd = None;
    assert!(Templates::compile(&config).is_err(), "validate refuses it first");
    let bed = Bed { dir, config, templates };
    let r = bed.pass(&[], false).await;
    assert!(errors(&r).contains("mode 0644 would let every user"), "{}", errors(&r));
    assert!(!bed.path("out/db.env").exists());
}

#[tokio::test]
async fn bytes_go_verbatim_to_raw_files_and_are_refused_by_text_formats() {
    let bed = Bed::new(
        r#"
[[output]]
name = "cert"
[output.entries]
DER = { key = "der" }
[[output.target]]
kind = "file"
format = "raw"
path = "out/cert.der"
[[output.target]]
kind = "file"
path = "out/cert.env"
"#,
    );
    let mut snapshot = Snapshot { env: "prod".into(), ..Default::default() };
    snapshot.keys.insert("der".into(), KeyValue::new(vec![0xff, 0x00, 0x01], KeyOrigin::File));
    let r = bed.pass_on(snapshot, PassOptions::default()).await;
    assert_eq!(std::fs::read(bed.path("out/cert.der")).unwrap(), [0xff, 0x00, 0x01]);
    assert!(errors(&r).contains("entry \"DER\" is not text"), "{}", errors(&r));
    assert!(!bed.path("out/cert.env").exists());
}

/// A file nobody recorded at a target's path fails the target as foreign,
/// with its own code (it was reported as `unsafe_path`).
#[tokio::test]
async fn a_foreign_file_is_refused_with_its_own_code() {
    let bed = Bed::new(APP);
    std::fs::create_dir_all(bed.path("out")).unwrap();
    std::fs::write(bed.path("out/app.env"), "HOST=someone-elses\n").unwrap();
    let r = bed.pass(&[("host", "a")], false).await;
    let app = r.outputs.iter().find(|o| o.output == "app").unwrap();
    let error = app.targets[0].error.as_ref().expect("the foreign file fails its target");
    assert_eq!(error.code(), "foreign_file", "{error}");
    assert!(error.to_string().contains("has no record of writing it"), "{error}");
    assert_eq!(std::fs::read_to_string(bed.path("out/app.env")).unwrap(), "HOST=someone-elses\n");
}
