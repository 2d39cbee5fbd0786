//! Whether RDMA can be used here, and if not why and what to use instead.
//!
//! [`classify`] is pure: it takes what the probe found (sysfs, the library,
//! libibverbs' device listing) and the user's [`Selection`], and decides.

use std::fmt;

use crate::device::DeviceInfo;
use crate::select::{select, SelectError, Selected, Selection, Skip};
use crate::sysfs::SysfsState;

/// The flags to use when RDMA is not usable.
pub const FALLBACK: &str = "use --transport tcp (or --transport shm when both processes run on one host)";

/// Can RDMA be used?
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    Usable(Selected),
    Unusable {
        cause: Cause,
        /// What to do: a fix, then the flag to use instead ([`FALLBACK`]).
        hint: String,
    },
}

impl Availability {
    pub fn unusable(cause: Cause) -> Availability {
        let hint = cause.hint();
        Availability::Unusable { cause, hint }
    }

    pub fn is_usable(&self) -> bool {
        matches!(self, Availability::Usable(_))
    }

    pub fn selected(&self) -> Option<&Selected> {
        match self {
            Availability::Usable(s) => Some(s),
            Availability::Unusable { .. } => None,
        }
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Availability::Usable(s) => write!(f, "usable: {s}"),
            Availability::Unusable { cause, hint } => write!(f, "unusable: {cause}; {hint}"),
        }
    }
}

/// Why RDMA cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Built without the `rdma` feature.
    NotBuilt,
    /// The kernel has no (userspace) RDMA support: no `/sys/class/infiniband`,
    /// no `ib_uverbs`, or libibverbs reports ENOSYS/EOPNOTSUPP.
    KernelWithoutRdma { detail: String },
    /// `libibverbs.so.1` cannot be loaded.
    LibraryMissing { detail: String },
    /// The kernel and library work, but there is no device.
    NoDevice,
    /// Devices exist, every port is down.
    AllPortsDown { skipped: Vec<Skip> },
    /// The requested device/port/GID does not exist or is unusable.
    Selection(SelectError),
    /// Something else failed while probing.
    ProbeFailed { detail: String },
}

impl Cause {
    /// The fix, then the fallback flags.
    pub fn hint(&self) -> String {
        let fix = match self {
            Cause::NotBuilt => "rebuild with `cargo build --release --features rdma`",
            Cause::KernelWithoutRdma { .. } => {
                "load an RDMA driver and ib_uverbs (e.g. `modprobe mlx5_ib ib_uverbs`, or soft-RoCE: \
                 `modprobe rdma_rxe && rdma link add rxe0 type rxe netdev eth0`)"
            }
            Cause::LibraryMissing { .. } => {
                "install libibverbs and its providers (`apt-get install libibverbs1 ibverbs-providers`, \
                 or rdma-core)"
            }
            Cause::NoDevice => "check `ibv_devices`; in a container, pass /dev/infiniband through",
            Cause::AllPortsDown { .. } => {
                "check the cable and switch; on InfiniBand a subnet manager must run (`ibstat`), \
                 on RoCE the Ethernet interface must be up"
            }
            Cause::Selection(_) => {
                "check --device/--ib-port/--gid-index (RDMA_DEVICE, RDMA_IB_PORT, RDMA_GID_INDEX) \
                 against `slimebench doctor`"
            }
            Cause::ProbeFailed { .. } => "run `slimebench doctor` for details",
        };
        format!("{fix}; or {FALLBACK}")
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::NotBuilt => f.write_str("this build has no RDMA support (rebuild with --features rdma)"),
            Cause::KernelWithoutRdma { detail } => write!(f, "kernel without RDMA support: {detail}"),
            Cause::LibraryMissing { detail } => write!(f, "libibverbs.so.1 cannot be loaded: {detail}"),
            Cause::NoDevice => f.write_str("no RDMA device"),
            Cause::AllPortsDown { skipped } => {
                f.write_str("every RDMA port is down (")?;
                for (i, s) in skipped.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{s}")?;
                }
                f.write_str(")")
            }
            Cause::Selection(e) => write!(f, "{e}"),
            Cause::ProbeFailed { detail } => write!(f, "probing RDMA devices failed: {detail}"),
        }
    }
}

/// Whether `libibverbs.so.1` can be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LibraryState {
    Loaded,
    /// The `dlerror()` text.
    Missing(String),
}

/// What libibverbs' device listing gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listing {
    /// Not asked (no `sideway` feature, or the library or kernel support is missing).
    NotAttempted,
    /// `ibv_get_device_list` failed.
    Failed {
        errno: Option<i32>,
        detail: String,
    },
    Devices(Vec<DeviceInfo>),
}

/// Decide from the probe's findings. Order: build, kernel (sysfs), library,
/// listing, selection — the first missing piece is the cause, since fixing a
/// later one would not help.
pub fn classify(
    built: bool,
    sysfs: &SysfsState,
    library: &LibraryState,
    listing: &Listing,
    sel: &Selection,
) -> Availability {
    if !built {
        return Availability::unusable(Cause::NotBuilt);
    }
    let also_lib = match library {
        LibraryState::Missing(_) => " (libibverbs.so.1 is not installed either)",
        LibraryState::Loaded => "",
    };
    match sysfs {
        SysfsState::NoRdmaClass => {
            return Availability::unusable(Cause::KernelWithoutRdma {
                detail: format!("/sys/class/infiniband does not exist{also_lib}"),
            })
        }
        SysfsState::Present { verbs_class: false, .. } => {
            return Availability::unusable(Cause::KernelWithoutRdma {
                detail: format!("ib_uverbs is not loaded (no /sys/class/infiniband_verbs){also_lib}"),
            })
        }
        SysfsState::Present { .. } | SysfsState::Unavailable => {}
    }
    if let LibraryState::Missing(e) = library {
        return Availability::unusable(Cause::LibraryMissing { detail: e.clone() });
    }
    match listing {
        Listing::NotAttempted => Availability::unusable(Cause::ProbeFailed {
            detail: "the device list was not read".into(),
        }),
        Listing::Failed { errno: Some(e), detail } if *e == libc::ENOSYS || *e == libc::EOPNOTSUPP => {
            Availability::unusable(Cause::KernelWithoutRdma {
                detail: format!("listing devices failed: {detail}"),
            })
        }
        Listing::Failed { detail, .. } => Availability::unusable(Cause::ProbeFailed {
            detail: format!("listing devices failed: {detail}"),
        }),
        Listing::Devices(devs) => match select(devs, sel) {
            Ok(s) => Availability::Usable(s),
            Err(SelectError::NoDevices) => Availability::unusable(Cause::NoDevice),
            Err(e) if e.all_ports_down() => {
                let SelectError::NoUsablePort { skipped } = e else {
                    unreachable!("all_ports_down implies NoUsablePort")
                };
                Availability::unusable(Cause::AllPortsDown { skipped })
            }
            Err(e) => Availability::unusable(Cause::Selection(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::PortState;
    use crate::select::tests::{dev, roce_port};

    fn present() -> SysfsState {
        SysfsState::Present {
            verbs_class: true,
            devices: vec![],
        }
    }

    fn cause(a: Availability) -> Cause {
        match a {
            Availability::Unusable { cause, hint } => {
                assert!(hint.ends_with(FALLBACK), "{hint}");
                cause
            }
            Availability::Usable(s) => panic!("usable: {s}"),
        }
    }

    #[test]
    fn not_built_comes_first() {
        let c = cause(classify(
            false,
            &SysfsState::NoRdmaClass,
            &LibraryState::Missing("x".into()),
            &Listing::NotAttempted,
            &Selection::default(),
        ));
        assert_eq!(c, Cause::NotBuilt);
        assert_eq!(
            c.to_string(),
            "this build has no RDMA support (rebuild with --features rdma)"
        );
        assert!(c.hint().contains("--transport tcp"));
        assert!(c.hint().contains("--transport shm"));
    }

    #[test]
    fn kernel_without_rdma_before_the_library() {
        let lib_missing = LibraryState::Missing("libibverbs.so.1: cannot open shared object file".into());
        let c = cause(classify(
            true,
            &SysfsState::NoRdmaClass,
            &lib_missing,
            &Listing::NotAttempted,
            &Selection::default(),
        ));
        let Cause::KernelWithoutRdma { detail } = &c else {
            panic!("{c:?}")
        };
        assert!(detail.contains("/sys/class/infiniband"), "{detail}");
        assert!(detail.contains("not installed either"), "{detail}");
        let c = cause(classify(
            true,
            &SysfsState::Present {
                verbs_class: false,
                devices: vec![],
            },
            &LibraryState::Loaded,
            &Listing::NotAttempted,
            &Selection::default(),
        ));
        assert!(c.to_string().contains("ib_uverbs"), "{c}");
        assert!(c.hint().contains("modprobe"));
    }

    #[test]
    fn library_missing() {
        let c = cause(classify(
            true,
            &present(),
            &LibraryState::Missing("not found".into()),
            &Listing::NotAttempted,
            &Selection::default(),
        ));
        assert_eq!(
            c,
            Cause::LibraryMissing {
                detail: "not found".into()
            }
        );
        assert!(c.hint().contains("libibverbs1"));
    }

    #[test]
    fn listing_errors() {
        for errno in [libc::ENOSYS, libc::EOPNOTSUPP] {
            let c = cause(classify(
                true,
                &SysfsState::Unavailable,
                &LibraryState::Loaded,
                &Listing::Failed {
                    errno: Some(errno),
                    detail: "Function not implemented (os error 38)".into(),
                },
                &Selection::default(),
            ));
            assert!(matches!(c, Cause::KernelWithoutRdma { .. }), "{errno}: {c:?}");
        }
        let c = cause(classify(
            true,
            &present(),
            &LibraryState::Loaded,
            &Listing::Failed {
                errno: Some(libc::EACCES),
                detail: "Permission denied".into(),
            },
            &Selection::default(),
        ));
        assert!(matches!(c, Cause::ProbeFailed { .. }), "{c:?}");
    }

    #[test]
    fn no_device_ports_down_selection() {
        let ok = |l| classify(true, &present(), &LibraryState::Loaded, &l, &Selection::default());
        assert_eq!(cause(ok(Listing::Devices(vec![]))), Cause::NoDevice);
        let c = cause(ok(Listing::Devices(vec![dev(
            "mlx5_0",
            vec![roce_port(1, PortState::Down)],
        )])));
        assert!(
            matches!(&c, Cause::AllPortsDown { skipped } if skipped.len() == 1),
            "{c:?}"
        );
        assert_eq!(
            c.to_string(),
            "every RDMA port is down (mlx5_0 port 1: port is DOWN, not ACTIVE)"
        );
        let a = classify(
            true,
            &present(),
            &LibraryState::Loaded,
            &Listing::Devices(vec![dev("mlx5_0", vec![roce_port(1, PortState::Active)])]),
            &Selection {
                device: Some("mlx5_7".into()),
                ..Selection::default()
            },
        );
        let c = cause(a);
        assert!(
            matches!(c, Cause::Selection(SelectError::DeviceNotFound { .. })),
            "{c:?}"
        );
        assert!(c.hint().contains("RDMA_DEVICE"));
        let a = ok(Listing::Devices(vec![dev(
            "mlx5_0",
            vec![roce_port(1, PortState::Active)],
        )]));
        assert!(a.is_usable());
        assert_eq!(a.selected().unwrap().gid_index, 3);
        assert!(a.to_string().starts_with("usable: mlx5_0 port 1"), "{a}");
    }
}
