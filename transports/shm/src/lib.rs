//! slimebench shared-memory backend: one-sided write-with-immediate between
//! processes on one host, the single-host analogue of RDMA (as UCX's
//! shared-memory transports are).
//!
//! Module map:
//! - [`transport`]: [`ShmTransport`], its [`ShmConfig`], errors and stats;
//! - [`naming`]: [`ShmNaming`] and the segment / wake-socket names;
//! - `segment`: segment files (header, create, verify-and-map, stale sweep);
//! - `ring`: the SPSC completion ring and its sleep / wake flags;
//! - `wake`: the wake socket and the peer's liveness (pidfd);
//! - `sys`: thin wrappers over mmap, flock, pidfd_open and `/proc`.
//!
//! # Design
//!
//! **Registered memory** is a file `/dev/shm/slimebench.{scope}.{alias}.{inc}.r{N}`
//! (created `O_EXCL`, mode 0600), mapped `MAP_SHARED`: a one-page header, then
//! the page-aligned region. The header records kind, the owner's incarnation,
//! pid and process start time, the region's length, rkey and published base
//! address (`MrDesc::addr` is a per-endpoint fiction `(index+1) << 40`, so it
//! survives re-publication and leaks nothing about our address space).
//! [`Transport::local_addr`](slimebench_proto::Transport::local_addr) lists the
//! regions registered so far in `TransportAddr::Shm`, unchanged from proto.
//!
//! **Connect** refuses another host (boot id), names that are not exactly ours
//! (no `/`, right incarnation), and any segment whose header disagrees with the
//! descriptor (incarnation, kind, rkey, length, file size, owner alive, file
//! owned by our uid). Then it maps the peer's doorbell and regions, writes
//! `attached = our id` into the peer's ring (the peer may now drop its names),
//! resets our own ring to accept only this peer under a new epoch, and rings
//! the peer's bell.
//!
//! **Writes**: `post_write_imm` validates the target against the peer's
//! regions with [`validate_write`](slimebench_proto::frame::validate_write),
//! copies the payload into the peer's mapping, publishes `{addr, rkey, len,
//! imm, tag}` in the peer's ring and completes the write at once (a full ring
//! is [`PostError::QueueFull`](slimebench_proto::PostError::QueueFull)). The
//! receiver's `poll_completions` consumes its own ring and validates every
//! entry (sequence, link tag, and the write against its own regions): any
//! violation fails the link with `Flushed`, nothing after it is trusted. A
//! target outside the peer's memory completes with `RemoteAccess` and fails
//! the link, as a verbs QP would.
//!
//! **Waiting** (`poll_ready`, after the caller's bounded busy-poll): announce
//! sleeping in our ring, fence, look again, then wait on our wake socket (an
//! abstract Unix datagram socket: no file, gone with the process), the peer's
//! pidfd (readable when it exits, SIGKILL included) and, until the peer
//! accepts us, the connect deadline. A producer sends a datagram only when it
//! sees the flag, and clears it (one wake-up per sleep). Why no wake-up is
//! lost: see the `ring` module (a Dekker pair with `SeqCst` fences on both
//! sides; exhaustively model-checked in its tests).
//!
//! **Lifetime of names** — what a SIGKILL leaves in `/dev/shm`:
//!
//! | killed while / after | left behind | removed by |
//! |---|---|---|
//! | `new` (doorbell just created) | `…{inc}.db`, maybe without header | next `new` of the same scope+alias, or [`ShmTransport::sweep_stale`] (owner lock free) |
//! | `register` / before the peer connected | `…{inc}.db`, `…{inc}.rN` | the same, or the peer if it noticed our death after mapping us |
//! | connected, peer attached, but we have not looked since | the same | the peer, when its pidfd reports our death; else as above |
//! | after our `connect`, `post_write_imm` or a poll saw the connected peer attached | nothing | — |
//! | any stage | never the wake socket (abstract) nor the memory (freed with the last mapping) | kernel |
//!
//! A SIGTERM that the process does not handle is the same as SIGKILL here.
//!
//! Segments of a live owner are never removed: the owner holds an exclusive
//! `flock` on its doorbell file for its life, and the kernel drops it at death.
//! A graceful `shutdown` or drop removes every name left.

pub mod naming;
mod ring;
mod segment;
mod sys;
pub mod transport;
mod wake;

pub use naming::ShmNaming;
pub use ring::RingViolation;
pub use segment::SweepReport;
pub use transport::{ShmConfig, ShmError, ShmStats, ShmTransport};

#[cfg(test)]
mod tests;
