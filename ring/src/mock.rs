//! Mock peers for tests and benchmarks of other crates (feature `test-utils`).
//!
//! Well-behaved peers ([`MockBackend`], [`MockFrontend`]) drive one end of a ring so the
//! other end can be tested alone; [`HostilePeer`] writes what a malicious peer would
//! (impossible indexes, garbage slots) so defences can be shown to hold.

use std::sync::atomic::Ordering;

use crate::flex::{self, End, FlexConsumer, FlexProducer};
use crate::mem::{MemError, SharedMem, XEN_PAGE_SIZE};
use crate::sring::{
    entry_size, BackRing, FrontRing, RingError, RingProtocol, ENTRIES_OFFSET, REQ_EVENT_OFFSET,
    REQ_PROD_OFFSET, RSP_EVENT_OFFSET, RSP_PROD_OFFSET,
};

/// Zeroed shared memory for a ring of `pages` pages.
pub fn ring_pages(pages: usize) -> SharedMem {
    SharedMem::new_zeroed(pages * XEN_PAGE_SIZE)
}

/// A backend that answers every request with a response computed by a closure.
#[derive(Debug)]
pub struct MockBackend<P: RingProtocol> {
    /// The ring it serves.
    pub ring: BackRing<P>,
    /// Requests seen so far.
    pub seen: u64,
    /// Notifications it would have sent.
    pub notifies: u64,
}

impl<P: RingProtocol> MockBackend<P> {
    /// Attaches to a ring a frontend initialised.
    pub fn attach(mem: SharedMem) -> Result<Self, RingError> {
        Ok(MockBackend {
            ring: BackRing::attach(mem)?,
            seen: 0,
            notifies: 0,
        })
    }

    /// Takes every pending request, answers each with `answer`, publishes the responses and
    /// re-arms the request event. Returns the number served.
    pub fn serve(
        &mut self,
        mut answer: impl FnMut(&P::Request) -> P::Response,
    ) -> Result<u32, RingError> {
        let mut n = 0;
        loop {
            self.ring.refresh_requests()?;
            while let Some(req) = self.ring.take_request()? {
                let rsp = answer(&req);
                self.ring.put_response(&rsp)?;
                n += 1;
            }
            if self.ring.push_responses_and_check_notify()? {
                self.notifies += 1;
            }
            if !self.ring.final_check_for_requests()? {
                break;
            }
        }
        self.seen += u64::from(n);
        Ok(n)
    }
}

/// A frontend that posts requests and collects responses.
#[derive(Debug)]
pub struct MockFrontend<P: RingProtocol> {
    /// The ring it drives.
    pub ring: FrontRing<P>,
    /// Notifications it would have sent.
    pub notifies: u64,
}

impl<P: RingProtocol> MockFrontend<P> {
    /// Initialises a ring in `mem`.
    pub fn init(mem: SharedMem) -> Result<Self, RingError> {
        Ok(MockFrontend {
            ring: FrontRing::init(mem)?,
            notifies: 0,
        })
    }

    /// Posts as many of `reqs` as fit and publishes them; returns how many were posted.
    pub fn post(&mut self, reqs: &[P::Request]) -> Result<usize, RingError> {
        let n = reqs.len().min(self.ring.free_requests() as usize);
        for r in &reqs[..n] {
            self.ring.put_request(r)?;
        }
        if self.ring.push_requests_and_check_notify()? {
            self.notifies += 1;
        }
        Ok(n)
    }

    /// Takes every available response.
    pub fn collect(&mut self) -> Result<Vec<P::Response>, RingError> {
        let mut v = Vec::new();
        loop {
            self.ring.refresh_responses()?;
            while let Some(r) = self.ring.take_response()? {
                v.push(r);
            }
            if !self.ring.final_check_for_responses()? {
                return Ok(v);
            }
        }
    }
}

/// Writes what a malicious or buggy peer would, straight into shared memory.
#[derive(Debug, Clone)]
pub struct HostilePeer {
    mem: SharedMem,
}

impl HostilePeer {
    /// A hostile peer of the ring (or flex indexes page) in `mem`.
    pub fn new(mem: SharedMem) -> Self {
        HostilePeer { mem }
    }

    /// Stores `value` in the 32-bit word at `offset`.
    pub fn poke_u32(&self, offset: usize, value: u32) -> Result<(), MemError> {
        self.mem.word(offset)?.store(value, Ordering::Release)
    }

    /// Sets `req_prod`.
    pub fn set_req_prod(&self, v: u32) -> Result<(), MemError> {
        self.poke_u32(REQ_PROD_OFFSET, v)
    }

    /// Sets `rsp_prod`.
    pub fn set_rsp_prod(&self, v: u32) -> Result<(), MemError> {
        self.poke_u32(RSP_PROD_OFFSET, v)
    }

    /// Sets `req_event`.
    pub fn set_req_event(&self, v: u32) -> Result<(), MemError> {
        self.poke_u32(REQ_EVENT_OFFSET, v)
    }

    /// Sets `rsp_event`.
    pub fn set_rsp_event(&self, v: u32) -> Result<(), MemError> {
        self.poke_u32(RSP_EVENT_OFFSET, v)
    }

    /// Overwrites ring slot `idx` (masked by `size`) of protocol `P` with `bytes`.
    pub fn write_slot<P: RingProtocol>(
        &self,
        size: u32,
        idx: u32,
        bytes: &[u8],
    ) -> Result<(), MemError> {
        let off = ENTRIES_OFFSET + (idx & (size - 1)) as usize * entry_size::<P>();
        self.mem
            .write_at(off, &bytes[..bytes.len().min(entry_size::<P>())])
    }
}

/// A connected flex data ring in private memory.
#[derive(Debug)]
pub struct FlexPair {
    /// The indexes page.
    pub intf: SharedMem,
    /// The `2^order` data pages.
    pub data: SharedMem,
    /// The frontend's views: produces into **out**, consumes **in**.
    pub front: (FlexProducer, FlexConsumer),
    /// The backend's views: produces into **in**, consumes **out**.
    pub back: (FlexProducer, FlexConsumer),
}

/// Sets up a flex data ring of `2^order` pages with both ends attached.
pub fn flex_pair(order: u32) -> Result<FlexPair, flex::FlexError> {
    let intf = SharedMem::new_zeroed(XEN_PAGE_SIZE);
    let data = SharedMem::new_zeroed(XEN_PAGE_SIZE << order);
    let refs: Vec<u32> = (0..1u32 << order).map(|i| 8 + i).collect();
    flex::init_intf(&intf, order, &refs)?;
    let front = flex::open(End::Frontend, &intf, &data, order)?;
    let back = flex::open(End::Backend, &intf, &data, order)?;
    Ok(FlexPair {
        intf,
        data,
        front,
        back,
    })
}
