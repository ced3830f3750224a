//! `deploy/cluster.sh` starts nats-server, two edges and a control plane that
//! work together, and stops all of them on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// GET over plain HTTP/1.0; the status code, or None when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn cluster_script_starts_a_working_cluster_and_stops_it() {
    let Some(nats) = roomcast_testkit::nats::nats_server_bin() else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/cluster.sh");
    let dir = tempfile::tempdir().expect("tempdir");
    let names = [
        "RC_NATS_PORT",
        "RC_NATS_MONITOR_PORT",
        "RC_EDGE1_PORT",
        "RC_EDGE2_PORT",
        "RC_EDGE1_ADMIN_PORT",
        "RC_EDGE2_ADMIN_PORT",
        "RC_GRPC_PORT",
        "RC_CONTROL_ADMIN_PORT",
    ];
    let ports: Vec<(&str, u16)> = names.iter().map(|n| (*n, free_port())).collect();
    let port = |name: &str| {
        ports
            .iter()
            .find(|(n, _)| *n == name)
            .map(|p| p.1)
            .expect("port")
    };
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .env("ROOMCAST_BIN", env!("CARGO_BIN_EXE_roomcast"))
        .env("NATS_SERVER_BIN", &nats)
        .env("RC_DIR", dir.path())
        .env_remove("ROOMCAST_JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, p) in &ports {
        cmd.env(name, p.to_string());
    }
    let mut child = cmd.spawn().expect("script starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the script says the cluster is ready");
        if line.contains("roomcast cluster ready") {
            break;
        }
    }
    for name in [
        "RC_EDGE1_ADMIN_PORT",
        "RC_EDGE2_ADMIN_PORT",
        "RC_CONTROL_ADMIN_PORT",
    ] {
        assert_eq!(
            http_status(port(name), "/readyz"),
            Some(200),
            "{name} ready"
        );
    }
    // The control plane knows both edges.
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port("RC_CONTROL_ADMIN_PORT")))
            .expect("admin");
        write!(s, "GET /metrics HTTP/1.0\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    };
    assert!(
        metrics.contains("roomcast_control_live_edges 2"),
        "{metrics}"
    );

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    roomcast_testkit::wait_until(Duration::from_secs(30), || child.try_wait().expect("wait"))
        .expect("the script did not stop");
    for (name, p) in &ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", *p)).is_err(),
            "{name} still listens after the script stopped"
        );
    }
}
