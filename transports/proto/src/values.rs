//! Values stored in the control plane and their codec.
//!
//! Every value is a small JSON document with a format version `v`. Decoding is
//! defensive: a length cap, a version check with a clear message, unknown
//! fields refused, names validated. Whatever the store returns (garbage,
//! truncated, another version) becomes a [`ValueError`], never a panic.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::keys::{validate_alias, NameError};
use crate::transport::{MrDesc, TransportAddr};

/// Format version of the values below.
pub const VALUE_FORMAT: u32 = 1;
/// Largest value we accept from the store.
pub const MAX_VALUE_LEN: usize = 4096;

/// Why a control-plane value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Over [`MAX_VALUE_LEN`]: not ours, or hostile.
    #[error("value of {len} bytes exceeds the {MAX_VALUE_LEN}-byte limit")]
    TooLong { len: usize },
    /// Written by another slimebench version.
    #[error("value has format version {found}, this build reads version {VALUE_FORMAT}")]
    Version { found: u32 },
    /// Not JSON of the expected shape (garbage or truncated).
    #[error("malformed value: {0}")]
    Malformed(String),
    /// A name inside the value is not a valid alias.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Incarnation ids are never zero.
    #[error("incarnation id is zero")]
    ZeroIncarnation,
}

/// A value type stored under one of our keys.
pub trait ControlValue: Serialize + DeserializeOwned {
    /// Invariants beyond the JSON shape.
    ///
    /// # Errors
    /// [`ValueError`] naming the broken invariant.
    fn validate(&self) -> Result<(), ValueError>;

    /// Encode with the format version.
    fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_value(self).expect("control values serialise");
        v.as_object_mut()
            .expect("control values are JSON objects")
            .insert("v".into(), VALUE_FORMAT.into());
        serde_json::to_vec(&v).expect("serialise json")
    }

    /// Decode and validate.
    ///
    /// # Errors
    /// [`ValueError`] for anything but a well-formed value of this build's format.
    fn decode(bytes: &[u8]) -> Result<Self, ValueError> {
        if bytes.len() > MAX_VALUE_LEN {
            return Err(ValueError::TooLong { len: bytes.len() });
        }
        let mut v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ValueError::Malformed(e.to_string()))?;
        let obj = v
            .as_object_mut()
            .ok_or_else(|| ValueError::Malformed("not a JSON object".into()))?;
        let found = obj
            .remove("v")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| ValueError::Malformed("missing format version `v`".into()))?;
        if found != u64::from(VALUE_FORMAT) {
            return Err(ValueError::Version {
                found: u32::try_from(found).unwrap_or(u32::MAX),
            });
        }
        let value: Self = serde_json::from_value(v).map_err(|e| ValueError::Malformed(e.to_string()))?;
        value.validate()?;
        Ok(value)
    }
}

fn nonzero(inc: u64) -> Result<(), ValueError> {
    if inc == 0 {
        Err(ValueError::ZeroIncarnation)
    } else {
        Ok(())
    }
}

/// Mailbox geometry: both sides must agree on it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    /// Bytes per slot, header included.
    pub slot_size: u64,
    /// Slots = maximum calls in flight.
    pub slot_count: u32,
}

impl Geometry {
    /// Largest payload a slot carries.
    pub fn max_payload(&self) -> u64 {
        self.slot_size.saturating_sub(crate::header::HEADER_LEN as u64)
    }

    /// Bytes of a whole mailbox.
    pub fn mailbox_len(&self) -> u64 {
        self.slot_size * u64::from(self.slot_count)
    }
}

/// `exchange:{alias}:{peer}`: how to reach `alias`, for `peer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointInfo {
    pub wire_version: u32,
    pub alias: String,
    pub peer: String,
    pub incarnation: u64,
    pub transport: TransportAddr,
    pub geometry: Geometry,
}

impl ControlValue for EndpointInfo {
    fn validate(&self) -> Result<(), ValueError> {
        validate_alias(&self.alias)?;
        validate_alias(&self.peer)?;
        nonzero(self.incarnation)
    }
}

/// `mr:{alias}:{name}`: a registered region the peer may write into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxInfo {
    pub alias: String,
    pub incarnation: u64,
    pub mr: MrDesc,
}

impl ControlValue for MailboxInfo {
    fn validate(&self) -> Result<(), ValueError> {
        validate_alias(&self.alias)?;
        nonzero(self.incarnation)
    }
}

/// `agent:{alias}`: the live agent's lease record (a hash in Redis).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRecord {
    pub incarnation: u64,
    pub host: String,
    pub pid: u32,
    pub wire_version: u32,
}

impl ControlValue for AgentRecord {
    fn validate(&self) -> Result<(), ValueError> {
        if self.host.len() > 255 {
            return Err(ValueError::Malformed("host name over 255 bytes".into()));
        }
        nonzero(self.incarnation)
    }
}

/// Entries of `stream:{alias}` (rendezvous notifications) and `inbox:{alias}`
/// (cleanup events). Each names the sender's incarnation and, where the
/// sender knows it, the receiver's, so stale entries are recognised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Notification {
    /// "I am `from`; read my exchange info and connect to me."
    ConnectPeer { from: String, from_inc: u64 },
    /// "My side of the link to your incarnation `to_inc` is up." `again`
    /// marks a repeat sent because the peer signalled again while we were
    /// ready; a repeat is never answered (two ready sides would ping-pong).
    QpReady {
        from: String,
        from_inc: u64,
        to_inc: u64,
        #[serde(default, skip_serializing_if = "is_false")]
        again: bool,
    },
    /// "I am leaving; tear down your link to me."
    Cleanup { from: String, from_inc: u64, to_inc: u64 },
    /// "I will not connect to your incarnation `to_inc`, because …" (e.g.
    /// a geometry mismatch), so the peer fails at once instead of waiting.
    Reject {
        from: String,
        from_inc: u64,
        to_inc: u64,
        reason: String,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Notification {
    pub fn from(&self) -> &str {
        match self {
            Notification::ConnectPeer { from, .. }
            | Notification::QpReady { from, .. }
            | Notification::Cleanup { from, .. }
            | Notification::Reject { from, .. } => from,
        }
    }
}

impl ControlValue for Notification {
    fn validate(&self) -> Result<(), ValueError> {
        validate_alias(self.from())?;
        match self {
            Notification::ConnectPeer { from_inc, .. } => nonzero(*from_inc),
            Notification::QpReady { from_inc, to_inc, .. } | Notification::Cleanup { from_inc, to_inc, .. } => {
                nonzero(*from_inc).and(nonzero(*to_inc))
            }
            Notification::Reject {
                from_inc,
                to_inc,
                reason,
                ..
            } => {
                if reason.len() > 1024 {
                    return Err(ValueError::Malformed("reject reason over 1024 bytes".into()));
                }
                nonzero(*from_inc).and(nonzero(*to_inc))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> EndpointInfo {
        EndpointInfo {
            wire_version: 1,
            alias: "bench-driver".into(),
            peer: "bench-worker".into(),
            incarnation: 77,
            transport: TransportAddr::Tcp {
                addr: "127.0.0.1:4000".into(),
                endpoint_id: 3,
            },
            geometry: Geometry {
                slot_size: 1 << 20,
                slot_count: 1,
            },
        }
    }

    #[test]
    fn round_trips() {
        let e = endpoint();
        assert_eq!(EndpointInfo::decode(&e.encode()).unwrap(), e);
        let n = Notification::QpReady {
            from: "a".into(),
            from_inc: 1,
            to_inc: 2,
            again: false,
        };
        assert_eq!(Notification::decode(&n.encode()).unwrap(), n);
        let m = MailboxInfo {
            alias: "a".into(),
            incarnation: 9,
            mr: MrDesc {
                addr: 4096,
                len: 8192,
                rkey: 5,
            },
        };
        assert_eq!(MailboxInfo::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn refuses_bad_values() {
        assert!(matches!(
            EndpointInfo::decode(b"\xff\x00garbage"),
            Err(ValueError::Malformed(_))
        ));
        let full = endpoint().encode();
        assert!(matches!(
            EndpointInfo::decode(&full[..full.len() / 2]),
            Err(ValueError::Malformed(_))
        ));
        assert_eq!(
            EndpointInfo::decode(&vec![b' '; MAX_VALUE_LEN + 1]),
            Err(ValueError::TooLong { len: MAX_VALUE_LEN + 1 })
        );
        let other_version = String::from_utf8(full.clone()).unwrap().replace("\"v\":1", "\"v\":7");
        assert_eq!(
            EndpointInfo::decode(other_version.as_bytes()),
            Err(ValueError::Version { found: 7 })
        );
        let mut zero = endpoint();
        zero.incarnation = 0;
        assert_eq!(EndpointInfo::decode(&zero.encode()), Err(ValueError::ZeroIncarnation));
        let mut bad_name = endpoint();
        bad_name.alias = "a b*".into();
        assert!(matches!(
            EndpointInfo::decode(&bad_name.encode()),
            Err(ValueError::Name(_))
        ));
        let extra = String::from_utf8(full).unwrap().replacen('{', "{\"evil\":1,", 1);
        assert!(matches!(
            EndpointInfo::decode(extra.as_bytes()),
            Err(ValueError::Malformed(_))
        ));
    }
}
