//! The sockets' lifecycle as backends see it (`WatchConnections`): the edge
//! announces each socket's connect, with its handshake less its secrets, and
//! its disconnect, with the reason, on the bus subject of its namespace.
//! Control planes stream them to backends; nobody listening costs one small
//! publish per connect and per disconnect.

use roomcast_bus::envelope::ConnectionEvent;
use serde_json::Value;

use crate::sio::Socket;
use crate::Edge;

/// Handshake headers never shown to backends or the Admin UI: they carry
/// credentials.
pub(crate) const PRIVATE_HEADERS: [&str; 2] = ["authorization", "cookie"];

impl Edge {
    /// Announces a socket that joined its namespace, in `rooms`; `auth` is the
    /// CONNECT packet's object, whose `token` is left out.
    pub(crate) async fn announce_connect(
        &self,
        socket: &Socket,
        rooms: Vec<String>,
        auth: Option<&Value>,
        recovered: bool,
    ) {
        let auth_json = match auth {
            Some(Value::Object(map)) => {
                let mut map = map.clone();
                map.remove("token");
                Value::Object(map).to_string()
            }
            _ => "{}".to_owned(),
        };
        let handshake = &socket.session.handshake;
        let event = ConnectionEvent {
            kind: "connect".into(),
            rooms: rooms.into_iter().filter(|r| *r != socket.id).collect(),
            auth_json,
            query: handshake.query.to_vec(&[]),
            headers: handshake.headers.to_vec(&PRIVATE_HEADERS),
            remote_addr: handshake.remote.map(|a| a.to_string()).unwrap_or_default(),
            transport: socket.session.transport_name().into(),
            data_json: socket.data_json.clone(),
            recovered,
            ..self.connection_event(socket)
        };
        self.announce(&socket.ns, event).await;
    }

    /// Announces a socket that left its namespace, and why.
    pub(crate) async fn announce_disconnect(&self, socket: &Socket, reason: &str) {
        if self.config().is_admin_namespace(&socket.ns) {
            return; // admin sockets are never announced
        }
        let event = ConnectionEvent {
            kind: "disconnect".into(),
            reason: reason.to_owned(),
            ..self.connection_event(socket)
        };
        self.announce(&socket.ns, event).await;
    }

    fn connection_event(&self, socket: &Socket) -> ConnectionEvent {
        ConnectionEvent {
            socket: socket.id.clone(),
            user: socket.user.clone(),
            ns: socket.ns.clone(),
            node: self.config().node_id.clone(),
            at_ms: crate::now_ms(),
            ..ConnectionEvent::default()
        }
    }

    async fn announce(&self, ns: &str, event: ConnectionEvent) {
        let subject = self.subjects().connections(Some(ns));
        let published = self
            .bus()
            .publish(&subject, roomcast_bus::Headers::new(), event.encode(), None)
            .await;
        if let Err(e) = published {
            tracing::debug!(socket = %event.socket, kind = %event.kind, error = %e, "connection event not published");
        }
    }
}
