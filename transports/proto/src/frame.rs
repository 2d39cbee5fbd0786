//! Stream framing for byte-stream backends (TCP), and the validation of a
//! remote write against registered regions that every backend without an
//! RDMA NIC must do itself. Pure functions over bytes: no socket in sight, so
//! the fuzzer and unit tests exercise exactly what the transports run.
//!
//! Every frame starts with a 24-byte header (little endian):
//!
//! ```text
//! WRITE_IMM: | magic u16 | version u8 | kind=1 u8 | rkey u32 | addr u64 | len u32 | imm u32 |  + len payload bytes
//! HELLO:     | magic u16 | version u8 | kind=2 u8 | 0 u32    | from_endpoint u64 | to_endpoint u64 |
//! ```
//!
//! A WRITE_IMM emulates RDMA write-with-immediate: `len` bytes land at `addr`
//! in the region named by `rkey`, then the receiver sees a completion carrying
//! `imm` and `len`. HELLO is the dialer's first frame: it names which endpoint
//! it is and which endpoint it wants, so a connection meant for an older
//! incarnation is refused.

/// First two bytes of every frame ("SB").
pub const FRAME_MAGIC: u16 = 0x4253;
/// Frame format version; anything else closes the connection.
pub const FRAME_VERSION: u8 = 1;
/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 24;

const KIND_WRITE_IMM: u8 = 1;
const KIND_HELLO: u8 = 2;

/// Header of a write-with-immediate frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WriteHeader {
    pub rkey: u32,
    pub addr: u64,
    pub len: u32,
    pub imm: u32,
}

/// The dialer's greeting.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub from_endpoint: u64,
    pub to_endpoint: u64,
}

/// A decoded frame header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    WriteImm(WriteHeader),
    Hello(Hello),
}

/// Why a frame was refused. Any of these closes the connection and writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a slimebench frame (another protocol, or a desynchronised stream).
    #[error("bad frame magic {found:#06x}")]
    BadMagic { found: u16 },
    /// A frame version this build does not speak.
    #[error("unknown frame version {found} (this build speaks {FRAME_VERSION})")]
    BadVersion { found: u8 },
    #[error("unknown frame kind {kind}")]
    UnknownKind { kind: u8 },
    /// Reserved bytes are not zero.
    #[error("reserved bytes are not zero")]
    Reserved,
    /// The rkey names no region we registered (stale or forged).
    #[error("write to unknown rkey {rkey:#x}")]
    UnknownRkey { rkey: u32 },
    /// The write does not fit inside the region.
    #[error("write of {len} bytes at {addr:#x} is outside region [{base:#x}, +{region_len})")]
    OutOfRange {
        addr: u64,
        len: u32,
        base: u64,
        region_len: u64,
    },
    /// Longer than the per-write limit.
    #[error("write of {len} bytes exceeds the limit of {max}")]
    TooLong { len: u32, max: usize },
    /// A hello where a write was expected, or the other way round.
    #[error("unexpected {what} frame")]
    Unexpected { what: &'static str },
    /// The hello names another endpoint than the one we are, or expect.
    #[error("hello from endpoint {from:#x} to {to:#x}, expected {expected_from:#x} to {me:#x}")]
    WrongEndpoint {
        from: u64,
        to: u64,
        expected_from: u64,
        me: u64,
    },
}

fn common(kind: u8, out: &mut [u8; FRAME_HEADER_LEN]) {
    out[0..2].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    out[2] = FRAME_VERSION;
    out[3] = kind;
}

/// Encode a write-with-immediate header.
pub fn encode_write(h: &WriteHeader) -> [u8; FRAME_HEADER_LEN] {
    let mut out = [0u8; FRAME_HEADER_LEN];
    common(KIND_WRITE_IMM, &mut out);
    out[4..8].copy_from_slice(&h.rkey.to_le_bytes());
    out[8..16].copy_from_slice(&h.addr.to_le_bytes());
    out[16..20].copy_from_slice(&h.len.to_le_bytes());
    out[20..24].copy_from_slice(&h.imm.to_le_bytes());
    out
}

/// Encode a hello.
pub fn encode_hello(h: &Hello) -> [u8; FRAME_HEADER_LEN] {
    let mut out = [0u8; FRAME_HEADER_LEN];
    common(KIND_HELLO, &mut out);
    out[8..16].copy_from_slice(&h.from_endpoint.to_le_bytes());
    out[16..24].copy_from_slice(&h.to_endpoint.to_le_bytes());
    out
}

/// Decode a frame header.
///
/// # Errors
/// [`FrameError`] for a bad magic, version, kind or reserved bytes.
pub fn decode(buf: &[u8; FRAME_HEADER_LEN]) -> Result<Frame, FrameError> {
    let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
    let magic = u16::from_le_bytes([buf[0], buf[1]]);
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    if buf[2] != FRAME_VERSION {
        return Err(FrameError::BadVersion { found: buf[2] });
    }
    match buf[3] {
        KIND_WRITE_IMM => Ok(Frame::WriteImm(WriteHeader {
            rkey: u32_at(4),
            addr: u64_at(8),
            len: u32_at(16),
            imm: u32_at(20),
        })),
        KIND_HELLO => {
            if u32_at(4) != 0 {
                return Err(FrameError::Reserved);
            }
            Ok(Frame::Hello(Hello {
                from_endpoint: u64_at(8),
                to_endpoint: u64_at(16),
            }))
        }
        kind => Err(FrameError::UnknownKind { kind }),
    }
}

/// A registered region as the validator sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RegionBounds {
    pub rkey: u32,
    pub base: u64,
    pub len: u64,
}

/// Where a validated write lands: region index and offset inside it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub region: usize,
    pub offset: usize,
}

/// Check a write against the registered regions and the per-write limit.
///
/// # Errors
/// [`FrameError::UnknownRkey`], [`FrameError::OutOfRange`] or [`FrameError::TooLong`].
pub fn validate_write(h: &WriteHeader, regions: &[RegionBounds], max_len: usize) -> Result<Target, FrameError> {
    if h.len as usize > max_len {
        return Err(FrameError::TooLong {
            len: h.len,
            max: max_len,
        });
    }
    let (region, r) = regions
        .iter()
        .enumerate()
        .find(|(_, r)| r.rkey == h.rkey)
        .ok_or(FrameError::UnknownRkey { rkey: h.rkey })?;
    let out_of_range = || FrameError::OutOfRange {
        addr: h.addr,
        len: h.len,
        base: r.base,
        region_len: r.len,
    };
    let offset = h.addr.checked_sub(r.base).ok_or_else(out_of_range)?;
    let end = offset.checked_add(u64::from(h.len)).ok_or_else(out_of_range)?;
    if end > r.len {
        return Err(out_of_range());
    }
    Ok(Target {
        region,
        offset: usize::try_from(offset).map_err(|_| out_of_range())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGIONS: [RegionBounds; 2] = [
        RegionBounds {
            rkey: 7,
            base: 0x10000,
            len: 4096,
        },
        RegionBounds {
            rkey: 9,
            base: 0x90000,
            len: 100,
        },
    ];

    #[test]
    fn round_trip() {
        let w = WriteHeader {
            rkey: 7,
            addr: 0x10010,
            len: 16,
            imm: 3,
        };
        assert_eq!(decode(&encode_write(&w)), Ok(Frame::WriteImm(w)));
        let h = Hello {
            from_endpoint: u64::MAX,
            to_endpoint: 1,
        };
        assert_eq!(decode(&encode_hello(&h)), Ok(Frame::Hello(h)));
    }

    #[test]
    fn malformed_headers() {
        let good = encode_write(&WriteHeader {
            rkey: 7,
            addr: 0x10000,
            len: 1,
            imm: 0,
        });
        let mut b = good;
        b[0] = 0;
        assert!(matches!(decode(&b), Err(FrameError::BadMagic { .. })));
        let mut b = good;
        b[2] = 2;
        assert_eq!(decode(&b), Err(FrameError::BadVersion { found: 2 }));
        let mut b = good;
        b[3] = 9;
        assert_eq!(decode(&b), Err(FrameError::UnknownKind { kind: 9 }));
        let mut b = encode_hello(&Hello {
            from_endpoint: 1,
            to_endpoint: 2,
        });
        b[5] = 1;
        assert_eq!(decode(&b), Err(FrameError::Reserved));
    }

    #[test]
    fn validation() {
        let w = |rkey, addr, len| WriteHeader {
            rkey,
            addr,
            len,
            imm: 0,
        };
        assert_eq!(
            validate_write(&w(7, 0x10000, 4096), &REGIONS, 1 << 20),
            Ok(Target { region: 0, offset: 0 })
        );
        assert_eq!(
            validate_write(&w(9, 0x90000 + 60, 40), &REGIONS, 1 << 20),
            Ok(Target { region: 1, offset: 60 })
        );
        assert_eq!(
            validate_write(&w(8, 0x10000, 1), &REGIONS, 1 << 20),
            Err(FrameError::UnknownRkey { rkey: 8 })
        );
        assert!(matches!(
            validate_write(&w(7, 0x10000, 4097), &REGIONS, 1 << 20),
            Err(FrameError::OutOfRange { .. })
        ));
        assert!(matches!(
            validate_write(&w(7, 0xFFFF, 1), &REGIONS, 1 << 20),
            Err(FrameError::OutOfRange { .. })
        ));
        assert!(matches!(
            validate_write(&w(9, u64::MAX, 2), &REGIONS, 1 << 20),
            Err(FrameError::OutOfRange { .. })
        ));
        assert!(matches!(
            validate_write(&w(9, 0x90000 + 100, 1), &REGIONS, 1 << 20),
            Err(FrameError::OutOfRange { .. })
        ));
        assert_eq!(
            validate_write(&w(7, 0x10000, 200), &REGIONS, 100),
            Err(FrameError::TooLong { len: 200, max: 100 })
        );
        // Zero-length writes at the very end are in range.
        assert!(validate_write(&w(9, 0x90000 + 100, 0), &REGIONS, 100).is_ok());
    }
}
