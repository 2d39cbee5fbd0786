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

use super::method::SizeRun;
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
    // Which size's pattern each send slot holds (in-place mode).
    let mut slot_holds = vec![0usize; client.geometry().slot_count as usize];
    for sp in &plan.sizes {
        progress.set_stage("slime", sp.size);
        let mut run = SizeRun::new(sp, opts.check_every);
        while let Some(call) = run.next_call() {
            let payload = run.payload();
            let t0 = Instant::now();
            let reply = if opts.copy_in {
                client.call(METHOD_ECHO, payload).await
            } else {
                let holds = &mut slot_holds;
                client
                    .call_with(METHOD_ECHO, sp.size, |id, area| {
                        // The pattern once per slot and size, then only the stamp.
                        let slot = id.slot as usize;
                        if holds[slot] != sp.size {
                            area.copy_from_slice(payload);
                            holds[slot] = sp.size;
                        } else {
                            let n = area.len().min(8);
                            area[..n].copy_from_slice(&payload[..n]);
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
            run.check(call, reply.payload())?;
            drop(reply);
            run.record(call, elapsed);
            progress.inc(1);
        }
        out.push(run.finish());
    }
    Ok(out)
}
