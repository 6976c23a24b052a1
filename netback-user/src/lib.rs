//! A user-space netif backend, split like Linux netback (xenbus, tx, rx, fault, metrics),
//! that trusts nothing the frontend wrote.
//!
//! Status: not implemented yet; the crate exports nothing.
