//! Request/response rings with the semantics of Xen's `DEFINE_RING_TYPES` (`io/ring.h`).
//!
//! The shared area (one or more contiguous 4 KiB pages) starts with the `*_sring` header:
//! `req_prod` @0, `req_event` @4, `rsp_prod` @8, `rsp_event` @12, `pvt` @16 (4 bytes),
//! `__pad` @20 (44 bytes), then the entries @64. An entry is the C union of the request and
//! the response type, so requests and responses share slots: a response is written into the
//! slot of a request that has already been copied out.
//!
//! [`FrontRing`] and [`BackRing`] hold the private state of `<name>_front_ring` and
//! `<name>_back_ring`. Every index the peer writes is read once, checked against the ring size
//! and against what this side has produced, and a bad one is a typed [`RingError`], never a
//! panic or an out-of-range slot. Our own indexes are kept privately and never read back
//! from shared memory, so a peer scribbling over them cannot confuse us either.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::atomic::{fence, Ordering};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::idx::{distance, event_in_window, round_down_pow2};
use crate::mem::{MemError, SharedMem, SharedU32};

/// Offset of `req_prod` in the shared header.
pub const REQ_PROD_OFFSET: usize = 0;
/// Offset of `req_event` in the shared header.
pub const REQ_EVENT_OFFSET: usize = 4;
/// Offset of `rsp_prod` in the shared header.
pub const RSP_PROD_OFFSET: usize = 8;
/// Offset of `rsp_event` in the shared header.
pub const RSP_EVENT_OFFSET: usize = 12;
/// Offset of the `pvt` union (4 bytes, unused by netif, zeroed at init).
pub const PVT_OFFSET: usize = 16;
/// Offset of the first ring entry (`ring[0]`).
pub const ENTRIES_OFFSET: usize = 64;

/// A plain-old-data wire structure that can be copied in and out of shared memory.
pub trait Wire: FromBytes + IntoBytes + Immutable + KnownLayout + Copy + Debug + 'static {}
impl<T: FromBytes + IntoBytes + Immutable + KnownLayout + Copy + Debug + 'static> Wire for T {}

/// The request and response types of one ring protocol (the arguments of
/// `DEFINE_RING_TYPES`).
pub trait RingProtocol: 'static {
    /// What the frontend produces.
    type Request: Wire;
    /// What the backend produces.
    type Response: Wire;
}

/// Size of one ring entry: the size of the C union of request and response (the larger
/// size, rounded up to the stricter alignment).
pub const fn entry_size<P: RingProtocol>() -> usize {
    let rq = std::mem::size_of::<P::Request>();
    let rs = std::mem::size_of::<P::Response>();
    let aq = std::mem::align_of::<P::Request>();
    let ar = std::mem::align_of::<P::Response>();
    let size = if rq > rs { rq } else { rs };
    let align = if aq > ar { aq } else { ar };
    size.div_ceil(align) * align
}

/// Number of entries of a ring occupying `bytes` of shared memory: `__RING_SIZE`, the entries
/// that fit after the header, rounded down to a power of two.
pub const fn ring_size<P: RingProtocol>(bytes: usize) -> u32 {
    if bytes <= ENTRIES_OFFSET {
        return 0;
    }
    let n = (bytes - ENTRIES_OFFSET) / entry_size::<P>();
    let n = if n > u32::MAX as usize {
        u32::MAX
    } else {
        n as u32
    };
    round_down_pow2(n)
}

/// A ring operation that cannot proceed; the peer-caused ones are faults of the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The shared area cannot hold a ring.
    #[error(
        "a {bytes}-byte area cannot hold a ring of {entry}-byte entries after the 64-byte header"
    )]
    TooSmall {
        /// Size of the shared area.
        bytes: usize,
        /// Size of one entry.
        entry: usize,
    },
    /// The frontend published more requests than the ring can hold
    /// (`RING_REQUEST_PROD_OVERFLOW`); the device should be disconnected.
    #[error(
        "frontend published an impossible request producer index: req_prod {req_prod} is \
         more than {size} ahead of our response producer {rsp_prod_pvt}"
    )]
    RequestProdOverflow {
        /// The `req_prod` read from shared memory.
        req_prod: u32,
        /// Our private response producer.
        rsp_prod_pvt: u32,
        /// Ring size.
        size: u32,
    },
    /// At attach, the frontend's indexes were inconsistent (`req_prod - rsp_prod > size`).
    #[error(
        "ring found inconsistent at attach: req_prod {req_prod} is more than {size} ahead of \
         rsp_prod {rsp_prod}"
    )]
    AttachOverflow {
        /// The `req_prod` read at attach.
        req_prod: u32,
        /// The `rsp_prod` read at attach.
        rsp_prod: u32,
        /// Ring size.
        size: u32,
    },
    /// The backend published more responses than the ring can hold
    /// (`RING_RESPONSE_PROD_OVERFLOW`) or than we have published requests.
    #[error(
        "backend published an impossible response producer index: rsp_prod {rsp_prod} is \
         {ahead} ahead of our consumer {rsp_cons}, but only {outstanding} requests are \
         outstanding (ring size {size})"
    )]
    ResponseProdOverflow {
        /// The `rsp_prod` read from shared memory.
        rsp_prod: u32,
        /// Our private response consumer.
        rsp_cons: u32,
        /// `rsp_prod - rsp_cons`.
        ahead: u32,
        /// Requests published and not yet answered.
        outstanding: u32,
        /// Ring size.
        size: u32,
    },
    /// No free request slot (`RING_FULL`).
    #[error("ring full: all {size} slots hold requests without responses")]
    Full {
        /// Ring size.
        size: u32,
    },
    /// A response was put with no consumed request left to answer.
    #[error("no consumed request left to answer (responses must follow requests one to one)")]
    NoRequestToAnswer,
    /// A shared-memory access failed (a bug of ours, not of the peer).
    #[error(transparent)]
    Mem(#[from] MemError),
}

/// The shared part: the header words and the entry area.
#[derive(Debug, Clone)]
struct SharedRing<P: RingProtocol> {
    mem: SharedMem,
    req_prod: SharedU32,
    req_event: SharedU32,
    rsp_prod: SharedU32,
    rsp_event: SharedU32,
    size: u32,
    _p: PhantomData<fn() -> P>,
}

impl<P: RingProtocol> SharedRing<P> {
    fn new(mem: SharedMem) -> Result<Self, RingError> {
        let size = ring_size::<P>(mem.len());
        if size == 0 {
            return Err(RingError::TooSmall {
                bytes: mem.len(),
                entry: entry_size::<P>(),
            });
        }
        Ok(SharedRing {
            req_prod: mem.word(REQ_PROD_OFFSET)?,
            req_event: mem.word(REQ_EVENT_OFFSET)?,
            rsp_prod: mem.word(RSP_PROD_OFFSET)?,
            rsp_event: mem.word(RSP_EVENT_OFFSET)?,
            mem,
            size,
            _p: PhantomData,
        })
    }

    /// `SHARED_RING_INIT`, with the indexes starting at `start` instead of 0.
    fn init(&self, start: u32) -> Result<(), RingError> {
        self.req_prod.store(start, Ordering::Relaxed)?;
        self.rsp_prod.store(start, Ordering::Relaxed)?;
        self.req_event
            .store(start.wrapping_add(1), Ordering::Relaxed)?;
        self.rsp_event
            .store(start.wrapping_add(1), Ordering::Relaxed)?;
        self.mem.fill(PVT_OFFSET, ENTRIES_OFFSET - PVT_OFFSET, 0)?;
        fence(Ordering::Release);
        Ok(())
    }

    #[inline]
    fn slot_offset(&self, idx: u32) -> usize {
        ENTRIES_OFFSET + (idx & (self.size - 1)) as usize * entry_size::<P>()
    }

    /// Prefetches the entries from index `from` up to `to` (at most the ring's worth), a
    /// hint only: the entries are still read once each, when they are taken.
    fn prefetch_entries(&self, from: u32, to: u32) {
        let ((a, a_len), (b, b_len)) = self.entry_ranges(from, to);
        self.mem.prefetch(a, a_len);
        self.mem.prefetch(b, b_len);
    }

    /// Like [`SharedRing::prefetch_entries`], for entries about to be written.
    fn prefetch_entries_for_write(&self, from: u32, to: u32) {
        let ((a, a_len), (b, b_len)) = self.entry_ranges(from, to);
        self.mem.prefetch_write(a, a_len);
        self.mem.prefetch_write(b, b_len);
    }

    /// Where the entries from index `from` up to `to` (at most the ring's worth) lie: two
    /// `(offset, len)` byte ranges, the second past the wrap (empty if none).
    fn entry_ranges(&self, from: u32, to: u32) -> ((usize, usize), (usize, usize)) {
        let n = distance(to, from).min(self.size) as usize;
        let first = (from & (self.size - 1)) as usize;
        let till_end = (self.size as usize - first).min(n);
        let e = entry_size::<P>();
        (
            (self.slot_offset(from), till_end * e),
            (ENTRIES_OFFSET, (n - till_end) * e),
        )
    }
}

/// The frontend's side of a ring (`<name>_front_ring`): produces requests, consumes
/// responses.
#[derive(Debug)]
pub struct FrontRing<P: RingProtocol> {
    s: SharedRing<P>,
    req_prod_pvt: u32,
    req_prod_published: u32,
    rsp_cons: u32,
    rsp_prod_seen: u32,
}

impl<P: RingProtocol> FrontRing<P> {
    /// `XEN_FRONT_RING_INIT`: initialises the shared header (`SHARED_RING_INIT`) and the
    /// private state, indexes at 0.
    pub fn init(mem: SharedMem) -> Result<Self, RingError> {
        Self::init_at(mem, 0)
    }

    /// Like [`FrontRing::init`] with every index starting at `start` (`req_event` and
    /// `rsp_event` at `start + 1`). Used to resume numbering, and by tests to cross the
    /// 2^32 wrap quickly.
    pub fn init_at(mem: SharedMem, start: u32) -> Result<Self, RingError> {
        let s = SharedRing::new(mem)?;
        s.init(start)?;
        Ok(Self::with_state(s, start))
    }

    /// `FRONT_RING_ATTACH`: takes over an already initialised shared ring with both private
    /// indexes at `start`, without touching shared memory.
    pub fn attach(mem: SharedMem, start: u32) -> Result<Self, RingError> {
        Ok(Self::with_state(SharedRing::new(mem)?, start))
    }

    fn with_state(s: SharedRing<P>, start: u32) -> Self {
        FrontRing {
            s,
            req_prod_pvt: start,
            req_prod_published: start,
            rsp_cons: start,
            rsp_prod_seen: start,
        }
    }

    /// Number of entries (`RING_SIZE`).
    pub fn size(&self) -> u32 {
        self.s.size
    }

    /// The shared memory of the ring.
    pub fn shared(&self) -> &SharedMem {
        &self.s.mem
    }

    /// Private request producer (`req_prod_pvt`).
    pub fn req_prod_pvt(&self) -> u32 {
        self.req_prod_pvt
    }

    /// Private response consumer (`rsp_cons`).
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// `RING_FREE_REQUESTS`: slots that may take a request now.
    pub fn free_requests(&self) -> u32 {
        self.s.size - distance(self.req_prod_pvt, self.rsp_cons)
    }

    /// `RING_FULL`.
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Requests published and not yet answered by a consumed response.
    pub fn outstanding(&self) -> u32 {
        distance(self.req_prod_published, self.rsp_cons)
    }

    /// A hint that up to `n` requests (at most the free entries) are about to be put: their
    /// entries are fetched for writing now. Writes nothing.
    pub fn prefetch_requests(&self, n: u32) {
        let n = n.min(self.free_requests());
        self.s
            .prefetch_entries_for_write(self.req_prod_pvt, self.req_prod_pvt.wrapping_add(n));
    }

    /// Writes `req` into the next free slot (not yet visible to the backend: see
    /// [`FrontRing::push_requests`]).
    #[inline]
    pub fn put_request(&mut self, req: &P::Request) -> Result<(), RingError> {
        if self.is_full() {
            return Err(RingError::Full { size: self.s.size });
        }
        let off = self.s.slot_offset(self.req_prod_pvt);
        self.s.mem.write_obj(off, req)?;
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// `RING_PUSH_REQUESTS`: publishes the requests put so far (write barrier, then
    /// `req_prod`).
    pub fn push_requests(&mut self) -> Result<(), RingError> {
        self.s
            .req_prod
            .store(self.req_prod_pvt, Ordering::Release)?;
        self.req_prod_published = self.req_prod_pvt;
        Ok(())
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publishes, then returns whether the backend
    /// asked to be notified (its `req_event` lies in the newly published range).
    pub fn push_requests_and_check_notify(&mut self) -> Result<bool, RingError> {
        let old = self.req_prod_published;
        let new = self.req_prod_pvt;
        self.s.req_prod.store(new, Ordering::Release)?;
        self.req_prod_published = new;
        // The new producer must be visible before we read req_event (ring.h: xen_mb).
        fence(Ordering::SeqCst);
        let event = self.s.req_event.load(Ordering::Relaxed);
        Ok(event_in_window(event, old, new))
    }

    /// Reads `rsp_prod` once, validates it and returns the number of responses ready.
    ///
    /// `rsp_prod - rsp_cons` may not exceed the ring size (`RING_RESPONSE_PROD_OVERFLOW`)
    /// nor the number of requests we published; either is
    /// [`RingError::ResponseProdOverflow`] and the device should be marked broken.
    pub fn refresh_responses(&mut self) -> Result<u32, RingError> {
        let prod = self.s.rsp_prod.load(Ordering::Acquire);
        let ahead = distance(prod, self.rsp_cons);
        let outstanding = self.outstanding();
        if ahead > self.s.size || ahead > outstanding {
            return Err(RingError::ResponseProdOverflow {
                rsp_prod: prod,
                rsp_cons: self.rsp_cons,
                ahead,
                outstanding,
                size: self.s.size,
            });
        }
        // The new responses' lines are fetched together, not one miss each as they are read.
        self.s.prefetch_entries(self.rsp_prod_seen, prod);
        self.rsp_prod_seen = prod;
        Ok(ahead)
    }

    /// Responses seen by the last refresh and not yet taken.
    pub fn pending_responses(&self) -> u32 {
        distance(self.rsp_prod_seen, self.rsp_cons)
    }

    /// Copies out the next response seen by the last refresh (`RING_COPY_RESPONSE`), or
    /// `None` if there is none. The slot is read exactly once.
    #[inline]
    pub fn take_response(&mut self) -> Result<Option<P::Response>, RingError> {
        if self.rsp_cons == self.rsp_prod_seen {
            return Ok(None);
        }
        let rsp = self.s.mem.read_obj(self.s.slot_offset(self.rsp_cons))?;
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: if nothing is pending, asks for a notification on
    /// the next response (`rsp_event = rsp_cons + 1`), then checks again to close the race.
    /// Returns whether there is work.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.refresh_responses()? > 0 {
            return Ok(true);
        }
        self.s
            .rsp_event
            .store(self.rsp_cons.wrapping_add(1), Ordering::Relaxed)?;
        fence(Ordering::SeqCst);
        Ok(self.refresh_responses()? > 0)
    }

    /// Sets `rsp_event` directly, to batch notifications (ask to be woken only once the
    /// backend's producer passes `event`).
    pub fn set_rsp_event(&mut self, event: u32) -> Result<(), RingError> {
        self.s.rsp_event.store(event, Ordering::Relaxed)?;
        fence(Ordering::SeqCst);
        Ok(())
    }
}

/// The backend's side of a ring (`<name>_back_ring`): consumes requests, produces
/// responses.
#[derive(Debug)]
pub struct BackRing<P: RingProtocol> {
    s: SharedRing<P>,
    rsp_prod_pvt: u32,
    rsp_prod_published: u32,
    req_cons: u32,
    req_prod_seen: u32,
}

impl<P: RingProtocol> BackRing<P> {
    /// Attaches to a ring the frontend initialised, as Linux netback does: reads `rsp_prod`
    /// and `req_prod` once, starts the private indexes at `rsp_prod`
    /// (`BACK_RING_ATTACH`), and refuses a ring whose `req_prod - rsp_prod` exceeds the ring
    /// size.
    pub fn attach(mem: SharedMem) -> Result<Self, RingError> {
        let s = SharedRing::<P>::new(mem)?;
        let rsp_prod = s.rsp_prod.load(Ordering::Acquire);
        let req_prod = s.req_prod.load(Ordering::Acquire);
        if distance(req_prod, rsp_prod) > s.size {
            return Err(RingError::AttachOverflow {
                req_prod,
                rsp_prod,
                size: s.size,
            });
        }
        Ok(Self::attach_at(s, rsp_prod))
    }

    /// `BACK_RING_INIT`-style attach with both private indexes at `start`, without reading
    /// shared memory. Prefer [`BackRing::attach`].
    pub fn attach_at_index(mem: SharedMem, start: u32) -> Result<Self, RingError> {
        Ok(Self::attach_at(SharedRing::new(mem)?, start))
    }

    fn attach_at(s: SharedRing<P>, start: u32) -> Self {
        BackRing {
            s,
            rsp_prod_pvt: start,
            rsp_prod_published: start,
            req_cons: start,
            req_prod_seen: start,
        }
    }

    /// Number of entries (`RING_SIZE`).
    pub fn size(&self) -> u32 {
        self.s.size
    }

    /// The shared memory of the ring.
    pub fn shared(&self) -> &SharedMem {
        &self.s.mem
    }

    /// Private request consumer (`req_cons`).
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// Private response producer (`rsp_prod_pvt`).
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }

    /// Reads `req_prod` once, validates it (`RING_REQUEST_PROD_OVERFLOW`: fatal) and returns
    /// the number of requests that may be consumed now
    /// (`XEN_RING_NR_UNCONSUMED_REQUESTS`: clamped to the free response slots).
    pub fn refresh_requests(&mut self) -> Result<u32, RingError> {
        let prod = self.s.req_prod.load(Ordering::Acquire);
        if distance(prod, self.rsp_prod_pvt) > self.s.size {
            return Err(RingError::RequestProdOverflow {
                req_prod: prod,
                rsp_prod_pvt: self.rsp_prod_pvt,
                size: self.s.size,
            });
        }
        // The new requests' lines are fetched together, not one miss each as they are read.
        self.s.prefetch_entries(self.req_prod_seen, prod);
        self.req_prod_seen = prod;
        Ok(self.pending_requests())
    }

    /// Requests seen by the last refresh that may still be taken.
    pub fn pending_requests(&self) -> u32 {
        let req = distance(self.req_prod_seen, self.req_cons);
        let rsp = self.s.size - distance(self.req_cons, self.rsp_prod_pvt);
        req.min(rsp)
    }

    /// Copies out the next request seen by the last refresh (`RING_COPY_REQUEST`), or `None`
    /// if there is none or every slot is awaiting its response
    /// (`RING_REQUEST_CONS_OVERFLOW`). The slot is read exactly once.
    #[inline]
    pub fn take_request(&mut self) -> Result<Option<P::Request>, RingError> {
        if self.pending_requests() == 0 {
            return Ok(None);
        }
        let req = self.s.mem.read_obj(self.s.slot_offset(self.req_cons))?;
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(req))
    }

    /// Requests taken and not yet answered.
    pub fn unanswered(&self) -> u32 {
        distance(self.req_cons, self.rsp_prod_pvt)
    }

    /// Writes the response for the oldest unanswered request into its slot (not yet visible:
    /// see [`BackRing::push_responses`]).
    #[inline]
    pub fn put_response(&mut self, rsp: &P::Response) -> Result<(), RingError> {
        if self.unanswered() == 0 {
            return Err(RingError::NoRequestToAnswer);
        }
        let off = self.s.slot_offset(self.rsp_prod_pvt);
        self.s.mem.write_obj(off, rsp)?;
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// `RING_PUSH_RESPONSES`.
    pub fn push_responses(&mut self) -> Result<(), RingError> {
        self.s
            .rsp_prod
            .store(self.rsp_prod_pvt, Ordering::Release)?;
        self.rsp_prod_published = self.rsp_prod_pvt;
        Ok(())
    }

    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`: publishes, then returns whether the frontend
    /// asked to be notified.
    pub fn push_responses_and_check_notify(&mut self) -> Result<bool, RingError> {
        let old = self.rsp_prod_published;
        let new = self.rsp_prod_pvt;
        self.s.rsp_prod.store(new, Ordering::Release)?;
        self.rsp_prod_published = new;
        fence(Ordering::SeqCst);
        let event = self.s.rsp_event.load(Ordering::Relaxed);
        Ok(event_in_window(event, old, new))
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`. Returns whether there is work.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.refresh_requests()? > 0 {
            return Ok(true);
        }
        self.s
            .req_event
            .store(self.req_cons.wrapping_add(1), Ordering::Relaxed)?;
        fence(Ordering::SeqCst);
        Ok(self.refresh_requests()? > 0)
    }

    /// Sets `req_event` directly (netback's RX trick: wake me when `needed` more requests
    /// have arrived).
    pub fn set_req_event(&mut self, event: u32) -> Result<(), RingError> {
        self.s.req_event.store(event, Ordering::Relaxed)?;
        fence(Ordering::SeqCst);
        Ok(())
    }
}
