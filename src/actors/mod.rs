//! actix actors: [`DriverActor`] and [`WorkerActor`].
//!
//! The actors are thin: each owns the setup of one agent, runs the node body
//! ([`driver::drive_sweep`], [`worker::serve`]) on its own arbiter thread
//! — so the transport is created, polled and dropped on that one thread, no
//! cross-thread hop per call — and turns messages into alarm trips. Every
//! protocol decision lives in `slimebench_proto` (rendezvous, mailbox) and
//! [`crate::rpc`]; sequencing lives in the node bodies.

pub mod driver;
pub mod echo;
pub mod worker;

pub use driver::{DriverActor, DriverReport, RunSweep};
pub use worker::{WorkerActor, WorkerReport};

use std::time::Duration;

use actix::Message;
use slimebench_proto::rendezvous::{LocalEndpoint, Timing};
use slimebench_proto::{Geometry, Keys, MrDesc, Transport};

use crate::bench::sweep::SweepError;
use crate::control::ControlError;
use crate::rpc::{RpcError, SpinPolicy};

/// Builds the transport on the actor's own thread (an RDMA QP, a TCP
/// listener registered with that thread's reactor, …). Not `Send`: callers
/// that start an actor on another thread box a `Send` closure there.
pub type TransportFactory<T> = Box<dyn FnOnce() -> Result<T, OpenTransportError>>;

/// Why a backend could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenTransportError {
    /// The TCP listener could not bind (address in use, not local, …).
    #[error("cannot listen on {bind}: {source}")]
    TcpListen {
        bind: std::net::IpAddr,
        #[source]
        source: SharedError,
    },
    /// The RDMA device could not be opened.
    #[error(transparent)]
    Rdma(#[from] slimebench_verbs::OpenError),
    /// The shared-memory transport could not be created.
    #[error("shared memory: {0}")]
    Shm(#[source] SharedError),
}

/// A source error that is neither `Clone` nor `PartialEq` (an `io::Error`, a
/// backend's own error), shared so a [`NodeError`] can be cloned. Two are
/// equal when they say the same thing.
#[derive(Debug, Clone)]
pub struct SharedError(pub std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl SharedError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        SharedError(std::sync::Arc::new(e))
    }
}

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for SharedError {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for SharedError {}

/// Everything one agent needs besides its transport.
#[derive(Clone)]
pub struct AgentSetup<S> {
    pub store: S,
    pub keys: Keys,
    pub alias: String,
    /// Fresh and non-zero for every start.
    pub incarnation: u64,
    pub timing: Timing,
    pub geometry: Geometry,
    pub spin: SpinPolicy,
    /// Longest wait between two looks at the store's notifications.
    pub poll_period: Duration,
    /// Bound on control-loop iterations (the simulator sets one).
    pub max_steps: Option<u64>,
    /// Bound on each call's wait for its reply (driver).
    pub call_timeout: Option<Duration>,
}

impl<S> AgentSetup<S> {
    fn local(&self, transport: &impl Transport, mailbox: MrDesc) -> LocalEndpoint {
        LocalEndpoint {
            alias: self.alias.clone(),
            incarnation: self.incarnation,
            host: crate::bench::summary::hostname(),
            pid: std::process::id(),
            transport: transport.local_addr(),
            mailbox,
            geometry: self.geometry,
        }
    }
}

/// Why a node (driver or worker) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The transport could not be created (bind failed, no device, …).
    #[error("cannot create transport: {0}")]
    Transport(#[from] OpenTransportError),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("rendezvous failed: {0}")]
    Control(#[from] ControlError),
    #[error(transparent)]
    Sweep(#[from] SweepError),
    /// The peer was lost mid-run (link down, left, lease expired, timeout).
    #[error("lost peer {peer}: {error}")]
    Peer { peer: String, error: RpcError },
    /// Asked to stop before finishing.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// The actor was gone before it answered (it panicked or its thread died).
    #[error("{0} actor stopped without answering")]
    ActorGone(&'static str),
}

/// Stop a node: pending calls and waits fail or end with a shutdown.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Stop a node at once, without any cleanup: no cleanup event, no key
/// removal, the transport just disappears — what SIGKILL does to a process.
/// The simulator uses it to check that peers notice by lease expiry.
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct Abort;
