//! A long-polling request body: `\x1e`-separated packets, binary as `b` + base64.
//!
//! Properties: never panics; the packet limit holds; the packets re-encoded as
//! a payload decode to the same packets.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use roomcast_wire::engineio::{decode_payload, encode_payload, Frame, Packet, PacketType};

const MAX_PACKETS: usize = 64;

fn frame(packet: &Packet) -> Frame {
    match packet {
        Packet::Open => Frame::control(PacketType::Open),
        Packet::Close => Frame::control(PacketType::Close),
        Packet::Ping(d) => Frame::text(PacketType::Ping, d),
        Packet::Pong(d) => Frame::text(PacketType::Pong, d),
        Packet::Message(d) => Frame::text(PacketType::Message, d),
        Packet::Binary(b) => Frame::Binary(b.clone()),
        Packet::Upgrade => Frame::control(PacketType::Upgrade),
        Packet::Noop => Frame::control(PacketType::Noop),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(packets) = decode_payload(Bytes::copy_from_slice(data), MAX_PACKETS) else {
        return;
    };
    assert!(!packets.is_empty() && packets.len() <= MAX_PACKETS);
    let frames: Vec<Frame> = packets.iter().map(frame).collect();
    let mut out = BytesMut::new();
    encode_payload(&frames, &mut out);
    assert_eq!(
        decode_payload(out.freeze(), MAX_PACKETS),
        Ok(packets),
        "re-encoded payload differs"
    );
});
