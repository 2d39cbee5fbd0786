//! Why a command could not run: one variant per cause, the source kept
//! structured (tests match variants), the message only for display.

use std::path::PathBuf;

use slimebench_proto::keys::NameError;

use crate::actors::NodeError;
use crate::bench::baselines::BaselineError;
use slimebench_proto::StoreFailure;

use crate::control::RedisConnectError;

/// A command that could not run; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A flag value that cannot work.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// `--transport rdma` without a usable device.
    #[error("--transport rdma: {cause}; {hint}")]
    RdmaUnusable {
        cause: slimebench_verbs::Cause,
        hint: String,
    },
    /// The control plane could not be opened.
    #[error("control plane: {0}")]
    CtrlConnect(#[from] RedisConnectError),
    /// The control plane failed an operation after it was opened.
    #[error("control plane: {0}")]
    CtrlStore(#[from] StoreFailure),
    #[error("driver failed: {0}")]
    Driver(NodeError),
    #[error("worker failed: {0}")]
    Worker(NodeError),
    /// A result file or folder could not be written (or a stale one removed).
    #[error("cannot {action} {}: {source}", path.display())]
    Output {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Reading results back for the table failed.
    #[error("cannot compare results: {0}")]
    Compare(#[from] crate::bench::table::TableError),
    /// A process or runtime this command needs could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An in-process baseline (floor, memcpy floor, actix) failed.
    #[error("{which} baseline failed: {source}")]
    LocalBaseline {
        which: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Python baseline could not run; the message says how to fix it.
    #[error("baseline: {0}")]
    Baseline(#[from] BaselineError),
    /// The simulator found invariant violations (the report names the seeds).
    #[error("{report}")]
    SimViolations { failing_seeds: Vec<u64>, report: String },
    /// A simulated seed did not replay to the same event log.
    #[error("seed {seed}: replay diverged (event-log hash {first:#x} then {second:#x})")]
    SimReplayDiverged { seed: u64, first: u64, second: u64 },
}

impl AppError {
    pub(crate) fn output(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        AppError::Output {
            action,
            path: path.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn local_baseline(which: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        AppError::LocalBaseline {
            which,
            source: Box::new(source),
        }
    }
}

/// A flag value (or combination) that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// `flag` must satisfy `rule` (e.g. "between 1 and 4096").
    #[error("{flag} must be {rule}")]
    OutOfRange { flag: &'static str, rule: &'static str },
    /// A scope or alias that is not a valid name.
    #[error("{flag}: {source}")]
    BadName {
        flag: &'static str,
        #[source]
        source: NameError,
    },
    /// Separate processes must be told which scope to meet in.
    #[error("{command} needs --scope ({hint})")]
    MissingScope { command: &'static str, hint: &'static str },
    /// A command that needs a control plane both sides can reach.
    #[error(
        "{command} meets its peer through a shared control plane: use --ctrl redis://host:port (see `just redis-up`)"
    )]
    NeedsSharedCtrl { command: &'static str },
    /// Every size of the sweep is larger than a slot.
    #[error("no payload size fits: raise --max-size-mb or --buf-mb")]
    NothingFits,
}
