//! The backend and the toolstack's vif directory, as on real Xen: a backend started before
//! the toolstack (what an init script does) must not make the backend directory itself
//! (libxl replaces what it finds and then waits 10 s for an answer in its own); it waits for
//! the directory, answers each new one, answers the toolstack's Closing with Closed, and
//! never re-creates a directory the toolstack removed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use netstage_fallback::Packet;
use netstage_netback_user::{toolstack, Backend, BackendConfig, VifHandler};
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::sim::{DomainConfig, SimWorld};
use netstage_platform::xenbus::{read_state, write_state, VifPaths, XenbusState};
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};

const FE: u16 = 4;

struct Nothing;
impl VifHandler for Nothing {
    fn tx_packet(&self, _q: u16, _pkt: Packet) {}
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_backend_waits_for_the_toolstack_s_directory_and_answers_each_new_one() {
    let world = SimWorld::create_temp().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let xsd = Xenstored::start(XenstoredConfig::in_dir(dir.path())).unwrap();
    let dom0 = world.create_domain(0, DomainConfig::default()).unwrap();
    let xs = XsClient::connect(xsd.socket()).unwrap();
    let backend = Backend::new(dom0, xs.clone(), BackendConfig::default());
    let stop = Arc::new(AtomicBool::new(false));
    let st2 = Arc::clone(&stop);
    let served = thread::spawn(move || backend.serve(FE, 0, Arc::new(Nothing), &st2));
    let p = VifPaths::new(0, FE, 0);
    let exists = |path: &str| xs.read(NO_TX, path).is_ok() || xs.directory(NO_TX, path).is_ok();

    // Started first: it writes nothing while there is no directory.
    thread::sleep(Duration::from_millis(400));
    assert!(!exists(&p.backend), "the backend made its own directory");

    // The toolstack creates the vif (state Initialising): the backend answers InitWait
    // with its features, in the toolstack's directory.
    toolstack::create_vif(&xs, 0, FE, 0).unwrap();
    wait("InitWait in the toolstack's directory", || {
        read_state(&xs, &p.backend) == XenbusState::InitWait
    });
    let key = format!("{}/feature-rx-copy", p.backend);
    assert_eq!(xs.read(NO_TX, &key).unwrap(), b"1");
    assert_eq!(
        xs.read(NO_TX, &format!("{}/type", p.backend)).unwrap(),
        b"vif"
    );

    // The toolstack takes it down: Closing is answered with Closed.
    write_state(&xs, &p.backend, XenbusState::Closing).unwrap();
    wait("Closed", || {
        read_state(&xs, &p.backend) == XenbusState::Closed
    });

    // It removes both directories: they stay gone.
    toolstack::destroy_vif(&xs, &p).unwrap();
    thread::sleep(Duration::from_millis(400));
    assert!(
        !exists(&p.backend),
        "the backend re-created a removed directory"
    );

    // A new guest under the same id: the new directory is answered too.
    toolstack::create_vif(&xs, 0, FE, 0).unwrap();
    wait("InitWait for the new directory", || {
        read_state(&xs, &p.backend) == XenbusState::InitWait
    });

    // The toolstack replaces a directory in place (libxl removes and re-creates it with
    // state Initialising): answered again.
    toolstack::create_vif(&xs, 0, FE, 0).unwrap();
    wait("InitWait for the replaced directory", || {
        read_state(&xs, &p.backend) == XenbusState::InitWait
    });

    stop.store(true, Ordering::SeqCst);
    served.join().unwrap().unwrap();
}
