//! Wall time of `diff staging prod` and `pull --env prod` on an env of
//! 1,000 keys and 100 secrets (real etcd and OpenBao on loopback).
//!
//! Ignored by default (it measures, it does not judge); run it with
//! `bash scripts/test.sh laptop_bench -- --ignored --nocapture`. To time a
//! release build instead of the test build, set
//! `CFGSYNC_BENCH_BIN=$PWD/target/release/cfgsync`.

use std::time::Instant;

use crate::support::{Etcd, Project, Run, Vault, run_output, server_config};

const KEYS: usize = 1_000;
const SECRETS: usize = 100;

/// 1,000 keys in 20 services × 50 keys, and 100 secrets (5 per service,
/// 2 fields each) per env; prod differs from staging in every 10th key and
/// every 5th secret. Written with the clients directly: 2,000 `etcdctl`
/// processes would take longer than the measurement.
fn seed_large(etcd: &Etcd, vault: &Vault) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = etcd_client::Client::connect([etcd.endpoint.as_str()], None).await.unwrap();
        for env in ["staging", "prod"] {
            let keys: Vec<(String, String)> = (0..KEYS)
                .map(|i| {
                    let value = if env == "prod" && i % 10 == 0 { format!("prod-{i}") } else { format!("value-{i}") };
                    (format!("/cfgsync/{env}/svc{:02}/key{:03}", i / 50, i % 50), value)
                })
                .collect();
            for chunk in keys.chunks(100) {
                let ops: Vec<etcd_client::TxnOp> =
                    chunk.iter().map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.as_str(), None)).collect();
                client.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
            }
        }
        let settings = vaultrs::client::VaultClientSettingsBuilder::default()
            .address(&vault.addr)
            .token(&vault.root_token)
            .build()
            .unwrap();
        let vault_client = std::sync::Arc::new(vaultrs::client::VaultClient::new(settings).unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for env in ["staging", "prod"] {
            for i in 0..SECRETS {
                let c = vault_client.clone();
                tasks.spawn(async move {
                    let password =
                        if env == "prod" && i % 5 == 0 { format!("CANARY-prod-{i}") } else { format!("CANARY-{i}") };
                    let data =
                        std::collections::BTreeMap::from([("password", password), ("user", format!("user-{i}"))]);
                    vaultrs::kv2::set(c.as_ref(), "secret", &format!("{env}/svc{:02}/secret{}", i / 5, i % 5), &data)
                        .await
                        .unwrap();
                });
            }
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    });
}

/// One output per service: its 50 keys (through `keys()`) and 5 secrets.
fn outputs() -> String {
    let mut text = String::from("[envs.staging]\n[envs.prod]\n");
    for s in 0..KEYS / 50 {
        text.push_str(&format!(
            "\n[[output]]\nname = \"svc{s:02}\"\n[output.entries]\nCONFIG = \"{{% for k, v in keys(prefix='svc{s:02}/') %}}{{{{ k }}}}={{{{ v }}}}\\n{{% endfor %}}\"\n"
        ));
        for j in 0..5 {
            text.push_str(&format!(
                "SECRET_{j} = \"{{{{ secret(path='svc{s:02}/secret{j}', field='password') }}}}\"\n"
            ));
        }
        text.push_str(&format!("[[output.target]]\nkind = \"file\"\npath = \"out/{{{{ env }}}}/svc{s:02}.env\"\n"));
    }
    text
}

/// Runs the binary under test, or `CFGSYNC_BENCH_BIN` when set.
fn run(p: &Project, args: &[&str]) -> Run {
    let mut cmd = p.command(args);
    if let Some(bin) = std::env::var_os("CFGSYNC_BENCH_BIN") {
        let mut other = std::process::Command::new(bin);
        other.args(cmd.get_args()).current_dir(p.dir.path());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => other.env(k, v),
                None => other.env_remove(k),
            };
        }
        cmd = other;
    }
    run_output(cmd.output().unwrap())
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn laptop_bench_1000_keys_100_secrets() {
    let (etcd, vault) = (Etcd::start(), Vault::start());
    let t = Instant::now();
    seed_large(&etcd, &vault);
    println!("seeded {KEYS} keys and {SECRETS} secrets per env (staging, prod) in {:.2?}", t.elapsed());
    let p = Project::new(&server_config(&etcd, &vault, &outputs()));
    p.write("vault-token", &vault.root_token);

    for round in 1..=3 {
        let t = Instant::now();
        assert_eq!(run(&p, &["validate"]).code, 0);
        let baseline = t.elapsed();
        let t = Instant::now();
        let r = run(&p, &["diff", "staging", "prod"]);
        let diff = t.elapsed();
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stdout.ends_with("120 changed, 0 only in staging, 0 only in prod, 1080 same, 0 no access\n"),
            "{}",
            r.stdout.lines().last().unwrap_or("")
        );
        assert!(!r.all().contains("CANARY"));

        let _ = std::fs::remove_dir_all(p.path("out"));
        let t = Instant::now();
        let r = run(&p, &["pull", "--env", "prod"]);
        let pull = t.elapsed();
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.ends_with("20 created, 0 updated, 0 unchanged, 0 skipped, 0 failed\n"), "{r:?}");

        let t = Instant::now();
        let r = run(&p, &["pull", "--env", "prod"]);
        let pull_again = t.elapsed();
        assert!(r.stdout.ends_with("0 created, 0 updated, 20 unchanged, 0 skipped, 0 failed\n"), "{r:?}");
        println!(
            "round {round}: diff staging prod {:.0} ms; pull --env prod {:.0} ms (fresh), {:.0} ms (nothing to change); validate (start-up, config, templates) {:.0} ms",
            diff.as_secs_f64() * 1e3,
            pull.as_secs_f64() * 1e3,
            pull_again.as_secs_f64() * 1e3,
            baseline.as_secs_f64() * 1e3
        );
    }
}
