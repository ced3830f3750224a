//! Settings: flags over environment (`ROOMCAST_*`) over a TOML file over
//! defaults, validated before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use roomcast_bus::names::valid_namespace;
use roomcast_bus::nats::NatsOptions;
use roomcast_bus::recovery::RecoveryConfig;
use roomcast_control::ControlConfig;
use roomcast_edge::hook::HookConfig;
use roomcast_edge::{Authenticator, EdgeConfig, JwtConfig};
use roomcast_presence::{Audience, PresenceConfig};
use serde::Deserialize;

/// Every setting of every `roomcast` process. Each flag is also an environment
/// variable and a key of the config file (same name, snake_case; lists are
/// plural in the file: `namespaces`, `cors_origins`, `api_keys`, `nats_urls`).
/// A process ignores the settings of roles it does not play (a control plane
/// has no client port).
#[derive(Args, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Client port (Socket.IO over HTTP and WebSocket) [default: 0.0.0.0:3000]
    #[arg(long, env = "ROOMCAST_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// gRPC control API port [default: 0.0.0.0:50051]
    #[arg(long, env = "ROOMCAST_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// PEM certificate chain that makes the gRPC port speak TLS (with --grpc-tls-key-file)
    #[arg(long, env = "ROOMCAST_GRPC_TLS_CERT_FILE")]
    pub grpc_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the gRPC TLS certificate
    #[arg(long, env = "ROOMCAST_GRPC_TLS_KEY_FILE")]
    pub grpc_tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: gRPC callers must present a certificate they signed (mutual TLS)
    #[arg(long, env = "ROOMCAST_GRPC_TLS_CLIENT_CA_FILE")]
    pub grpc_tls_client_ca_file: Option<PathBuf>,
    /// PEM certificate chain that makes the client port speak TLS (https:// and wss://; with --tls-key-file)
    #[arg(long, env = "ROOMCAST_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the client port's TLS certificate
    #[arg(long, env = "ROOMCAST_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Admin port: /healthz, /readyz, /metrics [default: 0.0.0.0:9464]
    #[arg(long, env = "ROOMCAST_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// HTTP path of the Socket.IO endpoint [default: /socket.io/]
    #[arg(long, env = "ROOMCAST_PATH")]
    pub path: Option<String>,
    /// HTTP path of a raw WebSocket endpoint that echoes every message, for conformance testing only [default: none]
    #[arg(long, env = "ROOMCAST_WS_ECHO_PATH")]
    pub ws_echo_path: Option<String>,
    /// Serve the Socket.IO Admin UI's server side on this namespace, e.g. /admin (with --admin-ui-username and --admin-ui-password-hash) [default: off]
    #[arg(long, env = "ROOMCAST_ADMIN_UI_NAMESPACE")]
    pub admin_ui_namespace: Option<String>,
    /// The Admin UI's user name
    #[arg(long, env = "ROOMCAST_ADMIN_UI_USERNAME")]
    pub admin_ui_username: Option<String>,
    /// bcrypt hash of the Admin UI's password ($2a$/$2b$/$2y$)
    #[arg(long, env = "ROOMCAST_ADMIN_UI_PASSWORD_HASH")]
    pub admin_ui_password_hash: Option<String>,
    /// Serve the Admin UI's static build (the `ui/dist` folder of the npm package @socket.io/admin-ui) from this folder on the admin port at /admin-ui/ [default: off]
    #[arg(long, env = "ROOMCAST_ADMIN_UI_STATIC_DIR")]
    pub admin_ui_static_dir: Option<PathBuf>,
    /// A namespace clients may connect to; repeat for several [default: /]
    #[arg(long = "namespace", env = "ROOMCAST_NAMESPACES", value_delimiter = ',')]
    #[serde(rename = "namespaces")]
    pub namespaces: Vec<String>,
    /// Server ping interval, ms [default: 25000]
    #[arg(long, env = "ROOMCAST_PING_INTERVAL_MS")]
    pub ping_interval_ms: Option<u64>,
    /// Time to wait for a pong before closing, ms [default: 20000]
    #[arg(long, env = "ROOMCAST_PING_TIMEOUT_MS")]
    pub ping_timeout_ms: Option<u64>,
    /// Time a connection may stay without joining a namespace, ms [default: 45000]
    #[arg(long, env = "ROOMCAST_CONNECT_TIMEOUT_MS")]
    pub connect_timeout_ms: Option<u64>,
    /// Time an upgrade from polling to WebSocket may take, ms [default: 10000]
    #[arg(long, env = "ROOMCAST_UPGRADE_TIMEOUT_MS")]
    pub upgrade_timeout_ms: Option<u64>,
    /// Largest message or polling body a client may send, bytes [default: 1000000]
    #[arg(long, env = "ROOMCAST_MAX_PAYLOAD")]
    pub max_payload: Option<usize>,
    /// Most binary attachments in one packet [default: 10]
    #[arg(long, env = "ROOMCAST_MAX_ATTACHMENTS")]
    pub max_attachments: Option<usize>,
    /// Bytes queued for one connection before it is disconnected as a slow consumer [default: 4194304]
    #[arg(long, env = "ROOMCAST_OUTBOUND_QUEUE_BYTES")]
    pub outbound_queue_bytes: Option<usize>,
    /// Most headers on a client request; more get 431 [default: 64]
    #[arg(long, env = "ROOMCAST_MAX_REQUEST_HEADERS")]
    pub max_request_headers: Option<usize>,
    /// Most bytes of a client request's target and headers together; more get 431 [default: 32768]
    #[arg(long, env = "ROOMCAST_MAX_REQUEST_HEAD_BYTES")]
    pub max_request_head_bytes: Option<usize>,
    /// Time from accepting a client connection (TLS handshake included) to its first request, ms; slower ones are closed [default: 10000]
    #[arg(long, env = "ROOMCAST_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// Time a client request head may take to arrive, and a keep-alive connection may stay idle, ms [default: 10000]
    #[arg(long, env = "ROOMCAST_REQUEST_HEAD_TIMEOUT_MS")]
    pub request_head_timeout_ms: Option<u64>,
    /// Time a polling request body may take to arrive once its head has, ms; slower gets 408 and closes the session [default: 10000]
    #[arg(long, env = "ROOMCAST_REQUEST_BODY_TIMEOUT_MS")]
    pub request_body_timeout_ms: Option<u64>,
    /// Most client connections accepted and not yet past their first request head (TLS handshakes included); more are closed at once [default: 1024]
    #[arg(long, env = "ROOMCAST_MAX_PENDING_HANDSHAKES")]
    pub max_pending_handshakes: Option<usize>,
    /// Most open connections from one peer address; more get 429 (0: no limit; behind a proxy every client has the proxy's address) [default: 0]
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// New connections per second from one peer address, bursts of twice that; more get 429 (0: no limit) [default: 0]
    #[arg(long, env = "ROOMCAST_HANDSHAKES_PER_IP_PER_SEC")]
    pub handshakes_per_ip_per_sec: Option<u32>,
    /// Most rooms one socket may be in: a JWT rooms claim over it is refused, a JoinRooms over it fails (0: no limit) [default: 1000]
    #[arg(long, env = "ROOMCAST_MAX_ROOMS_PER_SOCKET")]
    pub max_rooms_per_socket: Option<usize>,
    /// WebSocket pings per second a connection may send, bursts of twice that; faster closes it (0: no limit) [default: 20]
    #[arg(long, env = "ROOMCAST_WS_PINGS_PER_SEC")]
    pub ws_pings_per_sec: Option<u32>,
    /// Engine.IO packets per second a connection may send, bursts of twice that; faster closes it (0: no limit) [default: 1000]
    #[arg(long, env = "ROOMCAST_PACKETS_PER_SEC")]
    pub packets_per_sec: Option<u32>,
    /// Disconnect a socket when the `exp` of its JWT passes (leeway included)
    #[arg(long, env = "ROOMCAST_DISCONNECT_ON_TOKEN_EXPIRY", num_args = 0..=1, default_missing_value = "true")]
    pub disconnect_on_token_expiry: Option<bool>,
    /// A browser origin allowed to connect; repeat for several [default: any]
    #[arg(
        long = "cors-origin",
        env = "ROOMCAST_CORS_ORIGINS",
        value_delimiter = ','
    )]
    #[serde(rename = "cors_origins")]
    pub cors_origins: Vec<String>,
    /// Let clients connect without a token (user id empty)
    #[arg(long, env = "ROOMCAST_ALLOW_ANONYMOUS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_anonymous: Option<bool>,
    /// HS256 secret that signs client JWTs
    #[arg(long, env = "ROOMCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM file of the RS256 public key that verifies client JWTs
    #[arg(long, env = "ROOMCAST_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required JWT `aud`
    #[arg(long, env = "ROOMCAST_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Required JWT `iss`
    #[arg(long, env = "ROOMCAST_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// JWT claim listing rooms to join at connect [default: rooms]
    #[arg(long, env = "ROOMCAST_JWT_ROOMS_CLAIM")]
    pub jwt_rooms_claim: Option<String>,
    /// Clock skew allowed on JWT `exp`/`nbf`, seconds [default: 30]
    #[arg(long, env = "ROOMCAST_JWT_LEEWAY_SECS")]
    pub jwt_leeway_secs: Option<u64>,
    /// API key the gRPC API requires (`authorization: Bearer <key>`); repeat for several [default: none, API open]
    #[arg(
        long = "api-key",
        env = "ROOMCAST_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    #[serde(rename = "api_keys")]
    pub api_keys: Vec<String>,
    /// Cluster name, the prefix of every bus subject [default: roomcast]
    #[arg(long, env = "ROOMCAST_CLUSTER")]
    pub cluster: Option<String>,
    /// This node's id [default: random]
    #[arg(long, env = "ROOMCAST_NODE_ID")]
    pub node_id: Option<String>,
    /// gRPC address (http://host:port) of a backend's ConnectHook service that authorizes every CONNECT instead of JWTs
    #[arg(long, env = "ROOMCAST_CONNECT_HOOK_URL")]
    pub connect_hook_url: Option<String>,
    /// How long the connect hook may take before the CONNECT is refused, ms [default: 2000]
    #[arg(long, env = "ROOMCAST_CONNECT_HOOK_TIMEOUT_MS")]
    pub connect_hook_timeout_ms: Option<u64>,
    /// Track which users are online (JetStream KV in a cluster) [default: true]
    #[arg(long, env = "ROOMCAST_PRESENCE", num_args = 0..=1, default_missing_value = "true")]
    pub presence: Option<bool>,
    /// How long a user stays online after their last socket closed, ms (0: at once) [default: 5000]
    #[arg(long, env = "ROOMCAST_PRESENCE_GRACE_MS")]
    pub presence_grace_ms: Option<u64>,
    /// How long an edge that stopped refreshing its lease counts as alive, ms [default: 9000]
    #[arg(long, env = "ROOMCAST_PRESENCE_LEASE_TTL_MS")]
    pub presence_lease_ttl_ms: Option<u64>,
    /// Who receives user-status-change: namespace, rooms, room:NAME or none [default: none]
    #[arg(long, env = "ROOMCAST_PRESENCE_AUDIENCE")]
    pub presence_audience: Option<String>,
    /// Namespace user-status-change is emitted in [default: /]
    #[arg(long, env = "ROOMCAST_PRESENCE_NAMESPACE")]
    pub presence_namespace: Option<String>,
    /// Replicas of the presence KV bucket in a JetStream cluster [default: 1]
    #[arg(long, env = "ROOMCAST_PRESENCE_REPLICAS")]
    pub presence_replicas: Option<usize>,
    /// Rooms whose emits clients can recover after a reconnect: name patterns, `*` matches anything; none: recovery off
    #[arg(
        long = "recovery-room",
        env = "ROOMCAST_RECOVERY_ROOMS",
        value_delimiter = ','
    )]
    #[serde(rename = "recovery_rooms")]
    pub recovery_rooms: Vec<String>,
    /// How long a disconnected socket can be recovered, ms [default: 120000]
    #[arg(long, env = "ROOMCAST_RECOVERY_WINDOW_MS")]
    pub recovery_window_ms: Option<u64>,
    /// How long the recovery history keeps an emit, ms (at least the window) [default: the window]
    #[arg(long, env = "ROOMCAST_RECOVERY_HISTORY_MAX_AGE_MS")]
    pub recovery_history_max_age_ms: Option<u64>,
    /// Bytes the recovery history keeps at most, oldest dropped first [default: 268435456]
    #[arg(long, env = "ROOMCAST_RECOVERY_HISTORY_MAX_BYTES")]
    pub recovery_history_max_bytes: Option<u64>,
    /// Replicas of the recovery stream and sessions bucket in a JetStream cluster [default: 1]
    #[arg(long, env = "ROOMCAST_RECOVERY_REPLICAS")]
    pub recovery_replicas: Option<usize>,
    /// At-least-once emits: first wait for an ack before a resend, ms [default: 1000]
    #[arg(long, env = "ROOMCAST_DELIVERY_RESEND_MS")]
    pub delivery_resend_ms: Option<u64>,
    /// At-least-once emits: longest wait between resends (the wait doubles up to it), ms [default: 8000]
    #[arg(long, env = "ROOMCAST_DELIVERY_MAX_RESEND_MS")]
    pub delivery_max_resend_ms: Option<u64>,
    /// At-least-once emits: how long a control plane owns a recipient's queue without renewing, ms [default: 15000]
    #[arg(long, env = "ROOMCAST_DELIVERY_LEASE_TTL_MS")]
    pub delivery_lease_ttl_ms: Option<u64>,
    /// At-least-once emits: most messages waiting per user (or socket) and namespace [default: 1000]
    #[arg(long, env = "ROOMCAST_DELIVERY_INBOX_MAX")]
    pub delivery_inbox_max: Option<usize>,
    /// At-least-once emits: largest ttl_ms an emit may ask for, ms [default: 86400000]
    #[arg(long, env = "ROOMCAST_DELIVERY_MAX_TTL_MS")]
    pub delivery_max_ttl_ms: Option<u64>,
    /// Most sockets one user may have in the cluster; a new one evicts the oldest (0: no limit) [default: 0]
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<usize>,
    /// On SIGTERM, how long an edge keeps serving while not ready, before it closes connections, ms [default: 0]
    #[arg(long, env = "ROOMCAST_DRAIN_DELAY_MS")]
    pub drain_delay_ms: Option<u64>,
    /// Then, over how long it closes its connections, spread at random, ms [default: 0]
    #[arg(long, env = "ROOMCAST_DRAIN_WINDOW_MS")]
    pub drain_window_ms: Option<u64>,
    /// Most entries in each list of a selector (rooms, socket ids, user ids, exceptions) and rooms in a join or leave; more get INVALID_ARGUMENT [default: 10000]
    #[arg(long, env = "ROOMCAST_MAX_SELECTOR_SIZE")]
    pub max_selector_size: Option<usize>,
    /// How long a command sent to every edge (join, leave, fetch, disconnect) may take, ms [default: 5000]
    #[arg(long, env = "ROOMCAST_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// How often an edge tells control planes it is alive, ms [default: 1000]
    #[arg(long, env = "ROOMCAST_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// How long a control plane counts an edge as alive after its last heartbeat, ms [default: 3000]
    #[arg(long, env = "ROOMCAST_EDGE_TTL_MS")]
    pub edge_ttl_ms: Option<u64>,
    /// NATS server URL (nats://, tls://); repeat for every server of the NATS cluster [default: nats://127.0.0.1:4222]
    #[arg(long = "nats-url", env = "ROOMCAST_NATS_URLS", value_delimiter = ',')]
    #[serde(rename = "nats_urls")]
    pub nats_urls: Vec<String>,
    /// NATS token
    #[arg(long, env = "ROOMCAST_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// NATS user (with --nats-password)
    #[arg(long, env = "ROOMCAST_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password
    #[arg(long, env = "ROOMCAST_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// NATS nkey seed (SU...)
    #[arg(long, env = "ROOMCAST_NATS_NKEY_SEED", hide_env_values = true)]
    pub nats_nkey_seed: Option<String>,
    /// NATS credentials file (user JWT and nkey seed)
    #[arg(long, env = "ROOMCAST_NATS_CREDS_FILE")]
    pub nats_creds_file: Option<PathBuf>,
    /// Refuse NATS servers that do not speak TLS
    #[arg(long, env = "ROOMCAST_NATS_TLS_REQUIRED", num_args = 0..=1, default_missing_value = "true")]
    pub nats_tls_required: Option<bool>,
    /// PEM file of CA certificates that verify the NATS servers
    #[arg(long, env = "ROOMCAST_NATS_TLS_CA_FILE")]
    pub nats_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for NATS mutual TLS (with --nats-tls-key-file)
    #[arg(long, env = "ROOMCAST_NATS_TLS_CERT_FILE")]
    pub nats_tls_cert_file: Option<PathBuf>,
    /// PEM client key for NATS mutual TLS
    #[arg(long, env = "ROOMCAST_NATS_TLS_KEY_FILE")]
    pub nats_tls_key_file: Option<PathBuf>,
    /// OTLP/gRPC collector that receives traces, e.g. http://127.0.0.1:4317 [default: traces off]
    #[arg(long, env = "ROOMCAST_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Fraction of traces kept, 0 to 1 [default: 1]
    #[arg(long, env = "ROOMCAST_TRACE_SAMPLE_RATIO")]
    pub trace_sample_ratio: Option<f64>,
    /// Log filter, e.g. `info` or `roomcast_edge=debug` [default: info]
    #[arg(long, env = "ROOMCAST_LOG")]
    pub log: Option<String>,
    /// Log format: plain or json [default: plain]
    #[arg(long, env = "ROOMCAST_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

impl Settings {
    /// Reads a TOML config file (unknown keys are errors).
    pub fn from_file(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Fills what `self` leaves unset from `lower`.
    pub fn or(self, lower: Settings) -> Settings {
        macro_rules! pick {
            ($($f:ident),*; $($v:ident),*) => {
                Settings {
                    $($f: self.$f.or(lower.$f),)*
                    $($v: if self.$v.is_empty() { lower.$v } else { self.$v },)*
                }
            };
        }
        pick!(otlp_endpoint, trace_sample_ratio, drain_delay_ms, drain_window_ms, presence, presence_grace_ms, presence_lease_ttl_ms, presence_audience,
              presence_namespace, presence_replicas, recovery_window_ms, recovery_history_max_age_ms,
              recovery_history_max_bytes, recovery_replicas, max_connections_per_user, delivery_resend_ms, delivery_max_resend_ms,
              delivery_lease_ttl_ms, delivery_inbox_max, delivery_max_ttl_ms, listen, grpc_listen, grpc_tls_cert_file, grpc_tls_key_file, grpc_tls_client_ca_file,
              tls_cert_file, tls_key_file, ws_echo_path, admin_ui_namespace, admin_ui_username, admin_ui_password_hash, admin_ui_static_dir,
              admin_listen, connect_hook_url, connect_hook_timeout_ms, request_timeout_ms, max_selector_size, heartbeat_interval_ms,
              edge_ttl_ms, nats_token, nats_user, nats_password, nats_nkey_seed, nats_creds_file,
              nats_tls_required, nats_tls_ca_file, nats_tls_cert_file, nats_tls_key_file, path, ping_interval_ms, ping_timeout_ms, connect_timeout_ms,
              upgrade_timeout_ms, max_payload, max_attachments, outbound_queue_bytes,
              max_request_headers, max_request_head_bytes, handshake_timeout_ms, request_head_timeout_ms,
              request_body_timeout_ms, max_pending_handshakes, max_connections_per_ip,
              handshakes_per_ip_per_sec, max_rooms_per_socket, ws_pings_per_sec, packets_per_sec,
              disconnect_on_token_expiry,
              allow_anonymous, jwt_secret, jwt_public_key_file, jwt_audience, jwt_issuer,
              jwt_rooms_claim, jwt_leeway_secs, cluster, node_id, log, log_format;
              namespaces, cors_origins, api_keys, nats_urls, recovery_rooms)
    }
}

/// Which process the settings are for; each checks what it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standalone,
    Edge,
    Control,
}

impl Role {
    fn has_edge(self) -> bool {
        matches!(self, Role::Standalone | Role::Edge)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Edge => "edge",
            Role::Control => "control",
        }
    }
}

/// Settings of the client port and of client authentication: an edge's (and
/// standalone's), never a control plane's.
pub(crate) const CLIENT_SETTINGS: &[&str] = &[
    "listen",
    "tls_cert_file",
    "tls_key_file",
    "path",
    "ws_echo_path",
    "admin_ui_namespace",
    "admin_ui_username",
    "admin_ui_password_hash",
    "admin_ui_static_dir",
    "ping_interval_ms",
    "ping_timeout_ms",
    "connect_timeout_ms",
    "upgrade_timeout_ms",
    "outbound_queue_bytes",
    "max_request_headers",
    "max_request_head_bytes",
    "max_connections_per_ip",
    "handshakes_per_ip_per_sec",
    "ws_pings_per_sec",
    "packets_per_sec",
    "cors_origins",
    "allow_anonymous",
    "jwt_secret",
    "jwt_public_key_file",
    "jwt_audience",
    "jwt_issuer",
    "jwt_rooms_claim",
    "jwt_leeway_secs",
    "disconnect_on_token_expiry",
    "connect_hook_url",
    "connect_hook_timeout_ms",
    "drain_delay_ms",
    "drain_window_ms",
    "handshake_timeout_ms",
    "request_head_timeout_ms",
    "request_body_timeout_ms",
    "max_pending_handshakes",
];

/// Settings of the gRPC API: a control plane's (and standalone's), never an
/// edge's.
pub(crate) const API_SETTINGS: &[&str] = &[
    "grpc_listen",
    "grpc_tls_cert_file",
    "grpc_tls_key_file",
    "grpc_tls_client_ca_file",
    "api_keys",
    "request_timeout_ms",
    "max_selector_size",
    "edge_ttl_ms",
    "delivery_resend_ms",
    "delivery_max_resend_ms",
    "delivery_lease_ttl_ms",
    "delivery_inbox_max",
    "delivery_max_ttl_ms",
];

/// Settings of a NATS cluster: never standalone's, which has no NATS.
pub(crate) const CLUSTER_SETTINGS: &[&str] = &[
    "nats_urls",
    "nats_token",
    "nats_user",
    "nats_password",
    "nats_nkey_seed",
    "nats_creds_file",
    "nats_tls_required",
    "nats_tls_ca_file",
    "nats_tls_cert_file",
    "nats_tls_key_file",
    "presence_replicas",
    "recovery_replicas",
    "edge_ttl_ms",
    "heartbeat_interval_ms",
];

impl Role {
    /// The settings this role has no use for, and why.
    fn foreign_settings(self) -> (&'static [&'static str], &'static str) {
        match self {
            Role::Control => (
                CLIENT_SETTINGS,
                "a control plane serves no client port (give it to `roomcast edge`)",
            ),
            Role::Edge => (
                API_SETTINGS,
                "an edge serves no gRPC API (give it to `roomcast control`)",
            ),
            Role::Standalone => (
                CLUSTER_SETTINGS,
                "standalone runs without NATS (use `roomcast edge` and `roomcast control` for a cluster)",
            ),
        }
    }
}

/// Refuses the command-line flags of settings `role` does not use: a flag
/// given by hand that would be ignored is a mistake to point out. The same
/// settings from the environment or a config file are left alone, so that one
/// file or environment can serve every role of a deployment.
pub fn refuse_foreign_flags(role: Role, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let (ids, why) = role.foreign_settings();
    let given: Vec<String> = ids
        .iter()
        .filter(|id| {
            matches!(
                matches
                    .try_get_raw(id)
                    .ok()
                    .flatten()
                    .map(|_| matches.value_source(id)),
                Some(Some(clap::parser::ValueSource::CommandLine))
            )
        })
        .map(|id| flag_name(id))
        .collect();
    match given.as_slice() {
        [] => Ok(()),
        [one] => bail!("{one} does not apply to `roomcast {}`: {why}", role.name()),
        many => bail!(
            "{} do not apply to `roomcast {}`: {why}",
            many.join(", "),
            role.name()
        ),
    }
}

/// The flag of a setting, as a user writes it.
fn flag_name(id: &str) -> String {
    let long = match id {
        "cors_origins" => "cors-origin".to_owned(),
        "api_keys" => "api-key".to_owned(),
        "nats_urls" => "nats-url".to_owned(),
        other => other.replace('_', "-"),
    };
    format!("--{long}")
}

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

fn read_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
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
    pub delivery: Option<roomcast_control::DeliveryConfig>,
    pub drain: Drain,
    /// Trace export; `None` when off.
    pub traces: Option<crate::telemetry::TraceConfig>,
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

fn ms_at_least(v: u64, min: u64, name: &str) -> anyhow::Result<Duration> {
    if v < min {
        bail!("{name} must be at least {min}");
    }
    Ok(Duration::from_millis(v))
}

fn ms(v: Option<u64>, default: u64, name: &str) -> anyhow::Result<Duration> {
    let v = v.unwrap_or(default);
    if v == 0 {
        bail!("{name} must be greater than 0");
    }
    Ok(Duration::from_millis(v))
}

impl Settings {
    fn recovery(&self) -> anyhow::Result<Option<RecoveryConfig>> {
        if self.recovery_rooms.is_empty() {
            return Ok(None);
        }
        for pattern in &self.recovery_rooms {
            if pattern.is_empty() || pattern.len() > roomcast_bus::names::MAX_NAME_LEN {
                bail!("recovery-room {pattern:?} must be 1 to 256 bytes");
            }
        }
        let defaults = RecoveryConfig::default();
        let window = match self.recovery_window_ms {
            Some(ms) => ms_at_least(ms, 100, "recovery-window-ms")?,
            None => defaults.window,
        };
        let history_max_age = match self.recovery_history_max_age_ms {
            Some(ms) => ms_at_least(ms, 100, "recovery-history-max-age-ms")?,
            None => window,
        };
        if history_max_age < window {
            bail!("recovery-history-max-age-ms must be at least recovery-window-ms");
        }
        let history_max_bytes = self
            .recovery_history_max_bytes
            .unwrap_or(defaults.history_max_bytes);
        if history_max_bytes < 1024 {
            bail!("recovery-history-max-bytes must be at least 1024");
        }
        Ok(Some(RecoveryConfig {
            rooms: self.recovery_rooms.clone(),
            window,
            history_max_age,
            history_max_bytes,
            replicas: self.recovery_replicas.unwrap_or(1).max(1),
        }))
    }

    fn nats(&self) -> anyhow::Result<NatsOptions> {
        let mut nats = NatsOptions::default();
        if !self.nats_urls.is_empty() {
            nats.urls = self.nats_urls.clone();
        }
        if self.nats_user.is_some() != self.nats_password.is_some() {
            bail!("nats-user and nats-password go together");
        }
        if self.nats_tls_cert_file.is_some() != self.nats_tls_key_file.is_some() {
            bail!("nats-tls-cert-file and nats-tls-key-file go together");
        }
        for file in [
            &self.nats_creds_file,
            &self.nats_tls_ca_file,
            &self.nats_tls_cert_file,
            &self.nats_tls_key_file,
        ]
        .into_iter()
        .flatten()
        {
            if !file.is_file() {
                bail!("file {} does not exist", file.display());
            }
        }
        nats.token = self.nats_token.clone();
        nats.user = self.nats_user.clone();
        nats.password = self.nats_password.clone();
        nats.nkey_seed = self.nats_nkey_seed.clone();
        nats.creds_file = self.nats_creds_file.clone();
        nats.require_tls = self.nats_tls_required.unwrap_or(false);
        nats.tls_root_ca = self.nats_tls_ca_file.clone();
        nats.tls_client_cert = self.nats_tls_cert_file.clone();
        nats.tls_client_key = self.nats_tls_key_file.clone();
        Ok(nats)
    }

    fn grpc_tls(&self) -> anyhow::Result<Option<GrpcTls>> {
        match (&self.grpc_tls_cert_file, &self.grpc_tls_key_file) {
            (None, None) => {
                if self.grpc_tls_client_ca_file.is_some() {
                    bail!("grpc-tls-client-ca-file needs grpc-tls-cert-file and grpc-tls-key-file");
                }
                Ok(None)
            }
            (Some(cert), Some(key)) => Ok(Some(GrpcTls {
                cert_pem: read_file(cert, "grpc tls certificate")?,
                key_pem: read_file(key, "grpc tls key")?,
                client_ca_pem: self
                    .grpc_tls_client_ca_file
                    .as_deref()
                    .map(|p| read_file(p, "grpc tls client ca"))
                    .transpose()?,
            })),
            _ => bail!("grpc-tls-cert-file and grpc-tls-key-file go together"),
        }
    }

    fn client_tls(&self) -> anyhow::Result<Option<crate::tls::ClientTls>> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => crate::tls::ClientTls::from_pem(
                &read_file(cert, "tls certificate")?,
                &read_file(key, "tls key")?,
            )
            .with_context(|| {
                format!(
                    "invalid tls certificate {} or key {}",
                    cert.display(),
                    key.display()
                )
            })
            .map(Some),
            _ => bail!("tls-cert-file and tls-key-file go together"),
        }
    }

    /// The Admin UI's settings: all three or none.
    fn admin_ui(
        &self,
        namespaces: &[String],
    ) -> anyhow::Result<Option<roomcast_edge::admin_ui::AdminUiConfig>> {
        let (ns, user, hash) = match (
            &self.admin_ui_namespace,
            &self.admin_ui_username,
            &self.admin_ui_password_hash,
        ) {
            (None, None, None) => return Ok(None),
            (Some(ns), Some(user), Some(hash)) => (ns, user, hash),
            _ => bail!(
                "admin-ui-namespace, admin-ui-username and admin-ui-password-hash go together"
            ),
        };
        if !valid_namespace(ns) || namespaces.contains(ns) {
            bail!("admin-ui-namespace {ns:?} must start with '/' and not be a client namespace");
        }
        if user.is_empty() {
            bail!("admin-ui-username must not be empty");
        }
        let config = roomcast_edge::admin_ui::AdminUiConfig {
            namespace: ns.clone(),
            username: user.clone(),
            password_hash: hash.clone(),
        };
        if config.validate().is_err() {
            bail!("admin-ui-password-hash must be a bcrypt hash");
        }
        Ok(Some(config))
    }

    pub fn resolve(self, role: Role) -> anyhow::Result<Resolved> {
        let defaults = EdgeConfig::default();
        let path = self.path.clone().unwrap_or(defaults.path.clone());
        if !path.starts_with('/') || !path.ends_with('/') {
            bail!("path {path:?} must start and end with '/'");
        }
        let namespaces = if self.namespaces.is_empty() {
            defaults.namespaces.clone()
        } else {
            self.namespaces.clone()
        };
        for ns in &namespaces {
            if !valid_namespace(ns) {
                bail!("namespace {ns:?} must start with '/' and be at most 256 bytes");
            }
        }
        let max_payload = self.max_payload.unwrap_or(defaults.max_payload);
        if max_payload < 64 {
            bail!("max-payload must be at least 64 bytes");
        }
        let cluster = self.cluster.clone().unwrap_or(defaults.cluster.clone());
        if cluster.is_empty()
            || !cluster
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bail!("cluster {cluster:?} must be letters, digits, '_' and '-', and not empty");
        }
        let node_id = self.node_id.clone().unwrap_or(defaults.node_id.clone());
        if node_id.is_empty() {
            bail!("node-id must not be empty");
        }
        let ws_echo_path = match &self.ws_echo_path {
            None => None,
            Some(echo) => {
                let engine = path.trim_end_matches('/');
                if !echo.starts_with('/')
                    || echo.contains(['{', '}', '*', ':'])
                    || echo.trim_end_matches('/') == engine
                {
                    bail!(
                        "ws-echo-path {echo:?} must start with '/', have no '{{', '}}', '*' \
                         or ':', and differ from path"
                    );
                }
                Some(echo.clone())
            }
        };
        let admin_ui = self.admin_ui(&namespaces)?;
        let edge = EdgeConfig {
            path,
            namespaces,
            ping_interval: ms(self.ping_interval_ms, 25_000, "ping-interval-ms")?,
            ping_timeout: ms(self.ping_timeout_ms, 20_000, "ping-timeout-ms")?,
            connect_timeout: ms(self.connect_timeout_ms, 45_000, "connect-timeout-ms")?,
            upgrade_timeout: ms(self.upgrade_timeout_ms, 10_000, "upgrade-timeout-ms")?,
            max_payload,
            max_attachments: self.max_attachments.unwrap_or(defaults.max_attachments),
            outbound_queue_bytes: self
                .outbound_queue_bytes
                .unwrap_or(defaults.outbound_queue_bytes),
            max_request_headers: self
                .max_request_headers
                .unwrap_or(defaults.max_request_headers),
            max_request_head_bytes: self
                .max_request_head_bytes
                .unwrap_or(defaults.max_request_head_bytes),
            handshake_timeout: ms(self.handshake_timeout_ms, 10_000, "handshake-timeout-ms")?,
            request_head_timeout: ms(
                self.request_head_timeout_ms,
                10_000,
                "request-head-timeout-ms",
            )?,
            request_body_timeout: ms(
                self.request_body_timeout_ms,
                10_000,
                "request-body-timeout-ms",
            )?,
            max_pending_handshakes: self
                .max_pending_handshakes
                .unwrap_or(defaults.max_pending_handshakes),
            max_connections_per_ip: self
                .max_connections_per_ip
                .unwrap_or(defaults.max_connections_per_ip),
            handshakes_per_ip_per_sec: self
                .handshakes_per_ip_per_sec
                .unwrap_or(defaults.handshakes_per_ip_per_sec),
            max_rooms_per_socket: self
                .max_rooms_per_socket
                .unwrap_or(defaults.max_rooms_per_socket),
            ws_pings_per_sec: self.ws_pings_per_sec.unwrap_or(defaults.ws_pings_per_sec),
            packets_per_sec: self.packets_per_sec.unwrap_or(defaults.packets_per_sec),
            disconnect_on_token_expiry: self.disconnect_on_token_expiry.unwrap_or(false),
            cors_origins: self.cors_origins.clone(),
            cluster: cluster.clone(),
            node_id,
            request_timeout: ms(self.request_timeout_ms, 5_000, "request-timeout-ms")?,
            heartbeat_interval: ms(self.heartbeat_interval_ms, 1_000, "heartbeat-interval-ms")?,
            ws_echo_path,
            admin_ui,
            connect_hook: match &self.connect_hook_url {
                None => None,
                Some(url) => {
                    if !url.starts_with("http://") {
                        bail!("connect-hook-url {url:?} must be an http:// address");
                    }
                    Some(HookConfig {
                        url: url.clone(),
                        timeout: ms(
                            self.connect_hook_timeout_ms,
                            2_000,
                            "connect-hook-timeout-ms",
                        )?,
                    })
                }
            },
        };
        let edge_ttl = ms(self.edge_ttl_ms, 3_000, "edge-ttl-ms")?;
        if role == Role::Control && edge_ttl < 2 * edge.heartbeat_interval {
            bail!("edge-ttl-ms must be at least twice heartbeat-interval-ms");
        }
        if edge.max_request_headers < 8 {
            bail!("max-request-headers must be at least 8");
        }
        if edge.max_request_head_bytes < 1024 {
            bail!("max-request-head-bytes must be at least 1024");
        }
        if edge.max_pending_handshakes == 0 {
            bail!("max-pending-handshakes must be greater than 0");
        }
        if edge.outbound_queue_bytes < max_payload {
            bail!("outbound-queue-bytes must be at least max-payload ({max_payload})");
        }
        let control = ControlConfig {
            cluster,
            max_payload,
            max_attachments: edge.max_attachments,
            request_timeout: edge.request_timeout,
            max_selector_size: match self.max_selector_size {
                None => ControlConfig::default().max_selector_size,
                Some(0) => bail!("max-selector-size must be at least 1"),
                Some(n) => n,
            },
            ..ControlConfig::default()
        };
        let rs256 = match &self.jwt_public_key_file {
            Some(p) => Some(
                std::fs::read(p)
                    .with_context(|| format!("cannot read jwt public key file {}", p.display()))?,
            ),
            None => None,
        };
        let jwt = (self.jwt_secret.is_some() || rs256.is_some()).then(|| JwtConfig {
            hs256_secret: self.jwt_secret.clone().map(String::into_bytes),
            rs256_public_pem: rs256,
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
            rooms_claim: self
                .jwt_rooms_claim
                .clone()
                .unwrap_or_else(|| "rooms".into()),
            leeway_secs: self.jwt_leeway_secs.unwrap_or(30),
        });
        if matches!(&self.jwt_secret, Some(s) if s.len() < 16) {
            bail!("jwt-secret must be at least 16 bytes");
        }
        let allow_anonymous = self.allow_anonymous.unwrap_or(false);
        let auth = if role.has_edge() {
            if edge.connect_hook.is_some() && (jwt.is_some() || allow_anonymous) {
                bail!(
                    "with --connect-hook-url the hook decides every connect: drop the jwt \
                     settings and --allow-anonymous"
                );
            }
            if jwt.is_none() && !allow_anonymous && edge.connect_hook.is_none() {
                bail!(
                    "clients could not authenticate: give --jwt-secret or --jwt-public-key-file, \
                     or --connect-hook-url, or pass --allow-anonymous"
                );
            }
            Some(
                Authenticator::new(jwt.as_ref(), allow_anonymous)
                    .context("invalid jwt configuration")?,
            )
        } else {
            None
        };
        let presence = if self.presence.unwrap_or(true) {
            let namespace = self
                .presence_namespace
                .clone()
                .unwrap_or_else(|| "/".into());
            if !valid_namespace(&namespace) {
                bail!("presence-namespace {namespace:?} must start with '/'");
            }
            let audience = match self.presence_audience.as_deref().unwrap_or("none") {
                "namespace" => Audience::Namespace,
                "rooms" => Audience::Rooms,
                "none" => Audience::None,
                other => match other.strip_prefix("room:") {
                    Some(room) if roomcast_bus::names::valid_room(room) => {
                        Audience::Room(room.to_owned())
                    }
                    _ => bail!(
                        "presence-audience {other:?} must be namespace, rooms, room:NAME or none"
                    ),
                },
            };
            let lease_ttl = ms(self.presence_lease_ttl_ms, 9_000, "presence-lease-ttl-ms")?;
            if lease_ttl < Duration::from_millis(300) {
                bail!("presence-lease-ttl-ms must be at least 300");
            }
            Some(PresenceConfig {
                cluster: control.cluster.clone(),
                grace: Duration::from_millis(self.presence_grace_ms.unwrap_or(5_000)),
                lease_ttl,
                audience,
                namespace,
                max_sockets_per_user: self.max_connections_per_user.unwrap_or(0),
            })
        } else {
            None
        };
        let recovery = self.recovery()?;
        let delivery = if presence.is_some() {
            let resend_interval = ms(self.delivery_resend_ms, 1_000, "delivery-resend-ms")?;
            let max_resend_interval =
                ms(self.delivery_max_resend_ms, 8_000, "delivery-max-resend-ms")?;
            let lease_ttl = ms(self.delivery_lease_ttl_ms, 15_000, "delivery-lease-ttl-ms")?;
            if resend_interval < Duration::from_millis(10) {
                bail!("delivery-resend-ms must be at least 10");
            }
            if max_resend_interval < resend_interval {
                bail!("delivery-max-resend-ms must be at least delivery-resend-ms");
            }
            if lease_ttl < Duration::from_millis(300) {
                bail!("delivery-lease-ttl-ms must be at least 300");
            }
            let inbox_max = self.delivery_inbox_max.unwrap_or(1000);
            if inbox_max == 0 {
                bail!("delivery-inbox-max must be at least 1");
            }
            let max_ttl = ms(self.delivery_max_ttl_ms, 86_400_000, "delivery-max-ttl-ms")?;
            if max_ttl.is_zero() || max_ttl.as_millis() > u128::from(u32::MAX) {
                bail!("delivery-max-ttl-ms must be 1 to {}", u32::MAX);
            }
            Some(roomcast_control::DeliveryConfig {
                resend_interval,
                max_resend_interval,
                lease_ttl,
                inbox_max,
                max_ttl,
                ..roomcast_control::DeliveryConfig::default()
            })
        } else {
            None
        };
        let mut nats = self.nats()?;
        nats.name = Some(format!("roomcast-{}-{}", role.name(), edge.node_id));
        Ok(Resolved {
            listen: self.listen.unwrap_or(([0, 0, 0, 0], 3000).into()),
            grpc_listen: self.grpc_listen.unwrap_or(([0, 0, 0, 0], 50051).into()),
            grpc_tls: if role == Role::Edge {
                None
            } else {
                self.grpc_tls()?
            },
            client_tls: if role.has_edge() {
                self.client_tls()?
            } else {
                None
            },
            admin_listen: self.admin_listen.unwrap_or(([0, 0, 0, 0], 9464).into()),
            admin_ui_static_dir: match &self.admin_ui_static_dir {
                Some(dir) if role.has_edge() => {
                    if !dir.join("index.html").is_file() {
                        bail!("admin-ui-static-dir {} has no index.html", dir.display());
                    }
                    Some(dir.clone())
                }
                _ => None,
            },
            edge,
            control,
            auth,
            api_keys: self.api_keys,
            nats,
            edge_ttl,
            presence,
            presence_replicas: self.presence_replicas.unwrap_or(1).max(1),
            recovery,
            delivery,
            traces: match &self.otlp_endpoint {
                None => None,
                Some(endpoint) => {
                    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                        bail!("otlp-endpoint {endpoint:?} must be an http:// or https:// url");
                    }
                    let ratio = self.trace_sample_ratio.unwrap_or(1.0);
                    if !(0.0..=1.0).contains(&ratio) {
                        bail!("trace-sample-ratio must be between 0 and 1");
                    }
                    Some(crate::telemetry::TraceConfig {
                        endpoint: endpoint.clone(),
                        ratio,
                    })
                }
            },
            drain: Drain {
                delay: Duration::from_millis(self.drain_delay_ms.unwrap_or(0)),
                window: Duration::from_millis(self.drain_window_ms.unwrap_or(0)),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon() -> Settings {
        Settings {
            allow_anonymous: Some(true),
            ..Settings::default()
        }
    }

    #[test]
    fn delivery_settings_are_checked_and_follow_presence() {
        let d = anon()
            .resolve(Role::Control)
            .expect("valid")
            .delivery
            .expect("on with presence");
        assert_eq!(d.resend_interval, Duration::from_secs(1));
        assert_eq!(d.inbox_max, 1000);
        let off = Settings {
            presence: Some(false),
            ..anon()
        };
        assert!(off
            .resolve(Role::Standalone)
            .expect("valid")
            .delivery
            .is_none());
        for (bad, msg) in [
            (
                Settings {
                    delivery_resend_ms: Some(2000),
                    delivery_max_resend_ms: Some(1000),
                    ..anon()
                },
                "delivery-max-resend-ms",
            ),
            (
                Settings {
                    delivery_inbox_max: Some(0),
                    ..anon()
                },
                "delivery-inbox-max",
            ),
            (
                Settings {
                    delivery_max_ttl_ms: Some(u64::from(u32::MAX) + 1),
                    ..anon()
                },
                "delivery-max-ttl-ms",
            ),
        ] {
            let err = bad.resolve(Role::Standalone).err().expect("refused");
            assert!(err.to_string().contains(msg), "{err}");
        }
    }

    #[test]
    fn defaults_resolve() {
        let r = anon().resolve(Role::Standalone).expect("valid");
        assert_eq!(r.listen.port(), 3000);
        assert_eq!(r.grpc_listen.port(), 50051);
        assert_eq!(r.edge.path, "/socket.io/");
        assert_eq!(r.edge.namespaces, vec!["/"]);
        assert_eq!(r.edge.ping_interval, Duration::from_secs(25));
    }

    #[test]
    fn limits_have_safe_defaults_and_come_from_the_file() {
        let r = anon().resolve(Role::Standalone).expect("valid");
        assert_eq!(r.edge.max_request_headers, 64);
        assert_eq!(r.edge.max_request_head_bytes, 32 * 1024);
        assert_eq!(
            r.edge.max_connections_per_ip, 0,
            "off: proxies share an address"
        );
        assert_eq!(r.edge.handshakes_per_ip_per_sec, 0);
        assert_eq!(r.edge.max_rooms_per_socket, 1000);
        assert_eq!(r.edge.ws_pings_per_sec, 20);
        assert_eq!(r.edge.packets_per_sec, 1000);
        let file: Settings = toml::from_str(
            "allow_anonymous = true\nmax_connections_per_ip = 50\nhandshakes_per_ip_per_sec = 5\n\
             max_rooms_per_socket = 10\nws_pings_per_sec = 0\npackets_per_sec = 100\n\
             max_request_headers = 32\nmax_request_head_bytes = 8192\n",
        )
        .expect("valid toml");
        let r = file.resolve(Role::Edge).expect("valid");
        assert_eq!(
            (
                r.edge.max_connections_per_ip,
                r.edge.handshakes_per_ip_per_sec,
                r.edge.max_rooms_per_socket,
                r.edge.ws_pings_per_sec,
                r.edge.packets_per_sec,
                r.edge.max_request_headers,
                r.edge.max_request_head_bytes
            ),
            (50, 5, 10, 0, 100, 32, 8192)
        );
        let tiny = Settings {
            max_request_head_bytes: Some(100),
            ..anon()
        };
        assert!(tiny.resolve(Role::Standalone).is_err());
    }

    #[test]
    fn client_port_deadlines_have_defaults_and_come_from_the_file() {
        let r = anon().resolve(Role::Standalone).expect("valid");
        assert_eq!(
            (
                r.edge.handshake_timeout,
                r.edge.request_head_timeout,
                r.edge.request_body_timeout,
                r.edge.max_pending_handshakes
            ),
            (
                Duration::from_secs(10),
                Duration::from_secs(10),
                Duration::from_secs(10),
                1024
            )
        );
        let file: Settings = toml::from_str(
            "allow_anonymous = true\nhandshake_timeout_ms = 300\nrequest_head_timeout_ms = 400\n\
             request_body_timeout_ms = 500\nmax_pending_handshakes = 7\n",
        )
        .expect("valid toml");
        let r = file.resolve(Role::Edge).expect("valid");
        assert_eq!(
            (
                r.edge.handshake_timeout,
                r.edge.request_head_timeout,
                r.edge.request_body_timeout,
                r.edge.max_pending_handshakes
            ),
            (
                Duration::from_millis(300),
                Duration::from_millis(400),
                Duration::from_millis(500),
                7
            )
        );
        for (bad, msg) in [
            (
                Settings {
                    handshake_timeout_ms: Some(0),
                    ..anon()
                },
                "handshake-timeout-ms",
            ),
            (
                Settings {
                    request_head_timeout_ms: Some(0),
                    ..anon()
                },
                "request-head-timeout-ms",
            ),
            (
                Settings {
                    request_body_timeout_ms: Some(0),
                    ..anon()
                },
                "request-body-timeout-ms",
            ),
            (
                Settings {
                    max_pending_handshakes: Some(0),
                    ..anon()
                },
                "max-pending-handshakes",
            ),
        ] {
            let err = bad.resolve(Role::Standalone).err().expect("refused");
            assert!(err.to_string().contains(msg), "{err}");
        }
    }

    #[test]
    fn flags_override_file() {
        let file: Settings = toml::from_str(
            "listen = \"127.0.0.1:4000\"\nnamespaces = [\"/\", \"/admin\"]\nping_interval_ms = 100\nallow_anonymous = true\n",
        )
        .expect("valid toml");
        let flags = Settings {
            ping_interval_ms: Some(200),
            ..Settings::default()
        };
        let r = flags.or(file).resolve(Role::Standalone).expect("valid");
        assert_eq!(r.listen.port(), 4000);
        assert_eq!(r.edge.namespaces, vec!["/", "/admin"]);
        assert_eq!(r.edge.ping_interval, Duration::from_millis(200));
    }

    #[test]
    fn example_file_in_deploy_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/standalone.toml");
        let r = Settings::from_file(&path)
            .expect("example parses")
            .resolve(Role::Standalone)
            .expect("example is valid");
        assert_eq!(r.edge.namespaces, vec!["/", "/admin"]);
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(
            toml::from_str::<Settings>("bogus = 1").is_err(),
            "unknown keys are errors"
        );
        let no_auth = Settings::default()
            .resolve(Role::Standalone)
            .err()
            .expect("refused");
        assert!(
            no_auth.to_string().contains("--allow-anonymous"),
            "{no_auth}"
        );
        let bad_ns = Settings {
            namespaces: vec!["admin".into()],
            ..anon()
        };
        assert!(bad_ns.resolve(Role::Standalone).is_err());
        let zero = Settings {
            ping_interval_ms: Some(0),
            ..anon()
        };
        assert!(zero.resolve(Role::Standalone).is_err());
        let short = Settings {
            jwt_secret: Some("short".into()),
            ..Settings::default()
        };
        assert!(short.resolve(Role::Standalone).is_err());
        let missing_key = Settings {
            jwt_public_key_file: Some("/nonexistent/key.pem".into()),
            ..Settings::default()
        };
        assert!(missing_key.resolve(Role::Standalone).is_err());
    }

    #[test]
    fn admin_ui_needs_all_three_settings_and_a_bcrypt_hash() {
        // bcrypt of "secret" at cost 4.
        let hash = "$2a$04$FVIe9pxBnwXVIWcgM..4G.ShCL0DqTNEz/rU46YY83xM/4UJvU.zC";
        let admin = |ns: Option<&str>, user: Option<&str>, h: Option<&str>| {
            Settings {
                admin_ui_namespace: ns.map(Into::into),
                admin_ui_username: user.map(Into::into),
                admin_ui_password_hash: h.map(Into::into),
                ..anon()
            }
            .resolve(Role::Standalone)
        };
        assert!(admin(None, None, None)
            .expect("off")
            .edge
            .admin_ui
            .is_none());
        let on = admin(Some("/admin"), Some("ops"), Some(hash)).expect("valid");
        let config = on.edge.admin_ui.clone().expect("on");
        assert_eq!(config.namespace, "/admin");
        assert!(on.edge.has_namespace("/admin"));
        assert!(!format!("{config:?}").contains(hash), "debug redacts");
        assert!(admin(Some("/admin"), Some("ops"), None).is_err());
        assert!(admin(Some("/admin"), None, Some(hash)).is_err());
        assert!(admin(Some("/admin"), Some("ops"), Some("plain")).is_err());
        assert!(admin(Some("admin"), Some("ops"), Some(hash)).is_err());
        assert!(
            admin(Some("/"), Some("ops"), Some(hash)).is_err(),
            "a client namespace"
        );
        assert!(admin(Some("/admin"), Some(""), Some(hash)).is_err());

        let dir = std::env::temp_dir().join(format!("roomcast-admin-ui-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let with_dir = |role| {
            Settings {
                admin_ui_static_dir: Some(dir.clone()),
                ..anon()
            }
            .resolve(role)
        };
        assert!(with_dir(Role::Standalone).is_err(), "no index.html");
        std::fs::write(dir.join("index.html"), "<html></html>").expect("write");
        let ok = with_dir(Role::Standalone).expect("valid");
        assert_eq!(ok.admin_ui_static_dir.as_deref(), Some(dir.as_path()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn client_tls_and_echo_path_are_checked() {
        let half = Settings {
            tls_cert_file: Some("/nonexistent/cert.pem".into()),
            ..anon()
        };
        let err = half.resolve(Role::Standalone).err().expect("refused");
        assert!(err.to_string().contains("go together"), "{err}");
        let missing = Settings {
            tls_cert_file: Some("/nonexistent/cert.pem".into()),
            tls_key_file: Some("/nonexistent/key.pem".into()),
            ..anon()
        };
        let err = missing.resolve(Role::Standalone).err().expect("refused");
        assert!(format!("{err:#}").contains("cert.pem"), "{err:#}");
        assert!(anon()
            .resolve(Role::Standalone)
            .expect("valid")
            .client_tls
            .is_none());

        let echo = |p: &str| {
            Settings {
                ws_echo_path: Some(p.into()),
                ..anon()
            }
            .resolve(Role::Standalone)
        };
        assert_eq!(
            echo("/echo").expect("valid").edge.ws_echo_path.as_deref(),
            Some("/echo")
        );
        for bad in ["echo", "/socket.io/", "/socket.io", "/{x}", "/*rest"] {
            assert!(echo(bad).is_err(), "{bad}");
        }
        assert!(anon()
            .resolve(Role::Standalone)
            .expect("valid")
            .edge
            .ws_echo_path
            .is_none());
    }

    #[test]
    fn roles_check_what_they_use() {
        let control = Settings::default()
            .resolve(Role::Control)
            .expect("a control plane has no client auth");
        assert!(control.auth.is_none());
        assert!(Settings::default().resolve(Role::Edge).is_err());
        let edge = Settings {
            nats_urls: vec!["nats://10.0.0.1:4222".into(), "nats://10.0.0.2:4222".into()],
            node_id: Some("edge-7".into()),
            ..anon()
        }
        .resolve(Role::Edge)
        .expect("valid");
        assert_eq!(edge.nats.urls.len(), 2);
        assert_eq!(edge.nats.name.as_deref(), Some("roomcast-edge-edge-7"));
        assert_eq!(edge.admin_listen.port(), 9464);
    }

    #[test]
    fn a_connect_hook_replaces_jwt_and_anonymous_access() {
        let hook = Settings {
            connect_hook_url: Some("http://127.0.0.1:7000".into()),
            ..Settings::default()
        };
        let r = hook
            .clone()
            .resolve(Role::Edge)
            .expect("the hook authenticates");
        let cfg = r.edge.connect_hook.expect("hook configured");
        assert_eq!(cfg.timeout, Duration::from_secs(2));
        let both = Settings {
            allow_anonymous: Some(true),
            ..hook.clone()
        };
        assert!(both.resolve(Role::Edge).is_err());
        let bad = Settings {
            connect_hook_url: Some("127.0.0.1:7000".into()),
            ..Settings::default()
        };
        assert!(bad.resolve(Role::Edge).is_err());
    }

    #[test]
    fn nats_settings_are_checked() {
        let half = Settings {
            nats_user: Some("u".into()),
            ..Settings::default()
        };
        let err = half.resolve(Role::Control).err().expect("refused");
        assert!(err.to_string().contains("nats-password"), "{err}");
        let missing = Settings {
            nats_creds_file: Some("/nonexistent/user.creds".into()),
            ..Settings::default()
        };
        let err = missing.resolve(Role::Control).err().expect("refused");
        assert!(err.to_string().contains("user.creds"), "{err}");
        let ttl = Settings {
            heartbeat_interval_ms: Some(1000),
            edge_ttl_ms: Some(1500),
            ..Settings::default()
        };
        assert!(ttl.resolve(Role::Control).is_err());
        let secret = Settings {
            nats_password: Some("hunter2".into()),
            nats_user: Some("u".into()),
            ..Settings::default()
        };
        let r = secret.resolve(Role::Control).expect("valid");
        assert!(
            !format!("{:?}", r.nats).contains("hunter2"),
            "debug redacts"
        );
    }
}
