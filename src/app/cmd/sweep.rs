//! `slimebench sweep`: the whole benchmark in one command.
//!
//! With the embedded store (`--ctrl memory`, the default) the driver and the
//! worker are actors on two threads of this process. With `--ctrl redis://…`
//! the worker runs as a child process of this same binary (`slimebench
//! worker`), which is reaped whatever happens, and the two meet through Redis.

use std::time::Duration;

use crate::app::child_worker::ChildWorker;
use crate::app::link::{run_driver, run_embedded, scope_keys};
use crate::app::process::fresh_id;
use crate::app::run::{run_sweep, LinkResult};
use crate::app::{AppError, Interrupt, SweepConfig, SweepOutcome};
use crate::control::CtrlUrl;

/// Run the sweep and write the CSVs, the summary and the table; `interrupt`
/// ends it early (cleanly: both sides leave and remove their keys).
///
/// # Errors
/// [`AppError`] with a one-line explanation.
pub fn sweep(cfg: &SweepConfig, interrupt: &Interrupt) -> Result<SweepOutcome, AppError> {
    let scope = || {
        Ok(cfg
            .node
            .scope
            .clone()
            .unwrap_or_else(|| format!("sweep-{:x}", fresh_id() >> 16)))
    };
    run_sweep(cfg, true, "bench-worker", scope, |link| match &cfg.node.ctrl {
        CtrlUrl::Memory => run_embedded(&cfg.node, link.backend, link.scope, link.keys, link.run, interrupt),
        CtrlUrl::Redis(_) => {
            let mut child = ChildWorker::spawn(&cfg.node, link.backend, link.scope)?;
            let r = run_driver(
                &cfg.node,
                link.backend,
                link.scope,
                link.keys,
                "bench-driver",
                link.run,
                interrupt,
            );
            let exit = child.finish(Duration::from_secs(15));
            let driver = r?;
            if let Err(e) = exit {
                eprintln!("warning: {e}");
            }
            Ok(LinkResult {
                driver,
                worker: None,
                // Both sides have left: the scope must be empty now.
                leftover_keys: scope_keys(&cfg.node.ctrl, link.scope)?,
            })
        }
    })
}
