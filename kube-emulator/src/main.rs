//! `kube-emulator`: run the emulated cluster by hand, e.g. for kubectl.
//!
//! ```text
//! kube-emulator --listen 127.0.0.1:0 --kubeconfig-out /tmp/kc --context dev
//! KUBECONFIG=/tmp/kc kubectl get ns
//! ```
//!
//! The first line on stdout is the server URL (so a script can read it);
//! the process serves until SIGINT or SIGTERM.
//!
//! Faults and access rules can be set from the command line, for a client
//! under test that is not a Rust test (`kubectl`, a script):
//!
//! ```text
//! kube-emulator --forbid team-b:list,get     # 403 for list/get in namespace team-b
//! kube-emulator --forbid '*:create'          # 403 for create everywhere
//! kube-emulator --unauthorized               # 401 for every resource request
//! kube-emulator --rate-limit 3:2             # the first 3 requests: 429, Retry-After: 2
//! ```
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kube_emulator::{Emulator, Fault, Options, Verb};

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
    /// Answer requests in NAMESPACE (`*`: everywhere) with 403 Forbidden,
    /// for the listed verbs only (list, get, create, apply, update, patch,
    /// delete, deletecollection, watch) or every verb. Repeatable.
    #[arg(long, value_name = "NAMESPACE[:VERB,...]", value_parser = parse_forbid)]
    forbid: Vec<(Option<String>, Vec<Verb>)>,
    /// Answer every resource request with 401 Unauthorized.
    #[arg(long)]
    unauthorized: bool,
    /// Answer the first COUNT requests with 429 TooManyRequests and
    /// `Retry-After: SECONDS` (default 1).
    #[arg(long, value_name = "COUNT[:SECONDS]", value_parser = parse_rate_limit)]
    rate_limit: Option<(u32, u64)>,
}

fn parse_verb(s: &str) -> Result<Verb, String> {
    const VERBS: [Verb; 9] = [
        Verb::List,
        Verb::Get,
        Verb::Create,
        Verb::Apply,
        Verb::Update,
        Verb::Patch,
        Verb::Delete,
        Verb::DeleteCollection,
        Verb::Watch,
    ];
    VERBS.into_iter().find(|v| v.as_str() == s).ok_or_else(|| format!("unknown verb {s:?}"))
}

fn parse_forbid(s: &str) -> Result<(Option<String>, Vec<Verb>), String> {
    let (ns, verbs) = s.split_once(':').unwrap_or((s, ""));
    let verbs = verbs.split(',').filter(|v| !v.is_empty()).map(parse_verb).collect::<Result<Vec<_>, _>>()?;
    Ok(((ns != "*").then(|| ns.to_string()), verbs))
}

fn parse_rate_limit(s: &str) -> Result<(u32, u64), String> {
    let (count, secs) = s.split_once(':').unwrap_or((s, "1"));
    let count = count.parse().map_err(|_| format!("not a count: {count:?}"))?;
    let secs = secs.parse().map_err(|_| format!("not a number of seconds: {secs:?}"))?;
    Ok((count, secs))
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
    for (namespace, verbs) in &args.forbid {
        emulator.forbid(namespace.as_deref(), verbs);
    }
    emulator.set_unauthorized(args.unauthorized);
    if let Some((count, secs)) = args.rate_limit {
        emulator.set_fault(Fault::RateLimited { count, retry_after: std::time::Duration::from_secs(secs) });
    }
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
