//! `Header::decode` and `Header::decode_message` on arbitrary bytes, written
//! length and slot size.
//!
//! Asserts: no panic; when `decode` is Ok, the input was at least 16 bytes,
//! re-encoding gives back exactly its first 16 bytes, bytes after the header
//! do not matter, flags are consistent (an exception is a reply) and
//! `payload_len == total_len - 16`; a `Short` error reports the real length.
//! When `decode_message` is Ok, it agrees with `decode`, `total_len == written`,
//! `16 <= total_len <= slot_size`; when it refuses a header `decode` accepts,
//! the variant names the length that disagrees.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use slimebench_proto::{Header, HeaderError, HEADER_LEN};

#[derive(Arbitrary, Debug)]
struct Input {
    written: u32,
    slot_size: u64,
    bytes: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let buf = &input.bytes[..];
    let decoded = Header::decode(buf);
    match &decoded {
        Ok(h) => {
            assert!(buf.len() >= HEADER_LEN);
            let mut out = [0u8; HEADER_LEN];
            h.encode(&mut out);
            assert_eq!(&out[..], &buf[..HEADER_LEN], "re-encoding changes the header");
            assert_eq!(
                Header::decode(&out).as_ref(),
                Ok(h),
                "header bytes alone decode the same"
            );
            assert!(h.total_len as usize >= HEADER_LEN);
            assert_eq!(h.payload_len(), h.total_len as usize - HEADER_LEN);
            assert!(!h.exception || h.reply, "exception on a request");
        }
        Err(HeaderError::Short { len }) => assert!(*len == buf.len() && *len < HEADER_LEN),
        Err(_) => assert!(buf.len() >= HEADER_LEN),
    }
    match Header::decode_message(buf, input.written, input.slot_size) {
        Ok(h) => {
            assert_eq!(decoded, Ok(h), "decode_message accepts what decode refuses");
            assert_eq!(h.total_len, input.written);
            assert!(input.written as usize >= HEADER_LEN);
            assert!(u64::from(h.total_len) <= input.slot_size);
        }
        Err(e) => match (&decoded, e) {
            (_, HeaderError::Short { len }) if (input.written as usize) < HEADER_LEN => {
                assert_eq!(len, input.written as usize)
            }
            (Ok(h), HeaderError::OverSlot { total_len, slot_size }) => {
                assert_eq!((total_len, slot_size), (h.total_len, input.slot_size));
                assert!(u64::from(total_len) > slot_size);
            }
            (Ok(h), HeaderError::LengthMismatch { total_len, written }) => {
                assert_eq!((total_len, written), (h.total_len, input.written));
                assert_ne!(total_len, written);
            }
            (Ok(h), e) => panic!("decode accepted {h:?} but decode_message says {e:?}"),
            (Err(d), e) => assert_eq!(*d, e, "decode_message reports another error than decode"),
        },
    }
});
