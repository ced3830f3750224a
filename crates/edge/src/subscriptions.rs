//! An edge's bus subscriptions: which subjects it listens on, the task that
//! reads each, and whether the bus has confirmed them live.
//!
//! Lock order: the table of subscriptions ([`Subscriptions::lock`]) is taken
//! before the room index, and held while the index changes and the
//! subscriptions follow ([`SubscriptionsGuard::reconcile`]). That serialises
//! reconciliations: a subscribe and an unsubscribe of one subject can never be
//! applied out of order, and a socket that joins a room another socket is
//! joining at the same moment (its index change reports nothing to subscribe)
//! comes after that subscription is made. Nothing else is locked while the
//! table is: reading a subject's messages never takes it.
//!
//! What a subject's messages are for is not known here: the caller hands a
//! function that spawns the subject's reader (`dispatch`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use roomcast_bus::subject::Subjects;
use roomcast_bus::{Bus, BusError, Subscription};
use tokio::task::JoinHandle;

use crate::room_index::{Interest, SubjectKind};

/// Longest a join waits for the bus to confirm its subscriptions.
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);

/// Spawns the task that reads a subject's messages; aborting the task drops
/// the subscription, which unsubscribes.
pub(crate) type SpawnReader<'a> = &'a (dyn Fn(Subscription, SubjectKind) -> JoinHandle<()> + Sync);

pub(crate) struct Subscriptions {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    /// Live subscriptions by subject: the task that reads each.
    live: tokio::sync::Mutex<HashMap<String, JoinHandle<()>>>,
    /// Other edges' route tags subscribed to, and whether each was found
    /// unwanted at the last prune. Changed only while `live` is locked.
    tags: Mutex<HashMap<String, bool>>,
    /// Subscriptions made so far, and how many of the first of them the bus
    /// has confirmed live ([`Bus::sync`]).
    subscribed: AtomicU64,
    synced: AtomicU64,
}

/// The table of subscriptions, locked: see the lock order above.
pub(crate) struct SubscriptionsGuard<'a> {
    owner: &'a Subscriptions,
    live: tokio::sync::MutexGuard<'a, HashMap<String, JoinHandle<()>>>,
}

impl Subscriptions {
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects) -> Self {
        Self {
            bus,
            subjects,
            live: tokio::sync::Mutex::new(HashMap::new()),
            tags: Mutex::new(HashMap::new()),
            subscribed: AtomicU64::new(0),
            synced: AtomicU64::new(0),
        }
    }

    /// Locks the table; taken before the room index.
    pub async fn lock(&self) -> SubscriptionsGuard<'_> {
        SubscriptionsGuard {
            owner: self,
            live: self.live.lock().await,
        }
    }

    /// Subscribes to a subject and spawns its reader.
    async fn subscribe(
        &self,
        subject: &str,
        kind: SubjectKind,
        spawn_reader: SpawnReader<'_>,
    ) -> Result<JoinHandle<()>, BusError> {
        let sub = self.bus.subscribe(subject, None).await?;
        self.subscribed.fetch_add(1, Ordering::AcqRel);
        Ok(spawn_reader(sub, kind))
    }

    /// Waits until the subscriptions made so far are live at the bus (for NATS,
    /// a round trip to this edge's server), unless they are known to be: a
    /// socket is told it joined a room, and a backend that its join is done,
    /// only once an emit published afterwards reaches it. Bounded: while the
    /// bus is away, joins go on and the subscriptions become live when it is
    /// back.
    pub async fn sync(&self) {
        let upto = self.subscribed.load(Ordering::Acquire);
        if self.synced.load(Ordering::Acquire) >= upto {
            return;
        }
        match tokio::time::timeout(SYNC_TIMEOUT, self.bus.sync()).await {
            Ok(Ok(())) => {
                self.synced.fetch_max(upto, Ordering::AcqRel);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "bus subscriptions not confirmed"),
            Err(_) => tracing::warn!("bus subscriptions not confirmed in time"),
        }
    }

    /// Drops the subscriptions of other edges' route tags that no local
    /// socket carried at this prune nor at the one before. Called after each
    /// heartbeat: a tag's subscription outlives the first heartbeat that no
    /// longer lists it by a heartbeat interval, so a control plane that
    /// still counted on this edge's answer for the tag gets it.
    pub async fn prune_tags(&self, wanted: &HashSet<String>) {
        let mut live = self.live.lock().await;
        let mut tags = self.tags.lock().unwrap_or_else(PoisonError::into_inner);
        tags.retain(|tag, unwanted_before| {
            if wanted.contains(tag) {
                *unwanted_before = false;
                return true;
            }
            if !*unwanted_before {
                *unwanted_before = true;
                return true;
            }
            if let Some(handle) = live.remove(&self.subjects.tag(tag)) {
                handle.abort();
            }
            false
        });
    }

    /// Drops every subscription (at shutdown).
    pub async fn clear(&self) {
        let mut live = self.live.lock().await;
        for (_, handle) in live.drain() {
            handle.abort();
        }
    }
}

impl SubscriptionsGuard<'_> {
    /// Subscribes to a subject the edge always listens on.
    pub async fn add(
        &mut self,
        subject: String,
        kind: SubjectKind,
        spawn_reader: SpawnReader<'_>,
    ) -> Result<(), BusError> {
        let handle = self.owner.subscribe(&subject, kind, spawn_reader).await?;
        if let Some(old) = self.live.insert(subject, handle) {
            old.abort();
        }
        Ok(())
    }

    /// Brings the subscriptions in line with the index for the interests an
    /// index change reported (`wants`: whether the index has a member for
    /// one now). Then releases the table and, after a join (`joined`) or
    /// when a subscription was made, waits until they are live.
    pub async fn reconcile(
        mut self,
        changed: Vec<Interest>,
        joined: bool,
        wants: impl Fn(&Interest) -> bool,
        spawn_reader: SpawnReader<'_>,
    ) {
        let owner = self.owner;
        let mut wanted_any = joined;
        for interest in changed {
            let (subject, kind) = match &interest {
                Interest::Room(ns, room) => (
                    owner.subjects.room(ns, room),
                    SubjectKind::Room(ns.clone(), room.clone()),
                ),
                Interest::Namespace(ns) => (
                    owner.subjects.namespace(ns),
                    SubjectKind::Namespace(ns.clone()),
                ),
                Interest::Tag(tag) => (owner.subjects.tag(tag), SubjectKind::Tag(tag.clone())),
            };
            let wanted = wants(&interest);
            wanted_any |= wanted;
            if let Interest::Tag(tag) = &interest {
                // Dropped by `prune_tags`, after heartbeats stopped listing it.
                if !wanted {
                    continue;
                }
                owner
                    .tags
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(tag.clone(), false);
            }
            match (wanted, self.live.contains_key(&subject)) {
                (true, false) => match owner.subscribe(&subject, kind, spawn_reader).await {
                    Ok(handle) => {
                        self.live.insert(subject, handle);
                    }
                    Err(e) => tracing::warn!(%subject, error = %e, "subscribe failed"),
                },
                (false, true) => {
                    if let Some(handle) = self.live.remove(&subject) {
                        handle.abort();
                    }
                }
                _ => {}
            }
        }
        drop(self);
        if wanted_any {
            owner.sync().await;
        }
    }
}
