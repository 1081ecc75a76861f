//! The command line, as plain data (clap derive). Turning it into real
//! objects happens in `main`, in one place, as ripgrep does.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cfgsync",
    version,
    about = "Make Kubernetes Secrets and ConfigMaps, GitLab and GitHub CI variables and files agree with etcd and Vault"
)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "CFGSYNC_CONFIG", default_value = "cfgsync.toml")]
    pub config: PathBuf,

    /// Output format for everything a script might read.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Kubeconfig file (else `[kubernetes] kubeconfig`, KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// Log format on stderr (RUST_LOG sets the level; default: errors only, `info` for `run`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the config and every template without reading a source or touching a target.
    Validate,
    /// One reconcile pass, then exit; non-zero if any output or target failed.
    Reconcile {
        /// Run a single pass; required, so that `reconcile` alone is not mistaken for the service (`cfgsync run`).
        #[arg(long)]
        once: bool,
        /// Only this env.
        #[arg(long)]
        env: Option<String>,
        /// Show the plan, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow deleting more than `max_prune_share` of cfgsync's objects in a cluster.
        #[arg(long)]
        allow_mass_prune: bool,
    },
    /// What a reconcile would change, target by target; values of secret outputs masked.
    Plan {
        /// Only this env.
        #[arg(long)]
        env: Option<String>,
        /// What the targets would become if a past snapshot were rendered now: rev:N, an RFC 3339 time, -1h, -3passes (needs --env).
        #[arg(long, value_name = "WHEN", requires = "env", allow_hyphen_values = true)]
        at: Option<String>,
        /// With --at: render with the config and templates of that pass (from the git commit it recorded), not today's.
        #[arg(long, requires = "at")]
        config_at: bool,
    },
    /// The service: reconcile every interval and on etcd/file changes, with /metrics, /healthz, /readyz and per-env leader election through etcd.
    Run {
        /// Serve /metrics, /healthz and /readyz here, e.g. 127.0.0.1:9090 (port 0 picks a free port; the log says which).
        #[arg(long, env = "CFGSYNC_LISTEN")]
        listen: Option<SocketAddr>,
        /// This replica's name in leader election (default: <hostname>-<pid>; in Kubernetes, the pod name).
        #[arg(long, env = "CFGSYNC_REPLICA_ID")]
        replica_id: Option<String>,
    },
    /// Render the outputs with file targets for one env, with your own credentials, and write them.
    Pull(PullArgs),
    /// Key-by-key difference between two envs (etcd keys, Vault secret fields); exit 0 same, 1 different, 2 error.
    Diff(DiffArgs),
    /// Run a command with an output's entries as environment variables; nothing is written to disk.
    RunWith(RunWithArgs),
    /// Where a value comes from: source, path, revision or version, owner, reason, and what uses it.
    Explain(ExplainArgs),
    /// Who changed what in an env, when and why, and which passes carried it to which targets: one line per change.
    Log {
        /// The env.
        #[arg(long)]
        env: String,
        /// Only changes of this key (`api/db_host`), secret (`api/db`, `api/db#password`) or output (what it reads).
        #[arg(value_name = "KEY|OUTPUT")]
        name: Option<String>,
        /// Start here (rev:N, an RFC 3339 time, -1h, -3passes); default: the oldest recorded pass.
        #[arg(long, value_name = "WHEN", allow_hyphen_values = true)]
        since: Option<String>,
    },
    /// Write the values of a past point back into etcd and Vault as new revisions and versions (plan first); the targets follow by the ordinary loop.
    Rollback(RollbackArgs),
    /// Ask the running service to re-read every secret of an env from Vault now (not within `[vault] refresh`) and wait for that pass; exit 0 when it ran and succeeded, 1 when it failed or no service answered within --wait.
    Refresh {
        /// The env.
        #[arg(long)]
        env: String,
        /// How long to wait for the running service's pass.
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_wait)]
        wait: std::time::Duration,
    },
    /// Secret rotations: `rotate verify` checks that every target using a secret holds its current version.
    Rotate {
        #[command(subcommand)]
        command: RotateCommand,
    },
    /// Set a plain key in etcd, recording who decided it and why.
    Set(SetArgs),
    /// Set one field of a Vault secret; the value is read from stdin or a prompt, never from arguments.
    SetSecret(SetSecretArgs),
    /// Which etcd user and Vault identity your credentials are, and what each env lets them read and write (checked against the servers).
    Whoami {
        /// Only this env.
        #[arg(long)]
        env: Option<String>,
    },
    /// The service's state read from etcd, as its followers read it: each env's leader, last pass and failing targets; exit 0 all well, 1 an env without a leader or failing, 2 error.
    Status {
        /// Only this env.
        #[arg(long)]
        env: Option<String>,
    },
    /// Adopt what already exists (a dotenv file, a Kubernetes Secret or ConfigMap, GitLab CI variables) into etcd and Vault for one env; shows the plan first.
    Import(ImportArgs),
    /// Manage the etcd roles and Vault policies described in `policies/`.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print a shell completion script (e.g. `cfgsync completions bash > /etc/bash_completion.d/cfgsync`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a directory.
    Man {
        /// Write cfgsync.1 and cfgsync-<command>.1 here instead of printing cfgsync.1.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Names from the config, one a line, for the shell completion scripts.
    #[command(hide = true)]
    CompleteNames {
        #[arg(value_enum)]
        what: NameKind,
    },
}

/// What `complete-names` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NameKind {
    Envs,
    Outputs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PullArgs {
    /// The env to render.
    #[arg(long)]
    pub env: String,
    /// Show what would change, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the outputs you may fully read; skip (and name) the others.
    #[arg(long)]
    pub allow_partial: bool,
    /// Run the targets' `reload_cmd` after a change (a laptop does not by default).
    #[arg(long)]
    pub reload: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DiffArgs {
    /// The env on the `-` side; ENV@WHEN for a past point (rev:N, an RFC 3339 time, -1h, -3passes).
    pub a: String,
    /// The env on the `+` side (ENV@WHEN too).
    pub b: String,
    /// Also list what is the same.
    #[arg(long)]
    pub all: bool,
    /// Print secret values (only to a terminal, only what your role can read).
    #[arg(long)]
    pub show_secrets: bool,
    /// Also compare the rendered outputs, entry by entry.
    #[arg(long)]
    pub rendered: bool,
    /// Exit 0/1 even when something could not be read (listed as `no access`).
    #[arg(long)]
    pub allow_partial: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunWithArgs {
    /// The env to render.
    #[arg(long)]
    pub env: String,
    /// The output whose entries become environment variables (needed when the env has several).
    #[arg(long)]
    pub from: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// The env; ENV@WHEN for a past point (rev:N, an RFC 3339 time, -1h, -3passes).
    pub env: String,
    /// A key name (`api/db_host`) or a secret field (`api/db#password`).
    pub name: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SetArgs {
    /// The env.
    pub env: String,
    /// The key name, e.g. `api/db_host`.
    pub name: String,
    /// The new value.
    pub value: String,
    /// Who decided this value (recorded in `<prefix>/_meta/<env>/<name>`).
    #[arg(long)]
    pub owner: Option<String>,
    /// Why this is the right value.
    #[arg(long)]
    pub reason: Option<String>,
    /// Write without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SetSecretArgs {
    /// The env.
    pub env: String,
    /// The secret path, e.g. `api/db`.
    pub path: String,
    /// The field, e.g. `password`.
    pub field: String,
    /// Who decided this value (recorded in the secret's custom_metadata).
    #[arg(long)]
    pub owner: Option<String>,
    /// Why this is the right value.
    #[arg(long)]
    pub reason: Option<String>,
    /// Write without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    /// The env.
    #[arg(long)]
    pub env: String,
    /// The point to go back to: rev:N, an RFC 3339 time, -1h, -3passes.
    #[arg(long, value_name = "WHEN", allow_hyphen_values = true)]
    pub to: String,
    /// Only keys or secret paths matching this glob (`*`, `?`; `api/db#password` for one field); repeatable.
    #[arg(long, value_name = "KEY_OR_PATH_GLOB")]
    pub only: Vec<String>,
    /// Who decides this (recorded as the owner; default: your etcd user, else $USER).
    #[arg(long)]
    pub owner: Option<String>,
    /// Why (added to the recorded reason, "rollback to <point> by <who>").
    #[arg(long)]
    pub reason: Option<String>,
    /// Show the plan, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RotateCommand {
    /// Ask for a pass now, then check that every target using the secret holds its current version; exit 0 only when every verifiable one does.
    Verify {
        /// The env.
        #[arg(long)]
        env: String,
        /// The secret, as PATH#FIELD (e.g. api/db#password).
        #[arg(long, value_name = "PATH#FIELD")]
        secret: String,
        /// How long to wait for the running service's pass.
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_wait)]
        wait: std::time::Duration,
    },
}

fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(text).ok_or_else(|| format!("invalid duration {text:?}: use e.g. 30s, 2m"))
}

#[derive(Debug, Clone, Subcommand)]
pub enum PolicyCommand {
    /// Create or update the etcd roles and Vault policies in `policies/` (needs admin credentials).
    Apply {
        /// The policies directory (default: `policies/` next to the config file if it exists, else the policies shipped with cfgsync).
        #[arg(long = "policies", alias = "dir", value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// What `policy apply` would change in etcd roles and Vault policies, compared with what exists; exit 0 nothing, 1 changes, 2 error.
    Plan {
        /// The policies directory (default: `policies/` next to the config file if it exists, else the policies shipped with cfgsync).
        #[arg(long = "policies", alias = "dir", value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "FROM is one of:
  dotenv:PATH                                 a dotenv file (every value secret unless --plain)
  kubernetes-secret:CONTEXT/NAMESPACE/NAME    a Secret's data (secret)
  kubernetes-configmap:CONTEXT/NAMESPACE/NAME a ConfigMap's data (plain)
  gitlab:GROUP/PROJECT                        a project's CI/CD variables (masked ones secret)
  gitlab-group:GROUP                          a group's CI/CD variables (masked ones secret)
  github:OWNER/REPO                           a repository's Actions variables (secrets: --adopt only)
  github-env:OWNER/REPO/ENVIRONMENT           an environment's Actions variables (secrets: --adopt only)
  github-org:ORG                              an organization's Actions variables (secrets: --adopt only)

Plain values become etcd keys <prefix>/<env>/<KEY_PREFIX><name>; secret values become fields of
the Vault secret <mount>/<env>/<SECRET_PATH>. A value that exists with another value is kept
(exit 1) unless --overwrite.")]
pub struct ImportArgs {
    /// The env to import into.
    #[arg(long)]
    pub env: String,
    /// Where to read from (see below).
    #[arg(value_name = "FROM")]
    pub from: String,
    /// Prefix of the etcd key names of plain values, e.g. `api/` (DB_HOST → <prefix>/<env>/api/DB_HOST).
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub key_prefix: String,
    /// The Vault secret (relative to the env) whose fields get the secret values, e.g. `api/imported`.
    #[arg(long, value_name = "PATH")]
    pub secret_path: Option<String>,
    /// Names (glob, `*` and `?`) of a dotenv file to import as plain etcd keys; every other dotenv value is secret.
    #[arg(long, value_name = "GLOB")]
    pub plain: Vec<String>,
    /// Names (glob) to import as secrets, whatever the source says.
    #[arg(long, value_name = "GLOB")]
    pub secret: Vec<String>,
    /// Replace a value that differs in etcd or Vault with the imported one (default: keep it, and exit 1).
    #[arg(long, visible_alias = "prefer-destination")]
    pub overwrite: bool,
    /// GitLab: import variables of this environment scope (and of `*`, unless shadowed). Default: the env's name.
    #[arg(long, value_name = "SCOPE")]
    pub environment_scope: Option<String>,
    /// GitLab: the instance (default https://gitlab.com).
    #[arg(long, value_name = "URL")]
    pub gitlab_url: Option<String>,
    /// GitHub: the API (default https://api.github.com; GitHub Enterprise Server: https://HOST/api/v3).
    #[arg(long, value_name = "URL")]
    pub github_url: Option<String>,
    /// GitLab, GitHub: the environment variable holding the API token (default GITLAB_TOKEN, GITHUB_TOKEN).
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// GitLab, GitHub: record the imported variables (and GitHub secrets) as this config's, so that a target rendering them takes them over (GitLab: its first pass only adds cfgsync's description; GitHub: it writes each secret's value once).
    #[arg(long)]
    pub adopt: bool,
    /// Who decided these values (recorded with every value written, as `cfgsync set` does).
    #[arg(long)]
    pub owner: Option<String>,
    /// Why they are right, e.g. "imported from GitLab on day one".
    #[arg(long)]
    pub reason: Option<String>,
    /// Show the plan, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
}
