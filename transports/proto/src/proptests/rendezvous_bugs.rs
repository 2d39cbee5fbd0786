//! Minimal reproductions of what the rendezvous property found, as fixed
//! scenarios for the same harness. Each is `#[ignore]`d with a one-line
//! reason until the machine is fixed; run them with
//! `cargo test -p slimebench-proto --lib proptests::rendezvous_bugs -- --ignored`
//! (a failure prints the harness trace).
//!
//! The main property keeps these fault classes out through
//! [`Knobs`]; once a bug is fixed, turn its knob on there.

use std::time::Duration;

use super::rendezvous_pair::{Action, Fate, Inc, Inject, Knobs, Scenario, Sender, World};
use crate::keys::Keys;
use crate::rendezvous::{Rendezvous, Role, Timing};
use crate::store::StoreModel;

const D: usize = 0;
const W: usize = 1;

fn step(side: usize) -> Action {
    Action::Step {
        side,
        fate: Fate::Answer,
    }
}

fn stale(kind: u8, from: Sender) -> Inject {
    Inject::Stale {
        kind,
        from,
        from_inc: Inc::Previous,
        to_inc: Inc::Current,
    }
}

/// The whole property (faults, heal, converge, close) for one fixed scenario.
fn replay(actions: Vec<Action>, knobs: Knobs) {
    let s = Scenario {
        start_ms: [0, 0],
        actions,
    };
    if let Err(e) = super::rendezvous_pair::run(&s, knobs) {
        panic!("{e}");
    }
}

/// A `connect_peer` left in the worker's stream by an agent that is gone (here
/// `intruder`; in practice e.g. a driver of an earlier run under another
/// alias) engages the worker first. The live driver's request then arrives
/// while the worker is engaged and is dropped ("connect_peer from driver while
/// engaged with intruder"), not kept. The worker finds the intruder's lease
/// gone and goes back to listening; the driver announces only once, so it
/// waits (fetch retries, then await_ready) until its deadline.
#[test]
fn request_from_another_alias_while_engaged_is_lost() {
    let actions = vec![
        Action::Tick {
            side: W,
            fate: Fate::Answer,
        }, // worker claims, cleans, listens
        Action::Inject {
            side: W,
            what: stale(0, Sender::Intruder),
        }, // stale connect_peer from a dead agent: engaged
        step(D), // driver announces
        Action::Read { side: W },
        Action::Deliver {
            side: W,
            pick: 0,
            dup: false,
        }, // the live request, while engaged: dropped
    ];
    replay(
        actions,
        Knobs {
            stale_requests: true,
            ..Knobs::default()
        },
    );
}

/// The worker has the live driver's request (it arrived before the worker
/// finished cleaning, so it is kept as the pending request), then a
/// `connect_peer` of a dead incarnation of the same driver arrives (reordered
/// delivery, or a zombie process whose announce executed late) and replaces
/// it. The worker engages the dead incarnation, sees the live lease differs,
/// goes back to listening, and the driver waits until its deadline.
#[test]
fn stale_request_after_the_live_one_strands_the_initiator() {
    let actions = vec![
        step(D), // driver announces
        Action::Read { side: W },
        Action::Deliver {
            side: W,
            pick: 0,
            dup: false,
        }, // live request, kept as pending
        Action::Inject {
            side: W,
            what: stale(0, Sender::Peer),
        }, // request of a dead driver incarnation replaces it
    ];
    replay(
        actions,
        Knobs {
            stale_requests: true,
            ..Knobs::default()
        },
    );
}

/// The driver announces, crashes, and its next incarnation announces once the
/// old lease expired. The worker gets the two requests out of order (live
/// first, as with a zombie's late append): it engages the live driver, connects
/// and signals qp_ready; then the dead incarnation's request makes it
/// re-engage that one (not ready yet, so a "newer" request wins), find the
/// lease differs, and go back to listening. The driver, which got the
/// qp_ready, is ready with a worker that is not: both stay that way, the
/// driver's peer checks see a live worker lease.
#[test]
fn reordered_requests_leave_the_initiator_ready_alone() {
    let actions = vec![
        step(D),
        Action::Restart { side: D },
        Action::Advance { ms: 5001 },
        step(D), // the new driver incarnation announces
        Action::Read { side: W },
        Action::Deliver {
            side: W,
            pick: 1,
            dup: false,
        }, // the live request first; the dead one follows at heal
    ];
    replay(
        actions,
        Knobs {
            reorder_within_a_log: true,
            ..Knobs::default()
        },
    );
}

/// The worker, engaged with a driver, loses its lease (no refresh for a lease
/// period) and re-claims; the claim takes effect in the store but its reply
/// times out. Before the retry, a `connect_peer` from a new incarnation of the
/// driver arrives and `engage` jumps straight to publish, skipping the claim:
/// the publish succeeds (the store does hold the lease), and from then on the
/// machine runs with `claimed == false`: no heartbeat (the lease expires in
/// the store while the worker believes it is fine), no lease-lost check, and in
/// await_ready a peer-check timer that `poll_timeout` reports but
/// `poll_command` never issues, so a caller sleeping until `poll_timeout` spins.
#[test]
fn engage_while_reclaiming_runs_without_a_lease() {
    let actions = vec![
        step(D),                     // driver announces
        Action::Restart { side: D }, // and crashes; the next incarnation starts at 5.001 s
        Action::Tick {
            side: W,
            fate: Fate::Answer,
        }, // worker claims, cleans, listens
        Action::Read { side: W },
        Action::Advance { ms: 2500 },
        Action::Deliver {
            side: W,
            pick: 0,
            dup: false,
        }, // the dead driver's request: engaged (publish due)
        Action::Advance { ms: 2501 }, // no refresh for a lease period
        Action::Tick {
            side: W,
            fate: Fate::TimeoutAfterApply,
        }, // lease lost: re-claim, applied, reply times out
        step(D),                      // the new driver incarnation announces
    ];
    replay(
        actions,
        Knobs {
            publish_while_reclaiming: true,
            ..Knobs::default()
        },
    );
}

/// Found by the property (seed 12): no reordering, no forged input. The
/// worker has connected and sent qp_ready to driver incarnation 0x11000.
/// During a store outage the driver's lease lapses; a worker fetch executed in
/// that window sees the lease absent (its reply arrives a little later), so the
/// worker concludes the requester is gone and goes back to listening, telling
/// nobody. The driver re-claims with the same incarnation, re-publishes,
/// reconnects, and the worker's *old* qp_ready (same incarnations, still in its
/// stream) makes it ready. The driver stays ready with a worker that is
/// listening: its peer checks only look at the worker's lease, which is live.
#[test]
fn lease_lapse_leaves_the_initiator_ready_alone() {
    use Action::*;
    let answer = Fate::Answer;
    let actions = vec![
        Tick { side: D, fate: answer },
        Read { side: W },
        Advance { ms: 1093 },
        Deliver {
            side: W,
            pick: 0,
            dup: false,
        },
        Step { side: W, fate: answer },
        Connected { side: W, ok: true },
        Step {
            side: D,
            fate: Fate::Mismatch(0),
        },
        Tick { side: W, fate: answer },
        Advance { ms: 42 },
        Step { side: D, fate: answer },
        StoreDown { ms: 960 },
        Advance { ms: 437 },
        Advance { ms: 39 },
        Held {
            side: D,
            pick: 0,
            deliver: false,
        },
        Step { side: D, fate: answer },
        Advance { ms: 39 },
        Step { side: D, fate: answer },
        Advance { ms: 166 },
        Advance { ms: 245 },
        Advance { ms: 33 },
        Step { side: W, fate: answer },
        Tick {
            side: W,
            fate: Fate::TimeoutAfterApply,
        },
        Advance { ms: 2880 },
        Tick { side: W, fate: answer },
        Advance { ms: 26 },
        Tick {
            side: W,
            fate: Fate::LoseReply,
        }, // worker fetch runs while the driver's lease has lapsed: "absent"
        Step { side: D, fate: answer }, // driver: not owner, re-claims, republishes, reconnects
        Read { side: W },
        Deliver {
            side: W,
            pick: 0,
            dup: false,
        },
    ];
    replay(
        actions,
        Knobs {
            split_after_lease_lapse: true,
            ..Knobs::default()
        },
    );
}

/// The worker's genuine `qp_ready` reaches the driver early and is kept; then
/// a `qp_ready` to the driver's live incarnation from a dead worker
/// incarnation arrives (reordered or delayed delivery) and overwrites the
/// single kept slot. The worker is already ready and never re-sends its
/// `qp_ready` (a re-sent one from the driver is not answered), so the driver
/// re-signals every `ready_refresh` until its deadline.
#[test]
fn stale_qp_ready_replaces_the_kept_one() {
    let actions = vec![
        step(D),
        Action::Read { side: W },
        Action::Deliver {
            side: W,
            pick: 0,
            dup: false,
        },
        step(W), // worker engages, publishes, fetches: Connect
        Action::Connected { side: W, ok: true },
        step(W), // worker sends qp_ready
        Action::Read { side: D },
        Action::Deliver {
            side: D,
            pick: 0,
            dup: false,
        }, // kept: the driver is still fetching
        Action::Inject {
            side: D,
            what: stale(1, Sender::Peer),
        }, // qp_ready from a dead worker incarnation replaces it
    ];
    replay(
        actions,
        Knobs {
            stale_qp_ready: true,
            ..Knobs::default()
        },
    );
}

/// The worker engages a driver, publishes `exchange:worker:driver`, and the
/// driver dies (its lease expires). The worker goes back to listening, which
/// forgets the target; its close then releases only the mailbox, stream and
/// inbox keys: `exchange:worker:driver` stays in the store with no TTL until
/// the worker's next start cleans it.
#[test]
fn close_forgets_the_exchange_key_of_an_abandoned_requester() {
    let mut w = World::new([0, 0], Knobs::default());
    for a in [
        step(D),
        Action::Read { side: W },
        Action::Deliver {
            side: W,
            pick: 0,
            dup: false,
        },
        step(W),
        Action::Connected { side: W, ok: true },
        step(W), // worker awaits the driver's qp_ready; the driver hangs from here on
    ] {
        w.apply(&a);
    }
    // The driver's lease lapses: the worker keeps retrying (a lapse can be
    // recovered from) until its rendezvous deadline, then listens again.
    for _ in 0..70 {
        w.apply(&Action::Advance { ms: 500 });
        w.apply(&Action::Tick {
            side: W,
            fate: Fate::Answer,
        });
    }
    w.result().unwrap();
    assert_eq!(w.phase(W), "listen", "gave up on the silent driver: back to listening");
    w.close_one(W);
    w.result().unwrap();
    assert_eq!(w.keys("exchange:worker:*"), Vec::<String>::new());
}

/// `poll_timeout` is documented as "the earliest time at which
/// `handle_timeout` has work", but while a command is in flight it also
/// reports a due heartbeat (or peer check), which only `poll_command` can
/// issue and only after that command ends. A caller that keeps a command in
/// flight and sleeps until `poll_timeout` spins until the reply or the op
/// deadline (up to `op_timeout`). The control loop in `src/control/agent.rs`
/// awaits every command before sleeping, so it is not affected today.
#[test]
fn poll_timeout_reports_work_blocked_by_a_command_in_flight() {
    let t = Timing::default();
    let mut store = StoreModel::new();
    let keys = Keys::new("t").unwrap();
    let local = super::rendezvous_pair::local(D, 0x11);
    let mut m = Rendezvous::new(keys, local, Role::Initiator { peer: "worker".into() }, t.clone());
    let mut now = Duration::ZERO;
    m.start(now);
    // Claim, clean, publish, announce, fetch (no worker yet): all answered.
    for _ in 0..5 {
        let c = m.poll_command(now).expect("phase command");
        let r = store.apply(now, &c.op);
        m.handle_reply(now, c.token, Ok(r));
    }
    // The next fetch is taken and its reply never comes.
    now = t.retry_initial;
    let lost = m.poll_command(now).expect("retry fetch");
    // The heartbeat falls due while the fetch is in flight.
    now = t.heartbeat;
    assert!(now < t.retry_initial + t.op_timeout, "fetch still in flight");
    m.handle_timeout(now);
    assert_eq!(m.poll_command(now), None, "one command in flight at a time");
    let next = m.poll_timeout().expect("timers armed");
    assert!(
        next > now,
        "poll_timeout {next:?} <= now {now:?}: nothing to do until #{} ends at {:?}",
        lost.token,
        t.retry_initial + t.op_timeout
    );
}
