//! The heartbeat by which control planes know which edges exist: "alive" on
//! the heartbeats subject every interval, "bye" at shutdown.

use std::collections::HashSet;
use std::time::Duration;

use roomcast_bus::envelope::{EdgeReply, Routing};

use crate::Edge;

/// How long a stopping edge tries to say "bye".
const BYE_TIMEOUT: Duration = Duration::from_secs(1);

/// Most route tags of other edges a heartbeat lists. An edge holding
/// sockets of more tags (ids from before route tags, recovered here) asks
/// for every command through the edges subject instead.
const MAX_ANNOUNCED_TAGS: usize = 256;

impl Edge {
    /// "Alive", with how commands may reach this edge.
    pub(crate) fn hello(&self) -> EdgeReply {
        let tags = self.read_index().foreign_tags();
        let routing = (tags.len() <= MAX_ANNOUNCED_TAGS).then(|| Routing {
            listed: self.presence().is_some(),
            tags,
        });
        EdgeReply::Hello {
            node: self.config().node_id.clone(),
            routing,
        }
    }

    /// Says "alive" now (out of turn too: control planes learn at once that
    /// this edge listens on another route tag). Returns the other edges'
    /// tags it listed: those control planes may count on it for.
    pub(crate) async fn hello_now(&self) -> HashSet<String> {
        let hello = self.hello();
        let subject = self.subjects().heartbeats();
        let interval = self.config().heartbeat_interval;
        // While NATS is away publishes queue up and, once the queue is
        // full, wait: a heartbeat never waits longer than its interval.
        let _ = tokio::time::timeout(interval, self.publish_reply(&subject, &hello)).await;
        match hello {
            EdgeReply::Hello {
                routing: Some(routing),
                ..
            } => routing.tags.into_iter().collect(),
            _ => self.read_index().foreign_tags().into_iter().collect(),
        }
    }
}

impl Edge {
    /// Says "alive" on the heartbeats subject every heartbeat interval until
    /// shutdown, then "bye".
    pub(crate) async fn heartbeat_loop(&self) {
        let subject = self.subjects().heartbeats();
        let node = self.config().node_id.clone();
        let interval = self.config().heartbeat_interval;
        loop {
            let listed = self.hello_now().await;
            self.membership().subscriptions().prune_tags(&listed).await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.shutdown_token().cancelled() => break,
            }
        }
        let bye = EdgeReply::Bye { node };
        // A bus that is down must not hold up the shutdown.
        let _ = tokio::time::timeout(BYE_TIMEOUT, self.publish_reply(&subject, &bye)).await;
    }
}
