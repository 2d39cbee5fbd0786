//! The RDMA path MTU: five sizes, encoded 1..=5 in verbs (`enum ibv_mtu`).
//!
//! It bounds the payload of one packet, not of one write: a 16 MiB write is cut
//! into MTU-sized packets by the NIC. Both ends of an RC connection must use
//! the same path MTU; we take the smaller of the two active MTUs.

use std::fmt;

/// A path MTU.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathMtu {
    Mtu256,
    Mtu512,
    Mtu1024,
    Mtu2048,
    Mtu4096,
}

impl PathMtu {
    pub const ALL: [PathMtu; 5] = [
        PathMtu::Mtu256,
        PathMtu::Mtu512,
        PathMtu::Mtu1024,
        PathMtu::Mtu2048,
        PathMtu::Mtu4096,
    ];

    /// Payload bytes per packet.
    pub fn bytes(self) -> u32 {
        256 << (self.ibv_code() - 1)
    }

    /// The exact size in bytes, if it is one of the five.
    pub fn from_bytes(bytes: u32) -> Option<PathMtu> {
        PathMtu::ALL.into_iter().find(|m| m.bytes() == bytes)
    }

    /// The `enum ibv_mtu` value (`IBV_MTU_256 = 1` … `IBV_MTU_4096 = 5`).
    pub fn ibv_code(self) -> u32 {
        match self {
            PathMtu::Mtu256 => 1,
            PathMtu::Mtu512 => 2,
            PathMtu::Mtu1024 => 3,
            PathMtu::Mtu2048 => 4,
            PathMtu::Mtu4096 => 5,
        }
    }

    /// From an `enum ibv_mtu` value; `None` for anything else (0 is reported
    /// by some drivers for a port that is not up).
    pub fn from_ibv_code(code: u32) -> Option<PathMtu> {
        PathMtu::ALL.into_iter().find(|m| m.ibv_code() == code)
    }
}

impl fmt::Display for PathMtu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_codes() {
        let table = [(256, 1), (512, 2), (1024, 3), (2048, 4), (4096, 5)];
        for (m, (bytes, code)) in PathMtu::ALL.into_iter().zip(table) {
            assert_eq!(m.bytes(), bytes);
            assert_eq!(m.ibv_code(), code);
            assert_eq!(PathMtu::from_bytes(bytes), Some(m));
            assert_eq!(PathMtu::from_ibv_code(code), Some(m));
        }
    }

    #[test]
    fn rejects_other_values() {
        for bytes in [0, 1, 128, 1000, 1500, 4097, 8192, 9000, u32::MAX] {
            assert_eq!(PathMtu::from_bytes(bytes), None, "{bytes}");
        }
        for code in [0, 6, 255] {
            assert_eq!(PathMtu::from_ibv_code(code), None, "{code}");
        }
    }

    #[test]
    fn ordering_is_by_size() {
        assert_eq!(PathMtu::Mtu1024.min(PathMtu::Mtu4096), PathMtu::Mtu1024);
        assert_eq!(PathMtu::Mtu4096.to_string(), "4096");
    }
}
