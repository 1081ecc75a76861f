//! The service's HTTP endpoints (`--listen`, e.g. `127.0.0.1:9090`):
//!
//! - `GET /`: the status page ([`crate::service`]'s `page`), plain HTML
//!   without JavaScript: each env's readiness, leader, last pass and targets;
//! - `GET /metrics`: [`crate::metrics`], OpenMetrics text, which Prometheus
//!   scrapes natively; time-dependent gauges are refreshed per scrape;
//! - `GET /healthz`: 200 `ok` while the process serves requests (liveness);
//! - `GET /readyz`: 200 when every env this replica serves has a leader
//!   whose last pass succeeded recently, else 503 (the rule is in
//!   `service::status`). The JSON body holds states and codes only, e.g.
//!   `{"ready":false,"envs":{"prod":{"state":"no_leader","code":"etcd_unreachable",…}}}`;
//!   error text goes to the log.
//!
//! axum is already in the dependency tree (tonic's router), so it costs no
//! extra crates; only HTTP/1 is enabled. Handlers read in-memory state only,
//! so a hung etcd or Vault never stalls a probe. The server shuts down with
//! the service's cancellation token and is the last task to stop, so probes
//! keep answering while passes drain.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the endpoints show, computed when asked.
pub trait Views: Send + Sync {
    /// Whether the replica is ready, and the `/readyz` body.
    fn readiness(&self) -> (bool, serde_json::Value);
    /// The status page.
    fn status_page(&self) -> String;
    /// Sets the gauges that depend on the time of the scrape.
    fn refresh_metrics(&self);
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    views: Arc<dyn Views>,
}

/// A failure to serve HTTP.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("serving HTTP on {addr}: {source}")]
    Serve { addr: SocketAddr, source: std::io::Error },
}

/// A bound listener; bound before anything else starts, so a port in use
/// fails the start instead of a background task.
pub struct Server {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl Server {
    pub async fn bind(addr: SocketAddr) -> Result<Self, HttpError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| HttpError::Bind { addr, source })?;
        Ok(Self { listener, addr })
    }

    /// Serves until `cancel`.
    pub async fn serve(
        self,
        metrics: Arc<Metrics>,
        views: Arc<dyn Views>,
        cancel: CancellationToken,
    ) -> Result<(), HttpError> {
        let app = Router::new()
            .route("/", get(page_handler))
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz_handler))
            .with_state(AppState { metrics, views });
        let addr = self.addr;
        axum::serve(self.listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await
            .map_err(|source| HttpError::Serve { addr, source })
    }
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    state.views.refresh_metrics();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}

async fn readyz_handler(State(state): State<AppState>) -> Response {
    let (ready, body) = state.views.readiness();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut text = serde_json::to_string_pretty(&body).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    (code, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn page_handler(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // No script, no external resource: only the inline style.
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        state.views.status_page(),
    )
        .into_response()
}
