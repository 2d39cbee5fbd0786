//! `slimebench sim`: the deterministic simulator from the command line.

use crate::actors::NodeError;
use crate::app::AppError;

/// What `slimebench sim` does.
#[derive(Clone, Debug)]
pub enum SimCommand {
    /// Replay one seed (twice, comparing event-log hashes) and describe it;
    /// with `log`, also its drawn plan and its event log (last 4096 lines).
    Seed { seed: u64, log: bool },
    /// Seeds `first..first + count`, replaying every `replay_every`-th.
    Swarm { first: u64, count: u64, replay_every: u64 },
}

/// Run the deterministic simulator. Returns the report to print.
///
/// # Errors
/// [`AppError::SimViolations`] (the report names the seeds) or
/// [`AppError::SimReplayDiverged`].
pub fn sim(cmd: &SimCommand) -> Result<String, AppError> {
    use crate::sim::swarm::{check_seed, run_swarm};
    match *cmd {
        SimCommand::Seed { seed, log } => {
            let mut extra = String::new();
            if log {
                let (mut sc, plan) = crate::sim::swarm::scenario_for_seed(seed);
                sc.log_lines = 4096;
                extra = format!(
                    "\nplan: {plan:?}\nworker start {:?}, driver start {:?}\nactions: {:?}\npreload: {:?}\n\
                     store hangs: {:?}, store latency {:?}\nlink: {:?}\nevent log:\n{}",
                    sc.worker_start,
                    sc.driver_start,
                    sc.actions,
                    sc.preload,
                    sc.store_hang,
                    sc.store_latency,
                    sc.link,
                    crate::sim::run(&sc).log_tail.join("\n")
                );
            }
            let rep = check_seed(seed).map_err(|v| AppError::SimViolations {
                failing_seeds: vec![seed],
                report: format!("{v}{extra}"),
            })?;
            let again = crate::sim::run(&crate::sim::swarm::scenario_for_seed(seed).0);
            let o = &rep.outcome;
            if again.event_hash != o.event_hash {
                return Err(AppError::SimReplayDiverged {
                    seed,
                    first: o.event_hash,
                    second: again.event_hash,
                });
            }
            let p2 = o.phase2.as_ref();
            Ok(format!(
                "seed {seed}: ok, {} invariant checks, replayed with the same event-log hash {:#x} ({} events)\n\
                 phase 1 (faults): driver {} | worker {}\n\
                 phase 2 (healed): driver {} | worker {}\n\
                 faults: {:?}, store {:?}, plan {:?}\n\
                 simulated {:.1} s",
                rep.checks + 1,
                o.event_hash,
                o.events,
                describe(&o.driver),
                describe(&o.worker),
                p2.map_or("-".into(), |p| describe(&p.driver)),
                p2.map_or("-".into(), |p| describe(&p.worker)),
                o.faults,
                o.store_faults,
                rep.plan,
                o.end.as_secs_f64(),
            ) + &extra)
        }
        SimCommand::Swarm {
            first,
            count,
            replay_every,
        } => {
            let summary = run_swarm(first, count, replay_every, |r| {
                if let Err(v) = r {
                    eprintln!("{v}");
                }
            });
            if summary.violations.is_empty() {
                Ok(summary.to_string())
            } else {
                let failing_seeds: Vec<u64> = summary.violations.iter().map(|v| v.seed).collect();
                let seeds: Vec<String> = failing_seeds.iter().map(u64::to_string).collect();
                Err(AppError::SimViolations {
                    report: format!(
                        "{summary}\nfailing seeds: {} (replay one: slimebench sim --seed N)",
                        seeds.join(", ")
                    ),
                    failing_seeds,
                })
            }
        }
    }
}

fn describe<T: std::fmt::Debug>(r: &Result<T, NodeError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("error: {e}"),
    }
}
