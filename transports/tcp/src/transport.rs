//! The TCP backend's [`Transport`]: one-sided write-with-immediate emulated
//! over a byte stream.
//!
//! The caller's thread does all the work inside `post_write_imm`,
//! `poll_completions` and `poll_ready` (non-blocking reads and writes); there
//! is no helper thread, so a round trip costs no cross-thread wake-up.
//!
//! - Writes are sent eagerly with one vectored write (frame header + payload
//!   straight from the registered region); what the socket does not take is
//!   finished on later polls. The send queue is bounded: full = `QueueFull`.
//! - Incoming frames are validated against the registered regions *before*
//!   a single payload byte is stored; large payloads are read straight into
//!   the region, small ones through a staging buffer (one syscall for header
//!   and payload). Reading stops while the completion queue is full, so a
//!   fast peer is held back by TCP flow control, not by our memory.
//! - A malformed frame, EOF or a socket error takes the link down: pending
//!   writes complete with an error status plus one error receive completion,
//!   and [`Transport::link_failure`] tells why.
//! - Who dials: the endpoint with the smaller id. The dialer's first frame is
//!   a HELLO naming both endpoint ids; the acceptor drops connections whose
//!   HELLO is not from the peer it expects (e.g. an older incarnation).

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use slimebench_proto::{
    AlignedBuf, Completion, CompletionKind, ConnectError, LinkFailure, LocalSlice, MrDesc, MrKey, PostError,
    RegisterError, RemoteAddr, Transport, TransportAddr, TransportError, TransportKind, WcStatus,
};

use crate::stream::{ByteStream, StreamFactory};
use slimebench_proto::frame::{self, Frame, FrameError, Hello, RegionBounds, WriteHeader, FRAME_HEADER_LEN};

/// Limits of one transport. Every queue a peer can influence is bounded here.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Writes posted but not yet fully handed to the socket.
    pub send_queue_depth: usize,
    /// Completions buffered before reading pauses.
    pub completion_queue_depth: usize,
    /// Largest single write accepted from the peer (and posted by us).
    pub max_write_len: usize,
    pub max_regions: usize,
    /// How long the link may take to come up after `connect`.
    pub connect_timeout: Duration,
    /// Inbound connections kept while waiting for the expected HELLO.
    pub max_pending_accepts: usize,
    /// Size of the staging buffer for small frames.
    pub staging_len: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            send_queue_depth: 64,
            completion_queue_depth: 256,
            max_write_len: 1 << 30,
            max_regions: 16,
            connect_timeout: Duration::from_secs(10),
            max_pending_accepts: 4,
            staging_len: 64 * 1024,
        }
    }
}

/// Counters for logs and tests (no per-message logging on the data path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub payload_bytes_sent: u64,
    pub payload_bytes_received: u64,
    pub protocol_errors: u64,
    pub refused_connections: u64,
}

struct Region {
    buf: AlignedBuf,
    rkey: u32,
}

struct PendingWrite {
    wr_id: u64,
    header: [u8; FRAME_HEADER_LEN],
    region: usize,
    offset: usize,
    len: usize,
    /// Bytes of header + payload already taken by the socket.
    sent: usize,
}

struct Candidate<S> {
    stream: S,
    hello: [u8; FRAME_HEADER_LEN],
    filled: usize,
}

enum Conn<S> {
    Idle,
    Dialing {
        peer: u64,
    },
    Accepting {
        peer: u64,
        candidates: Vec<Candidate<S>>,
    },
    Up {
        stream: S,
        hello_out: Option<([u8; FRAME_HEADER_LEN], usize)>,
    },
    Down,
}

enum Rx {
    Header {
        buf: [u8; FRAME_HEADER_LEN],
        filled: usize,
    },
    Payload {
        region: usize,
        offset: usize,
        remaining: usize,
        len: u32,
        imm: u32,
    },
}

impl Rx {
    fn start() -> Rx {
        Rx::Header {
            buf: [0; FRAME_HEADER_LEN],
            filled: 0,
        }
    }
}

/// The TCP-family transport, generic over where its streams come from.
pub struct FramedTransport<F: StreamFactory> {
    factory: F,
    endpoint_id: u64,
    cfg: TcpConfig,
    regions: Vec<Region>,
    bounds: Vec<RegionBounds>,
    conn: Conn<F::Stream>,
    sq: VecDeque<PendingWrite>,
    cq: VecDeque<Completion>,
    rx: Rx,
    staging: Box<[u8]>,
    staged: std::ops::Range<usize>,
    failure: Option<LinkFailure>,
    is_shut: bool,
    connect_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    stats: TcpStats,
}

/// The real TCP backend.
pub type TcpTransport = FramedTransport<crate::stream::TokioTcp>;

/// Rounds of (connection, write, read) progress per poll, so one poll cannot
/// monopolise the thread however fast the peer sends.
const MAX_ROUNDS: usize = 16;
/// Reads per round.
const MAX_READS: usize = 64;

impl<F: StreamFactory> FramedTransport<F> {
    /// A transport whose published endpoint id is `endpoint_id` (non-zero, random per start).
    ///
    /// # Panics
    /// If `endpoint_id` is zero.
    pub fn new(factory: F, endpoint_id: u64, cfg: TcpConfig) -> Self {
        assert_ne!(endpoint_id, 0, "endpoint ids are never zero");
        let staging = vec![0u8; cfg.staging_len.max(FRAME_HEADER_LEN)].into_boxed_slice();
        FramedTransport {
            factory,
            endpoint_id,
            cfg,
            regions: Vec::new(),
            bounds: Vec::new(),
            conn: Conn::Idle,
            sq: VecDeque::new(),
            cq: VecDeque::new(),
            rx: Rx::start(),
            staging,
            staged: 0..0,
            failure: None,
            is_shut: false,
            connect_deadline: None,
            stats: TcpStats::default(),
        }
    }

    pub fn stats(&self) -> &TcpStats {
        &self.stats
    }

    /// True once the byte stream to the peer is established (HELLO exchanged).
    pub fn is_up(&self) -> bool {
        matches!(self.conn, Conn::Up { .. })
    }

    /// True when every registered region's guard zones are intact.
    pub fn guards_intact(&self) -> bool {
        self.regions.iter().all(|r| r.buf.guards_intact())
    }

    fn rkey_for(&self, index: usize) -> u32 {
        // Distinct per region, and different across endpoints so that an rkey
        // of an older incarnation does not name one of our regions by chance.
        let salt = (self.endpoint_id as u32) ^ ((self.endpoint_id >> 32) as u32);
        (salt.rotate_left(7) ^ (index as u32 + 1).wrapping_mul(0x9E37_79B9)) | 1
    }

    fn fail(&mut self, status: WcStatus, cause: String) {
        if self.failure.is_some() {
            return;
        }
        for w in self.sq.drain(..) {
            self.cq.push_back(Completion {
                wr_id: w.wr_id,
                status,
                kind: CompletionKind::WriteDone,
            });
        }
        // Like flushed receive WRs on a verbs QP: tells a receiver-only waiter.
        self.cq.push_back(Completion {
            wr_id: 0,
            status,
            kind: CompletionKind::RecvImm { imm: 0, len: 0 },
        });
        self.failure = Some(LinkFailure { status, cause });
        self.conn = Conn::Down;
        self.connect_deadline = None;
        self.rx = Rx::start();
        self.staged = 0..0;
    }

    fn fail_protocol(&mut self, e: FrameError) {
        self.stats.protocol_errors += 1;
        tracing::warn!(error = %e, "closing TCP link: peer sent an invalid frame");
        self.fail(WcStatus::Flushed, format!("protocol violation by peer: {e}"));
    }

    fn fail_io(&mut self, what: &str, e: &io::Error) {
        self.fail(WcStatus::PeerGone, format!("{what}: {e}"));
    }

    /// Drive connection set-up, writes and reads. Returns whether anything
    /// happened; when it returns false every source has registered `cx`.
    fn progress(&mut self, cx: &mut Context<'_>) -> bool {
        let mut any = false;
        for _ in 0..MAX_ROUNDS {
            let mut p = self.progress_conn(cx);
            if matches!(self.conn, Conn::Up { .. }) {
                p |= self.progress_write(cx);
                p |= self.progress_read(cx);
            }
            if !p {
                break;
            }
            any = true;
        }
        any
    }

    fn progress_conn(&mut self, cx: &mut Context<'_>) -> bool {
        if let Conn::Dialing { .. } | Conn::Accepting { .. } = self.conn {
            if let Some(d) = self.connect_deadline.as_mut() {
                if d.as_mut().poll(cx).is_ready() {
                    let t = self.cfg.connect_timeout;
                    self.fail(WcStatus::PeerGone, format!("peer did not connect within {t:?}"));
                    return true;
                }
            }
        }
        match &mut self.conn {
            Conn::Idle | Conn::Down | Conn::Up { .. } => false,
            Conn::Dialing { peer } => {
                let peer = *peer;
                match self.factory.poll_dial(cx) {
                    Poll::Pending => false,
                    Poll::Ready(Ok(stream)) => {
                        let hello = frame::encode_hello(&Hello {
                            from_endpoint: self.endpoint_id,
                            to_endpoint: peer,
                        });
                        self.conn = Conn::Up {
                            stream,
                            hello_out: Some((hello, 0)),
                        };
                        self.connect_deadline = None;
                        true
                    }
                    Poll::Ready(Err(e)) => {
                        self.fail_io("cannot reach peer", &e);
                        true
                    }
                }
            }
            Conn::Accepting { peer, candidates } => {
                let peer = *peer;
                let mut progressed = false;
                loop {
                    match self.factory.poll_accept(cx) {
                        Poll::Pending => break,
                        Poll::Ready(Ok(stream)) => {
                            progressed = true;
                            if candidates.len() >= self.cfg.max_pending_accepts {
                                candidates.remove(0);
                                self.stats.refused_connections += 1;
                            }
                            candidates.push(Candidate {
                                stream,
                                hello: [0; FRAME_HEADER_LEN],
                                filled: 0,
                            });
                        }
                        Poll::Ready(Err(e)) => {
                            // Transient (e.g. EMFILE, aborted handshake): keep listening.
                            tracing::warn!(error = %e, "accept failed");
                            break;
                        }
                    }
                }
                let mut i = 0;
                let mut winner = None;
                while i < candidates.len() {
                    let c = &mut candidates[i];
                    match c.stream.poll_read(cx, &mut c.hello[c.filled..]) {
                        Poll::Pending => {
                            i += 1;
                            continue;
                        }
                        Poll::Ready(Ok(n)) if n > 0 => {
                            progressed = true;
                            c.filled += n;
                            if c.filled < FRAME_HEADER_LEN {
                                continue;
                            }
                            let verdict = match frame::decode(&c.hello) {
                                Ok(Frame::Hello(h)) if h.from_endpoint == peer && h.to_endpoint == self.endpoint_id => {
                                    Ok(())
                                }
                                Ok(Frame::Hello(h)) => Err(FrameError::WrongEndpoint {
                                    from: h.from_endpoint,
                                    to: h.to_endpoint,
                                    expected_from: peer,
                                    me: self.endpoint_id,
                                }),
                                Ok(Frame::WriteImm(_)) => Err(FrameError::Unexpected {
                                    what: "write before hello",
                                }),
                                Err(e) => Err(e),
                            };
                            match verdict {
                                Ok(()) => {
                                    winner = Some(candidates.swap_remove(i));
                                    break;
                                }
                                Err(e) => {
                                    self.stats.refused_connections += 1;
                                    tracing::warn!(error = %e, "refusing inbound TCP connection");
                                    candidates.swap_remove(i);
                                }
                            }
                        }
                        Poll::Ready(_) => {
                            // EOF or error before a complete hello.
                            progressed = true;
                            self.stats.refused_connections += 1;
                            candidates.swap_remove(i);
                        }
                    }
                }
                if let Some(c) = winner {
                    self.conn = Conn::Up {
                        stream: c.stream,
                        hello_out: None,
                    };
                    self.connect_deadline = None;
                    progressed = true;
                }
                progressed
            }
        }
    }

    fn progress_write(&mut self, cx: &mut Context<'_>) -> bool {
        let Conn::Up { stream, hello_out } = &mut self.conn else {
            return false;
        };
        let mut progressed = false;
        if let Some((hello, sent)) = hello_out {
            match stream.poll_write_vectored(cx, &[IoSlice::new(&hello[*sent..])]) {
                Poll::Pending => return false,
                Poll::Ready(Ok(0)) => {
                    self.fail(WcStatus::PeerGone, "connection closed while sending hello".into());
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    *sent += n;
                    progressed = true;
                    if *sent == FRAME_HEADER_LEN {
                        *hello_out = None;
                    } else {
                        return true;
                    }
                }
                Poll::Ready(Err(e)) => {
                    self.fail_io("sending hello", &e);
                    return true;
                }
            }
        }
        while let Some(w) = self.sq.front_mut() {
            let payload = &self.regions[w.region].buf[w.offset..w.offset + w.len];
            let (h, p) = if w.sent < FRAME_HEADER_LEN {
                (&w.header[w.sent..], payload)
            } else {
                (&w.header[..0], &payload[w.sent - FRAME_HEADER_LEN..])
            };
            let bufs = [IoSlice::new(h), IoSlice::new(p)];
            match stream.poll_write_vectored(cx, &bufs) {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) => {
                    self.fail(WcStatus::PeerGone, "connection closed while writing".into());
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    progressed = true;
                    w.sent += n;
                    if w.sent == FRAME_HEADER_LEN + w.len {
                        self.stats.frames_sent += 1;
                        self.stats.payload_bytes_sent += w.len as u64;
                        let wr_id = w.wr_id;
                        self.sq.pop_front();
                        self.cq.push_back(Completion {
                            wr_id,
                            status: WcStatus::Ok,
                            kind: CompletionKind::WriteDone,
                        });
                    }
                }
                Poll::Ready(Err(e)) => {
                    self.fail_io("writing to peer", &e);
                    return true;
                }
            }
        }
        progressed
    }

    /// Consume staged bytes into frames. Returns false if the link failed.
    fn parse_staged(&mut self) -> bool {
        while !self.staged.is_empty() && self.cq.len() < self.cfg.completion_queue_depth {
            let avail = &self.staging[self.staged.clone()];
            match &mut self.rx {
                Rx::Header { buf, filled } => {
                    let n = (FRAME_HEADER_LEN - *filled).min(avail.len());
                    buf[*filled..*filled + n].copy_from_slice(&avail[..n]);
                    *filled += n;
                    self.staged.start += n;
                    if *filled == FRAME_HEADER_LEN {
                        let hdr = *buf;
                        if !self.start_frame(&hdr) {
                            return false;
                        }
                    }
                }
                Rx::Payload {
                    region,
                    offset,
                    remaining,
                    ..
                } => {
                    let n = (*remaining).min(avail.len());
                    self.regions[*region].buf[*offset..*offset + n].copy_from_slice(&avail[..n]);
                    *offset += n;
                    *remaining -= n;
                    self.staged.start += n;
                    self.finish_payload_if_done();
                }
            }
        }
        true
    }

    /// A full header arrived: validate it before storing anything.
    fn start_frame(&mut self, hdr: &[u8; FRAME_HEADER_LEN]) -> bool {
        let h: WriteHeader = match frame::decode(hdr) {
            Ok(Frame::WriteImm(h)) => h,
            Ok(Frame::Hello(_)) => {
                self.fail_protocol(FrameError::Unexpected { what: "hello" });
                return false;
            }
            Err(e) => {
                self.fail_protocol(e);
                return false;
            }
        };
        match frame::validate_write(&h, &self.bounds, self.cfg.max_write_len) {
            Ok(t) => {
                self.rx = Rx::Payload {
                    region: t.region,
                    offset: t.offset,
                    remaining: h.len as usize,
                    len: h.len,
                    imm: h.imm,
                };
                self.finish_payload_if_done();
                true
            }
            Err(e) => {
                self.fail_protocol(e);
                false
            }
        }
    }

    fn finish_payload_if_done(&mut self) {
        if let Rx::Payload {
            remaining: 0, len, imm, ..
        } = self.rx
        {
            self.stats.frames_received += 1;
            self.stats.payload_bytes_received += u64::from(len);
            self.cq.push_back(Completion {
                wr_id: 0,
                status: WcStatus::Ok,
                kind: CompletionKind::RecvImm { imm, len },
            });
            self.rx = Rx::start();
        }
    }

    fn progress_read(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progressed = false;
        for _ in 0..MAX_READS {
            if !self.parse_staged() {
                return true;
            }
            if self.cq.len() >= self.cfg.completion_queue_depth {
                // Back-pressure: let the caller drain completions first.
                return progressed;
            }
            let Conn::Up { stream, .. } = &mut self.conn else {
                return progressed;
            };
            // Large remaining payload and nothing staged: read straight into
            // the region (never past the frame's end), saving a 16 MiB copy.
            let direct = match &mut self.rx {
                Rx::Payload {
                    region,
                    offset,
                    remaining,
                    ..
                } if *remaining >= self.staging.len() / 2 => Some((*region, offset, remaining)),
                _ => None,
            };
            let result = if let Some((region, offset, remaining)) = direct {
                let dst = &mut self.regions[region].buf[*offset..*offset + *remaining];
                match stream.poll_read(cx, dst) {
                    Poll::Ready(Ok(n)) => {
                        *offset += n;
                        *remaining -= n;
                        if n > 0 {
                            self.finish_payload_if_done();
                        }
                        Poll::Ready(Ok(n))
                    }
                    other => other,
                }
            } else {
                self.staged = 0..0;
                match stream.poll_read(cx, &mut self.staging) {
                    Poll::Ready(Ok(n)) => {
                        self.staged = 0..n;
                        Poll::Ready(Ok(n))
                    }
                    other => other,
                }
            };
            match result {
                Poll::Pending => return progressed,
                Poll::Ready(Ok(0)) => {
                    let mid_frame = !matches!(self.rx, Rx::Header { filled: 0, .. });
                    let cause = if mid_frame {
                        "peer closed the connection in the middle of a frame"
                    } else {
                        "peer closed the connection"
                    };
                    self.fail(WcStatus::PeerGone, cause.into());
                    return true;
                }
                Poll::Ready(Ok(_)) => progressed = true,
                Poll::Ready(Err(e)) => {
                    self.fail_io("reading from peer", &e);
                    return true;
                }
            }
        }
        progressed
    }
}

impl<F: StreamFactory> Transport for FramedTransport<F> {
    fn kind(&self) -> TransportKind {
        TransportKind::Tcp
    }

    fn register(&mut self, len: usize) -> Result<MrKey, RegisterError> {
        if self.regions.len() >= self.cfg.max_regions {
            return Err(RegisterError::TooMany {
                max: self.cfg.max_regions,
            });
        }
        let buf = AlignedBuf::new(len)?;
        let index = self.regions.len();
        let rkey = self.rkey_for(index);
        self.bounds.push(RegionBounds {
            rkey,
            base: buf.addr(),
            len: len as u64,
        });
        self.regions.push(Region { buf, rkey });
        Ok(MrKey(index as u32))
    }

    fn mr_desc(&self, mr: MrKey) -> MrDesc {
        let r = &self.regions[mr.0 as usize];
        MrDesc {
            addr: r.buf.addr(),
            len: r.buf.len() as u64,
            rkey: r.rkey,
        }
    }

    fn mr(&self, mr: MrKey) -> &[u8] {
        &self.regions[mr.0 as usize].buf
    }

    fn mr_mut(&mut self, mr: MrKey) -> &mut [u8] {
        &mut self.regions[mr.0 as usize].buf
    }

    fn local_addr(&self) -> TransportAddr {
        TransportAddr::Tcp {
            addr: self.factory.listen_addr(),
            endpoint_id: self.endpoint_id,
        }
    }

    fn connect(&mut self, peer: &TransportAddr) -> Result<(), ConnectError> {
        let TransportAddr::Tcp { addr, endpoint_id } = peer else {
            return Err(ConnectError::WrongKind {
                local: TransportKind::Tcp,
                peer: peer.kind(),
            });
        };
        if self.is_shut {
            return Err(ConnectError::Shutdown);
        }
        if *endpoint_id == self.endpoint_id || *endpoint_id == 0 {
            return Err(ConnectError::BadAddress {
                addr: addr.clone(),
                reason: format!("endpoint id {endpoint_id:#x} is ours or invalid"),
            });
        }
        // A previous link (an older incarnation of the peer) is dropped along
        // with its queues: nobody can be waiting on it yet.
        self.conn = Conn::Idle;
        self.sq.clear();
        self.cq.clear();
        self.rx = Rx::start();
        self.staged = 0..0;
        self.failure = None;
        if self.endpoint_id < *endpoint_id {
            self.factory.dial(addr)?;
            self.conn = Conn::Dialing { peer: *endpoint_id };
        } else {
            self.conn = Conn::Accepting {
                peer: *endpoint_id,
                candidates: Vec::new(),
            };
        }
        self.connect_deadline = Some(Box::pin(tokio::time::sleep(self.cfg.connect_timeout)));
        Ok(())
    }

    fn post_write_imm(&mut self, wr_id: u64, src: LocalSlice, dst: RemoteAddr, imm: u32) -> Result<(), PostError> {
        if let Some(f) = &self.failure {
            return Err(PostError::LinkDown(f.clone()));
        }
        if matches!(self.conn, Conn::Idle) {
            return Err(PostError::NotConnected);
        }
        if self.sq.len() >= self.cfg.send_queue_depth {
            return Err(PostError::QueueFull { depth: self.sq.len() });
        }
        let region = self
            .regions
            .get(src.mr.0 as usize)
            .ok_or(PostError::UnknownMr(src.mr))?;
        src.validate(region.buf.len(), self.cfg.max_write_len)?;
        let header = frame::encode_write(&WriteHeader {
            rkey: dst.rkey,
            addr: dst.addr,
            len: src.len as u32,
            imm,
        });
        self.sq.push_back(PendingWrite {
            wr_id,
            header,
            region: src.mr.0 as usize,
            offset: src.offset,
            len: src.len,
            sent: 0,
        });
        // Send now: the common case is an idle socket that takes it all.
        self.progress_write(&mut Context::from_waker(Waker::noop()));
        Ok(())
    }

    fn poll_completions(&mut self, out: &mut Vec<Completion>) -> Result<usize, TransportError> {
        self.progress(&mut Context::from_waker(Waker::noop()));
        let n = self.cq.len();
        out.extend(self.cq.drain(..));
        Ok(n)
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.cq.is_empty() || self.failure.is_some() || self.progress(cx) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn link_failure(&self) -> Option<&LinkFailure> {
        self.failure.as_ref()
    }

    fn busy_poll_helps(&self) -> bool {
        // A write the socket did not take at once, or a large payload still
        // arriving: the kernel is busy with this socket, let it work.
        let receiving_bulk = matches!(self.rx, Rx::Payload { remaining, .. } if remaining >= self.staging.len());
        self.sq.is_empty() && !receiving_bulk
    }

    fn shutdown(&mut self) {
        self.is_shut = true;
        self.fail(WcStatus::Cancelled, "transport shut down locally".into());
    }
}

impl TcpTransport {
    /// Listen on `bind` (publishing `advertise` as host if given) with the
    /// given endpoint id. Must run inside a tokio runtime with IO enabled.
    ///
    /// # Errors
    /// The bind error.
    pub fn bind(
        bind: std::net::SocketAddr,
        advertise: Option<String>,
        endpoint_id: u64,
        cfg: TcpConfig,
    ) -> io::Result<Self> {
        let factory = crate::stream::TokioTcp::bind(bind, advertise, cfg.connect_timeout)?;
        Ok(FramedTransport::new(factory, endpoint_id, cfg))
    }
}
