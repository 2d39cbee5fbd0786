//! Swarm testing: every seed draws its own fault plan (each kind of fault on
//! or off, then its intensity), runs the real nodes through it (phase 1),
//! heals, runs fresh nodes in the same world (phase 2), and checks invariants:
//!
//! - every reply matches its request (every reply is compared);
//! - nothing waits past its bound once the world is quiet;
//! - nothing is written outside a registered region (validation + guard zones);
//! - failures are clear errors, never a stuck or vanished actor;
//! - after healing, rendezvous and the sweep succeed and leave no keys;
//! - a replayed seed gives the same event-log hash.

use std::fmt;
use std::time::{Duration, Instant as WallInstant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{run, small_plan, Action, Outcome, Phase, Preload, Scenario, Who};

/// What one seed's plan contains, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanCounts {
    pub kills: u64,
    pub shutdowns: u64,
    pub partitions: u64,
    pub store_outages: u64,
    pub store_hangs: u64,
    pub stale_preloads: u64,
}

/// Draw phase 1 of `seed`.
pub fn scenario_for_seed(seed: u64) -> (Scenario, PlanCounts) {
    // Its own stream: the network's RNG is seeded separately from the same seed.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5157_4152_4d00_0000);
    let mut sc = Scenario::new(seed);
    let mut pc = PlanCounts::default();
    sc.scope = "swarm".into();
    sc.heal_then_rerun = true;
    sc.call_timeout = Some(Duration::from_secs(5));
    let ms = |rng: &mut ChaCha8Rng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..=hi));
    let coin = |rng: &mut ChaCha8Rng, p: f64| rng.random_bool(p);

    let sizes = [1024usize, 16 * 1024, 256 * 1024];
    let n = rng.random_range(1..=3);
    sc.plan = small_plan(&sizes[..n], rng.random_range(0..=1), rng.random_range(2..=6));
    sc.worker_start = ms(&mut rng, 0, 3000);
    sc.driver_start = ms(&mut rng, 0, 3000);

    let l = &mut sc.link;
    if coin(&mut rng, 0.5) {
        l.jitter = ms(&mut rng, 1, 3);
    }
    if coin(&mut rng, 0.5) {
        l.dup_prob = rng.random_range(0.05..0.5);
        l.dup_delay = ms(&mut rng, 0, 3);
    }
    if coin(&mut rng, 0.5) {
        l.drop_prob = rng.random_range(0.001..0.05);
    }
    if coin(&mut rng, 0.5) {
        l.error_prob = rng.random_range(0.001..0.05);
    }
    if coin(&mut rng, 0.5) {
        l.bad_rkey_prob = rng.random_range(0.001..0.02);
    }
    if coin(&mut rng, 0.5) {
        let at = ms(&mut rng, 0, 5000);
        sc.actions.push((at, Action::Partition(ms(&mut rng, 10, 3000))));
        pc.partitions += 1;
    }
    if coin(&mut rng, 0.5) {
        sc.store_latency = Duration::from_micros(rng.random_range(0..=2000));
    }
    if coin(&mut rng, 1.0 / 3.0) {
        let at = ms(&mut rng, 0, 5000);
        sc.actions.push((at, Action::StoreOutage(ms(&mut rng, 100, 10_000))));
        pc.store_outages += 1;
    }
    if coin(&mut rng, 0.25) {
        let ops = [
            "claim",
            "delete_matching",
            "put_owned",
            "append",
            "fetch",
            "refresh",
            "release",
        ];
        let op = ops[rng.random_range(0..ops.len())];
        sc.store_hang.push((op, rng.random_range(1..=3)));
        pc.store_hangs += 1;
    }
    for (p, action) in [
        (0.2, Action::Kill(Who::Worker)),
        (0.15, Action::Kill(Who::Driver)),
        (0.15, Action::Shutdown(Who::Worker)),
        (0.1, Action::Shutdown(Who::Driver)),
    ] {
        if coin(&mut rng, p) {
            match action {
                Action::Kill(_) => pc.kills += 1,
                _ => pc.shutdowns += 1,
            }
            sc.actions.push((ms(&mut rng, 0, 6000), action));
        }
    }
    if coin(&mut rng, 0.5) {
        sc.preload.push(Preload::StaleEndpoint {
            alias: "bench-worker".into(),
            peer: "bench-driver".into(),
            incarnation: rng.random::<u64>() | 1,
        });
        pc.stale_preloads += 1;
    }
    if coin(&mut rng, 0.5) {
        sc.preload.push(Preload::StaleNotifications {
            alias: "bench-worker".into(),
        });
        pc.stale_preloads += 1;
    }
    if coin(&mut rng, 1.0 / 6.0) {
        sc.preload.push(Preload::StaleLease {
            alias: "bench-worker".into(),
            incarnation: rng.random::<u64>() | 1,
            ttl: ms(&mut rng, 100, 3000),
        });
        pc.stale_preloads += 1;
    }
    sc.actions.sort_by_key(|(t, _)| *t);
    (sc, pc)
}

/// An invariant that did not hold.
#[derive(Debug, Clone)]
pub struct Violation {
    pub seed: u64,
    pub what: String,
    pub log_tail: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} violated an invariant: {}", self.seed, self.what)?;
        writeln!(
            f,
            "replay: slimebench sim --seed {}   (or: just sim SEED={})",
            self.seed, self.seed
        )?;
        writeln!(f, "last events:")?;
        for l in &self.log_tail {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

/// One seed's result.
#[derive(Debug)]
pub struct SeedReport {
    pub seed: u64,
    pub outcome: Outcome,
    pub plan: PlanCounts,
    pub checks: u64,
}

struct Checker<'a> {
    seed: u64,
    o: &'a Outcome,
    checks: u64,
}

impl Checker<'_> {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) -> Result<(), Violation> {
        self.checks += 1;
        if ok {
            Ok(())
        } else {
            Err(Violation {
                seed: self.seed,
                what: what(),
                log_tail: self.o.log_tail.clone(),
            })
        }
    }
}

fn err_text<T>(r: &Result<T, crate::actors::NodeError>) -> Option<String> {
    r.as_ref().err().map(ToString::to_string)
}

/// Run `seed` and check every invariant.
///
/// # Errors
/// The first [`Violation`].
pub fn check_seed(seed: u64) -> Result<SeedReport, Violation> {
    let (sc, plan) = scenario_for_seed(seed);
    let o = run(&sc);
    let mut c = Checker { seed, o: &o, checks: 0 };
    let killed = |who| sc.actions.iter().any(|(_, a)| *a == Action::Kill(who));

    // Every reply matched its request (the sweep compares every reply).
    for (who, e) in [("driver", err_text(&o.driver)), ("worker", err_text(&o.worker))] {
        if let Some(e) = e {
            c.check(!e.contains("reply differs"), || format!("{who}: {e}"))?;
            c.check(!e.contains("exceeded") || !e.contains("steps"), || {
                format!("{who} livelocked: {e}")
            })?;
            c.check(!e.contains("did not finish"), || {
                format!("{who} still waiting at the limit: {e}")
            })?;
        }
    }
    // No actor vanished except one we killed.
    c.check(
        !err_text(&o.driver).is_some_and(|e| e.contains("stopped without answering")) || killed(Who::Driver),
        || "driver actor vanished".into(),
    )?;
    c.check(
        !err_text(&o.worker).is_some_and(|e| e.contains("stopped without answering")) || killed(Who::Worker),
        || "worker actor vanished".into(),
    )?;
    // Nothing waits past its bound once the world is quiet.
    let quiet = sc
        .actions
        .iter()
        .map(|(t, a)| match a {
            Action::Partition(d) | Action::StoreOutage(d) => *t + *d,
            _ => *t,
        })
        .chain([sc.worker_start, sc.driver_start])
        .max()
        .unwrap_or_default();
    let bound = quiet + sc.settle_bound();
    for (who, done, was_killed) in [
        ("driver", o.driver_done, killed(Who::Driver)),
        ("worker", o.worker_done, killed(Who::Worker)),
    ] {
        c.check(was_killed || done.is_some_and(|d| d <= bound), || {
            format!("{who} finished at {done:?}, bound {bound:?}")
        })?;
    }
    // A worker stopped by the harness after the driver's end must not have
    // been serving it still (it should have noticed the driver leave or die).
    if let Ok(w) = &o.worker {
        let scripted = sc.actions.iter().any(|(_, a)| *a == Action::Shutdown(Who::Worker));
        c.check(!matches!(w.end, crate::rpc::ServeEnd::Shutdown) || scripted, || {
            format!("worker still served driver {} after it was gone", w.peer)
        })?;
    }
    // Nothing written outside a registered region.
    c.check(o.guards_intact, || {
        "a guard zone around a registered region was written".into()
    })?;
    c.check(o.faults.bad_rkeys > 0 || o.refused_writes == 0, || {
        format!("{} writes refused without any injected bad rkey", o.refused_writes)
    })?;
    // Never connected to info of an incarnation whose lease was not live.
    c.check(o.unleased_connects == 0, || {
        format!(
            "{} connects used info of an incarnation without a live lease",
            o.unleased_connects
        )
    })?;
    // After healing: rendezvous and sweep succeed, promptly, and leave nothing.
    let p2: &Phase = o.phase2.as_ref().expect("swarm runs heal the world");
    c.check(p2.driver.is_ok(), || {
        format!("after heal, driver: {}", err_text(&p2.driver).unwrap_or_default())
    })?;
    c.check(p2.worker.is_ok(), || {
        format!("after heal, worker: {}", err_text(&p2.worker).unwrap_or_default())
    })?;
    let converge = sc.worker_start.max(sc.driver_start) + Duration::from_secs(10);
    for (who, done) in [("driver", p2.driver_done), ("worker", p2.worker_done)] {
        c.check(done.is_some_and(|d| d.saturating_sub(p2.started) <= converge), || {
            format!(
                "after heal, {who} took until {done:?} (phase began at {:?})",
                p2.started
            )
        })?;
    }
    c.check(p2.leftover_keys.is_empty(), || {
        format!("keys left after the healed run: {:?}", p2.leftover_keys)
    })?;
    let checks = c.checks;
    Ok(SeedReport {
        seed,
        outcome: o,
        plan,
        checks,
    })
}

/// Totals over a swarm.
#[derive(Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    pub violations: Vec<Violation>,
    pub checks: u64,
    pub replays: u64,
    pub faults: slimebench_sim::FaultCounts,
    pub store_down: u64,
    pub store_hung: u64,
    pub plan: PlanCounts,
    pub phase1_ok: u64,
    pub simulated: Duration,
    pub wall: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fc = &self.faults;
        let p = &self.plan;
        write!(
            f,
            "sim: {} seeds, {} failed, {} with phase 1 fully ok | faults injected: delayed={} duplicated={} dropped={} \
             error_completions={} bad_rkeys={} partitioned={} to_dead_peer={} store_unavailable={} store_hung={} \
             kills={} shutdowns={} partitions={} store_outages={} stale_preloads={} | invariant checks={} \
             replays checked={} | simulated {:.0} s, wall {:.1} s",
            self.seeds,
            self.violations.len(),
            self.phase1_ok,
            fc.delayed,
            fc.duplicated,
            fc.dropped,
            fc.error_completions,
            fc.bad_rkeys,
            fc.partitioned,
            fc.to_dead_peer,
            self.store_down,
            self.store_hung,
            p.kills,
            p.shutdowns,
            p.partitions,
            p.store_outages,
            p.stale_preloads,
            self.checks,
            self.replays,
            self.simulated.as_secs_f64(),
            self.wall.as_secs_f64(),
        )
    }
}

/// Run seeds `first..first + count`; every `replay_every`-th seed runs twice
/// and must give the same event-log hash.
pub fn run_swarm(
    first: u64,
    count: u64,
    replay_every: u64,
    mut on_seed: impl FnMut(&Result<SeedReport, Violation>),
) -> Summary {
    let started = WallInstant::now();
    let mut s = Summary::default();
    for seed in first..first.saturating_add(count) {
        s.seeds += 1;
        let r = check_seed(seed).and_then(|rep| {
            if replay_every > 0 && seed % replay_every == 0 {
                let again = run(&scenario_for_seed(seed).0);
                if again.event_hash != rep.outcome.event_hash {
                    return Err(Violation {
                        seed,
                        what: format!(
                            "replay diverged: event-log hash {:#x} then {:#x}",
                            rep.outcome.event_hash, again.event_hash
                        ),
                        log_tail: again.log_tail,
                    });
                }
                s.replays += 1;
                s.checks += 1;
            }
            Ok(rep)
        });
        on_seed(&r);
        match r {
            Ok(rep) => {
                let o = &rep.outcome;
                s.checks += rep.checks;
                let fc = &o.faults;
                s.faults.delayed += fc.delayed;
                s.faults.duplicated += fc.duplicated;
                s.faults.dropped += fc.dropped;
                s.faults.error_completions += fc.error_completions;
                s.faults.bad_rkeys += fc.bad_rkeys;
                s.faults.partitioned += fc.partitioned;
                s.faults.to_dead_peer += fc.to_dead_peer;
                s.store_down += o.store_faults.unavailable;
                s.store_hung += o.store_faults.hung;
                s.plan.kills += rep.plan.kills;
                s.plan.shutdowns += rep.plan.shutdowns;
                s.plan.partitions += rep.plan.partitions;
                s.plan.store_outages += rep.plan.store_outages;
                s.plan.stale_preloads += rep.plan.stale_preloads;
                s.phase1_ok += u64::from(o.driver.is_ok() && o.worker.is_ok());
                s.simulated += o.end;
            }
            Err(v) => s.violations.push(v),
        }
    }
    s.wall = started.elapsed();
    s
}
