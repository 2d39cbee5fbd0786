//! slimebench command line: parse flags, set up tracing, call the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use slimebench::app::{self, SweepConfig, TransportChoice};
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
    /// Run the echo sweep (driver and worker in this process by default).
    Sweep(SweepArgs),
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
    },
    /// Print the merged comparison table of the CSVs in DIR.
    Compare {
        /// Folder holding slime_rpc.csv, ray_rpc.csv, … (ours or foreign).
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct SweepArgs {
    /// Data path backend.
    #[arg(long, value_enum, default_value = "auto", env = "TRANSPORT")]
    transport: TransportChoice,
    /// Control plane: "memory" (embedded) or a redis:// URL.
    #[arg(long, default_value = "memory", env = "CTRL")]
    ctrl: CtrlUrl,
    /// Run scope prefixing every control-plane key (default: fresh per run).
    #[arg(long, env = "SCOPE")]
    scope: Option<String>,
    /// Slot size in MiB (the largest message is this minus a 16-byte header).
    #[arg(long, default_value_t = 256, env = "BUF_MB")]
    buf_mb: u64,
    /// Largest payload size in MiB (sizes go 1KB, 4KB, … up to this).
    #[arg(long, default_value_t = 16, env = "MAX_SIZE_MB")]
    max_size_mb: u64,
    /// Timed calls per size (default: the original's max(50, min(500, 50e6/size))).
    #[arg(long)]
    iters: Option<usize>,
    /// Untimed warm-up calls per size.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Slots per mailbox = calls in flight (the original benchmark uses 1).
    #[arg(long, default_value_t = 1)]
    max_inflight: u32,
    /// Also run the floor: plain blocking TCP ping-pong, no actors (floor_rpc.csv).
    #[arg(long)]
    with_floor: bool,
    /// Where CSVs, summary.json and command.txt go (earlier results there are replaced).
    #[arg(long, default_value = "results/latest")]
    out_dir: PathBuf,
    /// Busy-poll budget per wait in microseconds before sleeping (0 = never spin).
    #[arg(long, default_value_t = 100)]
    spin_us: u64,
    /// Compare every n-th reply with its request (the first of each size always).
    #[arg(long, default_value_t = 16)]
    check_every: usize,
    /// Copy each payload into the send slot on every call, like the original's
    /// Python client (default: write it in place into registered memory).
    #[arg(long)]
    copy_in: bool,
    /// Address the TCP listeners bind to.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.cmd {
        Cmd::Sweep(a) => {
            let cfg = SweepConfig {
                transport: a.transport,
                ctrl: a.ctrl,
                scope: a.scope,
                buf_mb: a.buf_mb,
                max_size_mb: a.max_size_mb,
                iters: a.iters,
                warmup: a.warmup,
                max_inflight: a.max_inflight,
                with_floor: a.with_floor,
                out_dir: a.out_dir,
                spin: Duration::from_micros(a.spin_us),
                check_every: a.check_every,
                copy_in: a.copy_in,
                bind: a.bind,
                command: std::env::args().collect(),
                progress: !a.quiet,
            };
            app::sweep(&cfg).map(|o| {
                println!("{}", o.table);
                eprintln!(
                    "wrote {} (rendezvous {:.1} ms)",
                    cfg.out_dir.display(),
                    o.driver.rendezvous.as_secs_f64() * 1e3
                );
            })
        }
        Cmd::Compare { dir } => app::compare(&dir).map(|t| println!("{t}")),
        Cmd::Sim {
            seed,
            seeds,
            first_seed,
            replay_every,
        } => {
            let cmd = match seed {
                Some(s) => app::SimCommand::Seed(s),
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
