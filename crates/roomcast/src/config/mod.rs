//! Settings: flags over environment (`ROOMCAST_*`) over a TOML file over
//! defaults, validated before any port is bound.
//!
//! Layout: [`Settings`] (this file) is what a user can give, every field
//! optional, with the layering of flags, environment and file; `defaults`
//! holds the default of every setting in one place; resolution checks the
//! settings area by area (`client`: the client port, `auth`: client
//! authentication, `api`: the gRPC API and at-least-once delivery, `cluster`:
//! name, node id, NATS and heartbeats, `presence`: presence and recovery,
//! `observability`: logs and traces) into a [`Resolved`]; `roles` says which
//! settings each process uses and refuses the flags of the others.

mod api;
mod auth;
mod client;
mod cluster;
mod defaults;
mod observability;
mod presence;
mod resolved;
mod roles;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;

pub(crate) use defaults::Defaults;
pub use resolved::{Drain, GrpcTls, Resolved};
pub use roles::{refuse_foreign_flags, Role};
#[cfg(test)]
pub(crate) use roles::{API_SETTINGS, CLIENT_SETTINGS, CLUSTER_SETTINGS};

/// Every setting of every `roomcast` process. Each flag is also an environment
/// variable and a key of the config file (same name, snake_case; lists are
/// plural in the file: `namespaces`, `cors_origins`, `api_keys`, `nats_urls`,
/// `recovery_rooms`). A process checks every setting but uses those of its
/// role only (a control plane has no client port); a flag of another role's
/// setting is refused (`roles`). Defaults are not written here but in
/// `defaults.rs`, which `--help` shows.
#[derive(Args, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Client port (Socket.IO over HTTP and WebSocket)
    #[arg(long, env = "ROOMCAST_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// gRPC control API port
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
    /// Admin port: /healthz, /readyz, /metrics
    #[arg(long, env = "ROOMCAST_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// HTTP path of the Socket.IO endpoint
    #[arg(long, env = "ROOMCAST_PATH")]
    pub path: Option<String>,
    /// HTTP path of a raw WebSocket endpoint that echoes every message, for conformance testing only
    #[arg(long, env = "ROOMCAST_WS_ECHO_PATH")]
    pub ws_echo_path: Option<String>,
    /// Serve the Socket.IO Admin UI's server side on this namespace, e.g. /admin (with --admin-ui-username and --admin-ui-password-hash)
    #[arg(long, env = "ROOMCAST_ADMIN_UI_NAMESPACE")]
    pub admin_ui_namespace: Option<String>,
    /// The Admin UI's user name
    #[arg(long, env = "ROOMCAST_ADMIN_UI_USERNAME")]
    pub admin_ui_username: Option<String>,
    /// bcrypt hash of the Admin UI's password ($2a$/$2b$/$2y$)
    #[arg(long, env = "ROOMCAST_ADMIN_UI_PASSWORD_HASH")]
    pub admin_ui_password_hash: Option<String>,
    /// Serve the Admin UI's static build (the `ui/dist` folder of the npm package @socket.io/admin-ui) from this folder on the admin port at /admin-ui/
    #[arg(long, env = "ROOMCAST_ADMIN_UI_STATIC_DIR")]
    pub admin_ui_static_dir: Option<PathBuf>,
    /// A namespace clients may connect to; repeat for several
    #[arg(long = "namespace", env = "ROOMCAST_NAMESPACES", value_delimiter = ',')]
    #[serde(rename = "namespaces")]
    pub namespaces: Vec<String>,
    /// Server ping interval, ms
    #[arg(long, env = "ROOMCAST_PING_INTERVAL_MS")]
    pub ping_interval_ms: Option<u64>,
    /// Time to wait for a pong before closing, ms
    #[arg(long, env = "ROOMCAST_PING_TIMEOUT_MS")]
    pub ping_timeout_ms: Option<u64>,
    /// Time a connection may stay without joining a namespace, ms
    #[arg(long, env = "ROOMCAST_CONNECT_TIMEOUT_MS")]
    pub connect_timeout_ms: Option<u64>,
    /// Time an upgrade from polling to WebSocket may take, ms
    #[arg(long, env = "ROOMCAST_UPGRADE_TIMEOUT_MS")]
    pub upgrade_timeout_ms: Option<u64>,
    /// Largest message or polling body a client may send, bytes
    #[arg(long, env = "ROOMCAST_MAX_PAYLOAD")]
    pub max_payload: Option<usize>,
    /// Most binary attachments in one packet
    #[arg(long, env = "ROOMCAST_MAX_ATTACHMENTS")]
    pub max_attachments: Option<usize>,
    /// Bytes queued for one connection before it is disconnected as a slow consumer
    #[arg(long, env = "ROOMCAST_OUTBOUND_QUEUE_BYTES")]
    pub outbound_queue_bytes: Option<usize>,
    /// Most headers on a client request; more get 431
    #[arg(long, env = "ROOMCAST_MAX_REQUEST_HEADERS")]
    pub max_request_headers: Option<usize>,
    /// Most bytes of a client request's target and headers together; more get 431
    #[arg(long, env = "ROOMCAST_MAX_REQUEST_HEAD_BYTES")]
    pub max_request_head_bytes: Option<usize>,
    /// Time from accepting a client connection (TLS handshake included) to its first request, ms; slower ones are closed
    #[arg(long, env = "ROOMCAST_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// Time a client request head may take to arrive, and a keep-alive connection may stay idle, ms
    #[arg(long, env = "ROOMCAST_REQUEST_HEAD_TIMEOUT_MS")]
    pub request_head_timeout_ms: Option<u64>,
    /// Time a polling request body may take to arrive once its head has, ms; slower gets 408 and closes the session
    #[arg(long, env = "ROOMCAST_REQUEST_BODY_TIMEOUT_MS")]
    pub request_body_timeout_ms: Option<u64>,
    /// Most client connections accepted and not yet past their first request head (TLS handshakes included); more are closed at once
    #[arg(long, env = "ROOMCAST_MAX_PENDING_HANDSHAKES")]
    pub max_pending_handshakes: Option<usize>,
    /// Most open connections from one peer address; more get 429 (0: no limit; behind a proxy every client has the proxy's address)
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// New connections per second from one peer address, bursts of twice that; more get 429 (0: no limit)
    #[arg(long, env = "ROOMCAST_HANDSHAKES_PER_IP_PER_SEC")]
    pub handshakes_per_ip_per_sec: Option<u32>,
    /// Most rooms one socket may be in: a JWT rooms claim over it is refused, a JoinRooms over it fails (0: no limit)
    #[arg(long, env = "ROOMCAST_MAX_ROOMS_PER_SOCKET")]
    pub max_rooms_per_socket: Option<usize>,
    /// WebSocket pings per second a connection may send, bursts of twice that; faster closes it (0: no limit)
    #[arg(long, env = "ROOMCAST_WS_PINGS_PER_SEC")]
    pub ws_pings_per_sec: Option<u32>,
    /// Engine.IO packets per second a connection may send, bursts of twice that; faster closes it (0: no limit)
    #[arg(long, env = "ROOMCAST_PACKETS_PER_SEC")]
    pub packets_per_sec: Option<u32>,
    /// Disconnect a socket when the `exp` of its JWT passes (leeway included)
    #[arg(long, env = "ROOMCAST_DISCONNECT_ON_TOKEN_EXPIRY", num_args = 0..=1, default_missing_value = "true")]
    pub disconnect_on_token_expiry: Option<bool>,
    /// A browser origin allowed to connect; repeat for several
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
    /// JWT claim listing rooms to join at connect
    #[arg(long, env = "ROOMCAST_JWT_ROOMS_CLAIM")]
    pub jwt_rooms_claim: Option<String>,
    /// Clock skew allowed on JWT `exp`/`nbf`, seconds
    #[arg(long, env = "ROOMCAST_JWT_LEEWAY_SECS")]
    pub jwt_leeway_secs: Option<u64>,
    /// API key the gRPC API requires (`authorization: Bearer <key>`); repeat for several
    #[arg(
        long = "api-key",
        env = "ROOMCAST_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    #[serde(rename = "api_keys")]
    pub api_keys: Vec<String>,
    /// Cluster name, the prefix of every bus subject
    #[arg(long, env = "ROOMCAST_CLUSTER")]
    pub cluster: Option<String>,
    /// This node's id
    #[arg(long, env = "ROOMCAST_NODE_ID")]
    pub node_id: Option<String>,
    /// gRPC address (http://host:port) of a backend's ConnectHook service that authorizes every CONNECT instead of JWTs
    #[arg(long, env = "ROOMCAST_CONNECT_HOOK_URL")]
    pub connect_hook_url: Option<String>,
    /// How long the connect hook may take before the CONNECT is refused, ms
    #[arg(long, env = "ROOMCAST_CONNECT_HOOK_TIMEOUT_MS")]
    pub connect_hook_timeout_ms: Option<u64>,
    /// Track which users are online (JetStream KV in a cluster)
    #[arg(long, env = "ROOMCAST_PRESENCE", num_args = 0..=1, default_missing_value = "true")]
    pub presence: Option<bool>,
    /// How long a user stays online after their last socket closed, ms (0: at once)
    #[arg(long, env = "ROOMCAST_PRESENCE_GRACE_MS")]
    pub presence_grace_ms: Option<u64>,
    /// How long an edge that stopped refreshing its lease counts as alive, ms
    #[arg(long, env = "ROOMCAST_PRESENCE_LEASE_TTL_MS")]
    pub presence_lease_ttl_ms: Option<u64>,
    /// Who receives user-status-change: namespace, rooms, room:NAME or none
    #[arg(long, env = "ROOMCAST_PRESENCE_AUDIENCE")]
    pub presence_audience: Option<String>,
    /// Namespace user-status-change is emitted in
    #[arg(long, env = "ROOMCAST_PRESENCE_NAMESPACE")]
    pub presence_namespace: Option<String>,
    /// Replicas of the presence KV bucket in a JetStream cluster
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
    /// How long a disconnected socket can be recovered, ms
    #[arg(long, env = "ROOMCAST_RECOVERY_WINDOW_MS")]
    pub recovery_window_ms: Option<u64>,
    /// How long the recovery history keeps an emit, ms (at least the window)
    #[arg(long, env = "ROOMCAST_RECOVERY_HISTORY_MAX_AGE_MS")]
    pub recovery_history_max_age_ms: Option<u64>,
    /// Bytes the recovery history keeps at most, oldest dropped first
    #[arg(long, env = "ROOMCAST_RECOVERY_HISTORY_MAX_BYTES")]
    pub recovery_history_max_bytes: Option<u64>,
    /// Replicas of the recovery stream and sessions bucket in a JetStream cluster
    #[arg(long, env = "ROOMCAST_RECOVERY_REPLICAS")]
    pub recovery_replicas: Option<usize>,
    /// At-least-once emits: first wait for an ack before a resend, ms
    #[arg(long, env = "ROOMCAST_DELIVERY_RESEND_MS")]
    pub delivery_resend_ms: Option<u64>,
    /// At-least-once emits: longest wait between resends (the wait doubles up to it), ms
    #[arg(long, env = "ROOMCAST_DELIVERY_MAX_RESEND_MS")]
    pub delivery_max_resend_ms: Option<u64>,
    /// At-least-once emits: how long a control plane owns a recipient's queue without renewing, ms
    #[arg(long, env = "ROOMCAST_DELIVERY_LEASE_TTL_MS")]
    pub delivery_lease_ttl_ms: Option<u64>,
    /// At-least-once emits: most messages waiting per user (or socket) and namespace
    #[arg(long, env = "ROOMCAST_DELIVERY_INBOX_MAX")]
    pub delivery_inbox_max: Option<usize>,
    /// At-least-once emits: largest ttl_ms an emit may ask for, ms
    #[arg(long, env = "ROOMCAST_DELIVERY_MAX_TTL_MS")]
    pub delivery_max_ttl_ms: Option<u64>,
    /// Most sockets one user may have in the cluster; a new one evicts the oldest (0: no limit)
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<usize>,
    /// On SIGTERM, how long an edge keeps serving while not ready, before it closes connections, ms
    #[arg(long, env = "ROOMCAST_DRAIN_DELAY_MS")]
    pub drain_delay_ms: Option<u64>,
    /// Then, over how long it closes its connections, spread at random, ms
    #[arg(long, env = "ROOMCAST_DRAIN_WINDOW_MS")]
    pub drain_window_ms: Option<u64>,
    /// Most entries in each list of a selector (rooms, socket ids, user ids, exceptions) and rooms in a join or leave; more get INVALID_ARGUMENT
    #[arg(long, env = "ROOMCAST_MAX_SELECTOR_SIZE")]
    pub max_selector_size: Option<usize>,
    /// How commands for sockets and users reach edges: directory (only the edges holding them) or broadcast (every edge)
    #[arg(long, env = "ROOMCAST_COMMAND_ROUTING")]
    pub command_routing: Option<String>,
    /// How long a command sent to edges (join, leave, fetch, disconnect) may take, ms
    #[arg(long, env = "ROOMCAST_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// How often an edge tells control planes it is alive, ms
    #[arg(long, env = "ROOMCAST_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// How long a control plane counts an edge as alive after its last heartbeat, ms
    #[arg(long, env = "ROOMCAST_EDGE_TTL_MS")]
    pub edge_ttl_ms: Option<u64>,
    /// NATS server URL (nats://, tls://); repeat for every server of the NATS cluster
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
    /// OTLP/gRPC collector that receives traces, e.g. http://127.0.0.1:4317
    #[arg(long, env = "ROOMCAST_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Fraction of traces kept, 0 to 1
    #[arg(long, env = "ROOMCAST_TRACE_SAMPLE_RATIO")]
    pub trace_sample_ratio: Option<f64>,
    /// Log filter, e.g. `info` or `roomcast_edge=debug`
    #[arg(long, env = "ROOMCAST_LOG")]
    pub log: Option<String>,
    /// Log format: plain or json
    #[arg(long, env = "ROOMCAST_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

impl LogFormat {
    /// The name a user writes.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        }
    }
}

impl Settings {
    /// Reads a TOML config file (unknown keys are errors).
    pub fn from_file(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Fills what `self` leaves unset from `lower` (flags and environment
    /// over the file); what neither sets takes its default at resolution.
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
              admin_listen, connect_hook_url, connect_hook_timeout_ms, request_timeout_ms, max_selector_size, command_routing, heartbeat_interval_ms,
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

impl Settings {
    /// Checks every setting, those of other roles included (so that one file
    /// or environment is checked alike by each role it serves), and builds
    /// what a `role` process runs on.
    pub fn resolve(self, role: Role) -> anyhow::Result<Resolved> {
        let d = Defaults::default();
        let edge = self.edge(&d)?;
        let edge_ttl = self.edge_ttl(&d, role, edge.heartbeat_interval)?;
        let control = self.control(&d, &edge)?;
        let auth = self.auth(&d, role, edge.connect_hook.is_some())?;
        let presence = self.presence(&d, &control.cluster)?;
        let recovery = self.recovery(&d)?;
        // Acked delivery keeps its queues beside presence.
        let delivery = match presence {
            Some(_) => Some(self.delivery(&d)?),
            None => None,
        };
        let nats = self.nats(&d, role, &edge.node_id)?;
        let grpc_tls = match role {
            Role::Edge => None,
            Role::Standalone | Role::Control => self.grpc_tls()?,
        };
        let client_tls = if role.has_edge() {
            self.client_tls()?
        } else {
            None
        };
        let admin_ui_static_dir = self.admin_ui_static_dir(role)?;
        let traces = self.traces(&d)?;
        let (log, log_format) = self.logs(&d);
        Ok(Resolved {
            listen: self.listen.unwrap_or(d.listen),
            grpc_listen: self.grpc_listen.unwrap_or(d.grpc_listen),
            grpc_tls,
            client_tls,
            admin_listen: self.admin_listen.unwrap_or(d.admin_listen),
            admin_ui_static_dir,
            edge,
            control,
            auth,
            api_keys: self.api_keys.clone(),
            nats,
            edge_ttl,
            presence,
            presence_replicas: self.presence_replicas(&d),
            recovery,
            delivery,
            drain: self.drain(&d),
            traces,
            log,
            log_format,
        })
    }
}

/// Adds each setting's default to its help as `[default: …]`, the way clap
/// shows a `default_value`; the settings have none in clap, whose defaults
/// would hide a value from the file. `cmd` takes the settings (`standalone`,
/// `edge`, `control`).
pub fn show_defaults(cmd: clap::Command) -> clap::Command {
    let suffixes = Defaults::default().help_suffixes();
    cmd.mut_args(
        |arg| match suffixes.iter().find(|(key, _)| arg.get_id() == *key) {
            Some((_, suffix)) => {
                let help = match arg.get_help() {
                    Some(help) => format!("{help} {suffix}"),
                    None => suffix.clone(),
                };
                arg.help(help)
            }
            None => arg,
        },
    )
}

fn read_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

fn ms_at_least(v: u64, min: u64, name: &str) -> anyhow::Result<Duration> {
    if v < min {
        bail!("{name} must be at least {min}");
    }
    Ok(Duration::from_millis(v))
}

/// A duration in ms that must not be 0: `v`, or `default` when unset.
fn ms(v: Option<u64>, default: u64, name: &str) -> anyhow::Result<Duration> {
    let v = v.unwrap_or(default);
    if v == 0 {
        bail!("{name} must be greater than 0");
    }
    Ok(Duration::from_millis(v))
}

#[cfg(test)]
mod tests;
