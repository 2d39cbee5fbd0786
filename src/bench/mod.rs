//! Sweep plan, statistics, CSV, comparison table, summary, floor baseline.
pub mod actix_echo;
pub mod baselines;
pub mod csv;
pub mod floor;
pub mod memcpy_floor;
pub mod method;
pub mod plan;
pub mod plot;
pub mod progress;
pub mod stats;
pub mod summary;
pub mod sweep;
pub mod table;
