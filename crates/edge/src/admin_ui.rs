//! The server side of the Socket.IO Admin UI (`@socket.io/admin-ui`), for the
//! whole cluster.
//!
//! Off unless configured. The UI connects as a Socket.IO client to the admin
//! namespace with `auth: { username, password }`, checked against a bcrypt
//! hash (or with a `sessionId` this edge handed out before). An admin socket
//! is in no room and is never announced to backends.
//!
//! Where the rows come from (see `docs/adr/0012-admin-ui.md`):
//! - `server_stats`: every edge with the admin UI on publishes its own row
//!   every 2 s on [`Subjects::admin_stats`]; every edge forwards the rows it
//!   hears to its admin sockets, so each edge is one row with its node id.
//! - sockets: every edge keeps a directory of the cluster's sockets, filled
//!   from the connection events edges announce anyway ([`Subjects::connections`])
//!   and the presence events' joins and leaves, plus one fetch from the edges
//!   when the edge starts. `all_sockets` is read from it: no request per admin.
//! - `emit`, `join`, `leave`, `_disconnect`: published as the commands a
//!   control plane publishes, so they reach the sockets on every edge.
//!
//! [`Subjects::admin_stats`]: roomcast_bus::subject::Subjects::admin_stats
//! [`Subjects::connections`]: roomcast_bus::subject::Subjects::connections

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use roomcast_bus::envelope::{Closing, Command, ConnectionEvent, EdgeReply, Packet, Target};
use roomcast_wire::engineio::Frame;
use roomcast_wire::socketio;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::sio::Socket;
use crate::Edge;

/// How often an edge publishes its `server_stats` row (as the Node server does).
const STATS_INTERVAL: Duration = Duration::from_secs(2);
/// How long the start-up fetch of the cluster's sockets waits for edges.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(2);
/// Most session ids an edge remembers (oldest forgotten first).
const MAX_SESSIONS: usize = 1024;

/// Where the Admin UI connects and who may.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminUiConfig {
    /// The admin namespace, e.g. `/admin`.
    pub namespace: String,
    pub username: String,
    /// A bcrypt hash (`$2a$`, `$2b$` or `$2y$`) of the password.
    pub password_hash: String,
}

impl std::fmt::Debug for AdminUiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminUiConfig")
            .field("namespace", &self.namespace)
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

impl AdminUiConfig {
    /// Checks the hash is a bcrypt hash, before any port is bound.
    pub fn validate(&self) -> Result<(), bcrypt::BcryptError> {
        self.password_hash.parse::<bcrypt::HashParts>().map(|_| ())
    }
}

/// An edge's admin UI state.
pub(crate) struct AdminUi {
    config: AdminUiConfig,
    started: Instant,
    /// Session ids handed to admins who logged in, oldest first.
    sessions: Mutex<Vec<String>>,
    /// The cluster's sockets by id, as the UI shows them.
    directory: Mutex<HashMap<String, Value>>,
    /// This edge's admin sockets.
    admins: Mutex<Vec<Arc<Socket>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Single inserts and removes: consistent across a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AdminUi {
    pub(crate) fn new(config: AdminUiConfig) -> Self {
        Self {
            config,
            started: Instant::now(),
            sessions: Mutex::new(Vec::new()),
            directory: Mutex::new(HashMap::new()),
            admins: Mutex::new(Vec::new()),
        }
    }
}

/// A socket as the UI's `SerializedSocket`.
fn serialize(ev: &ConnectionEvent) -> Value {
    let mut rooms = vec![ev.socket.clone()];
    rooms.extend(ev.rooms.iter().filter(|r| **r != ev.socket).cloned());
    let data: Value = serde_json::from_str(&ev.data_json).unwrap_or_else(|_| json!({}));
    let headers: serde_json::Map<String, Value> = ev
        .headers
        .iter()
        .filter(|(k, _)| !crate::lifecycle::PRIVATE_HEADERS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let query: serde_json::Map<String, Value> = ev
        .query
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let address = ev
        .remote_addr
        .rsplit_once(':')
        .map_or(ev.remote_addr.as_str(), |(host, _)| host)
        .to_owned();
    json!({
        "id": ev.socket,
        "clientId": ev.socket.chars().take(12).collect::<String>(),
        "transport": ev.transport,
        "nsp": ev.ns,
        "data": data,
        "handshake": {
            "address": address,
            "headers": headers,
            "query": query,
            "issued": ev.at_ms,
            "secure": false,
            "time": ev.at_ms.to_string(),
            "url": "",
            "xdomain": false,
        },
        "rooms": rooms,
        "node": ev.node,
        "user": ev.user,
    })
}

impl Edge {
    fn admin(&self) -> Option<&Arc<AdminUi>> {
        self.inner.admin_ui.as_ref()
    }

    /// Checks an admin CONNECT's `auth`; `Ok(Some(id))` hands out a new
    /// session id, `Ok(None)` accepts a known one.
    pub(crate) async fn admin_login(&self, auth: Option<&Value>) -> Result<Option<String>, ()> {
        let Some(admin) = self.admin() else {
            return Err(());
        };
        let field = |k: &str| auth.and_then(|a| a.get(k)).and_then(Value::as_str);
        if let Some(sid) = field("sessionId") {
            if lock(&admin.sessions).iter().any(|s| s == sid) {
                return Ok(None);
            }
        }
        let (Some(user), Some(password)) = (field("username"), field("password")) else {
            return Err(());
        };
        if user != admin.config.username {
            return Err(());
        }
        let password = password.to_owned();
        let hash = admin.config.password_hash.clone();
        // bcrypt is slow on purpose: off the runtime's workers.
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if !ok {
            return Err(());
        }
        let sid = roomcast_bus::names::new_id();
        let mut sessions = lock(&admin.sessions);
        if sessions.len() >= MAX_SESSIONS {
            sessions.remove(0);
        }
        sessions.push(sid.clone());
        Ok(Some(sid))
    }

    /// A logged-in admin socket: remembered, told the features and every
    /// socket of the cluster.
    pub(crate) fn admin_connected(&self, socket: Arc<Socket>) {
        let Some(admin) = self.admin() else { return };
        let features = json!({
            "supportedFeatures": ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"]
        });
        let all: Vec<Value> = lock(&admin.directory).values().cloned().collect();
        send(&socket, "config", &[features]);
        send(&socket, "all_sockets", &[Value::Array(all)]);
        lock(&admin.admins).push(socket);
    }

    /// Sends an event to every admin socket of this edge.
    fn to_admins(&self, event: &str, args: &[Value]) {
        let Some(admin) = self.admin() else { return };
        let mut admins = lock(&admin.admins);
        // Gone: its connection closed, or it left the namespace (maybe to
        // come back as another socket on the same connection).
        admins.retain(|s| {
            !s.session.is_closed()
                && s.session
                    .sio()
                    .sockets
                    .get(&s.ns)
                    .is_some_and(|live| live.id == s.id)
        });
        for s in admins.iter() {
            send(s, event, args);
        }
    }

    /// An event an admin socket sent: one of the UI's requests.
    pub(crate) async fn admin_event(&self, event: &str, args_json: &str) {
        let Ok(args) = serde_json::from_str::<Vec<Value>>(args_json) else {
            return;
        };
        let text = |i: usize| args.get(i).and_then(Value::as_str).map(str::to_owned);
        let Some(ns) = text(0) else { return };
        if !self.config().namespaces.contains(&ns) {
            return;
        }
        // A filter is a room, or a socket id (the room of that socket alone),
        // which an edge finds through the edges subject rather than a room's.
        let known_socket = |f: &str| {
            self.admin()
                .is_some_and(|a| lock(&a.directory).contains_key(f))
        };
        let target_of = |filter: Option<String>| {
            let filter = filter.filter(|f| !f.is_empty());
            match filter {
                Some(f) if known_socket(&f) => Target {
                    ns: ns.clone(),
                    sockets: vec![f],
                    ..Target::default()
                },
                f => Target {
                    ns: ns.clone(),
                    rooms: f.into_iter().collect(),
                    ..Target::default()
                },
            }
        };
        let subjects = self.subjects();
        let (subject_list, cmd) = match event {
            "emit" => {
                let Some(ev) = text(2) else { return };
                if socketio::check_event_name(&ev).is_err() {
                    return;
                }
                let target = target_of(text(1));
                let raws: Vec<Box<RawValue>> = args
                    .iter()
                    .skip(3)
                    .filter_map(|a| RawValue::from_string(a.to_string()).ok())
                    .collect();
                let refs: Vec<&RawValue> = raws.iter().map(|r| r.as_ref()).collect();
                let packet = Packet {
                    text: socketio::encode_event(&ns, &ev, &refs, None, 0),
                    attachments: Vec::new(),
                };
                (
                    subjects.emit_subjects(&target),
                    Command::Emit {
                        target,
                        packet,
                        volatile: false,
                    },
                )
            }
            "join" | "leave" => {
                let Some(room) = text(1) else { return };
                let target = target_of(text(2));
                let rooms = vec![room];
                let cmd = if event == "join" {
                    Command::Join { target, rooms }
                } else {
                    Command::Leave { target, rooms }
                };
                (vec![subjects.edges()], cmd)
            }
            "_disconnect" => {
                let close = args.get(1).and_then(Value::as_bool).unwrap_or(false);
                let target = target_of(text(2));
                let close = if close { Closing::Close } else { Closing::Keep };
                (
                    vec![subjects.edges()],
                    Command::Disconnect { target, close },
                )
            }
            _ => return,
        };
        tracing::info!(op = cmd.op(), ns = %ns, "admin ui request");
        let (headers, payload) = cmd.encode();
        for subject in subject_list {
            if let Err(e) = self
                .bus()
                .publish(&subject, headers.clone(), payload.clone(), None)
                .await
            {
                tracing::warn!(error = %e, "admin ui request not published");
            }
        }
    }

    /// Starts the admin UI's tasks: the stats row, the directory's feeds.
    pub(crate) async fn start_admin_ui(&self) -> Result<(), roomcast_bus::BusError> {
        let Some(admin) = self.admin().cloned() else {
            return Ok(());
        };
        let subjects = self.subjects().clone();
        let bus = self.bus().clone();
        let stats = bus.subscribe(&subjects.admin_stats(), None).await?;
        let conns = bus.subscribe(&subjects.connections(None), None).await?;
        let presence = bus.subscribe(&subjects.presence_events(), None).await?;

        self.follow(stats, |edge, msg| {
            if let Ok(row) = serde_json::from_slice::<Value>(&msg.payload) {
                edge.to_admins("server_stats", &[row]);
            }
        });
        self.follow(conns, |edge, msg| {
            if let Ok(ev) = ConnectionEvent::decode(&msg.payload) {
                edge.on_admin_connection_event(&ev);
            }
        });
        self.follow(presence, |edge, msg| {
            if let Ok(ev) = serde_json::from_slice::<roomcast_presence::PresenceEvent>(&msg.payload)
            {
                edge.on_admin_presence_event(&ev);
            }
        });

        let edge = self.clone();
        let stop = self.shutdown_token().clone();
        self.spawn(async move {
            edge.admin_bootstrap().await;
            let mut tick = tokio::time::interval(STATS_INTERVAL);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let row = edge.admin_stats_row(&admin);
                let payload = bytes::Bytes::from(row.to_string());
                if let Err(e) = edge
                    .bus()
                    .publish(&subjects.admin_stats(), Default::default(), payload, None)
                    .await
                {
                    tracing::debug!(error = %e, "admin ui stats not published");
                }
            }
        });
        Ok(())
    }

    /// Hands each message of `sub` to `handle` until the edge shuts down or
    /// the bus is gone; what `handle` cannot decode it drops.
    fn follow(
        &self,
        mut sub: roomcast_bus::Subscription,
        handle: impl Fn(&Edge, roomcast_bus::Message) + Send + 'static,
    ) {
        let edge = self.clone();
        let stop = self.shutdown_token().clone();
        self.spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = sub.next() => m,
                };
                let Some(msg) = msg else { return };
                handle(&edge, msg);
            }
        });
    }

    fn admin_stats_row(&self, admin: &AdminUi) -> Value {
        let g = self.gauges();
        let node = &self.config().node_id;
        let namespaces: Vec<Value> = self
            .config()
            .namespaces
            .iter()
            .map(|ns| {
                let count = g
                    .sockets_by_namespace
                    .iter()
                    .find(|(n, _)| n == ns)
                    .map_or(0, |(_, c)| *c);
                json!({ "name": ns, "socketsCount": count })
            })
            .collect();
        json!({
            "serverId": node,
            "hostname": node,
            "pid": std::process::id(),
            "uptime": admin.started.elapsed().as_secs_f64(),
            "clientsCount": g.websocket_connections + g.polling_connections,
            "pollingClientsCount": g.polling_connections,
            "aggregatedEvents": [],
            "namespaces": namespaces,
        })
    }

    /// Fills the directory with the sockets the edges hold when this edge
    /// starts; the connection and presence events keep it current after.
    async fn admin_bootstrap(&self) {
        let Some(admin) = self.admin() else { return };
        for ns in self.config().namespaces.clone() {
            let cmd = Command::Fetch {
                target: Target {
                    ns,
                    ..Target::default()
                },
            };
            let (headers, payload) = cmd.encode();
            let replies = match self
                .bus()
                .request_many(
                    &self.subjects().edges(),
                    headers,
                    payload,
                    usize::MAX,
                    BOOTSTRAP_TIMEOUT,
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "admin ui socket fetch failed");
                    continue;
                }
            };
            for msg in replies {
                let Ok(EdgeReply::Sockets { sockets, .. }) =
                    EdgeReply::decode(&msg.headers, msg.payload)
                else {
                    continue;
                };
                let mut dir = lock(&admin.directory);
                for s in sockets {
                    let ev = ConnectionEvent {
                        kind: "connect".into(),
                        socket: s.id,
                        user: s.user,
                        ns: s.ns,
                        node: s.node,
                        at_ms: s.connected_at_ms,
                        rooms: s.rooms,
                        query: s.query,
                        headers: s.headers,
                        remote_addr: s.remote_addr,
                        transport: s.transport,
                        data_json: s.data_json,
                        ..ConnectionEvent::default()
                    };
                    dir.entry(ev.socket.clone())
                        .or_insert_with(|| serialize(&ev));
                }
            }
        }
    }

    fn on_admin_connection_event(&self, ev: &ConnectionEvent) {
        let Some(admin) = self.admin() else { return };
        if ev.ns == admin.config.namespace {
            return;
        }
        match ev.kind.as_str() {
            "connect" => {
                let row = serialize(ev);
                lock(&admin.directory).insert(ev.socket.clone(), row.clone());
                self.to_admins("socket_connected", &[row, json!(ev.at_ms)]);
            }
            "disconnect" => {
                lock(&admin.directory).remove(&ev.socket);
                self.to_admins(
                    "socket_disconnected",
                    &[
                        json!(ev.ns),
                        json!(ev.socket),
                        json!(ev.reason),
                        json!(ev.at_ms),
                    ],
                );
            }
            _ => {}
        }
    }

    fn on_admin_presence_event(&self, ev: &roomcast_presence::PresenceEvent) {
        use roomcast_presence::EventKind;
        let Some(admin) = self.admin() else { return };
        let joined = match ev.kind {
            EventKind::Join => true,
            EventKind::Leave => false,
            _ => return,
        };
        {
            let mut dir = lock(&admin.directory);
            let Some(rooms) = dir
                .get_mut(&ev.socket)
                .and_then(|s| s.get_mut("rooms"))
                .and_then(Value::as_array_mut)
            else {
                return;
            };
            let mut have: HashSet<String> = rooms
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect();
            for r in &ev.rooms {
                if joined {
                    if have.insert(r.clone()) {
                        rooms.push(json!(r));
                    }
                } else if have.remove(r) {
                    rooms.retain(|x| x.as_str() != Some(r));
                }
            }
        }
        let event = if joined { "room_joined" } else { "room_left" };
        for r in &ev.rooms {
            self.to_admins(
                event,
                &[json!(ev.ns), json!(r), json!(ev.socket), json!(ev.at_ms)],
            );
        }
    }
}

/// Writes one event to an admin socket; a full queue drops it (the UI
/// catches up at its next `all_sockets`).
fn send(socket: &Socket, event: &str, args: &[Value]) {
    let raws: Vec<Box<RawValue>> = args
        .iter()
        .filter_map(|a| RawValue::from_string(a.to_string()).ok())
        .collect();
    let refs: Vec<&RawValue> = raws.iter().map(|r| r.as_ref()).collect();
    let text = socketio::encode_event(&socket.ns, event, &refs, None, 0);
    let _ = socket.session.outbox.push(&[Frame::Text(text)]);
}

impl Edge {
    /// A CONNECT to the admin namespace: credentials (or a session id) or
    /// `connect_error` "invalid credentials", as the Node server answers.
    pub(crate) async fn admin_connect(
        &self,
        session: &Arc<crate::session::Session>,
        nsp: &str,
        auth: Option<&Value>,
    ) -> Result<(), crate::session::CloseReason> {
        use crate::outbox::PushError;
        use crate::session::CloseReason;
        let granted = self.admin_login(auth).await;
        let Ok(new_session) = granted else {
            metrics::counter!(crate::metrics::CONNECTS_REFUSED, "cause" => "admin_credentials")
                .increment(1);
            tracing::info!(sid = %session.sid, nsp, "admin ui login refused");
            let packet = socketio::encode_connect_error(nsp, "invalid credentials");
            return match session.outbox.push(&[Frame::Text(packet)]) {
                Err(PushError::Full) => Err(CloseReason::SlowConsumer),
                _ => Ok(()),
            };
        };
        if session.is_closed() {
            return Ok(());
        }
        let socket = Arc::new(Socket {
            id: roomcast_bus::names::new_socket_id(self.route_tag()),
            ns: nsp.to_owned(),
            user: String::new(),
            connected_at_ms: crate::now_ms(),
            data_json: String::new(),
            session: session.clone(),
            pid: None,
            gate: crate::sio::ReplayGate::default(),
            record_revision: Default::default(),
        });
        session.sio().sockets.insert(socket.clone());
        let packet = socketio::encode_connect(nsp, &socket.id);
        if let Err(PushError::Full) = session.outbox.push(&[Frame::Text(packet)]) {
            return Err(CloseReason::SlowConsumer);
        }
        tracing::info!(sid = %session.sid, socket = %socket.id, "admin ui connected");
        if let Some(id) = new_session {
            send(&socket, "session", &[json!(id)]);
        }
        self.admin_connected(socket);
        Ok(())
    }
}
