//! The simulation harness: the real driver and worker actors, rpc session,
//! rendezvous machine and agent loop, run on the simulator backend
//! (`slimebench_sim`) under a paused tokio runtime.
//!
//! - [`run`]: one scripted or generated scenario ([`Scenario`]) → [`Outcome`];
//! - [`swarm`]: seeds → fault plans drawn from each seed, phase 1 with faults,
//!   phase 2 healed, invariants checked, replays compared.
//!
//! Simulated time is tokio's paused clock: it jumps to the next timer when
//! every task is idle, so minutes of simulated leases take milliseconds.
//! Every random choice comes from the scenario's seed.

pub mod swarm;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use actix::{Actor, Addr};
use slimebench_proto::rendezvous::Timing;
use slimebench_proto::values::{AgentRecord, EndpointInfo, MailboxInfo, Notification};
use slimebench_proto::{ControlValue, Geometry, Keys, MrDesc, TransportAddr, WIRE_VERSION};
use slimebench_sim::{
    EventLog, FaultCounts, LinkFaults, SimConfig, SimNet, SimStore, SimTransport, StoreFaultCounts, StoreFaults,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::actors::{
    Abort, AgentSetup, DriverActor, DriverReport, NodeError, RunSweep, Shutdown, WorkerActor, WorkerReport,
};
use crate::bench::plan::{SizePlan, SweepPlan};
use crate::bench::progress::Progress;
use crate::bench::sweep::SweepOptions;
use crate::control::MemoryStore;
use crate::rpc::SpinPolicy;

/// Which node an action applies to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Who {
    Driver,
    Worker,
}

/// Something that happens at a scripted time.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// SIGKILL: stop at once, no cleanup event, keys left behind.
    Kill(Who),
    /// Clean exit (Ctrl-C): cleanup event, keys removed.
    Shutdown(Who),
    /// Data-plane partition for this long.
    Partition(Duration),
    /// Control store unreachable for this long.
    StoreOutage(Duration),
}

/// Stale state an earlier, crashed run left in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preload {
    /// Exchange and mailbox keys of a dead incarnation of `alias` whose
    /// endpoint no longer exists.
    StaleEndpoint {
        alias: String,
        peer: String,
        incarnation: u64,
    },
    /// A live-looking lease of another incarnation, expiring after `ttl`.
    StaleLease {
        alias: String,
        incarnation: u64,
        ttl: Duration,
    },
    /// Notifications of dead incarnations sitting in `alias`'s stream.
    StaleNotifications { alias: String },
    /// A live worker of another wire version (lease, exchange and mailbox).
    ForeignWorker { incarnation: u64, wire_version: u32 },
}

/// One simulated run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub scope: String,
    pub link: LinkFaults,
    pub store_latency: Duration,
    /// Store ops that never answer: (op name, nth call).
    pub store_hang: Vec<(&'static str, u32)>,
    /// Start the worker at `worker_start` (false: no worker at all).
    pub start_worker: bool,
    pub worker_start: Duration,
    pub driver_start: Duration,
    pub worker_geometry: Geometry,
    pub driver_geometry: Geometry,
    pub plan: SweepPlan,
    pub timing: Timing,
    pub call_timeout: Option<Duration>,
    pub actions: Vec<(Duration, Action)>,
    pub preload: Vec<Preload>,
    /// Longest simulated time the run (each phase) may take.
    pub limit: Duration,
    pub max_steps: u64,
    /// After both nodes finished: heal every fault, wait for leases to
    /// expire, then run a fresh worker and driver in the same world (phase 2).
    pub heal_then_rerun: bool,
    /// Event-log lines kept for the report (the hash covers all of them).
    pub log_lines: usize,
}

impl Scenario {
    /// A fault-free run of a small sweep.
    pub fn new(seed: u64) -> Self {
        let g = Geometry {
            slot_size: 1 << 20,
            slot_count: 1,
        };
        Scenario {
            seed,
            scope: "sim".into(),
            link: LinkFaults::default(),
            store_latency: Duration::from_micros(100),
            store_hang: Vec::new(),
            start_worker: true,
            worker_start: Duration::ZERO,
            driver_start: Duration::ZERO,
            worker_geometry: g,
            driver_geometry: g,
            plan: small_plan(&[1024, 16 * 1024, 256 * 1024], 1, 5),
            timing: Timing::default(),
            call_timeout: Some(Duration::from_secs(5)),
            actions: Vec::new(),
            preload: Vec::new(),
            limit: Duration::from_secs(300),
            max_steps: 200_000,
            heal_then_rerun: false,
            log_lines: 60,
        }
    }

    /// An upper bound on how long after the last disturbance both nodes must
    /// have finished: a rendezvous deadline, a call timeout, a lease, slack.
    pub fn settle_bound(&self) -> Duration {
        self.timing.deadline
            + self.call_timeout.unwrap_or(Duration::ZERO)
            + self.timing.lease
            + self.timing.peer_check
            + self.timing.op_timeout * 2
            + Duration::from_secs(2)
    }
}

/// A sweep plan of `sizes`.
pub fn small_plan(sizes: &[usize], warmup: usize, iters: usize) -> SweepPlan {
    SweepPlan {
        sizes: sizes.iter().map(|&size| SizePlan { size, warmup, iters }).collect(),
    }
}

/// What a simulated run produced.
#[derive(Debug)]
pub struct Outcome {
    pub driver: Result<DriverReport, NodeError>,
    /// Simulated time at which the driver finished (None: did not finish).
    pub driver_done: Option<Duration>,
    pub worker: Result<WorkerReport, NodeError>,
    pub worker_done: Option<Duration>,
    pub driver_incarnation: u64,
    pub worker_incarnation: u64,
    /// Keys left in the scope at the end.
    pub leftover_keys: Vec<String>,
    pub faults: FaultCounts,
    pub store_faults: StoreFaultCounts,
    /// Connect attempts to endpoints that do not exist (stale info used).
    pub unknown_connects: u64,
    /// Of those, connects to an endpoint whose owner had no live lease: info of
    /// a dead incarnation was used (must be zero).
    pub unleased_connects: u64,
    /// Incoming writes refused by validation.
    pub refused_writes: u64,
    /// All registered regions' guard zones were intact when freed.
    pub guards_intact: bool,
    pub event_hash: u64,
    pub events: u64,
    pub log_tail: Vec<String>,
    /// When the last scripted disturbance started.
    pub last_disturbance: Duration,
    pub end: Duration,
    /// The healed re-run, when asked for.
    pub phase2: Option<Phase>,
}

/// One phase's nodes, for the healed re-run.
#[derive(Debug)]
pub struct Phase {
    pub driver: Result<DriverReport, NodeError>,
    pub worker: Result<WorkerReport, NodeError>,
    /// When the phase started and when each node finished (simulated time).
    pub started: Duration,
    pub driver_done: Option<Duration>,
    pub worker_done: Option<Duration>,
    pub leftover_keys: Vec<String>,
}

impl Outcome {
    /// Simulated time from `from` to when `who` finished.
    pub fn finished_after(&self, who: Who, from: Duration) -> Option<Duration> {
        let done = match who {
            Who::Driver => self.driver_done,
            Who::Worker => self.worker_done,
        }?;
        Some(done.saturating_sub(from))
    }
}

/// Transport statistics gathered when each sim transport is dropped.
#[derive(Default)]
struct TransportAudit {
    refused: u64,
    guards_broken: u64,
}

/// A SimTransport that reports its audit when dropped.
pub struct AuditedTransport {
    t: SimTransport,
    audit: Rc<RefCell<TransportAudit>>,
}

impl Drop for AuditedTransport {
    fn drop(&mut self) {
        let mut a = self.audit.borrow_mut();
        a.refused += self.t.stats().refused_writes;
        if !self.t.guards_intact() {
            a.guards_broken += 1;
        }
    }
}

impl slimebench_proto::Transport for AuditedTransport {
    fn kind(&self) -> slimebench_proto::TransportKind {
        self.t.kind()
    }
    fn register(&mut self, len: usize) -> Result<slimebench_proto::MrKey, slimebench_proto::RegisterError> {
        self.t.register(len)
    }
    fn mr_desc(&self, mr: slimebench_proto::MrKey) -> MrDesc {
        self.t.mr_desc(mr)
    }
    fn mr(&self, mr: slimebench_proto::MrKey) -> &[u8] {
        self.t.mr(mr)
    }
    fn mr_mut(&mut self, mr: slimebench_proto::MrKey) -> &mut [u8] {
        self.t.mr_mut(mr)
    }
    fn local_addr(&self) -> TransportAddr {
        self.t.local_addr()
    }
    fn connect(&mut self, peer: &TransportAddr) -> Result<(), slimebench_proto::ConnectError> {
        self.t.connect(peer)
    }
    fn post_write_imm(
        &mut self,
        wr_id: u64,
        src: slimebench_proto::LocalSlice,
        dst: slimebench_proto::RemoteAddr,
        imm: u32,
    ) -> Result<(), slimebench_proto::PostError> {
        self.t.post_write_imm(wr_id, src, dst, imm)
    }
    fn poll_completions(
        &mut self,
        out: &mut Vec<slimebench_proto::Completion>,
    ) -> Result<usize, slimebench_proto::TransportError> {
        self.t.poll_completions(out)
    }
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.t.poll_ready(cx)
    }
    fn link_failure(&self) -> Option<&slimebench_proto::LinkFailure> {
        self.t.link_failure()
    }
    fn shutdown(&mut self) {
        self.t.shutdown()
    }
}

type Store = SimStore<MemoryStore>;

/// Run one scenario to completion (or its limit) on a fresh paused runtime.
pub fn run(sc: &Scenario) -> Outcome {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("paused runtime")
    });
    system.block_on(simulate(sc.clone()))
}

/// Shared pieces of one simulated world.
struct World {
    sc: Scenario,
    origin: Instant,
    log: EventLog,
    net: SimNet,
    store: Store,
    keys: Keys,
    audit: Rc<RefCell<TransportAudit>>,
}

type WorkerAddr = Rc<RefCell<Option<Addr<WorkerActor<AuditedTransport, Store>>>>>;
type DriverAddr = Rc<RefCell<Option<Addr<DriverActor<AuditedTransport, Store>>>>>;

/// Handles of one phase's nodes.
struct Nodes {
    worker: WorkerAddr,
    driver: DriverAddr,
    wrx: oneshot::Receiver<Result<WorkerReport, NodeError>>,
    drx: oneshot::Receiver<Result<DriverReport, NodeError>>,
    worker_inc: u64,
    driver_inc: u64,
}

impl World {
    fn setup(&self, alias: &str, incarnation: u64, geometry: Geometry) -> AgentSetup<Store> {
        AgentSetup {
            store: self.store.clone(),
            keys: self.keys.clone(),
            alias: alias.to_string(),
            incarnation,
            timing: self.sc.timing.clone(),
            geometry,
            spin: SpinPolicy::NONE,
            poll_period: Duration::from_millis(200),
            max_steps: Some(self.sc.max_steps),
            call_timeout: self.sc.call_timeout,
        }
    }

    fn factory(&self, node: u64, endpoint: u64) -> crate::actors::TransportFactory<AuditedTransport> {
        let net = self.net.clone();
        let audit = self.audit.clone();
        Box::new(move || {
            Ok(AuditedTransport {
                t: SimTransport::new(&net, node, endpoint, SimConfig::default()),
                audit,
            })
        })
    }

    /// Start a worker and a driver at `at + their start offsets`.
    fn start_nodes(&self, at: Instant, with_worker: bool) -> Nodes {
        let worker_inc = self.net.random_u64() | 1;
        let driver_inc = self.net.random_u64() | 1;
        self.log.record(
            self.now_ns(),
            format_args!("sim nodes worker={worker_inc:#x} driver={driver_inc:#x}"),
        );
        let worker: WorkerAddr = Rc::default();
        let driver: DriverAddr = Rc::default();
        let (wtx, wrx) = oneshot::channel();
        if with_worker {
            let ws = self.setup("bench-worker", worker_inc, self.sc.worker_geometry);
            let wf = self.factory(2, worker_inc);
            let slot = worker.clone();
            let t = at + self.sc.worker_start;
            tokio::task::spawn_local(async move {
                tokio::time::sleep_until(t).await;
                *slot.borrow_mut() = Some(WorkerActor::new(ws, wf, wtx).start());
            });
        } else {
            let _ = wtx.send(Err(NodeError::Interrupted("no worker in this scenario".into())));
        }
        let (dtx, drx) = oneshot::channel::<Result<DriverReport, NodeError>>();
        let ds = self.setup("bench-driver", driver_inc, self.sc.driver_geometry);
        let df = self.factory(1, driver_inc);
        let slot = driver.clone();
        let t = at + self.sc.driver_start;
        let plan = self.sc.plan.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(t).await;
            let addr = DriverActor::new(ds, df).start();
            *slot.borrow_mut() = Some(addr.clone());
            let r = addr
                .send(RunSweep {
                    peer: "bench-worker".into(),
                    plan,
                    progress: Progress::hidden(),
                    options: SweepOptions {
                        check_every: 1,
                        copy_in: false,
                    },
                })
                .await
                .unwrap_or(Err(NodeError::ActorGone("driver")));
            let _ = dtx.send(r);
        });
        Nodes {
            worker,
            driver,
            wrx,
            drx,
            worker_inc,
            driver_inc,
        }
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Wait for both nodes (bounded by the scenario's limit from now).
    async fn wait_nodes(&self, nodes: &mut Nodes) -> Phase {
        let started = self.origin.elapsed();
        let deadline = Instant::now() + self.sc.limit;
        let (mut driver, mut worker) = (None, None);
        let (mut driver_done, mut worker_done) = (None, None);
        // A worker outlives its driver only as long as noticing the driver's
        // end can take; then it is told to stop, as the embedded runner does
        // (a worker listening for a driver that never came waits forever).
        let grace =
            self.sc.timing.lease + self.sc.timing.peer_check + self.sc.timing.op_timeout * 2 + Duration::from_secs(1);
        let mut nudge_at: Option<Instant> = None;
        while driver.is_none() || worker.is_none() {
            let nudge = nudge_at.unwrap_or(deadline);
            tokio::select! {
                biased;
                r = &mut nodes.drx, if driver.is_none() => {
                    driver_done = Some(self.origin.elapsed());
                    driver = Some(r.unwrap_or(Err(NodeError::ActorGone("driver"))));
                    nudge_at = Some(Instant::now() + grace);
                }
                r = &mut nodes.wrx, if worker.is_none() => {
                    worker_done = Some(self.origin.elapsed());
                    worker = Some(r.unwrap_or(Err(NodeError::ActorGone("worker"))));
                }
                _ = tokio::time::sleep_until(nudge), if nudge_at.is_some() => {
                    nudge_at = None;
                    self.log.record(self.now_ns(), format_args!("sim worker outlived the driver by {grace:?}: shutdown"));
                    if let Some(a) = nodes.worker.borrow().as_ref() {
                        a.do_send(Shutdown);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let unfinished = || NodeError::Interrupted("did not finish within the simulation limit".into());
        let driver = driver.unwrap_or_else(|| Err(unfinished()));
        let worker = worker.unwrap_or_else(|| Err(unfinished()));
        self.log.record(
            self.now_ns(),
            format_args!("sim phase end driver={} worker={}", short(&driver), short_w(&worker)),
        );
        // Stop whatever still runs so its transports are dropped and audited.
        if let Some(a) = nodes.worker.borrow().as_ref() {
            a.do_send(Abort);
        }
        if let Some(a) = nodes.driver.borrow().as_ref() {
            a.do_send(Abort);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        Phase {
            driver,
            worker,
            started,
            driver_done,
            worker_done,
            leftover_keys: self.store.inner().keys(&self.keys.scope_pattern()),
        }
    }
}

async fn simulate(sc: Scenario) -> Outcome {
    let origin = Instant::now();
    let log = EventLog::new();
    let net = SimNet::new(sc.seed, sc.link.clone(), log.clone());
    let store = SimStore::new(
        MemoryStore::new(),
        StoreFaults {
            outages: Vec::new(),
            latency: sc.store_latency,
            hang: sc.store_hang.clone(),
        },
        log.clone(),
    );
    let keys = Keys::new(&sc.scope).expect("valid scope");
    preload(&store, &keys, &sc.preload);
    log.record(0, format_args!("sim start seed={}", sc.seed));
    {
        // Endpoint ids are incarnations here, so "is this endpoint's owner
        // alive?" is "does a live lease in the scope hold that incarnation?".
        let audit_store = store.clone();
        let audit_keys = keys.clone();
        net.set_lease_audit(move |incarnation| {
            audit_store.inner().with_model(|m, now| {
                m.keys_matching(now, &audit_keys.agent("*"))
                    .iter()
                    .any(|k| matches!(m.lease(now, k), slimebench_proto::store::AgentLookup::Present(r) if r.incarnation == incarnation))
            })
        });
    }
    let world = World {
        sc: sc.clone(),
        origin,
        log: log.clone(),
        net: net.clone(),
        store: store.clone(),
        keys,
        audit: Rc::new(RefCell::new(TransportAudit::default())),
    };
    let mut nodes = world.start_nodes(origin, sc.start_worker);

    // Scripted actions.
    let mut last_disturbance = Duration::ZERO;
    for (t, action) in sc.actions.clone() {
        last_disturbance = last_disturbance.max(t);
        let (w, d, net, store, log) = (
            nodes.worker.clone(),
            nodes.driver.clone(),
            net.clone(),
            store.clone(),
            log.clone(),
        );
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(origin + t).await;
            let now = origin.elapsed().as_nanos() as u64;
            log.record(now, format_args!("sim action {action:?}"));
            match action {
                Action::Kill(Who::Worker) => {
                    if let Some(a) = w.borrow().as_ref() {
                        a.do_send(Abort)
                    }
                }
                Action::Kill(Who::Driver) => {
                    if let Some(a) = d.borrow().as_ref() {
                        a.do_send(Abort)
                    }
                }
                Action::Shutdown(Who::Worker) => {
                    if let Some(a) = w.borrow().as_ref() {
                        a.do_send(Shutdown)
                    }
                }
                Action::Shutdown(Who::Driver) => {
                    if let Some(a) = d.borrow().as_ref() {
                        a.do_send(Shutdown)
                    }
                }
                Action::Partition(len) => {
                    let now = Instant::now();
                    net.faults_mut(|f| f.partition = Some((now, now + len)));
                }
                Action::StoreOutage(len) => {
                    let now = Instant::now();
                    store.faults_mut(|f| f.outages.push((now, now + len)));
                }
            }
        });
    }

    let p1 = world.wait_nodes(&mut nodes).await;

    let phase2 = if sc.heal_then_rerun {
        // Heal: no faults from here on, and let phase 1's leases run out
        // (a live-looking lease is a clear refusal, not something to take over).
        net.faults_mut(|f| *f = f.healed());
        store.faults_mut(|f| {
            f.outages.clear();
            f.hang.clear();
        });
        let quiet = Instant::now().max(origin + last_disturbance) + sc.timing.lease + Duration::from_secs(1);
        tokio::time::sleep_until(quiet).await;
        log.record(world.now_ns(), format_args!("sim healed"));
        let mut again = world.start_nodes(Instant::now(), true);
        Some(world.wait_nodes(&mut again).await)
    } else {
        None
    };

    let end = origin.elapsed();
    let a = world.audit.borrow();
    Outcome {
        driver: p1.driver,
        driver_done: p1.driver_done,
        worker: p1.worker,
        worker_done: p1.worker_done,
        driver_incarnation: nodes.driver_inc,
        worker_incarnation: nodes.worker_inc,
        leftover_keys: p1.leftover_keys,
        faults: net.counts(),
        store_faults: store.counts(),
        unknown_connects: net.unknown_connects(),
        unleased_connects: net.unleased_connects(),
        refused_writes: a.refused,
        guards_intact: a.guards_broken == 0,
        event_hash: log.hash(),
        events: log.events(),
        log_tail: log.tail(sc.log_lines),
        last_disturbance,
        end,
        phase2,
    }
}

fn short(r: &Result<DriverReport, NodeError>) -> String {
    match r {
        Ok(d) => format!("ok({} sizes)", d.stats.len()),
        Err(e) => format!("err({e})"),
    }
}

fn short_w(r: &Result<WorkerReport, NodeError>) -> String {
    match r {
        Ok(w) => format!("ok({} requests)", w.server.requests),
        Err(e) => format!("err({e})"),
    }
}

/// Write stale state into the store before anything starts.
fn preload(store: &Store, keys: &Keys, items: &[Preload]) {
    store.inner().with_model(|m, now| {
        for p in items {
            match p {
                Preload::StaleEndpoint {
                    alias,
                    peer,
                    incarnation,
                } => {
                    put_endpoint(m, now, keys, alias, peer, *incarnation, WIRE_VERSION);
                }
                Preload::ForeignWorker {
                    incarnation,
                    wire_version,
                } => {
                    let rec = AgentRecord {
                        incarnation: *incarnation,
                        host: "other-version".into(),
                        pid: 1,
                        wire_version: *wire_version,
                    };
                    m.apply(
                        now,
                        &slimebench_proto::StoreOp::Claim {
                            key: keys.agent("bench-worker"),
                            record: rec,
                            ttl: Duration::from_secs(3600),
                        },
                    );
                    put_endpoint(
                        m,
                        now,
                        keys,
                        "bench-worker",
                        "bench-driver",
                        *incarnation,
                        *wire_version,
                    );
                }
                Preload::StaleLease {
                    alias,
                    incarnation,
                    ttl,
                } => {
                    let rec = AgentRecord {
                        incarnation: *incarnation,
                        host: "crashed-host".into(),
                        pid: 1,
                        wire_version: WIRE_VERSION,
                    };
                    m.apply(
                        now,
                        &slimebench_proto::StoreOp::Claim {
                            key: keys.agent(alias),
                            record: rec,
                            ttl: *ttl,
                        },
                    );
                }
                Preload::StaleNotifications { alias } => {
                    for n in [
                        Notification::ConnectPeer {
                            from: "bench-driver".into(),
                            from_inc: 0x0bad_0001,
                        },
                        Notification::QpReady {
                            from: "bench-worker".into(),
                            from_inc: 0x0bad_0002,
                            to_inc: 0x0bad_0003,
                            again: false,
                        },
                        Notification::Cleanup {
                            from: "bench-driver".into(),
                            from_inc: 0x0bad_0001,
                            to_inc: 0x0bad_0004,
                        },
                    ] {
                        m.apply(
                            now,
                            &slimebench_proto::StoreOp::Append {
                                key: keys.stream(alias),
                                log: slimebench_proto::LogKind::Stream,
                                value: n.encode(),
                                if_alive: None,
                                max_len: 64,
                                ttl: Duration::from_secs(600),
                            },
                        );
                    }
                }
            }
        }
    });
}

/// Exchange and mailbox keys of `alias` pointing at an endpoint no transport
/// of the run has.
fn put_endpoint(
    m: &mut slimebench_proto::StoreModel,
    now: Duration,
    keys: &Keys,
    alias: &str,
    peer: &str,
    incarnation: u64,
    wire_version: u32,
) {
    let info = EndpointInfo {
        wire_version,
        alias: alias.to_string(),
        peer: peer.to_string(),
        incarnation,
        transport: TransportAddr::Sim {
            node: 99,
            endpoint_id: incarnation,
        },
        geometry: Geometry {
            slot_size: 1 << 20,
            slot_count: 1,
        },
    };
    let mailbox = MailboxInfo {
        alias: alias.to_string(),
        incarnation,
        mr: MrDesc {
            addr: 1 << 40,
            len: 1 << 20,
            rkey: 0xdead,
        },
    };
    m.put_raw(&keys.exchange(alias, peer), info.encode(), None, now);
    m.put_raw(
        &keys.mr(alias, slimebench_proto::keys::MAILBOX_MR),
        mailbox.encode(),
        None,
        now,
    );
}
