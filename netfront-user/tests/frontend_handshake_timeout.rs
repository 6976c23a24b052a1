//! The frontend's handshake clock (`FrontendConfig::handshake_timeout`): a backend that
//! never answers the handshake, at its first step or at its last, makes
//! `Frontend::connect` fail once the timeout has passed, with an error naming it, instead
//! of waiting for ever.

mod peers;

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use netstage_fallback::Features;
use netstage_netfront_user::{Frontend, FrontendConfig, FrontendError, FrontendHandler};
use netstage_platform::xenbus::{read_state, write_state, XenbusState};
use netstage_platform::xenstore::{XenStore, NO_TX};
use peers::{shared, until, Received, Site};

const GUEST: u16 = 5;
/// The frontend's handshake timeout in these tests.
const LIMIT: Duration = Duration::from_millis(300);
/// How long a test waits for `connect` to return before calling it a hang: far below the
/// default timeout (30 s), so only the configured one can make it return in time.
const HANG: Duration = Duration::from_secs(10);

/// Runs `Frontend::connect` for the guest's vif 0 with [`LIMIT`] on a thread of its own;
/// returns its error and how long it took, or fails the test if it is still waiting
/// after [`HANG`].
fn connect_fails(site: &Site) -> (String, Duration) {
    let guest = site.domain(GUEST);
    let xs = site.guest_xs(GUEST);
    let (done, result) = mpsc::channel();
    thread::spawn(move || {
        let cfg = FrontendConfig {
            want: Features::NONE,
            handshake_timeout: LIMIT,
            ..FrontendConfig::default()
        };
        let t = Instant::now();
        let r = Frontend::connect(
            guest,
            xs,
            0,
            cfg,
            shared::<Received>() as Arc<dyn FrontendHandler>,
        );
        let _ = done.send((r.err(), t.elapsed()));
    });
    match result.recv_timeout(HANG) {
        Ok((Some(FrontendError::Handshake(why)), took)) => (why, took),
        Ok((other, _)) => panic!("not a handshake timeout: {other:?}"),
        Err(_) => panic!("Frontend::connect still waiting after {HANG:?}"),
    }
}

/// No backend serves the vif: only the toolstack's directories exist, and the backend's
/// domain runs. The frontend waits for InitWait for the timeout, then fails naming it and
/// the node it waited on.
#[test]
fn connect_fails_after_the_handshake_timeout_when_no_backend_answers() {
    let site = Site::new();
    let _backend_domain = site.domain(0);
    let paths = site.vif(GUEST);
    let (why, took) = connect_fails(&site);
    assert!(took >= LIMIT, "gave up after {took:?}, before the timeout");
    assert!(why.contains(&format!("timed out after {LIMIT:?}")), "{why}");
    assert!(why.contains(&format!("{}/state", paths.backend)), "{why}");
    assert!(why.contains("Initialising"), "{why}");
}

/// A backend that offers the vif (InitWait) but never connects: the frontend announces
/// its rings, waits for Connected for the timeout, then fails naming it and closes.
#[test]
fn connect_fails_after_the_handshake_timeout_when_the_backend_never_connects() {
    let site = Site::new();
    let _backend_domain = site.domain(0);
    let paths = site.vif(GUEST);
    site.xs0
        .write(NO_TX, &format!("{}/feature-rx-copy", paths.backend), b"1")
        .unwrap();
    write_state(&site.xs0, &paths.backend, XenbusState::InitWait).unwrap();
    let (why, took) = connect_fails(&site);
    assert!(took >= LIMIT, "gave up after {took:?}, before the timeout");
    assert!(why.contains(&format!("timed out after {LIMIT:?}")), "{why}");
    assert!(why.contains("InitWait"), "{why}");
    // It got as far as announcing its rings, and closed when it gave up.
    assert!(site
        .read(&format!("{}/tx-ring-ref", paths.frontend))
        .is_some());
    until("the frontend Closed", HANG, || {
        read_state(&site.xs0, &paths.frontend) == XenbusState::Closed
    });
}
