//! The template sandbox, attacked through the real binary: secrets in
//! error text after any transformation, the process environment, recursion,
//! loop and memory bombs, and a bad template hot-reloaded into the service.

use std::time::{Duration, Instant};

use crate::service::{Service, read_or_empty, save_like_an_editor};
use crate::support::{Project, Run, wait_until};

const CANARY: &str = "CANARY-9b2e-Sandbox";

/// Every recognisable form of the canary: as is, in any case, reversed,
/// with separators removed, and base64 of the plain form.
fn assert_no_canary(what: &str, text: &str) {
    use base64::Engine;
    let core: String = CANARY.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_lowercase();
    let squeezed: String = text.to_lowercase().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let reversed: String = core.chars().rev().collect();
    for needle in [core.clone(), reversed, "9b2e".to_owned(), "e2b9".to_owned()] {
        assert!(!squeezed.contains(&needle), "{what}: canary form {needle:?} leaked:\n{text}");
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(CANARY);
    assert!(!text.contains(&b64[..12]), "{what}: base64 canary leaked:\n{text}");
}

fn project(entries: &str) -> Project {
    let p = Project::new(&format!(
        r#"[files]
[envs.prod]

[[output]]
name = "app"
[output.entries]
{entries}
[[output.target]]
kind = "file"
path = "out/app.env"

[[output]]
name = "plain"
[output.entries]
HOST = "{{{{ key(name='host') }}}}"
[[output.target]]
kind = "file"
path = "out/plain.env"
"#
    ));
    p.write(
        "source/prod.toml",
        &format!("[keys]\nhost = \"db.prod\"\n\n[secrets.db]\npassword = \"{CANARY}\"\nuser = \"admin\"\n"),
    );
    p
}

fn toml_string(template: &str) -> String {
    format!("\"{}\"", template.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn a_secret_transformed_by_any_filter_never_reaches_errors_json_or_logs() {
    let pw = "secret(path='db', field='password')";
    let filters = [
        "lower",
        "upper",
        "capitalize",
        "title",
        "reverse",
        "trim",
        "escape",
        "addslashes",
        "urlencode",
        "json_encode",
        "truncate(length=10)",
        "replace(from='-', to=' ')",
        "split(pat='-') | join(sep='_')",
        "slice(start=2) | join(sep='')",
        "indent(prefix='> ')",
        "linebreaksbr",
        "striptags",
        "spaceless",
    ];
    let mut entries = String::new();
    for (i, f) in filters.iter().enumerate() {
        // Each entry fails after transforming the secret: a key named after
        // it, a number made of it, a thrown message, a field named after it.
        let template = match i % 4 {
            0 => format!("{{{{ key(name={pw} | {f}) }}}}"),
            1 => format!("{{{{ {pw} | {f} | round }}}}"),
            2 => format!("{{{{ throw(message='bad: ' ~ {pw} | {f}) }}}}"),
            _ => format!("{{{{ secret(path='db', field={pw} | {f}) }}}}"),
        };
        // One output per entry would be noisier; the output fails at its
        // first entry, so each filter gets its own output below.
        entries.push_str(&format!("E{i} = {}\n", toml_string(&template)));
    }
    for (i, line) in entries.lines().enumerate() {
        let p = project(line);
        for args in [
            vec!["plan"],
            vec!["plan", "--output", "json"],
            vec!["reconcile", "--once"],
            vec!["reconcile", "--once", "--output", "json"],
            vec!["pull", "--env", "prod", "--dry-run"],
        ] {
            let mut cmd = p.command(&args);
            cmd.env("RUST_LOG", "trace");
            let r = crate::support::run_output(cmd.output().unwrap());
            assert_eq!(r.code, 1, "filter {}: {args:?}: {r:?}", filters[i]);
            assert_no_canary(&format!("filter {} {args:?}", filters[i]), &r.all());
            assert!(r.all().contains("withheld"), "the error says why it is short: {r:?}");
        }
        // The output that reads no secret still converges.
        assert_eq!(p.read("out/plain.env"), "HOST=db.prod\n");
        assert!(!p.path("out/app.env").exists());
    }
}

#[test]
fn templates_cannot_read_the_process_environment() {
    for template in [
        "{{ get_env(name='VAULT_TOKEN') }}",
        "{{ get_env(name='VAULT_TOKEN', default='') }}",
        "{% if true %}{{ 'x' ~ get_env(name='ETCDCTL_USER') }}{% endif %}",
        "{{ now() }}",
        "{{ get_random(end=10) }}",
    ] {
        let p = project(&format!("A = {}", toml_string(template)));
        let r = p.command(&["validate"]).env("VAULT_TOKEN", CANARY).output().unwrap();
        let r = crate::support::run_output(r);
        assert_eq!(r.code, 2, "{template}: {r:?}");
        assert!(r.stderr.contains("cfgsync.toml:7:") && r.stderr.contains("is not allowed"), "{template}: {r:?}");
        let r = crate::support::run_output(
            p.command(&["reconcile", "--once"]).env("VAULT_TOKEN", CANARY).output().unwrap(),
        );
        assert_eq!(r.code, 2, "{r:?}");
        assert!(p.state().iter().all(|(path, ..)| !path.starts_with(p.path("out"))), "nothing written");
    }
    // A target path is a template too, rendered in the same sandbox.
    let p = project("A = \"x\"");
    p.write("cfgsync.toml", &p.read("cfgsync.toml").replace("out/app.env", "out/{{ get_env(name='HOME') }}.env"));
    let r = p.run(&["validate"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("not allowed"), "{r:?}");
}

#[test]
fn recursion_is_refused_at_validate() {
    type Files<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Files, &str); 3] = [
        (&[("loop.tera", "a{% include \"loop.tera\" %}")], "A = { template = \"loop.tera\" }"),
        (
            &[("a.tera", "{% include \"b.tera\" %}"), ("b.tera", "{% include \"a.tera\" %}")],
            "A = { template = \"a.tera\" }",
        ),
        (
            &[("m.tera", "{% macro f(n) %}{{ self::f(n=n) }}{% endmacro f %}")],
            "A = \"{% import 'm.tera' as m %}{{ m::f(n=1) }}\"",
        ),
    ];
    for (files, entries) in cases {
        let p = project(entries);
        for (name, text) in files {
            p.write(&format!("templates/{name}"), text);
        }
        let r = p.run(&["validate"]);
        assert_eq!(r.code, 2, "{entries}: {r:?}");
        assert!(r.stderr.contains("cannot recurse"), "{r:?}");
        assert!(!r.stderr.contains("@output") && !r.stderr.contains("__tera"), "no Tera internals: {r:?}");
    }
}

fn timed(p: &Project, args: &[&str]) -> (Run, Duration, u64) {
    let start = Instant::now();
    let mut child =
        p.command(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    // The parent's own peak memory, sampled while it runs.
    let mut peak_kib = 0u64;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (crate::support::run_output(out), start.elapsed(), peak_kib)
}

#[test]
fn loop_and_memory_bombs_fail_their_output_quickly_and_never_the_process() {
    let bombs = [
        // 10^8 numbers in one call.
        "{% for i in range(end=100000000) %}x{% endfor %}",
        // A string doubled 40 times, never written until the end.
        "{% set_global s = 'xxxxxxxx' %}{% for i in range(end=40) %}{% set_global s = s ~ s %}{% endfor %}{{ s | length }}",
        // 2.7·10^10 empty iterations: no write, no function call.
        "{% set r = range(end=3000) %}{% for i in r %}{% for j in r %}{% for k in r %}{% endfor %}{% endfor %}{% endfor %}",
        // A macro buffering a huge text before it is written.
        "{% for i in range(end=90000) %}{{ 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy' }}{% endfor %}",
    ];
    for bomb in bombs {
        let p = project(&format!("A = {}", toml_string(bomb)));
        assert_eq!(p.run(&["validate"]).code, 0, "a bomb is valid Tera: it must be stopped at render time");
        let (r, took, parent_peak_kib) = timed(&p, &["reconcile", "--once"]);
        assert_eq!(r.code, 1, "{bomb}: exit 1, not an abort: {r:?}");
        assert!(r.stderr.contains("output \"app\""), "{r:?}");
        assert!(
            r.stderr.contains("time budget")
                || r.stderr.contains("max_range")
                || r.stderr.contains("max_entry_size")
                || r.stderr.contains("render worker died"),
            "{r:?}"
        );
        assert_eq!(p.read("out/plain.env"), "HOST=db.prod\n", "the other output converges");
        assert!(took < Duration::from_secs(10), "{bomb}: stopped within seconds, took {took:?}");
        assert!(parent_peak_kib < 200 * 1024, "{bomb}: cfgsync itself stays small ({parent_peak_kib} KiB)");
    }
}

const SERVICE_CONFIG: &str = r#"
interval = "1h"

[files]
dir = "source"

[service]
debounce = "50ms"

[envs.prod]

[[output]]
name = "app"
[output.entries]
A = { template = "app.tera" }
[[output.target]]
kind = "file"
path = "out/app.env"

[[output]]
name = "plain"
[output.entries]
HOST = "{{ key(name='host') }}"
[[output.target]]
kind = "file"
path = "out/plain.env"
"#;

#[test]
fn a_bad_template_hot_reloaded_into_the_service_never_stops_it() {
    let p = Project::new(SERVICE_CONFIG);
    p.write("source/prod.toml", "[keys]\nhost = \"db.one\"\n");
    p.write("templates/app.tera", "{{ key(name='host') }}-app");
    let mut service = Service::start(&p, &[], &[]);
    wait_until("the first pass", Duration::from_secs(30), || {
        (read_or_empty(&p.path("out/app.env")) == "A=db.one-app\n").then_some(())
    });

    // A self-including template: refused by the reload, the old one keeps running.
    save_like_an_editor(&p.path("templates/app.tera"), "{% include \"app.tera\" %}");
    wait_until("the reload to be refused", Duration::from_secs(30), || {
        service.log().contains("cannot recurse").then_some(())
    });
    save_like_an_editor(&p.path("source/prod.toml"), "[keys]\nhost = \"db.two\"\n");
    wait_until("the old config to render the new value", Duration::from_secs(30), || {
        (read_or_empty(&p.path("out/app.env")) == "A=db.two-app\n").then_some(())
    });

    // A loop bomb passes validation: its output fails, the service lives on
    // and the other output still follows the source.
    save_like_an_editor(
        &p.path("templates/app.tera"),
        "{% set r = range(end=3000) %}{% for i in r %}{% for j in r %}{% for k in r %}{% endfor %}{% endfor %}{% endfor %}",
    );
    wait_until("the bomb to be reloaded and stopped", Duration::from_secs(30), || {
        service.log().contains("time budget").then_some(())
    });
    save_like_an_editor(&p.path("source/prod.toml"), "[keys]\nhost = \"db.three\"\n");
    wait_until("the plain output to follow", Duration::from_secs(30), || {
        (read_or_empty(&p.path("out/plain.env")) == "HOST=db.three\n").then_some(())
    });
    assert!(service.try_exit().is_none(), "the service is still running:\n{}", service.log());
    assert_eq!(read_or_empty(&p.path("out/app.env")), "A=db.two-app\n", "the failed output keeps its last good file");
}

/// The render worker through a wrapper that starts it `delay` late, as a
/// loaded machine or a config of thousands of templates does.
fn slow_worker(dir: &std::path::Path, delay: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = dir.join("slow-worker");
    // The worker runs with an empty environment: the path is in the script.
    let script = format!("#!/bin/sh\nsleep {delay}\nexec '{}' \"$@\"\n", env!("CARGO_BIN_EXE_cfgsync"));
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outputs_time_budget_counts_rendering_only_not_the_worker_starting() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[files]
[envs.prod]
[render]
timeout = "100ms"

[[output]]
name = "app"
[output.entries]
A = "{% for i in range(end=3) %}{{ i }}{% endfor %}"
[[output.target]]
kind = "file"
path = "out/app.env"
"#;
    let config =
        cfgsync::config::parse(&dir.path().join("cfgsync.toml"), text, &BTreeMap::<String, String>::new()).unwrap();
    let templates = cfgsync::render::Templates::compile(&config).unwrap();
    assert!(templates.runs_tera(0), "a Tera output: it renders in the worker");
    // Starting takes ten times the budget (and more than the half-second
    // grace the parent gives a rendering): only rendering is timed.
    let sandbox = cfgsync::render::sandbox::Sandbox::worker(slow_worker(dir.path(), "1"));
    let snapshot = Arc::new(cfgsync::source::Snapshot { env: "prod".into(), ..Default::default() });
    let started = Instant::now();
    let results = sandbox.render(&templates, &snapshot, &[0]).await;
    let rendered = results.into_iter().next().unwrap().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rendered.entries["A"].expose(), b"012");
    assert!(started.elapsed() >= Duration::from_secs(1), "the delay was there");
    // A template that overruns the budget still fails, on the worker's clock.
    // 2.7·10¹⁰ empty iterations: no write, no call; the parent's kill stops it.
    let spin = "{% set r = range(end=3000) %}{% for i in r %}{% for j in r %}{% for k in r %}{% endfor %}{% endfor %}{% endfor %}";
    let slow = text.replace("{% for i in range(end=3) %}{{ i }}{% endfor %}", spin);
    let config =
        cfgsync::config::parse(&dir.path().join("cfgsync.toml"), &slow, &BTreeMap::<String, String>::new()).unwrap();
    let templates = cfgsync::render::Templates::compile(&config).unwrap();
    let results = sandbox.render(&templates, &snapshot, &[0]).await;
    let e = results.into_iter().next().unwrap().expect_err("over the budget");
    assert!(e.to_string().contains("time budget"), "{e}");
}

/// The live processes whose command line holds `needle`.
fn live_processes_with(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Prewarming is a task the sandbox owns: `stop_workers` (what `main`
/// does last) stops a worker that is still starting, and none starts
/// after it. Before, prewarm's tasks were detached: the worker went on
/// starting and then idled in the pool until the process exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_workers_stops_prewarming_too() {
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    let text = "[files]\n[envs.prod]\n\n[[output]]\nname = \"app\"\n[output.entries]\nA = \"{% for i in range(end=3) %}{{ i }}{% endfor %}\"\n[[output.target]]\nkind = \"file\"\npath = \"out/app.env\"\n";
    let config =
        cfgsync::config::parse(&dir.path().join("cfgsync.toml"), text, &BTreeMap::<String, String>::new()).unwrap();
    let templates = cfgsync::render::Templates::compile(&config).unwrap();
    // Starting takes 10 s: the stop comes while the worker is starting.
    let wrapper = slow_worker(dir.path(), "10");
    let sandbox: &'static _ = Box::leak(Box::new(cfgsync::render::sandbox::Sandbox::worker(wrapper.clone())));
    sandbox.prewarm(&templates);
    let needle = wrapper.to_str().unwrap();
    wait_until("the worker is starting", Duration::from_secs(10), || {
        (!live_processes_with(needle).is_empty()).then_some(())
    });
    let started = Instant::now();
    sandbox.stop_workers().await;
    assert!(started.elapsed() < Duration::from_secs(5), "stopping does not wait for the start");
    wait_until("no worker is left", Duration::from_secs(5), || live_processes_with(needle).is_empty().then_some(()));
}

/// The render worker through a wrapper that copies everything the worker
/// is sent to `dir/stdin.<pid>`, one file per worker (the worker is given
/// the wrapper's pid as its parent: the wrapper outlives it).
fn recording_worker(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = dir.join("recording-worker");
    let script = format!(
        "#!/bin/sh\ntee '{}/stdin.'$$ | '{}' __render-worker $$\n",
        dir.display(),
        env!("CARGO_BIN_EXE_cfgsync")
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// A batch of Tera outputs is shared by the warm workers, which render
/// their parts at once; the results come back whole and in order. Before,
/// one worker rendered the whole batch while the others (started by
/// prewarming) stayed idle: the confd benchmark's 100 outputs took one
/// core's time, not the machine's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_shared_by_the_warm_workers_in_order() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let mut text = "[files]\n[envs.prod]\n".to_owned();
    for i in 0..40 {
        text.push_str(&format!(
            "\n[[output]]\nname = \"out{i}\"\n[output.entries]\nA = \"{i}:{{% for i in range(end=300) %}}{{{{ i }}}}{{% endfor %}}\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{i}.env\"\n"
        ));
    }
    let config =
        cfgsync::config::parse(&dir.path().join("cfgsync.toml"), &text, &BTreeMap::<String, String>::new()).unwrap();
    let templates = cfgsync::render::Templates::compile(&config).unwrap();
    let sandbox: &'static _ =
        Box::leak(Box::new(cfgsync::render::sandbox::Sandbox::worker_pool(recording_worker(dir.path()), 2)));
    sandbox.prewarm(&templates);
    let snapshot = Arc::new(cfgsync::source::Snapshot { env: "prod".into(), ..Default::default() });
    let indices: Vec<usize> = (0..40).collect();
    let loop_text: String = (0..300).map(|n| n.to_string()).collect();
    // A batch may start before both workers are ready (a loaded machine
    // starts them slowly): batches go on until one finds both warm, and
    // that batch is rendered by both; with one worker taking each batch
    // whole, no batch ever is.
    let renders_per_worker = || {
        let mut rendering = BTreeMap::new();
        for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("stdin.") {
                let sent = std::fs::read(entry.path()).unwrap();
                rendering.insert(name, sent.windows(b"\"Render\"".len()).filter(|w| w == b"\"Render\"").count());
            }
        }
        rendering
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut batches = 0;
    loop {
        let before = renders_per_worker();
        let results = sandbox.render(&templates, &snapshot, &indices).await;
        batches += 1;
        assert_eq!(results.len(), 40);
        for (i, result) in results.into_iter().enumerate() {
            let rendered = result.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rendered.output, format!("out{i}"), "in order");
            assert_eq!(rendered.entries["A"].expose(), format!("{i}:{loop_text}").as_bytes());
        }
        let after = renders_per_worker();
        assert!(after.len() <= 2, "at most two workers: {after:?}");
        let shared = after.len() == 2 && after.iter().all(|(name, n)| *n > before.get(name).copied().unwrap_or(0));
        if shared {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after {batches} batches no batch was shared by both workers: {before:?} -> {after:?}"
        );
    }
    sandbox.stop_workers().await;
}
