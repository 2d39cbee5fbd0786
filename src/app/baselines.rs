//! The baselines run beside ours in the same sweep: in-process (floors,
//! actix) and Python (Ray, Pulsing), one after the other so they do not
//! compete for the two cores.

use super::run::SweepConfig;
use super::AppError;
use crate::bench::baselines::{BaselineResult, PythonEnv, Versions};
use crate::bench::plan::SweepPlan;
use crate::bench::stats::SizeStats;

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
        let r = py.run(b, plan, &cfg.out_dir, cfg.baseline_timeout)?;
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
        let r = crate::bench::floor::run_floor(plan, &p).map_err(|e| AppError::local_baseline("floor", e))?;
        p.finish();
        b.floor = Some(r);
        let p = cfg.progress_bar(plan.total_calls());
        let r = crate::bench::memcpy_floor::run_memcpy_floor(plan, &p)
            .map_err(|e| AppError::local_baseline("memcpy floor", e))?;
        p.finish();
        b.memcpy = Some(r);
    }
    if cfg.with_actix {
        let p = cfg.progress_bar(plan.total_calls());
        let r = crate::bench::actix_echo::run_actix_echo(plan, &p, cfg.check_every)
            .map_err(|e| AppError::local_baseline("actix", e))?;
        p.finish();
        b.actix = Some(r);
    }
    Ok(b)
}
