//! Which edges exist, how commands reach them, and gathering one answer from
//! each edge a command was sent to.
//!
//! Edges say "hello" on the heartbeats subject every second and "bye" when
//! they stop. [`LiveEdges`] keeps the edges heard from within a time to live,
//! with the routing each announced (the route tags it listens on, whether
//! it lists its users' sockets in presence); a control plane that starts
//! pings every edge, so it knows them at once rather than after their next
//! heartbeat. A command is done when every edge it needs answered; an edge
//! that died without a "bye" counts as live until its heartbeats are older
//! than the time to live.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use roomcast_bus::envelope::{Command, EdgeReply, Routing};
use roomcast_bus::subject::Subjects;
use roomcast_bus::{Bus, BusError, Subscription};
use tokio::time::Instant;

use crate::ControlError;

/// The edges a command must hear back from, and where commands for sockets
/// go.
pub trait EdgeDirectory: Send + Sync + 'static {
    /// Node ids of the edges believed alive.
    fn live(&self) -> Vec<String>;

    /// How to reach the sockets of each route tag; `None` when some live
    /// edge wants every command through the edges subject.
    fn routes(&self) -> Option<RouteTable>;
}

/// Which live edges listen on each route tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    by_tag: HashMap<String, Vec<String>>,
    /// Every live edge records its users' sockets in presence before it
    /// answers their connect.
    pub listed: bool,
}

impl RouteTable {
    /// The table of these edges and what each announced.
    pub fn new<'a>(edges: impl IntoIterator<Item = (&'a str, &'a Routing)>) -> RouteTable {
        let mut table = RouteTable {
            by_tag: HashMap::new(),
            listed: true,
        };
        for (node, routing) in edges {
            table.listed &= routing.listed;
            let own = roomcast_bus::names::route_tag(node);
            for tag in std::iter::once(&own).chain(&routing.tags) {
                table
                    .by_tag
                    .entry(tag.clone())
                    .or_default()
                    .push(node.to_owned());
            }
        }
        table
    }

    /// The live edges listening on a tag (none when its edge is gone and no
    /// edge recovered a socket of it).
    pub fn nodes(&self, tag: &str) -> &[String] {
        self.by_tag.get(tag).map_or(&[], Vec::as_slice)
    }
}

/// A fixed set of edges (the one edge of `roomcast standalone`), each
/// listening on its own route tag only.
pub struct StaticEdges {
    nodes: Vec<String>,
    /// Whether the edges record their users' sockets in presence.
    listed: bool,
}

impl StaticEdges {
    /// Edges that do not list their users (user-addressed calls go to all).
    pub fn new(nodes: Vec<String>) -> Self {
        StaticEdges {
            nodes,
            listed: false,
        }
    }

    /// Edges that record their users' sockets in presence before answering
    /// their connect.
    pub fn listing(nodes: Vec<String>) -> Self {
        StaticEdges {
            nodes,
            listed: true,
        }
    }
}

impl EdgeDirectory for StaticEdges {
    fn live(&self) -> Vec<String> {
        self.nodes.clone()
    }

    fn routes(&self) -> Option<RouteTable> {
        let routing = Routing {
            listed: self.listed,
            tags: Vec::new(),
        };
        Some(RouteTable::new(
            self.nodes.iter().map(|n| (n.as_str(), &routing)),
        ))
    }
}

/// When an edge was last heard from, and what it said of its routing.
struct Heard {
    at: Instant,
    routing: Option<Routing>,
}

/// Edges known from their heartbeats.
pub struct LiveEdges {
    seen: Arc<Mutex<HashMap<String, Heard>>>,
    ttl: Duration,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LiveEdges {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LiveEdges {
    /// Listens to heartbeats, pings every edge and gives them `discovery` to
    /// answer before returning. Edges silent for `ttl` are forgotten.
    pub async fn start(
        bus: Arc<dyn Bus>,
        subjects: &Subjects,
        ttl: Duration,
        discovery: Duration,
    ) -> Result<LiveEdges, BusError> {
        let heartbeats = subjects.heartbeats();
        let mut sub = bus.subscribe(&heartbeats, None).await?;
        let seen: Arc<Mutex<HashMap<String, Heard>>> = Arc::default();
        let map = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let mut seen = map.lock().unwrap_or_else(PoisonError::into_inner);
                match EdgeReply::decode(&msg.headers, msg.payload) {
                    Ok(EdgeReply::Hello { node, routing }) => {
                        let heard = Heard {
                            at: Instant::now(),
                            routing,
                        };
                        if seen.insert(node.clone(), heard).is_none() {
                            tracing::info!(%node, "edge joined");
                        }
                    }
                    Ok(EdgeReply::Bye { node }) => {
                        if seen.remove(&node).is_some() {
                            tracing::info!(%node, "edge left");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "invalid heartbeat"),
                }
            }
        });
        let (headers, payload) = Command::Ping.encode();
        bus.publish(&subjects.edges(), headers, payload, Some(&heartbeats))
            .await?;
        tokio::time::sleep(discovery).await;
        Ok(LiveEdges { seen, ttl, task })
    }
}

impl LiveEdges {
    /// The table of edges heard from within the time to live, expired ones
    /// forgotten.
    fn fresh(&self) -> std::sync::MutexGuard<'_, HashMap<String, Heard>> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let ttl = self.ttl;
        seen.retain(|node, heard| {
            let alive = heard.at.elapsed() <= ttl;
            if !alive {
                tracing::warn!(%node, "edge silent for longer than its time to live");
            }
            alive
        });
        seen
    }
}

impl EdgeDirectory for LiveEdges {
    fn live(&self) -> Vec<String> {
        self.fresh().keys().cloned().collect()
    }

    fn routes(&self) -> Option<RouteTable> {
        let seen = self.fresh();
        let mut announced = Vec::with_capacity(seen.len());
        for (node, heard) in seen.iter() {
            announced.push((node.as_str(), heard.routing.as_ref()?));
        }
        Some(RouteTable::new(announced))
    }
}

/// A command sent to edges (one copy per subject), and the answers coming
/// back. Each copy has its own reply subject, so an edge that gets two copies
/// (it listens on two route tags) is waited for once per copy.
pub(crate) struct EdgeRequest {
    sub: Subscription,
    /// The reply subjects' common prefix (`<inbox>.`).
    inbox: String,
    /// (copy, edge) pairs that have not answered yet.
    waiting: HashSet<(usize, String)>,
    expected: usize,
    deadline: Instant,
    timeout: Duration,
}

/// One answer, with the copy of the command it answers.
pub(crate) struct Answer {
    pub copy: usize,
    pub reply: EdgeReply,
}

impl EdgeRequest {
    /// Publishes `cmd` on the edges subject with a fresh reply subject, and
    /// waits for every live edge.
    pub async fn send(
        bus: &dyn Bus,
        subjects: &Subjects,
        edges: &dyn EdgeDirectory,
        cmd: &Command,
        timeout: Duration,
    ) -> Result<EdgeRequest, ControlError> {
        let all = vec![(subjects.edges(), cmd.clone(), edges.live())];
        Self::send_each(bus, all, timeout).await
    }

    /// Publishes each command on its subject, each with a reply subject of
    /// its own under one fresh inbox, and waits for the edges listed with it.
    pub async fn send_each(
        bus: &dyn Bus,
        copies: Vec<(String, Command, Vec<String>)>,
        timeout: Duration,
    ) -> Result<EdgeRequest, ControlError> {
        let inbox = format!("{}.", bus.new_inbox());
        let sub = bus.subscribe(&format!("{inbox}>"), None).await?;
        let mut waiting = HashSet::new();
        for (copy, (subject, cmd, nodes)) in copies.into_iter().enumerate() {
            waiting.extend(nodes.into_iter().map(|n| (copy, n)));
            let (mut headers, payload) = cmd.encode();
            roomcast_bus::trace::inject(&mut headers);
            let reply = format!("{inbox}{copy}");
            bus.publish(&subject, headers, payload, Some(&reply))
                .await?;
        }
        Ok(EdgeRequest {
            sub,
            inbox,
            expected: waiting.len(),
            waiting,
            deadline: Instant::now() + timeout,
            timeout,
        })
    }

    /// Whether every edge waited for has answered its copy.
    pub fn all_answered(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Counts an edge's answer to a copy (its first; later ones change nothing).
    pub fn answered(&mut self, copy: usize, node: &str) {
        self.waiting.remove(&(copy, node.to_owned()));
    }

    /// The next answer before the deadline; `None` once it has passed.
    /// Messages that are not valid answers are logged and skipped.
    pub async fn next(&mut self) -> Option<Answer> {
        loop {
            let msg = tokio::time::timeout_at(self.deadline, self.sub.next())
                .await
                .ok()??;
            let copy = msg
                .subject
                .strip_prefix(&self.inbox)
                .and_then(|c| c.parse().ok());
            let Some(copy) = copy else {
                tracing::warn!(subject = %msg.subject, "answer on an unknown reply subject");
                continue;
            };
            match EdgeReply::decode(&msg.headers, msg.payload) {
                Ok(reply) => return Some(Answer { copy, reply }),
                Err(e) => tracing::warn!(error = %e, "invalid answer from an edge"),
            }
        }
    }

    /// Collects one answer per (copy, edge) waited for, and any other that
    /// arrives meanwhile. Fails when some edge did not answer before the
    /// deadline.
    pub async fn gather(mut self) -> Result<Vec<EdgeReply>, ControlError> {
        let mut replies = Vec::with_capacity(self.expected);
        while !self.waiting.is_empty() {
            let Some(answer) = self.next().await else {
                return Err(self.not_confirmed());
            };
            self.answered(answer.copy, answer.reply.node());
            replies.push(answer.reply);
        }
        Ok(replies)
    }

    pub fn not_confirmed(&self) -> ControlError {
        let silent: std::collections::BTreeSet<&str> =
            self.waiting.iter().map(|(_, n)| n.as_str()).collect();
        ControlError::NotConfirmed {
            got: self.expected - self.waiting.len(),
            expected: self.expected,
            timeout_ms: self.timeout.as_millis(),
            silent: silent.into_iter().collect::<Vec<_>>().join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_bus::MemoryBus;

    async fn hello(bus: &MemoryBus, subject: &str, reply: EdgeReply) {
        let (h, p) = reply.encode();
        bus.publish(subject, h, p, None).await.expect("publish");
    }

    #[tokio::test]
    async fn edges_are_known_from_pings_heartbeats_and_byes() {
        let bus = MemoryBus::default();
        let subjects = Subjects::new("t");
        // An edge that answers pings, as edges do.
        let mut edges_sub = bus.subscribe(&subjects.edges(), None).await.expect("sub");
        let answering = bus.clone();
        tokio::spawn(async move {
            while let Some(msg) = edges_sub.next().await {
                if let (Ok(Command::Ping), Some(reply)) =
                    (Command::decode(&msg.headers, msg.payload), msg.reply)
                {
                    let hello_a = EdgeReply::Hello {
                        node: "a".into(),
                        routing: Some(Routing::default()),
                    };
                    hello(&answering, &reply, hello_a).await;
                }
            }
        });
        let live = LiveEdges::start(
            Arc::new(bus.clone()),
            &subjects,
            Duration::from_millis(200),
            Duration::from_millis(50),
        )
        .await
        .expect("start");
        assert_eq!(live.live(), vec!["a".to_owned()], "known from the ping");

        hello(
            &bus,
            &subjects.heartbeats(),
            EdgeReply::Hello {
                node: "b".into(),
                routing: Some(Routing {
                    listed: false,
                    tags: vec!["xxxxx".into()],
                }),
            },
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(2);
        while live.live().len() < 2 {
            assert!(Instant::now() < deadline, "b never counted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let routes = live.routes().expect("both edges announce their routing");
        assert_eq!(routes.nodes("xxxxx"), ["b".to_owned()], "a tag b recovered");
        let own_a = roomcast_bus::names::route_tag("a");
        assert_eq!(routes.nodes(&own_a), ["a".to_owned()]);
        assert_eq!(routes.nodes("nobdy"), [] as [String; 0]);
        assert!(!routes.listed, "b does not list its users");
        hello(
            &bus,
            &subjects.heartbeats(),
            EdgeReply::Bye { node: "b".into() },
        )
        .await;
        while live.live().len() != 1 {
            assert!(Instant::now() < deadline, "b never forgotten after bye");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // "a" stops beating: forgotten after the time to live.
        while !live.live().is_empty() {
            assert!(Instant::now() < deadline, "a never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
