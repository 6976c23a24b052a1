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

pub use mem::{MemError, SharedMem, SharedU32, XEN_PAGE_SIZE};
