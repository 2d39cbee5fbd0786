//! [`VerbsTransport`]: the [`Transport`] trait on an RDMA RC queue pair, via sideway.
//!
//! A thin adapter; every choice is made in the pure modules and copied here:
//! - `open`: probe + select ([`mod@crate::probe`]), then device context, PD, one
//!   completion channel, a send CQ and a receive CQ on it (two CQs: an error
//!   completion's opcode is undefined, the CQ it arrives on is not), and an RC
//!   QP sized by [`QueueDepths`];
//! - `register`: an [`AlignedBuf`] registered as an MR; the MR is dropped
//!   before its buffer;
//! - `connect`: validate the peer ([`validate_peer`]), QP → RESET (a reconnect
//!   keeps our QPN, which the peer already has), INIT, pre-post the receive
//!   window (zero-length receives: a write-with-immediate lands at the address
//!   the writer names and only consumes a receive for its immediate), RTR, RTS
//!   ([`QpPlan`]);
//! - `post_write_imm`: one signaled `IBV_WR_RDMA_WRITE_WITH_IMM`, the
//!   immediate in network byte order; the outstanding count is bounded by the
//!   send queue depth → `QueueFull`;
//! - `poll_completions`: raw `ibv_poll_cq` in batches of [`POLL_BATCH`] into a
//!   stack array (no allocation), fed to the pure [`Book`] (statuses mapped
//!   by [`crate::wc::map_status`]); one receive reposted per receive
//!   completion, all in one `ibv_post_recv`;
//! - `poll_ready`: arm both CQs (`ibv_req_notify_cq`, not wrapped by sideway),
//!   look at the CQs again (a completion between the look and the arm raises no
//!   event), then wait on the channel fd through tokio's `AsyncFd`; events are
//!   read and acknowledged at once (a CQ cannot be destroyed with unacked events);
//! - `shutdown`: QP → ERR; pending writes are reported `Cancelled` at once, the
//!   hardware's flush completions for them are dropped when they come.

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::task::{Context, Poll};

use rdma_mummy_sys::{
    ibv_ack_cq_events, ibv_comp_channel, ibv_cq, ibv_get_cq_event, ibv_poll_cq, ibv_req_notify_cq, ibv_wc,
};
use sideway::ibverbs::address::{AddressHandleAttribute, Gid as SwGid};
use sideway::ibverbs::completion::{BasicCompletionQueue, CompletionChannel, CompletionQueue};
use sideway::ibverbs::device::{DeviceInfo as _, DeviceList};
use sideway::ibverbs::device_context::{DeviceContext, Mtu};
use sideway::ibverbs::memory_region::{MemoryRegion, RegisterMemoryRegionErrorKind};
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::queue_pair::{
    BasicQueuePair, PostSendError, PostSendGuard, QueuePair, QueuePairAttribute, QueuePairState, QueuePairType,
    SetScatterGatherEntry, WorkRequestFlags,
};
use sideway::ibverbs::AccessFlags;
use slimebench_proto::{
    AlignedBuf, Completion, ConnectError, LinkFailure, LocalSlice, MrDesc, MrKey, PostError, RegisterError, RemoteAddr,
    Transport, TransportAddr, TransportError, TransportKind, WcStatus,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::attrs::{
    psn_from_random, validate_peer, Access, InitAttrs, LocalPort, PeerInfo, PeerInfoError, QpPlan, QueueDepths,
    RtrAttrs, RtsAttrs, ACCESS,
};
use crate::availability::Availability;
use crate::book::{check_slice, Book, QpAction, Wc};
use crate::config::{OpenError, VerbsConfig, VerbsStats};
use crate::mtu::PathMtu;
use crate::probe::probe;

/// Completions taken per `ibv_poll_cq` call.
pub const POLL_BATCH: usize = 32;

/// Largest message verbs can carry in one work request.
const MAX_MESSAGE: usize = 1 << 31;

/// Events read from the channel per readiness (bounded; the rest come on the next poll).
const MAX_EVENTS_PER_POLL: usize = 64;

/// wr_id of our receives (they are never reported by id: receives complete as `RecvImm`).
const RECV_WR_ID: u64 = 0;

/// A registered region. Field order is drop order: the MR is deregistered
/// before the memory it describes is unmapped.
struct Region {
    mr: Arc<MemoryRegion>,
    buf: AlignedBuf,
}

/// The completion channel's fd for tokio; holding the channel keeps the fd
/// open for as long as the `AsyncFd` is registered.
struct ChannelFd(Arc<CompletionChannel>);

impl AsRawFd for ChannelFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The RDMA backend. See the module docs.
///
/// Field order is drop order: the tokio registration goes first, then the
/// QP (which holds the CQs and PD alive through `Arc`s), the MRs, the CQs, the
/// channel, the PD and the device context.
pub struct VerbsTransport {
    chan_fd: Option<AsyncFd<ChannelFd>>,
    qp: BasicQueuePair,
    regions: Vec<Region>,
    send_cq: Arc<BasicCompletionQueue>,
    recv_cq: Arc<BasicCompletionQueue>,
    channel: Arc<CompletionChannel>,
    pd: Arc<ProtectionDomain>,
    _ctx: Arc<DeviceContext>,

    device: String,
    local: LocalPort,
    depths: QueueDepths,
    cfg: VerbsConfig,
    endpoint_id: u64,
    psn: u32,
    peer: Option<PeerInfo>,
    /// Posted work, completions for the caller, link state (pure, tested in `book`).
    book: Book,
    /// A local fault of the completion machinery, reported by `poll_completions`.
    fatal: Option<String>,
    send_armed: bool,
    recv_armed: bool,
    warned_no_runtime: bool,
    cq_events: u64,
}

fn device_err<'a>(device: &'a str, what: &'static str) -> impl FnOnce(String) -> OpenError + 'a {
    move |reason| OpenError::Device {
        device: device.to_owned(),
        what,
        reason,
    }
}

/// "Display: source" of a sideway error (its Display alone is generic).
fn err_text(e: &dyn std::error::Error) -> String {
    match e.source() {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most `b.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        // No entropy source: fall back to the clock (a PSN only needs to differ
        // between incarnations, not to be secret).
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5eed, |d| d.subsec_nanos() ^ d.as_secs() as u32)
    }
}

fn sw_mtu(m: PathMtu) -> Mtu {
    match m {
        PathMtu::Mtu256 => Mtu::Mtu256,
        PathMtu::Mtu512 => Mtu::Mtu512,
        PathMtu::Mtu1024 => Mtu::Mtu1024,
        PathMtu::Mtu2048 => Mtu::Mtu2048,
        PathMtu::Mtu4096 => Mtu::Mtu4096,
    }
}

fn sw_access(a: Access) -> AccessFlags {
    let mut f = AccessFlags::none();
    for (ours, theirs) in [
        (Access::LOCAL_WRITE, AccessFlags::LocalWrite),
        (Access::REMOTE_WRITE, AccessFlags::RemoteWrite),
        (Access::REMOTE_READ, AccessFlags::RemoteRead),
        (Access::REMOTE_ATOMIC, AccessFlags::RemoteAtomic),
    ] {
        if a.contains(ours) {
            f |= theirs;
        }
    }
    f
}

fn init_attr(a: &InitAttrs) -> QueuePairAttribute {
    let mut q = QueuePairAttribute::new();
    q.setup_state(QueuePairState::Init)
        .setup_pkey_index(a.pkey_index)
        .setup_port(a.port_num)
        .setup_access_flags(sw_access(a.access));
    q
}

fn rtr_attr(a: &RtrAttrs) -> QueuePairAttribute {
    let mut q = QueuePairAttribute::new();
    q.setup_state(QueuePairState::ReadyToReceive)
        .setup_path_mtu(sw_mtu(a.path_mtu))
        .setup_dest_qp_num(a.dest_qpn)
        .setup_rq_psn(a.rq_psn)
        .setup_max_dest_read_atomic(a.max_dest_rd_atomic)
        .setup_min_rnr_timer(a.min_rnr_timer);
    // sideway's address handle starts zeroed: src_path_bits stays 0, as planned.
    debug_assert_eq!(a.av.src_path_bits, 0);
    let mut ah = AddressHandleAttribute::new();
    ah.setup_dest_lid(a.av.dlid)
        .setup_service_level(a.av.sl)
        .setup_port(a.av.port_num);
    if let Some(g) = &a.av.grh {
        ah.setup_grh(
            &SwGid { raw: g.dgid.0 },
            g.flow_label,
            g.sgid_index,
            g.hop_limit,
            g.traffic_class,
        );
    }
    q.setup_address_vector(&ah);
    q
}

fn rts_attr(a: &RtsAttrs) -> QueuePairAttribute {
    let mut q = QueuePairAttribute::new();
    q.setup_state(QueuePairState::ReadyToSend)
        .setup_sq_psn(a.sq_psn)
        .setup_timeout(a.timeout)
        .setup_retry_cnt(a.retry_cnt)
        .setup_rnr_retry(a.rnr_retry)
        .setup_max_read_atomic(a.max_rd_atomic);
    q
}

fn state_attr(s: QueuePairState) -> QueuePairAttribute {
    let mut q = QueuePairAttribute::new();
    q.setup_state(s);
    q
}

/// Poll up to `POLL_BATCH` completions from `cq` into `out`.
fn poll_cq(cq: &BasicCompletionQueue, out: &mut [MaybeUninit<ibv_wc>; POLL_BATCH]) -> Result<usize, String> {
    // SAFETY: `cq` is a live CQ (borrowed from its Arc for the whole call);
    // `out` has room for POLL_BATCH entries and ibv_poll_cq writes at most
    // `num_entries` of them. sideway's own poller is not used because it
    // allocates per call and re-polls without bound.
    let n = unsafe { ibv_poll_cq(cq.cq().as_ptr(), POLL_BATCH as i32, out.as_mut_ptr().cast::<ibv_wc>()) };
    if n < 0 {
        Err(format!("ibv_poll_cq failed: {}", std::io::Error::from_raw_os_error(-n)))
    } else {
        Ok(n as usize)
    }
}

/// Arm `cq` for one completion event.
fn arm(cq: &BasicCompletionQueue) -> Result<(), String> {
    // SAFETY: `cq` is live and was created with our completion channel;
    // solicited_only = 0 asks for an event on any next completion. sideway
    // does not wrap this call, so it goes to the sys binding directly.
    let rc = unsafe { ibv_req_notify_cq(cq.cq().as_ptr(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "ibv_req_notify_cq failed: {}",
            std::io::Error::from_raw_os_error(rc)
        ))
    }
}

/// Which CQs fired.
#[derive(Default)]
struct Fired {
    send: bool,
    recv: bool,
    events: u64,
    drained: bool,
}

/// How a wait on the completion channel ended.
enum Wait {
    Pending,
    Ready,
    Failed(String),
    /// Only spurious readiness within the round limit: try again soon.
    Exhausted,
}

/// Read (and acknowledge) the channel's pending events without blocking.
fn drain_events(channel: &CompletionChannel, send: *mut ibv_cq, recv: *mut ibv_cq) -> Fired {
    let mut fired = Fired::default();
    for _ in 0..MAX_EVENTS_PER_POLL {
        let mut cq: *mut ibv_cq = std::ptr::null_mut();
        let mut cq_ctx: *mut libc::c_void = std::ptr::null_mut();
        // SAFETY: the channel is live (borrowed) and non-blocking, so this
        // returns at once; on success it stores the CQ that fired, one of ours.
        let rc = unsafe {
            let ch: *mut ibv_comp_channel = channel.comp_channel().as_ptr();
            ibv_get_cq_event(ch, &mut cq, &mut cq_ctx)
        };
        if rc != 0 {
            // EAGAIN: no more events (anything else: nothing we can read now).
            fired.drained = true;
            break;
        }
        // SAFETY: `cq` came from ibv_get_cq_event for this channel; each event
        // is acknowledged exactly once, right away, so destroying the CQ later
        // never waits for an unacknowledged event.
        unsafe { ibv_ack_cq_events(cq, 1) };
        fired.events += 1;
        fired.send |= cq == send;
        fired.recv |= cq == recv;
    }
    fired
}

fn peer_text(peer: &TransportAddr) -> String {
    match peer {
        TransportAddr::Rdma { gid, lid, qpn, .. } => format!("gid {gid} lid {lid:#x} qpn {qpn:#x}"),
        other => format!("{other:?}"),
    }
}

impl VerbsTransport {
    /// Probe, select and open the device named by `cfg.selection`, and create
    /// the PD, CQs and QP. `endpoint_id` is the random, non-zero id published
    /// at rendezvous. Fails fast (well under a second) when RDMA is unusable.
    ///
    /// # Errors
    /// [`OpenError::Unusable`] with the cause and the flag to use instead;
    /// [`OpenError::Device`]/[`OpenError::Depth`] when the device refuses a resource.
    ///
    /// # Panics
    /// If `endpoint_id` is zero.
    pub fn open(cfg: VerbsConfig, endpoint_id: u64) -> Result<VerbsTransport, OpenError> {
        assert_ne!(endpoint_id, 0, "endpoint ids are never zero");
        let sel = match probe(&cfg.selection).availability {
            Availability::Usable(s) => s,
            Availability::Unusable { cause, hint } => return Err(OpenError::Unusable { cause, hint }),
        };
        let name = sel.device.clone();
        let list = DeviceList::new().map_err(|e| device_err(&name, "list devices")(err_text(&e)))?;
        let dev = list
            .iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| device_err(&name, "find the device again")("it disappeared after the probe".into()))?;
        let ctx = dev
            .open()
            .map_err(|e| device_err(&name, "open the device")(err_text(&e)))?;
        drop(list);
        let attr = ctx
            .query_device()
            .map_err(|e| device_err(&name, "query the device")(err_text(&e)))?;
        let depths = QueueDepths::new(cfg.max_in_flight, cfg.recv_window);
        let max_qp_wr = u32::try_from(attr.max_qp_wr()).unwrap_or(0);
        let max_cqe = u32::try_from(attr.max_cqe()).unwrap_or(0);
        depths.check(max_qp_wr, max_cqe).map_err(|source| OpenError::Depth {
            device: name.clone(),
            source,
        })?;
        let pd = ctx
            .alloc_pd()
            .map_err(|e| device_err(&name, "allocate a protection domain")(err_text(&e)))?;
        let channel = ctx
            .create_comp_channel()
            .map_err(|e| device_err(&name, "create a completion channel")(err_text(&e)))?;
        channel
            .set_nonblocking(true)
            .map_err(|e| device_err(&name, "make the completion channel non-blocking")(e.to_string()))?;
        let send_cq = ctx
            .create_cq_builder()
            .setup_cqe(depths.send_cq)
            .setup_comp_channel(&channel, 0)
            .build()
            .map_err(|e| device_err(&name, "create the send completion queue")(err_text(&e)))?;
        let recv_cq = ctx
            .create_cq_builder()
            .setup_cqe(depths.recv_cq)
            .setup_comp_channel(&channel, 0)
            .build()
            .map_err(|e| device_err(&name, "create the receive completion queue")(err_text(&e)))?;
        let qp = pd
            .create_qp_builder()
            .setup_qp_type(QueuePairType::ReliableConnection)
            .setup_max_send_wr(depths.send)
            .setup_max_recv_wr(depths.recv_window)
            .setup_max_send_sge(1)
            .setup_max_recv_sge(1)
            .setup_max_inline_data(0)
            .setup_send_cq(Arc::clone(&send_cq))
            .setup_recv_cq(Arc::clone(&recv_cq))
            .build()
            .map_err(|e| device_err(&name, "create the queue pair")(err_text(&e)))?;
        let local = sel.local_port();
        tracing::info!(selected = %sel, qpn = qp.qp_number(), "RDMA transport opened");
        Ok(VerbsTransport {
            chan_fd: None,
            qp,
            regions: Vec::new(),
            send_cq,
            recv_cq,
            channel,
            pd,
            _ctx: ctx,
            device: name,
            local,
            depths,
            cfg,
            endpoint_id,
            psn: psn_from_random(random_u32()),
            peer: None,
            book: Book::new(&depths),
            fatal: None,
            send_armed: false,
            recv_armed: false,
            warned_no_runtime: false,
            cq_events: 0,
        })
    }

    pub fn stats(&self) -> VerbsStats {
        VerbsStats {
            cq_events: self.cq_events,
            ..self.book.stats().clone()
        }
    }

    /// The queue sizes in use.
    pub fn depths(&self) -> QueueDepths {
        self.depths
    }

    /// Our port, GID and MTU.
    pub fn local_port(&self) -> &LocalPort {
        &self.local
    }

    /// True when every registered region's guard zones are intact.
    pub fn guards_intact(&self) -> bool {
        self.regions.iter().all(|r| r.buf.guards_intact())
    }

    /// Carry out what the book asks of the QP.
    fn apply(&mut self, action: QpAction) {
        if action == QpAction::EnterErrorState {
            // The hardware flushes every posted request; the book reports them.
            if let Err(e) = self.qp.modify(&state_attr(QueuePairState::Error)) {
                tracing::warn!(device = %self.device, error = %err_text(&e), "cannot move the QP to the error state");
            }
        }
    }

    /// Move hardware completions into the book. Bounded: at most one CQ's
    /// depth (plus a batch) per queue per call. Returns how many were taken.
    fn poll_hw(&mut self) -> usize {
        if self.fatal.is_some() {
            return 0;
        }
        let mut taken = 0;
        let mut wcs = [const { MaybeUninit::<ibv_wc>::uninit() }; POLL_BATCH];
        for is_send in [true, false] {
            let limit = if is_send {
                self.depths.send_cq
            } else {
                self.depths.recv_cq
            } as usize
                + POLL_BATCH;
            let mut seen = 0;
            while seen < limit {
                let cq = if is_send { &self.send_cq } else { &self.recv_cq };
                let n = match poll_cq(cq, &mut wcs) {
                    Ok(n) => n,
                    Err(e) => {
                        self.fatal = Some(e);
                        return taken;
                    }
                };
                for slot in &wcs[..n] {
                    // SAFETY: ibv_poll_cq initialised the first `n` entries.
                    let raw = unsafe { slot.assume_init_ref() };
                    let wc = Wc {
                        wr_id: raw.wr_id,
                        status: raw.status,
                        vendor_err: raw.vendor_err,
                        opcode: raw.opcode,
                        wc_flags: raw.wc_flags,
                        // SAFETY: a plain u32 in either union member; it is only
                        // used as the immediate when IBV_WC_WITH_IMM is set.
                        imm_data: unsafe { raw.imm_data_invalidated_rkey_union.imm_data },
                        byte_len: raw.byte_len,
                    };
                    let action = if is_send {
                        self.book.on_send(&wc)
                    } else {
                        self.book.on_recv(&wc)
                    };
                    self.apply(action);
                }
                seen += n;
                taken += n;
                if n < POLL_BATCH {
                    break;
                }
            }
        }
        // One receive back for each one consumed, all in one call.
        if let Err(e) = self.post_receives() {
            let action = self
                .book
                .fail(WcStatus::Flushed, format!("cannot repost receives: {e}"));
            self.apply(action);
        }
        taken
    }

    /// Post as many zero-length receives as the book wants, in one call.
    fn post_receives(&mut self) -> Result<(), String> {
        let n = self.book.receives_wanted();
        if n == 0 {
            return Ok(());
        }
        let mut guard = self.qp.start_post_recv();
        for _ in 0..n {
            // No scatter entry: the data of a write-with-immediate goes where
            // the writer says; the receive only carries the immediate.
            let _ = guard.construct_wr(RECV_WR_ID);
        }
        guard.post().map_err(|e| err_text(&e))?;
        self.book.receives_posted(n);
        Ok(())
    }

    /// Forget the current link: QP → RESET (no completions for what was
    /// posted), and whatever is left in the CQs is discarded.
    fn reset_link(&mut self) {
        if let Err(e) = self.qp.modify(&state_attr(QueuePairState::Reset)) {
            tracing::warn!(device = %self.device, error = %err_text(&e), "cannot reset the QP");
        }
        let mut wcs = [const { MaybeUninit::<ibv_wc>::uninit() }; POLL_BATCH];
        for cq in [&self.send_cq, &self.recv_cq] {
            // Bounded: a reset QP adds nothing, so this empties the CQ.
            for _ in 0..(self.depths.recv_cq.max(self.depths.send_cq) as usize / POLL_BATCH + 2) {
                match poll_cq(cq, &mut wcs) {
                    Ok(n) if n == POLL_BATCH => {}
                    _ => break,
                }
            }
        }
        self.peer = None;
        self.book.reset();
    }

    fn modify_or(&mut self, attr: &QueuePairAttribute, step: &str, peer: &TransportAddr) -> Result<(), ConnectError> {
        self.qp.modify(attr).map_err(|e| ConnectError::Unreachable {
            addr: peer_text(peer),
            reason: format!("QP transition to {step} failed: {}", err_text(&e)),
        })
    }

    /// The tokio registration of the channel fd, made on first use (it needs
    /// a runtime with IO enabled); `None` without a runtime.
    fn register_channel(&mut self) -> bool {
        if self.chan_fd.is_some() {
            return true;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            if !self.warned_no_runtime {
                self.warned_no_runtime = true;
                tracing::warn!("RDMA poll_ready outside a tokio runtime: waiting degrades to spinning");
            }
            return false;
        }
        // SAFETY: the fd belongs to the completion channel, which ChannelFd
        // keeps alive (an Arc) for as long as the AsyncFd exists; nothing
        // closes or replaces the channel's fd meanwhile.
        match unsafe { AsyncFd::register_with_interest(ChannelFd(Arc::clone(&self.channel)), Interest::READABLE) } {
            Ok(fd) => {
                self.chan_fd = Some(fd);
                true
            }
            Err(e) => {
                self.fatal = Some(format!("cannot register the completion channel with tokio: {e}"));
                false
            }
        }
    }

    fn arm_cqs(&mut self) -> Result<(), String> {
        if !self.send_armed {
            arm(&self.send_cq)?;
            self.send_armed = true;
        }
        if !self.recv_armed {
            arm(&self.recv_cq)?;
            self.recv_armed = true;
        }
        Ok(())
    }
}

impl Transport for VerbsTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Rdma
    }

    fn register(&mut self, len: usize) -> Result<MrKey, RegisterError> {
        if self.regions.len() >= self.cfg.max_regions {
            return Err(RegisterError::TooMany {
                max: self.cfg.max_regions,
            });
        }
        let buf = AlignedBuf::new(len)?;
        // SAFETY: buf's `len` bytes at `addr` stay mapped for as long as the MR
        // exists: both live in one Region, whose field order deregisters the
        // MR before unmapping, and regions are only dropped with the transport
        // (after the QP, so no work request can still name them).
        let mr = unsafe { self.pd.reg_mr(buf.addr() as usize, len, sw_access(ACCESS)) }.map_err(|e| {
            let errno = match &e.0 {
                RegisterMemoryRegionErrorKind::Ibverbs(io) => io.raw_os_error(),
                #[allow(unreachable_patterns)] // the enum is non_exhaustive
                _ => None,
            };
            // Pinning beyond RLIMIT_MEMLOCK fails with ENOMEM (EPERM/EFAULT on some kernels).
            let limit = match errno {
                Some(libc::ENOMEM | libc::EPERM | libc::EFAULT) => {
                    " (is the locked-memory limit high enough? try `ulimit -l unlimited`)"
                }
                _ => "",
            };
            RegisterError::Device(format!("ibv_reg_mr of {len} bytes: {}{limit}", err_text(&e)))
        })?;
        self.regions.push(Region { mr, buf });
        Ok(MrKey((self.regions.len() - 1) as u32))
    }

    fn mr_desc(&self, mr: MrKey) -> MrDesc {
        let r = &self.regions[mr.0 as usize];
        MrDesc {
            addr: r.buf.addr(),
            len: r.buf.len() as u64,
            rkey: r.mr.rkey(),
        }
    }

    fn mr(&self, mr: MrKey) -> &[u8] {
        // The NIC writes into this memory whenever the peer writes; as in any
        // verbs program, the protocol (slot ownership) says when reading is
        // meaningful.
        &self.regions[mr.0 as usize].buf
    }

    fn mr_mut(&mut self, mr: MrKey) -> &mut [u8] {
        &mut self.regions[mr.0 as usize].buf
    }

    fn local_addr(&self) -> TransportAddr {
        TransportAddr::Rdma {
            gid: self.local.gid.to_hex(),
            lid: self.local.lid,
            qpn: self.qp.qp_number(),
            psn: self.psn,
            mtu: self.local.active_mtu.bytes(),
            endpoint_id: self.endpoint_id,
        }
    }

    fn connect(&mut self, peer: &TransportAddr) -> Result<(), ConnectError> {
        if self.book.is_shut() {
            return Err(ConnectError::Shutdown);
        }
        let info = validate_peer(peer, &self.local, self.endpoint_id).map_err(|e| match e {
            PeerInfoError::WrongKind(kind) => ConnectError::WrongKind {
                local: TransportKind::Rdma,
                peer: kind,
            },
            other => ConnectError::BadAddress {
                addr: peer_text(peer),
                reason: other.to_string(),
            },
        })?;
        self.reset_link();
        let plan = QpPlan::new(&self.local, &info, self.psn);
        self.modify_or(&init_attr(&plan.init), "INIT", peer)?;
        // Receives go up before RTR: the peer may write as soon as we are RTR.
        self.post_receives().map_err(|e| ConnectError::Unreachable {
            addr: peer_text(peer),
            reason: format!("cannot post the receive window: {e}"),
        })?;
        self.modify_or(&rtr_attr(&plan.rtr), "RTR", peer)?;
        self.modify_or(&rts_attr(&plan.rts), "RTS", peer)?;
        tracing::info!(
            device = %self.device,
            peer_qpn = info.qpn,
            path_mtu = %plan.rtr.path_mtu,
            "RDMA queue pair connected"
        );
        self.peer = Some(info);
        self.book.set_connected();
        Ok(())
    }

    fn post_write_imm(&mut self, wr_id: u64, src: LocalSlice, dst: RemoteAddr, imm: u32) -> Result<(), PostError> {
        self.book.check_post()?;
        let region = self
            .regions
            .get(src.mr.0 as usize)
            .ok_or(PostError::UnknownMr(src.mr))?;
        check_slice(&src, region.buf.len(), self.cfg.max_write_len.min(MAX_MESSAGE))?;
        let lkey = region.mr.lkey();
        let addr = region.buf.addr() + src.offset as u64;
        let mut guard = self.qp.start_post_send();
        let wr = guard
            .construct_wr(wr_id, WorkRequestFlags::Signaled)
            // Immediate data is carried in network byte order.
            .setup_write_imm(dst.rkey, dst.addr, imm.to_be());
        if src.len > 0 {
            // SAFETY: lkey/addr/len name a range inside a region registered on
            // this PD (checked above; len ≤ 2 GiB fits u32); the region lives as
            // long as the QP.
            unsafe { wr.setup_sge(lkey, addr, src.len as u32) };
        }
        match guard.post() {
            Ok(()) => {
                self.book.posted(wr_id);
                Ok(())
            }
            // The provider's queue is full even though our count says not
            // (e.g. it rounds depths differently): still backpressure.
            Err(PostSendError::NotEnoughResources(_)) => Err(PostError::QueueFull {
                depth: self.book.outstanding(),
            }),
            Err(e) => {
                let action = self
                    .book
                    .fail(WcStatus::Flushed, format!("ibv_post_send failed: {}", err_text(&e)));
                self.apply(action);
                let f = self.book.failure().cloned().expect("fail() sets the failure");
                Err(PostError::LinkDown(f))
            }
        }
    }

    fn poll_completions(&mut self, out: &mut Vec<Completion>) -> Result<usize, TransportError> {
        self.poll_hw();
        if let Some(e) = &self.fatal {
            return Err(TransportError::Fatal(format!("{}: {e}", self.device)));
        }
        Ok(self.book.drain_into(out))
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.book.has_pending() || self.book.failure().is_some() || self.fatal.is_some() || self.poll_hw() > 0 {
            return Poll::Ready(());
        }
        if !self.register_channel() {
            if self.fatal.is_some() {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // Arm, then look again: a completion that landed between the last
        // look and the arming raises no event.
        if let Err(e) = self.arm_cqs() {
            self.fatal = Some(e);
            return Poll::Ready(());
        }
        if self.poll_hw() > 0 || self.book.has_pending() {
            return Poll::Ready(());
        }
        let send = {
            // SAFETY: only compared with the CQ pointers the channel reports.
            unsafe { self.send_cq.cq().as_ptr() }
        };
        let recv = {
            // SAFETY: as above.
            unsafe { self.recv_cq.cq().as_ptr() }
        };
        let mut fired_total = Fired::default();
        let mut outcome = Wait::Exhausted;
        {
            let fd = self.chan_fd.as_ref().expect("registered above");
            // Bounded: each round either ends the wait or consumed a readiness.
            for _ in 0..4 {
                match fd.poll_read_ready(cx) {
                    Poll::Pending => {
                        outcome = Wait::Pending;
                        break;
                    }
                    Poll::Ready(Err(e)) => {
                        outcome = Wait::Failed(format!("waiting on the completion channel: {e}"));
                        break;
                    }
                    Poll::Ready(Ok(mut guard)) => {
                        let fired = drain_events(&self.channel, send, recv);
                        if fired.drained {
                            // Read until EAGAIN: tokio must wait for the next edge.
                            guard.clear_ready();
                        }
                        fired_total.events += fired.events;
                        fired_total.send |= fired.send;
                        fired_total.recv |= fired.recv;
                        if fired.events > 0 {
                            outcome = Wait::Ready;
                            break;
                        }
                    }
                }
            }
        }
        self.cq_events += fired_total.events;
        // An event disarms the CQ it came from.
        self.send_armed &= !fired_total.send;
        self.recv_armed &= !fired_total.recv;
        match outcome {
            Wait::Pending => Poll::Pending,
            Wait::Ready => Poll::Ready(()),
            Wait::Failed(e) => {
                self.fatal = Some(e);
                Poll::Ready(())
            }
            Wait::Exhausted => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn link_failure(&self) -> Option<&LinkFailure> {
        self.book.failure()
    }

    fn shutdown(&mut self) {
        if self.book.is_shut() {
            return;
        }
        // What already completed happened before the shutdown: report it as is.
        self.poll_hw();
        let action = self.book.shutdown();
        self.apply(action);
        self.peer = None;
    }
}

impl std::fmt::Debug for VerbsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerbsTransport")
            .field("device", &self.device)
            .field("qpn", &self.qp.qp_number())
            .field("local", &self.local)
            .field("depths", &self.depths)
            .field("connected", &self.book.is_connected())
            .field("peer", &self.peer)
            .field("failure", &self.book.failure())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{validate_peer, LocalPort};
    use crate::device::LinkLayer;
    use crate::select::Selection;
    use slimebench_proto::CompletionKind;

    #[test]
    fn access_bits_match_sideway() {
        assert_eq!(sw_access(Access::LOCAL_WRITE).bits(), AccessFlags::LocalWrite.bits());
        assert_eq!(sw_access(Access::REMOTE_WRITE).bits(), AccessFlags::RemoteWrite.bits());
        assert_eq!(sw_access(Access::REMOTE_READ).bits(), AccessFlags::RemoteRead.bits());
        assert_eq!(
            sw_access(Access::REMOTE_ATOMIC).bits(),
            AccessFlags::RemoteAtomic.bits()
        );
        assert_eq!(
            sw_access(ACCESS).bits(),
            (AccessFlags::LocalWrite | AccessFlags::RemoteWrite).bits()
        );
        assert_eq!(sw_access(ACCESS).bits() as u32, ACCESS.bits());
    }

    #[test]
    fn mtu_codes_match_sideway() {
        for m in PathMtu::ALL {
            assert_eq!(sw_mtu(m) as u32, m.ibv_code());
        }
    }

    #[test]
    fn attributes_survive_the_conversion() {
        let local = LocalPort {
            port_num: 1,
            gid_index: 3,
            gid: "::ffff:10.0.0.1".parse().unwrap(),
            lid: 0,
            link_layer: LinkLayer::Ethernet,
            active_mtu: PathMtu::Mtu4096,
        };
        let peer = validate_peer(
            &TransportAddr::Rdma {
                gid: "::ffff:10.0.0.2".parse::<crate::Gid>().unwrap().to_hex(),
                lid: 0,
                qpn: 0x99,
                psn: 0x42,
                mtu: 1024,
                endpoint_id: 2,
            },
            &local,
            1,
        )
        .unwrap();
        let plan = QpPlan::new(&local, &peer, 0x777);
        let init = init_attr(&plan.init);
        assert_eq!(init.state(), QueuePairState::Init);
        assert_eq!((init.pkey_index(), init.port()), (0, 1));
        assert_eq!(init.access_flags().bits() as u32, ACCESS.bits());
        let rtr = rtr_attr(&plan.rtr);
        assert_eq!(rtr.state(), QueuePairState::ReadyToReceive);
        assert_eq!(rtr.path_mtu(), Mtu::Mtu1024);
        assert_eq!((rtr.dest_qp_num(), rtr.rq_psn()), (0x99, 0x42));
        assert_eq!((rtr.max_dest_read_atomic(), rtr.min_rnr_timer()), (1, 12));
        let rts = rts_attr(&plan.rts);
        assert_eq!(rts.state(), QueuePairState::ReadyToSend);
        assert_eq!(
            (
                rts.sq_psn(),
                rts.timeout(),
                rts.retry_cnt(),
                rts.rnr_retry(),
                rts.max_read_atomic()
            ),
            (0x777, 14, 7, 7, 1)
        );
    }

    /// Opening needs a device; without one it must fail fast with the cause.
    #[test]
    fn open_without_a_device_fails_fast_or_skips_out_loud() {
        let start = std::time::Instant::now();
        match VerbsTransport::open(VerbsConfig::default(), 1) {
            Err(OpenError::Unusable { cause, hint }) => {
                crate::skip_loudly("verbs::open", &format_args!("no usable RDMA device: {cause} ({hint})"));
                assert!(start.elapsed() < std::time::Duration::from_secs(1));
            }
            Err(e) => panic!("RDMA looked usable but opening failed: {e}"),
            Ok(t) => {
                eprintln!("opened {t:?}");
                assert!(t.local_port().active_mtu.bytes() >= 256);
            }
        }
    }

    /// A loopback connection on real hardware: one transport writes into the
    /// other's region with an immediate. Skips out loud without a device.
    #[tokio::test(flavor = "current_thread")]
    async fn loopback_write_with_immediate_on_hardware() {
        let cfg = VerbsConfig {
            selection: Selection::default().with_process_env().expect("RDMA_* env"),
            ..VerbsConfig::default()
        };
        let (mut a, mut b) = match (VerbsTransport::open(cfg.clone(), 11), VerbsTransport::open(cfg, 22)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(OpenError::Unusable { cause, .. }), _) | (_, Err(OpenError::Unusable { cause, .. })) => {
                crate::skip_loudly(
                    "verbs::loopback_write_with_immediate",
                    &format_args!("no RDMA device: {cause}"),
                );
                return;
            }
            (Err(e), _) | (_, Err(e)) => panic!("opening failed on a usable device: {e}"),
        };
        let src = a.register(1 << 20).unwrap();
        let dst = b.register(1 << 20).unwrap();
        a.mr_mut(src)[..5].copy_from_slice(b"hello");
        let (aa, ba) = (a.local_addr(), b.local_addr());
        a.connect(&ba).unwrap();
        b.connect(&aa).unwrap();
        let remote = b.mr_desc(dst).at(100, 5).unwrap();
        a.post_write_imm(
            7,
            LocalSlice {
                mr: src,
                offset: 0,
                len: 5,
            },
            remote,
            0xdead_beef,
        )
        .unwrap();
        let mut got_a = Vec::new();
        let mut got_b = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while (got_a.is_empty() || got_b.is_empty()) && tokio::time::Instant::now() < deadline {
            std::future::poll_fn(|cx| match (a.poll_ready(cx), b.poll_ready(cx)) {
                (Poll::Pending, Poll::Pending) => Poll::Pending,
                _ => Poll::Ready(()),
            })
            .await;
            a.poll_completions(&mut got_a).unwrap();
            b.poll_completions(&mut got_b).unwrap();
        }
        assert_eq!(
            got_a,
            [Completion {
                wr_id: 7,
                status: WcStatus::Ok,
                kind: CompletionKind::WriteDone
            }]
        );
        assert_eq!(
            got_b,
            [Completion {
                wr_id: 0,
                status: WcStatus::Ok,
                kind: CompletionKind::RecvImm {
                    imm: 0xdead_beef,
                    len: 5
                }
            }]
        );
        assert_eq!(&b.mr(dst)[100..105], b"hello");
        a.shutdown();
        a.shutdown();
        let mut after = Vec::new();
        a.poll_completions(&mut after).unwrap();
        assert!(after.iter().all(|c| c.status == WcStatus::Cancelled), "{after:?}");
        assert!(matches!(
            a.post_write_imm(
                8,
                LocalSlice {
                    mr: src,
                    offset: 0,
                    len: 1
                },
                remote,
                0
            ),
            Err(PostError::LinkDown(_))
        ));
        assert!(a.guards_intact() && b.guards_intact());
    }
}
