//! `github-emulator`: the GitHub Actions secrets and variables API emulator, by hand.
//!
//! ```text
//! github-emulator --listen 127.0.0.1:0 --environment acme/app/prod
//! curl -H 'Authorization: Bearer x' "$URL/repos/acme/app/actions/secrets/public-key"
//! ```
//!
//! The first line on stdout is the base URL; the process serves until
//! SIGINT or SIGTERM.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use kube_emulator::{GithubEmulator, ServerOptions, cli};

/// A dev-only GitHub REST emulator (Actions secrets and variables of repos, orgs, environments).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Log every request on stderr.
    #[arg(long, short)]
    verbose: bool,
    /// A repository environment that exists, `OWNER/REPO/NAME` (repeatable):
    /// the secrets and variables of any other answer 404, as on GitHub.
    #[arg(long, value_name = "OWNER/REPO/NAME", value_parser = environment)]
    environment: Vec<(String, String, String)>,
}

fn environment(text: &str) -> Result<(String, String, String), String> {
    let mut parts = text.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(o), Some(r), Some(e)) if !o.is_empty() && !r.is_empty() && !e.is_empty() => {
            Ok((o.to_owned(), r.to_owned(), e.to_owned()))
        }
        _ => Err("give OWNER/REPO/NAME, e.g. acme/app/prod".to_owned()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let emulator = match GithubEmulator::start_with(ServerOptions { listen: args.listen, verbose: args.verbose }) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("github-emulator: {e}");
            return ExitCode::from(2);
        }
    };
    for (owner, repo, name) in &args.environment {
        emulator.create_environment(owner, repo, name);
    }
    eprintln!(
        "github-emulator: serving {} (any bearer token; every repo and org exists, environments as given with --environment)",
        emulator.url()
    );
    if let Err(e) = cli::announce_and_wait(&emulator.url()) {
        eprintln!("github-emulator: cannot wait for a signal: {e}");
        return ExitCode::from(2);
    }
    emulator.stop();
    ExitCode::SUCCESS
}
