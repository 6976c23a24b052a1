//! A backend by hand: the world, XenStore and vif a test's hand-written backend serves,
//! offering every design, and the frontend's keys it reads.

#![allow(dead_code)]

use std::thread;
use std::time::{Duration, Instant};

use netstage_netback_user::toolstack;
use netstage_netfront_user::{Design, Features, FrontendConfig};
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::sim::{DomainConfig, SimDomain, SimWorld};
use netstage_platform::xenbus::{read_state, write_state, VifPaths, XenbusState};
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};

/// The frontend's domain.
pub(crate) const FE: u16 = 5;

/// Polls `f` until it holds (20 s at most).
pub(crate) fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A world with dom0 (the backend by hand) and the frontend's domain, and a vif whose
/// backend offers everything and waits in InitWait.
pub(crate) struct Stage {
    pub(crate) world: SimWorld,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) xsd: Xenstored,
    pub(crate) xs: XsClient,
    pub(crate) dom0: SimDomain,
    pub(crate) paths: VifPaths,
}

impl Stage {
    /// Sets the stage; returns it with the frontend's domain.
    pub(crate) fn new() -> (Stage, SimDomain) {
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
        let paths = toolstack::create_vif(&xs, 0, FE, 0).unwrap();
        for (k, v) in [
            ("feature-rx-copy", "1"),
            ("feature-sg", "1"),
            ("feature-staging-slots", "1"),
            ("staging-max-data-len", "4096"),
            ("feature-data-ring", "1"),
            ("data-ring-max-order", "4"),
        ] {
            xs.write(NO_TX, &format!("{}/{k}", paths.backend), v.as_bytes())
                .unwrap();
        }
        write_state(&xs, &paths.backend, XenbusState::InitWait).unwrap();
        let stage = Stage {
            world,
            dir,
            xsd,
            xs,
            dom0,
            paths,
        };
        (stage, me)
    }

    /// The frontend domain's own XenStore connection.
    pub(crate) fn front_xs(&self) -> XsClient {
        XsClient::connect(&self.xsd.domain_socket(FE)).unwrap()
    }

    /// A frontend configuration for `design` with scatter-gather only.
    pub(crate) fn config(design: Design) -> FrontendConfig {
        FrontendConfig {
            design,
            want: Features {
                sg: true,
                ..Features::NONE
            },
            ..FrontendConfig::default()
        }
    }

    /// Waits for the frontend to say it is connected.
    pub(crate) fn await_front(&self) {
        wait("frontend Connected", || {
            read_state(&self.xs, &self.paths.frontend) == XenbusState::Connected
        });
    }

    /// A number the frontend wrote under its directory.
    pub(crate) fn key(&self, k: &str) -> u32 {
        let path = format!("{}/{k}", self.paths.frontend);
        String::from_utf8(self.xs.read(NO_TX, &path).unwrap())
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The backend says it is connected.
    pub(crate) fn connect_back(&self) {
        write_state(&self.xs, &self.paths.backend, XenbusState::Connected).unwrap();
    }
}
