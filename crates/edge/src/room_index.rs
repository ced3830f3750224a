//! The room index: an edge's local sockets by id, namespace, room and user.
//! Plain data: no bus, no locks, no I/O; the caller (`membership`) holds it
//! behind a lock and turns what it reports into subscriptions.
//!
//! An edge subscribes to a room's subject while it has a local member in the
//! room, and to a namespace's subject while it has a socket in it: every change
//! returns the [`Interest`]s whose state it may have flipped. A socket's own
//! room (its id) is virtual: it is never a subscription, commands for named
//! sockets come through the subject of their route tag (or, with broadcast
//! routing, the edges subject) instead.
//!
//! Route tags: an edge listens on the subject of its own tag (the start of
//! the ids it generates), and on the tag of every other edge while it holds
//! a socket carrying that tag (recovered from that edge): every change
//! reports the [`Interest::Tag`]s it flipped, like rooms. A command that came
//! through a tag's subject is for the target's sockets carrying that tag
//! only, so an edge listening on several tags still acts once per socket.
//!
//! An emit for several rooms or route tags comes as one copy per
//! subject, each naming only its room or the sockets and users of its tag, and
//! carrying the emit's message id: the edge delivers each copy to the sockets
//! no other copy reached (`delivered`, ADR 17). An older producer's command
//! for several rooms names every room in each copy, and no message id: on the
//! subject of room `Ri` the edge then delivers only to members that are in no
//! earlier room `Rj` (j < i) of the list, since those got it (or will) on
//! `Rj`'s subject, and through the edges subject to the named sockets that are
//! in none of the rooms.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use roomcast_bus::envelope::Target;

use crate::small_set::{Names, SmallSet};

/// What the index needs of a socket: who it is and where it connected.
pub(crate) trait IndexedSocket {
    fn id(&self) -> &str;
    fn ns(&self) -> &str;
    /// The authenticated user, empty when anonymous.
    fn user(&self) -> &str;
}

/// The kind of bus subject a command arrived on: it decides which of the
/// command's targets this delivery is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubjectKind {
    /// A room's subject: (namespace, room).
    Room(String, String),
    Namespace(String),
    /// The subject every edge listens on.
    Edges,
    /// This edge's own subject.
    Node,
    /// The subject of a route tag: the target's sockets whose id carries it.
    Tag(String),
    /// NATS replies of backends to client events that want an ack.
    AckReplies,
}

/// A subscription an index change may call for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Interest {
    Room(String, String),
    Namespace(String),
    /// The route tag of another edge, carried by local sockets.
    Tag(String),
}

impl SubjectKind {
    /// The route tag a command's sockets must carry, when it came through a
    /// tag's subject.
    pub fn tag(&self) -> Option<&str> {
        match self {
            SubjectKind::Tag(tag) => Some(tag),
            _ => None,
        }
    }
}

/// Whether a socket is in a command's scope: every socket, or those whose id
/// carries the tag the command came through.
fn in_scope(scope: Option<&str>, sid: &str) -> bool {
    scope.is_none_or(|tag| roomcast_bus::names::tag_of(sid) == Some(tag))
}

/// A local socket with the rooms it joined (its own id's room is not listed).
struct Entry<S> {
    socket: Arc<S>,
    rooms: Names,
}

/// A socket in a room's [`Members`], known by its id (it carries its id, so
/// no copy of it is kept as a key).
struct BySocketId<S>(Arc<S>);

impl<S: IndexedSocket> Borrow<str> for BySocketId<S> {
    fn borrow(&self) -> &str {
        self.0.id()
    }
}

impl<S: IndexedSocket> PartialEq for BySocketId<S> {
    fn eq(&self, other: &Self) -> bool {
        self.0.id() == other.0.id()
    }
}

impl<S: IndexedSocket> Eq for BySocketId<S> {}

impl<S: IndexedSocket> Hash for BySocketId<S> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: a set of these is looked up by `&str`.
        self.0.id().hash(state);
    }
}

/// The local members of a room, found by socket id.
type Members<S> = SmallSet<BySocketId<S>>;

impl<S: IndexedSocket> Members<S> {
    fn sockets(&self) -> impl Iterator<Item = &Arc<S>> {
        self.iter().map(|m| &m.0)
    }

    fn ids(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|m| m.0.id())
    }
}

/// An edge's local sockets, their rooms, namespaces and users.
pub(crate) struct RoomIndex<S> {
    sockets: HashMap<String, Entry<S>>,
    /// Members of each room, by socket id, with the socket itself so that
    /// fan-out needs no second lookup.
    rooms: HashMap<(String, String), Members<S>>,
    namespaces: HashMap<String, HashSet<String>>,
    /// Sockets of each authenticated user, every namespace together.
    users: HashMap<String, Names>,
    /// This edge's route tag (empty: tags are not followed).
    own_tag: String,
    /// Local sockets carrying each route tag other than `own_tag`.
    foreign_tags: HashMap<String, usize>,
}

impl<S> Default for RoomIndex<S> {
    fn default() -> Self {
        Self::new(String::new())
    }
}

impl<S> RoomIndex<S> {
    /// An empty index of an edge whose route tag is `own_tag`.
    pub fn new(own_tag: String) -> Self {
        Self {
            sockets: HashMap::new(),
            rooms: HashMap::new(),
            namespaces: HashMap::new(),
            users: HashMap::new(),
            own_tag,
            foreign_tags: HashMap::new(),
        }
    }

    /// The other edges' route tags local sockets carry, sorted.
    pub fn foreign_tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self.foreign_tags.keys().cloned().collect();
        tags.sort();
        tags
    }

    /// The route tag of a socket id when it is another edge's.
    fn foreign_tag<'a>(&self, sid: &'a str) -> Option<&'a str> {
        if self.own_tag.is_empty() {
            return None;
        }
        roomcast_bus::names::tag_of(sid).filter(|t| *t != self.own_tag)
    }
}

impl<S: IndexedSocket> RoomIndex<S> {
    /// How many rooms have a local member (one subscription each).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn socket(&self, sid: &str) -> Option<Arc<S>> {
        self.sockets.get(sid).map(|m| m.socket.clone())
    }

    pub fn contains(&self, sid: &str) -> bool {
        self.sockets.contains_key(sid)
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
    fn user_sockets<'a>(&'a self, target: &'a Target) -> impl Iterator<Item = &'a Entry<S>> + 'a {
        target
            .users
            .iter()
            .filter_map(|u| self.users.get(u))
            .flat_map(Names::iter)
            .filter_map(|sid| self.sockets.get(sid))
            .filter(|m| m.socket.ns() == target.ns)
    }

    /// Every socket with its rooms (its own id's room is not listed).
    /// Every local socket.
    pub fn sockets(&self) -> impl Iterator<Item = &Arc<S>> {
        self.sockets.values().map(|m| &m.socket)
    }

    pub fn members(&self) -> impl Iterator<Item = (&S, Vec<String>)> {
        self.sockets
            .values()
            .map(|m| (m.socket.as_ref(), m.rooms.iter().cloned().collect()))
    }

    /// The rooms a local socket joined (its own id's room is not listed).
    pub fn rooms_of(&self, sid: &str) -> Vec<String> {
        self.sockets
            .get(sid)
            .map(|m| m.rooms.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether joining `rooms` would put a socket in more than `max` rooms.
    pub fn would_exceed(&self, sid: &str, rooms: &[String], max: usize) -> bool {
        self.sockets.get(sid).is_some_and(|m| {
            let new = rooms.iter().filter(|r| !m.rooms.contains(r)).count();
            m.rooms.len() + new > max
        })
    }

    /// Makes a socket join rooms; returns those it was not in yet.
    pub fn join(
        &mut self,
        sid: &str,
        rooms: &[String],
        changed: &mut Vec<Interest>,
    ) -> Vec<String> {
        let mut joined = Vec::new();
        let Some(member) = self.sockets.get_mut(sid) else {
            return joined;
        };
        let ns = member.socket.ns();
        for room in rooms {
            if member.rooms.insert(room.clone()) {
                joined.push(room.clone());
                let key = (ns.to_owned(), room.clone());
                let set = self.rooms.entry(key).or_default();
                if set.is_empty() {
                    changed.push(Interest::Room(ns.to_owned(), room.clone()));
                }
                set.insert(BySocketId(member.socket.clone()));
            }
        }
        joined
    }

    /// Makes a socket leave rooms; returns those it was in.
    pub fn leave(
        &mut self,
        sid: &str,
        rooms: &[String],
        changed: &mut Vec<Interest>,
    ) -> Vec<String> {
        let mut left = Vec::new();
        let Some(member) = self.sockets.get_mut(sid) else {
            return left;
        };
        let ns = member.socket.ns().to_owned();
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

    /// Adds a socket, in its namespace and `rooms`.
    pub fn add(&mut self, socket: Arc<S>, rooms: &[String]) -> Vec<Interest> {
        let mut changed = Vec::new();
        let set = self.namespaces.entry(socket.ns().to_owned()).or_default();
        if set.is_empty() {
            changed.push(Interest::Namespace(socket.ns().to_owned()));
        }
        set.insert(socket.id().to_owned());
        if !socket.user().is_empty() {
            self.users
                .entry(socket.user().to_owned())
                .or_default()
                .insert(socket.id().to_owned());
        }
        let sid = socket.id().to_owned();
        let new = !self.sockets.contains_key(&sid);
        if let Some(tag) = self.foreign_tag(socket.id()).filter(|_| new) {
            let count = self.foreign_tags.entry(tag.to_owned()).or_default();
            if *count == 0 {
                changed.push(Interest::Tag(tag.to_owned()));
            }
            *count += 1;
        }
        self.sockets.insert(
            sid.clone(),
            Entry {
                socket,
                rooms: Names::default(),
            },
        );
        self.join(&sid, rooms, &mut changed);
        changed
    }

    /// Removes a socket from its namespace, its user and every room.
    pub fn remove(&mut self, sid: &str) -> Vec<Interest> {
        let mut changed = Vec::new();
        let Some(member) = self.sockets.get(sid) else {
            return changed;
        };
        let rooms: Vec<String> = member.rooms.iter().cloned().collect();
        let ns = member.socket.ns().to_owned();
        let user = member.socket.user().to_owned();
        if let Some(set) = self.users.get_mut(&user) {
            set.remove(sid);
            if set.is_empty() {
                self.users.remove(&user);
            }
        }
        self.leave(sid, &rooms, &mut changed);
        self.sockets.remove(sid);
        if let Some(tag) = self.foreign_tag(sid) {
            if let Some(count) = self.foreign_tags.get_mut(tag) {
                *count -= 1;
                if *count == 0 {
                    self.foreign_tags.remove(tag);
                    changed.push(Interest::Tag(tag.to_owned()));
                }
            }
        }
        if let Some(set) = self.namespaces.get_mut(&ns) {
            set.remove(sid);
            if set.is_empty() {
                self.namespaces.remove(&ns);
                changed.push(Interest::Namespace(ns));
            }
        }
        changed
    }

    /// Whether the index has a member for this subscription.
    pub fn wants(&self, interest: &Interest) -> bool {
        match interest {
            Interest::Room(ns, room) => self.rooms.contains_key(&(ns.clone(), room.clone())),
            Interest::Namespace(ns) => self.namespaces.contains_key(ns),
            Interest::Tag(tag) => self.foreign_tags.contains_key(tag),
        }
    }

    fn excluded(target: &Target, m: &Entry<S>) -> bool {
        excluded(target, m.socket.id(), &m.rooms)
    }

    /// The local sockets a command reaches through the subject it arrived on.
    pub fn targets(&self, target: &Target, kind: &SubjectKind) -> Vec<Arc<S>> {
        let in_ns = |m: &&Entry<S>| m.socket.ns() == target.ns;
        let keep = |m: &Entry<S>| !Self::excluded(target, m);
        let mut out = Vec::new();
        match kind {
            SubjectKind::Room(ns, room) => {
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
            SubjectKind::Namespace(_) if target.is_namespace() => {
                for sid in self.namespaces.get(&target.ns).into_iter().flatten() {
                    if let Some(m) = self.sockets.get(sid) {
                        if keep(m) {
                            out.push(m.socket.clone());
                        }
                    }
                }
            }
            SubjectKind::Namespace(_) | SubjectKind::AckReplies => {}
            SubjectKind::Edges | SubjectKind::Node | SubjectKind::Tag(_) => {
                let scope = kind.tag();
                let mut seen = HashSet::new();
                let named = target
                    .sockets
                    .iter()
                    .filter_map(|sid| self.sockets.get(sid).filter(in_ns));
                for m in named.chain(self.user_sockets(target)) {
                    if seen.insert(m.socket.id())
                        && in_scope(scope, m.socket.id())
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

    /// The local sockets a target selects within a scope: every one (`None`),
    /// or those whose id carries the route tag a command came through.
    pub fn select_in(&self, target: &Target, scope: Option<&str>) -> Vec<String> {
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
                .is_some_and(|m| m.socket.ns() == target.ns)
            {
                out.insert(room);
            }
        }
        for sid in &target.sockets {
            if self
                .sockets
                .get(sid)
                .is_some_and(|m| m.socket.ns() == target.ns)
            {
                out.insert(sid);
            }
        }
        out.extend(self.user_sockets(target).map(|m| m.socket.id()));
        out.into_iter()
            .filter(|sid| {
                in_scope(scope, sid)
                    && self
                        .sockets
                        .get(*sid)
                        .is_some_and(|m| !Self::excluded(target, m))
            })
            .map(str::to_owned)
            .collect()
    }

    /// The local sockets a target selects within a scope (see [`Self::select_in`]).
    pub fn selected_in(&self, target: &Target, scope: Option<&str>) -> Vec<Arc<S>> {
        self.select_in(target, scope)
            .iter()
            .filter_map(|sid| self.socket(sid))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket as the index sees it, nothing more.
    struct Fake {
        id: String,
        ns: String,
        user: String,
    }

    impl IndexedSocket for Fake {
        fn id(&self) -> &str {
            &self.id
        }
        fn ns(&self) -> &str {
            &self.ns
        }
        fn user(&self) -> &str {
            &self.user
        }
    }

    fn fake(sid: &str, ns: &str, user: &str) -> Arc<Fake> {
        Arc::new(Fake {
            id: sid.into(),
            ns: ns.into(),
            user: user.into(),
        })
    }

    fn target(ns: &str, rooms: &[&str], sockets: &[&str]) -> Target {
        Target {
            ns: ns.into(),
            rooms: rooms.iter().map(|s| s.to_string()).collect(),
            sockets: sockets.iter().map(|s| s.to_string()).collect(),
            ..Target::default()
        }
    }

    fn ids(v: Vec<Arc<Fake>>) -> Vec<String> {
        let mut ids: Vec<String> = v.into_iter().map(|s| s.id.clone()).collect();
        ids.sort();
        ids
    }

    fn room(ns: &str, room: &str) -> SubjectKind {
        SubjectKind::Room(ns.into(), room.into())
    }

    fn index_with(members: &[(&str, &str, &[&str])]) -> RoomIndex<Fake> {
        index_with_users(
            &members
                .iter()
                .map(|(sid, ns, rooms)| (*sid, *ns, "", *rooms))
                .collect::<Vec<_>>(),
        )
    }

    fn index_with_users(members: &[(&str, &str, &str, &[&str])]) -> RoomIndex<Fake> {
        let mut index = RoomIndex::default();
        for (sid, ns, user, rooms) in members {
            let rooms: Vec<String> = rooms.iter().map(|s| s.to_string()).collect();
            index.add(fake(sid, ns, user), &rooms);
        }
        index
    }

    #[test]
    fn large_rooms_and_sockets_in_many_rooms_are_indexed_like_small_ones() {
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
        let mut index = index_with(&members);
        let big = room("/", "big");
        assert_eq!(ids(index.targets(&target("/", &["big"], &[]), &big)), sids);
        // s00 gets a command for r5 and big through r5, the others through big.
        let both = target("/", &["r5", "big"], &[]);
        assert_eq!(ids(index.targets(&both, &big)), sids[1..].to_vec());
        assert_eq!(ids(index.targets(&both, &room("/", "r5"))), vec!["s00"]);
        assert_eq!(index.rooms_of("s00").len(), 21);
        index.remove("s03");
        let mut left = sids.clone();
        left.remove(3);
        assert_eq!(ids(index.targets(&target("/", &["big"], &[]), &big)), left);
        assert_eq!(index.select_in(&target("/", &["big"], &[]), None).len(), 19);
    }

    #[test]
    fn multi_room_commands_reach_each_socket_once() {
        let index = index_with(&[
            ("a", "/", &["r1", "r2"]),
            ("b", "/", &["r2"]),
            ("c", "/", &["r1"]),
            ("d", "/x", &["r1"]),
        ]);
        let t = target("/", &["r1", "r2"], &["a", "e"]);
        let via_r1 = ids(index.targets(&t, &room("/", "r1")));
        let via_r2 = ids(index.targets(&t, &room("/", "r2")));
        let via_edges = ids(index.targets(&t, &SubjectKind::Edges));
        assert_eq!(via_r1, vec!["a", "c"]);
        assert_eq!(via_r2, vec!["b"], "a got it through r1");
        assert!(via_edges.is_empty(), "a is in a target room");
    }

    #[test]
    fn users_are_selected_without_rooms_and_once() {
        let mut index = index_with_users(&[
            ("a1", "/", "alice", &["r"]),
            ("a2", "/", "alice", &[]),
            ("a3", "/x", "alice", &[]),
            ("b", "/", "bob", &[]),
        ]);
        let mut t = target("/", &["r"], &["b"]);
        t.users = vec!["alice".into(), "carol".into()];
        assert_eq!(ids(index.targets(&t, &SubjectKind::Edges)), vec!["a2", "b"]);
        assert_eq!(ids(index.targets(&t, &room("/", "r"))), vec!["a1"]);
        let mut selected = index.select_in(&t, None);
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

    #[test]
    fn exceptions_apply_on_every_path() {
        let index = index_with(&[
            ("a", "/", &["r1", "vip"]),
            ("b", "/", &["r1"]),
            ("c", "/", &[]),
        ]);
        let mut t = target("/", &[], &[]);
        t.except_rooms = vec!["vip".into()];
        t.except_sockets = vec!["c".into()];
        assert_eq!(
            ids(index.targets(&t, &SubjectKind::Namespace("/".into()))),
            vec!["b"]
        );
        let mut t = target("/", &["r1"], &[]);
        t.except_rooms = vec!["b".into()];
        assert_eq!(
            ids(index.targets(&t, &room("/", "r1"))),
            vec!["a"],
            "a socket id works as an except room"
        );
        let mut sel = target("/", &["r1", "c"], &[]);
        sel.except_sockets = vec!["a".into()];
        let mut selected = index.select_in(&sel, None);
        selected.sort();
        assert_eq!(selected, vec!["b", "c"]);
    }

    #[test]
    fn index_reports_subscription_changes() {
        let mut index = index_with(&[]);
        let changed = index.add(fake("s", "/", ""), &["r".into()]);
        assert_eq!(
            changed,
            vec![
                Interest::Namespace("/".into()),
                Interest::Room("/".into(), "r".into())
            ]
        );
        assert!(index.wants(&Interest::Room("/".into(), "r".into())));
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
        assert!(!index.wants(&Interest::Namespace("/".into())));
    }

    #[test]
    fn the_rooms_per_socket_limit_counts_only_new_rooms() {
        let index = index_with(&[("a", "/", &["r1", "r2"])]);
        let rooms = |rs: &[&str]| rs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!index.would_exceed("a", &rooms(&["r1", "r2", "r3"]), 3));
        assert!(index.would_exceed("a", &rooms(&["r3", "r4"]), 3));
        assert!(!index.would_exceed("nobody", &rooms(&["r3", "r4"]), 0));
    }

    #[test]
    fn sockets_of_other_edges_tags_are_followed_and_commands_through_a_tag_stay_in_it() {
        use roomcast_bus::names::new_socket_id;
        let mut index: RoomIndex<Fake> = RoomIndex::new("OWNxx".into());
        let own = new_socket_id("OWNxx");
        let moved_a = new_socket_id("AAAAA");
        let moved_b = new_socket_id("AAAAA");
        let other = new_socket_id("BBBBB");
        assert!(index
            .add(fake(&own, "/", "u"), &[])
            .iter()
            .all(|i| !matches!(i, Interest::Tag(_))));
        assert!(index
            .add(fake(&moved_a, "/", "u"), &[])
            .contains(&Interest::Tag("AAAAA".into())));
        assert!(
            !index
                .add(fake(&moved_b, "/", "v"), &[])
                .contains(&Interest::Tag("AAAAA".into())),
            "the tag is followed already"
        );
        index.add(fake(&other, "/", "u"), &[]);
        assert_eq!(
            index.foreign_tags(),
            vec!["AAAAA".to_owned(), "BBBBB".to_owned()]
        );
        assert!(index.wants(&Interest::Tag("AAAAA".into())));

        // User u has a socket under three tags: each tag's copy reaches one.
        let to_u = Target {
            ns: "/".into(),
            users: vec!["u".into()],
            ..Target::default()
        };
        let via = |tag: &str| ids(index.targets(&to_u, &SubjectKind::Tag(tag.into())));
        assert_eq!(via("OWNxx"), vec![own.clone()]);
        assert_eq!(via("AAAAA"), vec![moved_a.clone()]);
        assert_eq!(via("BBBBB"), vec![other.clone()]);
        assert_eq!(index.select_in(&to_u, Some("AAAAA")), vec![moved_a.clone()]);
        assert_eq!(index.select_in(&to_u, None).len(), 3);
        // Named sockets of another tag are not this copy's.
        let named = target("/", &[], &[&own, &moved_b]);
        assert_eq!(
            ids(index.targets(&named, &SubjectKind::Tag("OWNxx".into()))),
            vec![own.clone()]
        );

        assert!(
            index.remove(&moved_a).is_empty(),
            "moved_b still carries AAAAA"
        );
        assert_eq!(index.remove(&moved_b), vec![Interest::Tag("AAAAA".into())]);
        assert!(!index.wants(&Interest::Tag("AAAAA".into())));
        assert_eq!(index.foreign_tags(), vec!["BBBBB".to_owned()]);
    }
}
