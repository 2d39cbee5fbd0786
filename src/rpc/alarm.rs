//! How the control plane (or the owner) interrupts a session that is busy
//! waiting on the data path.
//!
//! The original spun forever when a reply never came and its server could
//! block forever after a failed completion. Here every wait of a session
//! also watches an [`Alarm`]: the control-plane task trips it when the peer's
//! cleanup event arrives or its lease expires, the owner trips it to shut
//! down, and the waiting call or serve loop wakes, shuts its transport down
//! and fails with the reason. Single-threaded on purpose: the session, its
//! control task and its actor share one thread.

use std::cell::RefCell;
use std::task::Waker;

/// Why a session was interrupted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trip {
    /// The control plane declared the peer gone.
    PeerGone(String),
    /// Our side is shutting down.
    Shutdown,
}

/// A one-shot, sticky interrupt shared by a session and its control task.
#[derive(Debug, Default)]
pub struct Alarm {
    trip: RefCell<Option<Trip>>,
    wakers: RefCell<Vec<Waker>>,
}

/// Distinct waiters kept; a session has one or two (its wait and its owner's).
const MAX_WAITERS: usize = 8;

impl Alarm {
    pub fn new() -> Self {
        Self::default()
    }

    /// Trip the alarm (the first reason sticks) and wake the waiter.
    pub fn trip(&self, why: Trip) {
        self.trip.borrow_mut().get_or_insert(why);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// The reason, once tripped.
    pub fn tripped(&self) -> Option<Trip> {
        self.trip.borrow().clone()
    }

    /// Wake `w` when the alarm trips.
    pub fn register(&self, w: &Waker) {
        let mut wakers = self.wakers.borrow_mut();
        if wakers.iter().any(|old| old.will_wake(w)) {
            return;
        }
        if wakers.len() >= MAX_WAITERS {
            wakers.remove(0);
        }
        wakers.push(w.clone());
    }

    /// Resolves once the alarm has tripped.
    pub async fn tripped_wait(&self) -> Trip {
        std::future::poll_fn(|cx| match self.tripped() {
            Some(t) => std::task::Poll::Ready(t),
            None => {
                self.register(cx.waker());
                std::task::Poll::Pending
            }
        })
        .await
    }
}
