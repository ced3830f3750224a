//! The Socket.IO layer over the session: namespace CONNECT and its errors,
//! events relayed to the bus with their attachments reassembled, acks both
//! ways of a NATS reply, DISCONNECT, and what closes the connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roomcast_bus::envelope::ClientEvent;
use roomcast_bus::subject::Subjects;
use roomcast_bus::{Bus, Headers, MemoryBus, Subscription};

use super::{edge_on, edge_with_auth, Client, WAIT};
use crate::session::CloseReason;
use crate::sink::TransportKind;
use crate::{Authenticator, EdgeConfig, JwtConfig};

fn config() -> EdgeConfig {
    EdgeConfig {
        namespaces: vec!["/".into(), "/chat".into()],
        max_payload: 64,
        max_attachments: 3,
        ..EdgeConfig::default()
    }
}

async fn next_event(sub: &mut Subscription) -> (ClientEvent, Option<String>) {
    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("an event in time")
        .expect("bus open");
    let reply = msg.reply.clone();
    (
        ClientEvent::decode(&msg.headers, msg.payload).expect("a client event"),
        reply,
    )
}

async fn opened(edge: &crate::Edge) -> Client {
    let c = Client::open(edge, TransportKind::Polling);
    c.recv_one().await;
    c
}

#[tokio::test]
async fn namespaces_connect_and_unknown_ones_are_refused_without_closing() {
    let edge = edge_on(config(), Arc::default()).await;
    let c = opened(&edge).await;
    c.send("40/nope,").await.expect("a refusal is not an error");
    assert_eq!(
        c.recv_one().await,
        r#"44/nope,{"message":"Invalid namespace"}"#
    );
    let root = c.connect("/").await;
    let chat = c.connect("/chat").await;
    assert_ne!(root, chat, "a socket per namespace");
    assert!(c.session.sio().sockets.contains_key("/chat"));
    assert!(!c.session.is_closed());
    // Connecting a namespace twice breaks the protocol.
    assert_eq!(c.send("40/chat,").await, Err(CloseReason::ProtocolError));
    assert_eq!(c.closed().await, CloseReason::ProtocolError);
    edge.shutdown().await;
}

#[tokio::test]
async fn a_connect_without_a_valid_token_gets_a_connect_error() {
    let jwt = JwtConfig {
        hs256_secret: Some(b"a secret of the tests".to_vec()),
        rooms_claim: "rooms".into(),
        ..JwtConfig::default()
    };
    let auth = Authenticator::new(Some(&jwt), false).expect("auth");
    let edge = edge_with_auth(config(), Arc::default(), auth).await;
    let c = opened(&edge).await;
    for (connect, message) in [
        ("40", "missing token"),
        (r#"40{"token":5}"#, "invalid token: token must be a string"),
    ] {
        c.send(connect).await.expect("a refusal is not an error");
        let reply = c.recv_one().await;
        let json = reply.strip_prefix("44").expect("a CONNECT_ERROR");
        let v: serde_json::Value = serde_json::from_str(json).expect("json");
        assert_eq!(v["message"], message, "{connect}");
    }
    c.send(r#"40{"token":"not.a.jwt"}"#).await.expect("refusal");
    let reply = c.recv_one().await;
    assert!(
        reply.starts_with(r#"44{"message":"invalid token"#),
        "{reply}"
    );
    assert!(c.session.sio().sockets.is_empty(), "no socket connected");
    assert!(!c.session.is_closed(), "the client may try again");
    edge.shutdown().await;
}

#[tokio::test]
async fn events_reach_the_bus_with_their_attachments_reassembled() {
    let bus = Arc::new(MemoryBus::default());
    let edge = edge_on(config(), bus.clone()).await;
    let subjects = Subjects::new(&edge.config().cluster);
    let mut events = bus
        .subscribe(&subjects.client_events(Some("/chat"), Some("upload")), None)
        .await
        .expect("subscribe");
    let c = opened(&edge).await;
    let socket = c.connect("/chat").await;
    c.send(r#"452-/chat,["upload",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await
        .expect("header");
    c.send_binary(&[1, 2, 3]).await.expect("first attachment");
    assert!(
        events.try_next().is_none(),
        "nothing is relayed before the last attachment"
    );
    c.send_binary(&[4, 5]).await.expect("second attachment");
    let (ev, reply) = next_event(&mut events).await;
    assert_eq!((ev.ns.as_str(), ev.event.as_str()), ("/chat", "upload"));
    assert_eq!(ev.socket, socket);
    assert_eq!(
        ev.attachments,
        vec![Bytes::from_static(&[1, 2, 3]), Bytes::from_static(&[4, 5])]
    );
    assert_eq!(ev.ack_id, None);
    assert_eq!(reply, None, "no ack asked, no reply subject");

    // A plain event after it is its own message, in order.
    c.send(r#"42/chat,["upload","text"]"#).await.expect("event");
    let (ev, _) = next_event(&mut events).await;
    assert!(ev.attachments.is_empty());
    assert!(ev.args_json.contains("text"), "{}", ev.args_json);
    edge.shutdown().await;
}

#[tokio::test]
async fn attachments_past_the_limits_close_the_connection() {
    let edge = edge_on(config(), Arc::default()).await;
    // More attachments announced than allowed.
    let c = opened(&edge).await;
    c.connect("/").await;
    assert_eq!(
        c.send(r#"454-["up",{"_placeholder":true,"num":0}]"#).await,
        Err(CloseReason::ProtocolError)
    );
    // Attachments piling up past the payload limit.
    let c = opened(&edge).await;
    c.connect("/").await;
    c.send(r#"452-["up",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await
        .expect("header");
    assert_eq!(
        c.send_binary(&[0u8; 100]).await,
        Err(CloseReason::MessageTooBig)
    );
    assert_eq!(c.closed().await, CloseReason::MessageTooBig);
    edge.shutdown().await;
}

#[tokio::test]
async fn a_client_event_ack_comes_back_from_the_bus_reply() {
    let bus = Arc::new(MemoryBus::default());
    let edge = edge_on(config(), bus.clone()).await;
    let subjects = Subjects::new(&edge.config().cluster);
    let mut events = bus
        .subscribe(&subjects.client_events(Some("/"), Some("ask")), None)
        .await
        .expect("subscribe");
    let c = opened(&edge).await;
    c.connect("/").await;
    c.send(r#"4217["ask",1]"#).await.expect("event with ack");
    let (ev, reply) = next_event(&mut events).await;
    assert_eq!(ev.ack_id, Some(17));
    let reply = reply.expect("a reply subject for the ack");
    // The backend answers with a plain reply: the ack's arguments.
    bus.publish(
        &reply,
        Headers::default(),
        Bytes::from_static(br#"["ok",2]"#),
        None,
    )
    .await
    .expect("publish");
    assert_eq!(c.recv_one().await, r#"4317["ok",2]"#);
    edge.shutdown().await;
}

#[tokio::test]
async fn disconnect_ends_the_socket_and_later_packets_for_it_break_the_protocol() {
    let edge = edge_on(config(), Arc::default()).await;
    let c = opened(&edge).await;
    c.connect("/").await;
    c.connect("/chat").await;
    c.send("41/chat,").await.expect("disconnect");
    assert!(!c.session.sio().sockets.contains_key("/chat"));
    assert!(c.session.sio().sockets.contains_key("/"), "the other stays");
    assert!(!c.session.is_closed(), "the connection stays");
    c.send(r#"42["still here"]"#).await.expect("event on /");
    assert_eq!(
        c.send(r#"42/chat,["gone"]"#).await,
        Err(CloseReason::ProtocolError)
    );
    assert_eq!(c.closed().await, CloseReason::ProtocolError);
    edge.shutdown().await;
}

#[tokio::test]
async fn the_close_lets_the_sockets_go_from_their_rooms() {
    let edge = edge_on(config(), Arc::default()).await;
    let c = opened(&edge).await;
    let id = c.connect("/").await;
    assert!(edge.read_index().socket(&id).is_some(), "indexed");
    assert_eq!(edge.gauges().polling_connections, 1);
    edge.close_session(&c.session, CloseReason::TransportClose);
    assert!(c.session.sio().sockets.is_empty());
    let deadline = tokio::time::Instant::now() + WAIT;
    while edge.read_index().socket(&id).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the socket left the index"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(edge.gauges().polling_connections, 0);
    edge.shutdown().await;
}
