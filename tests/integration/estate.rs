//! Safe in a real estate (issue 15), the render and plan side: what a
//! target held while secret is never shown, templates read nothing but
//! `templates/`, no input overflows a stack, renderings are timed alone,
//! commands are rendered, and no render worker outlives a command.

use crate::support::{Project, Run, wait_until};

/// A copy of examples/quickstart (the file source; no server needed).
fn quickstart() -> Project {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    let p = Project::new("");
    let copy = std::process::Command::new("cp").arg("-r").arg(src.join(".")).arg(p.dir.path()).status().unwrap();
    assert!(copy.success());
    let _ = std::fs::remove_dir_all(p.path("out"));
    p
}

const QUICKSTART_PASSWORD: &str = "prod-password-from-the-vault";

fn assert_hidden(what: &str, r: &Run, secret: &str) {
    assert!(!r.all().contains(secret), "{what}: the previous secret is shown:\n{r:?}");
}

#[test]
fn plan_never_shows_what_a_target_held_while_secret() {
    let p = quickstart();
    assert_eq!(p.run(&["reconcile", "--once"]).code, 0);
    // The output stops reading secrets: its new content is plain, what the
    // file holds is the old password.
    let config = p.read("cfgsync.toml");
    let line = config.lines().find(|l| l.starts_with("DATABASE_URL = ")).unwrap();
    p.write("cfgsync.toml", &config.replace(line, "DATABASE_URL = \"postgres://api:literal@db/api\""));
    for args in [&["plan", "--env", "prod"][..], &["plan", "--env", "prod", "--output", "json"]] {
        let r = p.run(args);
        assert_eq!(r.code, 0, "{r:?}");
        assert_hidden(&format!("{args:?}"), &r, QUICKSTART_PASSWORD);
        assert!(r.stdout.contains("previous content was secret: not shown"), "{args:?}: says why: {r:?}");
        assert!(r.stdout.contains("DATABASE_URL"), "{args:?}: the changed entry is named: {r:?}");
    }
    let r = p.run(&["reconcile", "--once", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_hidden("reconcile", &r, QUICKSTART_PASSWORD);
    // Now it holds plain content this instance wrote: shown again.
    p.write("cfgsync.toml", &p.read("cfgsync.toml").replace("api:literal@db", "api:other@db"));
    let r = p.run(&["plan", "--env", "prod"]);
    assert!(r.stdout.contains("-DATABASE_URL=postgres://api:literal@db/api"), "plain on both sides: a diff: {r:?}");
}

#[test]
fn a_file_recorded_as_tainted_stays_secret_whatever_its_mode() {
    let p = quickstart();
    assert_eq!(p.run(&["reconcile", "--once", "--env", "prod"]).code, 0);
    // Someone made the secret file world-readable: the record still says
    // it was written from a tainted output.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.path("out/prod/api.env"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = p.read("cfgsync.toml");
    let line = config.lines().find(|l| l.starts_with("DATABASE_URL = ")).unwrap();
    p.write("cfgsync.toml", &config.replace(line, "DATABASE_URL = \"postgres://api:literal@db/api\""));
    let r = p.run(&["plan", "--env", "prod", "--output", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_hidden("plan --output json", &r, QUICKSTART_PASSWORD);
    assert!(r.stdout.contains("previous content was secret"), "{r:?}");
}

const DEPTH_CONFIG: &str = r#"
interval = "1h"

[files]
dir = "source"

[service]
debounce = "50ms"

[envs.prod]

[[output]]
name = "main"
[output.entries]
A = { template = "main.tera" }
[[output.target]]
kind = "file"
path = "out/main.json"
format = "json"

[[output]]
name = "plain"
[output.entries]
HOST = "{{ key(name='host') }}"
[[output.target]]
kind = "file"
path = "out/plain.env"
"#;

/// `{{ 1 + 1 + … }}` with `terms` terms.
fn chain(terms: usize) -> String {
    format!("{{{{ {} }}}}\n", vec!["1"; terms].join(" + "))
}

fn assert_no_abort(what: &str, r: &Run) {
    assert!(
        !r.stderr.contains("overflow") && !r.stderr.contains("panicked") && r.code != 134 && r.code >= 0,
        "{what}: {r:?}"
    );
}

#[test]
fn no_input_overflows_a_stack_at_validate() {
    let p = Project::new(DEPTH_CONFIG);
    p.write("source/prod.toml", "[keys]\nhost = \"db.one\"\n");
    let cases = [
        (chain(150_000), "more than 100 operators"),
        (format!("{{{{ {}1{} }}}}", "(".repeat(100_000), ")".repeat(100_000)), "brackets more than 64 deep"),
        (format!("{}x{}", "{% if true %}".repeat(10_000), "{% endif %}".repeat(10_000)), "block tags nest"),
        (format!("{{{{ x{}{} }}}}", " | default(value=y".repeat(10_000), ")".repeat(10_000)), "brackets"),
    ];
    for (text, want) in cases {
        assert!(text.len() < 1024 * 1024, "under the template size limit");
        p.write("templates/main.tera", &format!("\n{text}"));
        let r = p.run(&["validate"]);
        assert_no_abort(want, &r);
        assert_eq!(r.code, 2, "{want}: {r:?}");
        assert!(r.stderr.contains("templates/main.tera:2:") && r.stderr.contains(want), "{want}: {r:?}");
        let r = p.run(&["reconcile", "--once"]);
        assert_eq!(r.code, 2, "{want}: {r:?}");
        assert!(!p.path("out").exists(), "nothing written");
    }
    // The config itself, nested deeper than its parser allows.
    p.write("templates/main.tera", "{{ key(name='host') }}");
    let deep = format!("{DEPTH_CONFIG}\n[extra]\nx = {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    p.write("cfgsync.toml", &deep);
    let r = p.run(&["validate"]);
    assert_no_abort("config", &r);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("cfgsync.toml:") && r.stderr.contains("recursion"), "{r:?}");
}

#[test]
fn deep_values_from_a_source_or_a_target_fail_their_env_only() {
    let p = Project::new(DEPTH_CONFIG);
    p.write("templates/main.tera", "{{ key(name='host') }}");
    // A source file nested deeper than TOML's parser allows.
    p.write("source/prod.toml", &format!("[keys]\nhost = {}{}\n", "[".repeat(100_000), "]".repeat(100_000)));
    let r = p.run(&["plan"]);
    assert_no_abort("source", &r);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("source/prod.toml:2:"), "{r:?}");
    // A JSON file target that holds 100,000 nested arrays: read back to name
    // the entries that change, refused by the JSON parser's depth limit.
    p.write("source/prod.toml", "[keys]\nhost = \"db.one\"\n");
    // Written by cfgsync first (a file it has no record of is not its own).
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    p.write("out/main.json", &format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)));
    let r = p.run(&["plan"]);
    assert_no_abort("target", &r);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("out/main.json"), "{r:?}");
}

#[test]
fn a_long_operator_chain_hot_reloaded_into_the_service_is_refused() {
    use crate::service::{Service, read_or_empty, save_like_an_editor};
    use std::time::Duration;
    let p = Project::new(DEPTH_CONFIG);
    p.write("source/prod.toml", "[keys]\nhost = \"db.one\"\n");
    p.write("templates/main.tera", "{{ key(name='host') }}");
    let mut service = Service::start(&p, &[], &[]);
    wait_until("the first pass", Duration::from_secs(30), || {
        (read_or_empty(&p.path("out/plain.env")) == "HOST=db.one\n").then_some(())
    });
    save_like_an_editor(&p.path("templates/main.tera"), &chain(150_000));
    wait_until("the reload to be refused", Duration::from_secs(30), || {
        service.log().contains("more than 100 operators").then_some(())
    });
    save_like_an_editor(&p.path("source/prod.toml"), "[keys]\nhost = \"db.two\"\n");
    wait_until("the old config to go on", Duration::from_secs(30), || {
        (read_or_empty(&p.path("out/plain.env")) == "HOST=db.two\n").then_some(())
    });
    assert!(service.try_exit().is_none(), "the service is still running:\n{}", service.log());
}

/// An etcd source with a password file beside the config (validate reads
/// no server), and a plain output rendering `main.tera` into a ConfigMap-
/// like world-readable file.
const LINKS_CONFIG: &str = r#"
[etcd]
endpoints = ["http://127.0.0.1:1"]
user = "cfgsync"
password_file = "etcd-password"

[envs.prod]

[[output]]
name = "app"
[output.entries]
A = { template = "main.tera" }
[[output.target]]
kind = "file"
path = "out/app.txt"
format = "raw"
"#;

const ETCD_PASSWORD: &str = "CANARY-etcd-pw-7f3a";

fn links_project() -> Project {
    let p = Project::new(LINKS_CONFIG);
    p.write("etcd-password", ETCD_PASSWORD);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p.path("etcd-password"), std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

#[test]
fn a_template_never_reads_the_config_a_credential_or_anything_outside_templates() {
    use std::os::unix::fs::symlink;
    // templates -> . : the config's directory, password file and all.
    let p = links_project();
    p.write("main.tera", "{% include \"etcd-password\" %}");
    symlink(".", p.path("templates")).unwrap();
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("templates is a symlink (to .)") && r.stderr.contains("real directory"), "{r:?}");
    assert!(!r.all().contains(ETCD_PASSWORD), "{r:?}");

    // templates -> /elsewhere: refused the same way.
    let p = links_project();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("main.tera"), "x").unwrap();
    symlink(elsewhere.path(), p.path("templates")).unwrap();
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("is a symlink"), "{r:?}");

    // Links inside templates/ to the credential, the config, outside: refused.
    for (link, to, want) in [
        ("pw.tera", "../etcd-password", "outside templates/"),
        ("config.tera", "../cfgsync.toml", "outside templates/"),
        ("sub", "/etc", "outside templates/"),
    ] {
        let p = links_project();
        p.write("templates/main.tera", "x");
        symlink(to, p.path(&format!("templates/{link}"))).unwrap();
        let r = p.run(&["validate"]);
        assert_eq!(r.code, 2, "{link}: {r:?}");
        assert!(r.stderr.contains(&format!("templates/{link}")) && r.stderr.contains(want), "{link}: {r:?}");
    }

    // The credential file inside templates/, or a hard link to it there.
    let p = links_project();
    p.write("templates/main.tera", "x");
    p.write("templates/pw", ETCD_PASSWORD);
    p.write("cfgsync.toml", &LINKS_CONFIG.replace("\"etcd-password\"", "\"templates/pw\""));
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("templates/pw: is the etcd password_file"), "{r:?}");
    let p = links_project();
    p.write("templates/main.tera", "{% include \"pw\" %}");
    std::fs::hard_link(p.path("etcd-password"), p.path("templates/pw")).unwrap();
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("is the etcd password_file (a hard link)"), "{r:?}");
    assert!(!r.all().contains(ETCD_PASSWORD), "{r:?}");
}

#[test]
fn templates_mounted_the_kubernetes_way_keep_working() {
    use std::os::unix::fs::symlink;
    // A ConfigMap volume: the files live in a timestamped directory, `..data`
    // points at it, and every name is a link through `..data`.
    let p = Project::new(&format!(
        "[files]\n{}",
        LINKS_CONFIG.split("[envs.prod]").nth(1).map(|r| format!("[envs.prod]{r}")).unwrap()
    ));
    p.write("source/prod.toml", "[keys]\nhost = \"db.prod\"\n");
    let stamp = "..2026_12_07_10_00_00.123456789";
    p.write(&format!("templates/{stamp}/main.tera"), "{% include \"parts/host.tera\" %}!");
    p.write(&format!("templates/{stamp}/parts/host.tera"), "{{ key(name='host') }}");
    symlink(stamp, p.path("templates/..data")).unwrap();
    symlink("..data/main.tera", p.path("templates/main.tera")).unwrap();
    symlink("..data/parts", p.path("templates/parts")).unwrap();
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(p.read("out/app.txt"), "db.prod!");
}

#[test]
fn a_template_only_its_owner_can_read_is_refused_in_an_output_that_reads_no_secret() {
    use std::os::unix::fs::PermissionsExt;
    let config = LINKS_CONFIG.replace(
        "[etcd]\nendpoints = [\"http://127.0.0.1:1\"]\nuser = \"cfgsync\"\npassword_file = \"etcd-password\"\n",
        "[files]\n",
    );
    let p = Project::new(&config);
    p.write("source/prod.toml", "[keys]\nhost = \"db.prod\"\n\n[secrets.db]\npassword = \"pw\"\n");
    p.write("templates/main.tera", "{% include \"private.tera\" %}");
    p.write("templates/private.tera", "CANARY-private-template");
    std::fs::set_permissions(p.path("templates/private.tera"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("cfgsync.toml:")
            && r.stderr.contains("private.tera can be read only by its owner or group")
            && r.stderr.contains("chmod 0644"),
        "{r:?}"
    );
    assert!(!r.all().contains("CANARY-private-template"), "{r:?}");
    // An output that reads a secret is secret as a whole: it may use it.
    p.write("templates/main.tera", "{% include \"private.tera\" %}{{ secret(path='db', field='password') | length }}");
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(crate::support::mode(&p.path("out/app.txt")), 0o600);
}

#[test]
fn check_and_reload_commands_are_rendered_per_env_and_checked_at_validate() {
    let config = |check: &str, reload: &str| {
        format!(
            "[files]\n[envs.prod]\n[envs.staging]\n\n[[output]]\nname = \"app\"\n[output.entries]\nA = \"x\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{{{{ env }}}}/app.env\"\ncheck_cmd = {check:?}\nreload_cmd = {reload:?}\n"
        )
    };
    let p = Project::new(&config(
        "test -s {{ src }} && echo checked-{{ env }} >> checks.log",
        "echo reloaded-{{env}} >> reloads.log",
    ));
    p.write("source/prod.toml", "[keys]\n");
    p.write("source/staging.toml", "[keys]\n");
    let r = p.run(&["reconcile", "--once"]);
    assert_eq!(r.code, 0, "{r:?}");
    let lines = |name: &str| {
        let mut l: Vec<String> = p.read(name).lines().map(str::to_owned).collect();
        l.sort();
        l
    };
    assert_eq!(lines("reloads.log"), ["reloaded-prod", "reloaded-staging"], "rendered, never `{{{{env}}}}`");
    assert_eq!(lines("checks.log"), ["checked-prod", "checked-staging"]);
    // What a command cannot be: a lookup (no source value reaches a shell),
    // an unknown variable, a forbidden function; `src` only in check_cmd.
    for (check, reload, want) in [
        ("true", "echo {{ key(name='host') }}", "only available while rendering"),
        ("true", "echo {{ nope }}", "nope"),
        ("echo {{ get_env(name='HOME') }}", "true", "not allowed"),
        ("true", "cat {{ src }}", "src"),
    ] {
        let p = Project::new(&config(check, reload));
        let r = p.run(&["validate"]);
        assert_eq!(r.code, 2, "{reload}: {r:?}");
        assert!(r.stderr.contains("cfgsync.toml:9:") && r.stderr.contains(want), "{check} / {reload}: {r:?}");
    }
}

/// Live processes (not zombies) running the executable at `exe`.
fn running(exe: &std::path::Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if std::fs::read_link(entry.path().join("exe")).is_ok_and(|p| p == exe) {
            pids.push(pid);
        }
    }
    pids
}

/// User and system CPU time of `pid`, in clock ticks (1/100 s).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0)
}

#[test]
fn no_render_worker_outlives_a_command_on_any_exit() {
    use crate::support::wait_until;
    use std::time::Duration;
    // A copy of the binary under a path of this test's own (a hard link: the
    // kernel names the file it ran), so its workers can be told apart from
    // every other test's.
    let bin = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = bin.path().join("cfgsync");
    std::fs::hard_link(env!("CARGO_BIN_EXE_cfgsync"), &exe)
        .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_cfgsync"), &exe).map(|_| ()))
        .unwrap();
    let spin = "{% set r = range(end=3000) %}{% for i in r %}{% for j in r %}{% for k in r %}{% endfor %}{% endfor %}{% endfor %}";
    let p = Project::new(&format!(
        "[files]\n[envs.prod]\n[render]\ntimeout = \"10m\"\n\n[[output]]\nname = \"app\"\n[output.entries]\nA = {spin:?}\n[[output.target]]\nkind = \"file\"\npath = \"out/app.env\"\n"
    ));
    p.write("source/prod.toml", "[keys]\n");
    let command = |args: &[&str]| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.env("NO_COLOR", "1").env("HOME", p.dir.path()).current_dir(p.dir.path());
        cmd.arg("--config").arg(p.path("cfgsync.toml")).args(args);
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        cmd
    };
    // Killed by a signal while a worker spins on a template that never
    // writes: the worker goes with it.
    for signal in [rustix::process::Signal::TERM, rustix::process::Signal::INT] {
        let mut parent = command(&["reconcile", "--once"]).spawn().unwrap();
        let parent_pid = parent.id() as i32;
        // Spinning: it has used a quarter second of CPU (started and
        // compiled long before), so it has the template and is rendering.
        let workers = wait_until("a render worker to spin", Duration::from_secs(30), || {
            let w: Vec<i32> = running(&exe).into_iter().filter(|p| *p != parent_pid && cpu_ticks(*p) > 25).collect();
            (!w.is_empty()).then_some(w)
        });
        rustix::process::kill_process(rustix::process::Pid::from_raw(parent_pid).unwrap(), signal).unwrap();
        parent.wait().unwrap();
        // Gone within a deadline (the kernel's SIGKILL is asynchronous).
        crate::support::poll_until(Duration::from_secs(5), Duration::from_millis(25), || {
            running(&exe).is_empty().then_some(())
        });
        let leftover = running(&exe);
        for pid in &leftover {
            // Ours (the test's own binary path): ended so the test leaves nothing behind.
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(*pid).unwrap(),
                rustix::process::Signal::KILL,
            );
        }
        assert!(leftover.is_empty(), "{signal:?}: workers {workers:?} outlived cfgsync: {leftover:?}");
    }
    // A normal exit and an error exit leave none either.
    p.write(
        "cfgsync.toml",
        &p.read("cfgsync.toml").replace(&format!("{spin:?}"), "\"{% for i in range(end=3) %}{{ i }}{% endfor %}\""),
    );
    for (args, code) in [(&["reconcile", "--once"][..], 0), (&["pull", "--env", "nope"][..], 2)] {
        let status = command(args).status().unwrap();
        assert_eq!(status.code(), Some(code), "{args:?}");
        assert_eq!(running(&exe), Vec::<i32>::new(), "{args:?}: no worker left at exit");
    }
}
