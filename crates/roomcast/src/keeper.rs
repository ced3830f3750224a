//! The presence keeper a process runs (every control plane, or the standalone
//! process): started with the process, stopped and joined at its exit.

use std::time::Duration;

use roomcast_presence::Presence;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running keeper loop ([`Presence::run_keeper`]), owned by the process.
pub struct Keeper {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Keeper {
    /// Starts the keeper loop; a failure of the loop is logged.
    pub fn start(presence: Presence) -> Keeper {
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                if let Err(e) = presence.run_keeper(stop).await {
                    tracing::error!(error = %e, "presence keeper stopped");
                }
            }
        });
        Keeper { stop, task }
    }

    /// Stops the loop and waits for it (and the grace timers it joins) for
    /// at most `bound`; past it the task is aborted.
    pub async fn stop(self, bound: Duration) {
        self.stop.cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(bound, self.task).await.is_err() {
            tracing::warn!("presence keeper still running after {bound:?}; aborted");
            abort.abort();
        }
    }
}
