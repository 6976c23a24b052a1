//! The TAP adapter's frame conversion: virtio_net_hdr <-> netif GSO extra and csum_blank,
//! checksum offsets found again from the headers, and nothing a frame holds can make it
//! panic or point outside the frame.

use netstage_fallback::{Gso, Packet};
use netstage_ring::netif::GsoType;
use netstage_tap::{from_tap, l4, to_tap_header, FrameError, L4, VNET_HDR_LEN};
use proptest::prelude::*;

/// An Ethernet frame: IPv4 (or IPv6) carrying TCP (or UDP), `payload` bytes after it.
fn frame(v6: bool, tcp: bool, vlan: bool, payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    if vlan {
        f.extend([0x81, 0x00, 0x00, 0x05]);
    }
    if v6 {
        f.extend([0x86, 0xdd]);
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60;
        ip[6] = if tcp { 6 } else { 17 };
        f.extend(ip);
    } else {
        f.extend([0x08, 0x00]);
        let mut ip = vec![0u8; 24]; // with 4 bytes of options
        ip[0] = 0x46;
        ip[9] = if tcp { 6 } else { 17 };
        f.extend(ip);
    }
    if tcp {
        let mut t = vec![0u8; 32]; // with 12 bytes of options
        t[12] = 8 << 4;
        f.extend(t);
    } else {
        f.extend([0u8; 8]);
    }
    f.extend(std::iter::repeat_n(0xab, payload));
    f
}

fn hdr(flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16, start: u16, off: u16) -> Vec<u8> {
    let mut h = vec![flags, gso_type];
    for v in [hdr_len, gso_size, start, off] {
        h.extend(v.to_ne_bytes());
    }
    h
}

#[test]
fn transport_headers_are_found() {
    assert_eq!(
        l4(&frame(false, true, false, 0)),
        Some(L4 {
            offset: 38,
            csum_offset: 16,
            headers: 70,
            v6: false
        })
    );
    assert_eq!(
        l4(&frame(true, false, true, 3)),
        Some(L4 {
            offset: 58,
            csum_offset: 6,
            headers: 66,
            v6: true
        })
    );
    // ARP, a cut-short TCP header, an IPv4 header length below 20: none.
    let mut arp = frame(false, true, false, 0);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(l4(&arp), None);
    assert_eq!(l4(&frame(false, true, false, 0)[..60]), None);
    let mut bad = frame(false, true, false, 0);
    bad[14] = 0x44;
    assert_eq!(l4(&bad), None);
    // A TCP data offset below 5 words: the checksum field would be past the header.
    for doff in 0..5u8 {
        let mut short = frame(false, true, false, 40);
        short[38 + 12] = doff << 4;
        assert_eq!(l4(&short), None, "data offset {doff}");
    }
}

#[test]
fn a_tso_segment_crosses_both_ways() {
    let f = frame(false, true, false, 60_000);
    let mut buf = hdr(1, 1, 70, 1448, 38, 16);
    buf.extend(&f);
    let p = from_tap(&buf).unwrap();
    assert_eq!(&p.data[..], &f[..]);
    assert!(p.csum_blank);
    assert_eq!(
        p.gso,
        Some(Gso {
            gso_type: GsoType::TcpV4,
            mss: 1448
        })
    );
    // Back out to a TAP: the same header, offsets recomputed from the frame.
    assert_eq!(to_tap_header(&p).unwrap().to_vec(), buf[..VNET_HDR_LEN]);
    // IPv6 with the ECN bit: the bit is dropped (netif has none), the rest carried.
    let f6 = frame(true, true, false, 9000);
    let mut buf6 = hdr(1, 4 | 0x80, 86, 1428, 54, 16);
    buf6.extend(&f6);
    let p6 = from_tap(&buf6).unwrap();
    assert_eq!(p6.gso.unwrap().gso_type, GsoType::TcpV6);
    assert_eq!(
        to_tap_header(&p6).unwrap().to_vec(),
        hdr(1, 4, 86, 1428, 54, 16)
    );
}

#[test]
fn plain_frames_and_checksum_only_frames() {
    let f = frame(true, false, false, 100);
    let mut buf = hdr(0, 0, 0, 0, 0, 0);
    buf.extend(&f);
    let p = from_tap(&buf).unwrap();
    assert!(!p.csum_blank && p.gso.is_none());
    assert_eq!(to_tap_header(&p).unwrap(), [0u8; VNET_HDR_LEN]);
    // A UDP checksum left blank: offsets for UDP.
    let p = Packet {
        data: f.into(),
        gso: None,
        csum_blank: true,
    };
    assert_eq!(to_tap_header(&p).unwrap().to_vec(), hdr(1, 0, 0, 0, 54, 6));
}

#[test]
fn what_netif_cannot_carry_is_refused() {
    assert_eq!(from_tap(&[0u8; 20]), Err(FrameError::Short(20)));
    let mut udp_gso = hdr(1, 3, 0, 1400, 34, 6);
    udp_gso.extend(frame(false, false, false, 10));
    assert_eq!(from_tap(&udp_gso), Err(FrameError::GsoType(3)));
    let mut big = hdr(0, 0, 0, 0, 0, 0);
    big.extend(frame(false, true, false, 65_600));
    assert!(matches!(from_tap(&big), Err(FrameError::TooLarge(_))));
    // A blank checksum on something that is not TCP or UDP over IP; GSO on UDP.
    let mut arp = frame(false, true, false, 0);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let p = Packet {
        data: arp.into(),
        gso: None,
        csum_blank: true,
    };
    assert_eq!(to_tap_header(&p), Err(FrameError::NotTcpUdp));
    let p = Packet {
        data: frame(false, false, false, 5000).into(),
        gso: Some(Gso {
            gso_type: GsoType::TcpV4,
            mss: 1400,
        }),
        csum_blank: true,
    };
    assert_eq!(to_tap_header(&p), Err(FrameError::NotTcpUdp));
}

proptest! {
    // Cheap cases: many of them (256 once missed a TCP data offset below 5).
    #![proptest_config(ProptestConfig::with_cases(8192))]

    #[test]
    fn any_bytes_are_parsed_without_panic_and_within_the_frame(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ethertype in prop_oneof![Just([0x08u8, 0x00]), Just([0x86, 0xdd]), Just([0x81, 0x00])],
    ) {
        let mut f = bytes.clone();
        if f.len() >= 14 {
            f[12..14].copy_from_slice(&ethertype);
        }
        if let Some(l) = l4(&f) {
            prop_assert!(l.offset + l.csum_offset + 2 <= l.headers);
            prop_assert!(l.headers <= f.len());
        }
        if let Ok(p) = from_tap(&f) {
            prop_assert_eq!(p.data.len(), f.len() - VNET_HDR_LEN);
            let _ = to_tap_header(&p);
        }
    }
}
