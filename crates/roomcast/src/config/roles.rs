//! Which settings each role uses, and the refusal of flags it does not.

use anyhow::bail;

/// Which process the settings are for; each checks what it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standalone,
    Edge,
    Control,
}

impl Role {
    /// Whether this role serves the client port (and authenticates clients).
    pub(super) fn has_edge(self) -> bool {
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
    "command_routing",
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
