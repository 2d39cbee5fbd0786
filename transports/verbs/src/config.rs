//! Configuration, errors and counters of [`crate::VerbsTransport`] (always
//! compiled, so callers need no `cfg` to build a config or match an error).

use crate::attrs::DepthError;
use crate::availability::Cause;
use crate::select::Selection;

/// Limits and choices of one verbs transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerbsConfig {
    /// Device, port and GID (`--device`, `--ib-port`, `--gid-index`, or env).
    pub selection: Selection,
    /// Slots per mailbox (`--max-inflight`): sizes the send queue and the
    /// receive window (see [`crate::attrs::QueueDepths::new`]).
    pub max_in_flight: u32,
    /// Raise the receive window above 2 × `max_in_flight` (min 64), e.g. to
    /// the original's 2048. Receives are zero-length: they cost no memory.
    pub recv_window: Option<u32>,
    pub max_regions: usize,
    /// Largest single write we post (verbs allows up to 2 GiB). Incoming
    /// writes are bounded by the hardware instead: a write outside a
    /// registered region fails at the writer with a remote access error.
    pub max_write_len: usize,
}

impl Default for VerbsConfig {
    fn default() -> Self {
        VerbsConfig {
            selection: Selection::default(),
            max_in_flight: 16,
            recv_window: None,
            max_regions: 16,
            max_write_len: 1 << 30,
        }
    }
}

/// Why [`crate::VerbsTransport::open`] failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// RDMA cannot be used on this machine or with this selection; `hint`
    /// names the fix and the `--transport` to use instead.
    #[error("RDMA is not usable: {cause}; {hint}")]
    Unusable { cause: Cause, hint: String },
    /// The device refused a resource; see `reason` (often a limit, or
    /// permissions on /dev/infiniband).
    #[error("{device}: cannot {what}: {reason}")]
    Device {
        device: String,
        what: &'static str,
        reason: String,
    },
    /// The queues for `max_in_flight` exceed the device's limits; lower `--max-inflight`.
    #[error("{device}: {source}")]
    Depth { device: String, source: DepthError },
}

/// Counters for logs and tests (nothing is logged per message).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerbsStats {
    pub writes_posted: u64,
    pub write_completions: u64,
    pub recv_completions: u64,
    /// Receives posted (the initial window plus one per receive completion).
    pub recvs_posted: u64,
    /// Error receive completions folded into the single one reported per failure.
    pub recv_errors_folded: u64,
    /// Completions that arrived after `shutdown` had already reported their work as cancelled.
    pub late_completions_dropped: u64,
    /// Completion-channel events read (each one a wake-up without spinning).
    pub cq_events: u64,
}
