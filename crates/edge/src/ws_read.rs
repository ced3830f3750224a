//! Whole WebSocket messages from client frames, as RFC 6455 wants them read.
//!
//! Frames are parsed and unmasked here ([`decode_frame`]), not by
//! `fastwebsockets` (which only does the upgrade): its reader keeps an 8 KiB
//! buffer for the life of every connection, most of an idle connection's
//! memory. This one holds no buffer while the client is quiet: a read borrows
//! its worker thread's scratch buffer only for the moment the socket has bytes,
//! and keeps only what is left of an unfinished frame.
//!
//! Pings are counted and answered here (through the send callback, so the
//! replies go to our writer: a client that pings faster than allowed is cut
//! off), close frames are checked and answered here (their length, code and
//! UTF-8 reason), and fragmented messages are reassembled here: the size limit
//! applies to the whole message while it is being assembled (not only to each
//! frame, which would let a client grow one message without bound from small
//! fragments); text is checked as UTF-8 fragment by fragment, so a bad byte
//! fails the connection before the rest of the message arrives, and a message
//! that ends in the middle of a character fails too; and every way a client can
//! break the protocol comes back as a [`ReadError`] that carries the close code
//! to fail the connection with.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use crate::limits::Bucket;

/// A complete message, or the client's close frame (already answered).
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Text(Bytes),
    Binary(Bytes),
    Close,
}

/// Why no further message can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The peer went away without a close frame.
    Eof,
    /// An I/O error, or the writer is gone.
    Io,
    /// A frame the protocol forbids (reserved bits, unknown opcode, unmasked,
    /// bad fragmentation, oversized or fragmented control frame, bad close frame).
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
    pub fn close_code(self) -> Option<u16> {
        match self {
            ReadError::Eof | ReadError::Io => None,
            ReadError::Protocol => Some(1002),
            ReadError::InvalidUtf8 => Some(1007),
            ReadError::TooBig => Some(1009),
            ReadError::PingFlood => Some(1008),
        }
    }
}

/// A frame's opcode (RFC 6455 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// One client frame, unmasked.
#[derive(Debug)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: BytesMut,
}

/// Takes the first frame off `buf` when all of it is there (`None`: more bytes
/// are needed). A frame's header is checked before its payload is waited for,
/// so a frame longer than `max` fails as soon as its length is known.
pub fn decode_frame(buf: &mut BytesMut, max: usize) -> Result<Option<RawFrame>, ReadError> {
    let [b0, b1, ..] = buf[..] else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        // No extension is negotiated, so no reserved bit may be set.
        return Err(ReadError::Protocol);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(ReadError::Protocol)?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        // Client frames are masked.
        return Err(ReadError::Protocol);
    }
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(ReadError::Protocol);
    }
    let len = match usize::try_from(len) {
        Ok(len) if len <= max => len,
        _ => return Err(ReadError::TooBig),
    };
    let Some(mask) = buf
        .get(at..at + 4)
        .and_then(|m| <[u8; 4]>::try_from(m).ok())
    else {
        return Ok(None);
    };
    if buf.len() - (at + 4) < len {
        return Ok(None);
    }
    buf.advance(at + 4);
    let mut payload = buf.split_to(len);
    unmask(&mut payload, mask);
    Ok(Some(RawFrame {
        fin,
        opcode,
        payload,
    }))
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Bytes one read may take from a socket.
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    /// Where reads land before what they brought is kept: one per worker
    /// thread, lent to a connection only during its read.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// A fragmented message being assembled.
struct Partial {
    text: bool,
    buf: BytesMut,
    /// For text: how many leading bytes are known to be complete UTF-8.
    checked: usize,
}

/// Reads whole messages, at most `max` bytes each.
pub struct MessageReader<S> {
    io: S,
    /// Bytes read and not yet taken as frames: empty (and unallocated)
    /// between messages.
    buf: BytesMut,
    max: usize,
    /// Boxed: fragmented messages are rare, and the reader is part of every
    /// connection's task.
    partial: Option<Box<Partial>>,
    /// Pings the client may still send.
    pings: Bucket,
    /// What ended the stream, met by [`MessageReader::poll_ready`] and
    /// reported by the next read.
    ended: Option<ReadError>,
}

impl<S: AsyncRead + Unpin> MessageReader<S> {
    /// `max`: the largest message in bytes; `pings_per_sec`: the most pings a
    /// second, in bursts of twice that (0: no limit).
    pub fn new(io: S, max: usize, pings_per_sec: u32) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            max,
            partial: None,
            pings: Bucket::new(pings_per_sec),
            ended: None,
        }
    }

    /// Starts with `read`: bytes read from the stream before this reader
    /// took it.
    pub fn with_read(mut self, read: &[u8]) -> Self {
        if !read.is_empty() {
            self.buf.extend_from_slice(read);
        }
        self
    }

    /// Reads what the socket has and appends it to `buf`.
    fn poll_fill(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), ReadError>> {
        if let Some(e) = self.ended {
            return Poll::Ready(Err(e));
        }
        let (io, buf) = (&mut self.io, &mut self.buf);
        SCRATCH.with_borrow_mut(|scratch| {
            let mut rb = ReadBuf::new(scratch);
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(_)) => Poll::Ready(Err(ReadError::Io)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Err(ReadError::Eof)),
                Poll::Ready(Ok(())) => {
                    buf.extend_from_slice(rb.filled());
                    Poll::Ready(Ok(()))
                }
            }
        })
    }

    /// Waits for bytes and appends them to `buf`.
    async fn fill(&mut self) -> Result<(), ReadError> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Ready when [`MessageReader::next`] has something to start on: bytes
    /// the client sent, or the end of the stream. Waiting here holds nothing
    /// but a waker, so a connection can wait here while idle and build the
    /// (larger) reading of a message only once its bytes are there.
    pub fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if !self.buf.is_empty() || self.ended.is_some() {
            return Poll::Ready(());
        }
        self.poll_fill(cx).map(|r| {
            if let Err(e) = r {
                self.ended = Some(e);
            }
        })
    }

    /// The next frame, read as far as needed.
    async fn frame(&mut self) -> Result<RawFrame, ReadError> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf, self.max)? {
                if self.buf.is_empty() {
                    // Let go of the allocation the payload now shares.
                    self.buf = BytesMut::new();
                }
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// The next message. `send` queues a control reply the reader owes (a
    /// pong, the close echo) given its opcode and payload; it must reach the
    /// connection's writer.
    pub async fn next<R, E>(
        &mut self,
        send: &mut impl FnMut(OpCode, &[u8]) -> R,
    ) -> Result<Message, ReadError>
    where
        R: Future<Output = Result<(), E>>,
    {
        loop {
            let frame = self.frame().await?;
            match frame.opcode {
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        // A new message before the previous one ended.
                        return Err(ReadError::Protocol);
                    }
                    let text = frame.opcode == OpCode::Text;
                    if frame.fin {
                        let payload = frame.payload.freeze();
                        if !text {
                            return Ok(Message::Binary(payload));
                        }
                        if std::str::from_utf8(&payload).is_err() {
                            return Err(ReadError::InvalidUtf8);
                        }
                        return Ok(Message::Text(payload));
                    }
                    let mut partial = Box::new(Partial {
                        text,
                        buf: BytesMut::with_capacity(frame.payload.len()),
                        checked: 0,
                    });
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
                    send(OpCode::Close, &reply)
                        .await
                        .map_err(|_| ReadError::Io)?;
                    return Ok(Message::Close);
                }
                // A pong needs nothing.
                OpCode::Pong => {}
                OpCode::Ping => {
                    if !self.pings.take(std::time::Instant::now()) {
                        return Err(ReadError::PingFlood);
                    }
                    send(OpCode::Pong, &frame.payload)
                        .await
                        .map_err(|_| ReadError::Io)?;
                }
            }
        }
    }

    /// Gives back the stream.
    pub fn into_inner(self) -> S {
        self.io
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
    use tokio::io::AsyncWriteExt;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn no_reply(_: OpCode, _: &[u8]) -> std::future::Ready<Result<(), std::io::Error>> {
        std::future::ready(Ok(()))
    }

    async fn read_all(wire: Vec<u8>, max: usize) -> (Vec<Message>, Option<ReadError>) {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move { client.write_all(&wire).await });
        let mut reader = MessageReader::new(server, max, 0);
        let mut messages = Vec::new();
        loop {
            match reader.next(&mut no_reply).await {
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
        // 5 a second, bursts of 10.
        let mut reader = MessageReader::new(server, 100, 5);
        let mut pongs = 0;
        let mut send = |op: OpCode, payload: &[u8]| {
            assert_eq!((op, payload), (OpCode::Pong, &b"p"[..]));
            pongs += 1;
            std::future::ready(Ok::<(), std::io::Error>(()))
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
            // Unmasked.
            (vec![0x81, 0x01, b'a'], ReadError::Protocol),
            // A reserved opcode, a control frame too long for its kind.
            (frame(true, 0xB, b""), ReadError::Protocol),
            (frame(true, 0x9, &[0; 126]), ReadError::Protocol),
            // Over the limit in one frame: refused from its header alone.
            (vec![0x82, 0x80 | 126, 0x01, 0x00], ReadError::TooBig),
            (
                vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0],
                ReadError::TooBig,
            ),
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

    #[tokio::test]
    async fn bytes_read_before_the_reader_come_first() {
        // A frame and a half already read (with the upgrade request), the
        // rest still on the stream.
        let mut wire = frame(true, 0x1, b"40");
        wire.extend(frame(true, 0x1, b"42[\"a\"]"));
        let (early, late) = wire.split_at(wire.len() - 3);
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(late).await.expect("write");
        let mut reader = MessageReader::new(server, 1024, 0).with_read(early);
        let m = reader.next(&mut no_reply).await;
        assert_eq!(m, Ok(Message::Text(Bytes::from_static(b"40"))));
        let m = reader.next(&mut no_reply).await;
        assert_eq!(m, Ok(Message::Text(Bytes::from_static(b"42[\"a\"]"))));
    }

    #[tokio::test]
    async fn ready_waits_for_bytes_and_keeps_the_end_for_the_next_read() {
        let ready = |reader: &mut MessageReader<tokio::io::DuplexStream>| {
            let waker = futures_util::task::noop_waker();
            reader
                .poll_ready(&mut std::task::Context::from_waker(&waker))
                .is_ready()
        };
        let (mut client, server) = tokio::io::duplex(64);
        let mut reader = MessageReader::new(server, 1024, 0);
        assert!(!ready(&mut reader), "nothing sent yet");
        // Two messages in one write: ready for the first, and, with the
        // second already read, ready again without waiting.
        let mut wire = frame(true, 0x1, b"4hello");
        wire.extend(frame(true, 0x1, b"4world"));
        client.write_all(&wire).await.expect("write");
        assert!(ready(&mut reader));
        let m = reader.next(&mut no_reply).await;
        assert_eq!(m, Ok(Message::Text(Bytes::from_static(b"4hello"))));
        assert!(ready(&mut reader));
        let m = reader.next(&mut no_reply).await;
        assert_eq!(m, Ok(Message::Text(Bytes::from_static(b"4world"))));
        assert!(!ready(&mut reader));
        // The end of the stream makes it ready; the next read reports it.
        drop(client);
        assert!(ready(&mut reader));
        assert_eq!(reader.next(&mut no_reply).await, Err(ReadError::Eof));
    }

    #[tokio::test]
    async fn reads_every_length_encoding_however_the_bytes_arrive() {
        let texts = [
            "",
            "a",
            &"b".repeat(125),
            &"c".repeat(126),
            &"d".repeat(70_000),
        ];
        let wire: Vec<u8> = texts
            .iter()
            .flat_map(|t| frame(true, 0x1, t.as_bytes()))
            .collect();
        let expected: Vec<Message> = texts
            .iter()
            .map(|t| Message::Text(Bytes::copy_from_slice(t.as_bytes())))
            .collect();
        assert_eq!(read_all(wire.clone(), 100_000).await, (expected, None));
        // One byte at a time: every frame waits for the rest of itself.
        let (mut client, server) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            for b in wire {
                client.write_all(&[b]).await.expect("write");
            }
        });
        let mut reader = MessageReader::new(server, 100_000, 0);
        for text in texts {
            let m = reader.next(&mut no_reply).await.expect("message");
            assert_eq!(m, Message::Text(Bytes::copy_from_slice(text.as_bytes())));
            // Nothing is kept between messages.
            assert_eq!(reader.buf.capacity(), 0);
        }
        writer.await.expect("writer");
        assert_eq!(reader.next(&mut no_reply).await, Err(ReadError::Eof));
    }

    #[tokio::test]
    async fn echoes_the_close_code() {
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(&frame(true, 0x8, &[0x03, 0xe8, b'b', b'y']))
            .await
            .expect("write");
        let mut reader = MessageReader::new(server, 100, 0);
        let mut replies = Vec::new();
        let mut send = |op: OpCode, payload: &[u8]| {
            replies.push((op, payload.to_vec()));
            std::future::ready(Ok::<(), std::io::Error>(()))
        };
        assert_eq!(reader.next(&mut send).await, Ok(Message::Close));
        assert_eq!(replies, vec![(OpCode::Close, vec![0x03, 0xe8])]);
    }
}
