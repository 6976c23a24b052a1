//! Where the bytes of a packet go besides grants: one module per design behind
//! [`BackStaging`]. The queue's TX and RX code calls the trait and never asks which design
//! it has; adding a design is adding a module here and its branch in the XenBus
//! negotiation, which picks the module once per queue.

mod none;
mod ring;
mod slots;

pub(crate) use none::NoStaging;
pub(crate) use ring::DataRing;
pub(crate) use slots::Slots;

use netstage_ring::netif::TxChain;
use netstage_ring::SharedMem;

use crate::queue::Fatal;

/// A staged head lent in place: one window of staging memory, and a second where a data
/// ring's bytes wrap.
pub(crate) type Lent = (SharedMem, Option<SharedMem>);

/// One queue's staging memory, as the backend uses it.
pub(crate) trait BackStaging: Send {
    /// TX: copies the staged head of `c` (`c.staged` bytes) into `dst`. `Ok(false)`: the
    /// packet is to be dropped (its slot cannot be read, or staging was never negotiated).
    fn tx_read(&mut self, c: &TxChain, dst: &mut [u8]) -> Result<bool, Fatal>;

    /// TX: lends the staged head of `c` in place instead of copying it; `None` where this
    /// design cannot (the caller copies with [`BackStaging::tx_read`]). What is lent stays
    /// valid until [`BackStaging::tx_release`] and the packet's response.
    fn tx_lend(&mut self, _c: &TxChain) -> Result<Option<Lent>, Fatal> {
        Ok(None)
    }

    /// TX: `c` carries `NETTXF_staged` but is dropped for another reason; keeps the staging
    /// memory in step with the requests.
    fn tx_skip(&mut self, c: &TxChain) -> Result<(), Fatal>;

    /// TX: copies the whole packet held in global slot `slot` (`NETTXF_staging_buffer`)
    /// into `dst`; false if this design has no such slot.
    fn tx_read_slot(&mut self, _slot: u32, _dst: &mut [u8]) -> bool {
        false
    }

    /// TX: the burst's staged bytes have been read; the frontend may reuse their room.
    fn tx_release(&mut self) -> Result<(), Fatal> {
        Ok(())
    }

    /// RX: how many bytes of a `len`-byte packet to stage, and whether the rest goes by
    /// grant copy because the data ring lacks room (counted when the packet is committed).
    fn rx_plan(&mut self, len: usize) -> Result<(usize, bool), Fatal>;

    /// RX: writes the staged head of a packet whose first request has id `first_id`.
    fn rx_stage(&mut self, first_id: u16, head: &[u8]) -> Result<(), Fatal>;

    /// RX: makes the burst's staged bytes visible before the responses that announce them.
    fn rx_publish(&mut self) -> Result<(), Fatal> {
        Ok(())
    }
}

/// The staged bytes a chain claims (the parser makes a claim beyond the packet 0).
pub(crate) fn staged_len(c: &TxChain) -> usize {
    usize::from(c.staged)
}
