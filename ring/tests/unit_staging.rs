//! Unit tests of `ring::staging`: RFC geometry, list round trips, malformed lists, bounded slots.

use netstage_ring::staging::*;
use netstage_ring::{MemError, SharedMem, XEN_PAGE_SIZE};

fn pages(n: usize) -> Vec<SharedMem> {
    (0..n)
        .map(|_| SharedMem::new_zeroed(XEN_PAGE_SIZE))
        .collect()
}

#[test]
fn geometry_of_the_rfc_examples() {
    // 128-byte slots x 256 = 8 pages, 32 per page; slot #34 (1-based) is the 2nd slot of
    // the 2nd page.
    let l = SlotLayout::new(128, 256).unwrap();
    assert_eq!(l.data_pages(), 8);
    assert_eq!(l.slots_per_page(), 32);
    let e = l.natural_entries(&(512..520).collect::<Vec<_>>()).unwrap();
    assert_eq!((e[33].gref, e[33].offset), (513, 128));
    assert_eq!(l.list_pages(), 1);
    let l = SlotLayout::new(256, 256).unwrap();
    assert_eq!(l.slots_per_page(), 16);
    let l = SlotLayout::new(65536, 256).unwrap();
    assert_eq!(l.entries(), 4096);
    assert_eq!(l.list_pages(), 8);
    assert_eq!(l.granted_bytes(), (4096 + 8) * 4096);
    assert!(SlotLayout::new(63, 256).is_err());
    assert!(SlotLayout::new(65537, 256).is_err());
    assert!(SlotLayout::new(64, 0).is_err());
}

#[test]
fn list_round_trip_with_and_without_terminator() {
    for (len, slots) in [(256u32, 256u32), (4096, 512), (8192, 256), (100, 7)] {
        let l = SlotLayout::new(len, slots).unwrap();
        let grefs: Vec<u32> = (0..l.data_pages() as u32).map(|i| 1000 + i).collect();
        let entries = l.natural_entries(&grefs).unwrap();
        let list = pages(l.list_pages());
        // Dirty the pages: the terminator must be written, not assumed.
        for p in &list {
            p.fill(0, XEN_PAGE_SIZE, 0xff).unwrap();
        }
        write_list(&l, &list, &entries).unwrap();
        assert_eq!(read_list(&l, &list).unwrap(), entries, "{len} x {slots}");
        assert_eq!(distinct_grefs(&entries), grefs);
    }
}

#[test]
fn malformed_lists_are_rejected() {
    let l = SlotLayout::new(256, 256).unwrap();
    let grefs: Vec<u32> = (1..=16).collect();
    let entries = l.natural_entries(&grefs).unwrap();
    let list = pages(1);
    write_list(&l, &list, &entries).unwrap();
    // Early terminator.
    list[0].write_obj(8 * 10, &StagingEntry::default()).unwrap();
    assert_eq!(
        read_list(&l, &list),
        Err(StagingError::ListTooShort {
            found: 10,
            expected: 256
        })
    );
    write_list(&l, &list, &entries).unwrap();
    // Missing terminator.
    list[0]
        .write_obj(
            8 * 256,
            &StagingEntry {
                gref: 5,
                offset: 0,
                flags: 0,
            },
        )
        .unwrap();
    assert_eq!(
        read_list(&l, &list),
        Err(StagingError::MissingTerminator { expected: 256 })
    );
    write_list(&l, &list, &entries).unwrap();
    // A slot crossing its page, reserved flags.
    list[0]
        .write_obj(
            8 * 3,
            &StagingEntry {
                gref: 5,
                offset: 3900,
                flags: 0,
            },
        )
        .unwrap();
    assert!(matches!(
        read_list(&l, &list),
        Err(StagingError::BadEntry { index: 3, .. })
    ));
    list[0]
        .write_obj(
            8 * 3,
            &StagingEntry {
                gref: 5,
                offset: 0,
                flags: 1,
            },
        )
        .unwrap();
    assert!(matches!(
        read_list(&l, &list),
        Err(StagingError::BadEntry { index: 3, .. })
    ));
    assert!(read_list(&l, &pages(2)).is_err());
}

#[test]
fn slot_access_is_bounded() {
    for len in [256u32, 10000] {
        let l = SlotLayout::new(len, 16).unwrap();
        let data = pages(l.data_pages());
        let front = SlotArea::natural(l, &data).unwrap();
        let grefs: Vec<u32> = (0..data.len() as u32).map(|i| 77 + i).collect();
        let entries = l.natural_entries(&grefs).unwrap();
        let mapped: Vec<(u32, SharedMem)> = grefs
            .iter()
            .copied()
            .zip(data.iter().map(|m| m.read_only()))
            .collect();
        let back = SlotArea::new(l, &entries, &mapped).unwrap();
        let payload: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
        front.write(15, 0, &payload).unwrap();
        front.write(14, 0, &payload).unwrap();
        let mut got = vec![0u8; len as usize];
        back.read(15, 0, &mut got).unwrap();
        assert_eq!(got, payload);
        assert!(matches!(
            back.write(1, 0, b"x"),
            Err(StagingError::Mem(MemError::ReadOnly { .. }))
        ));
        assert_eq!(
            back.read(16, 0, &mut got[..1]),
            Err(StagingError::SlotOutOfRange { id: 16, slots: 16 })
        );
        assert!(matches!(
            back.read(0, 1, &mut got),
            Err(StagingError::RangeOutOfSlot { .. })
        ));
        assert!(matches!(
            back.read(0, usize::MAX, &mut got[..2]),
            Err(StagingError::RangeOutOfSlot { .. })
        ));
    }
}
