//! Socket.IO connection state recovery on the edge.
//!
//! With recovery on, every socket gets a private id (pid) in its CONNECT
//! reply, and every event the history numbered carries its number as the
//! last argument (the offset). When a connection closes for a reason that
//! allows recovery, the edge saves each of its sockets (id, pid, namespace,
//! user, rooms) in the cluster's session store, for the recovery window.
//!
//! A CONNECT whose auth holds `{pid, offset}` takes the saved session out of
//! the store (on whichever edge the client lands), checks that the same user
//! connects to the same namespace, and restores the socket with its id and
//! rooms behind a closed [`ReplayGate`](crate::sio::ReplayGate): live packets wait while
//! the history's emits to its rooms after `offset` are replayed in order;
//! then what the gate held goes out, less what the replay already had. The
//! client sees `recovered === true` because the reply carries its old pid.
//! Anything else (unknown or expired pid, lost history, store down) gives a
//! fresh socket, and the client sees `recovered === false`.

use std::sync::Arc;

use roomcast_bus::envelope::{Command, Packet};
use roomcast_bus::recovery::{RecoveryError, SavedSession};
use roomcast_bus::Headers;
use roomcast_wire::engineio::Frame;
use roomcast_wire::socketio;
use serde_json::Value;

use crate::outbox::PushError;
use crate::session::{CloseReason, Session};
use crate::sio::{ReplayGate, Socket};
use crate::{Edge, Identity};

/// The history sequence a message carries, 0 when none.
pub(crate) fn sequence(headers: &Headers) -> u64 {
    roomcast_bus::recovery::sequence(headers)
}

/// The packet with `seq` appended as the event's offset; unchanged when it is
/// not an event without ack.
pub(crate) fn with_offset(packet: Packet, seq: u64) -> Packet {
    match socketio::append_offset(&packet.text, seq) {
        Some(text) => Packet {
            text,
            attachments: packet.attachments,
        },
        None => packet,
    }
}

/// How a CONNECT that asked to recover a session ended: recovered, or why a
/// fresh socket was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Recovered,
    UnknownSession,
    InvalidOffset,
    OtherIdentity,
    HistoryLost,
    Unavailable,
}

impl Outcome {
    /// Counts a CONNECT that asked to recover a session and ended so.
    pub(crate) fn count(self) {
        metrics::counter!(crate::metrics::RECOVERIES, "outcome" => self.label()).increment(1);
    }

    /// Every outcome, for metrics series that exist from the start.
    pub(crate) const ALL: [Outcome; 6] = [
        Outcome::Recovered,
        Outcome::UnknownSession,
        Outcome::InvalidOffset,
        Outcome::OtherIdentity,
        Outcome::HistoryLost,
        Outcome::Unavailable,
    ];

    /// The metrics label of this outcome.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Recovered => "recovered",
            Outcome::UnknownSession => "unknown_session",
            Outcome::InvalidOffset => "invalid_offset",
            Outcome::OtherIdentity => "other_identity",
            Outcome::HistoryLost => "history_lost",
            Outcome::Unavailable => "unavailable",
        }
    }
}

fn outcome(o: Outcome) {
    o.count();
    // The `recovery` span of the attempt, when traces are exported.
    tracing::Span::current().record("outcome", o.label());
}

impl Edge {
    /// A new socket's pid, when recovery is on.
    pub(crate) fn new_pid(&self) -> Option<String> {
        self.recovery().map(|_| roomcast_bus::names::new_id())
    }

    /// Restores the socket a CONNECT asks to recover, replays what it missed
    /// and answers the CONNECT. `None` when it cannot be recovered: the caller
    /// then connects a fresh socket.
    pub(crate) async fn recover(
        &self,
        session: &Arc<Session>,
        nsp: &str,
        identity: &Identity,
        auth: Option<&Value>,
    ) -> Option<Result<(), CloseReason>> {
        use tracing::Instrument;
        if self.recovery().is_none() || auth.and_then(|a| a.get("pid")).is_none() {
            return None;
        }
        let span = if roomcast_bus::trace::enabled() {
            tracing::info_span!(
                "recovery",
                otel.name = "recovery",
                outcome = tracing::field::Empty
            )
        } else {
            tracing::Span::none()
        };
        self.recover_in_span(session, nsp, identity, auth)
            .instrument(span)
            .await
    }

    async fn recover_in_span(
        &self,
        session: &Arc<Session>,
        nsp: &str,
        identity: &Identity,
        auth: Option<&Value>,
    ) -> Option<Result<(), CloseReason>> {
        let recovery = self.recovery()?;
        let auth = auth?;
        let pid = auth.get("pid")?.as_str()?;
        let Some(offset) = auth
            .get("offset")
            .and_then(Value::as_str)
            .and_then(|o| o.parse::<u64>().ok())
        else {
            outcome(Outcome::InvalidOffset);
            return None;
        };
        let saved = match recovery.sessions.take(pid).await {
            Ok(Some(saved)) => saved,
            Ok(None) => {
                outcome(Outcome::UnknownSession);
                return None;
            }
            Err(e) => {
                tracing::warn!(sid = %session.sid, error = %e, "session store unavailable: not recovered");
                outcome(Outcome::Unavailable);
                return None;
            }
        };
        if saved.ns != nsp
            || saved.user != identity.user_id
            || self.read_index().socket(&saved.sid).is_some()
        {
            // Not theirs to take: it stays for its owner.
            if let Err(e) = recovery.sessions.save(&saved).await {
                tracing::warn!(socket = %saved.sid, error = %e, "session not put back");
            }
            outcome(Outcome::OtherIdentity);
            return None;
        }
        let socket = Arc::new(Socket {
            id: saved.sid,
            ns: nsp.to_owned(),
            user: saved.user,
            connected_at_ms: crate::now_ms(),
            data_json: saved.data_json,
            session: session.clone(),
            pid: Some(saved.pid),
            gate: ReplayGate::closed(),
        });
        session.sio().sockets.insert(socket.clone());
        self.add_socket(&socket, &saved.rooms).await;
        let rooms: crate::small_set::Names = saved.rooms.into_iter().collect();
        let recoverable: Vec<String> = rooms
            .iter()
            .filter(|r| recovery.config.recoverable(r))
            .cloned()
            .collect();
        let replay = match recovery.history.since(nsp, &recoverable, offset).await {
            Ok(replay) => replay,
            Err(e) => {
                let label = match e {
                    RecoveryError::Lost(_) => Outcome::HistoryLost,
                    RecoveryError::Unavailable(_) => Outcome::Unavailable,
                };
                tracing::info!(sid = %session.sid, socket = %socket.id, error = %e, "not recovered");
                outcome(label);
                session.sio().sockets.remove(nsp);
                let _ = socket.open_gate(u64::MAX);
                self.remove_socket(&socket).await;
                return None;
            }
        };
        if session.is_closed() {
            self.remove_socket(&socket).await;
            return Some(Ok(()));
        }
        outcome(Outcome::Recovered);
        if let (true, Some(exp)) = (
            self.config().disconnect_on_token_expiry,
            identity.expires_at,
        ) {
            self.expire_at(&socket, exp);
        }
        tracing::debug!(sid = %session.sid, socket = %socket.id, replayed = replay.messages.len(), "socket recovered");
        let joined = self.read_index().rooms_of(&socket.id);
        self.announce_connect(&socket, joined, Some(auth), true)
            .await;
        let mut replayed = self
            .reached_before(recovery, nsp, &rooms, offset, &replay.messages)
            .await;
        // The emits it gets now or got before: a copy of one of them that
        // comes live, after the replayed ones, is not for it.
        let ids = replay
            .messages
            .iter()
            .filter_map(|m| roomcast_bus::envelope::message_id(&m.headers));
        for id in ids.chain(replayed.iter().copied()) {
            self.inner
                .delivered
                .first_time(id, &mut vec![socket.clone()]);
        }
        let reply = socketio::encode_connect_with_pid(nsp, &socket.id, socket.pid.as_deref());
        let mut pushed = session.outbox.push(&[Frame::Text(reply)]);
        for m in replay.messages {
            // An emit stored as several copies (one per room) is replayed
            // once, and not at all when the socket got it before it left.
            if let Some(id) = roomcast_bus::envelope::message_id(&m.headers) {
                if !replayed.insert(id) {
                    continue;
                }
            }
            let Ok(Command::Emit {
                target,
                packet,
                volatile: false,
            }) = Command::decode(&m.headers, m.payload)
            else {
                continue;
            };
            if target.ns != nsp
                || !crate::room_index::reaches_via_room(&target, &m.room, &socket.id, &rooms)
            {
                continue;
            }
            if pushed.is_ok() {
                pushed = socket.push_replayed(&with_offset(packet, m.seq));
            }
        }
        if pushed.is_ok() {
            pushed = socket.open_gate(replay.upto);
        } else {
            let _ = socket.open_gate(u64::MAX);
        }
        Some(match pushed {
            Err(PushError::Full) => Err(CloseReason::SlowConsumer),
            _ => Ok(()),
        })
    }

    /// The message ids of the emits stored as several copies that reached
    /// the socket at or before its `offset` although some of their copies
    /// come after it: their first copy is at or before the offset, and one
    /// of their copies up to the offset was for one of the socket's `rooms`.
    /// Those copies are read again; if they cannot be, the replay may repeat
    /// such an emit rather than lose anything.
    async fn reached_before(
        &self,
        recovery: &roomcast_bus::recovery::Recovery,
        nsp: &str,
        rooms: &crate::small_set::Names,
        offset: u64,
        replay: &[roomcast_bus::backend::Replayed],
    ) -> std::collections::HashSet<u128> {
        let mut reached = std::collections::HashSet::new();
        let Some(from) = replay
            .iter()
            .filter_map(|m| roomcast_bus::envelope::first_sequence(&m.headers))
            .filter(|first| *first <= offset)
            .min()
        else {
            return reached;
        };
        let rooms: Vec<String> = rooms.iter().cloned().collect();
        match recovery
            .history
            .since(nsp, &rooms, from.saturating_sub(1))
            .await
        {
            Ok(earlier) => reached.extend(
                earlier
                    .messages
                    .iter()
                    .filter(|m| m.seq <= offset)
                    .filter_map(|m| roomcast_bus::envelope::message_id(&m.headers)),
            ),
            Err(e) => tracing::info!(error = %e, "copies before the offset not read"),
        }
        reached
    }

    /// Keeps a socket whose connection closed for a reason that allows
    /// recovery, with the rooms it was in, for the recovery window.
    pub(crate) async fn save_for_recovery(&self, socket: &Socket, rooms: Vec<String>) {
        let (Some(recovery), Some(pid)) = (self.recovery(), &socket.pid) else {
            return;
        };
        let saved = SavedSession {
            sid: socket.id.clone(),
            pid: pid.clone(),
            ns: socket.ns.clone(),
            user: socket.user.clone(),
            rooms,
            data_json: socket.data_json.clone(),
            saved_at_ms: crate::now_ms(),
        };
        if let Err(e) = recovery.sessions.save(&saved).await {
            tracing::warn!(socket = %socket.id, error = %e, "session not saved for recovery");
        }
    }
}
