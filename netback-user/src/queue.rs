//! One queue of a connected vif: TX (guest to backend) and RX (backend to guest) on one
//! thread, woken by the queue's event channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::Receiver;
use netstage_fallback::{copy_batched, fetch_by_map, fetch_ops, Fragment, Gso, Packet};
use netstage_platform::{CopyOp, DomId, EventPort, ForeignRef, GrantStatus};
use netstage_ring::netif::{
    parse_tx_chain, Extra, GsoType, NetifExtraInfo, NetifRxRequest, NetifRxResponse, RxFlags,
    RxRing, TxChain, TxFlags, TxRing, NETIF_RSP_ERROR, NETIF_RSP_OKAY, XEN_NETIF_NR_SLOTS_MIN,
};
use netstage_ring::sring::BackRing;
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
            match self.p.poll {
                PollMode::Block => {
                    if let Ok(true) = self.port.wait(Some(Duration::from_millis(100))) {
                        self.metrics.add_wakeups(1);
                    }
                }
                PollMode::BusyPoll => {
                    if let Ok(true) = self.port.poll() {
                        self.metrics.add_wakeups(1);
                    }
                    std::hint::spin_loop();
                }
            }
        }
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
            if c.drop.is_some() || !gso_ok || (!self.p.sg && c.data_slots() > 1) {
                status[i] = NETIF_RSP_ERROR;
                self.metrics.add_tx_dropped(1);
                bufs.push(Vec::new());
            } else {
                bufs.push(vec![0u8; usize::from(c.total_size)]);
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
                    fetch_ops(self.p.fe, &frags(c), buf, &mut ops).map_err(|e| e.to_string())?;
                    owner.extend(std::iter::repeat_n(i, ops.len() - before));
                }
                if !ops.is_empty() {
                    let n = ops.len() as u64;
                    let mut st = Vec::with_capacity(ops.len());
                    let calls = copy_batched(&self.platform, ops, &mut st)
                        .map_err(|e| format!("grant copy failed: {e}"))?;
                    self.metrics.add_grant_copy_calls(calls as u64);
                    self.metrics.add_grant_copy_ops(n);
                    for (s, i) in st.iter().zip(&owner) {
                        if *s != GrantStatus::Okay && status[*i] == NETIF_RSP_OKAY {
                            status[*i] = NETIF_RSP_ERROR;
                            self.metrics.add_tx_grant_errors(1);
                        }
                    }
                }
            }
            TxPath::GrantMap => {
                for (i, (c, buf)) in chains.iter().zip(bufs.iter_mut()).enumerate() {
                    if status[i] != NETIF_RSP_OKAY {
                        continue;
                    }
                    let f = frags(c);
                    match fetch_by_map(&self.platform, self.p.fe, &f, buf) {
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
            let gso = match c.extras.gso {
                Some(Extra::Gso { size, gso_type, .. }) => Some(Gso {
                    gso_type,
                    mss: size,
                }),
                _ => None,
            };
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

    fn do_rx(&mut self) -> Result<bool, Fatal> {
        struct Planned {
            pkt: Packet,
            reqs: Vec<NetifRxRequest>,
        }
        let mut plan: Vec<Planned> = Vec::new();
        let mut avail = self.rx.refresh_requests().map_err(|e| e.to_string())? as usize;
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
            let need = self.rx_slots(&pkt);
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
            plan.push(Planned { pkt, reqs });
        }
        if plan.is_empty() {
            return Ok(false);
        }
        // Copy every packet into the posted buffers with batched grant copies.
        let mut ops: Vec<CopyOp<'_>> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (i, pl) in plan.iter().enumerate() {
            let data_reqs = pl
                .reqs
                .iter()
                .enumerate()
                .filter(|(k, _)| !(pl.pkt.gso.is_some() && *k == 1))
                .map(|(_, r)| r);
            for (chunk, r) in pl.pkt.data.chunks(XEN_PAGE_SIZE).zip(data_reqs) {
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
        let n = ops.len() as u64;
        let mut st = Vec::with_capacity(ops.len());
        let calls = copy_batched(&self.platform, ops, &mut st)
            .map_err(|e| format!("grant copy failed: {e}"))?;
        self.metrics.add_grant_copy_calls(calls as u64);
        self.metrics.add_grant_copy_ops(n);
        let mut failed = vec![false; plan.len()];
        for (s, i) in st.iter().zip(&owner) {
            if *s != GrantStatus::Okay {
                failed[*i] = true;
            }
        }
        for (pl, bad) in plan.iter().zip(&failed) {
            self.put_rx_responses(pl.reqs.as_slice(), &pl.pkt, *bad)?;
            if *bad {
                self.metrics.add_rx_grant_errors(1);
            } else {
                self.metrics.add_rx_packets(1);
                self.metrics.add_rx_bytes(pl.pkt.data.len() as u64);
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

    /// Writes the responses of one packet, one per consumed request, in request order:
    /// first data slot (flags), the GSO extra if any, then the other data slots.
    fn put_rx_responses(
        &mut self,
        reqs: &[NetifRxRequest],
        pkt: &Packet,
        failed: bool,
    ) -> Result<(), Fatal> {
        let chunks: Vec<usize> = pkt.data.chunks(XEN_PAGE_SIZE).map(|c| c.len()).collect();
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
                let len = data.next().unwrap_or(0);
                let last = data.len() == 0;
                let mut flags = RxFlags::empty();
                if !last {
                    flags |= RxFlags::MORE_DATA;
                }
                if k == 0 {
                    if pkt.gso.is_some() {
                        flags |= RxFlags::EXTRA_INFO;
                    }
                    if pkt.csum_blank {
                        flags |= RxFlags::CSUM_BLANK | RxFlags::DATA_VALIDATED;
                    }
                }
                NetifRxResponse {
                    id: r.id,
                    offset: 0,
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
