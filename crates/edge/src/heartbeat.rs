//! The heartbeat by which control planes know which edges exist: "alive" on
//! the heartbeats subject every interval, "bye" at shutdown.

use std::time::Duration;

use roomcast_bus::envelope::EdgeReply;

use crate::Edge;

/// How long a stopping edge tries to say "bye".
const BYE_TIMEOUT: Duration = Duration::from_secs(1);

impl Edge {
    /// Says "alive" on the heartbeats subject every heartbeat interval until
    /// shutdown, then "bye".
    pub(crate) async fn heartbeat_loop(&self) {
        let subject = self.subjects().heartbeats();
        let node = self.config().node_id.clone();
        let hello = EdgeReply::Hello { node: node.clone() };
        let interval = self.config().heartbeat_interval;
        loop {
            // While NATS is away publishes queue up and, once the queue is
            // full, wait: a heartbeat never waits longer than its interval.
            let _ = tokio::time::timeout(interval, self.publish_reply(&subject, &hello)).await;
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
