//! How the TCP backend gets and uses its byte streams.
//!
//! - [`ByteStream`]: the data path's view of a stream — poll-style reads and
//!   vectored writes. The real implementation, [`TcpFd`], always attempts the
//!   syscall first and consults the reactor only to park: tokio's own
//!   `TcpStream` skips the syscall while its cached readiness says "not
//!   readable", which makes busy-polling blind until the reactor runs.
//! - [`AsyncStream`] adapts any `AsyncRead + AsyncWrite` (simulated networks,
//!   in-memory pipes), so the transport is generic over the stream type.
//! - [`StreamFactory`]: a listener to accept from and a way to dial; [`TokioTcp`]
//!   is the real one.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use slimebench_proto::ConnectError;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connected, non-blocking byte stream.
pub trait ByteStream {
    /// Read what is available into `buf`; `Ready(Ok(0))` is EOF. `Pending`
    /// registers `cx` to be woken when more arrives.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;

    /// Write as much of `bufs` as the stream takes now.
    fn poll_write_vectored(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>>;
}

/// A kernel TCP socket: raw non-blocking syscalls, tokio's reactor to park.
pub struct TcpFd {
    fd: AsyncFd<std::net::TcpStream>,
}

impl TcpFd {
    /// Wrap a connected socket (made non-blocking, `TCP_NODELAY` set).
    /// Must be called inside a tokio runtime with IO enabled.
    ///
    /// # Errors
    /// Setting socket options or registering with the reactor failed.
    pub fn new(s: std::net::TcpStream) -> io::Result<Self> {
        s.set_nonblocking(true)?;
        // A 1 KiB echo would otherwise wait on Nagle and delayed ACKs.
        s.set_nodelay(true)?;
        // SAFETY: the std TcpStream owns its descriptor, keeps it open and
        // returns the same one from as_raw_fd until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register(s) }?;
        Ok(TcpFd { fd })
    }

    fn from_tokio(s: tokio::net::TcpStream) -> io::Result<Self> {
        TcpFd::new(s.into_std()?)
    }
}

impl ByteStream for TcpFd {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        // Always try first: the reactor's readiness may be stale while we spin.
        match self.fd.get_ref().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return Poll::Ready(r),
        }
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            // try_io clears the readiness on WouldBlock, so the next round
            // really waits for the reactor.
            match guard.try_io(|s| s.get_ref().read(buf)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_write_vectored(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.fd.get_ref().write_vectored(bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return Poll::Ready(r),
        }
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|s| s.get_ref().write_vectored(bufs)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Any tokio `AsyncRead + AsyncWrite` stream as a [`ByteStream`].
pub struct AsyncStream<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Unpin> ByteStream for AsyncStream<S> {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        ready!(Pin::new(&mut self.0).poll_read(cx, &mut rb))?;
        Poll::Ready(Ok(rb.filled().len()))
    }

    fn poll_write_vectored(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

/// Supplies connected byte streams to the transport.
pub trait StreamFactory {
    type Stream: ByteStream;

    /// Address to publish so the peer can dial us.
    fn listen_addr(&self) -> String;

    /// Start dialing `addr`; collect the stream with [`StreamFactory::poll_dial`].
    ///
    /// # Errors
    /// [`ConnectError::BadAddress`] when `addr` cannot be dialed at all.
    fn dial(&mut self, addr: &str) -> Result<(), ConnectError>;

    /// Progress the dial started by [`StreamFactory::dial`].
    fn poll_dial(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Stream>>;

    /// Accept the next inbound stream.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Stream>>;
}

type DialFuture = Pin<Box<dyn Future<Output = io::Result<tokio::net::TcpStream>>>>;

/// Real TCP on the tokio reactor of the current thread.
pub struct TokioTcp {
    listener: tokio::net::TcpListener,
    advertise: String,
    dialing: Option<DialFuture>,
    dial_timeout: Duration,
}

impl TokioTcp {
    /// Listen on `bind` and publish `advertise` as host (defaults to the bound
    /// address). Must be called inside a tokio runtime with IO enabled.
    ///
    /// # Errors
    /// The bind error.
    pub fn bind(bind: SocketAddr, advertise: Option<String>, dial_timeout: Duration) -> io::Result<Self> {
        let std_listener = std::net::TcpListener::bind(bind)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let local = listener.local_addr()?;
        let advertise = advertise.map_or_else(|| local.to_string(), |host| format!("{host}:{}", local.port()));
        Ok(TokioTcp {
            listener,
            advertise,
            dialing: None,
            dial_timeout,
        })
    }
}

impl StreamFactory for TokioTcp {
    type Stream = TcpFd;

    fn listen_addr(&self) -> String {
        self.advertise.clone()
    }

    fn dial(&mut self, addr: &str) -> Result<(), ConnectError> {
        let target: SocketAddr = addr
            .parse()
            .map_err(|e: std::net::AddrParseError| ConnectError::BadAddress {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        let timeout = self.dial_timeout;
        self.dialing = Some(Box::pin(async move {
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(target))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("dial timed out after {timeout:?}")))?
        }));
        Ok(())
    }

    fn poll_dial(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Stream>> {
        let Some(fut) = self.dialing.as_mut() else {
            return Poll::Pending;
        };
        let r = ready!(fut.as_mut().poll(cx));
        self.dialing = None;
        Poll::Ready(r.and_then(TcpFd::from_tokio))
    }

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Stream>> {
        let (s, _) = ready!(self.listener.poll_accept(cx))?;
        Poll::Ready(TcpFd::from_tokio(s))
    }
}
