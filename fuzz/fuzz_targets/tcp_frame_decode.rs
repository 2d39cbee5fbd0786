//! `frame::decode` on 24 arbitrary bytes, then `frame::validate_write` of the
//! decoded write (or of an arbitrary one) against an arbitrary region table.
//!
//! Asserts: no panic; a decoded frame re-encodes to the same 24 bytes; when
//! `validate_write` is Ok, the target region is the first one with the
//! write's rkey, `addr == base + offset` and `[offset, offset + len)` lies
//! inside the region, and `len <= max_len`; each refusal is the right one
//! (`TooLong` only over the limit, `UnknownRkey` only when no region has the
//! rkey, `OutOfRange` only when the range does not fit).

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use slimebench_proto::frame::{
    decode, encode_hello, encode_write, validate_write, Frame, FrameError, RegionBounds, WriteHeader, FRAME_HEADER_LEN,
};

#[derive(Arbitrary, Debug)]
struct Input {
    frame: [u8; FRAME_HEADER_LEN],
    /// (rkey, base, len); small rkeys so that writes often name a region.
    regions: Vec<(u8, u64, u64)>,
    max_len: u32,
    /// Used when the frame is not a write: (rkey, offset from a region base or raw addr, len).
    other: (u8, u64, u32, bool),
}

fn check(w: &WriteHeader, regions: &[RegionBounds], max_len: usize) {
    let first = regions.iter().position(|r| r.rkey == w.rkey);
    match validate_write(w, regions, max_len) {
        Ok(t) => {
            assert_eq!(Some(t.region), first, "not the first region with this rkey");
            let r = regions[t.region];
            assert!(w.len as usize <= max_len);
            let offset = t.offset as u64;
            assert_eq!(
                r.base.checked_add(offset),
                Some(w.addr),
                "offset does not point at addr"
            );
            let end = offset.checked_add(u64::from(w.len)).expect("end fits");
            assert!(
                end <= r.len,
                "write [{offset}, {end}) outside a region of {} bytes",
                r.len
            );
        }
        Err(FrameError::TooLong { len, max }) => {
            assert_eq!((len, max), (w.len, max_len));
            assert!(len as usize > max);
        }
        Err(FrameError::UnknownRkey { rkey }) => {
            assert_eq!(rkey, w.rkey);
            assert!(first.is_none());
            assert!(w.len as usize <= max_len);
        }
        Err(FrameError::OutOfRange {
            addr,
            len,
            base,
            region_len,
        }) => {
            let r = regions[first.expect("a region has the rkey")];
            assert_eq!((addr, len, base, region_len), (w.addr, w.len, r.base, r.len));
            let inside = w
                .addr
                .checked_sub(r.base)
                .and_then(|o| o.checked_add(u64::from(w.len)))
                .is_some_and(|end| end <= r.len);
            assert!(!inside, "refused a write that fits");
        }
        Err(e) => panic!("validate_write returned {e:?}"),
    }
}

fuzz_target!(|input: Input| {
    let regions: Vec<RegionBounds> = input
        .regions
        .iter()
        .take(8)
        .map(|&(rkey, base, len)| RegionBounds {
            rkey: u32::from(rkey),
            base,
            len,
        })
        .collect();
    let max_len = input.max_len as usize;
    match decode(&input.frame) {
        Ok(Frame::WriteImm(w)) => {
            assert_eq!(encode_write(&w), input.frame);
            check(&w, &regions, max_len);
        }
        Ok(Frame::Hello(h)) => assert_eq!(encode_hello(&h), input.frame),
        Err(_) => {}
    }
    // A write aimed near a registered region, so the range checks get exercised.
    let (rkey, off, len, relative) = input.other;
    let addr = match regions.iter().find(|r| r.rkey == u32::from(rkey)) {
        Some(r) if relative => r.base.wrapping_add(off % (r.len.saturating_add(2)).max(1)),
        _ => off,
    };
    let w = WriteHeader {
        rkey: u32::from(rkey),
        addr,
        len,
        imm: 0,
    };
    assert_eq!(decode(&encode_write(&w)), Ok(Frame::WriteImm(w)));
    check(&w, &regions, max_len);
});
