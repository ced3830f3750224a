//! The backend seam: everything roomcast asks of the infrastructure under it,
//! as four traits that live here together.
//!
//! - [`Bus`]: publish, subscribe (optionally in a queue group), request/reply.
//! - [`KvStore`]: a small key-value store with revisions, compare-and-swap and
//!   watches (presence, at-least-once delivery).
//! - [`History`]: the numbered history of recoverable rooms.
//! - [`SessionStore`]: the sessions saved for connection state recovery.
//!
//! Two implementations keep this contract, each in its own module tree:
//! [`crate::memory`] (one process, `roomcast standalone`) and [`crate::nats`]
//! (NATS core and JetStream, the cluster). [`Backend`] opens all four of
//! one implementation, so the processes wire them the same way whichever it
//! is. Nothing outside [`crate::nats`] knows NATS: its header names, stream and
//! bucket configurations, and client types stay there.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::memory::{MemoryBus, MemoryHistory, MemoryKv, MemorySessions};
use crate::nats::{NatsBus, NatsHistory, NatsKv, NatsSessions};
use crate::recovery::RecoveryConfig;
use crate::subject::Subjects;

// ---------------------------------------------------------------------------
// Bus

/// Message headers: an ordered multi-map of ASCII names to values without line
/// breaks (values are escaped by [`envelope`](crate::envelope) where they could hold anything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value; a name may carry several.
    pub fn append(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_owned(), value.into()));
    }

    /// The first value of a name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a name, in the order they were added.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A message as a subscriber receives it.
#[derive(Debug, Clone)]
pub struct Message {
    pub subject: String,
    pub headers: Headers,
    pub payload: Bytes,
    /// Where a request wants its reply.
    pub reply: Option<String>,
}

/// Bus failures. Callers map them to their own errors (gRPC UNAVAILABLE, etc.).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid subject {0:?}")]
    InvalidSubject(String),
    #[error("bus is closed")]
    Closed,
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("bus connection failed: {0}")]
    Connection(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A live subscription. Dropping it unsubscribes.
///
/// It is the implementation's own stream, read directly by the subscriber: no
/// task or channel of ours sits between the bus and the reader, so a
/// subscription costs one allocation here and what the implementation keeps
/// (for NATS, the client's channel), and a message one wake-up.
pub struct Subscription {
    stream: Pin<Box<dyn Stream<Item = Message> + Send + Sync>>,
}

impl Subscription {
    /// Wraps a stream whose drop ends the subscription.
    pub fn new(stream: impl Stream<Item = Message> + Send + Sync + 'static) -> Self {
        Self {
            stream: Box::pin(stream),
        }
    }

    /// The next message; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Message> {
        self.stream.next().await
    }

    /// A message if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Message> {
        self.stream.next().now_or_never().flatten()
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// The bus contract shared by the in-memory and the NATS implementations.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes a message; at most once, in order per subject for one publisher.
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        reply: Option<&str>,
    ) -> Result<(), BusError>;

    /// Subscribes to a subject (NATS wildcards allowed). Subscribers that give the
    /// same queue group share the messages: each goes to one of them.
    async fn subscribe(&self, subject: &str, queue: Option<&str>)
        -> Result<Subscription, BusError>;

    /// A subject nobody else uses, for replies.
    fn new_inbox(&self) -> String;

    /// Returns once every subscription made before the call is live where
    /// publishers reach it. In memory a subscription is live when `subscribe`
    /// returns. NATS takes a round trip: the subscriptions are then live at the
    /// server this client is connected to, so a message published through that
    /// server after this returns reaches them; other servers of a NATS cluster
    /// learn of them a moment later.
    async fn sync(&self) -> Result<(), BusError> {
        Ok(())
    }

    /// Publishes a request with a fresh reply subject; its replies, however
    /// many, arrive on the returned subscription, taken before the request
    /// goes out.
    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<Subscription, BusError> {
        let inbox = self.new_inbox();
        let sub = self.subscribe(&inbox, None).await?;
        self.publish(subject, headers, payload, Some(&inbox))
            .await?;
        Ok(sub)
    }

    /// Publishes a request and gathers up to `expected` replies until `timeout`.
    /// Returns what arrived; fewer than `expected` replies is not an error.
    async fn request_many(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        expected: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>, BusError> {
        let mut sub = self.request(subject, headers, payload).await?;
        let mut replies = Vec::with_capacity(expected);
        let deadline = tokio::time::Instant::now() + timeout;
        while replies.len() < expected {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(msg)) => replies.push(msg),
                Ok(None) => return Err(BusError::Closed),
                Err(_) => break,
            }
        }
        Ok(replies)
    }

    /// Asks whoever listens on `subject` and waits up to `timeout` for the
    /// first reply. [`Asked::NoResponders`] when the bus knows at once that
    /// nobody listens (NATS says so); a bus that cannot tell waits out the
    /// timeout and answers [`Asked::Silent`].
    async fn ask(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Asked, BusError> {
        first_reply(self, subject, headers, payload, timeout).await
    }
}

/// [`Bus::ask`] for a bus that cannot tell that nobody listens: the first
/// reply within `timeout`, or [`Asked::Silent`].
pub(crate) async fn first_reply<B: Bus + ?Sized>(
    bus: &B,
    subject: &str,
    headers: Headers,
    payload: Bytes,
    timeout: Duration,
) -> Result<Asked, BusError> {
    let mut replies = bus
        .request_many(subject, headers, payload, 1, timeout)
        .await?;
    Ok(replies.pop().map_or(Asked::Silent, Asked::Reply))
}

/// What [`Bus::ask`] heard.
#[derive(Debug)]
pub enum Asked {
    Reply(Message),
    /// Nobody listens on the subject.
    NoResponders,
    /// No reply in time (nobody listens, or whoever does is slow or stuck).
    Silent,
}

// ---------------------------------------------------------------------------
// Key-value store

/// One change of a key, as a watch reports it; `value` is `None` for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub value: Option<Bytes>,
    pub revision: u64,
    /// A watcher that has applied every change up to this one holds the
    /// newest value of every key under the prefix as of this revision. (A
    /// store may skip a change superseded before the watch reached it, the
    /// superseding one coming later; and the current values at the start
    /// come key by key: in between, a watcher's view may miss keys.)
    pub caught_up: bool,
}

/// Key-value store failures.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The key changed since it was read (or exists when it should not).
    #[error("the key changed concurrently")]
    Conflict,
    #[error("presence store unavailable: {0}")]
    Unavailable(String),
}

/// Changes under a prefix: the current values first, in revision order (among
/// them deletes of keys no longer present, where the store keeps them), then
/// every change.
pub type Watch = BoxStream<'static, Change>;

/// A key-value store with a revision per write, compare-and-swap and watches.
/// Keys are dot-separated tokens of letters, digits, `-`, `_` and `=`.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// The value and revision of a key.
    async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, KvError>;
    /// Writes unconditionally; returns the new revision.
    async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError>;
    /// Writes only if the key is at revision `expected` (`None`: absent or
    /// deleted); [`KvError::Conflict`] otherwise.
    async fn swap(&self, key: &str, value: Bytes, expected: Option<u64>) -> Result<u64, KvError>;
    async fn delete(&self, key: &str) -> Result<(), KvError>;
    /// Deletes only if the key is still at `revision`; [`KvError::Conflict`]
    /// otherwise (someone else changed or deleted it first).
    async fn delete_if(&self, key: &str, revision: u64) -> Result<(), KvError>;
    /// The live keys that start with `prefix`.
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError>;
    /// Watches the keys under `prefix` (which ends with `.`).
    async fn watch(&self, prefix: &str) -> Result<Watch, KvError>;
}

/// A watch fed by a task; the task stops when the watch is dropped.
pub(crate) fn watch_fed_by<F, Fut>(f: F) -> Watch
where
    F: FnOnce(tokio::sync::mpsc::Sender<Change>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(f(tx));
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// What a key-value store is for, as [`Backend::kv`] opens it.
#[derive(Debug, Clone)]
pub struct KvBucket {
    /// The store's name; opening a name twice gives the same store.
    pub name: String,
    /// What it holds, for operators listing the stores.
    pub purpose: String,
    /// Copies kept (where the backend replicates).
    pub replicas: usize,
    /// How long a key lives after its last write (zero: no limit; where the
    /// backend expires keys).
    pub max_age: Duration,
}

// ---------------------------------------------------------------------------
// Connection state recovery: history and sessions

/// One emit of the history, as it was appended.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub seq: u64,
    pub ns: String,
    pub room: String,
    pub headers: Headers,
    pub payload: Bytes,
}

/// What the history holds after an offset, up to a point.
#[derive(Debug, Default)]
pub struct Replay {
    /// The emits to the asked rooms after the offset, in sequence order.
    pub messages: Vec<Replayed>,
    /// Every emit up to this sequence is accounted for: those of the asked
    /// rooms are in `messages`. Later ones are live traffic.
    pub upto: u64,
}

/// A Socket.IO socket as recovery keeps it: while it is connected (`owner`
/// names its edge, which keeps the record up to date), or after its
/// connection closed in a way that allows recovery (`owner` is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    /// The Socket.IO socket id, kept across the recovery.
    pub sid: String,
    pub pid: String,
    pub ns: String,
    pub user: String,
    pub rooms: Vec<String>,
    #[serde(default)]
    pub data_json: String,
    pub saved_at_ms: i64,
    /// The node id of the edge that holds the socket connected; `None` once
    /// its connection closed (ADR 18).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Recovery state failures.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("the history after offset {0} is no longer complete")]
    Lost(u64),
    #[error("the recovery store is unavailable: {0}")]
    Unavailable(String),
}

/// The history of recoverable rooms.
#[async_trait::async_trait]
pub trait History: Send + Sync + 'static {
    /// Stores an emit to a room and publishes it on the room's subject with
    /// its sequence number. Returns the number.
    async fn append(
        &self,
        ns: &str,
        room: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<u64, RecoveryError>;

    /// The emits to `rooms` of `ns` after sequence `after`, up to now.
    /// [`RecoveryError::Lost`] when emits after `after` were dropped (too old,
    /// over the size bound) or `after` is not a sequence this history gave.
    async fn since(&self, ns: &str, rooms: &[String], after: u64) -> Result<Replay, RecoveryError>;
}

/// The sessions kept for recovery, by pid. A record lives one recovery
/// window after its last write. Every write and removal has a revision, so
/// that two processes racing for one record cannot both win.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Writes a session, replacing whatever is kept under its pid; returns
    /// the new revision.
    async fn save(&self, session: &SavedSession) -> Result<u64, RecoveryError>;

    /// Writes a session only if the record kept under its pid is at
    /// `revision` (`None`: only if there is none). `Ok(None)` when it is not:
    /// someone else took or rewrote it.
    async fn save_if(
        &self,
        session: &SavedSession,
        revision: Option<u64>,
    ) -> Result<Option<u64>, RecoveryError>;

    /// The session kept under `pid`, with its revision. `None` when unknown,
    /// expired or not a well-formed pid.
    async fn get(&self, pid: &str) -> Result<Option<(SavedSession, u64)>, RecoveryError>;

    /// Removes the session kept under `pid` if it is still at `revision`;
    /// false when it is not (someone else took or rewrote it).
    async fn remove_if(&self, pid: &str, revision: u64) -> Result<bool, RecoveryError>;

    /// Takes a session out, whoever holds it: a pid recovers at most once.
    /// `None` when unknown or expired.
    async fn take(&self, pid: &str) -> Result<Option<SavedSession>, RecoveryError> {
        for _ in 0..8 {
            let Some((session, revision)) = self.get(pid).await? else {
                return Ok(None);
            };
            if self.remove_if(pid, revision).await? {
                return Ok(Some(session));
            }
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------
// One backend, all four

/// The four parts of one implementation, opened the same way in every
/// process: `Backend::memory()` in `standalone`, `Backend::nats(bus)` in a
/// cluster, then [`Backend::bus`], [`Backend::kv`], [`Backend::history`] and
/// [`Backend::sessions`] for what the process runs.
#[derive(Clone)]
pub struct Backend {
    bus: Arc<dyn Bus>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Memory(Arc<MemoryParts>),
    Nats(NatsBus),
}

/// What the memory backend has opened, by name: a name opened twice is one
/// store, as on NATS.
#[derive(Default)]
struct MemoryParts {
    kv: Mutex<HashMap<String, MemoryKv>>,
    histories: Mutex<HashMap<String, Arc<dyn History>>>,
    sessions: Mutex<HashMap<String, Arc<dyn SessionStore>>>,
}

/// The entry `name` of `map`, made by `make` when missing.
fn opened<T: Clone>(map: &Mutex<HashMap<String, T>>, name: &str, make: impl FnOnce() -> T) -> T {
    // One map operation under the lock: consistent across a panic.
    let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
    map.entry(name.to_owned()).or_insert_with(make).clone()
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Memory(_) => "memory",
            Kind::Nats(_) => "nats",
        };
        f.debug_struct("Backend")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Everything in this process's memory.
    pub fn memory() -> Backend {
        Backend {
            bus: Arc::new(MemoryBus::default()),
            kind: Kind::Memory(Arc::default()),
        }
    }

    /// Everything on the NATS server `bus` is connected to (JetStream for the
    /// stores and the history).
    pub fn nats(bus: NatsBus) -> Backend {
        Backend {
            bus: Arc::new(bus.clone()),
            kind: Kind::Nats(bus),
        }
    }

    /// The message bus.
    pub fn bus(&self) -> Arc<dyn Bus> {
        self.bus.clone()
    }

    /// Opens the key-value store `bucket.name`, creating it when missing.
    pub async fn kv(&self, bucket: &KvBucket) -> Result<Arc<dyn KvStore>, KvError> {
        match &self.kind {
            Kind::Memory(parts) => Ok(Arc::new(opened(&parts.kv, &bucket.name, MemoryKv::default))),
            Kind::Nats(bus) => Ok(Arc::new(NatsKv::open(bus, bucket).await?)),
        }
    }

    /// Opens the history `name` of recoverable rooms, creating it when missing
    /// (with `config`'s bounds; an existing one keeps its own).
    pub async fn history(
        &self,
        name: &str,
        subjects: Subjects,
        config: &RecoveryConfig,
    ) -> Result<Arc<dyn History>, RecoveryError> {
        match &self.kind {
            Kind::Memory(parts) => Ok(opened(&parts.histories, name, || {
                let history: Arc<dyn History> =
                    Arc::new(MemoryHistory::new(self.bus(), subjects, config));
                history
            })),
            Kind::Nats(bus) => Ok(Arc::new(
                NatsHistory::open(bus, name, subjects, config).await?,
            )),
        }
    }

    /// Opens the session store `name`, creating it when missing (keeping
    /// sessions for `config`'s window; an existing one keeps its own).
    pub async fn sessions(
        &self,
        name: &str,
        config: &RecoveryConfig,
    ) -> Result<Arc<dyn SessionStore>, RecoveryError> {
        match &self.kind {
            Kind::Memory(parts) => Ok(opened(&parts.sessions, name, || {
                let sessions: Arc<dyn SessionStore> = Arc::new(MemorySessions::new(config.window));
                sessions
            })),
            Kind::Nats(bus) => Ok(Arc::new(NatsSessions::open(bus, name, config).await?)),
        }
    }
}
