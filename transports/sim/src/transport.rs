//! [`SimTransport`]: the simulator's [`Transport`], with the same contract
//! and the same write validation as the real backends.

use std::collections::{BTreeSet, VecDeque};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use slimebench_proto::frame::{validate_write, RegionBounds, WriteHeader};
use slimebench_proto::{
    AlignedBuf, Completion, CompletionKind, ConnectError, LinkFailure, LocalSlice, MrDesc, MrKey, PostError,
    RegisterError, RemoteAddr, Transport, TransportAddr, TransportError, TransportKind, WcStatus,
};
use tokio::time::{Instant, Sleep};

use crate::net::{Endpoint, Packet, SimNet};

/// Limits of one simulated transport.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub send_queue_depth: usize,
    pub max_write_len: usize,
    pub max_regions: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            send_queue_depth: 64,
            max_write_len: 1 << 30,
            max_regions: 16,
        }
    }
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub delivered: u64,
    /// Incoming writes refused by validation (nothing was written).
    pub refused_writes: u64,
}

struct Region {
    buf: AlignedBuf,
    rkey: u32,
}

/// An in-memory transport on a [`SimNet`].
pub struct SimTransport {
    net: SimNet,
    node: u64,
    endpoint_id: u64,
    cfg: SimConfig,
    regions: Vec<Region>,
    bounds: Vec<RegionBounds>,
    peer: Option<u64>,
    pending: BTreeSet<u64>,
    cq: VecDeque<Completion>,
    failure: Option<LinkFailure>,
    is_shut: bool,
    sleep: Option<(u64, Pin<Box<Sleep>>)>,
    stats: SimStats,
}

impl SimTransport {
    /// A transport for `endpoint_id` (non-zero) on `node`.
    ///
    /// # Panics
    /// On a zero or already registered endpoint id.
    pub fn new(net: &SimNet, node: u64, endpoint_id: u64, cfg: SimConfig) -> Self {
        assert_ne!(endpoint_id, 0);
        {
            let mut n = net.inner.borrow_mut();
            let t = n.now_ns();
            assert!(!n.endpoints.contains_key(&endpoint_id), "endpoint id reused");
            n.endpoints.insert(
                endpoint_id,
                Endpoint {
                    alive: true,
                    node,
                    ..Endpoint::default()
                },
            );
            n.log.record(t, format_args!("net up ep={endpoint_id:#x} node={node}"));
        }
        SimTransport {
            net: net.clone(),
            node,
            endpoint_id,
            cfg,
            regions: Vec::new(),
            bounds: Vec::new(),
            peer: None,
            pending: BTreeSet::new(),
            cq: VecDeque::new(),
            failure: None,
            is_shut: false,
            sleep: None,
            stats: SimStats::default(),
        }
    }

    pub fn endpoint_id(&self) -> u64 {
        self.endpoint_id
    }

    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// True when every registered region's guard zones are intact.
    pub fn guards_intact(&self) -> bool {
        self.regions.iter().all(|r| r.buf.guards_intact())
    }

    fn fail(&mut self, status: WcStatus, cause: String) {
        if self.failure.is_some() {
            return;
        }
        {
            let mut n = self.net.inner.borrow_mut();
            let t = n.now_ns();
            n.log.record(
                t,
                format_args!("net link-down ep={:#x} {status}: {cause}", self.endpoint_id),
            );
            // Our unsent work is flushed, as a QP entering the error state does.
            let me = self.endpoint_id;
            n.queue.retain(|_, p| p.from != me);
            n.errors.retain(|_, (ep, _, _)| *ep != me);
            if let Some(e) = n.endpoints.get_mut(&me) {
                e.cq.clear();
            }
        }
        for wr_id in std::mem::take(&mut self.pending) {
            self.cq.push_back(Completion {
                wr_id,
                status,
                kind: CompletionKind::WriteDone,
            });
        }
        self.cq.push_back(Completion {
            wr_id: 0,
            status,
            kind: CompletionKind::RecvImm { imm: 0, len: 0 },
        });
        self.failure = Some(LinkFailure { status, cause });
    }

    /// Move everything due for us out of the network.
    fn progress(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let me = self.endpoint_id;
        let (packets, errors, own) = {
            let mut n = self.net.inner.borrow_mut();
            let (p, e) = n.take_due(me);
            let own: Vec<Completion> = n
                .endpoints
                .get_mut(&me)
                .map(|e| e.cq.drain(..).collect())
                .unwrap_or_default();
            (p, e, own)
        };
        for c in own {
            if !self.pending.remove(&c.wr_id) {
                continue;
            }
            if c.status.is_ok() {
                self.cq.push_back(c);
            } else {
                self.cq.push_back(c);
                return self.fail(c.status, format!("write refused by peer ({})", c.status));
            }
        }
        if let Some((c, cause)) = errors.into_iter().next() {
            self.pending.remove(&c.wr_id);
            self.cq.push_back(c);
            return self.fail(c.status, cause);
        }
        for p in packets {
            self.deliver(p);
            if self.failure.is_some() {
                return;
            }
        }
    }

    fn deliver(&mut self, p: Packet) {
        let h = WriteHeader {
            rkey: p.rkey,
            addr: p.addr,
            len: p.data.len() as u32,
            imm: p.imm,
        };
        let verdict = if Some(p.from) == self.peer {
            validate_write(&h, &self.bounds, self.cfg.max_write_len)
        } else {
            // A write from an endpoint we are not connected to (an older
            // incarnation's QP): refused like a stale rkey.
            Err(slimebench_proto::frame::FrameError::UnknownRkey { rkey: p.rkey })
        };
        let mut n = self.net.inner.borrow_mut();
        let t = n.now_ns();
        match verdict {
            Ok(target) => {
                self.regions[target.region].buf[target.offset..target.offset + p.data.len()].copy_from_slice(&p.data);
                self.stats.delivered += 1;
                n.log.record(
                    t,
                    format_args!(
                        "net deliver {:#x}->{:#x} wr={} imm={}{}",
                        p.from,
                        p.to,
                        p.wr_id,
                        p.imm,
                        if p.duplicate { " dup" } else { "" }
                    ),
                );
                if !p.duplicate {
                    if let Some(s) = n.endpoints.get_mut(&p.from) {
                        s.cq.push_back(Completion {
                            wr_id: p.wr_id,
                            status: WcStatus::Ok,
                            kind: CompletionKind::WriteDone,
                        });
                        if let Some(w) = s.waker.take() {
                            w.wake();
                        }
                    }
                }
                self.cq.push_back(Completion {
                    wr_id: 0,
                    status: WcStatus::Ok,
                    kind: CompletionKind::RecvImm {
                        imm: p.imm,
                        len: p.data.len() as u32,
                    },
                });
            }
            Err(e) => {
                self.stats.refused_writes += 1;
                n.log.record(
                    t,
                    format_args!("net refused {:#x}->{:#x} wr={}: {e}", p.from, p.to, p.wr_id),
                );
                if !p.duplicate {
                    if let Some(s) = n.endpoints.get_mut(&p.from) {
                        s.cq.push_back(Completion {
                            wr_id: p.wr_id,
                            status: WcStatus::RemoteAccess,
                            kind: CompletionKind::WriteDone,
                        });
                        if let Some(w) = s.waker.take() {
                            w.wake();
                        }
                    }
                }
                drop(n);
                if Some(p.from) == self.peer {
                    self.fail(WcStatus::Flushed, format!("protocol violation by peer: {e}"));
                }
            }
        }
    }

    fn has_due(&self) -> bool {
        let n = self.net.inner.borrow();
        let now = n.now_ns();
        n.endpoints.get(&self.endpoint_id).is_some_and(|e| !e.cq.is_empty())
            || n.next_event_for(self.endpoint_id).is_some_and(|t| t <= now)
    }
}

impl Transport for SimTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Sim
    }

    fn register(&mut self, len: usize) -> Result<MrKey, RegisterError> {
        if self.regions.len() >= self.cfg.max_regions {
            return Err(RegisterError::TooMany {
                max: self.cfg.max_regions,
            });
        }
        let buf = AlignedBuf::new(len)?;
        let index = self.regions.len();
        let rkey = ((self.endpoint_id as u32) ^ ((self.endpoint_id >> 32) as u32)).rotate_left(9)
            ^ (index as u32 + 1).wrapping_mul(0x9E37_79B9)
            | 1;
        // Addresses are per-endpoint fictions: deterministic across runs.
        let base = (index as u64 + 1) << 40;
        self.bounds.push(RegionBounds {
            rkey,
            base,
            len: len as u64,
        });
        self.regions.push(Region { buf, rkey });
        Ok(MrKey(index as u32))
    }

    fn mr_desc(&self, mr: MrKey) -> MrDesc {
        let b = self.bounds[mr.0 as usize];
        debug_assert_eq!(b.rkey, self.regions[mr.0 as usize].rkey);
        MrDesc {
            addr: b.base,
            len: b.len,
            rkey: b.rkey,
        }
    }

    fn mr(&self, mr: MrKey) -> &[u8] {
        &self.regions[mr.0 as usize].buf
    }

    fn mr_mut(&mut self, mr: MrKey) -> &mut [u8] {
        &mut self.regions[mr.0 as usize].buf
    }

    fn local_addr(&self) -> TransportAddr {
        TransportAddr::Sim {
            node: self.node,
            endpoint_id: self.endpoint_id,
        }
    }

    fn connect(&mut self, peer: &TransportAddr) -> Result<(), ConnectError> {
        let TransportAddr::Sim { endpoint_id, .. } = peer else {
            return Err(ConnectError::WrongKind {
                local: TransportKind::Sim,
                peer: peer.kind(),
            });
        };
        if self.is_shut {
            return Err(ConnectError::Shutdown);
        }
        let mut n = self.net.inner.borrow_mut();
        let t = n.now_ns();
        if !n.endpoints.get(endpoint_id).is_some_and(|e| e.alive) {
            n.unknown_connects += 1;
            if n.lease_audit.as_ref().is_some_and(|f| !f(*endpoint_id)) {
                n.unleased_connects += 1;
                n.log.record(
                    t,
                    format_args!("net connect-unleased {:#x}->{endpoint_id:#x}", self.endpoint_id),
                );
            }
            n.log.record(
                t,
                format_args!("net connect-unknown {:#x}->{endpoint_id:#x}", self.endpoint_id),
            );
            return Err(ConnectError::Unreachable {
                addr: format!("sim endpoint {endpoint_id:#x}"),
                reason: "no such endpoint".into(),
            });
        }
        n.log
            .record(t, format_args!("net connect {:#x}->{endpoint_id:#x}", self.endpoint_id));
        drop(n);
        self.peer = Some(*endpoint_id);
        self.pending.clear();
        self.cq.clear();
        self.failure = None;
        Ok(())
    }

    fn post_write_imm(&mut self, wr_id: u64, src: LocalSlice, dst: RemoteAddr, imm: u32) -> Result<(), PostError> {
        if let Some(f) = &self.failure {
            return Err(PostError::LinkDown(f.clone()));
        }
        let Some(peer) = self.peer else {
            return Err(PostError::NotConnected);
        };
        if self.pending.len() >= self.cfg.send_queue_depth {
            return Err(PostError::QueueFull {
                depth: self.pending.len(),
            });
        }
        let region = self
            .regions
            .get(src.mr.0 as usize)
            .ok_or(PostError::UnknownMr(src.mr))?;
        src.validate(region.buf.len(), self.cfg.max_write_len)?;
        let data: Rc<[u8]> = Rc::from(&region.buf[src.offset..src.offset + src.len]);
        self.pending.insert(wr_id);
        self.net.inner.borrow_mut().send(Packet {
            from: self.endpoint_id,
            to: peer,
            wr_id,
            rkey: dst.rkey,
            addr: dst.addr,
            data,
            imm,
            duplicate: false,
        });
        Ok(())
    }

    fn poll_completions(&mut self, out: &mut Vec<Completion>) -> Result<usize, TransportError> {
        self.progress();
        let n = self.cq.len();
        out.extend(self.cq.drain(..));
        Ok(n)
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.cq.is_empty() || self.failure.is_some() || self.has_due() {
            return Poll::Ready(());
        }
        let next = {
            let mut n = self.net.inner.borrow_mut();
            if let Some(e) = n.endpoints.get_mut(&self.endpoint_id) {
                e.waker = Some(cx.waker().clone());
            }
            n.next_event_for(self.endpoint_id).map(|t| (t, n.origin))
        };
        if let Some((t, origin)) = next {
            if self.sleep.as_ref().is_none_or(|(at, _)| *at != t) {
                let deadline = origin + std::time::Duration::from_nanos(t);
                self.sleep = Some((t, Box::pin(tokio::time::sleep_until(deadline.max(Instant::now())))));
            }
            if let Some((_, s)) = self.sleep.as_mut() {
                if s.as_mut().poll(cx).is_ready() {
                    self.sleep = None;
                    return Poll::Ready(());
                }
            }
        }
        Poll::Pending
    }

    fn link_failure(&self) -> Option<&LinkFailure> {
        self.failure.as_ref()
    }

    fn shutdown(&mut self) {
        self.is_shut = true;
        self.fail(WcStatus::Cancelled, "transport shut down locally".into());
        mark_gone(&self.net, self.endpoint_id);
    }
}

impl Drop for SimTransport {
    fn drop(&mut self) {
        mark_gone(&self.net, self.endpoint_id);
    }
}

fn mark_gone(net: &SimNet, endpoint: u64) {
    net.inner.borrow_mut().gone(endpoint, "gone");
}

// `std::future::Future` for `Sleep::poll` via `as_mut().poll(cx)`.
use std::future::Future as _;
