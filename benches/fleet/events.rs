//! `events N`: what the event-driven service (issue 20) does at fleet-N,
//! under `cfgsync run` with its default settings, after a cold pass:
//!
//! 1. **drift, Kubernetes**: `BENCH_DRIFT_EDITS` (default 100) hand edits
//!    of owned objects in prod's cluster, alternately a ConfigMap's `KEY3`
//!    and a Secret's `DB_PORT` (apps spread over the fleet), each written
//!    straight into the emulator's store (as `kubectl edit` would, one
//!    write); the clock starts before the write and stops when the object
//!    holds cfgsync's value again (polled every 500 µs). Each edit comes a
//!    debounce (and 50 ms) after the previous revert, the leading edge of a
//!    quiet period.
//! 2. **drift, files**: `BENCH_FILE_EDITS` (default 50) hand edits of
//!    `out/dev/appN.env` (the whole file rewritten), timed until the file
//!    holds cfgsync's content again.
//! 3. **set-secret → every target updated**: `BENCH_SECRET_EDITS` (default
//!    20) runs of the real `cfgsync set-secret dev appN/creds password
//!    --yes` (the new value on stdin, as a user types it; with the bench's
//!    credentials: etcd without auth and Vault's root token, the only ones
//!    the fleet has) on a secret that both dev's Kubernetes Secret `appN`
//!    and the file `out/dev/appN.env` use. The clock starts just before the
//!    command is spawned and stops when both hold the new value (polled
//!    every 500 µs); the command's own wall time (spawn to exit) is
//!    reported beside it. Each run comes a debounce (and 50 ms) after the
//!    previous one was seen everywhere.
//! 4. **idle**: the service left alone for `BENCH_IDLE_SECONDS` (default
//!    120; the figure is over 10 minutes, `BENCH_IDLE_SECONDS=600`):
//!    Vault requests per minute (the audit log), Kubernetes LISTs and
//!    WATCHes started during the window, open watch streams, the service's
//!    CPU time and peak RSS.
//!
//! `BENCH_OLD_BINARY=1` measures an older cfgsync (`CFGSYNC_BENCH_BIN`)
//! that has no target watches, secret markers or `[vault] refresh`, for
//! the "before" column: the bench waits for the first pass of every env
//! (its log's `pass done`) instead of the watches, skips the edit
//! scenarios (1–3: without watches a hand edit waits for the interval),
//! and measures the idle figures only.

use std::process::Stdio;
use std::time::{Duration, Instant};

use kube_emulator::Kind;
use serde_json::Value;

use crate::measure::{AuditLog, KubeCounts, percentile};
use crate::spec::{FILE_ENV, Fleet, MOUNT};
use crate::watch::{DEBOUNCE, POLL, Service, cpu_seconds, proc_status_kib, wait_until};
use crate::{Bed, Settings, check_cold, tail};

const START_DEADLINE: Duration = Duration::from_secs(600);
const REVERT_DEADLINE: Duration = Duration::from_secs(120);

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")))
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

pub fn run(fleet: Fleet, settings: &Settings) {
    println!("{}", fleet.describe());
    println!("cfgsync: {}", settings.bin.display());
    let mut bed = Bed::new(fleet, settings);
    let s = bed.cfgsync(&["--output", "json", "reconcile", "--once"]);
    check_cold(&bed, &s);

    let log_path = bed.path("service.log");
    let log = std::fs::File::create(&log_path).expect("service log");
    let mut cmd = bed.runner.command(&bed.bin, &["--config", "cfgsync.toml", "run", "--listen", "127.0.0.1:0"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    let service = Service(cmd.spawn().expect("start cfgsync run"));
    let pid = service.0.id();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Every (cluster, namespace, kind) watched: the watches are up.
    let watches = fleet.namespaces() * 2;
    let old = std::env::var("BENCH_OLD_BINARY").is_ok_and(|v| !v.is_empty() && v != "0");
    let started = wait_until(START_DEADLINE, || {
        read_log().matches("pass done").count() >= crate::spec::ENVS.len()
            && (old || bed.clusters.iter().all(|c| c.open_watches() == watches))
    });
    assert!(started, "cfgsync run did not pass every env and watch every namespace:\n{}", tail(&read_log(), 3000));
    let rss_started_kib = proc_status_kib(pid, "VmRSS");
    if old {
        println!("BENCH_OLD_BINARY: no watches waited for, no edits: the idle figures only");
    }
    let edits_or_none = |name: &str, default: u64| if old { 0 } else { number(name, default) as usize };

    // 1. Hand edits of owned objects.
    let edits = edits_or_none("BENCH_DRIFT_EDITS", 100);
    let prod = bed.cluster("prod");
    let mut kube_ms = Vec::with_capacity(edits);
    for i in 0..edits {
        let app = (i * 7 + 3) % fleet.apps;
        let (kind, field) = if i % 2 == 0 { (Kind::ConfigMap, "KEY3") } else { (Kind::Secret, "DB_PORT") };
        let (ns, name) = (fleet.namespace_of(app), Fleet::app(app));
        let mut obj = prod.get_object(kind, &ns, &name).expect("an owned object");
        let want = obj["data"][field].clone();
        let hand = match kind {
            Kind::Secret => Value::String("aGFuZA==".into()),
            _ => Value::String(format!("hand-{i}")),
        };
        obj["data"][field] = hand;
        if let Some(meta) = obj["metadata"].as_object_mut() {
            meta.shift_remove("resourceVersion");
            meta.shift_remove("managedFields");
        }
        std::thread::sleep(DEBOUNCE + Duration::from_millis(50));
        let begin = Instant::now();
        prod.put_object(obj).expect("the hand edit");
        let reverted =
            wait_until(REVERT_DEADLINE, || prod.get_object(kind, &ns, &name).is_some_and(|o| o["data"][field] == want));
        assert!(reverted, "edit {i} of {kind:?} {ns}/{name} never reverted:\n{}", tail(&read_log(), 3000));
        kube_ms.push(begin.elapsed().as_secs_f64() * 1e3);
    }
    let kube_ms = sorted(kube_ms);

    // 2. Hand edits of managed files.
    let file_edits = edits_or_none("BENCH_FILE_EDITS", 50);
    let mut file_ms = Vec::with_capacity(file_edits);
    for i in 0..file_edits {
        let app = (i * 11 + 5) % fleet.apps;
        let path = bed.path(&Fleet::file_path(app));
        let want = std::fs::read(&path).expect("a managed file");
        std::thread::sleep(DEBOUNCE + Duration::from_millis(50));
        let begin = Instant::now();
        std::fs::write(&path, format!("KEY3=hand-{i}\n")).expect("the hand edit");
        let reverted = wait_until(REVERT_DEADLINE, || std::fs::read(&path).is_ok_and(|c| c == want));
        assert!(reverted, "edit {i} of {} never reverted:\n{}", path.display(), tail(&read_log(), 3000));
        file_ms.push(begin.elapsed().as_secs_f64() * 1e3);
    }
    let file_ms = sorted(file_ms);

    // 3. set-secret → the Kubernetes Secret and the file that use it.
    let secret_edits = edits_or_none("BENCH_SECRET_EDITS", 20);
    let (secret_ms, command_ms) = set_secrets(&bed, secret_edits, &read_log);

    // 4. Idle.
    let idle = Duration::from_secs(number("BENCH_IDLE_SECONDS", 120));
    let mut audit = AuditLog::new(bed.vault.audit_log.clone());
    let _ = audit.take(MOUNT);
    let _ = KubeCounts::take(&bed.clusters);
    let cpu_before = cpu_seconds(pid);
    let idle_start = Instant::now();
    while idle_start.elapsed() < idle {
        std::thread::sleep(POLL.max(Duration::from_millis(200)));
    }
    let minutes = idle_start.elapsed().as_secs_f64() / 60.0;
    let vault = audit.take(MOUNT);
    let kube = KubeCounts::take(&bed.clusters);
    let cpu_idle = cpu_seconds(pid) - cpu_before;
    let open: usize = bed.clusters.iter().map(|c| c.open_watches()).sum();
    let peak_rss_kib = proc_status_kib(pid, "VmHWM");
    let rss_kib = proc_status_kib(pid, "VmRSS");
    drop(service);

    let p = |v: &[f64], q: f64| if v.is_empty() { f64::NAN } else { percentile(v, q) };
    println!();
    println!("| scenario | n | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| hand edit of a ConfigMap/Secret → reverted | {} | {:.1} | {:.1} | {:.1} |",
        kube_ms.len(),
        p(&kube_ms, 50.0),
        p(&kube_ms, 99.0),
        kube_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| hand edit of a file → reverted | {} | {:.1} | {:.1} | {:.1} |",
        file_ms.len(),
        p(&file_ms, 50.0),
        p(&file_ms, 99.0),
        file_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| `set-secret` → its Kubernetes Secret and file updated | {} | {:.1} | {:.1} | {:.1} |",
        secret_ms.len(),
        p(&secret_ms, 50.0),
        p(&secret_ms, 99.0),
        secret_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| `set-secret` command itself (spawn to exit) | {} | {:.1} | {:.1} | {:.1} |",
        command_ms.len(),
        p(&command_ms, 50.0),
        p(&command_ms, 99.0),
        command_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!();
    println!(
        "idle {:.0} s: Vault {:.0} requests/min ({:.0} KV reads/min), Kubernetes LIST {} WATCH {} in the window, {open} watch streams open; CPU {:.2} s ({:.1} % of a core); RSS {} KiB (after start {} KiB, peak {} KiB)",
        minutes * 60.0,
        vault.total() as f64 / minutes,
        vault.kv_read as f64 / minutes,
        kube.verb("list"),
        kube.verb("watch"),
        cpu_idle,
        100.0 * cpu_idle / (minutes * 60.0),
        rss_kib,
        rss_started_kib,
        peak_rss_kib
    );
    println!(
        "figures: drift_kube_p50_ms={:.1} drift_kube_p99_ms={:.1} drift_file_p50_ms={:.1} set_secret_p50_ms={:.1} set_secret_p99_ms={:.1} set_secret_cmd_p50_ms={:.1} idle_s={:.0} idle_vault_per_min={:.0} idle_kube_lists={} idle_kube_watches={} watch_streams={open} idle_cpu_s={:.2} rss_kib={rss_kib} peak_rss_kib={peak_rss_kib}",
        p(&kube_ms, 50.0),
        p(&kube_ms, 99.0),
        p(&file_ms, 50.0),
        p(&secret_ms, 50.0),
        p(&secret_ms, 99.0),
        p(&command_ms, 50.0),
        minutes * 60.0,
        vault.total() as f64 / minutes,
        kube.verb("list"),
        kube.verb("watch"),
        cpu_idle
    );
}

/// Scenario 3: `edits` runs of `cfgsync set-secret` on dev's `appN/creds`
/// `password`; for each, the milliseconds until dev's Secret `appN` and
/// `out/dev/appN.env` hold the new value, and the command's own (both
/// sorted).
fn set_secrets(bed: &Bed, edits: usize, read_log: &dyn Fn() -> String) -> (Vec<f64>, Vec<f64>) {
    use base64::Engine as _;
    let dev = bed.cluster(FILE_ENV);
    let (mut seen_ms, mut command_ms) = (Vec::with_capacity(edits), Vec::with_capacity(edits));
    for i in 0..edits {
        let app = (i * 13 + 1) % bed.fleet.apps;
        let (ns, name) = (bed.fleet.namespace_of(app), Fleet::app(app));
        let path = bed.path(&Fleet::file_path(app));
        let secret = Fleet::secret_path(app);
        let value = format!("password-{FILE_ENV}-{name}-bench{i}-7f3a9c2e41d05b86");
        let encoded = Value::String(base64::engine::general_purpose::STANDARD.encode(&value));
        let line = format!("PASSWORD={value}\n");
        let updated = || {
            dev.get_object(Kind::Secret, &ns, &name).is_some_and(|o| o["data"]["PASSWORD"] == encoded)
                && std::fs::read_to_string(&path).is_ok_and(|c| c.contains(&line))
        };
        std::thread::sleep(DEBOUNCE + Duration::from_millis(50));
        let args = ["--config", "cfgsync.toml", "set-secret", FILE_ENV, &secret, "password", "--yes"];
        let mut cmd = bed.runner.command(&bed.bin, &args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        let begin = Instant::now();
        let mut child = cmd.spawn().expect("start cfgsync set-secret");
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(value.as_bytes()).expect("the value on stdin");
        }
        let (mut seen, mut exited) = (None, None);
        let done = wait_until(REVERT_DEADLINE, || {
            if exited.is_none() && child.try_wait().expect("wait for set-secret").is_some() {
                exited = Some(begin.elapsed());
            }
            if seen.is_none() && updated() {
                seen = Some(begin.elapsed());
            }
            seen.is_some() && exited.is_some()
        });
        let out = child.wait_with_output().expect("set-secret's output");
        assert!(out.status.success(), "set-secret {i} failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            done,
            "set-secret {i} of {FILE_ENV}/{secret}: the Secret {ns}/{name} and {} did not both follow:\n{}",
            path.display(),
            tail(&read_log(), 3000)
        );
        seen_ms.push(seen.expect("seen").as_secs_f64() * 1e3);
        command_ms.push(exited.expect("exited").as_secs_f64() * 1e3);
    }
    (sorted(seen_ms), sorted(command_ms))
}
