//! The local index (sockets, rooms, namespaces), bus subscriptions, fan-out.
//!
//! An edge subscribes to a room's subject while it has a local member in the
//! room, and to a namespace's subject while it has a socket in it. A socket's
//! own room (its id) is virtual: it is never a subscription, commands for named
//! sockets come through the edges subject instead.
//!
//! A command for several rooms is published once per room subject. An edge that
//! holds members of several of those rooms receives it several times and must
//! deliver once: on the subject of room `Ri` it delivers only to members that
//! are in no earlier room `Rj` (j < i) of the list, since those got it (or will)
//! on `Rj`'s subject. Through the edges subject it delivers to the named sockets
//! that are in none of the rooms. No per-message state is needed.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use roomcast_bus::envelope::{Command, Target};
use roomcast_bus::{BusError, Message};

use crate::outbox::{Path, PushError};
use crate::presence::Op;
use crate::session::CloseReason;
use crate::sio::Socket;
use crate::Edge;

/// A delivery to at most this many local sockets writes to the idle ones
/// itself (`outbox::Path::Direct`): no connection's task is woken for it. A
/// larger one goes through each connection's writer, so that many writers
/// write in parallel and coalesce what queues while they write; written from
/// the fan-out task alone, one room of 10,000 sockets saturated at a seventh
/// of the rate (BENCHMARKS.md).
const DIRECT_FANOUT: usize = 32;

/// Longest a join waits for the bus to confirm its subscriptions.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The subject a command arrived on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    Room(String, String),
    Namespace(String),
    Edges,
    Node,
    /// NATS replies of backends to client events that want an ack.
    AckReplies,
}

struct Member {
    socket: Arc<Socket>,
    rooms: Names,
}

/// A set that is a short list while it is small, a hash set beyond
/// [`LIST_NAMES`]: most sockets are in a few rooms, most users have one
/// socket, most rooms have a few members on an edge, and a hash set would
/// allocate a table of its own (over 100 bytes) for each, even for one
/// element. Elements are found by their name (`Borrow<str>`).
#[derive(Debug, Clone)]
pub(crate) enum SmallSet<T> {
    List(Vec<T>),
    /// Boxed: the enum stays the size of a `Vec` in every map entry.
    #[expect(clippy::box_collection, reason = "keeps the enum as small as its list")]
    Set(Box<HashSet<T>>),
}

/// Names: a socket's rooms, a user's sockets.
pub(crate) type Names = SmallSet<String>;

/// The local members of a room, found by socket id.
type Members = SmallSet<BySocketId>;

/// Most elements a [`SmallSet`] keeps as a list.
const LIST_NAMES: usize = 16;

impl<T> Default for SmallSet<T> {
    fn default() -> Self {
        SmallSet::List(Vec::new())
    }
}

impl<T: Borrow<str> + Eq + Hash> SmallSet<T> {
    pub fn contains(&self, name: &str) -> bool {
        match self {
            SmallSet::List(v) => v.iter().any(|x| x.borrow() == name),
            SmallSet::Set(s) => s.contains(name),
        }
    }

    /// Adds an element, in place of the one with its name if there is one;
    /// `true` if the name is new.
    pub fn insert(&mut self, item: T) -> bool {
        match self {
            SmallSet::List(v) => {
                if let Some(slot) = v.iter_mut().find(|x| (**x).borrow() == item.borrow()) {
                    *slot = item;
                    return false;
                }
                if v.len() < LIST_NAMES {
                    // Grown one at a time: a list is kept only while short.
                    v.reserve_exact(1);
                    v.push(item);
                } else {
                    let mut set: HashSet<T> = std::mem::take(v).into_iter().collect();
                    set.insert(item);
                    *self = SmallSet::Set(Box::new(set));
                }
                true
            }
            SmallSet::Set(s) => s.replace(item).is_none(),
        }
    }

    /// Removes the element with this name; `false` if there was none.
    pub fn remove(&mut self, name: &str) -> bool {
        match self {
            SmallSet::List(v) => match v.iter().position(|x| x.borrow() == name) {
                Some(i) => {
                    v.swap_remove(i);
                    true
                }
                None => false,
            },
            SmallSet::Set(s) => s.remove(name),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            SmallSet::List(v) => v.len(),
            SmallSet::Set(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        let (list, set) = match self {
            SmallSet::List(v) => (Some(v.iter()), None),
            SmallSet::Set(s) => (None, Some(s.iter())),
        };
        list.into_iter().flatten().chain(set.into_iter().flatten())
    }
}

impl<T: Borrow<str> + Eq + Hash> FromIterator<T> for SmallSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut set = SmallSet::default();
        for x in iter {
            set.insert(x);
        }
        set
    }
}

/// A socket in a room's [`Members`], known by its id (it carries its id, so
/// no copy of it is kept as a key).
#[derive(Clone)]
pub(crate) struct BySocketId(Arc<Socket>);

impl Borrow<str> for BySocketId {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

impl PartialEq for BySocketId {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for BySocketId {}

impl Hash for BySocketId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: a set of these is looked up by `&str`.
        self.0.id.as_str().hash(state);
    }
}

impl Members {
    fn sockets(&self) -> impl Iterator<Item = &Arc<Socket>> {
        self.iter().map(|m| &m.0)
    }

    fn ids(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|m| m.0.id.as_str())
    }
}

#[derive(Default)]
pub(crate) struct Index {
    sockets: HashMap<String, Member>,
    /// Members of each room, by socket id, with the socket itself so that
    /// fan-out needs no second lookup.
    rooms: HashMap<(String, String), Members>,
    namespaces: HashMap<String, HashSet<String>>,
    /// Sockets of each authenticated user, every namespace together.
    users: HashMap<String, Names>,
}

/// A subscription an index change may call for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Interest {
    Room(String, String),
    Namespace(String),
}

impl Index {
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn socket(&self, sid: &str) -> Option<Arc<Socket>> {
        self.sockets.get(sid).map(|m| m.socket.clone())
    }

    /// Sockets per namespace.
    pub fn namespace_sizes(&self) -> Vec<(String, usize)> {
        self.namespaces
            .iter()
            .map(|(ns, sids)| (ns.clone(), sids.len()))
            .collect()
    }

    /// Local member counts of the rooms of a namespace.
    pub fn room_counts(&self, ns: &str) -> Vec<(String, u64)> {
        self.rooms
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|((_, room), sids)| (room.clone(), sids.len() as u64))
            .collect()
    }

    /// The local sockets of the target's users in the target's namespace.
    fn user_sockets<'a>(&'a self, target: &'a Target) -> impl Iterator<Item = &'a Member> + 'a {
        target
            .users
            .iter()
            .filter_map(|u| self.users.get(u))
            .flat_map(Names::iter)
            .filter_map(|sid| self.sockets.get(sid))
            .filter(|m| m.socket.ns == target.ns)
    }

    /// The rooms a local socket joined (its own id's room is not listed).
    /// Every socket with its rooms.
    pub fn members(&self) -> impl Iterator<Item = (&Socket, Vec<String>)> {
        self.sockets
            .values()
            .map(|m| (m.socket.as_ref(), m.rooms.iter().cloned().collect()))
    }

    pub fn rooms_of(&self, sid: &str) -> Vec<String> {
        self.sockets
            .get(sid)
            .map(|m| m.rooms.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Makes a socket join rooms; returns those it was not in yet.
    fn join(&mut self, sid: &str, rooms: &[String], changed: &mut Vec<Interest>) -> Vec<String> {
        let mut joined = Vec::new();
        let Some(member) = self.sockets.get_mut(sid) else {
            return joined;
        };
        let ns = &member.socket.ns;
        for room in rooms {
            if member.rooms.insert(room.clone()) {
                joined.push(room.clone());
                let key = (ns.clone(), room.clone());
                let set = self.rooms.entry(key).or_default();
                if set.is_empty() {
                    changed.push(Interest::Room(ns.clone(), room.clone()));
                }
                set.insert(BySocketId(member.socket.clone()));
            }
        }
        joined
    }

    /// Makes a socket leave rooms; returns those it was in.
    fn leave(&mut self, sid: &str, rooms: &[String], changed: &mut Vec<Interest>) -> Vec<String> {
        let mut left = Vec::new();
        let Some(member) = self.sockets.get_mut(sid) else {
            return left;
        };
        let ns = member.socket.ns.clone();
        for room in rooms {
            if member.rooms.remove(room) {
                left.push(room.clone());
                let key = (ns.clone(), room.clone());
                if let Some(set) = self.rooms.get_mut(&key) {
                    set.remove(sid);
                    if set.is_empty() {
                        self.rooms.remove(&key);
                        changed.push(Interest::Room(ns.clone(), room.clone()));
                    }
                }
            }
        }
        left
    }

    fn add(&mut self, socket: Arc<Socket>, rooms: &[String]) -> Vec<Interest> {
        let mut changed = Vec::new();
        let set = self.namespaces.entry(socket.ns.clone()).or_default();
        if set.is_empty() {
            changed.push(Interest::Namespace(socket.ns.clone()));
        }
        set.insert(socket.id.clone());
        if !socket.user.is_empty() {
            self.users
                .entry(socket.user.clone())
                .or_default()
                .insert(socket.id.clone());
        }
        let sid = socket.id.clone();
        self.sockets.insert(
            sid.clone(),
            Member {
                socket,
                rooms: Names::default(),
            },
        );
        self.join(&sid, rooms, &mut changed);
        changed
    }

    fn remove(&mut self, sid: &str) -> Vec<Interest> {
        let mut changed = Vec::new();
        let Some(member) = self.sockets.get(sid) else {
            return changed;
        };
        let rooms: Vec<String> = member.rooms.iter().cloned().collect();
        let ns = member.socket.ns.clone();
        let user = member.socket.user.clone();
        if let Some(set) = self.users.get_mut(&user) {
            set.remove(sid);
            if set.is_empty() {
                self.users.remove(&user);
            }
        }
        self.leave(sid, &rooms, &mut changed);
        self.sockets.remove(sid);
        if let Some(set) = self.namespaces.get_mut(&ns) {
            set.remove(sid);
            if set.is_empty() {
                self.namespaces.remove(&ns);
                changed.push(Interest::Namespace(ns));
            }
        }
        changed
    }

    fn wants(&self, interest: &Interest) -> bool {
        match interest {
            Interest::Room(ns, room) => self.rooms.contains_key(&(ns.clone(), room.clone())),
            Interest::Namespace(ns) => self.namespaces.contains_key(ns),
        }
    }

    fn excluded(target: &Target, m: &Member) -> bool {
        excluded(target, &m.socket.id, &m.rooms)
    }

    /// The local sockets a command reaches through the subject it arrived on.
    fn targets(&self, target: &Target, via: &Via) -> Vec<Arc<Socket>> {
        let in_ns = |m: &&Member| m.socket.ns == target.ns;
        let keep = |m: &Member| !Self::excluded(target, m);
        let mut out = Vec::new();
        match via {
            Via::Room(ns, room) => {
                if *ns != target.ns {
                    return out;
                }
                let Some(pos) = target.rooms.iter().position(|r| r == room) else {
                    return out;
                };
                let earlier = &target.rooms[..pos];
                let Some(members) = self.rooms.get(&(ns.clone(), room.clone())) else {
                    return out;
                };
                // The common case, one room and no exceptions: every member.
                if earlier.is_empty()
                    && target.except_rooms.is_empty()
                    && target.except_sockets.is_empty()
                {
                    out.extend(members.sockets().cloned());
                    return out;
                }
                for sid in members.ids() {
                    if let Some(m) = self.sockets.get(sid) {
                        if reaches_via_room(target, room, sid, &m.rooms) {
                            out.push(m.socket.clone());
                        }
                    }
                }
            }
            Via::Namespace(_) if target.is_namespace() => {
                for sid in self.namespaces.get(&target.ns).into_iter().flatten() {
                    if let Some(m) = self.sockets.get(sid) {
                        if keep(m) {
                            out.push(m.socket.clone());
                        }
                    }
                }
            }
            Via::Namespace(_) | Via::AckReplies => {}
            Via::Edges | Via::Node => {
                let mut seen = HashSet::new();
                let named = target
                    .sockets
                    .iter()
                    .filter_map(|sid| self.sockets.get(sid).filter(in_ns));
                for m in named.chain(self.user_sockets(target)) {
                    if seen.insert(&m.socket.id)
                        && keep(m)
                        && !target.rooms.iter().any(|r| m.rooms.contains(r))
                    {
                        out.push(m.socket.clone());
                    }
                }
            }
        }
        out
    }

    /// Every local socket a target selects, whatever subject carried it.
    pub fn select(&self, target: &Target) -> Vec<String> {
        let mut out: HashSet<&str> = HashSet::new();
        if target.is_namespace() {
            out.extend(
                self.namespaces
                    .get(&target.ns)
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
            );
        }
        for room in &target.rooms {
            out.extend(
                self.rooms
                    .get(&(target.ns.clone(), room.clone()))
                    .into_iter()
                    .flat_map(Members::ids),
            );
            // A socket's own room.
            if self
                .sockets
                .get(room)
                .is_some_and(|m| m.socket.ns == target.ns)
            {
                out.insert(room);
            }
        }
        for sid in &target.sockets {
            if self
                .sockets
                .get(sid)
                .is_some_and(|m| m.socket.ns == target.ns)
            {
                out.insert(sid);
            }
        }
        out.extend(self.user_sockets(target).map(|m| m.socket.id.as_str()));
        out.into_iter()
            .filter(|sid| {
                self.sockets
                    .get(*sid)
                    .is_some_and(|m| !Self::excluded(target, m))
            })
            .map(str::to_owned)
            .collect()
    }
}

/// Whether a target leaves out a socket (by id, or by one of its rooms).
fn excluded(target: &Target, sid: &str, rooms: &Names) -> bool {
    target.except_sockets.iter().any(|s| s == sid)
        || target
            .except_rooms
            .iter()
            .any(|r| r == sid || rooms.contains(r))
}

/// Whether a command for `target` that arrived on the subject of `room` is for
/// a socket in `rooms`: it is a member, not excluded, and in no earlier room of
/// the target (it gets the command through that room's subject instead).
pub(crate) fn reaches_via_room(target: &Target, room: &str, sid: &str, rooms: &Names) -> bool {
    let Some(pos) = target.rooms.iter().position(|r| r == room) else {
        return false;
    };
    rooms.contains(room)
        && !excluded(target, sid, rooms)
        && !target.rooms[..pos].iter().any(|r| rooms.contains(r))
}

impl Edge {
    /// Adds a connected socket to the index, in its namespace and `rooms`.
    pub(crate) async fn add_socket(&self, socket: &Arc<Socket>, rooms: &[String]) {
        let subs = self.inner.subs.lock().await;
        let changed = self.write_index().add(socket.clone(), rooms);
        self.reconcile(subs, changed, true).await;
        if self.tracks_presence() {
            let joined = self.read_index().rooms_of(&socket.id);
            self.presence_op(|| Op::Connected(self.record(socket, joined)))
                .await;
        }
    }

    /// Removes a socket from the index and from every room.
    pub(crate) async fn remove_socket(&self, socket: &Socket) {
        let tracked = self.tracks_presence();
        let subs = self.inner.subs.lock().await;
        let (changed, rooms, was_there) = {
            let mut index = self.write_index();
            // Its rooms, for its presence record, before they are gone.
            let rooms = if tracked {
                index.rooms_of(&socket.id)
            } else {
                Vec::new()
            };
            let was_there = index.sockets.contains_key(&socket.id);
            (index.remove(&socket.id), rooms, was_there)
        };
        self.reconcile(subs, changed, false).await;
        if tracked && was_there {
            self.presence_op(|| Op::Disconnected(self.record(socket, rooms)))
                .await;
        }
    }

    /// Brings bus subscriptions in line with the index for the given interests.
    ///
    /// Callers take `subs` before they change the index and hand it over: that
    /// serialises reconciliations, so a subscribe and an unsubscribe of one
    /// subject can never be applied out of order, and a socket that joins a
    /// room another socket is joining at the same moment (its index change
    /// reports nothing to subscribe) comes after that subscription is made.
    /// A join (`joined`) then waits until the subscriptions are live.
    async fn reconcile(
        &self,
        mut subs: tokio::sync::MutexGuard<'_, crate::Subs>,
        changed: Vec<Interest>,
        joined: bool,
    ) {
        let mut wanted_any = joined;
        for interest in changed {
            let (subject, via) = match &interest {
                Interest::Room(ns, room) => (
                    self.inner.subjects.room(ns, room),
                    Via::Room(ns.clone(), room.clone()),
                ),
                Interest::Namespace(ns) => (
                    self.inner.subjects.namespace(ns),
                    Via::Namespace(ns.clone()),
                ),
            };
            let wanted = self.read_index().wants(&interest);
            wanted_any |= wanted;
            match (wanted, subs.contains_key(&subject)) {
                (true, false) => match self.subscribe(&subject, via).await {
                    Ok(handle) => {
                        subs.insert(subject, handle);
                    }
                    Err(e) => tracing::warn!(%subject, error = %e, "subscribe failed"),
                },
                (false, true) => {
                    if let Some(handle) = subs.remove(&subject) {
                        handle.abort();
                    }
                }
                _ => {}
            }
        }
        drop(subs);
        if wanted_any {
            self.sync_subscriptions().await;
        }
    }

    /// Waits until the subscriptions made so far are live at the bus (for NATS,
    /// a round trip to this edge's server), unless they are known to be: a
    /// socket is told it joined a room, and a backend that its join is done,
    /// only once an emit published afterwards reaches it. Bounded: while the
    /// bus is away, joins go on and the subscriptions become live when it is
    /// back.
    pub(crate) async fn sync_subscriptions(&self) {
        use std::sync::atomic::Ordering;
        let upto = self.inner.subscribed.load(Ordering::Acquire);
        if self.inner.synced.load(Ordering::Acquire) >= upto {
            return;
        }
        match tokio::time::timeout(SYNC_TIMEOUT, self.inner.bus.sync()).await {
            Ok(Ok(())) => {
                self.inner.synced.fetch_max(upto, Ordering::AcqRel);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "bus subscriptions not confirmed"),
            Err(_) => tracing::warn!("bus subscriptions not confirmed in time"),
        }
    }

    /// Subscribes to a subject and spawns the task that handles its messages.
    /// Aborting the task drops the subscription, which unsubscribes.
    ///
    /// The future is boxed: handling a message may subscribe, which spawns this
    /// loop again, and a named `dyn … + Send` type keeps that cycle out of the
    /// compiler's inference of `Send`.
    pub(crate) fn subscribe<'a>(
        &'a self,
        subject: &'a str,
        via: Via,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<tokio::task::JoinHandle<()>, BusError>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            let mut sub = self.inner.bus.subscribe(subject, None).await?;
            self.inner
                .subscribed
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            let edge = self.clone();
            Ok(tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    // Boxed, once per message: what handling one takes stays out
                    // of the state every subscription's task keeps while idle.
                    Box::pin(edge.on_bus_message(msg, &via)).await;
                }
            }))
        })
    }

    pub(crate) async fn on_bus_message(&self, msg: Message, via: &Via) {
        if *via == Via::AckReplies {
            self.on_ack_reply(msg).await;
            return;
        }
        let msg_headers = msg.headers;
        let cmd = match Command::decode(&msg_headers, msg.payload) {
            Ok(cmd) => cmd,
            Err(e) => {
                tracing::warn!(subject = %msg.subject, error = %e, "invalid command on the bus");
                return;
            }
        };
        metrics::counter!(crate::metrics::BUS_MESSAGES, "op" => cmd.op()).increment(1);
        match cmd {
            Command::Emit {
                target,
                packet,
                volatile,
            } => {
                // A span only when traces are exported: nothing per message otherwise.
                let span = if roomcast_bus::trace::enabled() {
                    tracing::info_span!(
                        "deliver",
                        otel.name = "deliver",
                        otel.kind = "consumer",
                        messaging.system = "nats",
                        recipients = tracing::field::Empty
                    )
                } else {
                    tracing::Span::none()
                };
                roomcast_bus::trace::adopt(&span, &msg_headers);
                let _entered = span.enter();
                // An emit the history numbered carries its number as the
                // event's offset, for connection state recovery.
                let seq = crate::recovery::sequence(&msg_headers);
                let packet = if seq != 0 && !volatile {
                    crate::recovery::with_offset(packet, seq)
                } else {
                    packet
                };
                let targets = self.read_index().targets(&target, via);
                span.record("recipients", targets.len());
                self.deliver(&targets, &packet, volatile, seq);
                if let Some(sent) = roomcast_bus::envelope::sent_at_us(&msg_headers) {
                    let delay = (roomcast_bus::envelope::now_us() - sent).max(0) as f64 / 1e6;
                    metrics::histogram!(crate::metrics::FANOUT_LATENCY).record(delay);
                }
            }
            Command::Join { .. }
            | Command::Leave { .. }
            | Command::Disconnect { .. }
            | Command::Fetch { .. }
            | Command::ListRooms { .. }
            | Command::EmitWithAck { .. }
            | Command::Ping => self.answer(cmd, msg.reply.as_deref()).await,
            Command::Reply { ns, socket, packet } => {
                let target = self
                    .read_index()
                    .sockets
                    .get(&socket)
                    .filter(|m| m.socket.ns == ns)
                    .map(|m| m.socket.clone());
                if let Some(s) = target {
                    self.deliver(&[s], &packet, false, 0);
                }
            }
        }
    }

    /// Makes every local socket the target selects join or leave rooms;
    /// returns how many sockets were changed (or already as asked), and how
    /// many were left out because the join would put them over the
    /// rooms-per-socket limit.
    pub(crate) async fn apply_rooms(
        &self,
        target: &Target,
        rooms: &[String],
        join: bool,
    ) -> (u64, u64) {
        let max_rooms = self.inner.config.max_rooms_per_socket;
        let rooms: Vec<String> = rooms
            .iter()
            .filter(|r| roomcast_bus::names::valid_room(r))
            .cloned()
            .collect();
        let tracked = self.tracks_presence();
        let subs = self.inner.subs.lock().await;
        let (changed, count, records, refused) = {
            let mut index = self.write_index();
            let mut changed = Vec::new();
            let mut records = Vec::new();
            let selected = index.select(target);
            let mut refused = 0;
            for sid in &selected {
                if join && max_rooms > 0 {
                    let over = index.sockets.get(sid).is_some_and(|m| {
                        let new = rooms.iter().filter(|r| !m.rooms.contains(r)).count();
                        m.rooms.len() + new > max_rooms
                    });
                    if over {
                        refused += 1;
                        continue;
                    }
                }
                let moved = if join {
                    index.join(sid, &rooms, &mut changed)
                } else {
                    index.leave(sid, &rooms, &mut changed)
                };
                if !tracked || moved.is_empty() {
                    continue;
                }
                if let Some(socket) = index.socket(sid) {
                    records.push((self.record(&socket, index.rooms_of(sid)), moved));
                }
            }
            (changed, selected.len() as u64 - refused, records, refused)
        };
        if refused > 0 {
            crate::limits::Limit::RoomsPerSocket.hit();
            tracing::info!(
                refused,
                max_rooms,
                "join refused: too many rooms per socket"
            );
        }
        self.reconcile(subs, changed, join).await;
        for (record, moved) in records {
            let (joined, left) = if join {
                (moved, Vec::new())
            } else {
                (Vec::new(), moved)
            };
            self.presence_op(|| Op::Rooms(record, joined, left)).await;
        }
        (count, refused)
    }

    /// Queues one packet on every target; slow consumers are disconnected.
    /// `seq` is the packet's history sequence (0: none).
    pub(crate) fn deliver(
        &self,
        targets: &[Arc<Socket>],
        packet: &roomcast_bus::envelope::Packet,
        volatile: bool,
        seq: u64,
    ) {
        metrics::counter!(crate::metrics::DELIVERIES).increment(targets.len() as u64);
        let path = if targets.len() <= DIRECT_FANOUT {
            Path::Direct
        } else {
            Path::Queue
        };
        for socket in targets {
            if let Err(PushError::Full) = socket.send(packet, volatile, seq, path) {
                tracing::info!(socket = %socket.id, "slow consumer disconnected");
                self.close_session(&socket.session, CloseReason::SlowConsumer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(ns: &str, rooms: &[&str], sockets: &[&str]) -> Target {
        Target {
            ns: ns.into(),
            rooms: rooms.iter().map(|s| s.to_string()).collect(),
            sockets: sockets.iter().map(|s| s.to_string()).collect(),
            ..Target::default()
        }
    }

    fn ids(v: Vec<Arc<Socket>>) -> Vec<String> {
        let mut ids: Vec<String> = v.into_iter().map(|s| s.id.clone()).collect();
        ids.sort();
        ids
    }

    async fn index_with(members: &[(&str, &str, &[&str])]) -> Index {
        index_with_users(
            &members
                .iter()
                .map(|(sid, ns, rooms)| (*sid, *ns, "", *rooms))
                .collect::<Vec<_>>(),
        )
        .await
    }

    async fn index_with_users(members: &[(&str, &str, &str, &[&str])]) -> Index {
        let edge = Edge::start(
            crate::EdgeConfig::default(),
            crate::Authenticator::new(None, true).expect("auth"),
            Arc::new(roomcast_bus::MemoryBus::default()),
            None,
            None,
        )
        .await
        .expect("edge");
        let mut index = Index::default();
        for (sid, ns, user, rooms) in members {
            let session =
                edge.open_session(crate::sink::TransportKind::WebSocket, Default::default());
            let socket = Arc::new(Socket {
                id: sid.to_string(),
                ns: ns.to_string(),
                user: user.to_string(),
                connected_at_ms: 0,
                data_json: String::new(),
                session,
                pid: None,
                gate: Default::default(),
            });
            let rooms: Vec<String> = rooms.iter().map(|s| s.to_string()).collect();
            index.add(socket, &rooms);
        }
        index
    }

    #[test]
    fn names_are_a_list_while_short_and_a_set_beyond() {
        let mut names = Names::default();
        for i in 0..40 {
            assert!(names.insert(format!("n{i}")));
            assert!(!names.insert(format!("n{i}")), "no duplicates");
            assert_eq!(
                matches!(names, SmallSet::List(_)),
                i < LIST_NAMES,
                "after {} names",
                i + 1
            );
        }
        assert_eq!(names.len(), 40);
        assert!(names.contains("n39") && !names.contains("n40"));
        assert!(names.remove("n7") && !names.remove("n7"));
        let mut left: Vec<&String> = names.iter().collect();
        left.sort();
        assert_eq!(left.len(), 39);
        assert!(!names.contains("n7"));
        let mut short: Names = ["a", "b", "a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(short.len(), 2);
        assert!(short.remove("a") && short.remove("b") && short.is_empty());
    }

    #[tokio::test]
    async fn large_rooms_and_sockets_in_many_rooms_are_indexed_like_small_ones() {
        // Past the list sizes: a room of 20 members, a socket in 21 rooms.
        let many: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
        let mut rooms_of_s0: Vec<&str> = many.iter().map(String::as_str).collect();
        rooms_of_s0.push("big");
        let sids: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
        let members: Vec<(&str, &str, &[&str])> = sids
            .iter()
            .map(|sid| {
                let rooms: &[&str] = if sid == "s00" { &rooms_of_s0 } else { &["big"] };
                (sid.as_str(), "/", rooms)
            })
            .collect();
        let mut index = index_with(&members).await;
        let big = Via::Room("/".into(), "big".into());
        assert_eq!(ids(index.targets(&target("/", &["big"], &[]), &big)), sids);
        // s00 gets a command for r5 and big through r5, the others through big.
        let both = target("/", &["r5", "big"], &[]);
        assert_eq!(ids(index.targets(&both, &big)), sids[1..].to_vec());
        assert_eq!(
            ids(index.targets(&both, &Via::Room("/".into(), "r5".into()))),
            vec!["s00"]
        );
        assert_eq!(index.rooms_of("s00").len(), 21);
        index.remove("s03");
        let mut left = sids.clone();
        left.remove(3);
        assert_eq!(ids(index.targets(&target("/", &["big"], &[]), &big)), left);
        assert_eq!(index.select(&target("/", &["big"], &[])).len(), 19);
    }

    #[tokio::test]
    async fn multi_room_commands_reach_each_socket_once() {
        let index = index_with(&[
            ("a", "/", &["r1", "r2"]),
            ("b", "/", &["r2"]),
            ("c", "/", &["r1"]),
            ("d", "/x", &["r1"]),
        ])
        .await;
        let t = target("/", &["r1", "r2"], &["a", "e"]);
        let via_r1 = ids(index.targets(&t, &Via::Room("/".into(), "r1".into())));
        let via_r2 = ids(index.targets(&t, &Via::Room("/".into(), "r2".into())));
        let via_edges = ids(index.targets(&t, &Via::Edges));
        assert_eq!(via_r1, vec!["a", "c"]);
        assert_eq!(via_r2, vec!["b"], "a got it through r1");
        assert!(via_edges.is_empty(), "a is in a target room");
    }

    #[tokio::test]
    async fn users_are_selected_without_rooms_and_once() {
        let mut index = index_with_users(&[
            ("a1", "/", "alice", &["r"]),
            ("a2", "/", "alice", &[]),
            ("a3", "/x", "alice", &[]),
            ("b", "/", "bob", &[]),
        ])
        .await;
        let mut t = target("/", &["r"], &["b"]);
        t.users = vec!["alice".into(), "carol".into()];
        assert_eq!(ids(index.targets(&t, &Via::Edges)), vec!["a2", "b"]);
        assert_eq!(
            ids(index.targets(&t, &Via::Room("/".into(), "r".into()))),
            vec!["a1"]
        );
        let mut selected = index.select(&t);
        selected.sort();
        assert_eq!(selected, vec!["a1", "a2", "b"]);
        assert!(!t.is_namespace());
        index.remove("a1");
        index.remove("a2");
        index.remove("a3");
        assert!(
            !index.users.contains_key("alice"),
            "no empty user entry left"
        );
    }

    #[tokio::test]
    async fn exceptions_apply_on_every_path() {
        let index = index_with(&[
            ("a", "/", &["r1", "vip"]),
            ("b", "/", &["r1"]),
            ("c", "/", &[]),
        ])
        .await;
        let mut t = target("/", &[], &[]);
        t.except_rooms = vec!["vip".into()];
        t.except_sockets = vec!["c".into()];
        assert_eq!(
            ids(index.targets(&t, &Via::Namespace("/".into()))),
            vec!["b"]
        );
        let mut t = target("/", &["r1"], &[]);
        t.except_rooms = vec!["b".into()];
        assert_eq!(
            ids(index.targets(&t, &Via::Room("/".into(), "r1".into()))),
            vec!["a"],
            "a socket id works as an except room"
        );
        let mut sel = target("/", &["r1", "c"], &[]);
        sel.except_sockets = vec!["a".into()];
        let mut selected = index.select(&sel);
        selected.sort();
        assert_eq!(selected, vec!["b", "c"]);
    }

    #[tokio::test]
    async fn index_reports_subscription_changes() {
        let mut index = index_with(&[]).await;
        let socket = {
            let edge_index = index_with(&[("s", "/", &[])]).await;
            edge_index.sockets["s"].socket.clone()
        };
        let changed = index.add(socket, &["r".into()]);
        assert_eq!(
            changed,
            vec![
                Interest::Namespace("/".into()),
                Interest::Room("/".into(), "r".into())
            ]
        );
        let mut changed = Vec::new();
        index.join("s", &["r".into()], &mut changed);
        assert!(changed.is_empty(), "already a member");
        let changed = index.remove("s");
        assert_eq!(
            changed,
            vec![
                Interest::Room("/".into(), "r".into()),
                Interest::Namespace("/".into())
            ]
        );
        assert_eq!(index.room_count(), 0);
    }
}
