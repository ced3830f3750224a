//! Whole WebSocket messages from client frames, as RFC 6455 wants them read.
//!
//! `fastwebsockets` parses and unmasks single frames. Pings are counted and
//! answered here (through the send callback, so the replies go to our writer:
//! a client that pings faster than allowed is cut off), and close frames are
//! checked and answered here (their length, code and UTF-8 reason), and the
//! reassembly of fragmented messages is ours rather than its
//! `FragmentCollectorRead`, for three reasons: the size limit applies to the
//! whole message while it is being assembled (not only to each frame, which
//! would let a client grow one message without bound from small fragments);
//! text is checked as UTF-8 fragment by fragment, so a bad byte fails the
//! connection before the rest of the message arrives, and a message that ends
//! in the middle of a character fails too; and every way a client can break the
//! protocol comes back as a [`ReadError`] that carries the close code to fail
//! the connection with.

use std::future::Future;

use bytes::{Bytes, BytesMut};
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError, WebSocketRead};
use tokio::io::AsyncRead;

use crate::limits::Bucket;

/// A complete message, or the client's close frame (already answered).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    Text(Bytes),
    Binary(Bytes),
    Close,
}

/// Why no further message can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The peer went away without a close frame.
    Eof,
    /// An I/O error, or the writer is gone.
    Io,
    /// A frame the protocol forbids (reserved bits, unknown opcode, bad
    /// fragmentation, oversized or fragmented control frame, bad close frame).
    Protocol,
    /// A text message (or close reason) that is not UTF-8.
    InvalidUtf8,
    /// A message larger than the limit.
    TooBig,
    /// Pings faster than the limit.
    PingFlood,
}

impl ReadError {
    /// The close code that fails the connection, if there is still someone
    /// to send it to.
    pub(crate) fn close_code(self) -> Option<u16> {
        match self {
            ReadError::Eof | ReadError::Io => None,
            ReadError::Protocol => Some(1002),
            ReadError::InvalidUtf8 => Some(1007),
            ReadError::TooBig => Some(1009),
            ReadError::PingFlood => Some(1008),
        }
    }
}

impl From<WebSocketError> for ReadError {
    fn from(e: WebSocketError) -> Self {
        match e {
            WebSocketError::UnexpectedEOF | WebSocketError::ConnectionClosed => ReadError::Eof,
            WebSocketError::IoError(_) | WebSocketError::SendError(_) => ReadError::Io,
            WebSocketError::InvalidUTF8 => ReadError::InvalidUtf8,
            WebSocketError::FrameTooLarge => ReadError::TooBig,
            _ => ReadError::Protocol,
        }
    }
}

/// A fragmented message being assembled.
struct Partial {
    text: bool,
    buf: BytesMut,
    /// For text: how many leading bytes are known to be complete UTF-8.
    checked: usize,
}

/// Reads whole messages, at most `max` bytes each.
pub(crate) struct MessageReader<S> {
    frames: WebSocketRead<S>,
    max: usize,
    partial: Option<Partial>,
    /// Pings the client may still send (fastwebsockets answers each one).
    pings: Bucket,
}

impl<S: AsyncRead + Unpin> MessageReader<S> {
    /// `max`: the largest message in bytes; `pings_per_sec`: the most pings a
    /// second, in bursts of twice that (0: no limit).
    pub(crate) fn new(mut frames: WebSocketRead<S>, max: usize, pings_per_sec: u32) -> Self {
        // One byte over the limit: a frame of exactly `max` bytes is allowed
        // (fastwebsockets refuses lengths >= its setting).
        frames.set_max_message_size(max.saturating_add(1));
        frames.set_auto_close(false);
        // Pings come to us, to be counted before they are answered.
        frames.set_auto_pong(false);
        Self {
            frames,
            max,
            partial: None,
            pings: Bucket::new(pings_per_sec),
        }
    }

    /// The next message. `send` queues the control replies the reader owes
    /// (pongs and the close echo); it must reach the connection's writer.
    pub(crate) async fn next<'f, R, E>(
        &mut self,
        send: &mut impl FnMut(Frame<'f>) -> R,
    ) -> Result<Message, ReadError>
    where
        R: Future<Output = Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        loop {
            let frame = self.frames.read_frame(send).await?;
            match frame.opcode {
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        // A new message before the previous one ended.
                        return Err(ReadError::Protocol);
                    }
                    let text = frame.opcode == OpCode::Text;
                    if frame.fin {
                        // fastwebsockets has checked the UTF-8 of a whole text frame.
                        let payload = Bytes::copy_from_slice(&frame.payload);
                        return Ok(if text {
                            Message::Text(payload)
                        } else {
                            Message::Binary(payload)
                        });
                    }
                    let mut partial = Partial {
                        text,
                        buf: BytesMut::with_capacity(frame.payload.len()),
                        checked: 0,
                    };
                    partial.append(&frame.payload, self.max)?;
                    self.partial = Some(partial);
                }
                OpCode::Continuation => {
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(ReadError::Protocol);
                    };
                    partial.append(&frame.payload, self.max)?;
                    if frame.fin {
                        let Some(partial) = self.partial.take() else {
                            return Err(ReadError::Protocol);
                        };
                        return partial.finish();
                    }
                }
                OpCode::Close => {
                    let reply = close_reply(&frame.payload)?;
                    send(Frame::close_raw(Payload::Owned(reply)))
                        .await
                        .map_err(|_| ReadError::Io)?;
                    return Ok(Message::Close);
                }
                OpCode::Pong | OpCode::Ping => {
                    if frame.payload.len() > 125 {
                        return Err(ReadError::Protocol);
                    }
                    // A pong needs nothing; a ping, within the limit, its pong.
                    if frame.opcode == OpCode::Ping {
                        if !self.pings.take(std::time::Instant::now()) {
                            return Err(ReadError::PingFlood);
                        }
                        let pong = Frame::pong(Payload::Owned(frame.payload.to_vec()));
                        send(pong).await.map_err(|_| ReadError::Io)?;
                    }
                }
            }
        }
    }
}

/// Whether a close code may travel in a close frame (RFC 6455 7.4, and the
/// codes IANA registered since: 1012 to 1014).
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The payload of the close frame that answers a client's close frame: its
/// code echoed (no reason), or nothing when it gave none.
fn close_reply(payload: &[u8]) -> Result<Vec<u8>, ReadError> {
    match payload {
        [] => Ok(Vec::new()),
        [_] => Err(ReadError::Protocol),
        _ if payload.len() > 125 => Err(ReadError::Protocol),
        [hi, lo, reason @ ..] => {
            if !close_code_allowed(u16::from_be_bytes([*hi, *lo])) {
                return Err(ReadError::Protocol);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(ReadError::InvalidUtf8);
            }
            Ok(vec![*hi, *lo])
        }
    }
}

impl Partial {
    fn append(&mut self, data: &[u8], max: usize) -> Result<(), ReadError> {
        if self.buf.len().saturating_add(data.len()) > max {
            return Err(ReadError::TooBig);
        }
        self.buf.extend_from_slice(data);
        if self.text {
            match std::str::from_utf8(&self.buf[self.checked..]) {
                Ok(_) => self.checked = self.buf.len(),
                // A character cut at the end of this fragment may go on in the next.
                Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
                Err(_) => return Err(ReadError::InvalidUtf8),
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Message, ReadError> {
        let payload = self.buf.freeze();
        if !self.text {
            return Ok(Message::Binary(payload));
        }
        if self.checked != payload.len() {
            // The message ends inside a character.
            return Err(ReadError::InvalidUtf8);
        }
        Ok(Message::Text(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastwebsockets::Role;
    use tokio::io::AsyncWriteExt;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        assert!(payload.len() < 126, "short frames only");
        out.push(0x80 | payload.len() as u8);
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    async fn read_all(wire: Vec<u8>, max: usize) -> (Vec<Message>, Option<ReadError>) {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        client.write_all(&wire).await.expect("write");
        drop(client);
        let (read, _) =
            fastwebsockets::after_handshake_split(server, tokio::io::sink(), Role::Server);
        let mut reader = MessageReader::new(read, max, 0);
        let mut send = |_f: Frame<'_>| async { Ok::<(), std::io::Error>(()) };
        let mut messages = Vec::new();
        loop {
            match reader.next(&mut send).await {
                Ok(Message::Close) => return (messages, None),
                Ok(m) => messages.push(m),
                Err(ReadError::Eof) => return (messages, None),
                Err(e) => return (messages, Some(e)),
            }
        }
    }

    #[tokio::test]
    async fn answers_pings_and_cuts_a_flood() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let wire: Vec<u8> = (0..30).flat_map(|_| frame(true, 0x9, b"p")).collect();
        client.write_all(&wire).await.expect("write");
        let (read, _) =
            fastwebsockets::after_handshake_split(server, tokio::io::sink(), Role::Server);
        // 5 a second, bursts of 10.
        let mut reader = MessageReader::new(read, 100, 5);
        let mut pongs = 0;
        let mut send = |f: Frame<'_>| {
            assert_eq!(f.opcode, OpCode::Pong);
            pongs += 1;
            async { Ok::<(), std::io::Error>(()) }
        };
        assert_eq!(reader.next(&mut send).await, Err(ReadError::PingFlood));
        assert_eq!(pongs, 10, "the burst is answered, the rest is not");
        assert_eq!(ReadError::PingFlood.close_code(), Some(1008));
    }

    #[tokio::test]
    async fn assembles_fragments_across_pings() {
        let mut wire = frame(false, 0x1, "h\u{e9}".as_bytes().split_at(2).0);
        wire.extend(frame(true, 0x9, b"p"));
        wire.extend(frame(false, 0x0, &"h\u{e9}".as_bytes()[2..]));
        wire.extend(frame(true, 0x0, b"llo"));
        wire.extend(frame(true, 0x2, &[0, 1]));
        let (messages, err) = read_all(wire, 100).await;
        assert_eq!(err, None);
        assert_eq!(
            messages,
            vec![
                Message::Text(Bytes::from("h\u{e9}llo")),
                Message::Binary(Bytes::from_static(&[0, 1]))
            ]
        );
    }

    #[tokio::test]
    async fn refuses_what_rfc6455_forbids() {
        let cases: Vec<(Vec<u8>, ReadError)> = vec![
            (frame(true, 0x0, b"x"), ReadError::Protocol),
            (
                [frame(false, 0x1, b"a"), frame(true, 0x1, b"b")].concat(),
                ReadError::Protocol,
            ),
            (frame(true, 0x1, &[0xff]), ReadError::InvalidUtf8),
            (
                [frame(false, 0x1, b"a"), frame(true, 0x0, &[0xce])].concat(),
                ReadError::InvalidUtf8,
            ),
            (frame(false, 0x1, &[0xc0, 0x80]), ReadError::InvalidUtf8),
            (frame(true, 0x3, b""), ReadError::Protocol),
            (vec![0xc1, 0x80, 0, 0, 0, 0], ReadError::Protocol),
            (frame(false, 0x9, b""), ReadError::Protocol),
            (
                [frame(false, 0x2, &[0; 60]), frame(true, 0x0, &[0; 60])].concat(),
                ReadError::TooBig,
            ),
            (frame(true, 0x8, &[0x03]), ReadError::Protocol),
            (frame(true, 0x8, &[0x03, 0xe7]), ReadError::Protocol),
            (
                frame(true, 0x8, &[0x03, 0xe8, 0xff]),
                ReadError::InvalidUtf8,
            ),
        ];
        for (wire, expected) in cases {
            let (_, err) = read_all(wire.clone(), 100).await;
            assert_eq!(err, Some(expected), "{wire:02x?}");
        }
        assert_eq!(ReadError::InvalidUtf8.close_code(), Some(1007));
        assert_eq!(close_reply(&[0x03, 0xe8, b'b', b'y']), Ok(vec![0x03, 0xe8]));
        assert_eq!(close_reply(&[]), Ok(vec![]));
        let mut long = vec![0x03, 0xe8];
        long.extend([b'x'; 124]);
        assert_eq!(close_reply(&long), Err(ReadError::Protocol));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!close_code_allowed(code), "{code}");
        }
        assert_eq!(ReadError::Eof.close_code(), None);
    }
}
