//! `roomcast standalone`: the cluster code with an in-memory bus, in one process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use roomcast_bus::{Bus, MemoryBus};
use roomcast_control::{Control, StaticEdges};
use roomcast_edge::Edge;

use crate::admin::Probe;
use crate::config::Resolved;
use crate::probes::EdgeProbe;
use crate::serve::{self, Servers};

pub async fn run(cfg: Resolved, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let (http, http_addr) = serve::bind(cfg.listen, "clients").await?;
    let (grpc, grpc_addr) = serve::bind(cfg.grpc_listen, "grpc").await?;
    let (admin, admin_addr) = serve::bind(cfg.admin_listen, "admin").await?;
    let signal = serve::ShutdownSignal::install();

    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
    let node = cfg.edge.node_id.clone();
    let auth = cfg.auth.context("no client authentication configured")?;
    let edge = Edge::start(cfg.edge, auth, bus.clone())
        .await
        .context("cannot start the edge")?;
    let control = Control::new(cfg.control, bus, Arc::new(StaticEdges(vec![node])));

    let draining = Arc::new(AtomicBool::new(false));
    let probe: Arc<dyn Probe> = Arc::new(EdgeProbe {
        edge: edge.clone(),
        nats: None,
        draining: draining.clone(),
    });
    let mut servers = Servers::default();
    servers
        .grpc(grpc, control, cfg.api_keys, cfg.grpc_tls.as_ref())
        .await?;
    servers.http("client", http, edge.router());
    servers.admin(admin, probe, metrics);
    serve::announce(
        "standalone",
        &[
            ("http", http_addr.to_string()),
            ("grpc", grpc_addr.to_string()),
            ("admin", admin_addr.to_string()),
        ],
    );

    signal.wait().await;
    tracing::info!("shutting down");
    draining.store(true, Ordering::Release);
    edge.shutdown().await;
    servers.stop().await
}
