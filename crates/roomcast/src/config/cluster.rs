//! The cluster: its name, this node's id, NATS, and how edges and control
//! planes keep track of one another.

use std::time::Duration;

use anyhow::bail;
use roomcast_bus::nats::NatsOptions;

use super::{ms, Defaults, Role, Settings};

impl Settings {
    /// The cluster name (the prefix of every subject) and this node's id.
    pub(super) fn identity(&self, d: &Defaults) -> anyhow::Result<(String, String)> {
        let cluster = self.cluster.clone().unwrap_or_else(|| d.cluster.clone());
        if cluster.is_empty()
            || !cluster
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bail!("cluster {cluster:?} must be letters, digits, '_' and '-', and not empty");
        }
        let node_id = self
            .node_id
            .clone()
            .unwrap_or_else(roomcast_bus::names::new_id);
        if node_id.is_empty() {
            bail!("node-id must not be empty");
        }
        Ok((cluster, node_id))
    }

    /// How long a command that every edge confirms may take.
    pub(super) fn request_timeout(&self, d: &Defaults) -> anyhow::Result<Duration> {
        ms(
            self.request_timeout_ms,
            d.request_timeout_ms,
            "request-timeout-ms",
        )
    }

    /// How often an edge tells control planes it is alive.
    pub(super) fn heartbeat_interval(&self, d: &Defaults) -> anyhow::Result<Duration> {
        ms(
            self.heartbeat_interval_ms,
            d.heartbeat_interval_ms,
            "heartbeat-interval-ms",
        )
    }

    /// How long a control plane counts a silent edge as alive: long enough
    /// for a lost heartbeat on a control plane.
    pub(super) fn edge_ttl(
        &self,
        d: &Defaults,
        role: Role,
        heartbeat_interval: Duration,
    ) -> anyhow::Result<Duration> {
        let edge_ttl = ms(self.edge_ttl_ms, d.edge_ttl_ms, "edge-ttl-ms")?;
        if role == Role::Control && edge_ttl < 2 * heartbeat_interval {
            bail!("edge-ttl-ms must be at least twice heartbeat-interval-ms");
        }
        Ok(edge_ttl)
    }

    /// The NATS connection, named `roomcast-<role>-<node id>` on the server.
    pub(super) fn nats(
        &self,
        d: &Defaults,
        role: Role,
        node_id: &str,
    ) -> anyhow::Result<NatsOptions> {
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
        Ok(NatsOptions {
            urls: if self.nats_urls.is_empty() {
                d.nats_urls.clone()
            } else {
                self.nats_urls.clone()
            },
            name: Some(format!("roomcast-{}-{node_id}", role.name())),
            token: self.nats_token.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            nkey_seed: self.nats_nkey_seed.clone(),
            creds_file: self.nats_creds_file.clone(),
            require_tls: self.nats_tls_required.unwrap_or(d.nats_tls_required),
            tls_root_ca: self.nats_tls_ca_file.clone(),
            tls_client_cert: self.nats_tls_cert_file.clone(),
            tls_client_key: self.nats_tls_key_file.clone(),
            ..NatsOptions::default()
        })
    }
}
