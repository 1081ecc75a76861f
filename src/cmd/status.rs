//! `cfgsync status [--env E]`: the service's state on a terminal, read
//! from etcd as the service's followers read it — a laptop sees the
//! service without reaching its port.
//!
//! What the status page shows comes from two places: the leader key of
//! each env and the record of the env's last pass that its leader
//! publishes next to it ([`crate::service::published`], under
//! `<prefix>/_service/envs/<env>/`), and the members under
//! `<prefix>/_service/members/`. One transaction reads them all, so the
//! answer is one point in time.
//!
//! Decisions:
//! - **Only what the record says**: codes, target ids, kinds, addresses,
//!   times and revisions, never error text (the record holds none; a
//!   record read back is untrusted and its codes are sanitised by
//!   [`EnvRecord::parse`]).
//! - **The exit code answers "is it working?"**: 0 when every env shown
//!   has a leader and its last pass succeeded, 1 when one has no leader,
//!   no record or a failing last pass, 2 when etcd could not be read.
//! - The etcd role of the caller must be allowed to read
//!   `<prefix>/_service/`; a denial is an error naming the key.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{GetOptions, Txn, TxnOp, TxnOpResponse};
use serde::Serialize;

use super::inventory::{Clients, KeyClient};
use super::{CmdError, ConfigContext, check_env};
use crate::cli::OutputFormat;
use crate::report::Style;
use crate::service::published::{EnvRecord, TargetState};
use crate::source::etcd::keyspace::ServiceKeys;
use crate::source::{SourceError, SourceKind};

/// What `status` found.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The etcd revision of the read.
    pub revision: i64,
    /// The replicas that are running (their member keys).
    pub members: Vec<String>,
    pub envs: Vec<EnvStatus>,
}

#[derive(Debug, Serialize)]
pub struct EnvStatus {
    pub env: String,
    /// The replica holding the env's leader key.
    pub leader: Option<String>,
    /// The record of the env's last pass, as its leader published it.
    pub last_pass: Option<EnvRecord>,
    /// A record was there but was not one (written by something else).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub record_invalid: bool,
}

impl EnvStatus {
    fn healthy(&self) -> bool {
        self.leader.is_some() && self.last_pass.as_ref().is_some_and(|r| r.ok)
    }
}

/// `cfgsync status [--env E]`.
pub async fn run(ctx: &ConfigContext<'_>, env: Option<&str>) -> Result<ExitCode, CmdError> {
    let envs: Vec<String> = match env {
        Some(e) => {
            check_env(ctx.config, e)?;
            vec![e.to_owned()]
        }
        None => ctx.config.envs.clone(),
    };
    let clients = Clients::new(ctx.config);
    let KeyClient::Etcd { source, settings } = &clients.keys else {
        return Err(CmdError::NeedsSource {
            command: "status",
            what: "an [etcd] section",
            hint: "the service publishes its state in etcd; with the file source, there is none to read",
        });
    };
    let keys = ServiceKeys::new(&settings.prefix);
    let failed = |cause: String| CmdError::Source {
        env: envs.join(", "),
        source: SourceError::Read {
            source_kind: SourceKind::Etcd,
            path: keys.members().replace("members/", ""),
            cause,
        },
    };
    let client = source.connect().await.map_err(|e| CmdError::Source { env: envs.join(", "), source: e })?;
    let prefix = || Some(GetOptions::new().with_prefix());
    let mut reads = vec![TxnOp::get(keys.members(), prefix())];
    reads.extend(envs.iter().map(|e| TxnOp::get(keys.env_prefix(e), prefix())));
    let mut kv = client.kv_client();
    let call = kv.txn(Txn::new().and_then(reads));
    let resp = match tokio::time::timeout(settings.timeout, call).await {
        Err(_) => return Err(failed(format!("timed out after {} s", settings.timeout.as_secs()))),
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Ok(Ok(r)) => r,
    };
    let mut status =
        Status { revision: resp.header().map_or(0, |h| h.revision()), members: Vec::new(), envs: Vec::new() };
    let mut ranges = resp.op_responses().into_iter();
    if let Some(TxnOpResponse::Get(g)) = ranges.next() {
        let members = keys.members();
        status.members =
            g.kvs().iter().filter_map(|kv| Some(kv.key_str().ok()?.strip_prefix(&members)?.to_owned())).collect();
    }
    for (env, range) in envs.iter().zip(ranges) {
        let mut e = EnvStatus { env: env.clone(), leader: None, last_pass: None, record_invalid: false };
        if let TxnOpResponse::Get(g) = range {
            for kv in g.kvs() {
                if kv.key() == keys.leader(env).as_bytes() {
                    e.leader = Some(kv.value_str().unwrap_or("(not text)").to_owned());
                } else if kv.key() == keys.status(env).as_bytes() {
                    e.last_pass = EnvRecord::parse(kv.value());
                    e.record_invalid = e.last_pass.is_none();
                }
            }
        }
        status.envs.push(e);
    }
    let healthy = status.envs.iter().all(EnvStatus::healthy);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match ctx.output {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &status).map_err(io::Error::from)?;
            writeln!(out)?;
        }
        OutputFormat::Text => print_text(&status, now_ms(), Style::detect(), &mut out)?,
    }
    out.flush()?;
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The status page's facts, one block per env.
pub fn print_text(status: &Status, now_ms: u64, style: Style, out: &mut dyn Write) -> io::Result<()> {
    let members = if status.members.is_empty() { "(none)".to_owned() } else { status.members.join(", ") };
    writeln!(out, "replicas: {members} (etcd revision {})", status.revision)?;
    for e in &status.envs {
        writeln!(out, "env {}", e.env)?;
        let row = |out: &mut dyn Write, label: &str, value: &str| writeln!(out, "  {label:<10} {value}");
        row(out, "leader:", e.leader.as_deref().unwrap_or(&style.red("(none)")))?;
        let Some(r) = &e.last_pass else {
            let none = if e.record_invalid { "(the record is not one cfgsync wrote)" } else { "(none recorded)" };
            row(out, "last pass:", none)?;
            continue;
        };
        let outcome = match (&r.code, r.ok) {
            (_, true) => style.green("ok"),
            (Some(code), false) => style.red(&format!("failed ({code})")),
            (None, false) => style.red("failed"),
        };
        let revision = r.revision.map(|v| format!(", etcd revision {v}")).unwrap_or_default();
        row(
            out,
            "last pass:",
            &format!(
                "{} ({} ago) by {}: {outcome}{revision}",
                crate::utc::from_unix_ms(r.at_ms),
                ago(now_ms, r.at_ms),
                r.leader
            ),
        )?;
        for o in &r.outputs {
            row(out, "failing:", &format!("output {}: not rendered ({})", o.name, o.code))?;
        }
        let mut counts = [0usize; 4];
        for t in &r.targets {
            let slot = match t.state {
                TargetState::Ok => 0,
                TargetState::DriftReverted => 1,
                TargetState::Failing => 2,
                TargetState::BackingOff => 3,
            };
            counts[slot] += 1;
            if matches!(t.state, TargetState::Failing | TargetState::BackingOff) {
                let code = t.code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default();
                let what = format!("{} → {} {}: {}{code}", t.output_name(), t.kind, t.address, t.state.as_str());
                row(out, "failing:", &what)?;
            }
        }
        let [ok, drift, failing, backing_off] = counts;
        let mut line = format!("{} targets: {ok} ok", r.targets.len());
        for (n, what) in [(drift, "drift reverted"), (failing, "failing"), (backing_off, "backing off")] {
            if n > 0 {
                line.push_str(&format!(", {n} {what}"));
            }
        }
        row(out, "targets:", &line)?;
    }
    Ok(())
}

/// `12s`, `3m`, `2h`, `4d`: how long ago `at_ms` was.
fn ago(now_ms: u64, at_ms: u64) -> String {
    let secs = Duration::from_millis(now_ms.saturating_sub(at_ms)).as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}
