//! What every process does the same way: bind, serve HTTP and gRPC until told
//! to stop, wait for SIGINT/SIGTERM, print the ready line.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use roomcast_api::v1::roomcast_server::RoomcastServer;
use roomcast_control::auth::ApiKeys;
use roomcast_control::Control;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Probe};
use crate::config::GrpcTls;
use crate::tls::{ClientTls, TlsHandshake};
use roomcast_edge::port::{self, PortLimits};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// SIGINT and SIGTERM, listened to from the moment this is built: build it
/// before announcing readiness, so a signal sent right after the ready line is
/// never handled by the default action (exit by signal).
pub struct ShutdownSignal {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    pub fn install() -> ShutdownSignal {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            ShutdownSignal {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        ShutdownSignal {}
    }

    /// Resolves when SIGINT or SIGTERM arrives.
    pub async fn wait(mut self) {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = recv(&mut self.term) => {}
                _ = recv(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Raises the soft open-files limit to the hard one, as Go programs do at
/// start: every client connection is a descriptor, and the usual soft limit
/// (1024) is the first thing a flood of idle connections runs into, before the
/// client port's cap on pending handshakes does. Warns when the limit is not
/// well above that cap.
pub fn raise_open_files_limit(max_pending_handshakes: usize) {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::debug!(error = %e, "cannot raise the open-files limit");
            }
        }
        let open_files = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        tracing::debug!(open_files, "open-files limit");
        let cap = u64::try_from(max_pending_handshakes).unwrap_or(u64::MAX);
        if open_files < cap.saturating_mul(2) {
            tracing::warn!(
                open_files,
                max_pending_handshakes,
                "the open-files limit leaves little room beside max-pending-handshakes: \
                 raise it (ulimit -n) or lower the cap"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = max_pending_handshakes;
}

pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// The servers of one process, stopped together.
#[derive(Default)]
pub struct Servers {
    stop: CancellationToken,
    /// Stops accepting clients first, while the rest keeps serving.
    clients_stop: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

impl Servers {
    /// Serves an axum router on a port other than the client port.
    fn http(&mut self, name: &'static str, listener: TcpListener, router: axum::Router) {
        let server = spawn_http(listener, router, self.stop.clone());
        self.tasks.push((name, server));
    }

    /// Serves the client port: plain HTTP, or HTTPS when `tls` is given, with
    /// the port's deadlines and cap on pending handshakes.
    pub fn client(
        &mut self,
        listener: TcpListener,
        tls: Option<&ClientTls>,
        router: axum::Router,
        limits: PortLimits,
    ) {
        let stop = self.clients_stop.clone();
        let server = match tls {
            None => tokio::spawn(async move {
                port::serve(listener, port::PlainTcp, router, limits, stop).await;
                Ok(())
            }),
            Some(tls) => {
                let handshake = TlsHandshake::new(tls);
                tokio::spawn(async move {
                    port::serve(listener, handshake, router, limits, stop).await;
                    Ok(())
                })
            }
        };
        self.tasks.push(("client", server));
    }

    /// Serves the admin endpoints.
    pub fn admin(
        &mut self,
        listener: TcpListener,
        probe: Arc<dyn Probe>,
        metrics: PrometheusHandle,
        admin_ui_static_dir: Option<std::path::PathBuf>,
    ) {
        let router = admin::router(probe, metrics, admin_ui_static_dir);
        self.http("admin", listener, router);
    }

    /// Serves the gRPC API with health checking and reflection.
    pub async fn grpc(
        &mut self,
        listener: TcpListener,
        control: Control,
        api_keys: Vec<String>,
        tls: Option<&GrpcTls>,
    ) -> anyhow::Result<()> {
        let keys = ApiKeys::new(api_keys);
        if keys.is_open() {
            tracing::warn!("no api key configured: the gRPC API accepts every caller");
        }
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<RoomcastServer<Control>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(roomcast_api::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("cannot build the reflection service")?;
        let stop = self.stop.clone();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            let mut config =
                ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
            if let Some(ca) = &tls.client_ca_pem {
                config = config.client_ca_root(Certificate::from_pem(ca));
            }
            builder = builder
                .tls_config(config)
                .context("invalid grpc tls certificate or key")?;
        }
        let server = builder
            .layer(crate::telemetry::CallerTraceLayer)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(RoomcastServer::with_interceptor(control, keys))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                stop.cancelled().await
            });
        self.tasks.push((
            "grpc",
            tokio::spawn(async move { server.await.map_err(anyhow::Error::from) }),
        ));
        Ok(())
    }

    /// Stops accepting new client connections (those open are not touched).
    pub fn stop_accepting_clients(&self) {
        self.clients_stop.cancel();
    }

    /// Stops every server and waits for them.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.clients_stop.cancel();
        self.stop.cancel();
        for (name, task) in self.tasks {
            task.await
                .with_context(|| format!("{name} server task failed"))?
                .with_context(|| format!("{name} server failed"))?;
        }
        Ok(())
    }
}

/// Serves an axum router on `listener` until `stop`.
fn spawn_http(
    listener: TcpListener,
    router: axum::Router,
    stop: CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(anyhow::Error::from)
    })
}

/// The lame-duck drain of a process with an edge: not ready at once, keep
/// serving for `delay` (load balancers take it out meanwhile), stop accepting,
/// close the connections spread over `window`, then stop the edge.
pub async fn drain_edge(
    edge: &roomcast_edge::Edge,
    servers: &Servers,
    drain: crate::config::Drain,
) {
    edge.begin_drain();
    tracing::info!(
        delay_ms = drain.delay.as_millis() as u64,
        "not ready; draining after the delay"
    );
    tokio::time::sleep(drain.delay).await;
    servers.stop_accepting_clients();
    edge.drain(drain.window).await;
    edge.shutdown().await;
}

/// Prints the one machine-readable line scripts and tests wait for.
pub fn announce(role: &str, parts: &[(&str, String)]) {
    let fields: Vec<String> = parts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    tracing::info!(role, addrs = %fields.join(" "), "roomcast ready");
    println!("roomcast listening {}", fields.join(" "));
}
