//! The control-store vocabulary: the operations the rendezvous machine asks
//! for, their replies, and [`StoreModel`], the reference semantics.
//!
//! Operations are semantic (claim a lease, put only while owning it, append a
//! notification only to a live agent) rather than raw GET/SET, so that each
//! backend can make them atomic its own way (Redis runs them as scripts) and
//! every backend can be checked against the model.
//!
//! [`StoreModel`] is a plain in-memory map with explicit time. The embedded
//! `memory` control store and the simulator wrap it; property tests and the
//! fuzzer drive it directly.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::keys::pattern_matches;
use crate::values::{AgentRecord, ControlValue};

/// A control-plane backend: the embedded memory store, Redis, the simulator.
///
/// Single-threaded async (no `Send` bound): an agent and its store handle live
/// on one actor thread. Runtime-agnostic: implementations bring their own IO.
#[allow(async_fn_in_trait)]
pub trait ControlStore {
    /// Execute one operation with the semantics of [`StoreModel`].
    ///
    /// # Errors
    /// [`StoreFailure`] when the store cannot be reached or answers nonsense.
    async fn exec(&self, op: &StoreOp) -> Result<StoreReply, StoreFailure>;

    /// Entries of the log `stream_key` after `*cursor` (advancing it) and
    /// entries popped from `inbox_key`, at most `max` in all. Waits up to
    /// `wait` for something to arrive; an empty result means nothing did.
    ///
    /// # Errors
    /// [`StoreFailure`] when the store cannot be reached.
    async fn read_notifications(
        &self,
        stream_key: &str,
        inbox_key: &str,
        cursor: &mut u64,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Vec<u8>>, StoreFailure>;

    /// For logs and reports (never includes credentials).
    fn describe(&self) -> String;
}

/// One request to the control store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Create the lease record `key` unless a live record of another
    /// incarnation holds it.
    Claim {
        key: String,
        record: AgentRecord,
        ttl: Duration,
    },
    /// Extend the lease if `key` still holds `incarnation`.
    Refresh {
        key: String,
        incarnation: u64,
        ttl: Duration,
    },
    /// Delete every key matching one of `patterns` (trailing-`*` globs).
    DeleteMatching { patterns: Vec<String> },
    /// Set `entries` only while `agent_key` holds `incarnation`.
    PutOwned {
        agent_key: String,
        incarnation: u64,
        entries: Vec<(String, Vec<u8>)>,
    },
    /// Read the lease record `agent_key` and the plain values `keys`.
    Fetch { agent_key: String, keys: Vec<String> },
    /// Append `value` to the log `key`, keeping at most `max_len` entries and
    /// (re)setting the key's TTL; when `if_alive` names a lease key, only if
    /// that lease exists.
    Append {
        key: String,
        log: LogKind,
        value: Vec<u8>,
        if_alive: Option<String>,
        max_len: usize,
        ttl: Duration,
    },
    /// Delete `keys` and the lease record, but only if the lease holds
    /// `incarnation` or has expired: never someone else's keys.
    Release {
        agent_key: String,
        incarnation: u64,
        keys: Vec<String>,
    },
}

impl StoreOp {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            StoreOp::Claim { .. } => "claim",
            StoreOp::Refresh { .. } => "refresh",
            StoreOp::DeleteMatching { .. } => "delete_matching",
            StoreOp::PutOwned { .. } => "put_owned",
            StoreOp::Fetch { .. } => "fetch",
            StoreOp::Append { .. } => "append",
            StoreOp::Release { .. } => "release",
        }
    }
}

/// How a log is consumed (Redis stores the two kinds as different types).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// Read by cursor and kept: `stream:{alias}` (a Redis stream).
    Stream,
    /// Popped by its reader: `inbox:{alias}` (a Redis list).
    Queue,
}

/// What a lease key held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentLookup {
    Absent,
    Present(AgentRecord),
    /// Something is there but it is not a lease record of ours.
    Corrupt(String),
}

/// Reply to a [`StoreOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreReply {
    Claimed,
    /// The alias is held by a live agent; `ttl_left` is its lease time left.
    Conflict {
        holder: AgentLookup,
        ttl_left: Option<Duration>,
    },
    Refreshed,
    /// The lease is absent or held by another incarnation.
    NotOwner {
        holder: AgentLookup,
    },
    Deleted {
        count: usize,
    },
    Put,
    Fetched {
        agent: AgentLookup,
        values: Vec<Option<Vec<u8>>>,
    },
    Appended,
    /// `if_alive` named a lease that does not exist; nothing was appended.
    Skipped,
    Released {
        deleted: usize,
    },
}

/// A store request that did not get a reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreFailure {
    /// The store could not be reached or refused the command; retry later.
    #[error("control store unavailable: {0}")]
    Unavailable(String),
    /// No reply within the operation timeout.
    #[error("control store did not answer in time")]
    Timeout,
    /// The store answered with something that is not a reply to this op.
    #[error("unexpected reply from the control store: {0}")]
    Unexpected(String),
}

#[derive(Clone, Debug)]
enum Value {
    Bytes(Vec<u8>),
    Agent(AgentRecord),
    /// Entries with their ids, oldest first.
    Log(VecDeque<(u64, Vec<u8>)>),
}

#[derive(Clone, Debug)]
struct Entry {
    value: Value,
    expires_at: Option<Duration>,
}

/// The reference semantics of the control store (see module docs).
///
/// Time is explicit: every call takes `now`, a duration since an arbitrary
/// origin that the caller keeps monotonic.
#[derive(Clone, Debug, Default)]
pub struct StoreModel {
    entries: BTreeMap<String, Entry>,
    next_log_id: u64,
}

impl StoreModel {
    pub fn new() -> Self {
        Self::default()
    }

    fn purge(&mut self, now: Duration) {
        self.entries.retain(|_, e| e.expires_at.is_none_or(|t| now < t));
    }

    fn agent(&self, key: &str) -> AgentLookup {
        match self.entries.get(key).map(|e| &e.value) {
            None => AgentLookup::Absent,
            Some(Value::Agent(r)) => AgentLookup::Present(r.clone()),
            Some(Value::Bytes(b)) => match AgentRecord::decode(b) {
                Ok(r) => AgentLookup::Present(r),
                Err(e) => AgentLookup::Corrupt(e.to_string()),
            },
            Some(Value::Log(_)) => AgentLookup::Corrupt("key holds a log, not a lease".into()),
        }
    }

    fn owned_by(&self, key: &str, incarnation: u64) -> bool {
        matches!(self.agent(key), AgentLookup::Present(r) if r.incarnation == incarnation)
    }

    /// Apply one operation at time `now`.
    pub fn apply(&mut self, now: Duration, op: &StoreOp) -> StoreReply {
        self.purge(now);
        match op {
            StoreOp::Claim { key, record, ttl } => match self.agent(key) {
                AgentLookup::Present(r) if r.incarnation != record.incarnation => StoreReply::Conflict {
                    holder: AgentLookup::Present(r),
                    ttl_left: self.ttl_left(now, key),
                },
                AgentLookup::Corrupt(_) => StoreReply::Conflict {
                    holder: self.agent(key),
                    ttl_left: self.ttl_left(now, key),
                },
                _ => {
                    self.entries.insert(
                        key.clone(),
                        Entry {
                            value: Value::Agent(record.clone()),
                            expires_at: Some(now + *ttl),
                        },
                    );
                    StoreReply::Claimed
                }
            },
            StoreOp::Refresh { key, incarnation, ttl } => {
                if self.owned_by(key, *incarnation) {
                    self.entries.get_mut(key).expect("owned").expires_at = Some(now + *ttl);
                    StoreReply::Refreshed
                } else {
                    StoreReply::NotOwner {
                        holder: self.agent(key),
                    }
                }
            }
            StoreOp::DeleteMatching { patterns } => {
                let before = self.entries.len();
                self.entries
                    .retain(|k, _| !patterns.iter().any(|p| pattern_matches(p, k)));
                StoreReply::Deleted {
                    count: before - self.entries.len(),
                }
            }
            StoreOp::PutOwned {
                agent_key,
                incarnation,
                entries,
            } => {
                if !self.owned_by(agent_key, *incarnation) {
                    return StoreReply::NotOwner {
                        holder: self.agent(agent_key),
                    };
                }
                for (k, v) in entries {
                    self.entries.insert(
                        k.clone(),
                        Entry {
                            value: Value::Bytes(v.clone()),
                            expires_at: None,
                        },
                    );
                }
                StoreReply::Put
            }
            StoreOp::Fetch { agent_key, keys } => StoreReply::Fetched {
                agent: self.agent(agent_key),
                values: keys
                    .iter()
                    .map(|k| match self.entries.get(k).map(|e| &e.value) {
                        Some(Value::Bytes(b)) => Some(b.clone()),
                        Some(Value::Agent(r)) => Some(r.encode()),
                        // A log where a value belongs: report it as garbage.
                        Some(Value::Log(_)) => Some(b"<log>".to_vec()),
                        None => None,
                    })
                    .collect(),
            },
            StoreOp::Append {
                key,
                value,
                if_alive,
                max_len,
                ttl,
                log: _,
            } => {
                if let Some(alive) = if_alive {
                    if matches!(self.agent(alive), AgentLookup::Absent) {
                        return StoreReply::Skipped;
                    }
                }
                self.next_log_id += 1;
                let id = self.next_log_id;
                let entry = self.entries.entry(key.clone()).or_insert(Entry {
                    value: Value::Log(VecDeque::new()),
                    expires_at: None,
                });
                if !matches!(entry.value, Value::Log(_)) {
                    // Garbage under a log key: replace it, a log is what belongs here.
                    entry.value = Value::Log(VecDeque::new());
                }
                if let Value::Log(log) = &mut entry.value {
                    log.push_back((id, value.clone()));
                    while log.len() > (*max_len).max(1) {
                        log.pop_front();
                    }
                }
                entry.expires_at = Some(now + *ttl);
                StoreReply::Appended
            }
            StoreOp::Release {
                agent_key,
                incarnation,
                keys,
            } => match self.agent(agent_key) {
                AgentLookup::Present(r) if r.incarnation != *incarnation => StoreReply::Released { deleted: 0 },
                AgentLookup::Corrupt(_) => StoreReply::Released { deleted: 0 },
                holder => {
                    let mut deleted = 0;
                    if matches!(holder, AgentLookup::Present(_)) {
                        self.entries.remove(agent_key);
                        deleted += 1;
                    }
                    for k in keys {
                        deleted += usize::from(self.entries.remove(k).is_some());
                    }
                    StoreReply::Released { deleted }
                }
            },
        }
    }

    fn ttl_left(&self, now: Duration, key: &str) -> Option<Duration> {
        self.entries
            .get(key)
            .and_then(|e| e.expires_at)
            .map(|t| t.saturating_sub(now))
    }

    /// Entries of log `key` with id greater than `after`, at most `max`.
    pub fn read_log(&mut self, now: Duration, key: &str, after: u64, max: usize) -> Vec<(u64, Vec<u8>)> {
        self.purge(now);
        match self.entries.get(key).map(|e| &e.value) {
            Some(Value::Log(log)) => log.iter().filter(|(id, _)| *id > after).take(max).cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Remove and return up to `max` of the oldest entries of log `key`.
    pub fn pop_log(&mut self, now: Duration, key: &str, max: usize) -> Vec<Vec<u8>> {
        self.purge(now);
        let mut out = Vec::new();
        if let Some(Entry {
            value: Value::Log(log), ..
        }) = self.entries.get_mut(key)
        {
            while out.len() < max {
                match log.pop_front() {
                    Some((_, v)) => out.push(v),
                    None => break,
                }
            }
            if log.is_empty() {
                self.entries.remove(key);
            }
        }
        out
    }

    /// The lease record under `key` at time `now`.
    pub fn lease(&mut self, now: Duration, key: &str) -> AgentLookup {
        self.purge(now);
        self.agent(key)
    }

    /// Live keys matching `pattern` (for tests and `SCAN`-like checks).
    pub fn keys_matching(&mut self, now: Duration, pattern: &str) -> Vec<String> {
        self.purge(now);
        self.entries
            .keys()
            .filter(|k| pattern_matches(pattern, k))
            .cloned()
            .collect()
    }

    /// Store raw bytes under `key` (tests and fault injection: stale or garbage values).
    pub fn put_raw(&mut self, key: &str, value: Vec<u8>, ttl: Option<Duration>, now: Duration) {
        self.entries.insert(
            key.to_string(),
            Entry {
                value: Value::Bytes(value),
                expires_at: ttl.map(|t| now + t),
            },
        );
    }

    /// Raw bytes under `key`, if it holds a plain value.
    pub fn get_raw(&mut self, now: Duration, key: &str) -> Option<Vec<u8>> {
        self.purge(now);
        match self.entries.get(key).map(|e| &e.value) {
            Some(Value::Bytes(b)) => Some(b.clone()),
            _ => None,
        }
    }

    /// Delete `key` (fault injection: a lease vanishing).
    pub fn remove(&mut self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(inc: u64) -> AgentRecord {
        AgentRecord {
            incarnation: inc,
            host: "h".into(),
            pid: 1,
            wire_version: 1,
        }
    }
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn lease_claim_conflict_and_expiry() {
        let mut m = StoreModel::new();
        let claim = |inc| StoreOp::Claim {
            key: "agent:a".into(),
            record: rec(inc),
            ttl: 5 * S,
        };
        assert_eq!(m.apply(Duration::ZERO, &claim(1)), StoreReply::Claimed);
        assert!(matches!(m.apply(S, &claim(2)), StoreReply::Conflict { ttl_left: Some(t), .. } if t == 4 * S));
        // Same incarnation re-claims (idempotent retry after a lost reply).
        assert_eq!(m.apply(S, &claim(1)), StoreReply::Claimed);
        // After expiry another incarnation may claim.
        assert_eq!(m.apply(7 * S, &claim(2)), StoreReply::Claimed);
        let refresh = StoreOp::Refresh {
            key: "agent:a".into(),
            incarnation: 1,
            ttl: 5 * S,
        };
        assert!(matches!(m.apply(7 * S, &refresh), StoreReply::NotOwner { .. }));
    }

    #[test]
    fn put_owned_and_release_respect_ownership() {
        let mut m = StoreModel::new();
        m.apply(
            Duration::ZERO,
            &StoreOp::Claim {
                key: "agent:a".into(),
                record: rec(1),
                ttl: 5 * S,
            },
        );
        let put = |inc| StoreOp::PutOwned {
            agent_key: "agent:a".into(),
            incarnation: inc,
            entries: vec![("exchange:a:b".into(), b"x".to_vec())],
        };
        assert!(matches!(m.apply(S, &put(2)), StoreReply::NotOwner { .. }));
        assert_eq!(m.apply(S, &put(1)), StoreReply::Put);
        let release = |inc| StoreOp::Release {
            agent_key: "agent:a".into(),
            incarnation: inc,
            keys: vec!["exchange:a:b".into()],
        };
        assert_eq!(m.apply(S, &release(2)), StoreReply::Released { deleted: 0 });
        assert_eq!(m.apply(S, &release(1)), StoreReply::Released { deleted: 2 });
        assert!(m.keys_matching(S, "*").is_empty());
    }

    #[test]
    fn append_if_alive_bounded_and_expiring() {
        let mut m = StoreModel::new();
        let app = |v: &[u8], alive: Option<&str>| StoreOp::Append {
            key: "inbox:b".into(),
            log: LogKind::Queue,
            value: v.to_vec(),
            if_alive: alive.map(str::to_string),
            max_len: 2,
            ttl: 10 * S,
        };
        assert_eq!(
            m.apply(Duration::ZERO, &app(b"1", Some("agent:b"))),
            StoreReply::Skipped
        );
        for v in [b"1", b"2", b"3"] {
            assert_eq!(m.apply(Duration::ZERO, &app(v, None)), StoreReply::Appended);
        }
        let got = m.read_log(Duration::ZERO, "inbox:b", 0, 10);
        assert_eq!(
            got.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
            vec![b"2".to_vec(), b"3".to_vec()]
        );
        let after = got[0].0;
        assert_eq!(m.read_log(Duration::ZERO, "inbox:b", after, 10).len(), 1);
        assert_eq!(m.pop_log(Duration::ZERO, "inbox:b", 1), vec![b"2".to_vec()]);
        assert!(m.read_log(11 * S, "inbox:b", 0, 10).is_empty());
    }

    #[test]
    fn delete_matching_and_fetch() {
        let mut m = StoreModel::new();
        m.put_raw("s:exchange:a:b", b"x".to_vec(), None, Duration::ZERO);
        m.put_raw("s:exchange:ab:c", b"y".to_vec(), None, Duration::ZERO);
        m.put_raw("s:mr:a:mailbox", b"z".to_vec(), None, Duration::ZERO);
        let r = m.apply(
            Duration::ZERO,
            &StoreOp::DeleteMatching {
                patterns: vec!["s:exchange:a:*".into(), "s:mr:a:*".into()],
            },
        );
        assert_eq!(r, StoreReply::Deleted { count: 2 });
        let f = m.apply(
            Duration::ZERO,
            &StoreOp::Fetch {
                agent_key: "s:agent:a".into(),
                keys: vec!["s:exchange:ab:c".into(), "nope".into()],
            },
        );
        assert_eq!(
            f,
            StoreReply::Fetched {
                agent: AgentLookup::Absent,
                values: vec![Some(b"y".to_vec()), None]
            }
        );
        m.put_raw("s:agent:x", b"garbage".to_vec(), None, Duration::ZERO);
        assert!(matches!(
            m.apply(
                Duration::ZERO,
                &StoreOp::Claim {
                    key: "s:agent:x".into(),
                    record: rec(1),
                    ttl: S
                }
            ),
            StoreReply::Conflict {
                holder: AgentLookup::Corrupt(_),
                ..
            }
        ));
    }
}
