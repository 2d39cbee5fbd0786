//! `EndpointInfo`, `MailboxInfo`, `AgentRecord` and `Notification` decoding of
//! arbitrary bytes (the same input is tried as each type).
//!
//! Asserts: no panic; when a decode is Ok, the value re-encodes to bytes that
//! decode to an equal value, and encoding that value again gives the same
//! bytes (the encoding is canonical).

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use slimebench_proto::values::{AgentRecord, ControlValue, EndpointInfo, MailboxInfo, Notification};

fn round_trip<T: ControlValue + PartialEq + Debug>(data: &[u8]) {
    if let Ok(v) = T::decode(data) {
        let bytes = v.encode();
        let back = match T::decode(&bytes) {
            Ok(b) => b,
            Err(e) => panic!(
                "{v:?} encodes to {:?}, which does not decode: {e}",
                String::from_utf8_lossy(&bytes)
            ),
        };
        assert_eq!(back, v, "round trip changed the value");
        assert_eq!(back.encode(), bytes, "encoding is not canonical");
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<EndpointInfo>(data);
    round_trip::<MailboxInfo>(data);
    round_trip::<AgentRecord>(data);
    round_trip::<Notification>(data);
});
