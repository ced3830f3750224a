//! The client port: the Engine.IO endpoint, its timeouts and limits, the
//! namespaces, TLS, the Admin UI and the drain at SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use roomcast_bus::names::valid_namespace;
use roomcast_edge::admin_ui::AdminUiConfig;
use roomcast_edge::EdgeConfig;

use super::{ms, read_file, Defaults, Drain, Role, Settings};

impl Settings {
    /// The edge's settings (standalone's too); checked for every role, so that
    /// a wrong value in a file shared by all roles is found by each.
    pub(super) fn edge(&self, d: &Defaults) -> anyhow::Result<EdgeConfig> {
        let path = self.engine_path(d)?;
        let namespaces = self.namespaces(d)?;
        let max_payload = self.max_payload.unwrap_or(d.max_payload);
        if max_payload < 64 {
            bail!("max-payload must be at least 64 bytes");
        }
        let (cluster, node_id) = self.identity(d)?;
        let ws_echo_path = self.ws_echo_path(&path)?;
        let admin_ui = self.admin_ui(&namespaces)?;
        let edge = EdgeConfig {
            path,
            namespaces,
            ping_interval: ms(
                self.ping_interval_ms,
                d.ping_interval_ms,
                "ping-interval-ms",
            )?,
            ping_timeout: ms(self.ping_timeout_ms, d.ping_timeout_ms, "ping-timeout-ms")?,
            connect_timeout: ms(
                self.connect_timeout_ms,
                d.connect_timeout_ms,
                "connect-timeout-ms",
            )?,
            upgrade_timeout: ms(
                self.upgrade_timeout_ms,
                d.upgrade_timeout_ms,
                "upgrade-timeout-ms",
            )?,
            max_payload,
            max_attachments: self.max_attachments.unwrap_or(d.max_attachments),
            outbound_queue_bytes: self.outbound_queue_bytes.unwrap_or(d.outbound_queue_bytes),
            max_request_headers: self.max_request_headers.unwrap_or(d.max_request_headers),
            max_request_head_bytes: self
                .max_request_head_bytes
                .unwrap_or(d.max_request_head_bytes),
            handshake_timeout: ms(
                self.handshake_timeout_ms,
                d.handshake_timeout_ms,
                "handshake-timeout-ms",
            )?,
            request_head_timeout: ms(
                self.request_head_timeout_ms,
                d.request_head_timeout_ms,
                "request-head-timeout-ms",
            )?,
            request_body_timeout: ms(
                self.request_body_timeout_ms,
                d.request_body_timeout_ms,
                "request-body-timeout-ms",
            )?,
            max_pending_handshakes: self
                .max_pending_handshakes
                .unwrap_or(d.max_pending_handshakes),
            max_connections_per_ip: self
                .max_connections_per_ip
                .unwrap_or(d.max_connections_per_ip),
            handshakes_per_ip_per_sec: self
                .handshakes_per_ip_per_sec
                .unwrap_or(d.handshakes_per_ip_per_sec),
            max_rooms_per_socket: self.max_rooms_per_socket.unwrap_or(d.max_rooms_per_socket),
            ws_pings_per_sec: self.ws_pings_per_sec.unwrap_or(d.ws_pings_per_sec),
            packets_per_sec: self.packets_per_sec.unwrap_or(d.packets_per_sec),
            disconnect_on_token_expiry: self
                .disconnect_on_token_expiry
                .unwrap_or(d.disconnect_on_token_expiry),
            cors_origins: self.cors_origins.clone(),
            cluster,
            node_id,
            request_timeout: self.request_timeout(d)?,
            heartbeat_interval: self.heartbeat_interval(d)?,
            ws_echo_path,
            admin_ui,
            connect_hook: self.connect_hook(d)?,
        };
        check_request_limits(&edge)?;
        Ok(edge)
    }

    /// The HTTP path of the Engine.IO endpoint.
    fn engine_path(&self, d: &Defaults) -> anyhow::Result<String> {
        let path = self.path.clone().unwrap_or_else(|| d.path.clone());
        if !path.starts_with('/') || !path.ends_with('/') {
            bail!("path {path:?} must start and end with '/'");
        }
        Ok(path)
    }

    fn namespaces(&self, d: &Defaults) -> anyhow::Result<Vec<String>> {
        let namespaces = if self.namespaces.is_empty() {
            d.namespaces.clone()
        } else {
            self.namespaces.clone()
        };
        for ns in &namespaces {
            if !valid_namespace(ns) {
                bail!("namespace {ns:?} must start with '/' and be at most 256 bytes");
            }
        }
        Ok(namespaces)
    }

    /// The raw WebSocket echo endpoint of conformance suites, beside the
    /// Engine.IO endpoint at `engine_path`.
    fn ws_echo_path(&self, engine_path: &str) -> anyhow::Result<Option<String>> {
        let Some(echo) = &self.ws_echo_path else {
            return Ok(None);
        };
        let engine = engine_path.trim_end_matches('/');
        if !echo.starts_with('/')
            || echo.contains(['{', '}', '*', ':'])
            || echo.trim_end_matches('/') == engine
        {
            bail!(
                "ws-echo-path {echo:?} must start with '/', have no '{{', '}}', '*' \
                 or ':', and differ from path"
            );
        }
        Ok(Some(echo.clone()))
    }

    /// The Admin UI's settings: all three or none.
    fn admin_ui(&self, namespaces: &[String]) -> anyhow::Result<Option<AdminUiConfig>> {
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
        let config = AdminUiConfig {
            namespace: ns.clone(),
            username: user.clone(),
            password_hash: hash.clone(),
        };
        if config.validate().is_err() {
            bail!("admin-ui-password-hash must be a bcrypt hash");
        }
        Ok(Some(config))
    }

    /// The Admin UI's static build, served on the admin port of a role with a
    /// client port.
    pub(super) fn admin_ui_static_dir(&self, role: Role) -> anyhow::Result<Option<PathBuf>> {
        match &self.admin_ui_static_dir {
            Some(dir) if role.has_edge() => {
                if !dir.join("index.html").is_file() {
                    bail!("admin-ui-static-dir {} has no index.html", dir.display());
                }
                Ok(Some(dir.clone()))
            }
            _ => Ok(None),
        }
    }

    /// TLS on the client port: certificate and key, both or neither.
    pub(super) fn client_tls(&self) -> anyhow::Result<Option<crate::tls::ClientTls>> {
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

    /// The lame-duck drain at SIGTERM.
    pub(super) fn drain(&self, d: &Defaults) -> Drain {
        Drain {
            delay: Duration::from_millis(self.drain_delay_ms.unwrap_or(d.drain_delay_ms)),
            window: Duration::from_millis(self.drain_window_ms.unwrap_or(d.drain_window_ms)),
        }
    }
}

/// The limits on request heads and queues, checked against one another.
fn check_request_limits(edge: &EdgeConfig) -> anyhow::Result<()> {
    if edge.max_request_headers < 8 {
        bail!("max-request-headers must be at least 8");
    }
    if edge.max_request_head_bytes < 1024 {
        bail!("max-request-head-bytes must be at least 1024");
    }
    if edge.max_pending_handshakes == 0 {
        bail!("max-pending-handshakes must be greater than 0");
    }
    if edge.outbound_queue_bytes < edge.max_payload {
        bail!(
            "outbound-queue-bytes must be at least max-payload ({})",
            edge.max_payload
        );
    }
    Ok(())
}
