//! A plain-data model of RDMA devices, ports and GID tables.
//!
//! Both sources fill it: the sysfs reader ([`crate::sysfs`], no library needed)
//! and, with the `sideway` feature, libibverbs ([`mod@crate::probe`]). Device
//! selection ([`mod@crate::select`]) and the doctor work on this model only, so
//! they are tested with fake device lists.

use std::fmt;

use crate::gid::Gid;
use crate::mtu::PathMtu;

/// The link layer of a port: decides LID routing (InfiniBand) or GRH/GID
/// routing (RoCE on Ethernet).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum LinkLayer {
    InfiniBand,
    Ethernet,
    /// Reported by old drivers; rdma-core treats it as InfiniBand and so do we.
    Unspecified,
}

impl LinkLayer {
    /// RoCE ports route by GID (GRH mandatory); IB ports by LID.
    pub fn is_ethernet(self) -> bool {
        self == LinkLayer::Ethernet
    }
}

impl fmt::Display for LinkLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkLayer::InfiniBand => "InfiniBand",
            LinkLayer::Ethernet => "Ethernet (RoCE)",
            LinkLayer::Unspecified => "unspecified (treated as InfiniBand)",
        })
    }
}

/// Logical port state (`enum ibv_port_state`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortState {
    Down,
    /// Link up, waiting for the subnet manager (IB) to configure it.
    Init,
    Armed,
    Active,
    /// Was active, the physical link failed; may come back.
    ActiveDefer,
    /// Any other code (`IBV_PORT_NOP` = 0 or something newer).
    Other(u32),
}

impl PortState {
    /// From `enum ibv_port_state` (also the number before ':' in sysfs `state`).
    pub fn from_code(code: u32) -> PortState {
        match code {
            1 => PortState::Down,
            2 => PortState::Init,
            3 => PortState::Armed,
            4 => PortState::Active,
            5 => PortState::ActiveDefer,
            other => PortState::Other(other),
        }
    }
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortState::Down => f.write_str("DOWN"),
            PortState::Init => f.write_str("INIT"),
            PortState::Armed => f.write_str("ARMED"),
            PortState::Active => f.write_str("ACTIVE"),
            PortState::ActiveDefer => f.write_str("ACTIVE_DEFER"),
            PortState::Other(c) => write!(f, "state {c}"),
        }
    }
}

/// What a GID table entry is for (decides the packet format on the wire; both
/// ends must use the same kind).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum GidKind {
    /// Native InfiniBand GID.
    Ib,
    /// RoCE v1: Ethernet frames, not routable across IP subnets.
    RoceV1,
    /// RoCE v2: UDP/IP (port 4791), routable; what modern fabrics use.
    RoceV2,
    /// The type could not be read.
    Unknown,
}

impl fmt::Display for GidKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GidKind::Ib => "IB",
            GidKind::RoceV1 => "RoCE v1",
            GidKind::RoceV2 => "RoCE v2",
            GidKind::Unknown => "?",
        })
    }
}

/// One non-empty GID table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GidEntry {
    pub index: u32,
    pub gid: Gid,
    pub kind: GidKind,
    /// The Ethernet interface behind a RoCE GID, when known.
    pub netdev: Option<String>,
}

/// One physical port (numbered from 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub port_num: u8,
    pub state: PortState,
    pub link_layer: LinkLayer,
    /// Unknown when read from sysfs (which has no MTU file) or when the port is down.
    pub active_mtu: Option<PathMtu>,
    pub lid: u16,
    /// Length of the GID table (entries listed in `gids` are the non-empty ones).
    pub gid_table_len: u32,
    pub gids: Vec<GidEntry>,
}

impl PortInfo {
    /// The non-empty entry at `index`.
    pub fn gid(&self, index: u32) -> Option<&GidEntry> {
        self.gids.iter().find(|g| g.index == index)
    }
}

/// The transport family of a device.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeviceTransport {
    /// InfiniBand or RoCE: QPs connect with exchanged QPN/PSN/GID (what we do).
    Ib,
    /// iWARP: RC connections need rdma_cm, which this backend does not use.
    Iwarp,
    Other,
}

/// One RDMA device (e.g. `mlx5_0`, `rxe0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    pub transport: DeviceTransport,
    /// Firmware version, when known (doctor output only).
    pub fw_ver: Option<String>,
    /// Why the device could not be opened or queried (e.g. no permission on
    /// `/dev/infiniband/uverbs0`); such a device is never selected.
    pub problem: Option<String>,
    pub ports: Vec<PortInfo>,
}
