//! Shared segments: files under the segment directory, mapped `MAP_SHARED`.
//!
//! Layout of every segment (offsets in bytes):
//!
//! ```text
//! 0      header (64 bytes, native-endian u64 words; see SegHeader)
//! 1024   doorbell only: the ring's control block (RingCtl, three cache lines)
//! 4096   data: a region's bytes (page aligned), or the doorbell's ring entries
//! ```
//!
//! The header says what the segment is and who owns it: kind, the owner's
//! incarnation, pid and process start time, the region's length, rkey and
//! published base address. A mapper reads it once (with `pread`) and refuses
//! the segment unless every field matches the descriptor it was given.
//!
//! Liveness of an owner: it holds an exclusive `flock` on its doorbell file
//! for its whole life. The kernel drops that lock when the process dies,
//! SIGKILL included, so "lock is free" means "owner is gone": that is how
//! [`sweep`] tells a crashed run's leftovers from a live agent's segments.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use slimebench_proto::ConnectError;

use crate::naming::{self, Names, SegKind};
use crate::sys::{self, Mapping, ProcIdent};

/// Offset of the data (region bytes or ring entries): one page.
pub(crate) const DATA_OFFSET: usize = 4096;
/// Offset of the doorbell's ring control block.
pub(crate) const CTL_OFFSET: usize = 1024;
pub(crate) const PAGE: usize = 4096;

const MAGIC: u64 = u64::from_le_bytes(*b"SBSHMSEG");
const VERSION: u32 = 1;
const KIND_DOORBELL: u32 = 1;
const KIND_REGION: u32 = 2;

/// The header as it lies in shared memory.
#[repr(C)]
struct SegHeader {
    magic: AtomicU64,
    /// version | kind << 32
    version_kind: AtomicU64,
    incarnation: AtomicU64,
    owner_pid: AtomicU64,
    owner_start: AtomicU64,
    /// Region: usable bytes. Doorbell: ring capacity in entries.
    data_len: AtomicU64,
    /// Region: rkey | index << 32.
    rkey_index: AtomicU64,
    /// Region: the base address published in `MrDesc::addr`.
    base: AtomicU64,
}

const HEADER_BYTES: usize = std::mem::size_of::<SegHeader>();

/// Header contents, as written by an owner or read by a mapper.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeaderFields {
    pub kind: SegKind,
    pub incarnation: u64,
    pub owner: ProcIdent,
    pub data_len: u64,
    pub rkey: u32,
    pub base: u64,
}

impl HeaderFields {
    /// Bytes the file must hold for this header to be truthful.
    pub(crate) fn total_len(&self) -> Option<u64> {
        let data = match self.kind {
            SegKind::Doorbell => self.data_len.checked_mul(crate::ring::ENTRY_SIZE as u64)?,
            SegKind::Region(_) => self.data_len,
        };
        let data = data.checked_next_multiple_of(PAGE as u64)?;
        data.checked_add(DATA_OFFSET as u64)
    }
}

/// One of our own segments.
pub(crate) struct OwnSegment {
    path: PathBuf,
    /// Held open for the segment's life: on a doorbell it carries the owner lock.
    #[cfg_attr(not(test), allow(dead_code))]
    fd: OwnedFd,
    map: Mapping,
    linked: bool,
}

impl OwnSegment {
    /// Create `dir/name` (it must not exist), size it, map it and write its
    /// header. With `lock`, the owner lock is taken before anything else, so a
    /// sweeper never sees a doorbell of a live owner unlocked. On failure the
    /// name is removed again.
    pub(crate) fn create(dir: &Path, name: &str, fields: &HeaderFields, lock: bool) -> io::Result<OwnSegment> {
        let path = dir.join(name);
        let fd = sys::create_exclusive(&path)?;
        let built = (|| {
            if lock && !sys::try_lock_exclusive(fd.as_fd())? {
                return Err(io::Error::other("lock of a file we just created is held elsewhere"));
            }
            let total = fields
                .total_len()
                .and_then(|t| usize::try_from(t).ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
            sys::set_len(fd.as_fd(), total as u64)?;
            let map = Mapping::shared(fd.as_fd(), total)?;
            write_header(&map, fields);
            Ok(map)
        })();
        match built {
            Ok(map) => Ok(OwnSegment {
                path,
                fd,
                map,
                linked: true,
            }),
            Err(e) => {
                let _ = sys::unlink_quiet(&path);
                Err(e)
            }
        }
    }

    pub(crate) fn map(&self) -> &Mapping {
        &self.map
    }

    pub(crate) fn is_linked(&self) -> bool {
        self.linked
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the name (the memory lives on while mapped). Idempotent.
    pub(crate) fn unlink(&mut self) -> io::Result<()> {
        if self.linked {
            self.linked = false;
            sys::unlink_quiet(&self.path)?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

impl Drop for OwnSegment {
    fn drop(&mut self) {
        if let Err(e) = self.unlink() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove shared segment");
        }
    }
}

fn header(map: &Mapping) -> &SegHeader {
    assert!(map.len() >= DATA_OFFSET);
    // SAFETY: the mapping is at least one page, page aligned (so aligned for
    // u64), and SegHeader is made of atomics only, which may be shared with
    // another process; the reference lives no longer than `map`.
    unsafe { &*map.as_ptr().cast::<SegHeader>() }
}

fn write_header(map: &Mapping, f: &HeaderFields) {
    let h = header(map);
    let (kind, index) = match f.kind {
        SegKind::Doorbell => (KIND_DOORBELL, 0),
        SegKind::Region(i) => (KIND_REGION, i),
    };
    h.version_kind
        .store(u64::from(VERSION) | u64::from(kind) << 32, Ordering::Relaxed);
    h.incarnation.store(f.incarnation, Ordering::Relaxed);
    h.owner_pid.store(u64::from(f.owner.pid), Ordering::Relaxed);
    h.owner_start.store(f.owner.start, Ordering::Relaxed);
    h.data_len.store(f.data_len, Ordering::Relaxed);
    h.rkey_index
        .store(u64::from(f.rkey) | u64::from(index) << 32, Ordering::Relaxed);
    h.base.store(f.base, Ordering::Relaxed);
    // Published last: a reader that sees the magic sees every field.
    h.magic.store(MAGIC, Ordering::Release);
}

/// Decode a header read from a file; `Err` says what is wrong with it.
fn decode_header(b: &[u8; HEADER_BYTES]) -> Result<HeaderFields, String> {
    let w = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    if w(0) != MAGIC {
        return Err("not a slimebench segment (bad magic)".into());
    }
    let vk = w(1);
    if vk as u32 != VERSION {
        return Err(format!("segment version {} (this build speaks {VERSION})", vk as u32));
    }
    let rk = w(6);
    let kind = match (vk >> 32) as u32 {
        KIND_DOORBELL => SegKind::Doorbell,
        KIND_REGION => SegKind::Region((rk >> 32) as u32),
        k => return Err(format!("unknown segment kind {k}")),
    };
    let pid = u32::try_from(w(3)).map_err(|_| "owner pid out of range".to_string())?;
    Ok(HeaderFields {
        kind,
        incarnation: w(2),
        owner: ProcIdent { pid, start: w(4) },
        data_len: w(5),
        rkey: rk as u32,
        base: w(7),
    })
}

/// A peer's segment, verified and mapped.
pub(crate) struct PeerSegment {
    pub map: Mapping,
    pub fields: HeaderFields,
}

fn unreachable(name: &str, reason: String) -> ConnectError {
    ConnectError::Unreachable {
        addr: name.to_owned(),
        reason,
    }
}

fn bad(name: &str, reason: String) -> ConnectError {
    ConnectError::BadAddress {
        addr: name.to_owned(),
        reason,
    }
}

impl PeerSegment {
    /// Open `dir/name`, check that its header is of `kind`, owned by
    /// `incarnation` and truthful about its size (`check` adds the
    /// descriptor's own expectations), then map all of it.
    ///
    /// # Errors
    /// [`ConnectError::Unreachable`] when the file is missing or its owner has
    /// exited, [`ConnectError::BadAddress`] when it is not what the descriptor says.
    pub(crate) fn open(
        dir: &Path,
        name: &str,
        kind: SegKind,
        incarnation: u64,
        check: impl FnOnce(&HeaderFields) -> Result<(), String>,
    ) -> Result<PeerSegment, ConnectError> {
        let path = dir.join(name);
        let fd = sys::open_existing(&path, true).map_err(|e| {
            let why = if e.kind() == io::ErrorKind::NotFound {
                "no such segment: the peer exited or released it, or runs in another IPC/mount namespace".to_string()
            } else {
                format!("cannot open segment: {e}")
            };
            unreachable(name, why)
        })?;
        let info = sys::file_info(fd.as_fd()).map_err(|e| unreachable(name, format!("fstat: {e}")))?;
        if !info.regular {
            return Err(bad(name, "not a regular file".into()));
        }
        if info.uid != sys::euid() {
            // Another user could truncate it under our mapping (SIGBUS).
            return Err(bad(name, format!("owned by uid {}, not by us", info.uid)));
        }
        let mut raw = [0u8; HEADER_BYTES];
        std::fs::File::from(fd.try_clone().map_err(|e| unreachable(name, e.to_string()))?)
            .read_exact_at(&mut raw, 0)
            .map_err(|e| bad(name, format!("cannot read header: {e}")))?;
        let fields = decode_header(&raw).map_err(|e| bad(name, e))?;
        if fields.kind != kind {
            return Err(bad(
                name,
                format!("segment is a {:?}, expected a {kind:?}", fields.kind),
            ));
        }
        if fields.incarnation != incarnation {
            return Err(bad(
                name,
                format!(
                    "segment belongs to incarnation {:#x}, descriptor says {incarnation:#x} (stale)",
                    fields.incarnation
                ),
            ));
        }
        check(&fields).map_err(|e| bad(name, e))?;
        let total = fields
            .total_len()
            .ok_or_else(|| bad(name, format!("length {} overflows", fields.data_len)))?;
        if info.size < total {
            return Err(bad(
                name,
                format!("file holds {} bytes, header promises {total}", info.size),
            ));
        }
        let total = usize::try_from(total).map_err(|_| bad(name, "segment too large".into()))?;
        if !fields.owner.alive() {
            return Err(unreachable(
                name,
                format!("owner process {} has exited (stale descriptor)", fields.owner.pid),
            ));
        }
        let map = Mapping::shared(fd.as_fd(), total).map_err(|e| unreachable(name, format!("mmap: {e}")))?;
        Ok(PeerSegment { map, fields })
    }
}

/// What a sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Files removed (their owner was gone).
    pub removed: usize,
    /// Incarnations left alone because their owner is alive.
    pub live_skipped: usize,
}

/// Which leftovers a sweep considers.
pub(crate) struct SweepFilter<'a> {
    /// Escaped scope.
    pub scope: &'a str,
    /// Escaped alias; `None` = every alias of the scope.
    pub alias: Option<&'a str>,
    /// Only this incarnation.
    pub only: Option<u64>,
    /// Never this incarnation (ours).
    pub except: Option<u64>,
}

/// Remove the segments of owners that are gone (their doorbell lock is free,
/// or their doorbell is missing). Regions go first, the doorbell last, so a
/// crash mid-sweep leaves a state the next sweep still recognises.
pub(crate) fn sweep(dir: &Path, f: &SweepFilter<'_>) -> io::Result<SweepReport> {
    let prefix = match f.alias {
        Some(a) => format!("{}{}.{a}.", naming::NAME_PREFIX, f.scope),
        None => format!("{}{}.", naming::NAME_PREFIX, f.scope),
    };
    // (alias, incarnation) -> region names
    let mut groups: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(&prefix) {
            continue;
        }
        let Some(p) = naming::parse(&name) else { continue };
        if p.scope != f.scope || f.alias.is_some_and(|a| a != p.alias) {
            continue;
        }
        if f.only.is_some_and(|i| i != p.incarnation) || f.except == Some(p.incarnation) {
            continue;
        }
        let g = groups.entry((p.alias.clone(), p.incarnation)).or_default();
        if p.kind != SegKind::Doorbell {
            g.push(name);
        }
    }
    let mut report = SweepReport::default();
    for ((alias, inc), regions) in groups {
        let names = Names {
            scope: f.scope.to_owned(),
            alias,
            incarnation: inc,
        };
        let db = dir.join(names.doorbell());
        // Hold the dead owner's lock while removing, so two sweepers agree.
        let _lock = match sys::open_existing(&db, false) {
            Ok(fd) => match sys::try_lock_exclusive(fd.as_fd()) {
                Ok(true) => Some(fd),
                Ok(false) => {
                    report.live_skipped += 1;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(path = %db.display(), error = %e, "cannot test segment owner lock");
                    continue;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(path = %db.display(), error = %e, "cannot open doorbell of old incarnation");
                continue;
            }
        };
        for r in regions {
            report.removed += usize::from(sys::unlink_quiet(&dir.join(r))?);
        }
        report.removed += usize::from(sys::unlink_quiet(&db)?);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kind: SegKind, inc: u64) -> HeaderFields {
        HeaderFields {
            kind,
            incarnation: inc,
            owner: ProcIdent::current().unwrap(),
            data_len: 10_000,
            rkey: 77,
            base: 1 << 40,
        }
    }

    fn dir() -> PathBuf {
        PathBuf::from("/dev/shm")
    }

    #[test]
    fn header_round_trip_and_checks() {
        let n = Names {
            scope: format!("unit-seg-{}", std::process::id()),
            alias: "a".into(),
            incarnation: 5,
        };
        let f = fields(SegKind::Region(3), 5);
        let seg = OwnSegment::create(&dir(), &n.region(3), &f, false).unwrap();
        assert_eq!(seg.map().len(), DATA_OFFSET + 12_288);
        let p = PeerSegment::open(&dir(), &n.region(3), SegKind::Region(3), 5, |_| Ok(())).unwrap();
        assert_eq!(p.fields, f);
        // Wrong incarnation, wrong kind, failing check: refused.
        assert!(matches!(
            PeerSegment::open(&dir(), &n.region(3), SegKind::Region(3), 6, |_| Ok(())),
            Err(ConnectError::BadAddress { .. })
        ));
        assert!(matches!(
            PeerSegment::open(&dir(), &n.region(3), SegKind::Doorbell, 5, |_| Ok(())),
            Err(ConnectError::BadAddress { .. })
        ));
        assert!(PeerSegment::open(&dir(), &n.region(3), SegKind::Region(3), 5, |_| Err("no".into())).is_err());
        // Creating the same name twice fails (O_EXCL).
        assert!(OwnSegment::create(&dir(), &n.region(3), &f, false).is_err());
        let path = seg.path().to_owned();
        drop(seg);
        assert!(!path.exists());
        assert!(matches!(
            PeerSegment::open(&dir(), &n.region(3), SegKind::Region(3), 5, |_| Ok(())),
            Err(ConnectError::Unreachable { .. })
        ));
    }

    #[test]
    fn truncated_file_is_refused() {
        let n = Names {
            scope: format!("unit-trunc-{}", std::process::id()),
            alias: "a".into(),
            incarnation: 9,
        };
        let seg = OwnSegment::create(&dir(), &n.region(0), &fields(SegKind::Region(0), 9), false).unwrap();
        sys::set_len(seg.fd().as_fd(), DATA_OFFSET as u64).unwrap();
        let e = PeerSegment::open(&dir(), &n.region(0), SegKind::Region(0), 9, |_| Ok(())).err();
        assert!(matches!(e, Some(ConnectError::BadAddress { .. })), "{e:?}");
    }

    #[test]
    fn sweep_spares_live_owners_and_removes_orphans() {
        let scope = format!("unit-sweep-{}", std::process::id());
        let live = Names {
            scope: scope.clone(),
            alias: "a".into(),
            incarnation: 1,
        };
        let db = OwnSegment::create(&dir(), &live.doorbell(), &fields(SegKind::Doorbell, 1), true).unwrap();
        let r = OwnSegment::create(&dir(), &live.region(0), &fields(SegKind::Region(0), 1), false).unwrap();
        // Orphans: a region whose doorbell is gone (an owner that died mid-cleanup).
        let dead = Names {
            incarnation: 2,
            ..live.clone()
        };
        let orphan = OwnSegment::create(&dir(), &dead.region(0), &fields(SegKind::Region(0), 2), false).unwrap();
        std::mem::forget(orphan); // leaves the name behind, as a crash would
        let rep = sweep(
            &dir(),
            &SweepFilter {
                scope: &scope,
                alias: Some("a"),
                only: None,
                except: None,
            },
        )
        .unwrap();
        assert_eq!(
            rep,
            SweepReport {
                removed: 1,
                live_skipped: 1
            }
        );
        assert!(db.path().exists() && r.path().exists());
        drop((r, db));
    }
}
