//! Unit tests of `ring::idx`: wrapping distances and `__RD32`.

use netstage_ring::idx::*;
use proptest::prelude::*;

/// `__RD32` from `ring.h`, written out as the C macro cascade does it.
fn rd32_like_c(x: u32) -> u32 {
    fn rd2(x: u32) -> u32 {
        if x & 2 != 0 {
            2
        } else {
            x & 1
        }
    }
    fn rd4(x: u32) -> u32 {
        if x & 0xc != 0 {
            rd2(x >> 2) << 2
        } else {
            rd2(x)
        }
    }
    fn rd8(x: u32) -> u32 {
        if x & 0xf0 != 0 {
            rd4(x >> 4) << 4
        } else {
            rd4(x)
        }
    }
    fn rd16(x: u32) -> u32 {
        if x & 0xff00 != 0 {
            rd8(x >> 8) << 8
        } else {
            rd8(x)
        }
    }
    if x & 0xffff_0000 != 0 {
        rd16(x >> 16) << 16
    } else {
        rd16(x)
    }
}

#[test]
fn round_down_small_values() {
    assert_eq!(round_down_pow2(0), 0);
    assert_eq!(round_down_pow2(1), 1);
    assert_eq!(round_down_pow2(336), 256);
    assert_eq!(round_down_pow2(504), 256);
    assert_eq!(round_down_pow2(252), 128);
    assert_eq!(round_down_pow2(u32::MAX), 1 << 31);
}

proptest! {
    #[test]
    fn round_down_matches_the_c_cascade(x in any::<u32>()) {
        prop_assert_eq!(round_down_pow2(x), rd32_like_c(x));
    }

    #[test]
    fn distance_is_exact_across_the_wrap(cons in any::<u32>(), n in 0u32..=4096) {
        let prod = cons.wrapping_add(n);
        prop_assert_eq!(distance(prod, cons), n);
        prop_assert_eq!(checked_distance(prod, cons, 4096), Some(n));
        prop_assert_eq!(checked_distance(prod, cons, n.saturating_sub(1)),
                        if n == 0 { Some(0) } else { None });
    }

    #[test]
    fn a_consumer_ahead_of_the_producer_is_rejected(cons in any::<u32>(), back in 1u32..1 << 20) {
        // A producer index behind the consumer looks like a huge distance.
        let prod = cons.wrapping_sub(back);
        prop_assert_eq!(checked_distance(prod, cons, 1 << 16), None);
    }

    #[test]
    fn event_window_matches_interval_membership(old in any::<u32>(), n in 0u32..512, k in 0u32..1024) {
        let new = old.wrapping_add(n);
        let event = old.wrapping_add(k);
        // `event` is in (old, new] iff 1 <= k <= n (k is the offset past `old`).
        prop_assert_eq!(event_in_window(event, old, new), k >= 1 && k <= n);
    }
}
