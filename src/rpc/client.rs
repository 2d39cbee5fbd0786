//! The calling side of the mailbox RPC.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use slimebench_proto::{
    CallId, CallTable, Completion, CompletionKind, Geometry, Header, LocalSlice, MrDesc, MrKey, Transport, HEADER_LEN,
};

use super::wait::{SpinPolicy, Spinner, WorkBudget};
use super::{Alarm, RpcError, Trip};

/// Counters (the data path never logs per message).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub calls: u64,
    /// Replies that matched no waiting call (late, duplicated, wrong slot):
    /// dropped, never delivered to another call.
    pub stray_replies: u64,
    /// Messages whose header did not decode.
    pub bad_messages: u64,
}

/// A mailbox RPC client owning its transport.
pub struct RpcClient<T: Transport> {
    t: T,
    geometry: Geometry,
    send_mr: MrKey,
    mailbox_mr: MrKey,
    peer: Option<MrDesc>,
    calls: CallTable,
    cq: Vec<Completion>,
    failed: Option<RpcError>,
    alarm: Rc<Alarm>,
    spin: SpinPolicy,
    call_timeout: Option<Duration>,
    stats: ClientStats,
    /// Work since this session's task last yielded: a peer that floods the
    /// link, or one that always answers within the spin window, would
    /// otherwise keep a caller from ever returning to the executor (starving
    /// the call timeout, heartbeat and lease watch polled beside it).
    work: WorkBudget,
}

impl<T: Transport> RpcClient<T> {
    /// Register the send area and the reply mailbox on `t`.
    ///
    /// # Errors
    /// [`RpcError::Register`] when memory cannot be registered.
    pub fn new(mut t: T, geometry: Geometry, alarm: Rc<Alarm>, spin: SpinPolicy) -> Result<Self, RpcError> {
        let len = geometry.mailbox_len() as usize;
        let send_mr = t.register(len)?;
        let mailbox_mr = t.register(len)?;
        Ok(RpcClient {
            t,
            geometry,
            send_mr,
            mailbox_mr,
            peer: None,
            calls: CallTable::new(geometry.slot_count),
            cq: Vec::with_capacity(64),
            failed: None,
            alarm,
            spin,
            call_timeout: None,
            stats: ClientStats::default(),
            work: WorkBudget::default(),
        })
    }

    /// Bound every call's wait (tokio's clock: simulated time under the simulator).
    pub fn set_call_timeout(&mut self, t: Option<Duration>) {
        self.call_timeout = t;
    }

    /// Our reply mailbox, to publish at rendezvous.
    pub fn mailbox_desc(&self) -> MrDesc {
        self.t.mr_desc(self.mailbox_mr)
    }

    pub fn transport(&self) -> &T {
        &self.t
    }

    /// The transport, for the rendezvous to connect it.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.t
    }

    /// Use `peer` (the server's mailbox, from rendezvous) for requests.
    pub fn attach(&mut self, peer: MrDesc) {
        self.peer = Some(peer);
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Largest payload one call carries.
    pub fn max_payload(&self) -> usize {
        self.geometry.max_payload() as usize
    }

    /// Fail the session: every later call returns `e`. Idempotent; the first
    /// reason sticks. The transport is shut down so nothing stays pending.
    fn fail(&mut self, e: RpcError) {
        if self.failed.is_none() {
            self.failed = Some(e);
            self.calls.reset();
            self.t.shutdown();
        }
    }

    /// Shut the session down: pending and later calls fail with [`RpcError::Shutdown`].
    /// Idempotent.
    pub fn shutdown(&mut self) {
        self.fail(RpcError::Shutdown);
    }

    /// Why the session failed, if it has.
    pub fn failure(&self) -> Option<&RpcError> {
        self.failed.as_ref()
    }

    /// Copy `payload` into a free send slot and post it.
    ///
    /// # Errors
    /// [`RpcError::PayloadTooLarge`], [`RpcError::Busy`], a post error, or the
    /// session's failure.
    pub fn start_call(&mut self, method: u16, payload: &[u8]) -> Result<CallId, RpcError> {
        self.start_call_with(method, payload.len(), |_, area| area.copy_from_slice(payload))
    }

    /// Post a call of `len` payload bytes that `fill` writes straight into the
    /// registered send slot (no intermediate buffer, as an RDMA application
    /// would). `fill` gets the call's id and the slot's payload area.
    ///
    /// # Errors
    /// As [`RpcClient::start_call`].
    pub fn start_call_with(
        &mut self,
        method: u16,
        len: usize,
        fill: impl FnOnce(CallId, &mut [u8]),
    ) -> Result<CallId, RpcError> {
        self.check_alarm();
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let max = self.max_payload();
        if len > max {
            return Err(RpcError::PayloadTooLarge { len, max });
        }
        let peer = self.peer.ok_or(RpcError::NotAttached)?;
        let call = self.calls.begin().ok_or(RpcError::Busy {
            slots: self.geometry.slot_count,
        })?;
        let slot_size = self.geometry.slot_size as usize;
        let offset = call.slot as usize * slot_size;
        let total = HEADER_LEN + len;
        let area = &mut self.t.mr_mut(self.send_mr)[offset..offset + total];
        Header::request(method, len, call.request_id).encode(area);
        fill(call, &mut area[HEADER_LEN..]);
        let dst = peer
            .at(offset as u64, total as u64)
            .expect("rendezvous checked the peer mailbox covers every slot");
        let src = LocalSlice {
            mr: self.send_mr,
            offset,
            len: total,
        };
        if let Err(e) = self.t.post_write_imm(call.request_id, src, dst, call.slot) {
            self.calls.withdraw(call);
            let e = match e {
                slimebench_proto::PostError::LinkDown(f) => RpcError::LinkDown(f),
                other => RpcError::Post(other),
            };
            if e.is_fatal() {
                self.fail(e.clone());
            }
            return Err(e);
        }
        self.stats.calls += 1;
        Ok(call)
    }

    fn check_alarm(&mut self) {
        if self.failed.is_none() {
            match self.alarm.tripped() {
                Some(Trip::PeerGone(why)) => self.fail(RpcError::PeerGone(why)),
                Some(Trip::Shutdown) => self.fail(RpcError::Shutdown),
                None => {}
            }
        }
    }

    /// Process completions; returns whether any arrived.
    fn drain(&mut self) -> bool {
        self.cq.clear();
        match self.t.poll_completions(&mut self.cq) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) => {
                self.fail(e.into());
                return true;
            }
        }
        let cq = std::mem::take(&mut self.cq);
        for c in &cq {
            if !c.status.is_ok() {
                let failure = self.t.link_failure().cloned().unwrap_or(slimebench_proto::LinkFailure {
                    status: c.status,
                    cause: "completion with error status".into(),
                });
                self.fail(RpcError::LinkDown(failure));
                break;
            }
            if let CompletionKind::RecvImm { imm, len } = c.kind {
                self.on_reply(imm, len);
            }
        }
        self.cq = cq;
        true
    }

    fn on_reply(&mut self, slot: u32, len: u32) {
        if slot >= self.geometry.slot_count {
            self.stats.stray_replies += 1;
            return;
        }
        let slot_size = self.geometry.slot_size;
        let offset = slot as usize * slot_size as usize;
        let msg = &self.t.mr(self.mailbox_mr)[offset..offset + slot_size as usize];
        match Header::decode_message(msg, len, slot_size) {
            Ok(h) if h.reply => match self.calls.on_reply(slot, h.request_id, len) {
                Ok(_) => {}
                Err(_) => self.stats.stray_replies += 1,
            },
            Ok(_) | Err(_) => self.stats.bad_messages += 1,
        }
    }

    /// Poll for the reply of `call`; `Ready(Ok(len))` once it is in our mailbox.
    pub fn poll_call(&mut self, cx: &mut Context<'_>, call: CallId) -> Poll<Result<u32, RpcError>> {
        let mut spinner = Spinner::new(self.spin);
        // Bounds polls that report readiness without delivering anything, so a
        // misbehaving transport cannot hold the thread.
        let mut idle_ready = 0u32;
        if self.work.exhausted() {
            return self.yield_now(cx);
        }
        loop {
            self.check_alarm();
            if let Some(e) = &self.failed {
                return Poll::Ready(Err(e.clone()));
            }
            if let Some(len) = self.calls.reply_len(call) {
                // Used up: the next poll yields first.
                self.work.spend();
                return Poll::Ready(Ok(len));
            }
            if self.drain() {
                if !self.work.spend() {
                    return self.yield_now(cx);
                }
                spinner.reset();
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
                        return self.yield_now(cx);
                    }
                }
                Poll::Pending => {
                    self.work.yielded();
                    return Poll::Pending;
                }
            }
        }
    }

    /// Return to the executor now and be polled again right after the
    /// futures beside this one.
    fn yield_now<R>(&mut self, cx: &mut Context<'_>) -> Poll<R> {
        self.work.yielded();
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One call: send `payload`, wait for the reply, return it in place.
    ///
    /// # Errors
    /// Any [`RpcError`]; an exception reply is [`RpcError::Remote`].
    pub async fn call(&mut self, method: u16, payload: &[u8]) -> Result<Reply<'_, T>, RpcError> {
        let call = self.start_call(method, payload)?;
        self.finish_call(call).await
    }

    /// One call whose payload `fill` writes in place (see [`RpcClient::start_call_with`]).
    ///
    /// # Errors
    /// As [`RpcClient::call`].
    pub async fn call_with(
        &mut self,
        method: u16,
        len: usize,
        fill: impl FnOnce(CallId, &mut [u8]),
    ) -> Result<Reply<'_, T>, RpcError> {
        let call = self.start_call_with(method, len, fill)?;
        self.finish_call(call).await
    }

    async fn finish_call(&mut self, call: CallId) -> Result<Reply<'_, T>, RpcError> {
        let len = match self.call_timeout {
            None => poll_fn(|cx| self.poll_call(cx, call)).await?,
            Some(limit) => match tokio::time::timeout(limit, poll_fn(|cx| self.poll_call(cx, call))).await {
                Ok(r) => r?,
                Err(_) => {
                    let e = RpcError::Timeout {
                        after_ms: limit.as_millis() as u64,
                    };
                    self.fail(e.clone());
                    return Err(e);
                }
            },
        };
        let reply = Reply {
            client: self,
            call,
            len,
        };
        if reply.header().exception {
            let msg = String::from_utf8_lossy(reply.payload()).into_owned();
            return Err(RpcError::Remote(msg));
        }
        Ok(reply)
    }
}

/// A reply, read in place from the reply mailbox; its slot is freed on drop.
pub struct Reply<'a, T: Transport> {
    client: &'a mut RpcClient<T>,
    call: CallId,
    len: u32,
}

impl<T: Transport> Reply<'_, T> {
    fn slot(&self) -> &[u8] {
        let slot_size = self.client.geometry.slot_size as usize;
        let offset = self.call.slot as usize * slot_size;
        &self.client.t.mr(self.client.mailbox_mr)[offset..offset + self.len as usize]
    }

    pub fn header(&self) -> Header {
        Header::decode(self.slot()).expect("validated when the reply arrived")
    }

    /// The reply payload.
    pub fn payload(&self) -> &[u8] {
        &self.slot()[HEADER_LEN..]
    }

    pub fn request_id(&self) -> u64 {
        self.call.request_id
    }
}

impl<T: Transport> Drop for Reply<'_, T> {
    fn drop(&mut self) {
        // A failed session reset the table; only finish what is still ours.
        if self.client.calls.reply_len(self.call).is_some() {
            self.client.calls.finish(self.call);
        }
    }
}
