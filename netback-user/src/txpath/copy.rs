//! Batched grant copy of every packet of a burst (at most 64 operations per call).

use netstage_fallback::{Fragment, GrantCopier};
use netstage_ring::netif::{TxChain, NETIF_RSP_OKAY};

use super::{fragments, grant_failed, TxBurst, TxFetch};
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

    /// Grant-copies the first `limit` granted bytes of every okay packet of the burst (all
    /// of them with `usize::MAX`), in calls of at most 64 operations.
    pub(crate) fn copy_prefix<P: BackendPlatform>(
        &mut self,
        platform: &P,
        b: &mut TxBurst<'_>,
        limit: usize,
    ) -> Result<(), Fatal> {
        let mut burst = self.copier.begin();
        for (i, (c, buf)) in b.chains.iter().zip(b.bufs.iter_mut()).enumerate() {
            // Nothing granted: the packet was staged whole (or was refused).
            if b.status[i] != NETIF_RSP_OKAY || c.staged >= c.total_size {
                continue;
            }
            let rest = &mut buf
                .prepare(usize::from(c.total_size))
                .map_err(|e| e.to_string())?[usize::from(c.staged)..];
            let n = limit.min(rest.len());
            burst
                .fetch(i, b.fe, prefix(c, n), &mut rest[..n])
                .map_err(|e| format!("TX request chain: {e}"))?;
            b.counts.tx_grant_copy_bytes += n as u64;
        }
        if burst.is_empty() {
            return Ok(());
        }
        let (status, counts) = (&mut *b.status, &mut *b.counts);
        let done = self
            .copier
            .finish(platform, burst, |i| grant_failed(status, i, counts))
            .map_err(|e| format!("grant copy failed: {e}"))?;
        counts.grant_copy_calls += done.calls;
        counts.grant_copy_ops += done.ops;
        Ok(())
    }
}

/// The fragments of a chain's first `n` granted bytes.
fn prefix(c: &TxChain, mut n: usize) -> impl Iterator<Item = Fragment> + '_ {
    fragments(c).map_while(move |f| {
        let len = usize::from(f.len).min(n);
        n -= len;
        (len > 0).then_some(Fragment {
            // At most a fragment's length.
            len: len as u16,
            ..f
        })
    })
}

impl<P: BackendPlatform> TxFetch<P> for GrantCopyFetch {
    fn fetch(&mut self, platform: &P, b: &mut TxBurst<'_>) -> Result<(), Fatal> {
        self.copy_prefix(platform, b, usize::MAX)
    }
}
