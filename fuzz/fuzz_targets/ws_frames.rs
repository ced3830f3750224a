//! Client WebSocket bytes through the edge's frame reader
//! (`roomcast_edge::ws_read::MessageReader`): frame headers and lengths,
//! masking, fragmentation, control frames, UTF-8, the size limit. The first
//! byte picks how the input is cut into reads (1 to 16 bytes each, or whole),
//! so frames split across reads are covered.
//!
//! Properties: never panics; every message is at most the limit; every text
//! message is UTF-8; every control reply is a pong or close of at most 125
//! bytes; after a close message or an error nothing more is read.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use roomcast_edge::ws_read::{Message, MessageReader, OpCode};
use tokio::io::{AsyncRead, ReadBuf};

const MAX: usize = 1024;

/// Hands out its bytes `step` at a time.
struct Chunked<'a> {
    data: &'a [u8],
    step: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.step.min(self.data.len()).min(buf.remaining());
        let (head, rest) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let step = match first % 17 {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut reader = MessageReader::new(Chunked { data, step }, MAX, 0);
        let mut send = |op: OpCode, payload: &[u8]| {
            assert!(matches!(op, OpCode::Pong | OpCode::Close), "{op:?}");
            assert!(payload.len() <= 125, "control reply of {} bytes", payload.len());
            std::future::ready(Ok::<(), std::convert::Infallible>(()))
        };
        loop {
            match reader.next(&mut send).await {
                Ok(Message::Text(t)) => {
                    assert!(t.len() <= MAX);
                    assert!(std::str::from_utf8(&t).is_ok(), "text is not UTF-8");
                }
                Ok(Message::Binary(b)) => assert!(b.len() <= MAX),
                Ok(Message::Close) | Err(_) => break,
            }
        }
    });
});
