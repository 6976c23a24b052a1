//! Staging slots in RFC revision 1's own encoding ([`ReplicatedHead`]): the frontend's
//! requests are those of a packet without staging, and the first bytes of a request's data
//! are also in the slot of its id, so they are copied from there and skipped in its grant.
//! RX the same way round: the first bytes of a request's share of a packet go into the
//! slot of its id instead of its buffer, and the responses are the usual ones.
//!
//! The offer, keys and mapping are those of [`super::slots`] (without
//! `request-staged-flags`); slots are `data-len` bytes up to a page, a page above.

use netstage_ring::netif::{TxChain, TxFlags};
use netstage_ring::staging::{ReplicatedHead, SlotArea, SlotLayout, StagingError};
use netstage_ring::{SharedMem, XEN_PAGE_SIZE};

use super::slots::{lend_from, Mapped};
use super::{BackStaging, Lent};
use crate::queue::Fatal;

/// The frontend's slots, mapped, and each direction's negotiated encoding.
pub(crate) struct SlotsRfc {
    tx_head: ReplicatedHead,
    rx_head: ReplicatedHead,
    tx: SlotArea,
    rx: SlotArea,
}

impl SlotsRfc {
    /// The slots of a `data-len` for a queue of `slots` request ids: `data-len` bytes up to
    /// a page, a page above.
    pub(crate) fn geometry(slots: u32) -> impl Fn(u32) -> Result<SlotLayout, StagingError> {
        move |len| ReplicatedHead::new(len)?.layout(slots)
    }

    /// The design over the TX and RX slots mapped with [`SlotsRfc::geometry`], each
    /// direction with the encoding of its own `data-len`.
    pub(crate) fn new([(tx, tx_len), (rx, rx_len)]: [Mapped; 2]) -> Result<SlotsRfc, String> {
        let head = |len| ReplicatedHead::new(len).map_err(|e| e.to_string());
        Ok(SlotsRfc {
            tx_head: head(tx_len)?,
            rx_head: head(rx_len)?,
            tx,
            rx,
        })
    }
}

impl BackStaging for SlotsRfc {
    fn tx_claim(&mut self, c: &mut TxChain) {
        // From the chain's private copy of the requests, read once: sizes the frontend
        // cannot change any more.
        let mut cur = self.tx_head.start();
        c.replicate(|len| cur.take(len));
    }

    fn tx_read(&mut self, c: &TxChain, dst: &mut [u8]) -> Result<bool, Fatal> {
        if c.flags.contains(TxFlags::STAGED) {
            // Not part of this encoding: as on a queue without staging, the packet is
            // dropped.
            return Ok(false);
        }
        let mut at = 0;
        for (id, n) in c.replicated() {
            let Some(part) = dst.get_mut(at..at + n) else {
                return Ok(false);
            };
            // An id past the list names no slot: the packet is dropped.
            if self.tx.read(u32::from(id), 0, part).is_err() {
                return Ok(false);
            }
            at += n;
        }
        Ok(true)
    }

    fn tx_lend(&mut self, c: &TxChain, lent: &mut Lent) -> Result<bool, Fatal> {
        // Pieces from more than two pages, or a slot the frontend cannot name, are left to
        // `tx_read`.
        let mut pieces = 0;
        for (id, n) in c.replicated() {
            if !lend_from(&self.tx, u32::from(id), n, lent, &mut pieces) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn lent_mem(&self, region: u32) -> Option<&SharedMem> {
        self.tx.page(region as usize)
    }

    fn rx_replicate(
        &mut self,
        data_ids: &mut dyn Iterator<Item = u16>,
        data: &[u8],
    ) -> Result<usize, Fatal> {
        let mut cur = self.rx_head.start();
        let mut copied = 0;
        for (chunk, id) in data.chunks(XEN_PAGE_SIZE).zip(data_ids) {
            let n = cur.take(chunk.len());
            if n == 0 {
                break;
            }
            self.rx
                .write(u32::from(id), 0, &chunk[..n])
                .map_err(|e| format!("RX request id {id} names no staging slot: {e}"))?;
            copied += n;
        }
        Ok(copied)
    }
}
