//! The data ring: the backend consumes the **out** direction (TX) and produces the **in**
//! direction (RX); staged bytes follow the requests' order. How much of each RX packet goes
//! on the ring is decided per packet by the copy policy the frontend asked for
//! (`data-ring-policy`), the rest grant-copied into the posted buffers.

use netstage_fallback::policy::CostModel;
use netstage_fallback::{CopyPolicy, FallbackReason, PolicyState};
use netstage_platform::xenstore::XenStore;
use netstage_ring::flex::{self, End, FlexConsumer, FlexError, FlexProducer};
use netstage_ring::netif::TxChain;
use netstage_ring::SharedMem;

use super::{staged_len, BackStaging, Lent, Negotiation};
use crate::queue::Fatal;
use crate::BackendPlatform;

/// How much of a TX burst's staged bytes is prefetched once its requests are parsed: the
/// first 1 KiB (16 lines). Measured in alternating 1.5 s runs of TX ring:8:greedy with
/// 64-byte heads lent: a burst's first 1 KiB 1.11x (1.09x-1.13x, 8 pairs) the whole
/// burst's 4 KiB, whose prefetches themselves took 6.4-6.7 % of all samples in two
/// profiles; 512 bytes 1.00x (0.99x-1.02x) and 2 KiB 0.96x (0.94x-1.03x) of the 1 KiB
/// (6 pairs each); at 96 and 1500 B 1.00x no prefetch (6 pairs each).
const TX_PREFETCH_MAX: usize = 1024;

/// One data ring per direction.
pub(crate) struct DataRing {
    prod: FlexProducer,
    cons: FlexConsumer,
    /// The RX copy policy.
    policy: PolicyState,
    tx_used: bool,
    rx_used: bool,
}

impl DataRing {
    /// Maps the data ring the frontend shared, if this backend offers rings of at most
    /// order `max`.
    pub(crate) fn negotiate<P: BackendPlatform, X: XenStore>(
        n: &Negotiation<'_, P, X>,
        max: Option<u32>,
    ) -> Result<DataRing, String> {
        let max = max.ok_or("frontend asks for a data ring, which this backend does not offer")?;
        let r = n.read_u32("data-ring-ref")?;
        let intf = n
            .platform
            .map(n.fe, &[r], true)
            .map_err(|e| format!("cannot map data-ring-ref {r}: {e}"))?;
        // The order is read once from the indexes page, before mapping anything else.
        let cfg = flex::read_intf_config(&intf, max).map_err(|e| format!("data ring: {e}"))?;
        let key = n.read_u32("data-ring-order")?;
        if key != cfg.order {
            return Err(format!(
                "data-ring-order {key} disagrees with the indexes page ({})",
                cfg.order
            ));
        }
        let data = n
            .platform
            .map(n.fe, &cfg.refs, true)
            .map_err(|e| format!("cannot map the data ring: {e}"))?;
        let (prod, cons) = flex::open(End::Backend, &intf, &data, cfg.order)
            .map_err(|e| format!("data ring: {e}"))?;
        Ok(DataRing {
            prod,
            cons,
            policy: PolicyState::with_costs(
                rx_policy(n.read("data-ring-policy"))?,
                CostModel::measured(),
            ),
            tx_used: false,
            rx_used: false,
        })
    }
}

/// The RX copy policy a frontend's `data-ring-policy` asks for: greedy where it says
/// nothing (a frontend older than the key); a value that is not a policy refuses the
/// connection.
fn rx_policy(key: Option<String>) -> Result<CopyPolicy, String> {
    key.map_or(Ok(CopyPolicy::Greedy), |v| {
        v.parse().map_err(|e| format!("data-ring-policy: {e}"))
    })
}

/// A data-ring failure is the frontend's: its indexes overran, or it claimed bytes it never
/// wrote.
fn ring_fault(e: FlexError) -> Fatal {
    format!("data ring: {e}")
}

impl BackStaging for DataRing {
    fn tx_read(&mut self, c: &TxChain, dst: &mut [u8]) -> Result<bool, Fatal> {
        self.tx_used = true;
        let n = staged_len(c).min(dst.len());
        self.cons.read_exact(&mut dst[..n]).map_err(ring_fault)?;
        Ok(true)
    }

    fn tx_prefetch(&self, chains: &[TxChain]) {
        let n: usize = chains.iter().map(staged_len).sum();
        self.cons.prefetch_next(n.min(TX_PREFETCH_MAX));
    }

    fn tx_lend(&mut self, c: &TxChain, lent: &mut Lent) -> Result<bool, Fatal> {
        self.tx_used = true;
        let [a, b] = self.cons.take_in_place(staged_len(c)).map_err(ring_fault)?;
        *lent = [(0, a.0, a.1), (0, b.0, b.1)];
        Ok(true)
    }

    fn lent_mem(&self, _region: u32) -> Option<&SharedMem> {
        Some(self.cons.data())
    }

    fn tx_skip(&mut self, c: &TxChain) -> Result<(), Fatal> {
        // The packet's staged bytes come next on the ring, dropped or not.
        self.tx_used = true;
        if c.drop.is_some() && c.staged == 0 {
            return Err(
                "TX request stages more bytes than its packet has; the data ring cannot be followed"
                    .into(),
            );
        }
        self.cons.skip(staged_len(c)).map_err(ring_fault)
    }

    fn tx_release(&mut self) -> Result<(), Fatal> {
        if std::mem::take(&mut self.tx_used) {
            self.cons.release().map_err(ring_fault)?;
        }
        Ok(())
    }

    fn rx_plan(&mut self, len: usize) -> Result<(usize, bool), Fatal> {
        // The copy policy decides per packet; what it does not stage is grant-copied.
        let mut free = self.prod.free() as usize;
        if free < len || self.policy.wants_fresh_fill() {
            free = self.prod.refresh().map_err(ring_fault)? as usize;
        }
        let size = self.prod.size() as usize;
        let (n, why) = self.policy.decide(len, free, size);
        Ok((n, why == Some(FallbackReason::RingFull)))
    }

    fn rx_stage(&mut self, _first_id: u16, head: &[u8]) -> Result<(), Fatal> {
        // Room was checked by rx_plan, and only we produce: this cannot fail.
        if self.prod.stage(head).map_err(ring_fault)?.is_none() {
            return Err("RX data ring lost room it had".into());
        }
        self.rx_used = true;
        Ok(())
    }

    fn rx_publish(&mut self) -> Result<(), Fatal> {
        if std::mem::take(&mut self.rx_used) {
            self.prod.publish().map_err(ring_fault)?;
        }
        Ok(())
    }
}
