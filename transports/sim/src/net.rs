//! The simulated network: packets between endpoints on virtual time, with
//! RDMA reliable-connection semantics and a seeded fault plan.
//!
//! Semantics (what a real RC queue pair would show the application):
//! - a write is delivered once, whole, with its immediate; the sender's write
//!   completion arrives when it is delivered;
//! - a peer that exits or dies is *silent*: nothing tells a waiting receiver
//!   (only the control plane can); writes to it end with `RetryExceeded`
//!   after the retry window;
//! - a lost packet is retransmitted by the NIC until the retry window ends,
//!   then the sender's QP fails with `RetryExceeded`;
//! - a write with a bad rkey or range is refused by the receiver (nothing
//!   written, its link fails) and the sender gets `RemoteAccess`.
//!
//! Faults that a real RC never shows the application — duplicated and
//! reordered deliveries — are available as knobs, because the mailbox
//! protocol must stay safe (never deliver a reply to the wrong call) even then.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::task::Waker;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use slimebench_proto::{Completion, CompletionKind, WcStatus};
use tokio::time::Instant;

use crate::log::EventLog;

/// Data-plane fault knobs; change them at any time through [`SimNet::faults_mut`].
#[derive(Clone, Debug, PartialEq)]
pub struct LinkFaults {
    /// One-way latency of every delivery.
    pub latency: Duration,
    /// Extra uniform delay in `[0, jitter)`: reorders deliveries closer than it.
    pub jitter: Duration,
    /// Probability a delivery is duplicated `dup_delay` later.
    pub dup_prob: f64,
    pub dup_delay: Duration,
    /// Duplicate only packets sent from this node (e.g. replies only).
    pub dup_from_node: Option<u64>,
    /// Probability a packet is lost for good (sender: `RetryExceeded`).
    pub drop_prob: f64,
    /// Probability a write ends in an error completion (retry exceeded,
    /// remote access or flushed, drawn from the RNG) instead of being delivered.
    pub error_prob: f64,
    /// Probability a write carries a corrupted rkey (receiver refuses it).
    pub bad_rkey_prob: f64,
    /// How long a sender's NIC retries before giving up.
    pub retry_window: Duration,
    /// Data-plane partition between all endpoints during `[from, until)`.
    pub partition: Option<(Instant, Instant)>,
}

impl Default for LinkFaults {
    fn default() -> Self {
        LinkFaults {
            latency: Duration::from_micros(5),
            jitter: Duration::ZERO,
            dup_prob: 0.0,
            dup_delay: Duration::ZERO,
            dup_from_node: None,
            drop_prob: 0.0,
            error_prob: 0.0,
            bad_rkey_prob: 0.0,
            retry_window: Duration::from_millis(500),
            partition: None,
        }
    }
}

impl LinkFaults {
    /// No faults, same latency.
    pub fn healed(&self) -> LinkFaults {
        LinkFaults {
            latency: self.latency,
            retry_window: self.retry_window,
            ..LinkFaults::default()
        }
    }
}

/// Faults actually injected, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub delayed: u64,
    pub duplicated: u64,
    pub dropped: u64,
    pub error_completions: u64,
    pub bad_rkeys: u64,
    pub partitioned: u64,
    pub to_dead_peer: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Packet {
    pub from: u64,
    pub to: u64,
    pub wr_id: u64,
    pub rkey: u32,
    pub addr: u64,
    pub data: Rc<[u8]>,
    pub imm: u32,
    pub duplicate: bool,
}

#[derive(Default)]
pub(crate) struct Endpoint {
    pub alive: bool,
    pub node: u64,
    pub waker: Option<Waker>,
    /// Completions for this endpoint's own writes (and error notices).
    pub cq: VecDeque<Completion>,
}

pub(crate) struct Net {
    pub rng: ChaCha8Rng,
    pub faults: LinkFaults,
    pub endpoints: BTreeMap<u64, Endpoint>,
    /// Deliveries by (time ns, sequence).
    pub queue: BTreeMap<(u64, u64), Packet>,
    /// Sender-side error completions due at a time: (time ns, seq) → (endpoint, completion, cause).
    pub errors: BTreeMap<(u64, u64), (u64, Completion, String)>,
    pub seq: u64,
    pub origin: Instant,
    pub log: EventLog,
    pub counts: FaultCounts,
    pub unknown_connects: u64,
    /// Says whether an endpoint's owner holds a live lease (set by the harness).
    pub lease_audit: Option<Box<dyn Fn(u64) -> bool>>,
    /// Connects to a missing endpoint whose owner had no live lease.
    pub unleased_connects: u64,
}

/// Handle to one simulated network (cheap to clone; single-threaded).
#[derive(Clone)]
pub struct SimNet {
    pub(crate) inner: Rc<RefCell<Net>>,
}

impl SimNet {
    /// A network whose every random choice comes from `seed`.
    pub fn new(seed: u64, faults: LinkFaults, log: EventLog) -> Self {
        SimNet {
            inner: Rc::new(RefCell::new(Net {
                rng: ChaCha8Rng::seed_from_u64(seed),
                faults,
                endpoints: BTreeMap::new(),
                queue: BTreeMap::new(),
                errors: BTreeMap::new(),
                seq: 0,
                origin: Instant::now(),
                log,
                counts: FaultCounts::default(),
                unknown_connects: 0,
                lease_audit: None,
                unleased_connects: 0,
            })),
        }
    }

    /// Change the fault knobs (e.g. heal).
    pub fn faults_mut<R>(&self, f: impl FnOnce(&mut LinkFaults) -> R) -> R {
        f(&mut self.inner.borrow_mut().faults)
    }

    pub fn counts(&self) -> FaultCounts {
        self.inner.borrow().counts.clone()
    }

    /// Connect attempts to endpoints that do not exist (stale info).
    pub fn unknown_connects(&self) -> u64 {
        self.inner.borrow().unknown_connects
    }

    /// Connects to a missing endpoint whose owner had no live lease at the
    /// time: info of a dead incarnation was used. Needs [`SimNet::set_lease_audit`].
    pub fn unleased_connects(&self) -> u64 {
        self.inner.borrow().unleased_connects
    }

    /// Install the check "does endpoint `id`'s owner hold a live lease now?".
    pub fn set_lease_audit(&self, f: impl Fn(u64) -> bool + 'static) {
        self.inner.borrow_mut().lease_audit = Some(Box::new(f));
    }

    /// Simulated nanoseconds since the network was made.
    pub fn now_ns(&self) -> u64 {
        self.inner.borrow().now_ns()
    }

    /// SIGKILL of an endpoint's process: it stops receiving, silently.
    pub fn kill(&self, endpoint: u64) {
        self.inner.borrow_mut().gone(endpoint, "kill");
    }

    /// Draw from the network's RNG (fault plans, incarnations).
    pub fn random_u64(&self) -> u64 {
        self.inner.borrow_mut().rng.random()
    }
}

impl Net {
    pub fn now_ns(&self) -> u64 {
        Instant::now().saturating_duration_since(self.origin).as_nanos() as u64
    }

    fn at_ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_nanos() as u64
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn wake(&mut self, endpoint: u64) {
        if let Some(w) = self.endpoints.get_mut(&endpoint).and_then(|e| e.waker.take()) {
            w.wake();
        }
    }

    fn schedule_error(&mut self, at_ns: u64, endpoint: u64, wr_id: u64, status: WcStatus, cause: String) {
        let seq = self.next_seq();
        let c = Completion {
            wr_id,
            status,
            kind: CompletionKind::WriteDone,
        };
        self.errors.insert((at_ns, seq), (endpoint, c, cause));
        self.wake(endpoint);
    }

    /// Decide the fate of one write and schedule it.
    pub fn send(&mut self, mut p: Packet) {
        let now = self.now_ns();
        let f = self.faults.clone();
        let retry_ns = f.retry_window.as_nanos() as u64;
        let dead = !self.endpoints.get(&p.to).is_some_and(|e| e.alive);
        if dead {
            self.counts.to_dead_peer += 1;
            self.log.record(
                now,
                format_args!("net to-dead {:#x}->{:#x} wr={}", p.from, p.to, p.wr_id),
            );
            let cause = "no response from peer: retry count exceeded".to_string();
            return self.schedule_error(now + retry_ns, p.from, p.wr_id, WcStatus::RetryExceeded, cause);
        }
        let mut deliver = now + f.latency.as_nanos() as u64;
        if !f.jitter.is_zero() {
            let extra = self.rng.random_range(0..f.jitter.as_nanos() as u64);
            if extra > 0 {
                self.counts.delayed += 1;
            }
            deliver += extra;
        }
        if let Some((from, until)) = f.partition {
            let (from, until) = (self.at_ns(from), self.at_ns(until));
            if now >= from && now < until {
                self.counts.partitioned += 1;
                if until - now <= retry_ns {
                    // Retransmissions get through once the partition heals.
                    deliver = deliver.max(until + f.latency.as_nanos() as u64);
                    self.log
                        .record(now, format_args!("net held {:#x}->{:#x} until {until}", p.from, p.to));
                } else {
                    self.log
                        .record(now, format_args!("net partition-loss {:#x}->{:#x}", p.from, p.to));
                    let cause = "partitioned: retry count exceeded".to_string();
                    return self.schedule_error(now + retry_ns, p.from, p.wr_id, WcStatus::RetryExceeded, cause);
                }
            }
        }
        if f.drop_prob > 0.0 && self.rng.random_bool(f.drop_prob.min(1.0)) {
            self.counts.dropped += 1;
            self.log
                .record(now, format_args!("net drop {:#x}->{:#x} wr={}", p.from, p.to, p.wr_id));
            let cause = "packet lost: retry count exceeded".to_string();
            return self.schedule_error(now + retry_ns, p.from, p.wr_id, WcStatus::RetryExceeded, cause);
        }
        if f.error_prob > 0.0 && self.rng.random_bool(f.error_prob.min(1.0)) {
            self.counts.error_completions += 1;
            let status = match self.rng.random_range(0..3) {
                0 => WcStatus::RetryExceeded,
                1 => WcStatus::RemoteAccess,
                _ => WcStatus::Flushed,
            };
            self.log.record(
                now,
                format_args!("net error {:#x}->{:#x} wr={} {status}", p.from, p.to, p.wr_id),
            );
            return self.schedule_error(
                deliver,
                p.from,
                p.wr_id,
                status,
                format!("injected error completion ({status})"),
            );
        }
        if f.bad_rkey_prob > 0.0 && self.rng.random_bool(f.bad_rkey_prob.min(1.0)) {
            self.counts.bad_rkeys += 1;
            p.rkey ^= 0x00F0_0F00;
            self.log.record(
                now,
                format_args!("net bad-rkey {:#x}->{:#x} wr={}", p.from, p.to, p.wr_id),
            );
        }
        let from_node = self.endpoints.get(&p.from).map(|e| e.node);
        let dup_eligible = f.dup_from_node.is_none_or(|n| Some(n) == from_node);
        if dup_eligible && f.dup_prob > 0.0 && self.rng.random_bool(f.dup_prob.min(1.0)) {
            self.counts.duplicated += 1;
            let mut dup = p.clone();
            dup.duplicate = true;
            let at = deliver + f.dup_delay.as_nanos() as u64;
            let seq = self.next_seq();
            self.log.record(
                now,
                format_args!("net dup {:#x}->{:#x} wr={} at {at}", p.from, p.to, p.wr_id),
            );
            self.queue.insert((at, seq), dup);
        }
        let seq = self.next_seq();
        self.log.record(
            now,
            format_args!(
                "net send {:#x}->{:#x} wr={} len={} imm={} at {deliver}",
                p.from,
                p.to,
                p.wr_id,
                p.data.len(),
                p.imm
            ),
        );
        let to = p.to;
        self.queue.insert((deliver, seq), p);
        self.wake(to);
    }

    /// Earliest pending event time for `endpoint` (a delivery to it or an error for it).
    pub fn next_event_for(&self, endpoint: u64) -> Option<u64> {
        let d = self.queue.iter().find(|(_, p)| p.to == endpoint).map(|((t, _), _)| *t);
        let e = self
            .errors
            .iter()
            .find(|(_, (ep, _, _))| *ep == endpoint)
            .map(|((t, _), _)| *t);
        match (d, e) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The endpoint's QP is gone (exit or kill): it is silent from now on,
    /// and writes queued to it end at their senders with `RetryExceeded`
    /// after the retry window.
    pub fn gone(&mut self, endpoint: u64, why: &str) {
        let Some(e) = self.endpoints.get_mut(&endpoint) else {
            return;
        };
        if !e.alive {
            return;
        }
        e.alive = false;
        let t = self.now_ns();
        self.log.record(t, format_args!("net {why} ep={endpoint:#x}"));
        let retry = self.faults.retry_window.as_nanos() as u64;
        let stranded: Vec<(u64, u64)> = self
            .queue
            .iter()
            .filter(|(_, p)| p.to == endpoint)
            .map(|(k, _)| *k)
            .collect();
        for k in stranded {
            if let Some(p) = self.queue.remove(&k) {
                if !p.duplicate {
                    let cause = "no response from peer: retry count exceeded".to_string();
                    self.schedule_error(k.0.max(t) + retry, p.from, p.wr_id, WcStatus::RetryExceeded, cause);
                }
            }
        }
    }

    /// Take what is due for `endpoint` now: deliveries (in order) and errors.
    pub fn take_due(&mut self, endpoint: u64) -> (Vec<Packet>, Vec<(Completion, String)>) {
        let now = self.now_ns();
        let keys: Vec<(u64, u64)> = self
            .queue
            .iter()
            .take_while(|((t, _), _)| *t <= now)
            .filter(|(_, p)| p.to == endpoint)
            .map(|(k, _)| *k)
            .collect();
        let packets = keys.iter().filter_map(|k| self.queue.remove(k)).collect();
        let ekeys: Vec<(u64, u64)> = self
            .errors
            .iter()
            .take_while(|((t, _), _)| *t <= now)
            .filter(|(_, (ep, _, _))| *ep == endpoint)
            .map(|(k, _)| *k)
            .collect();
        let errors = ekeys
            .iter()
            .filter_map(|k| self.errors.remove(k))
            .map(|(_, c, cause)| (c, cause))
            .collect();
        (packets, errors)
    }
}
