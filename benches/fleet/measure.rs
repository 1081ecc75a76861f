//! The instruments: whole-process runs under GNU time (wall clock from here,
//! peak RSS from `time -f %M`), request counters read at the servers, file
//! write detection, and the report JSON.
//!
//! Requests are counted where they arrive, never trusted from cfgsync:
//! - etcd: its own `/metrics`, `grpc_server_handled_total` by `grpc_method`;
//! - Vault: an OpenBao file audit device (one `request` entry per call);
//! - Kubernetes: the emulators' request counters (by verb and resource);
//! - files: inode, size and mtime of every file under `out/` before and after.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One finished process.
pub struct Proc {
    pub wall: Duration,
    pub rss_kib: u64,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs programs the same way every time: under GNU time, with an empty
/// environment (PATH and HOME only, HOME = the work dir), from the work dir.
pub struct Runner {
    pub dir: PathBuf,
    pub time: PathBuf,
}

impl Runner {
    pub fn new(dir: &Path) -> Self {
        let time = PathBuf::from(std::env::var("BENCH_TIME").unwrap_or_else(|_| "/usr/bin/time".into()));
        assert!(
            time.is_file(),
            "{} not found: GNU time measures peak RSS (Debian package `time`; scripts/bench.sh installs it)",
            time.display()
        );
        Self { dir: dir.to_path_buf(), time }
    }

    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .env("NO_COLOR", "1");
        cmd
    }

    pub fn run(&self, program: &Path, args: &[&str]) -> Proc {
        let rss_file = self.dir.join(".time-rss");
        let mut cmd = self.command(&self.time, &[]);
        cmd.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(program).args(args);
        cmd.stdin(Stdio::null());
        let start = Instant::now();
        let out = cmd.output().unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        let wall = start.elapsed();
        // With a non-zero exit, time writes "Command exited with ..." first.
        let rss_text = std::fs::read_to_string(&rss_file).unwrap_or_default();
        let rss_kib = rss_text.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        Proc {
            wall,
            rss_kib,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// min / median / max of a sample.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stats(values: &[f64]) -> Stats {
    if values.is_empty() {
        return Stats::default();
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Stats { min: v[0], median, max: v[n - 1], n }
}

/// Nearest-rank percentile of a sorted sample.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------
// etcd

/// `grpc_server_handled_total` by method, from etcd's `/metrics`.
pub fn etcd_calls(client_port: u16) -> BTreeMap<String, u64> {
    let (_, body) =
        http_get(SocketAddr::from(([127, 0, 0, 1], client_port)), "/metrics", &[]).expect("GET etcd /metrics");
    let mut calls = BTreeMap::new();
    for line in body.lines().filter(|l| l.starts_with("grpc_server_handled_total{")) {
        let Some(method) = line.split("grpc_method=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *calls.entry(method.to_owned()).or_default() += value as u64;
    }
    calls
}

pub fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0))).filter(|(_, v)| *v > 0).collect()
}

/// A minimal HTTP/1.0 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

// ---------------------------------------------------------------------------
// Vault

/// Requests seen by the Vault audit device since the last `take`.
#[derive(Clone, Debug, Default)]
pub struct VaultCounts {
    /// KV v2 reads (`GET <mount>/data/...`).
    pub kv_read: u64,
    /// KV v2 lists and metadata reads.
    pub kv_meta: u64,
    /// Everything else (token lookups, logins, ...).
    pub other: u64,
}

impl VaultCounts {
    pub fn total(&self) -> u64 {
        self.kv_read + self.kv_meta + self.other
    }
}

/// Tails an OpenBao file audit log.
pub struct AuditLog {
    path: PathBuf,
    offset: u64,
}

impl AuditLog {
    pub fn new(path: PathBuf) -> Self {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Self { path, offset }
    }

    /// Counts the request entries written since the last call.
    pub fn take(&mut self, mount: &str) -> VaultCounts {
        let mut file = std::fs::File::open(&self.path).expect("open the audit log");
        file.seek(SeekFrom::Start(self.offset)).expect("seek the audit log");
        let mut text = String::new();
        file.read_to_string(&mut text).expect("read the audit log");
        // Only whole lines: the last one may still be being written.
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        let mut counts = VaultCounts::default();
        for line in text[..complete].lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else { continue };
            if entry["type"] != "request" {
                continue;
            }
            let path = entry["request"]["path"].as_str().unwrap_or_default();
            let op = entry["request"]["operation"].as_str().unwrap_or_default();
            if path.starts_with(&format!("{mount}/data/")) && op == "read" {
                counts.kv_read += 1;
            } else if path.starts_with(&format!("{mount}/metadata/")) {
                counts.kv_meta += 1;
            } else {
                counts.other += 1;
            }
        }
        counts
    }
}

// ---------------------------------------------------------------------------
// Kubernetes

/// Requests at the emulators since their last reset: (verb, resource) → n,
/// summed over clusters.
#[derive(Clone, Debug, Default)]
pub struct KubeCounts(pub BTreeMap<(String, String), u64>);

impl KubeCounts {
    pub fn take(clusters: &[kube_emulator::Emulator]) -> Self {
        let mut counts = BTreeMap::new();
        for c in clusters {
            for (verb, resource, n) in c.requests().iter() {
                if verb != kube_emulator::Verb::Discover {
                    *counts.entry((verb.as_str().to_owned(), resource.to_owned())).or_default() += n;
                }
            }
            c.reset_requests();
        }
        Self(counts)
    }

    pub fn verb(&self, verb: &str) -> u64 {
        self.0.iter().filter(|((v, _), _)| v == verb).map(|(_, n)| n).sum()
    }

    pub fn writes(&self) -> u64 {
        self.0.iter().filter(|((v, _), _)| !matches!(v.as_str(), "list" | "get" | "watch")).map(|(_, n)| n).sum()
    }
}

// ---------------------------------------------------------------------------
// files

/// (inode, size, mtime in ns) of every regular file under `dir`.
pub type FileStates = BTreeMap<PathBuf, (u64, u64, i128)>;

pub fn file_states(dir: &Path) -> FileStates {
    let mut states = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let mtime = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
                states.insert(path, (meta.ino(), meta.size(), mtime));
            }
        }
    }
    states
}

/// Files that are new or whose inode, size or mtime moved.
pub fn written(before: &FileStates, after: &FileStates) -> BTreeSet<PathBuf> {
    after.iter().filter(|(p, s)| before.get(*p) != Some(s)).map(|(p, _)| p.clone()).collect()
}

// ---------------------------------------------------------------------------
// the report

/// Every change in a `--output json` report: (action, address), address
/// being a file path or `Kind context/namespace/name`. Read loosely (as
/// `Value`) so the instrument survives refactors of the report types.
pub fn report_changes(json: &str) -> Vec<(String, String)> {
    let report: Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("the report is not JSON ({e}): {}", &json[..json.len().min(500)]));
    let mut changes = Vec::new();
    let mut push = |c: &Value| {
        // Every change says what it is (`kind`) and where (`address`: a
        // path, or `ConfigMap ns/name in context c`).
        let action = c["action"].as_str().unwrap_or("?").to_owned();
        let address = c["address"].as_str().unwrap_or("?").to_owned();
        changes.push((action, address));
    };
    for env in report["envs"].as_array().into_iter().flatten() {
        for output in env["outputs"].as_array().into_iter().flatten() {
            for target in output["targets"].as_array().into_iter().flatten() {
                target["changes"].as_array().into_iter().flatten().for_each(&mut push);
            }
        }
        env["pruned"].as_array().into_iter().flatten().for_each(&mut push);
    }
    changes
}

/// How many changes of each action.
pub fn actions(changes: &[(String, String)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (action, _) in changes {
        *counts.entry(action.clone()).or_default() += 1;
    }
    counts
}
