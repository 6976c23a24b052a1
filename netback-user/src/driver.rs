//! The convenience layer over the queue API: a thread per queue that calls a
//! [`VifHandler`] for every packet the guest transmits and feeds the guest from a bounded
//! backlog that [`RxInjector`]s fill from any thread. It allocates an owned [`Packet`] per
//! packet handed to the handler; applications that must not allocate drive
//! [`BackQueue`]s themselves through a [`QueueDriver`].
//!
//! The backlog is bounded in packets and in bytes (what a guest that posts no RX buffers can
//! pin here, XSA-392), drained after a timeout when the guest takes nothing, and every packet
//! an injector accepted is delivered or counted dropped with its reason, at disconnect too.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use netstage_fallback::{Gate, Packet, PacketBuf, PacketRef};

use crate::queue::{BackQueue, QueueFault, BURST};
use crate::{
    BackendConfig, BackendPlatform, HandshakeFailure, Metrics, QueueDriver, QueueInfo, VifHandler,
};

/// The bytes one queue's backlog holds, and the gate injectors pass to add to it.
#[derive(Debug)]
struct Backlog {
    bytes: AtomicUsize,
    max_bytes: usize,
    gate: Gate,
    /// The guest stalled: packets for it are dropped at once, not queued.
    stalled: AtomicBool,
}

impl Backlog {
    fn new(max_bytes: usize) -> Backlog {
        Backlog {
            bytes: AtomicUsize::new(0),
            max_bytes,
            gate: Gate::new(),
            stalled: AtomicBool::new(false),
        }
    }

    /// Takes room for `len` bytes; false if it would exceed the bound (a packet larger than
    /// the bound still fits an empty backlog).
    fn reserve(&self, len: usize) -> bool {
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b == 0 || b + len <= self.max_bytes).then_some(b + len)
            })
            .is_ok()
    }

    fn release(&self, len: usize) {
        self.bytes.fetch_sub(len, Ordering::AcqRel);
    }
}

/// Sends packets to the guest on one queue, from any thread.
#[derive(Clone)]
pub struct RxInjector {
    queue: u16,
    tx: Sender<Packet>,
    wake: Arc<dyn Fn() + Send + Sync>,
    metrics: Arc<Metrics>,
    backlog: Arc<Backlog>,
}

impl std::fmt::Debug for RxInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxInjector")
            .field("queue", &self.queue)
            .finish()
    }
}

impl RxInjector {
    /// The queue.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Bytes waiting in this queue's backlog (taken by an injector, not yet given to the
    /// guest).
    pub fn backlog_bytes(&self) -> usize {
        self.backlog.bytes.load(Ordering::Acquire)
    }

    /// Queues `pkt` for the guest; if the queue's backlog is full (in packets or bytes) the
    /// packet is dropped and counted (`rx_backlog_drops`), as netback drops rather than
    /// buffering without bound; if the guest has stalled it is counted in `rx_stall_drops`,
    /// if the vif is gone in `rx_disconnect_drops`. Returns whether it was queued.
    pub fn send(&self, pkt: Packet) -> bool {
        match self.try_queue(pkt) {
            Ok(()) => true,
            Err(Some(_)) => {
                self.metrics.add_rx_backlog_drops(1);
                false
            }
            Err(None) => false,
        }
    }

    /// Queues `pkt`, waiting while the backlog is full. Returns false (and counts the packet
    /// in `rx_stall_drops` or `rx_disconnect_drops`) if the guest has stalled or the vif is
    /// gone.
    pub fn send_blocking(&self, mut pkt: Packet) -> bool {
        loop {
            match self.try_queue(pkt) {
                Ok(()) => return true,
                Err(Some(p)) => pkt = p,
                Err(None) => return false,
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Queues `pkt` if there is room: `Err(Some(pkt))` if there is none, `Err(None)` if the
    /// vif is gone or its guest stalled (the packet counted).
    fn try_queue(&self, pkt: Packet) -> Result<(), Option<Packet>> {
        let gone = || {
            self.metrics.add_rx_disconnect_drops(1);
            Err(None)
        };
        let Some(_inside) = self.backlog.gate.enter() else {
            return gone();
        };
        if self.backlog.stalled.load(Ordering::Acquire) {
            self.metrics.add_rx_stall_drops(1);
            return Err(None);
        }
        let len = pkt.data.len();
        if !self.backlog.reserve(len) {
            return Err(Some(pkt));
        }
        match self.tx.try_send(pkt) {
            Ok(()) => {
                (self.wake)();
                Ok(())
            }
            Err(TrySendError::Full(p)) => {
                self.backlog.release(len);
                Err(Some(p))
            }
            Err(TrySendError::Disconnected(_)) => {
                self.backlog.release(len);
                gone()
            }
        }
    }
}

/// What a guest that takes nothing for a while is declared, and what follows
/// ([`BackendConfig::rx_stall_timeout`], [`BackendConfig::rx_stall_reset`]).
#[derive(Debug, Clone, Copy)]
struct StallPolicy {
    timeout: Duration,
    reset: bool,
}

/// The queue's end of its backlog: the channel and the bound.
type BacklogEnd = (Receiver<Packet>, Arc<Backlog>);

/// Drives each queue for a [`VifHandler`].
pub(crate) struct HandlerDriver {
    handler: Arc<dyn VifHandler>,
    backlog: usize,
    backlog_bytes: usize,
    drain_timeout: Duration,
    stall: StallPolicy,
    /// Per queue, the backlog's receiving end and bound, taken by the queue's thread.
    backlogs: Mutex<Vec<Option<BacklogEnd>>>,
}

impl HandlerDriver {
    pub(crate) fn new(handler: Arc<dyn VifHandler>, cfg: &BackendConfig) -> Self {
        HandlerDriver {
            handler,
            backlog: cfg.rx_backlog.max(1),
            backlog_bytes: cfg.rx_backlog_bytes.max(1),
            drain_timeout: cfg.rx_drain_timeout,
            stall: StallPolicy {
                timeout: cfg.rx_stall_timeout,
                reset: cfg.rx_stall_reset,
            },
            backlogs: Mutex::new(Vec::new()),
        }
    }

    fn take_backlog(&self, queue: u16) -> Option<BacklogEnd> {
        let mut b = self.backlogs.lock().ok()?;
        b.get_mut(usize::from(queue))?.take()
    }
}

/// One queue's packets for the guest: those taken from the channel and not yet sent.
struct Pending {
    rx: Receiver<Packet>,
    backlog: Arc<Backlog>,
    out: VecDeque<Packet>,
    /// Since when packets have waited while the guest took none (until the drain).
    stalled_since: Option<Instant>,
    /// Since when the guest has taken nothing while packets waited (across drains).
    starved_since: Option<Instant>,
    /// While the guest is declared stalled: the RX requests it had posted then.
    stalled_with: Option<u32>,
}

impl Pending {
    /// Moves packets from the channel until a burst's worth waits.
    fn refill(&mut self) {
        while self.out.len() < BURST {
            match self.rx.try_recv() {
                Ok(p) => self.out.push_back(p),
                Err(_) => break,
            }
        }
    }

    /// Forgets the first `n` packets (sent), releasing their bytes.
    fn sent(&mut self, n: usize) {
        for p in self.out.drain(..n.min(self.out.len())) {
            self.backlog.release(p.data.len());
        }
    }

    /// Drops everything queued, in the channel too; returns how many packets.
    fn drop_all(&mut self) -> u64 {
        let mut n = 0;
        loop {
            self.refill();
            if self.out.is_empty() {
                return n;
            }
            n += self.out.len() as u64;
            self.sent(self.out.len());
        }
    }

    /// Sends a burst; returns how many went.
    fn send<P: BackendPlatform>(&mut self, q: &mut BackQueue<P>) -> Result<usize, QueueFault> {
        self.refill();
        if self.out.is_empty() {
            return Ok(0);
        }
        let refs: arrayvec::ArrayVec<PacketRef<'_>, BURST> =
            self.out.iter().map(Packet::packet_ref).collect();
        let sent = q.send_burst(&refs)?;
        drop(refs);
        self.sent(sent);
        Ok(sent)
    }

    /// Drops the backlog if packets waited `timeout` with the guest taking none; returns
    /// how many were dropped.
    fn drain_if_stalled(&mut self, sent: usize, timeout: Duration) -> u64 {
        if sent > 0 || self.out.is_empty() {
            self.stalled_since = None;
            return 0;
        }
        let since = *self.stalled_since.get_or_insert_with(Instant::now);
        if since.elapsed() < timeout {
            return 0;
        }
        self.stalled_since = None;
        self.drop_all()
    }
}

impl<P: BackendPlatform> QueueDriver<P> for HandlerDriver {
    fn connected(&self, queues: &[QueueInfo]) {
        let mut receivers = Vec::with_capacity(queues.len());
        let mut injectors = Vec::with_capacity(queues.len());
        for q in queues {
            let (tx, rx) = bounded(self.backlog);
            let backlog = Arc::new(Backlog::new(self.backlog_bytes));
            receivers.push(Some((rx, Arc::clone(&backlog))));
            injectors.push(RxInjector {
                queue: q.index,
                tx,
                wake: Arc::clone(&q.waker),
                metrics: Arc::clone(&q.metrics),
                backlog,
            });
        }
        if let Ok(mut b) = self.backlogs.lock() {
            *b = receivers;
        }
        self.handler.connected(injectors);
    }

    fn disconnected(&self, reason: &str) {
        self.handler.disconnected(reason);
    }

    fn handshake_failed(&self, why: &HandshakeFailure) {
        self.handler.handshake_failed(why);
    }

    fn run(&self, q: &mut BackQueue<P>) -> Result<(), QueueFault> {
        // This thread shares its core with the handler's, which feed it.
        q.share_core();
        let Some((rx, backlog)) = self.take_backlog(q.index()) else {
            return Err(QueueFault(format!("queue {} has no backlog", q.index())));
        };
        let mut pending = Pending {
            rx,
            backlog,
            out: VecDeque::with_capacity(BURST),
            stalled_since: None,
            starved_since: None,
            stalled_with: None,
        };
        let r = self.drive(q, &mut pending);
        // Whatever is still queued, or comes now, never reaches the guest: counted.
        pending.backlog.gate.close();
        q.metrics().add_rx_disconnect_drops(pending.drop_all());
        r
    }
}

impl HandlerDriver {
    fn drive<P: BackendPlatform>(
        &self,
        q: &mut BackQueue<P>,
        pending: &mut Pending,
    ) -> Result<(), QueueFault> {
        let mut bufs = PacketBuf::pool(BURST);
        while !q.stopped() {
            let got = q.recv_burst(&mut bufs)?;
            for b in &bufs[..got] {
                self.handler.tx_packet(q.index(), b.to_packet());
            }
            let sent = pending.send(q)?;
            let drained = pending.drain_if_stalled(sent, self.drain_timeout);
            q.metrics().add_rx_drain_drops(drained);
            self.watch_stall(q, pending, sent)?;
            if got == 0 && sent == 0 {
                // With packets waiting, wake in time to drain them.
                q.wait(Some(self.drain_timeout.min(Duration::from_millis(100))))?;
            }
        }
        Ok(())
    }
}

impl HandlerDriver {
    /// Declares the guest stalled once packets have waited `rx_stall_timeout` with it
    /// taking none (what waits is dropped; injectors drop at once from then on), and back
    /// once it posts new RX buffers. With `rx_stall_reset`, a stall ends the vif instead.
    fn watch_stall<P: BackendPlatform>(
        &self,
        q: &mut BackQueue<P>,
        pending: &mut Pending,
        sent: usize,
    ) -> Result<(), QueueFault> {
        if let Some(had) = pending.stalled_with {
            if q.rx_requests_posted()? > had {
                pending.stalled_with = None;
                pending.starved_since = None;
                pending.backlog.stalled.store(false, Ordering::Release);
                log::info!(
                    "domain {} queue {}: the guest posts RX buffers again; packets queued again",
                    q.frontend(),
                    q.index()
                );
            }
            return Ok(());
        }
        if sent > 0 {
            pending.starved_since = None;
            return Ok(());
        }
        if pending.out.is_empty() {
            return Ok(());
        }
        let since = *pending.starved_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.stall.timeout {
            return Ok(());
        }
        let why = format!(
            "the guest took no RX packet for {:?} with packets waiting (rx_stall_timeout)",
            self.stall.timeout
        );
        q.metrics().add_rx_stalls(1);
        if self.stall.reset {
            return Err(QueueFault(format!("{why}: the vif is reset")));
        }
        pending.backlog.stalled.store(true, Ordering::Release);
        pending.stalled_with = Some(q.rx_requests_posted()?);
        q.metrics().add_rx_stall_drops(pending.drop_all());
        log::warn!(
            "domain {} queue {}: {why}; packets for it are dropped until it posts buffers",
            q.frontend(),
            q.index()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use netstage_fallback::{Packet, PollMode};
    use netstage_platform::sim::{DomainConfig, SimDomain, SimWorld};
    use netstage_platform::{EventChannels, EventPort};
    use netstage_ring::netif::{RxRing, TxRing};
    use netstage_ring::sring::{BackRing, FrontRing};
    use netstage_ring::{SharedMem, XEN_PAGE_SIZE};

    use super::HandlerDriver;
    use crate::queue::{BackQueue, QueueParams, QueueParts, BURST};
    use crate::staging::NoStaging;
    use crate::{BackendConfig, Metrics, QueueDriver, QueueInfo, VifHandler};

    struct Discard;
    impl VifHandler for Discard {
        fn tx_packet(&self, _: u16, _: Packet) {}
    }

    /// A busy-polling queue over empty rings whose vif is already being disconnected.
    fn stopped_queue(world: &SimWorld) -> BackQueue<SimDomain> {
        let back = world.create_domain(0, DomainConfig::default()).unwrap();
        let front = world.create_domain(5, DomainConfig::default()).unwrap();
        let unbound = front.alloc_unbound(0).unwrap();
        let port = back.bind_interdomain(5, unbound.port()).unwrap();
        let ring = || SharedMem::new_zeroed(XEN_PAGE_SIZE);
        let (tx, rx) = (ring(), ring());
        FrontRing::<TxRing>::init(tx.clone()).unwrap();
        FrontRing::<RxRing>::init(rx.clone()).unwrap();
        BackQueue::new(QueueParts {
            platform: back,
            params: QueueParams {
                index: 0,
                fe: 5,
                poll: PollMode::BusyPoll,
                sg: false,
                gso_tcpv4: false,
                gso_tcpv6: false,
            },
            tx: BackRing::attach(tx).unwrap(),
            rx: BackRing::attach(rx).unwrap(),
            port: Arc::new(port),
            metrics: Metrics::for_queue(&Arc::new(Metrics::default()), 0),
            stop: Arc::new(AtomicBool::new(true)),
            staging: Box::new(NoStaging),
            fetch: crate::txpath::for_path(crate::TxPath::GrantCopy, BURST),
            rate: None,
        })
    }

    /// A queue of the queue API has its core to itself; the convenience layer's queue
    /// thread shares its core with the handler's threads that feed it, and marks its queue
    /// so (busy-polling then yields by count, not by idle time).
    #[test]
    fn the_handler_layers_queue_thread_shares_its_core() {
        let world = SimWorld::create_temp().unwrap();
        let mut q = stopped_queue(&world);
        assert!(!q.shares_core());
        let driver = HandlerDriver::new(Arc::new(Discard), &BackendConfig::default());
        let info = QueueInfo {
            index: 0,
            waker: Arc::new(|| {}),
            metrics: Arc::clone(q.metrics()),
        };
        QueueDriver::<SimDomain>::connected(&driver, &[info]);
        driver.run(&mut q).unwrap();
        assert!(q.shares_core());
    }
}
