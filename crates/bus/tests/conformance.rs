//! The backend contract, one test function per behaviour, run over both
//! implementations: the memory backend, and NATS against a real nats-server
//! (JetStream on). Whatever the code above the seam relies on is asserted
//! here for both.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use roomcast_bus::nats::{NatsBus, NatsOptions};
use roomcast_bus::recovery::{self, RecoveryConfig, RecoveryError, SavedSession};
use roomcast_bus::subject::Subjects;
use roomcast_bus::{Backend, Change, Headers, KvBucket, KvError, KvStore, Message, Subscription};
use roomcast_testkit::nats::NatsServer;

const WAIT: Duration = Duration::from_secs(10);

/// A backend under test, with the server it runs on (if any) kept alive.
struct Under {
    backend: Backend,
    _server: Option<NatsServer>,
}

impl Under {
    fn memory() -> Under {
        Under {
            backend: Backend::memory(),
            _server: None,
        }
    }

    async fn nats(bin: &std::path::Path) -> Under {
        let server = NatsServer::start(bin);
        let bus = NatsBus::connect(NatsOptions::new([server.url.clone()]))
            .await
            .expect("connect to nats");
        Under {
            backend: Backend::nats(bus),
            _server: Some(server),
        }
    }
}

/// Each function once over memory and once over NATS.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Under::memory()).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test]
                async fn $test() {
                    let bin = roomcast_testkit::require_nats!();
                    super::$test(super::Under::nats(&bin).await).await;
                }
            )*
        }
    };
}

conformance!(
    bus_routes_by_subject_and_wildcards,
    bus_queue_groups_share_messages,
    bus_request_many_gathers_replies,
    kv_swaps_lists_and_watches,
    kv_stores_are_opened_by_name,
    kv_watches_say_when_they_are_caught_up,
    history_numbers_publishes_and_replays_per_room,
    history_past_its_byte_bound_is_lost,
    histories_are_opened_by_name,
    sessions_recover_once,
    sessions_take_only_well_formed_pids,
    sessions_write_by_revision,
);

async fn publish(under: &Under, subject: &str, headers: Headers, body: &'static [u8]) {
    under
        .backend
        .bus()
        .publish(subject, headers, Bytes::from_static(body), None)
        .await
        .expect("publish");
}

async fn bus_routes_by_subject_and_wildcards(under: Under) {
    let mut exact = live(&under, "w.a.b").await;
    let mut one = live(&under, "w.a.*").await;
    let mut rest = live(&under, "w.a.>").await;
    let mut headers = Headers::new();
    headers.append("rc-k", "1");
    headers.append("rc-k", "2");
    headers.append("rc-other", "x y");
    publish(&under, "w.a.b", headers, b"\x00\xffbinary").await;
    for sub in [&mut exact, &mut one, &mut rest] {
        let msg = recv(sub).await;
        assert_eq!(msg.subject, "w.a.b");
        assert_eq!(&msg.payload[..], b"\x00\xffbinary");
        let values: Vec<&str> = msg.headers.get_all("rc-k").collect();
        assert_eq!(values, vec!["1", "2"]);
        assert_eq!(msg.headers.get("rc-other"), Some("x y"));
    }
    // `*` is one token, `>` the rest: what one publisher sends after a
    // message a subscriber does not match is the next thing it gets.
    publish(&under, "w.a.b.c", Headers::new(), b"deep").await;
    publish(&under, "w.a.z", Headers::new(), b"z").await;
    assert_eq!(recv(&mut rest).await.subject, "w.a.b.c");
    assert_eq!(recv(&mut rest).await.subject, "w.a.z");
    assert_eq!(recv(&mut one).await.subject, "w.a.z");
    publish(&under, "w.a.b", Headers::new(), b"again").await;
    assert_eq!(&recv(&mut exact).await.payload[..], b"again");
    assert_eq!(&recv(&mut rest).await.payload[..], b"again");
    // Dropping a subscription unsubscribes; the others still get messages.
    drop(one);
    publish(&under, "w.a.y", Headers::new(), b"y").await;
    assert_eq!(recv(&mut rest).await.subject, "w.a.y");
}

async fn bus_queue_groups_share_messages(under: Under) {
    let bus = under.backend.bus();
    let mut a = bus.subscribe("q.t", Some("workers")).await.expect("sub");
    let mut b = bus.subscribe("q.t", Some("workers")).await.expect("sub");
    let mut all = bus.subscribe("q.t", None).await.expect("sub");
    bus.sync().await.expect("sync");
    const N: usize = 20;
    for _ in 0..N {
        publish(&under, "q.t", Headers::new(), b"job").await;
    }
    publish(&under, "q.t", Headers::new(), b"end").await;
    for _ in 0..N {
        assert_eq!(&recv(&mut all).await.payload[..], b"job");
    }
    assert_eq!(
        &recv(&mut all).await.payload[..],
        b"end",
        "all of them, once"
    );
    // Each message goes to one member of the group.
    let (mut jobs, mut ends) = (0, 0);
    while jobs + ends < N + 1 {
        let msg = tokio::time::timeout(WAIT, async {
            tokio::select! {
                m = a.next() => m,
                m = b.next() => m,
            }
        })
        .await
        .expect("a message in time")
        .expect("subscription open");
        match &msg.payload[..] {
            b"job" => jobs += 1,
            _ => ends += 1,
        }
    }
    assert_eq!((jobs, ends), (N, 1), "every message went to one worker");
    assert!(
        a.try_next().is_none() && b.try_next().is_none(),
        "and only one"
    );
}

async fn bus_request_many_gathers_replies(under: Under) {
    let bus = under.backend.bus();
    let mut responders = Vec::new();
    for name in ["r1", "r2"] {
        let mut sub = bus.subscribe("svc.ping", None).await.expect("sub");
        let bus = bus.clone();
        responders.push(tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(reply) = msg.reply else { continue };
                let mut headers = Headers::new();
                headers.append("rc-node", name);
                let _ = bus.publish(&reply, headers, msg.payload, None).await;
            }
        }));
    }
    bus.sync().await.expect("sync");
    let replies = bus
        .request_many(
            "svc.ping",
            Headers::new(),
            Bytes::from_static(b"hi"),
            2,
            WAIT,
        )
        .await
        .expect("request");
    let mut nodes: Vec<&str> = replies
        .iter()
        .filter_map(|m| m.headers.get("rc-node"))
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, vec!["r1", "r2"]);
    assert!(replies.iter().all(|m| &m.payload[..] == b"hi"));
    // Fewer replies than expected is what arrived by the deadline, not an error.
    let fewer = bus
        .request_many(
            "svc.ping",
            Headers::new(),
            Bytes::from_static(b"hi"),
            3,
            Duration::from_millis(500),
        )
        .await
        .expect("request");
    assert_eq!(fewer.len(), 2);
    for r in responders {
        r.abort();
    }
}

fn bucket(name: &str) -> KvBucket {
    KvBucket {
        name: name.to_owned(),
        purpose: "conformance test".to_owned(),
        replicas: 1,
        max_age: Duration::ZERO,
    }
}

async fn kv(under: &Under, name: &str) -> Arc<dyn KvStore> {
    under
        .backend
        .kv(&bucket(name))
        .await
        .expect("open the store")
}

async fn next(watch: &mut roomcast_bus::Watch) -> Change {
    tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("a change in time")
        .expect("watch open")
}

async fn recv(sub: &mut Subscription) -> Message {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a message in time")
        .expect("subscription open")
}

/// Makes sure a subscription is live where publishers reach it.
async fn live(under: &Under, subject: &str) -> Subscription {
    let bus = under.backend.bus();
    let sub = bus.subscribe(subject, None).await.expect("subscribe");
    bus.sync().await.expect("sync");
    sub
}

fn must<T>(what: &str, r: Result<T, KvError>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

async fn kv_swaps_lists_and_watches(under: Under) {
    let store = kv(&under, "conformance-kv").await;
    // A second opening (another process) shares the store.
    let again = kv(&under, "conformance-kv").await;

    let r1 = must(
        "create",
        store
            .swap("user.alice", Bytes::from_static(b"1"), None)
            .await,
    );
    assert!(matches!(
        again
            .swap("user.alice", Bytes::from_static(b"x"), None)
            .await,
        Err(KvError::Conflict)
    ));
    let r2 = must(
        "update at the read revision",
        store
            .swap("user.alice", Bytes::from_static(b"2"), Some(r1))
            .await,
    );
    assert!(r2 > r1, "revisions grow");
    assert!(matches!(
        again
            .swap("user.alice", Bytes::from_static(b"x"), Some(r1))
            .await,
        Err(KvError::Conflict)
    ));
    assert_eq!(
        must("get", store.get("user.alice").await),
        Some((Bytes::from_static(b"2"), r2))
    );
    assert_eq!(must("get", store.get("user.nobody").await), None);

    let mut watch = must("watch", store.watch("sock.").await);
    must(
        "put",
        store.put("sock.e1.s1", Bytes::from_static(b"a")).await,
    );
    must(
        "put",
        again.put("sock.e2.s2", Bytes::from_static(b"b")).await,
    );
    must("put", store.put("user.bob", Bytes::from_static(b"c")).await);
    let mut keys = must("keys", store.keys("sock.e1.").await);
    keys.sort();
    assert_eq!(keys, vec!["sock.e1.s1".to_owned()]);
    let mut keys = must("keys", store.keys("sock.").await);
    keys.sort();
    assert_eq!(keys, vec!["sock.e1.s1".to_owned(), "sock.e2.s2".to_owned()]);
    let first = next(&mut watch).await;
    assert_eq!(
        (first.key.as_str(), first.value),
        ("sock.e1.s1", Some(Bytes::from_static(b"a")))
    );
    assert_eq!(next(&mut watch).await.key, "sock.e2.s2");

    must("delete", store.delete("sock.e1.s1").await);
    let gone = next(&mut watch).await;
    assert_eq!((gone.key.as_str(), gone.value), ("sock.e1.s1", None));
    assert_eq!(must("get", store.get("sock.e1.s1").await), None);
    assert!(must("keys", store.keys("sock.e1.").await).is_empty());
    // A deleted key can be created again.
    must(
        "create after delete",
        store
            .swap("sock.e1.s1", Bytes::from_static(b"c"), None)
            .await,
    );

    // A conditional delete loses to a change made since the read.
    let rev = must(
        "put",
        store.put("sock.e3.s3", Bytes::from_static(b"v1")).await,
    );
    must(
        "put",
        store.put("sock.e3.s3", Bytes::from_static(b"v2")).await,
    );
    assert!(matches!(
        again.delete_if("sock.e3.s3", rev).await,
        Err(KvError::Conflict)
    ));
    let current = must("get", store.get("sock.e3.s3").await)
        .expect("still there")
        .1;
    must(
        "delete at the current revision",
        again.delete_if("sock.e3.s3", current).await,
    );
    assert!(
        matches!(
            store.delete_if("sock.e3.s3", current).await,
            Err(KvError::Conflict)
        ),
        "a second delete of the same revision loses"
    );

    // A new watch starts with the current values.
    let mut fresh = must("watch", store.watch("user.").await);
    let mut current = [next(&mut fresh).await, next(&mut fresh).await];
    current.sort_by(|a, b| a.key.cmp(&b.key));
    let current: Vec<(&str, Option<Bytes>)> = current
        .iter()
        .map(|c| (c.key.as_str(), c.value.clone()))
        .collect();
    assert_eq!(
        current,
        vec![
            ("user.alice", Some(Bytes::from_static(b"2"))),
            ("user.bob", Some(Bytes::from_static(b"c")))
        ]
    );
}

/// Reads changes until one is caught up; returns them.
async fn until_caught_up(watch: &mut roomcast_bus::Watch) -> Vec<Change> {
    let mut got = Vec::new();
    loop {
        let change = next(watch).await;
        let done = change.caught_up;
        got.push(change);
        if done {
            return got;
        }
    }
}

/// The values a watcher holds after applying `changes`.
fn applied(changes: &[Change]) -> std::collections::BTreeMap<String, Bytes> {
    let mut view = std::collections::BTreeMap::new();
    for c in changes {
        match &c.value {
            Some(v) => view.insert(c.key.clone(), v.clone()),
            None => view.remove(&c.key),
        };
    }
    view
}

async fn kv_watches_say_when_they_are_caught_up(under: Under) {
    let store = kv(&under, "conformance-fence").await;
    let mut live = must("watch", store.watch("user.").await);
    let a = must("put", store.put("user.a", Bytes::from_static(b"1")).await);
    let first = next(&mut live).await;
    assert_eq!((first.key.as_str(), first.revision), ("user.a", a));
    assert!(first.caught_up, "nothing behind it");
    must(
        "put",
        store.put("sock.e1.s1", Bytes::from_static(b"s")).await,
    );
    let b = must("put", store.put("user.b", Bytes::from_static(b"2")).await);
    assert_eq!(
        next(&mut live).await.revision,
        b,
        "other prefixes not watched"
    );

    // A delete is a write with a revision of its own: a watch opened after
    // it, when it was the latest write, starts with it too, and is caught up
    // only there.
    must("delete", store.delete("user.a").await);
    let gone = next(&mut live).await;
    assert_eq!((gone.key.as_str(), gone.value.as_ref()), ("user.a", None));
    assert!(gone.caught_up && gone.revision > b);
    let mut watch = must("watch", store.watch("user.").await);
    let replay = until_caught_up(&mut watch).await;
    let revisions: Vec<u64> = replay.iter().map(|c| c.revision).collect();
    let mut sorted = revisions.clone();
    sorted.sort_unstable();
    assert_eq!(revisions, sorted, "current values in revision order");
    assert_eq!(replay.last().map(|c| c.revision), Some(gone.revision));
    assert_eq!(
        applied(&replay),
        [("user.b".to_owned(), Bytes::from_static(b"2"))].into(),
        "the current values, the deleted key gone"
    );

    // Live changes after the start: each caught up, in revision order.
    let c = must("put", store.put("user.c", Bytes::from_static(b"3")).await);
    let changed = next(&mut watch).await;
    assert_eq!((changed.key.as_str(), changed.revision), ("user.c", c));
    assert!(changed.caught_up);

    // A new watch ends caught up at the latest write.
    let mut fresh = must("watch", store.watch("user.").await);
    let replay = until_caught_up(&mut fresh).await;
    assert_eq!(replay.last().map(|c| c.revision), Some(c));
    assert_eq!(
        applied(&replay),
        [
            ("user.b".to_owned(), Bytes::from_static(b"2")),
            ("user.c".to_owned(), Bytes::from_static(b"3"))
        ]
        .into()
    );
}

async fn kv_stores_are_opened_by_name(under: Under) {
    let one = kv(&under, "conformance-one").await;
    let other = kv(&under, "conformance-other").await;
    must("put", one.put("k", Bytes::from_static(b"1")).await);
    assert_eq!(must("get", other.get("k").await), None, "stores are apart");
    assert_eq!(
        must("get", kv(&under, "conformance-one").await.get("k").await).map(|(v, _)| v),
        Some(Bytes::from_static(b"1")),
        "the same name is the same store"
    );
}

fn recovery_config(max_bytes: u64) -> RecoveryConfig {
    RecoveryConfig {
        rooms: vec!["*".into()],
        history_max_bytes: max_bytes,
        ..RecoveryConfig::default()
    }
}

async fn history_numbers_publishes_and_replays_per_room(under: Under) {
    let subjects = Subjects::new("t");
    let config = recovery_config(1 << 20);
    let mut room_a = live(&under, &subjects.room("/", "a")).await;
    let history = under
        .backend
        .history("hist-t", subjects.clone(), &config)
        .await
        .expect("history");
    // A second opener (another process) shares the history.
    let again = under
        .backend
        .history("hist-t", subjects, &config)
        .await
        .expect("history again");
    let mut headers = Headers::new();
    headers.append("rc-op", "emit");
    let append = |h: &Arc<dyn roomcast_bus::History>, room: &'static str, body: &'static [u8]| {
        let (h, headers) = (h.clone(), headers.clone());
        async move {
            h.append("/", room, headers, Bytes::from_static(body))
                .await
                .expect("append")
        }
    };
    let a1 = append(&history, "a", b"a1").await;
    let b1 = append(&again, "b", b"b1").await;
    let a2 = append(&history, "a", b"a2").await;
    assert_eq!((a1, b1, a2), (1, 2, 3));

    // Live subscribers of the room get each emit with its number.
    for (seq, body) in [(1, &b"a1"[..]), (3, b"a2")] {
        let msg = recv(&mut room_a).await;
        assert_eq!(&msg.payload[..], body);
        assert_eq!(recovery::sequence(&msg.headers), seq);
        assert_eq!(msg.headers.get("rc-op"), Some("emit"));
    }

    let replay = history.since("/", &["a".into()], 0).await.expect("since");
    let got: Vec<(u64, &str, &str, Bytes)> = replay
        .messages
        .iter()
        .map(|m| (m.seq, m.ns.as_str(), m.room.as_str(), m.payload.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "/", "a", Bytes::from_static(b"a1")),
            (3, "/", "a", Bytes::from_static(b"a2"))
        ]
    );
    assert_eq!(replay.upto, 3);
    assert_eq!(replay.messages[0].headers.get("rc-op"), Some("emit"));
    let both = again
        .since("/", &["a".into(), "b".into()], 1)
        .await
        .expect("since");
    let seqs: Vec<u64> = both.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![2, 3]);
    let nothing = history.since("/", &["b".into()], 2).await.expect("since");
    assert!(nothing.messages.is_empty());
    assert_eq!(nothing.upto, 3);
    assert!(history
        .since("/other", &["a".into()], 0)
        .await
        .expect("since")
        .messages
        .is_empty());
    let up_to_date = history.since("/", &["a".into()], 3).await.expect("since");
    assert!(up_to_date.messages.is_empty());
    assert!(matches!(
        history.since("/", &["a".into()], 9).await,
        Err(RecoveryError::Lost(9))
    ));
}

async fn history_past_its_byte_bound_is_lost(under: Under) {
    let history = under
        .backend
        .history("hist-bound", Subjects::new("t"), &recovery_config(4096))
        .await
        .expect("history");
    for _ in 0..20 {
        history
            .append("/", "a", Headers::new(), Bytes::from(vec![b'x'; 400]))
            .await
            .expect("append");
    }
    // The oldest went: a replay from before them is lost, a recent one is not.
    assert!(matches!(
        history.since("/", &["a".into()], 0).await,
        Err(RecoveryError::Lost(0))
    ));
    let recent = history.since("/", &["a".into()], 19).await.expect("kept");
    let seqs: Vec<u64> = recent.messages.iter().map(|m| m.seq).collect();
    assert_eq!((seqs, recent.upto), (vec![20], 20));
}

async fn histories_are_opened_by_name(under: Under) {
    let config = recovery_config(1 << 20);
    let one = under
        .backend
        .history("hist-one", Subjects::new("one"), &config)
        .await
        .expect("history");
    let other = under
        .backend
        .history("hist-other", Subjects::new("other"), &config)
        .await
        .expect("history");
    let seq = one
        .append("/", "a", Headers::new(), Bytes::from_static(b"x"))
        .await
        .expect("append");
    assert_eq!(seq, 1);
    let seq = other
        .append("/", "a", Headers::new(), Bytes::from_static(b"y"))
        .await
        .expect("append");
    assert_eq!(seq, 1, "each history numbers its own emits");
}

fn saved(pid: String) -> SavedSession {
    SavedSession {
        sid: "sid".into(),
        pid,
        ns: "/".into(),
        user: "alice".into(),
        rooms: vec!["a".into(), "b".into()],
        data_json: r#"{"k":1}"#.into(),
        saved_at_ms: 1,
        owner: None,
    }
}

async fn sessions_recover_once(under: Under) {
    let config = recovery_config(1 << 20);
    let sessions = under
        .backend
        .sessions("sessions-t", &config)
        .await
        .expect("sessions");
    let again = under
        .backend
        .sessions("sessions-t", &config)
        .await
        .expect("sessions again");
    let session = saved(roomcast_bus::names::new_id());
    sessions.save(&session).await.expect("save");
    // Any process of the cluster may take it, once.
    assert_eq!(
        again.take(&session.pid).await.expect("take"),
        Some(session.clone())
    );
    assert_eq!(
        sessions.take(&session.pid).await.expect("take"),
        None,
        "once"
    );
    assert_eq!(
        sessions
            .take(&roomcast_bus::names::new_id())
            .await
            .expect("take"),
        None,
        "unknown"
    );
    // Saved again after a later disconnect, it recovers again.
    sessions.save(&session).await.expect("save again");
    assert_eq!(
        sessions.take(&session.pid).await.expect("take"),
        Some(session)
    );
}

async fn sessions_take_only_well_formed_pids(under: Under) {
    let sessions = under
        .backend
        .sessions("sessions-pids", &recovery_config(1 << 20))
        .await
        .expect("sessions");
    for bad in ["", "not.a.key", "a b", "*", ">", &"x".repeat(65)] {
        assert!(
            sessions.save(&saved(bad.to_owned())).await.is_err(),
            "saving {bad:?}"
        );
        assert_eq!(sessions.take(bad).await.expect("take"), None, "{bad:?}");
    }
}

async fn sessions_write_by_revision(under: Under) {
    let sessions = under
        .backend
        .sessions("sessions-rev", &recovery_config(1 << 20))
        .await
        .expect("sessions");
    let mut live = saved(roomcast_bus::names::new_id());
    live.owner = Some("edge-a".into());
    // Created only when there is none.
    let first = sessions
        .save_if(&live, None)
        .await
        .expect("create")
        .expect("created");
    assert_eq!(sessions.save_if(&live, None).await.expect("again"), None);
    assert_eq!(
        sessions.get(&live.pid).await.expect("get"),
        Some((live.clone(), first))
    );
    // Rewritten only from the revision its writer last wrote.
    live.rooms.push("c".into());
    let second = sessions
        .save_if(&live, Some(first))
        .await
        .expect("update")
        .expect("updated");
    assert_eq!(
        sessions.save_if(&live, Some(first)).await.expect("stale"),
        None
    );
    // Removed by whoever read the revision it is at, once.
    assert!(!sessions.remove_if(&live.pid, first).await.expect("stale"));
    assert!(sessions.remove_if(&live.pid, second).await.expect("remove"));
    assert_eq!(sessions.get(&live.pid).await.expect("get"), None);
    // Its writer, whose revision is gone, cannot bring it back.
    assert_eq!(
        sessions.save_if(&live, Some(second)).await.expect("taken"),
        None
    );
    assert_eq!(sessions.take(&live.pid).await.expect("take"), None);
}
