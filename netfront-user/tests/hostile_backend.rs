//! A hostile backend, written by hand against the rings and the staging memory, shows that
//! the frontend trusts nothing it writes: impossible staging claims, data-ring overruns and
//! unknown ids break the device with a reason instead of crashing or reading out of bounds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use netstage_fallback::Packet;
use netstage_netback_user::toolstack;
use netstage_netfront_user::{
    CopyPolicy, Design, Frontend, FrontendConfig, FrontendError, FrontendHandler,
};
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::sim::{DomainConfig, SimDomain, SimWorld};
use netstage_platform::xenbus::{read_state, write_state, XenbusState};
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};
use netstage_platform::{EventChannels, EventPort, GrantImport};
use netstage_ring::flex::{self, IN_PROD_OFFSET};
use netstage_ring::netif::{NetifRxResponse, NetifTxResponse, RxFlags, RxRing, TxRing};
use netstage_ring::sring::BackRing;

const FE: u16 = 5;

struct Quiet;
impl FrontendHandler for Quiet {
    fn rx_packet(&self, _q: u16, _p: Packet) {}
}

struct EvilBack {
    _world: SimWorld,
    _dir: tempfile::TempDir,
    _xsd: Xenstored,
    xs: XsClient,
    backend_dir: String,
    front: Option<Frontend<SimDomain>>,
    tx: BackRing<TxRing>,
    rx: BackRing<RxRing>,
    port: netstage_platform::sim::SimPort,
    intf: Option<netstage_ring::SharedMem>,
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

impl EvilBack {
    fn connect(design: Design) -> EvilBack {
        let world = SimWorld::create_temp().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let xsd = Xenstored::start(XenstoredConfig::in_dir(dir.path())).unwrap();
        let cfg = DomainConfig {
            mem_pages: 4096,
            ..DomainConfig::default()
        };
        let dom0 = world.create_domain(0, cfg.clone()).unwrap();
        let me = world.create_domain(FE, cfg).unwrap();
        xsd.introduce(FE).unwrap();
        let xs = XsClient::connect(xsd.socket()).unwrap();
        let p = toolstack::create_vif(&xs, 0, FE, 0).unwrap();
        for (k, v) in [
            ("feature-rx-copy", "1"),
            ("feature-sg", "1"),
            ("feature-staging-slots", "1"),
            ("staging-max-data-len", "4096"),
            ("feature-data-ring", "1"),
            ("data-ring-max-order", "4"),
        ] {
            xs.write(NO_TX, &format!("{}/{k}", p.backend), v.as_bytes())
                .unwrap();
        }
        write_state(&xs, &p.backend, XenbusState::InitWait).unwrap();
        let gxs = XsClient::connect(&xsd.domain_socket(FE)).unwrap();
        let fcfg = FrontendConfig {
            design,
            want: netstage_netfront_user::Features {
                sg: true,
                ..netstage_netfront_user::Features::NONE
            },
            ..FrontendConfig::default()
        };
        let ft = thread::spawn(move || Frontend::connect(me, gxs, 0, fcfg, Arc::new(Quiet)));
        wait("frontend Connected", || {
            read_state(&xs, &p.frontend) == XenbusState::Connected
        });
        let key = |k: &str| -> u32 {
            String::from_utf8(xs.read(NO_TX, &format!("{}/{k}", p.frontend)).unwrap())
                .unwrap()
                .parse()
                .unwrap()
        };
        let tx = BackRing::attach(dom0.map(FE, &[key("tx-ring-ref")], true).unwrap()).unwrap();
        let rx = BackRing::attach(dom0.map(FE, &[key("rx-ring-ref")], true).unwrap()).unwrap();
        let port = dom0.bind_interdomain(FE, key("event-channel")).unwrap();
        let intf = matches!(design, Design::Ring { .. })
            .then(|| dom0.map(FE, &[key("data-ring-ref")], true).unwrap());
        write_state(&xs, &p.backend, XenbusState::Connected).unwrap();
        let front = ft.join().unwrap().unwrap();
        EvilBack {
            _world: world,
            _dir: dir,
            _xsd: xsd,
            xs,
            backend_dir: p.backend,
            front: Some(front),
            tx,
            rx,
            port,
            intf,
        }
    }

    fn rx_response(&mut self, rsp: NetifRxResponse) {
        self.rx.refresh_requests().unwrap();
        self.rx.take_request().unwrap().unwrap();
        self.rx.put_response(&rsp).unwrap();
        self.rx.push_responses().unwrap();
        self.port.notify().unwrap();
    }

    /// Waits for the device to break and returns the reason the queue gave.
    fn broken_reason(mut self) -> String {
        let front = self.front.take().unwrap();
        wait("the device to break", || front.broken().is_some());
        write_state(&self.xs, &self.backend_dir, XenbusState::Closed).unwrap();
        match front.close() {
            Err(FrontendError::Broken(why)) => why,
            other => panic!("expected a broken device, got {other:?}"),
        }
    }
}

fn staged(len: u16) -> NetifRxResponse {
    NetifRxResponse {
        id: 0,
        offset: len,
        flags: RxFlags::STAGED.bits(),
        status: 0,
    }
}

#[test]
fn staged_rx_bytes_never_written_to_the_ring_break_the_device() {
    let mut e = EvilBack::connect(Design::Ring {
        order: 2,
        policy: CopyPolicy::Greedy,
    });
    e.rx_response(staged(100));
    let why = e.broken_reason();
    assert!(
        why.contains("RX data ring") && why.contains("100 were required"),
        "{why}"
    );
}

#[test]
fn an_overrunning_rx_data_ring_breaks_the_device() {
    let mut e = EvilBack::connect(Design::Ring {
        order: 2,
        policy: CopyPolicy::Greedy,
    });
    let intf = e.intf.clone().unwrap();
    // in_prod more than the 8 KiB direction ahead of the frontend's consumer.
    intf.word(IN_PROD_OFFSET)
        .unwrap()
        .store(flex::flex_ring_size(2) as u32 + 5, Ordering::Release)
        .unwrap();
    e.rx_response(staged(64));
    let why = e.broken_reason();
    assert!(why.contains("impossible data-ring index"), "{why}");
}

#[test]
fn staged_rx_bytes_past_the_slot_break_the_device() {
    let mut e = EvilBack::connect(Design::Slots { data_len: 256 });
    e.rx_response(staged(5000));
    let why = e.broken_reason();
    assert!(
        why.contains("RX slot") && why.contains("outside a 256-byte slot"),
        "{why}"
    );
}

#[test]
fn staged_rx_bytes_without_a_design_break_the_device() {
    let mut e = EvilBack::connect(Design::GrantCopy);
    e.rx_response(staged(60));
    let why = e.broken_reason();
    assert!(why.contains("never negotiated"), "{why}");
}

#[test]
fn a_tx_response_for_an_id_not_in_flight_breaks_the_device() {
    let e = EvilBack::connect(Design::GrantCopy);
    // Nothing was sent, yet a response arrives: the ring itself refuses it.
    let rsp = NetifTxResponse { id: 3, status: 0 };
    let mem = e.tx.shared().clone();
    mem.write_obj(64, &rsp).unwrap();
    mem.word(8).unwrap().store(1, Ordering::Release).unwrap(); // rsp_prod
    e.port.notify().unwrap();
    let why = e.broken_reason();
    assert!(why.contains("impossible response producer"), "{why}");
}
