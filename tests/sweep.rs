//! The whole sweep through the actors: driver and worker on two threads,
//! rendezvous over the embedded store, real TCP, every reply checked.

use slimebench::app::{sweep, AppError, Interrupt, NodeOptions, SweepConfig, TransportChoice, UsageError};
use slimebench::bench::csv::{read_csv, CSV_HEADER};
use slimebench::bench::plan::{KIB, MIB};

use crate::util::scratch_dir;

fn quick(tag: &str) -> SweepConfig {
    SweepConfig {
        node: NodeOptions {
            transport: TransportChoice::Tcp,
            ..NodeOptions::default()
        },
        iters: Some(3),
        warmup: 1,
        check_every: 1,
        out_dir: scratch_dir(tag),
        progress: false,
        ..SweepConfig::default()
    }
}

#[test]
fn full_size_range_every_reply_checked_with_floor() {
    let cfg = SweepConfig {
        with_floor: true,
        ..quick("full")
    };
    let out = sweep(&cfg, &Interrupt::never()).unwrap();
    let sizes: Vec<usize> = out.slime.iter().map(|s| s.size).collect();
    assert_eq!(
        sizes,
        vec![KIB, 4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, MIB, 4 * MIB, 16 * MIB]
    );
    assert!(out
        .slime
        .iter()
        .all(|s| s.iters == 3 && s.p50_us > 0.0 && s.p50_us <= s.p99_us));
    // 8 sizes x (1 warm-up + 3 timed), each served once.
    let worker = out.worker.as_ref().expect("in-process worker");
    assert_eq!(worker.server.requests, 32);
    assert_eq!(worker.server.bad_requests, 0);
    assert_eq!(out.driver.client.stray_replies, 0);
    assert!(out.driver.clean_exit && worker.clean_exit);
    assert!(out.leftover_keys.is_empty(), "{:?}", out.leftover_keys);

    let csv = std::fs::read_to_string(cfg.out_dir.join("slime_rpc.csv")).unwrap();
    assert_eq!(csv.lines().next(), Some(CSV_HEADER));
    assert_eq!(read_csv(&cfg.out_dir.join("slime_rpc.csv")).unwrap().len(), 8);
    assert_eq!(read_csv(&cfg.out_dir.join("floor_rpc.csv")).unwrap().len(), 8);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg.out_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["meta"]["transport"], "tcp");
    assert!(summary["systems"]["slime"][0]["p999_us"].as_f64().unwrap() > 0.0);
    assert!(
        out.table.contains("S/Floor") && out.table.contains("16MB"),
        "{}",
        out.table
    );
}

#[test]
fn copy_in_mode_and_sizes_over_the_slot_are_skipped() {
    let mut cfg = SweepConfig {
        max_size_mb: 4,
        copy_in: true,
        ..quick("skip")
    };
    cfg.node.buf_mb = 1;
    let out = sweep(&cfg, &Interrupt::never()).unwrap();
    // A 1 MiB slot carries at most 1 MiB - 16 bytes.
    assert_eq!(out.skipped, vec![MIB, 4 * MIB]);
    assert_eq!(out.slime.last().unwrap().size, 256 * KIB);
}

#[test]
fn several_slots_in_flight_geometry_is_negotiated() {
    let mut cfg = SweepConfig {
        max_size_mb: 1,
        ..quick("slots")
    };
    cfg.node.max_inflight = 4;
    cfg.node.buf_mb = 1;
    let out = sweep(&cfg, &Interrupt::never()).unwrap();
    assert_eq!(out.slime.len(), 5);
}

#[test]
fn bad_settings_are_refused_before_anything_runs() {
    let err = sweep(
        &SweepConfig {
            max_size_mb: 0,
            ..quick("bad")
        },
        &Interrupt::never(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            AppError::Usage(UsageError::OutOfRange {
                flag: "--max-size-mb",
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "--max-size-mb must be at least 1");
    let mut cfg = quick("rdma");
    cfg.node.transport = TransportChoice::Rdma;
    let err = sweep(&cfg, &Interrupt::never()).unwrap_err();
    assert!(matches!(err, AppError::RdmaUnusable { .. }), "{err:?}");
    assert!(
        err.to_string().contains("RDMA support") && err.to_string().contains("--transport tcp"),
        "{err}"
    );
    let mut cfg = quick("scope");
    cfg.node.scope = Some("bad scope!".into());
    let err = sweep(&cfg, &Interrupt::never()).unwrap_err();
    assert!(
        matches!(err, AppError::Usage(UsageError::BadName { flag: "--scope", .. })),
        "{err:?}"
    );
}

/// Segments this run's scope left in /dev/shm (names carry the scope).
pub fn shm_leftovers(scope: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(scope))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn shared_memory_sweep_checks_every_reply_and_leaves_nothing_in_dev_shm() {
    let mut cfg = quick("shm");
    cfg.node.transport = TransportChoice::Shm;
    cfg.node.scope = Some(format!("shmtest{}", std::process::id()));
    let out = sweep(&cfg, &Interrupt::never()).unwrap();
    assert_eq!(out.transport, "shm");
    assert_eq!(out.slime.len(), 8);
    let worker = out.worker.as_ref().unwrap();
    assert_eq!(worker.server.requests, 32);
    assert!(out.driver.clean_exit && worker.clean_exit);
    assert!(out.leftover_keys.is_empty());
    assert_eq!(shm_leftovers(&out.scope), Vec::<String>::new());
}

#[test]
fn auto_picks_shared_memory_when_both_agents_share_the_host() {
    let mut cfg = quick("auto");
    cfg.node.transport = TransportChoice::Auto;
    cfg.max_size_mb = 1;
    let out = sweep(&cfg, &Interrupt::never()).unwrap();
    // No RDMA device here (a machine with one would pick rdma).
    if out.transport == "rdma" {
        eprintln!("skipping the shm check: an RDMA device is usable here");
        return;
    }
    assert_eq!(out.transport, "shm");
}
