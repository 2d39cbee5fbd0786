//! Device, port and GID selection: a pure function over a probed device list.
//!
//! Inputs are `--device`, `--ib-port`, `--gid-index` or their environment forms
//! `RDMA_DEVICE`, `RDMA_IB_PORT`, `RDMA_GID_INDEX` (flags win). Rules:
//! - a named device is the only candidate (missing → an error listing the
//!   devices there are); otherwise every device, in listing order;
//! - the first port that is ACTIVE (or the named port) wins;
//! - without a GID index, InfiniBand takes index 0 and RoCE prefers a RoCE v2
//!   GID (IPv4-mapped first, then other routable, then link-local), then RoCE v1;
//! - every candidate passed over is recorded with the reason, so an error
//!   (or the doctor) can say why nothing was usable.

use std::fmt;

use crate::attrs::LocalPort;
use crate::device::{DeviceInfo, DeviceTransport, GidEntry, GidKind, LinkLayer, PortInfo, PortState};
use crate::gid::Gid;
use crate::mtu::PathMtu;

/// Environment variable for `--device`.
pub const ENV_DEVICE: &str = "RDMA_DEVICE";
/// Environment variable for `--ib-port`.
pub const ENV_IB_PORT: &str = "RDMA_IB_PORT";
/// Environment variable for `--gid-index`.
pub const ENV_GID_INDEX: &str = "RDMA_GID_INDEX";

/// What the user asked for; `None` = choose automatically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Device name, e.g. `mlx5_0`.
    pub device: Option<String>,
    /// Physical port number, from 1.
    pub ib_port: Option<u8>,
    /// GID table index.
    pub gid_index: Option<u32>,
}

/// An environment variable that does not parse.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{var}={value:?} is invalid: {reason}")]
pub struct EnvError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

impl Selection {
    /// Fill the fields the flags left unset from the environment (`env` looks
    /// a variable up; empty values count as unset). Flags always win.
    ///
    /// # Errors
    /// [`EnvError`] for a port that is not 1..=255 or an index that is not a number.
    pub fn with_env(self, env: impl Fn(&str) -> Option<String>) -> Result<Selection, EnvError> {
        let get = |var: &str| env(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let device = self.device.or_else(|| get(ENV_DEVICE));
        let ib_port = match self.ib_port {
            Some(p) => Some(p),
            None => match get(ENV_IB_PORT) {
                None => None,
                Some(v) => match v.parse::<u8>() {
                    Ok(p) if p >= 1 => Some(p),
                    _ => {
                        return Err(EnvError {
                            var: ENV_IB_PORT,
                            value: v,
                            reason: "expected a port number 1..=255".into(),
                        })
                    }
                },
            },
        };
        let gid_index = match self.gid_index {
            Some(i) => Some(i),
            None => match get(ENV_GID_INDEX) {
                None => None,
                Some(v) => Some(v.parse::<u32>().map_err(|e| EnvError {
                    var: ENV_GID_INDEX,
                    value: v.clone(),
                    reason: e.to_string(),
                })?),
            },
        };
        Ok(Selection {
            device,
            ib_port,
            gid_index,
        })
    }

    /// [`Selection::with_env`] over the process environment.
    ///
    /// # Errors
    /// As [`Selection::with_env`].
    pub fn with_process_env(self) -> Result<Selection, EnvError> {
        self.with_env(|v| std::env::var(v).ok())
    }
}

/// The chosen device, port and GID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected {
    pub device: String,
    pub port: u8,
    pub gid_index: u32,
    pub gid: Gid,
    pub gid_kind: GidKind,
    pub lid: u16,
    pub link_layer: LinkLayer,
    pub active_mtu: PathMtu,
    /// Candidates passed over before this one, with reasons.
    pub skipped: Vec<Skip>,
}

impl Selected {
    /// Our end of a connection.
    pub fn local_port(&self) -> LocalPort {
        LocalPort {
            port_num: self.port,
            // select() only returns indexes that fit sgid_index's 8 bits.
            gid_index: u8::try_from(self.gid_index).expect("selected GID index fits 8 bits"),
            gid: self.gid,
            lid: self.lid,
            link_layer: self.link_layer,
            active_mtu: self.active_mtu,
        }
    }
}

impl fmt::Display for Selected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} port {} ({}, MTU {}) GID[{}] {} {}",
            self.device,
            self.port,
            self.link_layer,
            self.active_mtu,
            self.gid_index,
            self.gid_kind,
            self.gid.describe()
        )?;
        if self.lid != 0 {
            write!(f, " LID {:#x}", self.lid)?;
        }
        Ok(())
    }
}

/// A candidate passed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    pub device: String,
    /// `None` when the whole device was skipped.
    pub port: Option<u8>,
    pub reason: SkipReason,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{} port {p}: {}", self.device, self.reason),
            None => write!(f, "{}: {}", self.device, self.reason),
        }
    }
}

/// Why a device or port was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// iWARP connects through rdma_cm, which this backend does not use.
    Iwarp,
    /// The device could not be opened or queried.
    Unopenable(String),
    NoPorts,
    /// `--ib-port` names a port the device does not have.
    NoSuchPort {
        port: u8,
        ports: Vec<u8>,
    },
    /// The port is not ACTIVE (cable, switch, subnet manager, netdev down).
    NotActive(PortState),
    /// The port reports no usable active MTU.
    NoMtu,
    /// `--gid-index` is past the end of the GID table.
    GidIndexOutOfRange {
        index: u32,
        table_len: u32,
    },
    /// `--gid-index` names an empty GID slot.
    GidIndexEmpty {
        index: u32,
    },
    /// Verbs addresses the source GID with 8 bits.
    GidIndexTooLarge {
        index: u32,
    },
    /// No non-empty GID (on RoCE: the netdev has no IP address).
    NoGid,
}

impl SkipReason {
    /// Only "the port is not up" — the all-ports-down diagnosis.
    pub fn is_port_down(&self) -> bool {
        matches!(self, SkipReason::NotActive(_))
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Iwarp => f.write_str("iWARP device (needs rdma_cm, not supported)"),
            SkipReason::Unopenable(e) => write!(f, "cannot open: {e}"),
            SkipReason::NoPorts => f.write_str("no ports"),
            SkipReason::NoSuchPort { port, ports } => write!(f, "no port {port} (ports: {ports:?})"),
            SkipReason::NotActive(s) => write!(f, "port is {s}, not ACTIVE"),
            SkipReason::NoMtu => f.write_str("no active MTU reported"),
            SkipReason::GidIndexOutOfRange { index, table_len } => {
                write!(f, "GID index {index} out of range (table has {table_len} entries)")
            }
            SkipReason::GidIndexEmpty { index } => write!(f, "GID index {index} is empty"),
            SkipReason::GidIndexTooLarge { index } => write!(f, "GID index {index} does not fit 8 bits"),
            SkipReason::NoGid => f.write_str("no GID configured (on RoCE: does the netdev have an IP address?)"),
        }
    }
}

/// Nothing usable was found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// The listing is empty.
    #[error("no RDMA device found")]
    NoDevices,
    /// `--device` names a device that is not there.
    #[error("RDMA device {name:?} not found (devices: {})", available.join(", "))]
    DeviceNotFound { name: String, available: Vec<String> },
    /// Every candidate was skipped; `skipped` says why.
    #[error("no usable RDMA port: {}", join_skips(skipped))]
    NoUsablePort { skipped: Vec<Skip> },
}

fn join_skips(s: &[Skip]) -> String {
    s.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl SelectError {
    /// True when the only problem is that every port is down.
    pub fn all_ports_down(&self) -> bool {
        matches!(self, SelectError::NoUsablePort { skipped } if !skipped.is_empty() && skipped.iter().all(|s| s.reason.is_port_down()))
    }
}

/// Pick a device, port and GID from `devices` as `sel` asks.
///
/// # Errors
/// [`SelectError`] with the reason every candidate was passed over.
pub fn select(devices: &[DeviceInfo], sel: &Selection) -> Result<Selected, SelectError> {
    if devices.is_empty() {
        return Err(SelectError::NoDevices);
    }
    let candidates: Vec<&DeviceInfo> = match &sel.device {
        Some(name) => match devices.iter().find(|d| &d.name == name) {
            Some(d) => vec![d],
            None => {
                return Err(SelectError::DeviceNotFound {
                    name: name.clone(),
                    available: devices.iter().map(|d| d.name.clone()).collect(),
                })
            }
        },
        None => devices.iter().collect(),
    };
    let mut skipped = Vec::new();
    for dev in candidates {
        let skip_dev = |reason| Skip {
            device: dev.name.clone(),
            port: None,
            reason,
        };
        if let Some(p) = &dev.problem {
            skipped.push(skip_dev(SkipReason::Unopenable(p.clone())));
            continue;
        }
        if dev.transport == DeviceTransport::Iwarp {
            skipped.push(skip_dev(SkipReason::Iwarp));
            continue;
        }
        if dev.ports.is_empty() {
            skipped.push(skip_dev(SkipReason::NoPorts));
            continue;
        }
        let ports: Vec<&PortInfo> = match sel.ib_port {
            Some(n) => match dev.ports.iter().find(|p| p.port_num == n) {
                Some(p) => vec![p],
                None => {
                    skipped.push(skip_dev(SkipReason::NoSuchPort {
                        port: n,
                        ports: dev.ports.iter().map(|p| p.port_num).collect(),
                    }));
                    continue;
                }
            },
            None => dev.ports.iter().collect(),
        };
        for port in ports {
            match check_port(port, sel.gid_index) {
                Ok((entry, active_mtu)) => {
                    return Ok(Selected {
                        device: dev.name.clone(),
                        port: port.port_num,
                        gid_index: entry.index,
                        gid: entry.gid,
                        gid_kind: entry.kind,
                        lid: port.lid,
                        link_layer: port.link_layer,
                        active_mtu,
                        skipped,
                    })
                }
                Err(reason) => skipped.push(Skip {
                    device: dev.name.clone(),
                    port: Some(port.port_num),
                    reason,
                }),
            }
        }
    }
    Err(SelectError::NoUsablePort { skipped })
}

fn check_port(port: &PortInfo, gid_index: Option<u32>) -> Result<(&GidEntry, PathMtu), SkipReason> {
    if port.state != PortState::Active {
        return Err(SkipReason::NotActive(port.state));
    }
    let mtu = port.active_mtu.ok_or(SkipReason::NoMtu)?;
    let entry = match gid_index {
        Some(index) => {
            if index >= port.gid_table_len {
                return Err(SkipReason::GidIndexOutOfRange {
                    index,
                    table_len: port.gid_table_len,
                });
            }
            port.gid(index).ok_or(SkipReason::GidIndexEmpty { index })?
        }
        None => preferred_gid(port).ok_or(SkipReason::NoGid)?,
    };
    if entry.index > u32::from(u8::MAX) {
        return Err(SkipReason::GidIndexTooLarge { index: entry.index });
    }
    Ok((entry, mtu))
}

/// The automatic GID choice for a port (lowest index among the best rank).
pub fn preferred_gid(port: &PortInfo) -> Option<&GidEntry> {
    let usable = port
        .gids
        .iter()
        .filter(|g| !g.gid.is_zero() && g.index <= u32::from(u8::MAX));
    if port.link_layer.is_ethernet() {
        // RoCE v2 is routable (UDP/IP); an IPv4-mapped GID is what most
        // fabrics configure, global IPv6 next, link-local last.
        let rank = |g: &GidEntry| match (g.kind, g.gid.ipv4().is_some(), g.gid.is_link_local()) {
            (GidKind::RoceV2, true, _) => 0,
            (GidKind::RoceV2, false, false) => 1,
            (GidKind::RoceV2, false, true) => 2,
            (GidKind::RoceV1, ..) => 3,
            _ => 4,
        };
        usable.min_by_key(|g| (rank(g), g.index))
    } else {
        // InfiniBand: index 0 holds the port GID (subnet prefix + port GUID).
        usable.min_by_key(|g| g.index)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn gid(index: u32, text: &str, kind: GidKind) -> GidEntry {
        GidEntry {
            index,
            gid: text.parse().unwrap(),
            kind,
            netdev: None,
        }
    }

    /// A ConnectX-style RoCE port: v1/v2 pairs for link-local and IPv4.
    pub(crate) fn roce_port(port_num: u8, state: PortState) -> PortInfo {
        PortInfo {
            port_num,
            state,
            link_layer: LinkLayer::Ethernet,
            active_mtu: Some(PathMtu::Mtu1024),
            lid: 0,
            gid_table_len: 8,
            gids: vec![
                gid(0, "fe80::a00:27ff:fe01:2", GidKind::RoceV1),
                gid(1, "fe80::a00:27ff:fe01:2", GidKind::RoceV2),
                gid(2, "::ffff:10.1.0.5", GidKind::RoceV1),
                gid(3, "::ffff:10.1.0.5", GidKind::RoceV2),
            ],
        }
    }

    pub(crate) fn ib_port(port_num: u8, state: PortState) -> PortInfo {
        PortInfo {
            port_num,
            state,
            link_layer: LinkLayer::InfiniBand,
            active_mtu: Some(PathMtu::Mtu4096),
            lid: 0x11,
            gid_table_len: 128,
            gids: vec![gid(0, "fe80::2:c903:a:1", GidKind::Ib)],
        }
    }

    pub(crate) fn dev(name: &str, ports: Vec<PortInfo>) -> DeviceInfo {
        DeviceInfo {
            name: name.into(),
            transport: DeviceTransport::Ib,
            fw_ver: Some("20.31.1014".into()),
            problem: None,
            ports,
        }
    }

    #[test]
    fn empty_list() {
        assert_eq!(select(&[], &Selection::default()), Err(SelectError::NoDevices));
    }

    #[test]
    fn first_active_port_wins_and_skips_are_explained() {
        let devs = [
            dev("mlx5_0", vec![roce_port(1, PortState::Down)]),
            dev(
                "mlx5_1",
                vec![ib_port(1, PortState::Init), ib_port(2, PortState::Active)],
            ),
        ];
        let s = select(&devs, &Selection::default()).unwrap();
        assert_eq!((s.device.as_str(), s.port, s.gid_index, s.lid), ("mlx5_1", 2, 0, 0x11));
        assert_eq!(s.gid_kind, GidKind::Ib);
        assert_eq!(s.active_mtu, PathMtu::Mtu4096);
        let why: Vec<String> = s.skipped.iter().map(ToString::to_string).collect();
        assert_eq!(
            why,
            [
                "mlx5_0 port 1: port is DOWN, not ACTIVE",
                "mlx5_1 port 1: port is INIT, not ACTIVE"
            ]
        );
        let lp = s.local_port();
        assert_eq!((lp.port_num, lp.gid_index, lp.lid), (2, 0, 0x11));
    }

    #[test]
    fn named_device_missing() {
        let devs = [
            dev("mlx5_0", vec![roce_port(1, PortState::Active)]),
            dev("rxe0", vec![]),
        ];
        let sel = Selection {
            device: Some("mlx5_9".into()),
            ..Selection::default()
        };
        let e = select(&devs, &sel).unwrap_err();
        assert_eq!(
            e,
            SelectError::DeviceNotFound {
                name: "mlx5_9".into(),
                available: vec!["mlx5_0".into(), "rxe0".into()],
            }
        );
        assert_eq!(
            e.to_string(),
            "RDMA device \"mlx5_9\" not found (devices: mlx5_0, rxe0)"
        );
    }

    #[test]
    fn named_device_is_the_only_candidate() {
        let devs = [
            dev("mlx5_0", vec![roce_port(1, PortState::Active)]),
            dev("mlx5_1", vec![roce_port(1, PortState::Down)]),
        ];
        let sel = Selection {
            device: Some("mlx5_1".into()),
            ..Selection::default()
        };
        let e = select(&devs, &sel).unwrap_err();
        assert!(e.all_ports_down(), "{e}");
    }

    #[test]
    fn all_ports_down() {
        let devs = [
            dev(
                "mlx5_0",
                vec![roce_port(1, PortState::Down), roce_port(2, PortState::Down)],
            ),
            dev("mlx5_1", vec![ib_port(1, PortState::Armed)]),
        ];
        let e = select(&devs, &Selection::default()).unwrap_err();
        assert!(e.all_ports_down());
        let SelectError::NoUsablePort { skipped } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(skipped.len(), 3);
        assert!(
            e.to_string().contains("mlx5_1 port 1: port is ARMED, not ACTIVE"),
            "{e}"
        );
    }

    #[test]
    fn roce_v2_ipv4_preferred_without_index() {
        let devs = [dev("mlx5_0", vec![roce_port(1, PortState::Active)])];
        let s = select(&devs, &Selection::default()).unwrap();
        assert_eq!((s.gid_index, s.gid_kind), (3, GidKind::RoceV2));
        assert_eq!(s.gid.ipv4(), Some("10.1.0.5".parse().unwrap()));
        assert_eq!(s.link_layer, LinkLayer::Ethernet);
    }

    #[test]
    fn roce_v2_link_local_beats_v1() {
        let mut p = roce_port(1, PortState::Active);
        p.gids.retain(|g| g.index < 2);
        assert_eq!(preferred_gid(&p).map(|g| g.index), Some(1));
        p.gids.retain(|g| g.index == 0);
        assert_eq!(preferred_gid(&p).map(|g| g.index), Some(0), "v1 when nothing else");
        p.gids.clear();
        let devs = [dev("rxe0", vec![p])];
        let e = select(&devs, &Selection::default()).unwrap_err();
        assert!(matches!(&e, SelectError::NoUsablePort { skipped } if skipped[0].reason == SkipReason::NoGid));
        assert!(!e.all_ports_down());
    }

    #[test]
    fn explicit_gid_index() {
        let devs = [dev("mlx5_0", vec![roce_port(1, PortState::Active)])];
        let pick = |i| {
            select(
                &devs,
                &Selection {
                    gid_index: Some(i),
                    ..Selection::default()
                },
            )
        };
        let s = pick(2).unwrap();
        assert_eq!(
            (s.gid_index, s.gid_kind),
            (2, GidKind::RoceV1),
            "explicit index is honoured"
        );
        let e = pick(8).unwrap_err();
        assert_eq!(
            e,
            SelectError::NoUsablePort {
                skipped: vec![Skip {
                    device: "mlx5_0".into(),
                    port: Some(1),
                    reason: SkipReason::GidIndexOutOfRange { index: 8, table_len: 8 },
                }]
            }
        );
        assert!(
            e.to_string().contains("GID index 8 out of range (table has 8 entries)"),
            "{e}"
        );
        assert!(matches!(
            pick(5).unwrap_err(),
            SelectError::NoUsablePort { skipped } if skipped[0].reason == SkipReason::GidIndexEmpty { index: 5 }
        ));
    }

    #[test]
    fn gid_index_must_fit_8_bits() {
        let mut p = roce_port(1, PortState::Active);
        p.gid_table_len = 512;
        p.gids = vec![gid(300, "::ffff:10.1.0.5", GidKind::RoceV2)];
        let devs = [dev("mlx5_0", vec![p])];
        let e = select(
            &devs,
            &Selection {
                gid_index: Some(300),
                ..Selection::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(&e, SelectError::NoUsablePort { skipped } if skipped[0].reason == SkipReason::GidIndexTooLarge { index: 300 })
        );
        // Automatic choice ignores such entries.
        assert!(select(&devs, &Selection::default()).is_err());
    }

    #[test]
    fn named_port() {
        let devs = [dev(
            "mlx5_0",
            vec![ib_port(1, PortState::Active), ib_port(2, PortState::Active)],
        )];
        let sel = |p| Selection {
            ib_port: Some(p),
            ..Selection::default()
        };
        assert_eq!(select(&devs, &sel(2)).unwrap().port, 2);
        let e = select(&devs, &sel(3)).unwrap_err();
        assert!(e.to_string().contains("no port 3 (ports: [1, 2])"), "{e}");
    }

    #[test]
    fn iwarp_unopenable_and_mtu_less_ports_are_skipped() {
        let mut iw = dev("iwp0", vec![roce_port(1, PortState::Active)]);
        iw.transport = DeviceTransport::Iwarp;
        let mut locked = dev("mlx5_0", vec![roce_port(1, PortState::Active)]);
        locked.problem = Some("Permission denied (os error 13)".into());
        let mut p = roce_port(1, PortState::Active);
        p.active_mtu = None;
        let nomtu = dev("mlx5_1", vec![p]);
        let ok = dev("mlx5_2", vec![roce_port(1, PortState::Active)]);
        let s = select(&[iw, locked, nomtu, ok], &Selection::default()).unwrap();
        assert_eq!(s.device, "mlx5_2");
        let reasons: Vec<_> = s.skipped.iter().map(|k| k.reason.clone()).collect();
        assert_eq!(
            reasons,
            [
                SkipReason::Iwarp,
                SkipReason::Unopenable("Permission denied (os error 13)".into()),
                SkipReason::NoMtu
            ]
        );
    }

    #[test]
    fn env_forms() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let s = Selection::default()
            .with_env(env(&[
                ("RDMA_DEVICE", "mlx5_1"),
                ("RDMA_IB_PORT", "2"),
                ("RDMA_GID_INDEX", "3"),
            ]))
            .unwrap();
        assert_eq!(
            s,
            Selection {
                device: Some("mlx5_1".into()),
                ib_port: Some(2),
                gid_index: Some(3)
            }
        );
        // Flags win over the environment; empty values are unset.
        let flags = Selection {
            device: Some("mlx5_0".into()),
            ib_port: None,
            gid_index: Some(1),
        };
        let s = flags
            .with_env(env(&[
                ("RDMA_DEVICE", "mlx5_1"),
                ("RDMA_IB_PORT", " "),
                ("RDMA_GID_INDEX", "3"),
            ]))
            .unwrap();
        assert_eq!(
            s,
            Selection {
                device: Some("mlx5_0".into()),
                ib_port: None,
                gid_index: Some(1)
            }
        );
        let e = Selection::default()
            .with_env(env(&[("RDMA_IB_PORT", "0")]))
            .unwrap_err();
        assert_eq!(e.var, "RDMA_IB_PORT");
        let e = Selection::default()
            .with_env(env(&[("RDMA_GID_INDEX", "x")]))
            .unwrap_err();
        assert_eq!(e.var, "RDMA_GID_INDEX");
        assert!(e.to_string().starts_with("RDMA_GID_INDEX=\"x\" is invalid"), "{e}");
    }
}
