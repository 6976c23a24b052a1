//! The grant-op data path (batched grant copy, grant map with RAII unmap) and the per-packet
//! policy that decides how many bytes go through staging memory and how many through grants.
//!
//! Status: not implemented yet; the crate exports nothing.
