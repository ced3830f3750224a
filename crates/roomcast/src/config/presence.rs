//! Presence (who is online) and connection state recovery.

use std::time::Duration;

use anyhow::bail;
use roomcast_bus::names::{valid_namespace, valid_room, MAX_NAME_LEN};
use roomcast_bus::recovery::RecoveryConfig;
use roomcast_presence::{Audience, PresenceConfig};

use super::{ms, ms_at_least, Defaults, Settings};

impl Settings {
    /// Presence of cluster `cluster`; `None` when it is off.
    pub(super) fn presence(
        &self,
        d: &Defaults,
        cluster: &str,
    ) -> anyhow::Result<Option<PresenceConfig>> {
        if !self.presence.unwrap_or(d.presence) {
            return Ok(None);
        }
        let namespace = self
            .presence_namespace
            .clone()
            .unwrap_or_else(|| d.presence_namespace.clone());
        if !valid_namespace(&namespace) {
            bail!("presence-namespace {namespace:?} must start with '/'");
        }
        let audience = self.presence_audience(d)?;
        let lease_ttl = ms(
            self.presence_lease_ttl_ms,
            d.presence_lease_ttl_ms,
            "presence-lease-ttl-ms",
        )?;
        if lease_ttl < Duration::from_millis(300) {
            bail!("presence-lease-ttl-ms must be at least 300");
        }
        Ok(Some(PresenceConfig {
            cluster: cluster.to_owned(),
            grace: Duration::from_millis(self.presence_grace_ms.unwrap_or(d.presence_grace_ms)),
            lease_ttl,
            audience,
            namespace,
            max_sockets_per_user: self
                .max_connections_per_user
                .unwrap_or(d.max_connections_per_user),
        }))
    }

    /// Who receives `user-status-change`.
    fn presence_audience(&self, d: &Defaults) -> anyhow::Result<Audience> {
        let audience = self
            .presence_audience
            .as_deref()
            .unwrap_or(&d.presence_audience);
        Ok(match audience {
            "namespace" => Audience::Namespace,
            "rooms" => Audience::Rooms,
            "none" => Audience::None,
            other => match other.strip_prefix("room:") {
                Some(room) if valid_room(room) => Audience::Room(room.to_owned()),
                _ => {
                    bail!("presence-audience {other:?} must be namespace, rooms, room:NAME or none")
                }
            },
        })
    }

    /// Replicas of the presence bucket (at least one).
    pub(super) fn presence_replicas(&self, d: &Defaults) -> usize {
        self.presence_replicas.unwrap_or(d.presence_replicas).max(1)
    }

    /// Connection state recovery; `None` when no room is recoverable.
    pub(super) fn recovery(&self, d: &Defaults) -> anyhow::Result<Option<RecoveryConfig>> {
        if self.recovery_rooms.is_empty() {
            return Ok(None);
        }
        for pattern in &self.recovery_rooms {
            if pattern.is_empty() || pattern.len() > MAX_NAME_LEN {
                bail!("recovery-room {pattern:?} must be 1 to 256 bytes");
            }
        }
        let window = ms_at_least(
            self.recovery_window_ms.unwrap_or(d.recovery_window_ms),
            100,
            "recovery-window-ms",
        )?;
        let history_max_age = match self.recovery_history_max_age_ms {
            Some(ms) => ms_at_least(ms, 100, "recovery-history-max-age-ms")?,
            None => window,
        };
        if history_max_age < window {
            bail!("recovery-history-max-age-ms must be at least recovery-window-ms");
        }
        let history_max_bytes = self
            .recovery_history_max_bytes
            .unwrap_or(d.recovery_history_max_bytes);
        if history_max_bytes < 1024 {
            bail!("recovery-history-max-bytes must be at least 1024");
        }
        Ok(Some(RecoveryConfig {
            rooms: self.recovery_rooms.clone(),
            window,
            history_max_age,
            history_max_bytes,
            replicas: self.recovery_replicas.unwrap_or(d.recovery_replicas).max(1),
        }))
    }
}
