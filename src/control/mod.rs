//! The control plane: where agents meet.
//!
//! - [`ControlStore`] (defined in `slimebench_proto`): the store seam, with the
//!   backends [`memory`] (embedded default: one process, no setup) and
//!   [`redis`] (`--ctrl redis://…`: separate processes and hosts, the same
//!   semantics as `slimebench_proto::store::StoreModel`, one Lua script per
//!   operation);
//! - [`agent`]: [`Agent`], the loop that drives the sans-IO rendezvous
//!   machine of `slimebench_proto::rendezvous` against a store and a transport;
//! - [`CtrlUrl`]: parsing `--ctrl`.

pub mod agent;
pub mod memory;
pub mod redis;

pub use agent::{Agent, ControlError};
pub use memory::MemoryStore;
pub use redis::{RedisConnectError, RedisOptions, RedisStore};

use std::time::Duration;

use slimebench_proto::{StoreFailure, StoreOp, StoreReply};

pub use slimebench_proto::store::ControlStore;

/// The control store a node runs on, chosen at run time.
#[derive(Clone, Debug)]
pub enum CtrlStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl CtrlStore {
    /// Open the store `url` names (Redis: bounded connect retries).
    ///
    /// # Errors
    /// [`RedisConnectError`] naming the (redacted) URL.
    pub async fn open(url: &CtrlUrl, opts: RedisOptions) -> Result<CtrlStore, RedisConnectError> {
        match url {
            CtrlUrl::Memory => Ok(CtrlStore::Memory(MemoryStore::new())),
            CtrlUrl::Redis(u) => Ok(CtrlStore::Redis(RedisStore::connect(u, opts).await?)),
        }
    }
}

impl CtrlStore {
    /// Keys matching `pattern` (a trailing-`*` glob).
    ///
    /// # Errors
    /// [`StoreFailure`] when the store cannot be reached.
    pub async fn keys(&self, pattern: &str) -> Result<Vec<String>, StoreFailure> {
        match self {
            CtrlStore::Memory(s) => Ok(s.keys(pattern)),
            CtrlStore::Redis(s) => s.keys(pattern).await,
        }
    }
}

impl ControlStore for CtrlStore {
    async fn exec(&self, op: &StoreOp) -> Result<StoreReply, StoreFailure> {
        match self {
            CtrlStore::Memory(s) => s.exec(op).await,
            CtrlStore::Redis(s) => s.exec(op).await,
        }
    }

    async fn read_notifications(
        &self,
        stream_key: &str,
        inbox_key: &str,
        cursor: &mut u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Vec<u8>>, StoreFailure> {
        match self {
            CtrlStore::Memory(s) => s.read_notifications(stream_key, inbox_key, cursor, max, wait).await,
            CtrlStore::Redis(s) => s.read_notifications(stream_key, inbox_key, cursor, max, wait).await,
        }
    }

    fn describe(&self) -> String {
        match self {
            CtrlStore::Memory(s) => s.describe(),
            CtrlStore::Redis(s) => s.describe(),
        }
    }
}

/// A parsed `--ctrl` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtrlUrl {
    /// The embedded in-process store.
    Memory,
    /// A Redis URL (`redis://[user:password@]host[:port][/db]` or `rediss://`).
    Redis(String),
}

/// A `--ctrl` value we cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported control plane {given:?}: use \"memory\" or a redis:// URL")]
pub struct CtrlUrlError {
    pub given: String,
}

impl std::str::FromStr for CtrlUrl {
    type Err = CtrlUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("memory") {
            Ok(CtrlUrl::Memory)
        } else if (t.starts_with("redis://") || t.starts_with("rediss://")) && t.len() > "redis://".len() {
            Ok(CtrlUrl::Redis(t.to_string()))
        } else {
            Err(CtrlUrlError { given: s.to_string() })
        }
    }
}

impl std::fmt::Display for CtrlUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtrlUrl::Memory => f.write_str("memory"),
            CtrlUrl::Redis(url) => f.write_str(&redact(url)),
        }
    }
}

/// `url` with any password replaced, for logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((cred, host)) => {
            let user = cred.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ctrl() {
        assert_eq!("memory".parse(), Ok(CtrlUrl::Memory));
        assert_eq!("redis://h:1".parse(), Ok(CtrlUrl::Redis("redis://h:1".into())));
        assert!("nonsense://x".parse::<CtrlUrl>().is_err());
        assert!("redis://".parse::<CtrlUrl>().is_err());
        assert!("".parse::<CtrlUrl>().is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://u:secret@h:6379/0"), "redis://u:***@h:6379/0");
        assert_eq!(redact("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }
}
