//! A site for tests whose peers live and die: a world with its own xenstored, vifs made as
//! the toolstack makes them, handlers that echo and count, helper processes that act as a
//! domain (this test binary run again, so that a domain can be killed), and what the
//! emulated platform says is left of a domain.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use netstage_fallback::Packet;
use netstage_netback_user::{toolstack, HandshakeFailure, RxInjector, VifHandler};
use netstage_netfront_user::FrontendHandler;
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::sim::{DomainConfig, SimDomain, SimWorld};
use netstage_platform::xenbus::{read_state, VifPaths, XenbusState};
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};
use netstage_platform::{DomId, VIF_TOOLSTACK_FRONTEND_KEYS};

/// How long a test waits for something that takes milliseconds.
const WAIT: Duration = Duration::from_secs(15);

/// The environment variable that tells a helper process where its world is.
pub(crate) const WORLD_ENV: &str = "NETSTAGE_TEST_WORLD";

/// Polls `f` until it holds, for at most `limit`.
pub(crate) fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out after {limit:?}: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Domains small enough for many in one test, large enough for 256-entry rings with
/// staging memory.
pub(crate) fn guest_config() -> DomainConfig {
    DomainConfig {
        mem_pages: 4096,
        grant_entries: 4096,
        ..DomainConfig::default()
    }
}

/// A world, its xenstored (sockets under `<world>/xenstore`) and dom0's connection to it.
/// Fields drop in order: the connection, the daemon, then the world's files.
pub(crate) struct Site {
    pub(crate) xs0: XsClient,
    pub(crate) xsd: Xenstored,
    pub(crate) world: SimWorld,
}

impl Site {
    pub(crate) fn new() -> Site {
        let world = SimWorld::create_temp().expect("a world under /dev/shm");
        let xsd = Xenstored::start(XenstoredConfig::in_dir(&world.path().join("xenstore")))
            .expect("xenstored");
        let xs0 = XsClient::connect(xsd.socket()).expect("dom0's XenStore connection");
        Site { xs0, xsd, world }
    }

    /// Makes vif 0 of guest `fe` as the toolstack does.
    pub(crate) fn vif(&self, fe: DomId) -> VifPaths {
        self.xsd.introduce(fe).expect("introduce");
        toolstack::create_vif(&self.xs0, 0, fe, 0).expect("vif")
    }

    /// Guest `fe`'s own XenStore connection.
    pub(crate) fn guest_xs(&self, fe: DomId) -> XsClient {
        XsClient::connect(&self.xsd.domain_socket(fe)).expect("guest XenStore")
    }

    /// Domain `id` run by this process.
    pub(crate) fn domain(&self, id: DomId) -> SimDomain {
        self.world
            .create_domain(id, guest_config())
            .expect("domain")
    }

    /// A node's value.
    pub(crate) fn read(&self, path: &str) -> Option<String> {
        self.xs0
            .read(NO_TX, path)
            .ok()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// The keys of a directory (empty if it is gone).
    pub(crate) fn keys(&self, dir: &str) -> Vec<String> {
        self.xs0.directory(NO_TX, dir).unwrap_or_default()
    }

    /// The backend (this process) let go of the dead guest of vif `p`: nothing of it
    /// mapped, its frontend directory back to the toolstack's keys at Initialising, nothing
    /// else of it in XenStore, the backend in InitWait without an error.
    pub(crate) fn assert_forgotten(&self, p: &VifPaths, why: &str) {
        until(&format!("{why}: the dead guest forgotten"), WAIT, || {
            maps_of(&self.world, p.frontend_dom).is_empty()
                && read_state(&self.xs0, &p.backend) == XenbusState::InitWait
                && read_state(&self.xs0, &p.frontend) == XenbusState::Initialising
        });
        let keys = self.keys(&p.frontend);
        assert!(
            keys.iter()
                .all(|k| VIF_TOOLSTACK_FRONTEND_KEYS.contains(&k.as_str())),
            "{why}: the dead guest's keys are left: {keys:?}"
        );
        let dom = format!("/local/domain/{}", p.frontend_dom);
        assert_eq!(self.keys(&dom), ["device"], "{why}");
        assert_eq!(self.read(&format!("{}/error", p.backend)), None, "{why}");
    }

    /// Runs test `name` of this test binary (an ignored helper) as a process of its own in
    /// this world, with `env` besides.
    pub(crate) fn helper(&self, name: &str, env: &[(&str, String)]) -> Child {
        let mut c = Command::new(std::env::current_exe().expect("this test binary"));
        c.args([
            "--exact",
            name,
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(WORLD_ENV, self.world.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            c.env(k, v);
        }
        c.spawn().expect("spawn the helper")
    }
}

/// The world a helper process was started in.
pub(crate) fn helper_world() -> SimWorld {
    let dir = std::env::var(WORLD_ENV).expect("started by Site::helper");
    SimWorld::open(Path::new(&dir)).expect("the parent's world")
}

/// Lines of this process's memory map that map files of domain `dom` of `world`: what it
/// still holds of that domain.
pub(crate) fn maps_of(world: &SimWorld, dom: DomId) -> Vec<String> {
    let needle = format!("{}/dom{dom}/", world.path().display());
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// A backend's handler: echoes every packet back to the guest and counts what it took,
/// what it handed back and what failed.
#[derive(Default)]
pub(crate) struct Echo {
    pub(crate) rx: Mutex<Option<RxInjector>>,
    pub(crate) taken: AtomicU64,
    pub(crate) echoed: AtomicU64,
    pub(crate) failures: Mutex<Vec<HandshakeFailure>>,
    pub(crate) disconnects: Mutex<Vec<String>>,
}

impl VifHandler for Echo {
    fn tx_packet(&self, _queue: u16, pkt: Packet) {
        self.taken.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = self.rx.lock().expect("injector").as_ref() {
            if i.send(pkt) {
                self.echoed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    fn connected(&self, rx: Vec<RxInjector>) {
        *self.rx.lock().expect("injector") = rx.into_iter().next();
    }
    fn disconnected(&self, reason: &str) {
        self.disconnects
            .lock()
            .expect("reasons")
            .push(reason.to_string());
    }
    fn handshake_failed(&self, why: &HandshakeFailure) {
        self.failures.lock().expect("failures").push(why.clone());
    }
}

/// A frontend's handler that counts what it receives.
#[derive(Default)]
pub(crate) struct Received(pub AtomicU64);

impl FrontendHandler for Received {
    fn rx_packet(&self, _queue: u16, _pkt: Packet) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Received {
    pub(crate) fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A handler shared with the code under test.
pub(crate) fn shared<T: Default>() -> Arc<T> {
    Arc::new(T::default())
}

/// A backend in this process serving vif 0 of one guest with an [`Echo`] handler; stopped
/// and joined when dropped.
pub(crate) struct ServedVif {
    pub(crate) site: Site,
    pub(crate) paths: VifPaths,
    pub(crate) backend: Arc<netstage_netback_user::Backend<SimDomain>>,
    pub(crate) echo: Arc<Echo>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    server: Option<thread::JoinHandle<()>>,
}

impl ServedVif {
    /// Makes the vif of guest `fe` (then lets `toolstack` add keys to it, as a toolstack
    /// would before the backend reads them) and serves it with `cfg`.
    pub(crate) fn start(
        fe: DomId,
        cfg: netstage_netback_user::BackendConfig,
        toolstack: impl FnOnce(&Site, &VifPaths),
    ) -> ServedVif {
        let site = Site::new();
        let paths = site.vif(fe);
        toolstack(&site, &paths);
        let backend = Arc::new(netstage_netback_user::Backend::new(
            site.domain(0),
            site.xs0.clone(),
            cfg,
        ));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let echo = shared::<Echo>();
        let server = {
            let (b, s, h) = (Arc::clone(&backend), Arc::clone(&stop), Arc::clone(&echo));
            thread::spawn(move || b.serve(fe, 0, h, &s).expect("serve"))
        };
        ServedVif {
            site,
            paths,
            backend,
            echo,
            stop,
            server: Some(server),
        }
    }
}

impl Drop for ServedVif {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(s) = self.server.take() {
            let _ = s.join();
        }
    }
}
