//! One queue of a connected vif, driven by the application's own thread (run to
//! completion): [`BackQueue::recv_burst`] takes what the guest transmitted,
//! [`BackQueue::send_burst`] gives packets to the guest, [`BackQueue::wait`] sleeps until
//! either has work. Completions are made inside those calls; nothing is handed to another
//! thread and, once the queue's vectors have grown to a burst, nothing is allocated.

mod credit;
mod rx;
mod tx;

pub(crate) use credit::read_rate;
pub use credit::{BadRate, Rate};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netstage_fallback::{GrantCopier, IdleSpin, Looked, PacketRef, StormGuard};
use netstage_platform::{DomId, EventPort};
use netstage_ring::netif::{GsoType, NetifRxRequest, RxRing, TxChain, TxRing};
use netstage_ring::sring::BackRing;

use crate::metrics::{Counts, QueueCounters};
use crate::staging::BackStaging;
use crate::txpath::TxFetch;
use crate::{BackendPlatform, Metrics, PollMode};
use credit::TxCredit;

/// Most packets one burst call handles (netback's batch); a longer slice is taken in part.
pub const BURST: usize = 64;

/// The smallest staged head [`BackQueue::recv_burst_in_place`] lends in place; a smaller one
/// is copied. Measured (TX, ring:8:greedy, the harness's checking receiver, alternating
/// 1.5 s runs, 64 against 128): 0.97x at 64 B at `125a202`; at `f320185`, whose backend
/// prefetches a small burst's staged bytes together, 1.06x at 64 B (1.03x-1.08x, 8 pairs),
/// 1.06x at 96 B (6 pairs, a burst that build did not prefetch) and 1.00x for slots:256 at
/// 64 B (6 pairs).
pub const LEND_MIN: usize = 64;

/// Why a queue stopped on its own: the frontend did something impossible.
pub(crate) type Fatal = String;

/// A queue's failure: the frontend broke the protocol, and the vif is disconnected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the frontend broke the protocol: {0}")]
pub struct QueueFault(pub String);

/// What the queue negotiated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueParams {
    pub(crate) index: u16,
    pub(crate) fe: DomId,
    pub(crate) poll: PollMode,
    pub(crate) sg: bool,
    pub(crate) gso_tcpv4: bool,
    pub(crate) gso_tcpv6: bool,
}

impl QueueParams {
    /// Whether the frontend negotiated GSO of type `t`.
    fn gso_ok(&self, t: GsoType) -> bool {
        match t {
            GsoType::TcpV4 => self.gso_tcpv4,
            GsoType::TcpV6 => self.gso_tcpv6,
        }
    }
}

/// One planned RX packet of a burst: its index in the caller's slice, its requests (a
/// range of the queue's request vector), the bytes staged apart and the first bytes of the
/// rest that staging memory replicates (the grant copy skips them).
#[derive(Debug, Clone, Copy)]
struct RxPlanned {
    pkt: usize,
    reqs: (usize, usize),
    staged: usize,
    replicated: usize,
}

/// One queue of a connected vif, for one thread to drive.
pub struct BackQueue<P: BackendPlatform> {
    platform: P,
    p: QueueParams,
    tx: BackRing<TxRing>,
    rx: BackRing<RxRing>,
    port: Arc<P::Port>,
    metrics: QueueCounters,
    stop: Arc<AtomicBool>,
    staging: Box<dyn BackStaging>,
    fetch: Box<dyn TxFetch<P>>,
    counts: Counts,
    /// A burst's chains, parsed in place burst after burst.
    chains: Vec<TxChain>,
    /// The toolstack's `rate` limit on TX.
    credit: TxCredit,
    /// `chains[0]` is a packet parsed and held for credit: the next burst starts with it.
    tx_held: bool,
    status: Vec<i16>,
    lent: Vec<Option<crate::staging::Lent>>,
    rx_reqs: Vec<NetifRxRequest>,
    rx_plan: Vec<RxPlanned>,
    rx_failed: Vec<bool>,
    rx_copier: GrantCopier,
    /// Requests the packet the last send burst stopped at needs, if it stopped for lack of
    /// them.
    rx_need: Option<usize>,
    /// Busy-polling's idle looks.
    idle: IdleSpin,
    /// Wake-ups that brought no work (an event storm backs off).
    storm: StormGuard,
}

/// Everything a queue is made of, gathered by the XenBus negotiation.
pub(crate) struct QueueParts<P: BackendPlatform> {
    pub(crate) platform: P,
    pub(crate) params: QueueParams,
    pub(crate) tx: BackRing<TxRing>,
    pub(crate) rx: BackRing<RxRing>,
    pub(crate) port: Arc<P::Port>,
    pub(crate) metrics: QueueCounters,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) staging: Box<dyn BackStaging>,
    pub(crate) fetch: Box<dyn TxFetch<P>>,
    /// The vif's `rate`, if the toolstack set one.
    pub(crate) rate: Option<Rate>,
}

impl<P: BackendPlatform> Drop for BackQueue<P> {
    /// A packet held for credit goes no further: counted (`tx_credit_drops`).
    fn drop(&mut self) {
        if self.tx_held {
            self.counts.tx_credit_drops += 1;
        }
        self.metrics.absorb(&mut self.counts);
    }
}

impl<P: BackendPlatform> BackQueue<P> {
    pub(crate) fn new(parts: QueueParts<P>) -> BackQueue<P> {
        // Room for a burst of the largest chains, so that no burst grows a vector.
        let reqs = BURST * netstage_ring::netif::MAX_CHAIN_SLOTS;
        BackQueue {
            platform: parts.platform,
            p: parts.params,
            tx: parts.tx,
            rx: parts.rx,
            port: parts.port,
            metrics: parts.metrics,
            stop: parts.stop,
            staging: parts.staging,
            fetch: parts.fetch,
            counts: Counts::default(),
            credit: TxCredit::new(parts.rate),
            tx_held: false,
            // One more than a burst: a chain held for credit waits after the burst's.
            chains: vec![TxChain::default(); BURST + 1],
            status: Vec::with_capacity(BURST),
            lent: Vec::with_capacity(BURST),
            rx_reqs: Vec::with_capacity(reqs),
            rx_plan: Vec::with_capacity(BURST),
            rx_failed: Vec::with_capacity(BURST),
            rx_copier: GrantCopier::with_capacity(reqs),
            rx_need: None,
            idle: IdleSpin::default(),
            storm: StormGuard::default(),
        }
    }

    /// This queue's counters (counted in its vif's and the backend's too).
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        self.metrics.handle()
    }

    /// The queue's index.
    pub fn index(&self) -> u16 {
        self.p.index
    }

    /// The guest's domain.
    pub fn frontend(&self) -> DomId {
        self.p.fe
    }

    /// Whether the vif is being disconnected: the driving loop should return.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Marks this queue's thread as sharing its core with the threads that feed it (as the
    /// convenience layers' do): busy-polling then yields the CPU at every
    /// [`netstage_fallback::YIELD_EVERY`]th idle look, counted across packets moved,
    /// rather than after [`netstage_fallback::YIELD_IDLE`] without work.
    pub fn share_core(&mut self) {
        self.idle = IdleSpin::sharing();
    }

    /// Whether [`Self::share_core`] marked this queue's thread as sharing its core.
    pub fn shares_core(&self) -> bool {
        self.idle.is_sharing()
    }

    /// Busy-polling's idle looks in the current run: waits in a row that found no work
    /// since a packet last moved (0 after any call that moved one). The yield of
    /// [`BackQueue::wait`] comes only after a run of [`netstage_fallback::YIELD_IDLE`].
    pub fn idle_looks(&self) -> u32 {
        self.idle.idle_looks()
    }

    /// Waits until the guest has transmitted or posted what the last send burst lacked (a
    /// burst that stopped after [`netstage_fallback::BURST_BYTES`] lacked nothing: then any
    /// posted request ends the wait), an event arrives, [`EventPort::wake`] is called for
    /// this queue (by the handle from [`BackQueue::waker`]), or `timeout` passes. Blocking,
    /// it first spins (for the port's [`EventPort::spin`]) looking at the rings without
    /// arming them, then arms the rings' event indexes and returns at once if work arrived
    /// meanwhile, and only then sleeps; after a run of wake-ups that brought no work (a
    /// frontend storming events) it first sleeps a millisecond ([`StormGuard`], counted in
    /// `storm_backoffs`).
    /// Busy-polling, it looks at the rings and the port once without arming anything (so
    /// the frontend sends no notifications while this end polls), and yields the CPU
    /// once it has idled for [`netstage_fallback::YIELD_IDLE`] (and again after each
    /// further [`netstage_fallback::YIELD_IDLE`]; after [`Self::share_core`], at every
    /// [`netstage_fallback::YIELD_EVERY`]th idle look). With [`PollMode::BlockArmed`] it also
    /// arms the rings before the spin (and returns at once if that finds work).
    /// Returns whether there may be work.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, QueueFault> {
        if self.stopped() {
            return Ok(false);
        }
        let woke = match self.p.poll {
            PollMode::Block | PollMode::BlockArmed => {
                if self.storm.before_wait() {
                    self.counts.storm_backoffs += 1;
                    self.metrics.absorb(&mut self.counts);
                    std::thread::sleep(netstage_fallback::storm::STORM_BACKOFF);
                }
                let start = Instant::now();
                if self.p.poll == PollMode::BlockArmed {
                    let credit = self.credit_wait();
                    if self.armed_work(credit.is_some())? {
                        return Ok(true);
                    }
                }
                let woke = match self.spin_for_work(timeout)? {
                    Some(Looked::Work) => return Ok(true),
                    Some(Looked::Event) => true,
                    None => {
                        // Read after the spin: the interval may have ended during it.
                        let credit = self.credit_wait();
                        if self.armed_work(credit.is_some())? {
                            return Ok(true);
                        }
                        let timeout = timeout.map(|t| t.saturating_sub(start.elapsed()));
                        let timeout = match (timeout, credit) {
                            (Some(t), Some(c)) => Some(t.min(c)),
                            (t, c) => t.or(c),
                        };
                        matches!(self.port.block(timeout), Ok(true))
                    }
                };
                self.storm.after_wait(woke);
                if !woke && self.tx_held && self.credit_wait().is_none() {
                    // The next interval began: the held packet may go.
                    return Ok(true);
                }
                woke
            }
            PollMode::BusyPoll => return self.poll_once(),
        };
        if woke {
            self.counts.wakeups += 1;
        }
        self.metrics.absorb(&mut self.counts);
        Ok(woke)
    }

    /// Before a blocking wait arms for its sleep, spins for the port's [`EventPort::spin`]
    /// (at most `timeout`) looking at the rings, and at the port: unless the wait armed
    /// first ([`PollMode::BlockArmed`], as Linux netback arms as soon as a poll finds no
    /// work), the frontend sends no notification (a hypercall) for what arrives meanwhile.
    /// What it found first, if anything.
    fn spin_for_work(&mut self, timeout: Option<Duration>) -> Result<Option<Looked>, QueueFault> {
        netstage_platform::spin_looking(self.port.spin(), timeout, || self.look())
    }

    /// One look at the rings, unarmed, and at the port (consuming an event).
    fn look(&mut self) -> Result<Option<Looked>, QueueFault> {
        let mut work = match self.credit_wait() {
            Some(_) => false,
            None => self.tx_held || self.tx.refresh_requests().map_err(fault)? > 0,
        };
        if let Some(need) = self.rx_need {
            work |= self.rx.refresh_requests().map_err(fault)? as usize >= need;
        }
        if work {
            return Ok(Some(Looked::Work));
        }
        Ok(matches!(self.port.poll(), Ok(true)).then_some(Looked::Event))
    }

    /// How long a packet held for credit still waits for its interval, if one waits (TX
    /// has no work until then).
    fn credit_wait(&self) -> Option<Duration> {
        if !self.tx_held {
            return None;
        }
        let left = self
            .credit
            .next_credit()?
            .saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS` on TX (unless TX waits for credit, when the queue
    /// wakes at the next interval instead), and on RX when the last send burst stopped for
    /// lack of requests: whether work arrived before the event indexes were armed.
    fn armed_work(&mut self, credit_wait: bool) -> Result<bool, QueueFault> {
        let mut work = self.tx_held && !credit_wait;
        if !credit_wait {
            work |= self.tx.final_check_for_requests().map_err(fault)?;
        }
        if let Some(need) = self.rx_need {
            // Armed for `need` requests, not one (as netback's
            // xenvif_rx_ring_slots_available): a final check at `req_cons + 1` would be
            // satisfied by one request while the packet needs more, and the frontend, which
            // notifies only when crossing the armed index, would not wake us for the rest
            // (found by the loom model, ring/tests/loom_notify.rs).
            let ev = self.rx.req_cons().wrapping_add(need as u32);
            self.rx.set_req_event(ev).map_err(fault)?;
            work |= self.rx.refresh_requests().map_err(fault)? as usize >= need;
        }
        Ok(work)
    }

    /// The queue moved packets (sent, received, answered): for the storm guard, and to end
    /// busy-polling's run of idle looks.
    fn moved(&mut self) {
        self.storm.moved();
        self.idle.moved();
    }

    /// One busy-polling look at the rings and the port.
    fn poll_once(&mut self) -> Result<bool, QueueFault> {
        let work = self.look()?.is_some();
        Ok(self.idle.look(work))
    }

    /// A function that makes this queue's current or next [`BackQueue::wait`] return: how
    /// another thread hands the driving thread new packets for the guest.
    pub fn waker(&self) -> Arc<dyn Fn() + Send + Sync> {
        crate::wake_fn(&self.port)
    }

    /// Whether the frontend can take `p` at all with what it negotiated.
    fn rx_acceptable(&self, p: &PacketRef<'_>) -> bool {
        let pages = p.data.len().div_ceil(netstage_ring::XEN_PAGE_SIZE);
        !p.data.is_empty()
            && p.data.len() <= netstage_ring::netif::XEN_NETIF_MAX_TX_SIZE
            && pages <= netstage_ring::netif::XEN_NETIF_NR_SLOTS_MIN
            && (self.p.sg || pages == 1)
            && p.gso.is_none_or(|g| self.p.gso_ok(g.gso_type))
    }

    /// Publishes every count at once if the burst answers a request with an error (a TX
    /// packet dropped, a grant that failed), so that a frontend that reads the error finds
    /// it counted. Other bursts publish their packet counts alone before answering and the
    /// rest after (a whole absorb before every answer cost RX 1500 B 1-2 %).
    fn absorb_before_errors(&mut self) {
        if self.counts.answered_errors() {
            self.metrics.absorb(&mut self.counts);
        }
    }

    fn notify(&mut self) {
        if self.port.notify().is_ok() {
            self.counts.notifications += 1;
        }
    }
}

/// A ring or staging failure of the frontend's making.
fn fault(e: impl std::fmt::Display) -> QueueFault {
    QueueFault(e.to_string())
}
