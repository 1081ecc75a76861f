//! `/readyz` tells the truth about etcd: stopped or frozen (SIGSTOP) etcd
//! makes every replica not-ready within one election TTL and for as long
//! as it lasts; it is ready again within seconds of etcd's return. The
//! metrics agree, and no state of `/readyz` or `/` ever shows a secret.

use std::time::{Duration, Instant};

use crate::service::Service;
use crate::support::{Etcd, Project, Vault, wait_until};

const TTL_S: u64 = 3;
const CANARY: &str = "CANARY-9d2b-readiness";

fn config(etcd: &Etcd, vault: &Vault) -> String {
    format!(
        r#"interval = "1h"

[etcd]
endpoints = ["{}"]
timeout = "1s"

[vault]
address = "{}"
auth = {{ method = "token", token_file = "vault-token" }}

[service]
debounce = "20ms"
[service.election]
ttl = "{TTL_S}s"

[envs.prod]

[[output]]
name = "api"
[output.entries]
DB = "{{{{ key(name='db_host') }}}}:{{{{ secret(path='api/db', field='password') }}}}"
MODE = "{{% if key(name='mode') == 'broken' %}}{{{{ secret(path='api/db', field='password') | round }}}}{{% else %}}fine{{% endif %}}"
[[output.target]]
kind = "file"
path = "out/{{{{ env }}}}/api.env"
"#,
        etcd.endpoint, vault.addr
    )
}

fn setup() -> (Etcd, Vault, Project) {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    etcd.put("/cfgsync/prod/db_host", "db.prod");
    etcd.put("/cfgsync/prod/mode", "ok");
    vault.kv_put("prod/api/db", &[("password", CANARY)]);
    let p = Project::new(&config(&etcd, &vault));
    p.write("vault-token", &vault.root_token);
    (etcd, vault, p)
}

/// `/readyz` and `/`, checked for the canary; returns whether ready and the body.
fn probe(svc: &Service) -> (bool, serde_json::Value) {
    let (ready, body) = svc.readyz();
    assert!(!body.to_string().contains(CANARY), "a secret in /readyz: {body}");
    let (code, page) = svc.get("/").unwrap();
    assert_eq!(code, 200);
    assert!(!page.contains(CANARY), "a secret on the status page");
    (ready, body)
}

fn env_gauges(svc: &Service) -> (f64, f64, f64) {
    let text = svc.metrics();
    let get = |name: &str| {
        crate::service::metric_value(&text, &format!("{name}{{env=\"prod\"}}"))
            .unwrap_or_else(|| panic!("no {name}:\n{text}"))
    };
    (get("cfgsync_leader"), get("cfgsync_env_led"), get("cfgsync_env_ready"))
}

/// Polls `/readyz` for `outage`: it must turn 503 within one TTL (plus
/// scheduling slack) and stay 503 until the end, naming etcd.
fn assert_not_ready_throughout(svc: &Service, since: Instant, outage: Duration) {
    let turned = wait_until("/readyz to turn 503", Duration::from_secs(TTL_S + 1), || {
        let (ready, _) = probe(svc);
        (!ready).then(Instant::now)
    });
    eprintln!("not ready {:?} after etcd went away (ttl {TTL_S} s)", turned - since);
    let mut polls = 0;
    while since.elapsed() < outage {
        let (ready, body) = probe(svc);
        assert!(!ready, "ready while etcd is away, {:?} in: {body}", since.elapsed());
        assert_eq!(body["envs"]["prod"]["state"], "no_leader", "{body}");
        assert_eq!(body["envs"]["prod"]["code"], "etcd_unreachable", "{body}");
        polls += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(polls > 50, "polled throughout: {polls}");
    assert_eq!(env_gauges(svc), (0.0, 0.0, 0.0), "leader, env_led, env_ready while etcd is away");
}

fn assert_ready_soon(svc: &Service, since: Instant, what: &str) {
    wait_until(what, Duration::from_secs(10), || probe(svc).0.then_some(()));
    eprintln!("{what}: ready {:?} after etcd came back", since.elapsed());
    assert_eq!(env_gauges(svc), (1.0, 1.0, 1.0));
}

#[test]
fn readyz_is_503_while_etcd_is_stopped_and_200_soon_after() {
    let (mut etcd, _vault, p) = setup();
    let svc = Service::start(&p, &[], &[]);
    let (_, body) = wait_until("ready", Duration::from_secs(30), || {
        let r = probe(&svc);
        r.0.then_some(r)
    });
    assert_eq!(body["envs"]["prod"]["state"], "ok", "{body}");
    assert_eq!(env_gauges(&svc), (1.0, 1.0, 1.0));

    etcd.stop();
    assert_not_ready_throughout(&svc, Instant::now(), Duration::from_secs(15));
    etcd.restart();
    assert_ready_soon(&svc, Instant::now(), "after a 15 s stop");

    // A failing pass (a render error whose Tera message would quote the
    // secret) is not-ready with a code, and still shows no secret.
    etcd.put("/cfgsync/prod/mode", "broken");
    let body = wait_until("a failing pass", Duration::from_secs(10), || {
        let (ready, body) = probe(&svc);
        (!ready && body["envs"]["prod"]["state"] == "failing").then_some(body)
    });
    assert_eq!(body["envs"]["prod"]["code"], "render_failed", "{body}");
    assert_eq!(body["envs"]["prod"]["outputs"]["api"], "render_failed", "{body}");
    etcd.put("/cfgsync/prod/mode", "ok");
    wait_until("ready again", Duration::from_secs(10), || probe(&svc).0.then_some(()));
    assert!(!svc.log().contains(CANARY));
}

/// The pid of the etcd serving `etcd`'s data dir.
fn etcd_pid(etcd: &Etcd) -> u32 {
    let needle = format!("--data-dir={}", etcd.data_dir().display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == needle.as_bytes()))
        })
        .expect("the etcd process")
}

/// SIGSTOPs a process; SIGCONTs it when dropped (also on a panic).
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Self {
        signal(pid, "STOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

fn signal(pid: u32, name: &str) {
    let ok = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(ok.success(), "kill -{name} {pid}");
}

#[test]
fn readyz_is_503_while_etcd_hangs_and_200_soon_after() {
    let (etcd, _vault, p) = setup();
    let svc = Service::start(&p, &[], &[]);
    wait_until("ready", Duration::from_secs(30), || probe(&svc).0.then_some(()));
    let pid = etcd_pid(&etcd);

    let frozen = Frozen::new(pid);
    assert_not_ready_throughout(&svc, Instant::now(), Duration::from_secs(15));
    drop(frozen);
    assert_ready_soon(&svc, Instant::now(), "after a 15 s freeze");

    // A short freeze: no waiting for the interval (1 h) to be ready again.
    let frozen = Frozen::new(pid);
    std::thread::sleep(Duration::from_secs(3)); // the outage itself, not a wait for a condition
    drop(frozen);
    assert_ready_soon(&svc, Instant::now(), "after a 3 s freeze");
    assert!(!svc.log().contains(CANARY));
}
