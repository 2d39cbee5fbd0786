//! The data-path backend chosen at run time.
//!
//! [`AnyTransport`] is an enum over the backends (static dispatch: every
//! method is a `match`), so the generic actors, RPC session and agent run on
//! whichever one the app's backend choice (`app/backend_choice.rs`) picks,
//! with the reason in one line.

use std::task::{Context, Poll};

use slimebench_proto::{
    Completion, ConnectError, LinkFailure, LocalSlice, MrDesc, MrKey, PostError, RegisterError, RemoteAddr, Transport,
    TransportAddr, TransportError, TransportKind,
};
use slimebench_shm::ShmTransport;
use slimebench_tcp::TcpTransport;
use slimebench_verbs::VerbsTransport;

/// A backend chosen at run time.
// One per node: its size does not matter, and unboxed TCP saves a pointer
// hop on every call of the hottest backend here.
#[allow(clippy::large_enum_variant)]
pub enum AnyTransport {
    Tcp(TcpTransport),
    Rdma(Box<VerbsTransport>),
    Shm(Box<ShmTransport>),
}

macro_rules! each {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            AnyTransport::Tcp($t) => $e,
            AnyTransport::Rdma($t) => $e,
            AnyTransport::Shm($t) => $e,
        }
    };
}

impl Transport for AnyTransport {
    fn kind(&self) -> TransportKind {
        each!(self, t => t.kind())
    }
    fn register(&mut self, len: usize) -> Result<MrKey, RegisterError> {
        each!(self, t => t.register(len))
    }
    fn mr_desc(&self, mr: MrKey) -> MrDesc {
        each!(self, t => t.mr_desc(mr))
    }
    fn mr(&self, mr: MrKey) -> &[u8] {
        each!(self, t => t.mr(mr))
    }
    fn mr_mut(&mut self, mr: MrKey) -> &mut [u8] {
        each!(self, t => t.mr_mut(mr))
    }
    fn local_addr(&self) -> TransportAddr {
        each!(self, t => t.local_addr())
    }
    fn connect(&mut self, peer: &TransportAddr) -> Result<(), ConnectError> {
        each!(self, t => t.connect(peer))
    }
    fn post_write_imm(&mut self, wr_id: u64, src: LocalSlice, dst: RemoteAddr, imm: u32) -> Result<(), PostError> {
        each!(self, t => t.post_write_imm(wr_id, src, dst, imm))
    }
    fn poll_completions(&mut self, out: &mut Vec<Completion>) -> Result<usize, TransportError> {
        each!(self, t => t.poll_completions(out))
    }
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        each!(self, t => t.poll_ready(cx))
    }
    fn link_failure(&self) -> Option<&LinkFailure> {
        each!(self, t => t.link_failure())
    }
    fn busy_poll_helps(&self) -> bool {
        each!(self, t => t.busy_poll_helps())
    }
    fn shutdown(&mut self) {
        each!(self, t => t.shutdown())
    }
}
