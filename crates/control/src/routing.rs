//! Where a command or emit for sockets and users goes (ADR 16).
//!
//! Every socket id starts with the route tag of the edge that made it, and
//! every edge listens on the subject of its own tag, and on the tag of any
//! other edge while it holds a socket recovered from that edge. So a command
//! for known socket ids is published once per tag its sockets carry, and
//! waits for the edges that announced that tag in their heartbeats. A
//! command for users finds their sockets' tags in presence (edges record a
//! user's socket before they answer its connect), and goes the same way:
//! from the user directory the presence keeper keeps in memory, once it has
//! applied every user write before the call (ADR 0019), or else by reading
//! each user's state.
//!
//! What goes to every edge instead, through the edges subject:
//! - everything, with `--command-routing broadcast`, or while some live
//!   edge does not announce its routing (an older edge, or one holding
//!   sockets of too many other tags);
//! - user-addressed calls when presence is off here, when some live edge
//!   does not list its users in presence, or when presence cannot be read
//!   (a miss of the directory falls back to asking every edge, never to
//!   silence);
//! - commands whose target names rooms (which edges hold a room's members is
//!   known only by their subscriptions; a room named like a socket id may
//!   have members too) or a whole namespace.
//!
//! Emits to rooms keep interest-based routing: their room subjects reach the
//! edges subscribed to them. Only their direct part (named sockets and
//! users) is routed here.

use std::collections::BTreeMap;
use std::sync::Arc;

use roomcast_bus::envelope::{Command, Target};
use roomcast_bus::names::tag_of;
use roomcast_bus::subject::Subjects;
use roomcast_presence::{Lookup, Presence, DIRECTORY_WAIT};
use tokio::task::JoinSet;

use crate::edges::EdgeDirectory;

/// How the control plane sends commands for sockets and users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CommandRouting {
    /// To the edges that hold the sockets (their route tags, and presence
    /// for users), waiting for those edges only.
    #[default]
    Directory,
    /// To every edge, waiting for every live edge.
    Broadcast,
}

impl std::str::FromStr for CommandRouting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "directory" => Ok(CommandRouting::Directory),
            "broadcast" => Ok(CommandRouting::Broadcast),
            other => Err(format!(
                "command routing {other:?} must be directory or broadcast"
            )),
        }
    }
}

impl std::fmt::Display for CommandRouting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CommandRouting::Directory => "directory",
            CommandRouting::Broadcast => "broadcast",
        })
    }
}

/// Users whose sockets are looked up at once.
const CONCURRENT_LOOKUPS: usize = 64;

/// A command's way to the edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Every edge, through the edges subject; every live edge answers.
    Broadcast,
    /// One copy per route tag, each for the target's sockets carrying it.
    Tags(Vec<TagCopy>),
}

/// The copy of a command for the sockets of one route tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TagCopy {
    pub subject: String,
    /// The command's target, with the named sockets and users of this tag.
    pub target: Target,
    /// The live edges listening on the tag: those that answer.
    pub nodes: Vec<String>,
}

/// Plans routes.
#[derive(Clone)]
pub(crate) struct Router {
    mode: CommandRouting,
    subjects: Subjects,
    edges: Arc<dyn EdgeDirectory>,
    /// Where users' sockets are found; without it users go to every edge.
    presence: Option<Presence>,
}

impl Router {
    pub fn new(mode: CommandRouting, subjects: Subjects, edges: Arc<dyn EdgeDirectory>) -> Self {
        Router {
            mode,
            subjects,
            edges,
            presence: None,
        }
    }

    pub fn set_presence(&mut self, presence: Presence) {
        self.presence = Some(presence);
    }

    /// The route of a command for `target` (joins, leaves, disconnects,
    /// fetches, emits with ack): by tag when it names nothing but socket ids
    /// and users.
    pub async fn command(&self, target: &Target) -> Route {
        // A room of the socket id form may also be a room of members: only
        // every edge can tell (emits reach such members through the room's
        // subject, so their direct part is routed all the same).
        if target.is_namespace() || !target.rooms.is_empty() {
            return self.counted(Route::Broadcast);
        }
        self.direct(target).await
    }

    /// The route of the direct part of an emit (its named sockets and
    /// users; its rooms go through their own subjects).
    pub async fn direct(&self, target: &Target) -> Route {
        let route = self.plan(target).await;
        self.counted(route)
    }

    fn counted(&self, route: Route) -> Route {
        let via = match route {
            Route::Broadcast => "broadcast",
            Route::Tags(_) => "directory",
        };
        metrics::counter!(crate::metrics::ROUTED, "via" => via).increment(1);
        route
    }

    async fn plan(&self, target: &Target) -> Route {
        if self.mode == CommandRouting::Broadcast {
            return Route::Broadcast;
        }
        let Some(routes) = self.edges.routes() else {
            return Route::Broadcast;
        };
        // Tag → (named sockets, users) of the copy for it.
        let mut by_tag: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        // Ids not of the socket id form: no edge makes them, no socket has one.
        for sid in &target.sockets {
            if let Some(tag) = tag_of(sid) {
                by_tag
                    .entry(tag.to_owned())
                    .or_default()
                    .0
                    .push(sid.clone());
            }
        }
        if !target.users.is_empty() {
            let Some(presence) = self.presence.as_ref().filter(|_| routes.listed) else {
                return Route::Broadcast;
            };
            let Some(found) = find_users(presence, &target.users).await else {
                return Route::Broadcast;
            };
            for (user, tags) in found {
                for tag in tags {
                    by_tag.entry(tag).or_default().1.push(user.clone());
                }
            }
        }
        let copies = by_tag
            .into_iter()
            .map(|(tag, (sockets, users))| TagCopy {
                subject: self.subjects.tag(&tag),
                nodes: routes.nodes(&tag).to_vec(),
                target: Target {
                    ns: target.ns.clone(),
                    rooms: target.rooms.clone(),
                    sockets,
                    users,
                    except_rooms: target.except_rooms.clone(),
                    except_sockets: target.except_sockets.clone(),
                },
            })
            .collect();
        Route::Tags(copies)
    }
}

/// The route tags of each user's sockets: from the user directory when it
/// can answer, else read from presence; `None` when presence could not be
/// read (the caller asks every edge instead).
async fn find_users(presence: &Presence, users: &[String]) -> Option<Vec<(String, Vec<String>)>> {
    if let Lookup::Found(tags) = presence.route_tags(users, DIRECTORY_WAIT).await {
        metrics::counter!(crate::metrics::USER_LOOKUPS, "source" => "directory").increment(1);
        return Some(users.iter().cloned().zip(tags).collect());
    }
    metrics::counter!(crate::metrics::USER_LOOKUPS, "source" => "store").increment(1);
    user_tags(presence, users).await
}

/// The route tags of each user's sockets, read from presence (one read per
/// user); `None` when presence could not be read.
async fn user_tags(presence: &Presence, users: &[String]) -> Option<Vec<(String, Vec<String>)>> {
    let mut out = Vec::with_capacity(users.len());
    for chunk in users.chunks(CONCURRENT_LOOKUPS) {
        let mut lookups = JoinSet::new();
        for user in chunk {
            let (presence, user) = (presence.clone(), user.clone());
            lookups.spawn(async move {
                let state = presence.user(&user).await;
                (user, state)
            });
        }
        while let Some(done) = lookups.join_next().await {
            let (user, state) = match done {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!(error = %e, "user lookup failed: asking every edge");
                    return None;
                }
            };
            match state {
                Ok(state) => out.push((user, state.route_tags())),
                Err(e) => {
                    tracing::warn!(%user, error = %e, "presence unreadable: asking every edge");
                    return None;
                }
            }
        }
    }
    Some(out)
}

/// The same command for another target (the copy of one route tag).
pub(crate) fn retarget(cmd: &Command, target: Target) -> Command {
    let mut cmd = cmd.clone();
    match &mut cmd {
        Command::Emit { target: t, .. }
        | Command::Join { target: t, .. }
        | Command::Leave { target: t, .. }
        | Command::EmitWithAck { target: t, .. }
        | Command::Disconnect { target: t, .. }
        | Command::Fetch { target: t } => *t = target,
        Command::Reply { .. } | Command::ListRooms { .. } | Command::Ping => {}
    }
    cmd
}

/// The target of a command that has one.
pub(crate) fn target_of(cmd: &Command) -> Option<&Target> {
    match cmd {
        Command::Emit { target, .. }
        | Command::Join { target, .. }
        | Command::Leave { target, .. }
        | Command::EmitWithAck { target, .. }
        | Command::Disconnect { target, .. }
        | Command::Fetch { target } => Some(target),
        Command::Reply { .. } | Command::ListRooms { .. } | Command::Ping => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::RouteTable;
    use roomcast_bus::envelope::Routing;
    use roomcast_bus::memory::MemoryKv;
    use roomcast_bus::names::{new_socket_id, route_tag};
    use roomcast_bus::{KvError, MemoryBus};
    use roomcast_presence::{PresenceConfig, SocketRecord};

    /// Edges "e1" (listing users, holding a socket recovered from "gone")
    /// and "e2", or any routing given.
    struct Fixed(Option<RouteTable>);

    impl EdgeDirectory for Fixed {
        fn live(&self) -> Vec<String> {
            vec!["e1".into(), "e2".into()]
        }
        fn routes(&self) -> Option<RouteTable> {
            self.0.clone()
        }
    }

    fn two_edges(listed: bool) -> Option<RouteTable> {
        let e1 = Routing {
            listed,
            tags: vec![route_tag("gone")],
        };
        let e2 = Routing {
            listed,
            tags: Vec::new(),
        };
        Some(RouteTable::new([("e1", &e1), ("e2", &e2)]))
    }

    fn router(routes: Option<RouteTable>, mode: CommandRouting) -> Router {
        Router::new(mode, Subjects::new("t"), Arc::new(Fixed(routes)))
    }

    async fn presence_with(sockets: &[(&str, &str, &str)]) -> Presence {
        let bus = Arc::new(MemoryBus::default());
        let presence = Presence::new(
            Arc::new(MemoryKv::default()),
            bus,
            PresenceConfig {
                cluster: "t".into(),
                ..PresenceConfig::default()
            },
        );
        for (id, user, node) in sockets {
            let rec = SocketRecord {
                id: (*id).into(),
                user: (*user).into(),
                ns: "/".into(),
                node: (*node).into(),
                rooms: Vec::new(),
                connected_at_ms: 0,
            };
            presence.connected(&rec).await.expect("recorded");
        }
        presence
    }

    fn copies(route: Route) -> Vec<TagCopy> {
        match route {
            Route::Tags(copies) => copies,
            Route::Broadcast => panic!("routed to every edge"),
        }
    }

    #[tokio::test]
    async fn socket_ids_go_to_their_tags_and_wait_for_the_edges_listening() {
        let r = router(two_edges(false), CommandRouting::Directory);
        let (on_e1, on_e2, moved) = (
            new_socket_id(&route_tag("e1")),
            new_socket_id(&route_tag("e2")),
            new_socket_id(&route_tag("gone")),
        );
        let target = Target {
            ns: "/".into(),
            sockets: vec![
                on_e1.clone(),
                on_e2.clone(),
                moved.clone(),
                "not-an-id".into(),
            ],
            except_sockets: vec!["x".into()],
            ..Target::default()
        };
        let mut got = copies(r.command(&target).await);
        got.sort_by(|a, b| a.subject.cmp(&b.subject));
        assert_eq!(
            got.len(),
            3,
            "one copy per tag; the id without one has no socket"
        );
        for copy in &got {
            let id = &copy.target.sockets[..];
            assert_eq!(id.len(), 1);
            assert_eq!(copy.target.except_sockets, vec!["x".to_owned()]);
            let tag = tag_of(&id[0]).expect("tag");
            assert_eq!(copy.subject, Subjects::new("t").tag(tag));
            let expected: Vec<String> = if id[0] == on_e2 {
                vec!["e2".into()]
            } else {
                vec!["e1".into()]
            };
            assert_eq!(copy.nodes, expected, "who answers for {}", id[0]);
        }
        // Rooms, namespaces, broadcast mode and edges without routing: all.
        let rooms = Target {
            ns: "/".into(),
            rooms: vec!["lobby".into()],
            sockets: vec![on_e1.clone()],
            ..Target::default()
        };
        assert_eq!(r.command(&rooms).await, Route::Broadcast);
        assert_eq!(r.command(&Target::default()).await, Route::Broadcast);
        let one = Target {
            ns: "/".into(),
            sockets: vec![on_e1.clone()],
            ..Target::default()
        };
        assert_eq!(
            router(two_edges(false), CommandRouting::Broadcast)
                .command(&one)
                .await,
            Route::Broadcast
        );
        assert_eq!(
            router(None, CommandRouting::Directory).command(&one).await,
            Route::Broadcast
        );
        // A room of the socket id form may have members on any edge.
        let own_room = Target {
            ns: "/".into(),
            rooms: vec![on_e1.clone()],
            sockets: vec![on_e1.clone()],
            ..Target::default()
        };
        assert_eq!(r.command(&own_room).await, Route::Broadcast);
        assert_eq!(
            copies(r.direct(&own_room).await).len(),
            1,
            "an emit's direct part"
        );
    }

    #[tokio::test]
    async fn users_are_found_in_presence_only_when_every_edge_lists_them() {
        let (a1, a2) = (
            new_socket_id(&route_tag("e1")),
            new_socket_id(&route_tag("e2")),
        );
        let presence = presence_with(&[(&a1, "alice", "e1"), (&a2, "alice", "e2")]).await;
        let to = |users: &[&str]| Target {
            ns: "/".into(),
            users: users.iter().map(|u| u.to_string()).collect(),
            ..Target::default()
        };
        let mut r = router(two_edges(true), CommandRouting::Directory);
        assert_eq!(
            r.command(&to(&["alice"])).await,
            Route::Broadcast,
            "no presence here"
        );
        r.set_presence(presence.clone());
        let got = copies(r.command(&to(&["alice", "nobody"])).await);
        assert_eq!(got.len(), 2, "alice's two edges; nobody has no socket");
        for copy in &got {
            assert_eq!(copy.target.users, vec!["alice".to_owned()]);
            assert!(copy.target.sockets.is_empty());
        }
        let mut nodes: Vec<String> = got.into_iter().flat_map(|c| c.nodes).collect();
        nodes.sort();
        assert_eq!(nodes, vec!["e1".to_owned(), "e2".to_owned()]);
        assert!(copies(r.command(&to(&["nobody"])).await).is_empty());

        let mut unlisted = router(two_edges(false), CommandRouting::Directory);
        unlisted.set_presence(presence);
        assert_eq!(
            unlisted.command(&to(&["alice"])).await,
            Route::Broadcast,
            "an edge that does not list its users could hold one"
        );
    }

    /// A memory store that counts reads of users' states.
    #[derive(Clone, Default)]
    struct Counted {
        kv: MemoryKv,
        user_reads: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl roomcast_bus::KvStore for Counted {
        async fn get(&self, key: &str) -> Result<Option<(bytes::Bytes, u64)>, KvError> {
            if key.starts_with("user.") {
                self.user_reads
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            self.kv.get(key).await
        }
        async fn put(&self, key: &str, value: bytes::Bytes) -> Result<u64, KvError> {
            self.kv.put(key, value).await
        }
        async fn swap(
            &self,
            key: &str,
            value: bytes::Bytes,
            expected: Option<u64>,
        ) -> Result<u64, KvError> {
            self.kv.swap(key, value, expected).await
        }
        async fn delete(&self, key: &str) -> Result<(), KvError> {
            self.kv.delete(key).await
        }
        async fn delete_if(&self, key: &str, revision: u64) -> Result<(), KvError> {
            self.kv.delete_if(key, revision).await
        }
        async fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
            self.kv.keys(prefix).await
        }
        async fn watch(&self, prefix: &str) -> Result<roomcast_bus::Watch, KvError> {
            self.kv.watch(prefix).await
        }
    }

    /// With the keeper's directory caught up, a user lookup reads no user's
    /// state; without a keeper (or once it stopped) it reads them, and the
    /// route is the same.
    #[tokio::test]
    async fn users_are_found_in_the_directory_without_reading_each() {
        let store = Counted::default();
        let presence = Presence::new(
            Arc::new(store.clone()),
            Arc::new(MemoryBus::default()),
            PresenceConfig {
                cluster: "t".into(),
                ..PresenceConfig::default()
            },
        );
        for node in ["e1", "e2"] {
            presence.refresh_lease(node).await.expect("lease");
        }
        let mut r = router(two_edges(true), CommandRouting::Directory);
        r.set_presence(presence.clone());
        let to_alice = Target {
            ns: "/".into(),
            users: vec!["alice".into(), "nobody".into()],
            ..Target::default()
        };
        let reads = || store.user_reads.load(std::sync::atomic::Ordering::SeqCst);
        let stop = tokio_util::sync::CancellationToken::new();
        let keeper = tokio::spawn(presence.clone().run_keeper(stop.clone()));
        let (a1, a2) = (
            new_socket_id(&route_tag("e1")),
            new_socket_id(&route_tag("e2")),
        );
        for (id, node) in [(&a1, "e1"), (&a2, "e2")] {
            let rec = SocketRecord {
                id: id.clone(),
                user: "alice".into(),
                ns: "/".into(),
                node: node.into(),
                rooms: Vec::new(),
                connected_at_ms: 0,
            };
            presence.connected(&rec).await.expect("recorded");
        }
        let subjects = |route: Route| {
            let mut s: Vec<String> = copies(route).into_iter().map(|c| c.subject).collect();
            s.sort();
            s
        };
        let mut expected = vec![
            Subjects::new("t").tag(&route_tag("e1")),
            Subjects::new("t").tag(&route_tag("e2")),
        ];
        expected.sort();
        // The keeper's watch catches up in its own time: until then the
        // lookup reads the store.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let before = reads();
            assert_eq!(subjects(r.command(&to_alice).await), expected);
            if reads() == before {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never from the directory"
            );
            tokio::task::yield_now().await;
        }
        stop.cancel();
        keeper.await.expect("task").expect("keeper");
        let before = reads();
        assert_eq!(subjects(r.command(&to_alice).await), expected);
        assert_eq!(
            reads(),
            before + 2,
            "one read per user without the directory"
        );
    }
}
