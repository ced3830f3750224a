//! Test kit: starts real `roomcast` processes on loopback and hands back their
//! addresses, for integration tests (dev only).
//!
//! Processes listen on `127.0.0.1:0`; the kit reads the ports from the one line
//! the binary prints on stdout when it is ready, so tests never guess a free
//! port. A [`Process`] is killed when dropped, so a failing test leaves nothing
//! running. Waiting is done by polling a condition with a deadline
//! ([`wait_for`], or [`wait_until`] outside a runtime), never by sleeping a
//! fixed time.

#![forbid(unsafe_code)]

pub mod nats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use roomcast_api::v1::roomcast_client::RoomcastClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// How long a process may take to print its ready line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running roomcast process.
pub struct Process {
    child: Child,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
}

/// Parses `roomcast listening http=ADDR grpc=ADDR`.
pub fn parse_ready_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.strip_prefix("roomcast listening ")?;
    let mut http = None;
    let mut grpc = None;
    for part in rest.split_whitespace() {
        if let Some(v) = part.strip_prefix("http=") {
            http = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("grpc=") {
            grpc = v.parse().ok();
        }
    }
    Some((http?, grpc?))
}

/// The binary under test: `ROOMCAST_BIN`, or the given default (tests in the
/// binary's crate pass `env!("CARGO_BIN_EXE_roomcast")`).
pub fn binary(default: &Path) -> PathBuf {
    std::env::var_os("ROOMCAST_BIN").map_or_else(|| default.to_path_buf(), PathBuf::from)
}

impl Process {
    /// Starts `roomcast standalone` on loopback with extra flags.
    pub async fn standalone(bin: &Path, extra: &[&str]) -> anyhow::Result<Process> {
        let mut cmd = Command::new(bin);
        cmd.arg("standalone")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("ROOMCAST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addrs) = parse_ready_line(&line) {
                    return Ok(Some(addrs));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let (http, grpc) = match ready {
            Ok(Ok(Some(addrs))) => addrs,
            Ok(Ok(None)) => bail!(
                "roomcast exited before it was ready: {:?}",
                child.wait().await
            ),
            Ok(Err(e)) => return Err(e).context("reading roomcast's stdout"),
            Err(_) => bail!("roomcast was not ready within {START_TIMEOUT:?}"),
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Process { child, http, grpc })
    }

    /// A gRPC client of this process.
    pub async fn client(&self) -> anyhow::Result<RoomcastClient<Channel>> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc))?
            .connect()
            .await
            .context("cannot connect to the grpc port")?;
        Ok(RoomcastClient::new(channel))
    }

    /// Sends SIGTERM and waits for the exit status, killing after `timeout`.
    pub async fn terminate(
        mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("process already gone")?;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                bail!("roomcast did not exit within {timeout:?} of SIGTERM")
            }
        }
    }
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn wait_for<F, Fut>(timeout: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` until it gives a value or `timeout` passes, for tests
/// outside an async runtime (waiting on a child process, a file).
pub fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if std::time::Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        let (h, g) =
            parse_ready_line("roomcast listening http=127.0.0.1:3000 grpc=127.0.0.1:50051")
                .expect("parses");
        assert_eq!((h.port(), g.port()), (3000, 50051));
        assert!(parse_ready_line("something else").is_none());
        assert!(parse_ready_line("roomcast listening http=127.0.0.1:3000").is_none());
    }
}
