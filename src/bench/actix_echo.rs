//! The actix in-process baseline run with the sweep's method: per size,
//! warm-up calls, then timed calls each timed alone; the first reply of each
//! size and every `check_every`-th compared with the request.
//!
//! Each call clones the caller's payload into the message (the one copy any
//! actor call with owned bytes makes) and gets it back by move.

use actix::{Actor, Arbiter};
use tokio::time::Instant;

use super::method::SizeRun;
use super::plan::SweepPlan;
use super::progress::Progress;
use super::stats::SizeStats;
use super::sweep::SweepError;
use crate::actors::echo::{Echo, EchoActor};

/// Run `plan` against an echo actor on its own thread.
///
/// # Errors
/// [`SweepError::Mismatch`] on a wrong reply; [`SweepError::Call`] when the actor is gone.
pub fn run_actix_echo(plan: &SweepPlan, progress: &Progress, check_every: usize) -> Result<Vec<SizeStats>, SweepError> {
    let plan = plan.clone();
    let progress = progress.clone();
    actix::System::new().block_on(async move {
        let thread = Arbiter::new();
        let addr = EchoActor::start_in_arbiter(&thread.handle(), |_| EchoActor);
        let mut out = Vec::with_capacity(plan.sizes.len());
        for sp in &plan.sizes {
            progress.set_stage("actix", sp.size);
            let mut run = SizeRun::new(sp, check_every);
            while let Some(call) = run.next_call() {
                let t0 = Instant::now();
                let reply = addr
                    .send(Echo(run.payload().to_vec()))
                    .await
                    .map_err(|e| SweepError::Call {
                        size: sp.size,
                        call,
                        source: crate::rpc::RpcError::PeerGone(format!("echo actor: {e}")),
                    })?;
                let elapsed = t0.elapsed();
                run.check(call, &reply)?;
                run.record(call, elapsed);
                progress.inc(1);
            }
            out.push(run.finish());
        }
        thread.stop();
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::SizePlan;

    #[test]
    fn echoes_every_size_and_reports_each() {
        let plan = SweepPlan {
            sizes: [1024, 65536]
                .iter()
                .map(|&size| SizePlan {
                    size,
                    warmup: 1,
                    iters: 4,
                })
                .collect(),
        };
        let stats = run_actix_echo(&plan, &Progress::hidden(), 1).unwrap();
        assert_eq!(
            stats.iter().map(|s| (s.size, s.iters)).collect::<Vec<_>>(),
            vec![(1024, 4), (65536, 4)]
        );
        assert!(stats.iter().all(|s| s.p50_us > 0.0 && s.p50_us <= s.max_us));
    }
}
