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
pub struct StaticEdges(pub Vec<String>);

impl EdgeDirectory for StaticEdges {
    fn live(&self) -> Vec<String> {
        self.0.clone()
    }

    fn routes(&self) -> Option<RouteTable> {
        let plain = Routing::default();
        Some(RouteTable::new(self.0.iter().map(|n| (n.as_str(), &plain))))
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

/// A command sent to every edge, and the answers coming back.
pub(crate) struct EdgeRequest {
    sub: Subscription,
    /// Edges that have not answered yet.
    pub waiting: HashSet<String>,
    expected: usize,
    deadline: Instant,
    timeout: Duration,
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
        let waiting = edges.live().into_iter().collect();
        Self::send_each(bus, vec![(subjects.edges(), cmd.clone())], waiting, timeout).await
    }

    /// Publishes each command on its subject with one fresh reply subject
    /// for all, and waits for the edges in `waiting`.
    pub async fn send_each(
        bus: &dyn Bus,
        sends: Vec<(String, Command)>,
        waiting: HashSet<String>,
        timeout: Duration,
    ) -> Result<EdgeRequest, ControlError> {
        let inbox = bus.new_inbox();
        let sub = bus.subscribe(&inbox, None).await?;
        for (subject, cmd) in sends {
            let (mut headers, payload) = cmd.encode();
            roomcast_bus::trace::inject(&mut headers);
            bus.publish(&subject, headers, payload, Some(&inbox))
                .await?;
        }
        Ok(EdgeRequest {
            sub,
            expected: waiting.len(),
            waiting,
            deadline: Instant::now() + timeout,
            timeout,
        })
    }

    /// The next answer before the deadline; `None` once it has passed.
    /// Messages that are not valid answers are logged and skipped.
    pub async fn next(&mut self) -> Option<EdgeReply> {
        loop {
            let msg = tokio::time::timeout_at(self.deadline, self.sub.next())
                .await
                .ok()??;
            match EdgeReply::decode(&msg.headers, msg.payload) {
                Ok(reply) => return Some(reply),
                Err(e) => tracing::warn!(error = %e, "invalid answer from an edge"),
            }
        }
    }

    /// Collects one answer per live edge (and from any edge that joined since).
    /// Fails when some live edge did not answer before the deadline.
    pub async fn gather(mut self) -> Result<Vec<EdgeReply>, ControlError> {
        let mut replies = Vec::with_capacity(self.expected);
        while !self.waiting.is_empty() {
            let Some(reply) = self.next().await else {
                return Err(self.not_confirmed());
            };
            self.waiting.remove(reply.node());
            replies.push(reply);
        }
        Ok(replies)
    }

    pub fn not_confirmed(&self) -> ControlError {
        ControlError::NotConfirmed {
            got: self.expected - self.waiting.len(),
            expected: self.expected,
            timeout_ms: self.timeout.as_millis(),
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
