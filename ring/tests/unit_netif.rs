//! Unit tests of `ring::netif`: extras, chains, faults, slot limits.

use netstage_ring::netif::*;
use zerocopy::IntoBytes;

fn frag(id: u16, size: u16) -> TxFragment {
    TxFragment {
        id,
        gref: 1000 + u32::from(id),
        offset: 0,
        size,
    }
}

fn encode(flags: TxFlags, frags: &[TxFragment], extras: &[Extra]) -> Vec<NetifTxRequest> {
    let ids: Vec<u16> = (0..extras.len() as u16).map(|i| 500 + i).collect();
    let mut v = Vec::new();
    encode_tx_chain(flags, frags, extras, &ids, |s| v.push(s)).unwrap();
    v
}

fn parse(slots: &[NetifTxRequest]) -> Result<TxChain, Fault> {
    let mut it = slots.iter().copied();
    parse_tx_chain(|| it.next())
}

#[test]
fn extra_slots_overlay_requests_and_responses() {
    let gso = Extra::Gso {
        size: 1448,
        gso_type: GsoType::TcpV6,
        features: 0,
    };
    let raw = NetifExtraInfo::encode(&gso, true);
    assert_eq!(raw.as_bytes(), &[1, 1, 0xa8, 0x05, 2, 0, 0, 0]);
    let tx = raw.to_tx_slot();
    assert_eq!(NetifExtraInfo::from_tx_slot(&tx), raw);
    assert_eq!(NetifExtraInfo::from_rx_slot(&raw.to_rx_slot()), raw);
    assert_eq!(raw.decode().unwrap(), gso);
    let h = Extra::Hash {
        hash_type: 1,
        algorithm: 1,
        value: 0xdeadbeef,
    };
    assert_eq!(NetifExtraInfo::encode(&h, false).decode().unwrap(), h);
    let m = Extra::McastAdd([1, 2, 3, 4, 5, 6]);
    assert_eq!(NetifExtraInfo::encode(&m, false).decode().unwrap(), m);
}

#[test]
fn multi_slot_packet_round_trips() {
    let gso = Extra::Gso {
        size: 1448,
        gso_type: GsoType::TcpV4,
        features: 0,
    };
    let frags = [frag(1, 4000), frag(2, 4096), frag(3, 100)];
    let slots = encode(TxFlags::CSUM_BLANK, &frags, &[gso]);
    assert_eq!(slots.len(), 4);
    assert_eq!(slots[0].size, 8196);
    let c = parse(&slots).unwrap();
    assert_eq!(c.drop, None);
    assert_eq!(c.total_size, 8196);
    assert_eq!(c.extras.gso, Some(gso));
    let f: Vec<_> = c.fragments().collect();
    assert_eq!(f, vec![(1001, 0, 4000), (1002, 0, 4096), (1003, 0, 100)]);
    let r: Vec<_> = c
        .responses(NETIF_RSP_OKAY)
        .map(|r| (r.id, r.status))
        .collect();
    assert_eq!(r, vec![(1, 0), (500, 1), (2, 0), (3, 0)]);
}

#[test]
fn malformed_tx_chains_are_typed_faults() {
    // Truncated: more_data with nothing after.
    let mut s = encode(TxFlags::empty(), &[frag(1, 100), frag(2, 100)], &[]);
    s.pop();
    assert!(matches!(
        parse(&s),
        Err(Fault::Fatal(FaultReason::Truncated { .. }))
    ));
    // Crossing a page.
    let mut s = encode(TxFlags::empty(), &[frag(1, 100), frag(2, 100)], &[]);
    s[1].offset = 4000;
    assert!(matches!(
        parse(&s),
        Err(Fault::Fatal(FaultReason::CrossesPage { .. }))
    ));
    // First slot's share crossing its page.
    let mut s = encode(TxFlags::empty(), &[frag(1, 100)], &[]);
    s[0].offset = 4090;
    assert!(matches!(
        parse(&s),
        Err(Fault::Fatal(FaultReason::CrossesPage { .. }))
    ));
    // Fragment larger than the total leaves: drop, chain consumed.
    let mut s = encode(TxFlags::empty(), &[frag(1, 100), frag(2, 100)], &[]);
    s[0].size = 50;
    let c = parse(&s).unwrap();
    assert!(matches!(c.drop, Some(FaultReason::FragmentTooLarge { .. })));
    assert_eq!(c.slots.len(), 2);
    // Too short.
    let s = encode(TxFlags::empty(), &[frag(1, 13)], &[]);
    assert_eq!(
        parse(&s).unwrap().drop,
        Some(FaultReason::TooShort { size: 13 })
    );
    // Bad extra type / bad GSO.
    let mut s = encode(
        TxFlags::EXTRA_INFO,
        &[frag(1, 100)],
        &[Extra::McastAdd([0; 6])],
    );
    s[1].gref = 0; // type byte 0
    assert!(matches!(
        parse(&s),
        Err(Fault::Fatal(FaultReason::BadExtraType { ty: 0 }))
    ));
    let s = encode(
        TxFlags::empty(),
        &[frag(1, 100)],
        &[Extra::Gso {
            size: 0,
            gso_type: GsoType::TcpV4,
            features: 0,
        }],
    );
    assert!(matches!(
        parse(&s),
        Err(Fault::Fatal(FaultReason::BadGso { .. }))
    ));
    // An endless chain of extras.
    let e = NetifExtraInfo::encode(&Extra::McastAdd([0; 6]), true).to_tx_slot();
    let mut s = encode(
        TxFlags::empty(),
        &[frag(1, 100)],
        &[Extra::McastAdd([0; 6])],
    );
    s.truncate(1);
    s.extend(std::iter::repeat_n(e, 10));
    assert_eq!(parse(&s), Err(Fault::Fatal(FaultReason::TooManyExtras)));
    // Zero-length fragments are fine (XSA-448).
    let s = encode(TxFlags::empty(), &[frag(1, 60), frag(2, 0)], &[]);
    assert_eq!(parse(&s).unwrap().drop, None);
}

#[test]
fn slot_count_limits() {
    let chain = |n: usize| -> Vec<NetifTxRequest> {
        let mut v: Vec<NetifTxRequest> = (0..n)
            .map(|i| NetifTxRequest {
                gref: 1,
                offset: 0,
                flags: TxFlags::MORE_DATA.bits(),
                id: i as u16,
                size: 100,
            })
            .collect();
        v[0].size = (100 * n) as u16;
        if let Some(l) = v.last_mut() {
            l.flags = 0;
        }
        v
    };
    assert_eq!(parse(&chain(18)).unwrap().drop, None);
    let c = parse(&chain(19)).unwrap();
    assert!(matches!(c.drop, Some(FaultReason::TooManySlots { .. })));
    assert_eq!(c.slots.len(), 19);
    assert!(parse(&chain(20)).unwrap().drop.is_some());
    assert!(matches!(
        parse(&chain(21)),
        Err(Fault::Fatal(FaultReason::TooManySlots { .. }))
    ));
    assert!(matches!(parse(&chain(300)), Err(Fault::Fatal(_))));
    let frags: Vec<_> = (0..19).map(|i| frag(i, 10)).collect();
    let mut v = Vec::new();
    assert_eq!(
        encode_tx_chain(TxFlags::empty(), &frags, &[], &[], |s| v.push(s)),
        Err(EncodeError::TooManySlots { slots: 19 })
    );
}

#[test]
fn rx_chains() {
    let gso = NetifExtraInfo::encode(
        &Extra::Gso {
            size: 1448,
            gso_type: GsoType::TcpV4,
            features: 0,
        },
        false,
    )
    .to_rx_slot();
    let rsps = [
        NetifRxResponse {
            id: 0,
            offset: 0,
            flags: (RxFlags::MORE_DATA | RxFlags::EXTRA_INFO).bits(),
            status: 4096,
        },
        gso,
        NetifRxResponse {
            id: 2,
            offset: 10,
            flags: 0,
            status: 100,
        },
    ];
    let mut it = rsps.iter().copied();
    let c = parse_rx_chain(|| it.next()).unwrap();
    assert_eq!(c.total_len, 4196);
    assert_eq!(c.drop, None);
    assert!(c.extras.gso.is_some());
    assert_eq!(
        c.fragments().collect::<Vec<_>>(),
        vec![(0, 0, 4096), (2, 10, 100)]
    );
    assert_eq!(c.slots.len(), 3);

    let bad = [
        NetifRxResponse {
            id: 0,
            offset: 0,
            flags: RxFlags::MORE_DATA.bits(),
            status: -1,
        },
        NetifRxResponse {
            id: 1,
            offset: 4000,
            flags: 0,
            status: 200,
        },
    ];
    let mut it = bad.iter().copied();
    let c = parse_rx_chain(|| it.next()).unwrap();
    assert_eq!(c.drop, Some(FaultReason::ErrorStatus { status: -1 }));
    assert_eq!(c.slots.len(), 2);
    let mut it = bad[..1].iter().copied();
    assert!(parse_rx_chain(|| it.next()).unwrap_err().is_fatal());
}

#[test]
fn staged_tx_chains() {
    let enc = |staged: u16, rest: &[TxFragment]| {
        let mut v = Vec::new();
        encode_staged_tx_chain(TxFlags::empty(), staged, 9, rest, &[], &[], |s| v.push(s)).unwrap();
        v
    };
    let parse = |v: &[NetifTxRequest]| {
        let mut it = v.iter().copied();
        parse_tx_chain(|| it.next())
    };
    // Head staged, rest granted.
    let v = enc(100, &[frag(1, 4096), frag(2, 50)]);
    let c = parse(&v).unwrap();
    assert_eq!(
        (c.drop, c.staged, c.total_size, c.first_id()),
        (None, 100, 4246, 9)
    );
    assert_eq!(c.fragments().count(), 2);
    assert_eq!(c.data_slots(), 3);
    // Fully staged: one slot, no fragment.
    let v = enc(60, &[]);
    assert_eq!(v.len(), 1);
    let c = parse(&v).unwrap();
    assert_eq!((c.drop, c.staged, c.fragments().count()), (None, 60, 0));
    // A hostile staged length beyond the packet, or fragments that do not add up.
    let mut v = enc(60, &[]);
    v[0].offset = 5000;
    assert!(matches!(
        parse(&v).unwrap().drop,
        Some(FaultReason::BadStaged { .. })
    ));
    let mut v = enc(100, &[frag(1, 50)]);
    v[0].size = 200;
    assert!(matches!(
        parse(&v).unwrap().drop,
        Some(FaultReason::BadStaged { .. })
    ));
    assert_eq!(parse(&v).unwrap().staged, 100);
}

#[test]
fn staged_rx_chains() {
    let parse = |v: &[NetifRxResponse]| {
        let mut it = v.iter().copied();
        parse_rx_chain(|| it.next())
    };
    let first = NetifRxResponse {
        id: 0,
        offset: 100,
        flags: (RxFlags::STAGED | RxFlags::MORE_DATA).bits(),
        status: 0,
    };
    let c = parse(&[
        first,
        NetifRxResponse {
            id: 1,
            offset: 0,
            flags: 0,
            status: 50,
        },
    ])
    .unwrap();
    assert_eq!((c.drop, c.staged, c.total_len), (None, 100, 150));
    assert_eq!(
        c.fragments().collect::<Vec<_>>(),
        vec![(0, 0, 0), (1, 0, 50)]
    );
    let only = NetifRxResponse {
        flags: RxFlags::STAGED.bits(),
        ..first
    };
    let c = parse(&[only]).unwrap();
    assert_eq!((c.staged, c.total_len), (100, 100));
    // A staged first slot that also claims buffer bytes is dropped.
    let bad = NetifRxResponse { status: 10, ..only };
    assert!(matches!(
        parse(&[bad]).unwrap().drop,
        Some(FaultReason::BadStaged { .. })
    ));
}

#[test]
fn staging_buffer_requests() {
    let parse = |v: &[NetifTxRequest]| {
        let mut it = v.iter().copied();
        parse_tx_chain(|| it.next())
    };
    let zc = NetifTxRequest {
        gref: 300, // global slot id: RX slot 44 after 256 TX slots
        offset: 0,
        flags: TxFlags::STAGING_BUFFER.bits(),
        id: 3,
        size: 1000,
    };
    let c = parse(&[zc]).unwrap();
    assert_eq!(
        (c.drop, c.staging_buffer, c.staged, c.fragments().count()),
        (None, Some(300), 1000, 0)
    );
    // It must describe the whole packet alone.
    let mut bad = zc;
    bad.flags |= TxFlags::MORE_DATA.bits();
    let tail = NetifTxRequest {
        gref: 1,
        offset: 0,
        flags: 0,
        id: 4,
        size: 10,
    };
    assert_eq!(
        parse(&[bad, tail]).unwrap().drop,
        Some(FaultReason::BadStagingBuffer)
    );
    let mut bad = zc;
    bad.flags |= TxFlags::STAGED.bits();
    assert_eq!(
        parse(&[bad]).unwrap().drop,
        Some(FaultReason::BadStagingBuffer)
    );
}
