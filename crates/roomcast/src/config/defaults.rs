//! The default of every setting, decided in one place.
//!
//! A setting that configures a library crate takes its default from that
//! crate's `Default` impl (`EdgeConfig`, `ControlConfig`, `DeliveryConfig`,
//! `PresenceConfig`, `RecoveryConfig`, `NatsOptions`), so a library user and
//! the binary agree; the binary's own settings (ports, switches, logs) are
//! decided here. Everything else reads these values: resolution falls back to
//! them, `--help` shows them (`[default: …]`, added when the command is built),
//! and tests hold the README's tables and the explicit-default behaviour to
//! them.

use std::net::SocketAddr;
use std::time::Duration;

use roomcast_bus::nats::NatsOptions;
use roomcast_bus::recovery::RecoveryConfig;
use roomcast_control::{ControlConfig, DeliveryConfig};
use roomcast_edge::EdgeConfig;
use roomcast_presence::{Audience, PresenceConfig};

use super::LogFormat;

/// A default as a user writes it on the command line.
trait DefaultText {
    fn default_text(&self) -> String;
}

macro_rules! display_text {
    ($($ty:ty),*) => {
        $(impl DefaultText for $ty {
            fn default_text(&self) -> String {
                self.to_string()
            }
        })*
    };
}

display_text!(u32, u64, usize, f64, bool, String, SocketAddr);

impl DefaultText for Vec<String> {
    fn default_text(&self) -> String {
        self.join(",")
    }
}

impl DefaultText for LogFormat {
    fn default_text(&self) -> String {
        self.name().to_owned()
    }
}

/// Declares [`Defaults`] and lists its fields by key, from one field list.
macro_rules! defaults {
    ($($key:ident: $ty:ty,)*) => {
        /// The default of each setting that has a value by default. A field is
        /// named after the setting's key (the file key; the flag with `-`).
        #[derive(Debug, Clone)]
        pub(crate) struct Defaults {
            $(pub $key: $ty,)*
        }

        impl Defaults {
            /// Each setting's key and its default as a user writes it.
            pub(crate) fn texts(&self) -> Vec<(&'static str, String)> {
                vec![$((stringify!($key), self.$key.default_text()),)*]
            }
        }
    };
}

defaults! {
    listen: SocketAddr,
    grpc_listen: SocketAddr,
    admin_listen: SocketAddr,
    path: String,
    namespaces: Vec<String>,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    connect_timeout_ms: u64,
    upgrade_timeout_ms: u64,
    max_payload: usize,
    max_attachments: usize,
    outbound_queue_bytes: usize,
    max_request_headers: usize,
    max_request_head_bytes: usize,
    handshake_timeout_ms: u64,
    request_head_timeout_ms: u64,
    request_body_timeout_ms: u64,
    max_pending_handshakes: usize,
    max_connections_per_ip: usize,
    handshakes_per_ip_per_sec: u32,
    max_rooms_per_socket: usize,
    ws_pings_per_sec: u32,
    packets_per_sec: u32,
    disconnect_on_token_expiry: bool,
    allow_anonymous: bool,
    jwt_rooms_claim: String,
    jwt_leeway_secs: u64,
    cluster: String,
    connect_hook_timeout_ms: u64,
    presence: bool,
    presence_grace_ms: u64,
    presence_lease_ttl_ms: u64,
    presence_audience: String,
    presence_namespace: String,
    presence_replicas: usize,
    recovery_window_ms: u64,
    recovery_history_max_bytes: u64,
    recovery_replicas: usize,
    delivery_resend_ms: u64,
    delivery_max_resend_ms: u64,
    delivery_lease_ttl_ms: u64,
    delivery_inbox_max: usize,
    delivery_max_ttl_ms: u64,
    max_connections_per_user: usize,
    drain_delay_ms: u64,
    drain_window_ms: u64,
    max_selector_size: usize,
    command_routing: String,
    request_timeout_ms: u64,
    heartbeat_interval_ms: u64,
    edge_ttl_ms: u64,
    nats_urls: Vec<String>,
    nats_tls_required: bool,
    trace_sample_ratio: f64,
    log: String,
    log_format: LogFormat,
}

/// Settings that have no value by default, and what their absence means (as
/// `--help` says it).
pub(crate) const WITHOUT_VALUE: &[(&str, &str)] = &[
    ("ws_echo_path", "none"),
    ("admin_ui_namespace", "off"),
    ("admin_ui_static_dir", "off"),
    ("cors_origins", "any"),
    ("api_keys", "none, API open"),
    ("node_id", "random"),
    ("recovery_history_max_age_ms", "the window"),
    ("otlp_endpoint", "traces off"),
];

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn audience_text(audience: &Audience) -> String {
    match audience {
        Audience::None => "none".to_owned(),
        Audience::Namespace => "namespace".to_owned(),
        Audience::Rooms => "rooms".to_owned(),
        Audience::Room(room) => format!("room:{room}"),
    }
}

impl Default for Defaults {
    fn default() -> Self {
        let edge = EdgeConfig::default();
        let control = ControlConfig::default();
        let delivery = DeliveryConfig::default();
        let presence = PresenceConfig::default();
        let recovery = RecoveryConfig::default();
        let nats = NatsOptions::default();
        Defaults {
            listen: SocketAddr::from(([0, 0, 0, 0], 3000)),
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9464)),
            path: edge.path,
            namespaces: edge.namespaces,
            ping_interval_ms: millis(edge.ping_interval),
            ping_timeout_ms: millis(edge.ping_timeout),
            connect_timeout_ms: millis(edge.connect_timeout),
            upgrade_timeout_ms: millis(edge.upgrade_timeout),
            max_payload: edge.max_payload,
            max_attachments: edge.max_attachments,
            outbound_queue_bytes: edge.outbound_queue_bytes,
            max_request_headers: edge.max_request_headers,
            max_request_head_bytes: edge.max_request_head_bytes,
            handshake_timeout_ms: millis(edge.handshake_timeout),
            request_head_timeout_ms: millis(edge.request_head_timeout),
            request_body_timeout_ms: millis(edge.request_body_timeout),
            max_pending_handshakes: edge.max_pending_handshakes,
            max_connections_per_ip: edge.max_connections_per_ip,
            handshakes_per_ip_per_sec: edge.handshakes_per_ip_per_sec,
            max_rooms_per_socket: edge.max_rooms_per_socket,
            ws_pings_per_sec: edge.ws_pings_per_sec,
            packets_per_sec: edge.packets_per_sec,
            disconnect_on_token_expiry: edge.disconnect_on_token_expiry,
            // Clients must authenticate unless the operator says otherwise.
            allow_anonymous: false,
            jwt_rooms_claim: "rooms".to_owned(),
            jwt_leeway_secs: 30,
            cluster: edge.cluster,
            connect_hook_timeout_ms: 2_000,
            presence: true,
            presence_grace_ms: millis(presence.grace),
            presence_lease_ttl_ms: millis(presence.lease_ttl),
            presence_audience: audience_text(&presence.audience),
            presence_namespace: presence.namespace,
            presence_replicas: 1,
            recovery_window_ms: millis(recovery.window),
            recovery_history_max_bytes: recovery.history_max_bytes,
            recovery_replicas: recovery.replicas,
            delivery_resend_ms: millis(delivery.resend_interval),
            delivery_max_resend_ms: millis(delivery.max_resend_interval),
            delivery_lease_ttl_ms: millis(delivery.lease_ttl),
            delivery_inbox_max: delivery.inbox_max,
            delivery_max_ttl_ms: millis(delivery.max_ttl),
            max_connections_per_user: presence.max_sockets_per_user,
            drain_delay_ms: 0,
            drain_window_ms: 0,
            max_selector_size: control.max_selector_size,
            command_routing: control.command_routing.to_string(),
            request_timeout_ms: millis(control.request_timeout),
            heartbeat_interval_ms: millis(edge.heartbeat_interval),
            // Three heartbeats: one or two lost messages do not end an edge.
            edge_ttl_ms: 3 * millis(edge.heartbeat_interval),
            nats_urls: nats.urls,
            nats_tls_required: nats.require_tls,
            trace_sample_ratio: 1.0,
            log: "info".to_owned(),
            log_format: LogFormat::Plain,
        }
    }
}

impl Defaults {
    /// What `--help` appends to the help of setting `key`: its default, or
    /// what leaving it unset means. A switch that is off by default shows
    /// nothing.
    pub(crate) fn help_suffixes(&self) -> Vec<(&'static str, String)> {
        self.texts()
            .into_iter()
            .filter(|(_, text)| text != "false")
            .chain(
                WITHOUT_VALUE
                    .iter()
                    .map(|(key, meaning)| (*key, (*meaning).to_owned())),
            )
            .map(|(key, text)| (key, format!("[default: {text}]")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use clap::{Args, FromArgMatches};

    use super::*;
    use crate::config::{Role, Settings};

    /// The settings' command line, as `standalone`, `edge` and `control` take it.
    fn settings_command() -> clap::Command {
        Settings::augment_args(clap::Command::new("roomcast"))
    }

    fn long_of(key: &str) -> String {
        let cmd = settings_command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == key)
            .unwrap_or_else(|| panic!("{key} is not a setting"));
        arg.get_long().expect("every setting has a flag").to_owned()
    }

    fn parse(args: &[String]) -> Settings {
        let matches = settings_command()
            .try_get_matches_from(
                std::iter::once("roomcast".to_owned()).chain(args.iter().cloned()),
            )
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        Settings::from_arg_matches(&matches).expect("settings")
    }

    /// Everything resolution produces from `settings` that a default can reach.
    fn outcome(settings: Settings, role: Role) -> String {
        let jwt = format!("{:?}", settings.jwt(&Defaults::default()).expect("valid"));
        let r = settings.resolve(role).expect("valid");
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {jwt}",
            r.listen,
            r.grpc_listen,
            r.admin_listen,
            r.edge,
            r.control,
            r.presence,
            r.recovery,
            r.delivery,
            r.nats,
            r.edge_ttl,
            r.presence_replicas,
            r.drain,
            r.traces.map(|t| t.ratio),
            r.log,
            r.log_format,
        )
    }

    /// Giving a setting its documented default, on the command line as a user
    /// would, changes nothing: what `--help` and the README say is what the
    /// processes do.
    #[test]
    fn a_setting_given_its_default_changes_nothing() {
        let bases: [&[&str]; 2] = [
            &["--jwt-secret", "0123456789abcdef"],
            &["--connect-hook-url", "http://127.0.0.1:7000"],
        ];
        let texts = Defaults::default().texts();
        assert!(texts.len() > 50, "every setting with a default is listed");
        for base in bases {
            // Turns on what the defaults of recovery and traces apply to.
            let base: Vec<String> = base
                .iter()
                .chain(&[
                    "--node-id",
                    "n1",
                    "--recovery-room",
                    "r",
                    "--otlp-endpoint",
                    "http://127.0.0.1:4317",
                ])
                .map(|s| (*s).to_owned())
                .collect();
            for role in [Role::Standalone, Role::Edge, Role::Control] {
                let implicit = outcome(parse(&base), role);
                for (key, text) in &texts {
                    let mut args = base.clone();
                    args.extend([format!("--{}", long_of(key)), text.clone()]);
                    assert_eq!(
                        outcome(parse(&args), role),
                        implicit,
                        "--{} {text} ({role:?})",
                        long_of(key)
                    );
                }
            }
        }
    }

    #[test]
    fn every_default_belongs_to_a_setting_and_none_is_listed_twice() {
        let mut keys: Vec<&str> = Defaults::default()
            .texts()
            .iter()
            .map(|(k, _)| *k)
            .chain(WITHOUT_VALUE.iter().map(|(k, _)| *k))
            .collect();
        for key in &keys {
            long_of(key);
        }
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n);
    }

    /// Where library crates repeat one another's defaults, they agree (the
    /// binary takes each from one of them).
    #[test]
    fn library_defaults_that_repeat_one_another_agree() {
        let edge = EdgeConfig::default();
        let control = ControlConfig::default();
        assert_eq!(control.cluster, edge.cluster);
        assert_eq!(control.max_payload, edge.max_payload);
        assert_eq!(control.max_attachments, edge.max_attachments);
        assert_eq!(control.request_timeout, edge.request_timeout);
        assert_eq!(PresenceConfig::default().cluster, edge.cluster);
        let recovery = RecoveryConfig::default();
        assert_eq!(recovery.history_max_age, recovery.window, "the window");
    }

    /// The rows of the knob tables of the README and docs/delivery.md: each
    /// flag with its default cell.
    fn documented_defaults() -> BTreeMap<String, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut rows = BTreeMap::new();
        for file in ["README.md", "docs/delivery.md"] {
            let text = std::fs::read_to_string(root.join(file)).expect("doc");
            let mut in_table = false;
            for line in text.lines() {
                if line.starts_with("| flag") && line.contains("| default |") {
                    in_table = true;
                    continue;
                }
                if !in_table || line.starts_with("|---") {
                    continue;
                }
                if !line.starts_with('|') {
                    in_table = false;
                    continue;
                }
                let line = line.replace("\\|", "/");
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let (flags, default) = (cells[1], cells[2]);
                for flag in flags.split("`--").skip(1) {
                    let long: String = flag
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect();
                    rows.insert(long, default.to_owned());
                }
            }
        }
        rows
    }

    #[test]
    fn the_docs_show_the_defaults_of_the_code() {
        let documented = documented_defaults();
        let cmd = settings_command();
        for long in documented.keys() {
            assert!(
                long == "config" || cmd.get_arguments().any(|a| a.get_long() == Some(long)),
                "the docs list --{long}, which is no setting"
            );
        }
        let texts: BTreeMap<&str, String> = Defaults::default().texts().into_iter().collect();
        for arg in cmd.get_arguments() {
            let (Some(long), key) = (arg.get_long(), arg.get_id().as_str()) else {
                continue;
            };
            let cell = documented
                .get(long)
                .unwrap_or_else(|| panic!("--{long} is not in a knob table of the docs"));
            match texts.get(key) {
                Some(text) => {
                    let shown = cell.replace('`', "");
                    let shown = shown.split(" (").next().unwrap_or_default().trim();
                    let expected = if text == "false" {
                        "off"
                    } else {
                        text.as_str()
                    };
                    assert_eq!(shown, expected, "default of --{long}");
                }
                None => assert!(
                    !cell.contains('`'),
                    "--{long} has no default value, the docs show {cell}"
                ),
            }
        }
    }
}
