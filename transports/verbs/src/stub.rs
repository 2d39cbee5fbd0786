//! [`VerbsTransport`] in a build without the `sideway` feature: the same API,
//! but [`VerbsTransport::open`] always fails with [`Cause::NotBuilt`], so
//! callers compile one code path and get a clear error at run time.

use std::convert::Infallible;
use std::task::{Context, Poll};

use slimebench_proto::{
    Completion, ConnectError, LinkFailure, LocalSlice, MrDesc, MrKey, PostError, RegisterError, RemoteAddr, Transport,
    TransportAddr, TransportError, TransportKind,
};

use crate::attrs::{LocalPort, QueueDepths};
use crate::availability::Cause;
use crate::config::{OpenError, VerbsConfig, VerbsStats};

/// Cannot be constructed in this build (it holds an uninhabited value).
pub struct VerbsTransport {
    never: Infallible,
}

impl VerbsTransport {
    /// Always [`OpenError::Unusable`] with [`Cause::NotBuilt`] in this build.
    ///
    /// # Errors
    /// Always.
    ///
    /// # Panics
    /// If `endpoint_id` is zero (as the real one).
    pub fn open(cfg: VerbsConfig, endpoint_id: u64) -> Result<VerbsTransport, OpenError> {
        assert_ne!(endpoint_id, 0, "endpoint ids are never zero");
        let _ = cfg;
        let cause = Cause::NotBuilt;
        Err(OpenError::Unusable {
            hint: cause.hint(),
            cause,
        })
    }

    pub fn stats(&self) -> &VerbsStats {
        match self.never {}
    }

    pub fn depths(&self) -> QueueDepths {
        match self.never {}
    }

    pub fn local_port(&self) -> &LocalPort {
        match self.never {}
    }

    pub fn guards_intact(&self) -> bool {
        match self.never {}
    }
}

impl Transport for VerbsTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Rdma
    }

    fn register(&mut self, _len: usize) -> Result<MrKey, RegisterError> {
        match self.never {}
    }

    fn mr_desc(&self, _mr: MrKey) -> MrDesc {
        match self.never {}
    }

    fn mr(&self, _mr: MrKey) -> &[u8] {
        match self.never {}
    }

    fn mr_mut(&mut self, _mr: MrKey) -> &mut [u8] {
        match self.never {}
    }

    fn local_addr(&self) -> TransportAddr {
        match self.never {}
    }

    fn connect(&mut self, _peer: &TransportAddr) -> Result<(), ConnectError> {
        match self.never {}
    }

    fn post_write_imm(&mut self, _wr_id: u64, _src: LocalSlice, _dst: RemoteAddr, _imm: u32) -> Result<(), PostError> {
        match self.never {}
    }

    fn poll_completions(&mut self, _out: &mut Vec<Completion>) -> Result<usize, TransportError> {
        match self.never {}
    }

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        match self.never {}
    }

    fn link_failure(&self) -> Option<&LinkFailure> {
        match self.never {}
    }

    fn shutdown(&mut self) {
        match self.never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_says_not_built() {
        let e = VerbsTransport::open(VerbsConfig::default(), 1).err().unwrap();
        crate::skip_loudly("RDMA device tests", &e);
        assert!(matches!(
            &e,
            OpenError::Unusable {
                cause: Cause::NotBuilt,
                ..
            }
        ));
        assert!(e.to_string().contains("rebuild with --features rdma"), "{e}");
        assert!(e.to_string().contains("--transport tcp"), "{e}");
    }
}
