//! `slimebench driver`: the sweep's calling side as its own process, meeting
//! a `slimebench worker` (on this host or another) through a shared control
//! plane.

use crate::app::link::run_driver;
use crate::app::run::{run_sweep, LinkResult};
use crate::app::{AppError, Interrupt, SweepConfig, SweepOutcome, UsageError};

/// `slimebench driver`.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub sweep: SweepConfig,
    pub alias: String,
    pub peer: String,
}

/// Run the sweep against a worker in another process and write the results.
///
/// # Errors
/// [`AppError`]; a peer that vanished is named in the message.
pub fn driver(cfg: &DriverConfig, interrupt: &Interrupt) -> Result<SweepOutcome, AppError> {
    let node = &cfg.sweep.node;
    let scope = || {
        let scope = node.scope.clone().ok_or(UsageError::MissingScope {
            command: "driver",
            hint: "the worker's",
        })?;
        for (flag, a) in [("--alias", &cfg.alias), ("--peer", &cfg.peer)] {
            slimebench_proto::keys::validate_alias(a).map_err(|source| UsageError::BadName { flag, source })?;
        }
        Ok(scope)
    };
    run_sweep(&cfg.sweep, false, &cfg.peer, scope, |link| {
        let driver = run_driver(
            node,
            link.backend,
            link.scope,
            link.keys,
            &cfg.alias,
            link.run,
            interrupt,
        )?;
        Ok(LinkResult {
            driver,
            worker: None,
            leftover_keys: Vec::new(),
        })
    })
}
