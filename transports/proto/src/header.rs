//! The 16-byte mailbox message header (SlimeRPC's layout, little endian):
//!
//! ```text
//! 0      4            8                  16
//! | tag  | total_len  |    request_id    | payload ...
//! ```
//!
//! `tag` = method id in the low 16 bits plus flag bits (the original's positions):
//! EXC 1<<27, ACK 1<<28 (legacy), REPLY 1<<29, CHUNK 1<<30, LAST 1<<31 (legacy).
//! Bits 16..27 are reserved and must be zero. ACK and LAST belong to retired
//! paths and CHUNK to a bulk path that does not exist yet, so all three are
//! refused instead of being half-understood. `total_len` counts the header.

/// Bytes in a header.
pub const HEADER_LEN: usize = 16;
/// Version of the mailbox wire format, exchanged and checked at rendezvous
/// (the original defines version 3 but never exchanges it; ours starts over).
pub const WIRE_VERSION: u32 = 1;

/// Method id of the raw-bytes echo.
pub const METHOD_ECHO: u16 = 1;

pub const FLAG_EXC: u32 = 1 << 27;
pub const FLAG_ACK: u32 = 1 << 28;
pub const FLAG_REPLY: u32 = 1 << 29;
pub const FLAG_CHUNK: u32 = 1 << 30;
pub const FLAG_LAST: u32 = 1 << 31;
const METHOD_MASK: u32 = 0xFFFF;
const RESERVED_MASK: u32 = !(METHOD_MASK | FLAG_EXC | FLAG_ACK | FLAG_REPLY | FLAG_CHUNK | FLAG_LAST);

/// A decoded header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub method: u16,
    /// Set on every reply (normal or exception).
    pub reply: bool,
    /// Set on a reply that carries an error message instead of a result.
    pub exception: bool,
    /// Header plus payload, in bytes.
    pub total_len: u32,
    pub request_id: u64,
}

/// Why a header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum HeaderError {
    /// Fewer than 16 bytes were written.
    #[error("message of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    Short { len: usize },
    /// Reserved tag bits are set: another version or garbage.
    #[error("tag {tag:#010x} has reserved bits set")]
    Reserved { tag: u32 },
    /// ACK or LAST: flags of the original's retired paths.
    #[error("tag {tag:#010x} uses a retired flag (ACK/LAST)")]
    Retired { tag: u32 },
    /// CHUNK: a bulk transfer, which this wire version does not support.
    #[error("chunked messages are not supported (tag {tag:#010x})")]
    Chunked { tag: u32 },
    /// EXC without REPLY makes no sense.
    #[error("exception flag on a request (tag {tag:#010x})")]
    ExceptionOnRequest { tag: u32 },
    /// `total_len` is below the header size.
    #[error("total_len {total_len} is smaller than the header")]
    TotalTooSmall { total_len: u32 },
    /// `total_len` disagrees with the number of bytes actually written.
    #[error("total_len {total_len} but {written} bytes were written")]
    LengthMismatch { total_len: u32, written: u32 },
    /// `total_len` exceeds the slot.
    #[error("total_len {total_len} exceeds the slot size {slot_size}")]
    OverSlot { total_len: u32, slot_size: u64 },
}

impl Header {
    /// A request header for `payload_len` bytes.
    ///
    /// # Panics
    /// If `payload_len + 16` does not fit in a u32 (callers check slot size first).
    pub fn request(method: u16, payload_len: usize, request_id: u64) -> Self {
        Header {
            method,
            reply: false,
            exception: false,
            total_len: u32::try_from(payload_len + HEADER_LEN).expect("payload fits a u32"),
            request_id,
        }
    }

    /// Payload bytes after the header.
    pub fn payload_len(&self) -> usize {
        self.total_len as usize - HEADER_LEN
    }

    pub fn tag(&self) -> u32 {
        let mut tag = u32::from(self.method);
        if self.reply {
            tag |= FLAG_REPLY;
        }
        if self.exception {
            tag |= FLAG_EXC;
        }
        tag
    }

    /// Write the header into the first 16 bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than 16 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.tag().to_le_bytes());
        out[4..8].copy_from_slice(&self.total_len.to_le_bytes());
        out[8..16].copy_from_slice(&self.request_id.to_le_bytes());
    }

    /// Decode and validate the header at the start of `buf`.
    ///
    /// # Errors
    /// [`HeaderError`] for a short buffer, bad flags or an impossible length.
    pub fn decode(buf: &[u8]) -> Result<Header, HeaderError> {
        if buf.len() < HEADER_LEN {
            return Err(HeaderError::Short { len: buf.len() });
        }
        let tag = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
        let total_len = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
        let request_id = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
        if tag & RESERVED_MASK != 0 {
            return Err(HeaderError::Reserved { tag });
        }
        if tag & (FLAG_ACK | FLAG_LAST) != 0 {
            return Err(HeaderError::Retired { tag });
        }
        if tag & FLAG_CHUNK != 0 {
            return Err(HeaderError::Chunked { tag });
        }
        let reply = tag & FLAG_REPLY != 0;
        let exception = tag & FLAG_EXC != 0;
        if exception && !reply {
            return Err(HeaderError::ExceptionOnRequest { tag });
        }
        if (total_len as usize) < HEADER_LEN {
            return Err(HeaderError::TotalTooSmall { total_len });
        }
        Ok(Header {
            method: (tag & METHOD_MASK) as u16,
            reply,
            exception,
            total_len,
            request_id,
        })
    }

    /// Decode a message of which `written` bytes landed in a slot of `slot_size`
    /// bytes, checking that the header's length agrees with both.
    ///
    /// # Errors
    /// As [`Header::decode`], plus length disagreements.
    pub fn decode_message(buf: &[u8], written: u32, slot_size: u64) -> Result<Header, HeaderError> {
        if (written as usize) < HEADER_LEN {
            return Err(HeaderError::Short { len: written as usize });
        }
        let h = Header::decode(buf)?;
        if u64::from(h.total_len) > slot_size {
            return Err(HeaderError::OverSlot {
                total_len: h.total_len,
                slot_size,
            });
        }
        if h.total_len != written {
            return Err(HeaderError::LengthMismatch {
                total_len: h.total_len,
                written,
            });
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(tag: u32, total: u32, id: u64) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&tag.to_le_bytes());
        b[4..8].copy_from_slice(&total.to_le_bytes());
        b[8..16].copy_from_slice(&id.to_le_bytes());
        b
    }

    #[test]
    fn round_trip() {
        let mut h = Header::request(METHOD_ECHO, 1024, 42);
        let mut b = [0u8; 16];
        h.encode(&mut b);
        assert_eq!(Header::decode(&b).unwrap(), h);
        h.reply = true;
        h.exception = true;
        h.encode(&mut b);
        assert_eq!(Header::decode(&b).unwrap(), h);
        assert_eq!(h.payload_len(), 1024);
    }

    #[test]
    fn layout_is_the_originals() {
        let mut b = [0u8; 16];
        Header {
            method: 1,
            reply: true,
            exception: false,
            total_len: 0x20,
            request_id: 0x0102030405060708,
        }
        .encode(&mut b);
        assert_eq!(b, raw(1 | (1 << 29), 0x20, 0x0102030405060708));
    }

    #[test]
    fn malformed_cases() {
        assert_eq!(Header::decode(&[0; 15]), Err(HeaderError::Short { len: 15 }));
        assert!(matches!(
            Header::decode(&raw(1 << 20, 16, 0)),
            Err(HeaderError::Reserved { .. })
        ));
        assert!(matches!(
            Header::decode(&raw(FLAG_ACK, 16, 0)),
            Err(HeaderError::Retired { .. })
        ));
        assert!(matches!(
            Header::decode(&raw(FLAG_LAST | FLAG_REPLY, 16, 0)),
            Err(HeaderError::Retired { .. })
        ));
        assert!(matches!(
            Header::decode(&raw(FLAG_CHUNK, 16, 0)),
            Err(HeaderError::Chunked { .. })
        ));
        assert!(matches!(
            Header::decode(&raw(FLAG_EXC, 16, 0)),
            Err(HeaderError::ExceptionOnRequest { .. })
        ));
        assert_eq!(
            Header::decode(&raw(1, 15, 0)),
            Err(HeaderError::TotalTooSmall { total_len: 15 })
        );
    }

    #[test]
    fn message_lengths_checked() {
        let b = raw(1, 100, 9);
        assert!(Header::decode_message(&b, 100, 4096).is_ok());
        assert_eq!(
            Header::decode_message(&b, 99, 4096),
            Err(HeaderError::LengthMismatch {
                total_len: 100,
                written: 99
            })
        );
        assert_eq!(
            Header::decode_message(&b, 100, 64),
            Err(HeaderError::OverSlot {
                total_len: 100,
                slot_size: 64
            })
        );
        assert_eq!(Header::decode_message(&b, 8, 4096), Err(HeaderError::Short { len: 8 }));
    }
}
