//! Domain liveness as a guest sees it on real Xen: a guest may not read dom0's directory
//! (`n0`), and xenstored's `EACCES` for it means dom0 exists, not that it died.

use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::xen::{domain_instance_in, UNREADABLE_INSTANCE};
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};

#[test]
fn a_guest_that_may_not_read_dom0_still_sees_it_running() {
    let dir = tempfile::tempdir().unwrap();
    let d = Xenstored::start(XenstoredConfig::in_dir(&dir.path().join("xs"))).unwrap();
    let dom0 = XsClient::connect(d.socket()).unwrap();
    // What xen-init-dom0 and libxl leave: dom0's directory owned by dom0, no access for
    // others; the guest's own directory owned by the guest.
    dom0.write(NO_TX, "/local/domain/0/name", b"Domain-0")
        .unwrap();
    dom0.set_perms(NO_TX, "/local/domain/0", &["n0"]).unwrap();
    let sock = d.introduce(5).unwrap();
    dom0.write(NO_TX, "/local/domain/5/vm", b"/vm/5").unwrap();
    dom0.set_perms(NO_TX, "/local/domain/5", &["n5", "r0"])
        .unwrap();
    let guest = XsClient::connect(&sock).unwrap();

    let denied = guest.directory(NO_TX, "/local/domain/0").unwrap_err();
    assert!(denied.to_string().contains("EACCES"), "{denied}");
    assert_eq!(domain_instance_in(&guest, 0), Some(UNREADABLE_INSTANCE));
    // Stable while dom0 runs, so a connection to it is not taken for a new instance.
    assert_eq!(domain_instance_in(&guest, 0), Some(UNREADABLE_INSTANCE));
    // A domain that does not exist is still gone, and its own directory still readable.
    assert_eq!(domain_instance_in(&guest, 9), None);
    let own = domain_instance_in(&guest, 5).expect("the guest itself runs");
    assert_ne!(own, UNREADABLE_INSTANCE);
}
