//! Batched grant copy of every packet of a burst (at most 64 operations per call).

use netstage_fallback::{GrantCopier, PacketBuf};
use netstage_platform::DomId;
use netstage_ring::netif::{TxChain, NETIF_RSP_OKAY};

use super::{fragments, grant_failed, TxFetch};
use crate::metrics::Counts;
use crate::queue::Fatal;
use crate::BackendPlatform;

/// The grant-copy TX path.
pub(crate) struct GrantCopyFetch {
    copier: GrantCopier,
}

impl GrantCopyFetch {
    /// Room for a burst of `burst` single-page packets before the vectors first grow.
    pub(crate) fn new(burst: usize) -> GrantCopyFetch {
        GrantCopyFetch {
            copier: GrantCopier::with_capacity(burst),
        }
    }
}

impl<P: BackendPlatform> TxFetch<P> for GrantCopyFetch {
    fn fetch(
        &mut self,
        platform: &P,
        fe: DomId,
        chains: &[TxChain],
        bufs: &mut [PacketBuf],
        status: &mut [i16],
        counts: &mut Counts,
    ) -> Result<(), Fatal> {
        let mut burst = self.copier.begin();
        for (i, (c, buf)) in chains.iter().zip(bufs.iter_mut()).enumerate() {
            if status[i] != NETIF_RSP_OKAY {
                continue;
            }
            let staged = usize::from(c.staged);
            let rest = &mut buf
                .prepare(usize::from(c.total_size))
                .map_err(|e| e.to_string())?[staged..];
            let bytes = rest.len() as u64;
            burst
                .fetch(i, fe, fragments(c), rest)
                .map_err(|e| format!("TX request chain: {e}"))?;
            counts.tx_grant_copy_bytes += bytes;
        }
        if burst.is_empty() {
            return Ok(());
        }
        let done = self
            .copier
            .finish(platform, burst, |i| grant_failed(status, i, counts))
            .map_err(|e| format!("grant copy failed: {e}"))?;
        counts.grant_copy_calls += done.calls;
        counts.grant_copy_ops += done.ops;
        Ok(())
    }
}
