//! What a run leaves in its output folder: the CSVs, summary.json,
//! command.txt and the plots; and the comparison table printed from them.

use std::path::Path;

use super::baselines::Baselines;
use super::process::since_process_start;
use super::run::SweepConfig;
use super::AppError;
use crate::actors::{DriverReport, WorkerReport};
use crate::bench::csv::{write_csv, CsvRow};
use crate::bench::plan::SweepPlan;
use crate::bench::stats::SizeStats;
use crate::bench::summary::{hostname, now_unix_ms, write_summary, RunMeta, Summary};
use crate::bench::table::System;

/// Remove result files of an earlier run so the table only shows this one.
pub(super) fn clear_outputs(dir: &Path) -> Result<(), AppError> {
    std::fs::create_dir_all(dir).map_err(|e| AppError::output("create", dir, e))?;
    for name in System::ALL
        .iter()
        .map(|s| s.file_name())
        .chain(["summary.json", "command.txt"])
    {
        let p = dir.join(name);
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| AppError::output("remove stale", &p, e))?;
        }
    }
    Ok(())
}

fn write_system(dir: &Path, system: System, stats: &[SizeStats]) -> Result<(), AppError> {
    let rows: Vec<CsvRow> = stats.iter().map(CsvRow::from).collect();
    let path = dir.join(system.file_name());
    write_csv(&path, &rows).map_err(|e| AppError::output("write", &path, e))
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
            since_process_start(driver.connected_at).as_secs_f64() * 1e3
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
    let summary_path = cfg.out_dir.join("summary.json");
    write_summary(&summary_path, &summary).map_err(|e| AppError::output("write", &summary_path, e))?;
    if !cfg.command.is_empty() {
        let resolved = format!("# resolved: ctrl={} transport={transport} scope={scope}\n", n.ctrl);
        let _ = std::fs::write(
            cfg.out_dir.join("command.txt"),
            shell_words(&cfg.command) + "\n" + &resolved,
        );
    }
    let comparison = crate::bench::table::load_dir(&cfg.out_dir)?;
    let title = format!("{} · {transport} · ctrl {}", hostname(), n.ctrl);
    if let Err(e) = crate::bench::plot::write_plots(&cfg.out_dir, &comparison.systems, &title) {
        eprintln!("warning: plots not written: {e}");
    }
    Ok(crate::bench::table::render(&comparison))
}

pub(super) fn shell_words(args: &[String]) -> String {
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
