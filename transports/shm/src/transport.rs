//! [`ShmTransport`]: the [`Transport`] contract over shared memory on one host.
//!
//! The caller's thread does everything (no helper thread): `post_write_imm`
//! copies the payload straight into the peer's mapped region and publishes
//! the immediate in the peer's ring; `poll_completions` drains our own ring;
//! `poll_ready` sleeps on the wake socket, the peer's pidfd and the link-up
//! deadline. See the crate docs for the segment, ring and wake designs.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use slimebench_proto::buf::AllocError;
use slimebench_proto::frame::{validate_write, RegionBounds, Target, WriteHeader};
use slimebench_proto::transport::ShmRegion;
use slimebench_proto::{
    Completion, CompletionKind, ConnectError, LinkFailure, LocalSlice, MrDesc, MrKey, PostError, RegisterError,
    RemoteAddr, Transport, TransportAddr, TransportError, TransportKind, WcStatus,
};

use crate::naming::{self, Names, ParsedName, SegKind, ShmNaming};
use crate::ring::{self, Consumer, EntryData, Producer, Ring, RingViolation};
use crate::segment::{self, HeaderFields, OwnSegment, PeerSegment, SweepFilter, SweepReport, DATA_OFFSET};
use crate::sys::{self, ProcIdent};
use crate::wake::{self, Liveness, Rung, WakeRx, WakeTx};

/// Limits and placement of one transport. Every queue a peer can influence is bounded here.
#[derive(Clone, Debug)]
pub struct ShmConfig {
    /// Where segments are created (a tmpfs).
    pub dir: PathBuf,
    /// Entries in our completion ring (a power of two, at most 65536): how
    /// many writes the peer may have in flight towards us.
    pub ring_capacity: u32,
    /// Writes posted whose completion was not yet polled (plus writes queued
    /// while the link comes up). Beyond it: [`PostError::QueueFull`].
    pub send_queue_depth: usize,
    /// Largest single write accepted from the peer (and posted by us).
    pub max_write_len: usize,
    pub max_regions: usize,
    /// How long the peer may take to accept us after `connect` (its own `connect`).
    pub connect_timeout: Duration,
    /// Only where `pidfd_open` is unavailable: how often a sleeping waiter
    /// re-checks that the peer process lives.
    pub liveness_interval: Duration,
    /// Remove our segment names as soon as the connected peer has mapped them,
    /// so a crash after that leaves nothing behind. Off: names stay until
    /// shutdown or drop.
    pub release_names_after_attach: bool,
}

impl Default for ShmConfig {
    fn default() -> Self {
        ShmConfig {
            dir: PathBuf::from("/dev/shm"),
            ring_capacity: 256,
            send_queue_depth: 64,
            max_write_len: 1 << 30,
            max_regions: 16,
            connect_timeout: Duration::from_secs(10),
            liveness_interval: Duration::from_millis(100),
            release_names_after_attach: true,
        }
    }
}

/// Why a transport could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// A configuration value is out of range; fix the config.
    #[error("invalid shm transport configuration: {0}")]
    Config(String),
    /// `/proc` is not readable; shared memory needs Linux with `/proc` mounted.
    #[error("cannot read {what}: {source}")]
    Proc { what: &'static str, source: io::Error },
    /// The segment could not be created (tmpfs full, not writable, name taken).
    #[error("cannot create shared segment {path}: {source}")]
    Segment { path: PathBuf, source: io::Error },
    /// The wake socket could not be bound (the same incarnation started twice?).
    #[error("cannot bind wake socket {name:?}: {source}")]
    WakeSocket { name: String, source: io::Error },
}

/// Counters for logs and tests (nothing is logged per message).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShmStats {
    pub writes_posted: u64,
    pub bytes_posted: u64,
    pub receives: u64,
    /// Wake datagrams sent to a sleeping peer.
    pub wakes_sent: u64,
    /// Times `poll_ready` went to sleep (returned `Pending` after announcing it).
    pub sleeps: u64,
    pub protocol_errors: u64,
    /// Our segment names removed (after attach, shutdown or drop).
    pub names_released: u64,
    /// Files of crashed earlier incarnations removed at construction.
    pub stale_removed: u64,
    /// Files a dead peer left behind, removed when we noticed its death.
    pub peer_names_reaped: u64,
}

struct Region {
    seg: OwnSegment,
    index: u32,
    rkey: u32,
    base: u64,
    len: usize,
}

impl Region {
    fn fields(&self, incarnation: u64, owner: ProcIdent) -> HeaderFields {
        HeaderFields {
            kind: SegKind::Region(self.index),
            incarnation,
            owner,
            data_len: self.len as u64,
            rkey: self.rkey,
            base: self.base,
        }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the mapping holds DATA_OFFSET + len bytes (created so).
        unsafe { self.seg.map().as_ptr().add(DATA_OFFSET) }
    }
}

struct PendingWrite {
    wr_id: u64,
    mr: usize,
    offset: usize,
    len: usize,
    target: Target,
    dst: RemoteAddr,
    imm: u32,
}

/// Everything about the connected peer.
struct Link {
    peer_id: u64,
    peer_name: ParsedName,
    owner: ProcIdent,
    doorbell: PeerSegment,
    cap: u64,
    regions: Vec<PeerSegment>,
    bounds: Vec<RegionBounds>,
    tx: WakeTx,
    liveness: Liveness,
    /// Set once the peer's ring accepts us (its `connect` ran): producer state and the epoch seen.
    producer: Option<(Producer, u64)>,
    deadline: Instant,
    deadline_sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// We hit a full ring: ask the consumer to wake us when it frees space.
    want_space: bool,
}

impl Link {
    fn ring(&self) -> Ring<'_> {
        Ring::new(&self.doorbell.map, self.cap)
    }
}

enum Wrote {
    Done { peer_gone: bool },
    Full,
    NotUp,
    Violation(RingViolation),
}

/// Empty polls between two non-blocking looks at the peer's liveness, for
/// callers that spin without ever sleeping in `poll_ready`.
const IDLE_CHECK_EVERY: u32 = 4096;

/// The shared-memory transport. See the crate docs.
pub struct ShmTransport {
    names: Names,
    cfg: ShmConfig,
    host_id: String,
    me: ProcIdent,
    doorbell: OwnSegment,
    cap: u64,
    regions: Vec<Region>,
    bounds: Vec<RegionBounds>,
    consumer: Consumer,
    epoch: u64,
    rx: WakeRx,
    link: Option<Link>,
    sq: VecDeque<PendingWrite>,
    cq: VecDeque<Completion>,
    unpolled_writes: usize,
    failure: Option<LinkFailure>,
    is_shut: bool,
    idle_polls: u32,
    warned_no_reactor: bool,
    stats: ShmStats,
}

impl ShmTransport {
    /// Create the transport: remove stale segments of earlier incarnations of
    /// the same scope and alias (whose owners are gone), create our doorbell
    /// (ring) segment and bind our wake socket. Needs no runtime; polling
    /// needs a tokio runtime with IO and time enabled.
    ///
    /// # Errors
    /// [`ShmError`] when the config is invalid, `/proc` is unreadable, or the
    /// segment or socket cannot be created.
    pub fn new(naming: ShmNaming, cfg: ShmConfig) -> Result<Self, ShmError> {
        if naming.incarnation == 0 {
            return Err(ShmError::Config(
                "the incarnation (endpoint id) must be non-zero".into(),
            ));
        }
        let cap = u64::from(cfg.ring_capacity);
        if !cap.is_power_of_two() || cap > ring::MAX_CAPACITY {
            return Err(ShmError::Config(format!(
                "ring_capacity {cap} must be a power of two in 1..={}",
                ring::MAX_CAPACITY
            )));
        }
        if cfg.send_queue_depth == 0 || cfg.max_regions == 0 {
            return Err(ShmError::Config(
                "send_queue_depth and max_regions must be positive".into(),
            ));
        }
        let host_id = sys::boot_id().map_err(|source| ShmError::Proc {
            what: "the host's boot id",
            source,
        })?;
        let me = ProcIdent::current().map_err(|source| ShmError::Proc {
            what: "/proc/self/stat",
            source,
        })?;
        let names = Names::new(&naming);
        let mut stats = ShmStats::default();
        match segment::sweep(
            &cfg.dir,
            &SweepFilter {
                scope: &names.scope,
                alias: Some(&names.alias),
                only: None,
                except: Some(naming.incarnation),
            },
        ) {
            Ok(rep) => {
                if rep.removed > 0 {
                    tracing::info!(alias = %naming.alias, removed = rep.removed, "removed stale shm segments of an earlier incarnation");
                }
                if rep.live_skipped > 0 {
                    tracing::warn!(alias = %naming.alias, incarnations = rep.live_skipped, "another live process uses this scope and alias");
                }
                stats.stale_removed = rep.removed as u64;
            }
            Err(e) => tracing::warn!(dir = %cfg.dir.display(), error = %e, "cannot sweep stale shm segments"),
        }
        let doorbell = OwnSegment::create(
            &cfg.dir,
            &names.doorbell(),
            &doorbell_fields(naming.incarnation, me, cap),
            true,
        )
        .map_err(|source| ShmError::Segment {
            path: cfg.dir.join(names.doorbell()),
            source,
        })?;
        let rx = WakeRx::bind(&names.wake()).map_err(|source| ShmError::WakeSocket {
            name: names.wake(),
            source,
        })?;
        Ok(ShmTransport {
            names,
            host_id,
            me,
            doorbell,
            cap,
            regions: Vec::new(),
            bounds: Vec::new(),
            consumer: Consumer::new(cap, 0),
            epoch: 0,
            rx,
            link: None,
            sq: VecDeque::new(),
            cq: VecDeque::new(),
            unpolled_writes: 0,
            failure: None,
            is_shut: false,
            idle_polls: 0,
            warned_no_reactor: false,
            stats,
            cfg,
        })
    }

    /// Remove the segments that dead owners left in `dir` for `scope` (one
    /// alias, or all of them): what a SIGKILLed run leaves before its peer
    /// mapped it. Segments of live owners are never touched. `new` already
    /// does this for its own scope and alias; call this e.g. at the end of a
    /// run for the whole scope.
    ///
    /// # Errors
    /// When `dir` cannot be listed or a file cannot be removed.
    pub fn sweep_stale(dir: &Path, scope: &str, alias: Option<&str>) -> io::Result<SweepReport> {
        let scope = naming::component(scope);
        let alias = alias.map(naming::component);
        segment::sweep(
            dir,
            &SweepFilter {
                scope: &scope,
                alias: alias.as_deref(),
                only: None,
                except: None,
            },
        )
    }

    /// This host's id as published in [`TransportAddr::Shm::host_id`].
    ///
    /// # Errors
    /// When `/proc/sys/kernel/random/boot_id` is unreadable.
    pub fn host_id() -> io::Result<String> {
        sys::boot_id()
    }

    pub fn endpoint_id(&self) -> u64 {
        self.names.incarnation
    }

    pub fn stats(&self) -> &ShmStats {
        &self.stats
    }

    /// True once the peer has accepted us as its producer (its `connect` ran).
    pub fn is_up(&self) -> bool {
        self.failure.is_none()
            && self
                .link
                .as_ref()
                .is_some_and(|l| l.producer.is_some() || l.ring().accepts(self.names.incarnation).is_some())
    }

    /// Paths of our segments that still have a name (empty once released).
    pub fn published_paths(&self) -> Vec<PathBuf> {
        std::iter::once(&self.doorbell)
            .chain(self.regions.iter().map(|r| &r.seg))
            .filter(|s| s.is_linked())
            .map(|s| s.path().to_owned())
            .collect()
    }

    fn own_ring(&self) -> Ring<'_> {
        Ring::new(self.doorbell.map(), self.cap)
    }

    fn rkey_for(&self, index: u32) -> u32 {
        // Distinct per region and per endpoint, so an rkey of an older
        // incarnation does not name one of our regions by chance.
        let inc = self.names.incarnation;
        let salt = (inc as u32) ^ ((inc >> 32) as u32);
        (salt.rotate_left(11) ^ (index + 1).wrapping_mul(0x9E37_79B9)) | 1
    }

    /// Remove every name we still have (memory stays mapped). Regions first,
    /// the doorbell last: a sweeper never finds regions without their
    /// doorbell while we live.
    fn release_names(&mut self) {
        for s in self
            .regions
            .iter_mut()
            .map(|r| &mut r.seg)
            .chain(std::iter::once(&mut self.doorbell))
        {
            if s.is_linked() {
                match s.unlink() {
                    Ok(()) => self.stats.names_released += 1,
                    Err(e) => tracing::warn!(path = %s.path().display(), error = %e, "cannot remove shm segment name"),
                }
            }
        }
    }

    /// Give our segments names again (a new peer must open them after an
    /// earlier one made us release them): new files, same names, contents
    /// copied, published addresses unchanged.
    fn republish(&mut self) -> io::Result<()> {
        let (inc, me) = (self.names.incarnation, self.me);
        if !self.doorbell.is_linked() {
            // Whoever still maps the old ring sees it closed.
            self.own_ring().close();
            let fresh = OwnSegment::create(
                &self.cfg.dir,
                &self.names.doorbell(),
                &doorbell_fields(inc, me, self.cap),
                true,
            )?;
            self.doorbell = fresh;
        }
        for r in self.regions.iter_mut().filter(|r| !r.seg.is_linked()) {
            let fresh = OwnSegment::create(&self.cfg.dir, &self.names.region(r.index), &r.fields(inc, me), false)?;
            // SAFETY: both mappings hold DATA_OFFSET + r.len bytes; they are
            // distinct mappings, so the ranges do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(r.data(), fresh.map().as_ptr().add(DATA_OFFSET), r.len);
            }
            r.seg = fresh;
        }
        Ok(())
    }

    /// Per-call upkeep: release names once the peer mapped them, notice the
    /// peer accepting us, flush writes queued while the link came up.
    fn maintain(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if self.cfg.release_names_after_attach && self.doorbell.is_linked() {
            let ring = Ring::new(self.doorbell.map(), self.cap);
            if ring.ctl.producer.attached.load(std::sync::atomic::Ordering::Acquire) == link.peer_id {
                self.release_names();
            }
        }
        let link = self.link.as_mut().expect("checked above");
        if link.producer.is_none() {
            if let Some(epoch) = link.ring().accepts(self.names.incarnation) {
                link.producer = Some((Producer::new(link.cap, epoch as u32), epoch));
                link.deadline_sleep = None;
            }
        }
        if !self.sq.is_empty() {
            self.flush();
        }
    }

    /// Copy one write into the peer's memory and publish it in its ring.
    fn write_now(regions: &[Region], link: &mut Link, w: &PendingWrite, stats: &mut ShmStats) -> Wrote {
        let Link {
            producer,
            doorbell,
            cap,
            regions: peer_regions,
            tx,
            ..
        } = link;
        let Some((p, _)) = producer.as_mut() else {
            return Wrote::NotUp;
        };
        let ring = Ring::new(&doorbell.map, *cap);
        match p.has_space(&ring) {
            Err(v) => return Wrote::Violation(v),
            Ok(false) => return Wrote::Full,
            Ok(true) => {}
        }
        let src = &regions[w.mr];
        let dst = &peer_regions[w.target.region];
        // SAFETY: `src.data() + offset .. + len` lies in our region (checked at
        // post against `src.len`); `dst` was validated by `validate_write`
        // against the peer region's length, and its mapping holds DATA_OFFSET
        // + that length (checked against the file size at connect). The peer
        // may touch these bytes concurrently (shared memory, as with an RDMA
        // NIC): `copy` (memmove) is correct for any overlap and no Rust
        // reference to the destination exists in this process.
        unsafe {
            std::ptr::copy(
                src.data().add(w.offset),
                dst.map.as_ptr().add(DATA_OFFSET + w.target.offset),
                w.len,
            );
        }
        let wake = p.push(
            &ring,
            EntryData {
                addr: w.dst.addr,
                rkey: w.dst.rkey,
                len: w.len as u32,
                imm: w.imm,
            },
        );
        stats.writes_posted += 1;
        stats.bytes_posted += w.len as u64;
        let mut peer_gone = false;
        if wake {
            stats.wakes_sent += 1;
            peer_gone = tx.ring() == Rung::Gone;
        }
        Wrote::Done { peer_gone }
    }

    fn complete_write(&mut self, wr_id: u64, status: WcStatus) {
        self.cq.push_back(Completion {
            wr_id,
            status,
            kind: CompletionKind::WriteDone,
        });
        self.unpolled_writes += 1;
    }

    /// Send writes queued while the link came up, in order.
    fn flush(&mut self) {
        while let Some(w) = self.sq.front() {
            let Some(link) = self.link.as_mut() else { return };
            match Self::write_now(&self.regions, link, w, &mut self.stats) {
                Wrote::Done { peer_gone } => {
                    let wr_id = w.wr_id;
                    self.sq.pop_front();
                    self.complete_write(wr_id, WcStatus::Ok);
                    if peer_gone {
                        return self.fail(WcStatus::PeerGone, "peer's wake socket is gone".into());
                    }
                }
                Wrote::Full => {
                    link.want_space = true;
                    return;
                }
                Wrote::NotUp => return,
                Wrote::Violation(v) => return self.fail_protocol(v.to_string()),
            }
        }
    }

    /// Drain our own ring into `out`, validating every entry.
    fn consume(&mut self, out: &mut Vec<Completion>) {
        let Some(link) = self.link.as_ref() else { return };
        let ring = Ring::new(self.doorbell.map(), self.cap);
        let mut violation = None;
        for _ in 0..self.cap {
            match self.consumer.peek(&ring) {
                Ok(None) => break,
                Ok(Some(e)) => {
                    let h = WriteHeader {
                        rkey: e.rkey,
                        addr: e.addr,
                        len: e.len,
                        imm: e.imm,
                    };
                    if let Err(err) = validate_write(&h, &self.bounds, self.cfg.max_write_len) {
                        violation = Some(format!("ring entry names a write outside our memory: {err}"));
                        break;
                    }
                    self.consumer.advance();
                    self.stats.receives += 1;
                    out.push(Completion {
                        wr_id: 0,
                        status: WcStatus::Ok,
                        kind: CompletionKind::RecvImm { imm: e.imm, len: e.len },
                    });
                }
                Err(v) => {
                    violation = Some(v.to_string());
                    break;
                }
            }
        }
        if self.consumer.publish(&ring) {
            self.stats.wakes_sent += 1;
            link.tx.ring();
        }
        if let Some(v) = violation {
            self.fail_protocol(v);
        }
    }

    fn fail(&mut self, status: WcStatus, cause: String) {
        if self.failure.is_some() {
            return;
        }
        for w in std::mem::take(&mut self.sq) {
            self.cq.push_back(Completion {
                wr_id: w.wr_id,
                status,
                kind: CompletionKind::WriteDone,
            });
        }
        // Like flushed receive WRs on a verbs QP: tells a receiver-only waiter.
        self.cq.push_back(Completion {
            wr_id: 0,
            status,
            kind: CompletionKind::RecvImm { imm: 0, len: 0 },
        });
        tracing::debug!(%status, %cause, "shm link down");
        self.failure = Some(LinkFailure { status, cause });
        // Tell the peer: our ring takes nothing more; ring its bell so it looks.
        self.own_ring().close();
        if let Some(link) = &self.link {
            link.tx.ring();
        }
    }

    fn fail_protocol(&mut self, cause: String) {
        self.stats.protocol_errors += 1;
        tracing::warn!(error = %cause, "closing shm link: the peer broke the ring protocol");
        self.fail(WcStatus::Flushed, format!("protocol violation by peer: {cause}"));
    }

    /// The peer process exited: fail the link and remove names it left behind
    /// (its owner lock is free now, so the sweep may take them).
    fn peer_died(&mut self) {
        let Some(link) = &self.link else { return };
        let (pid, name, peer_id) = (link.owner.pid, link.peer_name.clone(), link.peer_id);
        self.fail(WcStatus::PeerGone, format!("peer process {pid} exited"));
        match segment::sweep(
            &self.cfg.dir,
            &SweepFilter {
                scope: &name.scope,
                alias: Some(&name.alias),
                only: Some(peer_id),
                except: None,
            },
        ) {
            Ok(rep) => self.stats.peer_names_reaped += rep.removed as u64,
            Err(e) => tracing::warn!(error = %e, "cannot remove a dead peer's segments"),
        }
    }

    /// Whether the peer closed the link or the process died (non-blocking).
    /// Fails the link and returns true if so.
    fn check_peer(&mut self) -> bool {
        let Some(link) = &self.link else { return false };
        if self.failure.is_some() {
            return true;
        }
        if let Some((_, epoch)) = link.producer {
            if link.ring().accepts(self.names.incarnation) != Some(epoch) {
                let why = if link.ring().is_closed() {
                    "peer closed the link (shut down or failed)"
                } else {
                    "peer reconnected to another endpoint"
                };
                self.fail(WcStatus::PeerGone, why.into());
                return true;
            }
        }
        if link.liveness.dead_now() {
            self.peer_died();
            return true;
        }
        false
    }

    /// Test hook: the ring we produce into, to forge hostile entries.
    #[cfg(test)]
    pub(crate) fn peer_ring_for_test(&self) -> Option<Ring<'_>> {
        self.link.as_ref().map(Link::ring)
    }
}

fn doorbell_fields(incarnation: u64, owner: ProcIdent, cap: u64) -> HeaderFields {
    HeaderFields {
        kind: SegKind::Doorbell,
        incarnation,
        owner,
        data_len: cap,
        rkey: 0,
        base: 0,
    }
}

impl Transport for ShmTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Shm
    }

    fn register(&mut self, len: usize) -> Result<MrKey, RegisterError> {
        if len == 0 || len > isize::MAX as usize / 2 {
            return Err(AllocError::BadSize { len }.into());
        }
        if self.regions.len() >= self.cfg.max_regions {
            return Err(RegisterError::TooMany {
                max: self.cfg.max_regions,
            });
        }
        let index = self.regions.len() as u32;
        let rkey = self.rkey_for(index);
        // Published addresses are per-endpoint fictions (stable across
        // re-publication, and no leak of our address-space layout).
        let base = (u64::from(index) + 1) << 40;
        let fields = HeaderFields {
            kind: SegKind::Region(index),
            incarnation: self.names.incarnation,
            owner: self.me,
            data_len: len as u64,
            rkey,
            base,
        };
        let seg = OwnSegment::create(&self.cfg.dir, &self.names.region(index), &fields, false).map_err(|e| match e
            .raw_os_error()
        {
            Some(libc::ENOSPC | libc::ENOMEM) => RegisterError::Alloc(AllocError::OutOfMemory { len }),
            _ => RegisterError::Device(format!("cannot create shm segment {}: {e}", self.names.region(index))),
        })?;
        self.bounds.push(RegionBounds {
            rkey,
            base,
            len: len as u64,
        });
        self.regions.push(Region {
            seg,
            index,
            rkey,
            base,
            len,
        });
        Ok(MrKey(index))
    }

    fn mr_desc(&self, mr: MrKey) -> MrDesc {
        let r = &self.regions[mr.0 as usize];
        MrDesc {
            addr: r.base,
            len: r.len as u64,
            rkey: r.rkey,
        }
    }

    fn mr(&self, mr: MrKey) -> &[u8] {
        let r = &self.regions[mr.0 as usize];
        // SAFETY: the mapping holds DATA_OFFSET + len initialised (zero-filled
        // by tmpfs) bytes and lives as long as `self`. The connected peer may
        // write these bytes at any time, as an RDMA NIC may: the mailbox
        // protocol decides who owns a slot, and every reader validates what it
        // reads (lengths, headers) before trusting it.
        unsafe { std::slice::from_raw_parts(r.data(), r.len) }
    }

    fn mr_mut(&mut self, mr: MrKey) -> &mut [u8] {
        let r = &self.regions[mr.0 as usize];
        // SAFETY: as in `mr`; `&mut self` makes this the only reference into
        // the region from this process.
        unsafe { std::slice::from_raw_parts_mut(r.data(), r.len) }
    }

    fn local_addr(&self) -> TransportAddr {
        TransportAddr::Shm {
            host_id: self.host_id.clone(),
            doorbell: self.names.doorbell(),
            regions: self
                .regions
                .iter()
                .map(|r| ShmRegion {
                    rkey: r.rkey,
                    name: self.names.region(r.index),
                    len: r.len as u64,
                })
                .collect(),
            endpoint_id: self.names.incarnation,
        }
    }

    fn connect(&mut self, peer: &TransportAddr) -> Result<(), ConnectError> {
        let TransportAddr::Shm {
            host_id,
            doorbell,
            regions,
            endpoint_id,
        } = peer
        else {
            return Err(ConnectError::WrongKind {
                local: TransportKind::Shm,
                peer: peer.kind(),
            });
        };
        if self.is_shut {
            return Err(ConnectError::Shutdown);
        }
        let peer_id = *endpoint_id;
        let bad = |reason: String| ConnectError::BadAddress {
            addr: doorbell.clone(),
            reason,
        };
        if peer_id == 0 || peer_id == self.names.incarnation {
            return Err(bad(format!("endpoint id {peer_id:#x} is ours or invalid")));
        }
        if *host_id != self.host_id {
            return Err(ConnectError::Unreachable {
                addr: doorbell.clone(),
                reason: format!(
                    "peer is on another host (boot id {host_id}, this host {}): shared memory needs both \
                     ends on one host; use the tcp or rdma transport",
                    self.host_id
                ),
            });
        }
        let db_name = naming::parse(doorbell)
            .filter(|p| p.kind == SegKind::Doorbell && p.incarnation == peer_id)
            .ok_or_else(|| bad(format!("not a doorbell segment name of endpoint {peer_id:#x}")))?;
        if regions.len() > self.cfg.max_regions {
            return Err(bad(format!(
                "{} regions, this side accepts at most {}",
                regions.len(),
                self.cfg.max_regions
            )));
        }
        let mut region_kinds = Vec::with_capacity(regions.len());
        for r in regions {
            let p = naming::parse(&r.name)
                .filter(|p| p.scope == db_name.scope && p.alias == db_name.alias && p.incarnation == peer_id)
                .ok_or_else(|| bad(format!("region name {:?} does not belong to this endpoint", r.name)))?;
            let SegKind::Region(_) = p.kind else {
                return Err(bad(format!("region name {:?} names a doorbell", r.name)));
            };
            if r.len == 0 || r.len > isize::MAX as u64 / 2 {
                return Err(bad(format!("region {:?} has length {}", r.name, r.len)));
            }
            if regions.iter().filter(|o| o.rkey == r.rkey).count() > 1 {
                return Err(bad(format!("rkey {:#x} is published twice", r.rkey)));
            }
            region_kinds.push(p.kind);
        }

        // A previous link (an older incarnation of the peer) is dropped along
        // with its queues: nobody can be waiting on it yet.
        if let Some(old) = self.link.take() {
            old.tx.ring();
        }
        self.sq.clear();
        self.cq.clear();
        self.unpolled_writes = 0;
        self.failure = None;

        let dir = self.cfg.dir.clone();
        let db = PeerSegment::open(&dir, doorbell, SegKind::Doorbell, peer_id, |f| {
            if f.data_len.is_power_of_two() && f.data_len <= ring::MAX_CAPACITY {
                Ok(())
            } else {
                Err(format!(
                    "ring capacity {} is not a power of two <= {}",
                    f.data_len,
                    ring::MAX_CAPACITY
                ))
            }
        })?;
        let owner = db.fields.owner;
        let cap = db.fields.data_len;
        let mut peer_regions = Vec::with_capacity(regions.len());
        let mut bounds = Vec::with_capacity(regions.len());
        for (r, kind) in regions.iter().zip(region_kinds) {
            let seg = PeerSegment::open(&dir, &r.name, kind, peer_id, |f| {
                if f.rkey != r.rkey || f.data_len != r.len {
                    return Err(format!(
                        "segment says rkey {:#x} len {}, descriptor says rkey {:#x} len {}",
                        f.rkey, f.data_len, r.rkey, r.len
                    ));
                }
                if f.owner != owner {
                    return Err("region and doorbell have different owners".into());
                }
                Ok(())
            })?;
            bounds.push(RegionBounds {
                rkey: r.rkey,
                base: seg.fields.base,
                len: r.len,
            });
            peer_regions.push(seg);
        }
        let liveness = Liveness::watch(owner, self.cfg.liveness_interval).map_err(|e| ConnectError::Unreachable {
            addr: doorbell.clone(),
            reason: format!("peer {e}"),
        })?;
        let tx = WakeTx::connect(&Names::of(&db_name).wake()).map_err(|e| ConnectError::Unreachable {
            addr: doorbell.clone(),
            reason: format!("peer's wake socket: {e}"),
        })?;
        self.republish().map_err(|e| ConnectError::Unreachable {
            addr: self.names.doorbell(),
            reason: format!("cannot re-publish our own segments: {e}"),
        })?;

        // Accept this peer (and only it) as the producer of our ring.
        self.epoch += 1;
        let tag = self.epoch as u32;
        self.own_ring().reset(peer_id, self.epoch);
        self.consumer = Consumer::new(self.cap, tag);

        let link = Link {
            peer_id,
            peer_name: db_name,
            owner,
            doorbell: db,
            cap,
            regions: peer_regions,
            bounds,
            tx,
            liveness,
            producer: None,
            deadline: Instant::now() + self.cfg.connect_timeout,
            deadline_sleep: None,
            want_space: false,
        };
        // Tell the peer we mapped everything it published (it may drop its
        // names now) and ring its bell: a writer waiting for us may go on.
        link.ring()
            .ctl
            .producer
            .attached
            .store(self.names.incarnation, std::sync::atomic::Ordering::Release);
        link.tx.ring();
        self.link = Some(link);
        self.maintain();
        Ok(())
    }

    fn post_write_imm(&mut self, wr_id: u64, src: LocalSlice, dst: RemoteAddr, imm: u32) -> Result<(), PostError> {
        if let Some(f) = &self.failure {
            return Err(PostError::LinkDown(f.clone()));
        }
        if self.link.is_none() {
            return Err(PostError::NotConnected);
        }
        let outstanding = self.sq.len() + self.unpolled_writes;
        if outstanding >= self.cfg.send_queue_depth {
            return Err(PostError::QueueFull { depth: outstanding });
        }
        let region = self
            .regions
            .get(src.mr.0 as usize)
            .ok_or(PostError::UnknownMr(src.mr))?;
        src.validate(region.len, self.cfg.max_write_len)?;
        let max = self.cfg.max_write_len.min(u32::MAX as usize);
        self.maintain();
        if self.check_peer_epoch() {
            return Err(PostError::LinkDown(self.failure.clone().expect("just failed")));
        }
        let link = self.link.as_mut().expect("checked above");
        let h = WriteHeader {
            rkey: dst.rkey,
            addr: dst.addr,
            len: src.len as u32,
            imm,
        };
        let target = match validate_write(&h, &link.bounds, max) {
            Ok(t) => t,
            Err(e) => {
                // As on a verbs QP: the write completes with a remote access
                // error and the link enters the error state.
                self.complete_write(wr_id, WcStatus::RemoteAccess);
                self.fail(WcStatus::RemoteAccess, format!("write refused before sending: {e}"));
                return Ok(());
            }
        };
        let w = PendingWrite {
            wr_id,
            mr: src.mr.0 as usize,
            offset: src.offset,
            len: src.len,
            target,
            dst,
            imm,
        };
        if !self.sq.is_empty() || link.producer.is_none() {
            // The peer has not accepted us yet: keep order, send when it does.
            self.sq.push_back(w);
            return Ok(());
        }
        match Self::write_now(&self.regions, link, &w, &mut self.stats) {
            Wrote::Done { peer_gone } => {
                self.complete_write(wr_id, WcStatus::Ok);
                if peer_gone {
                    self.fail(WcStatus::PeerGone, "peer's wake socket is gone".into());
                }
                Ok(())
            }
            Wrote::Full => {
                link.want_space = true;
                Err(PostError::QueueFull {
                    depth: link.cap as usize,
                })
            }
            Wrote::NotUp => {
                self.sq.push_back(w);
                Ok(())
            }
            Wrote::Violation(v) => {
                self.fail_protocol(v.to_string());
                Err(PostError::LinkDown(self.failure.clone().expect("just failed")))
            }
        }
    }

    fn poll_completions(&mut self, out: &mut Vec<Completion>) -> Result<usize, TransportError> {
        let before = out.len();
        self.maintain();
        if self.link.is_some() && self.failure.is_none() {
            self.consumer.withdraw_sleep(&Ring::new(self.doorbell.map(), self.cap));
            self.consume(out);
        }
        out.extend(self.cq.drain(..));
        self.unpolled_writes = 0;
        if out.len() == before {
            self.idle_polls = self.idle_polls.wrapping_add(1);
            if self.idle_polls % IDLE_CHECK_EVERY == 0 && self.check_peer() {
                out.extend(self.cq.drain(..));
            }
        } else {
            self.idle_polls = 0;
        }
        Ok(out.len() - before)
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.cq.is_empty() || self.failure.is_some() {
            return Poll::Ready(());
        }
        self.maintain();
        if !self.cq.is_empty() || self.failure.is_some() || self.link.is_none() {
            // Not connected: nothing will happen until `connect`.
            return if self.link.is_none() && self.failure.is_none() {
                Poll::Pending
            } else {
                Poll::Ready(())
            };
        }
        match self.consumer.peek(&self.own_ring()) {
            Ok(Some(_)) => return Poll::Ready(()),
            Ok(None) => {}
            Err(v) => {
                self.fail_protocol(v.to_string());
                return Poll::Ready(());
            }
        }
        if self.check_peer() {
            return Poll::Ready(());
        }
        let link = self.link.as_mut().expect("checked above");
        if link.liveness.poll_dead(cx).is_ready() {
            self.peer_died();
            return Poll::Ready(());
        }
        if let Some((p, _)) = link.producer.as_mut() {
            if link.want_space || !self.sq.is_empty() {
                let ring = Ring::new(&link.doorbell.map, link.cap);
                match p.want_space(&ring) {
                    Ok(true) => {
                        link.want_space = false;
                        return Poll::Ready(());
                    }
                    Ok(false) => {}
                    Err(v) => {
                        self.fail_protocol(v.to_string());
                        return Poll::Ready(());
                    }
                }
            }
        } else if wake::in_runtime().is_ok() {
            // Not accepted yet: bound the wait (the peer's connect rings our bell).
            let deadline = tokio::time::Instant::from_std(link.deadline);
            let sleep = link
                .deadline_sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.as_mut().poll(cx).is_ready() {
                let t = self.cfg.connect_timeout;
                self.fail(WcStatus::PeerGone, format!("peer did not accept the link within {t:?}"));
                return Poll::Ready(());
            }
        }
        let ring = Ring::new(self.doorbell.map(), self.cap);
        match self.consumer.announce_sleep(&ring) {
            Ok(true) => {}
            Ok(false) => return Poll::Ready(()),
            Err(v) => {
                self.fail_protocol(v.to_string());
                return Poll::Ready(());
            }
        }
        match self.rx.poll_woken(cx) {
            Poll::Pending => {
                self.stats.sleeps += 1;
                Poll::Pending
            }
            Poll::Ready(Ok(())) => {
                self.consumer.withdraw_sleep(&ring);
                Poll::Ready(())
            }
            Poll::Ready(Err(e)) => {
                if !self.warned_no_reactor {
                    self.warned_no_reactor = true;
                    tracing::warn!(error = %e, "shm transport cannot sleep on its wake socket; polling instead");
                }
                self.consumer.withdraw_sleep(&ring);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn link_failure(&self) -> Option<&LinkFailure> {
        self.failure.as_ref()
    }

    fn busy_poll_helps(&self) -> bool {
        // A copy is a few hundred nanoseconds to a few milliseconds of memory
        // bandwidth, never kernel work: spinning always shortens the wait.
        true
    }

    fn shutdown(&mut self) {
        self.is_shut = true;
        self.fail(WcStatus::Cancelled, "transport shut down locally".into());
        self.own_ring().close();
        if let Some(link) = self.link.take() {
            link.tx.ring();
        }
        self.release_names();
    }
}

impl ShmTransport {
    /// Cheap per-post check that the peer still accepts us. Fails the link
    /// and returns true when it does not.
    fn check_peer_epoch(&mut self) -> bool {
        let Some(link) = &self.link else { return false };
        if let Some((_, epoch)) = link.producer {
            if link.ring().accepts(self.names.incarnation) != Some(epoch) {
                return self.check_peer();
            }
        }
        self.failure.is_some()
    }
}

impl Drop for ShmTransport {
    fn drop(&mut self) {
        self.own_ring().close();
        if let Some(link) = &self.link {
            link.tx.ring();
        }
        self.release_names();
    }
}

impl std::fmt::Debug for ShmTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmTransport")
            .field("doorbell", &self.names.doorbell())
            .field("regions", &self.regions.len())
            .field(
                "peer",
                &self.link.as_ref().map(|l| format_args!("{:#x}", l.peer_id).to_string()),
            )
            .field("up", &self.is_up())
            .field("failure", &self.failure)
            .finish()
    }
}
