//! The floor: the reads a no-op pass cannot avoid, and nothing else, as its
//! own process (the bench binary re-executes itself with `floor SPEC`), so
//! that it pays what cfgsync pays to start: a tokio runtime, an etcd
//! connection, a Vault client, the kubeconfig and a client per cluster.
//!
//! Per env, concurrently: one etcd range over `<prefix>/<env>/` (no
//! pagination, decode limit raised as cfgsync does); every secret the
//! templates name plus the fingerprint key, 8 reads in flight per env
//! (cfgsync's `PARALLEL_READS` in `src/source/vault.rs`), through vaultrs'
//! KV v2 read as cfgsync does; one LIST per (namespace, kind) with cfgsync's
//! label selector, decoded into the typed k8s-openapi objects, 8 in flight
//! per cluster. And every file the no-op pass must compare, read whole.
//! No template is rendered and nothing is compared: that is the work the
//! floor leaves out. It prints what it read as one JSON line, which the
//! driver checks against the fleet, so a floor that read less is caught.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::{Deserialize, Serialize};
use vaultrs::api::kv2::requests::ReadSecretRequest;
use vaultrs::client::VaultClient;

/// What the floor reads; written by the driver as JSON.
#[derive(Serialize, Deserialize)]
pub struct FloorSpec {
    pub etcd: String,
    pub vault: String,
    pub token_file: PathBuf,
    pub mount: String,
    pub kubeconfig: PathBuf,
    pub prefix: String,
    pub envs: Vec<String>,
    pub namespaces: Vec<String>,
    /// Relative to `<mount>/<env>/`, the same in every env.
    pub secret_paths: Vec<String>,
    pub files: Vec<PathBuf>,
}

/// What it found, for the driver to check.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
pub struct FloorCounts {
    pub keys: usize,
    pub secrets: usize,
    pub objects: usize,
    pub files: usize,
    pub file_bytes: usize,
}

/// Reads at once per env, as cfgsync's `PARALLEL_READS` (Vault) does.
const IN_FLIGHT: usize = 8;
const LABELS: &str = "app.kubernetes.io/managed-by=cfgsync";

pub fn main(spec: &Path) -> ExitCode {
    let text = std::fs::read_to_string(spec).unwrap_or_else(|e| panic!("read {}: {e}", spec.display()));
    let spec: FloorSpec = serde_json::from_str(&text).expect("floor spec");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let counts = runtime.block_on(reads(&spec));
    println!("{}", serde_json::to_string(&counts).expect("json"));
    ExitCode::SUCCESS
}

async fn reads(spec: &FloorSpec) -> FloorCounts {
    let token = std::fs::read_to_string(&spec.token_file).expect("token file");
    let vault = Arc::new(crate::load::vault_client(&spec.vault, token.trim()));
    let etcd = etcd_client::Client::connect([spec.etcd.as_str()], None).await.expect("connect to etcd");
    let kubeconfig = Kubeconfig::read_from(&spec.kubeconfig).expect("kubeconfig");
    let envs = join_all(spec.envs.iter().map(|env| env_reads(spec, env, &etcd, &vault, &kubeconfig)));
    let files = spec.files.clone();
    let files = tokio::task::spawn_blocking(move || {
        files.iter().map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display())).len()).collect()
    });
    let (per_env, file_sizes) = tokio::join!(envs, files);
    let file_sizes: Vec<usize> = file_sizes.expect("file reads");
    let mut counts =
        FloorCounts { files: file_sizes.len(), file_bytes: file_sizes.iter().sum(), ..FloorCounts::default() };
    for (keys, secrets, objects) in per_env {
        counts.keys += keys;
        counts.secrets += secrets;
        counts.objects += objects;
    }
    counts
}

async fn env_reads(
    spec: &FloorSpec,
    env: &str,
    etcd: &etcd_client::Client,
    vault: &Arc<VaultClient>,
    kubeconfig: &Kubeconfig,
) -> (usize, usize, usize) {
    let keys = async {
        let mut kv = etcd.kv_client().max_decoding_message_size(64 * 1024 * 1024);
        let prefix = format!("{}/{env}/", spec.prefix);
        let options = etcd_client::GetOptions::new().with_prefix();
        let resp = kv.get(prefix.as_bytes(), Some(options)).await.expect("etcd range");
        resp.kvs().iter().filter(|kv| kv.value_str().is_ok()).count()
    };
    let secrets = stream::iter(&spec.secret_paths)
        .map(|path| {
            let vault = vault.clone();
            async move {
                let full = format!("{env}/{path}");
                let request = ReadSecretRequest::builder().mount(&spec.mount).path(&full).build().expect("request");
                let resp = vaultrs::api::exec_with_result(vault.as_ref(), request)
                    .await
                    .unwrap_or_else(|e| panic!("vault read {full}: {e}"));
                usize::from(resp.data.as_object().is_some_and(|m| !m.is_empty()))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .fold(0, |n, found| async move { n + found });
    let objects = async {
        let options = KubeConfigOptions { context: Some(env.to_owned()), ..Default::default() };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options).await.expect("kube config");
        let client = kube::Client::try_from(config).expect("kube client");
        let params = ListParams::default().labels(&format!("{LABELS},cfgsync.io/env={env}"));
        let lists = spec.namespaces.iter().flat_map(|ns| [(ns, true), (ns, false)]);
        stream::iter(lists)
            .map(|(ns, secrets)| {
                let (client, params) = (client.clone(), params.clone());
                async move {
                    if secrets {
                        Api::<Secret>::namespaced(client, ns).list(&params).await.expect("list secrets").items.len()
                    } else {
                        Api::<ConfigMap>::namespaced(client, ns)
                            .list(&params)
                            .await
                            .expect("list configmaps")
                            .items
                            .len()
                    }
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .fold(0, |n, items| async move { n + items })
            .await
    };
    tokio::join!(keys, secrets, objects)
}
