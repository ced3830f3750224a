//! Session records for recovery (ADR 18), as the session store sees them:
//! written while the socket is connected and following its rooms, kept
//! without owner at a recoverable close, removed at a final one; and which
//! records a CONNECT with a pid may take.

use std::sync::Arc;
use std::time::Duration;

use roomcast_bus::envelope::Target;
use roomcast_bus::recovery::{Recovery, RecoveryConfig, SavedSession, SessionStore};
use roomcast_bus::subject::Subjects;
use roomcast_bus::Backend;

use super::{Client, WAIT};
use crate::session::CloseReason;
use crate::sink::TransportKind;
use crate::{Authenticator, Edge, EdgeConfig};

struct Cluster {
    backend: Backend,
    recovery: Recovery,
}

async fn cluster() -> Cluster {
    let backend = Backend::memory();
    let config = RecoveryConfig {
        rooms: vec!["feed-*".into()],
        window: Duration::from_secs(60),
        ..RecoveryConfig::default()
    };
    let recovery = Recovery {
        history: backend
            .history("history", Subjects::new("roomcast"), &config)
            .await
            .expect("history"),
        sessions: backend
            .sessions("sessions", &config)
            .await
            .expect("sessions"),
        config,
    };
    Cluster { backend, recovery }
}

impl Cluster {
    async fn edge(&self, node: &str) -> Edge {
        let config = EdgeConfig {
            node_id: node.to_owned(),
            ..EdgeConfig::default()
        };
        let auth = Authenticator::new(None, true).expect("anonymous auth");
        Edge::start(
            config,
            auth,
            self.backend.bus(),
            None,
            Some(self.recovery.clone()),
        )
        .await
        .expect("edge starts")
    }

    fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.recovery.sessions
    }

    /// Waits until the record of `pid` passes `check` (`None`: no record).
    async fn record_until(
        &self,
        pid: &str,
        what: &str,
        check: impl Fn(Option<&SavedSession>) -> bool,
    ) -> Option<SavedSession> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let record = self
                .sessions()
                .get(pid)
                .await
                .expect("store")
                .map(|(s, _)| s);
            if check(record.as_ref()) {
                return record;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {record:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Opens a connection and connects "/" with `auth`; returns the CONNECT
/// reply's sid and pid.
async fn connect(edge: &Edge, auth: &str) -> (Client, String, String) {
    let c = Client::open(edge, TransportKind::Polling);
    c.recv_one().await;
    c.send(&format!("40{auth}"))
        .await
        .expect("connect accepted");
    let reply = c.recv_one().await;
    let json = reply.strip_prefix("40").expect("a CONNECT reply");
    let v: serde_json::Value = serde_json::from_str(json).expect("json");
    let sid = v["sid"].as_str().expect("sid").to_owned();
    let pid = v["pid"].as_str().expect("pid").to_owned();
    (c, sid, pid)
}

fn sockets(ids: &[&str]) -> Target {
    Target {
        ns: "/".into(),
        sockets: ids.iter().map(|s| (*s).to_owned()).collect(),
        ..Target::default()
    }
}

#[tokio::test]
async fn a_connected_socket_has_a_record_that_follows_its_rooms_and_its_close() {
    let cluster = cluster().await;
    let edge = cluster.edge("edge-a").await;
    let (c, sid, pid) = connect(&edge, "").await;
    let live = cluster
        .record_until(&pid, "a live record", |r| r.is_some())
        .await
        .expect("record");
    assert_eq!(
        (live.sid.as_str(), live.owner.as_deref()),
        (sid.as_str(), Some("edge-a"))
    );
    edge.apply_rooms(
        &sockets(&[&sid]),
        None,
        &["feed-1".into(), "lobby".into()],
        true,
    )
    .await;
    cluster
        .record_until(&pid, "the joined rooms", |r| {
            r.is_some_and(|r| {
                r.rooms.contains(&"feed-1".into()) && r.rooms.contains(&"lobby".into())
            })
        })
        .await;
    // A recoverable close keeps it, without owner, with its rooms.
    edge.close_session(&c.session, CloseReason::TransportClose);
    let kept = cluster
        .record_until(&pid, "the record of the closed socket", |r| {
            r.is_some_and(|r| r.owner.is_none())
        })
        .await
        .expect("record");
    let mut rooms = kept.rooms.clone();
    rooms.sort();
    assert_eq!(rooms, vec!["feed-1".to_owned(), "lobby".to_owned()]);

    // A DISCONNECT is final: the record goes.
    let (c2, _, pid2) = connect(&edge, "").await;
    cluster
        .record_until(&pid2, "a live record", |r| r.is_some())
        .await;
    c2.send("41").await.expect("disconnect");
    cluster
        .record_until(&pid2, "the record to go", |r| r.is_none())
        .await;
    edge.shutdown().await;
}

#[tokio::test]
async fn a_record_is_taken_only_from_an_edge_that_no_longer_holds_the_socket() {
    let cluster = cluster().await;
    let a = cluster.edge("edge-a").await;
    let b = cluster.edge("edge-b").await;
    let (_held, sid, pid) = connect(&a, "").await;
    cluster
        .record_until(&pid, "a live record", |r| r.is_some())
        .await;
    let auth = format!(r#"{{"pid":"{pid}","offset":"0"}}"#);
    // Still connected on edge-a, which says so: a fresh socket on edge-b.
    let (_fresh, other, _) = connect(&b, &auth).await;
    assert_ne!(other, sid, "not taken over");
    assert!(a.read_index().socket(&sid).is_some());
    assert!(cluster.sessions().get(&pid).await.expect("store").is_some());

    // A record whose owner answers without the socket (it restarted, say)
    // is taken: the socket comes back with its id on edge-b.
    let mut orphan = cluster
        .sessions()
        .get(&pid)
        .await
        .expect("store")
        .expect("record")
        .0;
    orphan.pid = roomcast_bus::names::new_id();
    orphan.sid = roomcast_bus::names::new_socket_id("zzzzz");
    cluster.sessions().save(&orphan).await.expect("save");
    let auth = format!(r#"{{"pid":"{}","offset":"0"}}"#, orphan.pid);
    let (_back, got, got_pid) = connect(&b, &auth).await;
    assert_eq!(
        (got.as_str(), got_pid.as_str()),
        (orphan.sid.as_str(), orphan.pid.as_str())
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn with_presence_off_a_record_of_an_edge_that_does_not_answer_is_not_taken() {
    let cluster = cluster().await;
    let b = cluster.edge("edge-b").await;
    // The owner listens (hung, not gone) but never answers.
    let _silent = cluster
        .backend
        .bus()
        .subscribe(&Subjects::new("roomcast").node("edge-silent"), None)
        .await
        .expect("subscribe");
    let record = SavedSession {
        sid: roomcast_bus::names::new_socket_id("zzzzz"),
        pid: roomcast_bus::names::new_id(),
        ns: "/".into(),
        user: String::new(),
        rooms: vec!["feed-1".into()],
        data_json: String::new(),
        saved_at_ms: 0,
        owner: Some("edge-silent".into()),
    };
    cluster.sessions().save(&record).await.expect("save");
    let auth = format!(r#"{{"pid":"{}","offset":"0"}}"#, record.pid);
    let (_fresh, got, _) = connect(&b, &auth).await;
    assert_ne!(got, record.sid, "a fresh socket");
    assert!(
        cluster
            .sessions()
            .get(&record.pid)
            .await
            .expect("store")
            .is_some(),
        "the record stays"
    );
    b.shutdown().await;
}
