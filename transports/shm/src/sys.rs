//! Thin, checked wrappers over the few Linux calls the backend makes: shared
//! file mappings, `flock`, `pidfd_open`, and process identity from `/proc`.
//!
//! Everything here is synchronous and returns `io::Result`; the callers turn
//! failures into the crate's typed errors.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

/// A `MAP_SHARED` mapping, unmapped on drop.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is plain memory owned by this value (like a Box<[u8]>);
// every access to bytes another process may touch goes through atomics or
// through raw copies whose exclusivity the callers establish.
unsafe impl Send for Mapping {}
// SAFETY: shared access only reads through atomics or hands out `&[u8]`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map `len` bytes of `fd` from offset 0, read-write and shared.
    pub(crate) fn shared(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: no address hint, a valid open fd, result checked against MAP_FAILED.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        Self::from_raw(raw, len)
    }

    /// Anonymous shared memory (unit tests of the ring; behaves like a segment).
    #[cfg(test)]
    pub(crate) fn anonymous(len: usize) -> io::Result<Mapping> {
        // SAFETY: anonymous mapping without hint; result checked against MAP_FAILED.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        Self::from_raw(raw, len)
    }

    fn from_raw(raw: *mut libc::c_void, len: usize) -> io::Result<Mapping> {
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(raw.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len is exactly the mapping made in `shared`/`anonymous`,
        // unmapped once; no reference into it outlives `self` (borrows of the
        // owner end before it can be dropped).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Create a new file (never an existing one, never through a symlink), mode 0600.
pub(crate) fn create_exclusive(path: &Path) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    // SAFETY: NUL-terminated path; the returned fd is checked and owned below.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o600 as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open an existing file read-write, refusing symlinks.
pub(crate) fn open_existing(path: &Path, write: bool) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    let mode = if write { libc::O_RDWR } else { libc::O_RDONLY };
    // SAFETY: NUL-terminated path; the returned fd is checked and owned below.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), mode | libc::O_CLOEXEC | libc::O_NOFOLLOW) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn set_len(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too large"))?;
    // SAFETY: plain syscall on a valid fd.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map(drop)
}

/// What `fstat` says about a segment file.
pub(crate) struct FileInfo {
    pub size: u64,
    pub regular: bool,
    pub uid: u32,
}

pub(crate) fn file_info(fd: BorrowedFd<'_>) -> io::Result<FileInfo> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer for one `stat`; initialised on success.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    Ok(FileInfo {
        size: st.st_size as u64,
        regular: st.st_mode & libc::S_IFMT == libc::S_IFREG,
        uid: st.st_uid,
    })
}

pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Take an exclusive `flock` without waiting. `Ok(false)` when someone else holds it.
pub(crate) fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: plain syscall on a valid fd.
    match cvt(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Remove a name; a name that is already gone is not an error.
pub(crate) fn unlink_quiet(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A pidfd for `pid` (readable once the process has exited).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad pid"))?;
    // SAFETY: pidfd_open(pid, 0) takes no pointers; the result is checked.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // pidfd_open sets O_CLOEXEC itself. SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) })
}

/// True when `fd` is readable right now (a pidfd: the process has exited).
pub(crate) fn readable_now(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = cvt(unsafe { libc::poll(&mut p, 1, 0) })?;
    Ok(n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
}

/// A process as identified across pid reuse: pid plus its start time
/// (clock ticks since boot, field 22 of `/proc/PID/stat`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcIdent {
    pub pid: u32,
    pub start: u64,
}

impl ProcIdent {
    pub(crate) fn current() -> io::Result<ProcIdent> {
        let pid = std::process::id();
        match read_stat(pid)? {
            Some((_, start)) => Ok(ProcIdent { pid, start }),
            None => Err(io::Error::other("cannot read /proc/self/stat")),
        }
    }

    /// Whether this very process (not a later one with the same pid) still runs.
    /// Zombies count as gone.
    pub(crate) fn alive(&self) -> bool {
        match read_stat(self.pid) {
            Ok(Some((state, start))) => start == self.start && state != 'Z' && state != 'X',
            Ok(None) => false,
            // Unreadable /proc entry: do not declare a peer dead on a guess.
            Err(_) => true,
        }
    }
}

/// (state, starttime) of `pid`, or None when there is no such process.
fn read_stat(pid: u32) -> io::Result<Option<(char, u64)>> {
    let text = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(parse_stat(&text))
}

/// Fields after the command name (which may itself contain spaces and ')').
pub(crate) fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // `state` is field 3; starttime is field 22.
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

/// The kernel's boot id: equal for two processes iff they run on the same
/// host (and the same boot of it).
pub(crate) fn boot_id() -> io::Result<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    let id = id.trim();
    if id.is_empty() {
        return Err(io::Error::other("empty boot id"));
    }
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line = "1234 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        assert_eq!(parse_stat(line), Some(('S', 987_654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_identity_is_alive() {
        let me = ProcIdent::current().unwrap();
        assert!(me.alive());
        let other = ProcIdent {
            start: me.start + 1,
            ..me
        };
        assert!(!other.alive(), "a different start time is another process");
        assert!(!boot_id().unwrap().is_empty());
    }
}
