//! Packets for the guest: posted requests in, staged heads and grant copies, responses out.

use netstage_fallback::{PacketRef, BURST_BYTES};
use netstage_platform::{CopyOp, ForeignRef};
use netstage_ring::netif::{
    Extra, GsoType, NetifExtraInfo, NetifRxRequest, NetifRxResponse, RxFlags, NETIF_RSP_ERROR,
};
use netstage_ring::XEN_PAGE_SIZE;

use super::{fault, BackQueue, QueueFault, RxPlanned, BURST};
use crate::BackendPlatform;

impl<P: BackendPlatform> BackQueue<P> {
    /// Gives packets to the guest, in order: takes as many of `pkts` (at most [`BURST`],
    /// and none after [`BURST_BYTES`], so that the guest starts on them while the caller
    /// sends more) as the guest has posted buffers for, stages their heads or grant-copies
    /// them into the posted buffers, answers the requests and returns how many it took. The
    /// caller keeps the rest (and [`BackQueue::wait`] then waits until the guest posts
    /// enough). A packet the guest cannot take (too large, or needing a feature it did not
    /// negotiate) is taken, dropped and counted (`rx_dropped`); one whose copy fails is
    /// answered with an error and counted (`rx_grant_errors`).
    pub fn send_burst(&mut self, pkts: &[PacketRef<'_>]) -> Result<usize, QueueFault> {
        let mut avail = self.rx.refresh_requests().map_err(fault)? as usize;
        let (mut taken, mut bytes) = (0, 0);
        self.rx_need = None;
        for (i, p) in pkts.iter().enumerate().take(BURST) {
            if bytes >= BURST_BYTES {
                // Nothing lacked: the caller may send the rest at once. Should it wait
                // instead, the wait returns as soon as the guest has a request posted.
                self.rx_need = Some(1);
                break;
            }
            if !self.rx_acceptable(p) {
                self.counts.rx_dropped += 1;
                taken = i + 1;
                continue;
            }
            let len = p.data.len();
            let (staged, ring_full) = self.staging.rx_plan(len).map_err(QueueFault)?;
            let gso = usize::from(p.gso.is_some());
            let need = usize::from(staged > 0) + (len - staged).div_ceil(XEN_PAGE_SIZE) + gso;
            let need = need.max(1 + gso);
            if avail < need {
                // A blocking wait asks to be woken when `need` requests are posted
                // (`armed_work`), once its spin has not seen them.
                self.rx_need = Some(need);
                break;
            }
            self.rx_commit(i, p, staged, need, ring_full)?;
            avail -= need;
            bytes += len;
            taken = i + 1;
        }
        if taken > 0 {
            self.moved();
        }
        let r = self.rx_finish(pkts);
        self.rx_plan.clear();
        self.rx_reqs.clear();
        self.metrics.absorb(&mut self.counts);
        r.map(|()| taken)
    }

    /// RX requests the guest has posted that no packet has used yet (read afresh): a
    /// stalled guest is back once this grows.
    pub fn rx_requests_posted(&mut self) -> Result<u32, QueueFault> {
        self.rx.refresh_requests().map_err(fault)
    }

    /// Takes the requests of packet `i` and stages its head.
    fn rx_commit(
        &mut self,
        i: usize,
        p: &PacketRef<'_>,
        staged: usize,
        need: usize,
        ring_full: bool,
    ) -> Result<(), QueueFault> {
        let start = self.rx_reqs.len();
        for _ in 0..need {
            match self.rx.take_request().map_err(fault)? {
                Some(r) => self.rx_reqs.push(r),
                None => {
                    return Err(QueueFault(
                        "RX ring yielded fewer requests than it counted".into(),
                    ))
                }
            }
        }
        if ring_full {
            self.counts.rx_fallback_ring_full += 1;
        }
        if staged > 0 {
            let first = self.rx_reqs[start].id;
            self.staging
                .rx_stage(first, &p.data[..staged])
                .map_err(QueueFault)?;
        }
        let reqs = &self.rx_reqs[start..start + need];
        let mut data_ids = data_reqs(reqs, p.gso.is_some(), staged).map(|r| r.id);
        let replicated = self
            .staging
            .rx_replicate(&mut data_ids, &p.data[staged..])
            .map_err(QueueFault)?;
        if staged + replicated > 0 {
            self.counts.rx_staged_packets += 1;
            self.counts.rx_staged_bytes += (staged + replicated) as u64;
        }
        self.rx_plan.push(RxPlanned {
            pkt: i,
            reqs: (start, need),
            staged,
            replicated,
        });
        Ok(())
    }

    /// Publishes the staged heads, grant-copies the rest of every planned packet, answers.
    fn rx_finish(&mut self, pkts: &[PacketRef<'_>]) -> Result<(), QueueFault> {
        if self.rx_plan.is_empty() {
            return Ok(());
        }
        self.staging.rx_publish().map_err(QueueFault)?;
        let fe = self.p.fe;
        let mut burst = self.rx_copier.begin();
        for (k, pl) in self.rx_plan.iter().enumerate() {
            let p = &pkts[pl.pkt];
            let reqs = &self.rx_reqs[pl.reqs.0..pl.reqs.0 + pl.reqs.1];
            let data = data_reqs(reqs, p.gso.is_some(), pl.staged);
            for (j, (chunk, r)) in p.data[pl.staged..]
                .chunks(XEN_PAGE_SIZE)
                .zip(data)
                .enumerate()
            {
                // The replicated prefix is in staging memory: not copied into the buffer.
                let skip = pl
                    .replicated
                    .saturating_sub(j * XEN_PAGE_SIZE)
                    .min(chunk.len());
                if skip < chunk.len() {
                    let dst = ForeignRef {
                        dom: fe,
                        gref: r.gref,
                        // At most a page.
                        offset: skip as u16,
                    };
                    burst.push(
                        k,
                        CopyOp::ToForeign {
                            src: &chunk[skip..],
                            dst,
                        },
                    );
                }
            }
        }
        self.rx_failed.clear();
        self.rx_failed.resize(self.rx_plan.len(), false);
        let failed = &mut self.rx_failed;
        let done = self
            .rx_copier
            .finish(&self.platform, burst, |k| failed[k] = true)
            .map_err(|e| QueueFault(format!("grant copy failed: {e}")))?;
        self.counts.grant_copy_calls += done.calls;
        self.counts.grant_copy_ops += done.ops;
        for k in 0..self.rx_plan.len() {
            let pl = self.rx_plan[k];
            let bad = self.rx_failed[k];
            self.put_rx_responses(pl, &pkts[pl.pkt], bad)?;
            let len = pkts[pl.pkt].data.len() as u64;
            if bad {
                self.counts.rx_grant_errors += 1;
            } else {
                self.counts.rx_packets += 1;
                self.counts.rx_bytes += len;
                self.counts.rx_grant_copy_bytes += len - (pl.staged + pl.replicated) as u64;
            }
        }
        // The packets' counts before the packets: whoever learns of one from the frontend
        // finds it counted. (A whole absorb here cost RX 1500 B 1-2 %; the rest waits for
        // the end of the call.)
        self.metrics.absorb_packets(&mut self.counts);
        self.absorb_before_errors();
        if self.rx.push_responses_and_check_notify().map_err(fault)? {
            self.notify();
        }
        Ok(())
    }

    /// Writes the responses of one packet, one per consumed request, in request order:
    /// the first (flags; for a staged head, `NETRXF_staged` with the staged length in
    /// `offset` and no buffer data), the GSO extra if any, then the other data slots.
    fn put_rx_responses(
        &mut self,
        pl: RxPlanned,
        pkt: &PacketRef<'_>,
        failed: bool,
    ) -> Result<(), QueueFault> {
        let rest = pkt.data.len() - pl.staged;
        let mut chunks_left = rest.div_ceil(XEN_PAGE_SIZE);
        let next_len = |left: &mut usize| -> usize {
            if *left == 0 {
                return 0;
            }
            *left -= 1;
            // Every chunk but the last is a full page.
            if *left == 0 {
                rest - (rest.div_ceil(XEN_PAGE_SIZE) - 1) * XEN_PAGE_SIZE
            } else {
                XEN_PAGE_SIZE
            }
        };
        for k in 0..pl.reqs.1 {
            let r = self.rx_reqs[pl.reqs.0 + k];
            let rsp = if pkt.gso.is_some() && k == 1 {
                gso_extra(pkt)
            } else {
                let staged_head = k == 0 && pl.staged > 0;
                let len = if staged_head {
                    0
                } else {
                    next_len(&mut chunks_left)
                };
                let flags = rx_flags(pkt, k, staged_head, chunks_left > 0);
                NetifRxResponse {
                    id: r.id,
                    // A staged length is at most 65535 (a packet); a buffer offset is 0.
                    offset: if staged_head { pl.staged as u16 } else { 0 },
                    flags: flags.bits(),
                    // A chunk is at most 4096 bytes; it fits i16.
                    status: if failed { NETIF_RSP_ERROR } else { len as i16 },
                }
            };
            self.rx.put_response(&rsp).map_err(fault)?;
        }
        Ok(())
    }
}

/// The flags of response `k` of a packet.
fn rx_flags(pkt: &PacketRef<'_>, k: usize, staged_head: bool, more: bool) -> RxFlags {
    let mut flags = RxFlags::empty();
    if more {
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
    flags
}

/// The GSO extra's response slot of a packet.
fn gso_extra(pkt: &PacketRef<'_>) -> NetifRxResponse {
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
}

/// The requests whose buffers receive data bytes: all but the GSO extra's, and, when the
/// head is staged, all but the first.
fn data_reqs(
    reqs: &[NetifRxRequest],
    gso: bool,
    staged: usize,
) -> impl Iterator<Item = &NetifRxRequest> + '_ {
    reqs.iter()
        .enumerate()
        .filter(move |(k, _)| !((gso && *k == 1) || (staged > 0 && *k == 0)))
        .map(|(_, r)| r)
}
