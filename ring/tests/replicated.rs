//! RFC rev 1's replicated head (`staging::ReplicatedHead`, the `slots-rfc` design): which
//! bytes of a packet its slots hold, and how a parsed chain is marked with them, for every
//! `data-len` and any chain a peer may send.

use netstage_ring::netif::*;
use netstage_ring::staging::{ReplicatedHead, StagingError};
use proptest::prelude::*;

/// The bytes replicated of each of `lens`, in order.
fn walk(data_len: u32, lens: &[usize]) -> Vec<usize> {
    let mut c = ReplicatedHead::new(data_len).unwrap().start();
    lens.iter().map(|&l| c.take(l)).collect()
}

#[test]
fn data_len_and_slot_size() {
    for bad in [0, 63, 65537, u32::MAX] {
        assert_eq!(ReplicatedHead::new(bad), Err(StagingError::BadDataLen(bad)));
    }
    let small = ReplicatedHead::new(256).unwrap();
    assert_eq!((small.data_len(), small.slot_len()), (256, 256));
    let l = small.layout(256).unwrap();
    assert_eq!((l.data_len(), l.data_pages(), l.list_pages()), (256, 16, 1));
    // Above a page: the list of data-len 4096 (a page per id, one entry each), not 16 pages
    // per slot.
    for big in [4097, 8192, 65536] {
        let h = ReplicatedHead::new(big).unwrap();
        let l = h.layout(256).unwrap();
        assert_eq!(
            (h.slot_len(), l.entries(), l.data_pages()),
            (4096, 256, 256)
        );
        assert_eq!(l, ReplicatedHead::new(4096).unwrap().layout(256).unwrap());
    }
}

#[test]
fn a_page_or_less_replicates_the_first_request_only() {
    assert_eq!(walk(256, &[1500]), [256]);
    assert_eq!(walk(256, &[60]), [60]);
    assert_eq!(walk(256, &[4096, 4096, 808]), [256, 0, 0]);
    // A short first request is not topped up from the next: one grant is replicated.
    assert_eq!(walk(256, &[100, 4096]), [100, 0]);
    assert_eq!(walk(4096, &[4096, 4096]), [4096, 0]);
    assert_eq!(walk(64, &[0, 100]), [0, 0]);
}

#[test]
fn above_a_page_every_request_until_data_len() {
    assert_eq!(walk(65536, &[4096, 4096, 808]), [4096, 4096, 808]);
    assert_eq!(walk(65536, &[100, 4096, 0, 7]), [100, 4096, 0, 7]);
    assert_eq!(walk(8192, &[4096, 4096, 808]), [4096, 4096, 0]);
    assert_eq!(walk(6000, &[4096, 4096, 100]), [4096, 1904, 0]);
    // The whole largest packet.
    let lens: Vec<usize> = std::iter::repeat_n(4096, 15).chain([4095]).collect();
    assert_eq!(walk(65536, &lens), lens);
}

/// A TX chain of `frags` (the first at `first_offset`), as a frontend would put it on the
/// ring, parsed.
fn tx_chain(first_offset: u16, frags: &[u16]) -> TxChain {
    let f: Vec<TxFragment> = frags
        .iter()
        .enumerate()
        .map(|(i, &size)| TxFragment {
            id: 10 + i as u16,
            gref: 100 + i as u32,
            offset: if i == 0 { first_offset } else { 0 },
            size,
        })
        .collect();
    let mut reqs = Vec::new();
    encode_tx_chain(TxFlags::empty(), &f, &[], &[], |r| reqs.push(r)).unwrap();
    let mut it = reqs.into_iter();
    parse_tx_chain(|| it.next()).unwrap()
}

#[test]
fn a_tx_chain_keeps_its_requests_and_skips_the_replicated_bytes() {
    let mut c = tx_chain(100, &[1500, 4096, 300]);
    let mut cur = ReplicatedHead::new(256).unwrap().start();
    c.replicate(|len| cur.take(len));
    assert_eq!(c.staged, 256);
    assert_eq!(c.replicated().collect::<Vec<_>>(), [(10, 256)]);
    assert_eq!(
        c.fragments().collect::<Vec<_>>(),
        [(100, 356, 1244), (101, 0, 4096), (102, 0, 300)]
    );
    // Every request is still answered, with its own id.
    let ids: Vec<u16> = c.responses(NETIF_RSP_OKAY).map(|r| r.id).collect();
    assert_eq!(ids, [10, 11, 12]);

    let mut c = tx_chain(0, &[4096, 4096, 300]);
    let mut cur = ReplicatedHead::new(65536).unwrap().start();
    c.replicate(|len| cur.take(len));
    assert_eq!(c.staged, 8492);
    assert_eq!(c.fragments().count(), 0, "copy-only: no grant is touched");
    assert_eq!(
        c.replicated().collect::<Vec<_>>(),
        [(10, 4096), (11, 4096), (12, 300)]
    );
}

#[test]
fn flagged_and_dropped_tx_chains_are_left_alone() {
    let mut reqs = Vec::new();
    encode_staged_tx_chain(TxFlags::empty(), 60, 3, &[], &[], &[], |r| reqs.push(r)).unwrap();
    let mut it = reqs.into_iter();
    let mut c = parse_tx_chain(|| it.next()).unwrap();
    let before = c.clone();
    c.replicate(|len| len);
    assert_eq!(c, before);
    let mut short = tx_chain(0, &[10]); // shorter than an Ethernet header: dropped
    assert!(short.drop.is_some());
    let before = short.clone();
    short.replicate(|len| len);
    assert_eq!(short, before);
}

#[test]
fn an_rx_chain_keeps_its_responses_and_skips_the_replicated_bytes() {
    let rsp = |id, status, more| NetifRxResponse {
        id,
        offset: 0,
        flags: if more { RxFlags::MORE_DATA.bits() } else { 0 },
        status,
    };
    let rsps = [rsp(0, 4096, true), rsp(1, 4096, true), rsp(2, 808, false)];
    for (data_len, staged, lens) in [
        (256u32, 256u16, [3840u16, 4096, 808]),
        (4096, 4096, [0, 4096, 808]),
        (6000, 6000, [0, 2192, 808]),
        (65536, 9000, [0, 0, 0]),
    ] {
        let mut it = rsps.iter().copied();
        let mut c = parse_rx_chain(|| it.next()).unwrap();
        let mut cur = ReplicatedHead::new(data_len).unwrap().start();
        c.replicate(|len| cur.take(len));
        assert_eq!((c.staged, c.total_len), (staged, 9000), "{data_len}");
        let got: Vec<u16> = c.fragments().map(|(_, _, l)| l).collect();
        assert_eq!(got, lens, "{data_len}");
        // What the buffers still hold starts where the slot's copy ends.
        for s in &c.slots {
            assert_eq!(s.offset, s.staged);
        }
    }
}

/// A parsed chain (if it parsed) as it was and as marked for `data_len` by `mark`.
fn marked<C: Clone>(
    parsed: Result<C, Fault>,
    data_len: u32,
    mark: impl FnOnce(&mut C, &mut dyn FnMut(usize) -> usize),
) -> Option<(C, C)> {
    let before = parsed.ok()?;
    let mut c = before.clone();
    let mut cur = ReplicatedHead::new(data_len).unwrap().start();
    mark(&mut c, &mut |len| cur.take(len));
    Some((before, c))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the request sizes: each request gives at most its bytes and a slot, the
    /// replicated bytes are a prefix of the packet of min(data-len, packet) bytes above a
    /// page and come from the first request alone up to a page.
    #[test]
    fn the_walk_replicates_a_bounded_prefix(
        data_len in prop_oneof![64u32..=4096, 4097u32..=65536, Just(65536u32)],
        lens in proptest::collection::vec(0usize..=4096, 1..20),
    ) {
        let h = ReplicatedHead::new(data_len).unwrap();
        let got = walk(data_len, &lens);
        let mut open = true;
        for (k, (&n, &len)) in got.iter().zip(&lens).enumerate() {
            prop_assert!(n <= len && n <= h.slot_len() as usize);
            if !open {
                prop_assert_eq!(n, 0, "request {} after a partial one", k);
            }
            open &= n == len;
            if data_len <= 4096 && k > 0 {
                prop_assert_eq!(n, 0);
            }
        }
        let total: usize = got.iter().sum();
        let packet: usize = lens.iter().sum();
        let want = if data_len <= 4096 {
            lens[0].min(data_len as usize)
        } else {
            packet.min(data_len as usize).min(0xFFFF)
        };
        prop_assert_eq!(total, want);
    }

    /// Chains a peer may send, marked for any data-len ([`tx_marks_add_up`],
    /// [`rx_marks_add_up`]).
    #[test]
    fn marked_chains_add_up(
        tx in proptest::collection::vec(any::<[u8; 12]>(), 1..24),
        rx in proptest::collection::vec(any::<[u8; 8]>(), 1..24),
        data_len in 64u32..=65536,
    ) {
        tx_marks_add_up(&tx, data_len)?;
        rx_marks_add_up(&rx, data_len)?;
    }
}

/// Any TX chain a frontend may send, marked: the granted rest and the replicated bytes add
/// up to the packet, every fragment stays in its page, and what is replicated of a request
/// is where its grant now starts.
fn tx_marks_add_up(slots: &[[u8; 12]], data_len: u32) -> Result<(), TestCaseError> {
    let mut reqs = slots.iter().map(|b| zerocopy::transmute!(*b));
    let parsed = parse_tx_chain(|| reqs.next());
    let Some((before, c)) = marked(parsed, data_len, |c, f| c.replicate(f)) else {
        return Ok(());
    };
    if before.drop.is_some() || before.staged > 0 || before.staging_buffer.is_some() {
        prop_assert_eq!(c, before);
        return Ok(());
    }
    let granted: u32 = c.fragments().map(|(_, _, s)| u32::from(s)).sum();
    prop_assert_eq!(granted + u32::from(c.staged), u32::from(c.total_size));
    let replicated: usize = c.replicated().map(|(_, n)| n).sum();
    prop_assert_eq!(replicated, usize::from(c.staged));
    for (_, off, s) in c.fragments() {
        prop_assert!(usize::from(off) + usize::from(s) <= 4096);
    }
    for (a, b) in c.slots.iter().zip(&before.slots) {
        prop_assert_eq!(a.id, b.id);
        if let (
            TxSlotKind::Data {
                offset,
                staged,
                size,
                ..
            },
            TxSlotKind::Data {
                offset: o0,
                size: s0,
                ..
            },
        ) = (a.kind, b.kind)
        {
            prop_assert_eq!((offset, size + staged), (o0 + staged, s0));
        }
    }
    Ok(())
}

/// The same for any RX chain a backend may send.
fn rx_marks_add_up(slots: &[[u8; 8]], data_len: u32) -> Result<(), TestCaseError> {
    let mut rsps = slots.iter().map(|b| zerocopy::transmute!(*b));
    let parsed = parse_rx_chain(|| rsps.next());
    let Some((before, c)) = marked(parsed, data_len, |c, f| c.replicate(f)) else {
        return Ok(());
    };
    if before.drop.is_some() || before.flags.contains(RxFlags::STAGED) {
        prop_assert_eq!(c, before);
        return Ok(());
    }
    let rest: u32 = c.fragments().map(|(_, _, l)| u32::from(l)).sum();
    prop_assert_eq!(rest + u32::from(c.staged), c.total_len);
    let marked: u32 = c.slots.iter().map(|s| u32::from(s.staged)).sum();
    prop_assert_eq!(marked, u32::from(c.staged));
    for (a, b) in c.slots.iter().zip(&before.slots) {
        prop_assert_eq!((a.offset, a.len + a.staged), (b.offset + a.staged, b.len));
        prop_assert!(usize::from(a.offset) + usize::from(a.len) <= 4096);
    }
    Ok(())
}
