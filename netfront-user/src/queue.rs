//! One queue of a connected frontend: TX and RX rings, their buffer pools, one thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use crossbeam_channel::Receiver;
use netstage_fallback::{FallbackReason, Packet, PolicyState};
use netstage_platform::{EventPort, SharedPages};
use netstage_ring::flex::{FlexConsumer, FlexProducer};
use netstage_ring::netif::{
    encode_staged_tx_chain, encode_tx_chain, parse_rx_chain, Extra, NetifRxRequest, RxFlags,
    RxRing, TxFlags, TxFragment, TxRing, NETIF_RSP_NULL, NETIF_RSP_OKAY,
};
use netstage_ring::sring::FrontRing;
use netstage_ring::staging::SlotArea;
use netstage_ring::XEN_PAGE_SIZE;

use crate::{FrontendHandler, Metrics, PollMode};

/// Buffers per direction: one per ring slot.
pub(crate) const POOL: usize = 256;

/// The staging memory a queue negotiated.
// One per queue, created once: the sizes of the variants do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum FStaging {
    /// Baseline: grants only.
    None,
    /// Slots selected by request id.
    Slots {
        tx: SlotArea,
        rx: SlotArea,
        tx_len: usize,
        _pages: Vec<SharedPages>,
    },
    /// One data ring per direction.
    Ring {
        prod: FlexProducer,
        cons: FlexConsumer,
        policy: PolicyState,
        /// TX staging decisions and staged RX packets since the fill was last sampled.
        fill_tick: (u32, u32),
        _pages: Vec<SharedPages>,
    },
}

/// The data rings' fill is sampled once per this many TX decisions or staged RX packets:
/// a sample reads the peer's index afresh (a shared cache line), so it is not done for
/// every packet, and without that read the fill would be as stale as the last refresh.
const FILL_EVERY: u32 = 16;

/// A received packet to send back out (forwarding mode), in arrival order.
pub(crate) enum Fwd {
    /// Wholly in RX slot `rx_id`: sent from there with `NETTXF_staging_buffer`.
    Slot {
        rx_id: u16,
        len: u16,
        gso: Option<netstage_fallback::Gso>,
    },
    /// Copied out: sent like any packet.
    Copied(Packet),
}

pub(crate) struct FQueue<Pt: EventPort> {
    pub(crate) index: u16,
    pub(crate) poll: PollMode,
    pub(crate) tx: FrontRing<TxRing>,
    pub(crate) rx: FrontRing<RxRing>,
    pub(crate) port: Arc<Pt>,
    pub(crate) tx_pool: SharedPages,
    pub(crate) rx_pool: SharedPages,
    pub(crate) tx_free: Vec<u16>,
    pub(crate) tx_inflight: Vec<bool>,
    pub(crate) rx_posted: VecDeque<u16>,
    pub(crate) tx_queue: Receiver<Packet>,
    pub(crate) tx_head: Option<Packet>,
    /// Staged bytes decided for `tx_head` (decided once per packet).
    pub(crate) head_staged: Option<usize>,
    pub(crate) staging: FStaging,
    /// Forwarding mode: every received packet is sent back out.
    pub(crate) forward: bool,
    /// Received packets waiting to be forwarded.
    pub(crate) fwd: VecDeque<Fwd>,
    /// For each TX id sent from an RX slot, that slot's RX id (re-posted on completion).
    pub(crate) zc_pending: Vec<Option<u16>>,
    pub(crate) handler: Arc<dyn FrontendHandler>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stop: Arc<AtomicBool>,
}

/// Why the queue stopped: the backend did something impossible.
pub(crate) type Broken = String;

fn err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Broken {
    move |e| format!("{what}: {e}")
}

impl<Pt: EventPort> FQueue<Pt> {
    /// Posts every RX buffer (before the frontend announces itself connected).
    pub(crate) fn post_all_rx(&mut self) -> Result<(), Broken> {
        for id in 0..POOL as u16 {
            self.post_rx(id)?;
        }
        self.rx.push_requests().map_err(err("RX ring"))?;
        Ok(())
    }

    fn post_rx(&mut self, id: u16) -> Result<(), Broken> {
        let gref = self.rx_pool.grefs[usize::from(id)];
        self.rx
            .put_request(&NetifRxRequest { id, pad: 0, gref })
            .map_err(err("RX ring"))?;
        self.rx_posted.push_back(id);
        Ok(())
    }

    pub(crate) fn run(self) -> Option<Broken> {
        let stop = Arc::clone(&self.stop);
        let r = self.work();
        if r.is_some() {
            // One broken queue breaks the device: the others stop too, senders notice.
            stop.store(true, Ordering::Release);
        }
        r
    }

    fn work(mut self) -> Option<Broken> {
        loop {
            if self.stop.load(Ordering::Acquire) {
                return None;
            }
            let work = match self.pass() {
                Ok(w) => w,
                Err(b) => return Some(b),
            };
            if work {
                continue;
            }
            match self.idle() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(b) => return Some(b),
            }
            if self.poll.idle(&*self.port) {
                self.metrics.add_wakeups(1);
            }
        }
    }

    fn pass(&mut self) -> Result<bool, Broken> {
        let a = self.tx_responses()?;
        let b = self.send()?;
        let c = self.rx_responses()?;
        Ok(a || b || c)
    }

    fn idle(&mut self) -> Result<bool, Broken> {
        let mut work = false;
        if self.tx.outstanding() > 0 {
            work |= self
                .tx
                .final_check_for_responses()
                .map_err(err("TX ring"))?;
        }
        work |= self
            .rx
            .final_check_for_responses()
            .map_err(err("RX ring"))?;
        if self.tx_head.is_some() || !self.tx_queue.is_empty() || !self.fwd.is_empty() {
            work |= self.can_send_head()
                || (matches!(self.fwd.front(), Some(Fwd::Slot { .. })) && !self.tx_free.is_empty());
        }
        Ok(work)
    }

    fn notify(&self) {
        if self.port.notify().is_ok() {
            self.metrics.add_notifications(1);
        }
    }

    // ----- TX -----

    /// Ids (data slots) and ring slots a packet needs with `staged` bytes staged.
    fn slots(p: &Packet, staged: usize) -> (usize, usize) {
        let rest = p.data.len() - staged;
        let data = if staged > 0 {
            1 + rest.div_ceil(XEN_PAGE_SIZE)
        } else {
            rest.div_ceil(XEN_PAGE_SIZE).max(1)
        };
        (data, data + usize::from(p.gso.is_some()))
    }

    /// How many bytes of the head packet go through staging memory.
    fn decide_staged(&mut self, len: usize) -> usize {
        match &mut self.staging {
            FStaging::None => 0,
            FStaging::Slots { tx_len, .. } => {
                if len > *tx_len {
                    self.metrics.add_tx_fallback_over_limit(1);
                }
                len.min(*tx_len)
            }
            FStaging::Ring {
                prod,
                policy,
                fill_tick,
                ..
            } => {
                let size = prod.size() as usize;
                let mut free = prod.free() as usize;
                if free < len {
                    free = prod.refresh().map(|f| f as usize).unwrap_or(0);
                }
                fill_tick.0 += 1;
                if fill_tick.0 == FILL_EVERY {
                    fill_tick.0 = 0;
                    free = prod.refresh().map(|f| f as usize).unwrap_or(0);
                    self.metrics.add_tx_ring_fill_samples(1);
                    self.metrics
                        .add_tx_ring_fill_ppm(ppm(size.saturating_sub(free), size));
                }
                let (n, why) = policy.decide(len, free, size);
                match why {
                    Some(FallbackReason::RingFull) => self.metrics.add_tx_fallback_ring_full(1),
                    Some(FallbackReason::OverLimit) => self.metrics.add_tx_fallback_over_limit(1),
                    None => {}
                }
                n
            }
        }
    }

    /// Publishes RX requests posted again (`reposted` of them) and notifies the backend if
    /// it asked to be.
    fn push_reposted(&mut self, reposted: usize) -> Result<(), Broken> {
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

    fn can_send_head(&mut self) -> bool {
        if self.tx_head.is_none() {
            self.tx_head = match self.fwd.front() {
                Some(Fwd::Slot { .. }) => return false,
                Some(Fwd::Copied(_)) => match self.fwd.pop_front() {
                    Some(Fwd::Copied(p)) => Some(p),
                    _ => None,
                },
                None => self.tx_queue.try_recv().ok(),
            };
            self.head_staged = None;
        }
        let Some(len) = self.tx_head.as_ref().map(|p| p.data.len()) else {
            return false;
        };
        let staged = match self.head_staged {
            Some(s) => s,
            None => {
                let s = self.decide_staged(len);
                self.head_staged = Some(s);
                s
            }
        };
        match &self.tx_head {
            Some(p) => {
                let (data, all) = Self::slots(p, staged);
                self.tx_free.len() >= data && self.tx.free_requests() as usize >= all
            }
            None => false,
        }
    }

    /// Sends the slot forwards at the front of the forward queue straight from their RX
    /// slots; returns how many.
    fn send_slot_forwards(&mut self) -> Result<usize, Broken> {
        let n_tx = match &self.staging {
            FStaging::Slots { tx, .. } => tx.layout().slots(),
            _ => return Ok(0),
        };
        let mut n = 0;
        while let Some(Fwd::Slot { rx_id, len, gso }) = self.fwd.front() {
            let (rx_id, len, gso) = (*rx_id, *len, *gso);
            if self.tx_free.is_empty()
                || (self.tx.free_requests() as usize) < 1 + usize::from(gso.is_some())
            {
                break;
            }
            self.fwd.pop_front();
            let Some(id) = self.tx_free.pop() else { break };
            self.tx_inflight[usize::from(id)] = true;
            self.zc_pending[usize::from(id)] = Some(rx_id);
            let mut flags = TxFlags::STAGING_BUFFER;
            if gso.is_some() {
                flags |= TxFlags::EXTRA_INFO;
            }
            self.tx
                .put_request(&netstage_ring::netif::NetifTxRequest {
                    gref: n_tx + u32::from(rx_id),
                    offset: 0,
                    flags: flags.bits(),
                    id,
                    size: len,
                })
                .map_err(err("TX ring"))?;
            if let Some(g) = gso {
                let mut slot = netstage_ring::netif::NetifExtraInfo::encode(
                    &Extra::Gso {
                        size: g.mss,
                        gso_type: g.gso_type,
                        features: 0,
                    },
                    false,
                )
                .to_tx_slot();
                slot.id = 0xffff;
                self.tx.put_request(&slot).map_err(err("TX ring"))?;
            }
            self.metrics.add_tx_packets(1);
            self.metrics.add_tx_bytes(u64::from(len));
            self.metrics.add_tx_zerocopy_packets(1);
            n += 1;
        }
        Ok(n)
    }

    fn send(&mut self) -> Result<bool, Broken> {
        let mut sent = self.send_slot_forwards()?;
        let mut staged_any = false;
        while self.can_send_head() {
            let Some(p) = self.tx_head.take() else { break };
            let staged = self.head_staged.take().unwrap_or(0);
            let mut first_id = 0u16;
            if staged > 0 {
                let Some(id) = self.tx_free.pop() else {
                    return Err("TX id pool accounting is inconsistent".into());
                };
                first_id = id;
                self.tx_inflight[usize::from(id)] = true;
                let head = &p.data[..staged];
                match &mut self.staging {
                    FStaging::Slots { tx, .. } => {
                        tx.write(u32::from(id), 0, head).map_err(err("TX slot"))?
                    }
                    FStaging::Ring { prod, .. } => {
                        if prod.stage(head).map_err(err("TX data ring"))?.is_none() {
                            return Err("TX data ring lost room it had".into());
                        }
                    }
                    FStaging::None => return Err("staged bytes without staging memory".into()),
                }
                staged_any = true;
                self.metrics.add_tx_staged_packets(1);
                self.metrics.add_tx_staged_bytes(staged as u64);
            }
            let mut frags = Vec::with_capacity(Self::slots(&p, staged).0);
            for chunk in p.data[staged..].chunks(XEN_PAGE_SIZE) {
                let Some(id) = self.tx_free.pop() else {
                    return Err("TX id pool accounting is inconsistent".into());
                };
                self.tx_pool
                    .mem
                    .write_at(usize::from(id) * XEN_PAGE_SIZE, chunk)
                    .map_err(err("TX buffer"))?;
                self.tx_inflight[usize::from(id)] = true;
                frags.push(TxFragment {
                    id,
                    gref: self.tx_pool.grefs[usize::from(id)],
                    offset: 0,
                    // A chunk is at most one page.
                    size: chunk.len() as u16,
                });
            }
            let extras: Vec<Extra> = p
                .gso
                .iter()
                .map(|g| Extra::Gso {
                    size: g.mss,
                    gso_type: g.gso_type,
                    features: 0,
                })
                .collect();
            let flags = if p.csum_blank {
                TxFlags::CSUM_BLANK | TxFlags::DATA_VALIDATED
            } else {
                TxFlags::empty()
            };
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
                    &frags,
                    &extras,
                    &[0xffff],
                    put,
                )
            } else {
                encode_tx_chain(flags, &frags, &extras, &[0xffff], put)
            }
            .map_err(err("TX packet"))?;
            if let Some(e) = put_err {
                return Err(format!("TX ring: {e}"));
            }
            self.metrics.add_tx_packets(1);
            self.metrics.add_tx_bytes(p.data.len() as u64);
            sent += 1;
            sent += self.send_slot_forwards()?;
        }
        if staged_any {
            // The staged bytes must be visible before the requests that refer to them.
            if let FStaging::Ring { prod, .. } = &mut self.staging {
                prod.publish().map_err(err("TX data ring"))?;
            }
        }
        if sent > 0
            && self
                .tx
                .push_requests_and_check_notify()
                .map_err(err("TX ring"))?
        {
            self.notify();
        }
        Ok(sent > 0)
    }

    fn tx_responses(&mut self) -> Result<bool, Broken> {
        if self.tx.refresh_responses().map_err(err("TX ring"))? == 0 {
            return Ok(false);
        }
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
            self.tx_free.push(r.id);
            if r.status != NETIF_RSP_OKAY {
                self.metrics.add_tx_errors(1);
            }
            if let Some(rx_id) = self.zc_pending[id].take() {
                // The forwarded packet has left its RX slot: post the slot again.
                self.post_rx(rx_id)?;
                reposted += 1;
            }
        }
        self.push_reposted(reposted)?;
        Ok(true)
    }

    // ----- RX -----

    fn rx_responses(&mut self) -> Result<bool, Broken> {
        if self.rx.refresh_responses().map_err(err("RX ring"))? == 0 {
            return Ok(false);
        }
        let mut reposted = 0;
        while self.rx.pending_responses() > 0 {
            let rx = &mut self.rx;
            let chain = parse_rx_chain(|| rx.take_response().ok().flatten())
                .map_err(|f| format!("RX response chain: {f}"))?;
            // The buffer of each response is the one posted in its ring slot (as netfront:
            // the response id is not trusted to name it).
            let mut ids = Vec::with_capacity(chain.slots.len());
            for _ in &chain.slots {
                let id = self
                    .rx_posted
                    .pop_front()
                    .ok_or("backend answered more RX requests than were posted")?;
                ids.push(id);
            }
            let staged = usize::from(chain.staged);
            let gso = netstage_fallback::Gso::from_extras(&chain.extras);
            let in_slot = matches!(self.staging, FStaging::Slots { .. })
                && staged > 0
                && staged as u32 == chain.total_len;
            if chain.drop.is_none() && self.forward && in_slot {
                // Zero copy: the packet leaves from its RX slot, which stays lent out until
                // the transmission completes.
                self.metrics.add_rx_packets(1);
                self.metrics.add_rx_bytes(u64::from(chain.total_len));
                self.metrics.add_rx_staged_packets(1);
                self.metrics.add_rx_staged_bytes(staged as u64);
                self.fwd.push_back(Fwd::Slot {
                    rx_id: ids[0],
                    len: chain.staged,
                    gso,
                });
                for id in ids.into_iter().skip(1) {
                    self.post_rx(id)?;
                    reposted += 1;
                }
                continue;
            }
            if chain.drop.is_none() {
                let mut data = BytesMut::with_capacity(chain.total_len as usize);
                if staged > 0 {
                    data.resize(staged, 0);
                    match &mut self.staging {
                        FStaging::Slots { rx, .. } => rx
                            .read(u32::from(ids[0]), 0, &mut data[..])
                            .map_err(err("RX slot"))?,
                        FStaging::Ring {
                            cons, fill_tick, ..
                        } => {
                            cons.read_exact(&mut data[..])
                                .map_err(err("RX data ring"))?;
                            fill_tick.1 += 1;
                            if fill_tick.1 == FILL_EVERY {
                                fill_tick.1 = 0;
                                let queued = cons.refresh().map_err(err("RX data ring"))?;
                                let fill = queued as usize + staged;
                                self.metrics.add_rx_ring_fill_samples(1);
                                self.metrics
                                    .add_rx_ring_fill_ppm(ppm(fill, cons.size() as usize));
                            }
                            cons.release().map_err(err("RX data ring"))?;
                        }
                        FStaging::None => {
                            return Err("backend staged RX bytes that were never negotiated".into())
                        }
                    }
                    self.metrics.add_rx_staged_packets(1);
                    self.metrics.add_rx_staged_bytes(staged as u64);
                }
                for (s, id) in chain.slots.iter().zip(&ids) {
                    if s.extra {
                        continue;
                    }
                    let at = usize::from(*id) * XEN_PAGE_SIZE + usize::from(s.offset);
                    let start = data.len();
                    data.resize(start + usize::from(s.len), 0);
                    // Copied out of the backend-writable page before anything parses it.
                    self.rx_pool
                        .mem
                        .read_at(at, &mut data[start..])
                        .map_err(err("RX buffer"))?;
                }
                self.metrics.add_rx_packets(1);
                self.metrics.add_rx_bytes(data.len() as u64);
                let pkt = Packet {
                    data: data.freeze(),
                    gso,
                    csum_blank: chain.flags.contains(RxFlags::CSUM_BLANK),
                };
                if self.forward {
                    self.fwd.push_back(Fwd::Copied(pkt));
                } else {
                    self.handler.rx_packet(self.index, pkt);
                }
            } else {
                self.metrics.add_rx_dropped(1);
                if chain.flags.contains(RxFlags::STAGED) {
                    // Keep the data ring in step: the dropped packet's bytes are skipped.
                    if let FStaging::Ring { cons, .. } = &mut self.staging {
                        cons.skip(staged).map_err(err("RX data ring"))?;
                        cons.release().map_err(err("RX data ring"))?;
                    }
                }
            }
            for id in ids {
                self.post_rx(id)?;
                reposted += 1;
            }
        }
        self.push_reposted(reposted)?;
        Ok(true)
    }
}

/// `part` in millionths of `whole` (0 for an empty whole).
fn ppm(part: usize, whole: usize) -> u64 {
    if whole == 0 {
        0
    } else {
        (part as u64).saturating_mul(1_000_000) / whole as u64
    }
}
