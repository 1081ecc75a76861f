//! Logging on stderr via `tracing`.
//!
//! `RUST_LOG` sets the level (default `warn` for the one-shot commands).
//! Whatever it says, a fixed cap is applied on top: the HTTP and gRPC
//! stacks under vaultrs, etcd-client and kube log request and response details at
//! debug/trace, and a Vault response body holds secret values, so those
//! crates never log below `info`; vaultrs (which logs every 404 at ERROR)
//! and rustify are silenced entirely. cfgsync's own events carry names and
//! paths, never values.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::cli::LogFormat;

/// Crates that may see secret bytes on the wire, and the most they may log.
const CAPS: &[(&str, LevelFilter)] = &[
    ("vaultrs", LevelFilter::OFF),
    ("rustify", LevelFilter::OFF),
    ("reqwest", LevelFilter::INFO),
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
    ("tonic", LevelFilter::INFO),
    ("tower", LevelFilter::INFO),
    ("rustls", LevelFilter::INFO),
    ("etcd_client", LevelFilter::INFO),
    ("kube_client", LevelFilter::INFO),
    ("tower_http", LevelFilter::INFO),
];

/// The filter every subscriber uses: `RUST_LOG` (or `default`) and the caps.
pub fn filter(default: &str) -> impl tracing_subscriber::layer::Filter<tracing_subscriber::Registry> + use<> {
    let env = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .parse_lossy(std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned()));
    let caps = Targets::new().with_default(LevelFilter::TRACE).with_targets(CAPS.iter().copied());
    env.and(caps)
}

/// Installs the global subscriber.
pub fn init(format: LogFormat, default: &str) {
    let color = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let layer = match format {
        LogFormat::Text => fmt::layer().with_writer(std::io::stderr).with_ansi(color).with_target(true).boxed(),
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).with_target(true).boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer.with_filter(filter(default))).try_init();
}
