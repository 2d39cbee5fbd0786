//! The rendezvous state machine, sans-IO (quinn-proto / raft-rs style).
//!
//! It decides; the caller does the IO. Call order:
//!
//! 1. [`Rendezvous::start`] once;
//! 2. loop: take every [`Rendezvous::poll_command`] and execute it against the
//!    control store, feeding the outcome back with [`Rendezvous::handle_reply`]
//!    (at most one command is in flight); take every [`Rendezvous::poll_event`]
//!    and act on it ([`Event::Connect`] must be answered with
//!    [`Rendezvous::handle_connected`]); feed notifications read from
//!    `stream:{me}` / `inbox:{me}` to [`Rendezvous::handle_notification`]; sleep
//!    until [`Rendezvous::poll_timeout`] or new input, then call
//!    [`Rendezvous::handle_timeout`];
//! 3. [`Rendezvous::close`] when leaving; keep driving until [`Event::Closed`].
//!
//! Time is an argument (`now`, a monotonic duration since an origin the
//! caller picks), so the simulator, property tests and the fuzzer drive the
//! very same code as the real control loops.
//!
//! Rules it implements (README, "How the pieces work: Rendezvous"):
//! - **incarnations**: every agent start has a fresh, non-zero incarnation id;
//!   endpoint and mailbox info are only used when their incarnation equals the
//!   peer's live lease, so info of an older incarnation is never connected to;
//! - **own stale keys** (`exchange:{me}:*`, `mr:{me}:*`) are deleted right after
//!   the lease is claimed, before anything is published;
//! - **early notifications are kept**: a `qp_ready` that arrives before this
//!   side is waiting for it is remembered, never dropped;
//! - **no stale in-flight guard**: an attempt that ends early (peer not yet
//!   published, store error, no reply in time) schedules a retry, and any
//!   notification from the peer triggers the retry at once; a reply that comes
//!   back for an abandoned command is ignored by its token;
//! - **bounded**: retries back off exponentially up to a cap, and both an
//!   attempt count and a deadline bound the rendezvous;
//! - **geometry and wire version** are exchanged and checked: a mismatch is a
//!   clear error, not "slot_id out of range" later;
//! - **leases**: the own lease is refreshed by heartbeat; after the link is up
//!   the peer's lease is checked periodically and its expiry, a restart or a
//!   cleanup event ends the link ([`Event::Down`]).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::header::WIRE_VERSION;
use crate::keys::{Keys, MAILBOX_MR};
use crate::store::{AgentLookup, LogKind, StoreFailure, StoreOp, StoreReply};
use crate::transport::{MrDesc, TransportAddr, TransportKind};
use crate::values::{AgentRecord, ControlValue, EndpointInfo, Geometry, MailboxInfo, Notification, ValueError};

/// Which side starts the rendezvous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Knows its peer's alias and asks it to connect (the driver).
    Initiator { peer: String },
    /// Waits for a `connect_peer` notification (the worker).
    Responder,
}

/// Timers and bounds. All durations are in the caller's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// TTL of our lease record.
    pub lease: Duration,
    /// Lease refresh period (well under `lease`).
    pub heartbeat: Duration,
    /// How often a connected peer's lease is checked.
    pub peer_check: Duration,
    /// A store command unanswered after this is abandoned and retried.
    pub op_timeout: Duration,
    /// First retry delay; doubles per attempt up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Most attempts one rendezvous may take.
    pub max_attempts: u32,
    /// Longest one rendezvous may take (from start, or for a responder from
    /// the peer's request).
    pub deadline: Duration,
    /// While waiting for the peer's `qp_ready`, re-read its info this often
    /// (it may have restarted) and re-send ours (it may have been lost).
    pub ready_refresh: Duration,
    /// TTL of notification logs we append to, so leftovers of a crash expire.
    pub log_ttl: Duration,
    /// Entries kept per notification log.
    pub log_max_len: usize,
    /// Attempts per close step before giving up on a clean exit.
    pub close_attempts: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            peer_check: Duration::from_millis(500),
            op_timeout: Duration::from_secs(2),
            retry_initial: Duration::from_millis(2),
            retry_max: Duration::from_millis(250),
            max_attempts: 1000,
            deadline: Duration::from_secs(30),
            ready_refresh: Duration::from_secs(1),
            log_ttl: Duration::from_secs(120),
            log_max_len: 256,
            close_attempts: 3,
        }
    }
}

impl Timing {
    fn backoff(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(20);
        self.retry_initial.saturating_mul(1u32 << shift).min(self.retry_max)
    }
}

/// Everything the machine needs to know about this side.
#[derive(Clone, Debug)]
pub struct LocalEndpoint {
    pub alias: String,
    pub incarnation: u64,
    pub host: String,
    pub pid: u32,
    pub transport: TransportAddr,
    pub mailbox: MrDesc,
    pub geometry: Geometry,
}

/// The peer, as learnt from the store (both values share its live incarnation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEndpoint {
    pub info: EndpointInfo,
    pub mailbox: MrDesc,
}

impl PeerEndpoint {
    pub fn alias(&self) -> &str {
        &self.info.alias
    }
    pub fn incarnation(&self) -> u64 {
        self.info.incarnation
    }
}

/// Geometry or version disagreement found at rendezvous.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Incompatible {
    #[error("wire version mismatch: ours {ours}, peer's {theirs}")]
    WireVersion { ours: u32, theirs: u32 },
    #[error("slot size mismatch: ours {ours} bytes, peer's {theirs} bytes (use the same --buf-mb on both sides)")]
    SlotSize { ours: u64, theirs: u64 },
    #[error("slot count mismatch: ours {ours}, peer's {theirs} (use the same max in-flight on both sides)")]
    SlotCount { ours: u32, theirs: u32 },
    #[error("transport mismatch: ours {ours}, peer's {theirs} (use the same --transport on both sides)")]
    Transport { ours: TransportKind, theirs: TransportKind },
    #[error("peer's mailbox has {len} bytes, its geometry needs {needed}")]
    MailboxTooSmall { len: u64, needed: u64 },
}

/// Why one attempt ended without connecting (it is retried).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotYet {
    Store(StoreFailure),
    PeerNotRegistered { peer: String },
    PeerLeaseCorrupt { key: String, detail: String },
    PeerNotPublished { key: String },
    Stale { key: String, found: u64, live: u64 },
    BadValue { key: String, error: ValueError },
    ConnectFailed(String),
    PeerNotReady,
}

impl fmt::Display for NotYet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotYet::Store(e) => write!(f, "{e}"),
            NotYet::PeerNotRegistered { peer } => write!(f, "peer {peer:?} has no live lease"),
            NotYet::PeerLeaseCorrupt { key, detail } => {
                write!(f, "{key} is not a lease record: {detail}")
            }
            NotYet::PeerNotPublished { key } => write!(f, "{key} is not published yet"),
            NotYet::Stale { key, found, live } => {
                write!(f, "{key} belongs to incarnation {found:#x}, the live one is {live:#x}")
            }
            NotYet::BadValue { key, error } => write!(f, "{key}: {error}"),
            NotYet::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            NotYet::PeerNotReady => write!(f, "peer has not signalled qp_ready"),
        }
    }
}

/// Why a rendezvous failed for good.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RendezvousError {
    /// Another live agent holds the alias; use another `--scope`/`--alias`, or
    /// wait for its lease to expire if it is dead.
    #[error("alias {alias:?} is held by a live agent ({holder}); its lease ends in {ttl_left_ms} ms if it is dead — use another --scope or --alias")]
    AliasTaken {
        alias: String,
        holder: String,
        ttl_left_ms: u64,
    },
    /// Bounded retries exhausted.
    #[error("rendezvous with {peer} gave up after {attempts} attempts in {elapsed_ms} ms: {last}")]
    GaveUp {
        peer: String,
        attempts: u32,
        elapsed_ms: u64,
        last: String,
    },
    #[error("incompatible peer {peer}: {detail}")]
    Incompatible { peer: String, detail: Incompatible },
    /// The peer sent a cleanup event during rendezvous.
    #[error("peer {peer} left during rendezvous")]
    PeerLeft { peer: String },
    /// Our lease was lost or taken over.
    #[error("lease of {alias:?} was lost (store unreachable longer than the lease, or taken over)")]
    LeaseLost { alias: String },
    /// The peer refused to connect to us and said why.
    #[error("peer {peer} refused the connection: {reason} (as the peer sees it)")]
    Rejected { peer: String, reason: String },
}

/// Why an established link ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// The peer announced its exit.
    PeerCleanup { peer: String },
    /// The peer's lease expired (killed, host gone).
    PeerLeaseExpired { peer: String },
    /// The peer's lease now belongs to a newer incarnation.
    PeerRestarted { peer: String },
    /// Our own lease could not be kept: the peer will treat us as gone.
    OwnLeaseLost,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::PeerCleanup { peer } => write!(f, "peer {peer} sent a cleanup event"),
            DownReason::PeerLeaseExpired { peer } => write!(f, "lease of peer {peer} expired"),
            DownReason::PeerRestarted { peer } => write!(f, "peer {peer} restarted"),
            DownReason::OwnLeaseLost => write!(
                f,
                "our lease was lost: the control plane was unreachable for longer than the lease, or restarted empty"
            ),
        }
    }
}

/// Diagnostics: decisions worth a log line or a simulator event-log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    StaleKeysRemoved {
        count: usize,
    },
    AttemptEnded {
        attempt: u32,
        reason: NotYet,
        retry_in: Duration,
    },
    IgnoredNotification {
        detail: String,
    },
    BadNotification {
        error: ValueError,
    },
    StoreError {
        op: &'static str,
        error: StoreFailure,
    },
    LateReply {
        token: u64,
    },
    Engaged {
        peer: String,
        incarnation: u64,
    },
}

/// Output for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Connect the transport to this peer, then call [`Rendezvous::handle_connected`].
    Connect {
        peer: PeerEndpoint,
    },
    /// The link is up on both sides.
    Ready {
        peer: PeerEndpoint,
    },
    /// The established link ended; fail everything waiting on the peer.
    Down {
        reason: DownReason,
    },
    /// The rendezvous failed; call [`Rendezvous::close`] to clean up.
    Failed {
        error: RendezvousError,
    },
    /// Close finished; `clean` is false when the store could not be reached.
    Closed {
        clean: bool,
    },
    Note(Note),
}

/// A store command to execute; answer with its `token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub token: u64,
    pub op: StoreOp,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Claim,
    Clean,
    Listen,
    Publish,
    Announce,
    Fetch,
    Connect,
    SignalReady,
    AwaitReady,
    Ready,
    Down,
    Failed,
    CloseNotify,
    CloseRelease,
    Closed,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum OpKind {
    Phase,
    Heartbeat,
    PeerCheck,
    /// Initiator: `connect_peer` sent again while not ready.
    Announce,
    /// `qp_ready` sent again to a peer that asks again while we are ready.
    Resend,
}

#[derive(Clone, Debug)]
struct InFlight {
    token: u64,
    kind: OpKind,
    /// When it was sent: a lease refreshed by it runs from here, not from the reply.
    issued_at: Duration,
    /// The phase and engagement that issued it; a reply that comes back in
    /// another phase or engagement is stale.
    phase: Phase,
    epoch: u64,
    deadline: Duration,
}

/// Requests kept while engaged, and early `qp_ready`s kept: bounded.
const MAX_KEPT: usize = 8;
/// Aliases we published an exchange key for (released on close): bounded.
const MAX_PUBLISHED: usize = 64;

/// Peer we are engaged with.
#[derive(Clone, Debug)]
struct Target {
    alias: String,
    /// Incarnation we expect (responder: from its request), once known.
    incarnation: Option<u64>,
    endpoint: Option<PeerEndpoint>,
    connected_inc: Option<u64>,
    gone: bool,
}

/// Counters, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub commands: u64,
    pub attempts: u32,
    pub late_replies: u64,
    pub stale_notifications: u64,
    pub bad_notifications: u64,
    pub lease_refresh_failures: u64,
}

/// The rendezvous state machine. See the module docs.
#[derive(Debug)]
pub struct Rendezvous {
    keys: Keys,
    local: LocalEndpoint,
    role: Role,
    timing: Timing,
    phase: Phase,
    claimed: bool,
    target: Option<Target>,
    /// `qp_ready`s kept until they can be used: (from, from_inc), newest last.
    peer_ready: VecDeque<(String, u64)>,
    /// `connect_peer`s kept until the responder can act on them, newest last.
    pending_requests: VecDeque<(String, u64)>,
    /// Peers we published `exchange:{me}:{peer}` for; all released on close.
    published_to: VecDeque<String>,
    /// Initiator: when to send `connect_peer` again while not ready.
    next_announce: Option<Duration>,
    /// Counts engagements (and re-claims): tags phase commands.
    epoch: u64,
    /// Send `qp_ready` again: the peer, while we are ready, asked again
    /// (a repeated `connect_peer` or `qp_ready`) so it has not seen ours.
    resend_ready: bool,
    /// Why we refuse the peer; sent to it on close instead of a cleanup.
    reject: Option<String>,
    inflight: Option<InFlight>,
    phase_issued: bool,
    retry_at: Option<Duration>,
    attempts: u32,
    close_attempts: u32,
    clean_close: bool,
    episode_start: Duration,
    await_since: Duration,
    next_heartbeat: Option<Duration>,
    lease_ok_at: Duration,
    next_peer_check: Option<Duration>,
    last_reason: Option<NotYet>,
    next_token: u64,
    events: VecDeque<Event>,
    stats: Stats,
}

const MAX_EVENTS: usize = 1024;

impl Rendezvous {
    /// A machine for `local` in `role`.
    ///
    /// # Panics
    /// On a zero incarnation or a responder/initiator alias that is invalid
    /// (callers validate user input first; these are invariants).
    pub fn new(keys: Keys, local: LocalEndpoint, role: Role, timing: Timing) -> Self {
        assert_ne!(local.incarnation, 0, "incarnation ids are never zero");
        crate::keys::validate_alias(&local.alias).expect("valid alias");
        if let Role::Initiator { peer } = &role {
            crate::keys::validate_alias(peer).expect("valid peer alias");
        }
        Rendezvous {
            keys,
            local,
            role,
            timing,
            phase: Phase::Idle,
            claimed: false,
            target: None,
            peer_ready: VecDeque::new(),
            pending_requests: VecDeque::new(),
            published_to: VecDeque::new(),
            next_announce: None,
            epoch: 0,
            resend_ready: false,
            reject: None,
            inflight: None,
            phase_issued: false,
            retry_at: None,
            attempts: 0,
            close_attempts: 0,
            clean_close: true,
            episode_start: Duration::ZERO,
            await_since: Duration::ZERO,
            next_heartbeat: None,
            lease_ok_at: Duration::ZERO,
            next_peer_check: None,
            last_reason: None,
            next_token: 1,
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn alias(&self) -> &str {
        &self.local.alias
    }
    pub fn incarnation(&self) -> u64 {
        self.local.incarnation
    }
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Alias of the peer we are engaged with, if any.
    pub fn peer_alias(&self) -> Option<&str> {
        self.target.as_ref().map(|t| t.alias.as_str())
    }
    /// The connected peer, once ready.
    pub fn peer(&self) -> Option<&PeerEndpoint> {
        self.target.as_ref().and_then(|t| t.endpoint.as_ref())
    }
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }
    /// Name of the current phase (for logs and the simulator).
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Idle => "idle",
            Phase::Claim => "claim",
            Phase::Clean => "clean",
            Phase::Listen => "listen",
            Phase::Publish => "publish",
            Phase::Announce => "announce",
            Phase::Fetch => "fetch",
            Phase::Connect => "connect",
            Phase::SignalReady => "signal_ready",
            Phase::AwaitReady => "await_ready",
            Phase::Ready => "ready",
            Phase::Down => "down",
            Phase::Failed => "failed",
            Phase::CloseNotify => "close_notify",
            Phase::CloseRelease => "close_release",
            Phase::Closed => "closed",
        }
    }

    /// Begin: claim the lease, clean stale keys, then rendezvous.
    ///
    /// # Panics
    /// If called twice, or after `close` (a machine runs once; make a new one).
    pub fn start(&mut self, now: Duration) {
        assert_eq!(self.phase, Phase::Idle, "start called twice");
        if let Role::Initiator { peer } = &self.role {
            self.target = Some(Target::new(peer.clone(), None));
        }
        self.episode_start = now;
        self.enter(Phase::Claim);
    }

    /// Begin a clean exit from any phase: tell the peer, delete our keys.
    ///
    /// Release is guarded by our incarnation in the store, so it is safe even
    /// when the alias turned out to be held by someone else.
    /// `now` is taken like every other input, though closing needs no clock.
    pub fn close(&mut self, _now: Duration) {
        if matches!(self.phase, Phase::CloseNotify | Phase::CloseRelease | Phase::Closed) {
            return;
        }
        // A reply to whatever was in flight is now irrelevant.
        self.inflight = None;
        self.close_attempts = 0;
        let notify = self
            .target
            .as_ref()
            .is_some_and(|t| !t.gone && t.incarnation.is_some() && (t.endpoint.is_some() || self.reject.is_some()));
        self.enter(if notify {
            Phase::CloseNotify
        } else {
            Phase::CloseRelease
        });
    }

    /// The next store command, if one is due and none is in flight.
    pub fn poll_command(&mut self, now: Duration) -> Option<Command> {
        if self.inflight.is_some() {
            return None;
        }
        let closing = matches!(self.phase, Phase::CloseNotify | Phase::CloseRelease);
        let terminal = matches!(self.phase, Phase::Idle | Phase::Failed | Phase::Closed | Phase::Down);
        if !closing && !terminal && self.claimed {
            if self.next_heartbeat.is_some_and(|t| now >= t) {
                let op = StoreOp::Refresh {
                    key: self.keys.agent(&self.local.alias),
                    incarnation: self.local.incarnation,
                    ttl: self.timing.lease,
                };
                return Some(self.issue(now, OpKind::Heartbeat, op));
            }
            if matches!(self.phase, Phase::Ready | Phase::AwaitReady) && self.next_peer_check.is_some_and(|t| now >= t)
            {
                let peer = self.target.as_ref().expect("engaged").alias.clone();
                let op = StoreOp::Fetch {
                    agent_key: self.keys.agent(&peer),
                    keys: Vec::new(),
                };
                return Some(self.issue(now, OpKind::PeerCheck, op));
            }
            if self.resend_ready && self.phase == Phase::Ready {
                self.resend_ready = false;
                let t = self.target.as_ref().expect("ready has a peer");
                let op = self.append(
                    self.keys.stream(&t.alias),
                    LogKind::Stream,
                    Notification::QpReady {
                        from: self.local.alias.clone(),
                        from_inc: self.local.incarnation,
                        to_inc: t.connected_inc.expect("ready is connected"),
                        again: true,
                    },
                    None,
                );
                return Some(self.issue(now, OpKind::Resend, op));
            }
            if self.reannounce_due(now) {
                let peer = self.target.as_ref().expect("initiator has a target").alias.clone();
                let op = self.announce_op(&peer);
                return Some(self.issue(now, OpKind::Announce, op));
            }
        }
        if self.phase_issued || self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        let op = self.phase_op()?;
        if self.phase == Phase::Publish {
            // The keys may exist from the moment the command is sent, whether
            // or not its reply comes back: release them on close in any case.
            let alias = self.target.as_ref().expect("engaged").alias.clone();
            if !self.published_to.contains(&alias) {
                if self.published_to.len() >= MAX_PUBLISHED {
                    self.published_to.pop_front();
                }
                self.published_to.push_back(alias);
            }
        }
        self.phase_issued = true;
        self.retry_at = None;
        Some(self.issue(now, OpKind::Phase, op))
    }

    fn issue(&mut self, now: Duration, kind: OpKind, op: StoreOp) -> Command {
        let token = self.next_token;
        self.next_token += 1;
        self.stats.commands += 1;
        self.inflight = Some(InFlight {
            token,
            kind,
            issued_at: now,
            phase: self.phase,
            epoch: self.epoch,
            deadline: now + self.timing.op_timeout,
        });
        Command { token, op }
    }

    /// The initiator repeats its `connect_peer` every `ready_refresh` until
    /// ready: a responder that missed or dropped it (engaged with a stale
    /// requester, restarted, read it out of order) gets it again.
    fn reannounce_due(&self, now: Duration) -> bool {
        matches!(self.role, Role::Initiator { .. })
            && matches!(
                self.phase,
                Phase::Fetch | Phase::Connect | Phase::SignalReady | Phase::AwaitReady
            )
            && self.next_announce.is_some_and(|t| now >= t)
    }

    fn announce_op(&self, peer: &str) -> StoreOp {
        self.append(
            self.keys.stream(peer),
            LogKind::Stream,
            Notification::ConnectPeer {
                from: self.local.alias.clone(),
                from_inc: self.local.incarnation,
            },
            None,
        )
    }

    fn phase_op(&self) -> Option<StoreOp> {
        let me = &self.local.alias;
        let k = &self.keys;
        Some(match self.phase {
            Phase::Claim => StoreOp::Claim {
                key: k.agent(me),
                record: AgentRecord {
                    incarnation: self.local.incarnation,
                    host: self.local.host.clone(),
                    pid: self.local.pid,
                    wire_version: WIRE_VERSION,
                },
                ttl: self.timing.lease,
            },
            Phase::Clean => StoreOp::DeleteMatching {
                patterns: k.stale_patterns(me),
            },
            Phase::Publish => {
                let peer = &self.target.as_ref().expect("engaged").alias;
                let info = EndpointInfo {
                    wire_version: WIRE_VERSION,
                    alias: me.clone(),
                    peer: peer.clone(),
                    incarnation: self.local.incarnation,
                    transport: self.local.transport.clone(),
                    geometry: self.local.geometry,
                };
                let mailbox = MailboxInfo {
                    alias: me.clone(),
                    incarnation: self.local.incarnation,
                    mr: self.local.mailbox,
                };
                StoreOp::PutOwned {
                    agent_key: k.agent(me),
                    incarnation: self.local.incarnation,
                    entries: vec![
                        (k.exchange(me, peer), info.encode()),
                        (k.mr(me, MAILBOX_MR), mailbox.encode()),
                    ],
                }
            }
            Phase::Announce => self.announce_op(&self.target.as_ref().expect("engaged").alias),
            Phase::Fetch => {
                let peer = &self.target.as_ref().expect("engaged").alias;
                StoreOp::Fetch {
                    agent_key: k.agent(peer),
                    keys: vec![k.exchange(peer, me), k.mr(peer, MAILBOX_MR)],
                }
            }
            Phase::SignalReady => {
                let t = self.target.as_ref().expect("engaged");
                self.append(
                    k.stream(&t.alias),
                    LogKind::Stream,
                    Notification::QpReady {
                        from: me.clone(),
                        from_inc: self.local.incarnation,
                        to_inc: t.connected_inc.expect("connected"),
                        again: false,
                    },
                    None,
                )
            }
            Phase::CloseNotify if self.reject.is_some() => {
                let t = self.target.as_ref().expect("engaged");
                self.append(
                    k.stream(&t.alias),
                    LogKind::Stream,
                    Notification::Reject {
                        from: me.clone(),
                        from_inc: self.local.incarnation,
                        to_inc: t.incarnation.expect("known"),
                        reason: self.reject.clone().expect("checked"),
                    },
                    None,
                )
            }
            Phase::CloseNotify => {
                let t = self.target.as_ref().expect("engaged");
                self.append(
                    k.inbox(&t.alias),
                    LogKind::Queue,
                    Notification::Cleanup {
                        from: me.clone(),
                        from_inc: self.local.incarnation,
                        to_inc: t.incarnation.expect("known"),
                    },
                    // Only a live peer gets it: a push after its exit would be
                    // a key nobody deletes.
                    Some(k.agent(&t.alias)),
                )
            }
            Phase::CloseRelease => {
                let mut keys: Vec<String> = self.published_to.iter().map(|p| k.exchange(me, p)).collect();
                if let Some(t) = &self.target {
                    if !self.published_to.contains(&t.alias) {
                        keys.push(k.exchange(me, &t.alias));
                    }
                }
                keys.extend([k.mr(me, MAILBOX_MR), k.stream(me), k.inbox(me)]);
                StoreOp::Release {
                    agent_key: k.agent(me),
                    incarnation: self.local.incarnation,
                    keys,
                }
            }
            Phase::Idle
            | Phase::Listen
            | Phase::Connect
            | Phase::AwaitReady
            | Phase::Ready
            | Phase::Down
            | Phase::Failed
            | Phase::Closed => return None,
        })
    }

    fn append(&self, key: String, log: LogKind, n: Notification, if_alive: Option<String>) -> StoreOp {
        StoreOp::Append {
            key,
            log,
            value: n.encode(),
            if_alive,
            max_len: self.timing.log_max_len,
            ttl: self.timing.log_ttl,
        }
    }

    /// The outcome of command `token`.
    pub fn handle_reply(&mut self, now: Duration, token: u64, reply: Result<StoreReply, StoreFailure>) {
        let Some(inflight) = self.inflight.take_if(|f| f.token == token) else {
            self.stats.late_replies += 1;
            self.note(Note::LateReply { token });
            return;
        };
        match inflight.kind {
            OpKind::Heartbeat => self.on_heartbeat(now, inflight.issued_at, reply),
            OpKind::PeerCheck => self.on_peer_check(now, reply),
            OpKind::Phase if inflight.phase != self.phase || inflight.epoch != self.epoch => {
                // Issued by a phase we have left (e.g. our lease was lost
                // meanwhile): whatever it says is about the past.
                self.stats.late_replies += 1;
                self.note(Note::LateReply { token });
            }
            OpKind::Phase => self.on_phase_reply(now, inflight.issued_at, reply),
            OpKind::Announce => {
                // Success or not, try again a refresh later (bounded by the deadline).
                if let Err(error) = reply {
                    self.note(Note::StoreError { op: "announce", error });
                }
                self.next_announce = Some(now + self.timing.ready_refresh);
            }
            OpKind::Resend => {
                if let Err(error) = reply {
                    self.note(Note::StoreError {
                        op: "resend_ready",
                        error,
                    });
                }
            }
        }
    }

    fn on_heartbeat(&mut self, now: Duration, issued_at: Duration, reply: Result<StoreReply, StoreFailure>) {
        match reply {
            Ok(StoreReply::Refreshed) => {
                // The store extended the lease when it ran the command, no
                // earlier than we sent it: counting from then is safe.
                self.lease_ok_at = issued_at;
                self.next_heartbeat = Some(now + self.timing.heartbeat);
            }
            Ok(StoreReply::NotOwner { .. }) => self.lease_lost(now),
            Ok(other) => self.heartbeat_failed(now, StoreFailure::Unexpected(format!("{other:?}"))),
            Err(e) => self.heartbeat_failed(now, e),
        }
    }

    fn heartbeat_failed(&mut self, now: Duration, error: StoreFailure) {
        self.stats.lease_refresh_failures += 1;
        self.note(Note::StoreError { op: "refresh", error });
        // Retry sooner than a full period; the lease-lost check bounds the wait.
        self.next_heartbeat = Some(
            now + self
                .timing
                .heartbeat
                .min(self.timing.retry_max.max(self.timing.retry_initial)),
        );
    }

    /// Our lease is gone (expired while the store was unreachable, or not
    /// ours any more). A live link goes down: the peer treats us as gone. A
    /// rendezvous re-claims with the same incarnation, still bounded by its
    /// deadline; a takeover by another incarnation then shows as `AliasTaken`.
    fn lease_lost(&mut self, now: Duration) {
        self.claimed = false;
        self.epoch += 1;
        match self.phase {
            Phase::Ready => self.go_down(DownReason::OwnLeaseLost),
            Phase::Listen => {
                self.episode_start = now;
                self.enter(Phase::Claim);
            }
            _ if self.in_rendezvous() => self.enter(Phase::Claim),
            _ => {}
        }
    }

    fn on_peer_check(&mut self, now: Duration, reply: Result<StoreReply, StoreFailure>) {
        self.next_peer_check = Some(now + self.timing.peer_check);
        let Some(t) = &self.target else { return };
        let peer = t.alias.clone();
        let live_inc = t.connected_inc;
        match reply {
            Ok(StoreReply::Fetched { agent, .. }) => match agent {
                AgentLookup::Absent => self.peer_lost(now, DownReason::PeerLeaseExpired { peer }),
                AgentLookup::Present(r) if Some(r.incarnation) != live_inc => {
                    self.peer_lost(now, DownReason::PeerRestarted { peer })
                }
                AgentLookup::Present(_) => {}
                AgentLookup::Corrupt(detail) => self.note(Note::StoreError {
                    op: "peer_check",
                    error: StoreFailure::Unexpected(detail),
                }),
            },
            Ok(other) => self.note(Note::StoreError {
                op: "peer_check",
                error: StoreFailure::Unexpected(format!("{other:?}")),
            }),
            // Store trouble says nothing about the peer; the data path and
            // later checks will tell.
            Err(error) => self.note(Note::StoreError {
                op: "peer_check",
                error,
            }),
        }
    }

    /// The peer is gone: an established link goes down; a rendezvous in
    /// progress fails (initiator) or goes back to listening (responder).
    fn peer_lost(&mut self, now: Duration, reason: DownReason) {
        if let Some(t) = &mut self.target {
            t.gone = true;
        }
        match self.phase {
            Phase::Ready => self.go_down(reason),
            // Closing goes on (the peer is marked gone, so it is not notified).
            _ if self.is_terminal() || self.is_closing() => {}
            _ => match self.role {
                Role::Responder => self.back_to_listen(now),
                Role::Initiator { .. } => {
                    let peer = self.target.as_ref().map(|t| t.alias.clone()).unwrap_or_default();
                    self.fail(RendezvousError::PeerLeft { peer });
                }
            },
        }
    }

    fn on_phase_reply(&mut self, now: Duration, issued_at: Duration, reply: Result<StoreReply, StoreFailure>) {
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                self.note(Note::StoreError {
                    op: self.phase_name(),
                    error: e.clone(),
                });
                return self.attempt_ended(now, NotYet::Store(e));
            }
        };
        match (self.phase, reply) {
            (Phase::Claim, StoreReply::Claimed) => {
                self.claimed = true;
                self.lease_ok_at = issued_at;
                self.next_heartbeat = Some(now + self.timing.heartbeat);
                self.enter(Phase::Clean);
            }
            (Phase::Claim, StoreReply::Conflict { holder, ttl_left }) => {
                let holder = match holder {
                    AgentLookup::Present(r) => format!("incarnation {:#x} on {} pid {}", r.incarnation, r.host, r.pid),
                    AgentLookup::Corrupt(d) => format!("a value that is not a lease record: {d}"),
                    AgentLookup::Absent => "unknown".into(),
                };
                self.fail(RendezvousError::AliasTaken {
                    alias: self.local.alias.clone(),
                    holder,
                    ttl_left_ms: ttl_left.map_or(0, |d| d.as_millis() as u64),
                });
            }
            (Phase::Clean, StoreReply::Deleted { count }) => {
                if count > 0 {
                    self.note(Note::StaleKeysRemoved { count });
                }
                match self.role {
                    Role::Initiator { .. } => self.enter(Phase::Publish),
                    Role::Responder if self.target.is_some() => self.enter(Phase::Publish),
                    Role::Responder => self.listen(now),
                }
            }
            (Phase::Publish, StoreReply::Put) => match self.role {
                Role::Initiator { .. } => self.enter(Phase::Announce),
                Role::Responder => self.enter(Phase::Fetch),
            },
            (Phase::Publish, StoreReply::NotOwner { .. }) => self.lease_lost(now),
            (Phase::Announce, StoreReply::Appended) => {
                self.next_announce = Some(now + self.timing.ready_refresh);
                self.enter(Phase::Fetch);
            }
            (Phase::Fetch, StoreReply::Fetched { agent, values }) => self.on_fetched(now, agent, values),
            (Phase::SignalReady, StoreReply::Appended) => {
                self.await_since = now;
                self.enter(Phase::AwaitReady);
                self.next_peer_check = Some(now + self.timing.peer_check);
                self.check_peer_ready(now);
            }
            (Phase::CloseNotify, StoreReply::Appended | StoreReply::Skipped) => {
                self.close_attempts = 0;
                self.enter(Phase::CloseRelease);
            }
            (Phase::CloseRelease, StoreReply::Released { .. }) => {
                self.claimed = false;
                self.enter(Phase::Closed);
                let clean = self.clean_close;
                self.push(Event::Closed { clean });
            }
            (_, other) => {
                let e = StoreFailure::Unexpected(format!("{other:?} in phase {}", self.phase_name()));
                self.note(Note::StoreError {
                    op: self.phase_name(),
                    error: e.clone(),
                });
                self.attempt_ended(now, NotYet::Store(e));
            }
        }
    }

    fn on_fetched(&mut self, now: Duration, agent: AgentLookup, values: Vec<Option<Vec<u8>>>) {
        let me = self.local.alias.clone();
        let t = self.target.as_ref().expect("engaged in fetch");
        let peer = t.alias.clone();
        let expected = t.incarnation;
        let live = match agent {
            // Absent may be a lapse the peer recovers from (it re-claims with the
            // same incarnation), so it is retried, bounded by the deadline —
            // unless a responder has other requests waiting: then this one
            // may be a ghost holding them up, and the next one is served.
            // (A lease of *another* incarnation proves a request stale: below.)
            AgentLookup::Absent if matches!(self.role, Role::Responder) && !self.pending_requests.is_empty() => {
                self.note(Note::IgnoredNotification {
                    detail: format!("connect_peer from {peer}, which holds no lease, while others wait"),
                });
                return self.back_to_listen(now);
            }
            AgentLookup::Absent => {
                return self.attempt_ended(now, NotYet::PeerNotRegistered { peer });
            }
            AgentLookup::Corrupt(detail) => {
                let key = self.keys.agent(&peer);
                return self.attempt_ended(now, NotYet::PeerLeaseCorrupt { key, detail });
            }
            AgentLookup::Present(r) => r.incarnation,
        };
        if let (Role::Responder, Some(exp)) = (&self.role, expected) {
            if exp != live {
                // The request came from an incarnation that is no longer alive.
                self.note(Note::IgnoredNotification {
                    detail: format!("connect_peer from {peer} incarnation {exp:#x}, live is {live:#x}"),
                });
                self.stats.stale_notifications += 1;
                return self.back_to_listen(now);
            }
        }
        let xkey = self.keys.exchange(&peer, &me);
        let mkey = self.keys.mr(&peer, MAILBOX_MR);
        let mut values = values.into_iter();
        let (xval, mval) = (values.next().flatten(), values.next().flatten());
        let info = match decode_live::<EndpointInfo>(&xkey, xval, live, |v| v.incarnation) {
            Ok(v) => v,
            Err(r) => return self.attempt_ended(now, r),
        };
        if info.alias != peer || info.peer != me {
            let error = ValueError::Malformed(format!("names {}→{}, expected {peer}→{me}", info.alias, info.peer));
            return self.attempt_ended(now, NotYet::BadValue { key: xkey, error });
        }
        let mailbox = match decode_live::<MailboxInfo>(&mkey, mval, live, |v| v.incarnation) {
            Ok(v) => v,
            Err(r) => return self.attempt_ended(now, r),
        };
        if let Err(detail) = self.check_compat(&info, &mailbox) {
            // Tell the peer on close, so it fails now rather than at its deadline.
            self.reject = Some(detail.to_string());
            if let Some(t) = self.target.as_mut() {
                t.incarnation = Some(live);
            }
            return self.fail(RendezvousError::Incompatible { peer, detail });
        }
        let endpoint = PeerEndpoint {
            info,
            mailbox: mailbox.mr,
        };
        let t = self.target.as_mut().expect("engaged");
        t.incarnation = Some(live);
        t.endpoint = Some(endpoint.clone());
        if t.connected_inc == Some(live) {
            // A refresh while awaiting qp_ready: same peer, re-signal ours.
            self.enter(Phase::SignalReady);
        } else {
            t.connected_inc = None;
            self.enter(Phase::Connect);
            self.push(Event::Connect { peer: endpoint });
        }
    }

    fn check_compat(&self, info: &EndpointInfo, mailbox: &MailboxInfo) -> Result<(), Incompatible> {
        let ours = &self.local;
        if info.wire_version != WIRE_VERSION {
            return Err(Incompatible::WireVersion {
                ours: WIRE_VERSION,
                theirs: info.wire_version,
            });
        }
        if info.transport.kind() != ours.transport.kind() {
            return Err(Incompatible::Transport {
                ours: ours.transport.kind(),
                theirs: info.transport.kind(),
            });
        }
        if info.geometry.slot_size != ours.geometry.slot_size {
            return Err(Incompatible::SlotSize {
                ours: ours.geometry.slot_size,
                theirs: info.geometry.slot_size,
            });
        }
        if info.geometry.slot_count != ours.geometry.slot_count {
            return Err(Incompatible::SlotCount {
                ours: ours.geometry.slot_count,
                theirs: info.geometry.slot_count,
            });
        }
        let needed = info.geometry.mailbox_len();
        if mailbox.mr.len < needed {
            return Err(Incompatible::MailboxTooSmall {
                len: mailbox.mr.len,
                needed,
            });
        }
        Ok(())
    }

    /// Result of the transport connect requested by [`Event::Connect`].
    pub fn handle_connected(&mut self, now: Duration, result: Result<(), String>) {
        if self.phase != Phase::Connect {
            return;
        }
        match result {
            Ok(()) => {
                let t = self.target.as_mut().expect("engaged");
                t.connected_inc = t.incarnation;
                self.enter(Phase::SignalReady);
            }
            Err(e) => self.attempt_ended(now, NotYet::ConnectFailed(e)),
        }
    }

    /// A raw entry read from `stream:{me}` or `inbox:{me}`.
    pub fn handle_notification(&mut self, now: Duration, raw: &[u8]) {
        let n = match Notification::decode(raw) {
            Ok(n) => n,
            Err(error) => {
                self.stats.bad_notifications += 1;
                return self.note(Note::BadNotification { error });
            }
        };
        match n {
            Notification::ConnectPeer { from, from_inc } => self.on_connect_request(now, from, from_inc),
            Notification::QpReady {
                from,
                from_inc,
                to_inc,
                again,
            } => {
                if to_inc != self.local.incarnation {
                    return self.ignore(format!("qp_ready from {from} for incarnation {to_inc:#x}"));
                }
                if self.target.as_ref().is_some_and(|t| t.alias != from) {
                    return self.ignore(format!("qp_ready from {from}, not our peer"));
                }
                // Keep it whatever the phase: it may be early. One per
                // incarnation, so a stale one cannot replace the live one.
                if !self.peer_ready.iter().any(|(a, i)| *a == from && *i == from_inc) {
                    if self.peer_ready.len() >= MAX_KEPT {
                        self.peer_ready.pop_front();
                    }
                    self.peer_ready.push_back((from.clone(), from_inc));
                }
                // Ready, and our peer signals again: it has not seen ours yet.
                if !again
                    && self.phase == Phase::Ready
                    && self
                        .target
                        .as_ref()
                        .is_some_and(|t| t.alias == from && t.connected_inc == Some(from_inc))
                {
                    self.resend_ready = true;
                }
                self.kick();
                self.check_peer_ready(now);
            }
            Notification::Reject {
                from,
                from_inc,
                to_inc,
                reason,
            } => {
                if to_inc != self.local.incarnation {
                    return self.ignore(format!("reject from {from} for incarnation {to_inc:#x}"));
                }
                let ours = self
                    .target
                    .as_ref()
                    .is_some_and(|t| t.alias == from && t.incarnation.is_none_or(|i| i == from_inc));
                if !ours || !self.in_rendezvous() {
                    return self.ignore(format!("reject from {from} incarnation {from_inc:#x}, not our peer"));
                }
                if let Some(t) = self.target.as_mut() {
                    t.gone = true;
                }
                self.fail(RendezvousError::Rejected { peer: from, reason });
            }
            Notification::Cleanup { from, from_inc, to_inc } => {
                if to_inc != self.local.incarnation {
                    return self.ignore(format!("cleanup from {from} for incarnation {to_inc:#x}"));
                }
                let ours = self
                    .target
                    .as_ref()
                    .is_some_and(|t| t.alias == from && t.incarnation.is_none_or(|i| i == from_inc));
                if !ours {
                    return self.ignore(format!("cleanup from {from} incarnation {from_inc:#x}, not our peer"));
                }
                self.peer_lost(now, DownReason::PeerCleanup { peer: from });
            }
        }
    }

    fn on_connect_request(&mut self, now: Duration, from: String, from_inc: u64) {
        if !matches!(self.role, Role::Responder) {
            return self.ignore(format!("connect_peer from {from}: this side initiates"));
        }
        if from == self.local.alias {
            return self.ignore("connect_peer from ourselves".into());
        }
        if self.is_terminal() && self.phase != Phase::Idle || self.is_closing() {
            return self.ignore(format!("connect_peer from {from}: not accepting"));
        }
        if let Some(t) = &self.target {
            if t.alias == from && t.incarnation == Some(from_inc) {
                // A repeat: the peer is still trying. Ready: it may have missed
                // our qp_ready, say it again. Otherwise retry now.
                if self.phase == Phase::Ready {
                    self.resend_ready = true;
                } else {
                    self.kick();
                }
                return;
            }
        }
        if self.phase == Phase::Listen && self.claimed && self.target.is_none() {
            return self.engage(now, from, from_inc);
        }
        // Engaged (with another alias, or another incarnation of our peer —
        // which one is live only the lease can tell), or not holding a lease
        // right now: keep it for when we listen again. Never switch blindly:
        // a reordered stale request would otherwise break a live rendezvous.
        self.keep_request(from, from_inc);
    }

    fn keep_request(&mut self, from: String, from_inc: u64) {
        if self.pending_requests.iter().any(|(a, i)| *a == from && *i == from_inc) {
            return;
        }
        if self.pending_requests.len() >= MAX_KEPT {
            self.pending_requests.pop_front();
        }
        self.pending_requests.push_back((from, from_inc));
    }

    fn engage(&mut self, now: Duration, from: String, from_inc: u64) {
        debug_assert!(self.claimed, "engage only while holding the lease");
        self.note(Note::Engaged {
            peer: from.clone(),
            incarnation: from_inc,
        });
        self.pending_requests.retain(|(a, i)| !(*a == from && *i == from_inc));
        self.epoch += 1;
        self.target = Some(Target::new(from, Some(from_inc)));
        self.episode_start = now;
        self.attempts = 0;
        self.enter(Phase::Publish);
    }

    /// Listen for requests; take the newest kept one at once. Listening
    /// needs the lease: without it (lost, re-claim pending) claim first.
    fn listen(&mut self, now: Duration) {
        if !self.claimed {
            self.episode_start = now;
            self.enter(Phase::Claim);
            return;
        }
        self.enter(Phase::Listen);
        if let Some((from, inc)) = self.pending_requests.pop_back() {
            self.engage(now, from, inc);
        }
    }

    /// The engagement is over (stale request, peer gone): listen again.
    fn back_to_listen(&mut self, now: Duration) {
        self.epoch += 1;
        if let Some(t) = self.target.take() {
            // Forget only the abandoned incarnation: a kept qp_ready of the
            // live one may be exactly what the next engagement needs.
            self.peer_ready
                .retain(|(a, i)| !(*a == t.alias && Some(*i) == t.incarnation));
        }
        self.attempts = 0;
        self.next_peer_check = None;
        self.listen(now);
    }

    fn check_peer_ready(&mut self, now: Duration) {
        if self.phase != Phase::AwaitReady {
            return;
        }
        let t = self.target.as_ref().expect("engaged");
        let matches = self
            .peer_ready
            .iter()
            .any(|(a, inc)| *a == t.alias && Some(*inc) == t.connected_inc);
        if matches {
            let peer = t.endpoint.clone().expect("connected peer has an endpoint");
            self.enter(Phase::Ready);
            self.next_peer_check = Some(now + self.timing.peer_check);
            self.push(Event::Ready { peer });
        }
    }

    /// Time has passed; `now` should be at or after [`Rendezvous::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Duration) {
        if let Some(f) = &self.inflight {
            if now >= f.deadline {
                let token = f.token;
                // Abandon it: its reply, if it ever comes, is ignored by token.
                self.handle_reply(now, token, Err(StoreFailure::Timeout));
            }
        }
        if self.claimed
            && !self.is_terminal()
            && !self.is_closing()
            && now.saturating_sub(self.lease_ok_at) >= self.timing.lease
        {
            self.lease_lost(now);
        }
        if self.in_rendezvous() && now.saturating_sub(self.episode_start) >= self.timing.deadline {
            self.give_up(now);
        }
        if self.phase == Phase::AwaitReady && now.saturating_sub(self.await_since) >= self.timing.ready_refresh {
            self.last_reason = Some(NotYet::PeerNotReady);
            self.enter(Phase::Fetch);
        }
    }

    /// The earliest time at which [`Rendezvous::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let mut t: Option<Duration> = None;
        let mut at = |d: Option<Duration>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |x| x.min(d)));
            }
        };
        at(self.inflight.as_ref().map(|f| f.deadline));
        let live = !self.is_terminal() && !self.is_closing();
        // Commands that become due only matter when none is in flight
        // (poll_command issues one at a time).
        if self.inflight.is_none() {
            at(self.retry_at.filter(|_| !self.phase_issued));
            if live && self.claimed {
                at(self.next_heartbeat);
                if matches!(self.phase, Phase::Ready | Phase::AwaitReady) {
                    at(self.next_peer_check);
                }
                if self.reannounce_due(Duration::MAX) {
                    at(self.next_announce);
                }
            }
        }
        if live && self.claimed {
            at(Some(self.lease_ok_at + self.timing.lease));
        }
        if self.in_rendezvous() {
            at(Some(self.episode_start + self.timing.deadline));
        }
        if self.phase == Phase::AwaitReady {
            at(Some(self.await_since + self.timing.ready_refresh));
        }
        t
    }

    /// Next output for the caller.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- helpers -----

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.phase_issued = false;
        self.retry_at = None;
    }

    fn is_terminal(&self) -> bool {
        matches!(self.phase, Phase::Idle | Phase::Down | Phase::Failed | Phase::Closed)
    }

    fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::CloseNotify | Phase::CloseRelease)
    }

    /// In a phase bounded by the rendezvous deadline (listening is not: a
    /// worker may wait for a driver as long as it likes).
    fn in_rendezvous(&self) -> bool {
        matches!(
            self.phase,
            Phase::Claim
                | Phase::Clean
                | Phase::Publish
                | Phase::Announce
                | Phase::Fetch
                | Phase::Connect
                | Phase::SignalReady
                | Phase::AwaitReady
        )
    }

    fn attempt_ended(&mut self, now: Duration, reason: NotYet) {
        if self.is_closing() {
            self.close_attempts += 1;
            if self.close_attempts >= self.timing.close_attempts {
                // Give up on this step: keys will expire or be removed at the next start.
                self.clean_close = false;
                if self.phase == Phase::CloseNotify {
                    self.close_attempts = 0;
                    self.enter(Phase::CloseRelease);
                } else {
                    self.enter(Phase::Closed);
                    self.push(Event::Closed { clean: false });
                }
            } else {
                self.phase_issued = false;
                self.retry_at = Some(now + self.timing.backoff(self.close_attempts));
            }
            return;
        }
        if !self.in_rendezvous() {
            return;
        }
        self.attempts += 1;
        self.stats.attempts += 1;
        if self.attempts >= self.timing.max_attempts || now.saturating_sub(self.episode_start) >= self.timing.deadline {
            self.last_reason = Some(reason);
            return self.give_up(now);
        }
        let retry_in = self.timing.backoff(self.attempts);
        self.note(Note::AttemptEnded {
            attempt: self.attempts,
            reason: reason.clone(),
            retry_in,
        });
        self.last_reason = Some(reason);
        // A failed connect or fetch restarts from fetching fresh peer info.
        if matches!(self.phase, Phase::Connect) {
            self.enter(Phase::Fetch);
        }
        self.phase_issued = false;
        self.retry_at = Some(now + retry_in);
    }

    fn give_up(&mut self, now: Duration) {
        let peer = self
            .target
            .as_ref()
            .map_or_else(|| "(none)".to_string(), |t| t.alias.clone());
        let last = self.last_reason.as_ref().map_or_else(
            || format!("no progress in phase {}", self.phase_name()),
            |r| r.to_string(),
        );
        // A responder that gives up on one requester (it vanished, or never
        // published) serves the next one: it listens again. Failing to reach
        // the store is another matter: that is a clear error for any side.
        let peer_trouble = !matches!(self.last_reason, Some(NotYet::Store(_)) | None);
        if matches!(self.role, Role::Responder) && self.target.is_some() && self.claimed && peer_trouble {
            self.note(Note::IgnoredNotification {
                detail: format!("gave up on {peer} after {} attempts: {last}", self.attempts),
            });
            return self.back_to_listen(now);
        }
        self.fail(RendezvousError::GaveUp {
            peer,
            attempts: self.attempts,
            elapsed_ms: now.saturating_sub(self.episode_start).as_millis() as u64,
            last,
        });
    }

    /// A notification from the peer: retry a backed-off attempt now.
    fn kick(&mut self) {
        if self.retry_at.is_some() && !self.phase_issued {
            self.retry_at = None;
        }
    }

    fn fail(&mut self, error: RendezvousError) {
        self.inflight = None;
        self.enter(Phase::Failed);
        self.push(Event::Failed { error });
    }

    fn go_down(&mut self, reason: DownReason) {
        self.inflight = None;
        self.enter(Phase::Down);
        self.push(Event::Down { reason });
    }

    fn ignore(&mut self, detail: String) {
        self.stats.stale_notifications += 1;
        self.note(Note::IgnoredNotification { detail });
    }

    fn note(&mut self, n: Note) {
        self.push(Event::Note(n));
    }

    fn push(&mut self, e: Event) {
        // Bounded: notes are the only high-volume events and the oldest go first.
        if self.events.len() >= MAX_EVENTS {
            if let Some(pos) = self.events.iter().position(|e| matches!(e, Event::Note(_))) {
                self.events.remove(pos);
            }
        }
        self.events.push_back(e);
    }
}

impl Target {
    fn new(alias: String, incarnation: Option<u64>) -> Self {
        Target {
            alias,
            incarnation,
            endpoint: None,
            connected_inc: None,
            gone: false,
        }
    }
}

/// Decode `raw` found at `key` and require it to belong to incarnation `live`.
fn decode_live<T: ControlValue>(
    key: &str,
    raw: Option<Vec<u8>>,
    live: u64,
    inc: impl Fn(&T) -> u64,
) -> Result<T, NotYet> {
    let raw = raw.ok_or_else(|| NotYet::PeerNotPublished { key: key.to_string() })?;
    let v = T::decode(&raw).map_err(|error| NotYet::BadValue {
        key: key.to_string(),
        error,
    })?;
    if inc(&v) != live {
        return Err(NotYet::Stale {
            key: key.to_string(),
            found: inc(&v),
            live,
        });
    }
    Ok(v)
}

#[cfg(test)]
#[path = "rendezvous_tests.rs"]
mod tests;
