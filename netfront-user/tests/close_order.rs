//! Closing a frontend lets go of its shared pages only after the backend has unmapped
//! them, so every page is revoked by `close()` itself, not left waiting for a later share.

mod peers;

use std::sync::Arc;
use std::time::Duration;

use netstage_fallback::Packet;
use netstage_netback_user::{BackendConfig, TxPath};
use netstage_netfront_user::{Frontend, FrontendConfig, FrontendHandler};
use netstage_platform::xenbus::{read_state, XenbusState};
use peers::{shared, until, Received, ServedVif};

const FE: u16 = 11;
const WAIT: Duration = Duration::from_secs(20);

/// With each design whose backend maps the frontend's pages for the whole connection
/// (rings, and the staging memory of slots and the data ring), `close()` returns with no
/// grant of the frontend's left to the backend: none pinned and none still granted.
#[test]
fn close_revokes_every_page_without_a_later_share() {
    for design in ["grant-copy", "slots:256", "ring:8:greedy"] {
        let cfg = BackendConfig {
            tx_path: TxPath::GrantMap,
            ..BackendConfig::default()
        };
        let served = ServedVif::start(FE, cfg, |_, _| {});
        let site = &served.site;
        let front = site.domain(FE);
        let got = shared::<Received>();
        let f = Frontend::connect(
            front.clone(),
            site.guest_xs(FE),
            0,
            FrontendConfig {
                design: design.parse().unwrap(),
                ..FrontendConfig::default()
            },
            Arc::clone(&got) as Arc<dyn FrontendHandler>,
        )
        .unwrap();
        for _ in 0..50 {
            f.send(0, Packet::new(bytes::Bytes::from(vec![5u8; 1500])))
                .unwrap();
        }
        until("the echoes", WAIT, || got.count() == 50);
        assert!(
            front.grant_pins().unwrap().iter().any(|p| p.grantee == 0),
            "{design}: the backend maps our rings"
        );
        f.close().unwrap();
        assert_eq!(front.grant_pins().unwrap(), vec![], "{design}: pins left");
        assert_eq!(
            front.counters().granted_pages,
            0,
            "{design}: pages still granted to the backend after close"
        );
        assert_eq!(
            read_state(&site.xs0, &served.paths.backend),
            XenbusState::Closed
        );
    }
}
