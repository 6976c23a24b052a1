//! Linux netback's TX path (`xenvif_tx_build_gops`, `xenvif_tx_check_gop`): the first
//! [`TX_COPY_LEN`] bytes of each packet are grant-copied (the protocol headers, which the
//! backend must own before it parses them), the rest of its pages are grant-mapped. One
//! batched copy call and one batched map call per burst (at most [`MAX_MAP_OPS`] pages per
//! map call, Linux's `MAX_PENDING_REQS`), then the mapped bytes are copied out and the
//! whole batch unmapped at once.
//!
//! The pages are mapped each on its own with one call ([`GrantImport::map_each`]), a status
//! per page as Xen's `GNTTABOP_map_grant_ref` gives: a grant that fails fails its packet
//! (`xenvif_tx_check_gop`), and the other packets of the burst go on.
//!
//! [`GrantImport::map_each`]: netstage_platform::GrantImport::map_each

use netstage_fallback::PacketBuf;
use netstage_platform::{GrantRef, MappedPage, MappedPages};
use netstage_ring::netif::{TxChain, NETIF_RSP_OKAY};

use super::{fragments, grant_failed, GrantCopyFetch, TxBurst, TxFetch};
use crate::metrics::Counts;
use crate::queue::Fatal;
use crate::BackendPlatform;

/// Bytes of a TX packet grant-copied rather than mapped (`XEN_NETBACK_TX_COPY_LEN`).
pub(crate) const TX_COPY_LEN: usize = 128;

/// Pages one map call takes at most (Linux's `MAX_PENDING_REQS` map operations).
pub(crate) const MAX_MAP_OPS: usize = 256;

/// One mapped fragment: where it is in the grant and where it goes in the packet.
#[derive(Debug, Clone, Copy)]
struct MapPart {
    packet: u32,
    gref: GrantRef,
    offset: u16,
    len: u16,
    /// Offset in the packet's buffer.
    at: u32,
    /// In the current map call.
    mapped: bool,
}

/// The Linux TX path, with the room of its last bursts.
pub(crate) struct LinuxFetch {
    heads: GrantCopyFetch,
    parts: Vec<MapPart>,
    grefs: Vec<GrantRef>,
    pages: MappedPages,
}

impl LinuxFetch {
    /// Room for a burst of `burst` single-page packets before the vectors first grow.
    pub(crate) fn new(burst: usize) -> LinuxFetch {
        LinuxFetch {
            heads: GrantCopyFetch::new(burst),
            parts: Vec::with_capacity(burst),
            grefs: Vec::with_capacity(burst),
            pages: MappedPages::with_capacity(burst),
        }
    }

    /// Notes the pages past each okay packet's head to be mapped.
    fn plan_maps(&mut self, chains: &[TxChain], status: &[i16]) {
        self.parts.clear();
        for (i, c) in chains.iter().enumerate() {
            if status[i] != NETIF_RSP_OKAY {
                continue;
            }
            let mut skip = TX_COPY_LEN;
            let mut at = usize::from(c.staged);
            for f in fragments(c) {
                let len = usize::from(f.len);
                let copied = skip.min(len);
                skip -= copied;
                if len > copied {
                    self.parts.push(MapPart {
                        packet: i as u32,
                        gref: f.gref,
                        // Both within a fragment of at most a page.
                        offset: f.offset + copied as u16,
                        len: (len - copied) as u16,
                        at: (at + copied) as u32,
                        mapped: false,
                    });
                }
                at += len;
            }
        }
    }

    /// Maps the parts `range` of packets still okay with one call, copies them out and
    /// unmaps them with one call. A packet with a page that failed to map fails.
    fn map_batch<P: BackendPlatform>(
        &mut self,
        platform: &P,
        range: std::ops::Range<usize>,
        b: &mut TxBurst<'_>,
    ) {
        let (fe, status, counts) = (b.fe, &mut *b.status, &mut *b.counts);
        self.grefs.clear();
        for p in &mut self.parts[range.clone()] {
            p.mapped = status[p.packet as usize] == NETIF_RSP_OKAY;
            if p.mapped {
                self.grefs.push(p.gref);
            }
        }
        if self.grefs.is_empty() {
            return;
        }
        let mapped = self.parts[range].iter().filter(|p| p.mapped);
        // Only the call itself failing is an error: then no page is mapped.
        if platform
            .map_each(fe, &self.grefs, false, &mut self.pages)
            .is_err()
        {
            mapped.for_each(|p| grant_failed(status, p.packet as usize, counts));
            return;
        }
        counts.grant_maps += self.pages.mapped() as u64;
        for (page, p) in mapped.enumerate() {
            match self.pages.page(page) {
                Ok(window) => copy_out(window, p, b.bufs, status, counts),
                Err(_) => grant_failed(status, p.packet as usize, counts),
            }
        }
        // The whole batch at once.
        self.pages.unmap();
    }
}

/// Copies part `p`, mapped as `page`, into its packet (if still okay).
fn copy_out(
    page: MappedPage<'_>,
    p: &MapPart,
    bufs: &mut [PacketBuf],
    status: &mut [i16],
    counts: &mut Counts,
) {
    let i = p.packet as usize;
    if status[i] != NETIF_RSP_OKAY {
        return;
    }
    let (at, len) = (p.at as usize, usize::from(p.len));
    let n = bufs[i].len();
    let copied = bufs[i]
        .prepare(n)
        .ok()
        .and_then(|data| data.get_mut(at..at + len))
        .map(|d| page.read_at(usize::from(p.offset), d));
    match copied {
        Some(Ok(())) => counts.tx_grant_map_bytes += len as u64,
        _ => grant_failed(status, i, counts),
    }
}

impl<P: BackendPlatform> TxFetch<P> for LinuxFetch {
    fn fetch(&mut self, platform: &P, b: &mut TxBurst<'_>) -> Result<(), Fatal> {
        self.heads.copy_prefix(platform, b, TX_COPY_LEN)?;
        self.plan_maps(b.chains, b.status);
        let mut start = 0;
        while start < self.parts.len() {
            let end = (start + MAX_MAP_OPS).min(self.parts.len());
            self.map_batch(platform, start..end, b);
            start = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstage_platform::sim::{CostMode, DomainConfig, SimWorld};
    use netstage_platform::GrantExport;
    use netstage_ring::netif::{TxSlot, TxSlotKind, NETIF_RSP_ERROR};

    /// A packet of a 128-byte head in grant `head` and 1000 bytes in grant `rest`.
    fn packet(head: u32, rest: u32) -> TxChain {
        let mut c = TxChain {
            total_size: 1128,
            ..TxChain::default()
        };
        for (gref, size) in [(head, 128), (rest, 1000)] {
            let kind = TxSlotKind::Data {
                gref,
                offset: 0,
                size,
                staged: 0,
            };
            c.slots.push(TxSlot { id: 0, kind });
        }
        c
    }

    #[test]
    fn a_page_that_fails_to_map_fails_its_packet_alone_in_one_map_call() {
        let w = SimWorld::create_temp().unwrap();
        let cfg = DomainConfig {
            cost: CostMode::None,
            ..DomainConfig::default()
        };
        let back = w.create_domain(0, cfg.clone()).unwrap();
        let front = w.create_domain(1, cfg).unwrap();
        let pages = front.share(0, 6, false).unwrap();
        for i in 0..6 {
            pages.mem.fill(i * 4096, 4096, b'a' + i as u8).unwrap();
        }
        // Packet 1's head is granted, the page past it no longer.
        front.end_page_access(&pages, 3).unwrap();
        let g = &pages.grefs;
        let chains = [packet(g[0], g[1]), packet(g[2], g[3]), packet(g[4], g[5])];
        let (mut bufs, mut status) = (PacketBuf::pool(3), [NETIF_RSP_OKAY; 3]);
        let mut counts = Counts::default();
        let before = back.counters();
        let mut burst = TxBurst {
            fe: 1,
            chains: &chains,
            bufs: &mut bufs,
            status: &mut status,
            counts: &mut counts,
        };
        LinuxFetch::new(4).fetch(&back, &mut burst).unwrap();
        assert_eq!(status, [NETIF_RSP_OKAY, NETIF_RSP_ERROR, NETIF_RSP_OKAY]);
        for (i, b) in [(0, b'a'), (2, b'e')] {
            let data = bufs[i].data();
            assert_eq!(data.len(), 1128);
            assert!(data[..128].iter().all(|x| *x == b));
            assert!(data[128..].iter().all(|x| *x == b + 1), "packet {i}");
        }
        assert_eq!((counts.grant_maps, counts.tx_grant_errors), (2, 1));
        let after = back.counters();
        // One copy call for the heads, one map call and one unmap call for the pages.
        assert_eq!(after.hypercalls - before.hypercalls, 3);
        assert_eq!((after.maps, after.unmaps), (2, 2));
        assert!(front.grant_pins().unwrap().is_empty());
    }
}
