//! Socket.IO v5 packets: `<type>[<attachments>-][<nsp>,][<ackId>][JSON]`.
//!
//! Decoding validates what the protocol requires a server to reject (the
//! connection is then closed by the caller). Encoding writes a complete
//! Engine.IO message packet (`4` + Socket.IO packet) into one buffer, so the
//! result can be handed unchanged to every recipient and to every transport.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::Value;

/// Event names a client may not use: the server and client libraries give them
/// meaning of their own.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The longest namespace name the decoder accepts.
pub const MAX_NAMESPACE_LEN: usize = 256;

/// The type of a Socket.IO packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl PacketKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => PacketKind::Connect,
            b'1' => PacketKind::Disconnect,
            b'2' => PacketKind::Event,
            b'3' => PacketKind::Ack,
            b'4' => PacketKind::ConnectError,
            b'5' => PacketKind::BinaryEvent,
            b'6' => PacketKind::BinaryAck,
            _ => return None,
        })
    }

    fn as_byte(self) -> u8 {
        match self {
            PacketKind::Connect => b'0',
            PacketKind::Disconnect => b'1',
            PacketKind::Event => b'2',
            PacketKind::Ack => b'3',
            PacketKind::ConnectError => b'4',
            PacketKind::BinaryEvent => b'5',
            PacketKind::BinaryAck => b'6',
        }
    }

    fn is_binary(self) -> bool {
        matches!(self, PacketKind::BinaryEvent | PacketKind::BinaryAck)
    }
}

/// A decoded client packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub kind: PacketKind,
    /// The namespace, `/` when the packet names none.
    pub nsp: String,
    /// The acknowledgement id, for events that expect an ack and for acks.
    pub id: Option<u64>,
    /// The JSON payload, when there is one.
    pub data: Option<Value>,
    /// How many binary attachments follow (binary packets only).
    pub attachments: usize,
}

impl Packet {
    /// The event name and its arguments (as a JSON array) of an EVENT or
    /// BINARY_EVENT. The decoder guarantees the shape for those kinds.
    pub fn event(&self) -> Option<(String, String)> {
        if !matches!(self.kind, PacketKind::Event | PacketKind::BinaryEvent) {
            return None;
        }
        let Some(Value::Array(items)) = &self.data else {
            return None;
        };
        let (name, args) = items.split_first()?;
        let name = match name {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Some((name, Value::Array(args.to_vec()).to_string()))
    }

    /// The arguments of an ACK or BINARY_ACK, as a JSON array.
    pub fn ack_args(&self) -> Option<String> {
        match (&self.kind, &self.data) {
            (PacketKind::Ack | PacketKind::BinaryAck, Some(v @ Value::Array(_))) => {
                Some(v.to_string())
            }
            _ => None,
        }
    }
}

/// Why a client packet is invalid; the caller closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:#04x}")]
    UnknownType(u8),
    #[error("packet type {0:?} is not sent by clients")]
    ServerOnlyType(PacketKind),
    #[error("invalid attachment count")]
    InvalidAttachmentCount,
    #[error("{0} attachments exceed the limit of {1}")]
    TooManyAttachments(usize, usize),
    #[error("invalid namespace")]
    InvalidNamespace,
    #[error("invalid ack id")]
    InvalidAckId,
    #[error("invalid json payload")]
    InvalidJson,
    #[error("invalid payload for {0:?}")]
    InvalidPayload(PacketKind),
    #[error("reserved event name {0:?}")]
    ReservedEvent(String),
    #[error("placeholder references attachment {0} of {1}")]
    InvalidPlaceholder(u64, usize),
    #[error("text packet received while {0} attachments are pending")]
    AttachmentsPending(usize),
    #[error("binary frame received with no binary packet pending")]
    UnexpectedBinary,
    #[error("json payload nests deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
}

/// The deepest nesting of arrays and objects accepted in JSON, from clients
/// (packets) and backends (arguments) alike: the arguments' own array counts
/// as one level. serde_json refuses 128 levels by itself; one bound below
/// that, checked before parsing, makes both paths refuse the same input with
/// an error that says why.
pub const MAX_JSON_DEPTH: usize = 100;

/// Whether JSON text nests arrays and objects deeper than `max` levels.
/// Brackets inside strings do not count. It does not validate the JSON: the
/// parser that follows does.
pub fn nests_deeper_than(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Decodes the text of one Socket.IO packet (an Engine.IO message without its `4`).
///
/// `max_attachments` bounds how many binary frames a packet may announce.
pub fn decode(text: &str, max_attachments: usize) -> Result<Packet, DecodeError> {
    let bytes = text.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(DecodeError::Empty);
    };
    let kind = PacketKind::from_byte(first).ok_or(DecodeError::UnknownType(first))?;
    if kind == PacketKind::ConnectError {
        return Err(DecodeError::ServerOnlyType(kind));
    }
    let mut i = 1;

    let mut attachments = 0;
    if kind.is_binary() {
        let dash = bytes[i..]
            .iter()
            .position(|&b| b == b'-')
            .ok_or(DecodeError::InvalidAttachmentCount)?;
        let digits = &text[i..i + dash];
        if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecodeError::InvalidAttachmentCount);
        }
        attachments = digits
            .parse::<usize>()
            .map_err(|_| DecodeError::InvalidAttachmentCount)?;
        if attachments > max_attachments {
            return Err(DecodeError::TooManyAttachments(
                attachments,
                max_attachments,
            ));
        }
        i += dash + 1;
    }

    let mut nsp = String::from("/");
    if bytes.get(i) == Some(&b'/') {
        let end = bytes[i..]
            .iter()
            .position(|&b| b == b',')
            .map_or(bytes.len(), |p| i + p);
        let name = &text[i..end];
        if name.len() > MAX_NAMESPACE_LEN {
            return Err(DecodeError::InvalidNamespace);
        }
        nsp = name.to_owned();
        // Skip the comma; `40/admin` (no comma) is accepted too.
        i = (end + 1).min(bytes.len());
    }

    let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    let id = if digits > 0 {
        let id = text[i..i + digits]
            .parse::<u64>()
            .map_err(|_| DecodeError::InvalidAckId)?;
        i += digits;
        Some(id)
    } else {
        None
    };

    let data = if i < bytes.len() {
        if nests_deeper_than(&text[i..], MAX_JSON_DEPTH) {
            return Err(DecodeError::TooDeep);
        }
        Some(serde_json::from_str::<Value>(&text[i..]).map_err(|_| DecodeError::InvalidJson)?)
    } else {
        None
    };

    validate(kind, id, data.as_ref(), attachments)?;
    Ok(Packet {
        kind,
        nsp,
        id,
        data,
        attachments,
    })
}

fn validate(
    kind: PacketKind,
    id: Option<u64>,
    data: Option<&Value>,
    attachments: usize,
) -> Result<(), DecodeError> {
    let ok = match kind {
        PacketKind::Connect => matches!(data, None | Some(Value::Object(_))) && id.is_none(),
        PacketKind::Disconnect => data.is_none() && id.is_none(),
        PacketKind::Event | PacketKind::BinaryEvent => match data {
            Some(Value::Array(items)) => match items.first() {
                Some(Value::String(name)) => {
                    if RESERVED_EVENTS.contains(&name.as_str()) {
                        return Err(DecodeError::ReservedEvent(name.clone()));
                    }
                    true
                }
                Some(Value::Number(_)) => true,
                _ => false,
            },
            _ => false,
        },
        PacketKind::Ack | PacketKind::BinaryAck => {
            matches!(data, Some(Value::Array(_))) && id.is_some()
        }
        PacketKind::ConnectError => false,
    };
    if !ok {
        return Err(DecodeError::InvalidPayload(kind));
    }
    if let Some(data) = data {
        check_placeholders(data, attachments, false)?;
    }
    Ok(())
}

/// Checks the `{"_placeholder":true,"num":N}` objects in `value` against the
/// number of attachments. With `require_all`, each attachment must be referenced.
fn check_placeholders(
    value: &Value,
    attachments: usize,
    require_all: bool,
) -> Result<(), DecodeError> {
    let mut seen = vec![false; attachments];
    walk_placeholders(value, &mut |num| {
        let idx = usize::try_from(num)
            .ok()
            .filter(|&n| n < attachments)
            .ok_or(DecodeError::InvalidPlaceholder(num, attachments))?;
        seen[idx] = true;
        Ok(())
    })?;
    if require_all {
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(DecodeError::InvalidPlaceholder(missing as u64, attachments));
        }
    }
    Ok(())
}

fn walk_placeholders(
    value: &Value,
    f: &mut impl FnMut(u64) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    // An explicit stack: arguments come from clients and backends, and their
    // nesting depth must not decide whether we overflow our own stack.
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter()),
            Value::Object(map) => {
                if map.get("_placeholder") == Some(&Value::Bool(true)) {
                    let num = map
                        .get("num")
                        .and_then(Value::as_u64)
                        .ok_or(DecodeError::InvalidPlaceholder(u64::MAX, 0))?;
                    f(num)?;
                } else {
                    stack.extend(map.values());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A complete packet with its binary attachments.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub packet: Packet,
    pub attachments: Vec<Bytes>,
}

/// Collects the binary frames that follow a BINARY_EVENT or BINARY_ACK.
///
/// The packet waiting for its attachments is boxed: every connection holds an
/// assembler, and few ever have anything pending.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: Option<Box<Message>>,
}

impl Assembler {
    /// Feeds the text of an Engine.IO message. Returns the packet when it is
    /// complete, or `None` while its attachments are still to come.
    pub fn on_text(
        &mut self,
        text: &str,
        max_attachments: usize,
    ) -> Result<Option<Message>, DecodeError> {
        if let Some(pending) = &self.pending {
            return Err(DecodeError::AttachmentsPending(
                pending.packet.attachments - pending.attachments.len(),
            ));
        }
        let packet = decode(text, max_attachments)?;
        let message = Message {
            attachments: Vec::with_capacity(packet.attachments),
            packet,
        };
        if message.packet.attachments == 0 {
            return Ok(Some(message));
        }
        self.pending = Some(Box::new(message));
        Ok(None)
    }

    /// Feeds a binary Engine.IO message.
    pub fn on_binary(&mut self, data: Bytes) -> Result<Option<Message>, DecodeError> {
        let pending = self.pending.as_mut().ok_or(DecodeError::UnexpectedBinary)?;
        pending.attachments.push(data);
        if pending.attachments.len() < pending.packet.attachments {
            return Ok(None);
        }
        Ok(self.pending.take().map(|m| *m))
    }

    /// Bytes held by attachments that are not yet complete.
    pub fn pending_bytes(&self) -> usize {
        self.pending
            .as_ref()
            .map_or(0, |m| m.attachments.iter().map(Bytes::len).sum())
    }
}

/// Why arguments given by a backend cannot be emitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("arguments must be a json array: {0}")]
    NotAnArray(String),
    #[error("arguments nest deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    #[error("event name must not be empty")]
    EmptyEvent,
    #[error("event name {0:?} is reserved by socket.io")]
    ReservedEvent(String),
    #[error("attachment placeholders do not match the {attachments} attachments: {source}")]
    Placeholders {
        attachments: usize,
        source: DecodeError,
    },
}

/// Parses a JSON array of arguments without parsing the arguments themselves.
/// An empty string means no arguments.
pub fn parse_args(args_json: &str) -> Result<Vec<&RawValue>, ArgsError> {
    if args_json.trim().is_empty() {
        return Ok(Vec::new());
    }
    if nests_deeper_than(args_json, MAX_JSON_DEPTH) {
        return Err(ArgsError::TooDeep);
    }
    serde_json::from_str::<Vec<&RawValue>>(args_json)
        .map_err(|e| ArgsError::NotAnArray(e.to_string()))
}

/// Checks that arguments with `attachments` binary attachments reference each
/// attachment exactly by a placeholder, and no other.
pub fn check_args_attachments(args_json: &str, attachments: usize) -> Result<(), ArgsError> {
    if attachments == 0 && !args_json.contains("_placeholder") {
        return Ok(());
    }
    let value: Value = if args_json.trim().is_empty() {
        Value::Array(Vec::new())
    } else if nests_deeper_than(args_json, MAX_JSON_DEPTH) {
        return Err(ArgsError::TooDeep);
    } else {
        serde_json::from_str(args_json).map_err(|e| ArgsError::NotAnArray(e.to_string()))?
    };
    check_placeholders(&value, attachments, true).map_err(|source| ArgsError::Placeholders {
        attachments,
        source,
    })
}

/// Checks an event name a backend wants to emit.
pub fn check_event_name(event: &str) -> Result<(), ArgsError> {
    if event.is_empty() {
        return Err(ArgsError::EmptyEvent);
    }
    if RESERVED_EVENTS.contains(&event) {
        return Err(ArgsError::ReservedEvent(event.to_owned()));
    }
    Ok(())
}

fn header(
    kind: PacketKind,
    nsp: &str,
    attachments: usize,
    id: Option<u64>,
    cap: usize,
) -> BytesMut {
    let mut buf = BytesMut::with_capacity(24 + nsp.len() + cap);
    buf.put_u8(b'4');
    let kind = match (kind, attachments > 0) {
        (PacketKind::Event, true) => PacketKind::BinaryEvent,
        (PacketKind::Ack, true) => PacketKind::BinaryAck,
        (k, _) => k,
    };
    buf.put_u8(kind.as_byte());
    if attachments > 0 {
        buf.put_slice(attachments.to_string().as_bytes());
        buf.put_u8(b'-');
    }
    if nsp != "/" {
        buf.put_slice(nsp.as_bytes());
        buf.put_u8(b',');
    }
    if let Some(id) = id {
        buf.put_slice(id.to_string().as_bytes());
    }
    buf
}

fn json_string(s: &str) -> String {
    // Serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

/// `40{"sid":"…"}`.
pub fn encode_connect(nsp: &str, sid: &str) -> Bytes {
    encode_connect_with_pid(nsp, sid, None)
}

/// `40{"sid":"…","pid":"…"}` when connection state recovery is on: the client
/// sends the pid back, with the offset of the last event it got, to recover.
pub fn encode_connect_with_pid(nsp: &str, sid: &str, pid: Option<&str>) -> Bytes {
    let body = match pid {
        Some(pid) => format!(
            "{{\"sid\":{},\"pid\":{}}}",
            json_string(sid),
            json_string(pid)
        ),
        None => format!("{{\"sid\":{}}}", json_string(sid)),
    };
    let mut buf = header(PacketKind::Connect, nsp, 0, None, body.len());
    buf.put_slice(body.as_bytes());
    buf.freeze()
}

/// Appends an offset string as the last argument of an encoded EVENT that asks
/// for no ack, as Socket.IO's connection state recovery does: the client keeps
/// the last one and sends it back when it reconnects. `None` for anything else
/// (other packet kinds, an ack id, a malformed packet).
pub fn append_offset(text: &[u8], offset: u64) -> Option<Bytes> {
    let rest = text.strip_prefix(b"4")?;
    let rest = match rest.first()? {
        b'2' => &rest[1..],
        b'5' => {
            let dash = rest.iter().position(|&b| b == b'-')?;
            if dash < 2 || !rest[1..dash].iter().all(u8::is_ascii_digit) {
                return None;
            }
            &rest[dash + 1..]
        }
        _ => return None,
    };
    let rest = if rest.first() == Some(&b'/') {
        &rest[rest.iter().position(|&b| b == b',')? + 1..]
    } else {
        rest
    };
    // Straight to the arguments: a digit here would be an ack id.
    if rest.first() != Some(&b'[') || text.last() != Some(&b']') {
        return None;
    }
    let offset = offset.to_string();
    let mut buf = BytesMut::with_capacity(text.len() + offset.len() + 3);
    buf.put_slice(&text[..text.len() - 1]);
    if rest.len() > 2 {
        buf.put_u8(b',');
    }
    buf.put_u8(b'"');
    buf.put_slice(offset.as_bytes());
    buf.put_slice(b"\"]");
    Some(buf.freeze())
}

/// `44{"message":"…"}`.
pub fn encode_connect_error(nsp: &str, message: &str) -> Bytes {
    let body = format!("{{\"message\":{}}}", json_string(message));
    let mut buf = header(PacketKind::ConnectError, nsp, 0, None, body.len());
    buf.put_slice(body.as_bytes());
    buf.freeze()
}

/// `41` or `41/admin,`: the server closes one namespace of the connection.
pub fn encode_disconnect(nsp: &str) -> Bytes {
    header(PacketKind::Disconnect, nsp, 0, None, 0).freeze()
}

/// An EVENT (or BINARY_EVENT when there are attachments): `42["event",…args]`.
///
/// `args` are the already-parsed arguments (see [`parse_args`]).
pub fn encode_event(
    nsp: &str,
    event: &str,
    args: &[&RawValue],
    ack_id: Option<u64>,
    attachments: usize,
) -> Bytes {
    let name = json_string(event);
    let cap = name.len() + 2 + args.iter().map(|a| a.get().len() + 1).sum::<usize>();
    let mut buf = header(PacketKind::Event, nsp, attachments, ack_id, cap);
    buf.put_u8(b'[');
    buf.put_slice(name.as_bytes());
    for arg in args {
        buf.put_u8(b',');
        buf.put_slice(arg.get().as_bytes());
    }
    buf.put_u8(b']');
    buf.freeze()
}

/// An ACK (or BINARY_ACK): `43[…args]`.
pub fn encode_ack(nsp: &str, ack_id: u64, args: &[&RawValue], attachments: usize) -> Bytes {
    let cap = 2 + args.iter().map(|a| a.get().len() + 1).sum::<usize>();
    let mut buf = header(PacketKind::Ack, nsp, attachments, Some(ack_id), cap);
    buf.put_u8(b'[');
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(arg.get().as_bytes());
    }
    buf.put_u8(b']');
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dec(s: &str) -> Result<Packet, DecodeError> {
        decode(s, 10)
    }

    /// `["e", [[…[1]…]]]` with `depth` levels in all, the outer array included.
    fn nested_args(depth: usize) -> String {
        format!(
            "[\"e\",{}1{}]",
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    }

    #[test]
    fn one_nesting_bound_for_clients_and_backends() {
        let ok = nested_args(MAX_JSON_DEPTH);
        let deep = nested_args(MAX_JSON_DEPTH + 1);
        assert!(dec(&format!("2{ok}")).is_ok());
        assert_eq!(dec(&format!("2{deep}")), Err(DecodeError::TooDeep));
        assert!(parse_args(&ok).is_ok());
        assert!(matches!(parse_args(&deep), Err(ArgsError::TooDeep)));
        assert_eq!(
            check_args_attachments(&format!("{deep}_placeholder"), 0),
            Err(ArgsError::TooDeep)
        );
        // Far deeper, as a hostile peer would send: refused the same way, no
        // stack overflow.
        let huge = nested_args(100_000);
        assert!(matches!(parse_args(&huge), Err(ArgsError::TooDeep)));
        assert_eq!(dec(&format!("2{huge}")), Err(DecodeError::TooDeep));
        // Objects count; brackets inside strings (escaped quotes too) do not.
        let objects = format!(
            "[{}1{}]",
            "{\"a\":".repeat(MAX_JSON_DEPTH),
            "}".repeat(MAX_JSON_DEPTH)
        );
        assert!(matches!(parse_args(&objects), Err(ArgsError::TooDeep)));
        let in_string = format!("[\"\\\"{}\"]", "[".repeat(10 * MAX_JSON_DEPTH));
        assert!(parse_args(&in_string).is_ok(), "{in_string}");
        assert!(!nests_deeper_than(&in_string, 1));
    }

    #[test]
    fn offsets_go_last_on_events_without_ack() {
        let off = |s: &str| {
            append_offset(s.as_bytes(), 7).map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        assert_eq!(off("42[\"a\",1]").as_deref(), Some("42[\"a\",1,\"7\"]"));
        assert_eq!(
            off("42/chat,[\"a\"]").as_deref(),
            Some("42/chat,[\"a\",\"7\"]")
        );
        assert_eq!(
            off("451-[\"a\",{\"_placeholder\":true,\"num\":0}]").as_deref(),
            Some("451-[\"a\",{\"_placeholder\":true,\"num\":0},\"7\"]")
        );
        assert_eq!(off("42[]").as_deref(), Some("42[\"7\"]"));
        for no in [
            "4212[\"a\"]",
            "43[1]",
            "40{}",
            "42",
            "4",
            "",
            "45-[\"a\"]",
            "42/x[\"a\"]",
            "42[\"a\"",
        ] {
            assert_eq!(off(no), None, "{no:?}");
        }
        let connect = encode_connect_with_pid("/", "s", Some("p"));
        assert_eq!(&connect[..], b"40{\"sid\":\"s\",\"pid\":\"p\"}");
    }

    #[test]
    fn decodes_connect_forms() {
        let p = dec("0").expect("connect");
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.data),
            (PacketKind::Connect, "/", None)
        );
        let p = dec("0/admin,{\"token\":\"123\"}").expect("connect with auth");
        assert_eq!(p.nsp, "/admin");
        assert_eq!(p.data, Some(json!({"token":"123"})));
        // Clients may omit the trailing comma.
        let p = dec("0/admin").expect("connect without comma");
        assert_eq!((p.nsp.as_str(), p.data), ("/admin", None));
        let p = dec("0/admin,").expect("connect with comma");
        assert_eq!(p.nsp, "/admin");
        assert_eq!(
            dec("0[1]"),
            Err(DecodeError::InvalidPayload(PacketKind::Connect))
        );
        assert_eq!(
            dec("0\"x\""),
            Err(DecodeError::InvalidPayload(PacketKind::Connect))
        );
    }

    #[test]
    fn decodes_disconnect() {
        assert_eq!(dec("1").expect("disconnect").kind, PacketKind::Disconnect);
        assert_eq!(dec("1/admin,").expect("disconnect nsp").nsp, "/admin");
        assert_eq!(
            dec("1/admin").expect("disconnect nsp no comma").nsp,
            "/admin"
        );
        assert_eq!(
            dec("1{}"),
            Err(DecodeError::InvalidPayload(PacketKind::Disconnect))
        );
    }

    #[test]
    fn decodes_events_from_spec() {
        let p = dec("2[\"foo\"]").expect("event");
        assert_eq!(p.event(), Some(("foo".into(), "[]".into())));
        let p = dec("2/admin,[\"bar\"]").expect("event nsp");
        assert_eq!(p.nsp, "/admin");
        let p = dec("212[\"foo\"]").expect("event with ack");
        assert_eq!(p.id, Some(12));
        assert_eq!(p.event(), Some(("foo".into(), "[]".into())));
        let p = dec("2/admin,13[\"bar\",{\"a\":1},2]").expect("event with ack and args");
        assert_eq!(p.id, Some(13));
        assert_eq!(p.event(), Some(("bar".into(), "[{\"a\":1},2]".into())));
        let p = dec("2[42,\"x\"]").expect("numeric event name");
        assert_eq!(p.event(), Some(("42".into(), "[\"x\"]".into())));
    }

    #[test]
    fn rejects_invalid_events() {
        assert_eq!(
            dec("2"),
            Err(DecodeError::InvalidPayload(PacketKind::Event))
        );
        assert_eq!(
            dec("2[]"),
            Err(DecodeError::InvalidPayload(PacketKind::Event))
        );
        assert_eq!(
            dec("2{}"),
            Err(DecodeError::InvalidPayload(PacketKind::Event))
        );
        assert_eq!(
            dec("2[{}]"),
            Err(DecodeError::InvalidPayload(PacketKind::Event))
        );
        assert_eq!(dec("2[\"a\""), Err(DecodeError::InvalidJson));
        for name in RESERVED_EVENTS {
            assert_eq!(
                dec(&format!("2[\"{name}\"]")),
                Err(DecodeError::ReservedEvent(name.into()))
            );
        }
        assert_eq!(dec("9"), Err(DecodeError::UnknownType(b'9')));
        assert_eq!(dec(""), Err(DecodeError::Empty));
        assert_eq!(
            dec("4{\"message\":\"x\"}"),
            Err(DecodeError::ServerOnlyType(PacketKind::ConnectError))
        );
        assert_eq!(
            dec("299999999999999999999[\"a\"]"),
            Err(DecodeError::InvalidAckId)
        );
    }

    #[test]
    fn decodes_acks() {
        let p = dec("3/admin,13[\"bar\"]").expect("ack");
        assert_eq!((p.kind, p.id), (PacketKind::Ack, Some(13)));
        assert_eq!(p.ack_args(), Some("[\"bar\"]".into()));
        assert_eq!(
            dec("313[]").expect("empty ack").ack_args(),
            Some("[]".into())
        );
        assert_eq!(
            dec("313{}"),
            Err(DecodeError::InvalidPayload(PacketKind::Ack))
        );
        assert_eq!(
            dec("3[1]"),
            Err(DecodeError::InvalidPayload(PacketKind::Ack))
        );
    }

    #[test]
    fn decodes_binary_packets_and_assembles_attachments() {
        let mut asm = Assembler::default();
        let text = "51-[\"baz\",{\"_placeholder\":true,\"num\":0}]";
        assert_eq!(asm.on_text(text, 10), Ok(None));
        assert_eq!(
            asm.on_text("2[\"x\"]", 10),
            Err(DecodeError::AttachmentsPending(1))
        );
        let msg = asm
            .on_binary(Bytes::from_static(&[1, 2, 3]))
            .expect("valid")
            .expect("complete");
        assert_eq!(msg.packet.kind, PacketKind::BinaryEvent);
        assert_eq!(msg.attachments, vec![Bytes::from_static(&[1, 2, 3])]);
        assert_eq!(
            msg.packet.event(),
            Some(("baz".into(), "[{\"_placeholder\":true,\"num\":0}]".into()))
        );
        assert_eq!(
            asm.on_binary(Bytes::from_static(&[1])),
            Err(DecodeError::UnexpectedBinary)
        );

        let p = dec("61-/admin,13[{\"_placeholder\":true,\"num\":0}]").expect("binary ack");
        assert_eq!(
            (p.kind, p.id, p.attachments),
            (PacketKind::BinaryAck, Some(13), 1)
        );
    }

    #[test]
    fn rejects_bad_attachments() {
        assert_eq!(dec("5[\"a\"]"), Err(DecodeError::InvalidAttachmentCount));
        assert_eq!(dec("5x-[\"a\"]"), Err(DecodeError::InvalidAttachmentCount));
        assert_eq!(
            dec("511-[\"a\"]"),
            Err(DecodeError::TooManyAttachments(11, 10))
        );
        assert_eq!(
            dec("51-[\"a\",{\"_placeholder\":true,\"num\":1}]"),
            Err(DecodeError::InvalidPlaceholder(1, 1))
        );
    }

    #[test]
    fn encodes_spec_examples() {
        assert_eq!(&encode_connect("/", "abc")[..], b"40{\"sid\":\"abc\"}");
        assert_eq!(
            &encode_connect("/admin", "abc")[..],
            b"40/admin,{\"sid\":\"abc\"}"
        );
        assert_eq!(
            &encode_connect_error("/random", "Invalid namespace")[..],
            b"44/random,{\"message\":\"Invalid namespace\"}"
        );
        assert_eq!(&encode_disconnect("/")[..], b"41");
        assert_eq!(&encode_disconnect("/admin")[..], b"41/admin,");
        let args = parse_args("[{\"a\":1}, 2]").expect("array");
        assert_eq!(
            &encode_event("/", "foo", &args, None, 0)[..],
            b"42[\"foo\",{\"a\":1},2]"
        );
        assert_eq!(
            &encode_event("/admin", "bar", &[], Some(12), 0)[..],
            b"42/admin,12[\"bar\"]"
        );
        let bin = parse_args("[{\"_placeholder\":true,\"num\":0}]").expect("array");
        assert_eq!(
            &encode_event("/", "baz", &bin, None, 1)[..],
            b"451-[\"baz\",{\"_placeholder\":true,\"num\":0}]"
        );
        let ack = parse_args("[\"bar\"]").expect("array");
        assert_eq!(
            &encode_ack("/admin", 13, &ack, 0)[..],
            b"43/admin,13[\"bar\"]"
        );
        assert_eq!(&encode_ack("/", 1, &[], 0)[..], b"431[]");
        assert_eq!(
            &encode_ack("/", 1, &bin, 1)[..],
            b"461-1[{\"_placeholder\":true,\"num\":0}]"
        );
    }

    #[test]
    fn encoded_events_decode_back() {
        let args = parse_args("[\"x\",{\"y\":[1,2]}]").expect("array");
        let wire = encode_event("/chat", "msg", &args, Some(7), 0);
        let text = std::str::from_utf8(&wire[1..]).expect("utf8");
        let p = dec(text).expect("decodes");
        assert_eq!(p.nsp, "/chat");
        assert_eq!(p.id, Some(7));
        assert_eq!(
            p.event(),
            Some(("msg".into(), "[\"x\",{\"y\":[1,2]}]".into()))
        );
    }

    #[test]
    fn relayed_numbers_keep_their_value() {
        // Found by the socketio_packet fuzz target: an integer too large for 64
        // bits is a float, which the default (inexact) float parsing read one ulp
        // off, so the relayed arguments carried a different number than the
        // client sent, and re-decoding them changed it again.
        let digits = "1844679599999999999999999999999999999951699999999999951621699999951699999999999951621622222";
        let p = dec(&format!("3332[{digits}]")).expect("ack with a large number");
        let sent: f64 = digits.parse().expect("a float");
        assert_eq!(p.data, Some(json!([sent])));
        let args = p.ack_args().expect("ack arguments");
        let wire = encode_ack("/", 332, &parse_args(&args).expect("array"), 0);
        let again = dec(std::str::from_utf8(&wire[1..]).expect("utf8")).expect("re-encoded ack");
        assert_eq!(again.ack_args(), Some(args));
    }

    #[test]
    fn checks_backend_arguments() {
        assert!(parse_args("").expect("empty").is_empty());
        assert!(matches!(parse_args("{}"), Err(ArgsError::NotAnArray(_))));
        assert!(matches!(parse_args("[1,"), Err(ArgsError::NotAnArray(_))));
        assert_eq!(check_event_name(""), Err(ArgsError::EmptyEvent));
        assert_eq!(
            check_event_name("disconnect"),
            Err(ArgsError::ReservedEvent("disconnect".into()))
        );
        assert_eq!(check_args_attachments("[1]", 0), Ok(()));
        assert_eq!(
            check_args_attachments("[{\"_placeholder\":true,\"num\":0}]", 1),
            Ok(())
        );
        assert!(
            check_args_attachments("[1]", 1).is_err(),
            "unreferenced attachment"
        );
        assert!(
            check_args_attachments("[{\"_placeholder\":true,\"num\":1}]", 1).is_err(),
            "out of range"
        );
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(s in "\\PC{0,40}") {
            let _ = decode(&s, 4);
        }

        #[test]
        fn decoder_never_panics_on_packet_like_input(
            kind in "[0-6]", att in "([0-9]{0,3}-)?", nsp in "(/[a-z,]{0,5},?)?",
            id in "[0-9]{0,4}", body in "(\\[.{0,10}\\]|\\{.{0,10}\\}|.{0,6})",
        ) {
            let _ = decode(&format!("{kind}{att}{nsp}{id}{body}"), 4);
        }

        #[test]
        fn event_round_trips(nsp in "/[a-z]{0,8}", event in "[a-zA-Z0-9 _.-]{1,12}", n in 0u64..1_000_000, args in proptest::collection::vec(-1000i64..1000, 0..5)) {
            proptest::prop_assume!(!RESERVED_EVENTS.contains(&event.as_str()));
            let json = serde_json::to_string(&args).expect("ints serialise");
            let parsed = parse_args(&json).expect("array");
            let wire = encode_event(&nsp, &event, &parsed, Some(n), 0);
            let text = std::str::from_utf8(&wire[1..]).expect("utf8");
            let p = decode(text, 0).expect("own encoding decodes");
            proptest::prop_assert_eq!(&p.nsp, &nsp);
            proptest::prop_assert_eq!(p.id, Some(n));
            let (name, decoded_args) = p.event().expect("an event");
            proptest::prop_assert_eq!(name, event);
            proptest::prop_assert_eq!(decoded_args, json);
        }
    }
}
