//! The recovery records of this edge's connected sockets (ADR 18).
//!
//! With recovery on, a socket with a pid has a record in the session store
//! for as long as it is connected: its id, user, namespace, rooms and data,
//! with this edge's node id as its owner. Should this edge die without
//! closing it, the client can still recover the socket on another edge once
//! this one is known dead ([`crate::recovery`] decides that).
//!
//! Nothing on the hot path waits for the store. A connect, a change of rooms
//! or a removal marks the socket in a map (one entry per socket: later marks
//! replace earlier ones), and one worker writes what is marked a moment
//! later, reading the socket's rooms from the index at that time: a socket
//! that joins ten rooms in a burst is written once. A recoverable close is
//! written at once: its client may be reconnecting already. Every socket is marked
//! again every quarter of the recovery window, since a record lives one
//! window after its last write.
//!
//! Each socket remembers the revision of its last write. A rewrite, the
//! final save at a recoverable close and the removal at any other close all
//! expect that revision: if the record moved on, another edge took it (it
//! judged this one dead), and this edge writes it no more.
//!
//! Lock order: a removal marks its socket under the index lock (so that a
//! later socket of the same id is marked after it), so the map's lock is
//! taken after the index's, never the other way round.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use roomcast_bus::recovery::{RecoveryError, SavedSession, SessionStore};
use tokio::sync::Notify;

use crate::sio::Socket;
use crate::Edge;

/// How long marks gather before the worker writes them: joins in a burst
/// become one write per socket.
const GATHER: Duration = Duration::from_millis(20);

/// Writes in flight at once.
const CONCURRENT_WRITES: usize = 32;

/// The shortest time between two rewrites of every record (a tiny window
/// must not make the worker spin).
const MIN_REFRESH: Duration = Duration::from_millis(100);

/// A socket's revision once another edge took its record: never written
/// again.
const LOST: u64 = u64::MAX;

/// What is to be written for a socket.
enum Write {
    /// Its record as it is now (rooms read from the index when written).
    Live,
    /// Its connection closed in a way that allows recovery: the record with
    /// these rooms, and no owner.
    Closed(Vec<String>),
    /// It is gone for good: its record goes.
    Gone,
}

struct Marked {
    socket: Arc<Socket>,
    write: Write,
}

/// The sockets whose record is to be written, and the worker's wake-up.
#[derive(Default)]
pub(crate) struct SessionRecords {
    marked: Mutex<HashMap<String, Marked>>,
    /// Sockets marked or being written.
    queued: AtomicUsize,
    wake: Notify,
    /// A close was marked: the worker writes without gathering more, since
    /// its client may be reconnecting already.
    urgent: Notify,
    stopping: AtomicBool,
    /// Ends when the worker has written what was marked before the stop.
    stopped: Notify,
    done: AtomicBool,
}

impl SessionRecords {
    fn marked(&self) -> std::sync::MutexGuard<'_, HashMap<String, Marked>> {
        // Held for one map operation; consistent across a panic.
        self.marked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks `socket` for `write`. A live mark does not replace a close of
    /// the same socket; any mark replaces one of an earlier socket of the
    /// same id (a recovered socket took its record).
    fn mark(&self, socket: &Arc<Socket>, write: Write) {
        if socket.pid.is_none() {
            return;
        }
        let closing = matches!(write, Write::Closed(_));
        let mut marked = self.marked();
        match marked.get_mut(&socket.id) {
            Some(m) if Arc::ptr_eq(&m.socket, socket) => {
                if !matches!(write, Write::Live) {
                    m.write = write;
                }
            }
            other => {
                if other.is_none() {
                    self.queued.fetch_add(1, Ordering::Relaxed);
                }
                marked.insert(
                    socket.id.clone(),
                    Marked {
                        socket: socket.clone(),
                        write,
                    },
                );
            }
        }
        drop(marked);
        if closing {
            self.urgent.notify_one();
        }
        self.wake.notify_one();
    }

    /// Sockets marked or being written.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn take_marked(&self) -> Vec<Marked> {
        self.marked().drain().map(|(_, m)| m).collect()
    }

    /// Asks the worker to write what is marked and end; waits for it up to
    /// `limit`.
    pub async fn stop(&self, limit: Duration) {
        self.stopping.store(true, Ordering::Release);
        let stopped = self.stopped.notified();
        self.wake.notify_one();
        if self.done.load(Ordering::Acquire) {
            return;
        }
        if tokio::time::timeout(limit, stopped).await.is_err() {
            tracing::warn!("session records still marked at exit were not written");
        }
    }
}

impl Edge {
    fn session_records(&self) -> Option<&SessionRecords> {
        self.recovery()?;
        Some(&self.inner.session_records)
    }

    /// The socket connected or changed rooms: its record is rewritten soon.
    pub(crate) fn mark_live(&self, socket: &Arc<Socket>) {
        if let Some(records) = self.session_records() {
            records.mark(socket, Write::Live);
        }
    }

    /// The socket's connection closed in a way that allows recovery, while
    /// it was in `rooms`: its record loses its owner.
    pub(crate) fn mark_closed(&self, socket: &Arc<Socket>, rooms: Vec<String>) {
        if let Some(records) = self.session_records() {
            records.mark(socket, Write::Closed(rooms));
        }
    }

    /// The socket is gone for good: its record goes.
    pub(crate) fn mark_gone(&self, socket: &Arc<Socket>) {
        if let Some(records) = self.session_records() {
            records.mark(socket, Write::Gone);
        }
    }

    /// Writes what is marked, and marks every socket again each quarter of
    /// the recovery window, until [`SessionRecords::stop`].
    pub(crate) async fn session_record_loop(&self) {
        let (Some(records), Some(recovery)) = (self.session_records(), self.recovery()) else {
            return;
        };
        let store = recovery.sessions.clone();
        let mut refresh = tokio::time::interval((recovery.config.window / 4).max(MIN_REFRESH));
        refresh.tick().await;
        loop {
            let stopping = records.stopping.load(Ordering::Acquire);
            if !stopping {
                tokio::select! {
                    _ = records.wake.notified() => tokio::select! {
                        _ = tokio::time::sleep(GATHER) => {}
                        _ = records.urgent.notified() => {}
                    },
                    _ = refresh.tick() => self.mark_all_live(records),
                }
            }
            let marked = records.take_marked();
            futures_util::stream::iter(marked)
                .for_each_concurrent(CONCURRENT_WRITES, |m| {
                    self.write_record(records, &*store, m)
                })
                .await;
            if stopping || records.stopping.load(Ordering::Acquire) {
                let rest = records.take_marked();
                futures_util::stream::iter(rest)
                    .for_each_concurrent(CONCURRENT_WRITES, |m| {
                        self.write_record(records, &*store, m)
                    })
                    .await;
                records.done.store(true, Ordering::Release);
                records.stopped.notify_waiters();
                return;
            }
        }
    }

    fn mark_all_live(&self, records: &SessionRecords) {
        // Collected first: marking takes the map's lock, never under the
        // index lock here.
        let sockets: Vec<Arc<Socket>> = self
            .read_index()
            .sockets()
            .filter(|s| s.pid.is_some())
            .cloned()
            .collect();
        for socket in &sockets {
            records.mark(socket, Write::Live);
        }
    }

    async fn write_record(&self, records: &SessionRecords, store: &dyn SessionStore, m: Marked) {
        self.write_marked(store, m).await;
        records.queued.fetch_sub(1, Ordering::Relaxed);
    }

    async fn write_marked(&self, store: &dyn SessionStore, m: Marked) {
        let Marked { socket, write } = m;
        let Some(pid) = socket.pid.clone() else {
            return;
        };
        let revision = socket.record_revision.load(Ordering::Acquire);
        if revision == LOST {
            return;
        }
        let record = |rooms: Vec<String>, owner: Option<String>| SavedSession {
            sid: socket.id.clone(),
            pid: pid.clone(),
            ns: socket.ns.clone(),
            user: socket.user.clone(),
            rooms,
            data_json: socket.data_json.clone(),
            saved_at_ms: crate::now_ms(),
            owner,
        };
        let (op, result) = match write {
            Write::Live => {
                let rooms = {
                    let index = self.read_index();
                    match index.socket(&socket.id) {
                        Some(s) if Arc::ptr_eq(&s, &socket) => index.rooms_of(&socket.id),
                        // Removed meanwhile: its close or removal is marked.
                        _ => return,
                    }
                };
                let live = record(rooms, Some(self.config().node_id.clone()));
                ("live", self.write(store, &live, revision).await)
            }
            Write::Closed(rooms) => {
                let closed = record(rooms, None);
                ("closed", self.write(store, &closed, revision).await)
            }
            Write::Gone if revision == 0 => return,
            Write::Gone => (
                "removed",
                store
                    .remove_if(&pid, revision)
                    .await
                    .map(|removed| removed.then_some(0)),
            ),
        };
        match result {
            Ok(Some(revision)) => {
                socket.record_revision.store(revision, Ordering::Release);
                metrics::counter!(crate::metrics::SESSION_RECORDS, "op" => op).increment(1);
            }
            Ok(None) => {
                socket.record_revision.store(LOST, Ordering::Release);
                metrics::counter!(crate::metrics::SESSION_RECORDS, "op" => "taken").increment(1);
                tracing::info!(socket = %socket.id, "session record taken by another edge: no longer written here");
            }
            Err(e) => {
                metrics::counter!(crate::metrics::SESSION_RECORDS, "op" => "failed").increment(1);
                tracing::warn!(socket = %socket.id, error = %e, "session record not written");
            }
        }
    }

    /// Writes a record: from the revision this edge last wrote, or (none
    /// yet) whatever is there, since the socket is this edge's now.
    async fn write(
        &self,
        store: &dyn SessionStore,
        record: &SavedSession,
        revision: u64,
    ) -> Result<Option<u64>, RecoveryError> {
        if revision == 0 {
            store.save(record).await.map(Some)
        } else {
            store.save_if(record, Some(revision)).await
        }
    }
}

/// The op labels of the session record counter, for series that exist from
/// the start.
pub(crate) const OPS: [&str; 5] = ["live", "closed", "removed", "taken", "failed"];
