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

    fn tx_skip(&mut self, _c: &TxChain) -> Result<(), Fatal> {
        Ok(())
    }

    fn rx_plan(&mut self, _len: usize) -> Result<(usize, bool), Fatal> {
        Ok((0, false))
    }

    fn rx_stage(&mut self, _first_id: u16, _head: &[u8]) -> Result<(), Fatal> {
        Err("staged an RX head without staging memory".into())
    }
}
