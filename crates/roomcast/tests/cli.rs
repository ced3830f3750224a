//! The API subcommands (`roomcast emit`, `rooms`, `sockets`, `disconnect`)
//! against a real `roomcast standalone`: output, exit codes, errors. Sockets
//! seen through the CLI are covered by the end-to-end suite, which has clients.

use std::path::Path;

use roomcast_testkit::{binary, Process};

fn bin() -> std::path::PathBuf {
    binary(Path::new(env!("CARGO_BIN_EXE_roomcast")))
}

/// Runs the CLI against `p`; returns (exit code, stdout, stderr).
async fn cli(p: &Process, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(bin())
        .args(args)
        .args(["--server", &format!("http://{}", p.grpc)])
        .env_remove("ROOMCAST_API_KEY")
        .output()
        .await
        .expect("cli runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn api_subcommands_print_results_and_fail_with_the_grpc_error() {
    let p = Process::standalone(&bin(), &["--allow-anonymous", "--api-key", "k1"])
        .await
        .expect("start");

    let (code, out, _) = cli(&p, &["rooms", "--api-key", "k1", "--json"]).await;
    assert_eq!(code, 0);
    let rooms: serde_json::Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(rooms["rooms"], serde_json::json!([]));

    let (code, out, _) = cli(
        &p,
        &["emit", "news", "[1]", "-r", "lobby", "--api-key", "k1"],
    )
    .await;
    assert_eq!((code, out.trim()), (0, "emitted"));

    let (code, out, _) = cli(
        &p,
        &["sockets", "--user", "alice", "--api-key", "k1", "--json"],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(out.trim(), r#"{"sockets":[]}"#);

    let (code, out, _) = cli(&p, &["disconnect", "-r", "lobby", "--api-key", "k1"]).await;
    assert_eq!((code, out.trim()), (0, "disconnected 0"));

    let (code, out, err) = cli(&p, &["emit", "news", "[1", "--api-key", "k1"]).await;
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("InvalidArgument") && err.contains("json array"),
        "{err}"
    );

    let (code, _, err) = cli(&p, &["rooms"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("Unauthenticated"), "{err}");

    let (code, _, err) = cli(&p, &["emit", "news", "-r", "", "--api-key", "k1"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("room name"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let out = std::process::Command::new(bin())
        .args(["rooms", "--server", &format!("http://127.0.0.1:{port}")])
        .output()
        .expect("cli runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach"), "{err}");
}

/// A flag of a setting the role does not use is refused before anything
/// starts; the same setting in the environment is left alone (one
/// environment may serve every role), so the process goes on to its next
/// step (here: a NATS server that is not there).
#[tokio::test]
async fn a_role_refuses_the_flags_it_does_not_use() {
    let run = |args: &'static [&'static str], env: &'static [(&'static str, &'static str)]| async move {
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().await.expect("runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(
        &[
            "control",
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            "0123456789abcdef",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--listen, --jwt-secret do not apply to `roomcast control`: a control plane serves no client port"),
        "{err}"
    );
    let (code, err) = run(&["edge", "--api-key", "k"], &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--api-key does not apply to `roomcast edge`"),
        "{err}"
    );

    let (code, err) = run(
        &[
            "control",
            "--nats-url",
            "nats://127.0.0.1:1",
            "--grpc-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[("ROOMCAST_LISTEN", "127.0.0.1:0")],
    )
    .await;
    assert_ne!(code, 0);
    assert!(!err.contains("does not apply"), "{err}");
}
