//! The mailbox RPC over the real TCP backend, without the control plane:
//! content of every size, limits, and every way a pending call must end.

use std::rc::Rc;
use std::time::Duration;

use slimebench::bench::method::fill_pattern;
use slimebench::bench::plan::ALL_SIZES;
use slimebench::rpc::{Alarm, Echo, RpcClient, RpcError, RpcServer, ServeEnd, SpinPolicy, Trip};
use slimebench_proto::header::METHOD_ECHO;
use slimebench_proto::{CompletionKind, Geometry, Header, LocalSlice, Transport, WcStatus, HEADER_LEN};
use slimebench_tcp::{TcpConfig, TcpTransport};

use crate::util::{block_on, poll_until};

fn transport(id: u64, max: usize) -> TcpTransport {
    let cfg = TcpConfig {
        max_write_len: max,
        ..TcpConfig::default()
    };
    TcpTransport::bind("127.0.0.1:0".parse().unwrap(), None, id, cfg).unwrap()
}

/// A connected client (endpoint 1, dials) and server transport (endpoint 2).
fn pair(g: Geometry) -> (RpcClient<TcpTransport>, RpcServer<TcpTransport>, Rc<Alarm>, Rc<Alarm>) {
    let ca = Rc::new(Alarm::new());
    let sa = Rc::new(Alarm::new());
    let mut c = RpcClient::new(transport(1, g.slot_size as usize), g, ca.clone(), SpinPolicy::NONE).unwrap();
    let mut s = RpcServer::new(transport(2, g.slot_size as usize), g, sa.clone(), SpinPolicy::NONE).unwrap();
    let (caddr, saddr) = (c.transport().local_addr(), s.transport().local_addr());
    c.transport_mut().connect(&saddr).unwrap();
    s.transport_mut().connect(&caddr).unwrap();
    c.attach(s.mailbox_desc());
    s.attach(c.mailbox_desc());
    (c, s, ca, sa)
}

fn geometry(slot_size: u64, slot_count: u32) -> Geometry {
    Geometry { slot_size, slot_count }
}

#[test]
fn echo_of_every_size_returns_the_same_bytes() {
    let g = geometry(16 * 1024 * 1024 + HEADER_LEN as u64, 1);
    block_on(tokio::task::LocalSet::new().run_until(async {
        let (mut c, mut s, _, _) = pair(g);
        let server = tokio::task::spawn_local(async move { s.serve(&mut Echo).await });
        for (i, &size) in ALL_SIZES.iter().filter(|&&s| s <= 16 << 20).enumerate() {
            let mut payload = vec![0u8; size];
            fill_pattern(&mut payload);
            payload[0] = i as u8;
            for _ in 0..2 {
                let reply = c.call(METHOD_ECHO, &payload).await.unwrap();
                assert_eq!(reply.payload().len(), size);
                assert!(reply.payload() == &payload[..], "echo of {size} bytes differs");
            }
            // The in-place path: the payload is written straight into the send slot.
            let reply = c
                .call_with(METHOD_ECHO, size, |_, area| area.copy_from_slice(&payload))
                .await
                .unwrap();
            assert!(reply.payload() == &payload[..]);
        }
        assert_eq!(c.stats().stray_replies, 0);
        assert_eq!(c.stats().bad_messages, 0);
        c.shutdown();
        let end = server.await.unwrap().unwrap();
        assert!(matches!(end, ServeEnd::PeerGone(_)), "{end:?}");
    }));
}

#[test]
fn oversized_payload_and_busy_slots_are_clear_errors() {
    let g = geometry(4096, 1);
    block_on(async {
        let (mut c, _s, _, _) = pair(g);
        let err = c.start_call(METHOD_ECHO, &[0u8; 5000]).unwrap_err();
        assert_eq!(err, RpcError::PayloadTooLarge { len: 5000, max: 4080 });
        assert!(err.to_string().contains("--buf-mb"));
        c.start_call(METHOD_ECHO, &[1u8; 10]).unwrap();
        assert_eq!(
            c.start_call(METHOD_ECHO, &[1u8; 10]).unwrap_err(),
            RpcError::Busy { slots: 1 }
        );
    });
}

#[test]
fn unknown_method_gets_a_remote_error_and_the_session_goes_on() {
    let g = geometry(4096, 2);
    block_on(tokio::task::LocalSet::new().run_until(async {
        let (mut c, mut s, _, _) = pair(g);
        tokio::task::spawn_local(async move { s.serve(&mut Echo).await });
        match c.call(77, b"hello").await {
            Err(RpcError::Remote(msg)) => assert!(msg.contains("unknown method 77"), "{msg}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("expected an exception"),
        }
        let r = c.call(METHOD_ECHO, b"still fine").await.unwrap();
        assert_eq!(r.payload(), b"still fine");
    }));
}

#[test]
fn peer_vanishing_mid_call_fails_the_call_with_peer_gone() {
    let g = geometry(4096, 1);
    block_on(tokio::task::LocalSet::new().run_until(async {
        let (mut c, mut s, _, _) = pair(g);
        let call = c.start_call(METHOD_ECHO, &[3u8; 100]).unwrap();
        // The server transport receives the request, then its process "dies".
        let server = tokio::task::spawn_local(async move {
            poll_until(s.transport_mut(), Duration::from_secs(10), |_, got| {
                got.iter()
                    .any(|x| x.status.is_ok() && matches!(x.kind, CompletionKind::RecvImm { .. }))
            })
            .await;
            drop(s);
        });
        let r = tokio::time::timeout(Duration::from_secs(5), std::future::poll_fn(|cx| c.poll_call(cx, call)))
            .await
            .expect("a call whose peer vanished must not hang");
        server.await.unwrap();
        match r {
            Err(RpcError::LinkDown(f)) => {
                assert_eq!(f.status, WcStatus::PeerGone, "{f}");
                assert!(f.cause.contains("peer closed the connection"), "{f}");
            }
            other => panic!("{other:?}"),
        }
        // Later calls fail at once with the same reason.
        assert!(matches!(c.start_call(METHOD_ECHO, b"x"), Err(RpcError::LinkDown(_))));
    }));
}

#[test]
fn shutdown_twice_is_harmless_and_fails_the_pending_call() {
    let g = geometry(4096, 1);
    block_on(async {
        let (mut c, _s, _, _) = pair(g);
        let call = c.start_call(METHOD_ECHO, b"never answered").unwrap();
        c.shutdown();
        c.shutdown();
        let r = std::future::poll_fn(|cx| c.poll_call(cx, call)).await;
        assert_eq!(r.unwrap_err(), RpcError::Shutdown);
        assert_eq!(c.start_call(METHOD_ECHO, b"x").unwrap_err(), RpcError::Shutdown);
        assert!(c
            .transport()
            .link_failure()
            .is_some_and(|f| f.status == WcStatus::Cancelled));
    });
}

#[test]
fn transport_shutdown_twice_cancels_each_pending_write_once() {
    block_on(async {
        let mut a = transport(1, 1 << 20);
        let b = transport(2, 1 << 20);
        let mr = a.register(1 << 20).unwrap();
        a.connect(&b.local_addr()).unwrap();
        // b never polls: its socket buffer fills and our writes stay queued.
        let dst = slimebench_proto::RemoteAddr { rkey: 1, addr: 0 };
        let mut posted = 0;
        for wr in 0..64 {
            let src = LocalSlice {
                mr,
                offset: 0,
                len: 1 << 20,
            };
            if a.post_write_imm(wr, src, dst, 0).is_ok() {
                posted += 1;
            }
        }
        a.shutdown();
        a.shutdown();
        let mut got = Vec::new();
        a.poll_completions(&mut got).unwrap();
        let cancelled = got.iter().filter(|c| c.status == WcStatus::Cancelled).count();
        let writes = got
            .iter()
            .filter(|c| matches!(c.kind, CompletionKind::WriteDone))
            .count();
        assert_eq!(writes, posted, "every posted write completes exactly once");
        assert!(cancelled >= 1);
        let src = LocalSlice { mr, offset: 0, len: 8 };
        assert!(matches!(
            a.post_write_imm(99, src, dst, 0),
            Err(slimebench_proto::PostError::LinkDown(_))
        ));
        drop(b);
    });
}

#[test]
fn alarm_unblocks_a_pending_call_and_an_idle_server() {
    let g = geometry(4096, 1);
    block_on(tokio::task::LocalSet::new().run_until(async {
        let (mut c, s, ca, sa) = pair(g);
        // Client side: the server never answers; the control plane says it left.
        let call = c.start_call(METHOD_ECHO, b"lost").unwrap();
        let trip = ca.clone();
        tokio::task::spawn_local(async move {
            tokio::task::yield_now().await;
            trip.trip(Trip::PeerGone("cleanup event from bench-worker".into()));
        });
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            std::future::poll_fn(|cx| c.poll_call(cx, call)),
        )
        .await
        .expect("the alarm must end the wait");
        assert_eq!(
            r.unwrap_err(),
            RpcError::PeerGone("cleanup event from bench-worker".into())
        );
        drop((s, sa));
        // Server side: idle in its serve loop with the client still connected
        // (the link says nothing), only the control plane knows.
        let (_c, mut s, _, sa) = pair(g);
        let trip = sa.clone();
        tokio::task::spawn_local(async move {
            tokio::task::yield_now().await;
            trip.trip(Trip::PeerGone("lease of bench-driver expired".into()));
        });
        let end = tokio::time::timeout(Duration::from_secs(10), s.serve(&mut Echo))
            .await
            .expect("the alarm must end the serve loop")
            .unwrap();
        assert_eq!(end, ServeEnd::PeerGone("lease of bench-driver expired".into()));
    }));
}

#[test]
fn malformed_request_is_answered_with_an_exception() {
    let g = geometry(4096, 1);
    block_on(tokio::task::LocalSet::new().run_until(async {
        // A raw client: its own mailbox, posting a header that lies about its length.
        let mut raw = transport(1, 4096);
        let send = raw.register(4096).unwrap();
        let mailbox = raw.register(4096).unwrap();
        let mut s = RpcServer::new(transport(2, 4096), g, Rc::new(Alarm::new()), SpinPolicy::NONE).unwrap();
        raw.connect(&s.transport().local_addr()).unwrap();
        s.transport_mut().connect(&raw.local_addr()).unwrap();
        s.attach(raw.mr_desc(mailbox));
        let server_mailbox = s.mailbox_desc();
        let server = tokio::task::spawn_local(async move {
            let end = s.serve(&mut Echo).await;
            (end, s.stats().clone())
        });
        let mut h = Header::request(METHOD_ECHO, 100, 42);
        h.total_len = 2000; // but only 116 bytes are written
        h.encode(&mut raw.mr_mut(send)[..16]);
        let src = LocalSlice {
            mr: send,
            offset: 0,
            len: 116,
        };
        raw.post_write_imm(1, src, server_mailbox.at(0, 116).unwrap(), 0)
            .unwrap();
        poll_until(&mut raw, Duration::from_secs(10), |_, got| {
            got.iter()
                .any(|x| x.status.is_ok() && matches!(x.kind, CompletionKind::RecvImm { .. }))
        })
        .await;
        let reply = Header::decode(raw.mr(mailbox)).unwrap();
        assert!(reply.reply && reply.exception);
        assert_eq!(reply.request_id, 42);
        let msg = String::from_utf8_lossy(&raw.mr(mailbox)[HEADER_LEN..reply.total_len as usize]).into_owned();
        assert!(
            msg.contains("malformed request") && msg.contains("total_len 2000"),
            "{msg}"
        );
        raw.shutdown();
        let (end, stats) = server.await.unwrap();
        assert!(matches!(end, Ok(ServeEnd::PeerGone(_))));
        assert_eq!(stats.bad_requests, 1);
    }));
}

/// The TCP backend's framing and validation are generic over the byte stream:
/// here they run on in-memory pipes (what a simulated network plugs in),
/// through the same RPC session, with a dropped pipe read as a closed peer.
mod over_in_memory_pipes {
    use super::*;
    use slimebench_tcp::{AsyncStream, FramedTransport, StreamFactory};
    use std::io;
    use std::task::{Context, Poll};
    use tokio::io::DuplexStream;

    /// One end of a pre-made pipe, handed out by dial (dialer) or accept (acceptor).
    struct Pipe(Option<DuplexStream>);

    impl StreamFactory for Pipe {
        type Stream = AsyncStream<DuplexStream>;
        fn listen_addr(&self) -> String {
            "pipe".into()
        }
        fn dial(&mut self, _addr: &str) -> Result<(), slimebench_proto::ConnectError> {
            Ok(())
        }
        fn poll_dial(&mut self, _: &mut Context<'_>) -> Poll<io::Result<Self::Stream>> {
            self.0.take().map_or(Poll::Pending, |s| Poll::Ready(Ok(AsyncStream(s))))
        }
        fn poll_accept(&mut self, _: &mut Context<'_>) -> Poll<io::Result<Self::Stream>> {
            self.0.take().map_or(Poll::Pending, |s| Poll::Ready(Ok(AsyncStream(s))))
        }
    }

    #[test]
    fn echo_over_duplex_pipes_and_peer_loss() {
        let g = geometry(1 << 20, 1);
        block_on(tokio::task::LocalSet::new().run_until(async {
            let (a, b) = tokio::io::duplex(64 * 1024);
            let cfg = || TcpConfig {
                max_write_len: 1 << 20,
                ..TcpConfig::default()
            };
            let ct = FramedTransport::new(Pipe(Some(a)), 1, cfg());
            let st = FramedTransport::new(Pipe(Some(b)), 2, cfg());
            let mut c = RpcClient::new(ct, g, Rc::new(Alarm::new()), SpinPolicy::NONE).unwrap();
            let mut s = RpcServer::new(st, g, Rc::new(Alarm::new()), SpinPolicy::NONE).unwrap();
            let (caddr, saddr) = (c.transport().local_addr(), s.transport().local_addr());
            c.transport_mut().connect(&saddr).unwrap();
            s.transport_mut().connect(&caddr).unwrap();
            c.attach(s.mailbox_desc());
            s.attach(c.mailbox_desc());
            let server = tokio::task::spawn_local(async move { s.serve(&mut Echo).await });
            for size in [1usize, 1024, 200_000, (1 << 20) - HEADER_LEN] {
                let mut payload = vec![0u8; size];
                fill_pattern(&mut payload);
                let reply = c.call(METHOD_ECHO, &payload).await.unwrap();
                assert!(reply.payload() == &payload[..], "echo of {size} bytes over pipes");
            }
            c.shutdown();
            let end = server.await.unwrap().unwrap();
            assert!(
                matches!(end, ServeEnd::PeerGone(ref why) if why.contains("closed")),
                "{end:?}"
            );
        }));
    }
}
