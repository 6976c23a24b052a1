//! Property tests: ring and flex-ring index arithmetic across the 2^32 wrap, and parsers
//! that never panic on arbitrary peer data.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use netstage_ring::flex::{self, End};
use netstage_ring::mock::HostilePeer;
use netstage_ring::netif::*;
use netstage_ring::sring::{BackRing, FrontRing, RingError};
use netstage_ring::staging::{read_list, SlotLayout, ENTRIES_PER_PAGE};
use netstage_ring::SharedMem;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put(u8),
    Push,
    Serve(u8),
    PushRsp,
    Collect,
    FinalReq,
    FinalRsp,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..64).prop_map(Op::Put),
        2 => Just(Op::Push),
        3 => (1u8..64).prop_map(Op::Serve),
        2 => Just(Op::PushRsp),
        2 => Just(Op::Collect),
        1 => Just(Op::FinalReq),
        1 => Just(Op::FinalRsp),
    ]
}

fn start() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        (0u32..2048).prop_map(|d| u32::MAX - d),
        any::<u32>()
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Requests come back as responses in order, ids intact, free counts exact, across the
    /// wrap, for single- and multi-page rings.
    #[test]
    fn ring_round_trips_across_the_wrap(
        start in start(),
        pages in prop_oneof![Just(1usize), Just(2), Just(4)],
        ops in proptest::collection::vec(op(), 1..400),
    ) {
        let mem = SharedMem::new_zeroed(pages * 4096);
        let mut f = FrontRing::<TxRing>::init_at(mem.clone(), start).unwrap();
        let mut b = BackRing::<TxRing>::attach(mem).unwrap();
        let size = f.size();
        let mut next_id = 0u16;
        let mut in_flight: VecDeque<u16> = VecDeque::new(); // put, not yet collected
        let mut taken: VecDeque<u16> = VecDeque::new(); // taken by back, not answered
        let mut published = 0usize; // of in_flight, how many the front published
        let mut taken_total = 0usize; // of in_flight, how many the back took
        for op in ops {
            match op {
                Op::Put(n) => {
                    for _ in 0..n {
                        let r = NetifTxRequest { id: next_id, size: 60, ..Default::default() };
                        if in_flight.len() as u32 == size {
                            prop_assert!(f.is_full());
                            prop_assert_eq!(f.put_request(&r), Err(RingError::Full { size }));
                            break;
                        }
                        f.put_request(&r).unwrap();
                        in_flight.push_back(next_id);
                        next_id = next_id.wrapping_add(1);
                    }
                    prop_assert_eq!(f.free_requests(), size - in_flight.len() as u32);
                }
                Op::Push => {
                    f.push_requests_and_check_notify().unwrap();
                    published = in_flight.len();
                }
                Op::Serve(n) => {
                    let avail = b.refresh_requests().unwrap() as usize;
                    prop_assert_eq!(avail, published - taken_total);
                    for _ in 0..n {
                        match b.take_request().unwrap() {
                            Some(r) => {
                                prop_assert_eq!(Some(&r.id), in_flight.get(taken_total));
                                taken.push_back(r.id);
                                taken_total += 1;
                            }
                            None => break,
                        }
                    }
                    while let Some(id) = taken.pop_front() {
                        b.put_response(&NetifTxResponse { id, status: 0 }).unwrap();
                    }
                    prop_assert_eq!(b.put_response(&NetifTxResponse::default()), Err(RingError::NoRequestToAnswer));
                }
                Op::PushRsp => {
                    b.push_responses_and_check_notify().unwrap();
                }
                Op::Collect => {
                    f.refresh_responses().unwrap();
                    while let Some(r) = f.take_response().unwrap() {
                        prop_assert_eq!(Some(r.id), in_flight.pop_front());
                        published -= 1;
                        taken_total -= 1;
                    }
                }
                Op::FinalReq => { b.final_check_for_requests().unwrap(); }
                Op::FinalRsp => { f.final_check_for_responses().unwrap(); }
            }
        }
    }

    /// Whatever a hostile frontend writes into the indexes and slots, the backend returns
    /// requests or a typed error, and never more requests than the ring holds.
    #[test]
    fn hostile_indexes_never_panic(
        start in start(),
        req_prod in any::<u32>(),
        garbage in proptest::collection::vec(any::<u8>(), 12),
        rsp_prod in any::<u32>(),
    ) {
        let mem = SharedMem::new_zeroed(4096);
        let mut f = FrontRing::<TxRing>::init_at(mem.clone(), start).unwrap();
        let mut b = BackRing::<TxRing>::attach(mem.clone()).unwrap();
        let evil = HostilePeer::new(mem);
        for i in 0..256 {
            evil.write_slot::<TxRing>(256, i, &garbage).unwrap();
        }
        evil.set_req_prod(req_prod).unwrap();
        match b.refresh_requests() {
            Ok(n) => {
                prop_assert!(n <= 256);
                let mut k = 0;
                while let Some(r) = b.take_request().unwrap() {
                    // Garbage is still parsed safely.
                    let mut it = std::iter::once(r);
                    let _ = parse_tx_chain(|| it.next());
                    k += 1;
                }
                prop_assert_eq!(k, n);
            }
            Err(e) => prop_assert!(matches!(e, RingError::RequestProdOverflow { .. }), "{}", e),
        }
        evil.set_rsp_prod(rsp_prod).unwrap();
        match f.refresh_responses() {
            Ok(n) => prop_assert_eq!(n, 0), // nothing was requested
            Err(e) => prop_assert!(matches!(e, RingError::ResponseProdOverflow { .. }), "{}", e),
        }
    }

    /// A byte stream through a flex ring arrives intact across the wrap, whatever the mix of
    /// write and read sizes.
    #[test]
    fn flex_stream_is_intact_across_the_wrap(
        start in start(),
        order in 0u32..3,
        ops in proptest::collection::vec((any::<bool>(), 0usize..5000), 1..200),
    ) {
        let intf = SharedMem::new_zeroed(4096);
        let data = SharedMem::new_zeroed(4096 << order);
        let refs: Vec<u32> = (0..1u32 << order).map(|i| i + 9).collect();
        flex::init_intf(&intf, order, &refs).unwrap();
        for off in [flex::OUT_PROD_OFFSET, flex::OUT_CONS_OFFSET] {
            intf.word(off).unwrap().store(start, Ordering::Relaxed).unwrap();
        }
        let (mut p, _) = flex::open(End::Frontend, &intf, &data, order).unwrap();
        let (_, mut c) = flex::open(End::Backend, &intf, &data, order).unwrap();
        let size = flex::flex_ring_size(order);
        let mut model: VecDeque<u8> = VecDeque::new();
        let mut counter = 0u8;
        for (write, len) in ops {
            if write {
                let bytes: Vec<u8> = (0..len).map(|_| { counter = counter.wrapping_add(1); counter }).collect();
                let n = p.write(&bytes).unwrap();
                prop_assert_eq!(n, len.min(size - model.len()));
                model.extend(&bytes[..n]);
                counter = counter.wrapping_sub((len - n) as u8);
            } else {
                let mut buf = vec![0u8; len];
                let n = c.read(&mut buf).unwrap();
                prop_assert_eq!(n, len.min(model.len()));
                let want: Vec<u8> = model.drain(..n).collect();
                prop_assert_eq!(&buf[..n], &want[..]);
                c.release().unwrap();
            }
        }
    }

    /// Arbitrary TX slot sequences: a chain or a typed fault, never a panic; a chain that is
    /// not dropped has fragments inside their pages that add up to its total.
    #[test]
    fn tx_chain_parser_is_total(slots in proptest::collection::vec(any::<[u8; 12]>(), 0..40)) {
        let reqs: Vec<NetifTxRequest> = slots.iter().map(|b| zerocopy::transmute!(*b)).collect();
        let mut it = reqs.iter().copied();
        if let Ok(chain) = parse_tx_chain(|| it.next()) {
            prop_assert!(chain.data_slots() <= FATAL_DATA_SLOTS);
            if chain.drop.is_none() {
                let sum: u32 = chain.fragments().map(|(_, _, s)| u32::from(s)).sum();
                prop_assert_eq!(sum + u32::from(chain.staged), u32::from(chain.total_size));
                prop_assert!(chain.data_slots() <= XEN_NETIF_NR_SLOTS_MIN);
                for (_, off, s) in chain.fragments() {
                    prop_assert!(usize::from(off) + usize::from(s) <= 4096);
                }
            }
        }
    }

    /// Parsing into a chain that held another packet gives what parsing afresh gives: nothing
    /// of the earlier chain is left behind.
    #[test]
    fn a_reused_tx_chain_holds_only_the_new_packet(
        before in proptest::collection::vec(any::<[u8; 12]>(), 1..40),
        slots in proptest::collection::vec(any::<[u8; 12]>(), 0..40),
    ) {
        let reqs = |v: &[[u8; 12]]| -> Vec<NetifTxRequest> {
            v.iter().map(|b| zerocopy::transmute!(*b)).collect()
        };
        let (earlier, now) = (reqs(&before), reqs(&slots));
        let mut reused = TxChain::default();
        let mut it = earlier.iter().copied();
        let _ = parse_tx_chain_into(|| it.next(), &mut reused);
        let mut it = now.iter().copied();
        let into = parse_tx_chain_into(|| it.next(), &mut reused);
        let mut it = now.iter().copied();
        match parse_tx_chain(|| it.next()) {
            Ok(fresh) => {
                prop_assert!(into.is_ok());
                prop_assert_eq!(reused, fresh);
            }
            Err(e) => prop_assert_eq!(into, Err(e)),
        }
    }

    /// The same for RX chains.
    #[test]
    fn a_reused_rx_chain_holds_only_the_new_packet(
        before in proptest::collection::vec(any::<[u8; 8]>(), 1..40),
        slots in proptest::collection::vec(any::<[u8; 8]>(), 0..40),
    ) {
        let rsps = |v: &[[u8; 8]]| -> Vec<NetifRxResponse> {
            v.iter().map(|b| zerocopy::transmute!(*b)).collect()
        };
        let (earlier, now) = (rsps(&before), rsps(&slots));
        let mut reused = RxChain::default();
        let mut it = earlier.iter().copied();
        let _ = parse_rx_chain_into(|| it.next(), &mut reused);
        let mut it = now.iter().copied();
        let into = parse_rx_chain_into(|| it.next(), &mut reused);
        let mut it = now.iter().copied();
        match parse_rx_chain(|| it.next()) {
            Ok(fresh) => {
                prop_assert!(into.is_ok());
                prop_assert_eq!(reused, fresh);
            }
            Err(e) => prop_assert_eq!(into, Err(e)),
        }
    }

    /// Same for RX response chains.
    #[test]
    fn rx_chain_parser_is_total(slots in proptest::collection::vec(any::<[u8; 8]>(), 0..40)) {
        let rsps: Vec<NetifRxResponse> = slots.iter().map(|b| zerocopy::transmute!(*b)).collect();
        let mut it = rsps.iter().copied();
        if let Ok(chain) = parse_rx_chain(|| it.next()) {
            if chain.drop.is_none() {
                let sum: u32 = chain.fragments().map(|(_, _, l)| u32::from(l)).sum();
                prop_assert_eq!(sum + u32::from(chain.staged), chain.total_len);
                prop_assert!(chain.total_len as usize <= XEN_NETIF_MAX_TX_SIZE);
                for (_, off, l) in chain.fragments() {
                    prop_assert!(usize::from(off) + usize::from(l) <= 4096);
                }
            }
        }
    }

    /// Arbitrary data-list pages: a validated list or a typed error.
    #[test]
    fn data_list_reader_is_total(
        words in proptest::collection::vec(any::<u64>(), ENTRIES_PER_PAGE),
        data_len in 64u32..=65536,
        slots in 1u32..300,
    ) {
        let l = SlotLayout::new(data_len, slots).unwrap();
        let pages: Vec<SharedMem> = (0..l.list_pages()).map(|_| SharedMem::new_zeroed(4096)).collect();
        for p in &pages {
            for (i, w) in words.iter().enumerate() {
                p.write_obj(i * 8, w).unwrap();
            }
        }
        if let Ok(entries) = read_list(&l, &pages) {
            prop_assert_eq!(entries.len(), l.entries());
            prop_assert!(entries.iter().all(|e| e.gref != 0 && e.flags == 0));
        }
    }

    /// A data ring's interface page as a hostile peer may write it (the fuzz target
    /// `flex_ring`'s input): its configuration is validated, and a backend's consumer reads,
    /// skips and releases without reading more than the ring holds, never panicking.
    #[test]
    fn a_hostile_data_ring_interface_page_is_validated_and_never_overread(
        page in proptest::collection::vec(any::<u8>(), 0..4096),
        indexes in proptest::array::uniform4(any::<u32>()),
        order in 0u32..4,
        steps in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let intf = SharedMem::new_zeroed(4096);
        intf.write_at(0, &page).unwrap();
        // Often a sane order and refs with hostile indexes, sometimes garbage throughout.
        if page.len() % 2 == 0 {
            flex::init_intf(&intf, order, &vec![8; 1 << order]).unwrap();
            for (off, v) in [
                flex::IN_PROD_OFFSET,
                flex::IN_CONS_OFFSET,
                flex::OUT_PROD_OFFSET,
                flex::OUT_CONS_OFFSET,
            ]
            .into_iter()
            .zip(indexes)
            {
                intf.write_at(off, &v.to_le_bytes()).unwrap();
            }
        }
        let Ok(cfg) = flex::read_intf_config(&intf, 3) else {
            return Ok(());
        };
        let ring = SharedMem::new_zeroed(4096 << cfg.order);
        let Ok((_, mut c)) = flex::open(End::Backend, &intf, &ring, cfg.order) else {
            return Ok(());
        };
        let size = flex::flex_ring_size(cfg.order);
        let mut buf = vec![0u8; 1500];
        for step in steps {
            let r = match step % 3 {
                0 => c.read(&mut buf).map(|got| {
                    assert!(got <= buf.len() && got <= size);
                }),
                1 => c.skip(usize::from(step)).map(|_| ()),
                _ => c.release().map(|_| ()),
            };
            if r.is_err() {
                break;
            }
        }
    }
}
