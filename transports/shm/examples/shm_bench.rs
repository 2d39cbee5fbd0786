//! Cross-process round-trip micro-benchmark of the shm transport, with a
//! memcpy floor measured in the same run.
//!
//! ```text
//! cargo run --release -p slimebench-shm --example shm_bench [SIZE_BYTES ...]
//! ```
//!
//! The process re-executes itself as the echo peer (`SB_SHM_BENCH_PEER=1`);
//! the two exchange their `TransportAddr` and mailbox as JSON lines over the
//! peer's stdin/stdout. One round trip = the client's write of `size` bytes
//! into the peer's mailbox + the peer's write of the same bytes back (two
//! copies, no RPC header, no payload copy into the send slot). Both sides
//! busy-poll for `SPIN_US` (default 200) µs, then sleep in `poll_ready`;
//! `YIELD=1` makes the spin loop call `sched_yield` every 16 polls.
//! Per size: 20 warm-up calls, then `max(50, min(500, 50_000_000 / size))`
//! timed calls (`ITERS` overrides), each timed alone; p50 = sorted[n/2],
//! bw = 2·size / avg (decimal GB/s), as in the harness. The floor is the same
//! two copies over three buffers in one process (median), so the difference
//! is what crossing processes costs.

use std::collections::hash_map::RandomState;
use std::future::poll_fn;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::task::Poll;
use std::time::{Duration, Instant};

use slimebench_proto::{AlignedBuf, Completion, CompletionKind, LocalSlice, MrDesc, MrKey, Transport, TransportAddr};
use slimebench_shm::{ShmConfig, ShmNaming, ShmTransport};

const PEER_ENV: &str = "SB_SHM_BENCH_PEER";
const TAG: &str = "SBADDR ";
const WARMUP: usize = 20;

fn random_id() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() | 1
}

fn transport(scope: &str, alias: &str) -> ShmTransport {
    let naming = ShmNaming {
        scope: scope.into(),
        alias: alias.into(),
        incarnation: random_id(),
    };
    ShmTransport::new(naming, ShmConfig::default()).expect("shm transport")
}

fn line(t: &ShmTransport, mailbox: MrKey) -> String {
    format!(
        "{TAG}{}\n",
        serde_json::json!({ "addr": t.local_addr(), "mailbox": t.mr_desc(mailbox) })
    )
}

fn parse(l: &str) -> (TransportAddr, MrDesc) {
    let v: serde_json::Value = serde_json::from_str(l.trim_start_matches(TAG).trim()).expect("json");
    (
        serde_json::from_value(v["addr"].clone()).expect("addr"),
        serde_json::from_value(v["mailbox"].clone()).expect("mailbox"),
    )
}

/// Wait for the next receive like the RPC layer: spin for `spin`, then
/// sleep. `None` once the link is down.
async fn next_recv(t: &mut ShmTransport, spin: Duration, out: &mut Vec<Completion>) -> Option<Completion> {
    loop {
        if let Some(i) = out
            .iter()
            .position(|c| matches!(c.kind, CompletionKind::RecvImm { .. }))
        {
            let c = out.remove(i);
            return c.status.is_ok().then_some(c);
        }
        out.clear();
        poll_fn(|cx| {
            let start = Instant::now();
            let mut n = 0u32;
            loop {
                if t.poll_completions(out).expect("poll") > 0 {
                    return Poll::Ready(());
                }
                n += 1;
                if n % 16 != 0 {
                    std::hint::spin_loop();
                    continue;
                }
                if start.elapsed() < spin {
                    if yield_in_spin() {
                        // Lets a runnable peer have this core when all are taken.
                        std::thread::yield_now();
                    }
                    continue;
                }
                if t.poll_ready(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        })
        .await;
    }
}

fn yield_in_spin() -> bool {
    static YIELD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *YIELD.get_or_init(|| std::env::var("YIELD").is_ok_and(|v| v == "1"))
}

fn spin() -> Duration {
    let us = std::env::var("SPIN_US")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    Duration::from_micros(us)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn peer(scope: &str, max: usize) {
    let mut t = transport(scope, "bench-peer");
    let mailbox = t.register(max).expect("register");
    print!("{}", line(&t, mailbox));
    std::io::stdout().flush().expect("flush");
    let mut l = String::new();
    std::io::stdin().read_line(&mut l).expect("read client line");
    let (addr, client_mailbox) = parse(&l);
    t.connect(&addr).expect("connect");
    let spin = spin();
    runtime().block_on(async {
        let mut out = Vec::new();
        let mut wr = 0;
        // Until the client leaves (its shutdown fails our link).
        while let Some(c) = next_recv(&mut t, spin, &mut out).await {
            let CompletionKind::RecvImm { imm, len } = c.kind else {
                unreachable!()
            };
            wr += 1;
            let src = LocalSlice {
                mr: mailbox,
                offset: 0,
                len: len as usize,
            };
            if t.post_write_imm(wr, src, client_mailbox.at(0, u64::from(len)).expect("fits"), imm)
                .is_err()
            {
                return;
            }
        }
    });
}

struct Row {
    size: usize,
    n: usize,
    avg_us: f64,
    p50_us: f64,
    p99_us: f64,
    bw_gbps: f64,
    floor_rt_us: f64,
    floor_bw_gbps: f64,
}

/// Median time of the echo's two copies done in one process, over the same
/// three page-aligned buffers (send -> peer mailbox -> our mailbox): the
/// round trip with the cross-process hand-off taken out.
fn memcpy_floor(size: usize, iters: usize) -> Duration {
    let send = AlignedBuf::new(size).expect("buf");
    let mut there = AlignedBuf::new(size).expect("buf");
    let mut back = AlignedBuf::new(size).expect("buf");
    there.copy_from_slice(&send); // fault the pages in
    back.copy_from_slice(&there);
    let mut times: Vec<Duration> = (0..iters)
        .map(|_| {
            let t0 = Instant::now();
            there.copy_from_slice(std::hint::black_box(&send));
            back.copy_from_slice(std::hint::black_box(&there));
            std::hint::black_box(&mut back);
            t0.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn client(sizes: &[usize]) {
    let max = *sizes.iter().max().expect("sizes");
    let scope = format!("bench-{}", std::process::id());
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .env(PEER_ENV, "1")
        .env("SB_SHM_BENCH_SCOPE", &scope)
        .env("SB_SHM_BENCH_MAX", max.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn peer");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let l = loop {
        let l = lines.next().expect("peer exited").expect("read");
        if l.starts_with(TAG) {
            break l;
        }
    };
    let (peer_addr, peer_mailbox) = parse(&l);
    let mut t = transport(&scope, "bench-client");
    let send = t.register(max).expect("register");
    let mailbox = t.register(max).expect("register");
    t.connect(&peer_addr).expect("connect");
    stdin.write_all(line(&t, mailbox).as_bytes()).expect("write");
    let spin = spin();
    let mut rows = Vec::new();
    runtime().block_on(async {
        let mut out = Vec::new();
        let mut wr = 0u64;
        for &size in sizes {
            let iters = std::env::var("ITERS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| (50_000_000 / size).clamp(50, 500));
            t.mr_mut(send)[..size].fill(0xA5);
            let mut times = Vec::with_capacity(iters);
            for i in 0..WARMUP + iters {
                wr += 1;
                let src = LocalSlice {
                    mr: send,
                    offset: 0,
                    len: size,
                };
                let t0 = Instant::now();
                t.post_write_imm(wr, src, peer_mailbox.at(0, size as u64).expect("fits"), wr as u32)
                    .expect("post");
                let c = next_recv(&mut t, spin, &mut out)
                    .await
                    .unwrap_or_else(|| panic!("link failed: {:?}", t.link_failure()));
                let dt = t0.elapsed();
                assert_eq!(
                    c.kind,
                    CompletionKind::RecvImm {
                        imm: wr as u32,
                        len: size as u32
                    }
                );
                if i >= WARMUP {
                    times.push(dt);
                }
            }
            assert!(t.mr(mailbox)[..size].iter().all(|&b| b == 0xA5), "echo content");
            let n = times.len();
            let avg = times.iter().sum::<Duration>() / n as u32;
            times.sort();
            let floor_rt = memcpy_floor(size, iters.min(200));
            rows.push(Row {
                size,
                n,
                avg_us: avg.as_secs_f64() * 1e6,
                p50_us: times[n / 2].as_secs_f64() * 1e6,
                p99_us: times[(n as f64 * 0.99) as usize].as_secs_f64() * 1e6,
                bw_gbps: 2.0 * size as f64 / avg.as_secs_f64() / 1e9,
                floor_rt_us: floor_rt.as_secs_f64() * 1e6,
                floor_bw_gbps: 2.0 * size as f64 / floor_rt.as_secs_f64() / 1e9,
            });
        }
    });
    let stats = t.stats().clone();
    t.shutdown();
    drop(stdin);
    let _ = child.wait();
    drop(t);
    println!(
        "shm transport, cross-process echo (2 copies per round trip), spin budget {spin:?}, yield in spin: {}",
        yield_in_spin()
    );
    println!(
        "{:>10} {:>6} {:>11} {:>11} {:>11} {:>9} | {:>13} {:>14}",
        "size", "n", "avg_us", "p50_us", "p99_us", "bw_GB/s", "floor_rt_us", "floor_bw_GB/s"
    );
    for r in &rows {
        println!(
            "{:>10} {:>6} {:>11.2} {:>11.2} {:>11.2} {:>9.2} | {:>13.2} {:>14.2}",
            r.size, r.n, r.avg_us, r.p50_us, r.p99_us, r.bw_gbps, r.floor_rt_us, r.floor_bw_gbps
        );
    }
    println!(
        "client: {} sleeps, {} wake-ups sent, {} writes",
        stats.sleeps, stats.wakes_sent, stats.writes_posted
    );
}

fn main() {
    if std::env::var(PEER_ENV).is_ok() {
        let scope = std::env::var("SB_SHM_BENCH_SCOPE").expect("scope");
        let max = std::env::var("SB_SHM_BENCH_MAX")
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("max");
        return peer(&scope, max);
    }
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![1 << 10, 16 << 20]
    } else {
        sizes
    };
    client(&sizes);
}
