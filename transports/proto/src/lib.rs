//! slimebench protocol core. No runtime, no sockets, no clock: time and
//! replies come in as arguments, decisions come out as values.
//!
//! Module map:
//! - [`transport`]: the verbs-shaped [`Transport`] trait every backend implements,
//!   its types (regions, completions, statuses) and typed errors;
//! - [`buf`]: page-aligned registered memory with guard zones;
//! - [`header`]: the 16-byte mailbox header codec and the wire version;
//! - [`frame`]: stream frames (TCP) and validation of remote writes against registered regions;
//! - [`mailbox`]: slots as credits and request-id matching for callers;
//! - [`keys`]: the control-plane key schema under a run scope;
//! - [`values`]: control-plane values (endpoint, mailbox, lease, notifications) and their codec;
//! - [`store`]: the control-store operations and [`store::StoreModel`], their reference semantics;
//! - [`rendezvous`]: the sans-IO rendezvous state machine.

pub mod buf;
pub mod frame;
pub mod header;
pub mod keys;
pub mod mailbox;
pub mod rendezvous;
pub mod store;
pub mod transport;
pub mod values;

pub use buf::AlignedBuf;
pub use header::{Header, HeaderError, HEADER_LEN, WIRE_VERSION};
pub use keys::Keys;
pub use mailbox::{CallId, CallTable, ReplyError};
pub use rendezvous::{Event, Rendezvous, Role, Timing};
pub use store::{ControlStore, LogKind, StoreFailure, StoreModel, StoreOp, StoreReply};
pub use transport::{
    Completion, CompletionKind, ConnectError, LinkFailure, LocalSlice, MrDesc, MrKey, PostError, RegisterError,
    RemoteAddr, Transport, TransportAddr, TransportError, TransportKind, WcStatus,
};
pub use values::{ControlValue, EndpointInfo, Geometry, MailboxInfo, Notification};

#[cfg(test)]
mod proptests;
