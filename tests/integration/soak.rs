//! Model-based soak: random sequences of source changes, hand edits of
//! targets and faults, each pass (`cfgsync reconcile --once`) checked
//! against a model of what the source of truth says.
//!
//! The model is deliberately small and independent of cfgsync's code: per
//! env the keys and the secret of the file source, whether its source file
//! is broken (a source fault) and whether its output directory is
//! unwritable (a disk fault), and what each target file holds. After every
//! pass, for every target:
//! - the env's source is broken: the file is untouched (not even rewritten);
//! - the output cannot render (a key or the secret it needs is missing):
//!   untouched;
//! - it already holds what it should: untouched (a pass that changes
//!   nothing writes nothing);
//! - else, if the directory is unwritable: untouched; else it holds exactly
//!   the rendered content (a hand edit is reverted, a deleted file
//!   recreated) with its mode (0600 for the secret output).
//!
//! "Untouched" is checked by inode and mtime, not just content. The exit
//! code must be 1 exactly when the model says something failed, and no temp
//! file may be left behind.
//!
//! `CFGSYNC_SOAK_CASES` sets the number of sequences (default 12, ~10 s on
//! an idle 2-core machine; `CFGSYNC_SOAK_CASES=500` for a long soak).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::service::temp_files;
use crate::support::Project;
use crate::support::disk::Unwritable;

const ENVS: [&str; 2] = ["a", "b"];
const KEYS: [&str; 3] = ["x", "y", "z"];
const CANARY: &str = "CANARY-77c1-soak";

const CONFIG: &str = r#"[files]
dir = "source"

[envs.a]
[envs.b]

[[output]]
name = "all"
[output.entries]
ALL = "keys:{% for k, v in keys(prefix='k/') %}{{ k }}={{ v }};{% endfor %}"
[[output.target]]
kind = "file"
format = "raw"
path = "out/{{ env }}/all.txt"

[[output]]
name = "one"
[output.entries]
X = "x is {{ key(name='k/x') }}"
[[output.target]]
kind = "file"
format = "raw"
path = "out/{{ env }}/one.txt"

[[output]]
name = "sec"
[output.entries]
S = "{{ secret(path='s', field='f') }}"
[[output.target]]
kind = "file"
format = "raw"
path = "out/{{ env }}/sec.txt"
"#;

/// The three targets of an env: (output, file name).
const TARGETS: [(&str, &str); 3] = [("all", "all.txt"), ("one", "one.txt"), ("sec", "sec.txt")];

#[derive(Clone, Debug)]
enum Op {
    SetKey {
        env: usize,
        key: usize,
        value: String,
    },
    DeleteKey {
        env: usize,
        key: usize,
    },
    SetSecret {
        env: usize,
        value: String,
    },
    DeleteSecret {
        env: usize,
    },
    /// Overwrites a target in place, as an editor that does not rename.
    HandEdit {
        env: usize,
        target: usize,
        text: String,
    },
    HandDelete {
        env: usize,
        target: usize,
    },
    BreakSource {
        env: usize,
    },
    FixSource {
        env: usize,
    },
    LockDir {
        env: usize,
    },
    UnlockDir {
        env: usize,
    },
    Pass,
}

fn op() -> impl Strategy<Value = Op> {
    let env = 0..ENVS.len();
    let value = "[a-z0-9-]{1,8}";
    prop_oneof![
        3 => (env.clone(), 0..KEYS.len(), value).prop_map(|(env, key, value)| Op::SetKey { env, key, value }),
        1 => (env.clone(), 0..KEYS.len()).prop_map(|(env, key)| Op::DeleteKey { env, key }),
        2 => (env.clone(), value).prop_map(|(env, value)| Op::SetSecret { env, value }),
        1 => env.clone().prop_map(|env| Op::DeleteSecret { env }),
        2 => (env.clone(), 0..TARGETS.len(), "[a-z ]{0,12}").prop_map(|(env, target, text)| Op::HandEdit { env, target, text }),
        1 => (env.clone(), 0..TARGETS.len()).prop_map(|(env, target)| Op::HandDelete { env, target }),
        1 => env.clone().prop_map(|env| Op::BreakSource { env }),
        1 => env.clone().prop_map(|env| Op::FixSource { env }),
        1 => env.clone().prop_map(|env| Op::LockDir { env }),
        1 => env.clone().prop_map(|env| Op::UnlockDir { env }),
        4 => Just(Op::Pass),
    ]
}

/// One env as the model sees it.
#[derive(Clone, Debug, Default)]
struct EnvModel {
    keys: BTreeMap<String, String>,
    secret: Option<String>,
    broken: bool,
    locked: bool,
    /// Target file name → what it holds (None: absent).
    files: BTreeMap<&'static str, Option<String>>,
}

impl EnvModel {
    /// What output `output` renders to, or None when it cannot render.
    fn render(&self, output: &str) -> Option<String> {
        match output {
            "all" => Some(format!("keys:{}", self.keys.iter().map(|(k, v)| format!("{k}={v};")).collect::<String>())),
            "one" => self.keys.get("x").map(|x| format!("x is {x}")),
            "sec" => self.secret.as_ref().map(|s| format!("{CANARY}-{s}")),
            _ => unreachable!(),
        }
    }

    fn source_file(&self) -> String {
        if self.broken {
            return "[keys\nthis is not toml\n".to_owned();
        }
        let mut s = String::from("[keys]\n");
        for (k, v) in &self.keys {
            s.push_str(&format!("\"k/{k}\" = \"{v}\"\n"));
        }
        if let Some(secret) = &self.secret {
            s.push_str(&format!("\n[secrets.s]\nf = \"{CANARY}-{secret}\"\n"));
        }
        s
    }
}

/// A file's inode and mtime: the same exactly when nothing replaced or
/// rewrote it.
type Stamp = (u64, i64, i64);

/// The project, the model, and the directory locks in force (declared
/// first: dropped before the project, whose removal they would stop).
struct World {
    locks: Vec<Option<Unwritable>>,
    p: Project,
    envs: Vec<EnvModel>,
}

impl World {
    fn new() -> World {
        let p = Project::new(CONFIG);
        let mut envs = Vec::new();
        for env in ENVS {
            let mut m = EnvModel::default();
            m.keys.insert("x".into(), format!("{env}0"));
            m.secret = Some(format!("{env}s0"));
            p.write(&format!("source/{env}.toml"), &m.source_file());
            std::fs::create_dir_all(p.path(&format!("out/{env}"))).unwrap();
            for (_, file) in TARGETS {
                m.files.insert(file, None);
            }
            envs.push(m);
        }
        let mut w = World { locks: vec![None, None], p, envs };
        w.pass().expect("the first pass");
        w
    }

    fn write_source(&self, env: usize) {
        self.p.write(&format!("source/{}.toml", ENVS[env]), &self.envs[env].source_file());
    }

    fn target_path(&self, env: usize, file: &str) -> std::path::PathBuf {
        self.p.path(&format!("out/{}/{file}", ENVS[env]))
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::SetKey { env, key, value } => {
                self.envs[*env].keys.insert(KEYS[*key].to_owned(), value.clone());
                self.write_source(*env);
            }
            Op::DeleteKey { env, key } => {
                self.envs[*env].keys.remove(KEYS[*key]);
                self.write_source(*env);
            }
            Op::SetSecret { env, value } => {
                self.envs[*env].secret = Some(value.clone());
                self.write_source(*env);
            }
            Op::DeleteSecret { env } => {
                self.envs[*env].secret = None;
                self.write_source(*env);
            }
            Op::BreakSource { env } => {
                self.envs[*env].broken = true;
                self.write_source(*env);
            }
            Op::FixSource { env } => {
                self.envs[*env].broken = false;
                self.write_source(*env);
            }
            Op::HandEdit { env, target, text } => {
                let file = TARGETS[*target].1;
                // In place: allowed in an unwritable (immutable) directory too.
                if self.envs[*env].files[file].is_some() || !self.envs[*env].locked {
                    std::fs::write(self.target_path(*env, file), text).unwrap();
                    self.envs[*env].files.insert(file, Some(text.clone()));
                }
            }
            Op::HandDelete { env, target } => {
                let file = TARGETS[*target].1;
                if !self.envs[*env].locked && self.envs[*env].files[file].is_some() {
                    std::fs::remove_file(self.target_path(*env, file)).unwrap();
                    self.envs[*env].files.insert(file, None);
                }
            }
            Op::LockDir { env } => {
                if self.locks[*env].is_none() {
                    self.locks[*env] = Some(Unwritable::new(&self.p.path(&format!("out/{}", ENVS[*env]))));
                    self.envs[*env].locked = true;
                }
            }
            Op::UnlockDir { env } => {
                self.locks[*env] = None;
                self.envs[*env].locked = false;
            }
            Op::Pass => self.pass()?,
        }
        Ok(())
    }

    /// Runs a pass and checks every target against the model.
    fn pass(&mut self) -> Result<(), TestCaseError> {
        let before: Vec<BTreeMap<&str, Option<Stamp>>> = (0..ENVS.len())
            .map(|e| {
                TARGETS
                    .iter()
                    .map(|(_, f)| {
                        let m = std::fs::metadata(self.target_path(e, f)).ok();
                        (*f, m.map(|m| (m.ino(), m.mtime(), m.mtime_nsec())))
                    })
                    .collect()
            })
            .collect();
        let r = self.p.run(&["reconcile", "--once"]);
        prop_assert!(!r.all().contains(CANARY), "a secret in the output: {r:?}");
        let mut failed = false;
        for (e, env) in self.envs.iter_mut().enumerate() {
            for (output, file) in TARGETS {
                let held = env.files[file].clone();
                let desired = if env.broken { None } else { env.render(output) };
                failed |= env.broken || desired.is_none();
                let write = match &desired {
                    Some(d) => held.as_ref() != Some(d),
                    None => false,
                };
                if write && env.locked {
                    failed = true;
                }
                let path = format!("out/{}/{file}", ENVS[e]);
                if write && !env.locked {
                    env.files.insert(file, desired.clone());
                    let mode = std::fs::metadata(self.p.path(&path)).map(|m| m.mode() & 0o777).ok();
                    let want = if output == "sec" { 0o600 } else { 0o644 };
                    prop_assert_eq!(mode, Some(want), "mode of {}: {:?}", path, r);
                } else {
                    let now = std::fs::metadata(self.p.path(&path)).ok().map(|m| (m.ino(), m.mtime(), m.mtime_nsec()));
                    prop_assert_eq!(now, before[e][file], "{} was touched, the model says not: {:?}", path, r);
                }
                let on_disk = std::fs::read_to_string(self.p.path(&path)).ok();
                prop_assert_eq!(&on_disk, &env.files[file], "{} differs from the model: {:?}", path, r);
            }
        }
        prop_assert_eq!(r.code, i32::from(failed), "exit code (model: failed = {}): {:?}", failed, r);
        let left = temp_files(&self.p.path("out"));
        prop_assert!(left.is_empty(), "temp files left: {:?}", left);
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("CFGSYNC_SOAK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
}

#[test]
fn random_changes_edits_and_faults_always_match_the_model() {
    let config = Config { cases: cases(), failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let ops = proptest::collection::vec(op(), 1..24);
    let result = runner.run(&ops, |ops| {
        let mut world = World::new();
        for op in &ops {
            world.apply(op)?;
        }
        // Every sequence ends with the faults cleared and a pass that
        // converges all of it.
        for env in 0..ENVS.len() {
            world.apply(&Op::FixSource { env })?;
            world.apply(&Op::UnlockDir { env })?;
        }
        world.apply(&Op::Pass)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
