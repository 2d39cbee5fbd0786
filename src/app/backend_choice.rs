//! Which backend a node uses (and the one line saying why), and the factory
//! that opens it on the thread where the transport will live.

use std::net::SocketAddr;

use slimebench_tcp::{TcpConfig, TcpTransport};

use super::process::fresh_id;
use super::{AppError, NodeOptions, TransportChoice};
use crate::actors::{AgentSetup, OpenTransportError, SharedError};

/// The backend a node will use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Tcp,
    Rdma,
    Shm,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Tcp => "tcp",
            Backend::Rdma => "rdma",
            Backend::Shm => "shm",
        }
    }
}

/// Decide the backend, saying why in one line. RDMA is probed (well under a
/// second): `--transport rdma` without a usable device fails with the cause
/// and the flag to use instead. `auto` picks RDMA when a device is usable,
/// else shared memory when both agents are known to share this host
/// (`one_host`: the sweep, whose worker is a thread or child of this
/// process), else TCP.
pub(super) fn choose_backend(node: &NodeOptions, one_host: bool) -> Result<(Backend, String), AppError> {
    use slimebench_verbs::Availability;
    let rdma = || slimebench_verbs::probe(&node.rdma).availability;
    match node.transport {
        TransportChoice::Tcp => Ok((Backend::Tcp, "transport: tcp".into())),
        TransportChoice::Rdma => match rdma() {
            Availability::Usable(sel) => Ok((Backend::Rdma, format!("transport: rdma ({sel})"))),
            Availability::Unusable { cause, hint } => Err(AppError::RdmaUnusable { cause, hint }),
        },
        TransportChoice::Auto => match rdma() {
            Availability::Usable(sel) => Ok((Backend::Rdma, format!("transport: rdma (auto: {sel})"))),
            Availability::Unusable { cause, .. } if one_host => Ok((
                Backend::Shm,
                format!("transport: shm (auto: both agents on this host; RDMA unusable: {cause})"),
            )),
            Availability::Unusable { cause, .. } => Ok((
                Backend::Tcp,
                format!(
                    "transport: tcp (auto: RDMA unusable: {cause}; pass --transport shm when both agents share a host)"
                ),
            )),
        },
        TransportChoice::Shm => Ok((Backend::Shm, "transport: shm".into())),
    }
}

/// A transport factory for `backend`; `Send`, so it may run on another
/// thread (the actor's own, where the transport then lives).
pub(super) fn backend_factory<S>(
    backend: &Backend,
    node: &NodeOptions,
    scope: &str,
    setup: &AgentSetup<S>,
) -> impl FnOnce() -> Result<crate::backend::AnyTransport, OpenTransportError> + Send + 'static {
    use crate::backend::AnyTransport;
    let (backend, bind, advertise) = (backend.clone(), node.bind, node.advertise_host());
    // Shared-memory segments are named by scope, alias and incarnation, so a
    // crashed run's leftovers of this agent are found and removed at start.
    let naming = slimebench_shm::ShmNaming {
        scope: scope.to_string(),
        alias: setup.alias.clone(),
        incarnation: setup.incarnation,
    };
    let slot_size = node.geometry().slot_size as usize;
    let verbs = slimebench_verbs::VerbsConfig {
        selection: node.rdma.clone(),
        max_in_flight: node.max_inflight,
        max_write_len: slot_size,
        ..slimebench_verbs::VerbsConfig::default()
    };
    move || match backend {
        Backend::Tcp => {
            let cfg = TcpConfig {
                max_write_len: slot_size,
                ..TcpConfig::default()
            };
            TcpTransport::bind(SocketAddr::new(bind, 0), advertise, fresh_id(), cfg)
                .map(AnyTransport::Tcp)
                .map_err(|e| OpenTransportError::TcpListen {
                    bind,
                    source: SharedError::new(e),
                })
        }
        Backend::Rdma => slimebench_verbs::VerbsTransport::open(verbs, fresh_id())
            .map(|t| AnyTransport::Rdma(Box::new(t)))
            .map_err(OpenTransportError::Rdma),
        Backend::Shm => {
            let cfg = slimebench_shm::ShmConfig {
                max_write_len: slot_size,
                ..slimebench_shm::ShmConfig::default()
            };
            slimebench_shm::ShmTransport::new(naming, cfg)
                .map(|t| AnyTransport::Shm(Box::new(t)))
                .map_err(|e| OpenTransportError::Shm(SharedError::new(e)))
        }
    }
}
