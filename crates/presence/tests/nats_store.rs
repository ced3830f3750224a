//! The JetStream KV presence store against a real nats-server: the contract
//! the in-memory store also keeps (compare-and-swap, prefixes, watches).

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use roomcast_presence::nats::NatsStore;
use roomcast_presence::{Change, Store, StoreError};
use roomcast_testkit::nats::NatsServer;
use roomcast_testkit::require_nats;

async fn next(watch: &mut roomcast_presence::store::Watch) -> Change {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a change in time")
        .expect("watch open")
}

#[tokio::test]
async fn kv_store_swaps_lists_and_watches() {
    let bin = require_nats!();
    let server = NatsServer::start(&bin);
    let client = async_nats::connect(&server.url).await.expect("connect");
    let store = NatsStore::open(client.clone(), "presence-test", 1)
        .await
        .expect("bucket");
    // Opening again finds the same bucket.
    let again = NatsStore::open(client, "presence-test", 1)
        .await
        .expect("bucket again");

    let r1 = store
        .swap("user.alice", Bytes::from_static(b"1"), None)
        .await
        .expect("create");
    assert!(matches!(
        again
            .swap("user.alice", Bytes::from_static(b"x"), None)
            .await,
        Err(StoreError::Conflict)
    ));
    let r2 = store
        .swap("user.alice", Bytes::from_static(b"2"), Some(r1))
        .await
        .expect("update at the read revision");
    assert!(matches!(
        again
            .swap("user.alice", Bytes::from_static(b"x"), Some(r1))
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        store.get("user.alice").await.expect("get"),
        Some((Bytes::from_static(b"2"), r2))
    );

    let mut watch = store.watch("sock.").await.expect("watch");
    store
        .put("sock.e1.s1", Bytes::from_static(b"a"))
        .await
        .expect("put");
    store
        .put("sock.e2.s2", Bytes::from_static(b"b"))
        .await
        .expect("put");
    let mut keys = store.keys("sock.e1.").await.expect("keys");
    keys.sort();
    assert_eq!(keys, vec!["sock.e1.s1".to_owned()]);
    assert_eq!(next(&mut watch).await.key, "sock.e1.s1");
    assert_eq!(next(&mut watch).await.key, "sock.e2.s2");

    store.delete("sock.e1.s1").await.expect("delete");
    let gone = next(&mut watch).await;
    assert_eq!((gone.key.as_str(), gone.value), ("sock.e1.s1", None));
    assert_eq!(store.get("sock.e1.s1").await.expect("get"), None);
    assert!(store.keys("sock.e1.").await.expect("keys").is_empty());
    // A deleted key can be created again.
    store
        .swap("sock.e1.s1", Bytes::from_static(b"c"), None)
        .await
        .expect("create after delete");

    // A conditional delete loses to a change made since the read.
    let rev = store
        .put("sock.e3.s3", Bytes::from_static(b"v1"))
        .await
        .expect("put");
    store
        .put("sock.e3.s3", Bytes::from_static(b"v2"))
        .await
        .expect("put");
    assert!(matches!(
        again.delete_if("sock.e3.s3", rev).await,
        Err(StoreError::Conflict)
    ));
    let current = store
        .get("sock.e3.s3")
        .await
        .expect("get")
        .expect("still there")
        .1;
    again
        .delete_if("sock.e3.s3", current)
        .await
        .expect("delete at the current revision");
    assert!(
        matches!(
            store.delete_if("sock.e3.s3", current).await,
            Err(StoreError::Conflict)
        ),
        "a second delete of the same revision loses"
    );

    // A new watch starts with the current values.
    let mut fresh = store.watch("user.").await.expect("watch");
    let current = next(&mut fresh).await;
    assert_eq!(
        (current.key.as_str(), current.value),
        ("user.alice", Some(Bytes::from_static(b"2")))
    );
}
