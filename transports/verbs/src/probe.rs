//! The probe: is RDMA usable here? Fast (no QP is created) and never panics.
//!
//! It reads sysfs (the kernel's view), tries to load `libibverbs.so.1`, and —
//! with the `sideway` feature — lists devices, ports and GIDs through
//! libibverbs, then [`classify`]s. Without the feature the answer is
//! [`Cause::NotBuilt`], with sysfs and the library still reported for the doctor.
//!
//! Facts behind the mapping: sideway links rdma-core-mummy, a static shim that
//! `dlopen`s `libibverbs.so.1` when the program starts. When that fails every
//! verbs call fails with EOPNOTSUPP ("symbol not loaded"), so listing devices
//! reports EOPNOTSUPP; with the library present but no kernel support,
//! libibverbs itself reports ENOSYS. Our own `dlopen` check tells the two apart.

use std::path::Path;
use std::time::{Duration, Instant};

#[allow(unused_imports)] // Cause is used in the docs and by the feature build.
use crate::availability::{classify, Availability, Cause, LibraryState, Listing};
use crate::select::Selection;
use crate::sysfs::{self, SysfsState};

/// Whether this build contains the verbs adapter (`sideway` feature).
pub const BUILT_WITH_VERBS: bool = cfg!(feature = "sideway");

/// Everything the probe found.
#[derive(Clone, Debug)]
pub struct ProbeReport {
    /// The verdict for the given selection.
    pub availability: Availability,
    /// The kernel's view.
    pub sysfs: SysfsState,
    pub library: LibraryState,
    /// libibverbs' view (`NotAttempted` without the feature).
    pub listing: Listing,
    pub built_with_verbs: bool,
    /// How long probing took.
    pub elapsed: Duration,
}

/// Probe RDMA for `sel` (use [`Selection::default`] for automatic choice).
pub fn probe(sel: &Selection) -> ProbeReport {
    let start = Instant::now();
    let sysfs = sysfs::read(Path::new("/sys"));
    let library = library_state();
    let listing = if BUILT_WITH_VERBS {
        verbs_listing()
    } else {
        Listing::NotAttempted
    };
    let availability = classify(BUILT_WITH_VERBS, &sysfs, &library, &listing, sel);
    ProbeReport {
        availability,
        sysfs,
        library,
        listing,
        built_with_verbs: BUILT_WITH_VERBS,
        elapsed: start.elapsed(),
    }
}

/// Whether `libibverbs.so.1` can be loaded by the dynamic linker.
pub fn library_state() -> LibraryState {
    // SAFETY: dlopen gets a constant NUL-terminated name; on success the
    // handle is closed again at once and no symbol from it is used. dlerror
    // returns a thread-local, NUL-terminated message (or null), copied before
    // any other dl* call.
    unsafe {
        let handle = libc::dlopen(c"libibverbs.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            let err = libc::dlerror();
            let msg = if err.is_null() {
                "dlopen failed".to_owned()
            } else {
                std::ffi::CStr::from_ptr(err).to_string_lossy().into_owned()
            };
            LibraryState::Missing(msg)
        } else {
            libc::dlclose(handle);
            LibraryState::Loaded
        }
    }
}

#[cfg(not(feature = "sideway"))]
fn verbs_listing() -> Listing {
    Listing::NotAttempted
}

#[cfg(feature = "sideway")]
fn verbs_listing() -> Listing {
    // sideway converts some C enums with `From<u32>` impls that panic on
    // values it does not know (a newer driver): a probe must never abort.
    match std::panic::catch_unwind(imp::list_devices) {
        Ok(listing) => listing,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".into());
            Listing::Failed {
                errno: None,
                detail: format!("sideway panicked while listing devices: {msg}"),
            }
        }
    }
}

#[cfg(feature = "sideway")]
pub(crate) mod imp {
    use std::sync::Arc;

    use sideway::ibverbs::device::{Device, DeviceInfo as _, DeviceList, TransportType};
    use sideway::ibverbs::device_context::{DeviceContext, LinkLayer as SwLinkLayer};

    use crate::availability::Listing;
    use crate::device::{DeviceInfo, DeviceTransport, GidEntry, GidKind, LinkLayer, PortInfo, PortState};
    use crate::gid::Gid;
    use crate::mtu::PathMtu;

    /// Bounds: devices listed, GID indexes queried per port (`sgid_index` is 8 bits).
    const MAX_DEVICES: usize = 64;
    const MAX_GIDS: u32 = 256;

    /// `ibv_query_gid_type`'s sysfs types.
    const GID_TYPE_IB_ROCE_V1: u32 = 0;
    const GID_TYPE_ROCE_V2: u32 = 1;

    pub(crate) fn list_devices() -> Listing {
        let list = match DeviceList::new() {
            Ok(l) => l,
            Err(e) => {
                let errno = match &e.0 {
                    sideway::ibverbs::device::GetDeviceListErrorKind::Ibverbs(io) => io.raw_os_error(),
                    #[allow(unreachable_patterns)] // the enum is non_exhaustive
                    _ => None,
                };
                return Listing::Failed {
                    errno,
                    detail: format!(
                        "{e}: {}",
                        std::error::Error::source(&e).map_or(String::new(), |s| s.to_string())
                    ),
                };
            }
        };
        Listing::Devices(list.iter().take(MAX_DEVICES).map(|d| describe(&d)).collect())
    }

    fn describe(dev: &Device<'_>) -> DeviceInfo {
        let name = dev.name();
        let transport = match dev.transport_type() {
            TransportType::InfiniBand => DeviceTransport::Ib,
            TransportType::IWarp => DeviceTransport::Iwarp,
            _ => DeviceTransport::Other,
        };
        let mut info = DeviceInfo {
            name,
            transport,
            fw_ver: None,
            problem: None,
            ports: Vec::new(),
        };
        let ctx = match dev.open() {
            Ok(c) => c,
            Err(e) => {
                info.problem = Some(format!("{e}: {}", source_text(&e)));
                return info;
            }
        };
        match describe_ports(&ctx, &info.name) {
            Ok((fw, ports)) => {
                info.fw_ver = Some(fw);
                info.ports = ports;
            }
            Err(p) => info.problem = Some(p),
        }
        info
    }

    fn source_text(e: &dyn std::error::Error) -> String {
        e.source().map_or_else(|| "no detail".to_owned(), ToString::to_string)
    }

    fn describe_ports(ctx: &Arc<DeviceContext>, name: &str) -> Result<(String, Vec<PortInfo>), String> {
        let attr = ctx
            .query_device()
            .map_err(|e| format!("query_device: {}", source_text(&e)))?;
        let mut ports = Vec::new();
        for port_num in 1..=attr.phys_port_cnt() {
            let pa = ctx
                .query_port(port_num)
                .map_err(|e| format!("query_port({port_num}): {}", source_text(&e)))?;
            let link_layer = match pa.link_layer() {
                SwLinkLayer::InfiniBand => LinkLayer::InfiniBand,
                SwLinkLayer::Ethernet => LinkLayer::Ethernet,
                SwLinkLayer::Unspecified => LinkLayer::Unspecified,
            };
            let gid_table_len = u32::try_from(pa.gid_tbl_len()).unwrap_or(0);
            let mut gids = Vec::new();
            for index in 0..gid_table_len.min(MAX_GIDS) {
                let Ok(g) = ctx.query_gid(port_num, index) else {
                    continue;
                };
                let gid = Gid(g.raw);
                if gid.is_zero() {
                    continue;
                }
                let kind = match ctx.query_gid_type(port_num, index) {
                    Ok(GID_TYPE_ROCE_V2) => GidKind::RoceV2,
                    Ok(GID_TYPE_IB_ROCE_V1) if link_layer.is_ethernet() => GidKind::RoceV1,
                    Ok(GID_TYPE_IB_ROCE_V1) => GidKind::Ib,
                    _ => GidKind::Unknown,
                };
                let netdev = std::fs::read_to_string(format!(
                    "/sys/class/infiniband/{name}/ports/{port_num}/gid_attrs/ndevs/{index}"
                ))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty());
                gids.push(GidEntry {
                    index,
                    gid,
                    kind,
                    netdev,
                });
            }
            ports.push(PortInfo {
                port_num,
                // Both enums are `#[repr(u32)]` with the verbs codes as discriminants.
                state: PortState::from_code(pa.port_state() as u32),
                link_layer,
                active_mtu: PathMtu::from_ibv_code(pa.active_mtu() as u32),
                lid: pa.lid(),
                gid_table_len,
                gids,
            });
        }
        Ok((attr.firmware_version(), ports))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exercised on every machine: without RDMA hardware (this one: no
    /// /sys/class/infiniband) the probe must say so, with the reason, fast.
    #[test]
    fn probe_answers_fast_and_explains() {
        let r = probe(&Selection::default());
        eprintln!(
            "probe took {:?}: {}\n  sysfs: {:?}\n  library: {:?}\n  listing: {:?}",
            r.elapsed, r.availability, r.sysfs, r.library, r.listing
        );
        // A fail-fast requirement (`--transport auto` runs it on every start),
        // not a benchmark: the bound is generous.
        assert!(r.elapsed < Duration::from_secs(1), "probe took {:?}", r.elapsed);
        assert_eq!(r.built_with_verbs, cfg!(feature = "sideway"));
        let hardware = matches!(&r.sysfs, SysfsState::Present { devices, .. } if !devices.is_empty());
        match &r.availability {
            Availability::Unusable { cause, hint } => {
                assert!(hint.contains("--transport tcp"), "{hint}");
                if !cfg!(feature = "sideway") {
                    assert_eq!(*cause, Cause::NotBuilt);
                    assert!(cause.to_string().contains("rebuild with --features rdma"));
                } else if !hardware {
                    crate::skip_loudly("probe on hardware", &format_args!("no RDMA device here: {cause}"));
                    assert!(
                        matches!(
                            cause,
                            Cause::KernelWithoutRdma { .. } | Cause::NoDevice | Cause::LibraryMissing { .. }
                        ),
                        "no device here, got {cause:?}"
                    );
                }
            }
            Availability::Usable(s) => {
                assert!(r.built_with_verbs, "usable without the adapter?");
                eprintln!("RDMA is usable here: {s}");
            }
        }
        if matches!(r.sysfs, SysfsState::NoRdmaClass) && cfg!(feature = "sideway") {
            // This machine: the kernel has no InfiniBand support.
            assert!(
                matches!(
                    r.availability,
                    Availability::Unusable {
                        cause: Cause::KernelWithoutRdma { .. },
                        ..
                    }
                ),
                "{}",
                r.availability
            );
        }
    }

    #[test]
    fn library_check_does_not_panic() {
        let l = library_state();
        eprintln!("libibverbs.so.1: {l:?}");
        if let LibraryState::Missing(m) = l {
            assert!(!m.is_empty());
        }
    }

    #[cfg(feature = "sideway")]
    #[test]
    fn verbs_listing_agrees_with_sysfs() {
        let sys = sysfs::read(Path::new("/sys"));
        let listing = verbs_listing();
        eprintln!("sysfs: {:?}\nlibibverbs: {listing:?}", sys.device_names());
        match (&sys, &listing, library_state()) {
            (_, Listing::Failed { errno, .. }, LibraryState::Missing(_)) => {
                // rdma-core-mummy could not load the library either.
                assert_eq!(*errno, Some(libc::EOPNOTSUPP), "{listing:?}");
            }
            (SysfsState::NoRdmaClass, Listing::Failed { errno, .. }, LibraryState::Loaded) => {
                assert!(
                    matches!(*errno, Some(e) if e == libc::ENOSYS || e == libc::EOPNOTSUPP),
                    "{listing:?}"
                );
            }
            (SysfsState::Present { devices, .. }, Listing::Devices(d), _) => {
                let mut a: Vec<_> = devices.iter().map(|d| d.name.clone()).collect();
                let mut b: Vec<_> = d.iter().map(|d| d.name.clone()).collect();
                a.sort();
                b.sort();
                assert_eq!(a, b, "sysfs and libibverbs list different devices");
            }
            other => eprintln!("no comparison for {other:?}"),
        }
    }
}
