//! Commands on the bus: routing in headers, the encoded packet as the payload.
//!
//! A producer encodes the Socket.IO packet once (an Engine.IO text message and
//! its binary attachments, if any) and publishes it as the payload; targets and
//! options travel in headers. An edge decodes the headers, slices the payload
//! into the text and attachments without copying, and hands those same buffers
//! to every local recipient.
//!
//! Header values that come from users (namespaces, rooms, socket ids) are
//! escaped with [`crate::subject::token`], so they can hold anything and still
//! never break a header line.

use bytes::{BufMut, Bytes, BytesMut};

use crate::subject::{token, untoken};
use crate::Headers;

const OP: &str = "rc-op";
const NS: &str = "rc-ns";
const ROOM: &str = "rc-room";
const SOCKET: &str = "rc-sock";
const EXCEPT_ROOM: &str = "rc-xroom";
const EXCEPT_SOCKET: &str = "rc-xsock";
const ROOMS_ARG: &str = "rc-rooms";
const VOLATILE: &str = "rc-vol";
const PARTS: &str = "rc-parts";
const USER: &str = "rc-user";
const EVENT: &str = "rc-event";
const ACK: &str = "rc-ack";
const REPLY_TO: &str = "rc-reply";
const RECEIVED_AT: &str = "rc-at";
const NODE: &str = "rc-node";
const COUNT: &str = "rc-count";
const CLOSE: &str = "rc-close";
const TIMEOUT: &str = "rc-timeout";
const USERS: &str = "rc-users";
const SENT_AT: &str = "rc-sent";
const REFUSED: &str = "rc-refused";
const ROUTED: &str = "rc-routed";
const LISTED: &str = "rc-listed";
const TAGS: &str = "rc-tags";
const MESSAGE_ID: &str = "rc-mid";
const FIRST_SEQUENCE: &str = "rc-first";

/// How commands may reach an edge, as its heartbeats say: the control plane
/// routes commands for sockets and users by it (ADR 16). An edge that says
/// nothing of it (an older one) gets every command through the edges subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// The edge records its sockets in presence before it answers their
    /// connect: the presence store is a directory of its users' sockets.
    pub listed: bool,
    /// Route tags of other edges the edge listens on, for sockets it
    /// recovered from them (its own tag, derived from its node id, is not
    /// listed).
    pub tags: Vec<String>,
}

/// Which sockets a command applies to. The union of `rooms`, `sockets` and the
/// sockets of `users` (every socket of `ns` when all are empty), less the
/// exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub ns: String,
    pub rooms: Vec<String>,
    pub sockets: Vec<String>,
    pub users: Vec<String>,
    pub except_rooms: Vec<String>,
    pub except_sockets: Vec<String>,
}

impl Target {
    /// Every socket of the namespace (before exceptions).
    pub fn is_namespace(&self) -> bool {
        self.rooms.is_empty() && self.sockets.is_empty() && self.users.is_empty()
    }
}

/// An encoded Socket.IO packet: the Engine.IO text message (`4…`) and the
/// binary attachments that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub text: Bytes,
    pub attachments: Vec<Bytes>,
}

/// What the control plane asks of edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Write the packet to every target socket.
    Emit {
        target: Target,
        packet: Packet,
        volatile: bool,
    },
    /// Make every target socket join the rooms.
    Join { target: Target, rooms: Vec<String> },
    /// Make every target socket leave the rooms.
    Leave { target: Target, rooms: Vec<String> },
    /// Write an ack packet (the answer to a client's ack) to one socket.
    Reply {
        ns: String,
        socket: String,
        packet: Packet,
    },
    /// Write the packet, which asks for ack `ack_id`, to every target socket and
    /// forward each socket's ack to the request's reply subject for `timeout_ms`.
    /// The edge first answers with [`EdgeReply::Targets`], then one
    /// [`EdgeReply::Ack`] per socket that acks in time.
    EmitWithAck {
        target: Target,
        packet: Packet,
        ack_id: u64,
        timeout_ms: u64,
    },
    /// Disconnect every target socket, and maybe its whole connection.
    Disconnect { target: Target, close: Closing },
    /// Describe every target socket.
    Fetch { target: Target },
    /// Count the members of every room of a namespace.
    ListRooms { ns: String },
    /// Every edge answers with [`EdgeReply::Hello`]: how a control plane that
    /// starts learns the edges before their next heartbeat.
    Ping,
}

/// What a [`Command::Disconnect`] does to the connection of a socket it
/// disconnects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Closing {
    /// The connection stays open (the client may connect other namespaces).
    #[default]
    Keep,
    /// The connection is closed too (a backend's `close: true`).
    Close,
    /// The socket was evicted by the per-user connection limit: its
    /// connection is closed, with a reason saying so, once it holds no other
    /// socket.
    Evict,
}

/// A socket as its edge describes it in answer to [`Command::Fetch`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SocketInfo {
    pub id: String,
    pub user: String,
    pub ns: String,
    pub node: String,
    pub rooms: Vec<String>,
    pub connected_at_ms: i64,
    pub remote_addr: String,
    pub transport: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub data_json: String,
}

/// What an edge sends back: answers to requests, heartbeats, acks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeReply {
    /// The edge is alive (heartbeat, or the answer to [`Command::Ping`]);
    /// `routing` is `None` when the edge wants every command through the
    /// edges subject.
    Hello {
        node: String,
        routing: Option<Routing>,
    },
    /// The edge is going away; forget it now rather than at heartbeat expiry.
    Bye { node: String },
    /// A join, leave or disconnect was applied to `count` local sockets;
    /// `refused` more were selected but left as they were (a join that would
    /// put them over the edge's rooms-per-socket limit).
    Done {
        node: String,
        count: u64,
        refused: u64,
    },
    /// The answer to [`Command::Fetch`].
    Sockets {
        node: String,
        sockets: Vec<SocketInfo>,
    },
    /// The answer to [`Command::ListRooms`]: room name and local member count.
    Rooms {
        node: String,
        rooms: Vec<(String, u64)>,
    },
    /// The sockets an [`Command::EmitWithAck`] was written to.
    Targets { node: String, sockets: Vec<String> },
    /// One socket's ack: its arguments as a JSON array plus attachments.
    Ack {
        node: String,
        socket: String,
        args: Packet,
    },
}

/// Why a message is not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("invalid header {0}")]
    Invalid(&'static str),
    #[error("unknown operation {0:?}")]
    UnknownOp(String),
    #[error("invalid connection event: {0}")]
    InvalidConnectionEvent(String),
}

fn put_all<'a>(h: &mut Headers, name: &str, values: impl IntoIterator<Item = &'a String>) {
    for v in values {
        h.append(name, token(v));
    }
}

fn decode_routing(h: &Headers) -> Result<Option<Routing>, EnvelopeError> {
    if h.get(ROUTED).is_none() {
        return Ok(None);
    }
    let tags: Vec<String> = match h.get(TAGS) {
        None => Vec::new(),
        Some(list) => list.split(',').map(str::to_owned).collect(),
    };
    if !tags.iter().all(|t| crate::names::valid_tag(t)) {
        return Err(EnvelopeError::Invalid(TAGS));
    }
    Ok(Some(Routing {
        listed: h.get(LISTED).is_some(),
        tags,
    }))
}

fn get_one(h: &Headers, name: &'static str) -> Result<String, EnvelopeError> {
    let raw = h.get(name).ok_or(EnvelopeError::Missing(name))?;
    untoken(raw).ok_or(EnvelopeError::Invalid(name))
}

fn get_all(h: &Headers, name: &'static str) -> Result<Vec<String>, EnvelopeError> {
    h.get_all(name)
        .map(|v| untoken(v).ok_or(EnvelopeError::Invalid(name)))
        .collect()
}

fn put_target(h: &mut Headers, t: &Target) {
    h.append(NS, token(&t.ns));
    put_all(h, ROOM, &t.rooms);
    put_all(h, SOCKET, &t.sockets);
    put_all(h, USERS, &t.users);
    put_all(h, EXCEPT_ROOM, &t.except_rooms);
    put_all(h, EXCEPT_SOCKET, &t.except_sockets);
}

/// The headers of an encoded command with its target replaced: the copies
/// of one emit share its payload and every other header.
pub fn with_target(h: &Headers, target: &Target) -> Headers {
    const TARGET: [&str; 6] = [NS, ROOM, SOCKET, USERS, EXCEPT_ROOM, EXCEPT_SOCKET];
    let mut out = Headers::new();
    for (name, value) in h.iter().filter(|(name, _)| !TARGET.contains(name)) {
        out.append(name, value);
    }
    put_target(&mut out, target);
    out
}

fn get_target(h: &Headers) -> Result<Target, EnvelopeError> {
    Ok(Target {
        ns: get_one(h, NS)?,
        rooms: get_all(h, ROOM)?,
        sockets: get_all(h, SOCKET)?,
        users: get_all(h, USERS)?,
        except_rooms: get_all(h, EXCEPT_ROOM)?,
        except_sockets: get_all(h, EXCEPT_SOCKET)?,
    })
}

/// Joins a packet into one payload; the part lengths go in a header when there
/// are attachments.
fn put_packet(h: &mut Headers, p: &Packet) -> Bytes {
    if p.attachments.is_empty() {
        return p.text.clone();
    }
    let parts: Vec<String> = std::iter::once(&p.text)
        .chain(&p.attachments)
        .map(|b| b.len().to_string())
        .collect();
    h.append(PARTS, parts.join(","));
    let total = p.text.len() + p.attachments.iter().map(Bytes::len).sum::<usize>();
    let mut buf = BytesMut::with_capacity(total);
    buf.put_slice(&p.text);
    for a in &p.attachments {
        buf.put_slice(a);
    }
    buf.freeze()
}

/// Splits a payload back into a packet, sharing the payload's memory.
fn get_packet(h: &Headers, payload: Bytes) -> Result<Packet, EnvelopeError> {
    let Some(parts) = h.get(PARTS) else {
        return Ok(Packet {
            text: payload,
            attachments: Vec::new(),
        });
    };
    let mut lens = Vec::new();
    for p in parts.split(',') {
        lens.push(
            p.parse::<usize>()
                .map_err(|_| EnvelopeError::Invalid(PARTS))?,
        );
    }
    if lens.iter().try_fold(0usize, |a, &l| a.checked_add(l)) != Some(payload.len()) {
        return Err(EnvelopeError::Invalid(PARTS));
    }
    let mut start = 0;
    let mut slices = lens.into_iter().map(|len| {
        let s = payload.slice(start..start + len);
        start += len;
        s
    });
    let text = slices.next().ok_or(EnvelopeError::Invalid(PARTS))?;
    Ok(Packet {
        text,
        attachments: slices.collect(),
    })
}

/// When the producer published a command, in Unix microseconds (emits carry
/// it, for the fan-out latency metric).
pub fn sent_at_us(h: &Headers) -> Option<i64> {
    h.get(SENT_AT)?.parse().ok()
}

/// The id an emit published as several copies carries in each copy (one
/// per room, per user, per route tag): an edge that receives several copies
/// delivers once per socket (ADR 17). A fresh one, random.
pub fn new_message_id() -> u128 {
    rand::random()
}

/// Marks one copy of an emit with its message id.
pub fn set_message_id(h: &mut Headers, id: u128) {
    h.append(MESSAGE_ID, format!("{id:032x}"));
}

/// The message id of a copy of an emit; `None` when it is the only copy
/// (or the id does not parse: it is then treated as one).
pub fn message_id(h: &Headers) -> Option<u128> {
    let value = h.get(MESSAGE_ID)?;
    (value.len() == 32)
        .then(|| u128::from_str_radix(value, 16).ok())
        .flatten()
}

/// Marks a copy of an emit stored in the recovery history with the sequence
/// of the emit's first stored copy.
pub fn set_first_sequence(h: &mut Headers, seq: u64) {
    h.append(FIRST_SEQUENCE, seq.to_string());
}

/// The sequence of the first stored copy of the emit this copy is part of,
/// when it is not that first copy.
pub fn first_sequence(h: &Headers) -> Option<u64> {
    h.get(FIRST_SEQUENCE)?.parse().ok()
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    now_us() / 1000
}

/// Unix time in microseconds.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl Command {
    /// The operation's name (a bounded metrics label).
    pub fn op(&self) -> &'static str {
        match self {
            Command::Emit { .. } => "emit",
            Command::Join { .. } => "join",
            Command::Leave { .. } => "leave",
            Command::Reply { .. } => "reply",
            Command::EmitWithAck { .. } => "emit_with_ack",
            Command::Disconnect { .. } => "disconnect",
            Command::Fetch { .. } => "fetch",
            Command::ListRooms { .. } => "list_rooms",
            Command::Ping => "ping",
        }
    }

    /// The headers and payload that carry this command.
    pub fn encode(&self) -> (Headers, Bytes) {
        let mut h = Headers::new();
        let payload = match self {
            Command::Emit {
                target,
                packet,
                volatile,
            } => {
                h.append(OP, "emit");
                h.append(SENT_AT, now_us().to_string());
                put_target(&mut h, target);
                if *volatile {
                    h.append(VOLATILE, "1");
                }
                put_packet(&mut h, packet)
            }
            Command::Join { target, rooms } | Command::Leave { target, rooms } => {
                h.append(
                    OP,
                    if matches!(self, Command::Join { .. }) {
                        "join"
                    } else {
                        "leave"
                    },
                );
                put_target(&mut h, target);
                put_all(&mut h, ROOMS_ARG, rooms);
                Bytes::new()
            }
            Command::Reply { ns, socket, packet } => {
                h.append(OP, "reply");
                h.append(NS, token(ns));
                h.append(SOCKET, token(socket));
                put_packet(&mut h, packet)
            }
            Command::EmitWithAck {
                target,
                packet,
                ack_id,
                timeout_ms,
            } => {
                h.append(OP, "emit-ack");
                put_target(&mut h, target);
                h.append(ACK, ack_id.to_string());
                h.append(TIMEOUT, timeout_ms.to_string());
                put_packet(&mut h, packet)
            }
            Command::Disconnect { target, close } => {
                h.append(OP, "disconnect");
                put_target(&mut h, target);
                match close {
                    Closing::Keep => {}
                    Closing::Close => h.append(CLOSE, "1"),
                    Closing::Evict => h.append(CLOSE, "evict"),
                }
                Bytes::new()
            }
            Command::Fetch { target } => {
                h.append(OP, "fetch");
                put_target(&mut h, target);
                Bytes::new()
            }
            Command::ListRooms { ns } => {
                h.append(OP, "rooms");
                h.append(NS, token(ns));
                Bytes::new()
            }
            Command::Ping => {
                h.append(OP, "ping");
                Bytes::new()
            }
        };
        (h, payload)
    }

    /// Reads a command from a message's headers and payload.
    pub fn decode(h: &Headers, payload: Bytes) -> Result<Command, EnvelopeError> {
        let op = h.get(OP).ok_or(EnvelopeError::Missing(OP))?;
        match op {
            "emit" => Ok(Command::Emit {
                target: get_target(h)?,
                volatile: h.get(VOLATILE) == Some("1"),
                packet: get_packet(h, payload)?,
            }),
            "join" => Ok(Command::Join {
                target: get_target(h)?,
                rooms: get_all(h, ROOMS_ARG)?,
            }),
            "leave" => Ok(Command::Leave {
                target: get_target(h)?,
                rooms: get_all(h, ROOMS_ARG)?,
            }),
            "reply" => Ok(Command::Reply {
                ns: get_one(h, NS)?,
                socket: get_one(h, SOCKET)?,
                packet: get_packet(h, payload)?,
            }),
            "emit-ack" => Ok(Command::EmitWithAck {
                target: get_target(h)?,
                ack_id: get_number(h, ACK)?,
                timeout_ms: get_number(h, TIMEOUT)?,
                packet: get_packet(h, payload)?,
            }),
            "disconnect" => Ok(Command::Disconnect {
                target: get_target(h)?,
                close: match h.get(CLOSE) {
                    Some("1") => Closing::Close,
                    Some("evict") => Closing::Evict,
                    _ => Closing::Keep,
                },
            }),
            "fetch" => Ok(Command::Fetch {
                target: get_target(h)?,
            }),
            "rooms" => Ok(Command::ListRooms {
                ns: get_one(h, NS)?,
            }),
            "ping" => Ok(Command::Ping),
            other => Err(EnvelopeError::UnknownOp(other.to_owned())),
        }
    }
}

fn get_number(h: &Headers, name: &'static str) -> Result<u64, EnvelopeError> {
    h.get(name)
        .ok_or(EnvelopeError::Missing(name))?
        .parse()
        .map_err(|_| EnvelopeError::Invalid(name))
}

impl EdgeReply {
    pub fn node(&self) -> &str {
        match self {
            EdgeReply::Hello { node, .. }
            | EdgeReply::Bye { node }
            | EdgeReply::Done { node, .. }
            | EdgeReply::Sockets { node, .. }
            | EdgeReply::Rooms { node, .. }
            | EdgeReply::Targets { node, .. }
            | EdgeReply::Ack { node, .. } => node,
        }
    }

    pub fn encode(&self) -> (Headers, Bytes) {
        let mut h = Headers::new();
        let (op, payload) = match self {
            EdgeReply::Hello { routing, .. } => {
                if let Some(routing) = routing {
                    h.append(ROUTED, "1");
                    if routing.listed {
                        h.append(LISTED, "1");
                    }
                    if !routing.tags.is_empty() {
                        h.append(TAGS, routing.tags.join(","));
                    }
                }
                ("hello", Bytes::new())
            }
            EdgeReply::Bye { .. } => ("bye", Bytes::new()),
            EdgeReply::Done { count, refused, .. } => {
                h.append(COUNT, count.to_string());
                if *refused > 0 {
                    h.append(REFUSED, refused.to_string());
                }
                ("done", Bytes::new())
            }
            EdgeReply::Sockets { sockets, .. } => ("sockets", json_payload(sockets)),
            EdgeReply::Rooms { rooms, .. } => ("room-counts", json_payload(rooms)),
            EdgeReply::Targets { sockets, .. } => ("targets", json_payload(sockets)),
            EdgeReply::Ack { socket, args, .. } => {
                h.append(SOCKET, token(socket));
                ("ack", put_packet(&mut h, args))
            }
        };
        h.append(OP, op);
        h.append(NODE, token(self.node()));
        (h, payload)
    }

    pub fn decode(h: &Headers, payload: Bytes) -> Result<EdgeReply, EnvelopeError> {
        let op = h.get(OP).ok_or(EnvelopeError::Missing(OP))?;
        let node = get_one(h, NODE)?;
        match op {
            "hello" => Ok(EdgeReply::Hello {
                node,
                routing: decode_routing(h)?,
            }),
            "bye" => Ok(EdgeReply::Bye { node }),
            "done" => Ok(EdgeReply::Done {
                node,
                count: get_number(h, COUNT)?,
                refused: match h.get(REFUSED) {
                    None => 0,
                    Some(_) => get_number(h, REFUSED)?,
                },
            }),
            "sockets" => Ok(EdgeReply::Sockets {
                node,
                sockets: from_json(&payload)?,
            }),
            "room-counts" => Ok(EdgeReply::Rooms {
                node,
                rooms: from_json(&payload)?,
            }),
            "targets" => Ok(EdgeReply::Targets {
                node,
                sockets: from_json(&payload)?,
            }),
            "ack" => Ok(EdgeReply::Ack {
                node,
                socket: get_one(h, SOCKET)?,
                args: get_packet(h, payload)?,
            }),
            other => Err(EnvelopeError::UnknownOp(other.to_owned())),
        }
    }
}

fn json_payload<T: serde::Serialize>(value: &T) -> Bytes {
    // Serialising plain structs of strings and numbers cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn from_json<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, EnvelopeError> {
    serde_json::from_slice(payload).map_err(|_| EnvelopeError::Invalid("payload"))
}

/// A socket's connect or disconnect, as an edge announces it for backends
/// (JSON: not on the path of an emit, and read by control planes only).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ConnectionEvent {
    /// `connect` or `disconnect`.
    pub kind: String,
    pub socket: String,
    pub user: String,
    pub ns: String,
    pub node: String,
    pub at_ms: i64,
    pub rooms: Vec<String>,
    pub auth_json: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub remote_addr: String,
    pub transport: String,
    pub data_json: String,
    pub recovered: bool,
    pub reason: String,
}

impl ConnectionEvent {
    pub fn encode(&self) -> Bytes {
        // Plain strings, numbers and lists: serializing cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(payload: &[u8]) -> Result<ConnectionEvent, EnvelopeError> {
        serde_json::from_slice(payload)
            .map_err(|e| EnvelopeError::InvalidConnectionEvent(e.to_string()))
    }
}

/// An event a client sent, as an edge publishes it for backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEvent {
    pub ns: String,
    pub socket: String,
    pub user: String,
    pub event: String,
    /// The arguments as a JSON array (placeholders reference `attachments`).
    pub args_json: String,
    pub attachments: Vec<Bytes>,
    pub ack_id: Option<u64>,
    /// Where an ack reply goes (the edge's node subject).
    pub reply_to: String,
    pub received_at_ms: i64,
}

impl ClientEvent {
    pub fn encode(&self) -> (Headers, Bytes) {
        let mut h = Headers::new();
        h.append(NS, token(&self.ns));
        h.append(SOCKET, token(&self.socket));
        h.append(USER, token(&self.user));
        h.append(EVENT, token(&self.event));
        h.append(REPLY_TO, token(&self.reply_to));
        h.append(RECEIVED_AT, self.received_at_ms.to_string());
        if let Some(id) = self.ack_id {
            h.append(ACK, id.to_string());
        }
        let packet = Packet {
            text: Bytes::copy_from_slice(self.args_json.as_bytes()),
            attachments: self.attachments.clone(),
        };
        let payload = put_packet(&mut h, &packet);
        (h, payload)
    }

    pub fn decode(h: &Headers, payload: Bytes) -> Result<ClientEvent, EnvelopeError> {
        let packet = get_packet(h, payload)?;
        Ok(ClientEvent {
            ns: get_one(h, NS)?,
            socket: get_one(h, SOCKET)?,
            user: get_one(h, USER)?,
            event: get_one(h, EVENT)?,
            args_json: String::from_utf8(packet.text.to_vec())
                .map_err(|_| EnvelopeError::Invalid("payload"))?,
            attachments: packet.attachments,
            ack_id: h
                .get(ACK)
                .map(|v| v.parse().map_err(|_| EnvelopeError::Invalid(ACK)))
                .transpose()?,
            reply_to: get_one(h, REPLY_TO)?,
            received_at_ms: h
                .get(RECEIVED_AT)
                .ok_or(EnvelopeError::Missing(RECEIVED_AT))?
                .parse()
                .map_err(|_| EnvelopeError::Invalid(RECEIVED_AT))?,
        })
    }
}

/// An ack a backend sends as the NATS reply to a client event: the payload is
/// the ack's arguments as a JSON array (empty means none), followed by binary
/// attachments whose lengths the `rc-parts` header lists, as in every envelope.
pub fn decode_ack_reply(h: &Headers, payload: Bytes) -> Result<Packet, EnvelopeError> {
    let mut packet = get_packet(h, payload)?;
    if packet.text.iter().all(u8::is_ascii_whitespace) {
        packet.text = Bytes::from_static(b"[]");
    }
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            ns: "/chat".into(),
            rooms: vec!["a.b".into(), "ü *".into()],
            sockets: vec!["s1".into()],
            users: vec!["alice".into(), "bob smith".into()],
            except_rooms: vec!["x".into()],
            except_sockets: vec!["s2".into(), "".into()],
        }
    }

    #[test]
    fn commands_round_trip() {
        let packet = Packet {
            text: Bytes::from_static(b"451-[\"e\",{\"_placeholder\":true,\"num\":0}]"),
            attachments: vec![Bytes::from_static(&[0, 1, 2])],
        };
        let cmds = [
            Command::Emit {
                target: target(),
                packet: packet.clone(),
                volatile: true,
            },
            Command::Emit {
                target: Target {
                    ns: "/".into(),
                    ..Target::default()
                },
                packet: Packet {
                    text: Bytes::from_static(b"42[\"e\"]"),
                    attachments: vec![],
                },
                volatile: false,
            },
            Command::Join {
                target: target(),
                rooms: vec!["r1".into(), "r.2".into()],
            },
            Command::Leave {
                target: target(),
                rooms: vec!["r1".into()],
            },
            Command::Reply {
                ns: "/".into(),
                socket: "abc".into(),
                packet: packet.clone(),
            },
            Command::EmitWithAck {
                target: target(),
                packet: packet.clone(),
                ack_id: 1 << 40,
                timeout_ms: 2500,
            },
            Command::Disconnect {
                target: target(),
                close: Closing::Close,
            },
            Command::Disconnect {
                target: target(),
                close: Closing::Keep,
            },
            Command::Disconnect {
                target: target(),
                close: Closing::Evict,
            },
            Command::Fetch { target: target() },
            Command::ListRooms { ns: "/a b".into() },
            Command::Ping,
        ];
        for cmd in cmds {
            let (h, payload) = cmd.encode();
            for (_, v) in h.iter() {
                assert!(
                    !v.contains(['\r', '\n']),
                    "header value {v:?} breaks a line"
                );
            }
            assert_eq!(Command::decode(&h, payload), Ok(cmd));
        }
    }

    #[test]
    fn a_hello_listing_an_invalid_route_tag_is_refused() {
        let mut h = Headers::new();
        h.append(OP, "hello");
        h.append(NODE, "n");
        h.append(ROUTED, "1");
        h.append(TAGS, "ok123,a.b>c");
        assert_eq!(
            EdgeReply::decode(&h, Bytes::new()),
            Err(EnvelopeError::Invalid(TAGS))
        );
    }

    #[test]
    fn edge_replies_round_trip() {
        let node = "node.1 ü".to_owned();
        let replies = [
            EdgeReply::Hello {
                node: node.clone(),
                routing: None,
            },
            EdgeReply::Hello {
                node: node.clone(),
                routing: Some(Routing::default()),
            },
            EdgeReply::Hello {
                node: node.clone(),
                routing: Some(Routing {
                    listed: true,
                    tags: vec!["ab-_9".into(), "ZZZZZ".into()],
                }),
            },
            EdgeReply::Bye { node: node.clone() },
            EdgeReply::Done {
                node: node.clone(),
                count: 3,
                refused: 0,
            },
            EdgeReply::Done {
                node: node.clone(),
                count: 1,
                refused: 2,
            },
            EdgeReply::Sockets {
                node: node.clone(),
                sockets: vec![SocketInfo {
                    id: "s1".into(),
                    user: "u".into(),
                    ns: "/".into(),
                    node: node.clone(),
                    rooms: vec!["s1".into(), "r".into()],
                    connected_at_ms: 5,
                    remote_addr: "127.0.0.1:1".into(),
                    transport: "websocket".into(),
                    query: vec![("k".into(), "v".into())],
                    headers: vec![("user-agent".into(), "t".into())],
                    data_json: "{\"plan\":\"pro\"}".into(),
                }],
            },
            EdgeReply::Rooms {
                node: node.clone(),
                rooms: vec![("r".into(), 2), ("ü".into(), 1)],
            },
            EdgeReply::Targets {
                node: node.clone(),
                sockets: vec!["s1".into(), "s2".into()],
            },
            EdgeReply::Ack {
                node,
                socket: "s1".into(),
                args: Packet {
                    text: Bytes::from_static(b"[1,{\"_placeholder\":true,\"num\":0}]"),
                    attachments: vec![Bytes::from_static(b"\x01")],
                },
            },
        ];
        for r in replies {
            let (h, payload) = r.encode();
            assert_eq!(EdgeReply::decode(&h, payload), Ok(r));
        }
        let mut h = Headers::new();
        h.append(OP, "sockets");
        h.append(NODE, "n");
        assert_eq!(
            EdgeReply::decode(&h, Bytes::from_static(b"{not json")),
            Err(EnvelopeError::Invalid("payload"))
        );
    }

    #[test]
    fn client_event_round_trips() {
        let ev = ClientEvent {
            ns: "/".into(),
            socket: "sid".into(),
            user: "".into(),
            event: "chat message".into(),
            args_json: "[{\"_placeholder\":true,\"num\":0}]".into(),
            attachments: vec![Bytes::from_static(b"\x00\xff")],
            ack_id: Some(7),
            reply_to: "rc.c.node.n1".into(),
            received_at_ms: 1_700_000_000_000,
        };
        let (h, payload) = ev.encode();
        assert_eq!(ClientEvent::decode(&h, payload), Ok(ev));
    }

    #[test]
    fn a_copy_with_another_target_keeps_the_rest() {
        let cmd = Command::Emit {
            target: target(),
            packet: Packet {
                text: Bytes::from_static(b"42[\"e\"]"),
                attachments: vec![Bytes::from_static(b"bin")],
            },
            volatile: true,
        };
        let (h, payload) = cmd.encode();
        let other = Target {
            ns: "/chat".into(),
            rooms: vec!["only".into()],
            ..Target::default()
        };
        let copy = Command::decode(&with_target(&h, &other), payload).expect("a copy decodes");
        let Command::Emit {
            target: t,
            packet,
            volatile,
        } = copy
        else {
            panic!("not an emit: {copy:?}");
        };
        assert_eq!(t, other);
        assert!(volatile);
        assert_eq!(packet.attachments, vec![Bytes::from_static(b"bin")]);
    }

    #[test]
    fn message_ids_and_first_sequences_round_trip() {
        let mut h = Headers::new();
        assert_eq!(message_id(&h), None);
        assert_eq!(first_sequence(&h), None);
        let id = new_message_id();
        set_message_id(&mut h, id);
        set_first_sequence(&mut h, 42);
        assert_eq!(message_id(&h), Some(id));
        assert_eq!(first_sequence(&h), Some(42));
        assert_ne!(new_message_id(), new_message_id());
        for bad in ["", "xyz", "00", &"f".repeat(33), &"g".repeat(32)] {
            let mut h = Headers::new();
            h.append(MESSAGE_ID, bad);
            assert_eq!(message_id(&h), None, "{bad:?}");
        }
    }

    #[test]
    fn rejects_bad_envelopes() {
        let mut h = Headers::new();
        assert_eq!(
            Command::decode(&h, Bytes::new()),
            Err(EnvelopeError::Missing(OP))
        );
        h.append(OP, "explode");
        assert!(matches!(
            Command::decode(&h, Bytes::new()),
            Err(EnvelopeError::UnknownOp(_))
        ));
        let mut h = Headers::new();
        h.append(OP, "emit");
        h.append(NS, "~2F");
        h.append(PARTS, "3,9");
        assert_eq!(
            Command::decode(&h, Bytes::from_static(b"42[")),
            Err(EnvelopeError::Invalid(PARTS))
        );
        let mut h = Headers::new();
        h.append(OP, "emit");
        h.append(NS, "bad.token");
        assert_eq!(
            Command::decode(&h, Bytes::new()),
            Err(EnvelopeError::Invalid(NS))
        );
    }
}
