use super::*;
use roomcast_bus::memory::MemoryKv;
use roomcast_bus::{MemoryBus, Subscription};

fn rec(id: &str, user: &str, node: &str, at: i64) -> SocketRecord {
    SocketRecord {
        id: id.into(),
        user: user.into(),
        ns: "/".into(),
        node: node.into(),
        rooms: vec!["lobby".into()],
        connected_at_ms: at,
    }
}

struct Fixture {
    bus: MemoryBus,
    store: MemoryKv,
    events: Subscription,
    broadcasts: Subscription,
}

async fn fixture() -> Fixture {
    let bus = MemoryBus::default();
    let subjects = Subjects::new("roomcast");
    let events = bus
        .subscribe(&subjects.presence_events(), None)
        .await
        .expect("sub");
    let broadcasts = bus
        .subscribe(&subjects.namespace("/"), None)
        .await
        .expect("sub");
    Fixture {
        bus,
        store: MemoryKv::default(),
        events,
        broadcasts,
    }
}

/// A presence whose edges e1 and e2 hold leases (a keeper removes the
/// sockets of edges without one).
async fn presence(f: &Fixture, cfg: PresenceConfig) -> Presence {
    let p = Presence::new(Arc::new(f.store.clone()), Arc::new(f.bus.clone()), cfg);
    for node in ["e1", "e2"] {
        p.refresh_lease(node).await.expect("lease");
    }
    p
}

fn cfg(grace_ms: u64) -> PresenceConfig {
    PresenceConfig {
        audience: Audience::Namespace,
        grace: Duration::from_millis(grace_ms),
        lease_ttl: Duration::from_secs(30),
        ..PresenceConfig::default()
    }
}

/// The online/offline events received so far, as (user, kind).
fn transitions(sub: &mut Subscription) -> Vec<(String, EventKind)> {
    let mut out = Vec::new();
    while let Some(m) = sub.try_next() {
        let ev: PresenceEvent = serde_json::from_slice(&m.payload).expect("event json");
        if matches!(ev.kind, EventKind::Online | EventKind::Offline) {
            out.push((ev.user, ev.kind));
        }
    }
    out
}

fn broadcast_texts(sub: &mut Subscription) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = sub.try_next() {
        out.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    out
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    roomcast_testkit::wait_for(Duration::from_secs(5), || std::future::ready(check()))
        .await
        .unwrap_or_else(|e| panic!("timed out waiting for {what}: {e}"));
}

/// Waits until every grace timer the keepers started before now has fired:
/// a sentinel user leaves now, so its offline — from timers started after
/// the earlier ones, with the same grace — can only come later. Returns the
/// other users' transitions seen meanwhile.
async fn after_earlier_graces(p: &Presence, events: &mut Subscription) -> Vec<(String, EventKind)> {
    let sentinel = rec("sentinel", "sentinel", "e1", 0);
    p.connected(&sentinel).await.expect("connect");
    p.disconnected(&sentinel).await.expect("disconnect");
    let mut seen = Vec::new();
    eventually("the sentinel's offline", || {
        seen.extend(transitions(events));
        seen.contains(&("sentinel".into(), EventKind::Offline))
    })
    .await;
    seen.retain(|(user, _)| user != "sentinel");
    seen
}

#[tokio::test]
async fn last_socket_closing_makes_one_offline_after_the_grace() {
    let mut f = fixture().await;
    let p = presence(&f, cfg(100)).await;
    let stop = CancellationToken::new();
    // Two keepers, as with two control planes.
    tokio::spawn(p.clone().run_keeper(stop.clone()));
    tokio::spawn(p.clone().run_keeper(stop.clone()));
    // Both keepers watch before anyone leaves.
    assert!(after_earlier_graces(&p, &mut f.events).await.is_empty());
    let (a, b) = (rec("a", "alice", "e1", 1), rec("b", "alice", "e2", 2));
    p.connected(&a).await.expect("connect");
    p.connected(&b).await.expect("connect");
    assert_eq!(
        transitions(&mut f.events),
        vec![("alice".into(), EventKind::Online)]
    );
    let online: Vec<String> = broadcast_texts(&mut f.broadcasts)
        .into_iter()
        .filter(|b| b.contains("\"userId\":\"alice\""))
        .collect();
    assert_eq!(online.len(), 1);
    assert!(
        online[0].starts_with("42[\"user-status-change\",{"),
        "{online:?}"
    );
    assert!(online[0].contains("\"status\":\"online\""));

    p.disconnected(&a).await.expect("disconnect");
    assert!(p.user("alice").await.expect("state").is_online());
    p.disconnected(&b).await.expect("disconnect");
    assert_eq!(
        p.user("alice").await.expect("state").status,
        Status::Leaving
    );
    let mut seen = Vec::new();
    eventually("the offline transition", || {
        seen.extend(transitions(&mut f.events));
        !seen.is_empty()
    })
    .await;
    // The second keeper's timer has fired too by the time a later leave ends.
    seen.extend(after_earlier_graces(&p, &mut f.events).await);
    assert_eq!(seen, vec![("alice".into(), EventKind::Offline)]);
    let offline: Vec<String> = broadcast_texts(&mut f.broadcasts)
        .into_iter()
        .filter(|b| b.contains("\"userId\":\"alice\""))
        .collect();
    assert_eq!(offline.len(), 1, "{offline:?}");
    assert!(offline[0].contains("\"status\":\"offline\"") && offline[0].contains("lastSeen"));
    let state = p.user("alice").await.expect("state");
    assert_eq!(state.status, Status::Offline);
    assert!(state.last_seen_ms > 0);
    assert!(f.store.keys("sock.").await.expect("keys").is_empty());
    stop.cancel();
}

#[tokio::test]
async fn reconnecting_within_the_grace_does_not_flap() {
    let mut f = fixture().await;
    let p = presence(&f, cfg(200)).await;
    let stop = CancellationToken::new();
    tokio::spawn(p.clone().run_keeper(stop.clone()));
    // The keeper watches before bob leaves, so it does see him leaving.
    assert!(after_earlier_graces(&p, &mut f.events).await.is_empty());
    p.connected(&rec("a", "bob", "e1", 1))
        .await
        .expect("connect");
    p.disconnected(&rec("a", "bob", "e1", 1))
        .await
        .expect("disconnect");
    p.connected(&rec("b", "bob", "e2", 2))
        .await
        .expect("reconnect");
    let mut seen = transitions(&mut f.events);
    seen.extend(after_earlier_graces(&p, &mut f.events).await);
    assert_eq!(seen, vec![("bob".into(), EventKind::Online)]);
    assert_eq!(p.user("bob").await.expect("state").status, Status::Online);
    stop.cancel();
}

#[tokio::test]
async fn zero_grace_goes_offline_at_once() {
    let mut f = fixture().await;
    let p = presence(&f, cfg(0)).await;
    p.connected(&rec("a", "carol", "e1", 1))
        .await
        .expect("connect");
    p.disconnected(&rec("a", "carol", "e1", 1))
        .await
        .expect("disconnect");
    assert_eq!(
        transitions(&mut f.events),
        vec![
            ("carol".into(), EventKind::Online),
            ("carol".into(), EventKind::Offline)
        ]
    );
}

#[tokio::test]
async fn an_expired_lease_takes_its_sockets_and_users_with_it() {
    let mut f = fixture().await;
    let p = presence(
        &f,
        PresenceConfig {
            lease_ttl: Duration::from_millis(300),
            ..cfg(0)
        },
    )
    .await;
    p.refresh_lease("dead").await.expect("lease");
    let alive_lease = p.refresh_lease("alive").await.expect("lease");
    p.connected(&rec("d1", "dave", "dead", 1))
        .await
        .expect("connect");
    p.connected(&rec("e1", "erin", "alive", 1))
        .await
        .expect("connect");
    let stop = CancellationToken::new();
    let keeper = tokio::spawn(p.clone().run_keeper(stop.clone()));
    // "alive" keeps its lease; "dead" does not.
    let holding = p.clone();
    let holder_stop = stop.clone();
    let (lost_tx, mut lost) = tokio::sync::mpsc::channel(1);
    let holder = tokio::spawn(async move {
        holding
            .hold_lease("alive".into(), alive_lease, holder_stop, lost_tx)
            .await
    });
    let mut seen = Vec::new();
    eventually("dave to go offline", || {
        seen.extend(transitions(&mut f.events));
        seen.contains(&("dave".into(), EventKind::Offline))
    })
    .await;
    assert!(p.user("erin").await.expect("state").is_online());
    assert_eq!(
        f.store.keys("sock.").await.expect("keys"),
        vec![socket_key("alive", "e1")]
    );
    assert!(lost.try_recv().is_err(), "a held lease is never lost");
    stop.cancel();
    let _ = keeper.await;
    let _ = holder.await;
}

#[tokio::test]
async fn a_socket_recovered_elsewhere_outlives_the_clean_up_of_its_dead_edge() {
    let mut f = fixture().await;
    let p = presence(&f, cfg(0)).await;
    p.refresh_lease("dead").await.expect("lease");
    p.connected(&rec("s1", "fay", "dead", 1))
        .await
        .expect("connect");
    // Its edge died; the client recovered the socket, same id, on e2.
    p.connected(&rec("s1", "fay", "e2", 2))
        .await
        .expect("recovered");
    assert!(p.holds_lease("dead").await.expect("lease"));
    p.clean_node("dead").await.expect("clean");
    assert!(!p.holds_lease("dead").await.expect("lease"));
    let state = p.user("fay").await.expect("state");
    assert!(state.is_online());
    assert_eq!(
        state
            .sockets
            .iter()
            .map(|s| (s.id.as_str(), s.node.as_str()))
            .collect::<Vec<_>>(),
        vec![("s1", "e2")]
    );
    assert_eq!(
        transitions(&mut f.events),
        vec![("fay".into(), EventKind::Online)]
    );
}

#[tokio::test]
async fn an_edge_taken_for_dead_finds_its_lease_lost_once() {
    let f = fixture().await;
    let p = presence(&f, cfg(0)).await;
    let revision = p.refresh_lease("paused").await.expect("lease");
    let kept = p.keep_lease("paused", revision).await.expect("keep");
    assert!(!kept.lost);
    // A control plane took the edge for dead: its sockets and lease are gone.
    p.clean_node("paused").await.expect("clean");
    let kept = p.keep_lease("paused", kept.revision).await.expect("keep");
    assert!(kept.lost, "the edge notices");
    assert!(f
        .store
        .get(&lease_key("paused"))
        .await
        .expect("get")
        .is_some());
    let again = p.keep_lease("paused", kept.revision).await.expect("keep");
    assert!(!again.lost, "the new lease is its own");
}

#[tokio::test]
async fn orphaned_sockets_are_removed_when_a_keeper_starts() {
    let mut f = fixture().await;
    let p = presence(&f, cfg(0)).await;
    p.connected(&rec("o1", "olga", "gone", 1))
        .await
        .expect("connect");
    let stop = CancellationToken::new();
    tokio::spawn(p.clone().run_keeper(stop.clone()));
    let mut seen = Vec::new();
    eventually("olga to go offline", || {
        seen.extend(transitions(&mut f.events));
        seen.contains(&("olga".into(), EventKind::Offline))
    })
    .await;
    stop.cancel();
}

#[tokio::test]
async fn the_connection_limit_evicts_the_oldest_socket() {
    let f = fixture().await;
    let mut edges = f
        .bus
        .subscribe(&Subjects::new("roomcast").edges(), None)
        .await
        .expect("sub");
    let p = presence(
        &f,
        PresenceConfig {
            max_sockets_per_user: 2,
            ..cfg(0)
        },
    )
    .await;
    p.connected(&rec("s1", "frank", "e1", 1))
        .await
        .expect("connect");
    p.connected(&rec("s2", "frank", "e2", 2))
        .await
        .expect("connect");
    assert!(edges.try_next().is_none(), "within the limit");
    p.connected(&rec("s3", "frank", "e1", 3))
        .await
        .expect("connect");
    let mut cmds = Vec::new();
    while let Some(m) = edges.try_next() {
        cmds.push(Command::decode(&m.headers, m.payload).expect("command"));
    }
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    let Command::Emit { target, packet, .. } = &cmds[0] else {
        panic!("an emit first: {cmds:?}")
    };
    assert_eq!(target.sockets, vec!["s1".to_owned()]);
    assert!(String::from_utf8_lossy(&packet.text).contains(EVICTED_EVENT));
    assert!(
        matches!(&cmds[1], Command::Disconnect { target, close: Closing::Evict } if target.sockets == vec!["s1".to_owned()])
    );
}

#[tokio::test]
async fn an_eviction_goes_to_the_route_tag_of_the_evicted_socket_only() {
    let f = fixture().await;
    let subjects = Subjects::new("roomcast");
    let mut edges = f.bus.subscribe(&subjects.edges(), None).await.expect("sub");
    let mut tag = f
        .bus
        .subscribe(&subjects.tag("abcde"), None)
        .await
        .expect("sub");
    let p = presence(
        &f,
        PresenceConfig {
            max_sockets_per_user: 1,
            ..cfg(0)
        },
    )
    .await;
    let old = roomcast_bus::names::new_socket_id("abcde");
    let new = roomcast_bus::names::new_socket_id("fghij");
    p.connected(&rec(&old, "gail", "e1", 1))
        .await
        .expect("connect");
    p.connected(&rec(&new, "gail", "e2", 2))
        .await
        .expect("connect");
    let mut cmds = Vec::new();
    while let Some(m) = tag.try_next() {
        cmds.push(Command::decode(&m.headers, m.payload).expect("command"));
    }
    assert_eq!(
        cmds.len(),
        2,
        "the evicted event and the disconnect: {cmds:?}"
    );
    assert!(
        matches!(&cmds[1], Command::Disconnect { target, close: Closing::Evict } if target.sockets == vec![old.clone()])
    );
    assert!(
        edges.try_next().is_none(),
        "no edge but the socket's hears of it"
    );
}

#[test]
fn keys_are_valid_kv_keys_and_round_trip() {
    for name in ["alice", "a.b c", "ü/~=", ""] {
        let k = user_key(name);
        assert!(
            k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c)),
            "{k}"
        );
        assert_eq!(
            k.strip_prefix("user.").and_then(key_untoken).as_deref(),
            Some(name)
        );
    }
    // The directory's fences share the prefix; no user name makes their key.
    assert_eq!(FENCE_KEY.strip_prefix("user.").and_then(key_untoken), None);
}

#[tokio::test]
async fn a_cleaner_that_lost_the_race_reports_nothing() {
    let mut f = fixture().await;
    let p = presence(&f, cfg(0)).await;
    let r = rec("s1", "uma", "gone", 1);
    p.connected(&r).await.expect("connect");
    while f.events.try_next().is_some() {}
    // Cleaner A read the record; cleaner B removes it first.
    let (_, seen_by_a) = f
        .store
        .get(&socket_key("gone", "s1"))
        .await
        .expect("get")
        .expect("record");
    assert_eq!(p.clean_node("gone").await.expect("clean"), 1);
    assert!(matches!(
        f.store
            .delete_if(&socket_key("gone", "s1"), seen_by_a)
            .await,
        Err(KvError::Conflict)
    ));
    assert_eq!(p.clean_node("gone").await.expect("clean again"), 0);
    let kinds: Vec<EventKind> = std::iter::from_fn(|| f.events.try_next())
        .map(|m| {
            serde_json::from_slice::<PresenceEvent>(&m.payload)
                .expect("event")
                .kind
        })
        .collect();
    assert_eq!(kinds, vec![EventKind::Disconnect, EventKind::Offline]);
}

/// A keeper that stops joins its grace timers: none is left running, and
/// the offline a timer would have announced never goes out.
#[tokio::test]
async fn a_stopped_keeper_leaves_no_grace_timer_running() {
    let mut f = fixture().await;
    let p = presence(&f, cfg(300)).await;
    let stop = CancellationToken::new();
    let timers = TaskTracker::new();
    let keeper = tokio::spawn({
        let (p, stop, timers) = (p.clone(), stop.clone(), timers.clone());
        async move { p.keep(stop, timers).await }
    });
    let s = rec("s1", "u", "e1", 1);
    p.connected(&s).await.expect("connect");
    p.disconnected(&s).await.expect("disconnect");
    eventually("a grace timer", || timers.len() == 1).await;

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), keeper)
        .await
        .expect("the keeper returned")
        .expect("not panicked")
        .expect("no store error");
    assert!(timers.is_closed() && timers.is_empty(), "a timer left");
    // Absence can only be waited for: twice the grace.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let seen = transitions(&mut f.events);
    assert_eq!(seen, vec![("u".to_owned(), EventKind::Online)], "{seen:?}");
    assert_eq!(p.user("u").await.expect("user").status, Status::Leaving);
}

/// A socket record of `user` on edge `node`, with an id carrying the
/// edge's route tag.
fn tagged(user: &str, node: &str) -> SocketRecord {
    let id = roomcast_bus::names::new_socket_id(&roomcast_bus::names::route_tag(node));
    rec(&id, user, node, 1)
}

fn tags_of(recs: &[&SocketRecord]) -> Vec<String> {
    let mut tags: Vec<String> = recs
        .iter()
        .map(|r| tag_of(&r.id).expect("tag").to_owned())
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

async fn directory_ready(p: &Presence) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.route_tags(&["nobody".into()], DIRECTORY_WAIT).await != Lookup::Found(vec![vec![]]) {
        assert!(Instant::now() < deadline, "the directory never got ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Read-your-writes: a lookup right after a connect (or disconnect)
/// returned sees it, from the directory, without reading the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_sees_every_connect_that_preceded_the_lookup() {
    let f = fixture().await;
    let p = presence(&f, cfg(100)).await;
    let stop = CancellationToken::new();
    tokio::spawn(p.clone().run_keeper(stop.clone()));
    directory_ready(&p).await;
    for i in 0..200 {
        let user = format!("u{i}");
        let a = tagged(&user, "e1");
        p.connected(&a).await.expect("connect");
        assert_eq!(
            p.route_tags(std::slice::from_ref(&user), DIRECTORY_WAIT)
                .await,
            Lookup::Found(vec![tags_of(&[&a])]),
            "{user} after its first connect"
        );
        let b = tagged(&user, "e2");
        p.connected(&b).await.expect("connect");
        assert_eq!(
            p.route_tags(&[user.clone(), "nobody".into()], DIRECTORY_WAIT)
                .await,
            Lookup::Found(vec![tags_of(&[&a, &b]), vec![]]),
        );
        p.disconnected(&a).await.expect("disconnect");
        p.disconnected(&b).await.expect("disconnect");
        assert_eq!(
            p.route_tags(std::slice::from_ref(&user), DIRECTORY_WAIT)
                .await,
            Lookup::Found(vec![vec![]]),
            "{user} left: no socket"
        );
    }
    stop.cancel();
}

/// A keeper that stops leaves nobody to feed the directory: it answers
/// nothing (callers read the store).
#[tokio::test]
async fn a_stopped_keeper_leaves_the_directory_not_ready() {
    let f = fixture().await;
    let p = presence(&f, cfg(0)).await;
    let stop = CancellationToken::new();
    let keeper = tokio::spawn(p.clone().run_keeper(stop.clone()));
    let a = tagged("ann", "e1");
    p.connected(&a).await.expect("connect");
    directory_ready(&p).await;
    assert_eq!(
        p.route_tags(&["ann".into()], DIRECTORY_WAIT).await,
        Lookup::Found(vec![tags_of(&[&a])])
    );
    stop.cancel();
    keeper.await.expect("task").expect("keeper");
    assert_eq!(
        p.route_tags(&["ann".into()], DIRECTORY_WAIT).await,
        Lookup::Unknown(Unknown::NotReady)
    );
    // Another keeper takes over.
    let stop = CancellationToken::new();
    tokio::spawn(p.clone().run_keeper(stop.clone()));
    directory_ready(&p).await;
    assert_eq!(
        p.route_tags(&["ann".into()], DIRECTORY_WAIT).await,
        Lookup::Found(vec![tags_of(&[&a])])
    );
    stop.cancel();
}

/// A watch that lost changes (it lagged behind a storm of writes) ends; the
/// keeper opens a new one, and the directory, cleared, is whole again once
/// that one has caught up: the lost change is in it.
#[tokio::test]
async fn a_watch_that_lost_changes_is_replaced_and_the_directory_recovers() {
    let f = fixture().await;
    let p = presence(&f, cfg(0)).await;
    let stop = CancellationToken::new();
    tokio::spawn(p.clone().run_keeper(stop.clone()));
    directory_ready(&p).await;
    // Nothing here yields: the keeper sees none of it until the storm is
    // over, and its watch has lost the oldest changes by then.
    let lost = tagged("lost", "e1");
    let state = UserState {
        sockets: vec![UserSocket {
            id: lost.id.clone(),
            node: "e1".into(),
            connected_at_ms: 1,
        }],
        status: Status::Online,
        ..UserState::default()
    };
    f.store
        .put(&user_key("lost"), to_json(&state))
        .await
        .expect("put");
    for i in 0..70_000u32 {
        f.store
            .put(&user_key("filler"), Bytes::from(i.to_string()))
            .await
            .expect("put");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match p.route_tags(&["lost".into()], DIRECTORY_WAIT).await {
            Lookup::Found(tags) if tags == vec![tags_of(&[&lost])] => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the directory never recovered: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    stop.cancel();
}
