//! Reads whole WebSocket messages within limits.
//!
//! `fastwebsockets` bounds each frame, but its fragment collector grows a
//! fragmented message without bound; this reader reassembles fragments itself
//! and refuses a message as soon as its parts exceed the limit. It also counts
//! the pings the library answers for us, so a ping flood is cut while it is
//! read rather than after.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, WebSocketError, WebSocketRead};
use tokio::io::AsyncRead;

use crate::limits::Bucket;

/// Why no message could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// A frame, or the fragments of a message, over the limit.
    TooBig,
    /// Pings faster than allowed.
    PingFlood,
    /// The stream ended or the peer closed it.
    Closed,
    /// Anything else the library reports (invalid frames, I/O errors).
    Failed(WebSocketError),
}

/// The error a send callback returns when the reply could not be queued.
pub(crate) type SendError = Box<dyn std::error::Error + Send + Sync>;
/// What a send callback returns.
pub(crate) type SendFuture = Pin<Box<dyn Future<Output = Result<(), SendError>> + Send>>;

#[derive(Debug, thiserror::Error)]
#[error("ping flood")]
struct PingFlood;

pub(crate) struct MessageReader<S> {
    read: WebSocketRead<S>,
    /// Opcode and bytes of a fragmented message being reassembled.
    partial: Option<(OpCode, Vec<u8>)>,
    max: usize,
    pings: Bucket,
}

impl<S: AsyncRead + Unpin> MessageReader<S> {
    /// `max`: the largest message in bytes; `pings_per_sec`: 0 for no limit.
    pub fn new(mut read: WebSocketRead<S>, max: usize, pings_per_sec: u32) -> Self {
        read.set_max_message_size(max.saturating_add(1));
        Self {
            read,
            partial: None,
            max,
            pings: Bucket::new(pings_per_sec),
        }
    }

    /// Stops counting pings (once the connection is closing anyway).
    pub fn without_ping_limit(&mut self) {
        self.pings = Bucket::new(0);
    }

    /// The next whole message (text or binary; pongs are returned too), with
    /// its opcode. Control replies the library owes (pong, close echo) go to
    /// `send`.
    pub async fn next(
        &mut self,
        send: &mut impl FnMut(Frame<'_>) -> SendFuture,
    ) -> Result<(OpCode, Bytes), ReadError> {
        loop {
            let pings = &mut self.pings;
            let frame = self
                .read
                .read_frame(&mut |frame: Frame<'_>| {
                    if frame.opcode == OpCode::Pong && !pings.take(std::time::Instant::now()) {
                        let flood: SendFuture = Box::pin(async { Err(Box::new(PingFlood) as _) });
                        return flood;
                    }
                    send(frame)
                })
                .await;
            let frame = match frame {
                Ok(f) => f,
                Err(WebSocketError::FrameTooLarge) => return Err(ReadError::TooBig),
                Err(WebSocketError::UnexpectedEOF) | Err(WebSocketError::ConnectionClosed) => {
                    return Err(ReadError::Closed)
                }
                Err(WebSocketError::SendError(e)) if e.is::<PingFlood>() => {
                    return Err(ReadError::PingFlood)
                }
                Err(e) => return Err(ReadError::Failed(e)),
            };
            match frame.opcode {
                OpCode::Text | OpCode::Binary if frame.fin => {
                    if self.partial.is_some() {
                        return Err(ReadError::Failed(WebSocketError::InvalidFragment));
                    }
                    return Ok((frame.opcode, Bytes::copy_from_slice(&frame.payload)));
                }
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(ReadError::Failed(WebSocketError::InvalidFragment));
                    }
                    self.partial = Some((frame.opcode, frame.payload.to_vec()));
                }
                OpCode::Continuation => {
                    let Some((opcode, buf)) = self.partial.as_mut() else {
                        return Err(ReadError::Failed(WebSocketError::InvalidContinuationFrame));
                    };
                    if buf.len() + frame.payload.len() > self.max {
                        return Err(ReadError::TooBig);
                    }
                    buf.extend_from_slice(&frame.payload);
                    if frame.fin {
                        let opcode = *opcode;
                        let Some((_, buf)) = self.partial.take() else {
                            continue;
                        };
                        if opcode == OpCode::Text && std::str::from_utf8(&buf).is_err() {
                            return Err(ReadError::Failed(WebSocketError::InvalidUTF8));
                        }
                        return Ok((opcode, Bytes::from(buf)));
                    }
                }
                OpCode::Close => return Err(ReadError::Closed),
                OpCode::Ping | OpCode::Pong => {
                    return Ok((frame.opcode, Bytes::copy_from_slice(&frame.payload)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastwebsockets::Role;
    use tokio::io::AsyncWriteExt;

    /// An unmasked client frame (the reader accepts either).
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mut f = vec![
            if fin { 0x80 | opcode } else { opcode },
            payload.len() as u8,
        ];
        f.extend_from_slice(payload);
        f
    }

    async fn reader_of(
        bytes: Vec<u8>,
        max: usize,
        pings: u32,
    ) -> MessageReader<tokio::io::DuplexStream> {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        client.write_all(&bytes).await.expect("write");
        drop(client);
        let (read, _) =
            fastwebsockets::after_handshake_split(server, tokio::io::sink(), Role::Server);
        MessageReader::new(read, max, pings)
    }

    fn discard() -> impl FnMut(Frame<'_>) -> SendFuture {
        |_| Box::pin(async { Ok(()) })
    }

    #[tokio::test]
    async fn reassembles_fragments_within_the_limit() {
        let mut bytes = frame(false, 0x1, b"42[\"a");
        bytes.extend(frame(true, 0x0, b"b\"]"));
        let mut r = reader_of(bytes, 100, 0).await;
        let (opcode, payload) = r.next(&mut discard()).await.expect("message");
        assert_eq!((opcode, &payload[..]), (OpCode::Text, &b"42[\"ab\"]"[..]));
        assert!(matches!(
            r.next(&mut discard()).await,
            Err(ReadError::Closed)
        ));
    }

    #[tokio::test]
    async fn refuses_fragments_that_add_up_over_the_limit() {
        let mut bytes = frame(false, 0x2, &[0; 60]);
        bytes.extend(frame(false, 0x0, &[0; 60]));
        bytes.extend(frame(true, 0x0, &[0; 60]));
        let mut r = reader_of(bytes, 100, 0).await;
        assert!(matches!(
            r.next(&mut discard()).await,
            Err(ReadError::TooBig)
        ));
        let single = frame(true, 0x2, &[0; 101]);
        let mut r = reader_of(single, 100, 0).await;
        assert!(matches!(
            r.next(&mut discard()).await,
            Err(ReadError::TooBig)
        ));
    }

    #[tokio::test]
    async fn cuts_a_ping_flood() {
        let bytes: Vec<u8> = (0..20).flat_map(|_| frame(true, 0x9, b"p")).collect();
        let mut r = reader_of(bytes.clone(), 100, 2).await;
        assert!(matches!(
            r.next(&mut discard()).await,
            Err(ReadError::PingFlood)
        ));
        // Without a limit, pings are answered and the stream just ends.
        let mut r = reader_of(bytes, 100, 0).await;
        assert!(matches!(
            r.next(&mut discard()).await,
            Err(ReadError::Closed)
        ));
    }
}
