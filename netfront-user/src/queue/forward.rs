//! Forwarding: every received packet is transmitted back out on its queue. With staging
//! slots, a packet wholly in its RX slot leaves straight from there, without a copy
//! (`NETTXF_staging_buffer`); others are copied out and sent like any packet.

use netstage_fallback::{Gso, BURST_BYTES};
use netstage_ring::netif::{Extra, NetifExtraInfo, NetifTxRequest, RxChain, TxFlags};

use super::rx::ChainBufs;
use super::FrontQueue;
use crate::staging::{err, Broken};
use crate::{validate, FrontendError, FrontendPlatform};

/// A received packet waiting to be sent back out.
pub(super) enum Fwd {
    /// Wholly in the staging slot of RX buffer `rx_id`: sent from there (`gref` names it).
    Slot {
        rx_id: u16,
        gref: u32,
        len: u16,
        gso: Option<Gso>,
    },
    /// Copied into the queue's forwarding buffer.
    Copied,
}

impl<P: FrontendPlatform> FrontQueue<P> {
    /// Forwarding mode: receives up to `max` packets (stopping after [`BURST_BYTES`]) and
    /// transmits each back out on this queue, in order, and returns how many left. A packet
    /// that finds the TX ring full waits in the queue (and no further packet is received)
    /// until a later call.
    pub fn forward_burst(&mut self, max: usize) -> Result<usize, FrontendError> {
        self.check_open()?;
        let r = self.fwd_burst(max);
        self.finish(r)
    }

    fn fwd_burst(&mut self, max: usize) -> Result<usize, Broken> {
        self.reap_tx()?;
        let (mut sent, mut reposted) = (0, 0);
        let (mut chain, mut ids) = (RxChain::default(), ChainBufs::new());
        let mut bytes = 0;
        while sent < max && bytes < BURST_BYTES {
            if self.fwd.is_some() {
                if !self.send_fwd()? {
                    break;
                }
                sent += 1;
                continue;
            }
            if !self.next_chain(&mut chain, &mut ids)? {
                break;
            }
            reposted += self.take_fwd(&chain, &ids)?;
            bytes += chain.total_len as usize;
        }
        self.publish_tx(sent)?;
        self.push_rx(reposted)?;
        Ok(sent)
    }

    /// Makes a received chain the packet waiting to be forwarded (or drops it); returns how
    /// many of its RX buffers were posted again.
    fn take_fwd(&mut self, chain: &RxChain, ids: &[u16]) -> Result<usize, Broken> {
        let staged = usize::from(chain.staged);
        let first = ids.first().copied().ok_or("an empty RX chain")?;
        let gref = self.staging.rx_slot_gref(first);
        if let (None, Some(gref), true) = (chain.drop, gref, staged > 0) {
            if staged as u32 == chain.total_len {
                // Zero copy: the packet leaves from its RX slot, which stays lent out
                // until the transmission completes.
                self.tally.rx_packets += 1;
                self.tally.rx_bytes += u64::from(chain.total_len);
                self.tally.rx_staged_packets += 1;
                self.tally.rx_staged_bytes += staged as u64;
                self.fwd = Some(Fwd::Slot {
                    rx_id: first,
                    gref,
                    len: chain.staged,
                    gso: Gso::from_extras(&chain.extras),
                });
                return self.post_each(&ids[1..]);
            }
        }
        let mut buf = self.fwd_buf.take().unwrap_or_default();
        let r = self.copy_out(chain, ids, &mut buf);
        let keep = r? && validate(&self.features, &buf.packet_ref()).is_ok();
        self.fwd_buf = Some(buf);
        self.fwd = keep.then_some(Fwd::Copied);
        self.post_each(ids)
    }

    /// Sends the packet waiting to be forwarded, if there is room (unpublished).
    fn send_fwd(&mut self) -> Result<bool, Broken> {
        let sent = match self.fwd {
            Some(Fwd::Slot {
                rx_id,
                gref,
                len,
                gso,
            }) => self.send_from_slot(rx_id, gref, len, gso)?,
            Some(Fwd::Copied) => {
                let buf = self.fwd_buf.take().ok_or("no forwarding buffer")?;
                let r = self.tx_one(&buf.packet_ref());
                self.fwd_buf = Some(buf);
                r?
            }
            None => false,
        };
        if sent {
            self.fwd = None;
        }
        Ok(sent)
    }

    /// Sends `len` bytes from RX buffer `rx_id`'s slot with `NETTXF_staging_buffer`.
    fn send_from_slot(
        &mut self,
        rx_id: u16,
        gref: u32,
        len: u16,
        gso: Option<Gso>,
    ) -> Result<bool, Broken> {
        if self.tx_free.is_empty()
            || (self.tx.free_requests() as usize) < 1 + usize::from(gso.is_some())
        {
            return Ok(false);
        }
        let id = self.take_id()?;
        self.tx_head[usize::from(id)] = true;
        self.zc_pending[usize::from(id)] = Some(rx_id);
        let mut flags = TxFlags::STAGING_BUFFER;
        if gso.is_some() {
            flags |= TxFlags::EXTRA_INFO;
        }
        let req = NetifTxRequest {
            gref,
            offset: 0,
            flags: flags.bits(),
            id,
            size: len,
        };
        self.tx.put_request(&req).map_err(err("TX ring"))?;
        if let Some(g) = gso {
            let e = Extra::Gso {
                size: g.mss,
                gso_type: g.gso_type,
                features: 0,
            };
            let mut slot = NetifExtraInfo::encode(&e, false).to_tx_slot();
            slot.id = 0xffff;
            self.tx.put_request(&slot).map_err(err("TX ring"))?;
        }
        self.tally.tx_packets += 1;
        self.tally.tx_bytes += u64::from(len);
        self.tally.tx_zerocopy_packets += 1;
        Ok(true)
    }
}
