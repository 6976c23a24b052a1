//! The RX path: posting buffers, and copying received packets out of shared memory.

use arrayvec::ArrayVec;
use netstage_fallback::{Gso, PacketBuf, PacketView, ViewPart, BURST_BYTES};
use netstage_ring::netif::{
    parse_rx_chain_into, NetifRxRequest, RxChain, RxFlags, MAX_CHAIN_SLOTS, NETIF_RSP_NULL,
    NETIF_RSP_OKAY,
};
use netstage_ring::XEN_PAGE_SIZE;

use super::{FrontQueue, POOL};
use crate::staging::{err, Broken, Lent, Pool, RxPacket};
use crate::{FrontendError, FrontendPlatform};

/// The RX buffers of one received chain, in ring order.
pub(super) type ChainBufs = ArrayVec<u16, MAX_CHAIN_SLOTS>;

impl<P: FrontendPlatform> FrontQueue<P> {
    /// Receives up to `bufs.len()` packets, stopping after [`BURST_BYTES`] (so that the
    /// backend gets its buffers back while the caller takes more): copies each out of
    /// shared memory into the next buffer (with its GSO and checksum metadata), posts the
    /// RX buffers again and returns how many it filled. Packets the backend marked bad or
    /// chained wrongly are dropped and counted (`rx_dropped`). TX responses are reaped too,
    /// so that a queue that only receives never stalls its transmissions. Fails with
    /// [`FrontendError::Broken`] once the device is closed or broken.
    pub fn recv_burst(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, FrontendError> {
        self.check_open()?;
        let r = self.rx_burst(bufs);
        self.finish(r)
    }

    /// Like [`FrontQueue::recv_burst`], but takes up to `max` packets and lends each in
    /// place: `deliver` sees it as a [`PacketView`] of windows on the staging memory and the
    /// posted pages, and must be done with it when it returns; the memory then goes back to
    /// the backend (its buffers posted again, published at the end of the call; the data
    /// ring's bytes given back at the end of the call, or sooner once a quarter of the ring
    /// is lent). The backend can still write
    /// what is lent: read each byte once and treat it as untrusted ([`FrontQueue::recv_burst`]
    /// copies out first, the default). `SharedMem`'s `read_at` copies a window out;
    /// `read_blocks_le` hands a scan or checksum the words straight from its loads. Returns
    /// how many packets were delivered.
    pub fn recv_burst_in_place(
        &mut self,
        max: usize,
        mut deliver: impl FnMut(&PacketView<'_>),
    ) -> Result<usize, FrontendError> {
        self.check_open()?;
        let r = self.rx_in_place(max, &mut deliver);
        self.finish(r)
    }

    fn rx_in_place(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&PacketView<'_>),
    ) -> Result<usize, Broken> {
        self.reap_tx()?;
        let mut n = 0;
        let mut reposted = 0;
        let mut lent = Lent::new();
        let (mut chain, mut ids) = (RxChain::default(), ChainBufs::new());
        let mut bytes = 0;
        while n < max && bytes < BURST_BYTES {
            if !self.next_chain(&mut chain, &mut ids)? {
                break;
            }
            lent.clear();
            if self.lend(&chain, &ids, &mut lent)? {
                let mut v = PacketView::new(
                    Gso::from_extras(&chain.extras),
                    chain.flags.contains(RxFlags::CSUM_BLANK),
                );
                self.fill_view(&mut v, &chain, &ids, &lent)?;
                deliver(&v);
                n += 1;
            }
            reposted += self.post_each(&ids)?;
            bytes += chain.total_len as usize;
        }
        // What was lent goes back once a burst (one write of the shared consumer index the
        // backend reads, not one a packet; sooner past a quarter of the ring), before the
        // backend is told of the new buffers.
        self.staging.rx_release()?;
        self.push_rx(reposted)?;
        Ok(n)
    }

    /// Takes a received packet's staged head in place (into `lent`) and counts the packet;
    /// false if it was dropped.
    fn lend(&mut self, chain: &RxChain, ids: &[u16], lent: &mut Lent) -> Result<bool, Broken> {
        let staged = usize::from(chain.staged);
        if self.dropped(chain)? {
            return Ok(false);
        }
        if staged > 0 {
            let rx = RxPacket { chain, bufs: ids };
            self.staging.rx_lend(rx, lent, &mut self.tally)?;
            self.tally.rx_staged_packets += 1;
            self.tally.rx_staged_bytes += staged as u64;
        }
        self.tally.rx_packets += 1;
        self.tally.rx_bytes += u64::from(chain.total_len);
        self.tally.rx_in_place_packets += 1;
        Ok(true)
    }

    /// Fills `v` with the packet as ranges of the staging memory and the posted pages.
    fn fill_view<'a>(
        &'a self,
        v: &mut PacketView<'a>,
        chain: &RxChain,
        ids: &[u16],
        lent: &Lent,
    ) -> Result<(), Broken> {
        for &(region, offset, len) in lent {
            let mem = self
                .staging
                .lent_mem(region)
                .ok_or("lent staging memory has no window")?;
            v.push(ViewPart::Shared { mem, offset, len })
                .map_err(err("RX packet"))?;
        }
        let pool = &self.pages.rx_pool.mem;
        for (s, id) in chain.slots.iter().zip(ids) {
            if !s.extra {
                let offset = usize::from(*id) * XEN_PAGE_SIZE + usize::from(s.offset);
                let len = usize::from(s.len);
                v.push(ViewPart::Shared {
                    mem: pool,
                    offset,
                    len,
                })
                .map_err(err("RX packet"))?;
            }
        }
        Ok(())
    }

    fn rx_burst(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, Broken> {
        self.reap_tx()?;
        let mut n = 0;
        let mut reposted = 0;
        let (mut chain, mut ids) = (RxChain::default(), ChainBufs::new());
        let mut bytes = 0;
        while let Some(buf) = bufs.get_mut(n).filter(|_| bytes < BURST_BYTES) {
            if !self.next_chain(&mut chain, &mut ids)? {
                break;
            }
            if self.copy_out(&chain, &ids, buf)? {
                n += 1;
            }
            reposted += self.post_each(&ids)?;
            bytes += chain.total_len as usize;
        }
        self.push_rx(reposted)?;
        Ok(n)
    }

    /// Counts what the device left unfinished when it stopped, once the backend has
    /// closed (it adds or answers nothing more): TX packets on the ring it never answered
    /// (`tx_unanswered`) and RX packets it put there that were never taken (`rx_unread`),
    /// without reading their data. The RX count stops at the first response that does not
    /// parse: the backend broke the protocol at the end, and what follows is not packets.
    /// Each is counted once.
    pub(crate) fn count_left_at_close(&mut self) {
        self.take_late_tx_answers();
        for (head, inflight) in self.tx_head.iter_mut().zip(&self.tx_inflight) {
            if *head && *inflight {
                self.tally.tx_unanswered += 1;
            }
            *head = false;
        }
        self.count_unread_rx();
    }

    /// Takes the TX answers the backend published after the device stopped reaping them
    /// (their packets were delivered, or dropped and counted by the backend). The ids stay
    /// taken: the queue is closing.
    fn take_late_tx_answers(&mut self) {
        if self.tx.refresh_responses().is_err() {
            return;
        }
        while let Ok(Some(r)) = self.tx.take_response() {
            let id = usize::from(r.id);
            if r.status == NETIF_RSP_NULL || id >= POOL || !self.tx_inflight[id] {
                continue;
            }
            self.tx_inflight[id] = false;
            self.tx_head[id] = false;
            if r.status != NETIF_RSP_OKAY {
                self.tally.tx_errors += 1;
            }
        }
    }

    fn count_unread_rx(&mut self) {
        let mut chain = RxChain::default();
        while self.rx.pending_responses() > 0
            || matches!(self.rx.refresh_responses(), Ok(n) if n > 0)
        {
            let rx = &mut self.rx;
            if parse_rx_chain_into(|| rx.take_response().ok().flatten(), &mut chain).is_err() {
                break;
            }
            self.tally.rx_unread += 1;
        }
        self.metrics.flush(&mut self.tally);
    }

    /// Takes the next complete RX chain into `chain`, if the backend published one, with the
    /// buffers posted in its ring slots into `ids`; false if there is none.
    pub(super) fn next_chain(
        &mut self,
        chain: &mut RxChain,
        ids: &mut ChainBufs,
    ) -> Result<bool, Broken> {
        if self.rx.pending_responses() == 0
            && self.rx.refresh_responses().map_err(err("RX ring"))? == 0
        {
            return Ok(false);
        }
        let rx = &mut self.rx;
        parse_rx_chain_into(|| rx.take_response().ok().flatten(), chain)
            .map_err(|f| format!("RX response chain: {f}"))?;
        self.staging.rx_claim(chain)?;
        self.moved();
        ids.clear();
        for _ in &chain.slots {
            let id = self
                .rx_posted
                .pop_front()
                .ok_or("backend answered more RX requests than were posted")?;
            ids.try_push(id)
                .map_err(|_| "an RX chain longer than netif allows")?;
            // Revoked before anything reads the page, as netfront does; a backend that
            // still holds it could change it under the reader.
            if !self.end_buffer_access(Pool::Rx, id)? {
                self.tally.revokes_refused += 1;
                return Err(format!(
                    "the backend still holds RX buffer {id} after answering it (grant in \
                     use); the device is disabled, as Linux netfront does"
                ));
            }
        }
        Ok(true)
    }

    /// Whether `chain` is to be dropped; if so, counts it and skips its staged bytes (a data
    /// ring stays in step).
    fn dropped(&mut self, chain: &RxChain) -> Result<bool, Broken> {
        if chain.drop.is_none() {
            return Ok(false);
        }
        self.tally.rx_dropped += 1;
        if chain.flags.contains(RxFlags::STAGED) {
            self.staging.rx_skip(usize::from(chain.staged))?;
        }
        Ok(true)
    }

    /// Copies a received packet into `buf` and counts it; `false` if it was dropped.
    pub(super) fn copy_out(
        &mut self,
        chain: &RxChain,
        ids: &[u16],
        buf: &mut PacketBuf,
    ) -> Result<bool, Broken> {
        let staged = usize::from(chain.staged);
        if self.dropped(chain)? {
            return Ok(false);
        }
        let dst = buf
            .prepare(chain.total_len as usize)
            .map_err(err("RX packet"))?;
        if staged > 0 {
            let head = dst.get_mut(..staged).ok_or("staged past the packet")?;
            let rx = RxPacket { chain, bufs: ids };
            self.staging.rx_head(rx, head, &mut self.tally)?;
            self.tally.rx_staged_packets += 1;
            self.tally.rx_staged_bytes += staged as u64;
        }
        let mut at = staged;
        for (s, id) in chain.slots.iter().zip(ids) {
            if s.extra {
                continue;
            }
            let end = at + usize::from(s.len);
            let part = dst
                .get_mut(at..end)
                .ok_or("RX fragments longer than the packet")?;
            // Copied out of the backend-writable page before anything parses it.
            let from = usize::from(*id) * XEN_PAGE_SIZE + usize::from(s.offset);
            self.pages
                .rx_pool
                .mem
                .read_at(from, part)
                .map_err(err("RX buffer"))?;
            at = end;
        }
        buf.gso = Gso::from_extras(&chain.extras);
        buf.csum_blank = chain.flags.contains(RxFlags::CSUM_BLANK);
        self.tally.rx_packets += 1;
        self.tally.rx_bytes += buf.len() as u64;
        Ok(true)
    }

    /// Posts every RX buffer (before the frontend announces itself connected).
    pub(super) fn post_all_rx(&mut self) -> Result<(), Broken> {
        for id in 0..POOL as u16 {
            self.post_rx(id)?;
        }
        self.rx.push_requests().map_err(err("RX ring"))
    }

    /// Posts each of `ids` again (unpublished); returns how many.
    pub(super) fn post_each(&mut self, ids: &[u16]) -> Result<usize, Broken> {
        for id in ids {
            self.post_rx(*id)?;
        }
        Ok(ids.len())
    }

    /// Posts RX buffer `id` (unpublished).
    pub(super) fn post_rx(&mut self, id: u16) -> Result<(), Broken> {
        let gref = self.buffer_gref(Pool::Rx, id)?;
        self.rx
            .put_request(&NetifRxRequest { id, pad: 0, gref })
            .map_err(err("RX ring"))?;
        self.rx_posted.push_back(id);
        Ok(())
    }

    /// Publishes RX requests posted again (`reposted` of them) and notifies the backend if
    /// it asked to be.
    pub(super) fn push_rx(&mut self, reposted: usize) -> Result<(), Broken> {
        if reposted > 0
            && self
                .rx
                .push_requests_and_check_notify()
                .map_err(err("RX ring"))?
        {
            self.notify();
        }
        Ok(())
    }
}
