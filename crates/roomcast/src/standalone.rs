//! `roomcast standalone`: the cluster code with an in-memory bus, in one process.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use roomcast_api::v1::roomcast_server::RoomcastServer;
use roomcast_bus::{Bus, MemoryBus};
use roomcast_control::auth::ApiKeys;
use roomcast_control::{Control, StaticEdges};
use roomcast_edge::Edge;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::config::Resolved;

/// Resolves when SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub async fn run(cfg: Resolved) -> anyhow::Result<()> {
    let http = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let grpc = TcpListener::bind(cfg.grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.grpc_listen))?;
    let http_addr = http.local_addr()?;
    let grpc_addr = grpc.local_addr()?;

    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::default());
    let edge = Edge::start(cfg.edge, cfg.auth, bus.clone())
        .await
        .context("cannot start the edge")?;
    let control = Control::new(cfg.control, bus, Arc::new(StaticEdges(1)));
    let keys = ApiKeys::new(cfg.api_keys);
    if keys.is_open() {
        tracing::warn!("no api key configured: the gRPC API accepts every caller");
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RoomcastServer<Control>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(roomcast_api::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;

    let stop = CancellationToken::new();
    let grpc_stop = stop.clone();
    let grpc_server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(RoomcastServer::with_interceptor(control, keys))
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), async move {
            grpc_stop.cancelled().await
        });
    let http_stop = stop.clone();
    let http_server = axum::serve(
        http,
        edge.router()
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { http_stop.cancelled().await });

    let grpc_task = tokio::spawn(grpc_server);
    let http_task = tokio::spawn(async move { http_server.await });

    tracing::info!(http = %http_addr, grpc = %grpc_addr, "roomcast standalone ready");
    // One machine-readable line on stdout for scripts and tests.
    println!("roomcast listening http={http_addr} grpc={grpc_addr}");

    shutdown_signal().await;
    tracing::info!("shutting down");
    edge.shutdown().await;
    stop.cancel();
    let (g, h) = tokio::join!(grpc_task, http_task);
    g.context("grpc server task failed")?
        .context("grpc server failed")?;
    h.context("http server task failed")?
        .context("http server failed")?;
    Ok(())
}
