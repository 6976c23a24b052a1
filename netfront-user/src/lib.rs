//! A user-space netif frontend: the XenBus handshake as Linux netfront does it, rings and
//! buffer pools shared with the backend, and one thread per queue moving packets.
//!
//! The backend is not trusted: ring indexes, TX response ids and RX response chains are
//! validated, RX data is copied out of the shared buffers before anyone parses it, and a
//! backend that breaks the protocol marks the device broken.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use netstage_fallback::Packet;
//! use netstage_netfront_user::{Frontend, FrontendConfig, FrontendHandler};
//! use netstage_platform::sim::{DomainConfig, SimWorld};
//! use netstage_platform::xenstore::XsClient;
//!
//! struct Print;
//! impl FrontendHandler for Print {
//!     fn rx_packet(&self, queue: u16, pkt: Packet) {
//!         println!("queue {queue}: {} bytes", pkt.data.len());
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let world = SimWorld::open(std::path::Path::new("/dev/shm/my-world"))?;
//! let me = world.create_domain(1, DomainConfig::default())?;
//! let xs = XsClient::connect(std::path::Path::new("/dev/shm/my-world/dom1.sock"))?;
//! let front = Frontend::connect(me, xs, 0, FrontendConfig::default(), Arc::new(Print))?;
//! front.send(0, Packet::new(vec![0u8; 60]))?;
//! front.close()?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod queue;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use netstage_fallback::Packet;
use netstage_platform::xenbus::{read_state, wait_state, write_state, VifPaths, XenbusState};
use netstage_platform::xenstore::{unique_token, XenStore, XsClient, XsError, NO_TX};
use netstage_platform::{DomId, DomainInfo, EventChannels, EventPort, GrantExport};
use netstage_ring::netif::{RxRing, TxRing, XEN_NETIF_MAX_TX_SIZE};
use netstage_ring::sring::FrontRing;
use netstage_ring::XEN_PAGE_SIZE;

use netstage_fallback::PolicyState;
pub use netstage_fallback::{CopyPolicy, Design, Features, PollMode};
use netstage_ring::flex::{self, End};
use netstage_ring::staging::{write_list, SlotArea, SlotLayout};

use queue::{FQueue, POOL};

/// Frontend settings.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// Queues wanted (fewer if the backend allows fewer).
    pub queues: u16,
    /// Features requested; asking for one the backend does not offer is an error.
    pub want: Features,
    /// Waiting.
    pub poll: PollMode,
    /// Packets queued for transmission per queue before [`Frontend::send`] blocks.
    pub tx_queue_len: usize,
    /// How long the backend may take between handshake steps.
    pub handshake_timeout: Duration,
    /// Where packet bytes go. `Slots` and `Ring` are used if the backend offers them and
    /// fall back to the baseline otherwise; their sizes are clamped to the backend's
    /// maximum. (`GrantCopy` and `GrantMap` differ only at the backend.)
    pub design: Design,
    /// Forwarding mode: every received packet is transmitted back out on its queue instead
    /// of reaching the handler. With slots, a packet wholly in its RX slot leaves straight
    /// from there, without a copy (`NETTXF_staging_buffer`); others are copied.
    pub forward: bool,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        FrontendConfig {
            design: Design::GrantCopy,
            forward: false,
            queues: 1,
            want: Features::ALL,
            poll: PollMode::Block,
            tx_queue_len: 1024,
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

/// What a frontend does with received traffic.
pub trait FrontendHandler: Send + Sync + 'static {
    /// A packet from the backend, on `queue`, in order per queue.
    fn rx_packet(&self, queue: u16, pkt: Packet);

    /// The device stopped working (backend gone, closed or misbehaving).
    fn disconnected(&self, _reason: &str) {}
}

/// A frontend failure.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// XenStore failed.
    #[error(transparent)]
    XenStore(#[from] XsError),
    /// The platform failed.
    #[error(transparent)]
    Platform(#[from] netstage_platform::PlatformError),
    /// The toolstack has not configured this vif.
    #[error("no vif {devid} is configured for domain {dom} ({path} is missing): the toolstack (netback-user) must create it first")]
    NoVif {
        /// This domain.
        dom: DomId,
        /// The device.
        devid: u32,
        /// The missing node.
        path: String,
    },
    /// A feature was requested that the backend does not offer.
    #[error("the backend does not offer {0}; leave it out of the requested features")]
    FeatureMismatch(&'static str),
    /// The backend refused the connection.
    #[error("the backend refused the connection: {0}")]
    Refused(String),
    /// The handshake did not complete.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The device is broken or closed.
    #[error("device unusable: {0}")]
    Broken(String),
    /// A packet the protocol cannot carry.
    #[error("cannot send a packet of {len} bytes: {why}")]
    BadPacket {
        /// Its length.
        len: usize,
        /// Why.
        why: &'static str,
    },
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident, $add:ident;)*) => {
        /// Counters of a frontend.
        #[derive(Debug, Default)]
        pub struct Metrics { $($name: AtomicU64,)* }

        /// A copy of the counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct MetricsSnapshot { $($(#[$doc])* pub $name: u64,)* }

        impl Metrics {
            /// The current values.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
            $(pub(crate) fn $add(&self, n: u64) { self.$name.fetch_add(n, Ordering::Relaxed); })*
        }
    };
}

counters! {
    /// Packets put on the TX ring.
    tx_packets, add_tx_packets;
    /// Their bytes.
    tx_bytes, add_tx_bytes;
    /// TX slots the backend answered with an error.
    tx_errors, add_tx_errors;
    /// Packets received and delivered.
    rx_packets, add_rx_packets;
    /// Their bytes.
    rx_bytes, add_rx_bytes;
    /// RX packets dropped (error status or malformed chain).
    rx_dropped, add_rx_dropped;
    /// TX packets whose head went through staging memory.
    tx_staged_packets, add_tx_staged_packets;
    /// Bytes they staged.
    tx_staged_bytes, add_tx_staged_bytes;
    /// TX packets (partly) sent by grants because the data ring was full.
    tx_fallback_ring_full, add_tx_fallback_ring_full;
    /// TX packets partly sent by grants because they exceed the copy limit.
    tx_fallback_over_limit, add_tx_fallback_over_limit;
    /// Packets forwarded straight from their RX slot (`NETTXF_staging_buffer`).
    tx_zerocopy_packets, add_tx_zerocopy_packets;
    /// RX packets whose head came through staging memory.
    rx_staged_packets, add_rx_staged_packets;
    /// Bytes they staged.
    rx_staged_bytes, add_rx_staged_bytes;
    /// TX data ring: staging decisions at which its fill was sampled (every 16th, after
    /// reading the backend's consumer index afresh).
    tx_ring_fill_samples, add_tx_ring_fill_samples;
    /// TX data ring: the fill at each sample in millionths of the ring, summed (divide by
    /// `tx_ring_fill_samples` for the mean fill).
    tx_ring_fill_ppm, add_tx_ring_fill_ppm;
    /// RX data ring: staged packets at which its fill was sampled (every 16th, after reading
    /// the backend's producer index afresh).
    rx_ring_fill_samples, add_rx_ring_fill_samples;
    /// RX data ring: the bytes queued at each sample (this packet's included) in millionths
    /// of the ring, summed.
    rx_ring_fill_ppm, add_rx_ring_fill_ppm;
    /// Memory this frontend keeps granted to the backend (rings, buffers, staging).
    granted_bytes, add_granted_bytes;
    /// Notifications sent to the backend.
    notifications, add_notifications;
    /// Times a queue woke up from waiting.
    wakeups, add_wakeups;
}

/// The platform services a frontend needs.
pub trait FrontendPlatform:
    GrantExport + EventChannels + DomainInfo + Clone + Send + Sync + 'static
{
}
impl<T: GrantExport + EventChannels + DomainInfo + Clone + Send + Sync + 'static> FrontendPlatform
    for T
{
}

struct QueueHandle {
    tx: Sender<Packet>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

/// A connected frontend.
pub struct Frontend<P: FrontendPlatform> {
    platform: P,
    xs: XsClient,
    paths: VifPaths,
    queues: Vec<QueueHandle>,
    threads: Vec<JoinHandle<Option<String>>>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    broken: Arc<Mutex<Option<String>>>,
    monitor: Option<JoinHandle<()>>,
    features: Features,
    design: Design,
}

/// Shares the staging memory of one queue and notes its XenStore keys.
fn setup_staging<P: FrontendPlatform>(
    platform: &P,
    bdom: DomId,
    design: Design,
    prefix: &str,
    keys: &mut Vec<(String, String)>,
    metrics: &Metrics,
) -> Result<queue::FStaging, FrontendError> {
    let bad = |e: String| FrontendError::Handshake(e);
    match design {
        Design::GrantCopy | Design::GrantMap => Ok(queue::FStaging::None),
        Design::Slots { data_len } => {
            let layout = SlotLayout::new(data_len, POOL as u32).map_err(|e| bad(e.to_string()))?;
            let mut pages = Vec::new();
            let mut areas = Vec::new();
            for (dir, writable) in [("tx", false), ("rx", true)] {
                let data = platform.share(bdom, layout.data_pages(), writable)?;
                let list = platform.share(bdom, layout.list_pages(), false)?;
                let win = |p: &netstage_platform::SharedPages, n: usize| {
                    (0..n)
                        .map(|i| p.mem.sub(i * XEN_PAGE_SIZE, XEN_PAGE_SIZE))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| bad(e.to_string()))
                };
                let data_w = win(&data, layout.data_pages())?;
                let list_w = win(&list, layout.list_pages())?;
                let entries = layout
                    .natural_entries(&data.grefs)
                    .map_err(|e| bad(e.to_string()))?;
                write_list(&layout, &list_w, &entries).map_err(|e| bad(e.to_string()))?;
                areas.push(SlotArea::natural(layout, &data_w).map_err(|e| bad(e.to_string()))?);
                for (i, g) in list.grefs.iter().enumerate() {
                    keys.push((format!("{prefix}/{dir}-data-ref{i}"), g.to_string()));
                }
                keys.push((format!("{prefix}/{dir}-data-len"), data_len.to_string()));
                metrics.add_granted_bytes(layout.granted_bytes() as u64);
                pages.push(data);
                pages.push(list);
            }
            let rx = areas.pop().ok_or_else(|| bad("no RX slot area".into()))?;
            let tx = areas.pop().ok_or_else(|| bad("no TX slot area".into()))?;
            Ok(queue::FStaging::Slots {
                tx,
                rx,
                tx_len: data_len as usize,
                _pages: pages,
            })
        }
        Design::Ring { order, policy } => {
            let intf = platform.share(bdom, 1, true)?;
            let data = platform.share(bdom, 1 << order, true)?;
            flex::init_intf(&intf.mem, order, &data.grefs).map_err(|e| bad(e.to_string()))?;
            let (prod, cons) = flex::open(End::Frontend, &intf.mem, &data.mem, order)
                .map_err(|e| bad(e.to_string()))?;
            keys.push((format!("{prefix}/data-ring-ref"), intf.grefs[0].to_string()));
            keys.push((format!("{prefix}/data-ring-order"), order.to_string()));
            metrics.add_granted_bytes(((1 + (1usize << order)) * XEN_PAGE_SIZE) as u64);
            let size = prod.size() as usize;
            Ok(queue::FStaging::Ring {
                prod,
                cons,
                policy: PolicyState::new(policy, size),
                fill_tick: (0, 0),
                _pages: vec![intf, data],
            })
        }
    }
}

fn read_str(xs: &XsClient, path: &str) -> Option<String> {
    xs.read(NO_TX, path)
        .ok()
        .map(|v| String::from_utf8_lossy(&v).trim().to_string())
}

impl<P: FrontendPlatform> Frontend<P> {
    /// Connects vif `devid` of this domain (`platform`'s) through XenStore `xs` (the
    /// domain's own XenStore connection): waits for the backend, negotiates, shares rings
    /// and buffers, and starts the queues.
    pub fn connect(
        platform: P,
        xs: XsClient,
        devid: u32,
        cfg: FrontendConfig,
        handler: Arc<dyn FrontendHandler>,
    ) -> Result<Frontend<P>, FrontendError> {
        let me = GrantExport::domid(&platform);
        let fdir = format!("/local/domain/{me}/device/vif/{devid}");
        let no_vif = |path: String| FrontendError::NoVif {
            dom: me,
            devid,
            path,
        };
        // The toolstack may still be creating the vif: give it a moment.
        let deadline =
            std::time::Instant::now() + cfg.handshake_timeout.min(Duration::from_secs(10));
        let bdir = loop {
            match read_str(&xs, &format!("{fdir}/backend")) {
                Some(b) => break b,
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                None => return Err(no_vif(format!("{fdir}/backend"))),
            }
        };
        let bdom: DomId = read_str(&xs, &format!("{fdir}/backend-id"))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| no_vif(format!("{fdir}/backend-id")))?;
        let paths = VifPaths {
            frontend_dom: me,
            backend_dom: bdom,
            devid,
            frontend: fdir.clone(),
            backend: bdir.clone(),
        };
        write_state(&xs, &fdir, XenbusState::Initialising)?;
        let watch = xs.watch(&format!("{bdir}/state"), &unique_token("netfront"))?;
        let alive = || {
            if platform.domain_alive(bdom) {
                Ok(())
            } else {
                Err(format!("backend domain {bdom} is not running"))
            }
        };
        let s = wait_state(
            &xs,
            &watch,
            &bdir,
            cfg.handshake_timeout,
            // Not Connected: a backend still connected belongs to an earlier frontend.
            |s| matches!(s, XenbusState::InitWait | XenbusState::Closing),
            alive,
        )
        .map_err(FrontendError::Handshake)?;
        if s == XenbusState::Closing {
            let why = read_str(&xs, &format!("{bdir}/error")).unwrap_or_else(|| "closing".into());
            return Err(FrontendError::Refused(why));
        }
        // Negotiate.
        let offered = |k: &str| read_str(&xs, &format!("{bdir}/{k}")).is_some_and(|v| v == "1");
        for (k, want) in cfg.want.keys() {
            if want && !offered(k) {
                return Err(FrontendError::FeatureMismatch(k));
            }
        }
        if !offered("feature-rx-copy") {
            return Err(FrontendError::FeatureMismatch("feature-rx-copy"));
        }
        let max_q = read_str(&xs, &format!("{bdir}/multi-queue-max-queues"))
            .and_then(|v| v.parse::<u16>().ok());
        let nq = cfg.queues.max(1).min(max_q.unwrap_or(1).max(1));
        // The staging design: what was asked for, if offered, within the offered limits.
        let design = match cfg.design {
            Design::Slots { data_len } if offered("feature-staging-slots") => {
                let max = read_str(&xs, &format!("{bdir}/staging-max-data-len"))
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0);
                if max >= 64 {
                    Design::Slots {
                        data_len: data_len.min(max),
                    }
                } else {
                    Design::GrantCopy
                }
            }
            Design::Ring { order, policy } if offered("feature-data-ring") => {
                match read_str(&xs, &format!("{bdir}/data-ring-max-order"))
                    .and_then(|v| v.parse::<u32>().ok())
                {
                    Some(max) => Design::Ring {
                        order: order.min(max).min(flex::MAX_RING_ORDER),
                        policy,
                    },
                    None => Design::GrantCopy,
                }
            }
            Design::GrantMap => Design::GrantMap,
            _ => Design::GrantCopy,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::default());
        let mut fqs = Vec::new();
        let mut handles = Vec::new();
        let mut keys: Vec<(String, String)> = Vec::new();
        for q in 0..nq {
            let tx_page = platform.share(bdom, 1, true)?;
            let rx_page = platform.share(bdom, 1, true)?;
            let tx = FrontRing::<TxRing>::init(tx_page.mem.clone())
                .map_err(|e| FrontendError::Handshake(e.to_string()))?;
            let rx = FrontRing::<RxRing>::init(rx_page.mem.clone())
                .map_err(|e| FrontendError::Handshake(e.to_string()))?;
            let tx_pool = platform.share(bdom, POOL, false)?;
            let rx_pool = platform.share(bdom, POOL, true)?;
            let port = Arc::new(platform.alloc_unbound(bdom)?);
            let prefix = if nq == 1 {
                fdir.clone()
            } else {
                format!("{fdir}/queue-{q}")
            };
            metrics.add_granted_bytes(((2 + 2 * POOL) * XEN_PAGE_SIZE) as u64);
            let staging = setup_staging(&platform, bdom, design, &prefix, &mut keys, &metrics)?;
            keys.push((
                format!("{prefix}/tx-ring-ref"),
                tx_page.grefs[0].to_string(),
            ));
            keys.push((
                format!("{prefix}/rx-ring-ref"),
                rx_page.grefs[0].to_string(),
            ));
            keys.push((format!("{prefix}/event-channel"), port.port().to_string()));
            let (ptx, prx) = bounded(cfg.tx_queue_len.max(1));
            let p2 = Arc::clone(&port);
            let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                let _ = p2.wake();
            });
            handles.push(QueueHandle {
                tx: ptx,
                wake: Arc::clone(&wake),
            });
            let mut fq = FQueue {
                index: q,
                poll: cfg.poll,
                tx,
                rx,
                port,
                tx_pool,
                rx_pool,
                tx_free: (0..POOL as u16).rev().collect(),
                tx_inflight: vec![false; POOL],
                rx_posted: VecDeque::with_capacity(POOL),
                tx_queue: prx,
                tx_head: None,
                head_staged: None,
                staging,
                forward: cfg.forward,
                fwd: VecDeque::new(),
                zc_pending: vec![None; POOL],
                handler: Arc::clone(&handler),
                metrics: Arc::clone(&metrics),
                stop: Arc::clone(&stop),
            };
            fq.post_all_rx().map_err(FrontendError::Handshake)?;
            fqs.push((fq, tx_page, rx_page));
        }
        // Everything the backend needs, in one transaction, as netfront does.
        let flag = |b: bool| if b { "1" } else { "0" }.to_string();
        let mut common = vec![
            (format!("{fdir}/request-rx-copy"), "1".to_string()),
            (format!("{fdir}/feature-rx-notify"), "1".to_string()),
        ];
        for (k, want) in cfg.want.keys() {
            common.push((format!("{fdir}/{k}"), flag(want)));
        }
        if max_q.is_some() {
            common.push((format!("{fdir}/multi-queue-num-queues"), nq.to_string()));
        }
        xs.transaction(10, |tx| {
            // Whatever an earlier frontend of this vif left behind goes first: only the
            // toolstack's keys and the state survive.
            for child in xs.directory(tx, &fdir)? {
                if ![
                    "backend",
                    "backend-id",
                    "handle",
                    "mac",
                    "state",
                    "mtu",
                    "trusted",
                ]
                .contains(&child.as_str())
                {
                    xs.rm(tx, &format!("{fdir}/{child}"))?;
                }
            }
            for (k, v) in keys.iter().chain(&common) {
                xs.write(tx, k, v.as_bytes())?;
            }
            Ok(())
        })?;
        // Start the queues; the ring pages live as long as their queue.
        let mut threads = Vec::new();
        for (fq, tx_page, rx_page) in fqs {
            let t = std::thread::Builder::new()
                .name(format!("netfront-q{}", fq.index))
                .spawn(move || {
                    let r = fq.run();
                    drop((tx_page, rx_page));
                    r
                })
                .map_err(|e| FrontendError::Handshake(format!("cannot start a queue: {e}")))?;
            threads.push(t);
        }
        write_state(&xs, &fdir, XenbusState::Connected)?;
        let s = wait_state(
            &xs,
            &watch,
            &bdir,
            cfg.handshake_timeout,
            |s| {
                matches!(
                    s,
                    XenbusState::Connected | XenbusState::Closing | XenbusState::Closed
                )
            },
            alive,
        );
        let refused = match s {
            Ok(XenbusState::Connected) => None,
            Ok(_) => Some(FrontendError::Refused(
                read_str(&xs, &format!("{bdir}/error")).unwrap_or_else(|| "backend closed".into()),
            )),
            Err(e) => Some(FrontendError::Handshake(e)),
        };
        let broken = Arc::new(Mutex::new(None));
        let design_in_use = design;
        let mut f = Frontend {
            platform,
            xs,
            paths,
            queues: handles,
            threads,
            stop,
            metrics,
            broken,
            monitor: None,
            features: cfg.want,
            design: design_in_use,
        };
        if let Some(e) = refused {
            f.shutdown_queues();
            let _ = write_state(&f.xs, &f.paths.frontend, XenbusState::Closed);
            return Err(e);
        }
        f.monitor = Some(f.spawn_monitor(watch, handler)?);
        Ok(f)
    }

    fn spawn_monitor(
        &self,
        watch: netstage_platform::xenstore::Watch,
        handler: Arc<dyn FrontendHandler>,
    ) -> Result<JoinHandle<()>, FrontendError> {
        let xs = self.xs.clone();
        let bdir = self.paths.backend.clone();
        let bdom = self.paths.backend_dom;
        let platform = self.platform.clone();
        let stop = Arc::clone(&self.stop);
        let broken = Arc::clone(&self.broken);
        let wakes: Vec<_> = self.queues.iter().map(|q| Arc::clone(&q.wake)).collect();
        std::thread::Builder::new()
            .name("netfront-monitor".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let _ = watch.next(Duration::from_millis(100));
                    let why = if !platform.domain_alive(bdom) {
                        Some(format!("backend domain {bdom} died"))
                    } else {
                        match read_state(&xs, &bdir) {
                            XenbusState::Connected => None,
                            s => Some(format!("backend left the connected state ({s:?})")),
                        }
                    };
                    if let Some(why) = why {
                        if let Ok(mut b) = broken.lock() {
                            b.get_or_insert(why.clone());
                        }
                        stop.store(true, Ordering::Release);
                        for w in &wakes {
                            w();
                        }
                        handler.disconnected(&why);
                        return;
                    }
                }
            })
            .map_err(|e| FrontendError::Handshake(format!("cannot start the monitor: {e}")))
    }

    /// The design in use (the one asked for, or the baseline if the backend lacks it).
    pub fn design(&self) -> Design {
        self.design
    }

    /// Number of queues negotiated.
    pub fn queues(&self) -> u16 {
        self.queues.len() as u16
    }

    /// This domain's id.
    pub fn domid(&self) -> DomId {
        self.paths.frontend_dom
    }

    /// The vif's XenStore paths.
    pub fn paths(&self) -> &VifPaths {
        &self.paths
    }

    /// Counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Why the device stopped working, if it did.
    pub fn broken(&self) -> Option<String> {
        if let Ok(b) = self.broken.lock() {
            if let Some(b) = b.as_ref() {
                return Some(b.clone());
            }
        }
        self.threads
            .iter()
            .any(|t| t.is_finished())
            .then(|| "a queue stopped".to_string())
    }

    /// Queues `pkt` for transmission on `queue` (blocking while that queue is full).
    pub fn send(&self, queue: u16, pkt: Packet) -> Result<(), FrontendError> {
        let len = pkt.data.len();
        let bad = |why| Err(FrontendError::BadPacket { len, why });
        if len == 0 || len > XEN_NETIF_MAX_TX_SIZE {
            return bad("a packet has 1 to 65535 bytes");
        }
        if !self.features.sg && len > XEN_PAGE_SIZE {
            return bad("multi-slot packets need feature-sg");
        }
        if let Some(g) = pkt.gso {
            let ok = match g.gso_type {
                netstage_ring::netif::GsoType::TcpV4 => self.features.gso_tcpv4,
                netstage_ring::netif::GsoType::TcpV6 => self.features.gso_tcpv6,
            };
            if !ok || g.mss == 0 {
                return bad("GSO needs the negotiated feature and a non-zero MSS");
            }
        }
        if self.stop.load(Ordering::Relaxed) {
            if let Some(b) = self.broken() {
                return Err(FrontendError::Broken(b));
            }
        }
        let q = self
            .queues
            .get(usize::from(queue))
            .ok_or(FrontendError::BadPacket {
                len,
                why: "no such queue",
            })?;
        // Every packet wakes the queue: checking the channel first would race with the queue
        // thread draining it and lose wake-ups.
        q.tx.send(pkt)
            .map_err(|_| FrontendError::Broken("queue stopped".into()))?;
        (q.wake)();
        Ok(())
    }

    fn shutdown_queues(&mut self) -> Option<String> {
        self.stop.store(true, Ordering::Release);
        for q in &self.queues {
            (q.wake)();
        }
        let mut fault = None;
        for t in self.threads.drain(..) {
            if let Ok(Some(f)) = t.join() {
                fault.get_or_insert(f);
            }
        }
        if let Some(m) = self.monitor.take() {
            let _ = m.join();
        }
        fault
    }

    /// Closes the device: Closing, wait for the backend to close, Closed; stops the queues
    /// and revokes the shared pages.
    pub fn close(mut self) -> Result<(), FrontendError> {
        let xs = self.xs.clone();
        let fdir = self.paths.frontend.clone();
        let bdir = self.paths.backend.clone();
        let fault = self.shutdown_queues();
        write_state(&xs, &fdir, XenbusState::Closing)?;
        let watch = xs.watch(&format!("{bdir}/state"), &unique_token("netfront-close"))?;
        let bdom = self.paths.backend_dom;
        let platform = self.platform.clone();
        let _ = wait_state(
            &xs,
            &watch,
            &bdir,
            Duration::from_secs(10),
            |s| {
                matches!(
                    s,
                    XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
                )
            },
            || {
                if platform.domain_alive(bdom) {
                    Ok(())
                } else {
                    Err("backend gone".into())
                }
            },
        );
        write_state(&xs, &fdir, XenbusState::Closed)?;
        match fault {
            Some(f) => Err(FrontendError::Broken(f)),
            None => Ok(()),
        }
    }
}

impl<P: FrontendPlatform> Drop for Frontend<P> {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            let _ = write_state(&self.xs, &self.paths.frontend, XenbusState::Closing);
            self.shutdown_queues();
            let _ = write_state(&self.xs, &self.paths.frontend, XenbusState::Closed);
        }
    }
}
