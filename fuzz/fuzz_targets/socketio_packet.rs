//! One Socket.IO packet: the text of an Engine.IO message, as a client sends it.
//!
//! Properties: never panics; what the edge reads from a decoded packet (event
//! name and arguments, ack arguments) re-encodes, with the server's encoder,
//! into a packet that decodes to the same event or ack.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_wire::socketio::{decode, encode_ack, encode_event, parse_args, PacketKind};

const MAX_ATTACHMENTS: usize = 10;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(packet) = decode(text, MAX_ATTACHMENTS) else {
        return;
    };
    assert!(packet.attachments <= MAX_ATTACHMENTS);
    if packet.attachments > 0 {
        assert!(matches!(
            packet.kind,
            PacketKind::BinaryEvent | PacketKind::BinaryAck
        ));
    }
    match packet.kind {
        PacketKind::Event | PacketKind::BinaryEvent => {
            let (name, args) = packet.event().expect("a decoded event has a name");
            let raw = parse_args(&args).expect("event arguments are a json array");
            let encoded = encode_event(&packet.nsp, &name, &raw, packet.id, packet.attachments);
            let text = std::str::from_utf8(&encoded[1..]).expect("encoder writes utf-8");
            let again = decode(text, MAX_ATTACHMENTS).expect("re-encoded event decodes");
            assert_eq!(again.event(), Some((name, args)));
            assert_eq!(
                (again.id, again.attachments),
                (packet.id, packet.attachments)
            );
            assert_eq!(again.nsp, packet.nsp);
        }
        PacketKind::Ack | PacketKind::BinaryAck => {
            let args = packet.ack_args().expect("a decoded ack has arguments");
            let id = packet.id.expect("a decoded ack has an id");
            let raw = parse_args(&args).expect("ack arguments are a json array");
            let encoded = encode_ack(&packet.nsp, id, &raw, packet.attachments);
            let text = std::str::from_utf8(&encoded[1..]).expect("encoder writes utf-8");
            let again = decode(text, MAX_ATTACHMENTS).expect("re-encoded ack decodes");
            assert_eq!(again.ack_args(), Some(args));
            assert_eq!(
                (again.id, again.attachments),
                (packet.id, packet.attachments)
            );
            assert_eq!(again.nsp, packet.nsp);
        }
        PacketKind::Connect | PacketKind::Disconnect => {}
        PacketKind::ConnectError => panic!("clients may not send connect_error"),
    }
});
