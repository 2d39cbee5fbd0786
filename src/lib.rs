//! slimebench: the SlimeRPC echo benchmark as an actor harness.
pub mod actors;
pub mod app;
pub mod backend;
pub mod bench;
pub mod control;
pub mod doctor;
pub mod rpc;
pub mod sim;
