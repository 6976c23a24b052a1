//! A double fetch under a racing writer on the data ring (`ring::flex`, XSA-155 class): a
//! hostile peer rewrites the producer index of the direction we consume, and the bytes
//! in it, while our consumer reads. The index is loaded once per refresh, checked, and
//! only that checked copy is used, so whatever the writer does every read stays within
//! what a valid index allowed (at most the ring's size, never outside this direction's
//! half), and an index the check refuses is a typed [`FlexError::IndexOverflow`] that
//! leaves the consumer where it was.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use netstage_ring::flex::{
    flex_ring_size, init_intf, open, End, FlexError, IN_CONS_OFFSET, IN_PROD_OFFSET,
};
use netstage_ring::{SharedMem, XEN_PAGE_SIZE};

/// Order 1: two pages, 4096 bytes each way.
const ORDER: u32 = 1;
/// What fills the other direction's half: a byte the writer never puts in ours.
const OTHER_HALF: u8 = 0xee;
/// Where both indexes start: the run wraps the `u32` indexes early on.
const START: u32 = u32::MAX - 20_000;

/// The producer index the hostile writer publishes on its `step`th write, given the
/// consumer index it last saw: valid (0 to `size` bytes ahead), one past the ring's
/// size or more, behind the consumer, or exactly full.
fn hostile_prod(step: u32, cons: u32, size: u32) -> u32 {
    match step % 4 {
        0 => cons.wrapping_add(step.wrapping_mul(7) % (size + 1)),
        1 => cons.wrapping_add(size + 1 + step % 1000),
        2 => cons.wrapping_sub(1 + step % 64),
        _ => cons.wrapping_add(size),
    }
}

#[test]
fn a_racing_writer_never_makes_the_data_ring_consumer_read_past_a_checked_index() {
    let size = flex_ring_size(ORDER) as u32;
    let intf = SharedMem::new_zeroed(XEN_PAGE_SIZE);
    let data = SharedMem::new_zeroed(XEN_PAGE_SIZE << ORDER);
    init_intf(&intf, ORDER, &[1, 2]).unwrap();
    // The frontend consumes **in** (the first half); **out** holds a marker byte.
    data.fill(size as usize, size as usize, OTHER_HALF).unwrap();
    intf.word(IN_CONS_OFFSET)
        .unwrap()
        .store(START, Ordering::Relaxed)
        .unwrap();
    intf.word(IN_PROD_OFFSET)
        .unwrap()
        .store(START, Ordering::Relaxed)
        .unwrap();
    let (_producer, mut consumer) = open(End::Frontend, &intf, &data, ORDER).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The writer (the backend, hostile) follows the consumer's released index and
    // publishes valid and invalid producer indexes in turn, rewriting bytes as it goes.
    let writer = {
        let (intf, data, stop) = (intf.clone(), data.clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let prod = intf.word(IN_PROD_OFFSET).unwrap();
            let cons = intf.word(IN_CONS_OFFSET).unwrap();
            let mut step = 0u32;
            while !stop.load(Ordering::Relaxed) {
                step = step.wrapping_add(1);
                let at = (step.wrapping_mul(13) % size) as usize;
                let byte = 0x10 + (step % 0x80) as u8;
                data.write_at(at, &[byte; 16][..16.min(size as usize - at)])
                    .unwrap();
                let seen = cons.load(Ordering::Acquire);
                prod.store(hostile_prod(step, seen, size), Ordering::Release)
                    .unwrap();
            }
        })
    };
    let mut buf = vec![0u8; 2 * size as usize + 64];
    // Non-empty reads (copied out, and lent in place) and indexes refused.
    let (mut copied, mut lent, mut refused) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let mut round = 0u64;
    // At least 100,000 reads, and on until each outcome was seen a thousand times (at most
    // 20 s: a writer scheduled seldom on a loaded machine must not make the test vacuous).
    while round < 100_000
        || ((copied.min(lent).min(refused) < 1000) && start.elapsed() < Duration::from_secs(20))
    {
        round += 1;
        let before = consumer.cons();
        // Every other round lends the bytes in place instead of copying them out.
        let got = if round % 2 == 0 {
            consumer.read(&mut buf).map(|n| (n, None))
        } else {
            consumer.refresh().and_then(|q| {
                consumer
                    .take_in_place(q as usize)
                    .map(|r| (q as usize, Some(r)))
            })
        };
        match got {
            Ok((n, ranges)) => {
                assert!(
                    n <= size as usize,
                    "round {round}: {n} bytes taken from a ring of {size}"
                );
                assert_eq!(consumer.cons(), before.wrapping_add(n as u32));
                if let Some([(off, len), (off2, len2)]) = ranges {
                    assert!(off + len <= size as usize && off2 == 0 && len2 <= size as usize);
                    assert_eq!(len + len2, n, "round {round}");
                    lent += u64::from(n > 0);
                } else {
                    assert!(
                        !buf[..n].contains(&OTHER_HALF),
                        "round {round}: read the other direction's bytes"
                    );
                    copied += u64::from(n > 0);
                }
                consumer.release().unwrap();
            }
            Err(FlexError::IndexOverflow {
                cons,
                distance,
                size: s,
                ..
            }) => {
                assert_eq!((cons, s), (before, size), "round {round}");
                assert!(distance > size, "round {round}: refused {distance}");
                assert_eq!(
                    consumer.cons(),
                    before,
                    "a refused index moved the consumer"
                );
                refused += 1;
            }
            Err(e) => panic!("round {round}: not the index fault: {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // Every outcome happened: the race was real, and accepted reads were checked.
    assert!(
        copied > 0 && lent > 0 && refused > 0,
        "{copied} reads copied out, {lent} lent in place, {refused} indexes refused"
    );
}
