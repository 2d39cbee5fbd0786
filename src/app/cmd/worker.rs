//! `slimebench worker`: the serving side as its own process, for drivers
//! that meet it through a shared control plane.

use actix::Actor;
use tokio::sync::oneshot;

use crate::actors::{NodeError, Shutdown, WorkerActor, WorkerReport};
use crate::app::backend_choice::{backend_factory, choose_backend};
use crate::app::link::open_store;
use crate::app::{AppError, Interrupt, NodeOptions, UsageError};
use crate::rpc::ServeEnd;

/// `slimebench worker`.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub node: NodeOptions,
    pub alias: String,
    /// After a driver leaves, wait for the next one (until interrupted).
    pub serve_forever: bool,
}

/// Serve drivers until one leaves (or, with `serve_forever`, until
/// interrupted). Ctrl-C / SIGTERM leave cleanly: cleanup event, keys removed.
///
/// # Errors
/// [`AppError`] when the worker could not start or its rendezvous failed.
pub fn worker(cfg: &WorkerConfig, interrupt: &Interrupt) -> Result<Vec<WorkerReport>, AppError> {
    cfg.node.validate()?;
    let (backend, why) = choose_backend(&cfg.node, false)?;
    let scope = cfg.node.scope.clone().ok_or(UsageError::MissingScope {
        command: "worker",
        hint: "the driver must use the same one",
    })?;
    let keys = cfg.node.keys(&scope)?;
    slimebench_proto::keys::validate_alias(&cfg.alias).map_err(|source| UsageError::BadName {
        flag: "--alias",
        source,
    })?;
    let node = cfg.node.clone();
    let alias = cfg.alias.clone();
    let serve_forever = cfg.serve_forever;
    let interrupt = interrupt.clone();
    actix::System::new().block_on(async move {
        let store = open_store(&node.ctrl).await?;
        eprintln!("worker {alias}: {why}, scope {scope}, control plane {}", node.ctrl);
        let mut reports = Vec::new();
        let mut stop = interrupt.wait();
        loop {
            let (tx, rx) = oneshot::channel();
            let setup = node.setup(store.clone(), &keys, &alias);
            let factory = backend_factory(&backend, &node, &scope, &setup);
            let actor = WorkerActor::new(setup, Box::new(factory), tx).start();
            let mut rx = std::pin::pin!(rx);
            let mut interrupted_now = false;
            let r = tokio::select! {
                r = &mut rx => r,
                _ = &mut stop => {
                    eprintln!("worker {alias}: interrupted, leaving");
                    interrupted_now = true;
                    actor.do_send(Shutdown);
                    rx.await
                }
            };
            let report = r.unwrap_or(Err(NodeError::ActorGone("worker")));
            match report {
                Ok(rep) => {
                    let end = match &rep.end {
                        ServeEnd::PeerGone(why) => format!("driver gone: {why}"),
                        ServeEnd::Shutdown => "shut down".into(),
                    };
                    eprintln!(
                        "worker {alias}: served {} ({} requests, {} refused); {end}; clean exit: {}",
                        rep.peer, rep.server.requests, rep.server.bad_requests, rep.clean_exit
                    );
                    reports.push(rep);
                }
                Err(NodeError::Interrupted(_)) if interrupted_now => {}
                Err(e) => return Err(AppError::Worker(e)),
            }
            if interrupted_now || !serve_forever {
                return Ok(reports);
            }
        }
    })
}
