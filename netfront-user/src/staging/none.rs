//! The baselines (grant copy, grant map): no staging memory, every byte in granted pages.

use netstage_fallback::Design;

/// A backend that stages RX bytes without staging memory breaks the protocol.
const UNNEGOTIATED: &str = "backend staged RX bytes that were never negotiated";

use super::{Broken, Lent, Module, RxPacket, Share, Staging};
use crate::metrics::Tally;
use crate::FrontendError;

/// The module of the baselines.
pub(crate) struct NoStaging;

impl Module for NoStaging {
    fn negotiate(&self, asked: Design, _backend: &dyn Fn(&str) -> Option<String>) -> Design {
        // The baselines differ only at the backend.
        asked
    }

    fn share(
        &self,
        _design: Design,
        _to: &mut Share<'_>,
    ) -> Result<Box<dyn Staging>, FrontendError> {
        Ok(Box::new(NoStaging))
    }
}

impl Staging for NoStaging {
    fn tx_decide(&mut self, _len: usize, _in_flight: bool, _t: &mut Tally) -> Option<usize> {
        Some(0)
    }

    fn tx_stage(&mut self, _id: u16, _head: &[u8]) -> Result<(), Broken> {
        Err("staged bytes without staging memory".into())
    }

    fn rx_head(&mut self, _: RxPacket<'_>, _: &mut [u8], _: &mut Tally) -> Result<(), Broken> {
        Err(UNNEGOTIATED.into())
    }

    fn rx_lend(&mut self, _: RxPacket<'_>, _: &mut Lent, _: &mut Tally) -> Result<(), Broken> {
        Err(UNNEGOTIATED.into())
    }
}
