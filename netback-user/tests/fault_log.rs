//! A frontend's faults reach the log as warnings naming its domain, the vif and the
//! reason, and no faster than the limit (10 per 5 s per vif, then a line saying how many
//! were held back): a frontend that is refused over and over cannot flood the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use netstage_fallback::log_limit::{LOG_BURST, LOG_PERIOD};
use netstage_fallback::Packet;
use netstage_netback_user::{toolstack, Backend, BackendConfig, VifHandler};
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::sim::{DomainConfig, SimWorld};
use netstage_platform::xenbus::{read_state, write_state, XenbusState};
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};

const FE: u16 = 5;

/// Keeps every record of this process: (level, message).
struct Capture(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        if let Ok(mut v) = self.0.lock() {
            v.push((r.level(), r.args().to_string()));
        }
    }
    fn flush(&self) {}
}

static LOGS: Capture = Capture(Mutex::new(Vec::new()));

/// The warnings logged so far.
fn warnings() -> Vec<String> {
    LOGS.0
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, _)| *l == log::Level::Warn)
        .map(|(_, m)| m.clone())
        .collect()
}

struct Quiet;
impl VifHandler for Quiet {
    fn tx_packet(&self, _q: u16, _p: Packet) {}
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// One attempt the backend refuses: Connected with more queues than offered; then Closed
/// and Initialising, for the next.
fn refused_attempt(xs: &XsClient, fdir: &str, bdir: &str) {
    write_state(xs, fdir, XenbusState::Connected).unwrap();
    wait("backend refuses", || {
        read_state(xs, bdir) == XenbusState::Closing
    });
    write_state(xs, fdir, XenbusState::Closed).unwrap();
    wait("backend Closed", || {
        read_state(xs, bdir) == XenbusState::Closed
    });
    write_state(xs, fdir, XenbusState::Initialising).unwrap();
    wait("backend InitWait", || {
        read_state(xs, bdir) == XenbusState::InitWait
    });
}

#[test]
fn a_frontend_refused_again_and_again_is_logged_at_the_limit() {
    log::set_logger(&LOGS).unwrap();
    log::set_max_level(log::LevelFilter::Debug);

    let world = SimWorld::create_temp().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let xsd = Xenstored::start(XenstoredConfig::in_dir(dir.path())).unwrap();
    let dom0 = world.create_domain(0, DomainConfig::default()).unwrap();
    let _me = world.create_domain(FE, DomainConfig::default()).unwrap();
    xsd.introduce(FE).unwrap();
    let xs0 = XsClient::connect(xsd.socket()).unwrap();
    let p = toolstack::create_vif(&xs0, 0, FE, 0).unwrap();
    let backend = Arc::new(Backend::new(dom0, xs0, BackendConfig::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (b2, s2) = (Arc::clone(&backend), Arc::clone(&stop));
    let served = thread::spawn(move || b2.serve(FE, 0, Arc::new(Quiet), &s2));

    let xs = XsClient::connect(&xsd.domain_socket(FE)).unwrap();
    wait("backend InitWait", || {
        read_state(&xs, &p.backend) == XenbusState::InitWait
    });
    let f = &p.frontend;
    xs.write(NO_TX, &format!("{f}/request-rx-copy"), b"1")
        .unwrap();
    xs.write(NO_TX, &format!("{f}/multi-queue-num-queues"), b"99")
        .unwrap();

    let start = Instant::now();
    let attempts = 3 * LOG_BURST as usize;
    for _ in 0..attempts {
        refused_attempt(&xs, f, &p.backend);
    }
    assert!(
        start.elapsed() < LOG_PERIOD,
        "the attempts took longer than the limit's period: the test says nothing"
    );
    let refused: Vec<String> = warnings()
        .into_iter()
        .filter(|m| m.contains("refused frontend"))
        .collect();
    assert_eq!(refused.len(), LOG_BURST as usize, "{refused:#?}");
    for m in &refused {
        assert!(
            m.contains(&format!("vif {FE}:0")) && m.contains(&format!("domain {FE}")),
            "{m}"
        );
        assert!(m.contains("asks for 99 queues"), "{m}");
    }

    // After the period, the next fault is logged, after a line counting those held back.
    thread::sleep(LOG_PERIOD.saturating_sub(start.elapsed()) + Duration::from_millis(100));
    refused_attempt(&xs, f, &p.backend);
    let w = warnings();
    let held = attempts - LOG_BURST as usize;
    let at = w
        .iter()
        .position(|m| m == &format!("{held} warnings suppressed"))
        .unwrap_or_else(|| panic!("no count of the {held} held back: {w:#?}"));
    assert!(w[at + 1].contains("refused frontend"), "{w:#?}");

    stop.store(true, Ordering::SeqCst);
    served.join().unwrap().unwrap();
    // Every attempt is still counted: the limit is on the log, not on the accounting.
    assert_eq!(backend.metrics().connects, 0);
    // Handshake steps are logged at debug.
    let debug = LOGS.0.lock().unwrap();
    assert!(
        debug
            .iter()
            .any(|(l, m)| *l == log::Level::Debug && m.contains("InitWait")),
        "no handshake step at debug"
    );
}
