//! The baselines: no staging memory; every byte goes by grants.

use netstage_ring::netif::TxChain;

use super::BackStaging;
use crate::queue::Fatal;

/// No staging memory.
pub(crate) struct NoStaging;

impl BackStaging for NoStaging {
    fn tx_read(&mut self, _c: &TxChain, _dst: &mut [u8]) -> Result<bool, Fatal> {
        // Staged bytes that were never negotiated: the packet is dropped.
        Ok(false)
    }
}
