//! The embedded control store: [`slimebench_proto::StoreModel`] behind a
//! mutex, shared by the agents of one process (driver and worker threads).
//!
//! Time is tokio's clock, so under a paused runtime (the simulator) leases
//! expire in simulated time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use slimebench_proto::{StoreFailure, StoreModel, StoreOp, StoreReply};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::ControlStore;

/// A cheaply clonable handle to one in-memory store.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Shared>,
}

struct Shared {
    model: Mutex<StoreModel>,
    /// Wakes readers when anything is appended.
    appended: Notify,
    origin: Instant,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            inner: Arc::new(Shared {
                model: Mutex::new(StoreModel::new()),
                appended: Notify::new(),
                origin: Instant::now(),
            }),
        }
    }

    fn now(&self) -> Duration {
        self.inner.origin.elapsed()
    }

    /// Run `f` on the model at the current time (tests and fault injection).
    pub fn with_model<R>(&self, f: impl FnOnce(&mut StoreModel, Duration) -> R) -> R {
        let now = self.now();
        let mut m = self.inner.model.lock().expect("store mutex");
        f(&mut m, now)
    }

    /// Live keys matching `pattern` (a trailing-`*` glob).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.with_model(|m, now| m.keys_matching(now, pattern))
    }
}

impl ControlStore for MemoryStore {
    async fn exec(&self, op: &StoreOp) -> Result<StoreReply, StoreFailure> {
        let reply = self.with_model(|m, now| m.apply(now, op));
        if matches!(reply, StoreReply::Appended) {
            self.inner.appended.notify_waiters();
        }
        Ok(reply)
    }

    async fn read_notifications(
        &self,
        stream_key: &str,
        inbox_key: &str,
        cursor: &mut u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Vec<u8>>, StoreFailure> {
        let deadline = Instant::now() + wait;
        loop {
            // Register interest before looking, so an append in between wakes us.
            let appended = self.inner.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let got = self.with_model(|m, now| {
                let mut out = Vec::new();
                for (id, v) in m.read_log(now, stream_key, *cursor, max) {
                    *cursor = id;
                    out.push(v);
                }
                let room = max.saturating_sub(out.len());
                out.extend(m.pop_log(now, inbox_key, room));
                out
            });
            if !got.is_empty() {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
