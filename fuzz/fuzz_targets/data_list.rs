//! The staging data list pages a hostile frontend granted: a validated list with one entry
//! per slot, or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netstage_ring::staging::{read_list, SlotLayout};
use netstage_ring::SharedMem;

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let data_len = 64 + u32::from(u16::from_le_bytes([data[0], data[1]])) % 65473;
    let slots = 1 + u32::from(u16::from_le_bytes([data[2], data[3]])) % 512;
    let Ok(l) = SlotLayout::new(data_len, slots) else {
        return;
    };
    let body = &data[4..];
    let pages: Vec<SharedMem> = (0..l.list_pages())
        .map(|i| {
            let p = SharedMem::new_zeroed(4096);
            let from = (i * 4096).min(body.len());
            let to = ((i + 1) * 4096).min(body.len());
            let _ = p.write_at(0, &body[from..to]);
            p
        })
        .collect();
    if let Ok(entries) = read_list(&l, &pages) {
        assert_eq!(entries.len(), l.entries());
        assert!(entries.iter().all(|e| e.gref != 0 && e.flags == 0));
    }
});
