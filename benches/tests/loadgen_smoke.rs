//! The load generator against a real `roomcast standalone`: a few dozen
//! messages to one room of 20 sockets arrive once each, and the report is
//! well-formed JSON. No timing is asserted.
//!
//! The roomcast binary is `ROOMCAST_BIN`, or `roomcast` next to this test's
//! target directory (built by `cargo test --workspace`, or `cargo build -p roomcast`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use roomcast_testkit::{binary, Process};

const SECRET: &str = "smoke-secret-0123456789abcdef";

fn roomcast_bin() -> PathBuf {
    // target/<profile>/deps/loadgen_smoke-HASH -> target/<profile>/roomcast
    let default = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("roomcast")))
        .unwrap_or_else(|| PathBuf::from("roomcast"));
    binary(&default)
}

async fn run_loadgen(args: &[String]) -> serde_json::Value {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_roomcast-loadgen"))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("loadgen finished within 60 s")
    .expect("loadgen ran");
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the report is json")
}

fn check_report(report: &serde_json::Value, connections: u64, messages: u64, recipients: u64) {
    assert_eq!(report["connected"], connections, "{report}");
    assert_eq!(report["connect_failures"], 0, "{report}");
    assert_eq!(report["disconnects"], 0, "{report}");
    assert_eq!(report["malformed"], 0, "{report}");
    let steps = report["steps"].as_array().expect("steps");
    let measured = steps.last().expect("a measured step");
    assert_eq!(measured["published"], messages, "{report}");
    assert_eq!(measured["publish_errors"], 0, "{report}");
    assert_eq!(measured["expected"], messages * recipients, "{report}");
    for s in steps {
        assert_eq!(s["lost"], 0, "{report}");
        assert_eq!(s["dup"], 0, "{report}");
        assert_eq!(s["delivered"], s["expected"], "{report}");
        for key in ["p50_us", "p99_us", "p999_us", "max_us"] {
            assert!(s["latency"][key].is_u64(), "{key} in {report}");
        }
    }
    assert!(
        report["server_rss_connected_kib"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
}

#[tokio::test]
async fn jwt_rooms_claim_and_grpc_emit_or_emit_stream_deliver_each_message_once() {
    let p = Process::standalone(
        &roomcast_bin(),
        &["--jwt-secret", SECRET, "--api-key", "smoke-key"],
    )
    .await
    .expect(
        "roomcast standalone starts (build it with cargo build -p roomcast, or set ROOMCAST_BIN)",
    );
    let pid = server_pid(&p).await;
    let args: Vec<String> = [
        "--target",
        "roomcast",
        "--ws",
        &p.http.to_string(),
        "--grpc",
        &p.grpc.to_string(),
        "--jwt-secret",
        SECRET,
        "--api-key",
        "smoke-key",
        "--connections",
        "20",
        "--rooms",
        "1",
        "--rates",
        "200",
        "--messages",
        "40",
        "--source-ips",
        "2",
        "--server-pid",
        &pid.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let report = run_loadgen(&args).await;
    check_report(&report, 20, 40, 20);
    // The same over EmitStream calls instead of a call per event.
    let streamed: Vec<String> = args
        .iter()
        .cloned()
        .chain(["--emit-streams".to_owned(), "2".to_owned()])
        .collect();
    check_report(&run_loadgen(&streamed).await, 20, 40, 20);
}

#[tokio::test]
async fn anonymous_sockets_joined_by_socket_id_get_every_message() {
    let p = Process::standalone(&roomcast_bin(), &["--allow-anonymous"])
        .await
        .expect("roomcast standalone starts");
    let pid = server_pid(&p).await;
    let args: Vec<String> = [
        "--ws",
        &p.http.to_string(),
        "--grpc",
        &p.grpc.to_string(),
        "--connections",
        "20",
        "--rooms",
        "4",
        "--rates",
        "500",
        "--messages",
        "40",
        "--server-pid",
        &pid.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let report = run_loadgen(&args).await;
    // 40 messages over 4 rooms of 5 sockets: 10 each, 5 recipients.
    check_report(&report, 20, 40, 5);
}

/// The pid of the process listening on the standalone's HTTP port.
async fn server_pid(p: &Process) -> u32 {
    let port = p.http.port();
    let out = tokio::process::Command::new("ss")
        .args(["-Htlnp", &format!("sport = :{port}")])
        .output()
        .await
        .expect("ss runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("pid=")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid listening on {port}: {text}"))
}
