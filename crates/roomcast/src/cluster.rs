//! `roomcast edge` and `roomcast control`: the processes of a cluster, which
//! share one NATS.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use roomcast_bus::nats::NatsBus;
use roomcast_bus::recovery::Recovery;
use roomcast_bus::subject::Subjects;
use roomcast_bus::{Backend, KvBucket, KvStore};
use roomcast_control::{Control, DeliveryConfig, LiveEdges};
use roomcast_edge::Edge;
use roomcast_presence::Presence;

use crate::config::Resolved;
use crate::keeper::Keeper;
use crate::probes::{ControlProbe, EdgeProbe};
use crate::serve::{self, Servers};

/// How long a starting control plane waits for edges to answer its ping.
const DISCOVERY: Duration = Duration::from_millis(300);
/// How long an exiting edge waits for NATS to take its last messages.
const EXIT_FLUSH: Duration = Duration::from_secs(2);

async fn connect(cfg: &Resolved) -> anyhow::Result<NatsBus> {
    let nats = NatsBus::connect(cfg.nats.clone())
        .await
        .with_context(|| format!("cannot connect to nats at {}", cfg.nats.urls.join(",")))?;
    tracing::info!(urls = %cfg.nats.urls.join(","), "connected to nats");
    Ok(nats)
}

pub async fn run_edge(cfg: Resolved, metrics: PrometheusHandle) -> anyhow::Result<()> {
    serve::raise_open_files_limit(cfg.edge.max_pending_handshakes);
    let (http, http_addr) = serve::bind(cfg.listen, "clients").await?;
    let (admin, admin_addr) = serve::bind(cfg.admin_listen, "admin").await?;
    let signal = serve::ShutdownSignal::install();
    let nats = connect(&cfg).await?;
    let backend = Backend::nats(nats.clone());
    let bus = backend.bus();
    let node = cfg.edge.node_id.clone();
    let presence = open_presence(&cfg, &backend).await?;
    let recovery = open_recovery(&cfg, &backend).await?;
    let auth = cfg.auth.context("no client authentication configured")?;
    let edge = Edge::start(cfg.edge, auth, bus, presence, recovery)
        .await
        .context("cannot start the edge")?;
    let probe = Arc::new(EdgeProbe {
        edge: edge.clone(),
        nats: Some(nats.clone()),
    });
    let mut servers = Servers::default();
    servers.client(
        http,
        cfg.client_tls.as_ref(),
        edge.router(),
        edge.port_limits(),
    );
    servers.admin(admin, probe, metrics, cfg.admin_ui_static_dir.clone());
    serve::announce(
        "edge",
        &[
            ("http", http_addr.to_string()),
            ("admin", admin_addr.to_string()),
            ("node", node),
        ],
    );

    signal.wait().await;
    tracing::info!("shutting down");
    serve::drain_edge(&edge, &servers, cfg.drain).await;
    servers.stop().await?;
    // Deliver what is still buffered (the "bye" among it) before exiting,
    // but never wait for a NATS that is gone.
    if nats.is_connected() {
        match tokio::time::timeout(EXIT_FLUSH, nats.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "nats flush at exit failed"),
            Err(_) => tracing::warn!("nats flush at exit timed out"),
        }
    }
    Ok(())
}

pub async fn run_control(cfg: Resolved, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let (grpc, grpc_addr) = serve::bind(cfg.grpc_listen, "grpc").await?;
    let (admin, admin_addr) = serve::bind(cfg.admin_listen, "admin").await?;
    let signal = serve::ShutdownSignal::install();
    let nats = connect(&cfg).await?;
    let backend = Backend::nats(nats.clone());
    let bus = backend.bus();
    let subjects = Subjects::new(&cfg.control.cluster);
    let edges = Arc::new(
        LiveEdges::start(bus.clone(), &subjects, cfg.edge_ttl, DISCOVERY)
            .await
            .context("cannot listen to edge heartbeats")?,
    );
    let presence = open_presence(&cfg, &backend).await?;
    let recovery = open_recovery(&cfg, &backend).await?;
    let delivery_store = open_delivery(&cfg, &backend).await?;
    let me = cfg.edge.node_id.clone();
    let mut control = Control::new(cfg.control, bus, edges.clone());
    if let Some(r) = recovery {
        control = control.with_recovery(r);
    }
    let mut delivery = None;
    let mut keeper = None;
    if let Some(p) = presence {
        keeper = Some(Keeper::start(p.clone()));
        control = control.with_presence(p);
        if let Some((store, mut dcfg)) = delivery_store {
            dcfg.collect = false;
            let (c, d) = control
                .with_delivery(store, dcfg, me)
                .context("cannot start at-least-once delivery")?;
            d.start();
            control = c;
            delivery = Some(d);
        }
    }
    let probe = Arc::new(ControlProbe {
        nats: nats.clone(),
        edges,
    });
    let mut servers = Servers::default();
    servers
        .grpc(grpc, control.clone(), cfg.api_keys, cfg.grpc_tls.as_ref())
        .await?;
    servers.admin(admin, probe, metrics, None);
    serve::announce(
        "control",
        &[
            ("grpc", grpc_addr.to_string()),
            ("admin", admin_addr.to_string()),
            ("node", cfg.edge.node_id),
        ],
    );

    signal.wait().await;
    tracing::info!("shutting down");
    if let Some(k) = keeper {
        k.stop(EXIT_FLUSH).await;
    }
    if let Some(d) = &delivery {
        d.shutdown(EXIT_FLUSH).await;
        // Another control plane takes the queues at once rather than after
        // their leases; a NATS that is gone must not hold up the exit.
        let _ = tokio::time::timeout(EXIT_FLUSH, d.release()).await;
    }
    control.shutdown();
    control.join(EXIT_FLUSH).await;
    servers.stop().await
}

/// Connection state recovery of a process: the history and the sessions
/// store of its backend (on NATS, a JetStream stream and KV bucket).
pub(crate) async fn open_recovery(
    cfg: &Resolved,
    backend: &Backend,
) -> anyhow::Result<Option<Recovery>> {
    let Some(rcfg) = cfg.recovery.clone() else {
        return Ok(None);
    };
    let subjects = Subjects::new(&cfg.control.cluster);
    let (stream, bucket) = (cfg.recovery_stream(), cfg.recovery_bucket());
    let hint =
        "(does nats-server run with JetStream, -js?); without --recovery-room recovery is off";
    let history = backend
        .history(&stream, subjects, &rcfg)
        .await
        .with_context(|| format!("cannot open the recovery stream {stream} {hint}"))?;
    let sessions = backend
        .sessions(&bucket, &rcfg)
        .await
        .with_context(|| format!("cannot open the recovery bucket {bucket} {hint}"))?;
    Ok(Some(Recovery {
        config: rcfg,
        history,
        sessions,
    }))
}

/// The store of at-least-once messages of a process: a key-value store of
/// its backend whose keys age out `max_ttl` + an hour after their last write.
pub(crate) async fn open_delivery(
    cfg: &Resolved,
    backend: &Backend,
) -> anyhow::Result<Option<(Arc<dyn KvStore>, DeliveryConfig)>> {
    let Some(dcfg) = cfg.delivery.clone() else {
        return Ok(None);
    };
    let bucket = KvBucket {
        name: cfg.delivery_bucket(),
        purpose: "roomcast at-least-once messages and inboxes".to_owned(),
        replicas: cfg.presence_replicas,
        max_age: dcfg.max_ttl + dcfg.retention,
    };
    let store = backend
        .kv(&bucket)
        .await
        .with_context(|| format!("cannot open the delivery bucket {}", bucket.name))?;
    Ok(Some((store, dcfg)))
}

/// The presence of a process: a key-value store of its backend.
pub(crate) async fn open_presence(
    cfg: &Resolved,
    backend: &Backend,
) -> anyhow::Result<Option<Presence>> {
    let Some(pcfg) = cfg.presence.clone() else {
        return Ok(None);
    };
    let bucket = cfg.presence_bucket();
    let store = backend
        .kv(&roomcast_presence::bucket(&bucket, cfg.presence_replicas))
        .await
        .with_context(|| {
            format!(
                "cannot open the presence bucket {bucket} (does nats-server run with JetStream, -js?); \
                 --presence=false runs without presence"
            )
        })?;
    Ok(Some(Presence::new(store, backend.bus(), pcfg)))
}
