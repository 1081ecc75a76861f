//! What ships in `deploy/`, checked with the tools operators run it with.
//!
//! - [`prometheus`]: `promtool check rules` and `promtool test rules` on the
//!   alerts; every alert has a unit test that fires it and one that does
//!   not; every metric, label and label value a rule or a dashboard query
//!   names is one that a live `cfgsync run` (real etcd and OpenBao) serves;
//!   the dashboard's queries parse as PromQL; the Prometheus config in
//!   docs/observability.md loads the rules. Also the metrics the alerts
//!   added: `cfgsync_watch_up` follows the etcd watch, and
//!   `cfgsync_secret_reads_total` counts Vault reads.
//! - [`kubernetes`]: the kustomization renders (`kubectl kustomize`); every
//!   object goes through its k8s-openapi type and back with nothing dropped
//!   or changed (an unknown or misspelled field, a wrong type); the kinds
//!   kube-emulator serves are applied server-side to it with the real
//!   kubectl; and the pieces agree with each other, with the config in the
//!   ConfigMap and with the image.
//! - [`systemd`]: `systemd-analyze verify` with no warning, `systemd-analyze
//!   security --offline` at or under the recorded exposure, and every
//!   system call of a traced `cfgsync run` (render workers, a `check_cmd`)
//!   inside the unit's `SystemCallFilter=`.
//! - [`container`]: the Containerfile is linted (pinned bases, a numeric
//!   non-root user, exec-form entrypoint); there is no container engine here
//!   to build it. Every shipped command line parses.
//!
//! The tools come from Debian packages that scripts/test.sh installs:
//! `prometheus` (promtool), `systemd` (systemd-analyze), `strace`; the
//! variables `CFGSYNC_TEST_PROMTOOL`, `CFGSYNC_TEST_SYSTEMD_ANALYZE` and
//! `CFGSYNC_TEST_STRACE` override their /usr/bin paths.

mod container;
mod kubernetes;
mod prometheus;
mod systemd;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A file of the repository.
fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// The program `var` names, else `default`, which Debian's `package` installs.
fn tool(var: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.is_file(),
        "{}: not found; install Debian's {package} package (scripts/test.sh does) or set {var}",
        path.display()
    );
    path
}

fn promtool() -> PathBuf {
    tool("CFGSYNC_TEST_PROMTOOL", "/usr/bin/promtool", "prometheus")
}

fn systemd_analyze() -> PathBuf {
    tool("CFGSYNC_TEST_SYSTEMD_ANALYZE", "/usr/bin/systemd-analyze", "systemd")
}

fn strace() -> PathBuf {
    tool("CFGSYNC_TEST_STRACE", "/usr/bin/strace", "strace")
}

fn kubectl() -> PathBuf {
    std::env::var_os("CFGSYNC_TEST_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("CFGSYNC_TEST_KUBECTL is not set: run the tests through scripts/test.sh"))
}

/// The documents of a YAML stream (empty ones, e.g. only comments, left out).
fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(&read(rel), rel);
    assert_eq!(docs.len(), 1, "{rel}: one YAML document expected");
    docs.remove(0)
}
