//! Unit tests of `ring::mem`: bounds, copies at every alignment, atomic words, guarded windows.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use netstage_ring::mem::*;

#[test]
fn bounds_are_checked() {
    let m = SharedMem::new_zeroed(4096);
    let mut b = [0u8; 8];
    assert!(m.read_at(4088, &mut b).is_ok());
    assert_eq!(
        m.read_at(4089, &mut b),
        Err(MemError::OutOfBounds {
            offset: 4089,
            len: 8,
            size: 4096
        })
    );
    assert!(m.read_at(usize::MAX, &mut b).is_err());
    assert!(m.write_at(4090, &[0; 7]).is_err());
    assert!(m.sub(4000, 97).is_err());
    assert!(m.sub(4000, 96).is_ok());
    assert!(m.word(4093).is_err());
    assert_eq!(m.word(2).unwrap_err(), MemError::Misaligned { offset: 2 });
    assert!(m.fill(4095, 2, 0).is_err());
}

#[test]
fn copies_round_trip_at_every_alignment() {
    // Offsets cover every alignment of the shared side up to twice the widest word the copies
    // use, lengths every path through them (bytes only, single words, blocks of four words,
    // and ragged tails); the private side is misaligned too. Bytes around the range must keep
    // their guard pattern.
    const SIZE: usize = 2048;
    let m = SharedMem::new_zeroed(SIZE);
    let lens = [
        0usize, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129,
    ];
    for off in 0..40 {
        for len in lens.into_iter().chain([255, 256, 257, 1000, 1500]) {
            m.fill(0, SIZE, 0xee).unwrap();
            let src: Vec<u8> = (0..len + 3).map(|i| (i * 7 + off) as u8).collect();
            let src = &src[off % 4..off % 4 + len];
            m.write_at(off, src).unwrap();
            let mut whole = vec![0u8; SIZE];
            m.read_at(0, &mut whole).unwrap();
            assert!(
                whole[..off].iter().all(|&b| b == 0xee),
                "off {off} len {len}: before"
            );
            assert!(
                whole[off + len..].iter().all(|&b| b == 0xee),
                "off {off} len {len}: after"
            );
            let mut dst = vec![0u8; len + 5];
            let at = off % 5;
            m.read_at(off, &mut dst[at..at + len]).unwrap();
            assert_eq!(src, &dst[at..at + len], "off {off} len {len}");
            assert!(
                dst[..at].iter().chain(&dst[at + len..]).all(|&b| b == 0),
                "off {off} len {len}: private"
            );
        }
    }
}

#[test]
fn a_prefetch_is_only_a_hint() {
    let m = SharedMem::new_zeroed(4096);
    m.write_at(0, &[7; 64]).unwrap();
    // In bounds, empty, past the end, overflowing: no fault, nothing changed.
    for (off, len) in [
        (0, 64),
        (4095, 1),
        (0, 4096),
        (100, 0),
        (4090, 100),
        (usize::MAX, 2),
    ] {
        m.prefetch(off, len);
    }
    m.read_only().prefetch(0, 4096);
    let mut b = [0u8; 65];
    m.read_at(0, &mut b).unwrap();
    assert_eq!(&b[..64], &[7; 64]);
    assert_eq!(b[64], 0);
}

#[test]
fn wire_structures_are_written_whole_at_every_alignment() {
    use netstage_ring::netif::NetifTxRequest;
    let req = NetifTxRequest {
        gref: 0x0403_0201,
        offset: 0x0605,
        flags: 0x0807,
        id: 0x0a09,
        size: 0x0c0b,
    };
    let m = SharedMem::new_zeroed(64);
    // Aligned (one store of the structure) and not (byte stores): the same bytes, nothing
    // around them touched, and read back as written.
    for off in 0..9 {
        m.fill(0, 64, 0xee).unwrap();
        m.write_obj(off, &req).unwrap();
        let mut whole = [0u8; 64];
        m.read_at(0, &mut whole).unwrap();
        assert!(whole[..off].iter().all(|&b| b == 0xee), "off {off}");
        assert_eq!(
            &whole[off..off + 12],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            "off {off}"
        );
        assert!(whole[off + 12..].iter().all(|&b| b == 0xee), "off {off}");
        assert_eq!(m.read_obj::<NetifTxRequest>(off).unwrap(), req, "off {off}");
    }
    assert!(m.write_obj(53, &req).is_err());
    assert!(m.read_only().write_obj(4, &req).is_err());
}

#[test]
fn blocks_are_read_as_little_endian_words_at_every_alignment() {
    const SIZE: usize = 1024;
    let m = SharedMem::new_zeroed(SIZE);
    let bytes: Vec<u8> = (0..SIZE).map(|i| (i * 13 + i / 7) as u8).collect();
    m.write_at(0, &bytes).unwrap();
    for off in 0..40 {
        for len in [0usize, 1, 31, 32, 33, 63, 64, 65, 500, SIZE - off] {
            let mut words = Vec::new();
            let read = m.read_blocks_le(off, len, |q| words.extend(q)).unwrap();
            assert_eq!(read, len / 32 * 32, "off {off} len {len}");
            let want: Vec<u64> = bytes[off..off + read]
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
                .collect();
            assert_eq!(words, want, "off {off} len {len}");
        }
    }
    // A window into the memory reads from its own start.
    let w = m.sub(3, 100).unwrap();
    let mut words = Vec::new();
    assert_eq!(w.read_blocks_le(5, 64, |q| words.extend(q)).unwrap(), 64);
    assert_eq!(
        words[0],
        u64::from_le_bytes(bytes[8..16].try_into().unwrap())
    );
    assert!(w.read_blocks_le(40, 64, |_| {}).is_err());
    // A range past the end is refused before anything is read.
    let mut called = false;
    assert!(m.read_blocks_le(SIZE - 31, 32, |_| called = true).is_err());
    assert!(m
        .read_blocks_le(usize::MAX - 7, 64, |_| called = true)
        .is_err());
    assert!(!called);
}

#[test]
fn sub_windows_address_the_same_memory() {
    let m = SharedMem::new_zeroed(8192);
    let s = m.sub(4096, 4096).unwrap();
    s.write_at(10, b"hello").unwrap();
    let mut b = [0u8; 5];
    m.read_at(4106, &mut b).unwrap();
    assert_eq!(&b, b"hello");
    s.word(64)
        .unwrap()
        .store(0xdead_beef, Ordering::Release)
        .unwrap();
    assert_eq!(m.read_obj::<u32>(4096 + 64).unwrap(), 0xdead_beef);
    let mut dst = SharedMem::new_zeroed(16);
    m.copy_to(4106, &dst, 3, 5).unwrap();
    dst.read_at(3, &mut b).unwrap();
    assert_eq!(&b, b"hello");
    dst = dst.read_only();
    assert!(matches!(
        dst.write_at(0, b"x"),
        Err(MemError::ReadOnly { .. })
    ));
    assert!(dst.word(0).unwrap().store(1, Ordering::Relaxed).is_err());
}

#[test]
fn objects_at_aligned_and_unaligned_offsets() {
    let m = SharedMem::new_zeroed(64);
    for off in [0usize, 1, 2, 3, 4, 8, 13] {
        m.write_obj(off, &0x1122_3344_5566_7788u64).unwrap();
        assert_eq!(
            m.read_obj::<u64>(off).unwrap(),
            0x1122_3344_5566_7788,
            "at {off}"
        );
        let mut b = [0u8; 8];
        m.read_at(off, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 0x1122_3344_5566_7788);
    }
    assert!(m.read_obj::<u64>(57).is_err());
    assert!(m.read_only().write_obj(0, &1u32).is_err());
}

#[test]
fn atomic_words_of_every_width() {
    let m = SharedMem::new_zeroed(64);
    let w16 = m.word16(2).unwrap();
    assert_eq!(w16.fetch_or(0b101, Ordering::AcqRel).unwrap(), 0);
    assert_eq!(
        w16.compare_exchange(0b101, 7, Ordering::AcqRel, Ordering::Acquire)
            .unwrap(),
        Ok(0b101)
    );
    assert_eq!(
        w16.compare_exchange(0b101, 9, Ordering::AcqRel, Ordering::Acquire)
            .unwrap(),
        Err(7)
    );
    assert_eq!(w16.fetch_and(!1, Ordering::AcqRel).unwrap(), 7);
    assert_eq!(m.read_obj::<u16>(2).unwrap(), 6);
    let w64 = m.word64(8).unwrap();
    w64.fetch_add(u64::MAX, Ordering::Relaxed).unwrap();
    assert_eq!(w64.fetch_add(2, Ordering::Relaxed).unwrap(), u64::MAX);
    assert_eq!(w64.load(Ordering::Relaxed), 1);
    let w32 = m.word(16).unwrap();
    assert_eq!(w32.swap(5, Ordering::AcqRel).unwrap(), 0);
    assert_eq!(w32.fetch_sub(6, Ordering::AcqRel).unwrap(), 5);
    assert_eq!(w32.load(Ordering::Acquire), u32::MAX);
    assert!(m.word16(1).is_err());
    assert!(m.word64(4).is_err());
    assert!(m.word64(60).is_err());
    let ro = m.read_only().word(16).unwrap();
    assert!(ro.swap(1, Ordering::Relaxed).is_err());
    assert!(ro
        .compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed)
        .is_err());
}

#[test]
fn guarded_windows_drop_their_guard_last() {
    struct Flag(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let m = SharedMem::new_zeroed(8192);
    let w = m
        .sub_guarded(4096, 4096, false, Arc::new(Flag(Arc::clone(&dropped))))
        .unwrap();
    assert!(!w.is_writable());
    let inner = w.sub(0, 16).unwrap();
    drop(w);
    assert!(!dropped.load(Ordering::SeqCst));
    drop(inner);
    assert!(dropped.load(Ordering::SeqCst));
    let ro = m.read_only();
    assert!(ro.sub_guarded(0, 1, true, Arc::new(())).is_err());
}

#[test]
fn memory_outlives_the_first_window() {
    let s = {
        let m = SharedMem::new_zeroed(4096);
        m.fill(0, 4096, 0xab).unwrap();
        m.sub(100, 10).unwrap()
    };
    assert_eq!(s.read_obj::<[u8; 4]>(0).unwrap(), [0xab; 4]);
}

/// Write prefetches change nothing: out of bounds and on read-only memory they are no-ops,
/// and the bytes read afterwards are those written before.
#[test]
fn write_prefetch_hints_change_nothing() {
    let mem = SharedMem::new_zeroed(4096);
    mem.write_at(100, &[7; 50]).unwrap();
    for (offset, len) in [(0, 0), (0, 4096), (100, 50), (4000, 200), (usize::MAX, 2)] {
        mem.prefetch_write(offset, len);
    }
    let mut got = [0u8; 50];
    mem.read_at(100, &mut got).unwrap();
    assert_eq!(got, [7; 50]);
    let ro = mem.read_only();
    ro.prefetch_write(0, 4096);
    ro.read_at(100, &mut got).unwrap();
    assert_eq!(got, [7; 50]);
}
