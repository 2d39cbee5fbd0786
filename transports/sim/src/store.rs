//! [`SimStore`]: a fault-injecting decorator over any control store (the
//! simulator wraps the embedded memory store, whose clock is tokio's and so
//! virtual under a paused runtime).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use slimebench_proto::store::ControlStore;
use slimebench_proto::{StoreFailure, StoreOp, StoreReply};
use tokio::time::Instant;

use crate::log::EventLog;

/// Control-plane fault knobs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreFaults {
    /// The store is unreachable during each `[from, until)`.
    pub outages: Vec<(Instant, Instant)>,
    /// Added to every operation.
    pub latency: Duration,
    /// Operations (by `StoreOp::name`, counting from 1) that never answer.
    pub hang: Vec<(&'static str, u32)>,
}

/// Counters of injected store faults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreFaultCounts {
    pub unavailable: u64,
    pub hung: u64,
}

struct Shared {
    faults: StoreFaults,
    seen: std::collections::BTreeMap<&'static str, u32>,
    counts: StoreFaultCounts,
    log: EventLog,
    origin: Instant,
}

/// A store with simulated outages, latency and lost replies.
pub struct SimStore<S> {
    inner: S,
    shared: Rc<RefCell<Shared>>,
}

impl<S: Clone> Clone for SimStore<S> {
    fn clone(&self) -> Self {
        SimStore {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: ControlStore> SimStore<S> {
    pub fn new(inner: S, faults: StoreFaults, log: EventLog) -> Self {
        SimStore {
            inner,
            shared: Rc::new(RefCell::new(Shared {
                faults,
                seen: Default::default(),
                counts: StoreFaultCounts::default(),
                log,
                origin: Instant::now(),
            })),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Change the fault knobs (e.g. heal).
    pub fn faults_mut<R>(&self, f: impl FnOnce(&mut StoreFaults) -> R) -> R {
        f(&mut self.shared.borrow_mut().faults)
    }

    pub fn counts(&self) -> StoreFaultCounts {
        self.shared.borrow().counts.clone()
    }

    fn now_ns(&self) -> u64 {
        self.shared.borrow().origin.elapsed().as_nanos() as u64
    }

    fn down(&self) -> bool {
        let now = Instant::now();
        self.shared
            .borrow()
            .faults
            .outages
            .iter()
            .any(|(a, b)| now >= *a && now < *b)
    }
}

fn reply_name(r: &Result<StoreReply, StoreFailure>) -> &'static str {
    match r {
        Ok(StoreReply::Claimed) => "claimed",
        Ok(StoreReply::Conflict { .. }) => "conflict",
        Ok(StoreReply::Refreshed) => "refreshed",
        Ok(StoreReply::NotOwner { .. }) => "not_owner",
        Ok(StoreReply::Deleted { .. }) => "deleted",
        Ok(StoreReply::Put) => "put",
        Ok(StoreReply::Fetched { .. }) => "fetched",
        Ok(StoreReply::Appended) => "appended",
        Ok(StoreReply::Skipped) => "skipped",
        Ok(StoreReply::Released { .. }) => "released",
        Err(_) => "error",
    }
}

fn op_key(op: &StoreOp) -> &str {
    match op {
        StoreOp::Claim { key, .. } | StoreOp::Refresh { key, .. } | StoreOp::Append { key, .. } => key,
        StoreOp::PutOwned { agent_key, .. } | StoreOp::Fetch { agent_key, .. } | StoreOp::Release { agent_key, .. } => {
            agent_key
        }
        StoreOp::DeleteMatching { patterns } => patterns.first().map_or("", String::as_str),
    }
}

impl<S: ControlStore> ControlStore for SimStore<S> {
    async fn exec(&self, op: &StoreOp) -> Result<StoreReply, StoreFailure> {
        let latency = self.shared.borrow().faults.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let t = self.now_ns();
        if self.down() {
            let mut s = self.shared.borrow_mut();
            s.counts.unavailable += 1;
            s.log.record(t, format_args!("store down {} {}", op.name(), op_key(op)));
            return Err(StoreFailure::Unavailable("simulated store outage".into()));
        }
        let hang = {
            let mut s = self.shared.borrow_mut();
            let n = s.seen.entry(op.name()).or_insert(0);
            *n += 1;
            let n = *n;
            let hang = s.faults.hang.iter().any(|(name, nth)| *name == op.name() && *nth == n);
            if hang {
                s.counts.hung += 1;
                s.log
                    .record(t, format_args!("store hang {} #{n} {}", op.name(), op_key(op)));
            }
            hang
        };
        if hang {
            // The reply is lost; the caller's timeout must end the wait.
            std::future::pending::<()>().await;
        }
        let r = self.inner.exec(op).await;
        let t = self.now_ns();
        self.shared.borrow().log.record(
            t,
            format_args!("store {} {} -> {}", op.name(), op_key(op), reply_name(&r)),
        );
        r
    }

    async fn read_notifications(
        &self,
        stream_key: &str,
        inbox_key: &str,
        cursor: &mut u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Vec<u8>>, StoreFailure> {
        if self.down() {
            return Err(StoreFailure::Unavailable("simulated store outage".into()));
        }
        let got = self
            .inner
            .read_notifications(stream_key, inbox_key, cursor, max, wait)
            .await?;
        if !got.is_empty() {
            let t = self.now_ns();
            self.shared
                .borrow()
                .log
                .record(t, format_args!("store notify {stream_key} n={}", got.len()));
        }
        Ok(got)
    }

    fn describe(&self) -> String {
        format!("sim({})", self.inner.describe())
    }
}
