//! Waking a sleeping peer, and noticing a dead one, through tokio's reactor.
//!
//! - **Wake socket**: every transport binds an abstract-namespace Unix
//!   datagram socket `slimebench.{scope}.{alias}.{incarnation}.wake`. A peer
//!   that must wake us (see the ring's sleep protocol) sends one byte to it.
//!   Abstract names live in the kernel, not in a directory: they vanish with
//!   the socket, so nothing is ever left behind, and a send to a socket that is
//!   gone fails at once with `ECONNREFUSED` — itself a sign the peer is gone.
//!   A full socket buffer (`EAGAIN`) means a wake-up is already pending.
//! - **Liveness**: a pidfd of the peer's process, readable once it exits
//!   (SIGKILL included); the reactor watches it while we sleep. Where
//!   `pidfd_open` is unavailable, a timer re-reads `/proc/PID/stat` instead.
//!
//! Registration with the reactor is lazy (first `poll_ready`), so a transport
//! can be built outside a runtime; it must then be polled on one runtime.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::sys::{self, ProcIdent};

/// Reactor registration panics outside a runtime: check first.
pub(crate) fn in_runtime() -> io::Result<()> {
    tokio::runtime::Handle::try_current()
        .map(drop)
        .map_err(|_| io::Error::other("not inside a tokio runtime (poll the shm transport from one)"))
}

fn abstract_addr(name: &str) -> io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(name.as_bytes())
}

/// Our wake socket.
pub(crate) enum WakeRx {
    Std(UnixDatagram),
    Reactor(tokio::net::UnixDatagram),
    /// Taken out while converting (never observed outside `register`).
    Empty,
}

impl WakeRx {
    pub(crate) fn bind(name: &str) -> io::Result<WakeRx> {
        let s = UnixDatagram::bind_addr(&abstract_addr(name)?)?;
        s.set_nonblocking(true)?;
        Ok(WakeRx::Std(s))
    }

    /// Register with the current runtime's reactor (once).
    fn register(&mut self) -> io::Result<()> {
        if matches!(self, WakeRx::Reactor(_)) {
            return Ok(());
        }
        in_runtime()?;
        let WakeRx::Std(s) = std::mem::replace(self, WakeRx::Empty) else {
            return Err(io::Error::other("wake socket lost"));
        };
        // Keep a handle in case registration fails, so the socket stays bound.
        let spare = s.try_clone()?;
        match tokio::net::UnixDatagram::from_std(s) {
            Ok(t) => {
                *self = WakeRx::Reactor(t);
                Ok(())
            }
            Err(e) => {
                *self = WakeRx::Std(spare);
                Err(e)
            }
        }
    }

    /// Drain pending wake datagrams; returns how many.
    pub(crate) fn drain(&mut self) -> usize {
        let mut buf = [0u8; 16];
        let mut n = 0;
        loop {
            let r = match self {
                WakeRx::Std(s) => s.recv(&mut buf),
                WakeRx::Reactor(s) => s.try_recv(&mut buf),
                WakeRx::Empty => return n,
            };
            match r {
                Ok(_) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return n,
            }
        }
    }

    /// `Ready(Ok(()))` when a wake-up arrived (drained), `Pending` with `cx`
    /// registered otherwise; `Ready(Err)` when the reactor cannot watch the socket.
    pub(crate) fn poll_woken(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.register()?;
        // Twice: a first readiness may be stale; draining it to WouldBlock
        // clears it, and the second poll registers `cx`.
        for _ in 0..2 {
            let WakeRx::Reactor(s) = self else {
                return Poll::Ready(Err(io::Error::other("wake socket lost")));
            };
            match s.poll_recv_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if self.drain() > 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
        // Readiness without data twice in a row: let the caller look again.
        Poll::Ready(Ok(()))
    }
}

/// Outcome of ringing a peer's doorbell.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rung {
    Sent,
    /// The peer's socket buffer is full: a wake-up is already pending.
    AlreadyPending,
    /// Nobody listens under that name any more: the peer is gone.
    Gone,
}

/// A socket connected to the peer's wake socket.
pub(crate) struct WakeTx {
    s: UnixDatagram,
}

impl WakeTx {
    pub(crate) fn connect(name: &str) -> io::Result<WakeTx> {
        let s = UnixDatagram::unbound()?;
        s.set_nonblocking(true)?;
        s.connect_addr(&abstract_addr(name)?)?;
        Ok(WakeTx { s })
    }

    pub(crate) fn ring(&self) -> Rung {
        loop {
            match self.s.send(&[1]) {
                Ok(_) => return Rung::Sent,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Rung::AlreadyPending,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Rung::AlreadyPending,
                Err(_) => return Rung::Gone,
            }
        }
    }
}

/// Watches whether the peer process still runs.
pub(crate) enum Liveness {
    Pidfd {
        fd: Option<OwnedFd>,
        watched: Option<AsyncFd<OwnedFd>>,
    },
    /// No pidfd support: re-read `/proc` on a timer while sleeping.
    Timer {
        ident: ProcIdent,
        every: Duration,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    },
}

impl Liveness {
    /// Start watching `ident`. `Err` when it is already gone.
    pub(crate) fn watch(ident: ProcIdent, every: Duration) -> Result<Liveness, String> {
        let l = match sys::pidfd_open(ident.pid) {
            // The pidfd pins this pid: if the start time still matches now,
            // the fd refers to the very process that wrote the header.
            Ok(fd) => Liveness::Pidfd {
                fd: Some(fd),
                watched: None,
            },
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(format!("process {} has exited", ident.pid));
            }
            Err(e) => {
                tracing::debug!(error = %e, "pidfd_open unavailable, watching the peer with a timer");
                Liveness::Timer {
                    ident,
                    every,
                    sleep: None,
                }
            }
        };
        if !ident.alive() {
            return Err(format!("process {} has exited", ident.pid));
        }
        Ok(l)
    }

    /// A non-blocking look (no reactor): true when the peer has exited.
    pub(crate) fn dead_now(&self) -> bool {
        match self {
            Liveness::Pidfd { fd: Some(fd), .. } => sys::readable_now(fd.as_fd()).unwrap_or(false),
            Liveness::Pidfd { watched: Some(w), .. } => sys::readable_now(w.get_ref().as_fd()).unwrap_or(false),
            Liveness::Pidfd { .. } => false,
            Liveness::Timer { ident, .. } => !ident.alive(),
        }
    }

    /// `Ready(())` once the peer has exited; otherwise `cx` is registered.
    pub(crate) fn poll_dead(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Liveness::Pidfd { fd, watched } => {
                if watched.is_none() {
                    if in_runtime().is_err() {
                        return Poll::Pending;
                    }
                    let Some(raw) = fd.take() else {
                        return Poll::Pending;
                    };
                    // SAFETY: `raw` is an OwnedFd moved into the AsyncFd: it stays
                    // open, and `as_raw_fd` returns the same descriptor, until the
                    // AsyncFd is dropped.
                    match unsafe { AsyncFd::register_with_interest(raw, Interest::READABLE) } {
                        Ok(w) => *watched = Some(w),
                        Err(e) => {
                            let (raw, cause) = e.into_parts();
                            tracing::warn!(error = %cause, "cannot watch the peer's pidfd");
                            *fd = Some(raw);
                            return Poll::Pending;
                        }
                    }
                }
                let w = watched.as_ref().expect("set above");
                match w.poll_read_ready(cx) {
                    // A pidfd stays readable once the process exited: no need to clear.
                    Poll::Ready(_) => Poll::Ready(()),
                    Poll::Pending => Poll::Pending,
                }
            }
            Liveness::Timer { ident, every, sleep } => loop {
                if in_runtime().is_err() {
                    return Poll::Pending;
                }
                let s = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(*every)));
                match s.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => {
                        *sleep = None;
                        if !ident.alive() {
                            return Poll::Ready(());
                        }
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_and_drain() {
        let name = format!("slimebench.unit-wake-{}.a.0000000000000001.wake", std::process::id());
        let mut rx = WakeRx::bind(&name).unwrap();
        let tx = WakeTx::connect(&name).unwrap();
        assert_eq!(tx.ring(), Rung::Sent);
        assert_eq!(tx.ring(), Rung::Sent);
        assert_eq!(rx.drain(), 2);
        assert_eq!(rx.drain(), 0);
        drop(rx);
        assert_eq!(tx.ring(), Rung::Gone);
        assert!(WakeTx::connect(&name).is_err(), "nobody listens");
    }

    #[test]
    fn own_process_is_alive() {
        let l = Liveness::watch(ProcIdent::current().unwrap(), Duration::from_millis(100)).unwrap();
        assert!(!l.dead_now());
        let ghost = ProcIdent {
            start: ProcIdent::current().unwrap().start + 7,
            ..ProcIdent::current().unwrap()
        };
        assert!(Liveness::watch(ghost, Duration::from_millis(100)).is_err());
    }
}
