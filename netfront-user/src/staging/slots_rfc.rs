//! Staging slots in RFC revision 1's own encoding ([`ReplicatedHead`]): packets go on the
//! rings as without staging, every byte granted; the start of a request's data is copied,
//! besides, into the slot of its id, and the backend takes it from there. Received
//! packets the same way round: the first bytes of a response's data are in the slot of the
//! buffer posted in its ring slot, not in the buffer.
//!
//! Same offer, keys (without `request-staged-flags`) and shared memory as
//! [`super::slots`]; slots are `data-len` bytes up to a page, a page above.

use netstage_fallback::Design;
use netstage_ring::netif::{RxChain, RxFlags, TxFragment};
use netstage_ring::staging::ReplicatedHead;
use netstage_ring::SharedMem;

use super::slots::{lend_slot, share_slots, within_offer, SlotAreas};
use super::{err, setup, Broken, Lent, Module, RxPacket, Share, Staging};
use crate::metrics::Tally;
use crate::queue::POOL;
use crate::FrontendError;

/// The module of RFC rev 1's staging slots.
pub(crate) struct SlotsRfcStaging;

/// A queue's slot areas and the negotiated encoding.
struct SlotsRfc {
    head: ReplicatedHead,
    areas: SlotAreas,
}

impl Module for SlotsRfcStaging {
    fn negotiate(&self, asked: Design, backend: &dyn Fn(&str) -> Option<String>) -> Design {
        within_offer(asked, backend)
    }

    fn share(&self, design: Design, to: &mut Share<'_>) -> Result<Box<dyn Staging>, FrontendError> {
        match design {
            Design::SlotsRfc { data_len } => Ok(Box::new(SlotsRfc::share(data_len, to)?)),
            _ => Err(setup("RFC staging slots set up for another design")),
        }
    }
}

impl SlotsRfc {
    /// Shares a queue's slots for `data-len` `data_len` and announces them.
    fn share(data_len: u32, to: &mut Share<'_>) -> Result<SlotsRfc, FrontendError> {
        let head = ReplicatedHead::new(data_len).map_err(setup)?;
        let layout = head.layout(POOL as u32).map_err(setup)?;
        let areas = share_slots(to, &layout, data_len)?;
        Ok(SlotsRfc { head, areas })
    }
}

/// The replicated pieces of a received packet: `(buffer, bytes)` per data slot, in order.
fn rx_pieces(rx: RxPacket<'_>) -> impl Iterator<Item = (u32, usize)> + '_ {
    rx.chain
        .slots
        .iter()
        .zip(rx.bufs)
        .filter(|(s, _)| !s.extra && s.staged > 0)
        .map(|(s, b)| (u32::from(*b), usize::from(s.staged)))
}

impl Staging for SlotsRfc {
    fn tx_decide(&mut self, len: usize, _in_flight: bool, t: &mut Tally) -> Option<usize> {
        // Nothing leaves the grants; what is replicated is decided by the encoding.
        if len > self.head.data_len() as usize {
            t.tx_fallback_over_limit += 1;
        }
        Some(0)
    }

    fn tx_stage(&mut self, _id: u16, _head: &[u8]) -> Result<(), Broken> {
        Err("RFC staging slots replicate the head; nothing is staged apart".into())
    }

    fn tx_replicate(
        &mut self,
        frags: &[TxFragment],
        data: &[u8],
        t: &mut Tally,
    ) -> Result<(), Broken> {
        let mut cur = self.head.start();
        let (mut at, mut copied) = (0, 0);
        for f in frags {
            let n = cur.take(usize::from(f.size));
            if n > 0 {
                let part = data.get(at..at + n).ok_or("TX requests past the packet")?;
                self.areas
                    .tx
                    .write(u32::from(f.id), 0, part)
                    .map_err(err("TX slot"))?;
                copied += n;
            }
            at += usize::from(f.size);
        }
        if copied > 0 {
            t.tx_staged_packets += 1;
            t.tx_staged_bytes += copied as u64;
        }
        Ok(())
    }

    fn rx_claim(&mut self, chain: &mut RxChain) -> Result<(), Broken> {
        if chain.flags.contains(RxFlags::STAGED) {
            return Err("backend sent NETRXF_staged, which RFC staging slots do not use".into());
        }
        let mut cur = self.head.start();
        chain.replicate(|len| cur.take(len));
        Ok(())
    }

    fn rx_head(&mut self, rx: RxPacket<'_>, dst: &mut [u8], _: &mut Tally) -> Result<(), Broken> {
        let mut at = 0;
        for (buf, n) in rx_pieces(rx) {
            let part = dst.get_mut(at..at + n).ok_or("staged past the packet")?;
            self.areas.rx.read(buf, 0, part).map_err(err("RX slot"))?;
            at += n;
        }
        Ok(())
    }

    fn rx_lend(&mut self, rx: RxPacket<'_>, out: &mut Lent, _: &mut Tally) -> Result<(), Broken> {
        for (buf, n) in rx_pieces(rx) {
            lend_slot(&self.areas.rx, buf, n, out)?;
        }
        Ok(())
    }

    fn lent_mem(&self, region: u32) -> Option<&SharedMem> {
        self.areas.rx.page(region as usize)
    }
}
