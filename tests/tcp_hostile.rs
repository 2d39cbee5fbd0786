//! Hostile frames against a live TCP backend: every malformed or
//! out-of-bounds write closes the connection with a typed error and writes
//! nothing — the target region and the guard bytes around it stay untouched.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use slimebench_proto::frame::{encode_hello, encode_write, Hello, WriteHeader, FRAME_HEADER_LEN};
use slimebench_proto::{MrKey, Transport, TransportAddr, WcStatus};
use slimebench_tcp::{TcpConfig, TcpTransport};

use crate::util::{block_on, poll_until};

const ME: u64 = 1_000;
const ATTACKER: u64 = 5;
const REGION: usize = 8192;

/// A transport that expects `ATTACKER` to dial it, with two registered
/// regions (the second one must stay untouched too).
fn victim() -> (TcpTransport, MrKey, MrKey, String) {
    let cfg = TcpConfig {
        max_write_len: 1 << 20,
        ..TcpConfig::default()
    };
    let mut t = TcpTransport::bind("127.0.0.1:0".parse().unwrap(), None, ME, cfg).unwrap();
    let a = t.register(REGION).unwrap();
    let b = t.register(REGION).unwrap();
    t.connect(&TransportAddr::Tcp {
        addr: "127.0.0.1:9".into(),
        endpoint_id: ATTACKER,
    })
    .unwrap();
    let TransportAddr::Tcp { addr, .. } = t.local_addr() else {
        unreachable!()
    };
    (t, a, b, addr)
}

fn dial(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&encode_hello(&Hello {
        from_endpoint: ATTACKER,
        to_endpoint: ME,
    }))
    .unwrap();
    s
}

fn untouched(t: &TcpTransport, a: MrKey, b: MrKey) {
    assert!(t.mr(a).iter().all(|&x| x == 0), "target region was written");
    assert!(t.mr(b).iter().all(|&x| x == 0), "other region was written");
    assert!(t.guards_intact(), "guard bytes around a region were written");
}

/// Send `header` (plus up to 4 KiB of 0xEE payload) and expect the link to
/// close with a protocol error naming `expect`.
fn hostile(make: impl FnOnce(u32, u64) -> [u8; FRAME_HEADER_LEN], expect: &str) {
    block_on(async {
        let (mut t, a, b, addr) = victim();
        let desc = t.mr_desc(a);
        let mut s = dial(&addr);
        let hdr = make(desc.rkey, desc.addr);
        s.write_all(&hdr).unwrap();
        let _ = s.write_all(&[0xEE; 4096]);
        poll_until(&mut t, Duration::from_secs(10), |t, _| t.link_failure().is_some()).await;
        let f = t.link_failure().unwrap();
        assert_eq!(f.status, WcStatus::Flushed, "{f}");
        assert!(
            f.cause.contains(expect),
            "cause {:?} should mention {expect:?}",
            f.cause
        );
        assert_eq!(t.stats().protocol_errors, 1);
        untouched(&t, a, b);
        // The connection is closed: the attacker reads EOF (or a reset).
        let mut buf = [0u8; 16];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "connection still open");
    });
}

fn write(rkey: u32, addr: u64, len: u32) -> [u8; FRAME_HEADER_LEN] {
    encode_write(&WriteHeader {
        rkey,
        addr,
        len,
        imm: 0,
    })
}

#[test]
fn unknown_rkey_closes_link() {
    hostile(|rkey, addr| write(rkey ^ 0x5555, addr, 16), "unknown rkey");
}

#[test]
fn address_below_region_closes_link() {
    hostile(|rkey, addr| write(rkey, addr - 1, 16), "outside region");
}

#[test]
fn write_past_region_end_closes_link() {
    hostile(|rkey, addr| write(rkey, addr + REGION as u64 - 8, 16), "outside region");
}

#[test]
fn offset_overflow_closes_link() {
    hostile(|rkey, _| write(rkey, u64::MAX - 4, 16), "outside region");
}

#[test]
fn huge_length_closes_link() {
    hostile(|rkey, addr| write(rkey, addr, u32::MAX), "exceeds the limit");
}

#[test]
fn unknown_version_closes_link() {
    hostile(
        |rkey, addr| {
            let mut h = write(rkey, addr, 16);
            h[2] = 99;
            h
        },
        "unknown frame version 99",
    );
}

#[test]
fn garbage_closes_link() {
    hostile(|_, _| [0x41; FRAME_HEADER_LEN], "bad frame magic");
}

#[test]
fn second_hello_closes_link() {
    hostile(
        |_, _| {
            encode_hello(&Hello {
                from_endpoint: ATTACKER,
                to_endpoint: ME,
            })
        },
        "unexpected hello",
    );
}

#[test]
fn valid_write_lands_exactly_in_bounds() {
    block_on(async {
        let (mut t, a, b, addr) = victim();
        let desc = t.mr_desc(a);
        let mut s = dial(&addr);
        // The last 16 bytes of the region: in bounds, touching the edge.
        s.write_all(&write(desc.rkey, desc.addr + REGION as u64 - 16, 16))
            .unwrap();
        s.write_all(&[0xAB; 16]).unwrap();
        let got = poll_until(&mut t, Duration::from_secs(10), |_, c| !c.is_empty()).await;
        assert!(got[0].status.is_ok());
        assert!(t.link_failure().is_none());
        assert!(t.mr(a)[..REGION - 16].iter().all(|&x| x == 0));
        assert!(t.mr(a)[REGION - 16..].iter().all(|&x| x == 0xAB));
        assert!(t.mr(b).iter().all(|&x| x == 0));
        assert!(t.guards_intact());
    });
}

#[test]
fn connection_from_wrong_endpoint_is_refused_and_expected_one_accepted() {
    block_on(async {
        let (mut t, a, b, addr) = victim();
        // An older incarnation (wrong id) dials first: refused, nothing written.
        let mut stale = TcpStream::connect(&addr).unwrap();
        stale.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stale
            .write_all(&encode_hello(&Hello {
                from_endpoint: ATTACKER + 1,
                to_endpoint: ME,
            }))
            .unwrap();
        let desc = t.mr_desc(a);
        let _ = stale.write_all(&write(desc.rkey, desc.addr, 4));
        let _ = stale.write_all(&[1, 2, 3, 4]);
        poll_until(&mut t, Duration::from_secs(10), |t, _| {
            t.stats().refused_connections == 1
        })
        .await;
        assert!(!t.is_up());
        let mut buf = [0u8; 4];
        assert!(matches!(stale.read(&mut buf), Ok(0) | Err(_)));
        untouched(&t, a, b);
        // The expected peer still gets in.
        let mut s = dial(&addr);
        s.write_all(&write(desc.rkey, desc.addr, 4)).unwrap();
        s.write_all(&[9, 9, 9, 9]).unwrap();
        let got = poll_until(&mut t, Duration::from_secs(10), |_, c| !c.is_empty()).await;
        assert!(got[0].status.is_ok(), "{got:?}");
        assert_eq!(&t.mr(a)[..4], &[9, 9, 9, 9]);
    });
}

#[test]
fn peer_eof_mid_frame_fails_link_with_peer_gone() {
    block_on(async {
        let (mut t, a, _, addr) = victim();
        let desc = t.mr_desc(a);
        let mut s = dial(&addr);
        s.write_all(&write(desc.rkey, desc.addr, 1024)).unwrap();
        s.write_all(&[7; 100]).unwrap();
        drop(s);
        let got = poll_until(&mut t, Duration::from_secs(10), |t, _| t.link_failure().is_some()).await;
        let f = t.link_failure().unwrap();
        assert_eq!(f.status, WcStatus::PeerGone);
        assert!(f.cause.contains("middle of a frame"), "{f}");
        // No receive completion for the torn frame, only the error one.
        assert!(got.iter().all(|c| !c.status.is_ok()));
    });
}
