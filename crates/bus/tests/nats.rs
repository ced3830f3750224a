//! `NatsBus` against real `nats-server` processes (started by
//! `roomcast_testkit::nats`); every wait polls a condition with a deadline.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use roomcast_bus::nats::{ConnectionState, NatsBus, NatsOptions};
use roomcast_bus::{Bus, BusError, Headers, Message, Subscription};
use roomcast_testkit::nats::NatsServer;
use roomcast_testkit::require_nats;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(20);

/// Polls `check` until it yields a value; panics with `what` at the deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let found = std::cell::RefCell::new(None);
    roomcast_testkit::wait_for(WAIT, || {
        let (value, found) = (check(), &found);
        async move {
            let value = value.await;
            let done = value.is_some();
            *found.borrow_mut() = value;
            done
        }
    })
    .await
    .unwrap_or_else(|e| panic!("timed out waiting for {what}: {e}"));
    found
        .into_inner()
        .unwrap_or_else(|| panic!("{what}: no value"))
}

async fn connect(server: &NatsServer, name: &str) -> NatsBus {
    connect_with(NatsOptions {
        name: Some(name.to_owned()),
        ..NatsOptions::new([server.url.clone()])
    })
    .await
}

async fn connect_with(opts: NatsOptions) -> NatsBus {
    let bus = NatsBus::connect(opts).await.expect("connect to nats");
    assert!(bus.is_connected());
    bus
}

async fn recv(sub: &mut Subscription) -> Message {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a message within the deadline")
        .expect("subscription open")
}

async fn publish(bus: &NatsBus, subject: &str, payload: &'static [u8]) {
    bus.publish(subject, Headers::new(), Bytes::from_static(payload), None)
        .await
        .expect("publish");
}

#[tokio::test]
async fn round_trips_multi_valued_headers_and_binary_payloads() {
    let bin = require_nats!();
    let server = NatsServer::start(&bin);
    let sub_bus = connect(&server, "sub").await;
    let pub_bus = connect(&server, "pub").await;
    let mut sub = sub_bus.subscribe("rc.t.room.a.b", None).await.expect("sub");
    // The PONG comes after the server has registered the SUB.
    sub_bus.flush().await.expect("flush");

    let mut headers = Headers::new();
    headers.append("rc-op", "emit");
    headers.append("rc-room", "r1");
    headers.append("rc-room", "r~2E2");
    headers.append("rc-room", "r3");
    headers.append("Rc-Case", "Kept As Is");
    let payload: Bytes = (0..=255u8)
        .chain((0..=255u8).rev())
        .collect::<Vec<_>>()
        .into();
    pub_bus
        .publish(
            "rc.t.room.a.b",
            headers.clone(),
            payload.clone(),
            Some("reply.to.me"),
        )
        .await
        .expect("publish");
    let msg = recv(&mut sub).await;
    assert_eq!(msg.subject, "rc.t.room.a.b");
    assert_eq!(msg.payload, payload);
    assert_eq!(msg.reply.as_deref(), Some("reply.to.me"));
    assert_eq!(msg.headers.get("rc-op"), Some("emit"));
    assert_eq!(
        msg.headers.get_all("rc-room").collect::<Vec<_>>(),
        ["r1", "r~2E2", "r3"]
    );
    assert_eq!(msg.headers.get("Rc-Case"), Some("Kept As Is"));
    assert_eq!(msg.headers.iter().count(), 5);

    // No headers, empty payload, no reply.
    pub_bus
        .publish("rc.t.room.a.b", Headers::new(), Bytes::new(), None)
        .await
        .expect("publish");
    let msg = recv(&mut sub).await;
    assert!(msg.headers.is_empty());
    assert!(msg.payload.is_empty());
    assert_eq!(msg.reply, None);
    assert_eq!(sub_bus.dropped(), 0);
}

/// `Bus::sync` (what an edge calls before it acknowledges a join) returns
/// only once the server has every earlier subscription: a publish made right
/// after it, by another client, is delivered. Several subscriptions at once,
/// and the status-less stream skips nothing.
#[tokio::test]
async fn sync_makes_earlier_subscriptions_live_at_the_server() {
    let bin = require_nats!();
    let server = NatsServer::start(&bin);
    let sub_bus = connect(&server, "sub").await;
    let pub_bus = connect(&server, "pub").await;
    for round in 0..20 {
        let subjects: Vec<String> = (0..5).map(|i| format!("rc.t.sync.{round}.{i}")).collect();
        let mut subs = Vec::new();
        for subject in &subjects {
            subs.push(sub_bus.subscribe(subject, None).await.expect("sub"));
        }
        Bus::sync(&sub_bus).await.expect("sync");
        for subject in &subjects {
            publish(&pub_bus, subject, b"x").await;
        }
        for sub in &mut subs {
            assert_eq!(&recv(sub).await.payload[..], b"x", "round {round}");
        }
    }
}

#[tokio::test]
async fn wildcards_match_like_nats() {
    let bin = require_nats!();
    let server = NatsServer::start(&bin);
    let bus = connect(&server, "wild").await;
    let mut exact = bus.subscribe("w.b.c", None).await.expect("sub");
    let mut star = bus.subscribe("w.*.c", None).await.expect("sub");
    let mut tail = bus.subscribe("w.>", None).await.expect("sub");
    for subject in ["w.b.c", "w.b", "w.x.c", "w.b.c.d", "w", "x.b.c"] {
        publish(&bus, subject, b"m").await;
    }
    // Every pattern matches the last one; a publisher's messages stay in order.
    publish(&bus, "w.b.c", b"end").await;
    async fn subjects(sub: &mut Subscription) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let msg = recv(sub).await;
            if &msg.payload[..] == b"end" {
                return seen;
            }
            seen.push(msg.subject);
        }
    }
    assert_eq!(subjects(&mut exact).await, ["w.b.c"]);
    assert_eq!(subjects(&mut star).await, ["w.b.c", "w.x.c"]);
    assert_eq!(
        subjects(&mut tail).await,
        ["w.b.c", "w.b", "w.x.c", "w.b.c.d"]
    );
}

#[tokio::test]
async fn queue_group_members_share_messages() {
    let bin = require_nats!();
    let server = NatsServer::start(&bin);
    let a = connect(&server, "qa").await;
    let b = connect(&server, "qb").await;
    let mut q1 = a.subscribe("q.>", Some("workers")).await.expect("sub");
    let mut q2 = b.subscribe("q.>", Some("workers")).await.expect("sub");
    let mut all = a.subscribe("q.*", None).await.expect("sub");
    a.flush().await.expect("flush");
    b.flush().await.expect("flush");
    const N: usize = 60;
    for _ in 0..N {
        publish(&a, "q.job", b"j").await;
    }
    for _ in 0..N {
        recv(&mut all).await;
    }
    let (mut n1, mut n2) = (0, 0);
    let deadline = Instant::now() + WAIT;
    while n1 + n2 < N {
        tokio::select! {
            Some(_) = q1.next() => n1 += 1,
            Some(_) = q2.next() => n2 += 1,
            () = tokio::time::sleep_until(deadline) => panic!("queue got {n1}+{n2} of {N}"),
        }
    }
    assert!(n1 > 0 && n2 > 0, "both members got a share: {n1} {n2}");
    // Exactly once: nothing more is on its way.
    a.flush().await.expect("flush");
    b.flush().await.expect("flush");
    assert!(q1.try_next().is_none() && q2.try_next().is_none());
}

#[tokio::test]
async fn dropping_a_subscription_unsubscribes_on_the_server() {
    let bin = require_nats!();
    let server = NatsServer::start(&bin);
    let bus = connect(&server, "dropper").await;
    let other = connect(&server, "other").await;
    let exact = bus.subscribe("d.x", None).await.expect("sub");
    let wild = bus.subscribe("d.*", Some("g")).await.expect("sub");
    let subs = eventually("two subscriptions on the server", || async {
        server
            .subscriptions_of("dropper")
            .await
            .filter(|s| s.len() == 2)
    })
    .await;
    assert!(subs.contains(&"d.x".to_owned()) && subs.contains(&"d.*".to_owned()));

    drop(exact);
    eventually("d.x unsubscribed", || async {
        server
            .subscriptions_of("dropper")
            .await
            .filter(|s| s == &["d.*"])
    })
    .await;
    drop(wild);
    eventually("no subscriptions left", || async {
        server
            .subscriptions_of("dropper")
            .await
            .filter(Vec::is_empty)
    })
    .await;

    // What a publisher sees: nobody listens any more, and it is told at once.
    let started = Instant::now();
    let replies = other
        .request_many("d.x", Headers::new(), Bytes::new(), 1, WAIT)
        .await
        .expect("request");
    assert!(replies.is_empty());
    assert!(
        started.elapsed() < WAIT / 2,
        "no-responders ends the wait early"
    );
}

#[tokio::test]
async fn request_many_gathers_replies_until_the_deadline() {
    let bin = require_nats!();
    let server = NatsServer::start(&bin);
    let requester = connect(&server, "requester").await;
    let mut responders = Vec::new();
    for i in 0..2u8 {
        let bus = connect(&server, &format!("responder-{i}")).await;
        let mut sub = bus.subscribe("svc.count", None).await.expect("sub");
        bus.flush().await.expect("flush");
        responders.push(tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let mut h = Headers::new();
                    h.append("from", i.to_string());
                    let _ = bus.publish(&reply, h, m.payload, None).await;
                }
            }
        }));
    }

    let replies = requester
        .request_many(
            "svc.count",
            Headers::new(),
            Bytes::from_static(b"q"),
            2,
            WAIT,
        )
        .await
        .expect("request");
    let mut from: Vec<_> = replies
        .iter()
        .map(|m| m.headers.get("from").map(str::to_owned))
        .collect();
    from.sort();
    assert_eq!(from, [Some("0".to_owned()), Some("1".to_owned())]);
    assert!(replies.iter().all(|m| &m.payload[..] == b"q"));

    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let partial = requester
        .request_many(
            "svc.count",
            Headers::new(),
            Bytes::from_static(b"q"),
            3,
            timeout,
        )
        .await
        .expect("request");
    assert_eq!(partial.len(), 2, "two of three replies, then the deadline");
    assert!(started.elapsed() >= timeout);

    // Inboxes come from the client, under its prefix.
    let inbox = requester.new_inbox();
    assert!(inbox.starts_with("_INBOX."));
    for r in responders {
        r.abort();
    }
}

#[tokio::test]
async fn slow_subscriber_loses_messages_and_counts_them() {
    let bin = require_nats!();
    let server = NatsServer::start(&bin);
    let slow = connect_with(NatsOptions {
        subscriber_capacity: 4,
        ..NatsOptions::new([server.url.clone()])
    })
    .await;
    let fast = connect(&server, "fast").await;
    let mut sub = slow.subscribe("slow", None).await.expect("sub");
    slow.flush().await.expect("flush");
    for _ in 0..100 {
        publish(&fast, "slow", b"x").await;
    }
    eventually("96 messages dropped", || async {
        (slow.dropped() == 96).then_some(())
    })
    .await;
    for _ in 0..4 {
        recv(&mut sub).await;
    }
    assert!(sub.try_next().is_none());
    // The client is still healthy for everyone else.
    publish(&fast, "slow", b"after").await;
    assert_eq!(&recv(&mut sub).await.payload[..], b"after");
}

#[tokio::test]
async fn keeps_working_when_its_server_in_a_cluster_dies() {
    let bin = require_nats!();
    let a = NatsServer::start_clustered(&bin, "a", &[]);
    let seed = a.cluster.clone().expect("cluster url");
    let b = NatsServer::start_clustered(&bin, "b", &[&seed]);
    let c = NatsServer::start_clustered(&bin, "c", &[&seed]);
    for server in [&a, &b, &c] {
        eventually("a full mesh of routes", || async {
            let routez = server.monitor("/routez").await;
            let peers: std::collections::HashSet<_> = routez["routes"]
                .as_array()?
                .iter()
                .filter_map(|r| r["remote_name"].as_str().map(str::to_owned))
                .collect();
            (peers.len() == 2).then_some(())
        })
        .await;
    }

    // Given only A: B and C are learnt from the INFO at connect time.
    let bus = connect(&a, "survivor").await;
    let info = bus.client().server_info();
    assert_eq!(info.server_name, "a");
    for other in [&b, &c] {
        let hostport = other.url.trim_start_matches("nats://");
        assert!(
            info.connect_urls.iter().any(|u| u.ends_with(hostport)),
            "{hostport} not among discovered servers {:?}",
            info.connect_urls
        );
    }
    let on_c = connect(&c, "publisher").await;
    let mut exact = bus.subscribe("fo.room", None).await.expect("sub");
    let mut wild = bus.subscribe("fo.*", Some("g")).await.expect("sub");

    // Interest crosses the route asynchronously: publish until it arrives.
    async fn deliver(from: &NatsBus, subs: [&mut Subscription; 2], what: &str) {
        for (i, sub) in subs.into_iter().enumerate() {
            let payload = Bytes::from(format!("{what}-{i}"));
            let deadline = Instant::now() + WAIT;
            'publish: loop {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                from.publish("fo.room", Headers::new(), payload.clone(), None)
                    .await
                    .expect("publish");
                let round = Instant::now() + Duration::from_millis(100);
                loop {
                    match tokio::time::timeout_at(round, sub.next()).await {
                        Ok(Some(m)) if m.payload == payload => {
                            assert_eq!(m.subject, "fo.room");
                            break 'publish;
                        }
                        Ok(Some(_)) => continue, // a copy from an earlier round
                        Ok(None) => panic!("subscription closed"),
                        Err(_) => continue 'publish,
                    }
                }
            }
        }
    }
    deliver(&on_c, [&mut exact, &mut wild], "before").await;
    assert_eq!(bus.reconnects(), 0);

    let (b_port, c_port) = (b.url.clone(), c.url.clone());
    drop(a); // SIGKILL
    eventually("a reconnect to another server", || async {
        (bus.reconnects() >= 1 && bus.connection_state() == ConnectionState::Connected)
            .then_some(())
    })
    .await;
    let now_on = bus.client().server_info();
    assert!(
        [&b_port, &c_port]
            .iter()
            .any(|u| u.ends_with(&format!(":{}", now_on.port))),
        "reconnected to port {} of B or C",
        now_on.port
    );
    assert!(bus.disconnects() >= 1);

    // Resubscribed by the client: a message published on C after the loss arrives.
    deliver(&on_c, [&mut exact, &mut wild], "after").await;
    // And publishing from the survivor reaches C's subscribers.
    let mut on_c_sub = on_c.subscribe("fo.back", None).await.expect("sub");
    on_c.flush().await.expect("flush");
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the survivor's message"
        );
        publish(&bus, "fo.back", b"hi").await;
        if let Ok(msg) = tokio::time::timeout(Duration::from_millis(100), on_c_sub.next()).await {
            assert_eq!(&msg.expect("open").payload[..], b"hi");
            break;
        }
    }
}

#[tokio::test]
async fn invalid_subjects_and_headers_are_errors() {
    let bin = require_nats!();
    let server = NatsServer::start(&bin);
    let bus = connect(&server, "invalid").await;
    for subject in ["", "a.*", "a.>", "a b", "a..b", ".a", "a."] {
        let err = bus
            .publish(subject, Headers::new(), Bytes::new(), None)
            .await
            .expect_err(subject);
        assert!(
            matches!(err, BusError::InvalidSubject(_)),
            "{subject}: {err}"
        );
    }
    let err = bus
        .publish("ok", Headers::new(), Bytes::new(), Some("bad reply"))
        .await
        .expect_err("reply");
    assert!(matches!(err, BusError::InvalidSubject(_)));
    for pattern in ["", "a.>.b", "a b", "a..b", "a*"] {
        let err = bus.subscribe(pattern, None).await.expect_err(pattern);
        assert!(
            matches!(err, BusError::InvalidSubject(_)),
            "{pattern}: {err}"
        );
    }
    for queue in ["", "bad queue"] {
        let err = bus.subscribe("ok", Some(queue)).await.expect_err(queue);
        assert!(
            matches!(err, BusError::InvalidSubject(_)),
            "{queue:?}: {err}"
        );
    }
    let mut h = Headers::new();
    h.append("bad name", "v");
    let err = bus
        .publish("ok", h, Bytes::new(), None)
        .await
        .expect_err("header");
    assert!(matches!(err, BusError::Connection(_)), "{err}");
    let mut h = Headers::new();
    h.append("name", "line\nbreak");
    assert!(bus.publish("ok", h, Bytes::new(), None).await.is_err());
    // The connection is unharmed by all that.
    let mut sub = bus.subscribe("ok", None).await.expect("sub");
    publish(&bus, "ok", b"fine").await;
    assert_eq!(&recv(&mut sub).await.payload[..], b"fine");
}

#[tokio::test]
async fn connect_fails_with_the_cause_when_nobody_listens() {
    // A port that was free a moment ago: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let err = NatsBus::connect(NatsOptions {
        connect_timeout: Duration::from_secs(2),
        ..NatsOptions::new([format!("nats://127.0.0.1:{port}")])
    })
    .await
    .expect_err("nothing listens");
    match err {
        BusError::Connection(source) => {
            assert!(source.downcast_ref::<async_nats::ConnectError>().is_some())
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn authenticates_with_a_token_or_a_user_and_password() {
    let bin = require_nats!();
    let opts = |url: &str| NatsOptions {
        connect_timeout: Duration::from_secs(2),
        ..NatsOptions::new([url.to_owned()])
    };
    let server = NatsServer::start_with(&bin, &["--auth", "s3cret-token"]);
    let bus = connect_with(NatsOptions {
        token: Some("s3cret-token".into()),
        ..opts(&server.url)
    })
    .await;
    let mut sub = bus.subscribe("auth.ok", None).await.expect("subscribe");
    publish(&bus, "auth.ok", b"in").await;
    assert_eq!(&recv(&mut sub).await.payload[..], b"in");
    let refused = NatsBus::connect(NatsOptions {
        token: Some("wrong".into()),
        ..opts(&server.url)
    })
    .await
    .expect_err("a wrong token is refused");
    assert!(
        format!("{refused:?}")
            .to_lowercase()
            .contains("authorization"),
        "the cause is named: {refused:?}"
    );

    let server = NatsServer::start_with(&bin, &["--user", "edge", "--pass", "pa55word"]);
    connect_with(NatsOptions {
        user: Some("edge".into()),
        password: Some("pa55word".into()),
        ..opts(&server.url)
    })
    .await;
    let refused = NatsBus::connect(NatsOptions {
        user: Some("edge".into()),
        password: Some("nope".into()),
        ..opts(&server.url)
    })
    .await
    .expect_err("a wrong password is refused");
    assert!(
        !format!("{refused:?}").contains("nope"),
        "the password is not in the error"
    );
}

#[tokio::test]
async fn speaks_tls_to_a_server_verified_by_the_given_ca() {
    let bin = require_nats!();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write");
        path
    };
    let ca_file = write("ca.pem", ca.pem());
    let cert_file = write("server.pem", cert.pem());
    let key_file = write("server.key", key.serialize_pem());
    let server = NatsServer::start_with(
        &bin,
        &[
            "--tls",
            "--tlscert",
            cert_file.to_str().expect("utf8"),
            "--tlskey",
            key_file.to_str().expect("utf8"),
        ],
    );
    let url = server.url.replacen("nats://", "tls://", 1);
    let bus = connect_with(NatsOptions {
        require_tls: true,
        tls_root_ca: Some(ca_file),
        connect_timeout: Duration::from_secs(5),
        ..NatsOptions::new([url.clone()])
    })
    .await;
    let mut sub = bus.subscribe("tls.ok", None).await.expect("subscribe");
    publish(&bus, "tls.ok", b"secret").await;
    assert_eq!(&recv(&mut sub).await.payload[..], b"secret");

    // Without the CA the server's certificate is not trusted.
    let refused = NatsBus::connect(NatsOptions {
        require_tls: true,
        connect_timeout: Duration::from_secs(2),
        ..NatsOptions::new([url])
    })
    .await;
    assert!(refused.is_err(), "an unknown CA is refused");
}

#[tokio::test]
async fn recovery_history_numbers_republishes_replays_and_knows_what_it_lost() {
    use roomcast_bus::nats::{NatsHistory, NatsSessions};
    use roomcast_bus::recovery::{
        History, RecoveryConfig, RecoveryError, SavedSession, SessionStore, SEQUENCE_HEADER,
    };
    use roomcast_bus::subject::Subjects;

    let bin = require_nats!();
    let server = NatsServer::start(&bin);
    let bus = connect(&server, "recovery").await;
    let subjects = Subjects::new("t");
    let config = RecoveryConfig {
        rooms: vec!["*".into()],
        history_max_bytes: 4096,
        ..RecoveryConfig::default()
    };
    let mut live = bus
        .subscribe(&subjects.room("/", "a"), None)
        .await
        .expect("sub");
    bus.flush().await.expect("flush");
    let history = NatsHistory::open(&bus, "hist-t", subjects.clone(), &config)
        .await
        .expect("stream");
    // A second opener (another process) shares the stream.
    let again = NatsHistory::open(&bus, "hist-t", subjects, &config)
        .await
        .expect("stream again");
    let mut headers = Headers::new();
    headers.append("rc-op", "emit");
    let a1 = history
        .append("/", "a", headers.clone(), Bytes::from_static(b"a1"))
        .await
        .expect("append");
    let b1 = again
        .append("/", "b", headers.clone(), Bytes::from_static(b"b1"))
        .await
        .expect("append");
    let a2 = history
        .append("/", "a", headers.clone(), Bytes::from_static(b"a2"))
        .await
        .expect("append");
    assert_eq!((a1, b1, a2), (1, 2, 3));
    let first = recv(&mut live).await;
    assert_eq!(first.payload, Bytes::from_static(b"a1"));
    assert_eq!(first.headers.get(SEQUENCE_HEADER), Some("1"));
    assert_eq!(first.headers.get("rc-op"), Some("emit"));

    let replay = history.since("/", &["a".into()], 0).await.expect("since");
    let got: Vec<(u64, &str, Bytes)> = replay
        .messages
        .iter()
        .map(|m| (m.seq, m.room.as_str(), m.payload.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "a", Bytes::from_static(b"a1")),
            (3, "a", Bytes::from_static(b"a2"))
        ]
    );
    assert_eq!(replay.upto, 3);
    assert_eq!(replay.messages[0].headers.get("rc-op"), Some("emit"));
    let nothing = history.since("/", &["b".into()], 2).await.expect("since");
    assert!(nothing.messages.is_empty());
    assert!(matches!(
        history.since("/", &["a".into()], 9).await,
        Err(RecoveryError::Lost(9))
    ));
    // Past the byte bound the oldest go, and a replay from before them is lost.
    for _ in 0..20 {
        history
            .append("/", "a", Headers::new(), Bytes::from(vec![b'x'; 400]))
            .await
            .expect("append");
    }
    assert!(matches!(
        history.since("/", &["a".into()], 0).await,
        Err(RecoveryError::Lost(0))
    ));

    let sessions = NatsSessions::open(&bus, "sessions-t", &config)
        .await
        .expect("bucket");
    let saved = SavedSession {
        sid: "sid".into(),
        pid: roomcast_bus::names::new_id(),
        ns: "/".into(),
        user: "alice".into(),
        rooms: vec!["a".into()],
        data_json: String::new(),
        saved_at_ms: 1,
        owner: None,
    };
    sessions.save(&saved).await.expect("save");
    assert_eq!(
        sessions.take(&saved.pid).await.expect("take"),
        Some(saved.clone())
    );
    assert_eq!(sessions.take(&saved.pid).await.expect("take"), None, "once");
    assert_eq!(sessions.take("not.a.key").await.expect("take"), None);
}

#[tokio::test]
async fn the_history_sequence_comes_from_jetstream_only() {
    use roomcast_bus::recovery::{sequence, SEQUENCE_HEADER};

    let bin = require_nats!();
    let server = NatsServer::start(&bin);
    let bus = connect(&server, "sequence").await;
    let mut sub = bus.subscribe("seq.t", None).await.expect("subscribe");
    bus.flush().await.expect("flush");
    // A sequence a publisher claims is not one the history gave.
    let mut headers = Headers::new();
    headers.append(SEQUENCE_HEADER, "7");
    headers.append("rc-op", "emit");
    bus.publish("seq.t", headers, Bytes::from_static(b"x"), None)
        .await
        .expect("publish");
    let msg = recv(&mut sub).await;
    assert_eq!(sequence(&msg.headers), 0);
    assert_eq!(msg.headers.get(SEQUENCE_HEADER), None);
    assert_eq!(msg.headers.get("rc-op"), Some("emit"));
}
