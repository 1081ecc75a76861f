//! The fleet benchmark: cfgsync's whole-process cost at fleet scale, against
//! a measured floor, with requests counted at the servers.
//!
//! ```sh
//! bash scripts/bench.sh fleet 300        # the usual way (installs what is missing, builds --release)
//! bash scripts/bench.sh confd            # 1,000 keys × 100 files, beside confd when it is on PATH
//! bash scripts/bench.sh events 300       # drift reverted (objects, files) and the idle service (events.rs)
//! bash scripts/bench.sh profile 1000     # perf profiles of `validate` and a no-op pass
//! cargo bench --bench fleet -- fleet 300 # the same driver, no installs (measures the bench-featured binary)
//! ```
//!
//! Each mode starts its own servers on 127.0.0.1: a real etcd and an
//! OpenBao dev server with a file audit device (`bao.rs`; etcd comes from
//! the integration tests' launcher, `tests/integration/support/servers.rs`) and one kube-emulator per env
//! (in this process, on their own threads and runtimes: the library gives
//! the request counters that the emulator's binary does not expose). It
//! loads the fleet (`spec.rs`), then runs the release `cfgsync` binary as a
//! whole process for every measurement, and the floor (`floor.rs`) as a
//! process of its own. Every measurement is checked, not only timed: a cold
//! pass must create every object and file, a no-op pass must write nothing,
//! a one-key change must write exactly the objects and files that read the
//! key. A check that fails aborts the benchmark.
//!
//! Settings (environment): `BENCH_RUNS` (repetitions, default 5),
//! `BENCH_WATCH_CHANGES` (puts timed under `cfgsync run` in each of two series, quiet and burst, default 200 for
//! fleets up to 300 apps, else 0), `CFGSYNC_BENCH_BIN` (the cfgsync binary,
//! default the one cargo built beside this bench), `BENCH_KEEP=1` (keep the
//! work directory and print where it is).
//!
//! Output: a table, then ONE line of `name=value` figures (seconds are
//! medians over the runs; request counts are per pass).

#[path = "../../tests/integration/support/servers.rs"]
mod servers;

mod bao;
mod confd;
mod events;
mod floor;
mod history;
mod load;
mod measure;
mod spec;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use kube_emulator::{Emulator, Kind};

use measure::{AuditLog, KubeCounts, Proc, Runner, VaultCounts, stats};
use spec::{ENVS, FILE_ENV, FINGERPRINT_PATH, Fleet, MOUNT, PREFIX};

fn main() -> ExitCode {
    // `cargo bench` appends `--bench`; anything else is ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["floor", spec] => floor::main(Path::new(spec)),
        ["fleet", n] => {
            let n = n.parse().unwrap_or_else(|_| panic!("fleet size must be a number, not {n:?}"));
            run_fleet(Fleet::new(n), &Settings::from_env(n));
            ExitCode::SUCCESS
        }
        ["fleet"] => {
            run_fleet(Fleet::new(300), &Settings::from_env(300));
            ExitCode::SUCCESS
        }
        ["events", n] => {
            let n = n.parse().unwrap_or_else(|_| panic!("fleet size must be a number, not {n:?}"));
            events::run(Fleet::new(n), &Settings::from_env(n));
            ExitCode::SUCCESS
        }
        ["confd"] => {
            confd::run(&Settings::from_env(0));
            ExitCode::SUCCESS
        }
        ["bed", n] => {
            let n = n.parse().unwrap_or_else(|_| panic!("fleet size must be a number, not {n:?}"));
            bed(Fleet::new(n), &Settings::from_env(n));
            ExitCode::SUCCESS
        }
        ["profile", n] => {
            let n = n.parse().unwrap_or_else(|_| panic!("fleet size must be a number, not {n:?}"));
            profile(Fleet::new(n), &Settings::from_env(n));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: fleet fleet N | fleet events N | fleet confd | fleet profile N | fleet bed N   (see benches/fleet/main.rs)"
            );
            ExitCode::from(2)
        }
    }
}

pub struct Settings {
    pub runs: usize,
    pub watch_changes: usize,
    pub bin: PathBuf,
    pub keep: bool,
}

impl Settings {
    fn from_env(apps: usize) -> Self {
        let number = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")))
        };
        let bin = std::env::var_os("CFGSYNC_BENCH_BIN")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cfgsync")), PathBuf::from);
        assert!(bin.is_file(), "{} not found: build it with `cargo build --release`", bin.display());
        Self {
            runs: number("BENCH_RUNS", 5).max(1),
            watch_changes: number("BENCH_WATCH_CHANGES", if apps <= 300 { 200 } else { 0 }),
            bin,
            keep: std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1"),
        }
    }
}

/// A work directory that `BENCH_KEEP=1` keeps.
pub fn work_dir(prefix: &str, keep: bool) -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("work dir");
    if keep {
        dir.disable_cleanup(true);
        eprintln!("work directory (kept): {}", dir.path().display());
    }
    dir
}

// ---------------------------------------------------------------------------
// the bed: servers, data, config

/// The servers of one fleet, loaded, with cfgsync's config written.
pub struct Bed {
    pub fleet: Fleet,
    pub etcd: servers::Etcd,
    pub vault: bao::AuditedVault,
    /// One per env, in [`ENVS`] order; kubeconfig context = env name.
    pub clusters: Vec<Emulator>,
    pub runner: Runner,
    pub audit: AuditLog,
    pub runtime: tokio::runtime::Runtime,
    pub etcd_client: etcd_client::Client,
    pub loaded: load::Loaded,
    pub bin: PathBuf,
    // Last: dropped after the servers, which keep logs in it.
    pub dir: tempfile::TempDir,
}

impl Bed {
    pub fn new(fleet: Fleet, settings: &Settings) -> Self {
        let dir = work_dir("cfgsync-fleet-", settings.keep);
        let etcd = servers::Etcd::start();
        let vault = bao::AuditedVault::start(dir.path());
        let clusters: Vec<Emulator> = ENVS.iter().map(|env| Emulator::start(env)).collect();
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let etcd_client = runtime.block_on(load::etcd_client(&etcd.endpoint));
        let vault_client = load::vault_client(&vault.addr, &vault.root_token);
        let loaded = runtime.block_on(load::fleet(&fleet, &etcd_client, &vault_client, &clusters));

        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
        write("cfgsync.toml", &fleet.config(&etcd.endpoint, &vault.addr));
        write("vault-token", &vault.root_token);
        let refs: Vec<&Emulator> = clusters.iter().collect();
        write("kubeconfig", &Emulator::merged_kubeconfig_yaml(&refs));
        let mut secret_paths: Vec<String> = (0..fleet.apps).map(Fleet::secret_path).collect();
        secret_paths.push(FINGERPRINT_PATH.to_owned());
        let floor = floor::FloorSpec {
            etcd: etcd.endpoint.clone(),
            vault: vault.addr.clone(),
            token_file: dir.path().join("vault-token"),
            mount: MOUNT.to_owned(),
            kubeconfig: dir.path().join("kubeconfig"),
            prefix: PREFIX.to_owned(),
            envs: ENVS.iter().map(|e| (*e).to_owned()).collect(),
            namespaces: (0..fleet.namespaces()).map(Fleet::namespace_name).collect(),
            secret_paths,
            files: (0..fleet.apps).map(|a| dir.path().join(Fleet::file_path(a))).collect(),
        };
        write("floor.json", &serde_json::to_string_pretty(&floor).expect("json"));
        let runner = Runner::new(dir.path());
        let audit = AuditLog::new(vault.audit_log.clone());
        Bed {
            fleet,
            etcd,
            vault,
            clusters,
            runner,
            audit,
            runtime,
            etcd_client,
            loaded,
            bin: settings.bin.clone(),
            dir,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cluster(&self, env: &str) -> &Emulator {
        &self.clusters[ENVS.iter().position(|e| *e == env).expect("env")]
    }

    /// Runs `program args` once, with every counter read around it.
    pub fn measure(&mut self, program: &Path, args: &[&str]) -> Sample {
        let etcd_before = measure::etcd_calls(self.etcd.client_port);
        self.audit.take(MOUNT);
        KubeCounts::take(&self.clusters);
        let files_before = measure::file_states(&self.path("out"));
        let proc = self.runner.run(program, args);
        let files_after = measure::file_states(&self.path("out"));
        let written = measure::written(&files_before, &files_after);
        Sample {
            etcd: measure::delta(&measure::etcd_calls(self.etcd.client_port), &etcd_before),
            vault: self.audit.take(MOUNT),
            kube: KubeCounts::take(&self.clusters),
            files_written: written.into_iter().collect(),
            proc,
        }
    }

    /// `cfgsync --config cfgsync.toml ARGS`.
    pub fn cfgsync(&mut self, args: &[&str]) -> Sample {
        let mut all = vec!["--config", "cfgsync.toml"];
        all.extend_from_slice(args);
        let bin = self.bin.clone();
        self.measure(&bin, &all)
    }

    /// The floor, as its own process.
    pub fn floor(&mut self) -> Sample {
        let exe = std::env::current_exe().expect("current exe");
        let spec = self.path("floor.json");
        self.measure(&exe, &["floor", spec.to_str().expect("utf-8 path")])
    }

    /// Empties every target: cfgsync's objects and the output files.
    pub fn clear_targets(&self) {
        for cluster in &self.clusters {
            for kind in [Kind::Secret, Kind::ConfigMap] {
                for object in cluster.list_objects(kind, None) {
                    if object["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "cfgsync" {
                        let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
                        let name = object["metadata"]["name"].as_str().unwrap_or_default();
                        cluster.delete_object(kind, ns, name);
                    }
                }
            }
        }
        let out = self.path("out");
        if out.exists() {
            std::fs::remove_dir_all(&out).expect("remove out/");
        }
    }

    /// Puts one key now (before a measurement, so it is not counted in it).
    pub fn put(&self, key: &str, value: &str) {
        let mut kv = self.etcd_client.kv_client();
        self.runtime.block_on(kv.put(key, value, None)).expect("etcd put");
    }
}

/// One measured process and what the servers saw meanwhile.
pub struct Sample {
    pub proc: Proc,
    /// etcd gRPC calls by method.
    pub etcd: BTreeMap<String, u64>,
    pub vault: VaultCounts,
    pub kube: KubeCounts,
    pub files_written: Vec<PathBuf>,
}

impl Sample {
    pub fn secs(&self) -> f64 {
        self.proc.wall.as_secs_f64()
    }

    pub fn ranges(&self) -> u64 {
        self.etcd.get("Range").copied().unwrap_or(0)
    }

    /// Kubernetes writes plus files written.
    pub fn writes(&self) -> u64 {
        self.kube.writes() + self.files_written.len() as u64
    }

    fn fail(&self, what: &str, why: &str) -> ! {
        panic!(
            "{what}: {why}\nexit code {}\nstderr (tail): {}\nstdout (head): {}",
            self.proc.code,
            tail(&self.proc.stderr, 3000),
            &self.proc.stdout[..self.proc.stdout.len().min(3000)]
        )
    }

    fn expect_code(&self, what: &str, codes: &[i32]) {
        if !codes.contains(&self.proc.code) {
            self.fail(what, &format!("exit code {} (wanted {codes:?})", self.proc.code));
        }
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

// ---------------------------------------------------------------------------
// the fleet benchmark

/// One line of the table.
struct Row {
    name: String,
    samples: Vec<Sample>,
}

impl Row {
    fn secs(&self) -> measure::Stats {
        stats(&self.samples.iter().map(Sample::secs).collect::<Vec<_>>())
    }

    /// The median of a per-run figure.
    fn median(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        stats(&self.samples.iter().map(f).collect::<Vec<_>>()).median
    }

    fn rss_mib(&self) -> f64 {
        self.samples.iter().map(|s| s.proc.rss_kib).max().unwrap_or(0) as f64 / 1024.0
    }
}

fn run_fleet(fleet: Fleet, settings: &Settings) {
    let runs = settings.runs;
    println!("{}", fleet.describe());
    println!("cfgsync: {}; {runs} runs per measurement", settings.bin.display());
    let started = Instant::now();
    let load_start = load1();
    let mut bed = Bed::new(fleet, settings);
    println!(
        "loaded: etcd {:.1} s, Vault {:.1} s (servers on 127.0.0.1, work dir {})",
        bed.loaded.etcd.as_secs_f64(),
        bed.loaded.vault.as_secs_f64(),
        bed.dir.path().display()
    );
    let mut rows = Vec::new();

    let mut row = Row { name: "validate".into(), samples: Vec::new() };
    for _ in 0..runs {
        let s = bed.cfgsync(&["validate"]);
        s.expect_code("validate", &[0]);
        row.samples.push(s);
    }
    progress(&row);
    rows.push(row);

    let mut row = Row { name: "reconcile, cold (targets empty)".into(), samples: Vec::new() };
    for _ in 0..runs {
        bed.clear_targets();
        let s = bed.cfgsync(&["--output", "json", "reconcile", "--once"]);
        check_cold(&bed, &s);
        row.samples.push(s);
    }
    progress(&row);
    rows.push(row);

    // No-op passes and the floor, alternating so both see the same machine.
    let mut noop = Row { name: "reconcile, no-op".into(), samples: Vec::new() };
    let mut floor = Row { name: "floor (the no-op pass's reads only)".into(), samples: Vec::new() };
    for _ in 0..runs {
        let s = bed.cfgsync(&["--output", "json", "reconcile", "--once"]);
        check_noop(&bed, &s);
        noop.samples.push(s);
        let s = bed.floor();
        check_floor(&bed, &s);
        floor.samples.push(s);
    }
    progress(&noop);
    progress(&floor);
    rows.push(noop);
    rows.push(floor);

    let mut row = Row { name: format!("reconcile, one key changed ({FILE_ENV}/appN/key3)"), samples: Vec::new() };
    for run in 0..runs {
        let app = (run * 37 + 5) % fleet.apps;
        let value = Fleet::key_value(FILE_ENV, app, 3, run + 1);
        bed.put(&Fleet::key_path(FILE_ENV, app, 3), &value);
        let s = bed.cfgsync(&["--output", "json", "reconcile", "--once"]);
        check_one_key(&bed, &s, app, &value);
        row.samples.push(s);
    }
    progress(&row);
    rows.push(row);

    let mut row = Row { name: "diff staging prod".into(), samples: Vec::new() };
    for _ in 0..runs {
        let s = bed.cfgsync(&["diff", "staging", "prod"]);
        // diff(1) convention: 1 = the envs differ, which they do.
        s.expect_code("diff staging prod", &[1]);
        row.samples.push(s);
    }
    progress(&row);
    rows.push(row);

    let history =
        history::measure(&mut bed, rows.iter().find(|r| r.name.starts_with("reconcile, one key")).expect("row"), runs);
    progress(&history.diff_at);

    let mut row = Row { name: format!("pull --env {FILE_ENV} (files up to date)"), samples: Vec::new() };
    for _ in 0..runs {
        let s = bed.cfgsync(&["pull", "--env", FILE_ENV]);
        s.expect_code("pull", &[0]);
        if !s.files_written.is_empty() {
            s.fail("pull", &format!("wrote {} files that were up to date", s.files_written.len()));
        }
        row.samples.push(s);
    }
    progress(&row);
    rows.push(row);

    let watched = (settings.watch_changes > 0).then(|| watch::run(&mut bed, settings.watch_changes));

    let diff_at_s = history.diff_at.secs().median;
    let diff_at_vault = history.diff_at.median(|s| s.vault.total() as f64);
    let diff_at_ranges = history.diff_at.median(|s| s.ranges() as f64);
    rows.push(history.diff_at);
    print_table(&fleet, &rows, watched.as_ref());
    println!(
        "history: {} records; a cold pass's record (prod, every target written) {} bytes; a one-key pass's (dev) {} bytes, {} etcd txn(s) per pass",
        history.records, history.cold_bytes, history.onekey_bytes, history.onekey_txns
    );
    let figure = |name: &str| rows.iter().find(|r| r.name.starts_with(name)).expect("row");
    let (cold, noop, floor, one, validate, diff, pull) = (
        figure("reconcile, cold"),
        figure("reconcile, no-op"),
        figure("floor"),
        figure("reconcile, one key"),
        figure("validate"),
        figure("diff"),
        figure("pull"),
    );
    let mut line = vec![
        format!("fleet={}", fleet.apps),
        format!("runs={runs}"),
        format!("cold_s={:.3}", cold.secs().median),
        format!("noop_s={:.3}", noop.secs().median),
        format!("floor_s={:.3}", floor.secs().median),
        format!("ratio_to_floor={:.1}", noop.secs().median / floor.secs().median),
        format!("noop_writes={}", noop.median(|s| s.writes() as f64)),
        format!("onekey_s={:.3}", one.secs().median),
        format!("onekey_writes={}", one.median(|s| s.writes() as f64)),
        format!("rss_mib={:.1}", cold.rss_mib().max(noop.rss_mib())),
        format!("noop_rss_mib={:.1}", noop.rss_mib()),
        format!("floor_rss_mib={:.1}", floor.rss_mib()),
        format!("validate_s={:.3}", validate.secs().median),
        format!("diff_s={:.3}", diff.secs().median),
        format!("pull_s={:.3}", pull.secs().median),
        format!("noop_etcd_ranges={}", noop.median(|s| s.ranges() as f64)),
        format!("noop_vault_reads={}", noop.median(|s| s.vault.total() as f64)),
        format!("noop_kube_lists={}", noop.median(|s| s.kube.verb("list") as f64)),
        format!("noop_kube_gets={}", noop.median(|s| s.kube.verb("get") as f64)),
        format!("floor_etcd_ranges={}", floor.median(|s| s.ranges() as f64)),
        format!("floor_vault_reads={}", floor.median(|s| s.vault.total() as f64)),
        format!("floor_kube_lists={}", floor.median(|s| s.kube.verb("list") as f64)),
        format!("cold_kube_writes={}", cold.median(|s| s.kube.writes() as f64)),
        format!("cold_files={}", cold.median(|s| s.files_written.len() as f64)),
        format!("diff_vault_requests={}", diff.median(|s| s.vault.total() as f64)),
        format!("pull_vault_reads={}", pull.median(|s| s.vault.total() as f64)),
        format!("history_cold_bytes={}", history.cold_bytes),
        format!("history_onekey_bytes={}", history.onekey_bytes),
        format!("history_onekey_txns={}", history.onekey_txns),
        format!("diff_at_s={diff_at_s:.3}"),
        format!("diff_at_vault_requests={diff_at_vault}"),
        format!("diff_at_etcd_ranges={diff_at_ranges}"),
    ];
    if let Some(w) = &watched {
        line.push(format!("watch_changes={}", w.latencies_ms.len()));
        line.push(format!("watch_p50_ms={:.1}", w.p50()));
        line.push(format!("watch_p99_ms={:.1}", w.p99()));
        line.push(format!("watch_burst_p50_ms={:.1}", w.burst_p50()));
        line.push(format!("watch_burst_p99_ms={:.1}", w.burst_p99()));
        line.push(format!("watch_rss_mib={:.1}", w.peak_rss_kib as f64 / 1024.0));
    }
    line.push(format!("bench_s={:.0}", started.elapsed().as_secs_f64()));
    line.push(format!("load1_start={load_start} load1_end={}", load1()));
    println!("{}", line.join(" "));
}

/// The 1-minute load average: the machine is shared, so every result says how busy it was.
pub fn load1() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn progress(row: &Row) {
    let s = row.secs();
    eprintln!("  {:<44} median {:>8.3} s  (min {:.3}, max {:.3}, {} runs)", row.name, s.median, s.min, s.max, s.n);
}

fn print_table(fleet: &Fleet, rows: &[Row], watched: Option<&watch::Watched>) {
    println!();
    println!("{}", fleet.describe());
    println!(
        "{:<44} {:>4} {:>9} {:>9} {:>9} {:>8} {:>6} {:>7} {:>6} {:>6} {:>6} {:>6}",
        "what (whole process)",
        "runs",
        "min s",
        "median s",
        "max s",
        "RSS MiB",
        "etcd",
        "Vault",
        "LIST",
        "GET",
        "k8s w",
        "files"
    );
    for row in rows {
        let s = row.secs();
        println!(
            "{:<44} {:>4} {:>9.3} {:>9.3} {:>9.3} {:>8.1} {:>6} {:>7} {:>6} {:>6} {:>6} {:>6}",
            row.name,
            s.n,
            s.min,
            s.median,
            s.max,
            row.rss_mib(),
            row.median(|s| s.ranges() as f64),
            row.median(|s| s.vault.total() as f64),
            row.median(|s| s.kube.verb("list") as f64),
            row.median(|s| s.kube.verb("get") as f64),
            row.median(|s| s.kube.writes() as f64),
            row.median(|s| s.files_written.len() as f64),
        );
    }
    println!(
        "(etcd = Range calls at etcd's /metrics; Vault = requests at its audit device; LIST/GET/k8s w = requests \
         at the emulators; files = files whose inode/size/mtime moved; request columns are medians per run)"
    );
    let noop = rows.iter().find(|r| r.name.starts_with("reconcile, no-op"));
    if let Some(noop) = noop {
        let last = noop.samples.last().expect("a run");
        println!("no-op pass, last run: etcd {:?}; Vault {:?}; Kubernetes {:?}", last.etcd, last.vault, last.kube.0);
    }
    if let Some(w) = watched {
        println!(
            "watch (cfgsync run, default 200 ms debounce): put → file written; {} changes each a debounce after the last: min {:.1} ms, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} changes back to back (every other one coalesced): p50 {:.1} ms, p99 {:.1} ms; service peak RSS {:.1} MiB, CPU {:.2} s",
            w.latencies_ms.len(),
            w.min(),
            w.p50(),
            w.p90(),
            w.p99(),
            w.max(),
            w.burst_ms.len(),
            w.burst_p50(),
            w.burst_p99(),
            w.peak_rss_kib as f64 / 1024.0,
            w.cpu_s
        );
    }
    println!();
}

// ---------------------------------------------------------------------------
// checks: a measurement that did the wrong thing is not a measurement

fn check_cold(bed: &Bed, s: &Sample) {
    let what = "cold pass";
    s.expect_code(what, &[0]);
    let fleet = bed.fleet;
    let actions = measure::actions(&measure::report_changes(&s.proc.stdout));
    let created = actions.get("create").copied().unwrap_or(0);
    if created != fleet.objects() + fleet.files() {
        s.fail(what, &format!("report says {actions:?}, wanted {} creates", fleet.objects() + fleet.files()));
    }
    // One write per object: a create (POST; an object at a target's name is
    // made with a create, never applied onto: docs/kubernetes.md).
    if s.kube.verb("create") != fleet.objects() as u64 || s.kube.writes() != fleet.objects() as u64 {
        s.fail(
            what,
            &format!(
                "{} creates, {} writes at the emulators, wanted {} of each",
                s.kube.verb("create"),
                s.kube.writes(),
                fleet.objects()
            ),
        );
    }
    if s.files_written.len() != fleet.files() {
        s.fail(what, &format!("{} files written, wanted {}", s.files_written.len(), fleet.files()));
    }
    for env in ENVS {
        let n = bed.cluster(env).list_objects(Kind::ConfigMap, None).len();
        if n < fleet.apps {
            s.fail(what, &format!("{n} ConfigMaps in {env}, wanted {}", fleet.apps));
        }
    }
}

fn check_noop(_bed: &Bed, s: &Sample) {
    let what = "no-op pass";
    s.expect_code(what, &[0]);
    let actions = measure::actions(&measure::report_changes(&s.proc.stdout));
    if actions.keys().any(|a| a != "unchanged") {
        s.fail(what, &format!("report says {actions:?}"));
    }
    if s.writes() != 0 {
        s.fail(what, &format!("wrote: Kubernetes {:?}, files {:?}", s.kube.0, s.files_written));
    }
}

fn check_floor(bed: &Bed, s: &Sample) {
    s.expect_code("floor", &[0]);
    let counts: floor::FloorCounts =
        serde_json::from_str(s.proc.stdout.trim()).unwrap_or_else(|e| s.fail("floor", &format!("output: {e}")));
    let fleet = bed.fleet;
    let want = floor::FloorCounts {
        keys: fleet.keys(),
        secrets: fleet.secrets(),
        objects: fleet.objects(),
        files: fleet.files(),
        file_bytes: counts.file_bytes,
    };
    if counts != want || counts.file_bytes == 0 {
        s.fail("floor", &format!("read {counts:?}, wanted {want:?}"));
    }
    if s.kube.writes() != 0 || !s.files_written.is_empty() {
        s.fail("floor", "the floor wrote something");
    }
}

fn check_one_key(bed: &Bed, s: &Sample, app: usize, value: &str) {
    let what = "one-key pass";
    s.expect_code(what, &[0]);
    let name = Fleet::app(app);
    let changed: Vec<(String, String)> =
        measure::report_changes(&s.proc.stdout).into_iter().filter(|(a, _)| a != "unchanged").collect();
    let object = format!("ConfigMap {}/{name} in context {FILE_ENV}", bed.fleet.namespace_of(app));
    let file = Fleet::file_path(app);
    let ok = changed.len() == 2
        && changed.iter().any(|(a, addr)| a == "update" && *addr == object)
        && changed.iter().any(|(a, addr)| a == "update" && addr.ends_with(&file));
    if !ok {
        s.fail(what, &format!("report changes {changed:?}, wanted exactly an update of {object} and of {file}"));
    }
    let dev = bed.cluster(FILE_ENV);
    let cm = dev.get_object(Kind::ConfigMap, &bed.fleet.namespace_of(app), &name).expect("the ConfigMap");
    if s.kube.writes() != 1 || s.kube.0.get(&("apply".to_owned(), "configmaps".to_owned())) != Some(&1) {
        s.fail(what, &format!("Kubernetes requests {:?}, wanted exactly one ConfigMap apply", s.kube.0));
    }
    if s.files_written != [bed.path(&file)] {
        s.fail(what, &format!("files written {:?}, wanted only {file}", s.files_written));
    }
    if cm["data"]["KEY3"].as_str() != Some(value) {
        s.fail(what, &format!("the ConfigMap's KEY3 is {}, wanted {value:?}", cm["data"]["KEY3"]));
    }
}

// ---------------------------------------------------------------------------
// profile

/// perf profiles of `validate` and of a no-op `reconcile --once`.
/// `bed N`: loads fleet-N, runs a cold pass, prints how to run cfgsync
/// against it, and keeps the servers up until stdin closes (or Ctrl-C):
/// for profiling by hand.
fn bed(fleet: Fleet, settings: &Settings) {
    println!("{}", fleet.describe());
    let mut bed = Bed::new(fleet, settings);
    let s = bed.cfgsync(&["--output", "json", "reconcile", "--once"]);
    check_cold(&bed, &s);
    println!(
        "ready: cd {} && env -i PATH=\"$PATH\" HOME=$PWD {} --config cfgsync.toml reconcile --once",
        bed.dir.path().display(),
        bed.bin.display()
    );
    println!("etcd {} (client port {}); close stdin or press Ctrl-C to stop", bed.etcd.endpoint, bed.etcd.client_port);
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
        line.clear();
    }
}

fn profile(fleet: Fleet, settings: &Settings) {
    println!("{}", fleet.describe());
    let mut bed = Bed::new(fleet, settings);
    let s = bed.cfgsync(&["--output", "json", "reconcile", "--once"]);
    check_cold(&bed, &s);
    let perf = std::env::var("BENCH_PERF").unwrap_or_else(|_| "perf".into());
    for (name, args) in [("validate", vec!["validate"]), ("noop", vec!["--output", "json", "reconcile", "--once"])] {
        let data = bed.path(&format!("perf-{name}.data"));
        // cpu-clock: VMs often have no hardware counters. DWARF call graphs:
        // Rust's release code keeps no frame pointers.
        let mut record = vec!["record", "-F", "499", "-e", "cpu-clock", "--call-graph", "dwarf"];
        record.extend(["-o", data.to_str().expect("utf-8")]);
        record.push(bed.bin.to_str().expect("utf-8"));
        record.extend(["--config", "cfgsync.toml"]);
        record.extend(args.iter().copied());
        let started = Instant::now();
        let out = bed.runner.command(Path::new(&perf), &record).output().expect("run perf record");
        let took = started.elapsed();
        assert!(
            matches!(out.status.code(), Some(0)),
            "perf record {name}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        for (title, extra) in [("self", "--no-children"), ("with callees", "--children")] {
            let report = bed
                .runner
                .command(
                    Path::new(&perf),
                    &[
                        "report",
                        "-i",
                        data.to_str().expect("utf-8"),
                        "--stdio",
                        extra,
                        "--sort",
                        "symbol",
                        "-g",
                        "none",
                        "--percent-limit",
                        "1",
                    ],
                )
                .output()
                .expect("perf report");
            let text = String::from_utf8_lossy(&report.stdout);
            println!(
                "\n== {name} ({}, {:.2} s under perf): top functions, {title} ==",
                fleet.describe(),
                took.as_secs_f64()
            );
            // perf pads its columns to the longest symbol: squeeze them.
            let lines = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains("[k] 0x"));
            for line in lines.take(40) {
                let squeezed: Vec<&str> = line.split_whitespace().filter(|w| *w != "-").collect();
                let line = squeezed.join(" ");
                println!("  {}", line.chars().take(180).collect::<String>());
            }
        }
    }
}
