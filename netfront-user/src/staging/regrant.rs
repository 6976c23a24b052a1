//! The `linux` design's frontend: Linux netfront without persistent grants. No staging
//! memory (every byte in a buffer page, as the baselines), but a buffer page is granted to
//! the backend only while a request names it: granted just before the request is published
//! (`gnttab_grant_foreign_access_ref`), revoked when its response comes
//! (`gnttab_end_foreign_access_ref`, which fails while the backend still maps or copies it).
//!
//! The emulation regrants a page under the reference it was shared with, as netfront
//! claims a reference from the queue's private pool: the cost is the entry write and the
//! check-and-clear, with no allocation and no hypercall, as in Linux.

use std::sync::Arc;

use netstage_fallback::Design;
use netstage_platform::{DomId, GrantExport, GrantRef, PlatformError, SharedPages};

use super::none::NoStaging;
use super::{Broken, Lent, Module, Pool, RxPacket, Share, Staging};
use crate::metrics::Tally;
use crate::FrontendError;

/// The module of `linux`, and one queue's grants.
pub(crate) struct PerPacketGrants;

impl Module for PerPacketGrants {
    fn negotiate(&self, asked: Design, backend: &dyn Fn(&str) -> Option<String>) -> Design {
        // The backend sees ordinary grants, as with the baselines.
        NoStaging.negotiate(asked, backend)
    }

    fn share(
        &self,
        _design: Design,
        to: &mut Share<'_>,
    ) -> Result<Box<dyn Staging>, FrontendError> {
        Ok(Box::new(QueueGrants {
            platform: to.platform.owned(),
            bdom: to.bdom,
        }))
    }
}

/// One queue's per-packet grants.
struct QueueGrants {
    platform: Arc<dyn GrantExport>,
    bdom: DomId,
}

fn failed(what: &'static str, id: u16) -> impl FnOnce(PlatformError) -> Broken {
    move |e| format!("{what} buffer {id}: {e}")
}

impl Staging for QueueGrants {
    fn tx_decide(&mut self, len: usize, in_flight: bool, t: &mut Tally) -> Option<usize> {
        NoStaging.tx_decide(len, in_flight, t)
    }

    fn tx_stage(&mut self, id: u16, head: &[u8]) -> Result<(), Broken> {
        NoStaging.tx_stage(id, head)
    }

    fn rx_head(&mut self, rx: RxPacket<'_>, dst: &mut [u8], t: &mut Tally) -> Result<(), Broken> {
        NoStaging.rx_head(rx, dst, t)
    }

    fn rx_lend(&mut self, rx: RxPacket<'_>, out: &mut Lent, t: &mut Tally) -> Result<(), Broken> {
        NoStaging.rx_lend(rx, out, t)
    }

    /// The pools were granted whole at connect: nothing is granted until a request names
    /// it.
    fn pools_shared(&mut self, tx: &SharedPages, rx: &SharedPages) -> Result<(), Broken> {
        for pages in [tx, rx] {
            for i in 0..pages.grefs.len() {
                self.platform
                    .end_page_access(pages, i)
                    .map_err(|e| format!("ending the pool's grants at connect: {e}"))?;
            }
        }
        Ok(())
    }

    fn grants_per_packet(&self) -> bool {
        true
    }

    fn grant(
        &mut self,
        pool: Pool,
        pages: &SharedPages,
        id: u16,
        t: &mut Tally,
    ) -> Result<GrantRef, Broken> {
        let (writable, count, what) = match pool {
            Pool::Tx => (false, &mut t.tx_grants, "granting TX"),
            Pool::Rx => (true, &mut t.rx_grants, "granting RX"),
        };
        let gref = self
            .platform
            .grant_page(pages, usize::from(id), self.bdom, writable)
            .map_err(failed(what, id))?;
        *count += 1;
        Ok(gref)
    }

    fn revoke(
        &mut self,
        pool: Pool,
        pages: &SharedPages,
        id: u16,
        t: &mut Tally,
    ) -> Result<bool, Broken> {
        let (count, what) = match pool {
            Pool::Tx => (&mut t.tx_revokes, "revoking TX"),
            Pool::Rx => (&mut t.rx_revokes, "revoking RX"),
        };
        match self.platform.end_page_access(pages, usize::from(id)) {
            Ok(()) => {
                *count += 1;
                Ok(true)
            }
            Err(PlatformError::GrantInUse { .. }) => Ok(false),
            Err(e) => Err(failed(what, id)(e)),
        }
    }
}
