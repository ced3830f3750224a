//! Server WebSocket frames on the wire: unmasked, so a packet's bytes are the
//! same for every recipient and a frame is a small header in front of the
//! shared payload. A run of queued frames goes out as vectored writes of
//! header/payload slices built on the stack; [`Progress`] says where a partial
//! write stopped, so the next write (by the connection's writer, or by the
//! fan-out writing to an idle socket) resumes there.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::Bytes;
use roomcast_wire::engineio::Frame;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sink::DirectWrite;
pub(crate) use crate::sink::Progress;
use crate::ws_read::OpCode;

/// Most frames in one vectored write (two buffers each, well under IOV_MAX).
pub(crate) const WRITE_SLICE_FRAMES: usize = 64;

/// A WebSocket frame header for an unmasked, final frame.
pub(crate) fn header(opcode: OpCode, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | opcode as u8;
    let n = if len < 126 {
        h[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, n)
}

pub(crate) fn encode_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let (h, n) = header(opcode, payload.len());
    let mut buf = Vec::with_capacity(n + payload.len());
    buf.extend_from_slice(&h[..n]);
    buf.extend_from_slice(payload);
    Bytes::from(buf)
}

fn frame_payload(f: &Frame) -> &[u8] {
    let (Frame::Text(p) | Frame::Binary(p)) = f;
    p
}

fn opcode_of(f: &Frame) -> OpCode {
    match f {
        Frame::Text(_) => OpCode::Text,
        Frame::Binary(_) => OpCode::Binary,
    }
}

/// A frame's size on the wire, header included.
fn wire_len(f: &Frame) -> usize {
    let len = frame_payload(f).len();
    header(opcode_of(f), len).1 + len
}

/// Moves `at` past `n` more bytes written of `frames` on the wire.
pub(crate) fn advance(at: &mut Progress, frames: &[Frame], mut n: usize) {
    while n > 0 && at.first < frames.len() {
        let left = wire_len(&frames[at.first]) - at.done;
        if n >= left {
            n -= left;
            at.first += 1;
            at.done = 0;
        } else {
            at.done += n;
            n = 0;
        }
    }
}

/// Most frames of one packet a direct write takes; a packet with more (many
/// binary attachments) is left to the connection's writer.
const DIRECT_FRAMES: usize = 8;

/// A plain-TCP WebSocket's stream, as a session's queue holds it: a push to
/// an idle writer writes the packet's frames itself, with one non-blocking
/// vectored write of headers built on the stack and the shared payloads.
#[derive(Debug, Clone)]
pub(crate) struct TcpDirect(pub Arc<TcpStream>);

impl DirectWrite for TcpDirect {
    fn try_write(&self, frames: &[Frame]) -> std::io::Result<Progress> {
        let mut at = Progress::default();
        if frames.len() > DIRECT_FRAMES {
            return Ok(at);
        }
        let mut heads = [([0u8; 10], 0); DIRECT_FRAMES];
        match with_slices(frames, at, &mut heads, |slices| {
            self.0.try_write_vectored(slices)
        }) {
            Ok(n) => {
                advance(&mut at, frames, n);
                let sent: usize = frames[..at.first].iter().map(Frame::len).sum();
                metrics::counter!(crate::metrics::BYTES_OUT).increment(sent as u64);
                Ok(at)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(at),
            Err(e) => Err(e),
        }
    }
}

/// Calls `write` with the slices of what is left of `frames` from `at`, for as
/// many frames as `heads` has room for (at most [`WRITE_SLICE_FRAMES`]), and
/// returns what it returns.
pub(crate) fn with_slices<R>(
    frames: &[Frame],
    at: Progress,
    heads: &mut [([u8; 10], usize)],
    write: impl FnOnce(&[IoSlice<'_>]) -> R,
) -> R {
    let mut slices = [IoSlice::new(&[]); 2 * WRITE_SLICE_FRAMES];
    let end = frames
        .len()
        .min(at.first + heads.len().min(WRITE_SLICE_FRAMES));
    let batch = &frames[at.first.min(end)..end];
    for (h, f) in heads.iter_mut().zip(batch) {
        *h = header(opcode_of(f), frame_payload(f).len());
    }
    let mut used = 0;
    let mut skip = at.done;
    for ((h, n), f) in heads.iter().zip(batch) {
        for part in [&h[..*n], frame_payload(f)] {
            // Only the first frame has a written part to leave out.
            let cut = skip.min(part.len());
            skip -= cut;
            if part.len() > cut {
                slices[used] = IoSlice::new(&part[cut..]);
                used += 1;
            }
        }
    }
    write(&slices[..used])
}

/// Writes the frames from `at`, each as a header and its shared payload, in as
/// few vectored writes as the socket takes. The slices are built on the stack
/// at each attempt, from where the run got to: no allocation per write, and no
/// buffer in the writer's state while it waits for the socket.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[Frame],
    mut at: Progress,
) -> std::io::Result<()> {
    use std::task::Poll;
    std::future::poll_fn(|cx| {
        while !at.finished(frames) {
            let mut heads = [([0u8; 10], 0); WRITE_SLICE_FRAMES];
            let polled = with_slices(frames, at, &mut heads, |slices| {
                std::pin::Pin::new(&mut *w).poll_write_vectored(cx, slices)
            });
            match polled {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => advance(&mut at, frames, n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    })
    .await?;
    w.flush().await
}

/// A run of frames as one byte string, each encoded on its own (what the
/// writes must add up to).
#[cfg(test)]
pub(crate) fn encode_frames(frames: &[Frame]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|f| encode_frame(opcode_of(f), frame_payload(f)).to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_rfc6455_lengths() {
        assert_eq!(
            header(OpCode::Text, 5),
            ([0x81, 5, 0, 0, 0, 0, 0, 0, 0, 0], 2)
        );
        let (h, n) = header(OpCode::Binary, 300);
        assert_eq!((&h[..n], n), (&[0x82, 126, 1, 44][..], 4));
        let (h, n) = header(OpCode::Text, 70_000);
        assert_eq!(&h[..n], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    /// Takes at most `step` bytes per write, and is not ready every other time.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        ready: bool,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.ready = !self.ready;
            if !self.ready {
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.step - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.step {
                    break;
                }
            }
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_resume_where_the_socket_stopped() {
        // More frames than one write takes, of every header length, some empty.
        let frames: Vec<Frame> = (0..150)
            .map(|i| match i % 5 {
                0 => Frame::Text(Bytes::new()),
                1 => Frame::Text(Bytes::from(vec![b'a'; 125])),
                2 => Frame::Binary(Bytes::from(vec![i as u8; 126])),
                3 => Frame::Text(Bytes::from(format!("42[\"e\",{i}]"))),
                _ => Frame::Binary(Bytes::from(vec![7u8; if i == 149 { 70_000 } else { 300 }])),
            })
            .collect();
        let expected = encode_frames(&frames);
        for step in [1, 3, 7, 100, 4096, usize::MAX] {
            let mut w = Trickle {
                out: Vec::new(),
                step,
                ready: false,
                calls: 0,
            };
            write_frames(&mut w, &frames, Progress::default())
                .await
                .expect("write");
            assert_eq!(w.out, expected, "step {step}");
            if step == usize::MAX {
                // 64 frames per write at most.
                assert_eq!(w.calls, 3);
            }
        }
    }

    #[tokio::test]
    async fn writes_many_frames_as_one_stream() {
        let frames = vec![
            Frame::Text(Bytes::from_static(b"42[\"a\"]")),
            Frame::Binary(Bytes::from(vec![7u8; 300])),
            Frame::Text(Bytes::from_static(b"2")),
        ];
        let mut out = Vec::new();
        write_frames(&mut out, &frames, Progress::default())
            .await
            .expect("write");
        let mut expected = Vec::new();
        expected.extend_from_slice(&encode_frame(OpCode::Text, b"42[\"a\"]"));
        expected.extend_from_slice(&encode_frame(OpCode::Binary, &[7u8; 300]));
        expected.extend_from_slice(&encode_frame(OpCode::Text, b"2"));
        assert_eq!(out, expected);
    }

    #[tokio::test]
    async fn a_run_resumes_where_an_earlier_write_stopped() {
        let frames = vec![
            Frame::Text(Bytes::from_static(b"42[\"a\"]")),
            Frame::Binary(Bytes::from(vec![7u8; 300])),
            Frame::Text(Bytes::from_static(b"2")),
        ];
        let whole = encode_frames(&frames);
        // Every cut: what one write took, then the rest from its progress.
        for cut in 0..=whole.len() {
            let mut at = Progress::default();
            advance(&mut at, &frames, cut);
            let mut rest = Vec::new();
            write_frames(&mut rest, &frames, at).await.expect("write");
            assert_eq!(&whole[cut..], &rest[..], "cut at {cut}");
            assert_eq!(at.finished(&frames), cut == whole.len());
        }
    }
}
