//! The serving side of the mailbox RPC: requests are handled in place in the
//! mailbox slot they arrived in, and the reply is written back from there.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll};

use slimebench_proto::{
    Completion, CompletionKind, Geometry, Header, HeaderError, LocalSlice, MrDesc, MrKey, PostError, Transport,
    HEADER_LEN,
};

use super::wait::{SpinPolicy, Spinner, WorkBudget};
use super::{Alarm, RpcError, Trip};

/// What a handler made of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Reply with the first `len` bytes of the slot's payload area.
    Reply { len: usize },
    /// Reply with an exception carrying this message.
    Error(String),
}

/// Handles requests in place.
pub trait Handler {
    /// `buf` is the slot's whole payload area; the request is `buf[..len]`.
    /// A reply is written into `buf` (in place) and its length returned.
    fn handle(&mut self, method: u16, buf: &mut [u8], len: usize) -> Outcome;
}

/// The raw-bytes echo: the reply is the request, not copied at all.
#[derive(Default, Debug, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    fn handle(&mut self, method: u16, _buf: &mut [u8], len: usize) -> Outcome {
        if method == slimebench_proto::header::METHOD_ECHO {
            Outcome::Reply { len }
        } else {
            Outcome::Error(format!("unknown method {method}"))
        }
    }
}

/// How a serve loop ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeEnd {
    /// The peer went away (link closed or the control plane said so).
    PeerGone(String),
    /// We were asked to shut down.
    Shutdown,
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub requests: u64,
    /// Requests refused (bad slot, bad header): answered with an exception
    /// where the slot was valid, dropped otherwise.
    pub bad_requests: u64,
    /// Replies that could not be posted.
    pub dropped_replies: u64,
}

/// A mailbox RPC server owning its transport.
pub struct RpcServer<T: Transport> {
    t: T,
    geometry: Geometry,
    mailbox_mr: MrKey,
    peer: Option<MrDesc>,
    cq: Vec<Completion>,
    alarm: Rc<Alarm>,
    spin: SpinPolicy,
    next_wr: u64,
    stats: ServerStats,
    last_bad: Option<HeaderError>,
}

impl<T: Transport> RpcServer<T> {
    /// Register the request mailbox on `t`.
    ///
    /// # Errors
    /// [`RpcError::Register`] when memory cannot be registered.
    pub fn new(mut t: T, geometry: Geometry, alarm: Rc<Alarm>, spin: SpinPolicy) -> Result<Self, RpcError> {
        let mailbox_mr = t.register(geometry.mailbox_len() as usize)?;
        Ok(RpcServer {
            t,
            geometry,
            mailbox_mr,
            peer: None,
            cq: Vec::with_capacity(64),
            alarm,
            spin,
            next_wr: 1,
            stats: ServerStats::default(),
            last_bad: None,
        })
    }

    pub fn mailbox_desc(&self) -> MrDesc {
        self.t.mr_desc(self.mailbox_mr)
    }

    pub fn transport(&self) -> &T {
        &self.t
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.t
    }

    /// Reply into `peer` (the client's mailbox, from rendezvous).
    pub fn attach(&mut self, peer: MrDesc) {
        self.peer = Some(peer);
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// The most recent malformed request, for the exit report.
    pub fn last_bad_request(&self) -> Option<&HeaderError> {
        self.last_bad.as_ref()
    }

    /// Shut down: the transport fails everything pending. Idempotent.
    pub fn shutdown(&mut self) {
        self.t.shutdown();
    }

    /// Serve requests with `handler` until the peer goes away or the alarm trips.
    ///
    /// # Errors
    /// [`RpcError::NotAttached`] before rendezvous, or a local transport fault.
    pub async fn serve(&mut self, handler: &mut impl Handler) -> Result<ServeEnd, RpcError> {
        if self.peer.is_none() {
            return Err(RpcError::NotAttached);
        }
        let end = poll_fn(|cx| self.poll_serve(cx, handler)).await;
        // Whatever ended it, nothing may stay pending (the original's server
        // could block forever here).
        self.t.shutdown();
        end
    }

    fn poll_serve(&mut self, cx: &mut Context<'_>, handler: &mut impl Handler) -> Poll<Result<ServeEnd, RpcError>> {
        let mut spinner = Spinner::new(self.spin);
        let mut idle_ready = 0u32;
        let mut budget = WorkBudget::default();
        loop {
            match self.alarm.tripped() {
                Some(Trip::PeerGone(why)) => return Poll::Ready(Ok(ServeEnd::PeerGone(why))),
                Some(Trip::Shutdown) => return Poll::Ready(Ok(ServeEnd::Shutdown)),
                None => {}
            }
            self.cq.clear();
            let n = match self.t.poll_completions(&mut self.cq) {
                Ok(n) => n,
                Err(e) => return Poll::Ready(Err(e.into())),
            };
            if n > 0 {
                // What this round brought is served before any yield.
                let budget_left = budget.spend();
                spinner.reset();
                let cq = std::mem::take(&mut self.cq);
                for c in &cq {
                    if !c.status.is_ok() {
                        let why = self
                            .t
                            .link_failure()
                            .map_or_else(|| c.status.to_string(), ToString::to_string);
                        self.cq = cq;
                        return Poll::Ready(Ok(ServeEnd::PeerGone(why)));
                    }
                    if let CompletionKind::RecvImm { imm, len } = c.kind {
                        self.on_request(handler, imm, len);
                    }
                }
                self.cq = cq;
                if !budget_left {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                continue;
            }
            if self.t.busy_poll_helps() && spinner.keep_spinning() {
                continue;
            }
            self.alarm.register(cx.waker());
            match self.t.poll_ready(cx) {
                Poll::Ready(()) => {
                    idle_ready += 1;
                    if idle_ready > 64 {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn on_request(&mut self, handler: &mut impl Handler, slot: u32, len: u32) {
        self.stats.requests += 1;
        if slot >= self.geometry.slot_count {
            // No valid slot to answer from: count it and drop it.
            self.stats.bad_requests += 1;
            return;
        }
        let slot_size = self.geometry.slot_size as usize;
        let offset = slot as usize * slot_size;
        let area = &mut self.t.mr_mut(self.mailbox_mr)[offset..offset + slot_size];
        let outcome = match Header::decode_message(area, len, slot_size as u64) {
            Ok(h) if !h.reply => {
                let payload_len = h.payload_len();
                let outcome = handler.handle(h.method, &mut area[HEADER_LEN..], payload_len);
                Some((h, outcome))
            }
            Ok(h) => {
                self.stats.bad_requests += 1;
                self.last_bad = None;
                Some((h, Outcome::Error("a reply was sent to the server".into())))
            }
            Err(e) => {
                self.stats.bad_requests += 1;
                // Answer with the request id as written, so the caller fails
                // that call instead of waiting for it.
                let request_id = u64::from_le_bytes(area[8..16].try_into().expect("8 bytes"));
                let msg = format!("malformed request: {e}");
                self.last_bad = Some(e);
                let h = Header {
                    method: 0,
                    reply: false,
                    exception: false,
                    total_len: HEADER_LEN as u32,
                    request_id,
                };
                Some((h, Outcome::Error(msg)))
            }
        };
        let Some((req, outcome)) = outcome else {
            return;
        };
        let max = slot_size - HEADER_LEN;
        let (exception, reply_len) = match outcome {
            Outcome::Reply { len } => {
                assert!(len <= max, "handler replied {len} bytes, slot holds {max}");
                (false, len)
            }
            Outcome::Error(msg) => {
                let n = msg.len().min(max);
                area[HEADER_LEN..HEADER_LEN + n].copy_from_slice(&msg.as_bytes()[..n]);
                (true, n)
            }
        };
        let total = HEADER_LEN + reply_len;
        Header {
            method: req.method,
            reply: true,
            exception,
            total_len: total as u32,
            request_id: req.request_id,
        }
        .encode(area);
        let peer = self.peer.expect("serve checks attachment");
        let Some(dst) = peer.at(offset as u64, total as u64) else {
            self.stats.dropped_replies += 1;
            return;
        };
        let src = LocalSlice {
            mr: self.mailbox_mr,
            offset,
            len: total,
        };
        let wr = self.next_wr;
        self.next_wr += 1;
        match self.t.post_write_imm(wr, src, dst, slot) {
            Ok(()) => {}
            // A client within its credits never fills our queue; one that
            // does loses the reply, nobody else does.
            Err(PostError::QueueFull { .. }) => self.stats.dropped_replies += 1,
            // The link is down: the completion loop reports it next.
            Err(_) => self.stats.dropped_replies += 1,
        }
    }
}
