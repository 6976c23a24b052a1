//! The TX path: reaping responses, and putting packets on the ring.

use arrayvec::ArrayVec;
use netstage_fallback::{PacketRef, BURST_BYTES};
use netstage_ring::netif::{
    encode_staged_tx_chain, encode_tx_chain, staged_tx_request, Extra, TxFlags, TxFragment,
    NETIF_RSP_NULL, NETIF_RSP_OKAY, XEN_NETIF_NR_SLOTS_MIN,
};
use netstage_ring::XEN_PAGE_SIZE;

use super::{FrontQueue, POOL};
use crate::staging::{err, Broken, Pool, WholeBudget};
use crate::{validate, FrontendError, FrontendPlatform};

/// Request ids (data slots) and ring slots a packet of `len` bytes needs with `staged`
/// bytes staged.
pub(super) fn needs(len: usize, staged: usize, gso: bool) -> (usize, usize) {
    let rest = len - staged.min(len);
    let data = if staged > 0 {
        1 + rest.div_ceil(XEN_PAGE_SIZE)
    } else {
        rest.div_ceil(XEN_PAGE_SIZE).max(1)
    };
    (data, data + usize::from(gso))
}

/// The most TX ring entries fetched for writing before a burst is put on the ring: 64
/// entries of 12 bytes (768 bytes, 13 lines at most). Measured in alternating pairs of TX
/// 64 B ring:8:greedy runs: 1.01x (0.99x-1.02x, 8 pairs) against none; with the data
/// ring's first 1 KiB fetched for writing as well 1.03x (1.01x-1.04x, 8 pairs), but that
/// part alone measured 1.00x, and these entries alone against both 1.00x (8 pairs each).
const PREFETCH_REQUESTS: usize = 64;

impl<P: FrontendPlatform> FrontQueue<P> {
    /// Transmits as many of `pkts`, in order, as there are request ids, ring slots and
    /// staging room for, and returns how many it took: it stops after [`BURST_BYTES`] so
    /// that the backend starts on them while the caller sends more. Every byte taken is
    /// copied into shared memory before it returns. The backend's TX responses are reaped
    /// after the burst is published, and a burst that stopped for room is tried once more
    /// after reaping.
    ///
    /// It stops before the first packet the protocol cannot carry (1 to 65535 bytes, more
    /// than a page only with `feature-sg`, GSO only with its negotiated feature and a
    /// non-zero MSS); if that is `pkts[0]`, it fails with [`FrontendError::BadPacket`].
    /// Fails with [`FrontendError::Broken`] once the device is closed or broken.
    pub fn send_burst(&mut self, pkts: &[PacketRef<'_>]) -> Result<usize, FrontendError> {
        self.check_open()?;
        let r = self.tx_burst(pkts);
        let (n, bad) = self.finish(r)?;
        match bad {
            Some(why) if n == 0 => Err(FrontendError::BadPacket {
                len: pkts.first().map_or(0, |p| p.data.len()),
                why,
            }),
            _ => Ok(n),
        }
    }

    /// [`FrontQueue::send_burst`] inside: how many were sent, and why the packet after them
    /// was refused, if it was. As Linux netfront's `xennet_start_xmit`, the burst goes on
    /// the ring and is published before the backend's answers are reaped: the ring's
    /// shared index line is then written before it is read, not read (a transfer from the
    /// backend's core) and then written. Reaping frees ids, ring slots and in-flight
    /// requests, so a burst that stopped for room is tried once more after it.
    fn tx_burst(
        &mut self,
        pkts: &[PacketRef<'_>],
    ) -> Result<(usize, Option<&'static str>), Broken> {
        let mut bytes = 0;
        // The entries the burst's requests go to, fetched for writing together (the
        // backend's answers left their lines in its core): one a packet, 64 at most.
        self.tx
            .prefetch_requests(pkts.len().min(PREFETCH_REQUESTS) as u32);
        let mut budget = self.whole_budget(pkts);
        let (mut sent, mut stop) = self.put_burst(pkts, &mut bytes, &mut budget)?;
        self.publish_tx(sent)?;
        let room = (self.tx.free_requests(), self.tx_free.len());
        if let Err(b) = self.reap_tx() {
            if sent == 0 {
                return Err(b);
            }
            // The burst is on the ring and counted: it was sent. The backend's fault breaks
            // the device, which the next call finds.
            self.shared.fault(&b);
            return Ok((sent, stop.refused()));
        }
        if stop == BurstStop::Room && (self.tx.free_requests(), self.tx_free.len()) != room {
            let (more, then) = self.put_burst(&pkts[sent..], &mut bytes, &mut budget)?;
            self.publish_tx(more)?;
            (sent, stop) = (sent + more, then);
        }
        if sent > 0 {
            self.moved();
        }
        Ok((sent, stop.refused()))
    }

    /// What of a burst of `pkts` the design stages whole without a decision each
    /// ([`Staging::tx_whole_budget`]): nothing for an empty burst, nor while a packet is
    /// held back (it is decided again first).
    ///
    /// [`Staging::tx_whole_budget`]: crate::staging::Staging::tx_whole_budget
    fn whole_budget(&mut self, pkts: &[PacketRef<'_>]) -> WholeBudget {
        if pkts.is_empty() || self.held.is_some() {
            return WholeBudget::default();
        }
        self.staging.tx_whole_budget()
    }

    /// Puts `pkts` on the ring (unpublished) until one does not fit, is refused, or the
    /// burst's bytes reach [`BURST_BYTES`] (`bytes` counts them); how many it put and why
    /// it stopped. Packets `budget` covers go without a decision each, and use it up; after
    /// the first it does not cover, none do.
    fn put_burst(
        &mut self,
        pkts: &[PacketRef<'_>],
        bytes: &mut usize,
        budget: &mut WholeBudget,
    ) -> Result<(usize, BurstStop), Broken> {
        for (n, p) in pkts.iter().enumerate() {
            if *bytes >= BURST_BYTES {
                return Ok((n, BurstStop::Full));
            }
            if let Err(why) = validate(&self.features, p) {
                return Ok((n, BurstStop::Refused(why)));
            }
            let put = if self.held.is_none() && budget.covers(p) {
                self.tx_in_budget(p, budget)?
            } else {
                // What a packet decided on its own stages is not in the budget's room:
                // the rest of the burst is decided packet by packet too.
                budget.void();
                self.tx_one(p)?
            };
            if !put {
                return Ok((n, BurstStop::Room));
            }
            *bytes += p.data.len();
        }
        Ok((pkts.len(), BurstStop::Full))
    }

    /// Publishes `n` packets put on the ring (their staged bytes first) and notifies the
    /// backend if it asked to be.
    pub(super) fn publish_tx(&mut self, n: usize) -> Result<(), Broken> {
        if n == 0 {
            return Ok(());
        }
        // The counts first: whoever learns of these packets from the backend finds them
        // counted.
        self.metrics.flush(&mut self.tally);
        // The staged bytes must be visible before the requests that refer to them.
        self.staging.tx_publish()?;
        if self
            .tx
            .push_requests_and_check_notify()
            .map_err(err("TX ring"))?
        {
            self.notify();
        }
        Ok(())
    }

    /// Puts one valid packet on the ring (unpublished); `false` if it does not fit now.
    pub(super) fn tx_one(&mut self, p: &PacketRef<'_>) -> Result<bool, Broken> {
        let len = p.data.len();
        let staged = match self.held.take() {
            Some((l, s)) if l == len => s,
            _ => {
                // Requests put on the ring and not yet reaped, this burst's included.
                let in_flight = self.tx.free_requests() < self.tx.size();
                let decided = self.staging.tx_decide(len, in_flight, &mut self.tally);
                self.tx_room_hold = decided.is_none();
                match decided {
                    Some(staged) => staged,
                    None => return Ok(false),
                }
            }
        };
        if staged == len && p.gso.is_none() {
            return self.tx_staged_whole(p);
        }
        let (ids, slots) = needs(len, staged, p.gso.is_some());
        if self.tx_free.len() < ids || (self.tx.free_requests() as usize) < slots {
            self.held = Some((len, staged));
            return Ok(false);
        }
        let (head, rest) = p
            .data
            .split_at_checked(staged)
            .ok_or("staged more bytes than the packet has")?;
        let first_id = if staged > 0 {
            self.stage_head(head)?
        } else {
            0
        };
        // Filled in place: returned in a `Result`, the array was copied out of it per packet.
        let mut frags = ArrayVec::new();
        if !rest.is_empty() {
            // (A packet staged whole has no pages to fill nor heads to replicate.)
            self.fill_pages(rest, &mut frags)?;
            self.staging.tx_replicate(&frags, rest, &mut self.tally)?;
        }
        self.encode(p, staged, first_id, &frags)?;
        let head = match frags.first() {
            Some(f) if staged == 0 => f.id,
            _ => first_id,
        };
        self.mark_sent(head, len);
        Ok(true)
    }

    /// [`FrontQueue::tx_one`] for a packet `budget` covers: staged whole as decided for the
    /// burst, its bytes taken from the budget's room once staged; the first staged counts
    /// the budget's fill sample. Without an id or a ring slot free it is not put, and
    /// nothing is held: its decision was the burst's, and the next burst's budget makes it
    /// again.
    fn tx_in_budget(
        &mut self,
        p: &PacketRef<'_>,
        budget: &mut WholeBudget,
    ) -> Result<bool, Broken> {
        self.tx_room_hold = false;
        if !self.tx_whole_fits() {
            return Ok(false);
        }
        self.put_staged_whole(p)?;
        budget.room -= p.data.len();
        if !std::mem::replace(&mut budget.used, true) {
            if let Some(ppm) = budget.fill_ppm {
                self.tally.tx_ring_fill_samples += 1;
                self.tally.tx_ring_fill_ppm += ppm;
            }
        }
        Ok(true)
    }

    /// [`FrontQueue::tx_one`] for a packet staged whole without GSO (the common small
    /// packet): one request id, one request, no pages.
    fn tx_staged_whole(&mut self, p: &PacketRef<'_>) -> Result<bool, Broken> {
        let len = p.data.len();
        if !self.tx_whole_fits() {
            self.held = Some((len, len));
            return Ok(false);
        }
        self.put_staged_whole(p)?;
        Ok(true)
    }

    /// Whether a packet staged whole has its one request id and ring slot free.
    #[inline]
    fn tx_whole_fits(&self) -> bool {
        !self.tx_free.is_empty() && self.tx.free_requests() > 0
    }

    /// Stages packet `p` whole and puts it on the ring as one request, counted sent (an id
    /// and a ring slot are free: [`FrontQueue::tx_whole_fits`]).
    fn put_staged_whole(&mut self, p: &PacketRef<'_>) -> Result<(), Broken> {
        let len = p.data.len();
        debug_assert!(len > 0, "an empty packet is refused by validate");
        let id = self.stage_head(p.data)?;
        // Validated before it came here: 1 to 65535 bytes.
        let size = u16::try_from(len).map_err(|_| "a TX packet over 65535 bytes was staged")?;
        let req = staged_tx_request(tx_flags(p), size, id);
        self.tx
            .put_request(&req)
            .map_err(|e| format!("TX ring: {e}"))?;
        self.mark_sent(id, len);
        Ok(())
    }

    /// Takes a request id for a packet's staged `head` and stages it (counted); returns
    /// the id.
    #[inline]
    fn stage_head(&mut self, head: &[u8]) -> Result<u16, Broken> {
        let id = self.take_id()?;
        self.staging.tx_stage(id, head)?;
        self.tally.tx_staged_packets += 1;
        self.tally.tx_staged_bytes += head.len() as u64;
        Ok(id)
    }

    /// Marks request id `head` as a packet's first and counts the packet of `len` bytes
    /// as sent.
    #[inline]
    fn mark_sent(&mut self, head: u16, len: usize) {
        self.tx_head[usize::from(head)] = true;
        self.tally.tx_packets += 1;
        self.tally.tx_bytes += len as u64;
    }

    /// Copies `bytes` into TX pool pages, one request id per page, each page's fragment
    /// appended to `frags`.
    fn fill_pages(
        &mut self,
        bytes: &[u8],
        frags: &mut ArrayVec<TxFragment, XEN_NETIF_NR_SLOTS_MIN>,
    ) -> Result<(), Broken> {
        for chunk in bytes.chunks(XEN_PAGE_SIZE) {
            let id = self.take_id()?;
            self.pages
                .tx_pool
                .mem
                .write_at(usize::from(id) * XEN_PAGE_SIZE, chunk)
                .map_err(err("TX buffer"))?;
            // Granted before the request that names it is published.
            let gref = self.buffer_gref(Pool::Tx, id)?;
            let frag = TxFragment {
                id,
                gref,
                offset: 0,
                // A chunk is at most one page.
                size: chunk.len() as u16,
            };
            frags
                .try_push(frag)
                .map_err(|_| "a TX packet needs more slots than netif allows")?;
        }
        Ok(())
    }

    /// Puts the requests of packet `p` on the ring.
    fn encode(
        &mut self,
        p: &PacketRef<'_>,
        staged: usize,
        first_id: u16,
        frags: &[TxFragment],
    ) -> Result<(), Broken> {
        let gso: Option<[Extra; 1]> = p.gso.map(|g| {
            [Extra::Gso {
                size: g.mss,
                gso_type: g.gso_type,
                features: 0,
            }]
        });
        let extras: &[Extra] = gso.as_ref().map_or(&[], |e| e.as_slice());
        let flags = tx_flags(p);
        let mut put_err = None;
        let tx = &mut self.tx;
        let put = |slot| {
            if let Err(e) = tx.put_request(&slot) {
                put_err.get_or_insert(e);
            }
        };
        if staged > 0 {
            // staged <= packet length <= 65535.
            encode_staged_tx_chain(
                flags,
                staged as u16,
                first_id,
                frags,
                extras,
                &[0xffff],
                put,
            )
        } else {
            encode_tx_chain(flags, frags, extras, &[0xffff], put)
        }
        .map_err(err("TX packet"))?;
        match put_err {
            Some(e) => Err(format!("TX ring: {e}")),
            None => Ok(()),
        }
    }

    /// A free request id, marked in flight.
    pub(super) fn take_id(&mut self) -> Result<u16, Broken> {
        let id = self
            .tx_free
            .pop()
            .ok_or("TX id pool accounting is inconsistent")?;
        self.tx_inflight[usize::from(id)] = true;
        Ok(id)
    }

    /// Takes the TX responses the backend published: frees their ids, counts errors and
    /// posts again the RX buffers that forwarded packets left from.
    pub(super) fn reap_tx(&mut self) -> Result<(), Broken> {
        if !self.tx_held.is_empty() {
            self.revoke_held()?;
        }
        if self.tx.refresh_responses().map_err(err("TX ring"))? == 0 {
            return Ok(());
        }
        self.moved();
        let mut reposted = 0;
        while let Some(r) = self.tx.take_response().map_err(err("TX ring"))? {
            if r.status == NETIF_RSP_NULL {
                continue;
            }
            let id = usize::from(r.id);
            // Hardened as Linux netfront: the id must name a request in flight.
            if id >= POOL || !self.tx_inflight[id] {
                return Err(format!(
                    "backend answered TX id {id}, which is not in flight"
                ));
            }
            self.tx_inflight[id] = false;
            self.tx_head[id] = false;
            self.free_id(r.id)?;
            if r.status != NETIF_RSP_OKAY {
                self.tally.tx_errors += 1;
            }
            if let Some(rx_id) = self.zc_pending[id].take() {
                // The forwarded packet has left its RX slot: post the slot again.
                self.post_rx(rx_id)?;
                reposted += 1;
            }
        }
        self.push_rx(reposted)
    }

    /// Ends the backend's access to answered id `id`'s page and frees the id, or, while
    /// the backend still holds the page, keeps it out of use (counted).
    fn free_id(&mut self, id: u16) -> Result<(), Broken> {
        if self.end_buffer_access(Pool::Tx, id)? {
            self.tx_free.push(id);
        } else {
            self.tally.revokes_refused += 1;
            self.tx_held.push(id);
        }
        Ok(())
    }

    /// Tries again to revoke the pages the backend held when they were answered; frees the
    /// ids of those it let go.
    fn revoke_held(&mut self) -> Result<(), Broken> {
        let mut i = 0;
        while let Some(&id) = self.tx_held.get(i) {
            if self.end_buffer_access(Pool::Tx, id)? {
                self.tx_held.swap_remove(i);
                self.tx_free.push(id);
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

/// The flags a packet's first request carries for its offloads.
#[inline]
fn tx_flags(p: &PacketRef<'_>) -> TxFlags {
    if p.csum_blank {
        TxFlags::CSUM_BLANK | TxFlags::DATA_VALIDATED
    } else {
        TxFlags::empty()
    }
}

/// Why [`FrontQueue::put_burst`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BurstStop {
    /// Every packet went, or the burst's bytes reached [`BURST_BYTES`].
    Full,
    /// The next packet did not fit (ids, ring slots or staging room).
    Room,
    /// The next packet cannot be carried, for this reason.
    Refused(&'static str),
}

impl BurstStop {
    /// The reason a packet was refused, if one was.
    fn refused(self) -> Option<&'static str> {
        match self {
            BurstStop::Refused(why) => Some(why),
            _ => None,
        }
    }
}
