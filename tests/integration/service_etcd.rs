//! `cfgsync run` against a real etcd: the watch, an etcd outage, an auth
//! token etcd forgot, and `/metrics` through a reference parser.

use std::time::{Duration, Instant};

use crate::service::{Service, read_or_empty};
use crate::support::{Etcd, Project, wait_until};

/// One env `prod`, one output rendering the key `counter` to a file.
pub fn etcd_config(etcd: &Etcd, extra: &str) -> String {
    format!(
        r#"interval = "1h"

[etcd]
endpoints = ["{}"]
timeout = "2s"

[service]
debounce = "20ms"
{extra}

[envs.prod]

[[output]]
name = "app"
[output.entries]
COUNTER = "{{{{ key(name='counter') }}}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/app.env"
"#,
        etcd.endpoint
    )
}

fn counter_is(p: &Project, value: &str) -> Option<()> {
    (read_or_empty(&p.path("out/prod/app.env")) == format!("COUNTER={value}\n")).then_some(())
}

#[test]
fn an_etcd_put_reaches_the_file_target_well_under_a_second() {
    let etcd = Etcd::start();
    etcd.put("/cfgsync/prod/counter", "0");
    let p = Project::new(&etcd_config(&etcd, ""));
    let svc = Service::start(&p, &[], &[]);
    svc.wait_ready(Duration::from_secs(30));
    wait_until("the first pass", Duration::from_secs(10), || counter_is(&p, "0"));
    let mut worst = Duration::ZERO;
    for i in 1..=20 {
        let value = i.to_string();
        // Timed from before etcdctl starts, so this overstates the latency.
        let start = Instant::now();
        etcd.put("/cfgsync/prod/counter", &value);
        wait_until(&format!("counter {i} within a second"), Duration::from_secs(1), || counter_is(&p, &value));
        worst = worst.max(start.elapsed());
    }
    eprintln!("put→written, worst of 20 (with etcdctl start-up): {worst:?}");
    // With a 1 h interval only the watch can have done it.
    let log = svc.log();
    assert!(log.contains("reason=\"etcd watch\""), "{log}");
}

#[test]
fn an_etcd_outage_fails_closed_and_converges_without_a_restart() {
    let mut etcd = Etcd::start();
    etcd.put("/cfgsync/prod/counter", "before");
    let p = Project::new(&etcd_config(&etcd, "[service.election]\nttl = \"3s\""));
    let svc = Service::start(&p, &[], &[]);
    svc.wait_ready(Duration::from_secs(30));
    wait_until("the first pass", Duration::from_secs(10), || counter_is(&p, "before"));
    let before = p.state();

    etcd.stop();
    let down = Instant::now();
    let body = wait_until("/readyz to turn not-ready naming etcd", Duration::from_secs(15), || {
        let (ready, body) = svc.readyz();
        (!ready && body["envs"]["prod"]["code"] == "etcd_unreachable").then_some(body)
    });
    assert_eq!(body["envs"]["prod"]["state"], "no_leader", "{body}");
    // Several seconds without etcd: no target changes (checked all along).
    while down.elapsed() < Duration::from_secs(4) {
        assert_eq!(p.state(), before, "a target changed while etcd was down");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!svc.readyz().0);

    etcd.restart();
    etcd.put("/cfgsync/prod/counter", "after");
    wait_until("convergence after etcd returned", Duration::from_secs(15), || counter_is(&p, "after"));
    let body = svc.wait_ready(Duration::from_secs(10));
    assert_eq!(body["envs"]["prod"]["role"], "leader", "{body}");
    let log = svc.log();
    assert!(log.contains("etcd watch lost"), "{log}");
    // Convergence may come first from the election's "etcd reachable
    // again" pass; the watch reconnects on its own back-off (≤ 2 s).
    wait_until("the watch to be re-established", Duration::from_secs(10), || {
        svc.log().contains("etcd watch re-established").then_some(())
    });
    assert!(svc.metric("cfgsync_source_errors_total{source=\"etcd\"}").unwrap() >= 1.0);
}

#[test]
fn an_auth_token_etcd_forgot_is_refreshed() {
    let mut etcd = Etcd::start();
    etcd.put("/cfgsync/prod/counter", "0");
    etcd.enable_auth_with_reader("rootpw", "svc", "svcpw", &["/cfgsync/"]);
    let p = Project::new(&etcd_config(&etcd, "")).with_env("ETCDCTL_USER", "svc:svcpw");
    let svc = Service::start(&p, &[], &[]);
    svc.wait_ready(Duration::from_secs(30));
    wait_until("the first pass", Duration::from_secs(10), || counter_is(&p, "0"));

    // etcd keeps simple tokens in memory: after a restart the service's
    // token is `invalid auth token` for every call and stream.
    etcd.restart();
    etcd.put("/cfgsync/prod/counter", "1");
    wait_until("the change after the restart", Duration::from_secs(15), || counter_is(&p, "1"));
    etcd.put("/cfgsync/prod/counter", "2");
    wait_until("a second change (the watch works again)", Duration::from_secs(5), || counter_is(&p, "2"));

    // Deterministically: turning auth off and on drops every simple token,
    // so the next pass presents a token etcd refuses with `invalid auth
    // token`; the client logs in again and the change still arrives.
    let refused_before = std::fs::read_to_string(etcd.log_path()).unwrap().matches("invalid auth token").count();
    etcd.ctl_ok(&["auth", "disable"]);
    etcd.ctl_ok(&["auth", "enable"]);
    etcd.put("/cfgsync/prod/counter", "3");
    wait_until("the change after all tokens were dropped", Duration::from_secs(10), || counter_is(&p, "3"));
    let refused = std::fs::read_to_string(etcd.log_path()).unwrap().matches("invalid auth token").count();
    assert!(refused > refused_before, "etcd refused the stale token at least once");
    let body = svc.wait_ready(Duration::from_secs(10));
    assert_eq!(body["envs"]["prod"]["role"], "leader", "{body}");
    assert!(!svc.log().contains("svcpw"));
}

/// The exposition as the Prometheus project's own Python client parses it
/// (OpenMetrics parser: strict, rejects malformed lines and a missing EOF):
/// `[[family, type, [[sample name, labels, value], ...]], ...]`.
fn parse_with_reference_parser(text: &str) -> serde_json::Value {
    let python = std::env::var("CFGSYNC_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append([f.name, f.type, [[s.name, s.labels, s.value] for s in f.samples]])
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (scripts/test.sh installs it)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn metrics_parse_with_the_reference_parser_and_carry_the_service_metrics() {
    let etcd = Etcd::start();
    etcd.put("/cfgsync/prod/counter", "0");
    let p = Project::new(&etcd_config(&etcd, ""));
    let svc = Service::start(&p, &[], &[]);
    svc.wait_ready(Duration::from_secs(30));
    wait_until("the first pass", Duration::from_secs(10), || counter_is(&p, "0"));

    // Drift: a hand edit is found by the next pass that covers the file (a
    // put of a key it reads triggers one, even with the same value),
    // counted and reverted.
    p.write("out/prod/app.env", "COUNTER='edited by hand'\n");
    etcd.put("/cfgsync/prod/counter", "0");
    wait_until("the hand edit to be reverted", Duration::from_secs(5), || counter_is(&p, "0"));
    wait_until("drift to be counted", Duration::from_secs(5), || {
        (svc.metric("cfgsync_drift_total{env=\"prod\"}") == Some(1.0)).then_some(())
    });

    let text = svc.metrics();
    let families = parse_with_reference_parser(&text);
    let family = |name: &str| -> serde_json::Value {
        families
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f[0] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no family {name}:\n{text}"))
    };
    let sample = |fam: &str, name: &str, labels: serde_json::Value| -> f64 {
        let f = family(fam);
        f[2].as_array()
            .unwrap()
            .iter()
            .find(|s| s[0] == name && s[1] == labels)
            .and_then(|s| s[2].as_f64())
            .unwrap_or_else(|| panic!("no sample {name}{labels} in {f}"))
    };
    assert_eq!(family("cfgsync_reconcile_duration_seconds")[1], "histogram");
    assert!(
        sample(
            "cfgsync_reconcile_duration_seconds",
            "cfgsync_reconcile_duration_seconds_count",
            serde_json::json!({"env": "prod"})
        ) >= 2.0
    );
    assert_eq!(family("cfgsync_target_writes")[1], "counter");
    // The first write, and the revert of the drift.
    assert_eq!(
        sample(
            "cfgsync_target_writes",
            "cfgsync_target_writes_total",
            serde_json::json!({"kind": "file", "result": "ok"})
        ),
        2.0
    );
    assert_eq!(sample("cfgsync_drift", "cfgsync_drift_total", serde_json::json!({"env": "prod"})), 1.0);
    assert_eq!(
        sample("cfgsync_source_errors", "cfgsync_source_errors_total", serde_json::json!({"source": "etcd"})),
        0.0
    );
    let last = sample(
        "cfgsync_last_success_timestamp_seconds",
        "cfgsync_last_success_timestamp_seconds",
        serde_json::json!({"env": "prod"}),
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(now - last < 30.0 && last <= now + 1.0, "{last} vs {now}");
    assert_eq!(family("cfgsync_leader")[1], "gauge");
    assert_eq!(sample("cfgsync_leader", "cfgsync_leader", serde_json::json!({"env": "prod"})), 1.0);
}

/// SIGTERM while a destination hangs (a check that takes far longer than
/// the grace): the process exits within the grace, code 1, whatever the
/// election's hand-over waits for; the stuck write never lands half-done.
#[test]
fn sigterm_with_a_pass_stuck_past_the_grace_exits_within_the_grace() {
    let etcd = Etcd::start();
    etcd.put("/cfgsync/prod/counter", "1");
    let grace = Duration::from_secs(2);
    let config = etcd_config(&etcd, "grace = \"2s\"").replace(
        "path = \"out/{{ env }}/app.env\"",
        "path = \"out/{{ env }}/app.env\"\ncheck_cmd = \"touch {{src}}.checking; sleep 60\"",
    );
    let p = Project::new(&config);
    let mut svc = Service::start(&p, &[], &[]);
    wait_until("the check to start", Duration::from_secs(30), || {
        crate::service::temp_files(p.dir.path())
            .iter()
            .any(|f| f.to_string_lossy().ends_with(".checking"))
            .then_some(())
    });
    let sent = Instant::now();
    svc.signal("TERM");
    let status = svc.wait_exit(grace + Duration::from_secs(10));
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(1), "the grace ran out: exit 1\n{}", svc.log());
    assert!(took < grace + Duration::from_millis(700), "exited {took:?} after SIGTERM, grace {grace:?}\n{}", svc.log());
    assert!(took >= grace - Duration::from_millis(100), "the pass got its grace: {took:?}");
    assert!(svc.log().contains("grace period over"), "{}", svc.log());
    assert!(read_or_empty(&p.path("out/prod/app.env")).is_empty(), "the checked write never landed");
}

/// Issue 21: `cfgsync status` shows the status page's facts from etcd,
/// without reaching the service's port.
#[test]
fn status_reads_the_service_state_from_etcd() {
    let etcd = Etcd::start();
    etcd.put("/cfgsync/prod/counter", "0");
    let p = Project::new(&etcd_config(&etcd, ""));
    let svc = Service::start(&p, &["--replica-id", "replica-a"], &[]);
    svc.wait_ready(Duration::from_secs(30));
    let r = wait_until("status to show a successful pass", Duration::from_secs(15), || {
        let r = p.run(&["status"]);
        (r.code == 0).then_some(r)
    });
    assert!(r.stdout.starts_with("replicas: replica-a (etcd revision "), "{r:?}");
    assert!(r.stdout.contains("env prod\n  leader:    replica-a\n  last pass: "), "{r:?}");
    assert!(r.stdout.contains(" by replica-a: ok, etcd revision "), "{r:?}");
    assert!(r.stdout.contains("  targets:   1 targets: 1 ok\n"), "{r:?}");
    let r = p.run(&["--output", "json", "status", "--env", "prod"]);
    assert_eq!(r.code, 0, "{r:?}");
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(json["envs"][0]["leader"], "replica-a", "{json}");
    assert_eq!(json["envs"][0]["last_pass"]["ok"], true, "{json}");
    assert_eq!(json["envs"][0]["last_pass"]["targets"][0]["address"], "out/prod/app.env", "{json}");

    // A failing pass: exit 1, the output named with its code.
    etcd.ctl_ok(&["del", "/cfgsync/prod/counter"]);
    let r = wait_until("status to show the failing output", Duration::from_secs(15), || {
        let r = p.run(&["status", "--env", "prod"]);
        (r.code == 1).then_some(r)
    });
    assert!(r.stdout.contains("  failing:   output app: not rendered ("), "{r:?}");
    assert!(r.stdout.contains(": failed ("), "{r:?}");
    drop(svc);
    let r = p.run(&["status", "--env", "nope"]);
    assert_eq!(r.code, 2, "{r:?}");
}
