//! Driver and worker as separate processes meeting through a real Redis
//! (a private redis-server started per test; skipped out loud when missing).

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::RedisServer;
use crate::util::{block_on, scratch_dir};

const BIN: &str = env!("CARGO_BIN_EXE_slimebench");
const LEASE: &[&str] = &["--lease-ms", "1000", "--heartbeat-ms", "250"];

fn worker(url: &str, scope: &str, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["worker", "--scope", scope, "--buf-mb", "2"])
        .args(LEASE)
        .args(extra)
        .env("CTRL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start worker")
}

fn driver(url: &str, scope: &str, extra: &[&str]) -> Child {
    let out = scratch_dir("driver");
    Command::new(BIN)
        .args(["driver", "--scope", scope, "--buf-mb", "2", "--quiet", "--out-dir"])
        .arg(&out)
        .args(LEASE)
        .args(extra)
        .env("CTRL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start driver")
}

/// Wait for `c` at most `limit` (then kill it and fail).
fn wait(mut c: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if c.try_wait().expect("wait").is_some() {
            return c.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let out = c.wait_with_output().expect("output");
            panic!(
                "{what} still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// SCAN of `scope` on the server.
fn scope_keys(url: &str, scope: &str) -> Vec<String> {
    block_on(async {
        let store = slimebench::control::RedisStore::connect(url, Default::default())
            .await
            .expect("connect");
        store.keys(&format!("{scope}:*")).await.expect("scan")
    })
}

fn quick() -> Vec<&'static str> {
    vec![
        "--max-size-mb",
        "1",
        "--iters",
        "5",
        "--warmup",
        "1",
        "--check-every",
        "1",
    ]
}

#[test]
fn two_processes_complete_a_sweep_and_leave_the_scope_empty() {
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let w = worker(&url, "two", &[]);
    let d = wait(driver(&url, "two", &quick()), Duration::from_secs(60), "driver");
    assert!(d.status.success(), "driver: {}", text(&d.stderr));
    assert!(text(&d.stdout).contains("Slime avg"), "{}", text(&d.stdout));
    let w = wait(w, Duration::from_secs(20), "worker");
    assert!(w.status.success(), "worker: {}", text(&w.stderr));
    assert!(text(&w.stderr).contains("served bench-driver"), "{}", text(&w.stderr));
    assert_eq!(scope_keys(&url, "two"), Vec::<String>::new());
}

#[test]
fn stale_keys_of_a_crashed_run_do_not_stop_the_next_run() {
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    // A crashed worker left exchange and mailbox keys pointing nowhere.
    block_on(async {
        use slimebench_proto::values::{EndpointInfo, Geometry, MailboxInfo};
        use slimebench_proto::{ControlStore, ControlValue, Keys, MrDesc, StoreOp, TransportAddr};
        let store = slimebench::control::RedisStore::connect(&url, Default::default())
            .await
            .unwrap();
        let k = Keys::new("stale").unwrap();
        let info = EndpointInfo {
            wire_version: slimebench_proto::WIRE_VERSION,
            alias: "bench-worker".into(),
            peer: "bench-driver".into(),
            incarnation: 0xdead,
            transport: TransportAddr::Tcp {
                addr: "127.0.0.1:1".into(),
                endpoint_id: 0xdead,
            },
            geometry: Geometry {
                slot_size: 2 << 20,
                slot_count: 1,
            },
        };
        let mr = MailboxInfo {
            alias: "bench-worker".into(),
            incarnation: 0xdead,
            mr: MrDesc {
                addr: 4096,
                len: 2 << 20,
                rkey: 7,
            },
        };
        // Written as the dead incarnation would have: while holding a lease that has since expired.
        let rec = slimebench_proto::values::AgentRecord {
            incarnation: 0xdead,
            host: "crashed".into(),
            pid: 1,
            wire_version: slimebench_proto::WIRE_VERSION,
        };
        store
            .exec(&StoreOp::Claim {
                key: k.agent("bench-worker"),
                record: rec,
                ttl: Duration::from_millis(100),
            })
            .await
            .unwrap();
        store
            .exec(&StoreOp::PutOwned {
                agent_key: k.agent("bench-worker"),
                incarnation: 0xdead,
                entries: vec![
                    (k.exchange("bench-worker", "bench-driver"), info.encode()),
                    (k.mr("bench-worker", "mailbox"), mr.encode()),
                ],
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    assert_eq!(scope_keys(&url, "stale").len(), 2, "the dead worker's keys are there");
    // The driver starts first and must wait for the live worker, not use the dead one.
    let d = driver(&url, "stale", &quick());
    std::thread::sleep(Duration::from_millis(500));
    let w = worker(&url, "stale", &[]);
    let d = wait(d, Duration::from_secs(60), "driver");
    assert!(d.status.success(), "driver: {}", text(&d.stderr));
    assert!(wait(w, Duration::from_secs(20), "worker").status.success());
    assert_eq!(scope_keys(&url, "stale"), Vec::<String>::new());
}

fn long_driver(url: &str, scope: &str) -> Child {
    driver(
        url,
        scope,
        &["--max-size-mb", "1", "--iters", "200000", "--warmup", "0"],
    )
}

#[test]
fn sigkill_of_the_worker_fails_the_driver_naming_the_peer() {
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let mut w = worker(&url, "kw", &[]);
    let d = long_driver(&url, "kw");
    std::thread::sleep(Duration::from_millis(1500));
    w.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    let _ = w.wait();
    let out = wait(d, Duration::from_secs(30), "driver");
    let noticed = killed.elapsed();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "driver should fail: {err}");
    assert!(err.contains("lost peer bench-worker"), "{err}");
    // Two lease periods, plus process exit.
    assert!(
        noticed < Duration::from_millis(2500),
        "driver exited {noticed:?} after the kill"
    );
}

#[test]
fn sigkill_of_the_driver_ends_the_worker_cleanly() {
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let w = worker(&url, "kd", &[]);
    let mut d = long_driver(&url, "kd");
    std::thread::sleep(Duration::from_millis(1500));
    d.kill().unwrap();
    let killed = Instant::now();
    let _ = d.wait();
    let out = wait(w, Duration::from_secs(30), "worker");
    let err = text(&out.stderr);
    assert!(out.status.success(), "worker: {err}");
    assert!(err.contains("driver gone"), "{err}");
    assert!(killed.elapsed() < Duration::from_millis(2500));
}

#[test]
fn two_concurrent_runs_in_different_scopes_share_one_redis() {
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let (w1, w2) = (worker(&url, "s1", &[]), worker(&url, "s2", &[]));
    let (d1, d2) = (driver(&url, "s1", &quick()), driver(&url, "s2", &quick()));
    for (d, w, s) in [(d1, w1, "s1"), (d2, w2, "s2")] {
        let o = wait(d, Duration::from_secs(60), "driver");
        assert!(o.status.success(), "{s}: {}", text(&o.stderr));
        assert!(wait(w, Duration::from_secs(20), "worker").status.success());
    }
    assert!(scope_keys(&url, "s1").is_empty() && scope_keys(&url, "s2").is_empty());
}

#[test]
fn a_live_alias_in_the_same_scope_is_refused() {
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let mut first = worker(&url, "dup", &[]);
    std::thread::sleep(Duration::from_millis(500));
    let second = wait(worker(&url, "dup", &[]), Duration::from_secs(20), "second worker");
    let err = text(&second.stderr);
    assert!(!second.status.success());
    assert!(err.contains("held by a live agent") && err.contains("--scope"), "{err}");
    // The first one is untouched and still registered.
    assert!(first.try_wait().unwrap().is_none());
    assert!(scope_keys(&url, "dup").iter().any(|k| k == "dup:agent:bench-worker"));
    // SIGTERM: a clean exit that removes its keys.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let mut err = String::new();
    first.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(first.wait().unwrap().success(), "{err}");
    assert!(scope_keys(&url, "dup").is_empty(), "{:?}", scope_keys(&url, "dup"));
}

#[test]
fn wrong_password_is_a_clear_error_without_the_password() {
    let Some(redis) = RedisServer::start_with_password("right-one") else {
        return;
    };
    let url = format!("redis://:wrong-one@127.0.0.1:{}/", redis.port());
    let out = wait(driver(&url, "pw", &quick()), Duration::from_secs(30), "driver");
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("wrong-one"), "password leaked: {err}");
    // And the right one works.
    let good = redis.url();
    let w = worker(&good, "pw", &[]);
    let d = wait(driver(&good, "pw", &quick()), Duration::from_secs(60), "driver");
    assert!(d.status.success(), "{}", text(&d.stderr));
    assert!(wait(w, Duration::from_secs(20), "worker").status.success());
}

#[test]
fn unreachable_redis_is_a_bounded_clear_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let started = Instant::now();
    let out = wait(driver(&url, "none", &quick()), Duration::from_secs(30), "driver");
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot reach Redis") && err.contains(&port.to_string()),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn sweep_with_redis_runs_and_reaps_its_worker_child() {
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let out_dir = scratch_dir("sweep-redis");
    let out = Command::new(BIN)
        .args(["sweep", "--scope", "child", "--buf-mb", "2", "--quiet", "--out-dir"])
        .arg(&out_dir)
        .args(quick())
        .args(LEASE)
        .env("CTRL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("served bench-driver"),
        "worker child output: {}",
        text(&out.stderr)
    );
    assert!(out_dir.join("slime_rpc.csv").exists());
    assert_eq!(scope_keys(&url, "child"), Vec::<String>::new());
}

#[test]
fn redis_restarted_mid_run_ends_in_a_clear_outcome_not_a_hang() {
    let Some(mut redis) = RedisServer::start() else { return };
    let url = redis.url();
    let w = worker(&url, "rr", &[]);
    let d = long_driver(&url, "rr");
    std::thread::sleep(Duration::from_millis(1500));
    // Restarted empty (no persistence): every lease and key is gone.
    redis.restart();
    let restarted = Instant::now();
    let d = wait(d, Duration::from_secs(30), "driver");
    let w = wait(w, Duration::from_secs(30), "worker");
    let (derr, werr) = (text(&d.stderr), text(&w.stderr));
    // Either side may notice first (its own lease gone, or the peer's); the
    // other then sees the link close. Both end, and the cause is named.
    assert!(!d.status.success(), "the long sweep cannot have finished: {derr}");
    assert!(derr.contains("bench-worker"), "driver names its peer: {derr}");
    assert!(
        derr.contains("lease") || werr.contains("lease"),
        "driver: {derr}\nworker: {werr}"
    );
    assert!(
        restarted.elapsed() < Duration::from_secs(10),
        "took {:?}",
        restarted.elapsed()
    );
}

#[test]
fn a_frozen_worker_is_detected_by_its_lease_expiring() {
    // SIGSTOP: the worker's sockets stay open (no EOF for TCP to report) and
    // its heartbeats stop — like a hung process or an unreachable host. Only
    // the lease can tell.
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let mut w = worker(&url, "frozen", &[]);
    let d = long_driver(&url, "frozen");
    std::thread::sleep(Duration::from_millis(1500));
    unsafe { libc::kill(w.id() as i32, libc::SIGSTOP) };
    let frozen = Instant::now();
    let out = wait(d, Duration::from_secs(30), "driver");
    let noticed = frozen.elapsed();
    let _ = w.kill();
    let _ = w.wait();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("lost peer bench-worker") && err.contains("lease of peer bench-worker expired"),
        "{err}"
    );
    // Lease 1 s + peer check 250 ms + process exit; well under two leases.
    assert!(noticed < Duration::from_millis(2000), "noticed after {noticed:?}");
    eprintln!("frozen worker noticed after {noticed:?}");
}

#[test]
fn shared_memory_between_two_processes_over_redis() {
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let scope = format!("shmx{}", std::process::id());
    let w = worker(&url, &scope, &["--transport", "shm"]);
    let d = wait(
        driver(&url, &scope, &[&quick()[..], &["--transport", "shm"]].concat()),
        Duration::from_secs(60),
        "driver",
    );
    assert!(d.status.success(), "driver: {}", text(&d.stderr));
    assert!(text(&d.stderr).contains("transport: shm"), "{}", text(&d.stderr));
    let w = wait(w, Duration::from_secs(20), "worker");
    assert!(w.status.success(), "worker: {}", text(&w.stderr));
    assert!(scope_keys(&url, &scope).is_empty());
    assert_eq!(crate::sweep::shm_leftovers(&scope), Vec::<String>::new());
}

#[test]
fn shared_memory_refuses_a_peer_on_another_transport() {
    let Some(redis) = RedisServer::start() else { return };
    let url = redis.url();
    let w = worker(&url, "mixed", &["--transport", "tcp"]);
    let d = wait(
        driver(&url, "mixed", &[&quick()[..], &["--transport", "shm"]].concat()),
        Duration::from_secs(60),
        "driver",
    );
    let err = text(&d.stderr);
    assert!(!d.status.success());
    assert!(
        err.contains("transport mismatch") && err.contains("--transport"),
        "{err}"
    );
    let _ = wait(w, Duration::from_secs(20), "worker");
}
