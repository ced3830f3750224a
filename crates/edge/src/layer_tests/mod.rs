//! In-process tests of the Engine.IO session layer and the Socket.IO layer
//! above it, over a fake transport: a [`Client`] hands the session packets as
//! a transport's reader would (decoded Engine.IO packets, an error closing the
//! session with its reason), and takes what the session queued as a
//! long-polling GET would; [`Recorder`] stands for a stream the fan-out writes
//! to directly. The edge is a whole one, on the in-memory bus.

mod engineio;
mod recovery;
mod socketio;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roomcast_bus::MemoryBus;
use roomcast_wire::engineio::{self as eio, Frame};

use crate::session::{CloseReason, Handshake, Session};
use crate::sink::TransportKind;
use crate::{Authenticator, Edge, EdgeConfig};

/// How long a test waits for something that should happen at once.
const WAIT: Duration = Duration::from_secs(10);

/// An edge on `bus` that lets anonymous clients in.
async fn edge_on(config: EdgeConfig, bus: Arc<MemoryBus>) -> Edge {
    edge_with_auth(
        config,
        bus,
        Authenticator::new(None, true).expect("anonymous auth"),
    )
    .await
}

async fn edge_with_auth(config: EdgeConfig, bus: Arc<MemoryBus>, auth: Authenticator) -> Edge {
    Edge::start(config, auth, bus, None, None)
        .await
        .expect("edge starts")
}

/// One client connection as its transport sees it.
struct Client {
    edge: Edge,
    session: Arc<Session>,
}

impl Client {
    fn open(edge: &Edge, transport: TransportKind) -> Self {
        let session = edge.open_session(transport, Handshake::default());
        Self {
            edge: edge.clone(),
            session,
        }
    }

    /// One text packet from the client, as a transport's reader hands it
    /// over: a refusal closes the session with its reason.
    async fn send(&self, text: &str) -> Result<(), CloseReason> {
        let packet = eio::decode_text(Bytes::copy_from_slice(text.as_bytes()))
            .map_err(|_| CloseReason::ProtocolError)?;
        self.hand(packet).await
    }

    async fn send_binary(&self, data: &[u8]) -> Result<(), CloseReason> {
        self.hand(eio::Packet::Binary(Bytes::copy_from_slice(data)))
            .await
    }

    async fn hand(&self, packet: eio::Packet) -> Result<(), CloseReason> {
        let handled = self.edge.on_engine_packet(&self.session, packet).await;
        if let Err(reason) = handled {
            self.edge.close_session(&self.session, reason);
        }
        handled
    }

    /// What the session has queued, waiting for at least one packet, as a
    /// long-polling GET takes it (or the WebSocket's writer, by `transport`).
    async fn recv_on(&self, transport: TransportKind) -> Vec<String> {
        let batch = tokio::time::timeout(WAIT, self.session.outbox.take(transport, usize::MAX))
            .await
            .expect("a packet is queued in time")
            .expect("the transport owns the queue");
        batch.frames.iter().map(show).collect()
    }

    async fn recv(&self) -> Vec<String> {
        self.recv_on(TransportKind::Polling).await
    }

    /// The next packet, alone.
    async fn recv_one(&self) -> String {
        let mut got = self.recv().await;
        assert_eq!(got.len(), 1, "one packet: {got:?}");
        got.remove(0)
    }

    /// Connects the namespace and returns the socket's id from the reply.
    async fn connect(&self, nsp: &str) -> String {
        let open = if nsp == "/" {
            "40".to_owned()
        } else {
            format!("40{nsp},")
        };
        self.send(&open).await.expect("connect accepted");
        let reply = self.recv_one().await;
        let prefix = if nsp == "/" {
            "40".to_owned()
        } else {
            format!("40{nsp},")
        };
        let json = reply
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("a CONNECT reply: {reply}"));
        let v: serde_json::Value = serde_json::from_str(json).expect("json");
        v["sid"].as_str().expect("sid").to_owned()
    }

    async fn closed(&self) -> CloseReason {
        tokio::time::timeout(WAIT, self.session.ended())
            .await
            .expect("the session closed in time");
        self.session.close_reason()
    }
}

/// A frame as text: a text frame as it is, a binary one as `b:` and its bytes.
fn show(f: &Frame) -> String {
    match f {
        Frame::Text(t) => String::from_utf8_lossy(t).into_owned(),
        Frame::Binary(b) => format!("b:{b:?}"),
    }
}
