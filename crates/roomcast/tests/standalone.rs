//! `roomcast standalone` as a process: configuration errors, gRPC argument
//! checks and API keys, health, clean shutdown.

use std::path::Path;
use std::time::Duration;

use roomcast_api::v1::{EmitRequest, ReplyRequest, RoomsRequest, Selector};
use roomcast_testkit::{binary, Process};
use tonic::metadata::MetadataValue;
use tonic::Code;

fn bin() -> std::path::PathBuf {
    binary(Path::new(env!("CARGO_BIN_EXE_roomcast")))
}

fn emit(rooms: &[&str], event: &str, args: &str) -> EmitRequest {
    EmitRequest {
        to: Some(Selector {
            rooms: rooms.iter().map(|s| s.to_string()).collect(),
            ..Selector::default()
        }),
        event: event.into(),
        args_json: args.into(),
        ..EmitRequest::default()
    }
}

#[tokio::test]
async fn invalid_arguments_get_invalid_argument() {
    let p = Process::standalone(&bin(), &["--allow-anonymous"])
        .await
        .expect("start");
    let mut c = p.client().await.expect("client");
    c.emit(emit(&["lobby"], "chat", "[1,\"two\"]"))
        .await
        .expect("a valid emit");

    let too_long = "x".repeat(257);
    let cases: Vec<(EmitRequest, &str)> = vec![
        (emit(&[""], "chat", "[]"), "room"),
        (emit(&[too_long.as_str()], "chat", "[]"), "room"),
        (emit(&["r"], "", "[]"), "event name"),
        (emit(&["r"], "connect", "[]"), "reserved"),
        (emit(&["r"], "chat", "{\"not\":\"an array\"}"), "json array"),
        (emit(&["r"], "chat", "[1,"), "json array"),
        (
            EmitRequest {
                attachments: vec![vec![1, 2, 3]],
                ..emit(&["r"], "chat", "[1]")
            },
            "placeholder",
        ),
        (
            EmitRequest {
                to: Some(Selector {
                    namespace: "admin".into(),
                    ..Selector::default()
                }),
                ..emit(&[], "chat", "[]")
            },
            "namespace",
        ),
        (
            EmitRequest {
                args_json: format!("[\"{}\"]", "x".repeat(1_000_001)),
                ..emit(&["r"], "chat", "")
            },
            "max payload",
        ),
    ];
    for (req, words) in cases {
        let err = c.emit(req.clone()).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{req:?}: {err:?}");
        assert!(
            err.message().contains(words),
            "{:?} should mention {words:?}",
            err.message()
        );
    }

    let err = c
        .join_rooms(RoomsRequest {
            target: Some(Selector::default()),
            rooms: vec![],
        })
        .await
        .expect_err("no rooms");
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = c
        .reply(ReplyRequest {
            reply_to: "somewhere.else".into(),
            socket_id: "s".into(),
            ack_id: 1,
            ..ReplyRequest::default()
        })
        .await
        .expect_err("reply_to outside the cluster's node subjects");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn api_keys_are_required_when_configured() {
    let p = Process::standalone(
        &bin(),
        &["--allow-anonymous", "--api-key", "k1", "--api-key", "k2"],
    )
    .await
    .expect("start");
    let mut c = p.client().await.expect("client");
    let err = c.emit(emit(&["r"], "e", "[]")).await.expect_err("no key");
    assert_eq!(err.code(), Code::Unauthenticated);

    let with_key = |key: &str| {
        let mut req = tonic::Request::new(emit(&["r"], "e", "[]"));
        let value: MetadataValue<_> = format!("Bearer {key}").parse().expect("ascii");
        req.metadata_mut().insert("authorization", value);
        req
    };
    let err = c.emit(with_key("wrong")).await.expect_err("wrong key");
    assert_eq!(err.code(), Code::Unauthenticated);
    c.emit(with_key("k2")).await.expect("second key accepted");
}

#[tokio::test]
async fn health_reports_serving_and_sigterm_exits_cleanly() {
    let p = Process::standalone(&bin(), &["--allow-anonymous"])
        .await
        .expect("start");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", p.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "roomcast.v1.Roomcast".into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let exit = p.terminate(Duration::from_secs(10)).await.expect("exits");
    assert!(exit.success(), "exit status {exit:?}");
}

fn run_expecting_failure(args: &[&str]) -> String {
    let out = std::process::Command::new(bin())
        .args(args)
        .env_remove("ROOMCAST_ALLOW_ANONYMOUS")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{args:?} should be refused");
    assert!(
        out.stdout.is_empty(),
        "nothing listened: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_configuration_is_refused_before_listening() {
    let err = run_expecting_failure(&["standalone", "--listen", "127.0.0.1:0"]);
    assert!(err.contains("--allow-anonymous"), "{err}");
    let err =
        run_expecting_failure(&["standalone", "--allow-anonymous", "--ping-interval-ms", "0"]);
    assert!(err.contains("ping-interval-ms"), "{err}");
    let err = run_expecting_failure(&["standalone", "--allow-anonymous", "--namespace", "admin"]);
    assert!(err.contains("namespace"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("roomcast.toml");
    std::fs::write(&file, "allow_anonymous = true\nlisten_port = 1\n").expect("write");
    let err = run_expecting_failure(&["standalone", "--config", file.to_str().expect("utf8")]);
    assert!(err.contains("listen_port"), "unknown key named: {err}");
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_exits() {
    let p = Process::standalone(&bin(), &["--allow-anonymous"])
        .await
        .expect("start");
    let mut c = p.client().await.expect("client");
    let mut events = c
        .consume_events(roomcast_api::v1::ConsumeEventsRequest::default())
        .await
        .expect("consume")
        .into_inner();
    let mut presence = c
        .watch_presence(roomcast_api::v1::WatchPresenceRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let exit = p.terminate(Duration::from_secs(10)).await.expect("exits");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        !matches!(events.message().await, Ok(Some(_))),
        "the event stream ended"
    );
    assert!(
        !matches!(presence.message().await, Ok(Some(_))),
        "the presence stream ended"
    );
}
