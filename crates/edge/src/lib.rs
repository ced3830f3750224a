//! The edge: terminates Socket.IO connections and delivers what the bus carries.
//!
//! An edge accepts the official `socket.io-client` over WebSocket and HTTP
//! long-polling (Engine.IO v4, with the upgrade probe), runs the Socket.IO v5
//! session on top (namespaces, auth at CONNECT, acks, binary attachments), keeps
//! the index of its *local* sockets and their rooms, and subscribes to the bus
//! subject of a room only while it has a member in it.
//!
//! Commands arrive from the bus with the packet already encoded; the edge finds
//! its local targets and queues the same buffer on each socket's bounded outbox.
//! One writer per WebSocket drains the outbox into vectored writes; a pending
//! polling GET drains it into a payload. An event for a few sockets is written
//! to those whose writer is idle by the fan-out itself.
//!
//! Layout:
//! - [`config`]: what an edge is told (timeouts, limits, namespaces, CORS).
//! - [`auth`]: JWT verification at CONNECT; [`hook`]: a backend's verdict instead.
//! - `outbox`: the per-connection queue, bounded in bytes; `sink`: what a
//!   transport is to the queue (its kind, a direct write that does not
//!   wait); `transport`: the direct writers behind the one type the queue
//!   holds (ADR 13).
//! - `session`: the Engine.IO session (heartbeat, close reasons), which hands
//!   decoded packets to the layer above through `EngineHandler`.
//! - `ws`, `polling`: the two transports; `ws_read`: whole WebSocket messages
//!   from frames; `wsframe`: frames written as header and shared payload;
//!   `http`: routing and CORS; `http_reply`: Engine.IO's HTTP error answers;
//!   [`tcp`]: the client port's shared TCP streams;
//!   [`port`]: the client port's server (accept loop, deadlines, the cap on
//!   pending handshakes).
//! - [`limits`]: per-address connection and handshake limits, rate buckets,
//!   the limit-hit counter.
//! - `sio`: the Socket.IO layer, the sessions' `EngineHandler`: its own state
//!   of a connection (namespaces' sockets, attachments being assembled),
//!   CONNECT, events, acks.
//! - `session_table`: the open Engine.IO sessions by sid.
//! - `small_set`, `room_index`: the local sockets by id, namespace, room and
//!   user, as plain data (which sockets a command reaches, which subjects the
//!   edge must listen on).
//! - `subscriptions`: the bus subjects the edge listens on, the task reading
//!   each, whether the bus confirmed them.
//! - `membership`: the room index behind its lock, kept in step with the
//!   subscriptions and with presence (sockets added, removed, joining and
//!   leaving rooms).
//! - `dispatch`: each subject's reader and what it does with each command:
//!   emits delivered in order on the reader, joins, leaves, disconnects,
//!   fetches and other answers on tracked tasks.
//! - `fanout`: an emit queued on the local sockets it is for.
//! - `acks`: where the acks of server emits go.
//! - `heartbeat`: the edge's "alive" and "bye" for control planes.
//! - `recovery`: connection state recovery (pid, offsets, replay).
//! - `presence`: the edge's records in the presence store, and its lease.
//! - `lifecycle`: sockets' connects and disconnects announced for backends.
//! - [`admin_ui`]: the Socket.IO Admin UI's namespace (off by default): stats
//!   rows, the cluster's sockets from a directory, the UI's requests.
//! - [`metrics`]: the edge's metric names and descriptions (it imports
//!   nothing of the crate: the owners count, [`describe_metrics`] registers).
//! - this file: the assembly. [`Edge::start`] builds the parts, subscribes
//!   the subjects every edge listens on and starts the heartbeat, the ping
//!   sweep and presence's re-recording; then the HTTP router, the gauges,
//!   drain and shutdown, and the accessors by which modules reach the parts.

#![forbid(unsafe_code)]

mod acks;
pub mod admin_ui;
pub mod auth;
#[doc(hidden)]
pub mod bench;
pub mod config;
mod delivered;
mod dispatch;
mod fanout;
mod forward;
mod heartbeat;
pub mod hook;
mod http;
mod http_reply;
#[cfg(test)]
mod layer_tests;
mod lifecycle;
pub mod limits;
mod membership;
pub mod metrics;
mod outbox;
mod polling;
pub mod port;
mod presence;
mod recovery;
mod room_index;
mod session;
mod session_records;
mod session_table;
mod sink;
mod sio;
mod small_set;
mod subscriptions;
pub mod tcp;
mod transport;
mod ws;
#[doc(hidden)]
pub mod ws_read;
mod wsframe;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roomcast_bus::envelope::{now_ms, EdgeReply};
use roomcast_bus::subject::Subjects;
use roomcast_bus::{Bus, BusError, Subscription};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{Authenticator, Identity, JwtConfig};
pub use config::EdgeConfig;
pub use session::CloseReason;

/// Registers the edge's metric descriptions and the zero series of its
/// counters, with the label values taken from the modules that own them.
pub fn describe_metrics() {
    metrics::describe(metrics::Labels {
        close_reasons: CloseReason::ALL.iter().map(|r| r.label()).collect(),
        recovery_outcomes: recovery::Outcome::ALL.iter().map(|o| o.label()).collect(),
        session_record_ops: session_records::OPS.to_vec(),
        limits: limits::Limit::ALL.iter().map(|l| l.label()).collect(),
        forward_kinds: forward::KINDS.to_vec(),
        forward_outcomes: forward::OUTCOMES.to_vec(),
    });
}

use acks::PendingAcks;
use membership::Membership;
use presence::PresenceRecorder;
use room_index::SubjectKind;
use session_table::SessionTable;

/// How long a stopping edge waits for its presence changes to be recorded.
/// Short: with the store down, the rest is cleaned up by the lease's expiry.
const PRESENCE_DRAIN: Duration = Duration::from_secs(3);

/// An edge node. Cheap to clone.
#[derive(Clone)]
pub struct Edge {
    inner: Arc<Inner>,
}

/// What the edge is made of. Each part owns its state and is reached through
/// the edge's accessors below; the parts that change at run time (sessions,
/// membership, acks) lock inside their own module.
struct Inner {
    config: EdgeConfig,
    auth: Authenticator,
    hook: Option<hook::Hook>,
    /// Connections and handshake rates per peer address.
    peers: Arc<limits::PeerLimits>,
    presence: Option<PresenceRecorder>,
    /// Connection state recovery, when on.
    recovery: Option<roomcast_bus::recovery::Recovery>,
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    /// The start of the socket ids this edge generates: commands for them
    /// come through this tag's subject.
    route_tag: String,
    sessions: SessionTable,
    /// Local sockets, their rooms, and the subscriptions these call for.
    membership: Membership,
    acks: PendingAcks,
    /// The sockets each multi-copy emit reached (ADR 17).
    delivered: delivered::Delivered,
    /// The session records of the sockets to be written (ADR 18).
    session_records: session_records::SessionRecords,
    shutdown: CancellationToken,
    /// Set when a lame-duck drain begins: the edge is no longer ready.
    draining: AtomicBool,
    tasks: TaskTracker,
    /// The Socket.IO Admin UI's state, when it is on.
    admin_ui: Option<Arc<admin_ui::AdminUi>>,
    /// Polling requests forwarded between edges (ADR 20).
    forwarding: forward::Forwarding,
}

/// What an edge holds right now.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    pub websocket_connections: usize,
    pub polling_connections: usize,
    pub sockets_by_namespace: Vec<(String, usize)>,
    pub room_subscriptions: usize,
    /// Bytes waiting in every connection's outbound queue.
    pub queued_bytes: usize,
    /// Sockets whose session record waits to be written, or is being
    /// written.
    pub session_records_queued: usize,
    /// WebSockets this edge relays to sessions held by other edges.
    pub relayed_websockets: usize,
}

/// Why an edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("subscribing to the edge subjects failed")]
    Subscribe(#[source] BusError),
    #[error("invalid connect hook url")]
    HookUrl(#[source] tonic::transport::Error),
    #[error("the presence store is unavailable")]
    Presence(#[source] roomcast_bus::KvError),
}

impl Edge {
    /// Builds an edge and subscribes it to the subjects every edge listens on.
    pub async fn start(
        config: EdgeConfig,
        auth: Authenticator,
        bus: Arc<dyn Bus>,
        presence: Option<roomcast_presence::Presence>,
        recovery: Option<roomcast_bus::recovery::Recovery>,
    ) -> Result<Edge, StartError> {
        let subjects = Subjects::new(&config.cluster);
        let route_tag = roomcast_bus::names::route_tag(&config.node_id);
        let hook = config
            .connect_hook
            .as_ref()
            .map(hook::Hook::new)
            .transpose()
            .map_err(StartError::HookUrl)?;
        let presence = match presence {
            Some(p) => Some(
                PresenceRecorder::start(p, &config.node_id)
                    .await
                    .map_err(StartError::Presence)?,
            ),
            None => None,
        };
        let config_admin = config
            .admin_ui
            .clone()
            .map(|c| Arc::new(admin_ui::AdminUi::new(c)));
        let edge = Edge {
            inner: Arc::new(Inner {
                peers: limits::PeerLimits::new(
                    config.max_connections_per_ip,
                    config.handshakes_per_ip_per_sec,
                ),
                membership: Membership::new(bus.clone(), subjects.clone(), route_tag.clone()),
                route_tag: route_tag.clone(),
                subjects,
                config,
                auth,
                hook,
                presence,
                recovery,
                bus,
                sessions: SessionTable::default(),
                acks: PendingAcks::default(),
                delivered: delivered::Delivered::default(),
                session_records: session_records::SessionRecords::default(),
                shutdown: CancellationToken::new(),
                draining: AtomicBool::new(false),
                tasks: TaskTracker::new(),
                admin_ui: config_admin,
                forwarding: forward::Forwarding::default(),
            }),
        };
        let subjects = &edge.inner.subjects;
        let node_id = &edge.inner.config.node_id;
        let subscriptions = edge.inner.membership.subscriptions();
        let mut subs = subscriptions.lock().await;
        for (subject, kind) in [
            (subjects.edges(), SubjectKind::Edges),
            (subjects.node(node_id), SubjectKind::Node),
            (
                subjects.tag(&edge.inner.route_tag),
                SubjectKind::Tag(edge.inner.route_tag.clone()),
            ),
            (subjects.ack_replies(node_id), SubjectKind::AckReplies),
        ] {
            subs.add(subject, kind, &|sub, kind| edge.spawn_reader(sub, kind))
                .await
                .map_err(StartError::Subscribe)?;
        }
        drop(subs);
        let polls = edge
            .inner
            .bus
            .subscribe(&subjects.poll(&edge.inner.route_tag), None)
            .await
            .map_err(StartError::Subscribe)?;
        edge.spawn(forward::serve(edge.clone(), polls));
        edge.start_admin_ui().await.map_err(StartError::Subscribe)?;
        subscriptions.sync().await;
        let beating = edge.clone();
        edge.spawn(async move { beating.heartbeat_loop().await });
        let sweeping = edge.clone();
        edge.spawn(async move { sweeping.ping_sweep().await });
        if edge.inner.recovery.is_some() {
            // Not a tracked task: it outlives them, to write the records
            // of the sockets they close, and ends at its own stop.
            let recording = edge.clone();
            tokio::spawn(async move { recording.session_record_loop().await });
        }
        if let Some(lost) = edge.inner.presence.as_ref().and_then(|p| p.take_lost()) {
            let recording = edge.clone();
            edge.spawn(async move { recording.rerecord_loop(lost).await });
        }
        Ok(edge)
    }

    /// The HTTP service: Engine.IO on the configured path.
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.inner.config
    }

    /// The deadlines and cap the client port's server applies.
    pub fn port_limits(&self) -> port::PortLimits {
        let c = &self.inner.config;
        port::PortLimits {
            handshake_timeout: c.handshake_timeout,
            request_head_timeout: c.request_head_timeout,
            max_pending_handshakes: c.max_pending_handshakes,
        }
    }

    /// How many Engine.IO connections are open.
    pub fn connection_count(&self) -> usize {
        self.sessions()
            .all()
            .iter()
            .filter(|s| !s.is_closed())
            .count()
    }

    /// A snapshot of the edge's gauges, for a metrics scrape.
    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges::default();
        for s in self.sessions().all().iter().filter(|s| !s.is_closed()) {
            // A session relayed from another edge's WebSocket counts here,
            // where it is, as a WebSocket (ADR 20).
            if s.transport_name() == sink::TransportKind::WebSocket.name() {
                g.websocket_connections += 1;
            } else {
                g.polling_connections += 1;
            }
            g.queued_bytes += s.outbox.queued_bytes();
        }
        g.sockets_by_namespace = self.read_index().namespace_sizes();
        g.room_subscriptions = self.room_subscription_count();
        g.session_records_queued = self.inner.session_records.queued();
        g.relayed_websockets = self.inner.forwarding.relayed();
        g
    }

    /// Marks the edge as draining: it should get no new clients.
    pub fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Lame-duck close: closes the open connections spread at random over
    /// `window` (transport close, so clients reconnect, elsewhere once this
    /// edge is out of the load balancer), so their reconnects do not arrive
    /// all at once. Returns when all of them are closed.
    pub async fn drain(&self, window: Duration) {
        let sessions = self.sessions().all();
        tracing::info!(
            connections = sessions.len(),
            window_ms = window.as_millis() as u64,
            "draining"
        );
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let mut closing = tokio::task::JoinSet::new();
        for s in sessions {
            let edge = self.clone();
            let at = Duration::from_millis(if window_ms == 0 {
                0
            } else {
                rand::random_range(0..window_ms)
            });
            closing.spawn(async move {
                tokio::time::sleep(at).await;
                edge.close_session(&s, CloseReason::ServerShutdown);
            });
        }
        while closing.join_next().await.is_some() {}
    }

    /// Closes every connection (transport close, so clients reconnect) and
    /// waits for the edge's tasks to end.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let sessions = self.sessions().all();
        for s in sessions {
            self.close_session(&s, CloseReason::ServerShutdown);
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        if self.inner.recovery.is_some() {
            self.inner.session_records.stop(PRESENCE_DRAIN).await;
        }
        if let Some(presence) = &self.inner.presence {
            presence.stop(PRESENCE_DRAIN).await;
        }
        self.inner.membership.subscriptions().clear().await;
    }

    pub(crate) fn subjects(&self) -> &Subjects {
        &self.inner.subjects
    }

    /// The route tag this edge's socket ids start with.
    pub(crate) fn route_tag(&self) -> &str {
        &self.inner.route_tag
    }

    pub(crate) fn bus(&self) -> &Arc<dyn Bus> {
        &self.inner.bus
    }

    /// Cancelled when the edge shuts down.
    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Connections and handshake rates per peer address.
    pub(crate) fn peers(&self) -> &Arc<limits::PeerLimits> {
        &self.inner.peers
    }

    /// Who may CONNECT: JWT verification.
    pub(crate) fn authenticator(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// The backend that decides CONNECTs instead of the JWT, when configured.
    pub(crate) fn hook(&self) -> Option<&hook::Hook> {
        self.inner.hook.as_ref()
    }

    pub(crate) fn sessions(&self) -> &SessionTable {
        &self.inner.sessions
    }

    fn membership(&self) -> &Membership {
        &self.inner.membership
    }

    fn acks(&self) -> &PendingAcks {
        &self.inner.acks
    }

    fn presence(&self) -> Option<&PresenceRecorder> {
        self.inner.presence.as_ref()
    }

    fn recovery(&self) -> Option<&roomcast_bus::recovery::Recovery> {
        self.inner.recovery.as_ref()
    }

    /// Spawns the reader of a subject the edge subscribed to: the seam
    /// between the subscriptions and command dispatch.
    fn spawn_reader(&self, sub: Subscription, kind: SubjectKind) -> tokio::task::JoinHandle<()> {
        dispatch::read_subject(self.clone(), sub, kind)
    }

    /// Publishes an edge's answer (or heartbeat) on `subject`; a failure is logged.
    async fn publish_reply(&self, subject: &str, reply: &EdgeReply) {
        let (headers, payload) = reply.encode();
        if let Err(e) = self.bus().publish(subject, headers, payload, None).await {
            tracing::warn!(%subject, error = %e, "reply not published");
        }
    }

    /// Spawns a task owned by the edge (waited for at shutdown).
    fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(fut);
    }

    /// Spawns a task owned by the edge (waited for at shutdown), and returns
    /// its handle.
    fn spawn_tracked<F>(&self, fut: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(fut)
    }
}
