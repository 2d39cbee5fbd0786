//! In-process tests: two transports in one process behave exactly as two
//! processes would (same segments, same ring, same wake socket), which makes
//! the protocol tests fast and deterministic. Cross-process behaviour (echo,
//! a killed peer, crash leftovers) is in `tests/cross_process.rs`.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::task::Poll;

use slimebench_proto::transport::ShmRegion;
use slimebench_proto::{
    Completion, CompletionKind, ConnectError, LocalSlice, MrKey, PostError, RemoteAddr, Transport, TransportAddr,
    WcStatus,
};

use crate::naming::{self, ShmNaming};
use crate::ring::{self, EntryData};
use crate::{ShmConfig, ShmTransport};

fn random_id() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() | 1
}

/// A scope unique to this test run and test.
fn scope(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}

fn leftovers(scope: &str) -> Vec<String> {
    let prefix = format!("{}{}.", naming::NAME_PREFIX, naming::component(scope));
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn transport(scope: &str, alias: &str, cfg: ShmConfig) -> ShmTransport {
    ShmTransport::new(
        ShmNaming {
            scope: scope.into(),
            alias: alias.into(),
            incarnation: random_id(),
        },
        cfg,
    )
    .unwrap()
}

/// Two connected transports, each with one region of `len` bytes.
fn pair(scope: &str, len: usize, cfg: ShmConfig) -> (ShmTransport, ShmTransport) {
    let mut a = transport(scope, "a", cfg.clone());
    let mut b = transport(scope, "b", cfg);
    a.register(len).unwrap();
    b.register(len).unwrap();
    let (aa, ba) = (a.local_addr(), b.local_addr());
    a.connect(&ba).unwrap();
    b.connect(&aa).unwrap();
    (a, b)
}

fn poll(t: &mut ShmTransport) -> Vec<Completion> {
    let mut out = Vec::new();
    t.poll_completions(&mut out).unwrap();
    out
}

fn src(len: usize) -> LocalSlice {
    LocalSlice {
        mr: MrKey(0),
        offset: 0,
        len,
    }
}

fn dst(peer: &ShmTransport, offset: u64, len: u64) -> RemoteAddr {
    peer.mr_desc(MrKey(0)).at(offset, len).unwrap()
}

fn recv(imm: u32, len: u32) -> Completion {
    Completion {
        wr_id: 0,
        status: WcStatus::Ok,
        kind: CompletionKind::RecvImm { imm, len },
    }
}

fn done(wr_id: u64) -> Completion {
    Completion {
        wr_id,
        status: WcStatus::Ok,
        kind: CompletionKind::WriteDone,
    }
}

fn small_ring(cap: u32) -> ShmConfig {
    ShmConfig {
        ring_capacity: cap,
        ..ShmConfig::default()
    }
}

#[test]
fn write_lands_with_its_immediate() {
    let s = scope("write");
    let (mut a, mut b) = pair(&s, 8192, ShmConfig::default());
    assert!(a.is_up() && b.is_up());
    a.mr_mut(MrKey(0))[..5].copy_from_slice(b"hello");
    let d = dst(&b, 100, 5);
    a.post_write_imm(7, src(5), d, 42).unwrap();
    assert_eq!(poll(&mut a), vec![done(7)]);
    assert_eq!(poll(&mut b), vec![recv(42, 5)]);
    assert_eq!(&b.mr(MrKey(0))[100..105], b"hello");
    assert!(poll(&mut b).is_empty());
    drop((a, b));
    assert_eq!(leftovers(&s), Vec::<String>::new());
}

#[test]
fn ring_wraps_around_in_order() {
    let s = scope("wrap");
    let (mut a, mut b) = pair(&s, 4096, small_ring(4));
    let d = dst(&b, 0, 8);
    let mut expected = 0u32;
    for i in 0..50u32 {
        a.mr_mut(MrKey(0))[..4].copy_from_slice(&i.to_le_bytes());
        a.post_write_imm(u64::from(i), src(8), d, i).unwrap();
        assert_eq!(poll(&mut a), vec![done(u64::from(i))]);
        // Consume every second round: the ring runs at two-deep and wraps.
        if i % 2 == 1 {
            for c in poll(&mut b) {
                assert_eq!(c, recv(expected, 8));
                expected += 1;
            }
        }
    }
    assert_eq!(expected, 50);
}

#[test]
fn full_ring_is_queue_full_until_the_receiver_drains() {
    let s = scope("full");
    let (mut a, mut b) = pair(&s, 4096, small_ring(4));
    let d = dst(&b, 0, 1);
    for i in 0..4 {
        a.post_write_imm(i, src(1), d, 0).unwrap();
    }
    poll(&mut a);
    assert_eq!(
        a.post_write_imm(9, src(1), d, 0),
        Err(PostError::QueueFull { depth: 4 })
    );
    assert!(a.link_failure().is_none(), "backpressure is not a failure");
    assert_eq!(poll(&mut b).len(), 4);
    a.post_write_imm(9, src(1), d, 0).unwrap();
    assert_eq!(poll(&mut a), vec![done(9)]);
}

#[test]
fn unpolled_completions_bound_the_send_queue() {
    let s = scope("sqdepth");
    let cfg = ShmConfig {
        send_queue_depth: 3,
        ..ShmConfig::default()
    };
    let (mut a, b) = pair(&s, 4096, cfg);
    let d = dst(&b, 0, 1);
    for i in 0..3 {
        a.post_write_imm(i, src(1), d, 0).unwrap();
    }
    assert_eq!(
        a.post_write_imm(3, src(1), d, 0),
        Err(PostError::QueueFull { depth: 3 })
    );
    assert_eq!(poll(&mut a).len(), 3);
    a.post_write_imm(3, src(1), d, 0).unwrap();
}

#[test]
fn local_errors_post_nothing() {
    let s = scope("localerr");
    let mut lone = transport(&s, "lone", ShmConfig::default());
    lone.register(64).unwrap();
    let any = RemoteAddr { rkey: 1, addr: 0 };
    assert_eq!(lone.post_write_imm(1, src(1), any, 0), Err(PostError::NotConnected));
    let (mut a, b) = pair(&s, 64, ShmConfig::default());
    let d = dst(&b, 0, 1);
    assert!(matches!(
        a.post_write_imm(1, src(65), d, 0),
        Err(PostError::BadLocalSlice { .. })
    ));
    assert_eq!(
        a.post_write_imm(1, LocalSlice { mr: MrKey(5), ..src(1) }, d, 0),
        Err(PostError::UnknownMr(MrKey(5)))
    );
    assert!(poll(&mut a).is_empty());
    assert!(a.link_failure().is_none());
}

#[test]
fn write_outside_peer_memory_is_a_remote_access_error() {
    let s = scope("remoteaccess");
    let (mut a, b) = pair(&s, 64, ShmConfig::default());
    let base = b.mr_desc(MrKey(0));
    let outside = RemoteAddr {
        rkey: base.rkey,
        addr: base.addr + 60,
    };
    a.post_write_imm(5, src(8), outside, 0).unwrap();
    let c = poll(&mut a);
    assert_eq!(
        c[0],
        Completion {
            wr_id: 5,
            status: WcStatus::RemoteAccess,
            kind: CompletionKind::WriteDone
        }
    );
    assert_eq!(a.link_failure().unwrap().status, WcStatus::RemoteAccess);
    let wrong_key = RemoteAddr {
        rkey: base.rkey ^ 2,
        ..outside
    };
    assert!(matches!(
        a.post_write_imm(6, src(1), wrong_key, 0),
        Err(PostError::LinkDown(_))
    ));
}

/// Every kind of hostile entry a producer could write fails the link with
/// `Flushed` before anything in it is used.
#[test]
fn hostile_ring_entries_fail_the_link() {
    let s = scope("hostile");
    /// (slot, seq, tag, entry) to forge into the ring `b` consumes.
    type Forge = fn(&ShmTransport) -> (u64, u64, u32, EntryData);
    let cases: Vec<(&str, Forge)> = vec![
        ("outside the region", |b| {
            let d = b.mr_desc(MrKey(0));
            (
                0,
                1,
                1,
                EntryData {
                    addr: d.addr + 4000,
                    rkey: d.rkey,
                    len: 200,
                    imm: 0,
                },
            )
        }),
        ("unknown rkey", |b| {
            let d = b.mr_desc(MrKey(0));
            (
                0,
                1,
                1,
                EntryData {
                    addr: d.addr,
                    rkey: d.rkey ^ 4,
                    len: 1,
                    imm: 0,
                },
            )
        }),
        ("address below the region", |b| {
            let d = b.mr_desc(MrKey(0));
            (
                0,
                1,
                1,
                EntryData {
                    addr: d.addr - 1,
                    rkey: d.rkey,
                    len: 1,
                    imm: 0,
                },
            )
        }),
        ("sequence from the future", |b| {
            let d = b.mr_desc(MrKey(0));
            (
                0,
                7,
                1,
                EntryData {
                    addr: d.addr,
                    rkey: d.rkey,
                    len: 1,
                    imm: 0,
                },
            )
        }),
        ("tag of another link", |b| {
            let d = b.mr_desc(MrKey(0));
            (
                0,
                1,
                99,
                EntryData {
                    addr: d.addr,
                    rkey: d.rkey,
                    len: 1,
                    imm: 0,
                },
            )
        }),
    ];
    for (what, forge) in cases {
        let (a, mut b) = pair(&s, 4096, ShmConfig::default());
        let (slot, seq, tag, e) = forge(&b);
        ring::forge(&a.peer_ring_for_test().unwrap(), slot, seq, tag, e);
        let c = poll(&mut b);
        assert_eq!(
            c,
            vec![Completion {
                wr_id: 0,
                status: WcStatus::Flushed,
                kind: CompletionKind::RecvImm { imm: 0, len: 0 }
            }],
            "{what}"
        );
        let f = b.link_failure().unwrap();
        assert!(f.cause.contains("protocol violation"), "{what}: {f}");
        assert_eq!(b.stats().protocol_errors, 1);
        assert!(b.mr(MrKey(0)).iter().all(|&x| x == 0), "{what}: nothing written");
    }
    // A duplicate: a valid entry, then the same sequence number again.
    let (mut a, mut b) = pair(&s, 4096, ShmConfig::default());
    a.post_write_imm(1, src(1), dst(&b, 0, 1), 3).unwrap();
    assert_eq!(poll(&mut b), vec![recv(3, 1)]);
    let d = b.mr_desc(MrKey(0));
    ring::forge(
        &a.peer_ring_for_test().unwrap(),
        1,
        1,
        1,
        EntryData {
            addr: d.addr,
            rkey: d.rkey,
            len: 1,
            imm: 3,
        },
    );
    assert_eq!(poll(&mut b)[0].status, WcStatus::Flushed);
    // The failed side closed its ring: the producer sees the link down.
    assert!(matches!(
        a.post_write_imm(2, src(1), dst(&b, 0, 1), 0),
        Err(PostError::LinkDown(f)) if f.status == WcStatus::PeerGone
    ));
}

#[test]
fn writes_wait_until_the_peer_accepts_us() {
    let s = scope("early");
    let mut a = transport(&s, "a", ShmConfig::default());
    let mut b = transport(&s, "b", ShmConfig::default());
    a.register(64).unwrap();
    b.register(64).unwrap();
    a.connect(&b.local_addr()).unwrap();
    assert!(!a.is_up());
    a.mr_mut(MrKey(0))[0] = 9;
    a.post_write_imm(1, src(1), dst(&b, 3, 1), 11).unwrap();
    assert!(poll(&mut a).is_empty(), "queued, not yet written");
    b.connect(&a.local_addr()).unwrap();
    assert_eq!(poll(&mut a), vec![done(1)]);
    assert_eq!(poll(&mut b), vec![recv(11, 1)]);
    assert_eq!(b.mr(MrKey(0))[3], 9);
}

#[test]
fn hostile_descriptors_are_refused() {
    let s = scope("baddesc");
    let mut me = transport(&s, "me", ShmConfig::default());
    let mut peer = transport(&s, "peer", ShmConfig::default());
    peer.register(4096).unwrap();
    peer.register(100).unwrap();
    let good = peer.local_addr();
    let TransportAddr::Shm {
        host_id,
        doorbell,
        regions,
        endpoint_id,
    } = good.clone()
    else {
        unreachable!()
    };
    /// Edits (host id, doorbell, regions, endpoint id) of the good descriptor.
    type Edit<'a> = dyn Fn(&mut String, &mut String, &mut Vec<ShmRegion>, &mut u64) + 'a;
    let with = |f: &Edit<'_>| {
        let (mut h, mut d, mut r, mut e) = (host_id.clone(), doorbell.clone(), regions.clone(), endpoint_id);
        f(&mut h, &mut d, &mut r, &mut e);
        TransportAddr::Shm {
            host_id: h,
            doorbell: d,
            regions: r,
            endpoint_id: e,
        }
    };
    let err = |me: &mut ShmTransport, a: TransportAddr| me.connect(&a).unwrap_err();
    // Another host.
    let e = err(&mut me, with(&|h, _, _, _| *h = "00000000-another-host".into()));
    assert!(
        matches!(&e, ConnectError::Unreachable { reason, .. } if reason.contains("another host")),
        "{e}"
    );
    // A region longer than its segment (offset/length outside the segment).
    let e = err(&mut me, with(&|_, _, r, _| r[1].len = 8192));
    assert!(matches!(e, ConnectError::BadAddress { .. }), "{e}");
    // An rkey that is not the segment's.
    let e = err(&mut me, with(&|_, _, r, _| r[0].rkey ^= 8));
    assert!(matches!(e, ConnectError::BadAddress { .. }), "{e}");
    // The right names under another incarnation id, and the other way round.
    let e = err(&mut me, with(&|_, _, _, id| *id ^= 0x10));
    assert!(matches!(e, ConnectError::BadAddress { .. }), "{e}");
    let e = err(
        &mut me,
        with(&|_, d, _, _| *d = d.replace(&format!("{endpoint_id:016x}"), &format!("{:016x}", endpoint_id ^ 0x10))),
    );
    assert!(matches!(e, ConnectError::BadAddress { .. }), "{e}");
    // Path games and foreign files.
    let e = err(&mut me, with(&|_, d, _, _| *d = format!("../../etc/{d}")));
    assert!(matches!(e, ConnectError::BadAddress { .. }), "{e}");
    let e = err(&mut me, with(&|_, _, r, _| r[0].name = "passwd".into()));
    assert!(matches!(e, ConnectError::BadAddress { .. }), "{e}");
    // A region of another endpoint (our own) named in the peer's descriptor.
    let mine = me.local_addr();
    let TransportAddr::Shm { doorbell: my_db, .. } = &mine else {
        unreachable!()
    };
    let e = err(&mut me, with(&|_, d, _, _| *d = my_db.clone()));
    assert!(matches!(e, ConnectError::BadAddress { .. }), "{e}");
    // Our own descriptor, the wrong kind, region/doorbell mix-up.
    assert!(matches!(me.connect(&mine), Err(ConnectError::BadAddress { .. })));
    assert!(matches!(
        me.connect(&TransportAddr::Tcp {
            addr: "127.0.0.1:1".into(),
            endpoint_id: 1
        }),
        Err(ConnectError::WrongKind { .. })
    ));
    let e = err(&mut me, with(&|_, d, r, _| std::mem::swap(d, &mut r[0].name)));
    assert!(matches!(e, ConnectError::BadAddress { .. }), "{e}");
    // The descriptor of an incarnation that is gone.
    drop(peer);
    let e = me.connect(&good).unwrap_err();
    assert!(matches!(e, ConnectError::Unreachable { .. }), "{e}");
    drop(me);
    assert_eq!(leftovers(&s), Vec::<String>::new());
}

#[test]
fn names_are_released_once_the_peer_mapped_them() {
    let s = scope("release");
    let (mut a, mut b) = pair(&s, 4096, ShmConfig::default());
    // Both attached during connect; b noticed in its connect, a on its next poll.
    assert!(b.published_paths().is_empty());
    poll(&mut a);
    assert!(a.published_paths().is_empty());
    assert_eq!(leftovers(&s), Vec::<String>::new());
    // The link works without names.
    a.post_write_imm(1, src(16), dst(&b, 0, 16), 1).unwrap();
    assert_eq!(poll(&mut b), vec![recv(1, 16)]);
    assert_eq!(a.stats().names_released, 2);
}

#[test]
fn reconnect_after_release_republishes_with_contents() {
    let s = scope("republish");
    let (mut a, b1) = pair(&s, 4096, ShmConfig::default());
    poll(&mut a);
    assert!(a.published_paths().is_empty());
    a.mr_mut(MrKey(0))[..3].copy_from_slice(b"abc");
    let a_addr = a.local_addr();
    drop(b1);
    // A new incarnation of the peer cannot map names that are gone ...
    let mut b2 = transport(&s, "b", ShmConfig::default());
    b2.register(4096).unwrap();
    assert!(matches!(b2.connect(&a_addr), Err(ConnectError::Unreachable { .. })));
    // ... until `a` connects to it, which publishes fresh segments under the same names.
    a.connect(&b2.local_addr()).unwrap();
    assert_eq!(a.published_paths().len(), 2);
    b2.connect(&a_addr).unwrap();
    assert_eq!(&a.mr(MrKey(0))[..3], b"abc", "contents kept");
    b2.mr_mut(MrKey(0))[..2].copy_from_slice(b"zz");
    b2.post_write_imm(1, src(2), dst(&a, 10, 2), 4).unwrap();
    assert_eq!(poll(&mut a), vec![recv(4, 2)]);
    assert_eq!(&a.mr(MrKey(0))[10..12], b"zz");
    assert!(a.published_paths().is_empty(), "released again after b2 attached");
    drop((a, b2));
    assert_eq!(leftovers(&s), Vec::<String>::new());
}

#[test]
fn shutdown_cancels_and_is_idempotent() {
    let s = scope("shutdown");
    let (mut a, mut b) = pair(&s, 4096, ShmConfig::default());
    a.shutdown();
    a.shutdown();
    assert_eq!(
        poll(&mut a),
        vec![Completion {
            wr_id: 0,
            status: WcStatus::Cancelled,
            kind: CompletionKind::RecvImm { imm: 0, len: 0 }
        }]
    );
    assert_eq!(a.link_failure().unwrap().status, WcStatus::Cancelled);
    assert!(matches!(
        a.post_write_imm(1, src(1), dst(&b, 0, 1), 0),
        Err(PostError::LinkDown(_))
    ));
    assert_eq!(a.connect(&b.local_addr()), Err(ConnectError::Shutdown));
    assert!(a.published_paths().is_empty());
    // The peer, only waiting to receive, learns that the link is gone.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert_eq!(b.poll_ready(&mut cx), Poll::Ready(()));
    let c = poll(&mut b);
    assert_eq!(c.last().unwrap().status, WcStatus::PeerGone);
    assert!(matches!(
        b.post_write_imm(1, src(1), dst(&a, 0, 1), 0),
        Err(PostError::LinkDown(_))
    ));
}

#[test]
fn queued_writes_fail_on_shutdown() {
    let s = scope("queued");
    let mut a = transport(&s, "a", ShmConfig::default());
    let b = {
        let mut b = transport(&s, "b", ShmConfig::default());
        b.register(64).unwrap();
        b
    };
    a.register(64).unwrap();
    a.connect(&b.local_addr()).unwrap();
    a.post_write_imm(1, src(1), dst(&b, 0, 1), 0).unwrap();
    a.post_write_imm(2, src(1), dst(&b, 0, 1), 0).unwrap();
    a.shutdown();
    let c = poll(&mut a);
    let statuses: Vec<_> = c.iter().map(|c| (c.wr_id, c.status)).collect();
    assert_eq!(
        statuses,
        vec![
            (1, WcStatus::Cancelled),
            (2, WcStatus::Cancelled),
            (0, WcStatus::Cancelled)
        ]
    );
}

/// A receiver that went to sleep is woken by the writer's datagram (one
/// thread, so the receiver is provably asleep when the write happens).
#[test]
fn sleeping_receiver_is_woken() {
    let s = scope("wake");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut a, mut b) = pair(&s, 4096, ShmConfig::default());
        poll(&mut a);
        poll(&mut b);
        let d = dst(&b, 0, 4);
        let mut got = VecDeque::new();
        let waiter = async {
            poll_fn(|cx| loop {
                let mut out = Vec::new();
                if b.poll_completions(&mut out).unwrap() > 0 {
                    got.extend(out);
                    return Poll::Ready(());
                }
                match b.poll_ready(cx) {
                    Poll::Ready(()) => continue,
                    Poll::Pending => return Poll::Pending,
                }
            })
            .await;
            b.stats().clone()
        };
        let writer = async {
            tokio::task::yield_now().await;
            a.post_write_imm(1, src(4), d, 77).unwrap();
            a.stats().clone()
        };
        let (bs, as_) = tokio::join!(waiter, writer);
        assert_eq!(got.pop_front(), Some(recv(77, 4)));
        assert!(bs.sleeps >= 1, "{bs:?}");
        assert_eq!(as_.wakes_sent, 1, "{as_:?}");
    });
}

/// Waiting for space in a full ring: the consumer's drain wakes the producer.
#[test]
fn producer_waiting_for_space_is_woken() {
    let s = scope("space");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut a, mut b) = pair(&s, 4096, small_ring(2));
        let d = dst(&b, 0, 1);
        a.post_write_imm(1, src(1), d, 0).unwrap();
        a.post_write_imm(2, src(1), d, 0).unwrap();
        assert!(matches!(
            a.post_write_imm(3, src(1), d, 0),
            Err(PostError::QueueFull { .. })
        ));
        poll(&mut a);
        let waiter = async {
            poll_fn(|cx| {
                let mut out = Vec::new();
                a.poll_completions(&mut out).unwrap();
                a.poll_ready(cx)
            })
            .await;
            a.post_write_imm(3, src(1), d, 0).unwrap();
            a.stats().clone()
        };
        let drainer = async {
            tokio::task::yield_now().await;
            poll(&mut b).len()
        };
        let (astats, drained) = tokio::join!(waiter, drainer);
        assert_eq!(drained, 2);
        assert!(astats.sleeps >= 1);
        assert_eq!(b.stats().wakes_sent, 1);
    });
}

#[test]
fn stale_sweep_only_removes_dead_owners() {
    let s = scope("sweep");
    // A live transport of the same scope and alias is left alone.
    let mut live = transport(&s, "x", ShmConfig::default());
    live.register(64).unwrap();
    let other = transport(&s, "x", ShmConfig::default());
    assert_eq!(other.stats().stale_removed, 0);
    assert_eq!(live.published_paths().len(), 2);
    let rep = ShmTransport::sweep_stale(Path::new("/dev/shm"), &s, None).unwrap();
    assert_eq!((rep.removed, rep.live_skipped), (0, 2));
    drop((live, other));
    assert_eq!(leftovers(&s), Vec::<String>::new());
}

/// A peer that maps nothing back and never accepts us: the link-up deadline
/// ends the wait with `PeerGone`, and the queued write fails with it.
#[test]
fn peer_that_never_accepts_times_out() {
    let s = scope("noaccept");
    let cfg = ShmConfig {
        connect_timeout: std::time::Duration::from_millis(1),
        ..ShmConfig::default()
    };
    let mut a = transport(&s, "a", cfg);
    let mut b = transport(&s, "b", ShmConfig::default());
    a.register(64).unwrap();
    b.register(64).unwrap();
    a.connect(&b.local_addr()).unwrap();
    a.post_write_imm(1, src(1), dst(&b, 0, 1), 0).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        poll_fn(|cx| {
            let mut out = Vec::new();
            a.poll_completions(&mut out).unwrap();
            if !out.is_empty() {
                return Poll::Ready(out);
            }
            match a.poll_ready(cx) {
                Poll::Ready(()) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    });
    assert_eq!(
        got[0],
        Completion {
            status: WcStatus::PeerGone,
            ..done(1)
        }
    );
    assert!(a.link_failure().unwrap().cause.contains("did not accept"));
}

#[test]
fn config_is_checked() {
    let n = ShmNaming {
        scope: scope("cfg"),
        alias: "a".into(),
        incarnation: 0,
    };
    assert!(ShmTransport::new(n.clone(), ShmConfig::default()).is_err());
    let n = ShmNaming { incarnation: 5, ..n };
    assert!(ShmTransport::new(n.clone(), small_ring(3)).is_err());
    assert!(ShmTransport::new(n, small_ring(1 << 17)).is_err());
}
