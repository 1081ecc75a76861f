//! Kubernetes API calls: clients per kubeconfig context, LIST, server-side
//! apply, delete, rollout restarts. Planning lives in the parent module;
//! this one only talks to clusters.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::Mutex;

use super::{ANNOTATION_CONFIG_HASH, DesiredObject, FIELD_MANAGER, KubeError, LABEL_ENV, LABEL_MANAGED_BY, LiveObject};
use crate::config::{ObjectKind, Restart};

/// Clients per kubeconfig context, built on first use.
pub struct KubeClients {
    /// `--kubeconfig` or `[kubernetes] kubeconfig`.
    path: Option<PathBuf>,
    clients: Mutex<BTreeMap<String, kube::Client>>,
}

/// How long a cluster may take to accept a connection / answer: one
/// unreachable cluster must not hold the others' pass for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

impl KubeClients {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path, clients: Mutex::new(BTreeMap::new()) }
    }

    async fn config(&self, context: &str) -> Result<kube::Config, KubeError> {
        let kubeconfig = match &self.path {
            Some(p) => {
                Some(Kubeconfig::read_from(p).map_err(|e| KubeError::Kubeconfig(format!("{}: {e}", p.display())))?)
            }
            None => match Kubeconfig::from_env() {
                Ok(Some(k)) => Some(k),
                Ok(None) => Kubeconfig::read().ok(),
                Err(e) => return Err(KubeError::Kubeconfig(format!("KUBECONFIG: {e}"))),
            },
        };
        let client_err = |cause: String| KubeError::Client { context: context.to_owned(), cause };
        let mut config = match kubeconfig {
            Some(k) => {
                let options = KubeConfigOptions {
                    context: (!context.is_empty()).then(|| context.to_owned()),
                    ..Default::default()
                };
                kube::Config::from_custom_kubeconfig(k, &options).await.map_err(|e| client_err(e.to_string()))?
            }
            None if context.is_empty() => kube::Config::incluster().map_err(|e| client_err(e.to_string()))?,
            None => {
                return Err(KubeError::Kubeconfig(format!(
                    "no kubeconfig found for context {context:?}: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config"
                )));
            }
        };
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        Ok(config)
    }

    pub async fn client(&self, context: &str) -> Result<kube::Client, KubeError> {
        if let Some(c) = self.clients.lock().await.get(context) {
            return Ok(c.clone());
        }
        let config = self.config(context).await?;
        let client = kube::Client::try_from(config)
            .map_err(|e| KubeError::Client { context: context.to_owned(), cause: e.to_string() })?;
        self.clients.lock().await.insert(context.to_owned(), client.clone());
        Ok(client)
    }
}

/// The API server's own words for a failed call, without response bodies.
pub fn cause(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Lists our objects of one kind for one env in one namespace: one request.
pub async fn list(
    client: &kube::Client,
    context: &str,
    namespace: &str,
    kind: ObjectKind,
    env: &str,
) -> Result<Vec<LiveObject>, KubeError> {
    let params = ListParams::default().labels(&format!("{LABEL_MANAGED_BY}=cfgsync,{LABEL_ENV}={env}"));
    let err = |e: kube::Error| KubeError::List {
        context: context.to_owned(),
        namespace: namespace.to_owned(),
        kind,
        cause: cause(&e),
    };
    let to_live = |meta: kube::api::ObjectMeta, data: BTreeMap<String, Vec<u8>>, type_: Option<String>| LiveObject {
        kind,
        namespace: meta.namespace.unwrap_or_default(),
        name: meta.name.unwrap_or_default(),
        data,
        labels: meta.labels.unwrap_or_default(),
        annotations: meta.annotations.unwrap_or_default(),
        type_,
    };
    Ok(match kind {
        ObjectKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
            api.list(&params)
                .await
                .map_err(err)?
                .items
                .into_iter()
                .map(|s| {
                    let data = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                    to_live(s.metadata, data, Some(s.type_.unwrap_or_else(|| "Opaque".to_owned())))
                })
                .collect()
        }
        ObjectKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            api.list(&params)
                .await
                .map_err(err)?
                .items
                .into_iter()
                .map(|c| {
                    let mut data: BTreeMap<String, Vec<u8>> =
                        c.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                    data.extend(c.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
                    to_live(c.metadata, data, None)
                })
                .collect()
        }
    })
}

/// Server-side applies `d` under the `cfgsync` field manager.
pub async fn apply(client: &kube::Client, d: &DesiredObject) -> Result<(), KubeError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let manifest = super::manifest(d);
    let (ns, name) = (&d.address.namespace, &d.address.name);
    let result = match d.kind {
        ObjectKind::Secret => {
            Api::<Secret>::namespaced(client.clone(), ns).patch(name, &params, &Patch::Apply(&manifest)).await.map(drop)
        }
        ObjectKind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), ns)
            .patch(name, &params, &Patch::Apply(&manifest))
            .await
            .map(drop),
    };
    result.map_err(|e| KubeError::Apply {
        context: d.address.context.clone(),
        namespace: ns.clone(),
        name: name.clone(),
        kind: d.kind,
        cause: cause(&e),
    })
}

/// Deletes one object; already gone is success.
pub async fn delete(
    client: &kube::Client,
    context: &str,
    kind: ObjectKind,
    namespace: &str,
    name: &str,
) -> Result<(), KubeError> {
    let params = DeleteParams::default();
    let result = match kind {
        ObjectKind::Secret => {
            Api::<Secret>::namespaced(client.clone(), namespace).delete(name, &params).await.map(drop)
        }
        ObjectKind::ConfigMap => {
            Api::<ConfigMap>::namespaced(client.clone(), namespace).delete(name, &params).await.map(drop)
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(KubeError::Delete {
            context: context.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            kind,
            cause: cause(&e),
        }),
    }
}

/// Rolls a workload by setting its pod template's config-hash annotation.
pub async fn restart(client: &kube::Client, d: &DesiredObject, r: &Restart) -> Result<(), KubeError> {
    let patch = serde_json::json!({
        "spec": { "template": { "metadata": { "annotations": { ANNOTATION_CONFIG_HASH: d.fingerprint } } } }
    });
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..Default::default() };
    let ns = &d.address.namespace;
    let result = match r.kind.as_str() {
        "Deployment" => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch(&r.name, &params, &Patch::Merge(&patch))
            .await
            .map(drop),
        "StatefulSet" => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch(&r.name, &params, &Patch::Merge(&patch))
            .await
            .map(drop),
        _ => Api::<DaemonSet>::namespaced(client.clone(), ns)
            .patch(&r.name, &params, &Patch::Merge(&patch))
            .await
            .map(drop),
    };
    result.map_err(|e| KubeError::Restart {
        context: d.address.context.clone(),
        namespace: ns.clone(),
        workload: r.kind.clone(),
        name: r.name.clone(),
        cause: cause(&e),
    })
}
