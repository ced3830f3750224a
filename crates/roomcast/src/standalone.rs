//! `roomcast standalone`: the cluster code with an in-memory bus, in one process.

use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use roomcast_bus::Backend;
use roomcast_control::{Control, StaticEdges};
use roomcast_edge::Edge;

use crate::admin::Probe;
use crate::cluster;
use crate::config::Resolved;
use crate::keeper::Keeper;
use crate::probes::EdgeProbe;
use crate::serve::{self, Servers};

pub async fn run(cfg: Resolved, metrics: PrometheusHandle) -> anyhow::Result<()> {
    serve::raise_open_files_limit(cfg.edge.max_pending_handshakes);
    let (http, http_addr) = serve::bind(cfg.listen, "clients").await?;
    let (grpc, grpc_addr) = serve::bind(cfg.grpc_listen, "grpc").await?;
    let (admin, admin_addr) = serve::bind(cfg.admin_listen, "admin").await?;
    let signal = serve::ShutdownSignal::install();

    let backend = Backend::memory();
    let bus = backend.bus();
    let node = cfg.edge.node_id.clone();
    let presence = cluster::open_presence(&cfg, &backend).await?;
    let keeper = presence.clone().map(Keeper::start);
    let recovery = cluster::open_recovery(&cfg, &backend).await?;
    let delivery_store = cluster::open_delivery(&cfg, &backend).await?;
    let auth = cfg.auth.context("no client authentication configured")?;
    let edge = Edge::start(
        cfg.edge,
        auth,
        bus.clone(),
        presence.clone(),
        recovery.clone(),
    )
    .await
    .context("cannot start the edge")?;
    // The edge records its users' sockets before answering their connect
    // whenever presence is on: user-addressed calls are routed by it.
    let edges = if presence.is_some() {
        StaticEdges::listing(vec![node.clone()])
    } else {
        StaticEdges::new(vec![node.clone()])
    };
    let mut control = Control::new(cfg.control, bus, Arc::new(edges));
    if let Some(r) = recovery {
        control = control.with_recovery(r);
    }
    let mut delivery = None;
    if let Some(p) = presence {
        control = control.with_presence(p);
        if let Some((store, dcfg)) = delivery_store {
            let (c, d) = control
                .with_delivery(store, dcfg, node)
                .context("cannot start at-least-once delivery")?;
            d.start();
            control = c;
            delivery = Some(d);
        }
    }

    let probe: Arc<dyn Probe> = Arc::new(EdgeProbe {
        edge: edge.clone(),
        nats: None,
    });
    let mut servers = Servers::default();
    servers
        .grpc(grpc, control.clone(), cfg.api_keys, cfg.grpc_tls.as_ref())
        .await?;
    servers.client(
        http,
        cfg.client_tls.as_ref(),
        edge.router(),
        edge.port_limits(),
    );
    servers.admin(admin, probe, metrics, cfg.admin_ui_static_dir.clone());
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
    serve::drain_edge(&edge, &servers, cfg.drain).await;
    if let Some(k) = keeper {
        k.stop(std::time::Duration::from_secs(2)).await;
    }
    if let Some(d) = &delivery {
        d.shutdown(std::time::Duration::from_secs(2)).await;
    }
    control.shutdown();
    control.join(std::time::Duration::from_secs(2)).await;
    servers.stop().await
}
