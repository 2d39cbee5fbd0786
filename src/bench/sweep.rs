//! The echo sweep over a mailbox RPC client, with the original's method:
//! per size, warm-up calls, then timed calls each timed alone.
//!
//! Payloads are a non-zero pattern whose first 8 bytes carry the call's
//! sequence number, and replies are compared with the payload on the first
//! call of each size and every `check_every`-th call after it (outside the
//! timed region), so a reply from the wrong slot, offset or call is caught.
//!
//! By default the payload is written in place into the registered send slot
//! (the pattern once per slot and size, the sequence number per call), as an
//! RDMA application would. With `copy_in` every call copies the whole payload
//! from a separate buffer, like the original's Python client; that copy is
//! inside the timed region.

use std::time::Duration;

// tokio's clock: the wall clock normally, simulated time under the simulator.
use tokio::time::Instant;

use slimebench_proto::header::METHOD_ECHO;
use slimebench_proto::Transport;

use super::plan::SweepPlan;
use super::progress::Progress;
use super::stats::SizeStats;
use crate::rpc::{RpcClient, RpcError};

/// A sweep that could not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SweepError {
    /// A call failed; `call` counts from 0 within the size, warm-up included.
    #[error("echo of {size} bytes failed at call {call}: {source}")]
    Call {
        size: usize,
        call: usize,
        #[source]
        source: RpcError,
    },
    /// The reply differs from the request: a protocol or memory bug.
    #[error("echo of {size} bytes at call {call}: reply differs from the request at byte {offset}")]
    Mismatch { size: usize, call: usize, offset: usize },
}

impl SweepError {
    /// The RPC error behind a failed call.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            SweepError::Call { source, .. } => Some(source),
            SweepError::Mismatch { .. } => None,
        }
    }
}

/// Fill `buf` with the non-zero payload pattern.
pub fn fill_pattern(buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        // Multiplicative hash of the index: varies every byte, never zero.
        *b = ((i as u32).wrapping_mul(0x9E37_79B1) >> 24) as u8 | 1;
    }
}

/// Stamp the call sequence number into the first bytes.
pub(crate) fn stamp(buf: &mut [u8], seq: u64) {
    let n = buf.len().min(8);
    buf[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
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

/// How the sweep calls.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SweepOptions {
    /// Compare every n-th reply with its request (0 = only the first of each size).
    pub check_every: usize,
    /// Copy the payload into the send slot on every call (the original's way).
    pub copy_in: bool,
}

/// Run `plan` over `client`.
///
/// # Errors
/// [`SweepError`] on the first failed or wrong call.
pub async fn run_sweep<T: Transport>(
    client: &mut RpcClient<T>,
    plan: &SweepPlan,
    progress: &Progress,
    opts: SweepOptions,
) -> Result<Vec<SizeStats>, SweepError> {
    let mut out = Vec::with_capacity(plan.sizes.len());
    let mut seq = 0u64;
    // Which size's pattern each send slot holds (in-place mode).
    let mut slot_holds = vec![0usize; client.geometry().slot_count as usize];
    for sp in &plan.sizes {
        progress.set_stage("slime", sp.size);
        let mut payload = vec![0u8; sp.size];
        fill_pattern(&mut payload);
        let mut samples = Vec::with_capacity(sp.iters);
        for call in 0..sp.warmup + sp.iters {
            seq += 1;
            stamp(&mut payload, seq);
            let check = call == 0 || (opts.check_every > 0 && call % opts.check_every == 0);
            let t0 = Instant::now();
            let reply = if opts.copy_in {
                client.call(METHOD_ECHO, &payload).await
            } else {
                let pattern = &payload;
                let holds = &mut slot_holds;
                client
                    .call_with(METHOD_ECHO, sp.size, |id, area| {
                        let slot = id.slot as usize;
                        if holds[slot] != sp.size {
                            area.copy_from_slice(pattern);
                            holds[slot] = sp.size;
                        } else {
                            let n = area.len().min(8);
                            area[..n].copy_from_slice(&pattern[..n]);
                        }
                    })
                    .await
            }
            .map_err(|source| SweepError::Call {
                size: sp.size,
                call,
                source,
            })?;
            let elapsed: Duration = t0.elapsed();
            if check {
                if let Some(offset) = first_difference(reply.payload(), &payload) {
                    return Err(SweepError::Mismatch {
                        size: sp.size,
                        call,
                        offset,
                    });
                }
            }
            drop(reply);
            if call >= sp.warmup {
                samples.push(elapsed);
            }
            progress.inc(1);
        }
        out.push(SizeStats::from_samples(sp.size, &samples));
    }
    Ok(out)
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
}
