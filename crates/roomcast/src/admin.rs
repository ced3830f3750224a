//! The admin port: `/healthz` (the process runs), `/readyz` (it can do its
//! job: connected to NATS, not shutting down) and `/metrics` (Prometheus text).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// What the admin endpoints ask of the process.
pub trait Probe: Send + Sync + 'static {
    /// Whether the process should receive traffic.
    fn ready(&self) -> bool;
    /// Sets the gauges and counters from the live state, before a scrape.
    fn sample(&self);
}

#[derive(Clone)]
struct Admin {
    probe: Arc<dyn Probe>,
    metrics: PrometheusHandle,
}

pub fn router(probe: Arc<dyn Probe>, metrics: PrometheusHandle) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(Admin { probe, metrics })
}

async fn readyz(State(admin): State<Admin>) -> impl IntoResponse {
    if admin.probe.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn render(State(admin): State<Admin>) -> impl IntoResponse {
    admin.probe.sample();
    metrics::gauge!(crate::metrics::READY).set(f64::from(u8::from(admin.probe.ready())));
    let mut text = admin.metrics.render();
    text.push_str(&crate::metrics::process_text());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
