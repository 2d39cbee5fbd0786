//! Named scenarios on the simulator: one per reliability fix of the original
//! and per gap it still has, each asserting the outcome and a bound in
//! simulated time. The real actors, rpc session, agent loop and rendezvous
//! machine run; only the transport and the store are simulated.
//!
//! The data plane has RDMA semantics: a peer that exits or dies is silent, so
//! a waiter learns of it only through the control plane (or, when it has a
//! write outstanding, from `RetryExceeded` after the NIC's retry window —
//! several scenarios set that window very long to leave the control plane as
//! the only way out).

use std::time::Duration;

use slimebench::rpc::ServeEnd;
use slimebench::sim::{run, small_plan, Action, Outcome, Preload, Scenario, Who};
use slimebench_proto::Geometry;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn dump(o: &Outcome) -> String {
    format!(
        "driver: {:?}\nworker: {:?}\nlast events:\n{}",
        o.driver.as_ref().err(),
        o.worker.as_ref().err(),
        o.log_tail.join("\n")
    )
}

fn ok(o: &Outcome) {
    assert!(o.driver.is_ok() && o.worker.is_ok(), "{}", dump(o));
    assert!(o.guards_intact);
}

fn driver_err(o: &Outcome) -> String {
    match &o.driver {
        Ok(_) => panic!("driver should have failed\n{}", dump(o)),
        Err(e) => e.to_string(),
    }
}

fn worker_err(o: &Outcome) -> String {
    match &o.worker {
        Ok(w) => panic!("worker should have failed, ended with {:?}\n{}", w.end, dump(o)),
        Err(e) => e.to_string(),
    }
}

/// A sweep long enough to be mid-call at any time in the first seconds.
fn long_sweep(sc: &mut Scenario) {
    sc.plan = small_plan(&[1024], 0, 5000);
}

/// Make the data plane silent about dead peers for longer than the test.
fn silent_data_plane(sc: &mut Scenario) {
    sc.link.retry_window = 600 * S;
}

#[test]
fn fault_free_run_completes_leaves_no_keys_and_replays_identically() {
    let o = run(&Scenario::new(1));
    ok(&o);
    let d = o.driver.as_ref().unwrap();
    assert_eq!(d.stats.len(), 3);
    assert!(d.clean_exit && o.worker.as_ref().unwrap().clean_exit);
    assert!(o.leftover_keys.is_empty(), "{:?}", o.leftover_keys);
    // 3 sizes x (1 warm-up + 5 timed), each request served once.
    assert_eq!(o.worker.as_ref().unwrap().server.requests, 18);
    assert!(o.end < 2 * S, "took {:?}", o.end);
    assert_eq!(
        run(&Scenario::new(1)).event_hash,
        o.event_hash,
        "same seed, same event log"
    );
    assert_ne!(run(&Scenario::new(2)).event_hash, o.event_hash);
}

/// Fix 1: an attempt that ends early (peer not yet published) or whose store
/// reply never comes must not block the retry.
#[test]
fn early_ended_attempt_and_lost_store_reply_do_not_block_the_retry() {
    // The worker comes 2 s late: the driver's fetches end early, again and again.
    let mut sc = Scenario::new(11);
    sc.worker_start = 2 * S;
    // And one fetch's reply is lost for good: the in-flight attempt must be
    // abandoned after the op timeout, not wait forever.
    sc.store_hang = vec![("fetch", 2)];
    let o = run(&sc);
    ok(&o);
    let d = o.driver.as_ref().unwrap();
    assert!(o.store_faults.hung == 1);
    // Connected within the worker's start + one op timeout + one backoff cap.
    let bound = sc.worker_start + sc.timing.op_timeout + sc.timing.retry_max + 100 * MS;
    assert!(
        d.rendezvous <= bound,
        "rendezvous took {:?}, bound {bound:?}",
        d.rendezvous
    );
}

/// Fix 1b: a notification sent before the receiver started (the driver's
/// connect_peer, in the worker's stream) is kept, not deleted at start, so the
/// worker picks it up at once. (The driver also repeats it every
/// `ready_refresh` until ready — a second guard, which alone would take up to
/// a second: the worker starts mid-interval to tell the two apart.)
#[test]
fn notification_sent_before_the_receiver_started_is_not_lost() {
    let mut sc = Scenario::new(12);
    sc.worker_start = 10 * S + 500 * MS;
    let o = run(&sc);
    ok(&o);
    let d = o.driver.as_ref().unwrap();
    let bound = sc.worker_start + 200 * MS;
    assert!(
        d.rendezvous <= bound,
        "rendezvous took {:?} for a worker starting at {:?} (bound {bound:?})",
        d.rendezvous,
        sc.worker_start
    );
}

/// Fix 2: stale exchange and mailbox keys of an older incarnation are removed
/// on start and never used, even while they are still visible next to the
/// new incarnation's lease.
#[test]
fn stale_keys_of_an_older_incarnation_are_removed_and_never_used() {
    let mut sc = Scenario::new(13);
    sc.preload = vec![
        Preload::StaleEndpoint {
            alias: "bench-worker".into(),
            peer: "bench-driver".into(),
            incarnation: 0x5555,
        },
        // Towards a driver that no longer exists: only the start-up cleanup
        // can remove it (nobody will overwrite or release it).
        Preload::StaleEndpoint {
            alias: "bench-worker".into(),
            peer: "old-driver".into(),
            incarnation: 0x5555,
        },
    ];
    // The worker claims its lease, then its cleanup of stale keys stalls for
    // an op timeout: meanwhile the driver sees a live lease next to the dead
    // incarnation's endpoint, and must not connect to it.
    sc.store_hang = vec![("delete_matching", 1)];
    sc.driver_start = 500 * MS;
    let o = run(&sc);
    ok(&o);
    assert_eq!(
        o.unknown_connects,
        0,
        "connected to a dead incarnation's endpoint\n{}",
        dump(&o)
    );
    assert!(o.leftover_keys.is_empty(), "{:?}", o.leftover_keys);
}

/// Fix 3, client side: the worker leaves cleanly while a call waits for its
/// reply; the cleanup event must fail that call at once.
#[test]
fn cleanup_event_fails_the_pending_call() {
    let mut sc = Scenario::new(14);
    long_sweep(&mut sc);
    silent_data_plane(&mut sc);
    sc.call_timeout = Some(120 * S);
    let at = 3 * S;
    sc.actions = vec![(at, Action::Shutdown(Who::Worker))];
    let o = run(&sc);
    let e = driver_err(&o);
    assert!(e.contains("peer gone") && e.contains("cleanup event"), "{e}");
    let after = o.finished_after(Who::Driver, at).unwrap();
    assert!(after <= S, "driver noticed after {after:?}");
}

/// Fix 3, server side (a gap of the original: its server could block
/// forever): the driver leaves cleanly; the idle worker must stop serving.
#[test]
fn cleanup_event_ends_the_serve_loop() {
    let mut sc = Scenario::new(15);
    long_sweep(&mut sc);
    silent_data_plane(&mut sc);
    let at = 3 * S;
    sc.actions = vec![(at, Action::Shutdown(Who::Driver))];
    let o = run(&sc);
    let w = o.worker.as_ref().expect("worker ends cleanly");
    match &w.end {
        ServeEnd::PeerGone(why) => assert!(why.contains("cleanup event"), "{why}"),
        other => panic!("{other:?}"),
    }
    let after = o.finished_after(Who::Worker, at).unwrap();
    assert!(after <= S, "worker noticed after {after:?}");
    assert!(o.leftover_keys.is_empty(), "{:?}", o.leftover_keys);
}

/// Gap: a peer killed without a cleanup event (SIGKILL) is detected by its
/// lease expiring; the pending call ends, it does not spin forever.
#[test]
fn killed_worker_is_detected_by_lease_expiry() {
    let mut sc = Scenario::new(16);
    long_sweep(&mut sc);
    silent_data_plane(&mut sc);
    sc.call_timeout = Some(600 * S);
    let at = 3 * S;
    sc.actions = vec![(at, Action::Kill(Who::Worker))];
    let o = run(&sc);
    let e = driver_err(&o);
    assert!(e.contains("lease of peer bench-worker expired"), "{e}");
    let after = o.finished_after(Who::Driver, at).unwrap();
    let bound = sc.timing.lease + sc.timing.peer_check + sc.timing.op_timeout;
    assert!(after <= bound, "driver noticed after {after:?}, bound {bound:?}");
    // The killed worker left its keys; its lease expired.
    assert!(o.leftover_keys.iter().any(|k| k.contains("exchange:bench-worker")));
    assert!(!o.leftover_keys.iter().any(|k| k.contains("agent:bench-worker")));
}

/// Gap, server side: the driver is killed; the worker's serve loop ends by lease.
#[test]
fn killed_driver_is_detected_by_lease_expiry() {
    let mut sc = Scenario::new(17);
    long_sweep(&mut sc);
    silent_data_plane(&mut sc);
    let at = 3 * S;
    sc.actions = vec![(at, Action::Kill(Who::Driver))];
    let o = run(&sc);
    let w = o.worker.as_ref().expect("worker ends cleanly");
    match &w.end {
        ServeEnd::PeerGone(why) => assert!(why.contains("lease of peer bench-driver expired"), "{why}"),
        other => panic!("{other:?}"),
    }
    let after = o.finished_after(Who::Worker, at).unwrap();
    let bound = sc.timing.lease + sc.timing.peer_check + sc.timing.op_timeout;
    assert!(after <= bound, "worker noticed after {after:?}, bound {bound:?}");
}

/// Fix 4: shutdown() is idempotent, fails the pending call with a shutdown
/// error, removes our keys and notifies the peer.
#[test]
fn shutdown_twice_fails_the_pending_call_removes_keys_and_notifies_the_peer() {
    let mut sc = Scenario::new(18);
    long_sweep(&mut sc);
    silent_data_plane(&mut sc);
    sc.call_timeout = Some(120 * S);
    let at = 3 * S;
    sc.actions = vec![
        // Hold the data plane so a call is surely pending when we shut down.
        (at - 10 * MS, Action::Partition(60 * S)),
        (at, Action::Shutdown(Who::Driver)),
        (at + MS, Action::Shutdown(Who::Driver)),
    ];
    let o = run(&sc);
    let e = driver_err(&o);
    assert!(e.contains("session shut down"), "{e}");
    let after = o.finished_after(Who::Driver, at).unwrap();
    assert!(after <= 100 * MS, "pending call ended after {after:?}");
    let w = o.worker.as_ref().expect("worker ends cleanly");
    assert!(
        matches!(&w.end, ServeEnd::PeerGone(why) if why.contains("cleanup event")),
        "{:?}",
        w.end
    );
    assert!(o.finished_after(Who::Worker, at).unwrap() <= S);
    assert!(o.leftover_keys.is_empty(), "{:?}", o.leftover_keys);
}

/// Gap: slot size, slot count and wire version were never negotiated.
#[test]
fn geometry_mismatch_is_a_clear_error_on_both_sides() {
    let mut sc = Scenario::new(19);
    sc.worker_geometry = Geometry {
        slot_size: 2 << 20,
        slot_count: 1,
    };
    let o = run(&sc);
    let (d, w) = (driver_err(&o), worker_err(&o));
    assert!(d.contains("slot size mismatch") && d.contains("--buf-mb"), "{d}");
    assert!(w.contains("slot size mismatch"), "{w}");
    assert!(o.end <= 2 * S, "took {:?}", o.end);

    let mut sc = Scenario::new(20);
    sc.worker_geometry.slot_count = 4;
    sc.worker_geometry.slot_size = 1 << 20;
    let o = run(&sc);
    assert!(driver_err(&o).contains("slot count mismatch"));
    assert!(worker_err(&o).contains("slot count mismatch"));
}

#[test]
fn wire_version_mismatch_is_a_clear_error() {
    let mut sc = Scenario::new(21);
    sc.start_worker = false;
    sc.preload = vec![Preload::ForeignWorker {
        incarnation: 0x7777,
        wire_version: 9,
    }];
    let o = run(&sc);
    let e = driver_err(&o);
    assert!(e.contains("wire version mismatch") && e.contains("peer's 9"), "{e}");
    assert_eq!(o.unknown_connects, 0);
    assert!(o.finished_after(Who::Driver, Duration::ZERO).unwrap() <= S);
}

/// The control store down during rendezvous: bounded retries, success after
/// it heals...
#[test]
fn store_outage_during_rendezvous_heals() {
    let mut sc = Scenario::new(22);
    let outage = 3 * S;
    sc.actions = vec![(Duration::ZERO, Action::StoreOutage(outage))];
    let o = run(&sc);
    ok(&o);
    assert!(o.store_faults.unavailable > 0);
    let r = o.driver.as_ref().unwrap().rendezvous;
    assert!(r <= outage + sc.timing.retry_max + 100 * MS, "rendezvous took {r:?}");
}

/// ...or a clear error within the rendezvous deadline when it does not.
#[test]
fn store_outage_longer_than_the_deadline_is_a_clear_error() {
    let mut sc = Scenario::new(23);
    sc.actions = vec![(Duration::ZERO, Action::StoreOutage(600 * S))];
    let o = run(&sc);
    let (d, w) = (driver_err(&o), worker_err(&o));
    assert!(d.contains("gave up") && d.contains("unavailable"), "{d}");
    assert!(w.contains("gave up") && w.contains("unavailable"), "{w}");
    let bound = sc.timing.deadline + sc.timing.op_timeout + S;
    assert!(o.finished_after(Who::Driver, Duration::ZERO).unwrap() <= bound);
    assert!(o.finished_after(Who::Worker, Duration::ZERO).unwrap() <= bound);
}

/// Duplicated replies are never delivered to the wrong call; no call
/// completes twice; every reply matches its request (every reply is checked).
#[test]
fn duplicated_replies_never_reach_the_wrong_call() {
    let mut sc = Scenario::new(24);
    sc.link.dup_prob = 1.0;
    // Deliveries happen on tokio's 1 ms timer ticks: 1.5 ms puts each
    // duplicate two ticks after its reply, while the *next* call waits (a
    // shorter delay would land in the same tick as the reply itself).
    sc.link.dup_delay = 1500 * Duration::from_micros(1);
    // Replies only: the worker (node 2) duplicates everything it sends.
    sc.link.dup_from_node = Some(2);
    let o = run(&sc);
    ok(&o);
    let d = o.driver.as_ref().unwrap();
    let calls: usize = sc.plan.sizes.iter().map(|p| p.warmup + p.iters).sum();
    assert_eq!(o.faults.duplicated as usize, calls, "every reply was duplicated");
    // Each duplicate lands while the next call waits and is dropped as stray;
    // the last reply's duplicate comes after the final call, when the client
    // has closed.
    assert_eq!(
        d.client.stray_replies as usize,
        calls - 1,
        "every duplicate was dropped as stray"
    );
    assert_eq!(o.worker.as_ref().unwrap().server.requests as usize, calls);
}
