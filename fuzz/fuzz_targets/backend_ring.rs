//! A shared TX ring page written entirely by a hostile frontend (indexes, event counters and
//! every slot): the backend attaches, takes every request it is offered and parses each
//! chain, and never takes more than the ring holds; errors are typed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstage_ring::netif::{parse_tx_chain, TxRing};
use netstage_ring::sring::BackRing;
use netstage_ring::SharedMem;

fuzz_target!(|data: &[u8]| {
    let mem = SharedMem::new_zeroed(4096);
    let n = data.len().min(4096);
    if mem.write_at(0, &data[..n]).is_err() {
        return;
    }
    let Ok(mut b) = BackRing::<TxRing>::attach(mem) else {
        return;
    };
    let Ok(offered) = b.refresh_requests() else {
        return;
    };
    assert!(offered <= 256);
    let mut taken = 0;
    loop {
        let mut done = false;
        let r = parse_tx_chain(|| match b.take_request() {
            Ok(Some(r)) => {
                taken += 1;
                Some(r)
            }
            _ => {
                done = true;
                None
            }
        });
        assert!(taken <= offered);
        if done || r.is_err() {
            break;
        }
    }
});
