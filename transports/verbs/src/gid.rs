//! GIDs: the 128-bit global identifiers of RDMA ports.
//!
//! On the wire (in [`slimebench_proto::TransportAddr::Rdma`]) a GID is 32 lowercase
//! hex digits with no separators ([`Gid::to_hex`]). For people it is shown the way
//! `ibv_devinfo -v` and `show_gids` do, eight colon-separated groups of four
//! digits ([`std::fmt::Display`]), plus the IPv4 address when the GID is an
//! IPv4-mapped RoCE GID (`::ffff:a.b.c.d`).
//!
//! Parsing accepts all of these: 32 hex digits, the grouped form, any IPv6
//! text form (`fe80::1`, `::ffff:192.168.1.5`) and a bare IPv4 address, which
//! becomes its IPv4-mapped GID (what RoCE v2 uses for IPv4 interfaces).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A GID in network byte order (the bytes `ibv_query_gid` returns).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gid(pub [u8; 16]);

/// Why a GID string did not parse.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GidParseError {
    /// Nothing to parse; the peer published an empty GID.
    #[error("empty GID")]
    Empty,
    /// Without separators a GID is exactly 32 hex digits.
    #[error("GID {text:?} has {digits} hex digits, expected 32")]
    BadLength { text: String, digits: usize },
    /// A character that is not a hex digit.
    #[error("GID {text:?} has a non-hex character {ch:?} at byte {at}")]
    BadDigit { text: String, ch: char, at: usize },
    /// Neither 32 hex digits nor an IPv6/IPv4 address.
    #[error("GID {text:?} is not 32 hex digits nor an IPv6 or IPv4 address")]
    NotAnAddress { text: String },
}

impl Gid {
    /// The all-zero GID: an empty GID table slot, never a usable address.
    pub const ZERO: Gid = Gid([0; 16]);

    /// True for an empty table slot.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// True for `fe80::/10` (link-local): reachable only on the same L2 segment.
    pub fn is_link_local(&self) -> bool {
        self.0[0] == 0xfe && self.0[1] & 0xc0 == 0x80
    }

    /// The IPv4 address of an IPv4-mapped GID (`::ffff:a.b.c.d`), as RoCE uses
    /// for interfaces with an IPv4 address.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        let b = &self.0;
        (b[..10] == [0; 10] && b[10] == 0xff && b[11] == 0xff).then(|| Ipv4Addr::new(b[12], b[13], b[14], b[15]))
    }

    /// The wire form: 32 lowercase hex digits, no separators.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        for b in self.0 {
            s.push(hex_digit(b >> 4));
            s.push(hex_digit(b & 0xf));
        }
        s
    }

    /// The GID for an IPv4 address (IPv4-mapped IPv6).
    pub fn from_ipv4(ip: Ipv4Addr) -> Gid {
        Gid(ip.to_ipv6_mapped().octets())
    }

    /// A human form: grouped hex, plus ` (a.b.c.d)` when IPv4-mapped.
    pub fn describe(&self) -> String {
        match self.ipv4() {
            Some(ip) => format!("{self} ({ip})"),
            None => self.to_string(),
        }
    }
}

fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n), 16).expect("a nibble is a hex digit")
}

impl fmt::Display for Gid {
    /// Eight groups of four hex digits, as `ibv_devinfo -v` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.0.chunks_exact(2).enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{:02x}{:02x}", pair[0], pair[1])?;
        }
        Ok(())
    }
}

impl From<Ipv6Addr> for Gid {
    fn from(ip: Ipv6Addr) -> Self {
        Gid(ip.octets())
    }
}

impl From<Gid> for Ipv6Addr {
    fn from(g: Gid) -> Self {
        Ipv6Addr::from(g.0)
    }
}

impl FromStr for Gid {
    type Err = GidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err(GidParseError::Empty);
        }
        if !text.contains([':', '.']) {
            // The wire form: exactly 32 hex digits.
            return parse_hex32(text);
        }
        // The grouped form `xxxx:xxxx:…` (8 groups of 4) is also valid IPv6
        // text, so the standard parser covers it, `::` compression and
        // `::ffff:a.b.c.d` alike.
        if let Ok(ip) = Ipv6Addr::from_str(text) {
            return Ok(Gid::from(ip));
        }
        if let Ok(ip) = Ipv4Addr::from_str(text) {
            return Ok(Gid::from_ipv4(ip));
        }
        Err(GidParseError::NotAnAddress { text: text.to_owned() })
    }
}

fn parse_hex32(text: &str) -> Result<Gid, GidParseError> {
    if let Some((at, ch)) = text.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(GidParseError::BadDigit {
            text: text.to_owned(),
            ch,
            at,
        });
    }
    if text.len() != 32 {
        return Err(GidParseError::BadLength {
            text: text.to_owned(),
            digits: text.len(),
        });
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        // Checked above: 32 ASCII hex digits.
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("validated hex");
    }
    Ok(Gid(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK_LOCAL: [u8; 16] = [
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x1b, 0x21, 0xff, 0xfe, 0x44, 0x55, 0x66,
    ];

    #[test]
    fn hex_round_trip() {
        let g = Gid(LINK_LOCAL);
        assert_eq!(g.to_hex(), "fe80000000000000021b21fffe445566");
        assert_eq!(g.to_hex().parse::<Gid>().unwrap(), g);
        assert_eq!("FE80000000000000021B21FFFE445566".parse::<Gid>().unwrap(), g);
    }

    #[test]
    fn grouped_form_round_trips_and_matches_devinfo() {
        let g = Gid(LINK_LOCAL);
        assert_eq!(g.to_string(), "fe80:0000:0000:0000:021b:21ff:fe44:5566");
        assert_eq!(g.to_string().parse::<Gid>().unwrap(), g);
        assert_eq!("fe80::21b:21ff:fe44:5566".parse::<Gid>().unwrap(), g);
        assert!(g.is_link_local());
        assert_eq!(g.ipv4(), None);
    }

    #[test]
    fn ipv4_mapped() {
        let g: Gid = "::ffff:192.168.1.5".parse().unwrap();
        assert_eq!(g.to_hex(), "00000000000000000000ffffc0a80105");
        assert_eq!(g.ipv4(), Some(Ipv4Addr::new(192, 168, 1, 5)));
        assert_eq!("192.168.1.5".parse::<Gid>().unwrap(), g);
        assert_eq!("0000:0000:0000:0000:0000:ffff:c0a8:0105".parse::<Gid>().unwrap(), g);
        assert_eq!(g.describe(), "0000:0000:0000:0000:0000:ffff:c0a8:0105 (192.168.1.5)");
        assert!(!g.is_link_local());
    }

    #[test]
    fn whitespace_is_trimmed() {
        assert_eq!(
            " fe80000000000000021b21fffe445566\n".parse::<Gid>().unwrap(),
            Gid(LINK_LOCAL)
        );
    }

    #[test]
    fn malformed_input_is_refused_with_a_reason() {
        assert_eq!("".parse::<Gid>(), Err(GidParseError::Empty));
        assert_eq!("   ".parse::<Gid>(), Err(GidParseError::Empty));
        assert!(matches!(
            "fe80".parse::<Gid>(),
            Err(GidParseError::BadLength { digits: 4, .. })
        ));
        assert!(matches!(
            "fe80000000000000021b21fffe4455667".parse::<Gid>(),
            Err(GidParseError::BadLength { digits: 33, .. })
        ));
        assert!(matches!(
            "fe80000000000000021b21fffe44556g".parse::<Gid>(),
            Err(GidParseError::BadDigit { ch: 'g', at: 31, .. })
        ));
        assert!(matches!(
            "+e80000000000000021b21fffe445566".parse::<Gid>(),
            Err(GidParseError::BadDigit { ch: '+', at: 0, .. })
        ));
        // Non-ASCII must not panic on byte slicing.
        assert!(matches!(
            "fe80000000000000021b21fffe4455é".parse::<Gid>(),
            Err(GidParseError::BadDigit { ch: 'é', .. })
        ));
        for bad in [
            "fe80:::1",
            "fe80:0000:0000:0000:021b:21ff:fe44",
            "1.2.3",
            "256.1.1.1",
            "fe80:0000:0000:0000:021b:21ff:fe44:5566:0000",
        ] {
            assert!(
                matches!(bad.parse::<Gid>(), Err(GidParseError::NotAnAddress { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn zero_gid() {
        assert!(Gid::ZERO.is_zero());
        assert!("::".parse::<Gid>().unwrap().is_zero());
        assert!(!Gid(LINK_LOCAL).is_zero());
    }
}
