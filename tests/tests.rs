//! The one integration-test binary; each module covers one area.

mod baselines;
mod cli;
mod redis_nodes;
mod redis_server;
mod redis_store;
mod rpc_tcp;
mod sim_scenarios;
mod sweep;
mod tcp_hostile;
mod util;
