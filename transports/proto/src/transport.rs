//! The verbs-shaped transport seam every backend implements.
//!
//! The shape follows RDMA verbs on purpose, so that the mailbox protocol is
//! written once and runs unchanged on RDMA, TCP, shared memory and the simulator:
//!
//! 1. memory is registered first ([`Transport::register`]) and data is only ever
//!    sent from registered memory;
//! 2. [`Transport::post_write_imm`] returns before delivery; a full send queue is
//!    [`PostError::QueueFull`] (backpressure), never a block;
//! 3. completions are polled without blocking ([`Transport::poll_completions`]);
//!    a write completion means "the local side is done with the buffer", not
//!    "the peer processed it";
//! 4. [`Transport::poll_ready`] lets an async caller sleep until progress is
//!    possible instead of spinning;
//! 5. [`Transport::shutdown`] is idempotent and completes everything pending
//!    with [`WcStatus::Cancelled`].
//!
//! Link failures (peer closed, reset, a malformed frame, a remote access error)
//! are not returned as `Err` from polling: like a verbs QP entering the error
//! state, they surface as error completions, and [`Transport::link_failure`]
//! says why. `Err` from [`Transport::poll_completions`] is reserved for local,
//! unrecoverable faults.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::task::{Context, Poll};

use crate::buf::AllocError;

/// Local handle of a registered memory region (the verbs `lkey`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MrKey(pub u32);

/// What a peer needs to write into a registered region (addr, len, rkey).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MrDesc {
    /// Address of the first byte in the owner's address space (opaque to the peer).
    pub addr: u64,
    /// Length of the region in bytes.
    pub len: u64,
    /// Remote key the owner checks on every incoming write.
    pub rkey: u32,
}

impl MrDesc {
    /// Remote address of `offset` within the region, if `offset + len` fits.
    pub fn at(&self, offset: u64, len: u64) -> Option<RemoteAddr> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then_some(RemoteAddr {
            rkey: self.rkey,
            addr: self.addr.checked_add(offset)?,
        })
    }
}

/// A range of one of *our* registered regions.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LocalSlice {
    pub mr: MrKey,
    pub offset: usize,
    pub len: usize,
}

impl LocalSlice {
    /// Check that the slice lies inside its region of `region_len` bytes and
    /// fits one write of at most `max_write_len` bytes (and a u32 length).
    /// Every backend checks a posted write with this before touching memory.
    ///
    /// # Errors
    /// [`PostError::BadLocalSlice`] outside the region, [`PostError::TooLong`] over the limit.
    pub fn validate(&self, region_len: usize, max_write_len: usize) -> Result<(), PostError> {
        if self.offset.checked_add(self.len).is_none_or(|end| end > region_len) {
            return Err(PostError::BadLocalSlice {
                mr: self.mr,
                offset: self.offset,
                len: self.len,
                region_len,
            });
        }
        let max = max_write_len.min(u32::MAX as usize);
        if self.len > max {
            return Err(PostError::TooLong { len: self.len, max });
        }
        Ok(())
    }
}

/// Where in the peer's registered memory a write lands.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RemoteAddr {
    pub rkey: u32,
    pub addr: u64,
}

/// Which backend a transport is; exchanged at rendezvous so a mismatch is caught.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    Tcp,
    Rdma,
    Shm,
    Sim,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Rdma => "rdma",
            TransportKind::Shm => "shm",
            TransportKind::Sim => "sim",
        })
    }
}

/// Backend-specific connection information, published at rendezvous.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransportAddr {
    /// A TCP listener plus the endpoint's random id (the dialer proves which
    /// endpoint it wants, so a connection meant for an older incarnation is refused).
    Tcp { addr: String, endpoint_id: u64 },
    /// An RDMA RC queue pair: what the peer needs to move its QP to RTR.
    Rdma {
        /// GID as 32 hex digits (RoCE and IB with a global route).
        gid: String,
        lid: u16,
        qpn: u32,
        psn: u32,
        /// Active path MTU in bytes (256..4096).
        mtu: u32,
        endpoint_id: u64,
    },
    /// Shared memory on one host.
    Shm {
        /// Identifies the host (kernel boot id), so peers on another host refuse.
        host_id: String,
        /// Name of the doorbell/ring segment the peer maps.
        doorbell: String,
        /// Registered regions the peer may map and write: rkey, segment name, length.
        regions: Vec<ShmRegion>,
        endpoint_id: u64,
    },
    /// A simulator node.
    Sim { node: u64, endpoint_id: u64 },
}

/// One shared-memory region as published at rendezvous.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShmRegion {
    pub rkey: u32,
    pub name: String,
    pub len: u64,
}

impl TransportAddr {
    /// The backend this address belongs to.
    pub fn kind(&self) -> TransportKind {
        match self {
            TransportAddr::Tcp { .. } => TransportKind::Tcp,
            TransportAddr::Rdma { .. } => TransportKind::Rdma,
            TransportAddr::Shm { .. } => TransportKind::Shm,
            TransportAddr::Sim { .. } => TransportKind::Sim,
        }
    }
}

/// Status of a work completion (mirrors the verbs statuses we can act on).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WcStatus {
    Ok,
    /// The peer closed or reset the link, or was declared gone.
    PeerGone,
    /// We shut the transport down while the operation was pending.
    Cancelled,
    /// The transport gave up retransmitting (verbs `RETRY_EXC_ERR`).
    RetryExceeded,
    /// The peer refused the write: bad rkey or out-of-range address.
    RemoteAccess,
    /// The link entered the error state for another reason; see [`Transport::link_failure`].
    Flushed,
}

impl WcStatus {
    pub fn is_ok(self) -> bool {
        self == WcStatus::Ok
    }
}

impl fmt::Display for WcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WcStatus::Ok => "ok",
            WcStatus::PeerGone => "peer gone",
            WcStatus::Cancelled => "cancelled",
            WcStatus::RetryExceeded => "retry exceeded",
            WcStatus::RemoteAccess => "remote access error",
            WcStatus::Flushed => "flushed",
        })
    }
}

/// What completed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CompletionKind {
    /// A posted write finished on the local side.
    WriteDone,
    /// A peer's write-with-immediate landed in our memory (`len` bytes).
    /// With an error status, it reports that the link went down while receiving.
    RecvImm { imm: u32, len: u32 },
}

/// One work completion.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub wr_id: u64,
    pub status: WcStatus,
    pub kind: CompletionKind,
}

/// Why a link is down, kept by the transport after it fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFailure {
    /// The status pending operations completed with.
    pub status: WcStatus,
    /// Human-readable cause (the typed error was logged where it was detected).
    pub cause: String,
}

impl fmt::Display for LinkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.cause)
    }
}

/// Error from [`Transport::register`].
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    /// Allocation failed; use a smaller `--buf-mb`.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The transport's region table is full; register fewer, larger regions.
    #[error("too many registered regions (max {max})")]
    TooMany { max: usize },
    /// The device refused the registration.
    #[error("memory registration failed: {0}")]
    Device(String),
}

/// Error from [`Transport::connect`].
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConnectError {
    /// The peer runs another backend; start both sides with the same `--transport`.
    #[error("peer uses the {peer} transport, this side uses {local}")]
    WrongKind { local: TransportKind, peer: TransportKind },
    /// The peer's address could not be reached; it may have exited (retry with fresh info).
    #[error("cannot reach peer at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The peer's published address does not parse.
    #[error("peer address {addr:?} is invalid: {reason}")]
    BadAddress { addr: String, reason: String },
    /// The transport was shut down; create a new one.
    #[error("transport is shut down")]
    Shutdown,
}

/// Error from [`Transport::post_write_imm`].
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PostError {
    /// Backpressure: the send queue holds `depth` writes. Poll completions, then retry.
    #[error("send queue full ({depth} outstanding writes)")]
    QueueFull { depth: usize },
    /// `connect` has not been called yet.
    #[error("transport is not connected")]
    NotConnected,
    /// The link is down or shut down; pending work completed with an error status.
    #[error("link is down: {0}")]
    LinkDown(LinkFailure),
    /// The local slice is not inside a registered region (a caller bug).
    #[error("local slice {offset}+{len} is outside region {mr:?} of {region_len} bytes")]
    BadLocalSlice {
        mr: MrKey,
        offset: usize,
        len: usize,
        region_len: usize,
    },
    /// No region is registered under this key (a caller bug).
    #[error("unknown memory region {0:?}")]
    UnknownMr(MrKey),
    /// The write is longer than the backend can carry in one operation.
    #[error("write of {len} bytes exceeds the transport limit of {max}")]
    TooLong { len: usize, max: usize },
}

/// A local, unrecoverable fault from [`Transport::poll_completions`].
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    /// The completion machinery itself failed; the transport is unusable.
    #[error("transport failed: {0}")]
    Fatal(String),
}

/// A verbs-shaped, one-sided transport. See the module docs for the contract.
///
/// Implementations are single-threaded: an actor owns its transport and polls
/// it on its own thread (a cross-thread wake-up costs ~10 µs on the target
/// machines, more than a small round trip).
pub trait Transport {
    /// Which backend this is.
    fn kind(&self) -> TransportKind;

    /// Register `len` bytes of zeroed, page-aligned memory.
    ///
    /// # Errors
    /// [`RegisterError`] when memory or the region table is exhausted.
    fn register(&mut self, len: usize) -> Result<MrKey, RegisterError>;

    /// Descriptor of a registered region, to publish to the peer.
    ///
    /// # Panics
    /// On a key this transport did not hand out (a caller bug).
    fn mr_desc(&self, mr: MrKey) -> MrDesc;

    /// Read access to a registered region.
    ///
    /// The peer may write a region it was given (its [`MrDesc`]) at any time,
    /// as with RDMA: what is read here is only meaningful once a completion
    /// said the write that filled it arrived, and a reader must validate it
    /// (a hostile peer controls these bytes).
    ///
    /// # Panics
    /// On a key this transport did not hand out.
    fn mr(&self, mr: MrKey) -> &[u8];

    /// Write access to a registered region.
    ///
    /// # Panics
    /// On a key this transport did not hand out.
    fn mr_mut(&mut self, mr: MrKey) -> &mut [u8];

    /// Connection information to publish at rendezvous.
    fn local_addr(&self) -> TransportAddr;

    /// Connect to the peer described by `peer`. The link may come up
    /// asynchronously; writes posted before that are queued. Connecting again
    /// drops the previous link together with its queued work and completions
    /// (rendezvous reconnects before anything is posted on the new link).
    ///
    /// # Errors
    /// [`ConnectError`] when the peer is of another kind or unreachable.
    fn connect(&mut self, peer: &TransportAddr) -> Result<(), ConnectError>;

    /// Post a write of `src` into the peer's memory at `dst`, followed by the
    /// immediate `imm` which the peer receives as [`CompletionKind::RecvImm`].
    ///
    /// # Errors
    /// [`PostError::QueueFull`] is backpressure; every other variant means the
    /// write was not posted and will produce no completion.
    fn post_write_imm(&mut self, wr_id: u64, src: LocalSlice, dst: RemoteAddr, imm: u32) -> Result<(), PostError>;

    /// Move finished work into `out` without blocking; returns how many were added.
    ///
    /// # Errors
    /// Only local, unrecoverable faults ([`TransportError`]).
    fn poll_completions(&mut self, out: &mut Vec<Completion>) -> Result<usize, TransportError>;

    /// `Ready` when [`Transport::poll_completions`] may make progress; otherwise
    /// registers `cx`'s waker and returns `Pending`.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()>;

    /// Why the link failed, once it has.
    fn link_failure(&self) -> Option<&LinkFailure>;

    /// Whether busy-polling may shorten the current wait. Kernel-socket
    /// backends say no while a bulk transfer is mid-flight: spinning syscalls
    /// then contend with the kernel's own processing of that socket. RDMA and
    /// shared memory always gain from it.
    fn busy_poll_helps(&self) -> bool {
        true
    }

    /// Tear the link down. Idempotent; everything pending completes as
    /// [`WcStatus::Cancelled`] on the next poll.
    fn shutdown(&mut self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mr_desc_at_checks_bounds() {
        let d = MrDesc {
            addr: 0x1000,
            len: 100,
            rkey: 7,
        };
        assert_eq!(d.at(0, 100), Some(RemoteAddr { rkey: 7, addr: 0x1000 }));
        assert_eq!(d.at(90, 10).unwrap().addr, 0x1000 + 90);
        assert_eq!(d.at(91, 10), None);
        assert_eq!(d.at(u64::MAX, 2), None);
    }

    #[test]
    fn transport_addr_codec_is_tagged() {
        let a = TransportAddr::Tcp {
            addr: "127.0.0.1:9".into(),
            endpoint_id: 5,
        };
        let s = serde_json::to_string(&a).unwrap();
        assert!(s.contains("\"kind\":\"tcp\""), "{s}");
        assert_eq!(serde_json::from_str::<TransportAddr>(&s).unwrap(), a);
        assert_eq!(a.kind(), TransportKind::Tcp);
    }
}
