//! The RFC's staging slots in netstage's encoding (`NETTXF_staged` / `NETRXF_staged`): a
//! request's id picks its slot in the frontend's data list (TX read-only, RX writable).
//! The mapping is shared with RFC rev 1's own encoding ([`super::slots_rfc`]).

use netstage_platform::xenstore::XenStore;
use netstage_ring::netif::TxChain;
use netstage_ring::staging::{distinct_grefs, read_list, SlotArea, SlotLayout, StagingError};
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

/// One direction's slots as mapped, with the `data-len` the frontend asked for.
pub(crate) type Mapped = (SlotArea, u32);

impl Slots {
    /// The slots of a `data-len` for a queue of `slots` request ids: `data-len` bytes each.
    pub(crate) fn geometry(slots: u32) -> impl Fn(u32) -> Result<SlotLayout, StagingError> {
        move |len| SlotLayout::new(len, slots)
    }

    /// The design over the TX and RX slots mapped with [`Slots::geometry`].
    pub(crate) fn new([(tx, _), (rx, rx_len)]: [Mapped; 2]) -> Slots {
        Slots {
            tx,
            rx,
            rx_len: rx_len as usize,
        }
    }
}

/// Maps the TX and RX slots the frontend described, if this backend offers staging slots
/// of a `data-len` up to `max`, each of the geometry `layout` gives its `data-len`.
pub(super) fn map_slots<P: BackendPlatform, X: XenStore>(
    n: &Negotiation<'_, P, X>,
    max: Option<u32>,
    layout: impl Fn(u32) -> Result<SlotLayout, StagingError>,
) -> Result<[Mapped; 2], String> {
    let max = max.ok_or("frontend asks for staging slots, which this backend does not offer")?;
    Ok([
        map_direction(n, "tx", false, max, &layout)?,
        map_direction(n, "rx", true, max, &layout)?,
    ])
}

/// Maps direction `d`'s slots (writable for RX): reads its `data-len` once, checks it
/// against the offer `max`, and maps the data list and the slots of the geometry
/// `layout` gives that `data-len`.
fn map_direction<P: BackendPlatform, X: XenStore>(
    n: &Negotiation<'_, P, X>,
    d: &str,
    writable: bool,
    max: u32,
    layout: &impl Fn(u32) -> Result<SlotLayout, StagingError>,
) -> Result<Mapped, String> {
    let len = n.read_u32(&format!("{d}-data-len"))?;
    if len < 64 || len > max {
        return Err(format!("{d}-data-len {len} is outside 64..={max}"));
    }
    let layout = layout(len).map_err(|e| format!("{d}-data-len {len}: {e}"))?;
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
    Ok((area, len))
}

/// Lends the first `len` bytes of `slot` of `area` after the `pieces` ranges already in
/// `lent`; false if the frontend cannot name that slot or the ranges do not fit.
pub(super) fn lend_from(
    area: &SlotArea,
    slot: u32,
    len: usize,
    lent: &mut Lent,
    pieces: &mut usize,
) -> bool {
    let found = area.in_place(slot, 0, len, |page, at, n| {
        if let Some(l) = lent.get_mut(*pieces) {
            *l = (page as u32, at, n);
        }
        *pieces += 1;
    });
    found.is_ok() && *pieces <= lent.len()
}

impl BackStaging for Slots {
    fn tx_read(&mut self, c: &TxChain, dst: &mut [u8]) -> Result<bool, Fatal> {
        let n = staged_len(c).min(dst.len());
        Ok(self
            .tx
            .read(u32::from(c.first_id()), 0, &mut dst[..n])
            .is_ok())
    }

    fn tx_lend(&mut self, c: &TxChain, lent: &mut Lent) -> Result<bool, Fatal> {
        // A slot the frontend cannot name, or a head in more than two pages, is copied (or
        // dropped) by `tx_read` instead.
        let mut pieces = 0;
        let slot = u32::from(c.first_id());
        Ok(lend_from(&self.tx, slot, staged_len(c), lent, &mut pieces))
    }

    fn lent_mem(&self, region: u32) -> Option<&SharedMem> {
        self.tx.page(region as usize)
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
