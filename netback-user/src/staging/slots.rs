//! The RFC's staging slots: a request's id picks its slot in the frontend's data list (TX
//! read-only, RX writable).

use netstage_platform::xenstore::XenStore;
use netstage_ring::netif::TxChain;
use netstage_ring::staging::{distinct_grefs, read_list, SlotArea, SlotLayout};
use netstage_ring::{SharedMem, XEN_PAGE_SIZE};

use super::{staged_len, BackStaging, Lent, Negotiation};
use crate::queue::Fatal;
use crate::BackendPlatform;

/// The frontend's slots, mapped.
pub(crate) struct Slots {
    tx: SlotArea,
    rx: SlotArea,
    rx_len: usize,
}

impl Slots {
    /// Maps the slots the frontend described for a queue of `slots` request ids, if this
    /// backend offers slots of at most `max` bytes.
    pub(crate) fn negotiate<P: BackendPlatform, X: XenStore>(
        n: &Negotiation<'_, P, X>,
        max: Option<u32>,
        slots: u32,
    ) -> Result<Slots, String> {
        let max =
            max.ok_or("frontend asks for staging slots, which this backend does not offer")?;
        let (tx, _) = map_area(n, "tx", false, max, slots)?;
        let (rx, rx_len) = map_area(n, "rx", true, max, slots)?;
        Ok(Slots { tx, rx, rx_len })
    }
}

/// Maps direction `d`'s data list and slots (writable for RX); returns them with the
/// slots' data-len.
fn map_area<P: BackendPlatform, X: XenStore>(
    n: &Negotiation<'_, P, X>,
    d: &str,
    writable: bool,
    max: u32,
    slots: u32,
) -> Result<(SlotArea, usize), String> {
    let len = n.read_u32(&format!("{d}-data-len"))?;
    if len < 64 || len > max {
        return Err(format!("{d}-data-len {len} is outside 64..={max}"));
    }
    let layout = SlotLayout::new(len, slots).map_err(|e| e.to_string())?;
    let mut list = Vec::new();
    for i in 0..layout.list_pages() {
        let r = n.read_u32(&format!("{d}-data-ref{i}"))?;
        list.push(
            n.platform
                .map(n.fe, &[r], false)
                .map_err(|e| format!("cannot map {d}-data-ref{i} {r}: {e}"))?,
        );
    }
    // Read once, checked, kept private: the frontend cannot change it later.
    let entries = read_list(&layout, &list).map_err(|e| format!("{d} data list: {e}"))?;
    let grefs = distinct_grefs(&entries);
    let win = n
        .platform
        .map(n.fe, &grefs, writable)
        .map_err(|e| format!("cannot map the {d} staging pages: {e}"))?;
    let pages = grefs
        .iter()
        .enumerate()
        .map(|(i, g)| Ok((*g, win.sub(i * XEN_PAGE_SIZE, XEN_PAGE_SIZE)?)))
        .collect::<Result<Vec<_>, netstage_ring::MemError>>()
        .map_err(|e| e.to_string())?;
    let area = SlotArea::new(layout, &entries, &pages).map_err(|e| e.to_string())?;
    Ok((area, len as usize))
}

impl BackStaging for Slots {
    fn tx_read(&mut self, c: &TxChain, dst: &mut [u8]) -> Result<bool, Fatal> {
        let n = staged_len(c).min(dst.len());
        Ok(self
            .tx
            .read(u32::from(c.first_id()), 0, &mut dst[..n])
            .is_ok())
    }

    fn tx_lend(&mut self, c: &TxChain) -> Result<Option<Lent>, Fatal> {
        // A slot the frontend cannot name, or a head in more than two pages, is copied (or
        // dropped) by `tx_read` instead.
        let mut lent = [(0, 0, 0); 2];
        let mut pieces = 0;
        let found = self
            .tx
            .in_place(u32::from(c.first_id()), 0, staged_len(c), |page, at, n| {
                if let Some(l) = lent.get_mut(pieces) {
                    *l = (page as u32, at, n);
                }
                pieces += 1;
            });
        Ok((found.is_ok() && pieces <= 2).then_some(lent))
    }

    fn lent_mem(&self, region: u32) -> Option<&SharedMem> {
        self.tx.page(region as usize)
    }

    fn tx_skip(&mut self, _c: &TxChain) -> Result<(), Fatal> {
        Ok(())
    }

    fn tx_read_slot(&mut self, slot: u32, dst: &mut [u8]) -> bool {
        // Global ids: the TX slots first, then the RX slots the frontend forwards from.
        let n_tx = self.tx.layout().slots();
        if slot < n_tx {
            self.tx.read(slot, 0, dst).is_ok()
        } else {
            self.rx.read(slot - n_tx, 0, dst).is_ok()
        }
    }

    fn rx_plan(&mut self, len: usize) -> Result<(usize, bool), Fatal> {
        Ok((len.min(self.rx_len), false))
    }

    fn rx_stage(&mut self, first_id: u16, head: &[u8]) -> Result<(), Fatal> {
        self.rx
            .write(u32::from(first_id), 0, head)
            .map_err(|e| format!("RX request id {first_id} names no staging slot: {e}"))
    }
}
