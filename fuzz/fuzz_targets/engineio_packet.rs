//! One Engine.IO text packet, as a WebSocket text frame carries it.
//!
//! Properties: never panics; a message is UTF-8; a packet re-encoded as the
//! server would write it decodes to the same packet.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use roomcast_wire::engineio::{decode_text, Frame, Packet, PacketType};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = decode_text(Bytes::copy_from_slice(data)) else {
        return;
    };
    let frame = match &packet {
        Packet::Message(text) => {
            assert!(std::str::from_utf8(text).is_ok(), "message is not utf-8");
            Frame::text(PacketType::Message, text)
        }
        Packet::Ping(d) => Frame::text(PacketType::Ping, d),
        Packet::Pong(d) => Frame::text(PacketType::Pong, d),
        Packet::Open => Frame::control(PacketType::Open),
        Packet::Close => Frame::control(PacketType::Close),
        Packet::Upgrade => Frame::control(PacketType::Upgrade),
        Packet::Noop => Frame::control(PacketType::Noop),
        Packet::Binary(_) => panic!("a text frame decoded as binary"),
    };
    let Frame::Text(bytes) = frame else {
        unreachable!("text frames only")
    };
    assert_eq!(decode_text(bytes), Ok(packet), "re-encoded packet differs");
});
