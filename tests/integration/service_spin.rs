//! `cfgsync run` never passes in a tight loop, whatever its bookkeeping
//! holds: a target that backs off and then vanishes (a reload takes it out
//! of an env), whose output stops rendering, or whose env's source fails,
//! must not leave a retry that is always due.
//!
//! Passes are counted from `cfgsync_reconcile_duration_seconds_count` over
//! a bounded window after the change; the interval is an hour and the
//! backoff at most a few seconds, so a handful of passes is all a window
//! may hold (a spin made thousands: 5,628 in 66 s on a real estate).

use std::time::{Duration, Instant};

use crate::service::{Service, metric_value, save_like_an_editor};
use crate::support::{Project, wait_until};

const CONFIG: &str = r#"
interval = "1h"

[files]
dir = "source"

[service]
debounce = "20ms"

[envs.staging]
[envs.prod]

[[output]]
name = "api"
[output.entries]
HOST = "{{ key(name='db_host') }}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/api.env"

[[output]]
name = "broken"
envs = ["staging", "prod"]
[output.entries]
X = "{{ key(name='broken_host') }}"
[[output.target]]
kind = "file"
path = "out/{{ env }}/broken.env"
check_cmd = "false"
"#;

/// A project whose `broken` output fails its check in both envs.
fn project() -> Project {
    let p = Project::new(CONFIG);
    for env in ["staging", "prod"] {
        p.write(&format!("source/{env}.toml"), &format!("[keys]\ndb_host = \"db.{env}\"\nbroken_host = \"b.{env}\"\n"));
    }
    p
}

fn passes(svc: &Service, env: &str) -> f64 {
    metric_value(&svc.metrics(), &format!("cfgsync_reconcile_duration_seconds_count{{env=\"{env}\"}}")).unwrap_or(0.0)
}

/// Starts the service and waits until `staging/broken/0` backs off.
fn start_backing_off(p: &Project) -> Service {
    let svc = Service::start(p, &[], &[]);
    wait_until("staging/broken/0 to fail its check", Duration::from_secs(20), || {
        let (_, body) = svc.readyz();
        (body["envs"]["staging"]["targets"]["staging/broken/0"]["code"] == "check_rejected").then_some(())
    });
    svc
}

/// The passes of `env` from now until `window` is over: the backoff the
/// target was in (1 s after its first failure, 2 s after the second) ends
/// inside the window, so a retry that stays due would spin in it.
fn passes_within(svc: &Service, env: &str, window: Duration) -> f64 {
    let before = passes(svc, env);
    let end = Instant::now() + window;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    passes(svc, env) - before
}

fn assert_calm(svc: &Service, env: &str, what: &str) {
    let n = passes_within(svc, env, Duration::from_secs(5));
    assert!(n <= 4.0, "{what}: {n} passes of {env} in 5 s with a 1 h interval\n{}", svc.log());
    let log = svc.log();
    assert!(log.lines().count() < 2_000, "{what}: the log grows without end ({} lines)", log.lines().count());
}

#[test]
fn a_reload_that_takes_a_backing_off_target_out_of_an_env_does_not_spin_the_other() {
    let p = project();
    let svc = start_backing_off(&p);
    save_like_an_editor(
        &p.path("cfgsync.toml"),
        &CONFIG.replace(r#"envs = ["staging", "prod"]"#, r#"envs = ["prod"]"#),
    );
    wait_until("the reload", Duration::from_secs(10), || {
        (metric_value(&svc.metrics(), "cfgsync_config_reloads_total{result=\"ok\"}") == Some(1.0)).then_some(())
    });
    assert_calm(&svc, "staging", "after the reload");
    // The target that is gone is no longer reported, and staging is ready.
    let body = wait_until("staging to be ready", Duration::from_secs(10), || {
        let (_, body) = svc.readyz();
        (body["envs"]["staging"]["state"] == "ok").then_some(body)
    });
    assert!(body["envs"]["staging"].get("targets").is_none(), "{body}");
    assert_eq!(body["envs"]["prod"]["targets"]["prod/broken/0"]["code"], "check_rejected", "{body}");
    // The pass rate shows, within what interval and debounce allow.
    let rate = &body["envs"]["staging"]["passes_per_second"];
    assert!(rate["last_10s"].as_f64().unwrap() <= rate["allowed"].as_f64().unwrap(), "{body}");
    let m = svc.metrics();
    let rate = metric_value(&m, "cfgsync_pass_rate{env=\"staging\"}").expect("cfgsync_pass_rate");
    let allowed = metric_value(&m, "cfgsync_pass_rate_allowed{env=\"staging\"}").expect("cfgsync_pass_rate_allowed");
    assert!(rate <= allowed && allowed > 0.0, "{rate} > {allowed}");
    let reloaded = "cfgsync_passes_total{env=\"staging\",reason=\"config_reloaded\"}";
    assert!(metric_value(&m, reloaded) >= Some(1.0), "{m}");
}

#[test]
fn a_backing_off_target_whose_output_stops_rendering_does_not_spin_its_env() {
    let p = project();
    let svc = start_backing_off(&p);
    // The broken output's key goes: it no longer renders in staging.
    p.write("source/staging.toml", "[keys]\ndb_host = \"db.staging\"\n");
    wait_until("staging's broken output to fail rendering", Duration::from_secs(10), || {
        let (_, body) = svc.readyz();
        (body["envs"]["staging"]["outputs"]["broken"] == "render_missing").then_some(())
    });
    assert_calm(&svc, "staging", "a missing key");
}

#[test]
fn a_backing_off_target_in_an_env_whose_source_fails_does_not_spin_it() {
    let p = project();
    let svc = start_backing_off(&p);
    p.write("source/staging.toml", "[keys\nnot toml");
    wait_until("staging's source to fail", Duration::from_secs(10), || {
        let (_, body) = svc.readyz();
        (body["envs"]["staging"]["code"] == "file_invalid").then_some(())
    });
    assert_calm(&svc, "staging", "a failing source");
}

/// A port on 127.0.0.1 that nothing listens on (connections are refused
/// at once: the fastest failure a loop can meet).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn the_election_retries_an_unreachable_etcd_without_spinning() {
    let port = closed_port();
    let p = Project::new(&format!(
        "interval = \"1h\"\n[etcd]\nendpoints = [\"http://127.0.0.1:{port}\"]\ntimeout = \"1s\"\n[envs.prod]\n[[output]]\nname = \"api\"\n[output.entries]\nHOST = \"{{{{ key(name='db_host') }}}}\"\n[[output.target]]\nkind = \"file\"\npath = \"out/api.env\"\n"
    ));
    let svc = Service::start(&p, &[], &[("RUST_LOG", "cfgsync=debug")]);
    let failures = || svc.log().lines().filter(|l| l.contains("election step failed")).count();
    wait_until("the election to fail", Duration::from_secs(10), || (failures() > 0).then_some(()));
    let before = failures();
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let n = failures() - before;
    // A try every 500 ms: 6 in 3 s.
    assert!(n <= 10, "{n} election steps in 3 s against a refused port");
    let (ready, body) = svc.readyz();
    assert!(!ready && body["envs"]["prod"]["state"] == "no_leader", "{body}");
}
