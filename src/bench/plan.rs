//! The sweep plan: which payload sizes run, with how many warm-up and timed calls each.
//!
//! The sizes, the warm-up count and the iteration formula are the original SlimeRPC
//! benchmark's, so that our CSVs line up row for row with its published results.

use serde::Serialize;

/// One kibibyte. The original labels it "KB"; see [`human_size`].
pub const KIB: usize = 1024;
/// One mebibyte. The original labels it "MB"; see [`human_size`].
pub const MIB: usize = 1024 * 1024;

/// Every size the original sweeps, ascending; a run takes the prefix up to its size limit.
pub const ALL_SIZES: [usize; 9] = [
    KIB,
    4 * KIB,
    16 * KIB,
    64 * KIB,
    256 * KIB,
    MIB,
    4 * MIB,
    16 * MIB,
    64 * MIB,
];

/// Untimed calls before each size's timed calls, as in the original.
pub const WARMUP: usize = 20;

/// Timed calls for one size: `max(50, min(500, 50_000_000 / size))`, the original's formula.
///
/// It aims at ~50 MB moved per size, bounded so that small sizes do not take forever and
/// large ones still get 50 samples (which makes p99 the maximum at 16 MiB and up).
/// A zero size, which the original never uses, gets the upper bound rather than dividing by zero.
pub fn iters_for(size: usize) -> usize {
    let by_volume = 50_000_000usize.checked_div(size).unwrap_or(usize::MAX);
    by_volume.clamp(50, 500)
}

/// The calls planned for one payload size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SizePlan {
    /// Payload size in bytes (each call sends this many and gets as many back).
    pub size: usize,
    /// Calls made and thrown away before timing starts.
    pub warmup: usize,
    /// Calls timed, one sample each.
    pub iters: usize,
}

impl SizePlan {
    /// Warm-up plus timed calls: what the progress bar counts for this size.
    pub fn calls(&self) -> u64 {
        self.warmup as u64 + self.iters as u64
    }
}

/// The whole sweep, sizes ascending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SweepPlan {
    /// One entry per size, in the order they run.
    pub sizes: Vec<SizePlan>,
}

impl SweepPlan {
    /// The original's sizes up to `max_size_bytes` inclusive.
    ///
    /// `iters_override` replaces the formula for every size (handy for quick runs); `None`
    /// keeps [`iters_for`] so the results compare with the original's.
    pub fn new(max_size_bytes: usize, warmup: usize, iters_override: Option<usize>) -> SweepPlan {
        let sizes = ALL_SIZES
            .iter()
            .copied()
            .filter(|&size| size <= max_size_bytes)
            .map(|size| SizePlan {
                size,
                warmup,
                iters: iters_override.unwrap_or_else(|| iters_for(size)),
            })
            .collect();
        SweepPlan { sizes }
    }

    /// Every call the sweep makes, warm-up included: the progress bar's length.
    pub fn total_calls(&self) -> u64 {
        self.sizes.iter().map(SizePlan::calls).sum()
    }

    /// Splits off the sizes a transport cannot carry (larger than `max_payload` bytes).
    ///
    /// Returns the plan that still fits and the skipped sizes in bytes, so the caller can run
    /// the rest and report the skips instead of failing the whole sweep.
    pub fn split_by_limit(&self, max_payload: usize) -> (SweepPlan, Vec<usize>) {
        let (fit, skipped): (Vec<SizePlan>, Vec<SizePlan>) =
            self.sizes.iter().cloned().partition(|p| p.size <= max_payload);
        let skipped = skipped.into_iter().map(|p| p.size).collect();
        (SweepPlan { sizes: fit }, skipped)
    }
}

/// A size label as the original prints it: "1KB", "256KB", "1MB", "16MB".
///
/// The original says KB/MB but means KiB/MiB; we keep its labels so tables read the same.
/// Sizes that are not a whole number of KiB or MiB are shown in bytes, e.g. "1500B".
pub fn human_size(bytes: usize) -> String {
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{}MB", bytes / MIB)
    } else if bytes >= KIB && bytes % KIB == 0 {
        format!("{}KB", bytes / KIB)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iters_formula_matches_original() {
        assert_eq!(iters_for(KIB), 500);
        assert_eq!(iters_for(64 * KIB), 500); // 50e6 / 65536 = 762 -> capped at 500
        assert_eq!(iters_for(256 * KIB), 190); // 50e6 / 262144 = 190.7 -> 190
        assert_eq!(iters_for(MIB), 50); // 47 -> floored at 50
        assert_eq!(iters_for(16 * MIB), 50);
        assert_eq!(iters_for(100_000), 500);
        assert_eq!(iters_for(200_000), 250);
        assert_eq!(iters_for(0), 500);
    }

    #[test]
    fn new_takes_sizes_up_to_limit() {
        let plan = SweepPlan::new(16 * MIB, WARMUP, None);
        let sizes: Vec<usize> = plan.sizes.iter().map(|p| p.size).collect();
        assert_eq!(sizes, ALL_SIZES[..8].to_vec());
        assert!(plan.sizes.iter().all(|p| p.warmup == WARMUP));
        assert_eq!(plan.sizes[4].iters, 190);

        let all = SweepPlan::new(usize::MAX, WARMUP, None);
        assert_eq!(all.sizes.len(), 9);
        // A limit between sizes keeps only those below it.
        assert_eq!(SweepPlan::new(100 * KIB, 0, None).sizes.len(), 4);
        assert!(SweepPlan::new(KIB - 1, 0, None).sizes.is_empty());
    }

    #[test]
    fn override_and_total_calls() {
        let plan = SweepPlan::new(4 * KIB, 3, Some(7));
        assert_eq!(plan.sizes.len(), 2);
        assert!(plan.sizes.iter().all(|p| p.iters == 7));
        assert_eq!(plan.total_calls(), 20);

        let plan = SweepPlan::new(16 * MIB, WARMUP, None);
        // 4 sizes at 500, 256K at 190, three at 50, plus 20 warm-up each.
        assert_eq!(plan.total_calls(), (4 * 500 + 190 + 3 * 50 + 8 * 20) as u64);
    }

    #[test]
    fn split_by_limit_keeps_fitting_sizes() {
        let plan = SweepPlan::new(64 * MIB, WARMUP, None);
        let (fit, skipped) = plan.split_by_limit(4 * MIB);
        assert_eq!(fit.sizes.len(), 7);
        assert_eq!(fit.sizes.last().map(|p| p.size), Some(4 * MIB));
        assert_eq!(skipped, vec![16 * MIB, 64 * MIB]);

        let (fit, skipped) = plan.split_by_limit(usize::MAX);
        assert_eq!(fit, plan);
        assert!(skipped.is_empty());
    }

    #[test]
    fn human_size_labels() {
        assert_eq!(human_size(KIB), "1KB");
        assert_eq!(human_size(256 * KIB), "256KB");
        assert_eq!(human_size(MIB), "1MB");
        assert_eq!(human_size(16 * MIB), "16MB");
        assert_eq!(human_size(2048), "2KB");
        assert_eq!(human_size(1500), "1500B");
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(MIB + KIB), "1025KB");
    }
}
