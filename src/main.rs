//! `cfgsync`: parse the command line, load the config, run, map the result
//! to an exit code: 0 success (for `plan`, also with changes pending), 1 an
//! output, target or source failed, 2 a usage, config or template error.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use cfgsync::cli::{Cli, Command, OutputFormat, PolicyCommand};
use cfgsync::cmd;
use cfgsync::config::{self, Config, ConfigError, ProcessEnv};
use cfgsync::reconcile::{self, PassOptions};
use cfgsync::render::Templates;
use cfgsync::report::{self, Mode, Style};
use cfgsync::source::Sources;

/// Fatal errors end here with exit code 2; failures of a pass are reported
/// and only change the exit code.
#[derive(Debug, thiserror::Error)]
enum Fatal {
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
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(Fatal::Config(e)) => {
            for p in &e.problems {
                eprintln!("error: {p}");
            }
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
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
    if let Command::Run { listen, replica_id } = &cli.command {
        let options = cfgsync::service::RunOptions {
            listen: *listen,
            replica_id: replica_id.clone(),
            kubeconfig: cli.kubeconfig.clone(),
        };
        return match cfgsync::service::run(&cli.config, options).await {
            Ok(cfgsync::service::Shutdown::Clean) => Ok(ExitCode::SUCCESS),
            Ok(cfgsync::service::Shutdown::GraceExceeded) => Ok(ExitCode::from(1)),
            Err(cfgsync::service::ServiceError::Config(e)) => Err(Fatal::Config(e)),
            Err(e) => Err(Fatal::Service(e)),
        };
    }
    // These need no config file.
    match &cli.command {
        Command::Completions { shell } => return Ok(cmd::completions::completions(*shell)?),
        Command::Man { out_dir } => return Ok(cmd::completions::man(out_dir.as_deref())?),
        _ => {}
    }
    let config = config::load(&cli.config, &ProcessEnv)?;
    let templates = Templates::compile(&config);
    if matches!(cli.command, Command::Validate) {
        // Only `validate` checks the credential files, reported with the template problems.
        config::check_credential_files(&config, templates.as_ref().err())?;
    }
    let templates = templates?;
    let ctx = cmd::Context { config: &config, templates: &templates, output: cli.output };
    let (options, mode) = match cli.command {
        Command::Validate => {
            let targets: usize = config.outputs.iter().map(|o| o.targets.len()).sum();
            println!(
                "{}: ok ({} envs, {} outputs, {} targets)",
                config.path.display(),
                config.envs.len(),
                config.outputs.len(),
                targets
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Reconcile { once: _, env, dry_run, allow_mass_prune } => (
            PassOptions { env, dry_run, allow_mass_prune, ..Default::default() },
            if dry_run { Mode::Plan } else { Mode::Applied },
        ),
        Command::Plan { env } => (PassOptions { env, dry_run: true, ..Default::default() }, Mode::Plan),
        Command::Pull(args) => return Ok(cmd::pull::run(&ctx, &args).await?),
        Command::Diff(args) => return Ok(cmd::diff::run(&ctx, &args).await?),
        Command::RunWith(args) => return Ok(cmd::run_with::run(&ctx, &args).await?),
        Command::Explain(args) => return Ok(cmd::explain::run(&ctx, &args).await?),
        Command::Set(args) => return Ok(cmd::set::run_set(&ctx, &args).await?),
        Command::SetSecret(args) => return Ok(cmd::set::run_set_secret(&ctx, &args).await?),
        Command::Policy { command: PolicyCommand::Apply { dir, dry_run } } => {
            return Ok(cmd::policy::run_apply(&ctx, dir.as_deref(), dry_run).await?);
        }
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled before loading the config"),
        Command::Run { .. } => unreachable!("handled above"),
    };
    if let Some(env) = &options.env {
        check_env(&config, env)?;
    }
    let sources = Sources::new(&config);
    let targets = reconcile::Targets::new(&config, cli.kubeconfig.clone());
    let report = reconcile::run_pass(&config, &templates, &sources, &targets, &options).await;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.output {
        OutputFormat::Json => report::print_json(&report, &mut out)?,
        OutputFormat::Text => report::print_text(&report, mode, Style::detect(), &mut out, &mut std::io::stderr())?,
    }
    out.flush()?;
    Ok(if report.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
