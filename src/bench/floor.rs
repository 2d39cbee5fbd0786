//! The floor: blocking TCP ping-pong between two threads of this process, same sizes and method.
//!
//! No actors, no framing, no runtime — just `write_all` and `read_exact` on a loopback socket
//! with TCP_NODELAY. Whatever the real systems cost above this line is their own overhead;
//! whatever this costs is the machine's (kernel copies, wake-ups) and the harness's timing.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::plan::{SizePlan, SweepPlan};
use super::progress::Progress;
use super::stats::SizeStats;

/// The name the floor reports under (progress messages, summary keys).
pub const FLOOR_NAME: &str = "floor";

/// Page size for buffer alignment: unaligned 16 MiB copies can be many times slower.
const PAGE_BYTES: usize = 4096;

/// A bound on any single socket read or write, so that a bug fails the run instead of hanging
/// it. One call moves at most 64 MiB over loopback, which takes well under a second.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the floor run failed.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    /// A size in the plan has no timed calls, so there is nothing to measure: fix the plan
    /// (e.g. an iterations override of 0).
    #[error("plan has no timed calls for size {size}")]
    NoTimedCalls {
        /// The size with `iters == 0`.
        size: usize,
    },
    /// Setting up the loopback connection failed (bind, connect, accept, socket options, or
    /// starting the server thread): the machine is out of ports, threads or file descriptors;
    /// retry or raise the limits.
    #[error("floor setup failed while trying to {step}: {source}")]
    Setup {
        /// What was being done.
        step: &'static str,
        /// The underlying IO error.
        source: io::Error,
    },
    /// Another process connected to our ephemeral port before we did: rerun.
    #[error("unexpected peer {got} connected to the floor server (expected {expected})")]
    UnexpectedPeer {
        /// Our client's address.
        expected: SocketAddr,
        /// The address that was accepted.
        got: SocketAddr,
    },
    /// The client's send or receive failed mid-run: see the IO error; usually the server
    /// side failed first or a timeout hit.
    #[error("floor client IO failed at size {size}: {source}")]
    Client {
        /// The payload size being measured.
        size: usize,
        /// The underlying IO error.
        source: io::Error,
    },
    /// The echo server's read or write failed: see the IO error.
    #[error("floor server IO failed at size {size}: {source}")]
    Server {
        /// The payload size being echoed.
        size: usize,
        /// The underlying IO error.
        source: io::Error,
    },
    /// The echo came back different from what was sent: the kernel, the harness or memory is
    /// broken; the numbers cannot be trusted, do not use the run.
    #[error("floor echo mismatch at size {size}")]
    Mismatch {
        /// The payload size whose first reply differed.
        size: usize,
    },
    /// The server thread panicked: a bug in the floor; report it.
    #[error("floor server thread panicked")]
    ServerPanicked,
}

/// A zeroed buffer whose contents start on a page boundary, allocated once per size.
struct PageBuf {
    storage: Vec<u8>,
    offset: usize,
    len: usize,
}

impl PageBuf {
    fn new(len: usize) -> PageBuf {
        let storage = vec![0u8; len + PAGE_BYTES];
        // align_offset may decline (usize::MAX); an unaligned buffer is slower, not wrong.
        let offset = match storage.as_ptr().align_offset(PAGE_BYTES) {
            off if off < PAGE_BYTES => off,
            _ => 0,
        };
        PageBuf { storage, offset, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.storage[self.offset..self.offset + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.offset..self.offset + self.len]
    }
}

fn setup(step: &'static str) -> impl FnOnce(io::Error) -> FloorError {
    move |source| FloorError::Setup { step, source }
}

fn configure(stream: &TcpStream) -> Result<(), FloorError> {
    stream.set_nodelay(true).map_err(setup("set TCP_NODELAY"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(setup("set read timeout"))?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(setup("set write timeout"))
}

/// Runs the plan as a TCP ping-pong and returns one [`SizeStats`] per size, in plan order.
///
/// Each call is timed alone, from the start of the write to the end of the read, exactly like
/// the other systems; warm-up calls are made but not recorded. The first reply of every size
/// is compared with the payload. `progress` is advanced once per call (warm-up included).
///
/// # Errors
///
/// [`FloorError::NoTimedCalls`] before anything starts if a size has `iters == 0`;
/// [`FloorError::Setup`] / [`FloorError::UnexpectedPeer`] if the loopback connection cannot be
/// made; [`FloorError::Client`] / [`FloorError::Server`] for IO failures during the run
/// (the client's error wins when both fail, since the server's is then usually a consequence);
/// [`FloorError::Mismatch`] if an echo differs; [`FloorError::ServerPanicked`].
pub fn run_floor(plan: &SweepPlan, progress: &Progress) -> Result<Vec<SizeStats>, FloorError> {
    if let Some(p) = plan.sizes.iter().find(|p| p.iters == 0) {
        return Err(FloorError::NoTimedCalls { size: p.size });
    }

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(setup("bind 127.0.0.1:0"))?;
    let addr = listener.local_addr().map_err(setup("read listener address"))?;
    // Connect before accepting, both on this thread: the kernel completes the handshake from
    // the listen backlog, so no thread can be left blocked in accept() if connect fails.
    let mut client = TcpStream::connect(addr).map_err(setup("connect to floor server"))?;
    let (server, peer) = listener.accept().map_err(setup("accept"))?;
    let expected = client.local_addr().map_err(setup("read client address"))?;
    if peer != expected {
        return Err(FloorError::UnexpectedPeer { expected, got: peer });
    }
    drop(listener);
    configure(&client)?;
    configure(&server)?;

    let server_plan = plan.sizes.clone();
    let server_thread = thread::Builder::new()
        .name("floor-echo".into())
        .spawn(move || serve(server, &server_plan))
        .map_err(setup("spawn server thread"))?;

    let client_result = drive(&mut client, plan, progress);
    // Closing our end unblocks the server if we stopped early: its next read sees EOF.
    drop(client);
    let server_result = server_thread.join().map_err(|_| FloorError::ServerPanicked)?;
    let stats = client_result?;
    server_result?;
    Ok(stats)
}

/// The echo side. It knows the plan, so messages need no length prefix.
fn serve(mut stream: TcpStream, sizes: &[SizePlan]) -> Result<(), FloorError> {
    for p in sizes {
        let mut buf = PageBuf::new(p.size);
        let err = |source| FloorError::Server { size: p.size, source };
        for _ in 0..p.calls() {
            // Read the whole request before echoing any of it. The client writes the whole
            // request before reading, so at any moment exactly one side is writing and the
            // other is draining: two sides both blocked in write with full socket buffers
            // (the deadlock a streaming echo of 16 MiB could hit) cannot happen.
            stream.read_exact(buf.as_mut_slice()).map_err(err)?;
            stream.write_all(buf.as_slice()).map_err(err)?;
        }
    }
    Ok(())
}

/// The timing side: one blocking round trip per call, timed alone.
fn drive(stream: &mut TcpStream, plan: &SweepPlan, progress: &Progress) -> Result<Vec<SizeStats>, FloorError> {
    let mut out = Vec::with_capacity(plan.sizes.len());
    for p in &plan.sizes {
        progress.set_stage(FLOOR_NAME, p.size);
        tracing::debug!(size = p.size, warmup = p.warmup, iters = p.iters, "floor size");
        let err = |source| FloorError::Client { size: p.size, source };
        let mut payload = PageBuf::new(p.size);
        // Non-zero and not a power-of-two period, so a zeroed or shifted reply cannot pass.
        for (i, b) in payload.as_mut_slice().iter_mut().enumerate() {
            *b = (i % 251) as u8 + 1;
        }
        let mut reply = PageBuf::new(p.size);
        let mut samples = Vec::with_capacity(p.iters);
        for call in 0..p.calls() {
            let start = Instant::now();
            stream.write_all(payload.as_slice()).map_err(err)?;
            stream.read_exact(reply.as_mut_slice()).map_err(err)?;
            let elapsed = start.elapsed();
            if call == 0 && reply.as_slice() != payload.as_slice() {
                return Err(FloorError::Mismatch { size: p.size });
            }
            if call >= p.warmup as u64 {
                samples.push(elapsed);
            }
            progress.inc(1);
        }
        out.push(SizeStats::from_samples(p.size, &samples));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::KIB;

    #[test]
    fn tiny_plan_has_the_right_shape() {
        let plan = SweepPlan {
            sizes: vec![
                SizePlan {
                    size: KIB,
                    warmup: 2,
                    iters: 5,
                },
                SizePlan {
                    size: 64 * KIB,
                    warmup: 2,
                    iters: 5,
                },
            ],
        };
        let progress = Progress::hidden();
        let stats = run_floor(&plan, &progress).expect("floor run");
        assert_eq!(stats.len(), 2);
        assert_eq!(progress.position(), plan.total_calls());
        for (s, p) in stats.iter().zip(&plan.sizes) {
            assert_eq!(s.size, p.size);
            assert_eq!(s.iters, 5);
            for v in [s.avg_us, s.p50_us, s.p99_us, s.p999_us, s.min_us, s.max_us] {
                assert!(v > 0.0, "{s:?}");
            }
            assert!(s.min_us <= s.p50_us, "{s:?}");
            assert!(s.p50_us <= s.p99_us, "{s:?}");
            assert!(s.p99_us <= s.max_us, "{s:?}");
            assert!(s.bw_gbps > 0.0);
        }
    }

    /// The full default sweep, to show 16 MiB echoes do not deadlock; too slow for every run.
    #[test]
    #[ignore = "moves ~1 GB over loopback; run with --ignored"]
    fn full_default_sweep_completes() {
        let plan = SweepPlan::new(16 * crate::bench::plan::MIB, crate::bench::plan::WARMUP, None);
        let stats = run_floor(&plan, &Progress::hidden()).expect("floor run");
        assert_eq!(stats.len(), plan.sizes.len());
        for s in &stats {
            eprintln!(
                "{:>6} avg {:>9.1} us  p50 {:>9.1} us  bw {:.3} GB/s",
                crate::bench::plan::human_size(s.size),
                s.avg_us,
                s.p50_us,
                s.bw_gbps
            );
        }
    }

    #[test]
    fn zero_warmup_still_checks_and_records() {
        let plan = SweepPlan {
            sizes: vec![SizePlan {
                size: 3,
                warmup: 0,
                iters: 2,
            }],
        };
        let stats = run_floor(&plan, &Progress::hidden()).expect("floor run");
        assert_eq!(stats[0].iters, 2);
    }

    #[test]
    fn empty_plan_gives_no_rows() {
        let stats = run_floor(&SweepPlan { sizes: vec![] }, &Progress::hidden()).expect("run");
        assert!(stats.is_empty());
    }

    #[test]
    fn zero_iters_is_rejected_up_front() {
        let plan = SweepPlan {
            sizes: vec![SizePlan {
                size: KIB,
                warmup: 1,
                iters: 0,
            }],
        };
        assert!(matches!(
            run_floor(&plan, &Progress::hidden()),
            Err(FloorError::NoTimedCalls { size: KIB })
        ));
    }

    #[test]
    fn page_buf_is_aligned_and_sized() {
        let mut b = PageBuf::new(10);
        assert_eq!(b.as_slice().len(), 10);
        assert_eq!(b.as_slice().as_ptr() as usize % PAGE_BYTES, 0);
        b.as_mut_slice()[9] = 7;
        assert_eq!(b.as_slice()[9], 7);
        assert!(PageBuf::new(0).as_slice().is_empty());
    }
}
