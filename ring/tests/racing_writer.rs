//! A double fetch under a racing writer: a hostile frontend rewrites the TX requests of a
//! multi-slot packet while the backend takes and parses them. Each request is read once
//! into a private copy and every check and use is made on that copy, so whatever the
//! writer does, a chain the parser accepts is consistent with itself: its fragments fit
//! their pages and add up to the size its first slot claims.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use netstage_ring::netif::{parse_tx_chain_into, NetifTxRequest, TxChain, TxFlags, TxRing};
use netstage_ring::sring::{BackRing, FrontRing};
use netstage_ring::SharedMem;

/// Byte offset of request slot `i` in a TX ring page (the sring header is 64 bytes; each
/// entry is the 12-byte request, a union with the 4-byte response).
fn slot(i: usize) -> usize {
    64 + 12 * i
}

#[test]
fn a_racing_writer_never_makes_an_accepted_chain_inconsistent() {
    let page = SharedMem::new_zeroed(4096);
    let stop = Arc::new(AtomicBool::new(false));
    // The writer flips every field of the first 8 slots between two packets' worth of
    // values, as fast as it can, for the whole test.
    let writer = {
        let (page, stop) = (page.clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let mut flip = 0u16;
            while !stop.load(Ordering::Relaxed) {
                flip = flip.wrapping_add(1);
                for i in 0..8 {
                    let size: u16 = if flip % 2 == 0 {
                        700
                    } else {
                        3000 + flip % 1200
                    };
                    let offset: u16 = flip.wrapping_mul(37).wrapping_add(i as u16 * 100) % 4096;
                    let _ = page.write_at(slot(i) + 4, &offset.to_le_bytes());
                    let _ = page.write_at(slot(i) + 10, &size.to_le_bytes());
                    let flags: u16 = if i < 7 { TxFlags::MORE_DATA.bits() } else { 0 };
                    let _ = page.write_at(slot(i) + 6, &flags.to_le_bytes());
                }
            }
        })
    };
    let mut chain = TxChain::default();
    let (mut accepted, mut refused) = (0u32, 0u32);
    let start = std::time::Instant::now();
    let mut round = 0u32;
    // At least 20,000 rounds, and on until both outcomes were seen (at most 20 s: a writer
    // thread not scheduled at all on a loaded machine must not make the test vacuous).
    while round < 20_000 || ((accepted == 0 || refused == 0) && start.elapsed().as_secs() < 20) {
        round += 1;
        // A fresh ring each round, the 8 requests published by the frontend's index.
        let _ = page.write_at(0, &[0u8; 16]);
        let mut front = FrontRing::<TxRing>::init(page.clone()).unwrap();
        for i in 0..8u16 {
            front
                .put_request(&NetifTxRequest {
                    gref: 8 + u32::from(i),
                    offset: 0,
                    flags: if i < 7 { TxFlags::MORE_DATA.bits() } else { 0 },
                    id: i,
                    size: 100,
                })
                .unwrap();
        }
        front.push_requests().unwrap();
        let mut back = BackRing::<TxRing>::attach(page.clone()).unwrap();
        back.refresh_requests().unwrap();
        let parsed = parse_tx_chain_into(|| back.take_request().ok().flatten(), &mut chain);
        if parsed.is_err() || chain.drop.is_some() {
            refused += 1;
            continue;
        }
        accepted += 1;
        let frags: u32 = chain.fragments().map(|(_, _, len)| u32::from(len)).sum();
        assert_eq!(
            frags + u32::from(chain.staged),
            u32::from(chain.total_size),
            "round {round}: {chain:?}"
        );
        for (_, offset, len) in chain.fragments() {
            assert!(
                usize::from(offset) + usize::from(len) <= 4096,
                "round {round}: a fragment crosses its page: {chain:?}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // Both outcomes happened: the race was real, and accepted chains were checked.
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}
