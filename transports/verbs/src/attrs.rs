//! The connection recipe as plain data: the peer's published info checked,
//! queue depths, and the attribute sets for the RC queue-pair transitions
//! RESET → INIT → RTR → RTS.
//!
//! Nothing here touches a device; the `sideway` adapter copies these structs
//! field by field into `ibv_modify_qp` attributes. Every value is chosen here,
//! with the reason next to it.

use slimebench_proto::{TransportAddr, TransportKind};

use crate::device::LinkLayer;
use crate::gid::{Gid, GidParseError};
use crate::mtu::PathMtu;

/// Largest 24-bit value: QPNs and PSNs are 24-bit fields in the packet headers.
pub const MAX_24BIT: u32 = 0x00FF_FFFF;

/// Highest unicast LID; 0xC000..=0xFFFE are multicast, 0xFFFF is permissive.
pub const MAX_UNICAST_LID: u16 = 0xBFFF;

/// Remote access rights, as `enum ibv_access_flags` bits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access(pub u32);

impl Access {
    pub const LOCAL_WRITE: Access = Access(1);
    pub const REMOTE_WRITE: Access = Access(1 << 1);
    pub const REMOTE_READ: Access = Access(1 << 2);
    pub const REMOTE_ATOMIC: Access = Access(1 << 3);

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

/// What both the QP and every registered region allow. The protocol is
/// write-with-immediate only: the peer writes into our mailbox (REMOTE_WRITE,
/// which verbs only accepts together with LOCAL_WRITE). Nobody reads or does
/// atomics remotely, so REMOTE_READ and REMOTE_ATOMIC stay off: a stale or
/// forged rkey can then at worst write a mailbox, never read our memory.
pub const ACCESS: Access = Access(Access::LOCAL_WRITE.0 | Access::REMOTE_WRITE.0);

/// Our end of a connection, fixed when the transport is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPort {
    /// Physical port number (from 1).
    pub port_num: u8,
    /// Index of our source GID in the port's GID table (`sgid_index`, 8 bits in verbs).
    pub gid_index: u8,
    pub gid: Gid,
    pub lid: u16,
    pub link_layer: LinkLayer,
    pub active_mtu: PathMtu,
}

/// A peer's published RC endpoint after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub gid: Gid,
    pub lid: u16,
    pub qpn: u32,
    pub psn: u32,
    pub mtu: PathMtu,
    pub endpoint_id: u64,
}

/// Why a peer's published info cannot be used. Each means the peer (or its
/// rendezvous record) is wrong or from an incompatible build: start both sides
/// with the same `--transport rdma` on the same kind of fabric.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PeerInfoError {
    /// The peer published a non-RDMA address.
    #[error("peer uses the {0} transport, not rdma")]
    WrongKind(TransportKind),
    #[error("peer GID: {0}")]
    BadGid(#[from] GidParseError),
    /// QPNs are 24-bit; 0 and 1 are the management QPs, never an RC QP.
    #[error("peer QPN {0:#x} is not a 24-bit RC queue pair number (2..=0xffffff)")]
    BadQpn(u32),
    #[error("peer PSN {0:#x} does not fit in 24 bits")]
    BadPsn(u32),
    /// Path MTU must be 256, 512, 1024, 2048 or 4096 bytes.
    #[error("peer MTU {0} is not a power of two in 256..=4096")]
    BadMtu(u32),
    /// RoCE routes by GID: an all-zero GID cannot be addressed.
    #[error("peer GID is all zero, but this RoCE port routes by GID")]
    ZeroGidOnRoce,
    /// An InfiniBand port routes by LID; 0 means the subnet manager has not
    /// configured the peer's port (or the peer is on RoCE).
    #[error("peer LID {0:#x} is not a unicast LID (1..=0xbfff); InfiniBand needs one")]
    BadLid(u16),
    /// One side is on InfiniBand, the other on RoCE: they cannot talk.
    #[error("peer is on {peer} but this port is {local}")]
    LinkLayerMismatch { local: LinkLayer, peer: &'static str },
    /// Endpoint ids are random and non-zero; ours means we are talking to ourselves
    /// through a stale record.
    #[error("peer endpoint id {0:#x} is zero or ours")]
    BadEndpointId(u64),
}

/// Check a peer's published address against our port before any QP change.
///
/// # Errors
/// [`PeerInfoError`] naming the first field that is wrong.
pub fn validate_peer(addr: &TransportAddr, local: &LocalPort, our_endpoint_id: u64) -> Result<PeerInfo, PeerInfoError> {
    let TransportAddr::Rdma {
        gid,
        lid,
        qpn,
        psn,
        mtu,
        endpoint_id,
    } = addr
    else {
        return Err(PeerInfoError::WrongKind(addr.kind()));
    };
    if *endpoint_id == 0 || *endpoint_id == our_endpoint_id {
        return Err(PeerInfoError::BadEndpointId(*endpoint_id));
    }
    if !(2..=MAX_24BIT).contains(qpn) {
        return Err(PeerInfoError::BadQpn(*qpn));
    }
    if *psn > MAX_24BIT {
        return Err(PeerInfoError::BadPsn(*psn));
    }
    let mtu = PathMtu::from_bytes(*mtu).ok_or(PeerInfoError::BadMtu(*mtu))?;
    let gid: Gid = gid.parse()?;
    if local.link_layer.is_ethernet() {
        // RoCE ports have no LIDs (they report 0). A non-zero LID comes from an
        // InfiniBand port, which cannot reach us.
        if *lid != 0 {
            return Err(PeerInfoError::LinkLayerMismatch {
                local: local.link_layer,
                peer: "InfiniBand (it published a LID)",
            });
        }
        if gid.is_zero() {
            return Err(PeerInfoError::ZeroGidOnRoce);
        }
    } else if *lid == 0 && !gid.is_zero() && gid.ipv4().is_some() {
        // LID 0 plus an IPv4-mapped GID: a RoCE peer.
        return Err(PeerInfoError::LinkLayerMismatch {
            local: local.link_layer,
            peer: "RoCE (no LID, IPv4-mapped GID)",
        });
    } else if !(1..=MAX_UNICAST_LID).contains(lid) {
        return Err(PeerInfoError::BadLid(*lid));
    }
    Ok(PeerInfo {
        gid,
        lid: *lid,
        qpn: *qpn,
        psn: *psn,
        mtu,
        endpoint_id: *endpoint_id,
    })
}

/// A PSN from 32 random bits: the low 24. A random start (as rdma-core's
/// examples and perftest do) makes packets of an older incarnation's QP fall
/// outside the new QP's window.
pub fn psn_from_random(r: u32) -> u32 {
    r & MAX_24BIT
}

/// Work-queue and completion-queue sizes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct QueueDepths {
    /// Send WRs outstanding at most (`max_send_wr`); one more is `QueueFull`.
    pub send: u32,
    /// Receives kept posted (`max_recv_wr`).
    pub recv_window: u32,
    /// Send CQ entries: every send WR is signaled, so one per send WR.
    pub send_cq: u32,
    /// Receive CQ entries: at most one per posted receive.
    pub recv_cq: u32,
}

/// The smallest window or send queue we run with.
pub const MIN_DEPTH: u32 = 64;

/// Why the device cannot hold the queues we need.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DepthError {
    /// Lower `--max-inflight` (the device limit is per queue).
    #[error("{what} needs {need} entries, the device allows {max}")]
    TooDeep { what: &'static str, need: u32, max: u32 },
}

impl QueueDepths {
    /// Depths for `max_in_flight` slots per mailbox.
    ///
    /// Each side posts at most one write per slot for its own calls plus one
    /// reply per slot for the peer's calls: 2 × max in-flight send WRs. The
    /// peer can likewise have 2 × max in-flight write-with-immediate in flight
    /// towards us, each consuming one posted receive before we repost it on
    /// the next poll — so the receive window is at least that, and never below
    /// [`MIN_DEPTH`] (receives cost no memory: they are zero-length). The
    /// original pre-posted 2048 against a progress thread that reposted late;
    /// running out means receiver-not-ready NAKs and stalls. `recv_window`
    /// raises (never lowers) the window.
    pub fn new(max_in_flight: u32, recv_window: Option<u32>) -> QueueDepths {
        let per_direction = max_in_flight.max(1).saturating_mul(2).max(MIN_DEPTH);
        let recv = recv_window.unwrap_or(0).max(per_direction);
        QueueDepths {
            send: per_direction,
            recv_window: recv,
            send_cq: per_direction,
            recv_cq: recv,
        }
    }

    /// Check against the device limits (`max_qp_wr`, `max_cqe`).
    ///
    /// # Errors
    /// [`DepthError::TooDeep`] for the first queue over its limit.
    pub fn check(&self, max_qp_wr: u32, max_cqe: u32) -> Result<(), DepthError> {
        for (what, need, max) in [
            ("send queue", self.send, max_qp_wr),
            ("receive window", self.recv_window, max_qp_wr),
            ("send completion queue", self.send_cq, max_cqe),
            ("receive completion queue", self.recv_cq, max_cqe),
        ] {
            if need > max {
                return Err(DepthError::TooDeep { what, need, max });
            }
        }
        Ok(())
    }
}

/// RESET → INIT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitAttrs {
    /// Partition key index 0: the default partition (0xffff), the only one
    /// unmanaged fabrics and every RoCE port have.
    pub pkey_index: u16,
    pub port_num: u8,
    /// [`ACCESS`]: remote writes only.
    pub access: Access,
}

/// Global route header: mandatory on RoCE (packets are routed by GID).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grh {
    pub dgid: Gid,
    pub sgid_index: u8,
    /// 64: enough for routed RoCE v2 (a value of 1 — used by rdma-core's
    /// examples — is dropped by the first IP router).
    pub hop_limit: u8,
    /// 0 (best effort). Lossless RoCE fabrics map a DSCP/priority with PFC to
    /// RDMA; the value is site-specific and would become a flag.
    pub traffic_class: u8,
    pub flow_label: u32,
}

/// The address vector towards the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressVector {
    /// Peer LID (0 on RoCE, where it is ignored).
    pub dlid: u16,
    /// Service level 0: the default virtual lane.
    pub sl: u8,
    pub src_path_bits: u8,
    pub port_num: u8,
    /// Present on RoCE; absent on InfiniBand, which routes by LID inside one subnet.
    pub grh: Option<Grh>,
}

/// INIT → RTR: everything about the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtrAttrs {
    /// The smaller of both sides' active MTU: packets larger than the
    /// receiver's MTU would be dropped.
    pub path_mtu: PathMtu,
    pub dest_qpn: u32,
    /// The peer's starting send PSN, which our receive side expects first.
    pub rq_psn: u32,
    /// 1: RDMA reads/atomics the peer may have outstanding at us. We never
    /// allow remote reads (see [`ACCESS`]), but RC requires the field; 1 costs
    /// one responder resource and is what rdma-core's examples use.
    pub max_dest_rd_atomic: u8,
    /// [`MIN_RNR_TIMER`].
    pub min_rnr_timer: u8,
    pub av: AddressVector,
}

/// RTR → RTS: our send side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtsAttrs {
    /// Our starting PSN (the one we published).
    pub sq_psn: u32,
    /// [`ACK_TIMEOUT`].
    pub timeout: u8,
    /// [`RETRY_CNT`].
    pub retry_cnt: u8,
    /// [`RNR_RETRY`].
    pub rnr_retry: u8,
    /// 1: reads/atomics we may have outstanding; we issue none.
    pub max_rd_atomic: u8,
}

/// Local ACK timeout exponent: 4.096 µs × 2^14 ≈ 67 ms before a packet is
/// retransmitted (the original's value). Small enough that a dead peer is
/// noticed in well under a second, large enough not to fire on a congested
/// fabric.
pub const ACK_TIMEOUT: u8 = 14;

/// Retransmissions before `RETRY_EXC_ERR` (the 3-bit maximum, as the original):
/// a peer that stopped answering shows as `RetryExceeded` after roughly
/// 8 × 67 ms ≈ 0.5 s (the NIC may stretch the timeout).
pub const RETRY_CNT: u8 = 7;

/// Retries after receiver-not-ready NAKs. 7 is special in the IB spec: retry
/// forever (the original's value). With our receive window an RNR NAK means
/// the peer posted more writes than the window allows — a bug that then shows
/// as a stall, not an error; a peer that is gone is caught by `RETRY_CNT`
/// and the rendezvous lease instead.
pub const RNR_RETRY: u8 = 7;

/// Minimum RNR NAK delay, a 5-bit code: 12 = 0.64 ms (what rdma-core's
/// `ibv_rc_pingpong` and perftest use). The original set 0x20 (32), which does
/// not fit 5 bits: drivers either refuse the transition (EINVAL) or keep the
/// low bits, 0, which encodes the *longest* delay, 655.36 ms — every RNR NAK
/// would then stall a call for two thirds of a second.
pub const MIN_RNR_TIMER: u8 = 12;

/// Largest valid `min_rnr_timer` code.
pub const MAX_RNR_TIMER_CODE: u8 = 31;

/// The full transition plan for one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QpPlan {
    pub init: InitAttrs,
    pub rtr: RtrAttrs,
    pub rts: RtsAttrs,
}

impl QpPlan {
    /// The attributes to connect `local` to a validated `peer`, sending from `our_psn`.
    ///
    /// # Panics
    /// If `our_psn` does not fit 24 bits (we generate it with [`psn_from_random`]).
    pub fn new(local: &LocalPort, peer: &PeerInfo, our_psn: u32) -> QpPlan {
        assert!(our_psn <= MAX_24BIT, "PSN {our_psn:#x} exceeds 24 bits");
        let grh = local.link_layer.is_ethernet().then_some(Grh {
            dgid: peer.gid,
            sgid_index: local.gid_index,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        });
        QpPlan {
            init: InitAttrs {
                pkey_index: 0,
                port_num: local.port_num,
                access: ACCESS,
            },
            rtr: RtrAttrs {
                path_mtu: local.active_mtu.min(peer.mtu),
                dest_qpn: peer.qpn,
                rq_psn: peer.psn,
                max_dest_rd_atomic: 1,
                min_rnr_timer: MIN_RNR_TIMER,
                av: AddressVector {
                    dlid: if grh.is_some() { 0 } else { peer.lid },
                    sl: 0,
                    src_path_bits: 0,
                    port_num: local.port_num,
                    grh,
                },
            },
            rts: RtsAttrs {
                sq_psn: our_psn,
                timeout: ACK_TIMEOUT,
                retry_cnt: RETRY_CNT,
                rnr_retry: RNR_RETRY,
                max_rd_atomic: 1,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roce() -> LocalPort {
        LocalPort {
            port_num: 1,
            gid_index: 3,
            gid: "::ffff:10.0.0.1".parse().unwrap(),
            lid: 0,
            link_layer: LinkLayer::Ethernet,
            active_mtu: PathMtu::Mtu4096,
        }
    }

    fn ib() -> LocalPort {
        LocalPort {
            port_num: 2,
            gid_index: 0,
            gid: "fe80::2:c903:a:1".parse().unwrap(),
            lid: 7,
            link_layer: LinkLayer::InfiniBand,
            active_mtu: PathMtu::Mtu2048,
        }
    }

    fn roce_peer() -> TransportAddr {
        TransportAddr::Rdma {
            gid: "00000000000000000000ffff0a000002".into(),
            lid: 0,
            qpn: 0x1a2b,
            psn: 0x123456,
            mtu: 1024,
            endpoint_id: 99,
        }
    }

    fn ib_peer() -> TransportAddr {
        TransportAddr::Rdma {
            gid: "fe800000000000000002c903000a0002".into(),
            lid: 12,
            qpn: 0x44,
            psn: 0xffffff,
            mtu: 4096,
            endpoint_id: 5,
        }
    }

    fn with(
        addr: TransportAddr,
        f: impl FnOnce(&mut String, &mut u16, &mut u32, &mut u32, &mut u32, &mut u64),
    ) -> TransportAddr {
        let TransportAddr::Rdma {
            mut gid,
            mut lid,
            mut qpn,
            mut psn,
            mut mtu,
            mut endpoint_id,
        } = addr
        else {
            unreachable!()
        };
        f(&mut gid, &mut lid, &mut qpn, &mut psn, &mut mtu, &mut endpoint_id);
        TransportAddr::Rdma {
            gid,
            lid,
            qpn,
            psn,
            mtu,
            endpoint_id,
        }
    }

    #[test]
    fn transport_addr_rdma_codec() {
        let a = roce_peer();
        let s = serde_json::to_string(&a).unwrap();
        assert_eq!(
            s,
            r#"{"kind":"rdma","gid":"00000000000000000000ffff0a000002","lid":0,"qpn":6699,"psn":1193046,"mtu":1024,"endpoint_id":99}"#
        );
        assert_eq!(serde_json::from_str::<TransportAddr>(&s).unwrap(), a);
        assert_eq!(a.kind(), TransportKind::Rdma);
        // A record with a field missing is refused by the codec itself.
        assert!(serde_json::from_str::<TransportAddr>(r#"{"kind":"rdma","gid":"00","lid":0}"#).is_err());
    }

    #[test]
    fn valid_peers() {
        let p = validate_peer(&roce_peer(), &roce(), 1).unwrap();
        assert_eq!(p.gid.ipv4(), Some("10.0.0.2".parse().unwrap()));
        assert_eq!((p.qpn, p.psn, p.mtu, p.lid), (0x1a2b, 0x123456, PathMtu::Mtu1024, 0));
        let p = validate_peer(&ib_peer(), &ib(), 1).unwrap();
        assert_eq!((p.lid, p.psn, p.mtu), (12, 0xffffff, PathMtu::Mtu4096));
    }

    #[test]
    fn invalid_peers() {
        let l = roce();
        let e = |a: TransportAddr, l: &LocalPort| validate_peer(&a, l, 1).unwrap_err();
        assert_eq!(
            e(
                TransportAddr::Sim {
                    node: 1,
                    endpoint_id: 2
                },
                &l
            ),
            PeerInfoError::WrongKind(TransportKind::Sim)
        );
        assert_eq!(
            e(with(roce_peer(), |_, _, q, _, _, _| *q = 1 << 24), &l),
            PeerInfoError::BadQpn(1 << 24)
        );
        assert_eq!(
            e(with(roce_peer(), |_, _, q, _, _, _| *q = 1), &l),
            PeerInfoError::BadQpn(1)
        );
        assert_eq!(
            e(with(roce_peer(), |_, _, q, _, _, _| *q = 0), &l),
            PeerInfoError::BadQpn(0)
        );
        assert_eq!(
            e(with(roce_peer(), |_, _, _, p, _, _| *p = 1 << 24), &l),
            PeerInfoError::BadPsn(1 << 24)
        );
        for mtu in [0, 128, 1500, 3000, 8192, 9000] {
            assert_eq!(
                e(with(roce_peer(), |_, _, _, _, m, _| *m = mtu), &l),
                PeerInfoError::BadMtu(mtu)
            );
        }
        assert!(matches!(
            e(with(roce_peer(), |g, _, _, _, _, _| *g = "xyz".into()), &l),
            PeerInfoError::BadGid(_)
        ));
        assert!(matches!(
            e(with(roce_peer(), |g, _, _, _, _, _| g.clear()), &l),
            PeerInfoError::BadGid(GidParseError::Empty)
        ));
        assert_eq!(
            e(with(roce_peer(), |g, _, _, _, _, _| *g = "0".repeat(32)), &l),
            PeerInfoError::ZeroGidOnRoce
        );
        assert_eq!(
            e(with(roce_peer(), |_, _, _, _, _, id| *id = 0), &l),
            PeerInfoError::BadEndpointId(0)
        );
        assert_eq!(
            e(with(roce_peer(), |_, _, _, _, _, id| *id = 1), &l),
            PeerInfoError::BadEndpointId(1)
        );
    }

    #[test]
    fn gid_and_lid_consistency_between_ib_and_roce() {
        // An IB peer (has a LID) towards a RoCE port.
        assert!(matches!(
            validate_peer(&ib_peer(), &roce(), 1),
            Err(PeerInfoError::LinkLayerMismatch { .. })
        ));
        // A RoCE peer (LID 0, IPv4-mapped GID) towards an IB port.
        assert!(matches!(
            validate_peer(&roce_peer(), &ib(), 1),
            Err(PeerInfoError::LinkLayerMismatch { .. })
        ));
        // IB peer without a LID (port not configured by the subnet manager).
        assert_eq!(
            validate_peer(&with(ib_peer(), |_, l, _, _, _, _| *l = 0), &ib(), 1),
            Err(PeerInfoError::BadLid(0))
        );
        // Multicast LIDs are not unicast.
        assert_eq!(
            validate_peer(&with(ib_peer(), |_, l, _, _, _, _| *l = 0xc000), &ib(), 1),
            Err(PeerInfoError::BadLid(0xc000))
        );
        // Unspecified link layer behaves as InfiniBand.
        let mut old = ib();
        old.link_layer = LinkLayer::Unspecified;
        assert!(validate_peer(&ib_peer(), &old, 1).is_ok());
    }

    #[test]
    fn init_attributes() {
        let plan = QpPlan::new(&roce(), &validate_peer(&roce_peer(), &roce(), 1).unwrap(), 0xabcdef);
        assert_eq!(
            plan.init,
            InitAttrs {
                pkey_index: 0,
                port_num: 1,
                access: Access(Access::LOCAL_WRITE.0 | Access::REMOTE_WRITE.0),
            }
        );
        assert!(plan.init.access.contains(Access::REMOTE_WRITE));
        assert!(!plan.init.access.contains(Access::REMOTE_READ));
        assert!(!plan.init.access.contains(Access::REMOTE_ATOMIC));
        assert_eq!(ACCESS.bits(), 0b11);
    }

    #[test]
    fn rtr_attributes_on_roce_use_the_grh() {
        let local = roce();
        let peer = validate_peer(&roce_peer(), &local, 1).unwrap();
        let rtr = QpPlan::new(&local, &peer, 7).rtr;
        assert_eq!(rtr.path_mtu, PathMtu::Mtu1024, "min(4096 local, 1024 peer)");
        assert_eq!(rtr.dest_qpn, 0x1a2b);
        assert_eq!(rtr.rq_psn, 0x123456);
        assert_eq!(rtr.max_dest_rd_atomic, 1);
        assert_eq!(rtr.min_rnr_timer, 12);
        assert!(rtr.min_rnr_timer <= MAX_RNR_TIMER_CODE, "5-bit field");
        // The original's 0x20 would not fit the field: the bug we do not copy.
        const { assert!(0x20 > MAX_RNR_TIMER_CODE) };
        // …and its low 5 bits, 0, would mean the longest delay (655.36 ms).
        assert_eq!(0x20 & MAX_RNR_TIMER_CODE, 0);
        assert_eq!(
            rtr.av,
            AddressVector {
                dlid: 0,
                sl: 0,
                src_path_bits: 0,
                port_num: 1,
                grh: Some(Grh {
                    dgid: peer.gid,
                    sgid_index: 3,
                    hop_limit: 64,
                    traffic_class: 0,
                    flow_label: 0,
                }),
            }
        );
    }

    #[test]
    fn rtr_attributes_on_infiniband_route_by_lid() {
        let local = ib();
        let peer = validate_peer(&ib_peer(), &local, 1).unwrap();
        let rtr = QpPlan::new(&local, &peer, 7).rtr;
        assert_eq!(rtr.path_mtu, PathMtu::Mtu2048, "min(2048 local, 4096 peer)");
        assert_eq!(rtr.av.dlid, 12);
        assert_eq!(rtr.av.port_num, 2);
        assert_eq!(rtr.av.grh, None);
    }

    #[test]
    fn rts_attributes() {
        let local = roce();
        let peer = validate_peer(&roce_peer(), &local, 1).unwrap();
        let rts = QpPlan::new(&local, &peer, 0xabcdef).rts;
        assert_eq!(
            rts,
            RtsAttrs {
                sq_psn: 0xabcdef,
                timeout: 14,
                retry_cnt: 7,
                rnr_retry: 7,
                max_rd_atomic: 1,
            }
        );
        // retry_cnt and rnr_retry are 3-bit fields, timeout is 5-bit.
        assert!(rts.retry_cnt <= 7 && rts.rnr_retry <= 7 && rts.timeout <= 31);
    }

    #[test]
    #[should_panic(expected = "exceeds 24 bits")]
    fn plan_refuses_a_wide_psn() {
        let local = roce();
        let peer = validate_peer(&roce_peer(), &local, 1).unwrap();
        let _ = QpPlan::new(&local, &peer, 1 << 24);
    }

    #[test]
    fn psn_is_24_bit() {
        assert_eq!(psn_from_random(u32::MAX), 0xffffff);
        assert_eq!(psn_from_random(0x1234_5678), 0x34_5678);
    }

    #[test]
    fn queue_depths_follow_max_in_flight() {
        let d = QueueDepths::new(1, None);
        assert_eq!((d.send, d.recv_window, d.send_cq, d.recv_cq), (64, 64, 64, 64));
        let d = QueueDepths::new(0, None);
        assert_eq!(d.send, 64);
        let d = QueueDepths::new(100, None);
        assert_eq!((d.send, d.recv_window), (200, 200));
        // The window can be raised (e.g. to the original's 2048), never lowered.
        assert_eq!(QueueDepths::new(16, Some(2048)).recv_window, 2048);
        assert_eq!(QueueDepths::new(100, Some(10)).recv_window, 200);
        assert_eq!(QueueDepths::new(u32::MAX, None).send, u32::MAX);
        assert!(QueueDepths::new(16, None).check(16384, 4_194_303).is_ok());
        assert_eq!(
            QueueDepths::new(16, Some(2048)).check(1024, 1 << 20),
            Err(DepthError::TooDeep {
                what: "receive window",
                need: 2048,
                max: 1024
            })
        );
    }
}
