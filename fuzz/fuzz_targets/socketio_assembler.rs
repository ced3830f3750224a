//! A sequence of Engine.IO messages (text and binary frames) fed to the
//! Socket.IO attachment assembler, as one connection delivers them.
//!
//! Input: records of `[kind][len][len bytes]`; an even kind byte is a text
//! frame, an odd one a binary frame.
//!
//! Properties: never panics; a complete message carries exactly the attachments
//! its packet announced; text while attachments are pending is an error.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use roomcast_wire::socketio::{Assembler, DecodeError};

const MAX_ATTACHMENTS: usize = 10;

fuzz_target!(|data: &[u8]| {
    let mut assembler = Assembler::default();
    let mut rest = data;
    let mut pending = 0usize;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        let result = if kind % 2 == 0 {
            let Ok(text) = std::str::from_utf8(frame) else {
                continue;
            };
            let r = assembler.on_text(text, MAX_ATTACHMENTS);
            if pending > 0 {
                assert_eq!(r, Err(DecodeError::AttachmentsPending(pending)));
            }
            r
        } else {
            let r = assembler.on_binary(Bytes::copy_from_slice(frame));
            if pending == 0 {
                assert_eq!(r, Err(DecodeError::UnexpectedBinary));
            }
            r
        };
        match result {
            Ok(Some(message)) => {
                assert_eq!(message.attachments.len(), message.packet.attachments);
                pending = 0;
            }
            Ok(None) => {
                pending = if kind % 2 == 0 {
                    announced(frame)
                } else {
                    pending - 1
                };
                assert!(pending > 0);
            }
            Err(_) => {}
        }
        if pending == 0 {
            assert_eq!(assembler.pending_bytes(), 0);
        }
    }
});

/// Attachments the binary packet that was just accepted announced.
fn announced(text: &[u8]) -> usize {
    let text = std::str::from_utf8(text).unwrap_or_default();
    roomcast_wire::socketio::decode(text, MAX_ATTACHMENTS).map_or(0, |p| p.attachments)
}
