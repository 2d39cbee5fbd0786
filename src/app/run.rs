//! A sweep run: its configuration ([`SweepConfig`]), its result
//! ([`SweepOutcome`]) and the one pipeline that `sweep` and `driver` share.

use std::path::PathBuf;
use std::time::Duration;

use slimebench_proto::Keys;

use super::backend_choice::choose_backend;
use super::baselines::{run_local_baselines, run_python_baselines};
use super::outputs::{clear_outputs, write_outputs};
use super::{AppError, Backend, NodeOptions, UsageError};
use crate::actors::{DriverReport, RunSweep, WorkerReport};
use crate::bench::baselines::{Baseline, PythonEnv, Versions};
use crate::bench::plan::{human_size, SweepPlan, MIB};
use crate::bench::progress::Progress;
use crate::bench::stats::SizeStats;
use crate::bench::sweep::SweepOptions;

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
            return Err(UsageError::OutOfRange {
                flag: "--max-size-mb",
                rule: "at least 1",
            }
            .into());
        }
        if self.iters == Some(0) {
            return Err(UsageError::OutOfRange {
                flag: "--iters",
                rule: "at least 1",
            }
            .into());
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
            return Err(UsageError::NothingFits.into());
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
        let py = PythonEnv::discover(self.python.as_deref())?;
        let versions = wanted.iter().map(|b| py.check(*b)).collect::<Result<Vec<_>, _>>()?;
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

/// Where the sweep's peer runs, as seen by [`run_sweep`]'s `link` step.
pub(super) struct LinkPlan<'a> {
    pub backend: &'a Backend,
    pub scope: &'a str,
    pub keys: &'a Keys,
    pub run: RunSweep,
}

/// What the link step brought back.
pub(super) struct LinkResult {
    pub driver: DriverReport,
    /// The worker's report when it ran in this process.
    pub worker: Option<WorkerReport>,
    /// Control-plane keys left in the scope after both sides left.
    pub leftover_keys: Vec<String>,
}

/// The one pipeline behind `sweep` and `driver`: validate, choose the
/// backend, check the Python baselines, resolve the scope, clear old
/// outputs, run ours through `link` (which differs: embedded worker, child
/// worker, or a worker elsewhere), then the baselines, then write everything.
///
/// `one_host`: both agents are known to share this host (lets `auto` pick
/// shared memory). `scope` resolves (and checks) the scope and aliases.
pub(super) fn run_sweep(
    cfg: &SweepConfig,
    one_host: bool,
    peer: &str,
    scope: impl FnOnce() -> Result<String, AppError>,
    link: impl FnOnce(LinkPlan<'_>) -> Result<LinkResult, AppError>,
) -> Result<SweepOutcome, AppError> {
    let (plan, skipped) = cfg.plan()?;
    let (backend, why) = choose_backend(&cfg.node, one_host)?;
    let transport = backend.name();
    let python = cfg.check_python()?;
    eprintln!("{why}");
    let scope = scope()?;
    let keys = cfg.node.keys(&scope)?;
    clear_outputs(&cfg.out_dir)?;
    let progress = cfg.progress_bar(plan.total_calls());
    let run = RunSweep {
        peer: peer.into(),
        plan: plan.clone(),
        progress: progress.clone(),
        options: cfg.options(),
    };
    let linked = link(LinkPlan {
        backend: &backend,
        scope: &scope,
        keys: &keys,
        run,
    });
    progress.finish();
    let LinkResult {
        driver,
        worker,
        leftover_keys,
    } = linked?;
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
