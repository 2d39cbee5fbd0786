//! slimebench deterministic simulator backend.
//!
//! Everything here runs on tokio's clock, which the simulation pauses: time
//! only moves when every task is idle, straight to the next timer, so a run
//! takes milliseconds of wall time whatever it simulates, and every random
//! choice comes from one seeded RNG. Nothing reads the wall clock.
//!
//! - [`net`]: [`SimNet`], the network with RDMA RC semantics and fault knobs ([`LinkFaults`]);
//! - [`transport`]: [`SimTransport`], the [`slimebench_proto::Transport`] on it;
//! - [`store`]: [`SimStore`], a fault-injecting control store decorator ([`StoreFaults`]);
//! - [`log`]: [`EventLog`], the replayable event log and its hash.

pub mod log;
pub mod net;
pub mod store;
pub mod transport;

pub use log::EventLog;
pub use net::{FaultCounts, LinkFaults, SimNet};
pub use store::{SimStore, StoreFaultCounts, StoreFaults};
pub use transport::{SimConfig, SimStats, SimTransport};
