//! The client port's TCP connections, each shared between its connection's
//! task and whoever has a packet for it.
//!
//! A plain-TCP connection is an `Arc<TcpStream>`: hyper, and after an upgrade
//! the WebSocket reader and writer, use it through [`SharedTcp`], and a
//! session's queue keeps a handle to it so that a packet for an idle socket is
//! written by the code that has it (the fan-out) instead of waking the
//! connection's task to write it (see `outbox`). TLS connections have no such
//! handle and always go through their task.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Accepts client connections as [`SharedTcp`] streams, with `TCP_NODELAY`:
/// a real-time event goes out when it is written.
pub struct ClientListener {
    inner: TcpListener,
}

impl ClientListener {
    pub fn new(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl Listener for ClientListener {
    type Io = SharedTcp;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (SharedTcp, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return (SharedTcp(Arc::new(tcp)), peer);
                }
                // The client gave up before we took it: nothing to report.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors, typically: accepting again at
                    // once would spin.
                    tracing::warn!(error = %e, "accepting a client connection failed");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A TCP stream read and written through a shared reference.
pub struct SharedTcp(pub(crate) Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The readiness was stale; polling again registers the waker.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(shutdown_write(&self.0))
    }
}

/// Sends FIN; the stream stays open for reading.
fn shutdown_write(tcp: &TcpStream) -> io::Result<()> {
    match socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write) {
        // Already closed by the peer: nothing left to shut.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        r => r,
    }
}

/// What the client port knows of a connection: the peer's address and, for
/// plain TCP, the shared stream. Request handlers read it as
/// `ConnectInfo<ClientConn>`.
#[derive(Clone)]
pub struct ClientConn {
    pub peer: SocketAddr,
    pub(crate) tcp: Option<Arc<TcpStream>>,
}

impl ClientConn {
    /// A connection with no shared stream (TLS).
    fn from_peer(peer: SocketAddr) -> Self {
        Self { peer, tcp: None }
    }
}

impl Connected<IncomingStream<'_, ClientListener>> for ClientConn {
    fn connect_info(stream: IncomingStream<'_, ClientListener>) -> Self {
        Self {
            peer: *stream.remote_addr(),
            tcp: Some(stream.io().0.clone()),
        }
    }
}

/// Any other listener with socket addresses (the TLS one), as one whose
/// connections have no shared stream.
pub struct Unshared<L>(pub L);

impl<L: Listener<Addr = SocketAddr>> Listener for Unshared<L> {
    type Io = L::Io;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl std::future::Future<Output = (L::Io, SocketAddr)> + Send {
        self.0.accept()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl<L: Listener<Addr = SocketAddr>> Connected<IncomingStream<'_, Unshared<L>>> for ClientConn {
    fn connect_info(stream: IncomingStream<'_, Unshared<L>>) -> Self {
        Self::from_peer(*stream.remote_addr())
    }
}
