//! The RFC's staging slots: a request's id picks its slot in the frontend's data list (TX
//! read-only, RX writable).

use netstage_ring::netif::TxChain;
use netstage_ring::staging::SlotArea;

use super::{staged_len, BackStaging, Lent};
use crate::queue::Fatal;

/// The frontend's slots, mapped.
pub(crate) struct Slots {
    tx: SlotArea,
    rx: SlotArea,
    rx_len: usize,
}

impl Slots {
    /// Slots `tx` and `rx`, `rx_len` bytes each on RX.
    pub(crate) fn new(tx: SlotArea, rx: SlotArea, rx_len: usize) -> Slots {
        Slots { tx, rx, rx_len }
    }
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
        // A slot the frontend cannot name, or one spanning pages, is copied (or dropped)
        // by `tx_read` instead.
        Ok(self
            .tx
            .window(u32::from(c.first_id()), 0, staged_len(c))
            .ok()
            .flatten()
            .map(|w| (w, None)))
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
