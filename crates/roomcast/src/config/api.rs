//! The gRPC API: its port's TLS, the control plane's limits and at-least-once
//! delivery.

use std::time::Duration;

use anyhow::bail;
use roomcast_control::{ControlConfig, DeliveryConfig};
use roomcast_edge::EdgeConfig;

use super::{ms, read_file, Defaults, GrpcTls, Settings};

impl Settings {
    /// The control plane's settings; payload limits, cluster and request
    /// timeout are the edge's, so that both ends agree.
    pub(super) fn control(&self, d: &Defaults, edge: &EdgeConfig) -> anyhow::Result<ControlConfig> {
        Ok(ControlConfig {
            cluster: edge.cluster.clone(),
            max_payload: edge.max_payload,
            max_attachments: edge.max_attachments,
            request_timeout: edge.request_timeout,
            max_selector_size: match self.max_selector_size {
                None => d.max_selector_size,
                Some(0) => bail!("max-selector-size must be at least 1"),
                Some(n) => n,
            },
            command_routing: self
                .command_routing
                .as_deref()
                .unwrap_or(&d.command_routing)
                .parse()
                .map_err(|e: String| anyhow::anyhow!("{e}"))?,
            ..ControlConfig::default()
        })
    }

    /// At-least-once emits (on whenever presence is).
    pub(super) fn delivery(&self, d: &Defaults) -> anyhow::Result<DeliveryConfig> {
        let resend_interval = ms(
            self.delivery_resend_ms,
            d.delivery_resend_ms,
            "delivery-resend-ms",
        )?;
        let max_resend_interval = ms(
            self.delivery_max_resend_ms,
            d.delivery_max_resend_ms,
            "delivery-max-resend-ms",
        )?;
        let lease_ttl = ms(
            self.delivery_lease_ttl_ms,
            d.delivery_lease_ttl_ms,
            "delivery-lease-ttl-ms",
        )?;
        if resend_interval < Duration::from_millis(10) {
            bail!("delivery-resend-ms must be at least 10");
        }
        if max_resend_interval < resend_interval {
            bail!("delivery-max-resend-ms must be at least delivery-resend-ms");
        }
        if lease_ttl < Duration::from_millis(300) {
            bail!("delivery-lease-ttl-ms must be at least 300");
        }
        let inbox_max = self.delivery_inbox_max.unwrap_or(d.delivery_inbox_max);
        if inbox_max == 0 {
            bail!("delivery-inbox-max must be at least 1");
        }
        let max_ttl = ms(
            self.delivery_max_ttl_ms,
            d.delivery_max_ttl_ms,
            "delivery-max-ttl-ms",
        )?;
        if max_ttl.is_zero() || max_ttl.as_millis() > u128::from(u32::MAX) {
            bail!("delivery-max-ttl-ms must be 1 to {}", u32::MAX);
        }
        Ok(DeliveryConfig {
            resend_interval,
            max_resend_interval,
            lease_ttl,
            inbox_max,
            max_ttl,
            ..DeliveryConfig::default()
        })
    }

    /// TLS on the gRPC port: certificate and key, both or neither, and
    /// optionally a CA that callers' certificates must chain to.
    pub(super) fn grpc_tls(&self) -> anyhow::Result<Option<GrpcTls>> {
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
}
