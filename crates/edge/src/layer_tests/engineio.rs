//! The Engine.IO session layer: the open packet, the heartbeat on a paused
//! clock, the connect timeout, close reasons, the flood limit, and the direct
//! write to an idle transport.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use roomcast_bus::envelope::Packet;
use roomcast_bus::MemoryBus;
use tokio::time::Instant;

use super::{edge_on, show, Client};
use crate::session::CloseReason;
use crate::sink::TransportKind;
use crate::transport::{DirectSink, Recorder};
use crate::EdgeConfig;

fn config() -> EdgeConfig {
    EdgeConfig {
        ping_interval: Duration::from_millis(1000),
        ping_timeout: Duration::from_millis(400),
        connect_timeout: Duration::from_secs(60),
        max_payload: 5000,
        ..EdgeConfig::default()
    }
}

/// The open packet's JSON, checked for its type.
fn open_json(packet: &str) -> serde_json::Value {
    let json = packet.strip_prefix('0').expect("an open packet");
    serde_json::from_str(json).expect("json")
}

#[tokio::test]
async fn the_open_packet_comes_first_with_the_sid_timings_and_upgrades() {
    let edge = edge_on(config(), Arc::default()).await;
    let polling = Client::open(&edge, TransportKind::Polling);
    let open = open_json(&polling.recv_one().await);
    assert_eq!(open["sid"], polling.session.sid.as_str());
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(open["pingInterval"], 1000);
    assert_eq!(open["pingTimeout"], 400);
    assert_eq!(open["maxPayload"], 5000);
    assert!(
        edge.find_session(&polling.session.sid).is_some(),
        "the session is found by its sid"
    );

    let ws = Client::open(&edge, TransportKind::WebSocket);
    let open = open_json(&ws.recv_on(TransportKind::WebSocket).await[0]);
    assert_eq!(
        open["upgrades"],
        serde_json::json!([]),
        "no upgrade from websocket"
    );
    assert_ne!(open["sid"], polling.session.sid.as_str());
    edge.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn pings_come_every_interval_and_a_missing_pong_closes_at_the_timeout() {
    let edge = edge_on(config(), Arc::default()).await;
    // The sweep looks a few times per shortest interval: pings are late by at
    // most one sweep period (a tenth of the ping timeout here).
    let sweep = Duration::from_millis(40);
    let client = Client::open(&edge, TransportKind::Polling);
    let opened = Instant::now();
    client.recv_one().await;
    client.connect("/").await;

    assert_eq!(client.recv_one().await, "2", "the first ping");
    let first_ping = opened.elapsed();
    assert!(
        first_ping >= Duration::from_millis(1000)
            && first_ping <= Duration::from_millis(1000) + sweep,
        "the first ping comes one interval after the open: {first_ping:?}"
    );
    // The pong just before its deadline keeps the session.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ponged = Instant::now();
    client.send("3").await.expect("pong");
    assert!(!client.session.is_closed());

    assert_eq!(client.recv_one().await, "2", "the second ping");
    let second = ponged.elapsed();
    assert!(
        second >= Duration::from_millis(1000) && second <= Duration::from_millis(1000) + sweep,
        "the next ping comes one interval after the pong: {second:?}"
    );
    let pinged = Instant::now();
    // No pong: the session closes at the ping timeout, counted from when the
    // ping was due, and a polling client learns it from its next GET.
    assert_eq!(client.closed().await, CloseReason::PingTimeout);
    let waited = pinged.elapsed();
    assert!(
        waited <= Duration::from_millis(400),
        "closed at the timeout, not a sweep later: {waited:?}"
    );
    assert!(
        waited + sweep >= Duration::from_millis(400),
        "not before the timeout: {waited:?}"
    );
    assert_eq!(client.recv().await, vec!["1"], "a close packet for the GET");
    assert!(
        edge.find_session(&client.session.sid)
            .is_none_or(|s| s.is_closed()),
        "closed: found only to answer the last GET"
    );
    edge.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_late_pong_is_a_ping_timeout_and_an_unasked_pong_changes_nothing() {
    let edge = edge_on(config(), Arc::default()).await;
    let client = Client::open(&edge, TransportKind::Polling);
    client.recv_one().await;
    client.connect("/").await;
    client
        .send("3")
        .await
        .expect("a pong nobody asked for is ignored");
    assert_eq!(client.recv_one().await, "2");
    // Past the deadline; the pong arrives before the sweep's close would.
    let late = Instant::now() + Duration::from_millis(400);
    tokio::time::advance(late - Instant::now()).await;
    assert_eq!(client.send("3").await, Err(CloseReason::PingTimeout));
    assert_eq!(client.closed().await, CloseReason::PingTimeout);
    edge.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_session_with_no_namespace_closes_at_the_connect_timeout() {
    let edge = edge_on(
        EdgeConfig {
            connect_timeout: Duration::from_millis(500),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(30),
            ..config()
        },
        Arc::default(),
    )
    .await;
    let idle = Client::open(&edge, TransportKind::Polling);
    let connected = Client::open(&edge, TransportKind::Polling);
    let opened = Instant::now();
    idle.recv_one().await;
    connected.recv_one().await;
    connected.connect("/").await;
    assert_eq!(idle.closed().await, CloseReason::ConnectTimeout);
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited <= Duration::from_millis(550),
        "closed one connect timeout after the open, give or take a sweep: {waited:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!connected.session.is_closed(), "a connected session stays");
    edge.shutdown().await;
}

#[tokio::test]
async fn close_reasons_of_what_the_client_sends() {
    let edge = edge_on(config(), Arc::default()).await;
    // A close packet is the client closing the transport.
    let c = Client::open(&edge, TransportKind::Polling);
    assert_eq!(c.send("1").await, Err(CloseReason::TransportClose));
    assert_eq!(c.closed().await, CloseReason::TransportClose);
    // Packets only the server sends, from the client, break the protocol.
    for forbidden in ["0", "2", "5"] {
        let c = Client::open(&edge, TransportKind::Polling);
        assert_eq!(
            c.send(forbidden).await,
            Err(CloseReason::ProtocolError),
            "{forbidden}"
        );
        assert_eq!(c.closed().await, CloseReason::ProtocolError);
    }
    // A noop changes nothing.
    let c = Client::open(&edge, TransportKind::Polling);
    c.send("6").await.expect("noop");
    assert!(!c.session.is_closed());
    // A close is recorded once: the first reason stays.
    edge.close_session(&c.session, CloseReason::ForcedClose);
    edge.close_session(&c.session, CloseReason::TransportError);
    assert_eq!(c.closed().await, CloseReason::ForcedClose);
    assert_eq!(
        c.recv().await.last().map(String::as_str),
        Some("1"),
        "a forced close tells a polling client"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn packets_past_the_rate_limit_close_the_session_as_a_flood() {
    let edge = edge_on(
        EdgeConfig {
            packets_per_sec: 5,
            ..config()
        },
        Arc::default(),
    )
    .await;
    let c = Client::open(&edge, TransportKind::Polling);
    let mut accepted = 0;
    let refused = loop {
        match c.send("6").await {
            Ok(()) => accepted += 1,
            Err(reason) => break reason,
        }
        assert!(accepted < 100, "the limit never applied");
    };
    assert_eq!(refused, CloseReason::Flood);
    assert!(accepted >= 5, "the budget is let through first: {accepted}");
    assert_eq!(c.closed().await, CloseReason::Flood);
    edge.shutdown().await;
}

/// Lets the writer of a WebSocket session go idle, as it is between writes.
fn writer_idle(client: &Client) {
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(client
        .session
        .outbox
        .poll_take(&mut cx, usize::MAX)
        .is_pending());
}

#[tokio::test]
async fn a_packet_for_an_idle_transport_is_written_by_the_fan_out_through_the_sink() {
    let edge = edge_on(config(), Arc::new(MemoryBus::default())).await;
    let client = Client::open(&edge, TransportKind::WebSocket);
    let stream = Arc::new(Recorder::default());
    client
        .session
        .outbox
        .switch_to_websocket(Some(DirectSink::Recorder(stream.clone())));
    // The open packet was queued before the stream was given: the writer has it.
    let open = client.recv_on(TransportKind::WebSocket).await;
    assert!(open[0].starts_with("0{"), "{open:?}");
    writer_idle(&client);
    client.send("40").await.expect("connect");
    let written: Vec<String> = stream
        .written
        .lock()
        .expect("lock")
        .iter()
        .map(show)
        .collect();
    assert_eq!(
        written.len(),
        1,
        "the CONNECT reply went to the stream: {written:?}"
    );
    assert!(written[0].starts_with("40{\"sid\":"), "{written:?}");
    assert_eq!(client.session.outbox.queued_bytes(), 0, "nothing queued");

    // A stream that takes nothing: the fan-out queues for the writer, in order.
    stream.blocked.store(true, Ordering::Release);
    let socket = client
        .session
        .sio()
        .sockets
        .get("/")
        .cloned()
        .expect("socket");
    for text in ["42[\"a\"]", "42[\"b\"]"] {
        let packet = Packet {
            text: bytes::Bytes::from_static(text.as_bytes()),
            attachments: Vec::new(),
        };
        edge.deliver(std::slice::from_ref(&socket), &packet, false, 0);
    }
    assert_eq!(stream.written.lock().expect("lock").len(), 1);
    assert_eq!(
        client.recv_on(TransportKind::WebSocket).await,
        vec!["42[\"a\"]", "42[\"b\"]"]
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn one_polling_request_of_each_kind_and_one_upgrade_probe_at_a_time() {
    use crate::session::PollingRequest;
    let edge = edge_on(config(), Arc::default()).await;
    let c = Client::open(&edge, TransportKind::Polling);
    let s = &c.session;
    assert!(s.begin_request(PollingRequest::Get));
    assert!(
        !s.begin_request(PollingRequest::Get),
        "a second GET overlaps"
    );
    assert!(
        s.begin_request(PollingRequest::Post),
        "a POST beside the GET"
    );
    s.end_request(PollingRequest::Get);
    assert!(
        s.begin_request(PollingRequest::Get),
        "the next GET after it"
    );
    assert!(!s.is_upgrading());
    assert!(s.begin_upgrade());
    assert!(s.is_upgrading());
    assert!(!s.begin_upgrade(), "one probe at a time");
    s.end_upgrade();
    assert!(s.begin_upgrade(), "a new probe after the first ended");
    edge.shutdown().await;
}
