//! Metric names of the `roomcast` processes, and the Prometheus recorder.
//!
//! Every value here is read from the live state when `/metrics` is scraped
//! (gauges set, counters set to their running totals), so nothing on the hot
//! path pays for them. Documented in `docs/metrics.md`.

use std::fmt::Write as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Seconds: from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// 1 while the process is connected to a NATS server.
pub const NATS_CONNECTED: &str = "roomcast_nats_connected";
/// NATS connections re-established after a loss.
pub const NATS_RECONNECTS: &str = "roomcast_nats_reconnects_total";
/// NATS connections lost.
pub const NATS_DISCONNECTS: &str = "roomcast_nats_disconnects_total";
/// Messages a slow bus subscriber lost.
pub const NATS_DROPPED: &str = "roomcast_nats_dropped_messages_total";
/// Slow-consumer events reported by the NATS client (part of the dropped).
pub const NATS_SLOW_CONSUMER_EVENTS: &str = "roomcast_nats_slow_consumer_events_total";
/// Engine.IO connections open on an edge.
pub const EDGE_CONNECTIONS: &str = "roomcast_edge_connections";
/// Engine.IO connections by transport (label `transport`).
pub const EDGE_CONNECTIONS_BY_TRANSPORT: &str = "roomcast_edge_connections_by_transport";
/// Socket.IO sockets by namespace (label `namespace`).
pub const EDGE_SOCKETS: &str = "roomcast_edge_sockets";
/// Bytes waiting in the outbound queues of every connection.
pub const EDGE_OUTBOUND_QUEUE_BYTES: &str = "roomcast_edge_outbound_queue_bytes";
/// Room subjects an edge subscribes to (rooms with a local member).
pub const EDGE_ROOM_SUBSCRIPTIONS: &str = "roomcast_edge_room_subscriptions";
/// Sockets whose recovery session record waits to be written, or is being
/// written (ADR 18).
pub const EDGE_SESSION_RECORDS_QUEUED: &str = "roomcast_edge_session_records_queued";
/// WebSockets an edge relays to polling sessions held by other edges (ADR 20).
pub const EDGE_RELAYED_WEBSOCKETS: &str = "roomcast_edge_relayed_websockets";
/// Edges a control plane believes alive.
pub const CONTROL_LIVE_EDGES: &str = "roomcast_control_live_edges";
/// 1 while the process reports ready.
pub const READY: &str = "roomcast_ready";
/// Always 1; labels `version` and `role` say what runs.
pub const BUILD_INFO: &str = "roomcast_build_info";

/// The role `install` was called for, for `roomcast_build_info`.
static ROLE: OnceLock<&'static str> = OnceLock::new();

/// Installs the global recorder; the handle renders the exposition text.
pub fn install(role: crate::config::Role) -> anyhow::Result<PrometheusHandle> {
    // Latencies are histograms (not summaries), so dashboards can aggregate
    // them over every process.
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| anyhow::anyhow!("invalid histogram buckets: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    let _ = ROLE.set(role.name());
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    describe();
    use crate::config::Role;
    if role != Role::Control {
        roomcast_edge::describe_metrics();
    }
    if role != Role::Edge {
        roomcast_control::metrics::describe();
    }
    roomcast_presence::metrics::describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(NATS_CONNECTED, "1 while connected to a NATS server");
    describe_counter!(
        NATS_RECONNECTS,
        "NATS connections re-established after a loss"
    );
    describe_counter!(NATS_DISCONNECTS, "NATS connections lost");
    describe_counter!(NATS_DROPPED, "bus messages lost by a slow subscriber");
    describe_counter!(
        NATS_SLOW_CONSUMER_EVENTS,
        "slow-consumer events reported by the nats client"
    );
    describe_gauge!(EDGE_CONNECTIONS, "Engine.IO connections open on this edge");
    describe_gauge!(
        EDGE_CONNECTIONS_BY_TRANSPORT,
        "Engine.IO connections open on this edge, by transport"
    );
    describe_gauge!(EDGE_SOCKETS, "socket.io sockets on this edge, by namespace");
    describe_gauge!(
        EDGE_OUTBOUND_QUEUE_BYTES,
        metrics::Unit::Bytes,
        "bytes waiting in this edge's outbound queues"
    );
    describe_gauge!(
        EDGE_ROOM_SUBSCRIPTIONS,
        "room subjects this edge subscribes to"
    );
    describe_gauge!(
        EDGE_SESSION_RECORDS_QUEUED,
        "sockets whose recovery session record waits to be written"
    );
    describe_gauge!(
        EDGE_RELAYED_WEBSOCKETS,
        "websockets this edge relays to polling sessions held by other edges"
    );
    describe_gauge!(
        CONTROL_LIVE_EDGES,
        "edges this control plane believes alive"
    );
    describe_gauge!(READY, "1 while the process reports ready");
}

/// `roomcast_build_info` and the standard `process_*` metrics, in exposition
/// text, appended to what the recorder renders. They are written directly
/// because the recorder's counters are integers and CPU seconds are not.
/// Read from /proc at each scrape; on systems without /proc only
/// `roomcast_build_info` is there.
pub fn process_text() -> String {
    let mut out = String::new();
    let role = ROLE.get().copied().unwrap_or("unknown");
    let _ = writeln!(
        out,
        "# HELP {BUILD_INFO} the roomcast build and role of this process\n# TYPE {BUILD_INFO} gauge\n{BUILD_INFO}{{version=\"{}\",role=\"{role}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(p) = ProcSample::read() {
        p.write(&mut out);
    }
    out
}

/// What /proc says about this process.
#[derive(Debug, Default, PartialEq)]
struct ProcSample {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    threads: u64,
    start_time_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

/// Clock ticks per second of /proc's times: USER_HZ, fixed at 100 in Linux's
/// ABI whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

impl ProcSample {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let mut sample = Self::parse(&stat, &status)?;
        if let (Some(ticks), Ok(system)) = (
            sample.start_time_seconds,
            std::fs::read_to_string("/proc/stat"),
        ) {
            sample.start_time_seconds = boot_time(&system).map(|boot| boot + ticks);
        }
        sample.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        sample.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l));
        Some(sample)
    }

    /// From /proc/self/stat and /proc/self/status; `start_time_seconds` is
    /// seconds after boot here.
    fn parse(stat: &str, status: &str) -> Option<Self> {
        // The command name (field 2) is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): field n is fields[n - 3].
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|k| k * 1024)
        };
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
            threads: field(20)?,
            start_time_seconds: field(22).map(|t| t as f64 / USER_HZ),
            resident_bytes: kib("VmRSS:").unwrap_or(0),
            virtual_bytes: kib("VmSize:").unwrap_or(0),
            open_fds: None,
            max_fds: None,
        })
    }

    fn write(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "process_cpu_seconds_total",
            "counter",
            "user and system CPU time spent, seconds",
            self.cpu_seconds,
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "resident memory size, bytes",
            self.resident_bytes as f64,
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "virtual memory size, bytes",
            self.virtual_bytes as f64,
        );
        metric(
            "process_threads",
            "gauge",
            "operating system threads",
            self.threads as f64,
        );
        if let Some(v) = self.start_time_seconds {
            metric(
                "process_start_time_seconds",
                "gauge",
                "start time of the process since the unix epoch, seconds",
                v,
            );
        }
        if let Some(v) = self.open_fds {
            metric(
                "process_open_fds",
                "gauge",
                "open file descriptors",
                v as f64,
            );
        }
        if let Some(v) = self.max_fds {
            metric(
                "process_max_fds",
                "gauge",
                "limit of open file descriptors",
                v as f64,
            );
        }
    }
}

/// `btime` of /proc/stat: the boot time, seconds since the epoch.
fn boot_time(system: &str) -> Option<f64> {
    system
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// The soft limit of "Max open files" in /proc/self/limits.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (road (runner)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 150 0 0 20 0 7 0 123456 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 4096 17120 0 0 0 17 1 0 0 0 0 0";
    const STATUS: &str =
        "Name:\troomcast\nVmSize:\t  102400 kB\nVmRSS:\t   10240 kB\nThreads:\t7\n";

    #[test]
    fn parses_proc_stat_and_status() {
        let s = ProcSample::parse(STAT, STATUS).expect("parses");
        assert_eq!(s.cpu_seconds, 4.0);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start_time_seconds, Some(1234.56));
        assert_eq!(s.resident_bytes, 10240 * 1024);
        assert_eq!(s.virtual_bytes, 102400 * 1024);
        assert_eq!(ProcSample::parse("garbage", ""), None);
        assert_eq!(ProcSample::parse("1 (x) S", ""), None);
    }

    #[test]
    fn parses_limits_and_boot_time() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000.0)
        );
    }

    #[test]
    fn renders_this_process() {
        let text = process_text();
        assert!(text.contains("roomcast_build_info{version=\""), "{text}");
        if std::path::Path::new("/proc/self/stat").exists() {
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_open_fds ",
            ] {
                assert!(text.contains(name), "{name} missing: {text}");
            }
        }
    }
}
