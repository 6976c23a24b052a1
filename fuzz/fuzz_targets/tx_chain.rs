//! Any sequence of TX request slots: a chain or a typed fault, never a panic; a chain that is
//! not dropped has fragments inside their pages that add up to its total.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstage_ring::netif::{
    parse_tx_chain, NetifTxRequest, FATAL_DATA_SLOTS, XEN_NETIF_NR_SLOTS_MIN,
};

fuzz_target!(|data: &[u8]| {
    let reqs: Vec<NetifTxRequest> = data
        .chunks_exact(12)
        .map(|c| {
            let b: [u8; 12] = c.try_into().unwrap();
            zerocopy::transmute!(b)
        })
        .collect();
    let mut it = reqs.iter().copied();
    if let Ok(chain) = parse_tx_chain(|| it.next()) {
        assert!(chain.data_slots() <= FATAL_DATA_SLOTS);
        if chain.drop.is_none() {
            let sum: u32 = chain.fragments().map(|(_, _, s)| u32::from(s)).sum();
            assert_eq!(sum + u32::from(chain.staged), u32::from(chain.total_size));
            assert!(chain.data_slots() <= XEN_NETIF_NR_SLOTS_MIN);
            for (_, off, s) in chain.fragments() {
                assert!(usize::from(off) + usize::from(s) <= 4096);
            }
        }
    }
});
