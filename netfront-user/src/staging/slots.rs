//! Staging slots: one slot of `data_len` bytes per request id and direction, selected by
//! the id of the packet's first request, in netstage's encoding (`NETTXF_staged` /
//! `NETRXF_staged`). The offer and the shared memory are those of RFC rev 1's own encoding
//! too ([`super::slots_rfc`]).

use netstage_fallback::Design;
use netstage_platform::SharedPages;
use netstage_ring::staging::{write_list, SlotArea, SlotLayout};
use netstage_ring::{SharedMem, XEN_PAGE_SIZE};

use super::{err, setup, Broken, Lent, Module, RxPacket, Share, Staging, WholeBudget};
use crate::metrics::Tally;
use crate::queue::POOL;
use crate::FrontendError;

/// The module of staging slots.
pub(crate) struct SlotStaging;

/// A queue's slot areas.
struct Slots {
    areas: SlotAreas,
    tx_len: usize,
}

/// Both directions' slots of a queue, shared with the backend.
pub(super) struct SlotAreas {
    /// TX slots (read-only for the backend).
    pub(super) tx: SlotArea,
    /// RX slots (written by the backend).
    pub(super) rx: SlotArea,
    /// The data and list pages, kept granted while the slots are in use.
    _pages: Vec<SharedPages>,
}

impl Module for SlotStaging {
    fn negotiate(&self, asked: Design, backend: &dyn Fn(&str) -> Option<String>) -> Design {
        within_offer(asked, backend)
    }

    fn share(&self, design: Design, to: &mut Share<'_>) -> Result<Box<dyn Staging>, FrontendError> {
        let Design::Slots { data_len } = design else {
            return Err(setup("slot staging set up for another design"));
        };
        let layout = SlotLayout::new(data_len, POOL as u32).map_err(setup)?;
        let areas = share_slots(to, &layout, data_len)?;
        // The list alone is RFC rev 1's own encoding: this key asks for the flags.
        to.key("request-staged-flags", 1);
        Ok(Box::new(Slots {
            areas,
            tx_len: data_len as usize,
        }))
    }
}

/// `asked`, slots of either encoding, with its `data-len` reduced to the largest the
/// backend offers (`feature-staging-slots`, `staging-max-data-len`); grant copy if it
/// offers none.
pub(super) fn within_offer(asked: Design, backend: &dyn Fn(&str) -> Option<String>) -> Design {
    let max = (backend("feature-staging-slots").as_deref() == Some("1"))
        .then(|| backend("staging-max-data-len"))
        .flatten()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|max| *max >= 64);
    match (asked, max) {
        (Design::Slots { data_len }, Some(max)) => Design::Slots {
            data_len: data_len.min(max),
        },
        (Design::SlotsRfc { data_len }, Some(max)) => Design::SlotsRfc {
            data_len: data_len.min(max),
        },
        _ => Design::GrantCopy,
    }
}

/// Shares both directions' slots of `layout` and announces them (`{tx,rx}-data-ref<N>`,
/// `{tx,rx}-data-len` = `data_len`).
pub(super) fn share_slots(
    to: &mut Share<'_>,
    layout: &SlotLayout,
    data_len: u32,
) -> Result<SlotAreas, FrontendError> {
    let mut pages = Vec::new();
    let tx = share_area(to, layout, false, &mut pages)?;
    let rx = share_area(to, layout, true, &mut pages)?;
    for (dir, list) in [("tx", &pages[1]), ("rx", &pages[3])] {
        for (i, g) in list.grefs.iter().enumerate() {
            to.key(&format!("{dir}-data-ref{i}"), g);
        }
        to.key(&format!("{dir}-data-len"), data_len);
    }
    Ok(SlotAreas {
        tx,
        rx,
        _pages: pages,
    })
}

/// Shares one direction's slot data and slot list (pushed onto `pages` in that order).
fn share_area(
    to: &mut Share<'_>,
    layout: &SlotLayout,
    writable: bool,
    pages: &mut Vec<SharedPages>,
) -> Result<SlotArea, FrontendError> {
    let data = to.pages(layout.data_pages(), writable)?;
    let list = to.pages(layout.list_pages(), false)?;
    let data_w = windows(&data)?;
    let list_w = windows(&list)?;
    let entries = layout.natural_entries(&data.grefs).map_err(setup)?;
    write_list(layout, &list_w, &entries).map_err(setup)?;
    let area = SlotArea::natural(*layout, &data_w).map_err(setup)?;
    pages.push(data);
    pages.push(list);
    Ok(area)
}

/// Each page of `p` as its own window.
fn windows(p: &SharedPages) -> Result<Vec<SharedMem>, FrontendError> {
    (0..p.grefs.len())
        .map(|i| p.mem.sub(i * XEN_PAGE_SIZE, XEN_PAGE_SIZE))
        .collect::<Result<Vec<_>, _>>()
        .map_err(setup)
}

impl Staging for Slots {
    /// Every packet that fits its request's slot: the slot is its own, room is never short.
    fn tx_whole_budget(&mut self) -> WholeBudget {
        WholeBudget {
            max_len: self.tx_len,
            room: usize::MAX,
            ..WholeBudget::default()
        }
    }

    fn tx_decide(&mut self, len: usize, _in_flight: bool, t: &mut Tally) -> Option<usize> {
        if len > self.tx_len {
            t.tx_fallback_over_limit += 1;
        }
        Some(len.min(self.tx_len))
    }

    fn tx_stage(&mut self, id: u16, head: &[u8]) -> Result<(), Broken> {
        self.areas
            .tx
            .write(u32::from(id), 0, head)
            .map_err(err("TX slot"))
    }

    fn rx_head(&mut self, rx: RxPacket<'_>, dst: &mut [u8], _: &mut Tally) -> Result<(), Broken> {
        self.areas
            .rx
            .read(first_buf(rx.bufs)?, 0, dst)
            .map_err(err("RX slot"))
    }

    fn rx_lend(&mut self, rx: RxPacket<'_>, out: &mut Lent, _: &mut Tally) -> Result<(), Broken> {
        let staged = usize::from(rx.chain.staged);
        lend_slot(&self.areas.rx, first_buf(rx.bufs)?, staged, out)
    }

    fn lent_mem(&self, region: u32) -> Option<&SharedMem> {
        self.areas.rx.page(region as usize)
    }

    fn rx_slot_gref(&self, slot: u16) -> Option<u32> {
        // The RX slots follow the TX slots in the numbering of NETTXF_staging_buffer.
        Some(self.areas.tx.layout().slots() + u32::from(slot))
    }
}

/// The RX buffer posted in a chain's first ring slot, whose slot holds its staged head.
fn first_buf(bufs: &[u16]) -> Result<u32, Broken> {
    bufs.first()
        .map(|b| u32::from(*b))
        .ok_or_else(|| "an empty RX chain".into())
}

/// Appends where the first `len` bytes of `slot` of `area` lie to `out`.
pub(super) fn lend_slot(
    area: &SlotArea,
    slot: u32,
    len: usize,
    out: &mut Lent,
) -> Result<(), Broken> {
    let mut full = false;
    area.in_place(slot, 0, len, |page, at, n| {
        full |= out.try_push((page as u32, at, n)).is_err();
    })
    .map_err(err("RX slot"))?;
    if full {
        return Err("an RX packet in more pieces than a view holds".into());
    }
    Ok(())
}
