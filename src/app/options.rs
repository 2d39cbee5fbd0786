//! What every node (driver or worker, in or out of process) is configured
//! with: `--transport` and the node flags, their bounds, and what follows
//! from them (geometry, rendezvous timing, the agent setup, the address to
//! publish).

use std::net::IpAddr;
use std::time::Duration;

use slimebench_proto::rendezvous::Timing;
use slimebench_proto::{Geometry, Keys};

use super::process::fresh_id;
use super::{AppError, UsageError};
use crate::actors::AgentSetup;
use crate::bench::plan::MIB;
use crate::control::CtrlUrl;
use crate::rpc::SpinPolicy;

/// `--transport`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportChoice {
    /// RDMA when a device is usable, else shared memory when both agents
    /// share this host (the sweep), else TCP.
    Auto,
    Tcp,
    Shm,
    Rdma,
}

/// What every node (driver or worker, in or out of process) is configured with.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub transport: TransportChoice,
    pub ctrl: CtrlUrl,
    /// Run scope; `None` = a fresh one (only where one process runs both sides).
    pub scope: Option<String>,
    /// Slot size in MiB.
    pub buf_mb: u64,
    /// Slots per mailbox.
    pub max_inflight: u32,
    /// Busy-poll budget per wait.
    pub spin: Duration,
    /// Address TCP listeners bind to.
    pub bind: IpAddr,
    /// Host or IP published for the peer to dial (default: found from the bind
    /// address, or from the route to the control plane when binding 0.0.0.0).
    pub advertise: Option<String>,
    /// Lease TTL: a peer that stops refreshing is gone after this.
    pub lease: Duration,
    /// Lease refresh period.
    pub heartbeat: Duration,
    /// Bound on each call's wait for its reply.
    pub call_timeout: Duration,
    /// RDMA device, port and GID index (unset = automatic).
    pub rdma: slimebench_verbs::Selection,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            transport: TransportChoice::Auto,
            ctrl: CtrlUrl::Memory,
            scope: None,
            buf_mb: 256,
            max_inflight: 1,
            spin: Duration::from_micros(100),
            bind: IpAddr::from([127, 0, 0, 1]),
            advertise: None,
            lease: Duration::from_secs(3),
            heartbeat: Duration::from_millis(750),
            call_timeout: Duration::from_secs(60),
            rdma: slimebench_verbs::Selection::default(),
        }
    }
}

impl NodeOptions {
    /// # Errors
    /// [`AppError::Usage`] for values that cannot work.
    pub fn validate(&self) -> Result<(), AppError> {
        let usage = |flag, rule| Err(UsageError::OutOfRange { flag, rule }.into());
        if self.buf_mb == 0 || self.buf_mb > 4096 {
            return usage("--buf-mb", "between 1 and 4096");
        }
        if self.max_inflight == 0 || self.max_inflight > 1024 {
            return usage("--max-inflight", "between 1 and 1024");
        }
        if self.buf_mb * u64::from(self.max_inflight) > 8192 {
            return usage("--buf-mb x --max-inflight", "at most 8 GiB of mailbox per side");
        }
        if self.lease < Duration::from_millis(300) || self.lease > Duration::from_secs(600) {
            return usage("--lease-ms", "between 300 and 600000");
        }
        if self.heartbeat.is_zero() || self.heartbeat * 2 > self.lease {
            return usage("--heartbeat-ms", "positive and at most half of --lease-ms");
        }
        if self.call_timeout.is_zero() {
            return usage("--call-timeout-s", "at least 1");
        }
        Ok(())
    }

    pub fn geometry(&self) -> Geometry {
        Geometry {
            slot_size: self.buf_mb * MIB as u64,
            slot_count: self.max_inflight,
        }
    }

    /// Rendezvous timers derived from the lease.
    pub fn timing(&self) -> Timing {
        Timing {
            lease: self.lease,
            heartbeat: self.heartbeat,
            peer_check: self.heartbeat.min(Duration::from_millis(500)),
            ..Timing::default()
        }
    }

    pub fn keys(&self, scope: &str) -> Result<Keys, AppError> {
        Keys::new(scope).map_err(|source| {
            UsageError::BadName {
                flag: "--scope",
                source,
            }
            .into()
        })
    }

    pub fn setup<S>(&self, store: S, keys: &Keys, alias: &str) -> AgentSetup<S> {
        AgentSetup {
            store,
            keys: keys.clone(),
            alias: alias.to_string(),
            incarnation: fresh_id(),
            timing: self.timing(),
            geometry: self.geometry(),
            spin: SpinPolicy::new(self.spin),
            poll_period: Duration::from_millis(100),
            max_steps: None,
            call_timeout: Some(self.call_timeout),
        }
    }

    /// The host to publish: `--advertise`, else the bind address, else (bind
    /// 0.0.0.0) the local address of the route to the control plane.
    pub fn advertise_host(&self) -> Option<String> {
        if let Some(a) = &self.advertise {
            return Some(a.clone());
        }
        if !self.bind.is_unspecified() {
            return None;
        }
        let target = match &self.ctrl {
            CtrlUrl::Redis(url) => redis_host_port(url)?,
            CtrlUrl::Memory => return Some("127.0.0.1".into()),
        };
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        sock.connect(target).ok()?;
        Some(sock.local_addr().ok()?.ip().to_string())
    }
}

/// `host:port` of a redis URL.
fn redis_host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = rest.split('/').next()?;
    if hostport.is_empty() {
        return None;
    }
    Some(if hostport.contains(':') && !hostport.ends_with(']') {
        hostport.to_string()
    } else {
        format!("{hostport}:6379")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_url_host_port() {
        assert_eq!(redis_host_port("redis://h:7000/0").as_deref(), Some("h:7000"));
        assert_eq!(
            redis_host_port("redis://u:p@10.0.0.2").as_deref(),
            Some("10.0.0.2:6379")
        );
        assert_eq!(redis_host_port("redis://"), None);
    }

    #[test]
    fn node_options_bounds() {
        assert!(NodeOptions::default().validate().is_ok());
        let bad = NodeOptions {
            heartbeat: Duration::from_secs(2),
            ..NodeOptions::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(AppError::Usage(UsageError::OutOfRange {
                flag: "--heartbeat-ms",
                ..
            }))
        ));
    }
}
