//! `slimebench sweep`: the whole benchmark in one command.
//!
//! With the embedded store (`--ctrl memory`, the default) the driver and the
//! worker are actors on two threads of this process. With `--ctrl redis://…`
//! the worker runs as a child process of this same binary (`slimebench
//! worker`), which is reaped whatever happens, and the two meet through Redis.

use std::path::PathBuf;
use std::time::Duration;

use actix::{Actor, Arbiter};
use tokio::sync::oneshot;

use super::nodes::{run_driver, scope_keys, ChildWorker};
use super::{
    backend_factory, choose_backend, clear_outputs, fresh_id, interrupted, shell_words, write_system, AppError,
    NodeOptions,
};
use crate::actors::{DriverActor, DriverReport, NodeError, RunSweep, Shutdown, WorkerActor, WorkerReport};
use crate::bench::baselines::{Baseline, BaselineResult, PythonEnv, Versions};
use crate::bench::plan::{human_size, SweepPlan, MIB};
use crate::bench::progress::Progress;
use crate::bench::stats::SizeStats;
use crate::bench::summary::{hostname, now_unix_ms, write_summary, RunMeta, Summary};
use crate::bench::sweep::SweepOptions;
use crate::bench::table::System;
use crate::control::{CtrlStore, CtrlUrl};

/// Everything `slimebench sweep` (and `slimebench driver`) needs.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    pub node: NodeOptions,
    pub max_size_mb: u64,
    pub iters: Option<usize>,
    pub warmup: usize,
    pub with_floor: bool,
    /// Also run the actix in-process echo baseline (actix_rpc.csv).
    pub with_actix: bool,
    /// Also run the Ray local-actor baseline (ray_rpc.csv).
    pub with_ray: bool,
    /// Also run the Pulsing separate-process baseline (pulsing_rpc.csv).
    pub with_pulsing: bool,
    /// Python for the baselines (else SLIMEBENCH_PYTHON, else the project's .venv).
    pub python: Option<PathBuf>,
    /// Bound on each Python baseline's whole run.
    pub baseline_timeout: Duration,
    pub out_dir: PathBuf,
    pub check_every: usize,
    /// Copy each payload into the send slot per call (the original's way)
    /// instead of writing it in place.
    pub copy_in: bool,
    /// The command line, recorded in the summary.
    pub command: Vec<String>,
    pub progress: bool,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            node: NodeOptions::default(),
            max_size_mb: 16,
            iters: None,
            warmup: crate::bench::plan::WARMUP,
            with_floor: false,
            with_actix: false,
            with_ray: false,
            with_pulsing: false,
            python: None,
            baseline_timeout: crate::bench::baselines::DEFAULT_TIMEOUT,
            out_dir: PathBuf::from("results/latest"),
            check_every: 16,
            copy_in: false,
            command: Vec::new(),
            progress: true,
        }
    }
}

impl SweepConfig {
    /// Validate and build the plan; prints skipped sizes.
    ///
    /// # Errors
    /// [`AppError::Usage`].
    pub(super) fn plan(&self) -> Result<(SweepPlan, Vec<usize>), AppError> {
        self.node.validate()?;
        if self.max_size_mb == 0 {
            return Err(AppError::Usage("--max-size-mb must be at least 1".into()));
        }
        if self.iters == Some(0) {
            return Err(AppError::Usage("--iters must be at least 1".into()));
        }
        let geometry = self.node.geometry();
        let full = SweepPlan::new((self.max_size_mb as usize).saturating_mul(MIB), self.warmup, self.iters);
        let (plan, skipped) = full.split_by_limit(geometry.max_payload() as usize);
        for s in &skipped {
            eprintln!(
                "skipping {}: larger than a slot ({} bytes = --buf-mb {} minus the 16-byte header); raise --buf-mb",
                human_size(*s),
                geometry.max_payload(),
                self.node.buf_mb
            );
        }
        if plan.sizes.is_empty() {
            return Err(AppError::Usage(
                "no payload size fits: raise --max-size-mb or --buf-mb".into(),
            ));
        }
        Ok((plan, skipped))
    }

    /// The Python baselines asked for.
    pub(super) fn python_baselines(&self) -> Vec<Baseline> {
        let mut v = Vec::new();
        if self.with_ray {
            v.push(Baseline::Ray);
        }
        if self.with_pulsing {
            v.push(Baseline::Pulsing);
        }
        v
    }

    /// Find Python and check every requested baseline is installed, before
    /// anything runs (a missing install fails fast with its install hint).
    pub(super) fn check_python(&self) -> Result<Option<(PythonEnv, Vec<Versions>)>, AppError> {
        let wanted = self.python_baselines();
        if wanted.is_empty() {
            return Ok(None);
        }
        let py = PythonEnv::discover(self.python.as_deref()).map_err(|e| AppError::Baseline(e.to_string()))?;
        let versions = wanted
            .iter()
            .map(|b| py.check(*b).map_err(|e| AppError::Baseline(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((py, versions)))
    }

    pub(super) fn options(&self) -> SweepOptions {
        SweepOptions {
            check_every: self.check_every,
            copy_in: self.copy_in,
        }
    }

    pub(super) fn progress_bar(&self, calls: u64) -> Progress {
        if self.progress {
            Progress::new(calls)
        } else {
            Progress::hidden()
        }
    }
}

/// What a sweep produced.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    pub slime: Vec<SizeStats>,
    pub floor: Option<Vec<SizeStats>>,
    pub actix: Option<Vec<SizeStats>>,
    pub skipped: Vec<usize>,
    pub driver: DriverReport,
    /// The worker's report when it ran in this process.
    pub worker: Option<WorkerReport>,
    pub transport: String,
    pub scope: String,
    pub table: String,
    /// Control-plane keys left in the run's scope (should be none).
    pub leftover_keys: Vec<String>,
}

/// Run the sweep and write the CSVs, the summary and the table.
///
/// # Errors
/// [`AppError`] with a one-line explanation.
pub fn sweep(cfg: &SweepConfig) -> Result<SweepOutcome, AppError> {
    let (plan, skipped) = cfg.plan()?;
    let (backend, why) = choose_backend(&cfg.node, true)?;
    let transport = backend.name();
    let python = cfg.check_python()?;
    eprintln!("{why}");
    let scope = cfg
        .node
        .scope
        .clone()
        .unwrap_or_else(|| format!("sweep-{:x}", fresh_id() >> 16));
    let keys = cfg.node.keys(&scope)?;
    clear_outputs(&cfg.out_dir)?;
    let progress = cfg.progress_bar(plan.total_calls());
    let run = RunSweep {
        peer: "bench-worker".into(),
        plan: plan.clone(),
        progress: progress.clone(),
        options: cfg.options(),
    };
    let (driver, worker, leftover_keys) = match &cfg.node.ctrl {
        CtrlUrl::Memory => run_embedded(&cfg.node, &backend, &scope, &keys, run)?,
        CtrlUrl::Redis(_) => {
            let mut child = ChildWorker::spawn(&cfg.node, &backend, &scope)?;
            let r = run_driver(&cfg.node, &backend, &scope, &keys, "bench-driver", run);
            let exit = child.finish(Duration::from_secs(15));
            let driver = r?;
            if let Err(e) = exit {
                eprintln!("warning: {e}");
            }
            // Both sides have left: the scope must be empty now.
            (driver, None, scope_keys(&cfg.node.ctrl, &scope)?)
        }
    };
    progress.finish();
    if !leftover_keys.is_empty() {
        eprintln!("warning: keys left in scope {scope}: {leftover_keys:?}");
    }
    let mut baselines = run_local_baselines(cfg, &plan)?;
    baselines.python = run_python_baselines(cfg, &plan, python)?;
    let table = write_outputs(
        cfg,
        &plan,
        &skipped,
        transport,
        &scope,
        &driver,
        worker.as_ref(),
        &baselines,
    )?;
    Ok(SweepOutcome {
        slime: driver.stats.clone(),
        floor: baselines.floor,
        actix: baselines.actix,
        skipped,
        driver,
        worker,
        transport: transport.into(),
        scope,
        table,
        leftover_keys,
    })
}

/// Results of the baselines run beside ours.
#[derive(Debug, Default, Clone)]
pub(super) struct Baselines {
    pub floor: Option<Vec<SizeStats>>,
    pub memcpy: Option<Vec<SizeStats>>,
    pub actix: Option<Vec<SizeStats>>,
    /// Ray / Pulsing: their scripts wrote their CSVs into the output folder.
    pub python: Vec<BaselineResult>,
}

/// Run the requested Python baselines one after the other (after ours, so
/// they do not compete for the two cores), writing their CSVs into the
/// output folder.
pub(super) fn run_python_baselines(
    cfg: &SweepConfig,
    plan: &SweepPlan,
    python: Option<(PythonEnv, Vec<Versions>)>,
) -> Result<Vec<BaselineResult>, AppError> {
    let Some((py, _)) = python else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for b in cfg.python_baselines() {
        eprintln!("running the {b} baseline ({})", py.python().display());
        let r = py
            .run(b, plan, &cfg.out_dir, cfg.baseline_timeout)
            .map_err(|e| AppError::Baseline(e.to_string()))?;
        for n in r.notes() {
            eprintln!("{n}");
        }
        out.push(r);
    }
    Ok(out)
}

/// The baselines that run inside this process (after ours, one at a time so
/// they do not compete for the two cores).
pub(super) fn run_local_baselines(cfg: &SweepConfig, plan: &SweepPlan) -> Result<Baselines, AppError> {
    let mut b = Baselines::default();
    if cfg.with_floor {
        let p = cfg.progress_bar(plan.total_calls());
        let r = crate::bench::floor::run_floor(plan, &p).map_err(|e| AppError::Output {
            what: "floor baseline".into(),
            detail: e.to_string(),
        })?;
        p.finish();
        b.floor = Some(r);
        let p = cfg.progress_bar(plan.total_calls());
        let r = crate::bench::memcpy_floor::run_memcpy_floor(plan, &p).map_err(|e| AppError::Output {
            what: "memcpy floor".into(),
            detail: e.to_string(),
        })?;
        p.finish();
        b.memcpy = Some(r);
    }
    if cfg.with_actix {
        let p = cfg.progress_bar(plan.total_calls());
        let r = crate::bench::actix_echo::run_actix_echo(plan, &p, cfg.check_every).map_err(|e| AppError::Output {
            what: "actix baseline".into(),
            detail: e.to_string(),
        })?;
        p.finish();
        b.actix = Some(r);
    }
    Ok(b)
}

/// CSVs, summary.json, command.txt; returns the comparison table.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_outputs(
    cfg: &SweepConfig,
    plan: &SweepPlan,
    skipped: &[usize],
    transport: &str,
    scope: &str,
    driver: &DriverReport,
    worker: Option<&WorkerReport>,
    baselines: &Baselines,
) -> Result<String, AppError> {
    let mut systems = std::collections::BTreeMap::new();
    for (system, name, stats) in [
        (System::Slime, "slime", Some(&driver.stats)),
        (System::Floor, "floor", baselines.floor.as_ref()),
        (System::Memcpy, "memcpy", baselines.memcpy.as_ref()),
        (System::Actix, "actix", baselines.actix.as_ref()),
    ] {
        if let Some(stats) = stats {
            write_system(&cfg.out_dir, system, stats)?;
            systems.insert(name.to_string(), stats.clone());
        }
    }
    let mut notes = vec![
        format!("rendezvous took {:.1} ms", driver.rendezvous.as_secs_f64() * 1e3),
        format!(
            "connected {:.1} ms after process start",
            super::since_process_start(driver.connected_at).as_secs_f64() * 1e3
        ),
        format!("driver exit clean: {}", driver.clean_exit),
    ];
    if let Some(w) = worker {
        notes.push(format!(
            "worker exit clean: {}, worker served {} requests",
            w.clean_exit, w.server.requests
        ));
    }
    let mut baseline_meta = serde_json::Map::new();
    for r in &baselines.python {
        notes.extend(r.notes());
        baseline_meta.insert(
            r.baseline.name().to_string(),
            serde_json::json!({ "versions": r.versions, "workarounds": r.workarounds, "elapsed_s": r.elapsed.as_secs_f64() }),
        );
    }
    let n = &cfg.node;
    let summary = Summary {
        meta: RunMeta {
            tool: "slimebench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            git_sha: option_env!("SLIMEBENCH_GIT_SHA").unwrap_or("unknown").into(),
            host: hostname(),
            started_unix_ms: now_unix_ms(),
            command: cfg.command.clone(),
            transport: transport.into(),
            ctrl: n.ctrl.to_string(),
            flags: serde_json::json!({
                "buf_mb": n.buf_mb,
                "max_size_mb": cfg.max_size_mb,
                "iters": cfg.iters,
                "warmup": cfg.warmup,
                "max_inflight": n.max_inflight,
                "spin_us": n.spin.as_micros() as u64,
                "check_every": cfg.check_every,
                "copy_in": cfg.copy_in,
                "with_floor": cfg.with_floor,
                "with_actix": cfg.with_actix,
                "scope": scope,
                "lease_ms": n.lease.as_millis() as u64,
                "heartbeat_ms": n.heartbeat.as_millis() as u64,
                "with_ray": cfg.with_ray,
                "with_pulsing": cfg.with_pulsing,
                "rustc": option_env!("SLIMEBENCH_RUSTC").unwrap_or("unknown"),
                "baselines": baseline_meta,
            }),
            notes,
        },
        plan: plan.clone(),
        skipped_sizes: skipped.to_vec(),
        systems,
    };
    write_summary(&cfg.out_dir.join("summary.json"), &summary).map_err(|e| AppError::Output {
        what: "summary.json".into(),
        detail: e.to_string(),
    })?;
    if !cfg.command.is_empty() {
        let resolved = format!("# resolved: ctrl={} transport={transport} scope={scope}\n", n.ctrl);
        let _ = std::fs::write(
            cfg.out_dir.join("command.txt"),
            shell_words(&cfg.command) + "\n" + &resolved,
        );
    }
    let comparison = crate::bench::table::load_dir(&cfg.out_dir).map_err(|e| AppError::Output {
        what: "compare".into(),
        detail: e.to_string(),
    })?;
    let title = format!("{} · {transport} · ctrl {}", hostname(), n.ctrl);
    if let Err(e) = crate::bench::plot::write_plots(&cfg.out_dir, &comparison.systems, &title) {
        eprintln!("warning: plots not written: {e}");
    }
    Ok(crate::bench::table::render(&comparison))
}

/// Driver and worker actors on two threads of one actix system, meeting
/// through the embedded store. Ctrl-C shuts both down cleanly.
fn run_embedded(
    node: &NodeOptions,
    backend: &super::Backend,
    scope: &str,
    keys: &slimebench_proto::Keys,
    run: RunSweep,
) -> Result<(DriverReport, Option<WorkerReport>, Vec<String>), AppError> {
    let store = crate::control::MemoryStore::new();
    let driver_setup = node.setup(CtrlStore::Memory(store.clone()), keys, "bench-driver");
    let worker_setup = node.setup(CtrlStore::Memory(store.clone()), keys, "bench-worker");
    let driver_factory = backend_factory(backend, node, scope, &driver_setup);
    let worker_factory = backend_factory(backend, node, scope, &worker_setup);
    let system = actix::System::new();
    let (report, worker_report) = system.block_on(async move {
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
            _ = interrupted() => {
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
    });
    let driver = report.map_err(AppError::Driver)?;
    let worker = worker_report.map_err(AppError::Worker)?;
    Ok((driver, Some(worker), store.keys(&keys.scope_pattern())))
}
