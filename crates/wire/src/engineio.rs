//! Engine.IO v4 packets and their two encodings.
//!
//! A packet is a one-digit type followed by data. Over WebSocket every packet is
//! one frame: text frames carry `<type><data>`, binary frames carry raw bytes (a
//! binary message, no type prefix). Over HTTP long-polling a payload joins packets
//! with the record separator `\x1e`, and a binary packet is written as `b` followed
//! by the base64 of its bytes.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

/// The record separator that joins packets in a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// The type of an Engine.IO packet (its first character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Open,
    Close,
    Ping,
    Pong,
    Message,
    Upgrade,
    Noop,
}

impl PacketType {
    /// The digit that stands for this type on the wire.
    pub fn as_byte(self) -> u8 {
        match self {
            PacketType::Open => b'0',
            PacketType::Close => b'1',
            PacketType::Ping => b'2',
            PacketType::Pong => b'3',
            PacketType::Message => b'4',
            PacketType::Upgrade => b'5',
            PacketType::Noop => b'6',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'0' => PacketType::Open,
            b'1' => PacketType::Close,
            b'2' => PacketType::Ping,
            b'3' => PacketType::Pong,
            b'4' => PacketType::Message,
            b'5' => PacketType::Upgrade,
            b'6' => PacketType::Noop,
            _ => return None,
        })
    }
}

/// A decoded Engine.IO packet, as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Open,
    Close,
    /// A ping with its data (the upgrade probe sends `2probe`).
    Ping(Bytes),
    Pong(Bytes),
    /// A text message; the data is UTF-8 (a Socket.IO packet).
    Message(Bytes),
    /// A binary message (a Socket.IO attachment).
    Binary(Bytes),
    Upgrade,
    Noop,
}

/// Why bytes are not an Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:#04x}")]
    UnknownType(u8),
    #[error("message is not valid utf-8")]
    InvalidUtf8,
    #[error("invalid base64 in binary packet")]
    InvalidBase64,
    #[error("payload holds more than {0} packets")]
    TooManyPackets(usize),
}

/// Decodes one text packet: a WebSocket text frame, or one record of a polling
/// payload that does not start with `b`.
pub fn decode_text(data: Bytes) -> Result<Packet, DecodeError> {
    let Some(&first) = data.first() else {
        return Err(DecodeError::Empty);
    };
    let kind = PacketType::from_byte(first).ok_or(DecodeError::UnknownType(first))?;
    let rest = data.slice(1..);
    Ok(match kind {
        PacketType::Open => Packet::Open,
        PacketType::Close => Packet::Close,
        PacketType::Ping => Packet::Ping(rest),
        PacketType::Pong => Packet::Pong(rest),
        PacketType::Message => {
            if std::str::from_utf8(&rest).is_err() {
                return Err(DecodeError::InvalidUtf8);
            }
            Packet::Message(rest)
        }
        PacketType::Upgrade => Packet::Upgrade,
        PacketType::Noop => Packet::Noop,
    })
}

/// Decodes a long-polling request body into its packets.
///
/// `max_packets` bounds the work a single body can cause.
pub fn decode_payload(body: Bytes, max_packets: usize) -> Result<Vec<Packet>, DecodeError> {
    let mut packets = Vec::new();
    let mut start = 0;
    let len = body.len();
    while start <= len {
        let end = body[start..]
            .iter()
            .position(|&b| b == SEPARATOR)
            .map_or(len, |p| start + p);
        if packets.len() == max_packets {
            return Err(DecodeError::TooManyPackets(max_packets));
        }
        let record = body.slice(start..end);
        packets.push(decode_record(record)?);
        start = end + 1;
    }
    Ok(packets)
}

fn decode_record(record: Bytes) -> Result<Packet, DecodeError> {
    if record.first() == Some(&b'b') {
        let raw = BASE64
            .decode(&record[1..])
            .map_err(|_| DecodeError::InvalidBase64)?;
        Ok(Packet::Binary(Bytes::from(raw)))
    } else {
        decode_text(record)
    }
}

/// A packet ready to be sent, in the form both transports can write without
/// re-encoding: text frames already carry their type digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `<type><data>`, UTF-8.
    Text(Bytes),
    /// Raw bytes of a binary message.
    Binary(Bytes),
}

impl Frame {
    /// Bytes this frame occupies in a queue (what outbound limits count).
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(b) | Frame::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A packet with no data, such as `2` (ping) or `6` (noop).
    pub fn control(kind: PacketType) -> Frame {
        Frame::Text(Bytes::from_static(match kind {
            PacketType::Open => b"0",
            PacketType::Close => b"1",
            PacketType::Ping => b"2",
            PacketType::Pong => b"3",
            PacketType::Message => b"4",
            PacketType::Upgrade => b"5",
            PacketType::Noop => b"6",
        }))
    }

    /// A packet with a type and text data, such as `3probe`.
    pub fn text(kind: PacketType, data: &[u8]) -> Frame {
        let mut buf = BytesMut::with_capacity(1 + data.len());
        buf.put_u8(kind.as_byte());
        buf.put_slice(data);
        Frame::Text(buf.freeze())
    }
}

/// Appends frames to a long-polling response body, separated by `\x1e`.
pub fn encode_payload<'a>(frames: impl IntoIterator<Item = &'a Frame>, out: &mut BytesMut) {
    for (i, frame) in frames.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(SEPARATOR);
        }
        match frame {
            Frame::Text(b) => out.put_slice(b),
            Frame::Binary(b) => {
                out.put_u8(b'b');
                let start = out.len();
                out.resize(start + base64::encoded_len(b.len(), true).unwrap_or(0), 0);
                let written = BASE64.encode_slice(b, &mut out[start..]).unwrap_or(0);
                out.truncate(start + written);
            }
        }
    }
}

/// The size `encode_payload` gives a frame, separator excluded.
pub fn payload_len(frame: &Frame) -> usize {
    match frame {
        Frame::Text(b) => b.len(),
        Frame::Binary(b) => 1 + base64::encoded_len(b.len(), true).unwrap_or(usize::MAX / 2),
    }
}

/// The handshake data of an open packet.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenPacket<'a> {
    pub sid: &'a str,
    pub upgrades: &'a [&'a str],
    pub ping_interval: u64,
    pub ping_timeout: u64,
    pub max_payload: u64,
}

impl OpenPacket<'_> {
    /// The `0{…}` frame.
    pub fn frame(&self) -> Frame {
        // Serialising a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        Frame::text(PacketType::Open, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn decodes_spec_examples() {
        assert_eq!(decode_text(b("2probe")), Ok(Packet::Ping(b("probe"))));
        assert_eq!(decode_text(b("3")), Ok(Packet::Pong(b(""))));
        assert_eq!(decode_text(b("4hello")), Ok(Packet::Message(b("hello"))));
        assert_eq!(decode_text(b("5")), Ok(Packet::Upgrade));
        assert_eq!(decode_text(b("1")), Ok(Packet::Close));
        assert_eq!(decode_text(b("6")), Ok(Packet::Noop));
        assert_eq!(decode_text(b("")), Err(DecodeError::Empty));
        assert_eq!(decode_text(b("9")), Err(DecodeError::UnknownType(b'9')));
        assert_eq!(
            decode_text(Bytes::from_static(b"4\xff")),
            Err(DecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn decodes_polling_payload_from_spec() {
        // "4hello\x1e4€\x1ebAQIDBA==" from the Engine.IO v4 specification.
        let body = Bytes::from("4hello\u{1e}4€\u{1e}bAQIDBA==");
        let packets = decode_payload(body, 16).expect("valid payload");
        assert_eq!(
            packets,
            vec![
                Packet::Message(b("hello")),
                Packet::Message(b("€")),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            ]
        );
    }

    #[test]
    fn rejects_bad_payloads() {
        assert_eq!(
            decode_payload(b("4a\u{1e}"), 16),
            Err(DecodeError::Empty),
            "trailing separator leaves an empty record"
        );
        assert_eq!(
            decode_payload(b("b!!"), 16),
            Err(DecodeError::InvalidBase64)
        );
        assert_eq!(
            decode_payload(b("6\u{1e}6\u{1e}6"), 2),
            Err(DecodeError::TooManyPackets(2))
        );
    }

    #[test]
    fn encodes_polling_payload_from_spec() {
        let frames = [
            Frame::text(PacketType::Message, b"hello"),
            Frame::text(PacketType::Message, "€".as_bytes()),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
        ];
        let mut out = BytesMut::new();
        encode_payload(&frames, &mut out);
        assert_eq!(&out[..], "4hello\u{1e}4€\u{1e}bAQIDBA==".as_bytes());
        let total: usize = frames.iter().map(payload_len).sum::<usize>() + 2;
        assert_eq!(total, out.len());
    }

    #[test]
    fn open_packet_has_reference_shape() {
        let open = OpenPacket {
            sid: "lv_VI97HAXpY6yYWAAAC",
            upgrades: &["websocket"],
            ping_interval: 25000,
            ping_timeout: 20000,
            max_payload: 1_000_000,
        };
        assert_eq!(
            open.frame(),
            Frame::Text(b(
                r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
            ))
        );
    }

    proptest::proptest! {
        #[test]
        fn payload_round_trips(texts in proptest::collection::vec("[^\u{1e}]{0,20}", 1..5), bins in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..20), 0..3)) {
            let mut frames: Vec<Frame> = texts.iter().map(|t| Frame::text(PacketType::Message, t.as_bytes())).collect();
            frames.extend(bins.iter().map(|b| Frame::Binary(Bytes::copy_from_slice(b))));
            let mut out = BytesMut::new();
            encode_payload(&frames, &mut out);
            let decoded = decode_payload(out.freeze(), 64).expect("own encoding decodes");
            let expected: Vec<Packet> = frames.iter().map(|f| match f {
                Frame::Text(t) => Packet::Message(t.slice(1..)),
                Frame::Binary(b) => Packet::Binary(b.clone()),
            }).collect();
            proptest::prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn payload_decoder_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode_payload(Bytes::from(data), 8);
        }
    }
}
