//! put→written latency of `cfgsync run`: how long from an etcd put until
//! the file target holds the new value, over 200 changes, against a real
//! etcd (the integration tests' launcher) and the real binary.
//!
//! ```sh
//! cargo bench --bench watch_latency            # 200 changes per debounce setting
//! CFGSYNC_BENCH_CHANGES=50 cargo bench --bench watch_latency
//! ```
//!
//! Needs etcd like the integration tests (`scripts/test.sh` installs it;
//! `CFGSYNC_TEST_ETCD`/`CFGSYNC_TEST_ETCDCTL` or PATH). The clock starts
//! just before the put is sent (etcd-client, one connection) and stops when
//! a poll (every 200 µs) reads the new value from the file.

#[path = "../tests/integration/support/servers.rs"]
mod servers;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn run(etcd: &servers::Etcd, debounce: &str, changes: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "interval = \"1h\"\n[etcd]\nendpoints = [\"{}\"]\n[service]\ndebounce = \"{debounce}\"\n[envs.bench]\n[[output]]\nname = \"app\"\n[output.entries]\nCOUNTER = \"{{{{ key(name='counter') }}}}\"\n[[output.target]]\nkind = \"file\"\npath = \"out/app.env\"\n",
        etcd.endpoint
    );
    std::fs::write(dir.path().join("cfgsync.toml"), config).unwrap();
    let target = dir.path().join("out/app.env");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut client = runtime.block_on(etcd_client::Client::connect([etcd.endpoint.as_str()], None)).unwrap();
    runtime.block_on(client.put("/cfgsync/bench/counter", "0", None)).unwrap();
    /// Kills the service also when the benchmark panics.
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Command::new(env!("CARGO_BIN_EXE_cfgsync"))
        .arg("--config")
        .arg(dir.path().join("cfgsync.toml"))
        .arg("run")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("service.log")).unwrap())
        .spawn()
        .unwrap();
    let _guard = Guard(child);
    let wait_for = |want: &str, deadline: Duration| -> bool {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if std::fs::read_to_string(&target).is_ok_and(|t| t == want) {
                return true;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        false
    };
    let log = || std::fs::read_to_string(dir.path().join("service.log")).unwrap_or_default();
    assert!(wait_for("COUNTER=0\n", Duration::from_secs(30)), "the service never wrote the first value:\n{}", log());
    let mut latencies = Vec::with_capacity(changes);
    for i in 1..=changes {
        let value = i.to_string();
        let start = Instant::now();
        runtime.block_on(client.put("/cfgsync/bench/counter", value.as_str(), None)).unwrap();
        assert!(
            wait_for(&format!("COUNTER={value}\n"), Duration::from_secs(10)),
            "change {i} never arrived:\n{}",
            log()
        );
        latencies.push(start.elapsed());
    }
    latencies
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let changes: usize = std::env::var("CFGSYNC_BENCH_CHANGES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let etcd = servers::Etcd::start();
    println!("put→written latency over {changes} changes (etcd {}, cfgsync run, file target)", etcd.endpoint);
    println!("{:<12} {:>9} {:>9} {:>9} {:>9} {:>9}", "debounce", "min", "p50", "p90", "p99", "max");
    for debounce in ["200ms", "0s"] {
        let mut l = run(&etcd, debounce, changes);
        l.sort();
        let ms = |d: Duration| format!("{:.1}ms", d.as_secs_f64() * 1000.0);
        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9}",
            if debounce == "200ms" { "200ms (dflt)" } else { debounce },
            ms(l[0]),
            ms(percentile(&l, 50.0)),
            ms(percentile(&l, 90.0)),
            ms(percentile(&l, 99.0)),
            ms(*l.last().unwrap()),
        );
    }
}
