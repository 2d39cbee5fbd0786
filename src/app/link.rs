//! Running our side of a sweep: the driver actor in this process (its
//! worker elsewhere), or driver and worker as actors on two threads meeting
//! through the embedded store; the control plane opened for them.

use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use slimebench_proto::store::ControlStore;
use slimebench_proto::Transport;
use tokio::sync::oneshot;

use super::backend_choice::backend_factory;
use super::run::LinkResult;
use super::{AppError, Backend, Interrupt, NodeOptions, UsageError};
use crate::actors::{DriverActor, DriverReport, NodeError, RunSweep, Shutdown, WorkerActor};
use crate::control::{CtrlStore, CtrlUrl, RedisOptions};

/// Open the control store (inside the runtime that will use it).
pub(super) async fn open_store(ctrl: &CtrlUrl) -> Result<CtrlStore, AppError> {
    CtrlStore::open(ctrl, RedisOptions::default())
        .await
        .map_err(AppError::from)
}

/// A driver actor in this process, on the store `node.ctrl`. Ctrl-C / SIGTERM
/// leave cleanly.
pub(super) fn run_driver(
    node: &NodeOptions,
    backend: &Backend,
    scope: &str,
    keys: &slimebench_proto::Keys,
    alias: &str,
    run: RunSweep,
    interrupt: &Interrupt,
) -> Result<DriverReport, AppError> {
    let node = node.clone();
    let keys = keys.clone();
    let alias = alias.to_string();
    let (backend, scope) = (backend.clone(), scope.to_string());
    let interrupt = interrupt.clone();
    actix::System::new().block_on(async move {
        let store = open_store(&node.ctrl).await?;
        let setup = node.setup(store, &keys, &alias);
        let factory = backend_factory(&backend, &node, &scope, &setup);
        let driver = DriverActor::new(setup, Box::new(factory)).start();
        drive(&driver, run, &interrupt, || {}).await.map_err(AppError::Driver)
    })
}

/// Keys left in `scope` (a separate short-lived runtime: for after a run).
///
/// # Errors
/// [`AppError::CtrlConnect`] or [`AppError::CtrlStore`] when the store cannot be reached.
pub fn scope_keys(ctrl: &CtrlUrl, scope: &str) -> Result<Vec<String>, AppError> {
    let keys = slimebench_proto::Keys::new(scope).map_err(|source| UsageError::BadName {
        flag: "--scope",
        source,
    })?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| AppError::Spawn {
            what: "a runtime to read the control plane",
            source,
        })?
        .block_on(async {
            let store: CtrlStore = open_store(ctrl).await?;
            Ok(store.keys(&keys.scope_pattern()).await?)
        })
}

/// Driver and worker actors on two threads of one actix system, meeting
/// through the embedded store. Ctrl-C shuts both down cleanly.
pub(super) fn run_embedded(
    node: &NodeOptions,
    backend: &Backend,
    scope: &str,
    keys: &slimebench_proto::Keys,
    run: RunSweep,
    interrupt: &Interrupt,
) -> Result<LinkResult, AppError> {
    let store = crate::control::MemoryStore::new();
    let driver_setup = node.setup(CtrlStore::Memory(store.clone()), keys, "bench-driver");
    let worker_setup = node.setup(CtrlStore::Memory(store.clone()), keys, "bench-worker");
    let driver_factory = backend_factory(backend, node, scope, &driver_setup);
    let worker_factory = backend_factory(backend, node, scope, &worker_setup);
    let interrupt = interrupt.clone();
    let system = actix::System::new();
    let (report, worker_report) = system.block_on(async move {
        let worker_thread = Arbiter::new();
        let (done_tx, done_rx) = oneshot::channel();
        let worker = WorkerActor::start_in_arbiter(&worker_thread.handle(), move |_| {
            WorkerActor::new(worker_setup, Box::new(worker_factory), done_tx)
        });
        let driver = DriverActor::new(driver_setup, Box::new(driver_factory)).start();
        let report = drive(&driver, run, &interrupt, || worker.do_send(Shutdown)).await;
        // The worker ends when the driver's cleanup reaches it (or its link
        // closes); bounded in case the driver never got that far.
        let worker_report = match tokio::time::timeout(Duration::from_secs(15), done_rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(NodeError::ActorGone("worker")),
            Err(_) => {
                worker.do_send(Shutdown);
                Err(NodeError::Interrupted(
                    "worker did not finish within 15 s of the driver".into(),
                ))
            }
        };
        worker_thread.stop();
        (report, worker_report)
    });
    let driver = report.map_err(AppError::Driver)?;
    let worker = worker_report.map_err(AppError::Worker)?;
    Ok(LinkResult {
        driver,
        worker: Some(worker),
        leftover_keys: store.keys(&keys.scope_pattern()),
    })
}

/// Run the sweep on `driver`; when interrupted, shut it down (and whatever
/// `also` stops) and still wait for its report, so it leaves cleanly.
async fn drive<T, S>(
    driver: &Addr<DriverActor<T, S>>,
    run: RunSweep,
    interrupt: &Interrupt,
    also: impl FnOnce(),
) -> Result<DriverReport, NodeError>
where
    T: Transport + 'static,
    S: ControlStore + 'static,
{
    let sweep = driver.send(run);
    tokio::pin!(sweep);
    let report = tokio::select! {
        r = &mut sweep => r,
        _ = interrupt.wait() => {
            eprintln!("interrupted: shutting down");
            driver.do_send(Shutdown);
            also();
            sweep.await
        }
    };
    report.unwrap_or(Err(NodeError::ActorGone("driver")))
}
