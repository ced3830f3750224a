//! Presence: which sockets belong to which user across the whole cluster,
//! user online/offline transitions with a grace period, edge leases, and the
//! per-user connection limit.
//!
//! State lives in a [`KvStore`] of the backend (JetStream KV in a cluster,
//! memory standalone), opened as [`bucket`]:
//!
//! | key | value |
//! |---|---|
//! | `sock.<node>.<socket>` | [`SocketRecord`]: one per connected socket |
//! | `user.<user>` | [`UserState`]: the user's sockets, status, last seen |
//! | `lease.<node>` | an edge's lease, rewritten every third of the TTL |
//! | `keeper` | written by every keeper at each sweep: the store takes writes |
//!
//! Edges write socket records and user states as sockets come and go; the
//! writer whose compare-and-swap moves a user from offline to online announces
//! it. When a user's last socket goes the state becomes `leaving`; every
//! control plane (or the standalone process) runs the [`Presence::run_keeper`]
//! loop, which, a grace period later, swaps `leaving` to `offline`: only one
//! swap can win, so the offline announcement goes out once however many
//! control planes run. The keeper also watches leases: an edge whose lease has
//! not changed for the TTL is dead, and its sockets are removed as if they had
//! disconnected.
//!
//! Keys escape names like subject tokens, with `=` as the escape character
//! (KV keys allow no `~`).
//!
//! The keeper's grace timers are its own tasks, on a tracker it closes and
//! joins (within a bound) when it stops; the edges run [`Presence::hold_lease`]
//! as a task of their own.
//!
//! The keeper's watch of `user.` keys also feeds the process's user
//! directory (each user's route tags, in memory), which answers the control
//! plane's user lookups once it has applied every write that preceded them
//! ([`Presence::route_tags`], ADR 0019).
//!
//! Layout: this file holds the bookkeeping and the keeper; [`directory`] the
//! user directory; [`metrics`] metric names. The store is the bus crate's
//! [`KvStore`].

#![forbid(unsafe_code)]

mod directory;
pub mod metrics;

pub use directory::{Lookup, Unknown, FENCE_KEY};

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use roomcast_bus::envelope::{now_ms, Closing, Command, Packet, Target};
use roomcast_bus::names::tag_of;
use roomcast_bus::subject::{token, untoken, Subjects};
use roomcast_bus::Bus;
use roomcast_wire::socketio;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use roomcast_bus::{Change, KvBucket, KvError, KvStore, Watch};

/// The key-value store presence keeps its state in, for
/// [`Backend::kv`](roomcast_bus::Backend::kv): `replicas` copies, keys that
/// never age out (presence removes its own).
pub fn bucket(name: &str, replicas: usize) -> KvBucket {
    KvBucket {
        name: name.to_owned(),
        purpose: "roomcast presence: sockets, users, edge leases".to_owned(),
        replicas,
        max_age: Duration::ZERO,
    }
}

/// The event every audience socket receives on a transition.
pub const STATUS_EVENT: &str = "user-status-change";
/// The event an evicted socket receives before it is disconnected.
pub const EVICTED_EVENT: &str = "roomcast:evicted";

/// How long a stopping edge tries to release its lease.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// The key every keeper writes at each sweep, to learn whether the store
/// takes writes (the edges' leases need it to).
const KEEPER_KEY: &str = "keeper";

/// How long a user lookup waits for the directory to apply the writes that
/// preceded it, before the caller reads the store instead.
pub const DIRECTORY_WAIT: Duration = Duration::from_millis(200);

/// How many times a compare-and-swap is retried under contention.
const MAX_SWAPS: usize = 64;

/// How long a stopping keeper waits for its grace timers to end (they end
/// at once on its stop; a store that hangs must not hold up an exit).
const JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A connected socket, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketRecord {
    pub id: String,
    pub user: String,
    pub ns: String,
    pub node: String,
    pub rooms: Vec<String>,
    pub connected_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Offline,
    Online,
    /// The last socket went; offline once the grace period passes.
    Leaving,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSocket {
    pub id: String,
    pub node: String,
    pub connected_at_ms: i64,
}

/// A user's presence.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserState {
    pub sockets: Vec<UserSocket>,
    pub status: Status,
    /// When `leaving` began.
    #[serde(default)]
    pub since_ms: i64,
    /// When the user was last connected (kept after offline).
    #[serde(default)]
    pub last_seen_ms: i64,
    /// Rooms the user's sockets were in while they left (the `rooms` audience).
    #[serde(default)]
    pub rooms: Vec<String>,
}

impl UserState {
    /// Online as far as users can tell (`leaving` is still online).
    pub fn is_online(&self) -> bool {
        self.status != Status::Offline
    }

    /// The route tags of the user's sockets (ADR 0016), each once: the
    /// edges that hold them listen on these.
    pub fn route_tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self
            .sockets
            .iter()
            .filter_map(|s| tag_of(&s.id).map(str::to_owned))
            .collect();
        tags.sort_unstable();
        tags.dedup();
        tags
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Connect,
    Disconnect,
    Join,
    Leave,
    Online,
    Offline,
}

/// What `WatchPresence` streams, published on the presence subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    pub kind: EventKind,
    pub user: String,
    #[serde(default)]
    pub socket: String,
    #[serde(default)]
    pub ns: String,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub rooms: Vec<String>,
    pub at_ms: i64,
    #[serde(default)]
    pub last_seen_ms: i64,
}

/// Who receives `user-status-change`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every socket of the presence namespace.
    Namespace,
    /// The rooms the user's sockets were in.
    Rooms,
    /// One named room.
    Room(String),
    /// Nobody (`WatchPresence` still reports transitions).
    None,
}

#[derive(Debug, Clone)]
pub struct PresenceConfig {
    pub cluster: String,
    /// How long a user with no socket left stays online.
    pub grace: Duration,
    /// How long an edge's lease lives without a refresh.
    pub lease_ttl: Duration,
    pub audience: Audience,
    /// The namespace `user-status-change` is emitted in.
    pub namespace: String,
    /// Most sockets one user may have; 0 for no limit.
    pub max_sockets_per_user: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            cluster: "roomcast".into(),
            grace: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(9),
            audience: Audience::None,
            namespace: "/".into(),
            max_sockets_per_user: 0,
        }
    }
}

/// Escapes a name into a KV key token.
fn key_token(name: &str) -> String {
    token(name).replace('~', "=")
}

fn key_untoken(tok: &str) -> Option<String> {
    untoken(&tok.replace('=', "~"))
}

pub fn socket_key(node: &str, socket: &str) -> String {
    format!("sock.{}.{}", key_token(node), key_token(socket))
}

fn node_prefix(node: &str) -> String {
    format!("sock.{}.", key_token(node))
}

pub fn user_key(user: &str) -> String {
    format!("user.{}", key_token(user))
}

pub fn lease_key(node: &str) -> String {
    format!("lease.{}", key_token(node))
}

fn lease_value() -> Bytes {
    to_json(&serde_json::json!({ "at": now_ms() }))
}

/// A lease that looked silent, read again: the keeper's verdict on its edge.
enum LeaseVerdict {
    /// Unchanged for the TTL: its edge is dead.
    Expired,
    /// Rewritten since (at this revision): its edge is alive, and the
    /// keeper's watch missed it.
    Moved(u64),
    /// Deleted: its edge said goodbye, and the watch missed it.
    Released,
    /// The store could not be read: nobody is judged.
    Unknown,
}

/// The outcome of [`Presence::keep_lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseKept {
    /// The lease's revision now.
    pub revision: u64,
    /// Whether it had been taken away (and the edge's sockets removed).
    pub lost: bool,
}

fn to_json<T: Serialize>(v: &T) -> Bytes {
    // Plain structs of strings and numbers always serialise. Trimmed to its
    // length: the record is kept (standalone keeps it in memory for as long as
    // its socket lives), and the writer's spare capacity doubles it.
    Bytes::from(serde_json::to_vec(v).unwrap_or_default().into_boxed_slice())
}

/// The presence bookkeeping of one process.
#[derive(Clone)]
pub struct Presence {
    store: Arc<dyn KvStore>,
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    cfg: Arc<PresenceConfig>,
    /// Fed by this process's keeper, shared by its clones.
    directory: Arc<directory::Directory>,
}

impl Presence {
    pub fn new(store: Arc<dyn KvStore>, bus: Arc<dyn Bus>, cfg: PresenceConfig) -> Presence {
        Presence {
            store,
            bus,
            subjects: Subjects::new(&cfg.cluster),
            cfg: Arc::new(cfg),
            directory: Arc::default(),
        }
    }

    /// The route tags of each user's sockets, from the user directory this
    /// process's keeper keeps, once it has applied every `user.` write that
    /// completed before this call (waiting for that up to `wait`).
    /// [`Lookup::Unknown`] when it cannot tell: the caller reads each user
    /// ([`Presence::user`]) instead.
    pub async fn route_tags(&self, users: &[String], wait: Duration) -> Lookup {
        let keys: Vec<String> = users.iter().map(|u| user_key(u)).collect();
        self.directory.lookup(&self.store, &keys, wait).await
    }

    pub fn config(&self) -> &PresenceConfig {
        &self.cfg
    }

    /// The state of a user (offline with no history when unknown).
    pub async fn user(&self, user: &str) -> Result<UserState, KvError> {
        Ok(self.read_user(user).await?.0)
    }

    async fn read_user(&self, user: &str) -> Result<(UserState, Option<u64>), KvError> {
        match self.store.get(&user_key(user)).await? {
            None => Ok((UserState::default(), None)),
            Some((bytes, rev)) => match serde_json::from_slice(&bytes) {
                Ok(state) => Ok((state, Some(rev))),
                Err(e) => {
                    tracing::warn!(%user, error = %e, "unreadable user state replaced");
                    Ok((UserState::default(), Some(rev)))
                }
            },
        }
    }

    /// Reads, changes and swaps a user's state until the swap wins; returns
    /// the state before and after.
    async fn update_user(
        &self,
        user: &str,
        mut change: impl FnMut(&mut UserState),
    ) -> Result<(UserState, UserState), KvError> {
        for _ in 0..MAX_SWAPS {
            let (before, rev) = self.read_user(user).await?;
            let mut after = before.clone();
            change(&mut after);
            if after == before {
                return Ok((before, after));
            }
            match self.store.swap(&user_key(user), to_json(&after), rev).await {
                Ok(_) => return Ok((before, after)),
                Err(KvError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(KvError::Unavailable(format!(
            "user state of {user:?} kept changing"
        )))
    }

    /// A socket connected: record it, bring its user online, enforce the limit.
    pub async fn connected(&self, rec: &SocketRecord) -> Result<(), KvError> {
        self.store
            .put(&socket_key(&rec.node, &rec.id), to_json(rec))
            .await?;
        self.publish_event(rec, EventKind::Connect, &rec.rooms)
            .await;
        if rec.user.is_empty() {
            return Ok(());
        }
        let entry_rooms = rec.rooms.clone();
        let entry = UserSocket {
            id: rec.id.clone(),
            node: rec.node.clone(),
            connected_at_ms: rec.connected_at_ms,
        };
        let (before, after) = self
            .update_user(&rec.user, |s| {
                // By id and node: a socket recovered on another edge keeps
                // its id, and its old edge's entry goes when that edge's
                // record does (its close, or the clean-up after its lease).
                if !s
                    .sockets
                    .iter()
                    .any(|x| x.id == entry.id && x.node == entry.node)
                {
                    s.sockets.push(entry.clone());
                }
                if s.status == Status::Offline {
                    // The rooms audience of the online announcement: where the
                    // first socket is at connect.
                    s.rooms = entry_rooms.clone();
                }
                s.status = Status::Online;
                s.last_seen_ms = now_ms();
            })
            .await?;
        if before.status == Status::Offline {
            self.transition(&rec.user, EventKind::Online, &after).await;
        }
        let limit = self.cfg.max_sockets_per_user;
        if limit > 0 && after.sockets.len() > limit {
            let mut sockets = after.sockets.clone();
            sockets.sort_by_key(|s| s.connected_at_ms);
            for old in &sockets[..sockets.len() - limit] {
                if old.id != rec.id {
                    self.evict(rec, old, limit).await;
                }
            }
        }
        Ok(())
    }

    /// A socket joined or left rooms: rewrite its record.
    pub async fn rooms_changed(
        &self,
        rec: &SocketRecord,
        joined: &[String],
        left: &[String],
    ) -> Result<(), KvError> {
        self.store
            .put(&socket_key(&rec.node, &rec.id), to_json(rec))
            .await?;
        if !joined.is_empty() {
            self.publish_event(rec, EventKind::Join, joined).await;
        }
        if !left.is_empty() {
            self.publish_event(rec, EventKind::Leave, left).await;
        }
        Ok(())
    }

    /// A socket is gone: forget it; its user starts leaving when it was the last.
    pub async fn disconnected(&self, rec: &SocketRecord) -> Result<(), KvError> {
        self.store.delete(&socket_key(&rec.node, &rec.id)).await?;
        self.forget(rec).await
    }

    /// Announces a socket's removal and takes it out of its user's set; called
    /// by whoever removed its record, once.
    async fn forget(&self, rec: &SocketRecord) -> Result<(), KvError> {
        self.publish_event(rec, EventKind::Disconnect, &rec.rooms)
            .await;
        if rec.user.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let grace = self.cfg.grace;
        let (before, after) = self
            .update_user(&rec.user, |s| {
                let had = s.sockets.len();
                s.sockets.retain(|x| x.id != rec.id || x.node != rec.node);
                if s.sockets.len() == had {
                    return;
                }
                let rooms: BTreeSet<String> = s.rooms.iter().chain(&rec.rooms).cloned().collect();
                s.rooms = rooms.into_iter().collect();
                s.last_seen_ms = now;
                if s.sockets.is_empty() && s.status == Status::Online {
                    if grace.is_zero() {
                        s.status = Status::Offline;
                    } else {
                        s.status = Status::Leaving;
                        s.since_ms = now;
                    }
                }
            })
            .await?;
        if before.status != Status::Offline && after.status == Status::Offline {
            self.transition(&rec.user, EventKind::Offline, &after).await;
        }
        Ok(())
    }

    /// Ends a `leaving` that began at `since_ms`, unless the user came back.
    async fn finalize(&self, user: &str, since_ms: i64) -> Result<(), KvError> {
        let (before, after) = self
            .update_user(user, |s| {
                if s.status == Status::Leaving && s.since_ms == since_ms && s.sockets.is_empty() {
                    s.status = Status::Offline;
                    s.last_seen_ms = since_ms;
                }
            })
            .await?;
        if before.status == Status::Leaving && after.status == Status::Offline {
            self.transition(user, EventKind::Offline, &after).await;
        }
        Ok(())
    }

    async fn evict(&self, rec: &SocketRecord, old: &UserSocket, limit: usize) {
        tracing::info!(user = %rec.user, socket = %old.id, limit, "connection limit: evicting the oldest socket");
        ::metrics::counter!(metrics::EVICTIONS).increment(1);
        // The old socket may be in any namespace: address it in every one it
        // could be in, on its route tag's subject (see `publish`).
        let Some(old_rec) = self
            .store
            .get(&socket_key(&old.node, &old.id))
            .await
            .ok()
            .flatten()
            .and_then(|(b, _)| serde_json::from_slice::<SocketRecord>(&b).ok())
        else {
            return;
        };
        let target = Target {
            ns: old_rec.ns.clone(),
            sockets: vec![old.id.clone()],
            ..Target::default()
        };
        let reason = serde_json::json!({
            "reason": format!("too many connections for this user (limit {limit})"),
        });
        let args = format!("[{reason}]");
        if let Ok(parsed) = socketio::parse_args(&args) {
            let text = socketio::encode_event(&old_rec.ns, EVICTED_EVENT, &parsed, None, 0);
            self.publish(&Command::Emit {
                target: target.clone(),
                packet: Packet {
                    text,
                    attachments: Vec::new(),
                },
                volatile: false,
            })
            .await;
        }
        self.publish(&Command::Disconnect {
            target,
            close: Closing::Evict,
        })
        .await;
    }

    async fn publish(&self, cmd: &Command) {
        let subjects = match cmd {
            // An eviction names one socket: its route tag's subject reaches the
            // edge that holds it (or recovered it), and no other (ADR 16).
            Command::Emit { target, .. } | Command::Disconnect { target, .. }
                if !target.sockets.is_empty()
                    && target.rooms.is_empty()
                    && target.users.is_empty() =>
            {
                let tags: Option<Vec<&str>> = target
                    .sockets
                    .iter()
                    .map(|s| roomcast_bus::names::tag_of(s))
                    .collect();
                match tags {
                    Some(tags) => {
                        let mut subjects: Vec<String> =
                            tags.iter().map(|t| self.subjects.tag(t)).collect();
                        subjects.dedup();
                        subjects
                    }
                    _ => vec![self.subjects.edges()],
                }
            }
            Command::Emit { target, .. } => self.subjects.emit_subjects(target),
            _ => vec![self.subjects.edges()],
        };
        let (headers, payload) = cmd.encode();
        for subject in subjects {
            if let Err(e) = self
                .bus
                .publish(&subject, headers.clone(), payload.clone(), None)
                .await
            {
                tracing::warn!(%subject, error = %e, "presence command not published");
            }
        }
    }

    async fn publish_event(&self, rec: &SocketRecord, kind: EventKind, rooms: &[String]) {
        let ev = PresenceEvent {
            kind,
            user: rec.user.clone(),
            socket: rec.id.clone(),
            ns: rec.ns.clone(),
            node: rec.node.clone(),
            rooms: rooms.to_vec(),
            at_ms: now_ms(),
            last_seen_ms: 0,
        };
        self.emit_event(&ev).await;
    }

    async fn emit_event(&self, ev: &PresenceEvent) {
        let subject = self.subjects.presence_events();
        if let Err(e) = self
            .bus
            .publish(&subject, Default::default(), to_json(ev), None)
            .await
        {
            tracing::warn!(error = %e, "presence event not published");
        }
    }

    /// Announces an online or offline transition, once: only the writer whose
    /// swap made it calls this.
    async fn transition(&self, user: &str, kind: EventKind, state: &UserState) {
        let status = if kind == EventKind::Online {
            "online"
        } else {
            "offline"
        };
        tracing::debug!(%user, status, "presence transition");
        ::metrics::counter!(metrics::TRANSITIONS, "status" => status).increment(1);
        self.emit_event(&PresenceEvent {
            kind,
            user: user.to_owned(),
            socket: String::new(),
            ns: String::new(),
            node: String::new(),
            rooms: state.rooms.clone(),
            at_ms: now_ms(),
            last_seen_ms: state.last_seen_ms,
        })
        .await;
        let rooms = match &self.cfg.audience {
            Audience::None => return,
            Audience::Namespace => Vec::new(),
            Audience::Room(room) => vec![room.clone()],
            Audience::Rooms if state.rooms.is_empty() => return,
            Audience::Rooms => state.rooms.clone(),
        };
        let body = serde_json::json!({
            "userId": user,
            "status": status,
            "lastSeen": state.last_seen_ms,
        });
        let args = format!("[{body}]");
        let Ok(parsed) = socketio::parse_args(&args) else {
            return;
        };
        let ns = &self.cfg.namespace;
        let text = socketio::encode_event(ns, STATUS_EVENT, &parsed, None, 0);
        self.publish(&Command::Emit {
            target: Target {
                ns: ns.clone(),
                rooms,
                ..Target::default()
            },
            packet: Packet {
                text,
                attachments: Vec::new(),
            },
            volatile: false,
        })
        .await;
    }

    /// Writes an edge's lease; returns its revision.
    pub async fn refresh_lease(&self, node: &str) -> Result<u64, KvError> {
        self.store.put(&lease_key(node), lease_value()).await
    }

    /// Whether `node` holds a lease: false once it released it at exit or a
    /// keeper removed it after it expired.
    pub async fn holds_lease(&self, node: &str) -> Result<bool, KvError> {
        Ok(self.store.get(&lease_key(node)).await?.is_some())
    }

    /// Rewrites an edge's lease if it is still at `revision`, the one this
    /// edge last wrote. If it is not, a control plane found the lease expired
    /// and removed the edge's sockets (the process was paused, or cut off
    /// from the store, for longer than the TTL): the lease is written anew and
    /// the answer says it was lost, so that the edge records its sockets again.
    pub async fn keep_lease(&self, node: &str, revision: u64) -> Result<LeaseKept, KvError> {
        let key = lease_key(node);
        match self.store.swap(&key, lease_value(), Some(revision)).await {
            Ok(revision) => Ok(LeaseKept {
                revision,
                lost: false,
            }),
            Err(KvError::Conflict) => {
                ::metrics::counter!(metrics::LEASES_LOST).increment(1);
                let revision = self.store.put(&key, lease_value()).await?;
                Ok(LeaseKept {
                    revision,
                    lost: true,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Removes every socket record of a node, as if each had disconnected,
    /// then its lease.
    pub async fn clean_node(&self, node: &str) -> Result<usize, KvError> {
        let keys = self.store.keys(&node_prefix(node)).await?;
        let mut n = 0;
        for key in keys {
            let Some((bytes, revision)) = self.store.get(&key).await? else {
                continue;
            };
            // Several control planes may clean one node at once: only the one
            // whose delete removes the record reports the socket gone.
            match self.store.delete_if(&key, revision).await {
                Ok(()) => {}
                Err(KvError::Conflict) => continue,
                Err(e) => return Err(e),
            }
            if let Ok(rec) = serde_json::from_slice::<SocketRecord>(&bytes) {
                self.forget(&rec).await?;
            }
            n += 1;
        }
        self.store.delete(&lease_key(node)).await?;
        Ok(n)
    }

    /// Keeps an edge's lease alive until `stop`, then deletes it. `revision`
    /// is the lease as the edge wrote it at start. Each time the lease turns
    /// out to have been lost (see [`Presence::keep_lease`]), `lost` gets a
    /// message (dropped when one is already waiting).
    pub async fn hold_lease(
        &self,
        node: String,
        mut revision: u64,
        stop: CancellationToken,
        lost: tokio::sync::mpsc::Sender<()>,
    ) {
        let every = self.cfg.lease_ttl / 3;
        loop {
            tokio::select! {
                r = self.keep_lease(&node, revision) => match r {
                    Ok(kept) => {
                        revision = kept.revision;
                        if kept.lost {
                            tracing::warn!("lease lost: this edge was taken for dead and its sockets removed");
                            let _ = lost.try_send(());
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "lease not refreshed"),
                },
                _ = stop.cancelled() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => break,
            }
        }
        // A store that is down must not hold up an exit: the lease then
        // expires by itself.
        match tokio::time::timeout(RELEASE_TIMEOUT, self.store.delete(&lease_key(&node))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "lease not released"),
            Err(_) => tracing::warn!("lease not released in time"),
        }
    }

    /// The control plane's loop: ends `leaving` users after the grace period
    /// and cleans up after edges whose lease expired. Runs until `stop`.
    ///
    /// A lease is judged on a fresh read, never on the watch alone: a keeper
    /// cut off from the store (its NATS server died, its link stalled) misses
    /// the rewrites that every live edge kept making, and its watches may not
    /// resume after its reconnect. A lease that looks silent for the TTL is
    /// read again; if its revision moved on, the edge is alive, and the
    /// watches, which missed that, are opened anew (they replay the current
    /// values). A keeper that cannot read the store, or whose own write at
    /// each sweep fails or takes a third of the TTL, judges nobody, and after
    /// any of these it judges nobody for one TTL more: the edges may have been
    /// cut off from the store just as it was, and get a whole TTL to write
    /// again.
    ///
    /// The grace timers it starts are its tasks: it joins them before it
    /// returns (at once after `stop`, which ends them).
    pub async fn run_keeper(self, stop: CancellationToken) -> Result<(), KvError> {
        self.keep(stop, TaskTracker::new()).await
    }

    /// [`Presence::run_keeper`] with its grace timers on `timers`, closed and
    /// joined (within a bound) when the loop ends.
    async fn keep(&self, stop: CancellationToken, timers: TaskTracker) -> Result<(), KvError> {
        // A second keeper in one process (tests run two) leaves the
        // directory to the first.
        let feeds = self.directory.claim();
        let result = self.keeper_loop(&stop, &timers, feeds).await;
        if feeds {
            // Nothing feeds the directory any more.
            self.directory.release();
        }
        timers.close();
        // After `stop` the timers end at once; when the loop ended for
        // another reason (a watch closed), they still run out their grace.
        let bound = if stop.is_cancelled() {
            JOIN_TIMEOUT
        } else {
            self.cfg.grace + JOIN_TIMEOUT
        };
        if tokio::time::timeout(bound, timers.wait()).await.is_err() {
            tracing::warn!(
                timers = timers.len(),
                "presence grace timers still running after the keeper stopped"
            );
        }
        result
    }

    async fn keeper_loop(
        &self,
        stop: &CancellationToken,
        timers: &TaskTracker,
        feeds: bool,
    ) -> Result<(), KvError> {
        let mut users = self.watch_users(feeds).await?;
        let mut leases = self.store.watch("lease.").await?;
        // Whether this keeper's user watch feeds the directory now: not after
        // the directory was cleared for a reopen that failed (the old watch
        // would fill it again without what it had).
        let mut feeding = feeds;
        // Each lease's revision, and the local time it was last seen to
        // change: clocks of other machines never matter.
        let mut seen: HashMap<String, (Instant, u64)> = HashMap::new();
        // When this keeper last found it could not trust its view of the
        // leases (a read failed, or its watches had missed updates).
        let mut trouble: Option<Instant> = None;
        let started = Instant::now();
        self.clean_orphans().await;
        let mut sweep = tokio::time::interval(self.cfg.lease_ttl / 3);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                change = users.next() => {
                    let Some(change) = change else {
                        (users, leases) = self.reopen("user watch ended", feeds).await?;
                        feeding = feeds;
                        continue;
                    };
                    self.on_user_change(change, stop, timers, feeding);
                }
                change = leases.next() => {
                    let Some(change) = change else {
                        (users, leases) = self.reopen("lease watch ended", feeds).await?;
                        feeding = feeds;
                        continue;
                    };
                    let Some(node) = change.key.strip_prefix("lease.").and_then(key_untoken) else {
                        continue;
                    };
                    if change.value.is_some() {
                        seen.insert(node, (Instant::now(), change.revision));
                    } else {
                        seen.remove(&node);
                    }
                }
                _ = sweep.tick() => {
                    let ttl = self.cfg.lease_ttl;
                    // A write of the keeper's own, through the same stream
                    // (and leader) as the edges' lease writes: reads may be
                    // served by any replica while no leader takes writes
                    // (a JetStream election), and then edges cannot keep
                    // their leases, through no fault of theirs.
                    let probe = tokio::time::timeout(ttl / 3, self.store.put(KEEPER_KEY, Bytes::new()));
                    if !matches!(probe.await, Ok(Ok(_))) {
                        tracing::debug!("presence store took no write: judging no lease for a ttl");
                        trouble = Some(Instant::now());
                    }
                    let silent: Vec<(String, u64)> = seen
                        .iter()
                        .filter(|(_, (at, _))| at.elapsed() > ttl && started.elapsed() > ttl)
                        .map(|(n, (_, revision))| (n.clone(), *revision))
                        .collect();
                    let mut verdicts = Vec::with_capacity(silent.len());
                    for (node, revision) in silent {
                        let verdict = self.judge_lease(&node, revision).await;
                        verdicts.push((node, verdict));
                    }
                    let mut missed = false;
                    let mut expired = Vec::new();
                    for (node, verdict) in verdicts {
                        match verdict {
                            LeaseVerdict::Expired => expired.push(node),
                            LeaseVerdict::Moved(now) => {
                                seen.insert(node, (Instant::now(), now));
                                missed = true;
                            }
                            LeaseVerdict::Released => {
                                seen.remove(&node);
                                missed = true;
                            }
                            LeaseVerdict::Unknown => trouble = Some(Instant::now()),
                        }
                    }
                    if missed {
                        trouble = Some(Instant::now());
                    }
                    // A keeper whose view of the store was cut off (or the
                    // store itself, e.g. while JetStream elects a leader: the
                    // edges could not write either) judges nobody until it
                    // has watched a whole TTL again. The silent leases stay
                    // as they were and are read again at the next sweep.
                    if trouble.is_some_and(|at| at.elapsed() <= ttl) {
                        expired.clear();
                    }
                    for node in expired {
                        seen.remove(&node);
                        ::metrics::counter!(metrics::LEASE_EXPIRIES).increment(1);
                        match self.clean_node(&node).await {
                            Ok(n) => tracing::warn!(%node, sockets = n, "edge lease expired: its sockets are gone"),
                            Err(e) => tracing::warn!(%node, error = %e, "cleaning up after an expired lease failed"),
                        }
                    }
                    if missed {
                        match self.reopen("presence watches missed lease updates", feeds).await {
                            Ok(opened) => {
                                (users, leases) = opened;
                                feeding = feeds;
                            }
                            Err(e) => {
                                // The old watches stay; the next miss tries
                                // again. The directory, cleared, waits for it.
                                tracing::warn!(error = %e, "presence watches not reopened");
                                feeding = false;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Opens the keeper's watches anew (they start with the current values).
    /// The user directory (when this keeper `feeds` it) is cleared first: it
    /// is not ready again until the new watch has caught up.
    async fn reopen(&self, why: &str, feeds: bool) -> Result<(Watch, Watch), KvError> {
        tracing::warn!("{why}: opening the presence watches again");
        ::metrics::counter!(metrics::WATCH_RESTARTS).increment(1);
        if feeds {
            self.directory.clear();
        }
        let users = self.watch_users(feeds).await?;
        let leases = self.store.watch("lease.").await?;
        Ok((users, leases))
    }

    /// Opens the watch of users. When this keeper `feeds` the directory, it
    /// writes a fence right after: the watch is sure to deliver a change, and
    /// be caught up, even where no user was ever written.
    async fn watch_users(&self, feeds: bool) -> Result<Watch, KvError> {
        let watch = self.store.watch(directory::USERS).await?;
        if feeds {
            if let Err(e) = self.store.put(directory::FENCE_KEY, Bytes::new()).await {
                tracing::warn!(error = %e, "user directory: not ready until a user changes");
            }
        }
        Ok(watch)
    }

    /// Reads a lease that looked silent for the TTL at `revision`.
    async fn judge_lease(&self, node: &str, revision: u64) -> LeaseVerdict {
        match self.store.get(&lease_key(node)).await {
            Ok(Some((_, now))) if now == revision => LeaseVerdict::Expired,
            Ok(Some((_, now))) => LeaseVerdict::Moved(now),
            Ok(None) => LeaseVerdict::Released,
            Err(e) => {
                tracing::warn!(%node, error = %e, "presence: lease not read, not judged");
                LeaseVerdict::Unknown
            }
        }
    }

    /// A user's state changed: the directory takes it (when this keeper
    /// `feeds` it), and if the user started leaving, a timer on `timers` ends
    /// the leave after the grace period, unless `stop` comes first.
    fn on_user_change(
        &self,
        change: Change,
        stop: &CancellationToken,
        timers: &TaskTracker,
        feeds: bool,
    ) {
        let state = change
            .value
            .as_ref()
            .and_then(|bytes| serde_json::from_slice::<UserState>(bytes).ok());
        if feeds {
            self.directory.apply(&change, state.as_ref());
        }
        let Some(state) = state else { return };
        if state.status != Status::Leaving {
            return;
        }
        let Some(user) = change.key.strip_prefix("user.").and_then(key_untoken) else {
            return;
        };
        let this = self.clone();
        let stop = stop.clone();
        let since = state.since_ms;
        timers.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(this.cfg.grace) => {}
                _ = stop.cancelled() => return,
            }
            if let Err(e) = this.finalize(&user, since).await {
                tracing::warn!(%user, error = %e, "presence: offline not recorded");
            }
        });
    }

    /// Socket records of nodes that hold no lease at all (they died and their
    /// lease was cleaned, or never existed): removed at start.
    async fn clean_orphans(&self) {
        let (socks, leases) = match (
            self.store.keys("sock.").await,
            self.store.keys("lease.").await,
        ) {
            (Ok(s), Ok(l)) => (s, l),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "presence: cannot list records");
                return;
            }
        };
        let live: BTreeSet<&str> = leases
            .iter()
            .filter_map(|k| k.strip_prefix("lease."))
            .collect();
        let orphaned: BTreeSet<&str> = socks
            .iter()
            .filter_map(|k| k.strip_prefix("sock.")?.split('.').next())
            .filter(|n| !live.contains(n))
            .collect();
        for node in orphaned {
            if let Some(node) = key_untoken(node) {
                if let Err(e) = self.clean_node(&node).await {
                    tracing::warn!(%node, error = %e, "presence: orphaned sockets not removed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
