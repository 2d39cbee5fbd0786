//! One file per command.

pub mod compare;
pub mod doctor;
pub mod driver;
pub mod sim;
pub mod sweep;
pub mod worker;
