//! Loading a fleet into the servers, fast: etcd in transactions of 128
//! puts (etcd's default `--max-txn-ops`), 8 in flight; Vault over HTTP
//! (vaultrs, the client cfgsync uses), 32 writes in flight; namespaces
//! straight into the emulators' stores (not counted as requests).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use kube_emulator::Emulator;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use crate::spec::{ENVS, FIELDS, FINGERPRINT_FIELD, FINGERPRINT_PATH, Fleet, KEYS_PER_APP, MOUNT};

/// etcd's default limit of operations in one transaction.
const TXN_OPS: usize = 128;

pub async fn etcd_client(endpoint: &str) -> etcd_client::Client {
    etcd_client::Client::connect([endpoint], None).await.unwrap_or_else(|e| panic!("connect to etcd {endpoint}: {e}"))
}

/// Puts `pairs` in transactions of [`TXN_OPS`], 8 at a time.
pub async fn etcd_put_all(client: &etcd_client::Client, pairs: Vec<(String, String)>) {
    let batches: Vec<Vec<etcd_client::TxnOp>> = pairs
        .chunks(TXN_OPS)
        .map(|c| c.iter().map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.as_str(), None)).collect())
        .collect();
    stream::iter(batches)
        .map(|ops| {
            let mut kv = client.kv_client();
            async move { kv.txn(etcd_client::Txn::new().and_then(ops)).await.expect("etcd txn") }
        })
        .buffer_unordered(8)
        .for_each(|_| async {})
        .await;
}

pub fn vault_client(addr: &str, token: &str) -> VaultClient {
    let settings = VaultClientSettingsBuilder::default()
        .address(addr)
        .token(token)
        .timeout(Some(Duration::from_secs(30)))
        .build()
        .expect("vault client settings");
    VaultClient::new(settings).expect("vault client")
}

/// Writes `secrets` (path under the mount → fields), 32 at a time.
pub async fn vault_put_all(client: &VaultClient, secrets: Vec<(String, BTreeMap<String, String>)>) {
    stream::iter(secrets)
        .map(|(path, fields)| async move {
            vaultrs::kv2::set(client, MOUNT, &path, &fields)
                .await
                .unwrap_or_else(|e| panic!("vault write {path}: {e}"));
        })
        .buffer_unordered(32)
        .for_each(|_| async {})
        .await;
}

/// What loading took.
pub struct Loaded {
    pub etcd: Duration,
    pub vault: Duration,
}

/// Loads the whole fleet: keys, secrets, fingerprint keys, namespaces.
pub async fn fleet(fleet: &Fleet, etcd: &etcd_client::Client, vault: &VaultClient, clusters: &[Emulator]) -> Loaded {
    let start = Instant::now();
    let mut pairs = Vec::with_capacity(fleet.keys());
    for env in ENVS {
        for app in 0..fleet.apps {
            for k in 0..KEYS_PER_APP {
                pairs.push((Fleet::key_path(env, app, k), Fleet::key_value(env, app, k, 0)));
            }
        }
    }
    etcd_put_all(etcd, pairs).await;
    let etcd_took = start.elapsed();

    let start = Instant::now();
    let mut secrets = Vec::with_capacity(fleet.secrets());
    for env in ENVS {
        secrets.push((
            format!("{env}/{FINGERPRINT_PATH}"),
            BTreeMap::from([(FINGERPRINT_FIELD.to_owned(), Fleet::fingerprint_key(env))]),
        ));
        for app in 0..fleet.apps {
            let fields = FIELDS.iter().map(|f| ((*f).to_owned(), Fleet::secret_value(env, app, f))).collect();
            secrets.push((format!("{env}/{}", Fleet::secret_path(app)), fields));
        }
    }
    vault_put_all(vault, secrets).await;
    let vault_took = start.elapsed();

    for cluster in clusters {
        for n in 0..fleet.namespaces() {
            cluster.create_namespace(&Fleet::namespace_name(n));
        }
    }
    Loaded { etcd: etcd_took, vault: vault_took }
}
