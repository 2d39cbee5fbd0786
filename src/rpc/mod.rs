//! The mailbox RPC session over any [`Transport`](slimebench_proto::Transport).
//!
//! Layout per session (both sides agree on it at rendezvous): the server's
//! mailbox and the client's reply mailbox each have `slot_count` slots of
//! `slot_size` bytes; the client also has a send area of the same shape. A
//! call takes a slot (a credit), writes header + payload from its send slot
//! into the server's slot with write-with-immediate (imm = slot id); the
//! server handles it in place and writes the reply from that same slot into
//! the caller's slot with the same id.
//!
//! - [`client`]: [`RpcClient`], calls and replies;
//! - [`server`]: [`RpcServer`], the serve loop and the [`Handler`] trait ([`Echo`]);
//! - [`alarm`]: [`Alarm`], how the control plane interrupts waits;
//! - `wait`: bounded busy-poll then park.

pub mod alarm;
pub mod client;
pub mod server;
mod wait;

pub use alarm::{Alarm, Trip};
pub use client::{Reply, RpcClient};
pub use server::{Echo, Handler, Outcome, RpcServer, ServeEnd};
pub use wait::SpinPolicy;

use slimebench_proto::{HeaderError, LinkFailure, PostError, RegisterError, TransportError};

/// A failed call or session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The payload does not fit a slot; raise `--buf-mb` (slot size) or send less.
    #[error("payload of {len} bytes does not fit a slot (max {max} = slot size - 16 byte header); raise --buf-mb")]
    PayloadTooLarge { len: usize, max: usize },
    /// Every slot is taken by a call in flight; wait for a reply first.
    #[error("all {slots} slots are in flight")]
    Busy { slots: u32 },
    /// The session has no peer mailbox yet (rendezvous not done).
    #[error("session is not attached to a peer")]
    NotAttached,
    /// Registering the mailbox failed.
    #[error("cannot register mailbox memory: {0}")]
    Register(#[from] RegisterError),
    /// The transport refused the write.
    #[error("cannot post write: {0}")]
    Post(PostError),
    /// The data link went down (peer closed, reset, protocol violation).
    #[error("link to peer is down ({0})")]
    LinkDown(LinkFailure),
    /// The control plane declared the peer gone (cleanup event, lease expired).
    #[error("peer gone: {0}")]
    PeerGone(String),
    /// This session was shut down.
    #[error("session shut down")]
    Shutdown,
    /// No reply within the call timeout. The session is failed: a late reply
    /// could land in the slot the next call would reuse.
    #[error("no reply within {after_ms} ms (call timeout)")]
    Timeout { after_ms: u64 },
    /// The server answered with an exception.
    #[error("remote error: {0}")]
    Remote(String),
    /// A local transport fault.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The peer sent something that is not a valid message.
    #[error("invalid message from peer: {0}")]
    BadMessage(HeaderError),
}

impl RpcError {
    /// True when the peer is gone or the session is over (as opposed to a
    /// problem with one call).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            RpcError::LinkDown(_) | RpcError::PeerGone(_) | RpcError::Shutdown | RpcError::Transport(_)
        )
    }
}

#[cfg(test)]
mod budget_tests;
