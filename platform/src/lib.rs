//! Hypervisor services for netstage: grant export / import / copy / map, event channels and
//! XenStore, as traits with an emulated implementation (`sim`, the embedded default) and a
//! real-Xen one (`xen`).
//!
//! Status: not implemented yet. This crate is a placeholder in the workspace layout of
//! `design.md`; it exports nothing, so nothing can mistake it for a working platform.
