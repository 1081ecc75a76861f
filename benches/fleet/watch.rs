//! put → written under `cfgsync run` at fleet scale: the service runs on the
//! loaded fleet with its default settings (debounce 200 ms); each change
//! puts a new value of `dev/appN/key3` (N moving through the fleet) and the
//! clock stops when `out/dev/appN.env` holds it (polled every 500 µs). The
//! clock starts just before the put is sent.
//!
//! Two series of changes: **quiet** — each put comes a debounce (and 50 ms)
//! after the previous change was written, so each is the leading edge of a
//! quiet period and goes at once: this is the pipeline's latency; then
//! **burst** — each put right after the previous one was written, so every
//! other one falls within the debounce and is coalesced behind it (it waits
//! for the debounce: about half the latencies are ≈ 200 ms plus the
//! pipeline's).

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::measure::percentile;
use crate::spec::{FILE_ENV, Fleet};
use crate::{Bed, tail};

/// How long the service may take for its first passes, and for one change.
const START_DEADLINE: Duration = Duration::from_secs(600);
const CHANGE_DEADLINE: Duration = Duration::from_secs(120);
pub(crate) const POLL: Duration = Duration::from_micros(500);

pub struct Watched {
    /// Quiet series, sorted.
    pub latencies_ms: Vec<f64>,
    /// Burst series, sorted.
    pub burst_ms: Vec<f64>,
    pub peak_rss_kib: u64,
    /// CPU time of the service from its start to the last change.
    pub cpu_s: f64,
}

impl Watched {
    pub fn min(&self) -> f64 {
        self.latencies_ms[0]
    }
    pub fn p50(&self) -> f64 {
        percentile(&self.latencies_ms, 50.0)
    }
    pub fn p90(&self) -> f64 {
        percentile(&self.latencies_ms, 90.0)
    }
    pub fn p99(&self) -> f64 {
        percentile(&self.latencies_ms, 99.0)
    }
    pub fn max(&self) -> f64 {
        *self.latencies_ms.last().expect("a change")
    }
    pub fn burst_p50(&self) -> f64 {
        percentile(&self.burst_ms, 50.0)
    }
    pub fn burst_p99(&self) -> f64 {
        percentile(&self.burst_ms, 99.0)
    }
}

/// The service's default debounce, which the quiet series waits out.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(200);

/// Stops the service (SIGTERM, then SIGKILL) also when the benchmark panics.
pub(crate) struct Service(pub(crate) Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of `NAME=` in a dotenv file, unquoted.
pub(crate) fn dotenv_value(text: &str, name: &str) -> Option<String> {
    let line = text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix('='))?;
    let v = line.trim();
    let unquoted = v
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
        .unwrap_or(v);
    Some(unquoted.to_owned())
}

pub(crate) fn wait_until(deadline: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    false
}

pub(crate) fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ") ".
    (ticks(11) + ticks(12)) / hz
}

pub fn run(bed: &mut Bed, changes: usize) -> Watched {
    let log_path = bed.path("service.log");
    let log = std::fs::File::create(&log_path).expect("service log");
    let mut cmd = bed.runner.command(&bed.bin, &["--config", "cfgsync.toml", "run", "--listen", "127.0.0.1:0"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    let service = Service(cmd.spawn().expect("start cfgsync run"));
    let pid = service.0.id();
    let read_log = || {
        let mut text = String::new();
        let _ = std::fs::File::open(&log_path).and_then(|mut f| f.read_to_string(&mut text));
        text
    };
    let started = wait_until(START_DEADLINE, || read_log().matches("pass done").count() >= crate::spec::ENVS.len());
    assert!(started, "cfgsync run did not finish a pass per env:\n{}", tail(&read_log(), 3000));

    let fleet = bed.fleet;
    let series = |first: usize, gap: Duration| {
        let mut latencies = Vec::with_capacity(changes);
        for i in first..first + changes {
            let app = (i * 7 + 3) % fleet.apps;
            let value = format!("watch-{i}-{}", Fleet::key_value(FILE_ENV, app, 3, 0));
            let file = bed.path(&Fleet::file_path(app));
            std::thread::sleep(gap);
            let begin = Instant::now();
            bed.put(&Fleet::key_path(FILE_ENV, app, 3), &value);
            let arrived = wait_until(CHANGE_DEADLINE, || {
                std::fs::read_to_string(&file)
                    .is_ok_and(|t| dotenv_value(&t, "KEY3").as_deref() == Some(value.as_str()))
            });
            assert!(arrived, "change {i} never reached {}:\n{}", file.display(), tail(&read_log(), 3000));
            latencies.push(begin.elapsed().as_secs_f64() * 1e3);
        }
        latencies.sort_by(f64::total_cmp);
        latencies
    };
    let quiet = series(0, DEBOUNCE + Duration::from_millis(50));
    let burst = series(changes, Duration::ZERO);
    let peak_rss_kib = proc_status_kib(pid, "VmHWM");
    let cpu_s = cpu_seconds(pid);
    drop(service);
    Watched { latencies_ms: quiet, burst_ms: burst, peak_rss_kib, cpu_s }
}
