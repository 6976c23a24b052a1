//! Free-running ring indices (`RING_IDX` in `ring.h`).
//!
//! Indices in shared memory are never stored masked: they count up forever and wrap modulo
//! 2^32, so every sum and difference is wrapping `u32` arithmetic. A distance between a
//! producer and a consumer index is only meaningful if it is at most the ring size; anything
//! larger means the peer wrote an impossible index.

/// Producer minus consumer, modulo 2^32: the number of entries (or bytes) in flight.
#[inline]
pub fn distance(prod: u32, cons: u32) -> u32 {
    prod.wrapping_sub(cons)
}

/// `distance(prod, cons)` if it is at most `size`, else `None` (a corrupt or hostile index).
#[inline]
pub fn checked_distance(prod: u32, cons: u32, size: u32) -> Option<u32> {
    let d = distance(prod, cons);
    (d <= size).then_some(d)
}

/// Whether `event` lies in the half-open window `(old, new]`, modulo 2^32: the test of
/// `RING_PUSH_*_AND_CHECK_NOTIFY` (`(new - event) < (new - old)`).
#[inline]
pub fn event_in_window(event: u32, old: u32, new: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// Rounds `x` down to a power of two (0 stays 0): `__RD32` in `ring.h`.
#[inline]
pub const fn round_down_pow2(x: u32) -> u32 {
    if x == 0 {
        0
    } else {
        1 << (31 - x.leading_zeros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
