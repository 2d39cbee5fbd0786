//! Cross-process tests: this test binary re-executes itself as the peer
//! (`child_main` with `SB_SHM_CHILD=<mode>`); the two processes exchange
//! their `TransportAddr` and mailbox `MrDesc` as JSON lines over the child's
//! stdin/stdout (standing in for the control plane).
//!
//! No timing thresholds: waits are bounded only by a generous hang guard.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::task::Poll;
use std::time::{Duration, Instant};

use slimebench_proto::{Completion, CompletionKind, LocalSlice, MrDesc, MrKey, Transport, TransportAddr, WcStatus};
use slimebench_shm::naming::NAME_PREFIX;
use slimebench_shm::{ShmConfig, ShmNaming, ShmTransport};

const CHILD_ENV: &str = "SB_SHM_CHILD";
const SCOPE_ENV: &str = "SB_SHM_SCOPE";
const LINE_TAG: &str = "SBADDR ";
/// Largest echo (16 MiB) plus room.
const MAILBOX: usize = 16 << 20;
/// Only a guard against a hung test, never a performance threshold.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn random_id() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() | 1
}

fn new_transport(scope: &str, alias: &str) -> ShmTransport {
    ShmTransport::new(
        ShmNaming {
            scope: scope.into(),
            alias: alias.into(),
            incarnation: random_id(),
        },
        ShmConfig::default(),
    )
    .expect("create shm transport")
}

fn leftovers(scope: &str) -> Vec<String> {
    let prefix = format!("{NAME_PREFIX}{scope}.");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn encode(t: &ShmTransport, mailbox: MrKey) -> String {
    let v = serde_json::json!({ "addr": t.local_addr(), "mailbox": t.mr_desc(mailbox) });
    format!("{LINE_TAG}{v}\n")
}

/// Decode a line that contains [`LINE_TAG`] (libtest may print before it).
fn decode(line: &str) -> (TransportAddr, MrDesc) {
    let at = line.find(LINE_TAG).expect("tagged line") + LINE_TAG.len();
    let v: serde_json::Value = serde_json::from_str(line[at..].trim()).unwrap();
    (
        serde_json::from_value(v["addr"].clone()).unwrap(),
        serde_json::from_value(v["mailbox"].clone()).unwrap(),
    )
}

/// Waits like the RPC layer: poll, spin for `spin`, then sleep in `poll_ready`.
struct Waiter {
    q: VecDeque<Completion>,
    spin: Duration,
}

impl Waiter {
    fn new(spin: Duration) -> Waiter {
        Waiter {
            q: VecDeque::new(),
            spin,
        }
    }

    async fn next(&mut self, t: &mut ShmTransport) -> Completion {
        if let Some(c) = self.q.pop_front() {
            return c;
        }
        let spin = self.spin;
        let q = &mut self.q;
        let wait = poll_fn(|cx| {
            let mut out = Vec::new();
            let start = Instant::now();
            let mut idle_ready = 0;
            loop {
                if t.poll_completions(&mut out).unwrap() > 0 {
                    q.extend(out.drain(..));
                    return Poll::Ready(());
                }
                if !spin.is_zero() && start.elapsed() < spin {
                    std::hint::spin_loop();
                    continue;
                }
                match t.poll_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => {
                        idle_ready += 1;
                        if idle_ready > 64 {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                }
            }
        });
        tokio::time::timeout(HANG_GUARD, wait).await.expect("hang guard");
        self.q.pop_front().expect("woken with a completion")
    }

    /// The next receive, skipping our own write completions.
    async fn recv(&mut self, t: &mut ShmTransport) -> Completion {
        loop {
            let c = self.next(t).await;
            if matches!(c.kind, CompletionKind::RecvImm { .. }) || !c.status.is_ok() {
                return c;
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- the peer

/// The peer process. A no-op unless started by a test with `SB_SHM_CHILD`.
#[test]
fn child_main() {
    let Ok(mode) = std::env::var(CHILD_ENV) else { return };
    let scope = std::env::var(SCOPE_ENV).unwrap();
    let mut t = new_transport(&scope, "child");
    let mailbox = t.register(MAILBOX).unwrap();
    print!("{}", encode(&t, mailbox));
    std::io::stdout().flush().unwrap();
    let mut stdin = BufReader::new(std::io::stdin());
    if mode == "die-before-connect" {
        // Wait for the parent's go (it may connect to us first), then crash.
        let mut go = String::new();
        stdin.read_line(&mut go).unwrap();
        kill_self();
    }
    let mut line = String::new();
    stdin.read_line(&mut line).unwrap();
    let (peer, peer_mailbox) = decode(&line);
    t.connect(&peer).unwrap();
    runtime().block_on(async {
        let mut w = Waiter::new(Duration::from_micros(50));
        let mut wr = 0;
        loop {
            let c = w.recv(&mut t).await;
            if !c.status.is_ok() {
                // The parent went away: leave cleanly.
                return;
            }
            if mode == "die-on-recv" {
                kill_self();
            }
            let CompletionKind::RecvImm { imm, len } = c.kind else {
                unreachable!()
            };
            wr += 1;
            let dst = peer_mailbox.at(0, u64::from(len)).unwrap();
            let src = LocalSlice {
                mr: mailbox,
                offset: 0,
                len: len as usize,
            };
            t.post_write_imm(wr, src, dst, imm).unwrap();
        }
    });
    drop(t);
}

fn kill_self() -> ! {
    // SAFETY: signalling our own pid; SIGKILL does not return.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL returned")
}

// ---------------------------------------------------------------- the tests

struct Peer {
    child: Child,
    stdin: ChildStdin,
    addr: TransportAddr,
    mailbox: MrDesc,
}

fn spawn_peer(mode: &str, scope: &str) -> Peer {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env(SCOPE_ENV, scope)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout: ChildStdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = loop {
        let l = lines.next().expect("peer exited before publishing").unwrap();
        if l.contains(LINE_TAG) {
            break l;
        }
    };
    // Keep reading, so the peer's test harness can still print its verdict.
    std::thread::spawn(move || lines.for_each(drop));
    let (addr, mailbox) = decode(&line);
    Peer {
        child,
        stdin,
        addr,
        mailbox,
    }
}

fn scope(test: &str) -> String {
    format!("x{}-{test}", std::process::id())
}

fn pattern(size: usize, round: usize) -> impl Iterator<Item = u8> {
    (0..size).map(move |i| (i.wrapping_mul(31) ^ (i >> 12) ^ round.wrapping_mul(97) ^ size) as u8)
}

#[test]
fn echo_every_size_across_processes() {
    let scope = scope("echo");
    let mut peer = spawn_peer("echo", &scope);
    let mut t = new_transport(&scope, "parent");
    let send = t.register(MAILBOX).unwrap();
    let mailbox = t.register(MAILBOX).unwrap();
    t.connect(&peer.addr).unwrap();
    peer.stdin.write_all(encode(&t, mailbox).as_bytes()).unwrap();
    runtime().block_on(async {
        // No spinning here: every reply is a real sleep and wake-up.
        let mut w = Waiter::new(Duration::ZERO);
        let mut wr = 0;
        for kib in [1usize, 4, 16, 64, 256, 1024, 4096, 16384] {
            let size = kib << 10;
            for round in 0..3 {
                for (d, s) in t.mr_mut(send)[..size].iter_mut().zip(pattern(size, round)) {
                    *d = s;
                }
                wr += 1;
                let imm = (kib * 10 + round) as u32;
                let dst = peer.mailbox.at(0, size as u64).unwrap();
                let src = LocalSlice {
                    mr: send,
                    offset: 0,
                    len: size,
                };
                t.post_write_imm(wr, src, dst, imm).unwrap();
                let c = w.recv(&mut t).await;
                assert_eq!(
                    c,
                    Completion {
                        wr_id: 0,
                        status: WcStatus::Ok,
                        kind: CompletionKind::RecvImm { imm, len: size as u32 }
                    }
                );
                assert!(
                    t.mr(mailbox)[..size].iter().copied().eq(pattern(size, round)),
                    "echo of {size} bytes (round {round}) differs"
                );
            }
        }
        assert!(t.stats().sleeps > 0, "the wake path was exercised");
    });
    assert!(t.published_paths().is_empty(), "released after the peer attached");
    t.shutdown();
    let status = peer.child.wait().unwrap();
    assert!(status.success(), "peer exited with {status}");
    drop(t);
    assert_eq!(leftovers(&scope), Vec::<String>::new());
}

#[test]
fn peer_killed_mid_call_fails_with_peer_gone() {
    let scope = scope("killcall");
    let mut peer = spawn_peer("die-on-recv", &scope);
    let mut t = new_transport(&scope, "parent");
    let send = t.register(4096).unwrap();
    let mailbox = t.register(4096).unwrap();
    t.connect(&peer.addr).unwrap();
    peer.stdin.write_all(encode(&t, mailbox).as_bytes()).unwrap();
    runtime().block_on(async {
        let mut w = Waiter::new(Duration::from_micros(20));
        let src = LocalSlice {
            mr: send,
            offset: 0,
            len: 1024,
        };
        t.post_write_imm(1, src, peer.mailbox.at(0, 1024).unwrap(), 1).unwrap();
        // The call is pending: the reply never comes, the peer's death ends the wait.
        let c = w.recv(&mut t).await;
        assert_eq!(c.status, WcStatus::PeerGone, "{c:?}");
    });
    let f = t.link_failure().unwrap();
    assert_eq!(f.status, WcStatus::PeerGone);
    assert!(f.cause.contains("exited"), "{f}");
    let status = peer.child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    drop(t);
    assert_eq!(leftovers(&scope), Vec::<String>::new());
}

#[test]
fn peer_killed_before_it_connected_is_detected_and_reaped() {
    let scope = scope("killearly");
    let mut peer = spawn_peer("die-before-connect", &scope);
    let mut t = new_transport(&scope, "parent");
    t.register(4096).unwrap();
    // We map the peer; it dies before accepting us and before releasing its names.
    t.connect(&peer.addr).unwrap();
    peer.stdin.write_all(b"go\n").unwrap();
    runtime().block_on(async {
        let mut w = Waiter::new(Duration::ZERO);
        let c = w.recv(&mut t).await;
        assert_eq!(c.status, WcStatus::PeerGone, "{c:?}");
    });
    peer.child.wait().unwrap();
    assert_eq!(t.stats().peer_names_reaped, 2, "its doorbell and its region");
    drop(t);
    assert_eq!(leftovers(&scope), Vec::<String>::new());
}

#[test]
fn stale_segments_of_a_crashed_run_are_removed_at_start() {
    let scope = scope("stale");
    let mut peer = spawn_peer("die-before-connect", &scope);
    peer.stdin.write_all(b"go\n").unwrap();
    peer.child.wait().unwrap();
    // The crashed run left its doorbell and region behind.
    assert_eq!(leftovers(&scope).len(), 2, "{:?}", leftovers(&scope));
    let TransportAddr::Shm { host_id, .. } = &peer.addr else {
        unreachable!()
    };
    assert_eq!(*host_id, ShmTransport::host_id().unwrap());
    // A new connect to the dead incarnation is refused, never mapped.
    let mut probe = new_transport(&scope, "probe");
    let e = probe.connect(&peer.addr).unwrap_err();
    assert!(e.to_string().contains("exited"), "{e}");
    // The next start of the same scope and alias removes them.
    let next = new_transport(&scope, "child");
    assert_eq!(next.stats().stale_removed, 2);
    drop((next, probe));
    assert_eq!(leftovers(&scope), Vec::<String>::new());
    let rep = ShmTransport::sweep_stale(Path::new("/dev/shm"), &scope, None).unwrap();
    assert_eq!(rep.removed, 0);
}
