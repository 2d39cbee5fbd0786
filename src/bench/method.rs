//! The original's method for one payload size, defined once for every
//! system measured in-process (ours, the actix echo, the memcpy floor):
//! `warmup` untimed calls, then `iters` calls each timed alone; a non-zero
//! payload pattern stamped per call (so a stale reply is caught); the first
//! reply and every `check_every`-th compared with the request, outside the
//! timed region.

use std::time::Duration;

use super::plan::SizePlan;
use super::stats::SizeStats;
use super::sweep::SweepError;

/// Fill `buf` with the non-zero payload pattern.
pub fn fill_pattern(buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        // Multiplicative hash of the index: varies every byte, never zero.
        *b = ((i as u32).wrapping_mul(0x9E37_79B1) >> 24) as u8 | 1;
    }
}

/// Stamp a per-call number into the first bytes.
pub(crate) fn stamp(buf: &mut [u8], n: u64) {
    let k = buf.len().min(8);
    buf[..k].copy_from_slice(&n.to_le_bytes()[..k]);
}

/// Index of the first differing byte.
pub(crate) fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    if a == b {
        return None;
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// One size being measured.
pub struct SizeRun {
    plan: SizePlan,
    payload: Vec<u8>,
    samples: Vec<Duration>,
    check_every: usize,
    next: usize,
}

impl SizeRun {
    /// `check_every` = 0 checks only the first reply.
    pub fn new(plan: &SizePlan, check_every: usize) -> Self {
        let mut payload = vec![0u8; plan.size];
        fill_pattern(&mut payload);
        SizeRun {
            plan: plan.clone(),
            payload,
            samples: Vec::with_capacity(plan.iters),
            check_every,
            next: 0,
        }
    }

    pub fn size(&self) -> usize {
        self.plan.size
    }

    /// The next call's index, with the payload stamped for it; `None` when done.
    pub fn next_call(&mut self) -> Option<usize> {
        let call = self.next;
        if call >= self.plan.warmup + self.plan.iters {
            return None;
        }
        self.next += 1;
        // Unique across sizes too: a reply left over from another size differs.
        stamp(&mut self.payload, (self.plan.size as u64) << 32 | call as u64);
        Some(call)
    }

    /// The payload of the current call.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Whether `call`'s reply is compared with its request.
    pub fn checks(&self, call: usize) -> bool {
        call == 0 || (self.check_every > 0 && call % self.check_every == 0)
    }

    /// Compare `reply` with the current payload (if `call` is checked).
    ///
    /// # Errors
    /// [`SweepError::Mismatch`] at the first differing byte.
    pub fn check(&self, call: usize, reply: &[u8]) -> Result<(), SweepError> {
        if !self.checks(call) {
            return Ok(());
        }
        match first_difference(reply, &self.payload) {
            None => Ok(()),
            Some(offset) => Err(SweepError::Mismatch {
                size: self.plan.size,
                call,
                offset,
            }),
        }
    }

    /// Record `call`'s time (warm-up calls are not recorded).
    pub fn record(&mut self, call: usize, elapsed: Duration) {
        if call >= self.plan.warmup {
            self.samples.push(elapsed);
        }
    }

    /// The size's statistics.
    ///
    /// # Panics
    /// If no timed call was recorded (plans always have iters >= 1).
    pub fn finish(self) -> SizeStats {
        SizeStats::from_samples(self.plan.size, &self.samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_non_zero_and_varied() {
        let mut b = vec![0u8; 4096];
        fill_pattern(&mut b);
        assert!(b.iter().all(|&x| x != 0));
        let distinct: std::collections::BTreeSet<u8> = b.iter().copied().collect();
        assert!(distinct.len() > 64);
    }

    #[test]
    fn stamp_and_difference() {
        let mut a = vec![1u8; 16];
        stamp(&mut a, 0x0102);
        assert_eq!(&a[..3], &[2, 1, 0]);
        let mut small = vec![9u8; 3];
        stamp(&mut small, u64::MAX);
        assert_eq!(small, vec![255; 3]);
        let b = a.clone();
        assert_eq!(first_difference(&a, &b), None);
        let mut c = b.clone();
        c[10] ^= 1;
        assert_eq!(first_difference(&a, &c), Some(10));
        assert_eq!(first_difference(&a, &b[..4]), Some(4));
    }

    #[test]
    fn warmup_untimed_checks_on_cadence_and_each_call_stamped() {
        let plan = SizePlan {
            size: 64,
            warmup: 2,
            iters: 5,
        };
        let mut r = SizeRun::new(&plan, 3);
        let mut stamps = std::collections::BTreeSet::new();
        let mut calls = Vec::new();
        while let Some(call) = r.next_call() {
            stamps.insert(r.payload()[..8].to_vec());
            let echo = r.payload().to_vec();
            assert!(r.check(call, &echo).is_ok());
            r.record(call, Duration::from_micros(10 + call as u64));
            calls.push((call, r.checks(call)));
        }
        assert_eq!(stamps.len(), 7, "every call carries its own stamp");
        assert_eq!(
            calls,
            vec![
                (0, true),
                (1, false),
                (2, false),
                (3, true),
                (4, false),
                (5, false),
                (6, true)
            ]
        );
        let s = r.finish();
        assert_eq!(s.iters, 5, "warm-up calls are not timed");
        // A stale reply (another call's stamp) is caught.
        let mut r = SizeRun::new(&plan, 1);
        r.next_call();
        let old = r.payload().to_vec();
        let call = r.next_call().unwrap();
        assert!(matches!(
            r.check(call, &old),
            Err(SweepError::Mismatch { offset: 0, .. })
        ));
    }
}
