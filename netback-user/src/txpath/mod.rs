//! How the backend obtains the granted part of a guest's TX packets: one module per path
//! behind [`TxFetch`], picked once per queue.

mod copy;
mod linux;
mod map;

pub(crate) use copy::GrantCopyFetch;
pub(crate) use linux::LinuxFetch;
pub(crate) use map::GrantMapFetch;

use netstage_fallback::{Design, Fragment, PacketBuf};
use netstage_platform::DomId;
use netstage_ring::netif::{TxChain, NETIF_RSP_ERROR, NETIF_RSP_OKAY};

use crate::metrics::Counts;
use crate::queue::Fatal;
use crate::{BackendPlatform, TxPath};

/// One burst of TX packets of frontend domain `fe` to fetch.
pub(crate) struct TxBurst<'a> {
    /// The frontend's domain.
    pub(crate) fe: DomId,
    /// The packets' request chains.
    pub(crate) chains: &'a [TxChain],
    /// Their buffers, prepared to their length.
    pub(crate) bufs: &'a mut [PacketBuf],
    /// Their statuses: only `NETIF_RSP_OKAY` packets are fetched.
    pub(crate) status: &'a mut [i16],
    /// What the fetch did.
    pub(crate) counts: &'a mut Counts,
}

/// Fetches the granted bytes of a burst's packets.
pub(crate) trait TxFetch<P: BackendPlatform>: Send {
    /// For every packet `i` whose `status[i]` is `NETIF_RSP_OKAY`, fetches its fragments into
    /// `bufs[i]` after its `chains[i].staged` staged bytes; a packet whose grants fail gets
    /// `NETIF_RSP_ERROR`. Counts what it did in `counts`.
    fn fetch(&mut self, platform: &P, b: &mut TxBurst<'_>) -> Result<(), Fatal>;
}

impl TxPath {
    /// The TX path of `design` at the backend: the grant-map baseline maps, `linux` copies
    /// the head and maps the rest, every other design grant-copies what is not staged.
    pub fn for_design(design: Design) -> TxPath {
        match design {
            Design::GrantMap => TxPath::GrantMap,
            Design::Linux => TxPath::Linux,
            _ => TxPath::GrantCopy,
        }
    }
}

/// The path `path`, for a queue handling bursts of up to `burst` packets.
pub(crate) fn for_path<P: BackendPlatform>(path: TxPath, burst: usize) -> Box<dyn TxFetch<P>> {
    match path {
        TxPath::GrantCopy => Box::new(GrantCopyFetch::new(burst)),
        TxPath::GrantMap => Box::new(GrantMapFetch::default()),
        TxPath::Linux => Box::new(LinuxFetch::new(burst)),
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
