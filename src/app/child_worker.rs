//! The worker child process of `slimebench sweep --ctrl redis://…`: started
//! from this same binary, told to leave if this process dies, reaped
//! whatever happens.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use super::{AppError, Backend, NodeOptions};
use crate::control::CtrlUrl;

/// `slimebench worker` as a child process of this binary, killed and reaped
/// whatever happens (and told to leave if this process dies).
pub(super) struct ChildWorker {
    child: Option<Child>,
}

impl ChildWorker {
    pub(super) fn spawn(node: &NodeOptions, backend: &Backend, scope: &str) -> Result<ChildWorker, AppError> {
        let exe = std::env::current_exe().map_err(|source| AppError::Spawn {
            what: "the worker (this executable's path is unknown)",
            source,
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
        let child = cmd.spawn().map_err(|source| AppError::Spawn {
            what: "the worker process",
            source,
        })?;
        Ok(ChildWorker { child: Some(child) })
    }

    /// Wait up to `grace` for the worker to exit on its own, then stop it.
    pub(super) fn finish(&mut self, grace: Duration) -> Result<ExitStatus, ChildExit> {
        let Some(mut child) = self.child.take() else {
            return Err(ChildExit::AlreadyReaped);
        };
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(status),
                Ok(Some(status)) => return Err(ChildExit::Failed(status)),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ChildExit::Killed { grace });
                }
                Err(e) => return Err(ChildExit::Wait(e)),
            }
        }
    }
}

/// How a worker child did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub(super) enum ChildExit {
    #[error("worker already reaped")]
    AlreadyReaped,
    #[error("worker process exited with {0}")]
    Failed(ExitStatus),
    #[error("worker process still running {grace:?} after the driver; killed")]
    Killed { grace: Duration },
    #[error("cannot wait for the worker process: {0}")]
    Wait(std::io::Error),
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
