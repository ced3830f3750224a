//! Which local sockets are in which rooms, and the subscriptions that follow:
//! the room index behind its lock, the bus subscriptions, and the presence
//! records of each change.
//!
//! Every change takes the subscriptions table first, then the index (the lock
//! order of [`crate::subscriptions`]): the index changes, the subscriptions are
//! reconciled with what it reports, then the change is queued for presence.
//! Fan-out only ever reads the index.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use roomcast_bus::envelope::Target;
use roomcast_bus::subject::Subjects;
use roomcast_bus::Bus;
use tokio::sync::mpsc;

use crate::presence::PresenceChange;
use crate::room_index::{IndexedSocket, Interest, RoomIndex};
use crate::sio::Socket;
use crate::subscriptions::{Subscriptions, SubscriptionsGuard};
use crate::Edge;

/// The index of an edge's local sockets, as the edge holds it.
pub(crate) type Index = RoomIndex<Socket>;

impl IndexedSocket for Socket {
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

/// The room index and the subscriptions it calls for.
pub(crate) struct Membership {
    /// Taken after `subscriptions` (see the module doc).
    index: RwLock<Index>,
    subscriptions: Subscriptions,
}

impl Membership {
    /// The membership of an edge whose route tag is `route_tag`.
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects, route_tag: String) -> Self {
        Self {
            index: RwLock::new(Index::new(route_tag)),
            subscriptions: Subscriptions::new(bus, subjects),
        }
    }

    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    /// The index, for reading. Held briefly: changes wait for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        // Every change of the index completes before a panic could unwind
        // through it: a poisoned lock still guards a consistent index.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Edge {
    /// The room index, for reading.
    pub(crate) fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        self.membership().read()
    }

    /// How many room subjects this edge subscribes to.
    pub fn room_subscription_count(&self) -> usize {
        self.read_index().room_count()
    }

    /// Brings the subscriptions in line with an index change, then releases
    /// the table.
    async fn reconcile(&self, subs: SubscriptionsGuard<'_>, changed: Vec<Interest>, joined: bool) {
        let membership = self.membership();
        subs.reconcile(
            changed,
            joined,
            |interest| membership.read().wants(interest),
            &|sub, kind| self.spawn_reader(sub, kind),
        )
        .await;
    }

    /// Adds a connected socket to the index, in its namespace and `rooms`.
    pub(crate) async fn add_socket(&self, socket: &Arc<Socket>, rooms: &[String]) {
        let membership = self.membership();
        let subs = membership.subscriptions.lock().await;
        let changed = membership.write().add(socket.clone(), rooms);
        let new_tag = changed.iter().any(|i| matches!(i, Interest::Tag(_)));
        self.reconcile(subs, changed, true).await;
        self.mark_live(socket);
        if new_tag {
            // Before the client hears it is connected: control planes wait
            // for this edge's answer to commands for the socket's tag.
            let _ = self.hello_now().await;
        }
        let Some(recorder) = self.presence() else {
            return;
        };
        let joined = self.read_index().rooms_of(&socket.id);
        let record = self.presence_record(socket, joined);
        if socket.user.is_empty() || !recorder.connected_now(&record).await {
            recorder.send(PresenceChange::Connected(record)).await;
            return;
        }
        // Written outside the queue: a change queued meanwhile may have been
        // written first. Queue the socket's state now after it.
        let now = {
            let index = self.read_index();
            index
                .contains(&socket.id)
                .then(|| index.rooms_of(&socket.id))
        };
        match now {
            None => recorder.send(PresenceChange::Disconnected(record)).await,
            Some(rooms) if rooms != record.rooms => {
                let rec = self.presence_record(socket, rooms);
                recorder
                    .send(PresenceChange::Rooms(rec, Vec::new(), Vec::new()))
                    .await;
            }
            Some(_) => {}
        }
    }

    /// Removes a socket from the index and from every room, for good.
    pub(crate) async fn remove_socket(&self, socket: &Arc<Socket>) {
        self.remove_socket_as(socket, false).await;
    }

    /// Removes a socket from the index and from every room; `recoverable`
    /// when its connection closed in a way that allows recovery (its session
    /// record then keeps the rooms it was in).
    pub(crate) async fn remove_socket_as(&self, socket: &Arc<Socket>, recoverable: bool) {
        let tracked = self.tracks_presence();
        let membership = self.membership();
        let subs = membership.subscriptions.lock().await;
        let (changed, rooms, was_there) = {
            let mut index = membership.write();
            // Its rooms, for its records, before they are gone.
            let rooms = if tracked || recoverable {
                index.rooms_of(&socket.id)
            } else {
                Vec::new()
            };
            let was_there = index.contains(&socket.id);
            // Marked under the index lock: a later socket of the same id (a
            // recovery on this edge) is marked after it.
            match (was_there, recoverable) {
                (false, _) => {}
                (true, true) => self.mark_closed(socket, rooms.clone()),
                (true, false) => self.mark_gone(socket),
            }
            (index.remove(&socket.id), rooms, was_there)
        };
        self.reconcile(subs, changed, false).await;
        if tracked && was_there {
            self.record_presence(|| {
                PresenceChange::Disconnected(self.presence_record(socket, rooms))
            })
            .await;
        }
    }

    /// Makes every local socket the target selects join or leave rooms;
    /// returns how many sockets were changed (or already as asked), and how
    /// many were left out because the join would put them over the
    /// rooms-per-socket limit.
    pub(crate) async fn apply_rooms(
        &self,
        target: &Target,
        scope: Option<&str>,
        rooms: &[String],
        join: bool,
    ) -> (u64, u64) {
        let max_rooms = self.config().max_rooms_per_socket;
        let rooms: Vec<String> = rooms
            .iter()
            .filter(|r| roomcast_bus::names::valid_room(r))
            .cloned()
            .collect();
        let tracked = self.tracks_presence();
        let membership = self.membership();
        let subs = membership.subscriptions.lock().await;
        let (changed, count, records, refused) = {
            let mut index = membership.write();
            let mut changed = Vec::new();
            let mut records = Vec::new();
            let mut moved_sockets = Vec::new();
            let selected = index.select_in(target, scope);
            let mut refused = 0;
            for sid in &selected {
                if join && max_rooms > 0 && index.would_exceed(sid, &rooms, max_rooms) {
                    refused += 1;
                    continue;
                }
                let moved = if join {
                    index.join(sid, &rooms, &mut changed)
                } else {
                    index.leave(sid, &rooms, &mut changed)
                };
                if moved.is_empty() {
                    continue;
                }
                let Some(socket) = index.socket(sid) else {
                    continue;
                };
                if socket.pid.is_some() {
                    moved_sockets.push(socket.clone());
                }
                if tracked {
                    records.push((self.presence_record(&socket, index.rooms_of(sid)), moved));
                }
            }
            for socket in &moved_sockets {
                self.mark_live(socket);
            }
            (changed, selected.len() as u64 - refused, records, refused)
        };
        if refused > 0 {
            crate::limits::Limit::RoomsPerSocket.hit();
            tracing::info!(
                refused,
                max_rooms,
                "join refused: too many rooms per socket"
            );
        }
        self.reconcile(subs, changed, join).await;
        for (record, moved) in records {
            let (joined, left) = if join {
                (moved, Vec::new())
            } else {
                (Vec::new(), moved)
            };
            self.record_presence(|| PresenceChange::Rooms(record, joined, left))
                .await;
        }
        (count, refused)
    }

    /// After the presence lease was lost: records every socket this edge
    /// holds again, with its rooms. Queued under the index lock, so a socket
    /// removed meanwhile is either left out or recorded before its removal is.
    fn record_all_again(&self) {
        let Some(recorder) = self.presence() else {
            return;
        };
        let index = self.read_index();
        let (mut queued, mut dropped) = (0usize, 0usize);
        for (socket, rooms) in index.members() {
            let change = PresenceChange::Connected(self.presence_record(socket, rooms));
            if recorder.try_send(change) {
                queued += 1;
            } else {
                dropped += 1;
            }
        }
        drop(index);
        tracing::warn!(
            sockets = queued,
            "presence lease was lost: recording this edge's sockets again"
        );
        if dropped > 0 {
            tracing::warn!(
                sockets = dropped,
                "presence queue full: sockets not recorded again"
            );
        }
    }

    /// Records the sockets again each time the lease turns out lost, until shutdown.
    pub(crate) async fn rerecord_loop(&self, mut lost: mpsc::Receiver<()>) {
        loop {
            tokio::select! {
                m = lost.recv() => match m {
                    Some(()) => self.record_all_again(),
                    None => return,
                },
                _ = self.shutdown_token().cancelled() => return,
            }
        }
    }
}

impl Edge {
    /// Whether this edge records presence (then index changes build records).
    fn tracks_presence(&self) -> bool {
        self.presence().is_some()
    }

    fn presence_record(
        &self,
        socket: &Socket,
        rooms: Vec<String>,
    ) -> roomcast_presence::SocketRecord {
        crate::presence::socket_record(socket, &self.config().node_id, rooms)
    }

    /// Queues a presence change, built only when presence is recorded.
    async fn record_presence(&self, change: impl FnOnce() -> PresenceChange) {
        if let Some(recorder) = self.presence() {
            recorder.send(change()).await;
        }
    }
}
