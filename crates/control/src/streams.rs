//! Server streams (`ConsumeEvents`, `WatchConnections`, `WatchPresence`):
//! bus subscriptions forwarded into gRPC streams by tasks this control plane
//! owns, ended at shutdown.

use std::time::Duration;

use roomcast_bus::{Message, Subscription};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;

/// How long a stream's last word (its `UNAVAILABLE`) may wait for room in a
/// caller's full channel.
const LAST_WORD_TIMEOUT: Duration = Duration::from_secs(1);

/// The forwarding tasks of every open stream, and their stop.
#[derive(Clone, Default)]
pub(crate) struct Streams {
    /// Ends every open stream at shutdown (a graceful gRPC shutdown waits
    /// for them otherwise).
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Streams {
    /// Ends every stream (each with `UNAVAILABLE`); no new one starts.
    pub fn shutdown(&self) {
        self.tasks.close();
        self.stop.cancel();
    }

    /// Waits until every forwarding task ended, for at most `bound`; returns
    /// whether they all did.
    pub async fn join(&self, bound: Duration) -> bool {
        tokio::time::timeout(bound, self.tasks.wait()).await.is_ok()
    }

    /// How many forwarding tasks run.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.tasks.len()
    }

    /// Forwards bus messages, mapped (`None` skips one), into a gRPC stream's
    /// channel until the subscription ends or the caller goes away. A stream
    /// that ends on our side (shutdown, the bus gone) ends with
    /// `UNAVAILABLE`, never with OK: the caller must tell that end from its
    /// own and resume elsewhere.
    pub fn forward<T: Send + 'static>(
        &self,
        mut sub: Subscription,
        tx: mpsc::Sender<Result<T, Status>>,
        mut map: impl FnMut(Message) -> Option<T> + Send + 'static,
    ) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            let ended = loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    _ = stop.cancelled() => break Status::unavailable(
                        "roomcast is shutting down: call another control plane and resume \
                         (events in between are not kept)",
                    ),
                    msg = sub.next() => msg,
                };
                let Some(msg) = msg else {
                    break Status::unavailable("the bus connection ended: call again and resume");
                };
                let Some(out) = map(msg) else { continue };
                if tx.send(Ok(out)).await.is_err() {
                    return;
                }
            };
            let _ = tokio::time::timeout(LAST_WORD_TIMEOUT, tx.send(Err(ended))).await;
        });
    }
}
