//! The commands behind the CLI, as library functions taking plain config
//! structs (so tests run them without a process). `main.rs` only parses flags.
//!
//! - [`sweep()`]: the sweep — driver and worker on two threads of this process
//!   (memory store), or with `--ctrl redis://…` a worker child process;
//! - [`nodes`]: `slimebench worker` / `slimebench driver` as separate processes;
//! - [`compare()`]: the merged table of a folder of CSVs;
//! - [`sim()`]: the deterministic simulator.

pub mod nodes;
mod sim;
mod sweep;

pub use sim::{sim, SimCommand};
pub use sweep::{sweep, SweepConfig, SweepOutcome};

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use slimebench_proto::rendezvous::Timing;
use slimebench_proto::{Geometry, Keys};
use slimebench_tcp::{TcpConfig, TcpTransport};

use crate::actors::{AgentSetup, NodeError};
use crate::bench::csv::{write_csv, CsvRow};
use crate::bench::plan::MIB;
use crate::bench::stats::SizeStats;
use crate::bench::table::{self, System};
use crate::control::{CtrlStore, CtrlUrl, RedisOptions};
use crate::rpc::SpinPolicy;

/// `--transport`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportChoice {
    /// RDMA when a device is usable, else TCP.
    Auto,
    Tcp,
    Shm,
    Rdma,
}

/// What every node (driver or worker, in or out of process) is configured with.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub transport: TransportChoice,
    pub ctrl: CtrlUrl,
    /// Run scope; `None` = a fresh one (only where one process runs both sides).
    pub scope: Option<String>,
    /// Slot size in MiB.
    pub buf_mb: u64,
    /// Slots per mailbox.
    pub max_inflight: u32,
    /// Busy-poll budget per wait.
    pub spin: Duration,
    /// Address TCP listeners bind to.
    pub bind: IpAddr,
    /// Host or IP published for the peer to dial (default: found from the bind
    /// address, or from the route to the control plane when binding 0.0.0.0).
    pub advertise: Option<String>,
    /// Lease TTL: a peer that stops refreshing is gone after this.
    pub lease: Duration,
    /// Lease refresh period.
    pub heartbeat: Duration,
    /// Bound on each call's wait for its reply.
    pub call_timeout: Duration,
    /// RDMA device, port and GID index (unset = automatic).
    pub rdma: slimebench_verbs::Selection,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            transport: TransportChoice::Auto,
            ctrl: CtrlUrl::Memory,
            scope: None,
            buf_mb: 256,
            max_inflight: 1,
            spin: Duration::from_micros(100),
            bind: IpAddr::from([127, 0, 0, 1]),
            advertise: None,
            lease: Duration::from_secs(3),
            heartbeat: Duration::from_millis(750),
            call_timeout: Duration::from_secs(60),
            rdma: slimebench_verbs::Selection::default(),
        }
    }
}

impl NodeOptions {
    /// # Errors
    /// [`AppError::Usage`] for values that cannot work.
    pub fn validate(&self) -> Result<(), AppError> {
        let usage = |m: &str| Err(AppError::Usage(m.to_string()));
        if self.buf_mb == 0 || self.buf_mb > 4096 {
            return usage("--buf-mb must be between 1 and 4096");
        }
        if self.max_inflight == 0 || self.max_inflight > 1024 {
            return usage("--max-inflight must be between 1 and 1024");
        }
        if self.buf_mb * u64::from(self.max_inflight) > 8192 {
            return usage("--buf-mb x --max-inflight exceeds 8 GiB of mailbox per side");
        }
        if self.lease < Duration::from_millis(300) || self.lease > Duration::from_secs(600) {
            return usage("--lease-ms must be between 300 and 600000");
        }
        if self.heartbeat.is_zero() || self.heartbeat * 2 > self.lease {
            return usage("--heartbeat-ms must be positive and at most half of --lease-ms");
        }
        if self.call_timeout.is_zero() {
            return usage("--call-timeout-s must be at least 1");
        }
        Ok(())
    }

    pub fn geometry(&self) -> Geometry {
        Geometry {
            slot_size: self.buf_mb * MIB as u64,
            slot_count: self.max_inflight,
        }
    }

    /// Rendezvous timers derived from the lease.
    pub fn timing(&self) -> Timing {
        Timing {
            lease: self.lease,
            heartbeat: self.heartbeat,
            peer_check: self.heartbeat.min(Duration::from_millis(500)),
            ..Timing::default()
        }
    }

    pub fn keys(&self, scope: &str) -> Result<Keys, AppError> {
        Keys::new(scope).map_err(|e| AppError::Usage(format!("--scope: {e}")))
    }

    pub fn setup<S>(&self, store: S, keys: &Keys, alias: &str) -> AgentSetup<S> {
        AgentSetup {
            store,
            keys: keys.clone(),
            alias: alias.to_string(),
            incarnation: fresh_id(),
            timing: self.timing(),
            geometry: self.geometry(),
            spin: SpinPolicy::new(self.spin),
            poll_period: Duration::from_millis(100),
            max_steps: None,
            call_timeout: Some(self.call_timeout),
        }
    }

    /// The host to publish: `--advertise`, else the bind address, else (bind
    /// 0.0.0.0) the local address of the route to the control plane.
    pub fn advertise_host(&self) -> Option<String> {
        if let Some(a) = &self.advertise {
            return Some(a.clone());
        }
        if !self.bind.is_unspecified() {
            return None;
        }
        let target = match &self.ctrl {
            CtrlUrl::Redis(url) => redis_host_port(url)?,
            CtrlUrl::Memory => return Some("127.0.0.1".into()),
        };
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        sock.connect(target).ok()?;
        Some(sock.local_addr().ok()?.ip().to_string())
    }
}

/// `host:port` of a redis URL.
fn redis_host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = rest.split('/').next()?;
    if hostport.is_empty() {
        return None;
    }
    Some(if hostport.contains(':') && !hostport.ends_with(']') {
        hostport.to_string()
    } else {
        format!("{hostport}:6379")
    })
}

/// A command that could not run; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A flag value that cannot work.
    #[error("{0}")]
    Usage(String),
    /// Something this build cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The control plane could not be opened.
    #[error("control plane: {0}")]
    Ctrl(String),
    #[error("driver failed: {0}")]
    Driver(NodeError),
    #[error("worker failed: {0}")]
    Worker(NodeError),
    #[error("{what}: {detail}")]
    Output { what: String, detail: String },
    /// A Python baseline could not run; the message says how to fix it.
    #[error("baseline: {0}")]
    Baseline(String),
}

static PROCESS_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Record when the process started (call first thing in `main`), so reports
/// can say how long it took from process start to a connected link.
pub fn mark_process_start() {
    PROCESS_START.get_or_init(std::time::Instant::now);
}

/// From process start (or first use) to `t`.
pub fn since_process_start(t: tokio::time::Instant) -> Duration {
    t.into_std()
        .saturating_duration_since(*PROCESS_START.get_or_init(std::time::Instant::now))
}

/// A fresh, non-zero id (incarnations, endpoint ids).
pub fn fresh_id() -> u64 {
    loop {
        let x: u64 = rand::random();
        if x != 0 {
            return x;
        }
    }
}

/// The backend a node will use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Tcp,
    Rdma,
    Shm,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Tcp => "tcp",
            Backend::Rdma => "rdma",
            Backend::Shm => "shm",
        }
    }
}

/// Decide the backend, saying why in one line. RDMA is probed (well under a
/// second): `--transport rdma` without a usable device fails with the cause
/// and the flag to use instead. `auto` picks RDMA when a device is usable,
/// else shared memory when both agents are known to share this host
/// (`one_host`: the sweep, whose worker is a thread or child of this
/// process), else TCP.
fn choose_backend(node: &NodeOptions, one_host: bool) -> Result<(Backend, String), AppError> {
    use slimebench_verbs::Availability;
    let rdma = || slimebench_verbs::probe(&node.rdma).availability;
    match node.transport {
        TransportChoice::Tcp => Ok((Backend::Tcp, "transport: tcp".into())),
        TransportChoice::Rdma => match rdma() {
            Availability::Usable(sel) => Ok((Backend::Rdma, format!("transport: rdma ({sel})"))),
            Availability::Unusable { cause, hint } => {
                Err(AppError::Unsupported(format!("--transport rdma: {cause}; {hint}")))
            }
        },
        TransportChoice::Auto => match rdma() {
            Availability::Usable(sel) => Ok((Backend::Rdma, format!("transport: rdma (auto: {sel})"))),
            Availability::Unusable { cause, .. } if one_host => Ok((
                Backend::Shm,
                format!("transport: shm (auto: both agents on this host; RDMA unusable: {cause})"),
            )),
            Availability::Unusable { cause, .. } => Ok((
                Backend::Tcp,
                format!(
                    "transport: tcp (auto: RDMA unusable: {cause}; pass --transport shm when both agents share a host)"
                ),
            )),
        },
        TransportChoice::Shm => Ok((Backend::Shm, "transport: shm".into())),
    }
}

/// A transport factory for `backend`; `Send`, so it may run on another
/// thread (the actor's own, where the transport then lives).
fn backend_factory<S>(
    backend: &Backend,
    node: &NodeOptions,
    scope: &str,
    setup: &AgentSetup<S>,
) -> impl FnOnce() -> Result<crate::backend::AnyTransport, String> + Send + 'static {
    use crate::backend::AnyTransport;
    let (backend, bind, advertise) = (backend.clone(), node.bind, node.advertise_host());
    // Shared-memory segments are named by scope, alias and incarnation, so a
    // crashed run's leftovers of this agent are found and removed at start.
    let naming = slimebench_shm::ShmNaming {
        scope: scope.to_string(),
        alias: setup.alias.clone(),
        incarnation: setup.incarnation,
    };
    let slot_size = node.geometry().slot_size as usize;
    let verbs = slimebench_verbs::VerbsConfig {
        selection: node.rdma.clone(),
        max_in_flight: node.max_inflight,
        max_write_len: slot_size,
        ..slimebench_verbs::VerbsConfig::default()
    };
    move || match backend {
        Backend::Tcp => {
            let cfg = TcpConfig {
                max_write_len: slot_size,
                ..TcpConfig::default()
            };
            TcpTransport::bind(SocketAddr::new(bind, 0), advertise, fresh_id(), cfg)
                .map(AnyTransport::Tcp)
                .map_err(|e| format!("cannot listen on {bind}: {e}"))
        }
        Backend::Rdma => slimebench_verbs::VerbsTransport::open(verbs, fresh_id())
            .map(|t| AnyTransport::Rdma(Box::new(t)))
            .map_err(|e| e.to_string()),
        Backend::Shm => {
            let cfg = slimebench_shm::ShmConfig {
                max_write_len: slot_size,
                ..slimebench_shm::ShmConfig::default()
            };
            slimebench_shm::ShmTransport::new(naming, cfg)
                .map(|t| AnyTransport::Shm(Box::new(t)))
                .map_err(|e| e.to_string())
        }
    }
}

/// Open the control store (inside the runtime that will use it).
async fn open_store(ctrl: &CtrlUrl) -> Result<CtrlStore, AppError> {
    CtrlStore::open(ctrl, RedisOptions::default())
        .await
        .map_err(|e| AppError::Ctrl(e.to_string()))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Remove result files of an earlier run so the table only shows this one.
fn clear_outputs(dir: &Path) -> Result<(), AppError> {
    std::fs::create_dir_all(dir).map_err(|e| AppError::Output {
        what: format!("cannot create {}", dir.display()),
        detail: e.to_string(),
    })?;
    for name in System::ALL
        .iter()
        .map(|s| s.file_name())
        .chain(["summary.json", "command.txt"])
    {
        let p = dir.join(name);
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| AppError::Output {
                what: format!("cannot remove stale {}", p.display()),
                detail: e.to_string(),
            })?;
        }
    }
    Ok(())
}

fn write_system(dir: &Path, system: System, stats: &[SizeStats]) -> Result<(), AppError> {
    let rows: Vec<CsvRow> = stats.iter().map(CsvRow::from).collect();
    let path = dir.join(system.file_name());
    write_csv(&path, &rows).map_err(|e| AppError::Output {
        what: format!("cannot write {}", path.display()),
        detail: e.to_string(),
    })
}

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

/// The merged comparison table of the CSVs in `dir`.
///
/// # Errors
/// [`AppError::Output`] when the directory has no readable CSV.
pub fn compare(dir: &Path) -> Result<String, AppError> {
    let c = table::load_dir(dir).map_err(|e| AppError::Output {
        what: "compare".into(),
        detail: e.to_string(),
    })?;
    Ok(table::render(&c))
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_url_host_port() {
        assert_eq!(redis_host_port("redis://h:7000/0").as_deref(), Some("h:7000"));
        assert_eq!(
            redis_host_port("redis://u:p@10.0.0.2").as_deref(),
            Some("10.0.0.2:6379")
        );
        assert_eq!(redis_host_port("redis://"), None);
    }

    #[test]
    fn node_options_bounds() {
        assert!(NodeOptions::default().validate().is_ok());
        let bad = NodeOptions {
            heartbeat: Duration::from_secs(2),
            ..NodeOptions::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("--heartbeat-ms"));
    }
}
