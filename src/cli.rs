//! The command line, as plain data (clap derive). Turning it into real
//! objects happens in `main`, in one place, as ripgrep does.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "cfgsync", version, about = "Make Kubernetes, CI variables and files agree with etcd and Vault")]
pub struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "CFGSYNC_CONFIG", default_value = "cfgsync.toml")]
    pub config: PathBuf,

    /// Output format for everything a script might read.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Log format on stderr (RUST_LOG sets the level; default warn).
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
        /// Run a single pass (the long-running service is `cfgsync run`).
        #[arg(long, required = true)]
        once: bool,
        /// Only this env.
        #[arg(long)]
        env: Option<String>,
        /// Show the plan, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// What a reconcile would change, target by target; values of secret outputs masked.
    Plan {
        /// Only this env.
        #[arg(long)]
        env: Option<String>,
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
    Pull {
        #[arg(long)]
        env: String,
        /// Show what would change, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}
