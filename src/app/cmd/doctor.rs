//! `slimebench doctor`: the checks a user runs first on a new cluster.

use std::path::Path;

use crate::control::{CtrlStore, CtrlUrl};

/// `slimebench doctor`: what a user runs first on a new cluster — RDMA
/// devices, ports, GIDs and the `--transport auto` verdict, whether the
/// control plane answers, whether the Python baselines are installed.
pub fn doctor(ctrl: &CtrlUrl, python: Option<&Path>, sel: &slimebench_verbs::Selection) -> String {
    use crate::bench::baselines::{Baseline, PythonEnv};
    use crate::doctor::{Check, CheckStatus};
    let mut checks = Vec::new();
    checks.push(match ctrl {
        CtrlUrl::Memory => Check::new(
            "control plane",
            CheckStatus::Skipped,
            "embedded (memory); pass --ctrl redis://host:port to check a Redis",
        ),
        CtrlUrl::Redis(_) => Check::run(format!("control plane {ctrl}"), || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(async {
                    let opts = crate::control::RedisOptions {
                        connect_attempts: 2,
                        ..Default::default()
                    };
                    CtrlStore::open(ctrl, opts)
                        .await
                        .map(|_| "reachable (PING ok)".to_string())
                        .map_err(|e| e.to_string())
                })
        }),
    });
    match PythonEnv::discover(python) {
        Err(e) => checks.push(Check::new("python baselines", CheckStatus::Warn, e.to_string())),
        Ok(py) => {
            for b in Baseline::ALL {
                checks.push(Check::run(format!("{b} baseline"), || {
                    py.check(b)
                        .map(|v| {
                            format!(
                                "{} {} (python {} at {})",
                                b.name(),
                                v.version,
                                v.python,
                                v.python_path.display()
                            )
                        })
                        .map_err(|e| e.to_string())
                }));
            }
        }
    }
    crate::doctor::render(&crate::doctor::collect(sel, checks))
}
