//! A peer's domain dies (its process is killed): the survivor lets go of everything it held
//! of it by itself, as Xen does for a dead domain, without the application calling
//! `forget_domain`. The dead side runs in a helper process (this test binary run again).

mod peers;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use netstage_fallback::Packet;
use netstage_netback_user::{Backend, BackendConfig, HandshakeFailure, TxPath};
use netstage_netfront_user::{Frontend, FrontendConfig, FrontendHandler};
use netstage_platform::xenbus::{read_state, write_state, VifPaths, XenbusState};
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};
use netstage_platform::{EventChannels, EventPort, GrantExport};
use peers::{guest_config, helper_world, maps_of, shared, until, Echo, Received, Site};

const FE: u16 = 9;
const WAIT: Duration = Duration::from_secs(20);
/// The XenStore socket a helper connects to.
const XS_ENV: &str = "NETSTAGE_TEST_XS";
/// What a frontend helper does.
const MODE_ENV: &str = "NETSTAGE_TEST_MODE";

fn env(name: &str) -> String {
    std::env::var(name).expect("set by the parent test")
}

/// Waits for the helper's "ready" line.
fn ready(child: &mut Child) {
    let out = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(out).lines();
    while let Some(Ok(l)) = lines.next() {
        if l.contains("helper ready") {
            // Keep the pipe drained so that the helper never blocks on it.
            thread::spawn(move || lines.for_each(drop));
            return;
        }
    }
    panic!("the helper exited before it was ready");
}

fn kill(mut child: Child) {
    child.kill().expect("kill -9");
    child.wait().expect("reap");
}

/// Sends `n` packets and waits for their echoes.
fn exchange<P: netstage_netfront_user::FrontendPlatform>(f: &Frontend<P>, got: &Received, n: u64) {
    let before = got.count();
    for _ in 0..n {
        f.send(0, Packet::new(bytes::Bytes::from(vec![3u8; 1500])))
            .unwrap();
    }
    until("the echoes", WAIT, || got.count() == before + n);
}

/// A backend process for `a_dead_backend_s_pins_are_released_by_the_frontend_itself`.
#[test]
#[ignore = "helper: a backend process that a test kills"]
fn helper_backend() {
    let world = helper_world();
    let dom0 = world.create_domain(0, guest_config()).unwrap();
    let xs = XsClient::connect(Path::new(&env(XS_ENV))).unwrap();
    let backend = Backend::new(dom0, xs, BackendConfig::default());
    println!("helper ready");
    backend
        .serve(FE, 0, shared::<Echo>(), &AtomicBool::new(false))
        .unwrap();
}

/// The backend maps the frontend's rings and staging memory for as long as it is
/// connected; when its process dies, the pins it held on the frontend's grants are released
/// by the frontend library (as Xen does when a domain dies), so the frontend revokes every
/// page it shared.
#[test]
fn a_dead_backend_s_pins_are_released_by_the_frontend_itself() {
    let site = Site::new();
    let front = site.domain(FE);
    site.vif(FE);
    let mut back = site.helper(
        "helper_backend",
        &[(XS_ENV, site.xsd.socket().display().to_string())],
    );
    ready(&mut back);
    let got = shared::<Received>();
    let cfg = FrontendConfig {
        design: "slots:256".parse().unwrap(),
        ..FrontendConfig::default()
    };
    let f = Frontend::connect(
        front.clone(),
        site.guest_xs(FE),
        0,
        cfg,
        Arc::clone(&got) as Arc<dyn FrontendHandler>,
    )
    .unwrap();
    exchange(&f, &got, 20);
    let pins = front.grant_pins().unwrap();
    assert!(
        pins.iter().any(|p| p.grantee == 0 && p.readers > 0),
        "the backend maps our rings: {pins:?}"
    );
    kill(back);
    until("the frontend sees the backend die", WAIT, || {
        f.broken().is_some()
    });
    assert!(f.broken().unwrap().contains("backend domain 0 died"));
    drop(f);
    assert_eq!(front.grant_pins().unwrap(), vec![]);
    assert_eq!(front.counters().granted_pages, 0, "every page revoked");
}

/// A frontend process for `a_dead_frontend_is_forgotten_by_the_backend_itself`: connects
/// and exchanges packets (`connect`), or announces rings with an event channel that does
/// not exist, so that the backend maps the rings and then refuses (`refuse`); then waits
/// to be killed.
#[test]
#[ignore = "helper: a frontend process that a test kills"]
fn helper_frontend() {
    let world = helper_world();
    let me = world.create_domain(FE, guest_config()).unwrap();
    let xs = XsClient::connect(Path::new(&env(XS_ENV))).unwrap();
    let _keep = if env(MODE_ENV) == "connect" {
        let got = shared::<Received>();
        let f = Frontend::connect(
            me,
            xs,
            0,
            FrontendConfig::default(),
            Arc::clone(&got) as Arc<dyn FrontendHandler>,
        )
        .unwrap();
        exchange(&f, &got, 20);
        (Some(f), Vec::new())
    } else {
        let dir = format!("/local/domain/{FE}/device/vif/0");
        let rings = [me.share(0, 1, true).unwrap(), me.share(0, 1, true).unwrap()];
        let port = me.alloc_unbound(0).unwrap();
        for (k, v) in [
            ("tx-ring-ref", rings[0].grefs[0].to_string()),
            ("rx-ring-ref", rings[1].grefs[0].to_string()),
            ("event-channel", (port.port() + 100).to_string()),
            ("request-rx-copy", "1".to_string()),
        ] {
            xs.write(NO_TX, &format!("{dir}/{k}"), v.as_bytes())
                .unwrap();
        }
        write_state(&xs, &dir, XenbusState::Connected).unwrap();
        (None, rings.into())
    };
    println!("helper ready");
    loop {
        thread::sleep(Duration::from_secs(1));
    }
}

/// A frontend domain dies while the backend maps its rings (connected), and again after
/// the backend mapped them and refused the handshake: each time the backend drops every
/// mapping of the dead domain's memory and tables by itself, and resets its directory.
#[test]
fn a_dead_frontend_is_forgotten_by_the_backend_itself() {
    let site = Site::new();
    let paths = site.vif(FE);
    let cfg = BackendConfig {
        tx_path: TxPath::GrantMap,
        ..BackendConfig::default()
    };
    let backend = Arc::new(Backend::new(site.domain(0), site.xs0.clone(), cfg));
    let (stop, echo) = (Arc::new(AtomicBool::new(false)), shared::<Echo>());
    let server = {
        let (b, s, h) = (Arc::clone(&backend), Arc::clone(&stop), Arc::clone(&echo));
        thread::spawn(move || b.serve(FE, 0, h, &s).unwrap())
    };
    let state = |p: &VifPaths| read_state(&site.xs0, &p.backend);
    for (mode, held) in [
        ("connect", XenbusState::Connected),
        ("refuse", XenbusState::Closing),
    ] {
        until("InitWait", WAIT, || state(&paths) == XenbusState::InitWait);
        let mut fe = site.helper(
            "helper_frontend",
            &[
                (XS_ENV, site.xsd.domain_socket(FE).display().to_string()),
                (MODE_ENV, mode.to_string()),
            ],
        );
        ready(&mut fe);
        until(mode, WAIT, || state(&paths) == held);
        assert!(
            !maps_of(&site.world, FE).is_empty(),
            "{mode}: the backend maps the guest"
        );
        kill(fe);
        site.assert_forgotten(&paths, mode);
    }
    assert_eq!(backend.metrics().connects, 1);
    assert!(matches!(
        echo.failures.lock().unwrap()[..],
        [HandshakeFailure::Refused(_)]
    ));
    stop.store(true, Ordering::Release);
    server.join().unwrap();
}
