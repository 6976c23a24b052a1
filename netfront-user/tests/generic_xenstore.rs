//! A `Backend` over a XenStore implementation other than `XsClient`: a store that records
//! every path the backend writes, around a client of the embedded xenstored. The backend
//! negotiates, connects a real frontend and moves packets both ways through it, and every
//! key it writes passes through the recording store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use netstage_netback_user::{toolstack, Backend, BackendConfig, Packet, RxInjector, VifHandler};
use netstage_netfront_user::{Frontend, FrontendConfig, FrontendHandler};
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::sim::{DomainConfig, SimWorld};
use netstage_platform::xenstore::{TxId, Watch, XenStore, XsClient, XsResult};
use netstage_platform::DomId;

const FE: u16 = 6;

/// A XenStore that forwards to a client and remembers the path of every write.
struct RecordingStore {
    inner: XsClient,
    written: Mutex<Vec<String>>,
}

impl RecordingStore {
    fn written(&self) -> Vec<String> {
        self.written.lock().unwrap().clone()
    }
}

impl XenStore for RecordingStore {
    fn read(&self, tx: TxId, path: &str) -> XsResult<Vec<u8>> {
        self.inner.read(tx, path)
    }
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> XsResult<()> {
        self.written.lock().unwrap().push(path.to_string());
        self.inner.write(tx, path, value)
    }
    fn mkdir(&self, tx: TxId, path: &str) -> XsResult<()> {
        self.inner.mkdir(tx, path)
    }
    fn rm(&self, tx: TxId, path: &str) -> XsResult<()> {
        self.inner.rm(tx, path)
    }
    fn directory(&self, tx: TxId, path: &str) -> XsResult<Vec<String>> {
        self.inner.directory(tx, path)
    }
    fn get_perms(&self, tx: TxId, path: &str) -> XsResult<Vec<String>> {
        self.inner.get_perms(tx, path)
    }
    fn set_perms(&self, tx: TxId, path: &str, perms: &[&str]) -> XsResult<()> {
        self.inner.set_perms(tx, path, perms)
    }
    fn transaction_start(&self) -> XsResult<TxId> {
        self.inner.transaction_start()
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> XsResult<bool> {
        self.inner.transaction_end(tx, commit)
    }
    fn watch(&self, path: &str, token: &str) -> XsResult<Watch> {
        self.inner.watch(path, token)
    }
    fn get_domain_path(&self, dom: DomId) -> XsResult<String> {
        self.inner.get_domain_path(dom)
    }
}

/// The backend's side: what the guest sent, and the injectors to answer it.
#[derive(Default)]
struct BackSide {
    got: Mutex<Vec<Packet>>,
    injectors: Mutex<Vec<RxInjector>>,
}

impl VifHandler for BackSide {
    fn tx_packet(&self, _queue: u16, pkt: Packet) {
        self.got.lock().unwrap().push(pkt);
    }
    fn connected(&self, rx: Vec<RxInjector>) {
        *self.injectors.lock().unwrap() = rx;
    }
}

/// The frontend's side: what the backend sent.
#[derive(Default)]
struct FrontSide {
    got: Mutex<Vec<Packet>>,
}

impl FrontendHandler for FrontSide {
    fn rx_packet(&self, _queue: u16, pkt: Packet) {
        self.got.lock().unwrap().push(pkt);
    }
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < Duration::from_secs(30), "timed out: {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// A frame of `len` bytes, each byte telling `seed` and its offset apart.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_add(seed)).collect()
}

#[test]
fn a_backend_over_another_xenstore_serves_a_frontend_both_ways() {
    let world = SimWorld::create_temp().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let xsd = Xenstored::start(XenstoredConfig::in_dir(dir.path())).unwrap();
    let dom0 = world.create_domain(0, DomainConfig::default()).unwrap();
    let front_dom = world.create_domain(FE, DomainConfig::default()).unwrap();
    xsd.introduce(FE).unwrap();
    let store = RecordingStore {
        inner: XsClient::connect(xsd.socket()).unwrap(),
        written: Mutex::new(Vec::new()),
    };
    let paths = toolstack::create_vif(&store, 0, FE, 0).unwrap();
    let backend: Arc<Backend<_, RecordingStore>> =
        Arc::new(Backend::new(dom0, store, BackendConfig::default()));
    let back = Arc::new(BackSide::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (b2, h2, s2) = (Arc::clone(&backend), Arc::clone(&back), Arc::clone(&stop));
    let served = thread::spawn(move || b2.serve(FE, 0, h2, &s2));

    let fh = Arc::new(FrontSide::default());
    let xs_fe = XsClient::connect(&xsd.domain_socket(FE)).unwrap();
    let front = Frontend::connect(
        front_dom,
        xs_fe,
        0,
        FrontendConfig::default(),
        Arc::clone(&fh) as Arc<dyn FrontendHandler>,
    )
    .unwrap();
    wait("the backend's injectors", || {
        !back.injectors.lock().unwrap().is_empty()
    });

    let sizes = [60, 1500, 4097];
    for (k, &len) in sizes.iter().enumerate() {
        front.send(0, Packet::new(frame(len, k as u8))).unwrap();
        let rx = back.injectors.lock().unwrap()[0].clone();
        assert!(rx.send(Packet::new(frame(len, 100 + k as u8))));
    }
    wait("the guest's frames at the backend", || {
        back.got.lock().unwrap().len() == sizes.len()
    });
    wait("the backend's frames at the guest", || {
        fh.got.lock().unwrap().len() == sizes.len()
    });
    for (k, &len) in sizes.iter().enumerate() {
        assert_eq!(back.got.lock().unwrap()[k].data, frame(len, k as u8));
        assert_eq!(fh.got.lock().unwrap()[k].data, frame(len, 100 + k as u8));
    }
    front.close().unwrap();
    stop.store(true, Ordering::Release);
    served.join().unwrap().unwrap();

    // The backend reached XenStore through the recording store: its features and each
    // state it went through were written there.
    let written = backend.xenstore().written();
    let key = |k: &str| format!("{}/{k}", paths.backend);
    assert!(written.contains(&key("feature-rx-copy")), "{written:#?}");
    let states = written.iter().filter(|p| **p == key("state")).count();
    assert!(states >= 3, "InitWait, Connected, Closed: {written:#?}");
}
