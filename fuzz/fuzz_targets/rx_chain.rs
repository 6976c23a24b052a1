//! Any sequence of RX response slots: a chain or a typed fault, never a panic; a kept chain
//! stays within netif's packet size and its fragments within their pages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstage_ring::netif::{parse_rx_chain, NetifRxResponse, XEN_NETIF_MAX_TX_SIZE};

fuzz_target!(|data: &[u8]| {
    let rsps: Vec<NetifRxResponse> = data
        .chunks_exact(8)
        .map(|c| {
            let b: [u8; 8] = c.try_into().unwrap();
            zerocopy::transmute!(b)
        })
        .collect();
    let mut it = rsps.iter().copied();
    if let Ok(chain) = parse_rx_chain(|| it.next()) {
        if chain.drop.is_none() {
            let sum: u32 = chain.fragments().map(|(_, _, l)| u32::from(l)).sum();
            assert_eq!(sum + u32::from(chain.staged), chain.total_len);
            assert!(chain.total_len as usize <= XEN_NETIF_MAX_TX_SIZE);
            for (_, off, l) in chain.fragments() {
                assert!(usize::from(off) + usize::from(l) <= 4096);
            }
        }
    }
});
