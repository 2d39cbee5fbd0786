//! The control loop: drives one [`Rendezvous`] machine against a
//! [`ControlStore`] and a transport. It makes no decisions of its own; it
//! executes the machine's commands, feeds back replies, notifications and
//! time, and hands the machine's events to its caller.

use std::time::Duration;

use slimebench_proto::rendezvous::{DownReason, Event, Note, PeerEndpoint, RendezvousError};
use slimebench_proto::{Keys, Rendezvous, StoreFailure, Transport};
use tokio::time::Instant;

use super::ControlStore;
use crate::rpc::{Alarm, Trip};

/// Why the control loop stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Rendezvous(#[from] RendezvousError),
    /// The step bound of the loop was hit: a livelock bug, reported instead of hanging.
    #[error("control loop exceeded {steps} steps")]
    StepLimit { steps: u64 },
    /// Closed before the rendezvous completed.
    #[error("agent closed before the rendezvous completed")]
    Closed,
}

enum Flow<R> {
    Continue,
    Connected(Result<(), String>),
    Done(R),
}

/// Longest wait between two looks at the machine when it has no timer (a
/// responder listening for a driver).
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// Notifications taken per read.
const NOTIFY_BATCH: usize = 64;

/// One agent: a rendezvous machine, its store and its notification cursor.
pub struct Agent<S: ControlStore> {
    m: Rendezvous,
    store: S,
    origin: Instant,
    cursor: u64,
    stream_key: String,
    inbox_key: String,
    op_timeout: Duration,
    /// Upper bound on how long one wait for notifications may last (stores
    /// without push notification are polled at this period).
    poll_period: Duration,
    steps: u64,
    max_steps: u64,
}

impl<S: ControlStore> Agent<S> {
    /// An agent for machine `m` (not started yet).
    pub fn new(store: S, m: Rendezvous, op_timeout: Duration, poll_period: Duration) -> Self {
        let keys: &Keys = m.keys();
        let stream_key = keys.stream(m.alias());
        let inbox_key = keys.inbox(m.alias());
        Agent {
            m,
            store,
            origin: Instant::now(),
            cursor: 0,
            stream_key,
            inbox_key,
            op_timeout,
            poll_period,
            steps: 0,
            max_steps: 10_000_000,
        }
    }

    /// Bound the number of loop iterations (the simulator sets a small one).
    pub fn with_max_steps(mut self, max_steps: u64) -> Self {
        self.max_steps = max_steps;
        self
    }

    pub fn machine(&self) -> &Rendezvous {
        &self.m
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    async fn drive<R>(&mut self, mut on_event: impl FnMut(Event) -> Flow<R>) -> Result<R, ControlError> {
        loop {
            self.steps += 1;
            if self.steps > self.max_steps {
                return Err(ControlError::StepLimit { steps: self.max_steps });
            }
            let mut busy = false;
            while let Some(cmd) = self.m.poll_command(self.now()) {
                busy = true;
                let reply = match tokio::time::timeout(self.op_timeout, self.store.exec(&cmd.op)).await {
                    Ok(r) => r,
                    Err(_) => Err(StoreFailure::Timeout),
                };
                let now = self.now();
                self.m.handle_reply(now, cmd.token, reply);
                if self.m.poll_timeout().is_some_and(|t| t <= now) {
                    self.m.handle_timeout(now);
                }
            }
            while let Some(ev) = self.m.poll_event() {
                busy = true;
                if let Event::Note(n) = &ev {
                    log_note(self.m.alias(), n);
                    continue;
                }
                match on_event(ev) {
                    Flow::Continue => {}
                    Flow::Connected(r) => {
                        let now = self.now();
                        self.m.handle_connected(now, r);
                    }
                    Flow::Done(r) => return Ok(r),
                }
            }
            if busy {
                continue;
            }
            let now = self.now();
            let wait = self
                .m
                .poll_timeout()
                .map_or(IDLE_WAIT, |t| t.saturating_sub(now))
                .min(self.poll_period);
            let read = self
                .store
                .read_notifications(&self.stream_key, &self.inbox_key, &mut self.cursor, NOTIFY_BATCH, wait)
                .await;
            let now = self.now();
            match read {
                Ok(entries) => {
                    for raw in entries {
                        self.m.handle_notification(now, &raw);
                    }
                }
                Err(e) => {
                    tracing::debug!(agent = self.m.alias(), error = %e, "reading notifications failed");
                    // The store is down: do not spin on it.
                    tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                }
            }
            let now = self.now();
            self.m.handle_timeout(now);
        }
    }

    /// Start the machine and run it until the link is ready, connecting `t`
    /// when asked. Returns the peer.
    ///
    /// # Errors
    /// [`ControlError::Rendezvous`] with the machine's reason (alias taken,
    /// incompatible peer, retries exhausted, …).
    #[tracing::instrument(skip_all, fields(agent = %self.m.alias()))]
    pub async fn rendezvous<T: Transport>(&mut self, t: &mut T) -> Result<PeerEndpoint, ControlError> {
        let now = self.now();
        self.m.start(now);
        self.drive(|ev| match ev {
            Event::Connect { peer } => {
                tracing::debug!(
                    peer = peer.alias(),
                    incarnation = format_args!("{:#x}", peer.incarnation()),
                    "connecting"
                );
                Flow::Connected(t.connect(&peer.info.transport).map_err(|e| e.to_string()))
            }
            Event::Ready { peer } => Flow::Done(Ok(peer)),
            Event::Failed { error } => Flow::Done(Err(ControlError::Rendezvous(error))),
            Event::Closed { .. } => Flow::Done(Err(ControlError::Closed)),
            Event::Down { .. } | Event::Note(_) => Flow::Continue,
        })
        .await?
    }

    /// After rendezvous: keep the lease alive and watch the peer. Returns
    /// when the link goes down, after tripping `alarm` so that every wait on
    /// the peer ends.
    ///
    /// # Errors
    /// Only [`ControlError::StepLimit`].
    pub async fn watch(&mut self, alarm: &Alarm) -> Result<DownReason, ControlError> {
        let reason = self
            .drive(|ev| match ev {
                Event::Down { reason } => Flow::Done(reason),
                _ => Flow::Continue,
            })
            .await?;
        tracing::info!(agent = self.m.alias(), %reason, "link down");
        alarm.trip(Trip::PeerGone(reason.to_string()));
        Ok(reason)
    }

    /// Leave: notify the peer and remove our keys. Returns whether that
    /// finished cleanly (false when the store could not be reached; leftover
    /// keys expire or are removed by the next start).
    pub async fn close(&mut self) -> bool {
        let now = self.now();
        self.m.close(now);
        match self
            .drive(|ev| match ev {
                Event::Closed { clean } => Flow::Done(clean),
                _ => Flow::Continue,
            })
            .await
        {
            Ok(clean) => clean,
            Err(e) => {
                tracing::warn!(error = %e, "close did not finish");
                false
            }
        }
    }
}

fn log_note(agent: &str, n: &Note) {
    match n {
        Note::StaleKeysRemoved { count } => {
            tracing::info!(agent, count, "removed stale keys of an earlier incarnation")
        }
        Note::AttemptEnded {
            attempt,
            reason,
            retry_in,
        } => {
            tracing::debug!(agent, attempt, %reason, ?retry_in, "rendezvous attempt ended early")
        }
        Note::IgnoredNotification { detail } => {
            tracing::debug!(agent, detail, "ignored notification")
        }
        Note::BadNotification { error } => {
            tracing::warn!(agent, %error, "malformed notification dropped")
        }
        Note::StoreError { op, error } => {
            tracing::debug!(agent, op, %error, "store operation failed")
        }
        Note::LateReply { token } => tracing::debug!(agent, token, "late store reply ignored"),
        Note::Engaged { peer, incarnation } => {
            tracing::debug!(agent, peer, incarnation = format_args!("{incarnation:#x}"), "engaged")
        }
    }
}
