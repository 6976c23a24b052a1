//! `platform::xen` where there is no hypervisor: opening it says what is missing; what it
//! reads from XenStore (domain liveness and instances) works against any xenstored.

use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::xen::{domain_instance_in, XenDomain, DEVICES};
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};

fn xenstored() -> (tempfile::TempDir, Xenstored, XsClient) {
    let dir = tempfile::tempdir().unwrap();
    let d = Xenstored::start(XenstoredConfig::in_dir(&dir.path().join("xs"))).unwrap();
    let xs = XsClient::connect(d.socket()).unwrap();
    (dir, d, xs)
}

#[test]
fn opening_real_xen_says_what_it_needs() {
    let (_dir, _d, xs) = xenstored();
    let present = DEVICES.iter().all(|p| std::path::Path::new(p).exists());
    match XenDomain::open(0, xs) {
        Ok(_) => assert!(present, "opened without the devices"),
        Err(e) => {
            assert!(!present, "the devices are there, yet: {e}");
            let m = e.to_string();
            assert!(
                m.contains("/dev/xen/") && m.contains("xen-gntalloc") && m.contains("sim"),
                "{m}"
            );
        }
    }
}

#[test]
fn a_domain_lives_while_its_directory_does_and_each_instance_differs() {
    let (_dir, _d, xs) = xenstored();
    assert_eq!(domain_instance_in(&xs, 7), None);
    xs.write(NO_TX, "/local/domain/7/vm", b"/vm/aaaa-1")
        .unwrap();
    let first = domain_instance_in(&xs, 7).expect("running");
    assert_eq!(domain_instance_in(&xs, 7), Some(first), "stable");
    // Destroyed, then created again under the same id with a new vm path.
    xs.rm(NO_TX, "/local/domain/7").unwrap();
    assert_eq!(domain_instance_in(&xs, 7), None);
    xs.write(NO_TX, "/local/domain/7/vm", b"/vm/bbbb-2")
        .unwrap();
    let second = domain_instance_in(&xs, 7).expect("running again");
    assert_ne!(first, second);
}
