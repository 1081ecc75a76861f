//! `kube-emulator`: run the emulated cluster by hand, e.g. for kubectl.
//!
//! ```text
//! kube-emulator --listen 127.0.0.1:0 --kubeconfig-out /tmp/kc --context dev
//! KUBECONFIG=/tmp/kc kubectl get ns
//! ```
//!
//! The first line on stdout is the server URL (so a script can read it);
//! the process serves until SIGINT or SIGTERM.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kube_emulator::{Emulator, Options};

/// A dev-only Kubernetes API emulator (namespaces, secrets, configmaps, deployments).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig for this emulator here.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Name of the kubeconfig context (and cluster and user).
    #[arg(long, default_value = "kube-emulator")]
    context: String,
    /// Log every request on stderr.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let emulator = match Emulator::start_with(Options {
        listen: args.listen,
        context: args.context.clone(),
        verbose: args.verbose,
    }) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("kube-emulator: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &args.kubeconfig_out
        && let Err(e) = emulator.write_kubeconfig(path)
    {
        eprintln!("kube-emulator: cannot write the kubeconfig {}: {e}", path.display());
        return ExitCode::from(2);
    }
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{}", emulator.url());
    let _ = stdout.flush();
    if let Some(path) = &args.kubeconfig_out {
        eprintln!(
            "kube-emulator: serving context {:?}; try: KUBECONFIG={} kubectl get namespaces",
            args.context,
            path.display()
        );
    }
    let signal = tokio::runtime::Builder::new_current_thread().enable_all().build().map(|rt| {
        rt.block_on(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r,
                _ = term.recv() => Ok(()),
            }
        })
    });
    if let Err(e) | Ok(Err(e)) = signal {
        eprintln!("kube-emulator: cannot wait for a signal: {e}");
        return ExitCode::from(2);
    }
    emulator.stop();
    ExitCode::SUCCESS
}
