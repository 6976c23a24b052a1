//! How the backend obtains the granted part of a guest's TX packets: one module per path
//! behind [`TxFetch`], picked once per queue.

mod copy;
mod map;

pub(crate) use copy::GrantCopyFetch;
pub(crate) use map::GrantMapFetch;

use netstage_fallback::{Fragment, PacketBuf};
use netstage_platform::DomId;
use netstage_ring::netif::{TxChain, NETIF_RSP_ERROR, NETIF_RSP_OKAY};

use crate::metrics::Counts;
use crate::queue::Fatal;
use crate::{BackendPlatform, TxPath};

/// Fetches the granted bytes of a burst's packets.
pub(crate) trait TxFetch<P: BackendPlatform>: Send {
    /// For every packet `i` whose `status[i]` is `NETIF_RSP_OKAY`, fetches its fragments into
    /// `bufs[i]` after its `chains[i].staged` staged bytes; a packet whose grants fail gets
    /// `NETIF_RSP_ERROR`. Counts what it did in `counts`.
    fn fetch(
        &mut self,
        platform: &P,
        fe: DomId,
        chains: &[TxChain],
        bufs: &mut [PacketBuf],
        status: &mut [i16],
        counts: &mut Counts,
    ) -> Result<(), Fatal>;
}

/// The path `path`, for a queue handling bursts of up to `burst` packets.
pub(crate) fn for_path<P: BackendPlatform>(path: TxPath, burst: usize) -> Box<dyn TxFetch<P>> {
    match path {
        TxPath::GrantCopy => Box::new(GrantCopyFetch::new(burst)),
        TxPath::GrantMap => Box::new(GrantMapFetch),
    }
}

/// A chain's data fragments.
fn fragments(c: &TxChain) -> impl Iterator<Item = Fragment> + '_ {
    c.fragments()
        .map(|(gref, offset, len)| Fragment { gref, offset, len })
}

/// Marks packet `i` failed by its grants (once).
fn grant_failed(status: &mut [i16], i: usize, counts: &mut Counts) {
    if let Some(s) = status.get_mut(i) {
        if *s == NETIF_RSP_OKAY {
            *s = NETIF_RSP_ERROR;
            counts.tx_grant_errors += 1;
        }
    }
}
