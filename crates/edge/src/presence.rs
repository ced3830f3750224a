//! The edge's side of presence: it records its sockets as they connect, change
//! rooms and go, and holds its lease.
//!
//! Index changes queue an operation; one worker applies them in order, so a
//! socket's record is never written after its removal. A store that is down is
//! retried a few times per operation; what still fails is logged and dropped
//! (a later restart of this edge, or its lease expiry, cleans up).
//!
//! The connect of a socket with a user is the exception: it is recorded at
//! once, before the client is told it is connected ([`PresenceRecorder::connected_now`]),
//! because control planes find a user's edges in the store (ADR 16). Only
//! when the store cannot take it in time is it queued like the rest.
//!
//! An edge that was taken for dead (paused, or cut off from the store, past
//! its lease TTL) finds its lease lost at the next refresh: a control plane
//! has removed its sockets and their users went offline. The edge then
//! records every socket it still holds again, and their users come back
//! online.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use roomcast_bus::KvError;
use roomcast_presence::{Presence, SocketRecord};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::sio::Socket;

/// Operations waiting for the store, per edge.
const QUEUE: usize = 65_536;
const ATTEMPTS: u32 = 5;

/// Longest a connect waits for the store to record its socket before the
/// record is queued instead (and user-addressed calls may miss the socket
/// until the queue has written it).
const CONNECT_RECORD_TIMEOUT: Duration = Duration::from_secs(2);

/// A change of a socket's presence, as the store records it.
pub(crate) enum PresenceChange {
    Connected(SocketRecord),
    /// The socket's record now, with the rooms it joined and those it left.
    Rooms(SocketRecord, Vec<String>, Vec<String>),
    Disconnected(SocketRecord),
}

/// The edge's side of presence: the worker that records changes in order,
/// and the task that holds the lease.
pub(crate) struct PresenceRecorder {
    presence: Presence,
    /// Taken at stop: the channel closes and the worker ends once drained.
    tx: Mutex<Option<mpsc::Sender<PresenceChange>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    lease: Mutex<Option<JoinHandle<()>>>,
    lease_stop: CancellationToken,
    /// A message each time the lease was found lost; taken by the edge.
    lost: Mutex<Option<mpsc::Receiver<()>>>,
}

fn take<T>(m: &Mutex<Option<T>>) -> Option<T> {
    // A take cannot leave the option half-changed.
    m.lock().unwrap_or_else(PoisonError::into_inner).take()
}

impl PresenceRecorder {
    /// Cleans up what a previous run of this node left, takes the lease and
    /// starts the worker.
    pub async fn start(presence: Presence, node: &str) -> Result<PresenceRecorder, KvError> {
        let stale = presence.clean_node(node).await?;
        if stale > 0 {
            tracing::info!(
                sockets = stale,
                "removed the sockets a previous run of this node left"
            );
        }
        let revision = presence.refresh_lease(node).await?;
        let lease_stop = CancellationToken::new();
        let holder = presence.clone();
        let (node_id, stop) = (node.to_owned(), lease_stop.clone());
        let (lost_tx, lost) = mpsc::channel(1);
        let lease =
            tokio::spawn(async move { holder.hold_lease(node_id, revision, stop, lost_tx).await });
        let (tx, rx) = mpsc::channel(QUEUE);
        let worker = tokio::spawn(work(presence.clone(), rx));
        Ok(PresenceRecorder {
            presence,
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
            lease: Mutex::new(Some(lease)),
            lease_stop,
            lost: Mutex::new(Some(lost)),
        })
    }

    /// The messages that say the lease was lost (once: the edge takes them).
    pub fn take_lost(&self) -> Option<mpsc::Receiver<()>> {
        take(&self.lost)
    }

    /// Records a socket's connect now, not through the queue; false when the
    /// store did not take it within [`CONNECT_RECORD_TIMEOUT`] (the caller
    /// queues it then).
    pub async fn connected_now(&self, rec: &SocketRecord) -> bool {
        let attempts = async {
            for attempt in 1..=3u32 {
                match self.presence.connected(rec).await {
                    Ok(()) => return true,
                    Err(e) => {
                        tracing::debug!(error = %e, attempt, "presence connect not recorded, retrying");
                        tokio::time::sleep(Duration::from_millis(50) * attempt).await;
                    }
                }
            }
            false
        };
        let recorded = tokio::time::timeout(CONNECT_RECORD_TIMEOUT, attempts)
            .await
            .unwrap_or(false);
        if !recorded {
            metrics::counter!(crate::metrics::PRESENCE_LATE).increment(1);
            tracing::warn!(socket = %rec.id, "presence store slow: connect queued, user-addressed calls may miss the socket until it is written");
        }
        recorded
    }

    /// Whether the edge `node` holds its presence lease.
    pub async fn holds_lease(&self, node: &str) -> Result<bool, KvError> {
        self.presence.holds_lease(node).await
    }

    /// Queues an operation without waiting; false when the queue is full or
    /// presence stopped.
    pub fn try_send(&self, op: PresenceChange) -> bool {
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        tx.as_ref().is_some_and(|tx| tx.try_send(op).is_ok())
    }

    pub async fn send(&self, op: PresenceChange) {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match tx {
            Some(tx) if tx.send(op).await.is_ok() => {}
            _ => tracing::warn!("presence stopped: a change was not recorded"),
        }
    }

    /// Lets the worker finish what is queued (for at most `limit`), then
    /// releases the lease.
    pub async fn stop(&self, limit: Duration) {
        drop(take(&self.tx));
        if let Some(mut worker) = take(&self.worker) {
            if tokio::time::timeout(limit, &mut worker).await.is_err() {
                tracing::warn!("presence changes still queued at exit were dropped");
                worker.abort();
            }
        }
        self.lease_stop.cancel();
        if let Some(lease) = take(&self.lease) {
            let _ = lease.await;
        }
    }
}

async fn work(presence: Presence, mut rx: mpsc::Receiver<PresenceChange>) {
    while let Some(op) = rx.recv().await {
        for attempt in 1..=ATTEMPTS {
            let result = match &op {
                PresenceChange::Connected(rec) => presence.connected(rec).await,
                PresenceChange::Rooms(rec, joined, left) => {
                    presence.rooms_changed(rec, joined, left).await
                }
                PresenceChange::Disconnected(rec) => presence.disconnected(rec).await,
            };
            match result {
                Ok(()) => break,
                Err(e) if attempt == ATTEMPTS => {
                    tracing::warn!(error = %e, "presence not recorded; giving up on this change")
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "presence write failed, retrying");
                    tokio::time::sleep(Duration::from_millis(100) * 2u32.pow(attempt)).await;
                }
            }
        }
    }
}

/// The record of a socket of `node`, in `rooms`.
pub(crate) fn socket_record(socket: &Socket, node: &str, rooms: Vec<String>) -> SocketRecord {
    SocketRecord {
        id: socket.id.clone(),
        user: socket.user.clone(),
        ns: socket.ns.clone(),
        node: node.to_owned(),
        rooms,
        connected_at_ms: socket.connected_at_ms,
    }
}
