//! A peer that keeps the link busy cannot starve what is polled beside the
//! data path: the call timeout and the control plane's alarm (the lease
//! watch) still fire while a flood of messages is still arriving.
//!
//! The flood is a transport that always has another message ready (to a slot
//! that does not exist, so each is counted and dropped), up to a large bound.
//! Without the work budget a poll would only return once the whole flood was
//! consumed; the tests assert the flood was still going when the timer fired.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use slimebench_proto::header::METHOD_ECHO;
use slimebench_proto::Header;
use slimebench_proto::{
    Completion, CompletionKind, ConnectError, Geometry, LinkFailure, LocalSlice, MrDesc, MrKey, PostError,
    RegisterError, RemoteAddr, Transport, TransportAddr, TransportError, TransportKind, WcStatus,
};

use super::wait::WORK_BUDGET;
use super::{Alarm, Echo, RpcClient, RpcError, RpcServer, ServeEnd, SpinPolicy, Trip};

/// Far more messages than a poll may handle, and than a test can consume
/// before its 50 ms timer (so "still flooding" separates yield from no yield).
const FLOOD: u64 = 20_000_000;
/// Messages per `poll_completions`.
const BATCH: u64 = 4;

const GEOMETRY: Geometry = Geometry {
    slot_size: 4096,
    slot_count: 1,
};

struct FloodTransport {
    regions: Vec<Vec<u8>>,
    /// Messages not yet delivered.
    remaining: u64,
    /// Echo mode: answer every posted call at once (its slot and length),
    /// instead of flooding.
    echo: bool,
    answer: Option<(u32, u32)>,
}

impl FloodTransport {
    fn new() -> Self {
        FloodTransport {
            regions: Vec::new(),
            remaining: FLOOD,
            echo: false,
            answer: None,
        }
    }

    /// A peer that always answers before the caller looks.
    fn instant_echo() -> Self {
        FloodTransport {
            echo: true,
            ..FloodTransport::new()
        }
    }
}

impl Transport for FloodTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Sim
    }
    fn register(&mut self, len: usize) -> Result<MrKey, RegisterError> {
        self.regions.push(vec![0; len]);
        Ok(MrKey(self.regions.len() as u32 - 1))
    }
    fn mr_desc(&self, mr: MrKey) -> MrDesc {
        MrDesc {
            addr: 0,
            len: self.regions[mr.0 as usize].len() as u64,
            rkey: mr.0,
        }
    }
    fn mr(&self, mr: MrKey) -> &[u8] {
        &self.regions[mr.0 as usize]
    }
    fn mr_mut(&mut self, mr: MrKey) -> &mut [u8] {
        &mut self.regions[mr.0 as usize]
    }
    fn local_addr(&self) -> TransportAddr {
        TransportAddr::Sim {
            node: 0,
            endpoint_id: 1,
        }
    }
    fn connect(&mut self, _peer: &TransportAddr) -> Result<(), ConnectError> {
        Ok(())
    }
    fn post_write_imm(&mut self, _wr_id: u64, src: LocalSlice, _dst: RemoteAddr, imm: u32) -> Result<(), PostError> {
        if self.echo {
            // The client registers its send area first, then its reply
            // mailbox: the reply is the request with the reply flag set,
            // in the same slot of the mailbox.
            let request = &self.regions[src.mr.0 as usize][src.offset..src.offset + src.len];
            let mut header = Header::decode(request).expect("the client wrote a valid header");
            header.reply = true;
            let reply = request.to_vec();
            let mailbox = &mut self.regions[1][src.offset..src.offset + src.len];
            mailbox.copy_from_slice(&reply);
            header.encode(mailbox);
            self.answer = Some((imm, src.len as u32));
        }
        Ok(())
    }
    fn poll_completions(&mut self, out: &mut Vec<Completion>) -> Result<usize, TransportError> {
        if self.echo {
            let Some((imm, len)) = self.answer.take() else {
                return Ok(0);
            };
            out.push(Completion {
                wr_id: 0,
                status: WcStatus::Ok,
                kind: CompletionKind::RecvImm { imm, len },
            });
            return Ok(1);
        }
        let n = self.remaining.min(BATCH);
        self.remaining -= n;
        for _ in 0..n {
            out.push(Completion {
                wr_id: 0,
                status: WcStatus::Ok,
                // Slot 7 of a one-slot mailbox: counted and dropped by both sides.
                kind: CompletionKind::RecvImm { imm: 7, len: 64 },
            });
        }
        Ok(n as usize)
    }
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
    fn link_failure(&self) -> Option<&LinkFailure> {
        None
    }
    fn shutdown(&mut self) {}
}

fn peer_mailbox() -> MrDesc {
    MrDesc {
        addr: 0,
        len: GEOMETRY.mailbox_len(),
        rkey: 9,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn one_client_poll_handles_a_bounded_amount_of_a_flood_and_asks_to_be_polled_again() {
    let mut client = RpcClient::new(FloodTransport::new(), GEOMETRY, Rc::new(Alarm::new()), SpinPolicy::NONE).unwrap();
    client.attach(peer_mailbox());
    let call = client.start_call(METHOD_ECHO, &[1; 64]).unwrap();
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(client.poll_call(&mut cx, call).is_pending());
    let consumed = FLOOD - client.transport().remaining;
    assert_eq!(consumed, u64::from(WORK_BUDGET) * BATCH);
    assert_eq!(client.stats().stray_replies, consumed);
    assert_eq!(
        counter.0.load(Ordering::Relaxed),
        1,
        "a yielding poll wakes its own task"
    );
}

#[test]
fn call_timeout_fires_while_a_peer_floods_the_link() {
    runtime().block_on(async {
        let mut client =
            RpcClient::new(FloodTransport::new(), GEOMETRY, Rc::new(Alarm::new()), SpinPolicy::NONE).unwrap();
        client.attach(peer_mailbox());
        client.set_call_timeout(Some(Duration::from_millis(50)));
        let err = client
            .call(METHOD_ECHO, &[1; 64])
            .await
            .err()
            .expect("no reply can come");
        assert_eq!(err, RpcError::Timeout { after_ms: 50 });
        assert!(
            client.transport().remaining > 0,
            "the timeout only fired after the flood ended"
        );
        assert!(client.stats().stray_replies > 0);
    });
}

#[test]
fn lease_watch_ends_a_serve_loop_while_a_peer_floods_the_link() {
    runtime().block_on(tokio::task::LocalSet::new().run_until(async {
        let alarm = Rc::new(Alarm::new());
        let mut server = RpcServer::new(FloodTransport::new(), GEOMETRY, alarm.clone(), SpinPolicy::NONE).unwrap();
        server.attach(peer_mailbox());
        // Stands for the agent's lease watch, a task on the same thread.
        tokio::task::spawn_local(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            alarm.trip(Trip::PeerGone("lease of bench-driver expired".into()));
        });
        let end = server.serve(&mut Echo).await.unwrap();
        assert_eq!(end, ServeEnd::PeerGone("lease of bench-driver expired".into()));
        assert!(
            server.transport().remaining > 0,
            "the alarm only ran after the flood ended"
        );
        assert!(server.stats().bad_requests > 0);
    }));
}

/// Without yielding between calls, a peer that always answers within the
/// spin window keeps a caller's loop of calls from ever returning to the
/// executor: its own lease refresh (polled beside it) would starve and the
/// lease lapse.
#[test]
fn a_caller_whose_replies_always_come_at_once_still_lets_its_heartbeat_run() {
    runtime().block_on(async {
        let mut client = RpcClient::new(
            FloodTransport::instant_echo(),
            GEOMETRY,
            Rc::new(Alarm::new()),
            SpinPolicy::NONE,
        )
        .unwrap();
        client.attach(peer_mailbox());
        const CALLS: u64 = 5_000_000;
        let mut done = 0u64;
        let calls = async {
            while done < CALLS {
                client.call(METHOD_ECHO, &[7; 64]).await.expect("echo");
                done += 1;
            }
        };
        let heartbeat = tokio::time::sleep(Duration::from_millis(50));
        tokio::select! {
            () = calls => panic!("all {CALLS} calls ended before the 50 ms heartbeat ran"),
            () = heartbeat => {}
        }
        assert!(done > 0, "calls ran");
        assert!(done < CALLS);
    });
}
