//! What the kernel says about RDMA, read from sysfs: fast, and needs no library.
//!
//! `/sys/class/infiniband` exists when an RDMA core driver is loaded (also for
//! RoCE and soft-RoCE devices); `/sys/class/infiniband_verbs` when `ib_uverbs`
//! (userspace verbs) is. libibverbs needs both; without them listing devices
//! fails with ENOSYS. sysfs has no active-MTU file, so ports read here have
//! `active_mtu: None`: the doctor shows them, selection needs libibverbs.

use std::fs;
use std::path::Path;

use crate::device::{DeviceInfo, DeviceTransport, GidEntry, GidKind, LinkLayer, PortInfo, PortState};
use crate::gid::Gid;

/// Bounds on what is read (a sysfs tree is trusted, but loops stay bounded).
const MAX_DEVICES: usize = 64;
const MAX_PORTS: usize = 32;
const MAX_GIDS: usize = 1024;
const MAX_FILE: u64 = 4096;

/// What sysfs says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SysfsState {
    /// `/sys/class` itself is missing (sysfs not mounted): no conclusion possible.
    Unavailable,
    /// No `infiniband` class: the kernel has no RDMA support loaded.
    NoRdmaClass,
    /// The RDMA class exists.
    Present {
        /// `infiniband_verbs` exists (`ib_uverbs` loaded).
        verbs_class: bool,
        devices: Vec<DeviceInfo>,
    },
}

impl SysfsState {
    /// Device names, if any.
    pub fn device_names(&self) -> Vec<String> {
        match self {
            SysfsState::Present { devices, .. } => devices.iter().map(|d| d.name.clone()).collect(),
            _ => Vec::new(),
        }
    }
}

/// Read the RDMA view of a sysfs tree mounted at `root` (normally `/sys`).
pub fn read(root: &Path) -> SysfsState {
    let class = root.join("class");
    if !class.is_dir() {
        return SysfsState::Unavailable;
    }
    let ib = class.join("infiniband");
    let verbs_class = class.join("infiniband_verbs").is_dir();
    if !ib.is_dir() {
        return if verbs_class {
            SysfsState::Present {
                verbs_class,
                devices: Vec::new(),
            }
        } else {
            SysfsState::NoRdmaClass
        };
    }
    let devices = sorted_entries(&ib, MAX_DEVICES)
        .into_iter()
        .map(|name| read_device(&ib.join(&name), name))
        .collect();
    SysfsState::Present { verbs_class, devices }
}

fn sorted_entries(dir: &Path, max: usize) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .take(max)
                .collect()
        })
        .unwrap_or_default();
    names.sort_by_key(|a| natural_key(a));
    names
}

/// Numeric names in numeric order (ports and GID indexes), others by name.
fn natural_key(s: &str) -> (u64, String) {
    (s.parse::<u64>().unwrap_or(u64::MAX), s.to_owned())
}

fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let f = fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(MAX_FILE).read_to_string(&mut s).ok()?;
    Some(s.trim().to_owned())
}

fn read_device(dir: &Path, name: String) -> DeviceInfo {
    // node_type: "1: CA" (InfiniBand and RoCE HCAs), "4: RNIC" (iWARP).
    let transport = match read_small(&dir.join("node_type")).as_deref().and_then(leading_number) {
        Some(1) | None => DeviceTransport::Ib,
        Some(4) => DeviceTransport::Iwarp,
        Some(_) => DeviceTransport::Other,
    };
    let ports_dir = dir.join("ports");
    let ports = sorted_entries(&ports_dir, MAX_PORTS)
        .into_iter()
        .filter_map(|p| {
            let num = p.parse::<u8>().ok()?;
            Some(read_port(&ports_dir.join(&p), num))
        })
        .collect();
    DeviceInfo {
        name,
        transport,
        fw_ver: read_small(&dir.join("fw_ver")),
        problem: None,
        ports,
    }
}

/// "4: ACTIVE" → 4.
fn leading_number(s: &str) -> Option<u32> {
    s.split(':').next()?.trim().parse().ok()
}

fn read_port(dir: &Path, port_num: u8) -> PortInfo {
    let state = read_small(&dir.join("state"))
        .as_deref()
        .and_then(leading_number)
        .map_or(PortState::Other(0), PortState::from_code);
    let link_layer = match read_small(&dir.join("link_layer")).as_deref() {
        Some("Ethernet") => LinkLayer::Ethernet,
        Some("InfiniBand") => LinkLayer::InfiniBand,
        _ => LinkLayer::Unspecified,
    };
    let lid = read_small(&dir.join("lid"))
        .and_then(|s| u16::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    let gids_dir = dir.join("gids");
    let indexes = sorted_entries(&gids_dir, MAX_GIDS);
    let gid_table_len = u32::try_from(indexes.len()).unwrap_or(u32::MAX);
    let gids = indexes
        .into_iter()
        .filter_map(|i| {
            let index = i.parse::<u32>().ok()?;
            let gid: Gid = read_small(&gids_dir.join(&i))?.parse().ok()?;
            if gid.is_zero() {
                return None;
            }
            // Reading the type of an empty slot fails (EINVAL); filled ones say
            // "IB/RoCE v1" or "RoCE v2".
            let kind = match read_small(&dir.join("gid_attrs/types").join(&i)).as_deref() {
                Some("RoCE v2") => GidKind::RoceV2,
                Some("IB/RoCE v1") if link_layer.is_ethernet() => GidKind::RoceV1,
                Some("IB/RoCE v1") => GidKind::Ib,
                _ => GidKind::Unknown,
            };
            let netdev = read_small(&dir.join("gid_attrs/ndevs").join(&i)).filter(|s| !s.is_empty());
            Some(GidEntry {
                index,
                gid,
                kind,
                netdev,
            })
        })
        .collect();
    PortInfo {
        port_num,
        state,
        link_layer,
        active_mtu: None,
        lid,
        gid_table_len,
        gids,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A scratch directory removed on drop.
    pub(crate) struct TempTree(pub PathBuf);

    impl TempTree {
        pub(crate) fn new(tag: &str) -> TempTree {
            let p = std::env::temp_dir().join(format!("slimebench-verbs-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempTree(p)
        }

        pub(crate) fn file(&self, rel: &str, content: &str) {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn no_sysfs_at_all() {
        let t = TempTree::new("nosys");
        assert_eq!(read(&t.0), SysfsState::Unavailable);
    }

    #[test]
    fn kernel_without_rdma() {
        let t = TempTree::new("nordma");
        t.file("class/net/lo/operstate", "unknown\n");
        assert_eq!(read(&t.0), SysfsState::NoRdmaClass);
    }

    #[test]
    fn a_roce_device() {
        let t = TempTree::new("roce");
        let d = "class/infiniband/mlx5_0";
        t.file(&format!("{d}/node_type"), "1: CA\n");
        t.file(&format!("{d}/fw_ver"), "16.35.2000\n");
        let p = format!("{d}/ports/1");
        t.file(&format!("{p}/state"), "4: ACTIVE\n");
        t.file(&format!("{p}/link_layer"), "Ethernet\n");
        t.file(&format!("{p}/lid"), "0x0\n");
        t.file(&format!("{p}/gids/0"), "fe80:0000:0000:0000:0a00:27ff:fe01:0002\n");
        t.file(&format!("{p}/gids/1"), "fe80:0000:0000:0000:0a00:27ff:fe01:0002\n");
        t.file(&format!("{p}/gids/2"), "0000:0000:0000:0000:0000:ffff:0a01:0005\n");
        t.file(&format!("{p}/gids/3"), "0000:0000:0000:0000:0000:ffff:0a01:0005\n");
        t.file(&format!("{p}/gids/10"), "0000:0000:0000:0000:0000:0000:0000:0000\n");
        t.file(&format!("{p}/gid_attrs/types/0"), "IB/RoCE v1\n");
        t.file(&format!("{p}/gid_attrs/types/1"), "RoCE v2\n");
        t.file(&format!("{p}/gid_attrs/types/2"), "IB/RoCE v1\n");
        t.file(&format!("{p}/gid_attrs/types/3"), "RoCE v2\n");
        t.file(&format!("{p}/gid_attrs/ndevs/3"), "eth1\n");
        t.file("class/infiniband_verbs/uverbs0/ibdev", "mlx5_0\n");
        let SysfsState::Present { verbs_class, devices } = read(&t.0) else {
            panic!()
        };
        assert!(verbs_class);
        assert_eq!(devices.len(), 1);
        let dev = &devices[0];
        assert_eq!((dev.name.as_str(), dev.transport), ("mlx5_0", DeviceTransport::Ib));
        assert_eq!(dev.fw_ver.as_deref(), Some("16.35.2000"));
        let port = &dev.ports[0];
        assert_eq!(
            (port.port_num, port.state, port.link_layer, port.lid, port.active_mtu),
            (1, PortState::Active, LinkLayer::Ethernet, 0, None)
        );
        assert_eq!(port.gid_table_len, 5);
        let kinds: Vec<(u32, GidKind)> = port.gids.iter().map(|g| (g.index, g.kind)).collect();
        assert_eq!(
            kinds,
            [
                (0, GidKind::RoceV1),
                (1, GidKind::RoceV2),
                (2, GidKind::RoceV1),
                (3, GidKind::RoceV2)
            ]
        );
        assert_eq!(port.gids[3].netdev.as_deref(), Some("eth1"));
        assert_eq!(crate::select::preferred_gid(port).map(|g| g.index), Some(3));
    }

    #[test]
    fn an_ib_device_with_a_down_port_and_an_iwarp_device() {
        let t = TempTree::new("ib");
        t.file("class/infiniband/mlx4_0/node_type", "1: CA\n");
        t.file("class/infiniband/mlx4_0/ports/1/state", "1: DOWN\n");
        t.file("class/infiniband/mlx4_0/ports/1/link_layer", "InfiniBand\n");
        t.file("class/infiniband/mlx4_0/ports/1/lid", "0x1a\n");
        t.file(
            "class/infiniband/mlx4_0/ports/1/gids/0",
            "fe80:0000:0000:0000:0002:c903:000a:0001\n",
        );
        t.file("class/infiniband/mlx4_0/ports/1/gid_attrs/types/0", "IB/RoCE v1\n");
        t.file("class/infiniband/iw_cxgb4/node_type", "4: RNIC\n");
        let SysfsState::Present { verbs_class, devices } = read(&t.0) else {
            panic!()
        };
        assert!(!verbs_class);
        assert_eq!(devices.len(), 2);
        let iw = devices.iter().find(|d| d.name == "iw_cxgb4").unwrap();
        assert_eq!(iw.transport, DeviceTransport::Iwarp);
        let ib = devices.iter().find(|d| d.name == "mlx4_0").unwrap();
        let p = &ib.ports[0];
        assert_eq!(
            (p.state, p.link_layer, p.lid),
            (PortState::Down, LinkLayer::InfiniBand, 0x1a)
        );
        assert_eq!(p.gids[0].kind, GidKind::Ib);
    }

    #[test]
    fn this_machine() {
        // Whatever the host has, reading it must not fail or hang.
        let s = read(Path::new("/sys"));
        eprintln!("sysfs on this host: {s:?}");
    }
}
