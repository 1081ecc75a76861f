//! docs/incidents.md, run: each session of the page is replayed against
//! real etcd and OpenBao and a Kubernetes emulator, after the events the
//! page describes, and must print what the page shows — times (which
//! differ on every run) and the host name aside. The README's "After an
//! incident" session is replayed the same way, in the same story.

use kube_emulator::{Emulator, Verb};

use crate::support::{Etcd, Project, Run, Vault, server_config};

const CANARY: &str = "CANARY-61f0-incident";

const CONFIG: &str = r#"
[kubernetes]
kubeconfig = "kubeconfig"

[fingerprint]
key = "cfgsync/fingerprint#key"

[envs.prod]

[[output]]
name = "api"
[output.entries]
DATABASE_URL = "postgres://api:{{ secret(path='api/db', field='password') }}@{{ key(name='api/db_host') }}/api"
[[output.target]]
kind = "kubernetes-secret"
context = "prod"
namespace = "api"
name = "api"
[[output.target]]
kind = "file"
path = "out/{{ env }}/api.env"

[[output]]
name = "web"
[output.entries]
DARK_MODE = "{{ key(name='web/dark_mode') }}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/web.env"
"#;

/// One `$ cfgsync …` of a session and what the page shows it print.
#[derive(Debug)]
struct Step {
    args: Vec<String>,
    output: String,
    code: Option<i32>,
}

/// The sessions of the page, by the heading they are under.
fn sessions_of(page: &str) -> Vec<(String, Vec<Step>)> {
    let mut out: Vec<(String, Vec<Step>)> = Vec::new();
    let mut heading = String::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("## ") {
            heading = line.to_owned();
            continue;
        }
        if !line.trim_start().starts_with("```") {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        if line.trim() != "```" || !block.first().is_some_and(|l| l.starts_with("$ ")) {
            continue;
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut code_next = false;
        for l in block {
            match l.strip_prefix("$ ") {
                Some("echo $?") => code_next = true,
                Some(command) => {
                    let words = shell_words(command);
                    assert_eq!(words[0], "cfgsync", "{heading}: {command}");
                    steps.push(Step { args: words[1..].to_vec(), output: String::new(), code: None });
                }
                None if code_next => {
                    steps.last_mut().unwrap().code = Some(l.parse().unwrap());
                    code_next = false;
                }
                None => {
                    let step = steps.last_mut().unwrap();
                    step.output.push_str(l);
                    step.output.push('\n');
                }
            }
        }
        out.push((heading.clone(), steps));
    }
    out
}

/// Words of a command line, with "double quotes" kept together.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Times replaced by `<time>` (each run has its own), the host by `ops-1`,
/// and the columns `log` aligns after a time put back to one space.
fn masked(text: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let text = text.replace(&format!("@{}", host.trim()), "@ops-1");
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let is_time = |at: usize| {
        let pattern = "dddd-dd-ddTdd:dd:dd";
        pattern
            .chars()
            .enumerate()
            .all(|(k, p)| chars.get(at + k).is_some_and(|c| if p == 'd' { c.is_ascii_digit() } else { *c == p }))
    };
    while i < chars.len() {
        if is_time(i) {
            i += 19;
            if chars.get(i) == Some(&'.') {
                i += 4;
            }
            if chars.get(i) == Some(&'Z') {
                i += 1;
            }
            if chars.get(i) == Some(&'~') {
                i += 1;
            }
            out.push_str("<time>");
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

fn replay(p: &Project, page: &str, heading: &str, steps: &[Step]) {
    for step in steps {
        let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
        let got: Run = p.run(&args);
        assert!(!got.all().contains(CANARY), "{heading}: a secret value leaked: {got:?}");
        assert_eq!(
            masked(&format!("{}{}", got.stdout, got.stderr)),
            masked(&step.output),
            "{page}, {heading}: `cfgsync {}` prints something else than the page shows ({got:?})",
            args.join(" ")
        );
        if let Some(code) = step.code {
            assert_eq!(got.code, code, "{heading}: the exit code of `cfgsync {}`", args.join(" "));
        }
    }
}

/// Moves env's oldest record `by_ms` into the past, as if its pass had run
/// then (two etcd revisions: a delete and a put).
fn backdate(etcd: &Etcd, env: &str, by_ms: i64) {
    let prefix = format!("/cfgsync/_history/{env}/");
    let out = etcd.ctl_ok(&["get", "--prefix", &prefix]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(!lines.is_empty(), "no record of {env} to move back");
    if let Some(kv) = lines.chunks(2).next() {
        let mut record: serde_json::Value = serde_json::from_str(kv[1]).unwrap();
        let at = record["at_ms"].as_i64().unwrap() - by_ms;
        let revision = record["revision"].as_i64().unwrap();
        record["at_ms"] = at.into();
        etcd.ctl_ok(&["del", kv[0]]);
        etcd.put(&format!("{prefix}{at:013}-{revision:012}"), &record.to_string());
    }
}

#[test]
fn the_incident_sessions_are_what_cfgsync_prints() {
    let read =
        |name: &str| std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap();
    let sessions = sessions_of(&read("docs/incidents.md"));
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    let readme: Vec<(String, Vec<Step>)> =
        sessions_of(&read("README.md")).into_iter().filter(|(h, _)| h == "## After an incident").collect();
    assert_eq!(readme.len(), 1, "the README's session after an incident: {readme:?}");

    let etcd = Etcd::start();
    let vault = Vault::start();
    let kube = Emulator::start("prod");
    kube.create_namespace("api");
    etcd.put("/cfgsync/prod/api/db_host", "db1.prod.internal");
    etcd.put("/cfgsync/prod/web/dark_mode", "off");
    vault.kv_put("prod/api/db", &[("password", &format!("{CANARY}-1"))]);
    vault.kv_put("prod/cfgsync/fingerprint", &[("key", "fingerprint-key-prod")]);
    let p = Project::new(&format!("instance = \"payments\"\n{}", server_config(&etcd, &vault, CONFIG)));
    p.write("vault-token", &vault.root_token);
    p.write("kubeconfig", &kube.kubeconfig_yaml());

    // The day before: a pass; then the change that caused the incident.
    let ok = |args: &[&str]| {
        let r = p.run(args);
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
    };
    ok(&["reconcile", "--once"]);
    ok(&[
        "set",
        "prod",
        "api/db_host",
        "db2.prod.internal",
        "--owner",
        "alice",
        "--reason",
        "move to the new cluster",
        "--yes",
    ]);
    ok(&["set", "prod", "web/dark_mode", "on", "--owner", "bob", "--reason", "launch", "--yes"]);
    ok(&["reconcile", "--once"]);

    // What changed, and when.
    replay(&p, "docs/incidents.md", &sessions[0].0, &sessions[0].1);
    // The first pass ran two hours ago, as far as the history knows (the
    // README's `prod@-1h` finds it).
    backdate(&etcd, "prod", 2 * 3600 * 1000);
    replay(&p, "README.md", &readme[0].0, &readme[0].1);
    // Put it back.
    replay(&p, "docs/incidents.md", &sessions[1].0, &sessions[1].1);
    // A rotation, with the cluster refusing writes.
    vault.kv_put("prod/api/db", &[("password", &format!("{CANARY}-2"))]);
    kube.forbid(Some("api"), &[Verb::Create, Verb::Apply, Verb::Update, Verb::Patch]);
    replay(&p, "docs/incidents.md", &sessions[2].0, &sessions[2].1);
}
