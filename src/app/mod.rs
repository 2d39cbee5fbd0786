//! The commands behind the CLI, as library functions taking plain config
//! structs and an [`Interrupt`] (so tests run them without a process).
//! `main.rs` only parses flags. A module map, no logic:
//!
//! - `cmd/`: one file per command — [`sweep()`], [`driver()`], [`worker()`],
//!   [`compare()`], [`doctor()`], [`sim()`];
//! - `run`: [`SweepConfig`], [`SweepOutcome`] and the one pipeline `sweep`
//!   and `driver` share (validate, choose backend, run ours, baselines, write);
//! - `link`: running our side — the driver actor here, or driver and worker
//!   on two threads through the embedded store; opening the control plane;
//! - `options`: [`NodeOptions`] and `--transport` ([`TransportChoice`]);
//! - `backend_choice`: which backend and why ([`Backend`]), and its factory;
//! - `baselines`: the floors, actix, Ray and Pulsing run beside ours;
//! - `outputs`: CSVs, summary.json, command.txt, plots;
//! - `child_worker`: the worker child process of `sweep --ctrl redis://…`;
//! - `interrupt`: what ends a run early ([`Interrupt`]);
//! - `process`: process start time, fresh ids;
//! - `error`: [`AppError`], [`UsageError`].

mod backend_choice;
mod baselines;
mod child_worker;
mod cmd;
mod error;
mod interrupt;
mod link;
mod options;
mod outputs;
mod process;
mod run;

pub use backend_choice::Backend;
pub use cmd::compare::compare;
pub use cmd::doctor::doctor;
pub use cmd::driver::{driver, DriverConfig};
pub use cmd::sim::{sim, SimCommand};
pub use cmd::sweep::sweep;
pub use cmd::worker::{worker, WorkerConfig};
pub use error::{AppError, UsageError};
pub use interrupt::Interrupt;
pub use link::scope_keys;
pub use options::{NodeOptions, TransportChoice};
pub use process::{fresh_id, mark_process_start, since_process_start};
pub use run::{SweepConfig, SweepOutcome};
