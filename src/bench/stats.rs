//! Per-size latency statistics, computed exactly as the original benchmark does.
//!
//! avg, p50, p99 and bandwidth follow the original's arithmetic to the index, so our numbers
//! compare with its published CSVs; p99.9 comes from an HDR histogram, and min/max are exact.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant figures kept by the histogram: 0.1% resolution is plenty for p99.9.
const HIST_SIGFIG: u8 = 3;

/// The statistics of one payload size's timed calls. All latencies are in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizeStats {
    /// Payload size in bytes.
    pub size: usize,
    /// Number of timed calls (samples).
    pub iters: usize,
    /// Mean round-trip latency.
    pub avg_us: f64,
    /// `sorted[n / 2]`, the original's median.
    pub p50_us: f64,
    /// `sorted[n * 99 / 100]`, the original's p99 (the maximum when n <= 100).
    pub p99_us: f64,
    /// p99.9 from the histogram (3 significant figures), capped at the exact maximum.
    pub p999_us: f64,
    /// Fastest call, exact.
    pub min_us: f64,
    /// Slowest call, exact.
    pub max_us: f64,
    /// `2 * size / avg` in decimal GB/s: the payload goes out and comes back.
    pub bw_gbps: f64,
}

/// Round-trip bandwidth in decimal GB/s for `size` bytes each way at `avg_us` per call.
///
/// Returns 0.0 when `avg_us` is not positive: a zero mean only happens with a broken clock,
/// and an infinite bandwidth would not survive JSON (serde_json writes it as `null`).
pub fn bw_gbps(size: usize, avg_us: f64) -> f64 {
    if avg_us > 0.0 {
        2.0 * size as f64 / (avg_us * 1e3)
    } else {
        0.0
    }
}

fn ns_to_us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// Nanoseconds as u64; a call longer than 584 years saturates, which is fine.
fn as_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl SizeStats {
    /// Statistics of one size's timed samples, the original's way.
    ///
    /// # Panics
    ///
    /// If `samples` is empty: a plan always has at least one timed call, so an empty slice is a
    /// bug in the caller. Use [`SizeStats::try_from_samples`] to get `None` instead.
    pub fn from_samples(size: usize, samples: &[Duration]) -> SizeStats {
        assert!(
            !samples.is_empty(),
            "SizeStats::from_samples needs at least one sample (size {size})"
        );
        let n = samples.len();
        let mut sorted_ns: Vec<u64> = samples.iter().copied().map(as_ns).collect();
        // The mean is taken before sorting, in u128, so that 500 samples of seconds cannot overflow.
        let sum_ns: u128 = sorted_ns.iter().map(|&ns| u128::from(ns)).sum();
        let avg_us = sum_ns as f64 / n as f64 / 1e3;
        sorted_ns.sort_unstable();

        let p50_ns = sorted_ns[n / 2];
        // The original's int(n * 0.99) in integer math, so no float rounding can move the index
        // (0.99 has no exact binary form). The clamp is belt and braces: n * 99 / 100 < n.
        let p99_ns = sorted_ns[(n * 99 / 100).min(n - 1)];
        let min_ns = sorted_ns[0];
        let max_ns = sorted_ns[n - 1];

        let p999_ns = hist_p999_ns(&sorted_ns)
            // If the histogram cannot take a value, the exact order statistic is just as good.
            .unwrap_or_else(|| sorted_ns[(n * 999 / 1000).min(n - 1)])
            // The histogram reports its bucket's upper edge, which can sit just above the exact max.
            .min(max_ns);

        SizeStats {
            size,
            iters: n,
            avg_us,
            p50_us: ns_to_us(p50_ns),
            p99_us: ns_to_us(p99_ns),
            p999_us: ns_to_us(p999_ns),
            min_us: ns_to_us(min_ns),
            max_us: ns_to_us(max_ns),
            bw_gbps: bw_gbps(size, avg_us),
        }
    }

    /// Like [`SizeStats::from_samples`], but `None` for no samples instead of a panic.
    pub fn try_from_samples(size: usize, samples: &[Duration]) -> Option<SizeStats> {
        (!samples.is_empty()).then(|| SizeStats::from_samples(size, samples))
    }
}

/// p99.9 in nanoseconds from an auto-resizing histogram, or `None` if it could not be built.
fn hist_p999_ns(samples_ns: &[u64]) -> Option<u64> {
    // `new` auto-resizes, so no upper bound has to be guessed for slow calls.
    let mut hist = Histogram::<u64>::new(HIST_SIGFIG).ok()?;
    for &ns in samples_ns {
        hist.record(ns).ok()?;
    }
    Some(hist.value_at_quantile(0.999))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: u64) -> Duration {
        Duration::from_micros(v)
    }

    #[test]
    fn n50_p99_is_max() {
        // 1..=50 µs, shuffled deterministically so sorting matters.
        let samples: Vec<Duration> = (0..50u64).map(|i| us((i * 37) % 50 + 1)).collect();
        let s = SizeStats::from_samples(1024, &samples);
        assert_eq!(s.iters, 50);
        assert_eq!(s.avg_us, 25.5);
        assert_eq!(s.p50_us, 26.0); // sorted[25]
        assert_eq!(s.p99_us, 50.0); // sorted[49], the maximum
        assert_eq!(s.max_us, 50.0);
        assert_eq!(s.min_us, 1.0);
        assert!(s.p999_us <= s.max_us && s.p999_us >= s.p99_us);
    }

    #[test]
    fn n500_p99_is_sorted_495() {
        // Values 1000..1500 ns in reverse order.
        let samples: Vec<Duration> = (0..500u64).rev().map(|i| Duration::from_nanos(1000 + i)).collect();
        let s = SizeStats::from_samples(4096, &samples);
        assert_eq!(s.iters, 500);
        assert_eq!(s.p50_us, 1.25); // sorted[250] = 1250 ns
        assert_eq!(s.p99_us, 1.495); // sorted[495] = 1495 ns
        assert_eq!(s.min_us, 1.0);
        assert_eq!(s.max_us, 1.499);
        assert!((s.avg_us - 1.2495).abs() < 1e-12);
        // Histogram p99.9 at 3 significant figures lies within 0.1% of sorted[499].
        assert!(s.p999_us <= s.max_us);
        assert!(s.p999_us >= 1.495);
    }

    #[test]
    fn n1_all_equal() {
        let s = SizeStats::from_samples(1, &[Duration::from_nanos(12_345)]);
        assert_eq!(s.iters, 1);
        for v in [s.avg_us, s.p50_us, s.p99_us, s.p999_us, s.min_us, s.max_us] {
            assert_eq!(v, 12.345);
        }
    }

    #[test]
    fn sub_microsecond_precision_is_kept() {
        let s = SizeStats::from_samples(1, &[Duration::from_nanos(1), Duration::from_nanos(2)]);
        assert_eq!(s.avg_us, 0.0015);
        assert_eq!(s.min_us, 0.001);
        assert_eq!(s.p50_us, 0.002);
    }

    #[test]
    fn bandwidth_formula() {
        let s = SizeStats::from_samples(1_000_000, &[us(1000), us(1000)]);
        assert_eq!(s.avg_us, 1000.0);
        assert_eq!(s.bw_gbps, 2.0);
        // The published row for 1KB: our formula reproduces the original's bandwidth column.
        assert!((bw_gbps(1024, 52.21534846350551) - 0.0392221839030988).abs() < 1e-15);
        assert_eq!(bw_gbps(1024, 0.0), 0.0);
    }

    #[test]
    fn empty_samples() {
        assert!(SizeStats::try_from_samples(1, &[]).is_none());
        let r = std::panic::catch_unwind(|| SizeStats::from_samples(1, &[]));
        assert!(r.is_err());
    }

    #[test]
    fn serde_round_trip() {
        let s = SizeStats::from_samples(64, &[us(3), us(5), us(4)]);
        let json = serde_json::to_string(&s).expect("serialize");
        let back: SizeStats = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, s);
    }
}
