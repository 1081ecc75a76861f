//! `cfgsync`: parse the command line, load the config, run, map the result
//! to an exit code: 0 success (for `plan`, also with changes pending), 1 an
//! output, target or source failed, 2 a usage, config or template error.
//!
//! Decisions:
//! - Every `error:` line printed here is one line ([`one_line`]): an etcd,
//!   Vault or Kubernetes error body never spreads over several lines.
//! - A reader that goes away (`cfgsync … | head -c1`) is not an error of
//!   cfgsync: output stops quietly, with no panic and no "Broken pipe".
//!   The exit code is the one already known (a pass that failed still
//!   exits 1), else 0, as ripgrep does.
//! - Only the commands that render, or read what the templates name,
//!   compile the templates ([`uses_templates`]). `set`, `set-secret`,
//!   `refresh`, `status`, `import` and `policy` load and validate the config
//!   alone (a config error is still exit 2 with its file and line): at
//!   fleet scale compiling is most of their start-up, and a template broken
//!   elsewhere does not stop a value from being written — `validate`,
//!   `plan` and the service's reload report it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use cfgsync::cli::{Cli, Command, OutputFormat, PolicyCommand, RotateCommand};
use cfgsync::cmd;
use cfgsync::config::{self, Config, ConfigError, ProcessEnv};
use cfgsync::reconcile::{self, PassOptions};
use cfgsync::render::Templates;
use cfgsync::report::{self, Mode, Style};
use cfgsync::source::Sources;
use cfgsync::telemetry::{OneLine, one_line};

/// Fatal errors end here with exit code 2; failures of a pass are reported
/// and only change the exit code.
#[derive(Debug, thiserror::Error)]
enum Fatal {
    #[error(
        "`cfgsync reconcile` runs one pass and needs --once: `cfgsync reconcile --once` for one pass, `cfgsync run` for the service"
    )]
    OnceRequired,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("unknown env {env:?}{hint}; defined envs: {defined}")]
    UnknownEnv { env: String, hint: String, defined: String },
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Cmd(#[from] cfgsync::cmd::CmdError),
    #[error(transparent)]
    Service(cfgsync::service::ServiceError),
}

fn main() -> ExitCode {
    // The template sandbox's worker process (see cfgsync::render::sandbox):
    // before anything else, so it sets up no logging, runtime or config.
    if std::env::args_os().nth(1).is_some_and(|a| a == cfgsync::render::sandbox::WORKER_COMMAND) {
        return ExitCode::from(cfgsync::render::sandbox::worker_main().clamp(0, 255) as u8);
    }
    cfgsync::render::sandbox::Sandbox::install(cfgsync::render::sandbox::Sandbox::for_current_exe());
    let cli = Cli::parse();
    // The service logs what it does; the one-shot commands only their errors.
    let default_level = if matches!(cli.command, Command::Run { .. }) { "cfgsync=info,warn" } else { "error" };
    cfgsync::telemetry::init(cli.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(run(cli));
    // No render worker outlives the command (see cfgsync::render::sandbox).
    runtime.block_on(cfgsync::render::sandbox::Sandbox::global().stop_workers());
    match result {
        Ok(code) => code,
        Err(e) if e.is_closed_stdout() => ExitCode::SUCCESS,
        Err(Fatal::Config(e)) => {
            cmd::validate::print_problems(&e);
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {}", one_line(&e.to_string()));
            ExitCode::from(2)
        }
    }
}

impl Fatal {
    /// Whether writing to stdout failed because its reader went away.
    fn is_closed_stdout(&self) -> bool {
        match self {
            Fatal::Io(e) | Fatal::Cmd(cfgsync::cmd::CmdError::Stdout(e)) => e.kind() == io::ErrorKind::BrokenPipe,
            _ => false,
        }
    }
}

fn check_env(config: &Config, env: &str) -> Result<(), Fatal> {
    if config.envs.iter().any(|e| e == env) {
        return Ok(());
    }
    let hint = config::suggest(env, &config.envs).map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default();
    Err(Fatal::UnknownEnv { env: env.to_owned(), hint, defined: config.envs.join(", ") })
}

async fn run(cli: Cli) -> Result<ExitCode, Fatal> {
    if let Command::Reconcile { once: false, .. } = cli.command {
        return Err(Fatal::OnceRequired);
    }
    if let Command::Run { listen, replica_id } = &cli.command {
        let options = cfgsync::service::RunOptions {
            listen: *listen,
            replica_id: replica_id.clone(),
            kubeconfig: cli.kubeconfig.clone(),
        };
        return serve(&cli.config, options).await;
    }
    // These need no config file.
    match &cli.command {
        Command::Completions { shell } => return Ok(cmd::completions::completions(*shell)?),
        Command::Man { out_dir } => return Ok(cmd::completions::man(out_dir.as_deref())?),
        Command::CompleteNames { what } => return Ok(cmd::completions::names(&cli.config, *what)),
        _ => {}
    }
    if !uses_templates(&cli.command) {
        let config = config::load(&cli.config, &ProcessEnv)?;
        tracing::debug!(outputs = config.outputs.len(), "config loaded; no template compiled");
        let code = without_templates(&config, cli).await;
        // The process ends here: the OS takes the config back at once,
        // where its destructor would walk every output (a tenth of
        // `set-secret`'s run at fleet-300).
        std::mem::forget(config);
        return Ok(code?);
    }
    let validating = matches!(cli.command, Command::Validate);
    let loaded = config::load(&cli.config, &ProcessEnv).and_then(|config| {
        tracing::debug!(outputs = config.outputs.len(), "config loaded");
        let templates = Templates::compile(&config);
        tracing::debug!("templates compiled");
        if validating {
            // Only `validate` checks the credential files, reported with the template problems.
            config::check_credential_files(&config, templates.as_ref().err())?;
        }
        templates.map(|templates| (config, templates))
    });
    if matches!(cli.command, Command::Validate) {
        return cmd::validate::run(loaded, cli.output).map_err(|e| match e {
            cmd::validate::ValidateError::Config(e) => Fatal::Config(e),
            cmd::validate::ValidateError::Io(e) => Fatal::Io(e),
        });
    }
    let (config, templates) = loaded?;
    // The render workers start (and compile the templates) while the
    // sources are read, for the commands that render.
    if renders(&cli.command) {
        cfgsync::render::sandbox::Sandbox::global().prewarm(&templates);
        tracing::debug!("render workers starting");
    }
    let ctx = cmd::Context { config: &config, templates: &templates, output: cli.output };
    let (options, mode) = match cli.command {
        Command::Validate => unreachable!("handled above"),
        Command::Reconcile { once: _, env, dry_run, allow_mass_prune } => (
            PassOptions { env, dry_run, allow_mass_prune, ..Default::default() },
            if dry_run { Mode::Plan } else { Mode::Applied },
        ),
        Command::Plan { env: Some(env), at: Some(at), config_at } => {
            return Ok(cmd::plan_at::run(&ctx, &env, &at, config_at, cli.kubeconfig.clone()).await?);
        }
        Command::Plan { env, .. } => (PassOptions { env, dry_run: true, ..Default::default() }, Mode::Plan),
        Command::Pull(args) => return Ok(cmd::pull::run(&ctx, &args).await?),
        Command::Diff(args) => return Ok(cmd::diff::run(&ctx, &args).await?),
        Command::RunWith(args) => return Ok(cmd::run_with::run(&ctx, &args).await?),
        Command::Explain(args) => return Ok(cmd::explain::run(&ctx, &args).await?),
        Command::Rollback(a) => return Ok(cmd::rollback::run(&ctx, &rollback_args(a)).await?),
        Command::Rotate { command: RotateCommand::Verify { env, secret, wait } } => {
            let args = cmd::rotate::VerifyArgs { env, secret, wait };
            return Ok(cmd::rotate::verify(&ctx, &args, cli.kubeconfig.clone()).await?);
        }
        Command::Log { env, name, since } => {
            return Ok(cmd::log::run(&ctx, &env, name.as_deref(), since.as_deref()).await?);
        }
        Command::Whoami { env } => return Ok(cmd::whoami::run(&ctx, env.as_deref()).await?),
        Command::Completions { .. } | Command::Man { .. } | Command::CompleteNames { .. } => {
            unreachable!("handled before loading the config")
        }
        Command::Set(_)
        | Command::SetSecret(_)
        | Command::Refresh { .. }
        | Command::Status { .. }
        | Command::Import(_)
        | Command::Policy { .. } => unreachable!("handled without templates above"),
        Command::Run { .. } => unreachable!("handled above"),
    };
    if let Some(env) = &options.env {
        check_env(&config, env)?;
    }
    pass(&config, &templates, &options, mode, cli.output, cli.kubeconfig).await
}

/// Whether `command` needs the compiled templates: it renders, or reads
/// their analysis (the secret paths a template names, the outputs that use
/// a value). The others load and validate the config only.
fn uses_templates(command: &Command) -> bool {
    !matches!(
        command,
        Command::Set(_)
            | Command::SetSecret(_)
            | Command::Refresh { .. }
            | Command::Status { .. }
            | Command::Import(_)
            | Command::Policy { .. }
    )
}

/// The commands that need no template (see [`uses_templates`]).
async fn without_templates(config: &Config, cli: Cli) -> Result<ExitCode, cmd::CmdError> {
    let ctx = cmd::ConfigContext { config, output: cli.output };
    match cli.command {
        Command::Set(args) => cmd::set::run_set(&ctx, &args).await,
        Command::SetSecret(args) => cmd::set::run_set_secret(&ctx, &args).await,
        Command::Refresh { env, wait } => cmd::refresh::run(&ctx, &cmd::refresh::RefreshArgs { env, wait }).await,
        Command::Status { env } => cmd::status::run(&ctx, env.as_deref()).await,
        Command::Import(args) => cmd::import::run(&ctx, &args, cli.kubeconfig).await,
        Command::Policy { command: PolicyCommand::Apply { dir, dry_run } } => {
            cmd::policy::run_apply(&ctx, dir.as_deref(), dry_run).await
        }
        Command::Policy { command: PolicyCommand::Plan { dir } } => cmd::policy::run_plan(&ctx, dir.as_deref()).await,
        _ => unreachable!("uses_templates() lists every command handled here"),
    }
}

/// `rollback`'s flags as the command takes them.
fn rollback_args(a: cfgsync::cli::RollbackArgs) -> cmd::rollback::RollbackArgs {
    cmd::rollback::RollbackArgs {
        env: a.env,
        to: a.to,
        only: a.only,
        owner: a.owner,
        reason: a.reason,
        yes: a.yes,
        dry_run: a.dry_run,
    }
}

/// Whether `command` renders templates (its render workers start early).
fn renders(command: &Command) -> bool {
    match command {
        Command::Reconcile { .. }
        | Command::Plan { .. }
        | Command::Pull(_)
        | Command::RunWith(_)
        | Command::Rollback(_)
        | Command::Rotate { .. } => true,
        Command::Diff(args) => args.rendered,
        _ => false,
    }
}

/// `cfgsync run`: the service, until it is stopped.
async fn serve(config: &Path, options: cfgsync::service::RunOptions) -> Result<ExitCode, Fatal> {
    match cfgsync::service::run(config, options).await {
        Ok(cfgsync::service::Shutdown::Clean) => Ok(ExitCode::SUCCESS),
        Ok(cfgsync::service::Shutdown::GraceExceeded) => Ok(ExitCode::from(1)),
        Err(cfgsync::service::ServiceError::Config(e)) => Err(Fatal::Config(e)),
        Err(e) => Err(Fatal::Service(e)),
    }
}

/// `plan` and `reconcile --once`: one pass, and its report.
async fn pass(
    config: &Config,
    templates: &Templates,
    options: &PassOptions,
    mode: Mode,
    output: OutputFormat,
    kubeconfig: Option<PathBuf>,
) -> Result<ExitCode, Fatal> {
    let sources = Sources::new(config);
    let targets = reconcile::Targets::new(config, kubeconfig);
    tracing::debug!("clients ready; pass starts");
    let report = reconcile::run_pass(config, templates, &sources, &targets, options).await;
    if !options.dry_run {
        record_history(config, templates, &report).await;
    }
    tracing::debug!("pass done; printing the report");
    // A closed stdout must not silence the `error:` lines on stderr.
    let mut out = UntilClosed { inner: io::stdout().lock(), closed: false };
    match output {
        // Buffered: a JSON report of thousands of targets is tens of
        // thousands of lines, and stdout would write each one on its own.
        // (Text stays line by line, in step with its `error:` lines on stderr.)
        OutputFormat::Json => {
            let mut buffered = io::BufWriter::with_capacity(1 << 16, &mut out);
            report::print_json(&report, mode, &mut buffered)?;
            buffered.flush()?;
        }
        OutputFormat::Text => report::print_text(&report, mode, Style::detect(), &mut out, &mut OneLine(io::stderr()))?,
    }
    out.flush()?;
    tracing::debug!("report printed");
    Ok(if report.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// A one-shot pass that wrote is recorded in the env's history (etcd only;
/// see [`cfgsync::history`]).
async fn record_history(config: &Config, templates: &Templates, report: &reconcile::Report) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let replica = format!("reconcile@{}", host.trim());
    let etcd = match &config.keys {
        config::KeysSource::Etcd(s) => Some(std::sync::Arc::new(cfgsync::source::etcd::EtcdSource::new(s.clone()))),
        config::KeysSource::Files(_) => None,
    };
    let journal = cfgsync::history::Journal::new(replica, etcd, cfgsync::history::Policy::Writes);
    for env in &report.envs {
        journal.pass(config, templates, env, false, None).await;
    }
}

/// Stdout that, once its reader has gone away, drops what is written to it
/// instead of failing, so the rest of a report (the `error:` lines on
/// stderr) is still printed.
struct UntilClosed<W> {
    inner: W,
    closed: bool,
}

impl<W: Write> Write for UntilClosed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        cmd::unless_closed(self.inner.flush())
    }
}
