//! Grant map per packet: map its pages read-only (one call per packet), copy out, unmap
//! (one call per packet).

use netstage_fallback::map::MAX_MAP_FRAGMENTS;
use netstage_fallback::{fetch_by_map, Fragment};
use netstage_platform::MappedPages;
use netstage_ring::netif::NETIF_RSP_OKAY;

use super::{fragments, grant_failed, TxBurst, TxFetch};
use crate::queue::Fatal;
use crate::BackendPlatform;

/// The grant-map TX path, with the map storage it keeps from packet to packet.
#[derive(Default)]
pub(crate) struct GrantMapFetch {
    pages: MappedPages,
}

impl<P: BackendPlatform> TxFetch<P> for GrantMapFetch {
    fn fetch(&mut self, platform: &P, b: &mut TxBurst<'_>) -> Result<(), Fatal> {
        let (fe, status, counts) = (b.fe, &mut *b.status, &mut *b.counts);
        for (i, (c, buf)) in b.chains.iter().zip(b.bufs.iter_mut()).enumerate() {
            if status[i] != NETIF_RSP_OKAY {
                continue;
            }
            let staged = usize::from(c.staged);
            let rest = &mut buf
                .prepare(usize::from(c.total_size))
                .map_err(|e| e.to_string())?[staged..];
            let mut frags = arrayvec::ArrayVec::<Fragment, MAX_MAP_FRAGMENTS>::new();
            frags.extend(fragments(c).take(MAX_MAP_FRAGMENTS));
            match fetch_by_map(platform, fe, &frags, rest, &mut self.pages) {
                Ok(()) => {
                    counts.grant_maps += frags.len() as u64;
                    counts.tx_grant_map_bytes += rest.len() as u64;
                }
                Err(_) => grant_failed(status, i, counts),
            }
        }
        Ok(())
    }
}
