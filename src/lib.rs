//! slimebench: the SlimeRPC echo benchmark as an actor harness.
pub mod actors;
pub mod app;
pub mod bench;
pub mod control;
pub mod rpc;
pub mod sim;
