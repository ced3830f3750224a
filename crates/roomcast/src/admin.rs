//! The admin port: `/healthz` (the process runs), `/readyz` (it can do its
//! job: connected to NATS, not shutting down) and `/metrics` (Prometheus text);
//! on an edge, optionally the Socket.IO Admin UI's static build at `/admin-ui/`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
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

pub fn router(
    probe: Arc<dyn Probe>,
    metrics: PrometheusHandle,
    admin_ui_static_dir: Option<PathBuf>,
) -> axum::Router {
    let router = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(Admin { probe, metrics });
    match admin_ui_static_dir {
        None => router,
        Some(dir) => {
            let dir = Arc::new(dir);
            let ui = axum::Router::new()
                .route("/admin-ui/", get(ui_file))
                .route("/admin-ui/{*path}", get(ui_file))
                .with_state(dir);
            router.merge(ui).route(
                "/admin-ui",
                get(|| async { Redirect::permanent("/admin-ui/") }),
            )
        }
    }
}

/// A file of the Admin UI's build: plain path segments only (no `..`, no
/// hidden files), `index.html` for the folder itself.
async fn ui_file(State(dir): State<Arc<PathBuf>>, path: Option<Path<String>>) -> Response {
    let rel = path.map_or_else(|| "index.html".to_owned(), |Path(p)| p);
    let safe = rel
        .split('/')
        .all(|seg| !seg.is_empty() && !seg.starts_with('.') && !seg.contains('\\'));
    if !safe {
        return StatusCode::NOT_FOUND.into_response();
    }
    let file = dir.join(&rel);
    let Ok(body) = tokio::fs::read(&file).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let kind = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript",
        Some("css") => "text/css",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("json" | "map") => "application/json",
        _ => "application/octet-stream",
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
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
