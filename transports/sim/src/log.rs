//! The simulation's event log: every decision that shapes a run (a packet's
//! fate, a store outage, an actor's outcome) is recorded with its simulated
//! time and folded into a hash. Running one seed twice must give the same
//! hash; a divergence means something read the wall clock or an unseeded RNG.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;

/// Lines kept for printing on failure (the hash covers all of them).
const KEPT_LINES: usize = 4096;

#[derive(Default)]
struct Inner {
    hash: u64,
    events: u64,
    lines: std::collections::VecDeque<String>,
}

/// A shared, append-only event log.
#[derive(Clone, Default)]
pub struct EventLog {
    inner: Rc<RefCell<Inner>>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl EventLog {
    pub fn new() -> Self {
        let log = EventLog::default();
        log.inner.borrow_mut().hash = FNV_OFFSET;
        log
    }

    /// Record `what` at simulated time `t_ns`.
    pub fn record(&self, t_ns: u64, what: std::fmt::Arguments<'_>) {
        let mut line = String::with_capacity(64);
        let _ = write!(line, "{t_ns:>14} {what}");
        let mut i = self.inner.borrow_mut();
        // FNV-1a: stable across runs, platforms and Rust versions.
        let mut h = i.hash;
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
        i.hash = h;
        i.events += 1;
        if i.lines.len() >= KEPT_LINES {
            i.lines.pop_front();
        }
        i.lines.push_back(line);
    }

    pub fn hash(&self) -> u64 {
        self.inner.borrow().hash
    }

    pub fn events(&self) -> u64 {
        self.inner.borrow().events
    }

    /// The most recent lines (up to 4096), oldest first.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let i = self.inner.borrow();
        i.lines.iter().rev().take(n).rev().cloned().collect()
    }
}
