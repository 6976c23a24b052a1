//! A user-space netif backend, split like Linux netback: [`toolstack`] (the vif's XenStore
//! directories), the XenBus state machine ([`Backend::serve`]), the per-queue TX and RX data
//! paths, graded peer faults and [`Metrics`].
//!
//! The backend trusts nothing the frontend wrote: every ring index is validated by
//! `netstage_ring`, every request chain is parsed by `ring::netif` into a private copy, every
//! grant is checked by the platform, and every failure is either a dropped packet (answered
//! with an error status and counted) or a disconnect.
//!
//! # The queue API (run to completion)
//!
//! Each queue of a connected vif is a [`BackQueue`] that one thread drives:
//! [`BackQueue::recv_burst`] takes what the guest transmitted (copied into [`PacketBuf`]s
//! made once), [`BackQueue::recv_burst_in_place`] lends staged bytes where they lie,
//! [`BackQueue::send_burst`] gives packets to the guest, [`BackQueue::wait`] sleeps until
//! there is work. [`Backend::serve_queues`] runs the XenBus side and calls a
//! [`QueueDriver`] on a thread per queue of each connection. Nothing is handed to another
//! thread and nothing is allocated per packet.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::sync::atomic::AtomicBool;
//! use std::time::Duration;
//! use netstage_netback_user::{
//!     BackQueue, Backend, BackendConfig, PacketBuf, PacketRef, QueueDriver, QueueFault, BURST,
//! };
//! use netstage_platform::sim::{DomainConfig, SimDomain, SimWorld};
//! use netstage_platform::xenstore::XsClient;
//!
//! /// Sends every frame the guest transmits back to it.
//! struct Echo;
//! impl QueueDriver<SimDomain> for Echo {
//!     fn run(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
//!         let mut bufs = PacketBuf::pool(BURST);
//!         while !q.stopped() {
//!             let n = q.recv_burst(&mut bufs)?;
//!             if n == 0 {
//!                 q.wait(Some(Duration::from_millis(100)))?;
//!             }
//!             let refs: Vec<PacketRef<'_>> = bufs[..n].iter().map(PacketBuf::packet_ref).collect();
//!             let mut sent = 0;
//!             while sent < n && !q.stopped() {
//!                 // Each call takes what the guest has buffers for, and at most 64 KiB.
//!                 let k = q.send_burst(&refs[sent..])?;
//!                 if k == 0 {
//!                     q.wait(Some(Duration::from_millis(100)))?;
//!                 }
//!                 sent += k;
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let world = SimWorld::open(std::path::Path::new("/dev/shm/my-world"))?;
//! let dom0 = world.create_domain(0, DomainConfig::default())?;
//! let xs = XsClient::connect(std::path::Path::new("/dev/shm/my-world/socket"))?;
//! let backend = Backend::new(dom0, xs, BackendConfig::default());
//! netstage_netback_user::toolstack::create_vif(backend.xenstore(), 0, 1, 0)?;
//! let stop = AtomicBool::new(false);
//! backend.serve_queues(1, 0, Arc::new(Echo), &stop)?;
//! # Ok(()) }
//! ```
//!
//! # The convenience layer
//!
//! [`Backend::serve`] drives the same queues for a [`VifHandler`]: a thread per queue that
//! calls the handler with an owned [`Packet`] per packet (an allocation each) and feeds the
//! guest from a bounded backlog that [`RxInjector`]s fill from any thread.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::sync::atomic::AtomicBool;
//! use netstage_netback_user::{Backend, BackendConfig, Packet, VifHandler};
//! use netstage_platform::sim::{DomainConfig, SimWorld};
//! use netstage_platform::xenstore::XsClient;
//!
//! struct Counter;
//! impl VifHandler for Counter {
//!     fn tx_packet(&self, _queue: u16, pkt: Packet) {
//!         println!("{} bytes from the guest", pkt.data.len());
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let world = SimWorld::open(std::path::Path::new("/dev/shm/my-world"))?;
//! let dom0 = world.create_domain(0, DomainConfig::default())?;
//! let xs = XsClient::connect(std::path::Path::new("/dev/shm/my-world/socket"))?;
//! let backend = Backend::new(dom0, xs, BackendConfig::default());
//! netstage_netback_user::toolstack::create_vif(backend.xenstore(), 0, 1, 0)?;
//! let stop = AtomicBool::new(false);
//! backend.serve(1, 0, Arc::new(Counter), &stop)?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod driver;
mod metrics;
mod queue;
mod staging;
mod stats;
pub mod toolstack;
mod txpath;
mod xenbus;

use std::sync::Arc;
use std::time::Duration;

use netstage_platform::xenstore::{XenStore, XsClient};
use netstage_platform::{DomainInfo, EventChannels, EventPort, GrantImport};

pub use driver::RxInjector;
pub use metrics::{Metrics, MetricsSnapshot, QueueMetricsSnapshot, VifMetricsSnapshot};
pub use netstage_fallback::StatsKind;
pub use netstage_fallback::{
    Features, Gso, Packet, PacketBuf, PacketRef, PacketView, PollMode, ViewPart, MAX_PACKET,
};
pub use netstage_fallback::{YIELD_EVERY, YIELD_IDLE};
pub use netstage_ring::netif::GsoType;
pub use queue::{BackQueue, BadRate, QueueFault, Rate, BURST, LEND_MIN};
pub use stats::{BackendStats, STATS_SCHEMA};

/// How the backend obtains TX packet bytes from the frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxPath {
    /// Batched grant copy (up to 64 operations per call).
    GrantCopy,
    /// Map the packet's pages, copy out, unmap, per packet.
    GrantMap,
    /// As Linux netback: grant-copy the first 128 bytes of each packet, grant-map the rest
    /// in one batch per burst, copy out, unmap the batch.
    Linux,
}

/// Backend settings.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// `multi-queue-max-queues` advertised.
    pub max_queues: u16,
    /// Features advertised.
    pub offer: Features,
    /// TX data path.
    pub tx_path: TxPath,
    /// Waiting.
    pub poll: PollMode,
    /// Packets queued for RX per queue (by [`RxInjector`]s) before new ones are dropped or
    /// wait (XSA-392).
    pub rx_backlog: usize,
    /// Bytes queued for RX per queue before new packets are dropped or wait: what a guest
    /// that posts no RX buffers can pin in this backend (Linux netback's
    /// `XENVIF_RX_QUEUE_BYTES`, 512 KiB, by default).
    pub rx_backlog_bytes: usize,
    /// How long packets may wait for a guest that posts no RX buffers before the backlog is
    /// dropped and counted (`rx_drain_drops`; Linux netback's `rx_drain_timeout_msecs`,
    /// 10 s, by default).
    pub rx_drain_timeout: Duration,
    /// How long packets may wait with the guest taking none before its queue is declared
    /// stalled (counted in `rx_stalls`, logged with the reason): what is queued is dropped
    /// and, until the guest posts new RX buffers, packets for it are dropped at once
    /// (`rx_stall_drops`) instead of queued. Linux netback's `rx_stall_timeout_msecs`
    /// (carrier off), 60 s, by default.
    pub rx_stall_timeout: Duration,
    /// Whether a stalled queue also resets the vif: the backend disconnects it with the
    /// stall as the reason (a fatal fault), and the guest must connect again. Off by default,
    /// as in Linux netback, which waits for a slow guest to come back.
    pub rx_stall_reset: bool,
    /// How long a frontend may take from its first handshake step (a key of its own in
    /// its directory, or a state past Initialising) to Connected. Past it the backend gives
    /// up on that attempt ([`HandshakeFailure::Timeout`], counted in `handshake_timeouts`):
    /// an `error` node, Closing, then Closed, until the frontend writes its state again or
    /// its domain is replaced. A frontend that never starts is never timed out.
    pub handshake_timeout: Duration,
    /// Largest `data-len` of staging slots offered (`None`: slots not offered).
    pub slots_max_data_len: Option<u32>,
    /// Largest data-ring order offered (`None`: data rings not offered).
    pub data_ring_max_order: Option<u32>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            slots_max_data_len: Some(65536),
            data_ring_max_order: Some(9),
            max_queues: 8,
            offer: Features::ALL,
            tx_path: TxPath::GrantCopy,
            poll: PollMode::Block,
            rx_backlog: 4096,
            rx_backlog_bytes: 512 * 1024,
            rx_drain_timeout: Duration::from_secs(10),
            rx_stall_timeout: Duration::from_secs(60),
            rx_stall_reset: false,
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

/// What a backend does with the vif's traffic.
pub trait VifHandler: Send + Sync + 'static {
    /// A packet the guest transmitted, on `queue`, in order per queue.
    fn tx_packet(&self, queue: u16, pkt: Packet);

    /// The vif connected: one injector per queue to send packets to the guest.
    fn connected(&self, _rx: Vec<RxInjector>) {}

    /// The vif disconnected (the injectors stop working).
    fn disconnected(&self, _reason: &str) {}

    /// A frontend's handshake failed before it connected (the backend waits for a fresh
    /// attempt).
    fn handshake_failed(&self, _why: &HandshakeFailure) {}
}

/// Why the backend gave up on a frontend's handshake before it connected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeFailure {
    /// The frontend took a first step and did not reach Connected in time.
    #[error(
        "frontend stalled: not Connected {limit:?} after its first handshake step (still \
         {state:?}); a slow guest needs a longer BackendConfig::handshake_timeout"
    )]
    Timeout {
        /// [`BackendConfig::handshake_timeout`].
        limit: Duration,
        /// The frontend's state when the backend gave up.
        state: netstage_platform::xenbus::XenbusState,
    },
    /// The frontend's keys could not be used (the message says what it got wrong).
    #[error("{0}")]
    Refused(String),
}

/// What a driver learns of each queue of a new connection.
#[derive(Clone)]
pub struct QueueInfo {
    /// The queue's index.
    pub index: u16,
    /// Makes the queue's current or next [`BackQueue::wait`] return.
    pub waker: Arc<dyn Fn() + Send + Sync>,
    /// The queue's counters (counted in its vif's and the backend's too).
    pub(crate) metrics: Arc<Metrics>,
}

impl std::fmt::Debug for QueueInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueInfo")
            .field("index", &self.index)
            .finish()
    }
}

/// Drives the queues of a vif, run to completion: [`Backend::serve_queues`] starts one
/// thread per queue of each connection and calls [`QueueDriver::run`] on it, which loops
/// over [`BackQueue::recv_burst`], [`BackQueue::send_burst`] and [`BackQueue::wait`] until
/// [`BackQueue::stopped`] (return `Ok`) or a fault (return it: the vif is disconnected).
pub trait QueueDriver<P: BackendPlatform>: Send + Sync + 'static {
    /// A frontend connected with these queues; called before any [`QueueDriver::run`].
    fn connected(&self, _queues: &[QueueInfo]) {}

    /// Drives one queue on its own thread.
    fn run(&self, q: &mut BackQueue<P>) -> Result<(), QueueFault>;

    /// The connection ended (every `run` has returned).
    fn disconnected(&self, _reason: &str) {}

    /// A frontend's handshake failed before it connected.
    fn handshake_failed(&self, _why: &HandshakeFailure) {}
}

/// A backend failure that ends [`Backend::serve`].
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// XenStore failed.
    #[error(transparent)]
    XenStore(#[from] netstage_platform::xenstore::XsError),
    /// The platform failed.
    #[error(transparent)]
    Platform(#[from] netstage_platform::PlatformError),
    /// Something else, described.
    #[error("{0}")]
    Other(String),
}

/// The platform services a backend needs.
pub trait BackendPlatform:
    GrantImport + EventChannels + DomainInfo + Clone + Send + Sync + 'static
{
}
impl<T: GrantImport + EventChannels + DomainInfo + Clone + Send + Sync + 'static> BackendPlatform
    for T
{
}

/// A backend domain's netif service, reaching XenStore through `X`: the project's
/// [`XsClient`] by default, or any other [`XenStore`] implementation (one that records or
/// filters what the backend does, or another client).
pub struct Backend<P: BackendPlatform, X: XenStore = XsClient> {
    platform: P,
    xs: X,
    cfg: BackendConfig,
    metrics: Arc<Metrics>,
    /// Each vif's counters, in the order first served.
    vifs: std::sync::Mutex<Vec<Arc<Metrics>>>,
}

impl<P: BackendPlatform, X: XenStore> Backend<P, X> {
    /// A backend acting for `platform`'s domain, using `xs` (its XenStore connection).
    pub fn new(platform: P, xs: X, cfg: BackendConfig) -> Self {
        Backend {
            platform,
            xs,
            cfg,
            metrics: Arc::new(Metrics::default()),
            vifs: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The XenStore connection.
    pub fn xenstore(&self) -> &X {
        &self.xs
    }

    /// Counters of every vif this backend served.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Shared handle to the counters.
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Counters of each vif this backend served (or serves), in the order first served, each
    /// with its queues'; [`Backend::metrics`] is their sum.
    pub fn vif_metrics(&self) -> Vec<VifMetricsSnapshot> {
        let vifs = self.vifs.lock().map(|v| v.clone()).unwrap_or_default();
        vifs.iter()
            .map(|m| {
                let (domid, devid) = m.vif();
                VifMetricsSnapshot {
                    domid,
                    devid,
                    counters: m.snapshot(),
                    queues: m.queue_snapshots(),
                }
            })
            .collect()
    }

    /// The counters of vif `devid` of domain `fe`, made on first use.
    fn metrics_of_vif(&self, fe: netstage_platform::DomId, devid: u32) -> Arc<Metrics> {
        let Ok(mut vifs) = self.vifs.lock() else {
            return Metrics::for_vif(&self.metrics, fe, devid);
        };
        if let Some(m) = vifs.iter().find(|m| m.vif() == (fe, devid)) {
            return Arc::clone(m);
        }
        let m = Metrics::for_vif(&self.metrics, fe, devid);
        vifs.push(Arc::clone(&m));
        m
    }

    /// The settings.
    pub fn config(&self) -> &BackendConfig {
        &self.cfg
    }

    /// Serves vif `devid` of guest `fe` (whose directory the toolstack made: `xl`, or
    /// [`toolstack::create_vif`] on the emulated platform) until `stop`
    /// is set: runs the XenBus state machine, connects every frontend that comes, moves
    /// packets, and survives frontends that close, misbehave or die. Each queue's thread
    /// hands the guest's packets to `handler` and feeds the guest from a backlog that the
    /// [`RxInjector`]s fill, bounded by [`BackendConfig::rx_backlog`] packets and
    /// [`BackendConfig::rx_backlog_bytes`] bytes and dropped (counted) when the guest posts
    /// no buffers for [`BackendConfig::rx_drain_timeout`].
    pub fn serve(
        &self,
        fe: netstage_platform::DomId,
        devid: u32,
        handler: Arc<dyn VifHandler>,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<(), BackendError> {
        let metrics = self.metrics_of_vif(fe, devid);
        let driver = driver::HandlerDriver::new(handler, &self.cfg);
        xenbus::serve(self, fe, devid, Arc::new(driver), &metrics, stop)
    }

    /// Serves vif `devid` of guest `fe` as [`Backend::serve`] does, with `driver` running
    /// each queue of each connection on a thread of its own (run to completion: no hand-off
    /// and no allocation per packet unless the driver makes one).
    pub fn serve_queues(
        &self,
        fe: netstage_platform::DomId,
        devid: u32,
        driver: Arc<dyn QueueDriver<P>>,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<(), BackendError> {
        let metrics = self.metrics_of_vif(fe, devid);
        xenbus::serve(self, fe, devid, driver, &metrics, stop)
    }
}

/// Wakes the queue that owns `port`. It holds the port weakly: an [`RxInjector`] or a
/// waker the application keeps after the vif went must not keep the port, and with it the
/// peer's event-channel table, mapped.
fn wake_fn<Pt: EventPort + 'static>(port: &Arc<Pt>) -> Arc<dyn Fn() + Send + Sync> {
    let p = Arc::downgrade(port);
    Arc::new(move || {
        if let Some(p) = p.upgrade() {
            let _ = p.wake();
        }
    })
}
