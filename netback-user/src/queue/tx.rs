//! The guest's transmissions: requests in, packets out to the application, responses back.

use netstage_fallback::{Gso, PacketBuf};
use netstage_ring::netif::{
    parse_tx_chain, Extra, TxChain, TxFlags, NETIF_RSP_ERROR, NETIF_RSP_OKAY,
};

use super::{fault, BackQueue, QueueFault, BURST};
use crate::BackendPlatform;

impl<P: BackendPlatform> BackQueue<P> {
    /// Takes up to `bufs.len()` (at most [`BURST`]) packets the guest transmitted, copies
    /// each into a buffer (its staged head from staging memory, the rest by this queue's
    /// grant path), answers their requests and returns how many buffers hold a packet, in
    /// the guest's order. Malformed or unacceptable packets are answered with an error and
    /// counted (`tx_dropped`, `tx_grant_errors`), not returned. A frontend that breaks the
    /// protocol yields [`QueueFault`]: disconnect it.
    pub fn recv_burst(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, QueueFault> {
        let max = bufs.len().min(BURST);
        if max == 0 || self.tx.refresh_requests().map_err(fault)? == 0 {
            return Ok(0);
        }
        let mut chains = std::mem::take(&mut self.chains);
        let mut status = std::mem::take(&mut self.status);
        let r = self.tx_burst(&mut chains, &mut status, &mut bufs[..max]);
        chains.clear();
        status.clear();
        self.chains = chains;
        self.status = status;
        self.metrics.absorb(&mut self.counts);
        r
    }

    fn tx_burst(
        &mut self,
        chains: &mut Vec<TxChain>,
        status: &mut Vec<i16>,
        bufs: &mut [PacketBuf],
    ) -> Result<usize, QueueFault> {
        while self.tx.pending_requests() > 0 && chains.len() < bufs.len() {
            let tx = &mut self.tx;
            let chain = parse_tx_chain(|| tx.take_request().ok().flatten())
                .map_err(|f| QueueFault(format!("TX request chain: {f}")))?;
            self.counts.tx_slots += chain.slots.len() as u64;
            chains.push(chain);
        }
        for (c, buf) in chains.iter().zip(bufs.iter_mut()) {
            let st = self.tx_stage_one(c, buf)?;
            status.push(st);
        }
        self.staging.tx_release().map_err(QueueFault)?;
        self.fetch
            .fetch(
                &self.platform,
                self.p.fe,
                chains,
                bufs,
                status,
                &mut self.counts,
            )
            .map_err(QueueFault)?;
        for (c, st) in chains.iter().zip(status.iter()) {
            for r in c.responses(*st) {
                self.tx.put_response(&r).map_err(fault)?;
            }
        }
        if self.tx.push_responses_and_check_notify().map_err(fault)? {
            self.notify();
        }
        Ok(self.keep_delivered(chains, status, bufs))
    }

    /// Validates one chain and reads its staged bytes; returns its status.
    fn tx_stage_one(&mut self, c: &TxChain, buf: &mut PacketBuf) -> Result<i16, QueueFault> {
        let gso_ok = match c.extras.gso {
            Some(Extra::Gso { gso_type, .. }) => self.p.gso_ok(gso_type),
            _ => true,
        };
        let total = usize::from(c.total_size);
        let dst = buf.prepare(total).map_err(fault)?;
        if let Some(slot) = c.staging_buffer {
            // The whole packet is in a staging slot: a TX slot, or an RX slot the frontend
            // forwards from.
            if c.drop.is_none() && gso_ok && self.staging.tx_read_slot(slot, dst) {
                self.counts.tx_zerocopy_packets += 1;
                return Ok(NETIF_RSP_OKAY);
            }
            self.counts.tx_dropped += 1;
            return Ok(NETIF_RSP_ERROR);
        }
        let staged = c.flags.contains(TxFlags::STAGED);
        if c.drop.is_some() || !gso_ok || (!self.p.sg && c.data_slots() > 1) {
            if staged {
                self.staging.tx_skip(c).map_err(QueueFault)?;
            }
            self.counts.tx_dropped += 1;
            return Ok(NETIF_RSP_ERROR);
        }
        if staged {
            if !self.staging.tx_read(c, dst).map_err(QueueFault)? {
                self.counts.tx_dropped += 1;
                return Ok(NETIF_RSP_ERROR);
            }
            self.counts.tx_staged_packets += 1;
            self.counts.tx_staged_bytes += u64::from(c.staged);
        }
        Ok(NETIF_RSP_OKAY)
    }

    /// Moves the delivered packets' buffers to the front, in order, with their offload
    /// metadata, and counts them; returns how many.
    fn keep_delivered(
        &mut self,
        chains: &[TxChain],
        status: &[i16],
        bufs: &mut [PacketBuf],
    ) -> usize {
        let mut kept = 0;
        for (i, (c, st)) in chains.iter().zip(status).enumerate() {
            if *st != NETIF_RSP_OKAY {
                continue;
            }
            let buf = &mut bufs[i];
            buf.gso = Gso::from_extras(&c.extras);
            buf.csum_blank = c.flags.contains(TxFlags::CSUM_BLANK);
            self.counts.tx_packets += 1;
            self.counts.tx_bytes += buf.len() as u64;
            bufs.swap(i, kept);
            kept += 1;
        }
        kept
    }
}
