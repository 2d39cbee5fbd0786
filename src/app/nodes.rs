//! `slimebench worker` and `slimebench driver`: the two sides as separate
//! processes (on one host or two) meeting through a shared control plane,
//! and the child worker that `slimebench sweep --ctrl redis://…` runs.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use actix::Actor;
use tokio::sync::oneshot;

use super::sweep::{run_local_baselines, run_python_baselines, write_outputs, SweepConfig, SweepOutcome};
use super::{backend_factory, choose_backend, clear_outputs, interrupted, open_store, AppError, NodeOptions};
use crate::actors::{DriverActor, DriverReport, NodeError, RunSweep, Shutdown, WorkerActor, WorkerReport};
use crate::control::{CtrlStore, CtrlUrl};
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
pub fn worker(cfg: &WorkerConfig) -> Result<Vec<WorkerReport>, AppError> {
    cfg.node.validate()?;
    let (backend, why) = choose_backend(&cfg.node, false)?;
    let scope = cfg
        .node
        .scope
        .clone()
        .ok_or_else(|| AppError::Usage("worker needs --scope (the driver must use the same one)".into()))?;
    let keys = cfg.node.keys(&scope)?;
    slimebench_proto::keys::validate_alias(&cfg.alias).map_err(|e| AppError::Usage(format!("--alias: {e}")))?;
    let node = cfg.node.clone();
    let alias = cfg.alias.clone();
    let serve_forever = cfg.serve_forever;
    actix::System::new().block_on(async move {
        let store = open_store(&node.ctrl).await?;
        eprintln!("worker {alias}: {why}, scope {scope}, control plane {}", node.ctrl);
        let mut reports = Vec::new();
        let mut stop = std::pin::pin!(interrupted());
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

/// `slimebench driver`.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub sweep: SweepConfig,
    pub alias: String,
    pub peer: String,
}

/// Run the sweep against a worker in another process and write the results.
///
/// # Errors
/// [`AppError`]; a peer that vanished is named in the message.
pub fn driver(cfg: &DriverConfig) -> Result<SweepOutcome, AppError> {
    let s = &cfg.sweep;
    let (plan, skipped) = s.plan()?;
    let (backend, why) = choose_backend(&s.node, false)?;
    let transport = backend.name();
    let python = s.check_python()?;
    eprintln!("{why}");
    let scope = s
        .node
        .scope
        .clone()
        .ok_or_else(|| AppError::Usage("driver needs --scope (the worker's)".into()))?;
    let keys = s.node.keys(&scope)?;
    for (flag, a) in [("--alias", &cfg.alias), ("--peer", &cfg.peer)] {
        slimebench_proto::keys::validate_alias(a).map_err(|e| AppError::Usage(format!("{flag}: {e}")))?;
    }
    clear_outputs(&s.out_dir)?;
    let progress = s.progress_bar(plan.total_calls());
    let run = RunSweep {
        peer: cfg.peer.clone(),
        plan: plan.clone(),
        progress: progress.clone(),
        options: s.options(),
    };
    let report = run_driver(&s.node, &backend, &scope, &keys, &cfg.alias, run);
    progress.finish();
    let driver = report?;
    let mut baselines = run_local_baselines(s, &plan)?;
    baselines.python = run_python_baselines(s, &plan, python)?;
    let table = write_outputs(s, &plan, &skipped, transport, &scope, &driver, None, &baselines)?;
    Ok(SweepOutcome {
        slime: driver.stats.clone(),
        floor: baselines.floor,
        actix: baselines.actix,
        skipped,
        driver,
        worker: None,
        transport: transport.into(),
        scope,
        table,
        leftover_keys: Vec::new(),
    })
}

/// A driver actor in this process, on the store `node.ctrl`. Ctrl-C / SIGTERM
/// leave cleanly.
pub(super) fn run_driver(
    node: &NodeOptions,
    backend: &super::Backend,
    scope: &str,
    keys: &slimebench_proto::Keys,
    alias: &str,
    run: RunSweep,
) -> Result<DriverReport, AppError> {
    let node = node.clone();
    let keys = keys.clone();
    let alias = alias.to_string();
    let (backend, scope) = (backend.clone(), scope.to_string());
    actix::System::new().block_on(async move {
        let store = open_store(&node.ctrl).await?;
        let setup = node.setup(store, &keys, &alias);
        let factory = backend_factory(&backend, &node, &scope, &setup);
        let driver = DriverActor::new(setup, Box::new(factory)).start();
        let sweep = driver.send(run);
        tokio::pin!(sweep);
        let report = tokio::select! {
            r = &mut sweep => r,
            _ = interrupted() => {
                eprintln!("interrupted: shutting down");
                driver.do_send(Shutdown);
                sweep.await
            }
        };
        report
            .unwrap_or(Err(NodeError::ActorGone("driver")))
            .map_err(AppError::Driver)
    })
}

/// Keys left in `scope` (a separate short-lived runtime: for after a run).
///
/// # Errors
/// [`AppError::Ctrl`] when the store cannot be reached.
pub fn scope_keys(ctrl: &CtrlUrl, scope: &str) -> Result<Vec<String>, AppError> {
    let keys = slimebench_proto::Keys::new(scope).map_err(|e| AppError::Usage(format!("--scope: {e}")))?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Ctrl(e.to_string()))?
        .block_on(async {
            let store: CtrlStore = open_store(ctrl).await?;
            store
                .keys(&keys.scope_pattern())
                .await
                .map_err(|e| AppError::Ctrl(e.to_string()))
        })
}

/// `slimebench worker` as a child process of this binary, killed and reaped
/// whatever happens (and told to leave if this process dies).
pub(super) struct ChildWorker {
    child: Option<Child>,
}

impl ChildWorker {
    pub(super) fn spawn(node: &NodeOptions, backend: &super::Backend, scope: &str) -> Result<ChildWorker, AppError> {
        let exe = std::env::current_exe().map_err(|e| AppError::Output {
            what: "cannot find this executable to start the worker".into(),
            detail: e.to_string(),
        })?;
        let mut cmd = Command::new(exe);
        cmd.arg("worker")
            .args([
                "--scope",
                scope,
                "--alias",
                "bench-worker",
                "--transport",
                backend.name(),
            ])
            .args(["--buf-mb", &node.buf_mb.to_string()])
            .args(["--max-inflight", &node.max_inflight.to_string()])
            .args(["--spin-us", &node.spin.as_micros().to_string()])
            .args(["--bind", &node.bind.to_string()])
            .args(["--lease-ms", &node.lease.as_millis().to_string()])
            .args(["--heartbeat-ms", &node.heartbeat.as_millis().to_string()]);
        if let Some(a) = &node.advertise {
            cmd.args(["--advertise", a]);
        }
        let r = &node.rdma;
        if let Some(d) = &r.device {
            cmd.args(["--device", d]);
        }
        if let Some(p) = r.ib_port {
            cmd.args(["--ib-port", &p.to_string()]);
        }
        if let Some(g) = r.gid_index {
            cmd.args(["--gid-index", &g.to_string()]);
        }
        if let CtrlUrl::Redis(url) = &node.ctrl {
            // Through the environment, not argv: the URL may carry a password.
            cmd.env("CTRL", url);
        }
        // SAFETY: prctl is async-signal-safe; it only sets this child's
        // parent-death signal, so a killed parent does not leave a worker behind.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| AppError::Output {
            what: "cannot start the worker process".into(),
            detail: e.to_string(),
        })?;
        Ok(ChildWorker { child: Some(child) })
    }

    /// Wait up to `grace` for the worker to exit on its own, then stop it.
    pub(super) fn finish(&mut self, grace: Duration) -> Result<ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err("worker already reaped".into());
        };
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(status),
                Ok(Some(status)) => return Err(format!("worker process exited with {status}")),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "worker process still running {grace:?} after the driver; killed"
                    ));
                }
                Err(e) => return Err(format!("cannot wait for the worker process: {e}")),
            }
        }
    }
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
