//! The commands behind the CLI, as library functions taking plain config
//! structs (so tests run them without a process). `main.rs` only parses flags.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::{Actor, Arbiter};
use slimebench_proto::rendezvous::Timing;
use slimebench_proto::{Geometry, Keys};
use slimebench_tcp::{TcpConfig, TcpTransport};
use tokio::sync::oneshot;

use crate::actors::{AgentSetup, DriverActor, DriverReport, NodeError, RunSweep, Shutdown, WorkerActor, WorkerReport};
use crate::bench::csv::{write_csv, CsvRow};
use crate::bench::plan::{human_size, SweepPlan, MIB};
use crate::bench::progress::Progress;
use crate::bench::stats::SizeStats;
use crate::bench::summary::{hostname, now_unix_ms, write_summary, RunMeta, Summary};
use crate::bench::table::{self, System};
use crate::control::{CtrlUrl, MemoryStore};
use crate::rpc::SpinPolicy;

/// `--transport`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportChoice {
    /// RDMA when a device is usable, else TCP.
    Auto,
    Tcp,
    Shm,
    Rdma,
}

/// Everything `slimebench sweep` needs.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    pub transport: TransportChoice,
    pub ctrl: CtrlUrl,
    /// Run scope; `None` = a fresh one per run (stale keys of other runs never collide).
    pub scope: Option<String>,
    pub buf_mb: u64,
    pub max_size_mb: u64,
    pub iters: Option<usize>,
    pub warmup: usize,
    pub max_inflight: u32,
    pub with_floor: bool,
    pub out_dir: PathBuf,
    pub spin: Duration,
    pub check_every: usize,
    /// Copy each payload into the send slot per call (the original's way)
    /// instead of writing it in place.
    pub copy_in: bool,
    /// Address the TCP listeners bind to.
    pub bind: IpAddr,
    /// The command line, recorded in the summary.
    pub command: Vec<String>,
    pub progress: bool,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            transport: TransportChoice::Auto,
            ctrl: CtrlUrl::Memory,
            scope: None,
            buf_mb: 256,
            max_size_mb: 16,
            iters: None,
            warmup: crate::bench::plan::WARMUP,
            max_inflight: 1,
            with_floor: false,
            out_dir: PathBuf::from("results/latest"),
            spin: Duration::from_micros(100),
            check_every: 16,
            copy_in: false,
            bind: IpAddr::from([127, 0, 0, 1]),
            command: Vec::new(),
            progress: true,
        }
    }
}

/// A command that could not run; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A flag value that cannot work.
    #[error("{0}")]
    Usage(String),
    /// Something this build cannot do.
    #[error("{0}")]
    Unsupported(String),
    #[error("driver failed: {0}")]
    Driver(NodeError),
    #[error("worker failed: {0}")]
    Worker(NodeError),
    #[error("{what}: {detail}")]
    Output { what: String, detail: String },
}

/// What a sweep produced.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    pub slime: Vec<SizeStats>,
    pub floor: Option<Vec<SizeStats>>,
    pub skipped: Vec<usize>,
    pub driver: DriverReport,
    pub worker: WorkerReport,
    pub transport: String,
    pub table: String,
    /// Control-plane keys left in the run's scope (should be none).
    pub leftover_keys: Vec<String>,
}

/// A fresh, non-zero id (incarnations, endpoint ids).
pub fn fresh_id() -> u64 {
    loop {
        let x: u64 = rand::random();
        if x != 0 {
            return x;
        }
    }
}

fn validate(cfg: &SweepConfig) -> Result<(), AppError> {
    let usage = |m: &str| Err(AppError::Usage(m.to_string()));
    if cfg.max_size_mb == 0 {
        return usage("--max-size-mb must be at least 1");
    }
    if cfg.buf_mb == 0 || cfg.buf_mb > 4096 {
        return usage("--buf-mb must be between 1 and 4096");
    }
    if cfg.max_inflight == 0 || cfg.max_inflight > 1024 {
        return usage("--max-inflight must be between 1 and 1024");
    }
    if cfg.iters == Some(0) {
        return usage("--iters must be at least 1");
    }
    if cfg.buf_mb * u64::from(cfg.max_inflight) > 8192 {
        return usage("--buf-mb x --max-inflight exceeds 8 GiB of mailbox per side");
    }
    Ok(())
}

/// Decide the backend, saying why in one line.
fn select_transport(choice: TransportChoice) -> Result<(&'static str, String), AppError> {
    match choice {
        TransportChoice::Tcp => Ok(("tcp", "transport: tcp".into())),
        TransportChoice::Auto => Ok(("tcp", "transport: tcp (auto: this build has no RDMA support)".into())),
        TransportChoice::Rdma => Err(AppError::Unsupported(
            "--transport rdma: this build has no RDMA support yet (the verbs backend is not built); use --transport tcp".into(),
        )),
        TransportChoice::Shm => Err(AppError::Unsupported(
            "--transport shm: the shared-memory backend is not available in this build yet; use --transport tcp".into(),
        )),
    }
}

fn tcp_factory(bind: IpAddr, slot_size: u64) -> impl FnOnce() -> Result<TcpTransport, String> + Send + 'static {
    move || {
        let cfg = TcpConfig {
            max_write_len: slot_size as usize,
            ..TcpConfig::default()
        };
        TcpTransport::bind(SocketAddr::new(bind, 0), None, fresh_id(), cfg)
            .map_err(|e| format!("cannot listen on {bind}: {e}"))
    }
}

/// Run the sweep: driver and worker actors on two threads of this process,
/// meeting through the control plane, then write the CSVs, the summary and
/// print the comparison table.
///
/// # Errors
/// [`AppError`] with a one-line explanation.
pub fn sweep(cfg: &SweepConfig) -> Result<SweepOutcome, AppError> {
    validate(cfg)?;
    let geometry = Geometry {
        slot_size: cfg.buf_mb * MIB as u64,
        slot_count: cfg.max_inflight,
    };
    let full = SweepPlan::new((cfg.max_size_mb as usize).saturating_mul(MIB), cfg.warmup, cfg.iters);
    let (plan, skipped) = full.split_by_limit(geometry.max_payload() as usize);
    for s in &skipped {
        eprintln!(
            "skipping {}: larger than a slot ({} bytes = --buf-mb {} minus the 16-byte header); raise --buf-mb",
            human_size(*s),
            geometry.max_payload(),
            cfg.buf_mb
        );
    }
    if plan.sizes.is_empty() {
        return Err(AppError::Usage(
            "no payload size fits: raise --max-size-mb or --buf-mb".into(),
        ));
    }
    let (transport, why) = select_transport(cfg.transport)?;
    eprintln!("{why}");
    match &cfg.ctrl {
        CtrlUrl::Memory => {}
        CtrlUrl::Redis(_) => {
            return Err(AppError::Unsupported(format!(
                "--ctrl {}: the redis control plane is not available in this build yet; use --ctrl memory",
                cfg.ctrl
            )))
        }
    }
    let scope = cfg
        .scope
        .clone()
        .unwrap_or_else(|| format!("sweep-{:x}", fresh_id() >> 16));
    let keys = Keys::new(&scope).map_err(|e| AppError::Usage(format!("--scope: {e}")))?;
    clear_outputs(&cfg.out_dir)?;

    let store = MemoryStore::new();
    let setup = |alias: &str| AgentSetup {
        store: store.clone(),
        keys: keys.clone(),
        alias: alias.to_string(),
        incarnation: fresh_id(),
        timing: Timing::default(),
        geometry,
        spin: SpinPolicy::new(cfg.spin),
        poll_period: Duration::from_millis(200),
        max_steps: None,
        call_timeout: Some(Duration::from_secs(60)),
    };
    let progress = if cfg.progress {
        Progress::new(plan.total_calls())
    } else {
        Progress::hidden()
    };
    let (driver, worker) = run_embedded(
        setup("bench-driver"),
        setup("bench-worker"),
        tcp_factory(cfg.bind, geometry.slot_size),
        tcp_factory(cfg.bind, geometry.slot_size),
        RunSweep {
            peer: "bench-worker".into(),
            plan: plan.clone(),
            progress: progress.clone(),
            options: crate::bench::sweep::SweepOptions {
                check_every: cfg.check_every,
                copy_in: cfg.copy_in,
            },
        },
    );
    progress.finish();
    let driver = driver.map_err(AppError::Driver)?;
    let worker = worker.map_err(AppError::Worker)?;
    let leftover_keys = store.keys(&keys.scope_pattern());
    if !leftover_keys.is_empty() {
        eprintln!("warning: keys left in scope {scope}: {leftover_keys:?}");
    }

    let floor = if cfg.with_floor {
        let p = if cfg.progress {
            Progress::new(plan.total_calls())
        } else {
            Progress::hidden()
        };
        let r = crate::bench::floor::run_floor(&plan, &p).map_err(|e| AppError::Output {
            what: "floor baseline".into(),
            detail: e.to_string(),
        })?;
        p.finish();
        Some(r)
    } else {
        None
    };

    write_system(&cfg.out_dir, System::Slime, &driver.stats)?;
    if let Some(f) = &floor {
        write_system(&cfg.out_dir, System::Floor, f)?;
    }
    let mut systems = std::collections::BTreeMap::new();
    systems.insert("slime".to_string(), driver.stats.clone());
    if let Some(f) = &floor {
        systems.insert("floor".to_string(), f.clone());
    }
    let summary = Summary {
        meta: RunMeta {
            tool: "slimebench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            git_sha: option_env!("SLIMEBENCH_GIT_SHA").unwrap_or("unknown").into(),
            host: hostname(),
            started_unix_ms: now_unix_ms(),
            command: cfg.command.clone(),
            transport: transport.into(),
            ctrl: cfg.ctrl.to_string(),
            flags: serde_json::json!({
                "buf_mb": cfg.buf_mb,
                "max_size_mb": cfg.max_size_mb,
                "iters": cfg.iters,
                "warmup": cfg.warmup,
                "max_inflight": cfg.max_inflight,
                "spin_us": cfg.spin.as_micros() as u64,
                "check_every": cfg.check_every,
                "copy_in": cfg.copy_in,
                "with_floor": cfg.with_floor,
                "scope": scope,
            }),
            notes: vec![
                format!("rendezvous took {:.1} ms", driver.rendezvous.as_secs_f64() * 1e3),
                format!(
                    "driver exit clean: {}, worker exit clean: {}, worker served {} requests",
                    driver.clean_exit, worker.clean_exit, worker.server.requests
                ),
            ],
        },
        plan: plan.clone(),
        skipped_sizes: skipped.clone(),
        systems,
    };
    write_summary(&cfg.out_dir.join("summary.json"), &summary).map_err(|e| AppError::Output {
        what: "summary.json".into(),
        detail: e.to_string(),
    })?;
    if !cfg.command.is_empty() {
        let _ = std::fs::write(cfg.out_dir.join("command.txt"), shell_words(&cfg.command) + "\n");
    }
    let table = compare(&cfg.out_dir)?;
    Ok(SweepOutcome {
        slime: driver.stats.clone(),
        floor,
        skipped,
        driver,
        worker,
        transport: transport.into(),
        table,
        leftover_keys,
    })
}

/// Run a driver and a worker actor on two threads of one actix system and
/// wait for both. Ctrl-C shuts both down cleanly.
fn run_embedded(
    driver_setup: AgentSetup<MemoryStore>,
    worker_setup: AgentSetup<MemoryStore>,
    driver_factory: impl FnOnce() -> Result<TcpTransport, String> + 'static,
    worker_factory: impl FnOnce() -> Result<TcpTransport, String> + Send + 'static,
    run: RunSweep,
) -> (Result<DriverReport, NodeError>, Result<WorkerReport, NodeError>) {
    let system = actix::System::new();
    system.block_on(async move {
        let worker_thread = Arbiter::new();
        let (done_tx, done_rx) = oneshot::channel();
        let worker = WorkerActor::start_in_arbiter(&worker_thread.handle(), move |_| {
            WorkerActor::new(worker_setup, Box::new(worker_factory), done_tx)
        });
        let driver = DriverActor::new(driver_setup, Box::new(driver_factory)).start();
        let sweep = driver.send(run);
        tokio::pin!(sweep);
        let report = tokio::select! {
            r = &mut sweep => r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: shutting down");
                driver.do_send(Shutdown);
                worker.do_send(Shutdown);
                sweep.await
            }
        };
        let report = report.unwrap_or(Err(NodeError::ActorGone("driver")));
        // The worker ends when the driver's cleanup reaches it (or its link
        // closes); bounded in case the driver never got that far.
        let worker_report = match tokio::time::timeout(Duration::from_secs(15), done_rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(NodeError::ActorGone("worker")),
            Err(_) => {
                worker.do_send(Shutdown);
                Err(NodeError::Interrupted(
                    "worker did not finish within 15 s of the driver".into(),
                ))
            }
        };
        worker_thread.stop();
        (report, worker_report)
    })
}

/// Remove result files of an earlier run so the table only shows this one.
fn clear_outputs(dir: &Path) -> Result<(), AppError> {
    std::fs::create_dir_all(dir).map_err(|e| AppError::Output {
        what: format!("cannot create {}", dir.display()),
        detail: e.to_string(),
    })?;
    for name in System::ALL
        .iter()
        .map(|s| s.file_name())
        .chain(["summary.json", "command.txt"])
    {
        let p = dir.join(name);
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| AppError::Output {
                what: format!("cannot remove stale {}", p.display()),
                detail: e.to_string(),
            })?;
        }
    }
    Ok(())
}

fn write_system(dir: &Path, system: System, stats: &[SizeStats]) -> Result<(), AppError> {
    let rows: Vec<CsvRow> = stats.iter().map(CsvRow::from).collect();
    let path = dir.join(system.file_name());
    write_csv(&path, &rows).map_err(|e| AppError::Output {
        what: format!("cannot write {}", path.display()),
        detail: e.to_string(),
    })
}

/// The merged comparison table of the CSVs in `dir`.
///
/// # Errors
/// [`AppError::Output`] when the directory has no readable CSV.
pub fn compare(dir: &Path) -> Result<String, AppError> {
    let c = table::load_dir(dir).map_err(|e| AppError::Output {
        what: "compare".into(),
        detail: e.to_string(),
    })?;
    Ok(table::render(&c))
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `slimebench sim` does.
#[derive(Clone, Debug)]
pub enum SimCommand {
    /// Replay one seed (twice, comparing event-log hashes) and describe it.
    Seed(u64),
    /// Seeds `first..first + count`, replaying every `replay_every`-th.
    Swarm { first: u64, count: u64, replay_every: u64 },
}

/// Run the deterministic simulator. Returns the report to print.
///
/// # Errors
/// [`AppError::Usage`] carrying the report when an invariant was violated.
pub fn sim(cmd: &SimCommand) -> Result<String, AppError> {
    use crate::sim::swarm::{check_seed, run_swarm};
    match *cmd {
        SimCommand::Seed(seed) => {
            let rep = check_seed(seed).map_err(|v| AppError::Usage(v.to_string()))?;
            let again = crate::sim::run(&crate::sim::swarm::scenario_for_seed(seed).0);
            let o = &rep.outcome;
            if again.event_hash != o.event_hash {
                return Err(AppError::Usage(format!(
                    "seed {seed}: replay diverged (event-log hash {:#x} then {:#x})",
                    o.event_hash, again.event_hash
                )));
            }
            let p2 = o.phase2.as_ref();
            Ok(format!(
                "seed {seed}: ok, {} invariant checks, replayed with the same event-log hash {:#x} ({} events)\n\
                 phase 1 (faults): driver {} | worker {}\n\
                 phase 2 (healed): driver {} | worker {}\n\
                 faults: {:?}, store {:?}, plan {:?}\n\
                 simulated {:.1} s",
                rep.checks + 1,
                o.event_hash,
                o.events,
                describe(&o.driver),
                describe(&o.worker),
                p2.map_or("-".into(), |p| describe(&p.driver)),
                p2.map_or("-".into(), |p| describe(&p.worker)),
                o.faults,
                o.store_faults,
                rep.plan,
                o.end.as_secs_f64(),
            ))
        }
        SimCommand::Swarm {
            first,
            count,
            replay_every,
        } => {
            let summary = run_swarm(first, count, replay_every, |r| {
                if let Err(v) = r {
                    eprintln!("{v}");
                }
            });
            if summary.violations.is_empty() {
                Ok(summary.to_string())
            } else {
                let seeds: Vec<String> = summary.violations.iter().map(|v| v.seed.to_string()).collect();
                Err(AppError::Usage(format!(
                    "{summary}\nfailing seeds: {} (replay one: slimebench sim --seed N)",
                    seeds.join(", ")
                )))
            }
        }
    }
}

fn describe<T: std::fmt::Debug>(r: &Result<T, NodeError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("error: {e}"),
    }
}
