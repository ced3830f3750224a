//! What an edge is told: protocol timeouts, limits, namespaces, CORS.

use std::time::Duration;

/// Edge settings; the binary builds them from flags, env and file.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// HTTP path of the Engine.IO endpoint, with leading and trailing `/`.
    pub path: String,
    /// Namespaces clients may connect to.
    pub namespaces: Vec<String>,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// How long a connection may stay without any namespace connected.
    pub connect_timeout: Duration,
    /// How long a WebSocket upgrade may take from probe to switch.
    pub upgrade_timeout: Duration,
    /// Largest Engine.IO message (WebSocket) or request body (polling), in bytes.
    pub max_payload: usize,
    /// Most binary attachments in one Socket.IO packet.
    pub max_attachments: usize,
    /// Outbound bytes queued per connection before it is a slow consumer.
    pub outbound_queue_bytes: usize,
    /// Most headers on a request to the endpoint (431 beyond).
    pub max_request_headers: usize,
    /// Most bytes of a request's target and headers together (431 beyond).
    pub max_request_head_bytes: usize,
    /// From TCP accept (TLS handshake included) to the first request routed.
    pub handshake_timeout: Duration,
    /// Longest a request head may take to arrive (and a keep-alive connection
    /// may stay idle between requests).
    pub request_head_timeout: Duration,
    /// Longest a polling POST body may take to arrive once its head has.
    pub request_body_timeout: Duration,
    /// Most connections accepted and not yet past their first request head
    /// (TLS handshakes included); more are closed at once.
    pub max_pending_handshakes: usize,
    /// Most open connections from one peer address; 0: no limit.
    pub max_connections_per_ip: usize,
    /// New connections per second from one peer address (bursts of twice
    /// that); 0: no limit.
    pub handshakes_per_ip_per_sec: u32,
    /// Most rooms one socket may be in (its own room aside); 0: no limit.
    pub max_rooms_per_socket: usize,
    /// WebSocket pings per second a connection may send (bursts of twice
    /// that); 0: no limit.
    pub ws_pings_per_sec: u32,
    /// Engine.IO packets per second a connection may send (bursts of twice
    /// that); 0: no limit.
    pub packets_per_sec: u32,
    /// Disconnect a socket when the `exp` of the JWT it connected with passes.
    pub disconnect_on_token_expiry: bool,
    /// Origins allowed to connect from a browser; empty allows any.
    pub cors_origins: Vec<String>,
    /// Name of the roomcast cluster (subject prefix).
    pub cluster: String,
    /// This edge's id (its node subject).
    pub node_id: String,
    /// How long a command that edges confirm may take.
    pub request_timeout: Duration,
    /// How often the edge tells control planes it is alive.
    pub heartbeat_interval: Duration,
    /// A backend that authorizes every CONNECT instead of JWTs.
    pub connect_hook: Option<crate::hook::HookConfig>,
    /// HTTP path of a raw WebSocket endpoint that echoes every message, for
    /// conformance suites only; `None` (the default) serves none.
    pub ws_echo_path: Option<String>,
    /// The Socket.IO Admin UI's namespace and credentials; `None` (the
    /// default) serves no admin namespace.
    pub admin_ui: Option<crate::admin_ui::AdminUiConfig>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            path: "/socket.io/".into(),
            namespaces: vec!["/".into()],
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            connect_timeout: Duration::from_millis(45_000),
            upgrade_timeout: Duration::from_millis(10_000),
            max_payload: 1_000_000,
            max_attachments: 10,
            outbound_queue_bytes: 4 * 1024 * 1024,
            max_request_headers: 64,
            max_request_head_bytes: 32 * 1024,
            handshake_timeout: Duration::from_secs(10),
            request_head_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(10),
            max_pending_handshakes: 1024,
            max_connections_per_ip: 0,
            handshakes_per_ip_per_sec: 0,
            max_rooms_per_socket: 1000,
            ws_pings_per_sec: 20,
            packets_per_sec: 1000,
            disconnect_on_token_expiry: false,
            cors_origins: Vec::new(),
            cluster: "roomcast".into(),
            node_id: roomcast_bus::names::new_id(),
            request_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            connect_hook: None,
            ws_echo_path: None,
            admin_ui: None,
        }
    }
}

impl EdgeConfig {
    pub fn has_namespace(&self, ns: &str) -> bool {
        self.namespaces.iter().any(|n| n == ns) || self.is_admin_namespace(ns)
    }

    /// Whether `ns` is the Admin UI's namespace (never when it is off).
    pub fn is_admin_namespace(&self, ns: &str) -> bool {
        self.admin_ui.as_ref().is_some_and(|a| a.namespace == ns)
    }
}
