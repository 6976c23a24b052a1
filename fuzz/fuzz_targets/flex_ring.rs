//! A data ring whose interface page (indexes, order, references) a hostile peer wrote: the
//! configuration is validated, and a consumer reads, skips and releases without ever reading
//! more than the ring holds or panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstage_ring::flex::{self, End};
use netstage_ring::SharedMem;

fuzz_target!(|data: &[u8]| {
    let intf = SharedMem::new_zeroed(4096);
    let n = data.len().min(4096);
    if intf.write_at(0, &data[..n]).is_err() {
        return;
    }
    let Ok(cfg) = flex::read_intf_config(&intf, 3) else {
        return;
    };
    let ring = SharedMem::new_zeroed(4096 << cfg.order);
    let Ok((_, mut c)) = flex::open(End::Backend, &intf, &ring, cfg.order) else {
        return;
    };
    let size = flex::flex_ring_size(cfg.order);
    let mut buf = vec![0u8; 1500];
    for step in data.iter().take(64) {
        match step % 3 {
            0 => match c.read(&mut buf) {
                Ok(got) => assert!(got <= buf.len() && got <= size),
                Err(_) => return,
            },
            1 => {
                if c.skip(usize::from(*step)).is_err() {
                    return;
                }
            }
            _ => {
                if c.release().is_err() {
                    return;
                }
            }
        }
    }
});
