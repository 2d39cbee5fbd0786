//! Waiting on a transport: a bounded busy-poll, then sleep on readiness.
//!
//! Spinning keeps small round trips off the scheduler (a thread wake-up costs
//! ~10 µs on the target machines, more than a 1 KiB round trip); the budget
//! bounds the CPU burnt when nothing comes, after which the waiter parks on
//! [`slimebench_proto::Transport::poll_ready`]. A zero budget never reads the
//! clock, which is what the simulator needs.

use std::time::{Duration, Instant};

/// Busy-poll budget per wait.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SpinPolicy {
    pub budget: Duration,
}

impl SpinPolicy {
    /// No spinning: park as soon as nothing is ready.
    pub const NONE: SpinPolicy = SpinPolicy { budget: Duration::ZERO };

    pub fn new(budget: Duration) -> Self {
        SpinPolicy { budget }
    }
}

/// Rounds of completions one poll may handle before it yields.
///
/// A peer that keeps the link busy (a flood of messages, stray or not) must
/// not keep a poll from returning: the futures polled beside it (the call
/// timeout, the lease watch, the heartbeat) only run once it does. Like
/// tokio's cooperative budget, a poll that used its budget wakes its own
/// task and returns `Pending`, so it is polled again right after the others.
/// One call in flight needs one or two rounds; 64 keeps batching cheap.
pub(crate) const WORK_BUDGET: u32 = 64;

/// Work done since a session's task last yielded, against [`WORK_BUDGET`]:
/// rounds of completions, and (client) calls answered without parking.
/// Kept across polls, so a loop of calls that never parks yields too.
#[derive(Default)]
pub(crate) struct WorkBudget {
    used: u32,
}

impl WorkBudget {
    /// One unit of work was done; false once the budget is used up (the
    /// caller then wakes itself and yields, see [`WorkBudget::yielded`]).
    pub(crate) fn spend(&mut self) -> bool {
        self.used += 1;
        self.used < WORK_BUDGET
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.used >= WORK_BUDGET
    }

    /// The task is about to return `Pending`: the budget starts over.
    pub(crate) fn yielded(&mut self) {
        self.used = 0;
    }
}

/// State of one wait.
pub(crate) struct Spinner {
    budget: Duration,
    started: Option<Instant>,
    polls: u32,
}

/// Clock reads are amortised over this many polls.
const POLLS_PER_CLOCK_READ: u32 = 16;

impl Spinner {
    pub(crate) fn new(policy: SpinPolicy) -> Self {
        Spinner {
            budget: policy.budget,
            started: None,
            polls: 0,
        }
    }

    /// Progress happened: the budget restarts.
    pub(crate) fn reset(&mut self) {
        self.started = None;
        self.polls = 0;
    }

    /// Whether to poll again instead of parking.
    pub(crate) fn keep_spinning(&mut self) -> bool {
        if self.budget.is_zero() {
            return false;
        }
        self.polls += 1;
        if self.polls % POLLS_PER_CLOCK_READ != 1 {
            std::hint::spin_loop();
            return true;
        }
        // Give the core away now and then: when another runnable thread
        // shares it (the peer we wait for, on a busy 2-core machine), a pure
        // spin would keep it off the core for the whole budget. With a free
        // core sched_yield returns at once.
        std::thread::yield_now();
        let now = Instant::now();
        let start = *self.started.get_or_insert(now);
        now.duration_since(start) < self.budget
    }
}
