//! Two [`Rendezvous`] machines (a driver that initiates, a worker that
//! responds) driven against [`StoreModel`] by a harness whose every choice
//! comes from proptest, then healed and required to converge.
//!
//! Fault phase (a [`Scenario`]): which side steps or is ticked; per command
//! whether it is answered, its request or its reply is lost (a lost reply is
//! held and may be delivered much later, or never), the store refuses it, it
//! times out after taking effect, or the store answers with a reply of the
//! wrong kind; store outages; notifications read from the store and
//! delivered late, duplicated, and reordered (stream and inbox interleave
//! freely; within one log only with a knob, see [`Knobs`]); stale, forged and garbage
//! notifications injected; connect results failing or arriving late or twice;
//! time advancing by random amounts; a side crashing and coming back (after
//! its lease expired) with a new incarnation.
//!
//! Checked on every step (see [`World::on_command`], [`World::drain`], [`World::tick`]):
//! - at most one command in flight per machine: after `poll_command` gave one,
//!   it gives none until that command's reply, its deadline passed a
//!   `handle_timeout`, or `close`;
//! - command tokens strictly increase; every command is well formed for this
//!   machine (its own keys and incarnation, stale keys removed before the first
//!   publish, publishing only while it holds its lease, `qp_ready` only to the
//!   incarnation it connected to);
//! - an [`Event::Connect`] only comes out of a fetch reply, and names the
//!   incarnation of the peer's lease in the store when that fetch ran (when the
//!   reply was not delayed: the lease at that very moment), with endpoint and
//!   mailbox of that same incarnation;
//! - [`Event::Ready`] only for the peer of the last `Connect` answered with a
//!   successful `handle_connected`; `Down` only from ready;
//! - events drained after any single call never exceed the machine's bound
//!   (1024), also after bursts of thousands of garbage notifications;
//! - after `handle_timeout(now)` and taking every due command, `poll_timeout()`
//!   is after `now`, unless a command is in flight (whose deadline is after
//!   `now`): a timer in the past is never left unhandled;
//! - no panic.
//!
//! Then the faults stop (store up, every held reply delivered, notifications
//! delivered in order, connects succeed) and time runs from timer to timer:
//! - *strong* expectation when the fault phase was short (no lease or deadline
//!   could have expired) and nobody crashed: both sides ready, paired with each
//!   other's live incarnation, within `2 op_timeout + retry_max + ready_refresh
//!   + peer_check`;
//! - otherwise: either both ready and paired, or one ended (`Failed` with an
//!   error, or `Down`) and then the other also ends (failed, down, or a
//!   responder back to listening) within the rendezvous deadline plus a lease;
//! - then both `close()`: both reach `Closed { clean: true }` and the store
//!   holds no key of the scope.
//!
//! Known bugs (reproduced in `rendezvous_bugs.rs`) are kept out of this
//! property by [`Knobs`], all off here: fault classes that only trigger a known
//! bug are not generated, and a run that hits one the harness cannot avoid
//! generating (publish without a lease; initiator ready alone after a lease
//! lapse) is discarded as a proptest reject, not counted as a pass.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::keys::{Keys, MAILBOX_MR};
use crate::rendezvous::{
    Command, DownReason, Event, LocalEndpoint, PeerEndpoint, Rendezvous, RendezvousError, Role, Timing,
};
use crate::store::{AgentLookup, StoreFailure, StoreModel, StoreOp, StoreReply};
use crate::transport::{MrDesc, TransportAddr};
use crate::values::{ControlValue, EndpointInfo, Geometry, MailboxInfo, Notification};

const SCOPE: &str = "t";
const ALIASES: [&str; 2] = ["driver", "worker"];
const DRIVER: usize = 0;
const WORKER: usize = 1;
/// Alias of a third agent that never exists (its requests are stale by construction).
const INTRUDER: &str = "intruder";
/// The machine's bound on queued events (`MAX_EVENTS` in rendezvous.rs).
const MAX_EVENTS: usize = 1024;
/// Commands one `step` takes at most (a machine issuing more at one instant is looping).
const MAX_COMMANDS_PER_STEP: usize = 16;
/// Fault phases no longer than this cannot expire a lease or a deadline: the
/// strong liveness expectation applies.
const SHORT_FAULTS: Duration = Duration::from_millis(1500);
/// Longest fault phase, in actions.
const MAX_ACTIONS: usize = 300;
/// Trace lines kept for a failure report.
const TRACE_LINES: usize = 400;

fn incarnation(side: usize, generation: u32) -> u64 {
    // Distinct per side and start; deliberately not ordered across sides.
    [0x11_000, 0x22_000][side] + u64::from(generation) * 0x101
}

pub(super) fn local(side: usize, inc: u64) -> LocalEndpoint {
    LocalEndpoint {
        alias: ALIASES[side].into(),
        incarnation: inc,
        host: "prop".into(),
        pid: side as u32 + 1,
        transport: TransportAddr::Sim {
            node: inc,
            endpoint_id: inc,
        },
        mailbox: MrDesc {
            addr: 0x1000,
            len: 4096,
            rkey: inc as u32,
        },
        geometry: Geometry {
            slot_size: 4096,
            slot_count: 1,
        },
    }
}

fn machine(side: usize, inc: u64) -> Rendezvous {
    let role = if side == DRIVER {
        Role::Initiator {
            peer: ALIASES[WORKER].into(),
        }
    } else {
        Role::Responder
    };
    Rendezvous::new(
        Keys::new(SCOPE).expect("scope"),
        local(side, inc),
        role,
        Timing::default(),
    )
}

// ----- the scenario -----

/// What happens to one command the harness takes from a machine.
#[derive(Copy, Clone, Debug)]
pub(super) enum Fate {
    /// Executed against the store, reply delivered at once.
    Answer,
    /// Never reaches the store; no reply (the machine must time it out).
    LoseRequest,
    /// Executed, reply held: delivered later by [`Action::Held`] or at heal.
    LoseReply,
    /// The store refuses it.
    Unavailable,
    /// Executed, but the client reports a timeout.
    TimeoutAfterApply,
    /// Not executed; the store answers with a reply of another operation.
    Mismatch(u8),
}

/// Who a forged or stale notification claims to come from.
#[derive(Copy, Clone, Debug)]
pub(super) enum Sender {
    Peer,
    Intruder,
    Me,
}

/// An incarnation in a forged notification.
#[derive(Copy, Clone, Debug)]
pub(super) enum Inc {
    /// The live incarnation of that agent.
    Current,
    /// An earlier incarnation of that agent (or an arbitrary one if none).
    Previous,
    Raw(u64),
}

/// A notification the harness fabricates.
#[derive(Clone, Debug)]
pub(super) enum Inject {
    Bytes(Vec<u8>),
    /// A well-formed notification cut short.
    Truncated {
        cut: usize,
    },
    /// Another value-format version.
    OtherVersion,
    /// kind: 0 connect_peer, 1 qp_ready, 2 cleanup, 3 reject. Combinations that
    /// would be a genuine message of the live peer to this side are turned
    /// stale (the receiver's incarnation is changed): genuine traffic comes
    /// from the machines only.
    Stale {
        kind: u8,
        from: Sender,
        from_inc: Inc,
        to_inc: Inc,
    },
}

#[derive(Clone, Debug)]
pub(super) enum Action {
    /// Take the side's due commands, each meeting `fate`.
    Step {
        side: usize,
        fate: Fate,
    },
    /// `handle_timeout(now)`, then as `Step`.
    Tick {
        side: usize,
        fate: Fate,
    },
    Advance {
        ms: u64,
    },
    /// Deliver (or drop) one held reply, chosen by `pick`.
    Held {
        side: usize,
        pick: usize,
        deliver: bool,
    },
    StoreDown {
        ms: u64,
    },
    /// Read the side's stream and inbox into its delivery queue.
    Read {
        side: usize,
    },
    /// Deliver one queued notification, keeping a copy if `dup`. `pick` chooses
    /// the log (stream or inbox: they interleave freely), or any entry with
    /// [`Knobs::reorder_within_a_log`].
    Deliver {
        side: usize,
        pick: usize,
        dup: bool,
    },
    Inject {
        side: usize,
        what: Inject,
    },
    /// Many garbage notifications without draining events in between.
    Burst {
        side: usize,
        n: u16,
    },
    /// Answer the pending connect (or a spurious answer when none is pending).
    Connected {
        side: usize,
        ok: bool,
    },
    /// Crash the side; it starts again with a new incarnation once its lease expired.
    Restart {
        side: usize,
    },
}

#[derive(Clone, Debug)]
pub(super) struct Scenario {
    pub start_ms: [u64; 2],
    pub actions: Vec<Action>,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        16 => Just(Fate::Answer),
        1 => Just(Fate::LoseRequest),
        2 => Just(Fate::LoseReply),
        1 => Just(Fate::Unavailable),
        1 => Just(Fate::TimeoutAfterApply),
        1 => any::<u8>().prop_map(Fate::Mismatch),
    ]
}

fn inc_pick() -> impl Strategy<Value = Inc> {
    prop_oneof![
        2 => Just(Inc::Current),
        2 => Just(Inc::Previous),
        1 => prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()].prop_map(Inc::Raw),
    ]
}

fn inject() -> impl Strategy<Value = Inject> {
    let from = prop_oneof![3 => Just(Sender::Peer), 1 => Just(Sender::Intruder), 1 => Just(Sender::Me)];
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..48).prop_map(Inject::Bytes),
        1 => (0..80usize).prop_map(|cut| Inject::Truncated { cut }),
        1 => Just(Inject::OtherVersion),
        6 => (0..4u8, from, inc_pick(), inc_pick())
            .prop_map(|(kind, from, from_inc, to_inc)| Inject::Stale { kind, from, from_inc, to_inc }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    let side = 0..2usize;
    let ms = prop_oneof![8 => 0..50u64, 3 => 50..500u64, 1 => 500..3000u64];
    prop_oneof![
        30 => (side.clone(), fate()).prop_map(|(side, fate)| Action::Step { side, fate }),
        12 => (side.clone(), fate()).prop_map(|(side, fate)| Action::Tick { side, fate }),
        10 => ms.prop_map(|ms| Action::Advance { ms }),
        3 => (side.clone(), any::<usize>(), any::<bool>())
            .prop_map(|(side, pick, deliver)| Action::Held { side, pick, deliver }),
        1 => (100..4000u64).prop_map(|ms| Action::StoreDown { ms }),
        10 => side.clone().prop_map(|side| Action::Read { side }),
        14 => (side.clone(), any::<usize>(), proptest::bool::weighted(0.15))
            .prop_map(|(side, pick, dup)| Action::Deliver { side, pick, dup }),
        4 => (side.clone(), inject()).prop_map(|(side, what)| Action::Inject { side, what }),
        1 => (side.clone(), 1000..1600u16).prop_map(|(side, n)| Action::Burst { side, n }),
        8 => (side.clone(), proptest::bool::weighted(0.8)).prop_map(|(side, ok)| Action::Connected { side, ok }),
        1 => side.prop_map(|side| Action::Restart { side }),
    ]
}

pub(super) fn scenario(max_actions: usize) -> impl Strategy<Value = Scenario> {
    let start = prop_oneof![2 => Just(0u64), 1 => 0..2000u64];
    (
        [start.clone(), start],
        proptest::collection::vec(action(), 0..max_actions),
    )
        .prop_map(|(start_ms, actions)| Scenario { start_ms, actions })
}

// ----- the harness -----

#[derive(Clone, Debug)]
struct Outstanding {
    token: u64,
    deadline: Duration,
}

/// A reply the harness withholds. `fetched`: for a fetch, the peer's lease
/// incarnation when the store executed it.
#[derive(Clone, Debug)]
struct HeldReply {
    token: u64,
    reply: Result<StoreReply, StoreFailure>,
    fetched: Option<Option<u64>>,
}

/// What produced the events being drained.
#[derive(Copy, Clone, Debug, Default)]
struct Ctx {
    /// Draining after a fetch reply: the peer's lease incarnation when the store ran it.
    fetched: Option<Option<u64>>,
    /// The reply was computed at this very instant (not delayed).
    immediate: bool,
}

/// Where a notification was read from.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Log {
    Stream,
    Inbox,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    Failed(RendezvousError),
    Down(DownReason),
}

struct Side {
    m: Rendezvous,
    inc: u64,
    past_incs: Vec<u64>,
    generation: u32,
    start_at: Duration,
    started: bool,
    cursor: u64,
    /// Read but not yet delivered, with the log each came from.
    queue: VecDeque<(Log, Vec<u8>)>,
    held: Vec<HeldReply>,
    outstanding: Option<Outstanding>,
    /// `StoreOp::name` of the last command issued.
    outstanding_op: &'static str,
    last_token: u64,
    pending_connect: Option<PeerEndpoint>,
    connected_ok: Option<PeerEndpoint>,
    ready: Option<PeerEndpoint>,
    ended: Option<End>,
    closed: Option<bool>,
    /// Stale own keys were removed (a `DeleteMatching` was answered) for this incarnation.
    cleaned: bool,
    /// Mirror of the machine's own belief that it holds its lease: set by a
    /// claim reply taken in the claim phase, cleared when a `NotOwner` reply or
    /// `handle_timeout` (no refresh for a lease period) tells it the lease is lost.
    claimed: bool,
    lease_ok_at: Duration,
    /// The machine lost its lease at least once (and re-claimed with the same incarnation).
    lease_lapsed: bool,
    /// A `PutOwned` was issued by this incarnation.
    published: bool,
    /// Went back to listening after publishing (see `close_both`).
    listened_after_publish: bool,
}

impl Side {
    fn new(side: usize, generation: u32, start_at: Duration, past_incs: Vec<u64>) -> Self {
        let inc = incarnation(side, generation);
        Side {
            m: machine(side, inc),
            inc,
            past_incs,
            generation,
            start_at,
            started: false,
            cursor: 0,
            queue: VecDeque::new(),
            held: Vec::new(),
            outstanding: None,
            outstanding_op: "",
            last_token: 0,
            pending_connect: None,
            connected_ok: None,
            ready: None,
            ended: None,
            closed: None,
            cleaned: false,
            claimed: false,
            lease_ok_at: Duration::ZERO,
            lease_lapsed: false,
            published: false,
            listened_after_publish: false,
        }
    }
}

/// Fault classes that hit known bugs, off in the main property.
#[derive(Copy, Clone, Debug, Default)]
pub(super) struct Knobs {
    /// Inject `connect_peer` from a dead incarnation of the peer or from an agent that does not exist.
    pub stale_requests: bool,
    /// Inject `qp_ready` to our live incarnation from an incarnation of the peer that is not its live one.
    pub stale_qp_ready: bool,
    /// Deliver the entries of one log out of order (a stream is read by cursor,
    /// so this only happens with zombies or late-executed appends).
    pub reorder_within_a_log: bool,
    /// Fail (rather than discard the case) when, after the driver's lease lapsed,
    /// the driver ends ready and the worker listening.
    pub split_after_lease_lapse: bool,
    /// Fail (rather than discard the case) when a machine publishes, or is in
    /// any phase past the claim, while it holds no lease (lost, and the
    /// re-claim not answered yet).
    pub publish_while_reclaiming: bool,
    /// After closing, require no key at all (also the exchange key of a requester the worker gave up on).
    pub strict_close_keys: bool,
}

impl Knobs {
    /// Every fault class on and every check strict (the machine's bugs they
    /// guarded against are fixed).
    pub(super) const ALL: Knobs = Knobs {
        stale_requests: true,
        stale_qp_ready: true,
        reorder_within_a_log: true,
        split_after_lease_lapse: true,
        publish_while_reclaiming: true,
        strict_close_keys: true,
    };
}

pub(super) struct World {
    knobs: Knobs,
    store: StoreModel,
    keys: Keys,
    timing: Timing,
    now: Duration,
    sides: [Side; 2],
    store_down_until: Duration,
    healing: bool,
    restarts: u32,
    /// The strong liveness expectation applied.
    strong: bool,
    steps: u64,
    violation: Option<String>,
    /// The run hit a known bug whose knob is off: the case is discarded.
    known_bug: Option<&'static str>,
    trace: VecDeque<String>,
}

macro_rules! check {
    ($w:expr, $cond:expr, $($arg:tt)+) => {
        if !$cond {
            $w.fail(format!($($arg)+));
        }
    };
}

impl World {
    pub(super) fn new(start_ms: [u64; 2], knobs: Knobs) -> Self {
        let mut w = World {
            knobs,
            store: StoreModel::new(),
            keys: Keys::new(SCOPE).expect("scope"),
            timing: Timing::default(),
            now: Duration::ZERO,
            sides: [0, 1].map(|i| Side::new(i, 0, Duration::from_millis(start_ms[i]), Vec::new())),
            store_down_until: Duration::ZERO,
            healing: false,
            restarts: 0,
            strong: false,
            steps: 0,
            violation: None,
            known_bug: None,
            trace: VecDeque::new(),
        };
        w.start_due();
        w
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if self.trace.len() >= TRACE_LINES {
            self.trace.pop_front();
        }
        let line = format!("{:>9.3}s {}", self.now.as_secs_f64(), line());
        self.trace.push_back(line);
    }

    fn fail(&mut self, msg: String) {
        if self.violation.is_none() && self.known_bug.is_none() {
            let mut report = format!("{msg}\n--- last {} trace lines ---\n", self.trace.len());
            for l in &self.trace {
                let _ = writeln!(report, "{l}");
            }
            for (i, s) in self.sides.iter().enumerate() {
                let _ = writeln!(
                    report,
                    "{}: inc {:#x} started {} phase {} ended {:?}",
                    ALIASES[i],
                    s.inc,
                    s.started,
                    s.m.phase_name(),
                    s.ended
                );
            }
            self.violation = Some(report);
        }
    }

    fn ok(&self) -> bool {
        self.violation.is_none() && self.known_bug.is_none()
    }

    /// Close side `i` alone and drive it (fault-free) until closed; the other
    /// side is frozen (a hung process: never driven again).
    pub(super) fn close_one(&mut self, i: usize) {
        let other = &mut self.sides[Self::peer(i)];
        other.started = false;
        other.start_at = Duration::MAX;
        self.healing = true;
        self.store_down_until = Duration::ZERO;
        let now = self.now;
        self.sides[i].m.close(now);
        self.sides[i].outstanding = None;
        self.drain(i, Ctx::default());
        let bound = self.now + Duration::from_secs(30);
        let done = self.run_until(bound, |w| w.sides[i].m.is_closed());
        check!(self, done, "{} did not close", ALIASES[i]);
    }

    /// Live keys of the scope matching `pattern` (after the scope prefix).
    pub(super) fn keys(&mut self, pattern: &str) -> Vec<String> {
        let now = self.now;
        self.store.keys_matching(now, &format!("{SCOPE}:{pattern}"))
    }

    pub(super) fn phase(&self, i: usize) -> &'static str {
        self.sides[i].m.phase_name()
    }

    pub(super) fn result(&self) -> Result<(), TestCaseError> {
        match (&self.violation, self.known_bug) {
            (Some(v), _) => Err(TestCaseError::fail(v.clone())),
            (None, Some(bug)) => Err(TestCaseError::reject(bug)),
            (None, None) => Ok(()),
        }
    }

    fn peer(i: usize) -> usize {
        1 - i
    }

    fn store_up(&self) -> bool {
        self.now >= self.store_down_until
    }

    fn start_due(&mut self) {
        for (i, alias) in ALIASES.iter().enumerate() {
            if !self.sides[i].started && self.sides[i].start_at <= self.now {
                let now = self.now;
                self.sides[i].m.start(now);
                self.sides[i].started = true;
                let inc = self.sides[i].inc;
                self.log(|| format!("{alias} starts, incarnation {inc:#x}"));
                self.drain(i, Ctx::default());
            }
        }
    }

    // ----- fault-phase actions -----

    pub(super) fn apply(&mut self, a: &Action) {
        if !self.ok() {
            return;
        }
        self.log(|| format!("action {a:?}"));
        match a {
            Action::Step { side, fate } => {
                self.step(*side, *fate);
            }
            Action::Tick { side, fate } => self.tick(*side, *fate),
            Action::Advance { ms } => {
                self.now += Duration::from_millis(*ms);
                self.start_due();
            }
            Action::Held { side, pick, deliver } => {
                let s = &mut self.sides[*side];
                if !s.held.is_empty() {
                    let h = s.held.remove(pick % s.held.len());
                    if *deliver {
                        self.deliver(*side, h.token, h.reply, h.fetched, false);
                    }
                }
            }
            Action::StoreDown { ms } => {
                self.store_down_until = self.store_down_until.max(self.now + Duration::from_millis(*ms));
            }
            Action::Read { side } => self.read(*side),
            Action::Deliver { side, pick, dup } => {
                let s = &mut self.sides[*side];
                if s.started && !s.queue.is_empty() {
                    let k = if self.knobs.reorder_within_a_log {
                        pick % s.queue.len()
                    } else {
                        // Each log is read in order; only the two logs interleave freely.
                        let heads: Vec<usize> = [Log::Stream, Log::Inbox]
                            .iter()
                            .filter_map(|l| s.queue.iter().position(|(q, _)| q == l))
                            .collect();
                        heads[pick % heads.len()]
                    };
                    let raw = if *dup {
                        s.queue[k].1.clone()
                    } else {
                        s.queue.remove(k).expect("in range").1
                    };
                    self.notify(*side, &raw);
                }
            }
            Action::Inject { side, what } => {
                if self.sides[*side].started {
                    let raw = self.fabricate(*side, what);
                    self.notify(*side, &raw);
                }
            }
            Action::Burst { side, n } => {
                if self.sides[*side].started {
                    let now = self.now;
                    for k in 0..*n {
                        self.sides[*side].m.handle_notification(now, &k.to_le_bytes());
                    }
                    self.drain(*side, Ctx::default());
                }
            }
            Action::Connected { side, ok } => self.connected(*side, *ok),
            Action::Restart { side } => self.restart(*side),
        }
    }

    fn restart(&mut self, i: usize) {
        // At most two crashes per run, and only of a running side.
        if self.restarts >= 2 || !self.sides[i].started {
            return;
        }
        self.restarts += 1;
        let old = &self.sides[i];
        let mut past = old.past_incs.clone();
        past.push(old.inc);
        let generation = old.generation + 1;
        // A new process only gets the alias once the dead one's lease expired.
        let start_at = self.now + self.timing.lease + Duration::from_millis(1);
        self.sides[i] = Side::new(i, generation, start_at, past);
        let inc = self.sides[i].inc;
        self.log(|| format!("{} crashed; incarnation {inc:#x} starts at {start_at:?}", ALIASES[i]));
    }

    fn read(&mut self, i: usize) {
        if !self.sides[i].started || !self.store_up() || self.sides[i].queue.len() > 256 {
            return;
        }
        let me = ALIASES[i];
        let (stream, inbox) = (self.keys.stream(me), self.keys.inbox(me));
        let now = self.now;
        let cursor = self.sides[i].cursor;
        let entries = self.store.read_log(now, &stream, cursor, 64);
        let popped = self.store.pop_log(now, &inbox, 64);
        let s = &mut self.sides[i];
        for (id, raw) in entries {
            s.cursor = id;
            s.queue.push_back((Log::Stream, raw));
        }
        s.queue.extend(popped.into_iter().map(|raw| (Log::Inbox, raw)));
    }

    fn fabricate(&self, i: usize, what: &Inject) -> Vec<u8> {
        let me = &self.sides[i];
        let peer = &self.sides[Self::peer(i)];
        let sample = Notification::QpReady {
            from: ALIASES[Self::peer(i)].into(),
            from_inc: peer.inc,
            to_inc: me.inc,
            again: false,
        }
        .encode();
        match what {
            Inject::Bytes(b) => b.clone(),
            Inject::Truncated { cut } => sample[..(*cut).min(sample.len().saturating_sub(1))].to_vec(),
            Inject::OtherVersion => String::from_utf8(sample)
                .expect("json")
                .replace("\"v\":1", "\"v\":2")
                .into_bytes(),
            Inject::Stale {
                kind,
                from,
                from_inc,
                to_inc,
            } => {
                let (from_alias, sender) = match from {
                    Sender::Peer => (ALIASES[Self::peer(i)], Some(peer)),
                    Sender::Me => (ALIASES[i], Some(me)),
                    Sender::Intruder => (INTRUDER, None),
                };
                let pick = |who: Option<&Side>, p: Inc| match (who, p) {
                    (Some(s), Inc::Current) => s.inc,
                    (Some(s), Inc::Previous) => s.past_incs.last().copied().unwrap_or(0x7777),
                    (None, Inc::Current | Inc::Previous) => 0x1234,
                    (_, Inc::Raw(r)) => r,
                };
                let f_inc = pick(sender, *from_inc);
                let mut t_inc = pick(Some(me), *to_inc);
                // A cleanup or reject from the peer's alias to our live incarnation is
                // one the peer may really have sent (an incarnation that knew ours): acting
                // on it is right, so it is not injected. Nor is a genuine qp_ready.
                let from_peer_to_me = matches!(from, Sender::Peer) && t_inc == me.inc;
                let genuine = from_peer_to_me && (f_inc == peer.inc || *kind >= 2);
                // Known bug: a stale qp_ready to our incarnation replaces a kept early one
                // (see `stale_qp_ready_replaces_the_kept_one`); without the knob it is
                // addressed to another incarnation.
                let hits_kept_qp_ready = *kind == 1 && from_peer_to_me && !self.knobs.stale_qp_ready;
                if (genuine && *kind != 0) || hits_kept_qp_ready {
                    t_inc = me.inc ^ 0xdead_0000;
                }
                let (mut from_alias, mut f_inc) = (from_alias, f_inc);
                if *kind == 0 && !matches!(from, Sender::Me) && !self.knobs.stale_requests {
                    // Known bug: a stale request can strand the initiator (see
                    // `request_from_another_alias_while_engaged_is_lost` and
                    // `stale_request_after_the_live_one_strands_the_initiator`);
                    // without the knob only duplicates of the live peer's request are injected.
                    (from_alias, f_inc) = (ALIASES[Self::peer(i)], peer.inc);
                }
                let from = from_alias.to_string();
                match kind {
                    0 => Notification::ConnectPeer { from, from_inc: f_inc },
                    1 => Notification::QpReady {
                        from,
                        from_inc: f_inc,
                        to_inc: t_inc,
                        again: false,
                    },
                    2 => Notification::Cleanup {
                        from,
                        from_inc: f_inc,
                        to_inc: t_inc,
                    },
                    _ => Notification::Reject {
                        from,
                        from_inc: f_inc,
                        to_inc: t_inc,
                        reason: "forged".into(),
                    },
                }
                .encode()
            }
        }
    }

    fn notify(&mut self, i: usize, raw: &[u8]) {
        let now = self.now;
        self.log(|| format!("{} <- notification {}", ALIASES[i], String::from_utf8_lossy(raw)));
        self.sides[i].m.handle_notification(now, raw);
        self.drain(i, Ctx::default());
    }

    fn connected(&mut self, i: usize, ok: bool) {
        if !self.sides[i].started {
            return;
        }
        let now = self.now;
        let s = &mut self.sides[i];
        let before = s.m.phase_name();
        let pending = s.pending_connect.take();
        let result = if ok {
            Ok(())
        } else {
            Err("connection refused".to_string())
        };
        s.m.handle_connected(now, result);
        let after = s.m.phase_name();
        if before == "connect" {
            check!(
                self,
                pending.is_some(),
                "{} in phase connect without a Connect event",
                ALIASES[i]
            );
            if ok {
                self.sides[i].connected_ok = pending;
            }
        } else {
            check!(
                self,
                before == after,
                "{}: a connect result in phase {before} moved it to {after}",
                ALIASES[i]
            );
        }
        self.log(|| format!("{} connected {ok}: {before} -> {after}", ALIASES[i]));
        self.drain(i, Ctx::default());
    }

    /// `handle_timeout(now)`, mirrored: a command past its deadline is
    /// abandoned, and a lease not refreshed for a lease period is lost.
    fn handle_timeout(&mut self, i: usize) {
        let now = self.now;
        let s = &mut self.sides[i];
        let live = !matches!(
            s.m.phase_name(),
            "idle" | "down" | "failed" | "closed" | "close_notify" | "close_release"
        );
        s.m.handle_timeout(now);
        if s.outstanding.as_ref().is_some_and(|o| now >= o.deadline) {
            s.outstanding = None;
        }
        if s.claimed && live && now.saturating_sub(s.lease_ok_at) >= self.timing.lease {
            s.claimed = false;
            s.lease_lapsed = true;
        }
        self.drain(i, Ctx::default());
    }

    /// `handle_timeout(now)`, take the due commands, then check the timer rule.
    fn tick(&mut self, i: usize, fate: Fate) {
        if !self.sides[i].started {
            return;
        }
        let now = self.now;
        self.handle_timeout(i);
        if self.step(i, fate) >= MAX_COMMANDS_PER_STEP || !self.ok() {
            return;
        }
        let s = &self.sides[i];
        if let Some(t) = s.m.poll_timeout() {
            let waiting = s.outstanding.as_ref().is_some_and(|o| o.deadline > now);
            check!(
                self,
                t > now || waiting,
                "{}: poll_timeout {t:?} <= now {now:?} after handle_timeout and with no command in flight (phase {})",
                ALIASES[i],
                self.sides[i].m.phase_name()
            );
        }
    }

    /// Take the side's due commands; returns how many.
    fn step(&mut self, i: usize, fate: Fate) -> usize {
        let mut n = 0;
        while self.ok() && self.sides[i].started && n < MAX_COMMANDS_PER_STEP {
            let now = self.now;
            let Some(cmd) = self.sides[i].m.poll_command(now) else {
                break;
            };
            n += 1;
            self.on_command(i, &cmd);
            if !self.ok() {
                break;
            }
            self.execute(i, cmd, fate);
        }
        n
    }

    /// Rules every command must follow.
    fn on_command(&mut self, i: usize, cmd: &Command) {
        let me = ALIASES[i];
        let now = self.now;
        self.log(|| format!("{me} -> #{} {}", cmd.token, show_op(&cmd.op)));
        let s = &self.sides[i];
        if let Some(o) = &s.outstanding {
            let t = o.token;
            self.fail(format!("{me}: command #{} issued while #{t} is in flight", cmd.token));
            return;
        }
        check!(
            self,
            cmd.token > self.sides[i].last_token,
            "{me}: token #{} after #{}",
            cmd.token,
            self.sides[i].last_token
        );
        let s = &self.sides[i];
        let (inc, k) = (s.inc, &self.keys);
        let peer_alias = s.m.peer_alias().map(str::to_string);
        let problem: Option<String> = match &cmd.op {
            StoreOp::Claim { key, record, ttl } => {
                (*key != k.agent(me) || record.incarnation != inc || *ttl != self.timing.lease)
                    .then(|| "claim of the wrong key, incarnation or ttl".into())
            }
            StoreOp::Refresh { key, incarnation, .. } => {
                (*key != k.agent(me) || *incarnation != inc).then(|| "refresh of someone else's lease".into())
            }
            StoreOp::DeleteMatching { patterns } => {
                (*patterns != k.stale_patterns(me)).then(|| "delete beyond own stale keys".into())
            }
            StoreOp::PutOwned {
                agent_key,
                incarnation,
                entries,
            } => {
                if !s.cleaned {
                    Some("publish before own stale keys were removed".into())
                } else if !s.claimed {
                    if !self.knobs.publish_while_reclaiming {
                        // Known bug: see `engage_while_reclaiming_runs_without_a_lease`.
                        self.known_bug = Some("runs without its lease after engaging while re-claiming");
                        return;
                    }
                    Some("publish while the machine holds no lease (lost, re-claim not answered)".into())
                } else if *agent_key != k.agent(me) || *incarnation != inc {
                    Some("publish under another lease".into())
                } else {
                    entries.iter().find_map(|(key, v)| {
                        let ok = if key.starts_with(&k.exchange(me, "")) {
                            EndpointInfo::decode(v).is_ok_and(|e| e.incarnation == inc && e.alias == me)
                        } else if *key == k.mr(me, MAILBOX_MR) {
                            MailboxInfo::decode(v).is_ok_and(|m| m.incarnation == inc && m.alias == me)
                        } else {
                            false
                        };
                        (!ok).then(|| format!("publishes bad entry {key}"))
                    })
                }
            }
            StoreOp::Fetch { agent_key, keys } => {
                let p = peer_alias.clone().unwrap_or_default();
                let full = [k.exchange(&p, me), k.mr(&p, MAILBOX_MR)];
                (*agent_key != k.agent(&p) || !(keys.is_empty() || *keys == full))
                    .then(|| format!("fetch of {agent_key} {keys:?} while engaged with {p:?}"))
            }
            StoreOp::Append {
                key, value, if_alive, ..
            } => match Notification::decode(value) {
                Err(e) => Some(format!("appends an undecodable notification: {e}")),
                Ok(n) => {
                    let p = peer_alias.clone().unwrap_or_default();
                    let from_ok = n.from() == me
                        && match &n {
                            Notification::ConnectPeer { from_inc, .. }
                            | Notification::QpReady { from_inc, .. }
                            | Notification::Cleanup { from_inc, .. }
                            | Notification::Reject { from_inc, .. } => *from_inc == inc,
                        };
                    let where_ok = match &n {
                        Notification::Cleanup { .. } => *key == k.inbox(&p) && *if_alive == Some(k.agent(&p)),
                        Notification::ConnectPeer { .. } => i == DRIVER && *key == k.stream(&p),
                        _ => *key == k.stream(&p),
                    };
                    let to_ok = match &n {
                        Notification::QpReady { to_inc, .. } => {
                            s.connected_ok.as_ref().map(PeerEndpoint::incarnation) == Some(*to_inc)
                        }
                        _ => true,
                    };
                    (!(from_ok && where_ok && to_ok)).then(|| format!("bad append {n:?} to {key} (peer {p:?})"))
                }
            },
            StoreOp::Release {
                agent_key,
                incarnation,
                keys,
            } => {
                let own = |key: &String| {
                    key.starts_with(&k.exchange(me, ""))
                        || *key == k.mr(me, MAILBOX_MR)
                        || *key == k.stream(me)
                        || *key == k.inbox(me)
                };
                (*agent_key != k.agent(me) || *incarnation != inc || !keys.iter().all(own))
                    .then(|| "release of keys that are not ours".into())
            }
        };
        if let Some(p) = problem {
            self.fail(format!("{me}: command #{} {}: {p}", cmd.token, show_op(&cmd.op)));
        }
        let s = &mut self.sides[i];
        s.published |= matches!(cmd.op, StoreOp::PutOwned { .. });
        s.last_token = cmd.token;
        s.outstanding_op = cmd.op.name();
        s.outstanding = Some(Outstanding {
            token: cmd.token,
            deadline: now + self.timing.op_timeout,
        });
    }

    fn execute(&mut self, i: usize, cmd: Command, fate: Fate) {
        if !self.store_up() {
            // A request to a store that is down: refused at once, or lost (timed out by the machine).
            match fate {
                Fate::LoseRequest | Fate::LoseReply | Fate::TimeoutAfterApply => {}
                _ => self.deliver(i, cmd.token, Err(StoreFailure::Unavailable("down".into())), None, true),
            }
            return;
        }
        match fate {
            Fate::Answer => {
                let (reply, fetched) = self.run_op(&cmd.op);
                self.deliver(i, cmd.token, Ok(reply), fetched, true);
            }
            Fate::LoseRequest => {}
            Fate::LoseReply => {
                let (reply, fetched) = self.run_op(&cmd.op);
                self.sides[i].held.push(HeldReply {
                    token: cmd.token,
                    reply: Ok(reply),
                    fetched,
                });
            }
            Fate::Unavailable => self.deliver(
                i,
                cmd.token,
                Err(StoreFailure::Unavailable("refused".into())),
                None,
                true,
            ),
            Fate::TimeoutAfterApply => {
                self.run_op(&cmd.op);
                self.deliver(i, cmd.token, Err(StoreFailure::Timeout), None, true);
            }
            Fate::Mismatch(k) => {
                let reply = mismatched(&cmd.op, k);
                self.deliver(i, cmd.token, Ok(reply), None, true);
            }
        }
    }

    fn run_op(&mut self, op: &StoreOp) -> (StoreReply, Option<Option<u64>>) {
        let reply = self.store.apply(self.now, op);
        let fetched = match (op, &reply) {
            (StoreOp::Fetch { .. }, StoreReply::Fetched { agent, .. }) => Some(match agent {
                AgentLookup::Present(r) => Some(r.incarnation),
                _ => None,
            }),
            _ => None,
        };
        (reply, fetched)
    }

    fn deliver(
        &mut self,
        i: usize,
        token: u64,
        reply: Result<StoreReply, StoreFailure>,
        fetched: Option<Option<u64>>,
        immediate: bool,
    ) {
        let now = self.now;
        self.log(|| format!("{} <- #{token} {}", ALIASES[i], show_reply(&reply)));
        let s = &mut self.sides[i];
        let expected = s.outstanding.as_ref().is_some_and(|o| o.token == token);
        if expected {
            s.outstanding = None;
            let phase = s.m.phase_name();
            match (s.outstanding_op, &reply) {
                // The machine only takes a claim reply as such in its claim phase.
                ("claim", Ok(StoreReply::Claimed)) if phase == "claim" => {
                    s.claimed = true;
                    s.lease_ok_at = now;
                }
                ("refresh", Ok(StoreReply::Refreshed)) => s.lease_ok_at = now,
                ("refresh", Ok(StoreReply::NotOwner { .. })) => {
                    s.claimed = false;
                    s.lease_lapsed = true;
                }
                ("put_owned", Ok(StoreReply::NotOwner { .. })) if phase == "publish" => {
                    s.claimed = false;
                    s.lease_lapsed = true;
                }
                ("release", Ok(StoreReply::Released { .. })) if phase == "close_release" => s.claimed = false,
                _ => {}
            }
            if matches!(reply, Ok(StoreReply::Deleted { .. })) {
                s.cleaned = true;
            }
        }
        let late_before = s.m.stats().late_replies;
        s.m.handle_reply(now, token, reply);
        if !expected {
            let late_after = self.sides[i].m.stats().late_replies;
            check!(
                self,
                late_after == late_before + 1,
                "{}: reply #{token} for no command in flight was not counted late",
                ALIASES[i]
            );
        }
        self.drain(i, Ctx { fetched, immediate });
    }

    /// Take every event of side `i`, checking each.
    fn drain(&mut self, i: usize, ctx: Ctx) {
        let me = ALIASES[i];
        let mut n = 0;
        let mut answer_connect = false;
        while let Some(ev) = self.sides[i].m.poll_event() {
            n += 1;
            if !matches!(ev, Event::Note(_)) {
                self.log(|| format!("{me} event {ev:?}"));
            }
            match ev {
                Event::Connect { peer } => {
                    let inc = peer.incarnation();
                    check!(
                        self,
                        ctx.fetched == Some(Some(inc)),
                        "{me}: Connect to incarnation {inc:#x}, but the fetch it came from saw {:?}",
                        ctx.fetched
                    );
                    if ctx.immediate {
                        let key = self.keys.agent(peer.alias());
                        let live = match self.store.lease(self.now, &key) {
                            AgentLookup::Present(r) => Some(r.incarnation),
                            _ => None,
                        };
                        check!(
                            self,
                            live == Some(inc),
                            "{me}: Connect to incarnation {inc:#x} while the store's lease is {live:?}"
                        );
                    }
                    let s = &self.sides[i];
                    let consistent = peer.info.peer == me
                        && Some(peer.alias()) == s.m.peer_alias()
                        && (i == WORKER || peer.alias() == ALIASES[WORKER])
                        && peer.mailbox.rkey == inc as u32
                        && peer.info.transport
                            == (TransportAddr::Sim {
                                node: inc,
                                endpoint_id: inc,
                            });
                    check!(self, consistent, "{me}: Connect with mixed-up peer info {peer:?}");
                    let s = &mut self.sides[i];
                    s.pending_connect = Some(peer);
                    s.connected_ok = None;
                    answer_connect = self.healing;
                }
                Event::Ready { peer } => {
                    let s = &self.sides[i];
                    check!(
                        self,
                        s.connected_ok.as_ref() == Some(&peer),
                        "{me}: Ready with {:#x} but the last successful connect was to {:?}",
                        peer.incarnation(),
                        s.connected_ok.as_ref().map(PeerEndpoint::incarnation)
                    );
                    check!(self, self.sides[i].m.is_ready(), "{me}: Ready event but not ready");
                    self.sides[i].ready = Some(peer);
                }
                Event::Down { reason } => {
                    check!(
                        self,
                        self.sides[i].ready.is_some(),
                        "{me}: Down ({reason}) without being ready"
                    );
                    let s = &mut self.sides[i];
                    s.ready = None;
                    s.ended = Some(End::Down(reason));
                }
                Event::Failed { error } => {
                    check!(self, !error.to_string().is_empty(), "{me}: Failed without a message");
                    let s = &mut self.sides[i];
                    s.ready = None;
                    s.ended = Some(End::Failed(error));
                }
                Event::Closed { clean } => {
                    check!(self, self.sides[i].m.is_closed(), "{me}: Closed event but not closed");
                    self.sides[i].closed = Some(clean);
                }
                Event::Note(_) => {}
            }
        }
        check!(
            self,
            n <= MAX_EVENTS,
            "{me}: {n} events queued, over the bound {MAX_EVENTS}"
        );
        let s = &mut self.sides[i];
        let phase = s.m.phase_name();
        if s.published && phase == "listen" {
            s.listened_after_publish = true;
        }
        // Every phase past the claim needs the lease; losing it sends the
        // machine back to claim (or down, from ready).
        let needs_lease = matches!(
            phase,
            "listen" | "publish" | "announce" | "fetch" | "connect" | "signal_ready" | "await_ready" | "ready"
        );
        if s.started && needs_lease && !s.claimed {
            if !self.knobs.publish_while_reclaiming {
                // Known bug: see `engage_while_reclaiming_runs_without_a_lease`.
                self.known_bug = Some("runs without its lease after engaging while re-claiming");
                return;
            }
            self.fail(format!("{me}: in phase {phase} without holding its lease"));
        }
        if answer_connect {
            self.connected(i, true);
        }
    }

    // ----- healing -----

    /// Stop every fault: store up, held replies delivered, pending connects answered.
    pub(super) fn heal(&mut self) {
        if !self.ok() {
            return;
        }
        self.log(|| "--- heal ---".into());
        self.healing = true;
        self.store_down_until = Duration::ZERO;
        for i in 0..2 {
            for h in std::mem::take(&mut self.sides[i].held) {
                self.deliver(i, h.token, h.reply, h.fetched, false);
            }
            if self.sides[i].pending_connect.is_some() {
                self.connected(i, true);
            }
        }
    }

    /// Everything at this instant: commands answered, notifications delivered in order.
    fn settle(&mut self) -> bool {
        let mut any = false;
        for _ in 0..200 {
            let mut progress = false;
            for i in 0..2 {
                progress |= self.step(i, Fate::Answer) > 0;
                self.read(i);
                while let Some((_, raw)) = self.sides[i].queue.pop_front() {
                    progress = true;
                    self.notify(i, &raw);
                }
            }
            if !progress || !self.ok() {
                return any;
            }
            any = true;
        }
        self.fail(format!("no quiescence at {:?}", self.now));
        any
    }

    /// Run fault-free from timer to timer until `done` or `until`; true if `done`.
    fn run_until(&mut self, until: Duration, done: impl Fn(&World) -> bool) -> bool {
        let mut stalled = 0;
        while self.ok() {
            self.steps += 1;
            check!(self, self.steps < 50_000, "step limit");
            self.start_due();
            let progress = self.settle();
            if !self.ok() {
                return false;
            }
            if done(self) {
                return true;
            }
            let next = (0..2)
                .filter_map(|i| {
                    let s = &self.sides[i];
                    if s.started {
                        s.m.poll_timeout()
                    } else {
                        Some(s.start_at)
                    }
                })
                .min();
            let Some(next) = next else { return false };
            if next > until {
                return false;
            }
            let mut next = next;
            if next <= self.now && !progress {
                // A due heartbeat or peer check waits behind a command in flight
                // (see `poll_timeout_reports_work_blocked_by_a_command_in_flight`):
                // nothing can happen before that command's deadline.
                let wake = self
                    .sides
                    .iter()
                    .filter_map(|s| s.outstanding.as_ref())
                    .map(|o| o.deadline)
                    .min();
                match wake {
                    Some(w) if w > self.now => next = w.min(until + Duration::from_nanos(1)),
                    _ => {
                        stalled += 1;
                        check!(
                            self,
                            stalled < 10,
                            "timer at {next:?} <= now {:?} is never handled (phases {} / {})",
                            self.now,
                            self.sides[0].m.phase_name(),
                            self.sides[1].m.phase_name()
                        );
                    }
                }
            } else {
                stalled = 0;
            }
            if next > until {
                return false;
            }
            self.now = self.now.max(next);
            for i in 0..2 {
                if self.sides[i].started {
                    self.handle_timeout(i);
                }
            }
        }
        false
    }

    fn paired(&self) -> bool {
        let (d, w) = (&self.sides[DRIVER], &self.sides[WORKER]);
        d.m.is_ready()
            && w.m.is_ready()
            && d.m.peer().map(PeerEndpoint::incarnation) == Some(w.inc)
            && w.m.peer().map(PeerEndpoint::incarnation) == Some(d.inc)
    }

    /// Out of the game: failed, down, or a responder listening again.
    fn settled(&self, i: usize) -> bool {
        let s = &self.sides[i];
        s.started && (matches!(s.m.phase_name(), "failed" | "down") || (i == WORKER && s.m.phase_name() == "listen"))
    }

    /// Heal, then require convergence (see the module docs).
    pub(super) fn converge(&mut self) {
        let fault_time = self.now;
        let none_ended = self.sides.iter().all(|s| s.ended.is_none());
        self.heal();
        let t = self.timing.clone();
        // A crashed side comes back first; the bounds count from there.
        let restart_at = self.sides.iter().filter(|s| !s.started).map(|s| s.start_at).max();
        if let Some(at) = restart_at {
            self.run_until(at, |_| false);
            self.now = self.now.max(at);
            self.start_due();
        }
        if !self.ok() {
            return;
        }
        let t0 = self.now;
        let strong = fault_time <= SHORT_FAULTS && self.restarts == 0 && none_ended;
        self.strong = strong;
        let ready_bound = t.op_timeout * 2 + t.retry_max + t.ready_refresh + t.peer_check;
        if strong {
            let done = self.run_until(t0 + ready_bound, World::paired);
            check!(
                self,
                done,
                "not both ready within {ready_bound:?} after faults of {fault_time:?} stopped"
            );
            return;
        }
        let end_bound = t.deadline + t.lease + t.op_timeout * 2 + t.ready_refresh + t.peer_check;
        self.run_until(t0 + end_bound, |w| {
            w.paired() || (w.settled(DRIVER) && w.settled(WORKER))
        });
        if !self.ok() || self.paired() {
            return;
        }
        let split = self.phase(DRIVER) == "ready" && self.phase(WORKER) == "listen";
        if split && self.sides[DRIVER].lease_lapsed && !self.knobs.split_after_lease_lapse {
            // Known bug: see `lease_lapse_leaves_the_initiator_ready_alone`.
            self.known_bug = Some("initiator ready, responder listening after a lease lapse");
            return;
        }
        let ended = self.sides.iter().any(|s| s.ended.is_some());
        check!(
            self,
            ended && self.settled(DRIVER) && self.settled(WORKER),
            "{end_bound:?} after healing: not paired, and not both out (driver {}, worker {})",
            self.sides[DRIVER].m.phase_name(),
            self.sides[WORKER].m.phase_name()
        );
    }

    /// Close both; both must close cleanly and leave no key of the scope.
    pub(super) fn close_both(&mut self) {
        if !self.ok() {
            return;
        }
        self.log(|| "--- close ---".into());
        for i in 0..2 {
            let now = self.now;
            let s = &mut self.sides[i];
            s.m.close(now);
            s.outstanding = None;
            self.drain(i, Ctx::default());
        }
        let t = &self.timing;
        let bound = (t.op_timeout + t.retry_max) * t.close_attempts * 2;
        let done = self.run_until(self.now + bound, |w| w.sides.iter().all(|s| s.m.is_closed()));
        check!(self, done, "not both closed within {bound:?}");
        for (i, alias) in ALIASES.iter().enumerate() {
            let closed = self.sides[i].closed;
            check!(
                self,
                closed == Some(true),
                "{alias} closed {closed:?} with the store up"
            );
        }
        let now = self.now;
        let worker_exchange = self.keys.exchange(ALIASES[WORKER], "");
        let left: Vec<String> = self
            .store
            .keys_matching(now, &self.keys.scope_pattern())
            .into_iter()
            // Known bug (see `close_forgets_the_exchange_key_of_an_abandoned_requester`):
            // a responder that went back to listening no longer releases the
            // exchange key it had published for that requester.
            .filter(|k| {
                self.knobs.strict_close_keys
                    || !(self.sides[WORKER].listened_after_publish && k.starts_with(&worker_exchange))
            })
            .collect();
        check!(self, left.is_empty(), "keys left after both closed: {left:?}");
    }
}

/// A command, short enough for a trace line.
fn show_op(op: &StoreOp) -> String {
    match op {
        StoreOp::Claim { key, record, .. } => format!("claim {key} inc {:#x}", record.incarnation),
        StoreOp::Refresh { key, .. } => format!("refresh {key}"),
        StoreOp::DeleteMatching { patterns } => format!("delete {patterns:?}"),
        StoreOp::PutOwned { entries, .. } => {
            format!("put {:?}", entries.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
        }
        StoreOp::Fetch { agent_key, keys } => format!("fetch {agent_key} {keys:?}"),
        StoreOp::Append {
            key, value, if_alive, ..
        } => {
            format!("append {key} {} if_alive {if_alive:?}", String::from_utf8_lossy(value))
        }
        StoreOp::Release { keys, .. } => format!("release {keys:?}"),
    }
}

/// A reply, short enough for a trace line.
fn show_reply(r: &Result<StoreReply, StoreFailure>) -> String {
    match r {
        Ok(StoreReply::Fetched { agent, values }) => {
            let agent = match agent {
                AgentLookup::Present(r) => format!("lease {:#x}", r.incarnation),
                other => format!("{other:?}"),
            };
            let present: Vec<bool> = values.iter().map(Option::is_some).collect();
            format!("fetched {agent} values {present:?}")
        }
        other => format!("{other:?}"),
    }
}

/// A reply of another operation than `op` (the store answering nonsense).
fn mismatched(op: &StoreOp, k: u8) -> StoreReply {
    let candidates = [
        StoreReply::Put,
        StoreReply::Appended,
        StoreReply::Deleted { count: 0 },
        StoreReply::Released { deleted: 0 },
        StoreReply::Refreshed,
        StoreReply::Claimed,
    ];
    let fits = |r: &StoreReply| {
        matches!(
            (op, r),
            (StoreOp::Claim { .. }, StoreReply::Claimed)
                | (StoreOp::Refresh { .. }, StoreReply::Refreshed)
                | (StoreOp::DeleteMatching { .. }, StoreReply::Deleted { .. })
                | (StoreOp::PutOwned { .. }, StoreReply::Put)
                | (StoreOp::Append { .. }, StoreReply::Appended)
                | (StoreOp::Release { .. }, StoreReply::Released { .. })
        )
    };
    let wrong: Vec<StoreReply> = candidates.into_iter().filter(|r| !fits(r)).collect();
    wrong[usize::from(k) % wrong.len()].clone()
}

pub(super) fn run(s: &Scenario, knobs: Knobs) -> Result<(), TestCaseError> {
    let mut w = World::new(s.start_ms, knobs);
    for a in &s.actions {
        w.apply(a);
    }
    w.converge();
    w.close_both();
    w.result()
}

proptest! {
    #![proptest_config(super::config(2000))]

    #[test]
    fn rendezvous_pair_survives_faults_and_converges(s in scenario(MAX_ACTIONS)) {
        run(&s, Knobs::ALL)?;
    }
}
