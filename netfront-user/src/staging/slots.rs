//! Staging slots: one slot of `data_len` bytes per request id and direction, selected by
//! the id of the packet's first request.

use netstage_fallback::Design;
use netstage_platform::SharedPages;
use netstage_ring::staging::{write_list, SlotArea, SlotLayout};
use netstage_ring::{SharedMem, XEN_PAGE_SIZE};

use super::{err, setup, Broken, Lent, Module, Share, Staging};
use crate::metrics::Tally;
use crate::queue::POOL;
use crate::FrontendError;

/// The module of staging slots.
pub(crate) struct SlotStaging;

/// A queue's slot areas.
struct Slots {
    tx: SlotArea,
    rx: SlotArea,
    tx_len: usize,
    _pages: Vec<SharedPages>,
}

impl Module for SlotStaging {
    fn negotiate(&self, asked: Design, backend: &dyn Fn(&str) -> Option<String>) -> Design {
        let Design::Slots { data_len } = asked else {
            return Design::GrantCopy;
        };
        if backend("feature-staging-slots").as_deref() != Some("1") {
            return Design::GrantCopy;
        }
        let max = backend("staging-max-data-len")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        if max >= 64 {
            Design::Slots {
                data_len: data_len.min(max),
            }
        } else {
            Design::GrantCopy
        }
    }

    fn share(&self, design: Design, to: &mut Share<'_>) -> Result<Box<dyn Staging>, FrontendError> {
        let Design::Slots { data_len } = design else {
            return Err(setup("slot staging set up for another design"));
        };
        let layout = SlotLayout::new(data_len, POOL as u32).map_err(setup)?;
        let mut pages = Vec::new();
        let tx = share_area(to, &layout, false, &mut pages)?;
        let rx = share_area(to, &layout, true, &mut pages)?;
        for (dir, list) in [("tx", &pages[1]), ("rx", &pages[3])] {
            for (i, g) in list.grefs.iter().enumerate() {
                to.key(&format!("{dir}-data-ref{i}"), g);
            }
            to.key(&format!("{dir}-data-len"), data_len);
        }
        Ok(Box::new(Slots {
            tx,
            rx,
            tx_len: data_len as usize,
            _pages: pages,
        }))
    }
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
    fn tx_decide(&mut self, len: usize, t: &mut Tally) -> usize {
        if len > self.tx_len {
            t.tx_fallback_over_limit += 1;
        }
        len.min(self.tx_len)
    }

    fn tx_stage(&mut self, id: u16, head: &[u8]) -> Result<(), Broken> {
        self.tx
            .write(u32::from(id), 0, head)
            .map_err(err("TX slot"))
    }

    fn rx_head(&mut self, slot: u16, dst: &mut [u8], _t: &mut Tally) -> Result<(), Broken> {
        self.rx
            .read(u32::from(slot), 0, dst)
            .map_err(err("RX slot"))
    }

    fn rx_lend(
        &mut self,
        slot: u16,
        staged: usize,
        out: &mut Lent,
        _t: &mut Tally,
    ) -> Result<(), Broken> {
        let mut full = false;
        self.rx
            .in_place(u32::from(slot), 0, staged, |page, at, n| {
                full |= out.try_push((page as u32, at, n)).is_err();
            })
            .map_err(err("RX slot"))?;
        if full {
            return Err("an RX packet in more pieces than a view holds".into());
        }
        Ok(())
    }

    fn lent_mem(&self, region: u32) -> Option<&SharedMem> {
        self.rx.page(region as usize)
    }

    fn rx_slot_gref(&self, slot: u16) -> Option<u32> {
        // The RX slots follow the TX slots in the numbering of NETTXF_staging_buffer.
        Some(self.tx.layout().slots() + u32::from(slot))
    }
}
