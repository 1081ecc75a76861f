//! Prism (npm `@stoplight/prism-cli`) as a validating proxy in front of a
//! GitHub API (the emulator, or anything else speaking it): every request
//! and answer passing through is checked against GitHub's published
//! OpenAPI description (npm `@octokit/openapi`,
//! `generated/api.github.com.json`).
//!
//! ```no_run
//! use kube_emulator::GithubEmulator;
//! use kube_emulator::github::prism::Prism;
//!
//! let github = GithubEmulator::start();
//! let prism = Prism::from_env(&github.url()).unwrap_or_else(|e| panic!("{e}"));
//! // ... send requests to prism.url() instead of github.url(), then judge
//! // each answer with kube_emulator::github::prism::judge(...) ...
//! ```
//!
//! Decisions:
//! - Prism runs with `--errors`: a request the description does not allow
//!   is answered by Prism itself (422 `application/problem+json`, never
//!   forwarded), and an answer it does not allow becomes a 500
//!   `application/problem+json` whose `validation` lists the violations.
//!   Lesser findings (an answer status the description does not list, as
//!   for most 4xx here) come as warnings in the `sl-violations` header.
//! - Paths come from `CFGSYNC_TEST_PRISM` and `CFGSYNC_TEST_GITHUB_OPENAPI`
//!   (exported by `scripts/test.sh`, which installs both npm packages);
//!   when they are missing the error says so and what to run. A test never
//!   skips for want of Prism.
//! - Prism loads the 13 MB description in 15–30 s: start one per test
//!   binary where possible, and wait for its "listening" line with a
//!   generous deadline rather than a fixed sleep.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::plumbing::lock;

/// Environment variable with the path of the `prism` executable.
pub const PRISM_ENV: &str = "CFGSYNC_TEST_PRISM";
/// Environment variable with the path of `api.github.com.json`.
pub const SPEC_ENV: &str = "CFGSYNC_TEST_GITHUB_OPENAPI";

/// How long Prism may take to load the description and listen.
const START_DEADLINE: Duration = Duration::from_secs(180);

/// Why Prism could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PrismError {
    #[error(
        "{var} is not set: run the tests through scripts/test.sh (it installs the npm packages \
         @stoplight/prism-cli and @octokit/openapi under target/test-tools/npm and exports {var}), \
         or set {var} yourself"
    )]
    NotConfigured { var: &'static str },
    #[error("{what} not found at {}: run scripts/test.sh to install it, or fix {var}", path.display())]
    Missing { what: &'static str, var: &'static str, path: PathBuf },
    #[error("cannot find a free port for Prism: {0}")]
    Port(#[source] std::io::Error),
    #[error("cannot start Prism ({}): {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Prism exited ({status}) before listening; its output:\n{log}")]
    Exited { status: String, log: String },
    #[error("Prism did not listen within {deadline:?}; its output so far:\n{log}")]
    Timeout { deadline: Duration, log: String },
}

/// A running Prism proxy; killed on drop.
pub struct Prism {
    url: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Prism {
    /// Starts Prism with the paths from [`PRISM_ENV`] and [`SPEC_ENV`].
    pub fn from_env(upstream: &str) -> Result<Prism, PrismError> {
        let var = |name: &'static str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .ok_or(PrismError::NotConfigured { var: name })
        };
        let (prism, spec) = (var(PRISM_ENV)?, var(SPEC_ENV)?);
        if !prism.is_file() {
            return Err(PrismError::Missing { what: "the prism executable", var: PRISM_ENV, path: prism });
        }
        if !spec.is_file() {
            return Err(PrismError::Missing { what: "GitHub's OpenAPI description", var: SPEC_ENV, path: spec });
        }
        Prism::start(&prism, &spec, upstream)
    }

    /// Starts `prism proxy <spec> <upstream> --errors` on 127.0.0.1 and a
    /// free port, and returns once it listens.
    pub fn start(prism: &Path, spec: &Path, upstream: &str) -> Result<Prism, PrismError> {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(PrismError::Port)?.port();
        let mut child = Command::new(prism)
            .arg("proxy")
            .arg(spec)
            .arg(upstream)
            .args(["--errors", "--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| PrismError::Spawn { program: prism.to_path_buf(), source })?;
        let log = Arc::new(Mutex::new(Vec::new()));
        // Drain both pipes for Prism's whole life: a full pipe would stall it.
        if let Some(out) = child.stdout.take() {
            drain(out, log.clone());
        }
        if let Some(err) = child.stderr.take() {
            drain(err, log.clone());
        }
        let mut prism = Prism { url: format!("http://127.0.0.1:{port}"), child, log };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if lock(&prism.log).iter().any(|l| l.contains("Prism is listening on")) {
                return Ok(prism);
            }
            if let Ok(Some(status)) = prism.child.try_wait() {
                // Let the readers catch the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Err(PrismError::Exited { status: status.to_string(), log: prism.log() });
            }
            if Instant::now() > deadline {
                return Err(PrismError::Timeout { deadline: START_DEADLINE, log: prism.log() });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The proxy's base URL, to use instead of the upstream's.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Everything Prism printed so far.
    pub fn log(&self) -> String {
        lock(&self.log).join("\n")
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain(pipe: impl std::io::Read + Send + 'static, log: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            match line {
                Ok(l) => lock(&log).push(l),
                Err(_) => return,
            }
        }
    });
}

/// What Prism made of one exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Prism refused the request as not allowed by the description (it was
    /// not forwarded); the messages say why.
    pub request_rejected: Vec<String>,
    /// The answer (or the request, seen after forwarding) violates the
    /// description: errors.
    pub errors: Vec<String>,
    /// Lesser findings, e.g. an answer status the description does not list.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// Forwarded, and nothing worse than warnings.
    pub fn is_clean(&self) -> bool {
        self.request_rejected.is_empty() && self.errors.is_empty()
    }
}

fn messages(list: Option<&Value>, severity: Option<&str>) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|v| severity.is_none_or(|s| v["severity"] == s))
                .map(|v| {
                    let location: Vec<String> = v["location"]
                        .as_array()
                        .map(|l| l.iter().map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string)).collect())
                        .unwrap_or_default();
                    format!("{}: {}", location.join("."), v["message"].as_str().unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Judges one answer that came through Prism from its `content-type`, its
/// `sl-violations` header and its body.
pub fn judge(content_type: Option<&str>, sl_violations: Option<&str>, body: &[u8]) -> Verdict {
    let mut verdict = Verdict::default();
    let header: Option<Value> = sl_violations.and_then(|h| serde_json::from_str(h).ok());
    verdict.warnings = messages(header.as_ref(), Some("Warning"));
    verdict.errors = messages(header.as_ref(), Some("Error"));
    if content_type.is_some_and(|c| c.starts_with("application/problem+json"))
        && let Ok(problem) = serde_json::from_slice::<Value>(body)
        && let Some(kind) = problem["type"].as_str().filter(|t| t.contains("stoplight.io/prism"))
    {
        let found = messages(problem.get("validation"), Some("Error"));
        let found = if found.is_empty() {
            vec![format!("{kind}: {}", problem["detail"].as_str().unwrap_or_default())]
        } else {
            found
        };
        if kind.ends_with("#VIOLATIONS") {
            for f in found {
                if !verdict.errors.contains(&f) {
                    verdict.errors.push(f);
                }
            }
        } else {
            verdict.request_rejected = found;
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_prisms_three_answers() {
        let rejected = br#"{"type":"https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY","title":"Invalid request","status":422,"validation":[{"location":["body"],"severity":"Error","code":"required","message":"Request body must have required property 'key_id'"}]}"#;
        let v = judge(Some("application/problem+json"), None, rejected);
        assert_eq!(v.request_rejected, vec!["body: Request body must have required property 'key_id'"]);
        assert!(!v.is_clean());

        let header = r#"[{"location":["response","body","secrets","0"],"severity":"Error","code":"required","message":"must have required property 'updated_at'"}]"#;
        let violations = br#"{"type":"https://stoplight.io/prism/errors#VIOLATIONS","status":500,"validation":[{"location":["response","body","secrets","0"],"severity":"Error","code":"required","message":"must have required property 'updated_at'"}]}"#;
        let v = judge(Some("application/problem+json"), Some(header), violations);
        assert_eq!(v.errors, vec!["response.body.secrets.0: must have required property 'updated_at'"]);

        let warning = r#"[{"location":["response"],"severity":"Warning","message":"Unable to match the returned status code with those defined in the document: 200"}]"#;
        let v = judge(Some("application/json; charset=utf-8"), Some(warning), b"{}");
        assert!(v.is_clean());
        assert_eq!(v.warnings.len(), 1);
    }
}
