//! Where the bytes of a packet go besides grants: one module per design behind
//! [`BackStaging`]. The queue's TX and RX code calls the trait and never asks which design
//! it has; adding a design is adding a module here and its branch in the XenBus
//! negotiation, which picks the module once per queue.

mod none;
mod ring;
mod slots;
mod slots_rfc;

pub(crate) use none::NoStaging;
pub(crate) use ring::DataRing;
pub(crate) use slots::Slots;
pub(crate) use slots_rfc::SlotsRfc;

use slots::map_slots;

use netstage_platform::xenstore::XenStore;
use netstage_platform::DomId;
use netstage_ring::netif::TxChain;
use netstage_ring::SharedMem;

use crate::queue::Fatal;
use crate::xenbus::{read_str, read_u32};
use crate::{BackendConfig, BackendPlatform};

/// A staged head lent in place: up to two `(region, offset, len)` ranges of the staging
/// memory ([`BackStaging::lent_mem`] names the regions); an unused range has length 0.
pub(crate) type Lent = [(u32, usize, usize); 2];

/// One queue's staging memory, as the backend uses it.
pub(crate) trait BackStaging: Send {
    /// TX: marks in a parsed chain the bytes staging memory holds where no flag announces
    /// them (RFC rev 1's replicated head; [`TxChain::replicate`]), before anything else
    /// looks at it.
    fn tx_claim(&mut self, _c: &mut TxChain) {}

    /// TX: a hint that the staged bytes of `chains`, a burst just parsed, are about to be
    /// read, so that their lines can be fetched together before the first is.
    fn tx_prefetch(&self, _chains: &[TxChain]) {}

    /// TX: copies the staged head of `c` (`c.staged` bytes) into `dst`. `Ok(false)`: the
    /// packet is to be dropped (its slot cannot be read, or staging was never negotiated).
    fn tx_read(&mut self, c: &TxChain, dst: &mut [u8]) -> Result<bool, Fatal>;

    /// TX: lends the staged head of `c` in place instead of copying it, writing its ranges
    /// into `lent`; `false` where this design cannot (the caller copies with
    /// [`BackStaging::tx_read`]). What is lent stays valid until
    /// [`BackStaging::tx_release`] and the packet's response. (Written in place: returned
    /// in a `Result`, the ranges were moved through the stack in pieces that stalled the
    /// loads after them, a third of the backend's time at 64 bytes.)
    fn tx_lend(&mut self, _c: &TxChain, _lent: &mut Lent) -> Result<bool, Fatal> {
        Ok(false)
    }

    /// The window a lent range's `region` is in.
    fn lent_mem(&self, _region: u32) -> Option<&SharedMem> {
        None
    }

    /// TX: `c` carries staged bytes but is dropped for another reason; keeps the staging
    /// memory in step with the requests (slots, tied to requests, need nothing).
    fn tx_skip(&mut self, _c: &TxChain) -> Result<(), Fatal> {
        Ok(())
    }

    /// TX: copies the whole packet held in global slot `slot` (`NETTXF_staging_buffer`)
    /// into `dst`; false if this design has no such slot.
    fn tx_read_slot(&mut self, _slot: u32, _dst: &mut [u8]) -> bool {
        false
    }

    /// TX: the burst's staged bytes have been read; the frontend may reuse their room.
    fn tx_release(&mut self) -> Result<(), Fatal> {
        Ok(())
    }

    /// RX: how many bytes of a `len`-byte packet to stage apart (announced by
    /// `NETRXF_staged`; none by default), and whether the rest goes by grant copy because
    /// the data ring lacks room (counted when the packet is committed).
    fn rx_plan(&mut self, _len: usize) -> Result<(usize, bool), Fatal> {
        Ok((0, false))
    }

    /// RX: writes the staged head of a packet whose first request has id `first_id` (never
    /// called where [`BackStaging::rx_plan`] stages nothing apart).
    fn rx_stage(&mut self, _first_id: u16, _head: &[u8]) -> Result<(), Fatal> {
        Err("staged an RX head apart, which this design does not do".into())
    }

    /// RX: copies into staging memory what the design replicates of `data`, the bytes a
    /// packet's data requests (ids `data_ids`, in order) receive a page each; returns how
    /// many of the first bytes it replicated (a prefix: request after request), which the
    /// grant copy skips and the responses still count.
    fn rx_replicate(
        &mut self,
        _data_ids: &mut dyn Iterator<Item = u16>,
        _data: &[u8],
    ) -> Result<usize, Fatal> {
        Ok(0)
    }

    /// RX: makes the burst's staged bytes visible before the responses that announce them.
    fn rx_publish(&mut self) -> Result<(), Fatal> {
        Ok(())
    }
}

/// The staged bytes a chain claims (the parser makes a claim beyond the packet 0).
pub(crate) fn staged_len(c: &TxChain) -> usize {
    usize::from(c.staged)
}

/// Where one queue's design is negotiated: the frontend's queue directory in XenStore and
/// its memory.
pub(crate) struct Negotiation<'a, P, X> {
    pub(crate) platform: &'a P,
    pub(crate) xs: &'a X,
    pub(crate) fe: DomId,
    /// The queue's directory (the vif's, with one queue).
    pub(crate) dir: &'a str,
}

impl<P, X: XenStore> Negotiation<'_, P, X> {
    /// The frontend's `dir/key`, if written.
    pub(crate) fn read(&self, key: &str) -> Option<String> {
        read_str(self.xs, &format!("{}/{key}", self.dir))
    }

    /// The frontend's `dir/key` as a number; an error names the key and what was wrong.
    pub(crate) fn read_u32(&self, key: &str) -> Result<u32, String> {
        read_u32(self.xs, &format!("{}/{key}", self.dir))
    }
}

/// The design the frontend asked for on a queue of `slots` request ids, told by the keys
/// it wrote, set up with what it wrote: the one place that names the designs. A data list
/// alone is RFC rev 1's encoding; `request-staged-flags` = 1 asks for netstage's flags.
pub(crate) fn negotiate<P: BackendPlatform, X: XenStore>(
    n: &Negotiation<'_, P, X>,
    cfg: &BackendConfig,
    slots: u32,
) -> Result<Box<dyn BackStaging>, String> {
    let max = cfg.slots_max_data_len;
    match (n.read("tx-data-len"), n.read("data-ring-ref")) {
        (None, None) => Ok(Box::new(NoStaging)),
        (Some(_), Some(_)) => Err("frontend asks for both staging slots and a data ring".into()),
        (Some(_), None) => match n.read("request-staged-flags").as_deref() {
            Some("1") => Ok(Box::new(Slots::new(map_slots(
                n,
                max,
                Slots::geometry(slots),
            )?))),
            None | Some("0") => Ok(Box::new(SlotsRfc::new(map_slots(
                n,
                max,
                SlotsRfc::geometry(slots),
            )?)?)),
            Some(v) => Err(format!("request-staged-flags = {v:?}: expected 0 or 1")),
        },
        (None, Some(_)) => Ok(Box::new(DataRing::negotiate(n, cfg.data_ring_max_order)?)),
    }
}
