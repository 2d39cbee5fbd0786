//! slimebench command line: parse flags, set up tracing, call the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use slimebench::app::{
    self, AppError, DriverConfig, Interrupt, NodeOptions, SweepConfig, TransportChoice, UsageError, WorkerConfig,
};
use slimebench::control::CtrlUrl;

#[derive(Parser)]
#[command(
    name = "slimebench",
    version,
    about = "SlimeRPC echo benchmark harness: mailbox RPC over RDMA/TCP, with a deterministic simulator"
)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the echo sweep (driver and worker in this process, or with
    /// --ctrl redis://… a worker child process).
    Sweep {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        sweep: SweepArgs,
    },
    /// Serve echo calls for drivers that meet it through the control plane.
    Worker {
        #[command(flatten)]
        node: NodeArgs,
        /// Agent name in the scope.
        #[arg(long, default_value = "bench-worker")]
        alias: String,
        /// After a driver leaves, wait for the next one (until Ctrl-C).
        #[arg(long)]
        serve_forever: bool,
    },
    /// Run the sweep against a worker process.
    Driver {
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        sweep: SweepArgs,
        /// Agent name in the scope.
        #[arg(long, default_value = "bench-driver")]
        alias: String,
        /// The worker's alias.
        #[arg(long, default_value = "bench-worker")]
        peer: String,
    },
    /// Check this machine: RDMA devices/ports/GIDs, the control plane, the Python baselines.
    Doctor {
        /// Control plane to check.
        #[arg(long, default_value = "memory", env = "CTRL")]
        ctrl: CtrlUrl,
        /// Python with Ray/Pulsing (default: SLIMEBENCH_PYTHON, then the project's .venv).
        #[arg(long)]
        python: Option<PathBuf>,
        /// RDMA device to check (default: automatic).
        #[arg(long, env = "RDMA_DEVICE")]
        device: Option<String>,
        #[arg(long, env = "RDMA_IB_PORT")]
        ib_port: Option<u8>,
        #[arg(long, env = "RDMA_GID_INDEX")]
        gid_index: Option<u32>,
    },
    /// Print the merged comparison table of the CSVs in DIR.
    Compare {
        /// Folder holding slime_rpc.csv, ray_rpc.csv, … (ours or foreign).
        dir: PathBuf,
    },
    /// Deterministic fault-injection swarm on the simulator.
    Sim {
        /// Replay one seed (twice, checking the event-log hash) and describe it.
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// How many seeds to run.
        #[arg(long, default_value_t = 200)]
        seeds: u64,
        /// First seed of the swarm.
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Replay every n-th seed and compare event-log hashes (0 = never).
        #[arg(long, default_value_t = 10)]
        replay_every: u64,
        /// With --seed: also print the seed's fault plan and its event log.
        #[arg(long, requires = "seed")]
        log: bool,
    },
}

/// Flags every node takes.
#[derive(clap::Args)]
struct NodeArgs {
    /// Data path backend.
    #[arg(long, value_enum, default_value = "auto", env = "TRANSPORT")]
    transport: TransportChoice,
    /// Control plane: "memory" (embedded, one process) or a redis:// URL
    /// (password and ACL user allowed: redis://user:pass@host:port/db).
    #[arg(long, default_value = "memory", env = "CTRL")]
    ctrl: CtrlUrl,
    /// Run scope prefixing every control-plane key (sweep: fresh per run by default).
    #[arg(long, env = "SCOPE")]
    scope: Option<String>,
    /// Slot size in MiB (the largest message is this minus a 16-byte header).
    #[arg(long, default_value_t = 256, env = "BUF_MB")]
    buf_mb: u64,
    /// Slots per mailbox = calls in flight (the original benchmark uses 1).
    #[arg(long, default_value_t = 1)]
    max_inflight: u32,
    /// Busy-poll budget per wait in microseconds before sleeping (0 = never spin).
    #[arg(long, default_value_t = 100)]
    spin_us: u64,
    /// Address the TCP listener binds to (0.0.0.0 for runs across hosts).
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Host or IP the peer dials (default: the bind address; with 0.0.0.0,
    /// the local address of the route to the control plane).
    #[arg(long)]
    advertise: Option<String>,
    /// Lease TTL in ms: a peer that stops refreshing (killed) is gone after this.
    #[arg(long, default_value_t = 3000)]
    lease_ms: u64,
    /// Lease refresh period in ms (at most half the lease).
    #[arg(long, default_value_t = 750)]
    heartbeat_ms: u64,
    /// Longest wait for one reply, in seconds.
    #[arg(long, default_value_t = 60)]
    call_timeout_s: u64,
    /// RDMA device (default: the first with an ACTIVE port).
    #[arg(long, env = "RDMA_DEVICE")]
    device: Option<String>,
    /// RDMA port number (from 1).
    #[arg(long, env = "RDMA_IB_PORT")]
    ib_port: Option<u8>,
    /// GID table index (default: a RoCE v2 IPv4 GID when there is one).
    #[arg(long, env = "RDMA_GID_INDEX")]
    gid_index: Option<u32>,
}

impl NodeArgs {
    fn options(self) -> NodeOptions {
        NodeOptions {
            transport: self.transport,
            ctrl: self.ctrl,
            scope: self.scope,
            buf_mb: self.buf_mb,
            max_inflight: self.max_inflight,
            spin: Duration::from_micros(self.spin_us),
            bind: self.bind,
            advertise: self.advertise,
            lease: Duration::from_millis(self.lease_ms),
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            call_timeout: Duration::from_secs(self.call_timeout_s),
            rdma: slimebench_verbs::Selection {
                device: self.device,
                ib_port: self.ib_port,
                gid_index: self.gid_index,
            },
        }
    }
}

/// Flags of a sweep.
#[derive(clap::Args)]
struct SweepArgs {
    /// Largest payload size in MiB (sizes go 1KB, 4KB, … up to this).
    #[arg(long, default_value_t = 16, env = "MAX_SIZE_MB")]
    max_size_mb: u64,
    /// Timed calls per size (default: the original's max(50, min(500, 50e6/size))).
    #[arg(long)]
    iters: Option<usize>,
    /// Untimed warm-up calls per size.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Also run the floor: plain blocking TCP ping-pong, no actors (floor_rpc.csv).
    #[arg(long)]
    with_floor: bool,
    /// Also run the actix in-process echo, a lower bound for actor runtimes (actix_rpc.csv).
    #[arg(long)]
    with_actix: bool,
    /// Also run Ray's local actor echo (ray_rpc.csv; needs `just setup`).
    #[arg(long, env = "WITH_RAY")]
    with_ray: bool,
    /// Also run Pulsing's separate-process actor echo (pulsing_rpc.csv; needs `just setup`).
    #[arg(long, env = "WITH_PULSING")]
    with_pulsing: bool,
    /// Python with Ray/Pulsing (default: SLIMEBENCH_PYTHON, then the project's .venv).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Longest a Python baseline may run, in seconds.
    #[arg(long, default_value_t = 600)]
    baseline_timeout_s: u64,
    /// Where CSVs, summary.json and command.txt go (earlier results there are replaced).
    #[arg(long, default_value = "results/latest")]
    out_dir: PathBuf,
    /// Compare every n-th reply with its request (the first of each size always).
    #[arg(long, default_value_t = 16)]
    check_every: usize,
    /// Copy each payload into the send slot on every call, like the original's
    /// Python client (default: write it in place into registered memory).
    #[arg(long)]
    copy_in: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl SweepArgs {
    fn config(self, node: NodeOptions) -> SweepConfig {
        SweepConfig {
            node,
            max_size_mb: self.max_size_mb,
            iters: self.iters,
            warmup: self.warmup,
            with_floor: self.with_floor,
            with_actix: self.with_actix,
            with_ray: self.with_ray,
            with_pulsing: self.with_pulsing,
            python: self.python,
            baseline_timeout: Duration::from_secs(self.baseline_timeout_s),
            out_dir: self.out_dir,
            check_every: self.check_every,
            copy_in: self.copy_in,
            command: std::env::args().collect(),
            progress: !self.quiet,
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn needs_shared_ctrl(node: &NodeOptions, command: &'static str) -> Result<(), AppError> {
    match node.ctrl {
        CtrlUrl::Memory => Err(UsageError::NeedsSharedCtrl { command }.into()),
        CtrlUrl::Redis(_) => Ok(()),
    }
}

fn main() -> ExitCode {
    app::mark_process_start();
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let interrupt = Interrupt::signals();
    let result = match cli.cmd {
        Cmd::Sweep { node, sweep } => {
            let cfg = sweep.config(node.options());
            app::sweep(&cfg, &interrupt).map(|o| {
                println!("{}", o.table);
                eprintln!(
                    "wrote {} (connected {:.1} ms after process start)",
                    cfg.out_dir.display(),
                    app::since_process_start(o.driver.connected_at).as_secs_f64() * 1e3
                );
            })
        }
        Cmd::Worker {
            node,
            alias,
            serve_forever,
        } => {
            let node = node.options();
            needs_shared_ctrl(&node, "worker").and_then(|()| {
                app::worker(
                    &WorkerConfig {
                        node,
                        alias,
                        serve_forever,
                    },
                    &interrupt,
                )
                .map(|_| ())
            })
        }
        Cmd::Driver {
            node,
            sweep,
            alias,
            peer,
        } => {
            let node = node.options();
            let cfg = DriverConfig {
                sweep: sweep.config(node),
                alias,
                peer,
            };
            needs_shared_ctrl(&cfg.sweep.node, "driver").and_then(|()| {
                app::driver(&cfg, &interrupt).map(|o| {
                    println!("{}", o.table);
                    eprintln!(
                        "wrote {} (connected {:.1} ms after process start)",
                        cfg.sweep.out_dir.display(),
                        app::since_process_start(o.driver.connected_at).as_secs_f64() * 1e3
                    );
                })
            })
        }
        Cmd::Compare { dir } => app::compare(&dir).map(|t| println!("{t}")),
        Cmd::Doctor {
            ctrl,
            python,
            device,
            ib_port,
            gid_index,
        } => {
            let sel = slimebench_verbs::Selection {
                device,
                ib_port,
                gid_index,
            };
            println!("{}", app::doctor(&ctrl, python.as_deref(), &sel));
            Ok(())
        }
        Cmd::Sim {
            seed,
            seeds,
            first_seed,
            replay_every,
            log,
        } => {
            let cmd = match seed {
                Some(s) => app::SimCommand::Seed { seed: s, log },
                None => app::SimCommand::Swarm {
                    first: first_seed,
                    count: seeds,
                    replay_every,
                },
            };
            app::sim(&cmd).map(|t| println!("{t}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
