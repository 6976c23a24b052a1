//! Staging designs, one module each behind [`Staging`]: where the first bytes of a packet go
//! instead of a granted page. The queue's TX and RX paths call the trait only; the one
//! place that looks at a [`Design`] is [`module`], which picks the module at connect.
//!
//! Adding a design is adding a module here and its line in [`module`].

mod none;
mod regrant;
mod ring;
mod slots;
mod slots_rfc;

use arrayvec::ArrayVec;
use netstage_fallback::{Design, PacketRef, MAX_VIEW_PARTS};
use netstage_platform::{DomId, GrantExport, GrantRef, SharedPages};
use netstage_ring::netif::{RxChain, TxFragment};
use netstage_ring::SharedMem;
use netstage_ring::XEN_PAGE_SIZE;

use crate::metrics::Tally;
use crate::FrontendError;

/// Where a staged head lies, lent in place: `(region, offset, len)` ranges.
pub(crate) type Lent = ArrayVec<(u32, usize, usize), MAX_VIEW_PARTS>;

/// A received packet as its staging sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RxPacket<'a> {
    /// The parsed chain.
    pub(crate) chain: &'a RxChain,
    /// The RX buffers posted in the chain's ring slots, in order: the buffer of a slot
    /// selects its staging slot (the response's id is not trusted to).
    pub(crate) bufs: &'a [u16],
}

/// Why a queue stopped: the backend did something impossible.
pub(crate) type Broken = String;

/// Which of a queue's buffer pools a page is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pool {
    /// The TX pool (one page per request id, read-only for the backend).
    Tx,
    /// The RX pool (one page per RX buffer, written by the backend).
    Rx,
}

/// Turns an error into a [`Broken`] reason prefixed with `what`.
pub(crate) fn err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Broken {
    move |e| format!("{what}: {e}")
}

/// The packets of a TX burst a design stages whole without a decision for each: those
/// without GSO of at most `max_len` bytes, while their bytes come to at most `room`. For
/// each of them [`Staging::tx_decide`] would have said "all of it", with no fallback or
/// wait to count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WholeBudget {
    /// The longest packet staged whole.
    pub(crate) max_len: usize,
    /// Bytes of room left for them.
    pub(crate) room: usize,
    /// The design's fill, in millionths, read afresh for the budget: a fill sample, counted
    /// by the queue when the budget stages its first packet (a burst that staged none, say
    /// a retry without a free id, is not sampled).
    pub(crate) fill_ppm: Option<u64>,
    /// Whether a packet was staged on it.
    pub(crate) used: bool,
}

impl WholeBudget {
    /// Whether packet `p` is staged whole on this budget.
    #[inline]
    pub(crate) fn covers(&self, p: &PacketRef<'_>) -> bool {
        let len = p.data.len();
        p.gso.is_none() && len <= self.max_len && len <= self.room
    }

    /// Covers nothing more (its fill sample and use stay).
    pub(crate) fn void(&mut self) {
        self.max_len = 0;
        self.room = 0;
    }
}

/// One queue's staging memory, as its TX and RX paths use it.
pub(crate) trait Staging: Send {
    /// What of the TX burst about to be put on the ring the design stages whole without
    /// deciding packet by packet (the common small packets; a decision each, through the
    /// queue's trait object, was a measurable part of a 64-byte packet's cost). Asked once
    /// per burst, before its first packet, unless a packet is held back; may read the
    /// peer's index. The default: none, every packet is decided by [`Staging::tx_decide`].
    fn tx_whole_budget(&mut self) -> WholeBudget {
        WholeBudget::default()
    }

    /// How many leading bytes of a TX packet of `len` bytes to move out of the grants into
    /// staging memory (0: none; counts fallbacks and fill samples in `t`), or `None` to hold
    /// the packet back for now: a data ring that is full while `in_flight` (the backend has
    /// TX requests to take, which frees room) and waits for room ([`WhenFull::Wait`]).
    /// Decided once per packet sent. A design that replicates the head instead (RFC rev 1)
    /// says 0 here and copies it in [`Staging::tx_replicate`].
    ///
    /// [`WhenFull::Wait`]: netstage_fallback::WhenFull::Wait
    fn tx_decide(&mut self, len: usize, in_flight: bool, t: &mut Tally) -> Option<usize>;

    /// Stages `head`, the first bytes of the packet whose first request has id `id`.
    fn tx_stage(&mut self, id: u16, head: &[u8]) -> Result<(), Broken>;

    /// Replicates in staging memory what the design copies of a packet put whole in
    /// granted pages: `frags` are its data requests in order, `data` their bytes (counted
    /// in `t`). The requests stay those of a packet without staging.
    fn tx_replicate(
        &mut self,
        _frags: &[TxFragment],
        _data: &[u8],
        _t: &mut Tally,
    ) -> Result<(), Broken> {
        Ok(())
    }

    /// Marks in a received chain the bytes staging memory holds where no flag announces
    /// them (RFC rev 1's replicated head; [`RxChain::replicate`]), before anything reads
    /// the packet.
    fn rx_claim(&mut self, _chain: &mut RxChain) -> Result<(), Broken> {
        Ok(())
    }

    /// Makes the bytes staged so far visible to the backend (before the requests naming
    /// them are published).
    fn tx_publish(&mut self) -> Result<(), Broken> {
        Ok(())
    }

    /// Copies the staged head of a received packet into `dst` (its length is the staged
    /// length, `rx.chain.staged`).
    fn rx_head(&mut self, rx: RxPacket<'_>, dst: &mut [u8], t: &mut Tally) -> Result<(), Broken>;

    /// Lends the staged head of a received packet in place: appends where it lies to `out`,
    /// as `(region, offset, len)` ranges of [`Staging::lent_mem`]. They stay valid until
    /// [`Staging::rx_release`].
    fn rx_lend(&mut self, rx: RxPacket<'_>, out: &mut Lent, t: &mut Tally) -> Result<(), Broken>;

    /// The window a lent range's `region` is in.
    fn lent_mem(&self, _region: u32) -> Option<&SharedMem> {
        None
    }

    /// Gives staging memory lent by [`Staging::rx_lend`] back to the backend.
    fn rx_release(&mut self) -> Result<(), Broken> {
        Ok(())
    }

    /// Skips the `staged` bytes of a dropped packet that claimed them.
    fn rx_skip(&mut self, _staged: usize) -> Result<(), Broken> {
        Ok(())
    }

    /// The `gref` of a `NETTXF_staging_buffer` request that sends a packet straight from RX
    /// buffer `slot`'s staging memory, if the design lends RX staging memory to TX.
    fn rx_slot_gref(&self, _slot: u16) -> Option<u32> {
        None
    }

    /// Called once with the queue's buffer pools, as shared at connect (all granted),
    /// before any buffer is posted.
    fn pools_shared(&mut self, _tx: &SharedPages, _rx: &SharedPages) -> Result<(), Broken> {
        Ok(())
    }

    /// Whether this design grants a buffer page per packet: otherwise
    /// [`Staging::grant`] and [`Staging::revoke`] do nothing but look up the pool's own
    /// grants, and the queue does not call them per packet.
    fn grants_per_packet(&self) -> bool {
        false
    }

    /// The reference of page `id` of `pages` (the `pool` pool) for a request about to be
    /// published: the pool's own (granted once at connect), or, in a design that grants
    /// per packet, a grant made now (counted in `t`).
    fn grant(
        &mut self,
        _pool: Pool,
        pages: &SharedPages,
        id: u16,
        _t: &mut Tally,
    ) -> Result<GrantRef, Broken> {
        pool_gref(pages, id)
    }

    /// Ends the backend's access to page `id` of `pages` once its response came: true if
    /// the page may be used again, false if the backend still holds it (counted in `t`;
    /// retry later, never reuse it meanwhile).
    fn revoke(
        &mut self,
        _pool: Pool,
        _pages: &SharedPages,
        _id: u16,
        _t: &mut Tally,
    ) -> Result<bool, Broken> {
        Ok(true)
    }
}

/// The grant reference page `id` of `pages` got when the pool was shared.
pub(crate) fn pool_gref(pages: &SharedPages, id: u16) -> Result<GrantRef, Broken> {
    pages
        .grefs
        .get(usize::from(id))
        .copied()
        .ok_or_else(|| format!("buffer {id} is not in the pool"))
}

/// What stages memory and grants pages at connect: this domain's grants, and an owned
/// handle to them for a design that keeps granting per packet.
pub(crate) trait Exporter: GrantExport {
    /// An owned handle to the same grants.
    fn owned(&self) -> std::sync::Arc<dyn GrantExport>;
}

impl<T: GrantExport + Clone + 'static> Exporter for T {
    fn owned(&self) -> std::sync::Arc<dyn GrantExport> {
        std::sync::Arc::new(self.clone())
    }
}

/// Sharing one queue's staging memory at connect: with whom, and where it is announced.
pub(crate) struct Share<'a> {
    /// This domain's grants.
    pub(crate) platform: &'a dyn Exporter,
    /// The backend's domain.
    pub(crate) bdom: DomId,
    /// The queue's XenStore directory (the vif's, with one queue).
    pub(crate) prefix: &'a str,
    /// Keys and values to write in the handshake's transaction.
    pub(crate) keys: &'a mut Vec<(String, String)>,
    /// Where the bytes granted are counted.
    pub(crate) tally: &'a mut Tally,
}

impl Share<'_> {
    /// Notes `prefix/key = value`.
    pub(crate) fn key(&mut self, key: &str, value: impl ToString) {
        self.keys
            .push((format!("{}/{key}", self.prefix), value.to_string()));
    }

    /// Shares `count` zeroed pages with the backend, counting them as granted.
    pub(crate) fn pages(
        &mut self,
        count: usize,
        writable: bool,
    ) -> Result<SharedPages, FrontendError> {
        self.tally.granted_bytes += (count * XEN_PAGE_SIZE) as u64;
        Ok(self.platform.share(self.bdom, count, writable)?)
    }
}

/// A design's frontend half at connect time.
pub(crate) trait Module: Sync {
    /// The design used when `asked` was requested and the backend's keys read as `backend`
    /// (a key's value, if present): `asked` within the offered limits, or the baseline.
    fn negotiate(&self, asked: Design, backend: &dyn Fn(&str) -> Option<String>) -> Design;

    /// Shares one queue's staging memory for `design` (a negotiated one of this module).
    fn share(&self, design: Design, to: &mut Share<'_>) -> Result<Box<dyn Staging>, FrontendError>;
}

/// The module of `design`.
pub(crate) fn module(design: Design) -> &'static dyn Module {
    match design {
        Design::GrantCopy | Design::GrantMap => &none::NoStaging,
        Design::Linux => &regrant::PerPacketGrants,
        Design::Slots { .. } => &slots::SlotStaging,
        Design::SlotsRfc { .. } => &slots_rfc::SlotsRfcStaging,
        Design::Ring { .. } => &ring::RingStaging,
    }
}

/// A handshake error for staging set-up.
fn setup<E: std::fmt::Display>(e: E) -> FrontendError {
    FrontendError::Handshake(e.to_string())
}
