//! `gitlab-emulator`: the GitLab CI/CD variables API emulator, by hand.
//!
//! ```text
//! gitlab-emulator --listen 127.0.0.1:0 [--free]
//! curl -H 'PRIVATE-TOKEN: x' "$URL/api/v4/projects/group%2Fapp/variables"
//! ```
//!
//! The first line on stdout is the base URL; the process serves until
//! SIGINT or SIGTERM.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use kube_emulator::{GitlabEmulator, ServerOptions, cli};

/// A dev-only GitLab REST v4 emulator (project and group CI/CD variables).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Log every request on stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Behave as GitLab Free: group variables ignore `environment_scope`
    /// (stored as `*`), as without Premium's scoped group variables.
    #[arg(long)]
    free: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let emulator = match GitlabEmulator::start_with(ServerOptions { listen: args.listen, verbose: args.verbose }) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("gitlab-emulator: {e}");
            return ExitCode::from(2);
        }
    };
    emulator.set_free_tier(args.free);
    let tier = if args.free { "GitLab Free: group variables are all of scope *" } else { "Premium" };
    eprintln!(
        "gitlab-emulator: serving {}/api/v4 (any PRIVATE-TOKEN; every project and group exists; {tier})",
        emulator.url()
    );
    if let Err(e) = cli::announce_and_wait(&emulator.url()) {
        eprintln!("gitlab-emulator: cannot wait for a signal: {e}");
        return ExitCode::from(2);
    }
    emulator.stop();
    ExitCode::SUCCESS
}
