//! cfgsync beside confd, the tool it descends from: 1,000 etcd keys, 100
//! file outputs each reading all of them, one env, whole processes.
//!
//! Both render the same text (`key0000=value`, one line per key, sorted) so
//! the outputs are compared byte for byte after the cold run: cfgsync with
//! `format = "raw"` and a `keys(prefix='app/')` loop, confd with a template
//! resource per file over `gets "/cfgsync/prod/app/*"`. confd runs with
//! `-onetime -backend etcdv3` when a `confd` binary is on PATH (or in
//! `CONFD`); without one, cfgsync is measured alone and the table says so.
//!
//! The wall time is the whole process tree's, measured from outside: cfgsync
//! stops and reaps its render workers before it exits, and after each run
//! the bench checks that no worker of the measured binary is left running
//! (one that were would be work the wall time missed). The final line
//! carries confd's time over cfgsync's (`ratio_cold`, `ratio_noop`): the
//! figure issue 20 sets (at least 15×).

use std::path::{Path, PathBuf};

use crate::measure::{self, Runner, stats};
use crate::{Settings, servers, tail, work_dir};

const KEYS: usize = 1_000;
const OUTPUTS: usize = 100;

fn value(i: usize) -> String {
    format!("{i:04}-{}", "v".repeat(59))
}

fn confd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CONFD").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").iter().flat_map(std::env::split_paths).map(|d| d.join("confd")).find(|p| p.is_file())
}

struct Side {
    name: &'static str,
    cold: Vec<f64>,
    noop: Vec<f64>,
    rss_kib: u64,
    cold_ranges: u64,
    noop_ranges: u64,
}

/// Runs `args` `runs` times cold (out dir removed first) and `runs` times no-op.
#[allow(clippy::too_many_arguments)]
fn measure_side(
    name: &'static str,
    runner: &Runner,
    program: &Path,
    args: &[&str],
    out: &Path,
    etcd_port: u16,
    runs: usize,
) -> Side {
    let mut side = Side { name, cold: Vec::new(), noop: Vec::new(), rss_kib: 0, cold_ranges: 0, noop_ranges: 0 };
    for cold in [true, false] {
        for _ in 0..runs {
            if cold && out.exists() {
                std::fs::remove_dir_all(out).expect("remove the outputs");
            }
            std::fs::create_dir_all(out).expect("create the output dir");
            let before_files = measure::file_states(out);
            let before = measure::etcd_calls(etcd_port);
            let p = runner.run(program, args);
            let left = workers_of(program);
            assert!(left.is_empty(), "{name}: render workers outlived the process: {left:?}");
            let ranges = measure::delta(&measure::etcd_calls(etcd_port), &before).get("Range").copied().unwrap_or(0);
            let written = measure::written(&before_files, &measure::file_states(out)).len();
            let want = if cold { OUTPUTS } else { 0 };
            assert!(
                p.code == 0 && written == want,
                "{name} ({}): exit {}, {written} files written, wanted {want}\n{}",
                if cold { "cold" } else { "no-op" },
                p.code,
                tail(&p.stderr, 3000)
            );
            side.rss_kib = side.rss_kib.max(p.rss_kib);
            if cold {
                side.cold.push(p.wall.as_secs_f64());
                side.cold_ranges = ranges;
            } else {
                side.noop.push(p.wall.as_secs_f64());
                side.noop_ranges = ranges;
            }
        }
    }
    side
}

/// The live processes running `program` as a render worker.
fn workers_of(program: &Path) -> Vec<u32> {
    let Ok(program) = program.canonicalize() else { return Vec::new() };
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let mut args = cmdline.split(|b| *b == 0);
        let exe = args.next().map(|a| Path::new(std::str::from_utf8(a).unwrap_or("")).to_path_buf());
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .unwrap_or_default()
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie && exe.as_deref() == Some(program.as_path()) && args.next() == Some(b"__render-worker".as_slice()) {
            pids.push(pid);
        }
    }
    pids
}

pub fn run(settings: &Settings) {
    let runs = settings.runs;
    println!("confd comparison: {KEYS} etcd keys, {OUTPUTS} file outputs each reading all keys, one env; {runs} runs");
    let dir = work_dir("cfgsync-confd-", settings.keep);
    let etcd = servers::Etcd::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let client = runtime.block_on(crate::load::etcd_client(&etcd.endpoint));
    let pairs = (0..KEYS).map(|i| (format!("/cfgsync/prod/app/key{i:04}"), value(i))).collect();
    runtime.block_on(crate::load::etcd_put_all(&client, pairs));

    // cfgsync
    let mut toml = format!("[etcd]\nendpoints = [\"{}\"]\n\n[envs.prod]\n", etcd.endpoint);
    for i in 0..OUTPUTS {
        toml.push_str(&format!(
            "\n[[output]]\nname = \"out{i:03}\"\n[output.entries]\nALL = \"{{% for k, v in keys(prefix='app/') %}}{{{{ k }}}}={{{{ v }}}}\\n{{% endfor %}}\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{{{{ env }}}}/out{i:03}.txt\"\nformat = \"raw\"\n"
        ));
    }
    std::fs::write(dir.path().join("cfgsync.toml"), toml).expect("write cfgsync.toml");
    let runner = Runner::new(dir.path());
    let cfgsync_out = dir.path().join("out/prod");
    let bin = settings.bin.clone();
    let cfgsync = measure_side(
        "cfgsync",
        &runner,
        &bin,
        &["--config", "cfgsync.toml", "reconcile", "--once"],
        &cfgsync_out,
        etcd.client_port,
        runs,
    );
    let expected: String = (0..KEYS).map(|i| format!("key{i:04}={}\n", value(i))).collect();
    let got = std::fs::read_to_string(cfgsync_out.join("out000.txt")).expect("cfgsync's output");
    assert_eq!(got, expected, "cfgsync rendered something else");

    // confd
    let confd = confd_binary().map(|confd| {
        let confdir = dir.path().join("confd");
        let confd_out = dir.path().join("confd-out");
        std::fs::create_dir_all(confdir.join("conf.d")).expect("confd dir");
        std::fs::create_dir_all(confdir.join("templates")).expect("confd dir");
        for i in 0..OUTPUTS {
            std::fs::write(
                confdir.join(format!("conf.d/out{i:03}.toml")),
                format!(
                    "[template]\nsrc = \"out{i:03}.tmpl\"\ndest = \"{}\"\nkeys = [\"/cfgsync/prod/app\"]\nmode = \"0644\"\n",
                    confd_out.join(format!("out{i:03}.txt")).display()
                ),
            )
            .expect("confd resource");
            std::fs::write(
                confdir.join(format!("templates/out{i:03}.tmpl")),
                "{{range gets \"/cfgsync/prod/app/*\"}}{{base .Key}}={{.Value}}\n{{end}}",
            )
            .expect("confd template");
        }
        let confdir_arg = confdir.to_str().expect("utf-8").to_owned();
        let side = measure_side(
            "confd",
            &runner,
            &confd,
            &["-onetime", "-backend", "etcdv3", "-node", &etcd.endpoint, "-confdir", &confdir_arg, "-log-level", "error"],
            &confd_out,
            etcd.client_port,
            runs,
        );
        let got = std::fs::read_to_string(confd_out.join("out000.txt")).expect("confd's output");
        assert_eq!(got, expected, "confd rendered something else than cfgsync");
        (confd, side)
    });

    println!(
        "\n{:<10} {:>12} {:>12} {:>12} {:>12} {:>9} {:>11} {:>11}",
        "tool", "cold median", "cold min", "no-op median", "no-op min", "RSS MiB", "cold Range", "no-op Range"
    );
    let mut sides = vec![&cfgsync];
    if let Some((_, s)) = &confd {
        sides.push(s);
    }
    for s in &sides {
        let (c, n) = (stats(&s.cold), stats(&s.noop));
        println!(
            "{:<10} {:>11.3}s {:>11.3}s {:>11.3}s {:>11.3}s {:>9.1} {:>11} {:>11}",
            s.name,
            c.median,
            c.min,
            n.median,
            n.min,
            s.rss_kib as f64 / 1024.0,
            s.cold_ranges,
            s.noop_ranges
        );
    }
    match &confd {
        Some((path, _)) => println!("confd: {}; outputs identical to cfgsync's", path.display()),
        None => println!("confd: not on PATH (nor CONFD): cfgsync measured alone"),
    }
    let mut line = vec![
        format!("keys={KEYS}"),
        format!("files={OUTPUTS}"),
        format!("runs={runs}"),
        format!("cfgsync_cold_s={:.3}", stats(&cfgsync.cold).median),
        format!("cfgsync_noop_s={:.3}", stats(&cfgsync.noop).median),
        format!("cfgsync_rss_mib={:.1}", cfgsync.rss_kib as f64 / 1024.0),
        format!("cfgsync_noop_ranges={}", cfgsync.noop_ranges),
    ];
    match &confd {
        Some((_, s)) => line.extend([
            format!("confd_cold_s={:.3}", stats(&s.cold).median),
            format!("confd_noop_s={:.3}", stats(&s.noop).median),
            format!("confd_rss_mib={:.1}", s.rss_kib as f64 / 1024.0),
            format!("confd_noop_ranges={}", s.noop_ranges),
            format!("ratio_cold={:.1}", stats(&s.cold).median / stats(&cfgsync.cold).median),
            format!("ratio_noop={:.1}", stats(&s.noop).median / stats(&cfgsync.noop).median),
        ]),
        None => line.push("confd=absent".to_owned()),
    }
    println!("{}", line.join(" "));
    drop(etcd);
}
