//! The backend's handshake clock: a frontend that starts the handshake and stalls is given
//! up on (counted, an error node, Closed) while a frontend that never appears is left
//! waiting, other vifs are served meanwhile, and a later fresh attempt connects.

mod peers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use netstage_fallback::Packet;
use netstage_netback_user::{Backend, BackendConfig, HandshakeFailure};
use netstage_netfront_user::{Frontend, FrontendConfig, FrontendHandler};
use netstage_platform::sim::SimDomain;
use netstage_platform::xenbus::{read_state, write_state, VifPaths, XenbusState};
use netstage_platform::xenstore::{XenStore, NO_TX};
use peers::{shared, until, Echo, Received, Site};

/// Starts the handshake (one key of its own) and stops.
const STALLS: u16 = 3;
/// Has a vif but never runs.
const ABSENT: u16 = 4;
/// A well-behaved guest on another vif.
const WELL: u16 = 5;

const LIMIT: Duration = Duration::from_millis(400);
const WAIT: Duration = Duration::from_secs(10);

/// Connects a real frontend for `dom`, sends 50 packets and waits for their echoes.
fn exchange(site: &Site, dom: &SimDomain) {
    let got = shared::<Received>();
    let f = Frontend::connect(
        dom.clone(),
        site.guest_xs(dom.id()),
        0,
        FrontendConfig::default(),
        Arc::clone(&got) as Arc<dyn FrontendHandler>,
    )
    .unwrap();
    for _ in 0..50 {
        f.send(0, Packet::new(bytes::Bytes::from(vec![7u8; 300])))
            .unwrap();
    }
    until("50 echoes", WAIT, || got.count() == 50);
    f.close().unwrap();
}

#[test]
fn a_frontend_that_starts_the_handshake_and_stops_is_given_up_on() {
    let site = Site::new();
    let dom0 = site.domain(0);
    let stalls = site.domain(STALLS);
    let well = site.domain(WELL);
    let paths: Vec<VifPaths> = [STALLS, ABSENT, WELL].map(|fe| site.vif(fe)).into();
    let cfg = BackendConfig {
        handshake_timeout: LIMIT,
        ..BackendConfig::default()
    };
    let backend = Arc::new(Backend::new(dom0, site.xs0.clone(), cfg));
    let stop = Arc::new(AtomicBool::new(false));
    let echo = shared::<Echo>();
    let servers: Vec<_> = [STALLS, ABSENT, WELL]
        .into_iter()
        .map(|fe| {
            let (b, s, h) = (Arc::clone(&backend), Arc::clone(&stop), Arc::clone(&echo));
            thread::spawn(move || b.serve(fe, 0, h, &s).unwrap())
        })
        .collect();
    let state = |p: &VifPaths| read_state(&site.xs0, &p.backend);
    for p in &paths {
        until("InitWait", WAIT, || state(p) == XenbusState::InitWait);
    }
    // The stalling guest writes its first key and nothing more.
    let xs3 = site.guest_xs(STALLS);
    xs3.write(NO_TX, &format!("{}/tx-ring-ref", paths[0].frontend), b"8")
        .unwrap();
    let first_step = Instant::now();
    until("the stalled vif given up", WAIT, || {
        state(&paths[0]) == XenbusState::Closed
    });
    assert!(first_step.elapsed() >= LIMIT, "gave up before the limit");
    let error = site.read(&format!("{}/error", paths[0].backend)).unwrap();
    assert!(error.contains("stalled"), "{error}");
    assert_eq!(backend.metrics().handshake_timeouts, 1);
    assert_eq!(
        echo.failures.lock().unwrap()[..],
        [HandshakeFailure::Timeout {
            limit: LIMIT,
            state: XenbusState::Initialising
        }]
    );
    // Other vifs are served meanwhile.
    exchange(&site, &well);
    // Given up stays given up (no new clock on the same stalled attempt) ...
    thread::sleep(LIMIT * 2);
    assert_eq!(state(&paths[0]), XenbusState::Closed);
    assert_eq!(backend.metrics().handshake_timeouts, 1);
    // ... and a frontend that never appeared is never failed.
    assert_eq!(state(&paths[1]), XenbusState::InitWait);
    assert_eq!(site.read(&format!("{}/error", paths[1].backend)), None);
    // A fresh attempt by the stalled guest connects.
    exchange(&site, &stalls);
    assert_eq!(backend.metrics().connects, 2);
    assert_eq!(backend.metrics().handshake_timeouts, 1);
    // A stall in a later state is timed out as well.
    write_state(&xs3, &paths[0].frontend, XenbusState::Initialising).unwrap();
    until("InitWait again", WAIT, || {
        state(&paths[0]) == XenbusState::InitWait
    });
    write_state(&xs3, &paths[0].frontend, XenbusState::Initialised).unwrap();
    until("the second stall given up", WAIT, || {
        backend.metrics().handshake_timeouts == 2
    });
    stop.store(true, Ordering::Release);
    for s in servers {
        s.join().unwrap();
    }
}
