//! `cfgsync refresh --env E [--wait 2m]`: "re-read every secret now", said
//! to the running service, for a secret changed behind cfgsync's back (the
//! vault CLI, the UI) that it would otherwise pick up within
//! `[vault] refresh`.
//!
//! ```text
//! $ cfgsync refresh --env prod
//! asked the service (leader r1) to re-read every secret of env prod
//! its pass of 2026-12-01T14:05:11.204Z read them: succeeded
//! ```
//!
//! Decisions:
//! - **The service does the reading**, through the same asked pass
//!   `rotate verify` uses ([`super::rotate::ask_service`]: the
//!   `<prefix>/_service/envs/<env>/pass` key its leader watches,
//!   `crate::service::asked`): an asked pass reads every secret from Vault,
//!   not the versions it holds, and writes what changed.
//! - **It waits** for the leader's record of the pass that answers the
//!   request (`<prefix>/_service/envs/<env>/status`), up to `--wait`, and
//!   says how that pass ended. Exit 0: the pass ran and succeeded; 1: it
//!   failed (its code is named; `cfgsync status` and the status page show
//!   which target), no service leads the env, or none answered within
//!   `--wait` — each said on stderr. Nothing runs here: without a service,
//!   `cfgsync reconcile --once --env E` reads every secret itself.
//! - The answer is the record of the pass that answered the request: the
//!   service publishes the etcd revision of the newest request a pass
//!   answers (`asked_revision`), and the command waits for one at or past
//!   its own request's revision. A pass already running when it asked
//!   (ends first, read the old secrets) is never taken for the answer, and
//!   no clock is compared across hosts. A service older than this field
//!   never answers: the command says so after `--wait`.
//! - Needs write on `<prefix>/_service/envs/<env>/` (the asking key) and
//!   read on the status beside it.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use super::rotate::ask_service;
use super::{CmdError, ConfigContext, check_env};
use crate::config::KeysSource;
use crate::service::published::EnvRecord;
use crate::source::etcd::EtcdSource;
use crate::source::etcd::keyspace::ServiceKeys;
use crate::when::format_ms;

/// How often the published status is read while waiting.
const POLL: Duration = Duration::from_millis(100);

/// The command line of `refresh`.
#[derive(Debug, Clone)]
pub struct RefreshArgs {
    pub env: String,
    pub wait: Duration,
}

/// What `--output json` prints.
#[derive(serde::Serialize)]
struct Outcome<'a> {
    env: &'a str,
    leader: Option<&'a str>,
    /// The answering pass ran (`false`: no service, or none within `--wait`).
    ran: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
}

/// `cfgsync refresh`.
pub async fn run(ctx: &ConfigContext<'_>, args: &RefreshArgs) -> Result<ExitCode, CmdError> {
    let env = args.env.as_str();
    check_env(ctx.config, env)?;
    if !matches!(ctx.config.secrets, Some(crate::config::SecretsSource::Vault(_))) {
        return Err(CmdError::NeedsSource {
            command: "refresh",
            what: "a [vault] section",
            hint: "without Vault there are no secrets to re-read",
        });
    }
    if !matches!(ctx.config.keys, KeysSource::Etcd(_)) {
        return Err(CmdError::NeedsSource {
            command: "refresh",
            what: "an [etcd] section",
            hint: "the running service is asked through etcd; without it, `cfgsync reconcile --once` reads every secret",
        });
    }
    let asked = match ask_service(ctx.config, env).await {
        Ok(Some(asked)) => asked,
        Ok(None) => {
            print(ctx, &Outcome { env, leader: None, ran: false, pass_at: None, ok: None, code: None })?;
            eprintln!(
                "error: no service leads env {env}: nothing was re-read (`cfgsync reconcile --once --env {env}` reads every secret and writes the targets)"
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => {
            eprintln!("error: could not ask the service of env {env} for a pass: {}", crate::text::one_line(&e));
            return Ok(ExitCode::from(1));
        }
    };
    let leader = asked.leader.as_str();
    if ctx.output == crate::cli::OutputFormat::Text {
        println!("asked the service (leader {leader}) to re-read every secret of env {env}");
    }
    let deadline = tokio::time::Instant::now() + args.wait;
    let record = loop {
        if let Some(r) = status_record(ctx.config, env).await
            && r.answers(asked.revision)
        {
            break r;
        }
        if tokio::time::Instant::now() >= deadline {
            print(ctx, &Outcome { env, leader: Some(leader), ran: false, pass_at: None, ok: None, code: None })?;
            eprintln!(
                "error: the service (leader {leader}) published no pass of env {env} within {}: the secrets were not re-read (is it running? `cfgsync status --env {env}`)",
                crate::when::When::Ago(args.wait).to_string().trim_start_matches('-')
            );
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(POLL).await;
    };
    let pass_at = format_ms(i64::try_from(record.at_ms).unwrap_or(i64::MAX));
    let code = record.code.as_deref();
    let outcome = Outcome { env, leader: Some(leader), ran: true, pass_at: Some(pass_at), ok: Some(record.ok), code };
    print(ctx, &outcome)?;
    if !record.ok {
        eprintln!(
            "error: the pass failed ({}): `cfgsync status --env {env}` names the target",
            code.unwrap_or("failed")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The env's published status record, if any.
async fn status_record(config: &crate::config::Config, env: &str) -> Option<EnvRecord> {
    let KeysSource::Etcd(settings) = &config.keys else { return None };
    let client = EtcdSource::new(settings.clone()).connect().await.ok()?;
    let mut kv = client.kv_client();
    let get = kv.get(ServiceKeys::new(&settings.prefix).status(env), None);
    let resp = tokio::time::timeout(settings.timeout, get).await.ok()?.ok()?;
    EnvRecord::parse(resp.kvs().first()?.value())
}

fn print(ctx: &ConfigContext<'_>, o: &Outcome<'_>) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match ctx.output {
        crate::cli::OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, o).map_err(io::Error::from)?;
            writeln!(out)?;
        }
        crate::cli::OutputFormat::Text => {
            if let (true, Some(at), Some(ok)) = (o.ran, &o.pass_at, o.ok) {
                let how = if ok { "succeeded".to_owned() } else { format!("failed ({})", o.code.unwrap_or("failed")) };
                writeln!(out, "its pass of {at} read them: {how}")?;
            }
        }
    }
    out.flush()
}
