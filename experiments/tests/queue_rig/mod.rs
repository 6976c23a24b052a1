//! A guest and a backend in one process over the emulated platform, connected through the
//! queue API: the backend's queues run a test's [`QueueDriver`] on their own threads, the
//! test drives the frontend's queues itself.

// Each test binary uses a part of it.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use netstage_fallback::Design;
use netstage_netback_user::{toolstack, Backend, BackendConfig, BackendError, QueueDriver, TxPath};
use netstage_netfront_user::{FrontQueue, FrontendConfig, FrontendLink, PollMode};
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::sim::{DomainConfig, SimDomain, SimWorld};
use netstage_platform::xenstore::XsClient;

/// The guest's domain id.
pub const FE: u16 = 3;

/// A connected pair.
pub struct Rig {
    pub link: Option<FrontendLink<SimDomain>>,
    pub queues: Vec<FrontQueue<SimDomain>>,
    /// The backend's domain (its grant counters).
    pub dom0: SimDomain,
    /// The backend's counters.
    pub back: Arc<netstage_netback_user::Metrics>,
    stop: Arc<AtomicBool>,
    serving: Option<JoinHandle<()>>,
    _xsd: Xenstored,
    _dir: tempfile::TempDir,
    _world: SimWorld,
}

impl Rig {
    /// Connects one queue of `design` with both ends polling as `poll`, the backend's queue
    /// run by `driver`.
    pub fn new(design: &str, poll: PollMode, driver: Arc<dyn QueueDriver<SimDomain>>) -> Rig {
        Rig::build(design, poll, BackendConfig::default(), move |b, stop| {
            b.serve_queues(FE, 0, driver, stop)
        })
    }

    /// Connects one queue of `design`, the backend (with `cfg`, its TX path and polling set
    /// here) served by `serve` on a thread of its own.
    pub fn build(
        design: &str,
        poll: PollMode,
        cfg: BackendConfig,
        serve: impl FnOnce(&Backend<SimDomain>, &AtomicBool) -> Result<(), BackendError>
            + Send
            + 'static,
    ) -> Rig {
        Rig::build_in(design, poll, cfg, DomainConfig::default(), serve)
    }

    /// As [`Rig::new`], both ends' event-channel waits spinning `spin` before they sleep.
    pub fn spinning(
        design: &str,
        poll: PollMode,
        spin: std::time::Duration,
        driver: Arc<dyn QueueDriver<SimDomain>>,
    ) -> Rig {
        let both = DomainConfig {
            spin_before_block: spin,
            ..DomainConfig::default()
        };
        Rig::build_in(
            design,
            poll,
            BackendConfig::default(),
            both,
            move |b, stop| b.serve_queues(FE, 0, driver, stop),
        )
    }

    /// As [`Rig::build`], both domains configured by `domains`.
    fn build_in(
        design: &str,
        poll: PollMode,
        cfg: BackendConfig,
        domains: DomainConfig,
        serve: impl FnOnce(&Backend<SimDomain>, &AtomicBool) -> Result<(), BackendError>
            + Send
            + 'static,
    ) -> Rig {
        let design: Design = design.parse().unwrap();
        let world = SimWorld::create_temp().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let xsd = Xenstored::start(XenstoredConfig::in_dir(dir.path())).unwrap();
        let dom0 = world.create_domain(0, domains.clone()).unwrap();
        let guest = world.create_domain(FE, domains).unwrap();
        xsd.introduce(FE).unwrap();
        let xs0 = XsClient::connect(xsd.socket()).unwrap();
        toolstack::create_vif(&xs0, 0, FE, 0).unwrap();
        let cfg = BackendConfig {
            tx_path: TxPath::for_design(design),
            poll,
            ..cfg
        };
        let backend = Backend::new(dom0.clone(), xs0, cfg);
        let back = backend.metrics_handle();
        let stop = Arc::new(AtomicBool::new(false));
        let st2 = Arc::clone(&stop);
        let serving = thread::spawn(move || serve(&backend, &st2).unwrap());
        let xs = XsClient::connect(&xsd.domain_socket(FE)).unwrap();
        let fcfg = FrontendConfig {
            design,
            poll,
            ..FrontendConfig::default()
        };
        let (link, queues) = netstage_netfront_user::connect_queues(guest, xs, 0, fcfg).unwrap();
        Rig {
            link: Some(link),
            queues,
            dom0,
            back,
            stop,
            serving: Some(serving),
            _xsd: xsd,
            _dir: dir,
            _world: world,
        }
    }

    /// Closes the frontend, then stops the backend.
    pub fn close(mut self) {
        self.queues.clear();
        if let Some(l) = self.link.take() {
            l.close().unwrap();
        }
        self.stop_backend();
    }

    fn stop_backend(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.serving.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.queues.clear();
        drop(self.link.take());
        self.stop_backend();
    }
}

/// `len` bytes of packet number `seq`: the number in the first four bytes (little-endian),
/// then a pattern that depends on both.
pub fn payload(seq: u32, len: usize, out: &mut [u8]) {
    for (i, b) in out[..len].iter_mut().enumerate() {
        *b = (seq.wrapping_mul(31) as usize).wrapping_add(i.wrapping_mul(7)) as u8;
    }
    let n = len.min(4);
    out[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}
