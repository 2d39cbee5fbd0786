//! `slimebench doctor`: what this machine can run.
//!
//! RDMA devices, ports (state, link layer, MTU, LID) and GIDs (with their type)
//! as both the kernel (sysfs) and libibverbs see them, the locked-memory limit
//! that memory registration needs, the caller's own checks (control plane,
//! Python baselines: plugged in as [`Check`]s) and the verdict line for
//! `--transport auto`.
//!
//! Collection does the probing ([`collect`]); [`render`] is pure, so the output
//! is tested with a hand-made report.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use slimebench_verbs::{
    probe, Availability, DeviceInfo, LibraryState, Listing, ProbeReport, Selected, Selection, SysfsState,
};

/// Outcome of one check.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    Ok,
    /// Works, with a caveat worth reading.
    Warn,
    Fail,
    /// Not run (e.g. not configured).
    Skipped,
}

impl CheckStatus {
    fn tag(self) -> &'static str {
        match self {
            CheckStatus::Ok => "[ok]  ",
            CheckStatus::Warn => "[warn]",
            CheckStatus::Fail => "[FAIL]",
            CheckStatus::Skipped => "[skip]",
        }
    }
}

/// One line of the "Checks" section (control plane, Python, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
    pub elapsed: Option<Duration>,
}

impl Check {
    /// A check with a known outcome.
    pub fn new(name: impl Into<String>, status: CheckStatus, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            elapsed: None,
        }
    }

    /// Run `f` and time it: `Ok(detail)` passes, `Err(detail)` fails.
    pub fn run(name: impl Into<String>, f: impl FnOnce() -> Result<String, String>) -> Check {
        let start = Instant::now();
        let (status, detail) = match f() {
            Ok(d) => (CheckStatus::Ok, d),
            Err(d) => (CheckStatus::Fail, d),
        };
        Check {
            name: name.into(),
            status,
            detail,
            elapsed: Some(start.elapsed()),
        }
    }
}

/// The locked-memory limit (`ulimit -l`): registering memory for RDMA pins
/// it, and pinned memory counts against this limit unless running as root.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MemlockLimit {
    /// Soft limit in bytes; `None` = unlimited.
    pub soft_bytes: Option<u64>,
    pub is_root: bool,
}

/// Everything `slimebench doctor` prints.
#[derive(Clone, Debug)]
pub struct DoctorReport {
    pub rdma: ProbeReport,
    pub memlock: Option<MemlockLimit>,
    pub checks: Vec<Check>,
}

/// Probe RDMA for `sel` and gather the caller's `checks` (run them first,
/// e.g. `Check::run("redis://…", || ping())`).
pub fn collect(sel: &Selection, checks: Vec<Check>) -> DoctorReport {
    DoctorReport {
        rdma: probe(sel),
        memlock: memlock_limit(),
        checks,
    }
}

fn memlock_limit() -> Option<MemlockLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    (rc == 0).then(|| MemlockLimit {
        soft_bytes: (lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur),
        is_root,
    })
}

/// The `--transport auto` verdict for an availability.
pub fn auto_verdict(a: &Availability) -> String {
    match a {
        Availability::Usable(s) => format!("--transport auto → rdma ({})", short(s)),
        Availability::Unusable { cause, .. } => {
            format!("--transport auto → tcp (RDMA unusable: {cause}); on one host --transport shm is faster")
        }
    }
}

fn short(s: &Selected) -> String {
    format!(
        "{} port {} GID[{}] {}, MTU {}",
        s.device, s.port, s.gid_index, s.gid_kind, s.active_mtu
    )
}

fn bytes(n: u64) -> String {
    const MIB: u64 = 1 << 20;
    if n >= MIB {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

fn render_devices(out: &mut String, devices: &[DeviceInfo], selected: Option<&Selected>) {
    for d in devices {
        let _ = write!(out, "  {}", d.name);
        if let Some(fw) = &d.fw_ver {
            let _ = write!(out, " (firmware {fw})");
        }
        out.push('\n');
        if let Some(p) = &d.problem {
            let _ = writeln!(out, "    cannot open: {p}");
        }
        if d.ports.is_empty() && d.problem.is_none() {
            out.push_str("    no ports\n");
        }
        for p in &d.ports {
            let mtu = p.active_mtu.map_or_else(|| "?".to_owned(), |m| m.to_string());
            let _ = write!(out, "    port {}: {}, {}, MTU {mtu}", p.port_num, p.state, p.link_layer);
            if p.lid != 0 {
                let _ = write!(out, ", LID {:#x}", p.lid);
            }
            let _ = writeln!(out, ", {} of {} GIDs set", p.gids.len(), p.gid_table_len);
            for g in &p.gids {
                let mark = match selected {
                    Some(s) if s.device == d.name && s.port == p.port_num && s.gid_index == g.index => "  <- selected",
                    _ => "",
                };
                let netdev = g.netdev.as_deref().map(|n| format!(" {n}")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "      GID[{:>3}] {:<7} {}{netdev}{mark}",
                    g.index,
                    g.kind,
                    g.gid.describe()
                );
            }
        }
    }
}

/// The report as text (pure).
pub fn render(r: &DoctorReport) -> String {
    let mut out = String::new();
    let p = &r.rdma;
    out.push_str("RDMA\n");
    let _ = writeln!(
        out,
        "  build:       {}",
        if p.built_with_verbs {
            "RDMA support compiled in (sideway)"
        } else {
            "no RDMA support compiled in (rebuild with --features rdma)"
        }
    );
    let kernel = match &p.sysfs {
        SysfsState::Unavailable => "sysfs not mounted (/sys/class missing): cannot tell".to_owned(),
        SysfsState::NoRdmaClass => "no RDMA support loaded (/sys/class/infiniband does not exist)".to_owned(),
        SysfsState::Present { verbs_class, devices } => format!(
            "{} device(s) in /sys/class/infiniband; ib_uverbs {}",
            devices.len(),
            if *verbs_class { "loaded" } else { "NOT loaded" }
        ),
    };
    let _ = writeln!(out, "  kernel:      {kernel}");
    let lib = match &p.library {
        LibraryState::Loaded => "libibverbs.so.1 loads".to_owned(),
        LibraryState::Missing(e) => format!("libibverbs.so.1 cannot be loaded ({e})"),
    };
    let _ = writeln!(out, "  library:     {lib}");
    let listing = match &p.listing {
        Listing::NotAttempted => "not asked (no RDMA support compiled in)".to_owned(),
        Listing::Failed { detail, .. } => format!("listing devices failed: {detail}"),
        Listing::Devices(d) => format!("{} device(s)", d.len()),
    };
    let _ = writeln!(out, "  libibverbs:  {listing}");
    let selected = p.availability.selected();
    match (&p.listing, &p.sysfs) {
        (Listing::Devices(devs), sys) => {
            let sysfs_names = sys.device_names();
            let verbs_names: Vec<String> = devs.iter().map(|d| d.name.clone()).collect();
            if !matches!(sys, SysfsState::Unavailable) && {
                let (mut a, mut b) = (sysfs_names.clone(), verbs_names.clone());
                a.sort();
                b.sort();
                a != b
            } {
                let _ = writeln!(
                    out,
                    "  note: sysfs lists [{}], libibverbs [{}] (a device without a userspace provider?)",
                    sysfs_names.join(", "),
                    verbs_names.join(", ")
                );
            }
            render_devices(&mut out, devs, selected);
        }
        (_, SysfsState::Present { devices, .. }) if !devices.is_empty() => {
            out.push_str("  devices as sysfs shows them (no MTU there):\n");
            render_devices(&mut out, devices, selected);
        }
        _ => {}
    }
    if let Some(m) = r.memlock {
        let limit = m.soft_bytes.map_or_else(|| "unlimited".to_owned(), bytes);
        let note = match (m.soft_bytes, m.is_root) {
            (_, true) => " (root: not enforced)",
            (Some(b), false) if b < (1 << 30) => {
                " (registration pins --buf-mb per mailbox: raise it with `ulimit -l unlimited`)"
            }
            _ => "",
        };
        let _ = writeln!(out, "  locked mem:  {limit}{note}");
    }
    let _ = writeln!(out, "  probe took:  {:?}", p.elapsed);
    match &p.availability {
        Availability::Usable(s) => {
            let _ = writeln!(out, "  verdict:     usable: {s}");
            for skip in &s.skipped {
                let _ = writeln!(out, "               passed over {skip}");
            }
        }
        Availability::Unusable { cause, hint } => {
            let _ = writeln!(out, "  verdict:     unusable: {cause}");
            let _ = writeln!(out, "  fix:         {hint}");
        }
    }
    if !r.checks.is_empty() {
        out.push_str("\nChecks\n");
        for c in &r.checks {
            let took = c.elapsed.map(|d| format!(" ({d:.1?})")).unwrap_or_default();
            let _ = writeln!(out, "  {} {}: {}{took}", c.status.tag(), c.name, c.detail);
        }
    }
    out.push('\n');
    out.push_str(&auto_verdict(&p.availability));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use slimebench_verbs::{
        classify, DeviceTransport, GidEntry, GidKind, LinkLayer, PathMtu, PortInfo, PortState, Selection,
    };

    fn roce_dev() -> DeviceInfo {
        let gid = |index, text: &str, kind| GidEntry {
            index,
            gid: text.parse().unwrap(),
            kind,
            netdev: Some("eth1".into()),
        };
        DeviceInfo {
            name: "mlx5_0".into(),
            transport: DeviceTransport::Ib,
            fw_ver: Some("16.35.2000".into()),
            problem: None,
            ports: vec![PortInfo {
                port_num: 1,
                state: PortState::Active,
                link_layer: LinkLayer::Ethernet,
                active_mtu: Some(PathMtu::Mtu4096),
                lid: 0,
                gid_table_len: 256,
                gids: vec![
                    gid(0, "fe80::a00:27ff:fe01:2", GidKind::RoceV1),
                    gid(1, "fe80::a00:27ff:fe01:2", GidKind::RoceV2),
                    gid(3, "::ffff:10.1.0.5", GidKind::RoceV2),
                ],
            }],
        }
    }

    fn report(sysfs: SysfsState, library: LibraryState, listing: Listing, built: bool) -> DoctorReport {
        let availability = classify(built, &sysfs, &library, &listing, &Selection::default());
        DoctorReport {
            rdma: ProbeReport {
                availability,
                sysfs,
                library,
                listing,
                built_with_verbs: built,
                elapsed: Duration::from_micros(84),
            },
            memlock: Some(MemlockLimit {
                soft_bytes: Some(8 << 20),
                is_root: false,
            }),
            checks: vec![
                Check::new("control plane redis://127.0.0.1:6379", CheckStatus::Ok, "PING → PONG"),
                Check::run("python ray", || Err("module 'ray' not found".into())),
            ],
        }
    }

    #[test]
    fn machine_without_rdma() {
        let r = report(
            SysfsState::NoRdmaClass,
            LibraryState::Missing("libibverbs.so.1: cannot open shared object file".into()),
            Listing::Failed {
                errno: Some(libc::EOPNOTSUPP),
                detail: "failed to get device list: Operation not supported (os error 95)".into(),
            },
            true,
        );
        let text = render(&r);
        assert!(text.contains("kernel:      no RDMA support loaded"), "{text}");
        assert!(text.contains("library:     libibverbs.so.1 cannot be loaded"), "{text}");
        assert!(
            text.contains("verdict:     unusable: kernel without RDMA support"),
            "{text}"
        );
        assert!(
            text.contains("[ok]   control plane redis://127.0.0.1:6379: PING → PONG"),
            "{text}"
        );
        assert!(text.contains("[FAIL] python ray: module 'ray' not found"), "{text}");
        assert!(
            text.contains("--transport auto → tcp (RDMA unusable: kernel without RDMA support"),
            "{text}"
        );
        assert!(text.contains("ulimit -l unlimited"), "{text}");
    }

    #[test]
    fn machine_with_roce() {
        let r = report(
            SysfsState::Present {
                verbs_class: true,
                devices: vec![roce_dev()],
            },
            LibraryState::Loaded,
            Listing::Devices(vec![roce_dev()]),
            true,
        );
        let text = render(&r);
        assert!(
            text.contains("port 1: ACTIVE, Ethernet (RoCE), MTU 4096, 3 of 256 GIDs set"),
            "{text}"
        );
        assert!(
            text.contains("GID[  3] RoCE v2 0000:0000:0000:0000:0000:ffff:0a01:0005 (10.1.0.5) eth1  <- selected"),
            "{text}"
        );
        assert!(text.contains("GID[  0] RoCE v1 fe80:"), "{text}");
        assert!(
            text.contains("--transport auto → rdma (mlx5_0 port 1 GID[3] RoCE v2, MTU 4096)"),
            "{text}"
        );
        assert!(!text.contains("note: sysfs lists"), "{text}");
    }

    #[test]
    fn not_built() {
        let r = report(
            SysfsState::NoRdmaClass,
            LibraryState::Missing("x".into()),
            Listing::NotAttempted,
            false,
        );
        let text = render(&r);
        assert!(
            text.contains("no RDMA support compiled in (rebuild with --features rdma)"),
            "{text}"
        );
        assert!(text.contains("RDMA unusable: this build has no RDMA support"), "{text}");
    }

    #[test]
    fn collect_on_this_machine() {
        let r = collect(&Selection::default(), vec![]);
        let text = render(&r);
        eprintln!("{text}");
        assert!(text.contains("--transport auto →"));
    }
}
