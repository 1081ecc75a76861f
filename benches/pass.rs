//! One reconcile pass at scale, against a real etcd: 1,000 keys, 100
//! outputs, each output reading every key through `keys(prefix='')`.
//!
//! Run with `cargo bench --bench pass` (needs `etcd` on PATH or
//! `CFGSYNC_TEST_ETCD`; `scripts/test.sh` installs it). Prints the wall time
//! of the first pass (renders and writes 200 files: 100 outputs × 2 envs are
//! too many to read, so one env is used: 100 files) and of no-op passes
//! (renders, compares, writes nothing).

#[path = "../tests/integration/support/servers.rs"]
mod servers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cfgsync::config;
use cfgsync::reconcile::{PassOptions, run_pass};
use cfgsync::render::Templates;
use cfgsync::source::Sources;

const KEYS: usize = 1_000;
const OUTPUTS: usize = 100;
const RUNS: usize = 10;

fn main() {
    let etcd = servers::Etcd::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await.unwrap();
        let value = "v".repeat(64);
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(100) {
            let ops: Vec<_> = chunk
                .iter()
                .map(|i| etcd_client::TxnOp::put(format!("/cfgsync/prod/app/key{i:04}"), value.clone(), None))
                .collect();
            client.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let mut text = format!("[etcd]\nendpoints = [\"{}\"]\n\n[envs.prod]\n", etcd.endpoint);
    for i in 0..OUTPUTS {
        text.push_str(&format!(
            "\n[[output]]\nname = \"out{i:03}\"\n[output.entries]\nALL = \"{{% for k, v in keys(prefix='app/') %}}{{{{ k }}}}={{{{ v }}}}\\n{{% endfor %}}\"\n[[output.target]]\nkind = \"file\"\npath = \"out/{{{{ env }}}}/out{i:03}.env\"\n"
        ));
    }
    let path = dir.path().join("cfgsync.toml");
    std::fs::write(&path, &text).unwrap();
    let config = config::load(&path, &BTreeMap::<String, String>::new()).unwrap();
    let templates = Templates::compile(&config).unwrap();
    let sources = Sources::new(&config);
    let options = PassOptions::default();
    let targets = cfgsync::reconcile::Targets::new(&config, None);

    let (first, report) = runtime.block_on(async {
        let start = Instant::now();
        let report = run_pass(&config, &templates, &sources, &targets, &options).await;
        (start.elapsed(), report)
    });
    assert!(!report.failed(), "first pass failed: {:?}", report.envs[0].source_error);
    assert_eq!(report.counts(true).get("create"), Some(&OUTPUTS));

    let mut noop: Vec<Duration> = (0..RUNS)
        .map(|_| {
            runtime.block_on(async {
                let start = Instant::now();
                let report = run_pass(&config, &templates, &sources, &targets, &options).await;
                assert_eq!(report.counts(true).get("unchanged"), Some(&OUTPUTS));
                start.elapsed()
            })
        })
        .collect();
    noop.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("pass: {KEYS} etcd keys, {OUTPUTS} outputs each reading all keys");
    println!("  first pass (render + write {OUTPUTS} files): {:.1} ms", ms(first));
    println!(
        "  no-op pass over {RUNS} runs: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        ms(noop[0]),
        ms(noop[RUNS / 2]),
        ms(noop[RUNS - 1])
    );
}
