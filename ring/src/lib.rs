//! Pure protocol over shared memory for Xen paravirtual networking.
//!
//! - [`mem`]: the audited shared-memory window (the only module with `unsafe`);
//! - [`idx`]: free-running ring index arithmetic;
//! - [`sring`]: request/response rings with `io/ring.h` semantics;
//! - [`netif`]: the `io/netif.h` wire format and packet chains;
//! - [`flex`]: `XEN_FLEX_RING` byte rings with a PVCalls-style indexes page;
//! - [`staging`]: the staging-grants slot data list;
//! - `mock` (feature `test-utils`): mock and hostile peers.
//!
//! Nothing here makes a system call, allocates per packet on the data path, or panics on data
//! the peer wrote: every peer-written index, id, size and offset is read once, validated and
//! reported as a typed error.
//!
//! # Example
//!
//! A frontend and a backend on one TX ring page (in a real system the page is granted by the
//! frontend and mapped by the backend; here it is private memory):
//!
//! ```
//! use netstage_ring::netif::{NetifTxRequest, NetifTxResponse, TxRing, NETIF_RSP_OKAY};
//! use netstage_ring::sring::{BackRing, FrontRing};
//! use netstage_ring::SharedMem;
//!
//! let page = SharedMem::new_zeroed(4096);
//! let mut front = FrontRing::<TxRing>::init(page.clone())?;
//! let mut back = BackRing::<TxRing>::attach(page)?; // checks the indexes it finds
//!
//! front.put_request(&NetifTxRequest { gref: 9, offset: 0, flags: 0, id: 7, size: 60 })?;
//! let notify = front.push_requests_and_check_notify()?; // kick the event channel if true
//! assert!(notify);
//!
//! back.refresh_requests()?; // reads req_prod once and validates it
//! while let Some(req) = back.take_request()? {
//!     // `req` is a private copy: the frontend can no longer change it.
//!     back.put_response(&NetifTxResponse { id: req.id, status: NETIF_RSP_OKAY })?;
//! }
//! back.push_responses_and_check_notify()?;
//!
//! front.refresh_responses()?;
//! assert_eq!(front.take_response()?.map(|r| r.id), Some(7));
//! # Ok::<(), netstage_ring::sring::RingError>(())
//! ```

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod mem;

pub mod flex;
pub mod idx;
pub mod netif;
pub mod sring;
pub mod staging;

#[cfg(feature = "test-utils")]
pub mod mock;

pub use mem::{MemError, SharedMem, SharedU16, SharedU32, SharedU64, XEN_PAGE_SIZE};
