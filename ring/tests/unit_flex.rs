//! Unit tests of `ring::flex`: sizes, wrap, full rings, hostile indexes.

use std::sync::atomic::Ordering;

use netstage_ring::flex::*;
use netstage_ring::SharedMem;

fn pair(order: u32) -> (FlexProducer, FlexConsumer, FlexProducer, FlexConsumer) {
    let intf = SharedMem::new_zeroed(4096);
    let data = SharedMem::new_zeroed(4096 << order);
    let refs: Vec<u32> = (0..1u32 << order).map(|i| 10 + i).collect();
    init_intf(&intf, order, &refs).unwrap();
    let cfg = read_intf_config(&intf, order).unwrap();
    assert_eq!(cfg.refs, refs);
    let (fp, fc) = open(End::Frontend, &intf, &data, order).unwrap();
    let (bp, bc) = open(End::Backend, &intf, &data, order).unwrap();
    (fp, fc, bp, bc)
}

#[test]
fn sizes() {
    assert_eq!(flex_ring_size(0), 2048);
    assert_eq!(flex_ring_size(1), 4096);
    assert_eq!(flex_ring_size(9), 1 << 20);
}

#[test]
fn bytes_flow_both_ways_with_wrap() {
    let (mut fp, mut fc, mut bp, mut bc) = pair(1);
    let mut total = 0usize;
    for round in 0..50u32 {
        let msg: Vec<u8> = (0..1000u32).map(|i| (i + round) as u8).collect();
        assert_eq!(fp.stage(&msg).unwrap(), Some(total as u32));
        fp.publish().unwrap();
        let mut got = vec![0u8; 1000];
        bc.read_exact(&mut got).unwrap();
        bc.release().unwrap();
        assert_eq!(got, msg);
        assert_eq!(bp.write(&msg).unwrap(), 1000);
        assert_eq!(fc.read(&mut got).unwrap(), 1000);
        fc.release().unwrap();
        assert_eq!(got, msg);
        total += 1000;
    }
}

#[test]
fn full_ring_and_short_reads() {
    let (mut fp, _fc, _bp, mut bc) = pair(0);
    let big = vec![7u8; 2048];
    assert_eq!(fp.stage(&big).unwrap(), Some(0));
    assert_eq!(fp.stage(&[1]).unwrap(), None);
    assert_eq!(fp.write(&[1]).unwrap(), 0);
    fp.publish().unwrap();
    let mut b = vec![0u8; 2049];
    assert_eq!(
        bc.read_exact(&mut b),
        Err(FlexError::Short {
            wanted: 2049,
            available: 2048
        })
    );
    assert_eq!(bc.cons(), 0);
    bc.skip(1000).unwrap();
    bc.release().unwrap();
    assert_eq!(fp.refresh().unwrap(), 1000);
}

#[test]
fn hostile_indexes_and_config() {
    let intf = SharedMem::new_zeroed(4096);
    let data = SharedMem::new_zeroed(8192);
    init_intf(&intf, 1, &[1, 2]).unwrap();
    let (mut fp, mut fc) = open(End::Frontend, &intf, &data, 1).unwrap();
    intf.word(IN_PROD_OFFSET)
        .unwrap()
        .store(4097, Ordering::Relaxed)
        .unwrap();
    assert!(matches!(fc.refresh(), Err(FlexError::IndexOverflow { .. })));
    let mut b = [0u8; 1];
    assert!(fc.read(&mut b).is_err());
    // A consumer index ahead of what we produced.
    intf.word(OUT_CONS_OFFSET)
        .unwrap()
        .store(5, Ordering::Relaxed)
        .unwrap();
    assert!(matches!(fp.refresh(), Err(FlexError::IndexOverflow { .. })));
    assert!(matches!(
        open(End::Backend, &intf, &data, 1),
        Err(FlexError::IndexOverflow { .. })
    ));
    intf.word(RING_ORDER_OFFSET)
        .unwrap()
        .store(12, Ordering::Relaxed)
        .unwrap();
    assert_eq!(
        read_intf_config(&intf, 4),
        Err(FlexError::BadOrder { order: 12, max: 4 })
    );
    assert!(matches!(
        open(End::Frontend, &intf, &SharedMem::new_zeroed(4096), 1),
        Err(FlexError::BadDataLen { .. })
    ));
    assert!(init_intf(&intf, 2, &[1]).is_err());
}

/// A prefetch hint at every position across the wrap, of any length (more than the ring,
/// none, more than is queued), neither fails nor consumes: what follows reads as before.
#[test]
fn prefetch_hints_consume_nothing_across_the_wrap() {
    let (mut fp, _fc, _bp, mut bc) = pair(0);
    for round in 0..20u32 {
        let msg: Vec<u8> = (0..700u32).map(|i| (i * 7 + round) as u8).collect();
        fp.stage(&msg).unwrap();
        fp.publish().unwrap();
        for n in [0, 1, 64, 700, 2048, 1 << 20] {
            bc.prefetch_next(n);
        }
        let mut got = vec![0u8; 700];
        bc.read_exact(&mut got).unwrap();
        bc.release().unwrap();
        assert_eq!(got, msg, "round {round}");
    }
}
