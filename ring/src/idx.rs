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
