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
