//! The ten-minute walk (issue 21): `examples/estate/up.sh`, every command
//! of docs/walk.md against the estate it starts, and `down.sh` — run as
//! the page shows them, output compared; and the README's side of it (the
//! walk's commands are the page's, the main config example validates as
//! pasted). Also `policy apply --policies DIR` and its defaults.
//!
//! How the walk runs:
//! - A copy of the repository's `examples/estate/` and `scripts/tools.sh`
//!   in a temp dir laid out like a clone (`<clone>/examples/estate`), so
//!   that the estate's `.run/` and `out/` are the test's own; the binaries
//!   are this build's (`CFGSYNC_BIN_DIR`; the emulators are built first
//!   with `cargo build -p kube-emulator --bins`, a no-op when fresh).
//! - The estate's ports are fixed (its config names them) and below the
//!   kernel's ephemeral range, so no other test's port-0 server takes one;
//!   two walks on one machine (two checkouts' test runs) take turns
//!   through a lock file in the temp dir.
//! - Each `$ ` line of each session block (```` ```console ````) is run by
//!   `bash` in the session's working directory, with `.run/env.sh` sourced
//!   once it exists (as the page's `source` left it), stderr into stdout,
//!   and compared with the lines under it after [`normalised`]. `echo $?`
//!   shows the previous command's exit code; a line ending in `&` starts a
//!   background process that `kill %1` stops (SIGTERM, then waited for);
//!   a command commented `# a moment later` is repeated until its output
//!   matches, for 20 s at most.
//! - `down.sh` runs at the end, and also when the test fails (a guard), so
//!   no server outlives the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Etcd, Project, Vault, server_config};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn page(name: &str) -> String {
    std::fs::read_to_string(root().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// One `$ ` command and the lines the page shows under it.
#[derive(Debug)]
struct Step {
    /// Line of the page, for messages.
    line: usize,
    command: String,
    output: String,
}

/// The `$ ` commands of every ```` ```console ```` block of `text`, in order.
fn sessions(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            inside = !inside && line.trim() == "```console";
            continue;
        }
        if !inside {
            continue;
        }
        match line.strip_prefix("$ ") {
            Some(command) => steps.push(Step { line: i + 1, command: command.to_owned(), output: String::new() }),
            None => {
                let step = steps.last_mut().unwrap_or_else(|| panic!("line {}: output before a command", i + 1));
                step.output.push_str(line);
                step.output.push('\n');
            }
        }
    }
    steps
}

/// Words a machine decides: the numbers after "revision"/"created"/
/// "modified" (another writer's key may come first), the clone's path and
/// where kubectl is installed.
fn normalised(text: &str, replace: &[(String, &str)]) -> String {
    let mut text = text.to_owned();
    for (from, to) in replace {
        text = text.replace(from.as_str(), to);
    }
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) =
        ["revision ", "created ", "modified "].iter().filter_map(|w| rest.find(w).map(|i| i + w.len())).min()
    {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            out.push('N');
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn normalising_keeps_what_is_not_a_machines() {
    let replace = [("/tmp/x/clone".to_owned(), "/home/me/cfgsync")];
    assert_eq!(
        normalised("env prod (etcd revision 18)\n  revision: created 11, modified 18 (version 2)\n", &replace),
        "env prod (etcd revision N)\n  revision: created N, modified N (version 2)\n"
    );
    assert_eq!(
        normalised("/tmp/x/clone/examples (created; 2 keys)", &replace),
        "/home/me/cfgsync/examples (created; 2 keys)"
    );
    let steps = sessions("a\n```console\n$ one\nx\n$ two   # a moment later\n```\n```\n$ not\n```\n");
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!((steps[0].command.as_str(), steps[0].output.as_str()), ("one", "x\n"));
}

/// Serialises walks on one machine (module doc): held until dropped.
fn machine_lock() -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("cfgsync-estate-walk.lock"))
        .unwrap();
    file.lock().unwrap();
    file
}

/// The clone's `examples/estate/down.sh`, when dropped.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(self.0.join("examples/estate/down.sh")).stdin(Stdio::null()).output();
    }
}

/// The directory of this build's binaries, with the emulators built.
fn bin_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let built = Command::new(cargo)
        .args(["build", "--offline", "--locked", "-p", "kube-emulator", "--bins"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(built.status.success(), "building the emulators: {}", String::from_utf8_lossy(&built.stderr));
    Path::new(env!("CARGO_BIN_EXE_cfgsync")).parent().unwrap().to_path_buf()
}

/// A shell session over the page's commands.
struct Shell {
    cwd: PathBuf,
    env_file: PathBuf,
    bin: PathBuf,
    last_code: i32,
    background: Option<Child>,
}

impl Shell {
    /// `command` through bash in the session's state; (merged output, code).
    fn command(&self, command: &str) -> Command {
        let script =
            format!("if [ -f {env:?} ]; then . {env:?}; fi\n{command}", env = self.env_file.display().to_string(),);
        let mut cmd = Command::new("bash");
        for var in [
            "VAULT_ADDR",
            "VAULT_TOKEN",
            "ETCDCTL_ENDPOINTS",
            "ETCDCTL_USER",
            "CFGSYNC_CONFIG",
            "RUST_LOG",
            "KUBECONFIG",
        ]
        .into_iter()
        .chain(crate::support::TLS_VARIABLES)
        {
            cmd.env_remove(var);
        }
        cmd.env("NO_COLOR", "1")
            .env("CFGSYNC_BIN_DIR", &self.bin)
            .args(["-c", &script])
            .current_dir(&self.cwd)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&mut self, command: &str) -> (String, i32) {
        if command == "echo $?" {
            return (format!("{}\n", self.last_code), 0);
        }
        if command == "kill %1" {
            let mut child = self.background.take().expect("a background command to kill");
            rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM)
                .unwrap();
            let status = child.wait().unwrap();
            return (String::new(), status.code().unwrap_or(0));
        }
        if let Some(background) = command.strip_suffix('&') {
            assert!(self.background.is_none(), "one background command at a time");
            let child = self.command(&format!("exec {background}")).stdout(Stdio::null()).spawn().unwrap();
            self.background = Some(child);
            return (String::new(), 0);
        }
        // Where a `cd` leaves the session: bash prints it after the command.
        let marker = "\u{1}cwd:";
        let script = format!("{{ {command}\n}} 2>&1; code=$?; printf '{marker}%s' \"$PWD\"; exit $code");
        let out = self.command(&script).stderr(Stdio::inherit()).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (output, cwd) = stdout.rsplit_once(marker).expect("the working directory after the command");
        self.cwd = PathBuf::from(cwd);
        let code = out.status.code().unwrap_or(-1);
        self.last_code = code;
        (output.to_owned(), code)
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        if let Some(mut child) = self.background.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// docs/walk.md, every command, against the estate of examples/estate/up.sh.
#[test]
fn the_walk_is_what_cfgsync_prints() {
    let _lock = machine_lock();
    let temp = tempfile::tempdir().unwrap();
    let clone = temp.path().join("cfgsync");
    std::fs::create_dir_all(clone.join("examples")).unwrap();
    std::fs::create_dir_all(clone.join("scripts")).unwrap();
    let copy =
        Command::new("cp").arg("-r").arg(root().join("examples/estate")).arg(clone.join("examples")).status().unwrap();
    assert!(copy.success());
    for leftover in [".run", "out", ".cfgsync"] {
        let _ = std::fs::remove_dir_all(clone.join("examples/estate").join(leftover));
    }
    std::fs::copy(root().join("scripts/tools.sh"), clone.join("scripts/tools.sh")).unwrap();
    let _down = Down(clone.clone());

    let bin = bin_dir();
    let kubectl = std::env::var("CFGSYNC_TEST_KUBECTL")
        .unwrap_or_else(|_| panic!("CFGSYNC_TEST_KUBECTL is not set: run the tests through scripts/test.sh"));
    let kubectl_dir = Path::new(&kubectl).parent().unwrap().display().to_string();
    // Longest first: the clone's path is inside the temp dir, the bin dir may be too.
    let replace = [
        (bin.display().to_string(), "/home/me/cfgsync/target/release"),
        (clone.display().to_string(), "/home/me/cfgsync"),
        (kubectl_dir, "/usr/local/bin"),
    ];

    let text = page("docs/walk.md");
    let steps = sessions(&text);
    assert!(steps.len() >= 15, "docs/walk.md: only {} commands", steps.len());
    let mut shell = Shell {
        cwd: clone.clone(),
        env_file: clone.join("examples/estate/.run/env.sh"),
        bin: bin.clone(),
        last_code: 0,
        background: None,
    };
    let started = Instant::now();
    for step in &steps {
        let mut want = step.output.clone();
        if step.command.contains("up.sh") {
            // This build's binaries are used as they are (CFGSYNC_BIN_DIR).
            want = want.lines().filter(|l| !l.contains("up.sh: building")).map(|l| format!("{l}\n")).collect();
        }
        let want = normalised(&want, &[]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let step_started = Instant::now();
        loop {
            let (got, code) = shell.run(&step.command);
            let got = normalised(&got, &replace);
            if got == want {
                break;
            }
            if step.command.ends_with("# a moment later") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            panic!(
                "docs/walk.md:{}: `{}` (exit {code}) prints something else than the page shows:\n--- page\n{want}--- got\n{got}",
                step.line, step.command
            );
        }
        eprintln!("walk: {:>5.1}s  {}", step_started.elapsed().as_secs_f64(), step.command);
        // Again while up: the variables only, nothing started twice.
        if step.command == "bash examples/estate/up.sh" {
            let (again, code) = shell.run(&step.command);
            let env = std::fs::read_to_string(&shell.env_file).unwrap();
            assert_eq!(
                (code, again),
                (0, format!("up.sh: the estate is already up; its variables (.run/env.sh):\n{env}")),
                "up.sh, run again"
            );
        }
        // Once the page's readiness check passed: the status page shows each
        // env and its targets by output and destination.
        if step.command.contains("/readyz") {
            let page = wait_for_page(&clone.join("examples/estate/.run/service.log"));
            for want in [
                "<h2>env <code>prod</code></h2>",
                "<h2>env <code>staging</code></h2>",
                "<code>ConfigMap web/web in context prod</code>",
                "<code>Secret api/api in context staging</code>",
                "<code>GitLab project platform/api at http://127.0.0.1:18929 (environment scope prod)</code>",
            ] {
                assert!(page.contains(want), "the status page names {want:?}:\n{page}");
            }
        }
    }
    eprintln!("the walk took {:?}", started.elapsed());
    // down.sh stopped everything: the ports are free again.
    for port in [12379, 18200, 16443, 16444, 18929, 18930, 18080] {
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "127.0.0.1:{port} still answers");
    }
    for state in [".run", "out", ".cfgsync"] {
        assert!(!clone.join("examples/estate").join(state).exists(), "down.sh removed {state}/");
    }
}

/// The status page of the walk's `cfgsync run` (port 18080), once it
/// answers; `log` is the service's log, for the message.
fn wait_for_page(log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(page) = http_get("127.0.0.1:18080", "/") {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "no status page within 30 s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.1 200").then_some(body)
}

/// The README's walk section names the walk's page, and each command it
/// lists is one the page (and so the test above) runs.
#[test]
fn the_readmes_walk_is_the_tested_one() {
    let readme = page("README.md");
    let section =
        readme.split("## A ten-minute walk").nth(1).expect("README.md has a \"## A ten-minute walk\" section");
    let section = section.split("\n## ").next().unwrap();
    assert!(section.contains("(docs/walk.md)"), "the section links docs/walk.md");
    let commands: Vec<String> = sessions(&page("docs/walk.md")).into_iter().map(|s| s.command).collect();
    let mut listed = 0;
    let mut inside = false;
    for line in section.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if inside && !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            listed += 1;
            let line = line.split("  #").next().unwrap().trim();
            assert!(
                commands.iter().any(|c| c.split("  #").next().unwrap().trim() == line),
                "README.md lists `{line}`, which docs/walk.md does not run"
            );
        }
    }
    assert!(listed >= 8, "the README lists the walk's commands: {listed}");
}

/// The README's main config example ("What a config looks like"), pasted
/// as it is into an empty directory, passes `validate`: no credential file
/// or template is made for it (the issue: it named a `password_file` and a
/// template that did not exist).
#[test]
fn the_readmes_main_config_validates_as_pasted() {
    let readme = page("README.md");
    let section = readme.split("## What a config looks like").nth(1).expect("the section");
    let block = section.split("```toml\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a toml block");
    let p = Project::new(block);
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 0, "README.md's main config, pasted, fails validate: {run:?}");
    assert!(run.stdout.contains("ok (2 envs, 1 outputs, 2 targets)"), "{run:?}");
    // Nothing was there but the config: validate made nothing either.
    let files: Vec<_> = std::fs::read_dir(p.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, ["cfgsync.toml"], "{files:?}");
}

/// `policy apply` and `policy plan` take `--policies DIR`; without it,
/// `policies/` next to the config, else the ones shipped with cfgsync;
/// the first line says which.
#[test]
fn policy_apply_says_which_policies_it_used() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    etcd.enable_auth_with_reader("rootpw", "alice", "alicepw", &[]);
    let p = Project::new(&server_config(
        &etcd,
        &vault,
        "[envs.staging]\n[envs.prod]\n\n[[output]]\nname = \"api\"\n[output.entries]\nA = \"x\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{{ env }}.env\"\n",
    ))
    .with_env("ETCDCTL_USER", "root:rootpw")
    .with_env("VAULT_TOKEN", &vault.root_token);

    // No policies/ next to the config: the shipped ones.
    let run = p.run(&["policy", "plan"]);
    assert_eq!(run.code, 1, "changes to make: {run:?}");
    let shipped =
        "policies: the ones shipped with cfgsync (no policies/ next to the config; --policies DIR names another)\n";
    assert!(run.stdout.starts_with(shipped), "{run:?}");
    let run = p.run(&["policy", "apply"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with(shipped), "{run:?}");
    assert!(run.stdout.contains("etcd role cfgsync-developer: create"), "{run:?}");
    assert!(run.stdout.contains("etcd role cfgsync-reconciler-prod: create"), "{run:?}");
    let roles = etcd.ctl_ok(&["role", "list"]);
    assert!(roles.contains("cfgsync-developer") && roles.contains("cfgsync-reconciler-staging"), "{roles}");

    // --policies DIR (anywhere) wins, and is named.
    let role = "name = \"{name}\"\n[etcd]\nread = [\"{{ prefix }}/staging/\"]\n";
    p.write("elsewhere/ops.toml", &role.replace("{name}", "ops-reader"));
    let run = p.run(&["policy", "apply", "--policies", "elsewhere"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "policies: elsewhere (--policies)\netcd role ops-reader: create, grant read /cfgsync/staging/*\n\
         vault fingerprint key secret/prod/cfgsync/fingerprint#key: unchanged\n\
         vault fingerprint key secret/staging/cfgsync/fingerprint#key: unchanged\n"
    );

    // policies/ next to the config wins over the shipped ones.
    p.write("policies/team.toml", &role.replace("{name}", "team-reader"));
    let run = p.run(&["policy", "plan"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.starts_with("policies: policies (next to the config)\netcd role team-reader: create"),
        "{run:?}"
    );
    let run = p.run(&["--output", "json", "policy", "plan", "--policies", "elsewhere"]);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["policies"], "elsewhere", "{run:?}");
    assert_eq!(doc["changes"], 0, "{run:?}");

    // A --policies that is not there is an error naming it; nothing applied.
    let run = p.run(&["policy", "apply", "--policies", "missing"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("cannot read the policies directory missing"), "{run:?}");
}
