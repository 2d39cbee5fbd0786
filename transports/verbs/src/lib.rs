//! slimebench RDMA backend: RC queue pairs with write-with-immediate, on
//! sideway (libibverbs loaded at run time).
//!
//! The pure parts are always compiled and tested without hardware; the verbs
//! adapter needs the `sideway` feature (the root crate's `rdma` feature).
//!
//! Module map:
//! - [`gid`]: GID parsing and formatting (wire form: 32 hex digits);
//! - [`mtu`]: path MTU sizes and their verbs codes;
//! - [`attrs`]: peer-info validation, queue depths, the INIT/RTR/RTS attribute
//!   sets as plain data (timeouts, retry counts, the in-range RNR timer);
//! - [`wc`]: work-completion status codes → [`slimebench_proto::WcStatus`];
//! - [`book`]: completion bookkeeping as a pure state machine (posts, failures,
//!   shutdown, receive window) that the adapter feeds with work completions;
//! - [`device`]: the device/port/GID model shared by sysfs, libibverbs and selection;
//! - [`mod@select`]: device/port/GID choice from flags or `RDMA_*` env (pure);
//! - [`sysfs`]: the kernel's view from `/sys/class/infiniband` (no library needed);
//! - [`availability`]: [`Availability`], its [`Cause`]s and the fallback hint ([`classify`]);
//! - [`mod@probe`]: [`probe()`], fast and panic-free;
//! - [`config`]: [`VerbsConfig`], [`OpenError`], [`VerbsStats`];
//! - `verbs` (feature `sideway`) / `stub` (without): [`VerbsTransport`].

pub mod attrs;
pub mod availability;
pub mod book;
pub mod config;
pub mod device;
pub mod gid;
pub mod mtu;
pub mod probe;
pub mod select;
pub mod sysfs;
pub mod wc;

#[cfg(not(feature = "sideway"))]
mod stub;
#[cfg(feature = "sideway")]
mod verbs;

pub use attrs::{LocalPort, PeerInfo, PeerInfoError, QpPlan, QueueDepths};
pub use availability::{classify, Availability, Cause, LibraryState, Listing, FALLBACK};
pub use config::{OpenError, VerbsConfig, VerbsStats};
pub use device::{DeviceInfo, DeviceTransport, GidEntry, GidKind, LinkLayer, PortInfo, PortState};
pub use gid::{Gid, GidParseError};
pub use mtu::PathMtu;
pub use probe::{library_state, probe, ProbeReport, BUILT_WITH_VERBS};
pub use select::{select, EnvError, SelectError, Selected, Selection, Skip, SkipReason};
pub use sysfs::SysfsState;

#[cfg(not(feature = "sideway"))]
pub use stub::VerbsTransport;
#[cfg(feature = "sideway")]
pub use verbs::{VerbsTransport, POLL_BATCH};

/// Report a hardware test that cannot run here. Written to the process's
/// stderr directly, not with `eprintln!`: libtest swallows the output of
/// passing tests, and a skipped hardware test must never pass silently.
#[cfg(test)]
pub(crate) fn skip_loudly(test: &str, reason: &dyn std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}
