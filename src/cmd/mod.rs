//! The developer commands: what a person runs on a laptop with their own
//! etcd and Vault credentials — `validate`, `diff`, `pull`, `run-with`,
//! `explain`, `set`, `set-secret`, `import`, `policy apply`, `policy plan`,
//! `whoami`, `status`, `completions` and `man`.
//!
//! Each command is a module with a `run` function that `main` calls with
//! the loaded config (parsing stays in [`crate::cli`], as in ripgrep).
//! A command returns the process exit code for outcomes it reports itself
//! (a diff with differences, a denied read during `pull`), and a
//! [`CmdError`] for usage and input errors, which `main` prints as one
//! `error:` line and turns into exit code 2.
//!
//! Shared pieces: [`inventory`] (what an env holds, as far as the caller may
//! read it, with every denial named) and [`terminal`] (colours, prompts,
//! progress).

pub mod at;
pub mod completions;
pub mod diff;
pub mod explain;
pub mod import;
pub mod inventory;
pub mod log;
pub mod plan_at;
pub mod policy;
pub mod pull;
pub mod refresh;
pub mod rollback;
pub mod rotate;
pub mod run_with;
pub mod set;
pub mod status;
pub mod terminal;
pub mod validate;
pub mod whoami;

use std::io;

use crate::cli::OutputFormat;
use crate::config::{self, Config, Output};
use crate::render::Templates;
use crate::source::SourceError;
use crate::targets::TargetKind;
use crate::targets::file::FileTarget;

/// What a command that renders or analyses templates gets from `main`.
pub struct Context<'a> {
    pub config: &'a Config,
    pub templates: &'a Templates,
    /// `--output`.
    pub output: OutputFormat,
}

/// What a command that needs no template gets from `main` (`set`,
/// `set-secret`, `refresh`, `status`, `import`, `policy`): the validated
/// config without its compiled templates. Compiling every template is most
/// of such a command's start-up at fleet scale, and a template broken
/// elsewhere in the config does not stop a value from being written (the
/// next `validate`, `plan` or service reload reports it).
pub struct ConfigContext<'a> {
    pub config: &'a Config,
    /// `--output`.
    pub output: OutputFormat,
}

/// Usage and input errors of the developer commands: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("unknown env {env:?}{hint}; defined envs: {defined}")]
    UnknownEnv { env: String, hint: String, defined: String },
    #[error("unknown output {name:?}{hint}; outputs rendered for env {env:?}: {defined}")]
    UnknownOutput { name: String, env: String, hint: String, defined: String },
    #[error("env {env:?} has {count} outputs ({outputs}): choose one with --from")]
    AmbiguousOutput { env: String, count: usize, outputs: String },
    #[error("no output is rendered for env {env:?}")]
    NoOutput { env: String },
    #[error("`cfgsync {command}` needs {what} in the config: {hint}")]
    NeedsSource { command: &'static str, what: &'static str, hint: &'static str },
    #[error("no terminal to ask for confirmation on: pass --yes to write without asking")]
    NoTerminal,
    #[error("talking to the terminal: {0}")]
    Terminal(#[source] io::Error),
    #[error("reading the value from stdin: {0}")]
    Stdin(#[source] io::Error),
    #[error("the value is empty: nothing written (an empty secret is almost always a mistake)")]
    EmptyValue,
    #[error(
        "--show-secrets prints values only to a terminal with text output; stdout is not a terminal or --output json was given"
    )]
    ShowSecretsNotTerminal,
    #[error("invalid {what} {name:?}: {why}")]
    InvalidName { what: &'static str, name: String, why: &'static str },
    #[error("env {env}: {source}")]
    Source {
        env: String,
        #[source]
        source: SourceError,
    },
    #[error("cannot write output: {0}")]
    Stdout(#[from] io::Error),
    #[error(transparent)]
    Fingerprint(#[from] crate::fingerprint::KeyError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Import(#[from] import::ImportError),
    #[error(transparent)]
    When(#[from] crate::when::WhenError),
    #[error("env {env}: a past point needs etcd: the file source keeps no history of its values")]
    NoPast { env: String },
    #[error(transparent)]
    Point(Box<crate::history::point::PointError>),
    #[error("{source}")]
    At { env: String, source: Box<crate::source::at::AtError> },
    #[error(transparent)]
    ConfigAt(Box<plan_at::ConfigAtError>),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Fails with a "did you mean" hint unless `env` is defined.
pub fn check_env(config: &Config, env: &str) -> Result<(), CmdError> {
    if config.envs.iter().any(|e| e == env) {
        return Ok(());
    }
    let hint = config::suggest(env, &config.envs).map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default();
    Err(CmdError::UnknownEnv { env: env.to_owned(), hint, defined: config.envs.join(", ") })
}

/// The outputs rendered for `env`, with their index in config order.
pub fn outputs_for<'c>(config: &'c Config, env: &str) -> impl Iterator<Item = (usize, &'c Output)> {
    config.outputs.iter().enumerate().filter(move |(_, o)| o.envs.iter().any(|e| e == env))
}

/// Whether a secret name should be read as `path#field`.
pub fn split_field(name: &str) -> Option<(&str, &str)> {
    name.split_once('#').filter(|(p, f)| !p.is_empty() && !f.is_empty())
}

/// A name relative to an env (`api/db_host`, `api/db`): no leading `/`,
/// no empty, `.` or `..` segment, so it can never address another env.
pub fn check_relative_name(what: &'static str, name: &str) -> Result<(), CmdError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.ends_with('/')
        || name.split('/').any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(CmdError::InvalidName {
            what,
            name: name.to_owned(),
            why: "use a path relative to the env like `api/db_host`, without empty, `.` or `..` segments",
        });
    }
    Ok(())
}

/// The file target behind `kind`, if it is one. Other target kinds
/// (Kubernetes, CI variables) are not written by laptop commands.
pub fn as_file(kind: &TargetKind) -> Option<&FileTarget> {
    if let TargetKind::File(f) = kind { Some(f) } else { None }
}

/// `Ok` also when the reader of stdout went away (`cfgsync … | head`).
pub fn unless_closed(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
