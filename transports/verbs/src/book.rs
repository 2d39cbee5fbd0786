//! Completion bookkeeping of the verbs transport, as a pure state machine.
//!
//! The adapter copies each `struct ibv_wc` into a [`Wc`] and feeds it here;
//! the book decides what the caller sees and tells the adapter when to move
//! the QP to the error state ([`QpAction`]) and how many receives to post
//! ([`Book::receives_wanted`]). Rules:
//! - posts are refused after a failure (`LinkDown`), before `connect`
//!   (`NotConnected`) and beyond the send depth (`QueueFull`);
//! - the first error completion fails the link: its status is kept as the
//!   [`LinkFailure`], the QP goes to the error state, and one error receive
//!   completion tells a receiver-only waiter; the hardware then flushes every
//!   posted write (reported `Flushed`) and receive (folded into that one);
//! - `shutdown` reports every outstanding write `Cancelled` at once (the
//!   contract: "on the next poll"), plus one cancelled receive; completions
//!   the hardware still delivers for them afterwards are dropped;
//! - a receive completion must be a write-with-immediate (anything else is a
//!   peer that does not speak this protocol); its immediate arrives in network
//!   byte order and `byte_len` is the written length.

use std::collections::VecDeque;

use slimebench_proto::{Completion, CompletionKind, LinkFailure, LocalSlice, PostError, WcStatus};

use crate::attrs::QueueDepths;
use crate::config::VerbsStats;
use crate::wc::{map_status, IBV_WC_SUCCESS};

/// `IBV_WC_RECV_RDMA_WITH_IMM` (`enum ibv_wc_opcode`).
pub const IBV_WC_RECV_RDMA_WITH_IMM: u32 = 129;
/// `IBV_WC_WITH_IMM` (`enum ibv_wc_flags`).
pub const IBV_WC_WITH_IMM: u32 = 1 << 1;

/// One work completion, copied out of `struct ibv_wc`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Wc {
    pub wr_id: u64,
    pub status: u32,
    pub vendor_err: u32,
    /// Only meaningful for successful completions (verbs leaves it undefined otherwise).
    pub opcode: u32,
    pub wc_flags: u32,
    /// As delivered: network byte order.
    pub imm_data: u32,
    pub byte_len: u32,
}

/// What the adapter must do to the QP.
#[must_use]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum QpAction {
    Nothing,
    /// Move the QP to ERR: the hardware flushes everything still posted.
    EnterErrorState,
}

/// The bookkeeping of one transport.
#[derive(Debug)]
pub struct Book {
    send_depth: usize,
    recv_window: u32,
    connected: bool,
    /// wr_ids of posted writes in post order (RC completes sends in order).
    outstanding: VecDeque<u64>,
    recv_posted: u32,
    /// Completions for the caller; bounded by the send depth plus the receive window.
    pending: VecDeque<Completion>,
    failure: Option<LinkFailure>,
    recv_error_reported: bool,
    is_shut: bool,
    stats: VerbsStats,
}

impl Book {
    pub fn new(depths: &QueueDepths) -> Book {
        Book {
            send_depth: depths.send as usize,
            recv_window: depths.recv_window,
            connected: false,
            outstanding: VecDeque::new(),
            recv_posted: 0,
            pending: VecDeque::new(),
            failure: None,
            recv_error_reported: false,
            is_shut: false,
            stats: VerbsStats::default(),
        }
    }

    /// Forget the previous link (the QP was reset: nothing posted survives).
    pub fn reset(&mut self) {
        self.connected = false;
        self.outstanding.clear();
        self.recv_posted = 0;
        self.pending.clear();
        self.failure = None;
        self.recv_error_reported = false;
    }

    /// The QP reached RTS.
    pub fn set_connected(&mut self) {
        self.connected = true;
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn is_shut(&self) -> bool {
        self.is_shut
    }

    pub fn failure(&self) -> Option<&LinkFailure> {
        self.failure.as_ref()
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn stats(&self) -> &VerbsStats {
        &self.stats
    }

    /// Writes posted and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Receives to post now to keep the window full (none once the link is down).
    pub fn receives_wanted(&self) -> u32 {
        if self.failure.is_some() || self.is_shut {
            0
        } else {
            self.recv_window.saturating_sub(self.recv_posted)
        }
    }

    /// `n` receives were posted.
    pub fn receives_posted(&mut self, n: u32) {
        self.recv_posted += n;
        self.stats.recvs_posted += u64::from(n);
    }

    /// Check a post against the link state and the send depth.
    ///
    /// # Errors
    /// `LinkDown`, `NotConnected` or `QueueFull`.
    pub fn check_post(&self) -> Result<(), PostError> {
        if let Some(f) = &self.failure {
            return Err(PostError::LinkDown(f.clone()));
        }
        if !self.connected {
            return Err(PostError::NotConnected);
        }
        if self.outstanding.len() >= self.send_depth {
            return Err(PostError::QueueFull {
                depth: self.outstanding.len(),
            });
        }
        Ok(())
    }

    /// A write was handed to the QP.
    pub fn posted(&mut self, wr_id: u64) {
        self.outstanding.push_back(wr_id);
        self.stats.writes_posted += 1;
    }

    /// Take the link down (first failure only).
    pub fn fail(&mut self, status: WcStatus, cause: String) -> QpAction {
        if self.failure.is_some() {
            return QpAction::Nothing;
        }
        tracing::warn!(%status, %cause, "RDMA link down");
        self.failure = Some(LinkFailure { status, cause });
        self.report_recv_error(status);
        QpAction::EnterErrorState
    }

    fn report_recv_error(&mut self, status: WcStatus) {
        if self.recv_error_reported {
            self.stats.recv_errors_folded += 1;
            return;
        }
        self.recv_error_reported = true;
        self.pending.push_back(Completion {
            wr_id: 0,
            status,
            kind: CompletionKind::RecvImm { imm: 0, len: 0 },
        });
    }

    /// A completion from the send CQ.
    pub fn on_send(&mut self, wc: &Wc) -> QpAction {
        if self.is_shut {
            // shutdown() already reported every outstanding write as Cancelled.
            self.stats.late_completions_dropped += 1;
            return QpAction::Nothing;
        }
        match self.outstanding.pop_front() {
            Some(id) if id == wc.wr_id => {}
            other => tracing::warn!(expected = ?other, got = wc.wr_id, "send completion out of order"),
        }
        self.stats.write_completions += 1;
        let m = map_status(wc.status, wc.vendor_err, self.is_shut);
        self.pending.push_back(Completion {
            wr_id: wc.wr_id,
            status: m.status,
            kind: CompletionKind::WriteDone,
        });
        match m.cause {
            Some(cause) => self.fail(m.status, format!("write failed: {cause}")),
            None => QpAction::Nothing,
        }
    }

    /// A completion from the receive CQ (each one consumed a posted receive).
    pub fn on_recv(&mut self, wc: &Wc) -> QpAction {
        self.recv_posted = self.recv_posted.saturating_sub(1);
        if self.is_shut {
            self.stats.late_completions_dropped += 1;
            return QpAction::Nothing;
        }
        if wc.status != IBV_WC_SUCCESS {
            let m = map_status(wc.status, wc.vendor_err, self.is_shut);
            return match (self.failure.is_some(), m.cause) {
                // The first sign of trouble: fail() reports the one error receive.
                (false, Some(cause)) => self.fail(m.status, format!("receive failed: {cause}")),
                // Already down: the QP flushes the whole window; fold them.
                _ => {
                    self.report_recv_error(m.status);
                    QpAction::Nothing
                }
            };
        }
        if wc.opcode != IBV_WC_RECV_RDMA_WITH_IMM || wc.wc_flags & IBV_WC_WITH_IMM == 0 {
            return self.fail(
                WcStatus::Flushed,
                format!(
                    "protocol violation by peer: a receive completed with opcode {} flags {:#x} \
                     (expected a write with immediate)",
                    wc.opcode, wc.wc_flags
                ),
            );
        }
        self.stats.recv_completions += 1;
        self.pending.push_back(Completion {
            wr_id: 0,
            status: WcStatus::Ok,
            kind: CompletionKind::RecvImm {
                // The immediate travels in network byte order.
                imm: u32::from_be(wc.imm_data),
                // For a write-with-immediate, byte_len is the length written.
                len: wc.byte_len,
            },
        });
        QpAction::Nothing
    }

    /// Shut down: idempotent; the first call asks for the error state.
    pub fn shutdown(&mut self) -> QpAction {
        if self.is_shut {
            return QpAction::Nothing;
        }
        self.is_shut = true;
        self.connected = false;
        for wr_id in self.outstanding.drain(..) {
            self.pending.push_back(Completion {
                wr_id,
                status: WcStatus::Cancelled,
                kind: CompletionKind::WriteDone,
            });
        }
        self.report_recv_error(WcStatus::Cancelled);
        if self.failure.is_none() {
            self.failure = Some(LinkFailure {
                status: WcStatus::Cancelled,
                cause: "transport shut down locally".into(),
            });
        }
        QpAction::EnterErrorState
    }

    /// Move the completions for the caller into `out`; returns how many.
    pub fn drain_into(&mut self, out: &mut Vec<Completion>) -> usize {
        let n = self.pending.len();
        out.extend(self.pending.drain(..));
        n
    }
}

/// Check a local slice against its region and the write limit (the check
/// every backend shares, [`LocalSlice::validate`]).
///
/// # Errors
/// `BadLocalSlice` outside the region, `TooLong` over `max`.
pub fn check_slice(src: &LocalSlice, region_len: usize, max: usize) -> Result<(), PostError> {
    src.validate(region_len, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wc::{IBV_WC_REM_ACCESS_ERR, IBV_WC_RETRY_EXC_ERR, IBV_WC_WR_FLUSH_ERR};
    use slimebench_proto::MrKey;

    fn book() -> Book {
        let mut b = Book::new(&QueueDepths::new(1, None));
        assert_eq!(b.receives_wanted(), 64);
        b.receives_posted(64);
        b.set_connected();
        b
    }

    fn ok_send(wr_id: u64) -> Wc {
        Wc {
            wr_id,
            opcode: 1, // IBV_WC_RDMA_WRITE
            ..Wc::default()
        }
    }

    fn err(wr_id: u64, status: u32) -> Wc {
        Wc {
            wr_id,
            status,
            // Undefined on errors: make sure it is not trusted.
            opcode: 0xdead,
            ..Wc::default()
        }
    }

    fn recv(imm: u32, len: u32) -> Wc {
        Wc {
            wr_id: 0,
            opcode: IBV_WC_RECV_RDMA_WITH_IMM,
            wc_flags: IBV_WC_WITH_IMM,
            imm_data: imm.to_be(),
            byte_len: len,
            ..Wc::default()
        }
    }

    fn drain(b: &mut Book) -> Vec<Completion> {
        let mut v = Vec::new();
        b.drain_into(&mut v);
        v
    }

    fn write_done(wr_id: u64, status: WcStatus) -> Completion {
        Completion {
            wr_id,
            status,
            kind: CompletionKind::WriteDone,
        }
    }

    fn recv_imm(status: WcStatus, imm: u32, len: u32) -> Completion {
        Completion {
            wr_id: 0,
            status,
            kind: CompletionKind::RecvImm { imm, len },
        }
    }

    #[test]
    fn posting_is_bounded() {
        let mut b = Book::new(&QueueDepths::new(1, None));
        assert_eq!(b.check_post(), Err(PostError::NotConnected));
        b.set_connected();
        for i in 0..64 {
            b.check_post().unwrap();
            b.posted(i);
        }
        assert_eq!(b.check_post(), Err(PostError::QueueFull { depth: 64 }));
        assert_eq!(b.on_send(&ok_send(0)), QpAction::Nothing);
        b.check_post().unwrap();
        assert_eq!(drain(&mut b), [write_done(0, WcStatus::Ok)]);
        assert_eq!(b.outstanding(), 63);
    }

    #[test]
    fn receive_with_immediate() {
        let mut b = book();
        assert_eq!(b.on_recv(&recv(0xdead_beef, 4096)), QpAction::Nothing);
        assert_eq!(b.on_recv(&recv(7, 0)), QpAction::Nothing);
        assert_eq!(
            drain(&mut b),
            [recv_imm(WcStatus::Ok, 0xdead_beef, 4096), recv_imm(WcStatus::Ok, 7, 0)]
        );
        // Two receives consumed: two to repost.
        assert_eq!(b.receives_wanted(), 2);
        b.receives_posted(2);
        assert_eq!(b.receives_wanted(), 0);
        assert_eq!(b.stats().recv_completions, 2);
    }

    #[test]
    fn a_send_or_a_write_without_immediate_is_a_protocol_violation() {
        let mut b = book();
        let mut w = recv(1, 1);
        w.opcode = 128; // IBV_WC_RECV: the peer used SEND
        assert_eq!(b.on_recv(&w), QpAction::EnterErrorState);
        let f = b.failure().unwrap();
        assert_eq!(f.status, WcStatus::Flushed);
        assert!(f.cause.contains("protocol violation"), "{f}");
        let mut b = book();
        let mut w = recv(1, 1);
        w.wc_flags = 0;
        assert_eq!(b.on_recv(&w), QpAction::EnterErrorState);
    }

    #[test]
    fn first_error_fails_the_link_then_flushes_follow() {
        let mut b = book();
        for i in 1..=3 {
            b.posted(i);
        }
        assert_eq!(b.on_send(&err(1, IBV_WC_RETRY_EXC_ERR)), QpAction::EnterErrorState);
        // The rest of the send queue and the receive window are flushed by the hardware.
        assert_eq!(b.on_send(&err(2, IBV_WC_WR_FLUSH_ERR)), QpAction::Nothing);
        assert_eq!(b.on_send(&err(3, IBV_WC_WR_FLUSH_ERR)), QpAction::Nothing);
        for _ in 0..64 {
            assert_eq!(b.on_recv(&err(0, IBV_WC_WR_FLUSH_ERR)), QpAction::Nothing);
        }
        assert_eq!(
            drain(&mut b),
            [
                write_done(1, WcStatus::RetryExceeded),
                recv_imm(WcStatus::RetryExceeded, 0, 0),
                write_done(2, WcStatus::Flushed),
                write_done(3, WcStatus::Flushed),
            ]
        );
        assert_eq!(b.stats().recv_errors_folded, 64);
        let f = b.failure().unwrap().clone();
        assert_eq!(f.status, WcStatus::RetryExceeded);
        assert!(f.cause.contains("ibv_wc_status 12"), "{f}");
        assert_eq!(b.check_post(), Err(PostError::LinkDown(f)));
        assert_eq!(b.receives_wanted(), 0, "no reposts on a dead link");
    }

    #[test]
    fn a_receive_error_fails_the_link_once() {
        let mut b = book();
        assert_eq!(b.on_recv(&err(0, IBV_WC_REM_ACCESS_ERR)), QpAction::EnterErrorState);
        assert_eq!(b.on_recv(&err(0, IBV_WC_WR_FLUSH_ERR)), QpAction::Nothing);
        assert_eq!(drain(&mut b), [recv_imm(WcStatus::RemoteAccess, 0, 0)]);
        assert_eq!(b.failure().unwrap().status, WcStatus::RemoteAccess);
    }

    #[test]
    fn shutdown_cancels_at_once_and_drops_late_completions() {
        let mut b = book();
        b.posted(10);
        b.posted(11);
        assert_eq!(b.on_recv(&recv(5, 16)), QpAction::Nothing);
        assert_eq!(b.shutdown(), QpAction::EnterErrorState);
        assert_eq!(b.shutdown(), QpAction::Nothing, "idempotent");
        // What the hardware delivers afterwards (flushes, or a write that
        // completed just before the error state) is dropped.
        assert_eq!(b.on_send(&err(10, IBV_WC_WR_FLUSH_ERR)), QpAction::Nothing);
        assert_eq!(b.on_send(&ok_send(11)), QpAction::Nothing);
        assert_eq!(b.on_recv(&err(0, IBV_WC_WR_FLUSH_ERR)), QpAction::Nothing);
        assert_eq!(
            drain(&mut b),
            [
                recv_imm(WcStatus::Ok, 5, 16),
                write_done(10, WcStatus::Cancelled),
                write_done(11, WcStatus::Cancelled),
                recv_imm(WcStatus::Cancelled, 0, 0),
            ]
        );
        assert_eq!(b.stats().late_completions_dropped, 3);
        let f = b.failure().unwrap().clone();
        assert_eq!(f.status, WcStatus::Cancelled);
        assert_eq!(b.check_post(), Err(PostError::LinkDown(f)));
        assert_eq!(b.receives_wanted(), 0);
        assert!(drain(&mut b).is_empty());
    }

    #[test]
    fn shutdown_after_a_failure_keeps_the_failure() {
        let mut b = book();
        b.posted(1);
        b.posted(2);
        assert_eq!(b.on_send(&err(1, IBV_WC_REM_ACCESS_ERR)), QpAction::EnterErrorState);
        assert_eq!(b.shutdown(), QpAction::EnterErrorState);
        assert_eq!(
            drain(&mut b),
            [
                write_done(1, WcStatus::RemoteAccess),
                recv_imm(WcStatus::RemoteAccess, 0, 0),
                write_done(2, WcStatus::Cancelled),
            ]
        );
        assert_eq!(b.failure().unwrap().status, WcStatus::RemoteAccess);
    }

    #[test]
    fn reset_forgets_the_old_link() {
        let mut b = book();
        b.posted(1);
        let _ = b.fail(WcStatus::PeerGone, "x".into());
        b.reset();
        assert!(b.failure().is_none());
        assert!(!b.has_pending());
        assert_eq!(b.outstanding(), 0);
        assert_eq!(b.check_post(), Err(PostError::NotConnected));
        assert_eq!(b.receives_wanted(), 64, "a fresh window");
    }

    #[test]
    fn out_of_order_send_completion_is_still_reported() {
        let mut b = book();
        b.posted(1);
        b.posted(2);
        assert_eq!(b.on_send(&ok_send(2)), QpAction::Nothing);
        assert_eq!(drain(&mut b), [write_done(2, WcStatus::Ok)]);
    }

    #[test]
    fn slices() {
        let s = |offset, len| LocalSlice {
            mr: MrKey(0),
            offset,
            len,
        };
        assert!(check_slice(&s(0, 100), 100, 1 << 30).is_ok());
        assert!(check_slice(&s(100, 0), 100, 1 << 30).is_ok());
        assert!(matches!(
            check_slice(&s(1, 100), 100, 1 << 30),
            Err(PostError::BadLocalSlice { region_len: 100, .. })
        ));
        assert!(matches!(
            check_slice(&s(usize::MAX, 2), 100, 1 << 30),
            Err(PostError::BadLocalSlice { .. })
        ));
        assert_eq!(
            check_slice(&s(0, 100), 100, 64),
            Err(PostError::TooLong { len: 100, max: 64 })
        );
    }

    #[cfg(feature = "sideway")]
    #[test]
    fn constants_match_the_bindings() {
        assert_eq!(
            IBV_WC_RECV_RDMA_WITH_IMM,
            rdma_mummy_sys::ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM
        );
        assert_eq!(IBV_WC_WITH_IMM, rdma_mummy_sys::ibv_wc_flags::IBV_WC_WITH_IMM.0);
    }
}
