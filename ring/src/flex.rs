//! `XEN_FLEX_RING` byte rings with a `pvcalls_data_intf`-style indexes page.
//!
//! A data ring of `2^order` pages is split in two halves of [`flex_ring_size`]`(order)`
//! bytes: **in** (backend produces, frontend consumes) first, then **out** (frontend
//! produces, backend consumes). The indexes page holds, at the offsets of
//! `struct pvcalls_data_intf` (`io/pvcalls.h`): `in_cons` @0, `in_prod` @4, `in_error` @8,
//! `out_cons` @64, `out_prod` @68, `out_error` @72, `ring_order` @128 and the grant refs
//! `ref[2^order]` @132. Indexes are free-running `u32` byte counts, never stored masked.
//!
//! [`FlexProducer`] and [`FlexConsumer`] are direction-specific views: a producer cannot
//! consume and a consumer cannot produce. Each reads the peer's index once per refresh and
//! rejects a distance above the ring size, which the C helper `name_queued` cannot detect.

use std::sync::atomic::Ordering;

use crate::idx::distance;
use crate::mem::{MemError, SharedMem, SharedU32, XEN_PAGE_SIZE};

/// Offset of `in_cons` in the indexes page.
pub const IN_CONS_OFFSET: usize = 0;
/// Offset of `in_prod`.
pub const IN_PROD_OFFSET: usize = 4;
/// Offset of `in_error`.
pub const IN_ERROR_OFFSET: usize = 8;
/// Offset of `out_cons`.
pub const OUT_CONS_OFFSET: usize = 64;
/// Offset of `out_prod`.
pub const OUT_PROD_OFFSET: usize = 68;
/// Offset of `out_error`.
pub const OUT_ERROR_OFFSET: usize = 72;
/// Offset of `ring_order`.
pub const RING_ORDER_OFFSET: usize = 128;
/// Offset of `ref[0]`.
pub const REF_OFFSET: usize = 132;
/// Largest order whose grant refs fit the indexes page: (4096 - 132) / 4 = 991 refs, so
/// 512 pages, order 9.
pub const MAX_RING_ORDER: u32 = 9;

/// Bytes in one direction of a data ring of `2^order` pages: `XEN_FLEX_RING_SIZE(order)`.
pub const fn flex_ring_size(order: u32) -> usize {
    1usize << (order as usize + 12 - 1)
}

/// A flex-ring operation that cannot proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlexError {
    /// The peer's index is further from ours than the ring is large.
    #[error(
        "peer wrote an impossible data-ring index: producer {prod} is {distance} bytes ahead \
         of consumer {cons}, ring holds {size}"
    )]
    IndexOverflow {
        /// Producer index.
        prod: u32,
        /// Consumer index.
        cons: u32,
        /// `prod - cons`.
        distance: u32,
        /// Ring size in bytes.
        size: u32,
    },
    /// Fewer bytes are queued than a read requires.
    #[error("data ring holds {available} bytes, {wanted} were required")]
    Short {
        /// Bytes required.
        wanted: usize,
        /// Bytes queued.
        available: u32,
    },
    /// The order is out of range.
    #[error("data-ring order {order} is out of range (at most {max})")]
    BadOrder {
        /// The order found.
        order: u32,
        /// The largest allowed.
        max: u32,
    },
    /// The data area does not have the size the order implies.
    #[error("data area of {len} bytes does not match order {order} ({expected} bytes expected)")]
    BadDataLen {
        /// Its length.
        len: usize,
        /// The order.
        order: u32,
        /// `2^order` pages.
        expected: usize,
    },
    /// The number of grant refs does not match the order.
    #[error("{count} grant refs given for a data ring of order {order}")]
    BadRefCount {
        /// Refs given.
        count: usize,
        /// The order.
        order: u32,
    },
    /// A shared-memory access failed.
    #[error(transparent)]
    Mem(#[from] MemError),
}

/// Which end of the connection a view belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Produces into **out**, consumes from **in**.
    Frontend,
    /// Produces into **in**, consumes from **out**.
    Backend,
}

/// Frontend set-up of the indexes page: zeroes the indexes and error words, writes
/// `ring_order` and the grant refs of the data pages.
pub fn init_intf(intf: &SharedMem, order: u32, refs: &[u32]) -> Result<(), FlexError> {
    if order > MAX_RING_ORDER {
        return Err(FlexError::BadOrder {
            order,
            max: MAX_RING_ORDER,
        });
    }
    if refs.len() != 1usize << order {
        return Err(FlexError::BadRefCount {
            count: refs.len(),
            order,
        });
    }
    intf.fill(0, RING_ORDER_OFFSET, 0)?;
    intf.word(RING_ORDER_OFFSET)?
        .store(order, Ordering::Relaxed)?;
    for (i, r) in refs.iter().enumerate() {
        intf.write_obj(REF_OFFSET + 4 * i, r)?;
    }
    std::sync::atomic::fence(Ordering::Release);
    Ok(())
}

/// What a backend learns from the indexes page: read once, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntfConfig {
    /// The data ring's order.
    pub order: u32,
    /// Grant refs of its `2^order` pages, to be mapped contiguously.
    pub refs: Vec<u32>,
}

/// Backend: reads `ring_order` once, checks it against `max_order` (what the backend
/// advertised, itself at most [`MAX_RING_ORDER`]), then reads the refs.
pub fn read_intf_config(intf: &SharedMem, max_order: u32) -> Result<IntfConfig, FlexError> {
    let max = max_order.min(MAX_RING_ORDER);
    let order = intf.word(RING_ORDER_OFFSET)?.load(Ordering::Acquire);
    if order > max {
        return Err(FlexError::BadOrder { order, max });
    }
    let n = 1usize << order;
    let mut refs = vec![0u32; n];
    for (i, r) in refs.iter_mut().enumerate() {
        *r = intf.read_obj(REF_OFFSET + 4 * i)?;
    }
    Ok(IntfConfig { order, refs })
}

struct Words {
    prod: SharedU32,
    cons: SharedU32,
    error: SharedU32,
}

fn direction(
    intf: &SharedMem,
    data: &SharedMem,
    order: u32,
    inbound: bool,
) -> Result<(Words, SharedMem, u32), FlexError> {
    if order > MAX_RING_ORDER {
        return Err(FlexError::BadOrder {
            order,
            max: MAX_RING_ORDER,
        });
    }
    let size = flex_ring_size(order);
    let expected = XEN_PAGE_SIZE << order;
    if data.len() != expected {
        return Err(FlexError::BadDataLen {
            len: data.len(),
            order,
            expected,
        });
    }
    let (p, c, e, half) = if inbound {
        (IN_PROD_OFFSET, IN_CONS_OFFSET, IN_ERROR_OFFSET, 0)
    } else {
        (OUT_PROD_OFFSET, OUT_CONS_OFFSET, OUT_ERROR_OFFSET, size)
    };
    let words = Words {
        prod: intf.word(p)?,
        cons: intf.word(c)?,
        error: intf.word(e)?,
    };
    Ok((words, data.sub(half, size)?, size as u32))
}

/// Opens both directions for one end: returns `(producer, consumer)`. `intf` is the indexes
/// page, `data` the `2^order` data pages mapped contiguously. The current indexes are read
/// once and checked, so a view can attach to a ring already in use.
pub fn open(
    end: End,
    intf: &SharedMem,
    data: &SharedMem,
    order: u32,
) -> Result<(FlexProducer, FlexConsumer), FlexError> {
    let produce_in = end == End::Backend;
    let (pw, pdata, size) = direction(intf, data, order, produce_in)?;
    let (cw, cdata, _) = direction(intf, data, order, !produce_in)?;
    let prod_start = pw.prod.load(Ordering::Acquire);
    let peer_cons = pw.cons.load(Ordering::Acquire);
    check(prod_start, peer_cons, size)?;
    let cons_start = cw.cons.load(Ordering::Acquire);
    let peer_prod = cw.prod.load(Ordering::Acquire);
    check(peer_prod, cons_start, size)?;
    Ok((
        FlexProducer {
            w: pw,
            data: pdata,
            size,
            prod_pvt: prod_start,
            cons_seen: peer_cons,
        },
        FlexConsumer {
            w: cw,
            data: cdata,
            size,
            cons_pvt: cons_start,
            prod_seen: peer_prod,
        },
    ))
}

fn check(prod: u32, cons: u32, size: u32) -> Result<u32, FlexError> {
    let d = distance(prod, cons);
    if d > size {
        return Err(FlexError::IndexOverflow {
            prod,
            cons,
            distance: d,
            size,
        });
    }
    Ok(d)
}

/// The producing view of one direction.
pub struct FlexProducer {
    w: Words,
    data: SharedMem,
    size: u32,
    prod_pvt: u32,
    cons_seen: u32,
}

impl std::fmt::Debug for FlexProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlexProducer")
            .field("size", &self.size)
            .field("prod_pvt", &self.prod_pvt)
            .field("cons_seen", &self.cons_seen)
            .finish()
    }
}

impl FlexProducer {
    /// Bytes in this direction.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Our producer index, including staged but unpublished bytes.
    pub fn prod(&self) -> u32 {
        self.prod_pvt
    }

    /// Reads the consumer's index once, validates it and returns the free space.
    pub fn refresh(&mut self) -> Result<u32, FlexError> {
        let cons = self.w.cons.load(Ordering::Acquire);
        let used = check(self.prod_pvt, cons, self.size)?;
        self.cons_seen = cons;
        Ok(self.size - used)
    }

    /// Free space as of the last refresh.
    pub fn free(&self) -> u32 {
        self.size - distance(self.prod_pvt, self.cons_seen)
    }

    /// Copies `bytes` into the ring without publishing, all or nothing: returns the producer
    /// index of the first byte, or `None` if the ring lacks room (refreshing once first).
    pub fn stage(&mut self, bytes: &[u8]) -> Result<Option<u32>, FlexError> {
        if (self.free() as usize) < bytes.len() && (self.refresh()? as usize) < bytes.len() {
            return Ok(None);
        }
        let start = self.prod_pvt;
        self.copy_in(bytes)?;
        Ok(Some(start))
    }

    /// Copies as much of `bytes` as fits without publishing; returns the count.
    pub fn stage_partial(&mut self, bytes: &[u8]) -> Result<usize, FlexError> {
        let mut free = self.free() as usize;
        if free < bytes.len() {
            free = self.refresh()? as usize;
        }
        let n = free.min(bytes.len());
        self.copy_in(&bytes[..n])?;
        Ok(n)
    }

    #[inline]
    fn copy_in(&mut self, bytes: &[u8]) -> Result<(), FlexError> {
        let masked = (self.prod_pvt & (self.size - 1)) as usize;
        let first = bytes.len().min(self.size as usize - masked);
        self.data.write_at(masked, &bytes[..first])?;
        if first < bytes.len() {
            self.data.write_at(0, &bytes[first..])?;
        }
        // bytes.len() <= size <= 2^20, so the cast is exact.
        self.prod_pvt = self.prod_pvt.wrapping_add(bytes.len() as u32);
        Ok(())
    }

    /// Makes the staged bytes visible: write barrier, then the producer index.
    pub fn publish(&mut self) -> Result<(), FlexError> {
        self.w.prod.store(self.prod_pvt, Ordering::Release)?;
        Ok(())
    }

    /// PVCalls-style write: as much as fits, published at once. Returns the count.
    pub fn write(&mut self, bytes: &[u8]) -> Result<usize, FlexError> {
        let n = self.stage_partial(bytes)?;
        if n > 0 {
            self.publish()?;
        }
        Ok(n)
    }

    /// The error word of this direction (PVCalls: written by the backend).
    pub fn error(&self) -> i32 {
        self.w.error.load(Ordering::Acquire) as i32
    }

    /// Sets the error word of this direction.
    pub fn set_error(&self, err: i32) -> Result<(), FlexError> {
        self.w.error.store(err as u32, Ordering::Release)?;
        Ok(())
    }
}

/// The consuming view of one direction.
pub struct FlexConsumer {
    w: Words,
    data: SharedMem,
    size: u32,
    cons_pvt: u32,
    prod_seen: u32,
}

impl std::fmt::Debug for FlexConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlexConsumer")
            .field("size", &self.size)
            .field("cons_pvt", &self.cons_pvt)
            .field("prod_seen", &self.prod_seen)
            .finish()
    }
}

impl FlexConsumer {
    /// Bytes in this direction.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Our consumer index, including consumed but unreleased bytes.
    pub fn cons(&self) -> u32 {
        self.cons_pvt
    }

    /// Reads the producer's index once, validates it and returns the bytes queued.
    pub fn refresh(&mut self) -> Result<u32, FlexError> {
        let prod = self.w.prod.load(Ordering::Acquire);
        let queued = check(prod, self.cons_pvt, self.size)?;
        self.prod_seen = prod;
        Ok(queued)
    }

    /// Bytes queued as of the last refresh.
    pub fn queued(&self) -> u32 {
        distance(self.prod_seen, self.cons_pvt)
    }

    /// Copies exactly `dst.len()` bytes out, or fails with [`FlexError::Short`] (a peer that
    /// claimed bytes it never produced) without consuming anything.
    pub fn read_exact(&mut self, dst: &mut [u8]) -> Result<(), FlexError> {
        self.ensure(dst.len())?;
        self.copy_out(dst)
    }

    /// Copies out up to `dst.len()` bytes; returns the count.
    pub fn read(&mut self, dst: &mut [u8]) -> Result<usize, FlexError> {
        let mut q = self.queued() as usize;
        if q < dst.len() {
            q = self.refresh()? as usize;
        }
        let n = q.min(dst.len());
        self.copy_out(&mut dst[..n])?;
        Ok(n)
    }

    /// Consumes `n` bytes without copying them, or fails with [`FlexError::Short`].
    pub fn skip(&mut self, n: usize) -> Result<(), FlexError> {
        self.ensure(n)?;
        self.cons_pvt = self.cons_pvt.wrapping_add(n as u32);
        Ok(())
    }

    /// Consumes `n` bytes without copying them and says where they lie in
    /// [`FlexConsumer::data`]: one `(offset, len)` range, and a second (empty unless they wrap
    /// past the end of the ring). The producer may reuse them only after
    /// [`FlexConsumer::release`]; until then it can still write them (a hostile peer might),
    /// so read each byte once, through the window's checked methods. Fails with
    /// [`FlexError::Short`] without consuming anything.
    pub fn take_in_place(&mut self, n: usize) -> Result<[(usize, usize); 2], FlexError> {
        self.ensure(n)?;
        let masked = (self.cons_pvt & (self.size - 1)) as usize;
        let first = n.min(self.size as usize - masked);
        self.cons_pvt = self.cons_pvt.wrapping_add(n as u32);
        Ok([(masked, first), (0, n - first)])
    }

    /// The ring's bytes in this direction, where [`FlexConsumer::take_in_place`]'s ranges
    /// lie.
    pub fn data(&self) -> &SharedMem {
        &self.data
    }

    /// A hint that the next `n` bytes from the consumer's position (at most the ring) are
    /// about to be read: their lines are fetched now, so that a burst's reads wait on them
    /// together rather than one miss at a time. Reads nothing; bytes not yet published are
    /// harmless to prefetch.
    pub fn prefetch_next(&self, n: usize) {
        let n = n.min(self.size as usize);
        let masked = (self.cons_pvt & (self.size - 1)) as usize;
        let first = n.min(self.size as usize - masked);
        self.data.prefetch(masked, first);
        self.data.prefetch(0, n - first);
    }

    fn ensure(&mut self, n: usize) -> Result<(), FlexError> {
        if (self.queued() as usize) < n {
            let q = self.refresh()?;
            if (q as usize) < n {
                return Err(FlexError::Short {
                    wanted: n,
                    available: q,
                });
            }
        }
        Ok(())
    }

    #[inline]
    fn copy_out(&mut self, dst: &mut [u8]) -> Result<(), FlexError> {
        let masked = (self.cons_pvt & (self.size - 1)) as usize;
        let first = dst.len().min(self.size as usize - masked);
        let (a, b) = dst.split_at_mut(first);
        self.data.read_at(masked, a)?;
        if !b.is_empty() {
            self.data.read_at(0, b)?;
        }
        self.cons_pvt = self.cons_pvt.wrapping_add(dst.len() as u32);
        Ok(())
    }

    /// Gives the consumed bytes back to the producer: the reads complete before the new
    /// consumer index is visible.
    pub fn release(&mut self) -> Result<(), FlexError> {
        self.w.cons.store(self.cons_pvt, Ordering::Release)?;
        Ok(())
    }

    /// The error word of this direction.
    pub fn error(&self) -> i32 {
        self.w.error.load(Ordering::Acquire) as i32
    }

    /// Sets the error word of this direction.
    pub fn set_error(&self, err: i32) -> Result<(), FlexError> {
        self.w.error.store(err as u32, Ordering::Release)?;
        Ok(())
    }
}
