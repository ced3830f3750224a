//! A bus message as an edge or a control plane receives it: header lines
//! (`name:value`, one a line) up to an empty line, then the payload.
//!
//! Decodes it as every envelope kind (commands, edge replies, client events, a
//! backend's ack reply). Properties: never panics; whatever decodes re-encodes
//! to headers and payload that decode to the same value; an ack reply that the
//! edge accepts becomes an ACK packet of valid JSON that the Socket.IO decoder
//! accepts (but for numbers beyond f64, which the edge passes on as they are).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use roomcast_bus::envelope::{self, ClientEvent, Command, EdgeReply};
use roomcast_bus::Headers;
use roomcast_wire::socketio;

const MAX_ATTACHMENTS: usize = 10;

fn split(data: &[u8]) -> Option<(Headers, Bytes)> {
    let (head, payload) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut headers = Headers::new();
    for line in head.split('\n').filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        headers.append(name, value);
    }
    Some((headers, Bytes::copy_from_slice(payload)))
}

fuzz_target!(|data: &[u8]| {
    let Some((headers, payload)) = split(data) else {
        return;
    };
    let _ = envelope::sent_at_us(&headers);

    if let Ok(cmd) = Command::decode(&headers, payload.clone()) {
        let (h, p) = cmd.encode();
        assert_eq!(
            Command::decode(&h, p),
            Ok(cmd),
            "command does not round-trip"
        );
    }
    if let Ok(reply) = EdgeReply::decode(&headers, payload.clone()) {
        let (h, p) = reply.encode();
        assert_eq!(
            EdgeReply::decode(&h, p),
            Ok(reply),
            "edge reply does not round-trip"
        );
    }
    if let Ok(event) = ClientEvent::decode(&headers, payload.clone()) {
        let (h, p) = event.encode();
        assert_eq!(
            ClientEvent::decode(&h, p),
            Ok(event),
            "client event does not round-trip"
        );
    }

    // What the edge does with a backend's NATS reply to a client event.
    let Ok(packet) = envelope::decode_ack_reply(&headers, payload) else {
        return;
    };
    let Ok(args_json) = std::str::from_utf8(&packet.text) else {
        return;
    };
    if packet.attachments.len() > MAX_ATTACHMENTS {
        return;
    }
    let Ok(args) = socketio::parse_args(args_json) else {
        return;
    };
    if socketio::check_args_attachments(args_json, packet.attachments.len()).is_err() {
        return;
    }
    let encoded = socketio::encode_ack("/chat", 7, &args, packet.attachments.len());
    let text = std::str::from_utf8(&encoded[1..]).expect("encoder writes utf-8");
    match socketio::decode(text, MAX_ATTACHMENTS) {
        Ok(ack) => assert_eq!(
            (ack.id, ack.attachments),
            (Some(7), packet.attachments.len())
        ),
        // Numbers beyond f64 (`1e999`) are valid JSON that the edge passes on
        // from a backend as it is, and that its own decoder refuses.
        Err(socketio::DecodeError::InvalidJson) => {
            let json = &text[text.find('[').expect("an ack writes an array")..];
            assert!(
                socketio::parse_args(json).is_ok(),
                "the edge would send an ack that is not json: {text:?}"
            );
        }
        Err(e) => panic!("the edge would send an ack the protocol rejects: {e}: {text:?}"),
    }
});
