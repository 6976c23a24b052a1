//! The guest's transmissions: requests in, packets out to the application (copied into its
//! buffers, or lent in place), responses back.

use netstage_fallback::{Gso, PacketBuf, PacketView, ViewPart, BURST_BYTES};
use netstage_ring::netif::{
    parse_tx_chain_into, Extra, TxChain, TxFlags, NETIF_RSP_ERROR, NETIF_RSP_OKAY,
};

use super::{fault, BackQueue, QueueFault, BURST, LEND_MIN};
use crate::staging::{BackStaging, Lent};
use crate::txpath::TxBurst;
use crate::BackendPlatform;

impl<P: BackendPlatform> BackQueue<P> {
    /// Takes up to `bufs.len()` (at most [`BURST`], and none after [`BURST_BYTES`], so that
    /// the guest gets its room back while the caller takes more) packets the guest
    /// transmitted, copies each into a buffer (its staged head from staging memory, the
    /// rest by this queue's grant path), answers their requests and returns how many
    /// buffers hold a packet, in the guest's order. Malformed or unacceptable packets are
    /// answered with an error and counted (`tx_dropped`, `tx_grant_errors`), not returned.
    /// A frontend that breaks the protocol yields [`QueueFault`]: disconnect it. The
    /// default where the frontend is not trusted: what the application gets is a private
    /// copy that cannot change under it.
    pub fn recv_burst(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, QueueFault> {
        self.tx_call(bufs, false, |chains, status, bufs, _, _| {
            Ok(keep_delivered(chains, status, bufs))
        })
    }

    /// Like [`BackQueue::recv_burst`], but each packet's staged head (slot or data ring) is
    /// lent in place instead of copied: `deliver` sees every delivered packet as a
    /// [`PacketView`] and must be done with it when it returns; the staging memory goes back
    /// to the frontend after the last call. The granted rest of a packet, and a head that
    /// cannot be lent (a slot spanning pages), are copied into `bufs` as usual. Lent bytes
    /// lie in memory the frontend can still write: read each byte once, and treat what you
    /// read as untrusted. Returns how many packets were delivered.
    pub fn recv_burst_in_place(
        &mut self,
        bufs: &mut [PacketBuf],
        mut deliver: impl FnMut(&PacketView<'_>),
    ) -> Result<usize, QueueFault> {
        self.tx_call(bufs, true, |chains, status, bufs, lent, staging| {
            let mut n = 0;
            for (i, (c, st)) in chains.iter().zip(status).enumerate() {
                if *st != NETIF_RSP_OKAY {
                    continue;
                }
                let mut v = PacketView::new(
                    Gso::from_extras(&c.extras),
                    c.flags.contains(TxFlags::CSUM_BLANK),
                );
                fill_view(&mut v, &bufs[i], lent[i].as_ref(), staging)?;
                deliver(&v);
                n += 1;
            }
            Ok(n)
        })
    }

    /// One receive call: gathers a burst (lending staged heads when `lend`), lets `take`
    /// hand the packets over, then releases the staging memory and answers.
    fn tx_call(
        &mut self,
        bufs: &mut [PacketBuf],
        lend: bool,
        take: impl FnOnce(
            &[TxChain],
            &[i16],
            &mut [PacketBuf],
            &[Option<Lent>],
            &dyn BackStaging,
        ) -> Result<usize, QueueFault>,
    ) -> Result<usize, QueueFault> {
        let max = bufs.len().min(BURST);
        if max == 0 || (self.tx.refresh_requests().map_err(fault)? == 0 && !self.tx_held) {
            return Ok(0);
        }
        let mut chains = std::mem::take(&mut self.chains);
        let mut status = std::mem::take(&mut self.status);
        let mut lent = std::mem::take(&mut self.lent);
        let bufs = &mut bufs[..max];
        let r = self
            .tx_gather(&mut chains, &mut status, &mut lent, bufs, lend)
            .and_then(|got| {
                if got == 0 {
                    return Ok(0);
                }
                let taken = &chains[..got];
                // Counted and published before the application has the packets: whoever
                // learns of a packet from it finds it counted. (`take` fails only on an
                // inconsistency of our own, a lent region without memory, which ends the
                // queue: the burst is then counted though not all of it was delivered.)
                self.count_taken(taken, &status);
                self.metrics.absorb_packets(&mut self.counts);
                let n = take(taken, &status, bufs, &lent, &*self.staging)?;
                self.absorb_before_errors();
                self.tx_answer(taken, &status)?;
                // A chain held for credit, parsed after the burst's, is the next burst's
                // first.
                if self.tx_held {
                    chains.swap(0, got);
                }
                Ok(n)
            });
        // The chains stay: the next burst parses into them.
        status.clear();
        lent.clear();
        self.chains = chains;
        self.status = status;
        self.lent = lent;
        self.metrics.absorb(&mut self.counts);
        r
    }

    /// Parses up to `bufs.len()` chains into `chains` (as many as a burst holds, reused),
    /// validates them, reads or lends their staged bytes and fetches the granted rest;
    /// returns how many chains it took.
    fn tx_gather(
        &mut self,
        chains: &mut [TxChain],
        status: &mut Vec<i16>,
        lent: &mut Vec<Option<Lent>>,
        bufs: &mut [PacketBuf],
        lend: bool,
    ) -> Result<usize, QueueFault> {
        let (mut got, mut bytes) = (0, 0);
        // `chains.len() - 1`: room for one chain held for credit after the burst's.
        let max = bufs.len().min(chains.len() - 1);
        while got < max && bytes < BURST_BYTES && (self.tx_held || self.tx.pending_requests() > 0) {
            if !self.tx_held {
                let tx = &mut self.tx;
                parse_tx_chain_into(|| tx.take_request().ok().flatten(), &mut chains[got])
                    .map_err(|f| QueueFault(format!("TX request chain: {f}")))?;
            }
            // The toolstack's `rate`: past the credit the packet waits, parsed and
            // unanswered, for the next interval (netback's tx_credit_exceeded).
            if !self.credit.admit(u64::from(chains[got].total_size)) {
                self.counts.tx_credit_waits += u64::from(!self.tx_held);
                self.tx_held = true;
                break;
            }
            self.tx_held = false;
            self.staging.tx_claim(&mut chains[got]);
            self.counts.tx_slots += chains[got].slots.len() as u64;
            bytes += chains[got].total_size as usize;
            got += 1;
        }
        if got == 0 {
            return Ok(0);
        }
        self.moved();
        let chains = &chains[..got];
        self.staging.tx_prefetch(chains);
        // Whether any packet has granted bytes to fetch: a burst of packets staged whole
        // (or refused) skips the grant path's pass over it.
        let mut granted = false;
        for (c, buf) in chains.iter().zip(bufs.iter_mut()) {
            // Lent ranges are written where they stay: moved after, the fresh stores
            // stalled the wide loads that moved them.
            let i = lent.len();
            lent.push(None);
            let st = self.tx_stage_one(c, buf, lend, &mut lent[i])?;
            granted |= st == NETIF_RSP_OKAY && c.staged < c.total_size;
            status.push(st);
        }
        if !granted {
            return Ok(got);
        }
        let mut burst = TxBurst {
            fe: self.p.fe,
            chains,
            bufs,
            status,
            counts: &mut self.counts,
        };
        self.fetch
            .fetch(&self.platform, &mut burst)
            .map_err(QueueFault)?;
        Ok(got)
    }

    /// Counts the packets of a burst that are handed over (those whose status is OK).
    fn count_taken(&mut self, chains: &[TxChain], status: &[i16]) {
        for (c, st) in chains.iter().zip(status) {
            if *st == NETIF_RSP_OKAY {
                self.counts.tx_packets += 1;
                self.counts.tx_bytes += u64::from(c.total_size);
            }
        }
    }

    /// Gives the staging memory back and answers every chain of the burst.
    fn tx_answer(&mut self, chains: &[TxChain], status: &[i16]) -> Result<(), QueueFault> {
        self.staging.tx_release().map_err(QueueFault)?;
        for (c, st) in chains.iter().zip(status) {
            for r in c.responses(*st) {
                self.tx.put_response(&r).map_err(fault)?;
            }
        }
        if self.tx.push_responses_and_check_notify().map_err(fault)? {
            self.notify();
        }
        Ok(())
    }

    /// Validates one chain and reads (or, with `lend`, lends into `lent`) its staged bytes;
    /// returns its status. (What was lent is written in place, not returned with the
    /// status: moving the pair cost more than the rest of a 64-byte packet's staging.)
    fn tx_stage_one(
        &mut self,
        c: &TxChain,
        buf: &mut PacketBuf,
        lend: bool,
        lent: &mut Option<Lent>,
    ) -> Result<i16, QueueFault> {
        let gso_ok = match c.extras.gso {
            Some(Extra::Gso { gso_type, .. }) => self.p.gso_ok(gso_type),
            _ => true,
        };
        let dst = buf.prepare(usize::from(c.total_size)).map_err(fault)?;
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
        let staged = c.staged > 0 || c.flags.contains(TxFlags::STAGED);
        if c.drop.is_some() || !gso_ok || (!self.p.sg && c.data_slots() > 1) {
            if staged {
                self.staging.tx_skip(c).map_err(QueueFault)?;
            }
            self.counts.tx_dropped += 1;
            return Ok(NETIF_RSP_ERROR);
        }
        if !staged {
            return Ok(NETIF_RSP_OKAY);
        }
        // A small head costs less to copy than to lend.
        if lend && usize::from(c.staged) >= LEND_MIN {
            let l = lent.insert([(0, 0, 0); 2]);
            if !self.staging.tx_lend(c, l).map_err(QueueFault)? {
                *lent = None;
            }
        }
        if lent.is_none() && !self.staging.tx_read(c, dst).map_err(QueueFault)? {
            self.counts.tx_dropped += 1;
            return Ok(NETIF_RSP_ERROR);
        }
        self.counts.tx_staged_packets += 1;
        self.counts.tx_staged_bytes += u64::from(c.staged);
        self.counts.tx_in_place_packets += u64::from(lent.is_some());
        Ok(NETIF_RSP_OKAY)
    }
}

/// Moves the delivered packets' buffers to the front, in order, with their offload
/// metadata; returns how many.
fn keep_delivered(chains: &[TxChain], status: &[i16], bufs: &mut [PacketBuf]) -> usize {
    let mut kept = 0;
    for (i, (c, st)) in chains.iter().zip(status).enumerate() {
        if *st != NETIF_RSP_OKAY {
            continue;
        }
        let buf = &mut bufs[i];
        buf.gso = Gso::from_extras(&c.extras);
        buf.csum_blank = c.flags.contains(TxFlags::CSUM_BLANK);
        bufs.swap(i, kept);
        kept += 1;
    }
    kept
}

/// Fills `v` with a packet as lent: its staged head where it lies (if lent), the rest from
/// `buf`.
fn fill_view<'a>(
    v: &mut PacketView<'a>,
    buf: &'a PacketBuf,
    lent: Option<&Lent>,
    staging: &'a dyn BackStaging,
) -> Result<(), QueueFault> {
    let Some(lent) = lent else {
        // Nothing lent: the packet is whole in its buffer.
        return v.push(ViewPart::Private(buf.data())).map_err(fault);
    };
    let mut skip = 0;
    for &(region, offset, len) in lent {
        let mem = staging
            .lent_mem(region)
            .ok_or_else(|| QueueFault(format!("lent region {region} has no memory")))?;
        v.push(ViewPart::Shared { mem, offset, len })
            .map_err(fault)?;
        skip += len;
    }
    let rest = buf.data().get(skip..).unwrap_or_default();
    v.push(ViewPart::Private(rest)).map_err(fault)
}
