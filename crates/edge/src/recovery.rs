//! Socket.IO connection state recovery on the edge.
//!
//! With recovery on, every socket gets a private id (pid) in its CONNECT
//! reply, and every event the history numbered carries its number as the
//! last argument (the offset). While the socket is connected its edge keeps
//! a record of it (id, pid, namespace, user, rooms, data, and the edge as
//! its owner) in the cluster's session store
//! ([`crate::session_records`]); when its connection closes for a reason
//! that allows recovery, the record loses its owner and stays for the
//! recovery window.
//!
//! A CONNECT whose auth holds `{pid, offset}` takes the record out of the
//! store (on whichever edge the client lands), checks that the same user
//! connects to the same namespace, and that the socket is not connected
//! anywhere: a record with an owner is taken only when that edge is gone or
//! no longer holds the socket (ADR 18). It restores the socket with its id
//! and rooms behind a closed [`ReplayGate`](crate::sio::ReplayGate): live packets wait while
//! the history's emits to its rooms after `offset` are replayed in order;
//! then what the gate held goes out, less what the replay already had. The
//! client sees `recovered === true` because the reply carries its old pid.
//! Anything else (unknown or expired pid, lost history, store down) gives a
//! fresh socket, and the client sees `recovered === false`.

use std::sync::Arc;

use std::time::Duration;

use roomcast_bus::envelope::{Command, EdgeReply, Packet, Target};
use roomcast_bus::recovery::{Recovery, RecoveryError, SavedSession};
use roomcast_bus::{Asked, Headers};
use roomcast_wire::engineio::Frame;
use roomcast_wire::socketio;
use serde_json::Value;

use crate::outbox::PushError;
use crate::session::{CloseReason, Session};
use crate::sio::{ReplayGate, Socket};
use crate::{Edge, Identity};

/// Longest a recovery waits for the edge that owns a record to say whether
/// it still holds the socket. A dead edge's absence is known at once (the
/// bus says nobody listens); this bounds the wait for a stuck one.
const OWNER_TIMEOUT: Duration = Duration::from_millis(1_000);

/// How many times a recovery reads a record again after losing a race for
/// it (its owner rewrote it meanwhile).
const CLAIM_ATTEMPTS: usize = 4;

/// What a recovery found under a pid.
enum Claim {
    /// Taken out of the store: the socket is this edge's to restore.
    Taken(SavedSession),
    Failed(Outcome),
}

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
    /// The socket is still connected on a living edge.
    StillConnected,
    HistoryLost,
    Unavailable,
}

impl Outcome {
    /// Counts a CONNECT that asked to recover a session and ended so.
    pub(crate) fn count(self) {
        metrics::counter!(crate::metrics::RECOVERIES, "outcome" => self.label()).increment(1);
    }

    /// Every outcome, for metrics series that exist from the start.
    pub(crate) const ALL: [Outcome; 7] = [
        Outcome::Recovered,
        Outcome::UnknownSession,
        Outcome::InvalidOffset,
        Outcome::OtherIdentity,
        Outcome::StillConnected,
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
            Outcome::StillConnected => "still_connected",
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
        let saved = match self.claim(recovery, pid, nsp, &identity.user_id).await {
            Claim::Taken(saved) => saved,
            Claim::Failed(o) => {
                outcome(o);
                return None;
            }
        };
        let socket = Arc::new(Socket {
            id: saved.sid,
            ns: nsp.to_owned(),
            user: saved.user,
            connected_at_ms: crate::now_ms(),
            data_json: saved.data_json,
            session: session.clone(),
            pid: Some(saved.pid),
            gate: ReplayGate::closed(),
            record_revision: std::sync::atomic::AtomicU64::new(0),
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

    /// Takes the record of `pid` out of the store if the client may have
    /// it: the same user in the same namespace, and the socket connected
    /// nowhere. A record that still names an owner is taken only once that
    /// edge is gone or says it no longer holds the socket.
    async fn claim(&self, recovery: &Recovery, pid: &str, nsp: &str, user: &str) -> Claim {
        for _ in 0..CLAIM_ATTEMPTS {
            let (saved, revision) = match recovery.sessions.get(pid).await {
                Ok(Some(found)) => found,
                Ok(None) => return Claim::Failed(Outcome::UnknownSession),
                Err(e) => {
                    tracing::warn!(error = %e, "session store unavailable: not recovered");
                    return Claim::Failed(Outcome::Unavailable);
                }
            };
            if saved.ns != nsp || saved.user != user {
                // Not theirs to take: it stays for its owner.
                return Claim::Failed(Outcome::OtherIdentity);
            }
            if self.read_index().contains(&saved.sid) {
                return Claim::Failed(Outcome::StillConnected);
            }
            if let Some(owner) = &saved.owner {
                if *owner != self.config().node_id && self.owner_holds(owner, &saved).await {
                    return Claim::Failed(Outcome::StillConnected);
                }
            }
            match recovery.sessions.remove_if(pid, revision).await {
                Ok(true) => return Claim::Taken(saved),
                // Rewritten meanwhile (its owner wrote it, or closed it):
                // read it again.
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "session store unavailable: not recovered");
                    return Claim::Failed(Outcome::Unavailable);
                }
            }
        }
        Claim::Failed(Outcome::UnknownSession)
    }

    /// Whether the edge `owner` may still hold the socket of `saved`
    /// connected. It is asked directly (on its node subject): when the bus
    /// says nobody listens there, it is gone. When it does not answer in
    /// time, it is taken for alive while it holds its presence lease (and
    /// always when presence is off: there is no lease to tell).
    async fn owner_holds(&self, owner: &str, saved: &SavedSession) -> bool {
        let ask = Command::Fetch {
            target: Target {
                ns: saved.ns.clone(),
                sockets: vec![saved.sid.clone()],
                ..Target::default()
            },
        };
        let (headers, payload) = ask.encode();
        let subject = self.subjects().node(owner);
        match self
            .bus()
            .ask(&subject, headers, payload, OWNER_TIMEOUT)
            .await
        {
            Ok(Asked::NoResponders) => false,
            Ok(Asked::Reply(msg)) => match EdgeReply::decode(&msg.headers, msg.payload) {
                Ok(EdgeReply::Sockets { sockets, .. }) => sockets.iter().any(|s| s.id == saved.sid),
                _ => true,
            },
            Ok(Asked::Silent) | Err(_) => match self.presence() {
                Some(presence) => match presence.holds_lease(owner).await {
                    Ok(holds) => holds,
                    Err(e) => {
                        tracing::info!(%owner, error = %e, "owner's lease not read: taken for alive");
                        true
                    }
                },
                None => true,
            },
        }
    }
}
