//! The memcpy floor: per "call", the two copies a shared-memory round trip
//! cannot avoid (request into the peer's slot, reply back into ours), between
//! page-aligned buffers of one process, timed with the sweep's method. What
//! any transport on one host can at best approach.

use tokio::time::Instant;

use slimebench_proto::AlignedBuf;

use super::method::SizeRun;
use super::plan::SweepPlan;
use super::progress::Progress;
use super::stats::SizeStats;
use super::sweep::SweepError;

/// Run `plan`: each call copies `size` bytes A→B then B→C.
///
/// # Errors
/// [`SweepError::Mismatch`] if a copy is wrong (it cannot be, short of broken memory).
pub fn run_memcpy_floor(plan: &SweepPlan, progress: &Progress) -> Result<Vec<SizeStats>, SweepError> {
    let mut out = Vec::with_capacity(plan.sizes.len());
    for sp in &plan.sizes {
        progress.set_stage("memcpy", sp.size);
        let alloc = || AlignedBuf::new(sp.size.max(1)).expect("allocate floor buffers");
        let (mut b, mut c) = (alloc(), alloc());
        // Only the first copy is checked: memcpy does not need the sweep's cadence.
        let mut run = SizeRun::new(sp, 0);
        while let Some(call) = run.next_call() {
            let a = run.payload();
            let t0 = Instant::now();
            b[..sp.size].copy_from_slice(a);
            c[..sp.size].copy_from_slice(std::hint::black_box(&b[..sp.size]));
            let elapsed = t0.elapsed();
            run.check(call, &c[..sp.size])?;
            run.record(call, elapsed);
            progress.inc(1);
        }
        out.push(run.finish());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::SizePlan;

    #[test]
    fn copies_each_size() {
        let plan = SweepPlan {
            sizes: [1024, 1 << 20]
                .iter()
                .map(|&size| SizePlan {
                    size,
                    warmup: 1,
                    iters: 3,
                })
                .collect(),
        };
        let s = run_memcpy_floor(&plan, &Progress::hidden()).unwrap();
        assert_eq!(
            s.iter().map(|x| (x.size, x.iters)).collect::<Vec<_>>(),
            vec![(1024, 3), (1 << 20, 3)]
        );
    }
}
