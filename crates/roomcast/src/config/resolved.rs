//! What resolution produces: the checked settings the processes are built from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use roomcast_bus::nats::NatsOptions;
use roomcast_bus::recovery::RecoveryConfig;
use roomcast_control::{ControlConfig, DeliveryConfig};
use roomcast_edge::{Authenticator, EdgeConfig};
use roomcast_presence::PresenceConfig;

use super::LogFormat;

/// The lame-duck drain of an edge at SIGTERM.
#[derive(Debug, Clone, Copy, Default)]
pub struct Drain {
    /// Not ready but still serving (load balancers take the edge out).
    pub delay: Duration,
    /// Connections are closed spread over this.
    pub window: Duration,
}

/// TLS for the gRPC port, read from the files at start.
pub struct GrpcTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Callers must present a certificate signed by one of these.
    pub client_ca_pem: Option<Vec<u8>>,
}

/// Settings resolved and checked: what the processes are built from.
pub struct Resolved {
    pub listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    pub grpc_tls: Option<GrpcTls>,
    /// TLS for the client port; `None` for a control plane or plain HTTP.
    pub client_tls: Option<crate::tls::ClientTls>,
    pub admin_listen: SocketAddr,
    /// The Admin UI's static files, served on the admin port; edges only.
    pub admin_ui_static_dir: Option<PathBuf>,
    pub edge: EdgeConfig,
    pub control: ControlConfig,
    /// Client authentication; `None` for a control plane.
    pub auth: Option<Authenticator>,
    pub api_keys: Vec<String>,
    pub nats: NatsOptions,
    /// How long a control plane counts an edge as alive after its last heartbeat.
    pub edge_ttl: Duration,
    /// Presence settings; `None` when presence is off.
    pub presence: Option<PresenceConfig>,
    pub presence_replicas: usize,
    /// Connection state recovery; `None` when off.
    pub recovery: Option<RecoveryConfig>,
    /// At-least-once delivery settings; `None` when presence is off.
    pub delivery: Option<DeliveryConfig>,
    pub drain: Drain,
    /// Trace export; `None` when off.
    pub traces: Option<crate::telemetry::TraceConfig>,
    /// The log filter, e.g. `info` or `roomcast_edge=debug`.
    pub log: String,
    pub log_format: LogFormat,
}

impl Resolved {
    /// The JetStream KV bucket of this cluster's presence.
    pub fn presence_bucket(&self) -> String {
        format!("roomcast-presence-{}", self.control.cluster)
    }

    /// The JetStream stream of this cluster's recovery history.
    pub fn recovery_stream(&self) -> String {
        format!("roomcast-history-{}", self.control.cluster)
    }

    /// The JetStream KV bucket of this cluster's recoverable sessions.
    pub fn recovery_bucket(&self) -> String {
        format!("roomcast-sessions-{}", self.control.cluster)
    }

    /// The JetStream KV bucket of this cluster's at-least-once messages.
    pub fn delivery_bucket(&self) -> String {
        format!("roomcast-delivery-{}", self.control.cluster)
    }
}
