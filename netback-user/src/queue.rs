//! One queue of a connected vif: TX (guest to backend) and RX (backend to guest) on one
//! thread, woken by the queue's event channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::Receiver;
use netstage_fallback::{copy_batched, fetch_by_map, fetch_ops, Fragment, Gso, Packet};
use netstage_platform::{CopyOp, DomId, EventPort, ForeignRef, GrantStatus};
use netstage_ring::flex::{FlexConsumer, FlexError, FlexProducer};
use netstage_ring::netif::{
    parse_tx_chain, Extra, GsoType, NetifExtraInfo, NetifRxRequest, NetifRxResponse, RxFlags,
    RxRing, TxChain, TxFlags, TxRing, NETIF_RSP_ERROR, NETIF_RSP_OKAY, XEN_NETIF_NR_SLOTS_MIN,
};
use netstage_ring::sring::BackRing;
use netstage_ring::staging::SlotArea;
use netstage_ring::XEN_PAGE_SIZE;

use crate::{BackendPlatform, Metrics, PollMode, TxPath, VifHandler};

/// Most packets handled per ring pass before the other direction gets a turn.
const BATCH: usize = 64;

/// What the queue negotiated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueParams {
    pub(crate) index: u16,
    pub(crate) fe: DomId,
    pub(crate) tx_path: TxPath,
    pub(crate) poll: PollMode,
    pub(crate) sg: bool,
    pub(crate) gso_tcpv4: bool,
    pub(crate) gso_tcpv6: bool,
}

pub(crate) struct Queue<P: BackendPlatform> {
    pub(crate) platform: P,
    pub(crate) p: QueueParams,
    pub(crate) tx: BackRing<TxRing>,
    pub(crate) rx: BackRing<RxRing>,
    pub(crate) port: Arc<P::Port>,
    pub(crate) rx_queue: Receiver<Packet>,
    pub(crate) handler: Arc<dyn VifHandler>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stop: Arc<AtomicBool>,
    /// A packet taken from the backlog that is waiting for RX requests.
    pub(crate) rx_head: Option<Packet>,
    pub(crate) staging: BStaging,
}

/// The staging memory a queue negotiated.
// One per queue, created once: the sizes of the variants do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum BStaging {
    /// Baseline.
    None,
    /// The frontend's slots, mapped (TX read-only, RX writable).
    Slots {
        tx: SlotArea,
        rx: SlotArea,
        rx_len: usize,
    },
    /// The data ring: we produce **in** (RX) and consume **out** (TX).
    Ring {
        prod: FlexProducer,
        cons: FlexConsumer,
    },
}

/// Why a queue stopped on its own: the frontend did something impossible.
pub(crate) type Fatal = String;

fn slots_for(len: usize) -> usize {
    len.div_ceil(XEN_PAGE_SIZE).max(1)
}

impl<P: BackendPlatform> Queue<P> {
    /// Runs until stopped; returns the reason if the frontend broke the protocol.
    pub(crate) fn run(mut self) -> Option<Fatal> {
        loop {
            if self.stop.load(Ordering::Acquire) {
                return None;
            }
            let work = match self.pass() {
                Ok(w) => w,
                Err(f) => return Some(f),
            };
            if work {
                continue;
            }
            match self.idle() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(f) => return Some(f),
            }
            if self.p.poll.idle(&*self.port) {
                self.metrics.add_wakeups(1);
            }
        }
    }

    /// Runs `ops` in batched grant-copy calls and counts them; `owner[k]` is the packet (of
    /// `packets`) op `k` belongs to. Returns, per packet, whether any of its ops failed.
    fn grant_copy(
        &self,
        ops: Vec<CopyOp<'_>>,
        owner: &[usize],
        packets: usize,
    ) -> Result<Vec<bool>, Fatal> {
        let mut failed = vec![false; packets];
        if ops.is_empty() {
            return Ok(failed);
        }
        let n = ops.len() as u64;
        let mut st = Vec::with_capacity(ops.len());
        let calls = copy_batched(&self.platform, ops, &mut st)
            .map_err(|e| format!("grant copy failed: {e}"))?;
        self.metrics.add_grant_copy_calls(calls as u64);
        self.metrics.add_grant_copy_ops(n);
        for (s, i) in st.iter().zip(owner) {
            if *s != GrantStatus::Okay {
                failed[*i] = true;
            }
        }
        Ok(failed)
    }

    fn pass(&mut self) -> Result<bool, Fatal> {
        let a = self.do_tx()?;
        let b = self.do_rx()?;
        Ok(a || b)
    }

    /// Arms the event indexes and re-checks (`RING_FINAL_CHECK_FOR_REQUESTS`); true if
    /// work arrived meanwhile.
    fn idle(&mut self) -> Result<bool, Fatal> {
        let tx = self
            .tx
            .final_check_for_requests()
            .map_err(|e| e.to_string())?;
        let rx_waiting = self.rx_head.is_some() || !self.rx_queue.is_empty();
        let rx = if rx_waiting {
            self.rx
                .final_check_for_requests()
                .map_err(|e| e.to_string())?
                && self.rx_ready()?
        } else {
            false
        };
        Ok(tx || rx)
    }

    fn rx_ready(&mut self) -> Result<bool, Fatal> {
        let avail = self.rx.refresh_requests().map_err(|e| e.to_string())? as usize;
        let need = self.rx_head.as_ref().map_or(1, |p| self.rx_slots(p));
        Ok(avail >= need)
    }

    fn notify(&self) {
        if self.port.notify().is_ok() {
            self.metrics.add_notifications(1);
        }
    }

    // ----- TX -----

    fn do_tx(&mut self) -> Result<bool, Fatal> {
        let avail = self.tx.refresh_requests().map_err(|e| e.to_string())?;
        if avail == 0 {
            return Ok(false);
        }
        let mut chains: Vec<TxChain> = Vec::with_capacity(BATCH);
        while self.tx.pending_requests() > 0 && chains.len() < BATCH {
            let tx = &mut self.tx;
            let chain = parse_tx_chain(|| tx.take_request().ok().flatten())
                .map_err(|f| format!("TX request chain: {f}"))?;
            self.metrics.add_tx_slots(chain.slots.len() as u64);
            chains.push(chain);
        }
        let mut status = vec![NETIF_RSP_OKAY; chains.len()];
        let mut bufs: Vec<Vec<u8>> = Vec::with_capacity(chains.len());
        let mut ring_used = false;
        for (i, c) in chains.iter().enumerate() {
            let gso_ok = match c.extras.gso {
                Some(Extra::Gso {
                    gso_type: GsoType::TcpV4,
                    ..
                }) => self.p.gso_tcpv4,
                Some(Extra::Gso {
                    gso_type: GsoType::TcpV6,
                    ..
                }) => self.p.gso_tcpv6,
                _ => true,
            };
            if let Some(g) = c.staging_buffer {
                // The whole packet is in a staging slot: a TX slot, or an RX slot the
                // frontend forwards from (global ids: TX first, then RX).
                let mut buf = vec![0u8; usize::from(c.total_size)];
                let ok = c.drop.is_none()
                    && gso_ok
                    && match &self.staging {
                        BStaging::Slots { tx, rx, .. } => {
                            let n_tx = tx.layout().slots();
                            if g < n_tx {
                                tx.read(g, 0, &mut buf).is_ok()
                            } else {
                                rx.read(g - n_tx, 0, &mut buf).is_ok()
                            }
                        }
                        _ => false,
                    };
                if ok {
                    self.metrics.add_tx_zerocopy_packets(1);
                    bufs.push(buf);
                } else {
                    status[i] = NETIF_RSP_ERROR;
                    self.metrics.add_tx_dropped(1);
                    bufs.push(Vec::new());
                }
                continue;
            }
            let staged_flag = c.flags.contains(TxFlags::STAGED);
            let staged = usize::from(c.staged);
            if staged_flag {
                if let BStaging::Ring { cons, .. } = &mut self.staging {
                    // The packet's staged bytes come next on the data ring, dropped or not.
                    ring_used = true;
                    if c.drop.is_some() && staged == 0 {
                        return Err("TX request stages more bytes than its packet has; the data ring cannot be followed".into());
                    }
                    if c.drop.is_some() || !gso_ok || (!self.p.sg && c.data_slots() > 1) {
                        cons.skip(staged).map_err(ring_fault)?;
                    }
                }
            }
            if c.drop.is_some() || !gso_ok || (!self.p.sg && c.data_slots() > 1) {
                status[i] = NETIF_RSP_ERROR;
                self.metrics.add_tx_dropped(1);
                bufs.push(Vec::new());
                continue;
            }
            let mut buf = vec![0u8; usize::from(c.total_size)];
            if staged_flag {
                let head = &mut buf[..staged];
                let ok = match &mut self.staging {
                    BStaging::None => false, // staged bytes that were never negotiated
                    BStaging::Slots { tx, .. } => tx.read(u32::from(c.first_id()), 0, head).is_ok(),
                    BStaging::Ring { cons, .. } => {
                        cons.read_exact(head).map_err(ring_fault)?;
                        true
                    }
                };
                if ok {
                    self.metrics.add_tx_staged_packets(1);
                    self.metrics.add_tx_staged_bytes(staged as u64);
                } else {
                    status[i] = NETIF_RSP_ERROR;
                    self.metrics.add_tx_dropped(1);
                    bufs.push(Vec::new());
                    continue;
                }
            }
            bufs.push(buf);
        }
        if ring_used {
            if let BStaging::Ring { cons, .. } = &mut self.staging {
                cons.release().map_err(ring_fault)?;
            }
        }
        let frags = |c: &TxChain| -> Vec<Fragment> {
            c.fragments()
                .map(|(gref, offset, len)| Fragment { gref, offset, len })
                .collect()
        };
        match self.p.tx_path {
            TxPath::GrantCopy => {
                let mut ops: Vec<CopyOp<'_>> = Vec::new();
                let mut owner: Vec<usize> = Vec::new();
                for (i, (c, buf)) in chains.iter().zip(bufs.iter_mut()).enumerate() {
                    if status[i] != NETIF_RSP_OKAY {
                        continue;
                    }
                    let before = ops.len();
                    let rest = &mut buf[usize::from(c.staged)..];
                    fetch_ops(self.p.fe, &frags(c), rest, &mut ops).map_err(|e| e.to_string())?;
                    owner.extend(std::iter::repeat_n(i, ops.len() - before));
                }
                let failed = self.grant_copy(ops, &owner, chains.len())?;
                for (st, bad) in status.iter_mut().zip(failed) {
                    if bad && *st == NETIF_RSP_OKAY {
                        *st = NETIF_RSP_ERROR;
                        self.metrics.add_tx_grant_errors(1);
                    }
                }
            }
            TxPath::GrantMap => {
                for (i, (c, buf)) in chains.iter().zip(bufs.iter_mut()).enumerate() {
                    if status[i] != NETIF_RSP_OKAY {
                        continue;
                    }
                    let f = frags(c);
                    let rest = &mut buf[usize::from(c.staged)..];
                    match fetch_by_map(&self.platform, self.p.fe, &f, rest) {
                        Ok(()) => self.metrics.add_grant_maps(f.len() as u64),
                        Err(_) => {
                            status[i] = NETIF_RSP_ERROR;
                            self.metrics.add_tx_grant_errors(1);
                        }
                    }
                }
            }
        }
        for (c, st) in chains.iter().zip(&status) {
            for r in c.responses(*st) {
                self.tx.put_response(&r).map_err(|e| e.to_string())?;
            }
        }
        if self
            .tx
            .push_responses_and_check_notify()
            .map_err(|e| e.to_string())?
        {
            self.notify();
        }
        for ((c, st), buf) in chains.iter().zip(&status).zip(bufs) {
            if *st != NETIF_RSP_OKAY {
                continue;
            }
            self.metrics.add_tx_packets(1);
            self.metrics.add_tx_bytes(buf.len() as u64);
            let granted = (buf.len() - usize::from(c.staged)) as u64;
            match self.p.tx_path {
                TxPath::GrantCopy => self.metrics.add_tx_grant_copy_bytes(granted),
                TxPath::GrantMap => self.metrics.add_tx_grant_map_bytes(granted),
            }
            let gso = Gso::from_extras(&c.extras);
            self.handler.tx_packet(
                self.p.index,
                Packet {
                    data: Bytes::from(buf),
                    gso,
                    csum_blank: c.flags.contains(TxFlags::CSUM_BLANK),
                },
            );
        }
        Ok(true)
    }

    // ----- RX -----

    /// Request slots a packet needs: its pages, plus one for a GSO extra.
    fn rx_slots(&self, p: &Packet) -> usize {
        slots_for(p.data.len()) + usize::from(p.gso.is_some())
    }

    /// Whether the frontend can take `p` at all with what it negotiated.
    fn rx_acceptable(&self, p: &Packet) -> bool {
        let pages = slots_for(p.data.len());
        let gso_ok = match p.gso {
            None => true,
            Some(g) => match g.gso_type {
                GsoType::TcpV4 => self.p.gso_tcpv4,
                GsoType::TcpV6 => self.p.gso_tcpv6,
            },
        };
        !p.data.is_empty()
            && p.data.len() <= netstage_ring::netif::XEN_NETIF_MAX_TX_SIZE
            && pages <= XEN_NETIF_NR_SLOTS_MIN
            && (self.p.sg || pages == 1)
            && gso_ok
    }

    /// Bytes of `p` to stage, the requests it then needs, and whether it falls back to grant
    /// copy because the data ring is full. A packet may be planned more than once (when the
    /// frontend has not posted enough requests), so the caller counts the fallback only when
    /// the packet is committed.
    fn rx_plan(&mut self, p: &Packet) -> Result<(usize, usize, bool), Fatal> {
        let len = p.data.len();
        let gso = usize::from(p.gso.is_some());
        let mut ring_full = false;
        let staged = match &mut self.staging {
            BStaging::None => 0,
            BStaging::Slots { rx_len, .. } => len.min(*rx_len),
            BStaging::Ring { prod, .. } => {
                // Whole packets only: the rest of a packet that does not fit goes by grants.
                let mut free = prod.free() as usize;
                if free < len {
                    free = prod.refresh().map_err(ring_fault)? as usize;
                }
                if free >= len {
                    len
                } else {
                    ring_full = true;
                    0
                }
            }
        };
        let need = if staged > 0 {
            1 + (len - staged).div_ceil(XEN_PAGE_SIZE) + gso
        } else {
            self.rx_slots(p)
        };
        Ok((staged, need, ring_full))
    }

    fn do_rx(&mut self) -> Result<bool, Fatal> {
        struct Planned {
            pkt: Packet,
            reqs: Vec<NetifRxRequest>,
            staged: usize,
        }
        let mut plan: Vec<Planned> = Vec::new();
        let mut avail = self.rx.refresh_requests().map_err(|e| e.to_string())? as usize;
        let mut ring_used = false;
        while plan.len() < BATCH {
            let pkt = match self.rx_head.take() {
                Some(p) => p,
                None => match self.rx_queue.try_recv() {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            if !self.rx_acceptable(&pkt) {
                self.metrics.add_rx_dropped(1);
                continue;
            }
            let (mut staged, need, ring_full) = self.rx_plan(&pkt)?;
            if avail < need {
                // Ask to be woken when enough requests are posted (netback's trick).
                let ev = self.rx.req_cons().wrapping_add(need as u32);
                self.rx.set_req_event(ev).map_err(|e| e.to_string())?;
                self.rx_head = Some(pkt);
                break;
            }
            let mut reqs = Vec::with_capacity(need);
            for _ in 0..need {
                match self.rx.take_request().map_err(|e| e.to_string())? {
                    Some(r) => reqs.push(r),
                    None => return Err("RX ring yielded fewer requests than it counted".into()),
                }
            }
            avail -= need;
            if ring_full {
                self.metrics.add_rx_fallback_ring_full(1);
            }
            if staged > 0 {
                let head = &pkt.data[..staged];
                match &mut self.staging {
                    BStaging::Slots { rx, .. } => {
                        rx.write(u32::from(reqs[0].id), 0, head).map_err(|e| {
                            format!("RX request id {} names no staging slot: {e}", reqs[0].id)
                        })?;
                    }
                    BStaging::Ring { prod, .. } => {
                        // We checked the room, and only we produce: this cannot fail.
                        if prod.stage(head).map_err(ring_fault)?.is_none() {
                            return Err("RX data ring lost room it had".into());
                        }
                        ring_used = true;
                    }
                    BStaging::None => staged = 0,
                }
                if staged > 0 {
                    self.metrics.add_rx_staged_packets(1);
                    self.metrics.add_rx_staged_bytes(staged as u64);
                }
            }
            plan.push(Planned { pkt, reqs, staged });
        }
        if plan.is_empty() {
            return Ok(false);
        }
        if ring_used {
            // The staged bytes must be visible before the responses that announce them.
            if let BStaging::Ring { prod, .. } = &mut self.staging {
                prod.publish().map_err(ring_fault)?;
            }
        }
        // Copy the rest of every packet into the posted buffers with batched grant copies.
        let mut ops: Vec<CopyOp<'_>> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (i, pl) in plan.iter().enumerate() {
            for (chunk, r) in pl.pkt.data[pl.staged..]
                .chunks(XEN_PAGE_SIZE)
                .zip(Self::data_reqs(pl.reqs.as_slice(), &pl.pkt, pl.staged))
            {
                ops.push(CopyOp::ToForeign {
                    src: chunk,
                    dst: ForeignRef {
                        dom: self.p.fe,
                        gref: r.gref,
                        offset: 0,
                    },
                });
                owner.push(i);
            }
        }
        let failed = self.grant_copy(ops, &owner, plan.len())?;
        for (pl, bad) in plan.iter().zip(&failed) {
            self.put_rx_responses(pl.reqs.as_slice(), &pl.pkt, pl.staged, *bad)?;
            if *bad {
                self.metrics.add_rx_grant_errors(1);
            } else {
                self.metrics.add_rx_packets(1);
                self.metrics.add_rx_bytes(pl.pkt.data.len() as u64);
                self.metrics
                    .add_rx_grant_copy_bytes((pl.pkt.data.len() - pl.staged) as u64);
            }
        }
        if self
            .rx
            .push_responses_and_check_notify()
            .map_err(|e| e.to_string())?
        {
            self.notify();
        }
        Ok(true)
    }

    /// The requests whose buffers receive data bytes: all but the GSO extra's, and, when
    /// the head is staged, all but the first.
    fn data_reqs<'a>(
        reqs: &'a [NetifRxRequest],
        pkt: &Packet,
        staged: usize,
    ) -> impl Iterator<Item = &'a NetifRxRequest> + 'a {
        let gso = pkt.gso.is_some();
        reqs.iter()
            .enumerate()
            .filter(move |(k, _)| !((gso && *k == 1) || (staged > 0 && *k == 0)))
            .map(|(_, r)| r)
    }

    /// Writes the responses of one packet, one per consumed request, in request order:
    /// the first (flags; for a staged head, `NETRXF_staged` with the staged length in
    /// `offset` and no buffer data), the GSO extra if any, then the other data slots.
    fn put_rx_responses(
        &mut self,
        reqs: &[NetifRxRequest],
        pkt: &Packet,
        staged: usize,
        failed: bool,
    ) -> Result<(), Fatal> {
        let chunks: Vec<usize> = pkt.data[staged..]
            .chunks(XEN_PAGE_SIZE)
            .map(|c| c.len())
            .collect();
        let mut data = chunks.iter().copied();
        for (k, r) in reqs.iter().enumerate() {
            let rsp = if pkt.gso.is_some() && k == 1 {
                let g = pkt.gso.map_or(
                    Extra::Gso {
                        size: 1,
                        gso_type: GsoType::TcpV4,
                        features: 0,
                    },
                    |g| Extra::Gso {
                        size: g.mss,
                        gso_type: g.gso_type,
                        features: 0,
                    },
                );
                NetifExtraInfo::encode(&g, false).to_rx_slot()
            } else {
                let staged_head = k == 0 && staged > 0;
                let len = if staged_head {
                    0
                } else {
                    data.next().unwrap_or(0)
                };
                let last = data.len() == 0;
                let mut flags = RxFlags::empty();
                if !last {
                    flags |= RxFlags::MORE_DATA;
                }
                if k == 0 {
                    if staged_head {
                        flags |= RxFlags::STAGED;
                    }
                    if pkt.gso.is_some() {
                        flags |= RxFlags::EXTRA_INFO;
                    }
                    if pkt.csum_blank {
                        flags |= RxFlags::CSUM_BLANK | RxFlags::DATA_VALIDATED;
                    }
                }
                NetifRxResponse {
                    id: r.id,
                    // A staged length is at most 65535 (a packet); a buffer offset is 0.
                    offset: if staged_head { staged as u16 } else { 0 },
                    flags: flags.bits(),
                    // A chunk is at most 4096 bytes; it fits i16.
                    status: if failed { NETIF_RSP_ERROR } else { len as i16 },
                }
            };
            self.rx.put_response(&rsp).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A data-ring failure is the frontend's: its indexes overran, or it claimed bytes it never
/// wrote.
fn ring_fault(e: FlexError) -> Fatal {
    format!("data ring: {e}")
}
