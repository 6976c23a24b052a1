//! The embedded xenstored against the XenStore advisories of C xenstored that apply to it:
//! each test is what a guest did to trigger the advisory, from the guest's own socket.

mod xenstore_common;

use std::io::Write;
use std::time::Duration;

use netstage_platform::sim::xenstored::wire::MsgType;
use netstage_platform::sim::xenstored::Quotas;
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};
use xenstore_common::{daemon, daemon_with, err, guest, Raw};

/// XSA-421 (CVE-2022-42325/42326): a node made and removed again inside one transaction
/// left C xenstored's node count wrong after the commit, so a guest could make any number
/// of nodes. Here, after 50 such transactions, the guest still makes exactly its `nodes`
/// quota and no more.
#[test]
fn nodes_made_and_removed_in_a_transaction_keep_the_nodes_quota() {
    let (_t, d) = daemon_with(Quotas {
        nodes: 20,
        ..Quotas::default()
    });
    let g = XsClient::connect(&guest(&d, 5)).unwrap();
    for i in 0..50 {
        let node = format!("tmp{i}");
        g.transaction(1, |tx| {
            g.write(tx, &node, b"v")?;
            g.rm(tx, &node)
        })
        .unwrap();
    }
    let made = (0..40)
        .take_while(|i| g.write(NO_TX, &format!("n{i}"), b"v").is_ok())
        .count();
    assert!(made <= 20, "the guest made {made} nodes with a quota of 20");
    assert!(
        made >= 15,
        "the guest made only {made} nodes with a quota of 20"
    );
}

/// XSA-323 (CVE-2020-29482): oxenstored limited a path's length in the form the client
/// sent it, so a guest could make nodes under a relative path too long for the toolstack
/// to reach by the absolute one. Here the guest's limit (`path-max`) is on the path below
/// its domain's directory, and the absolute limit leaves room for the longest such path:
/// the longest node a guest can make is reached by dom0's absolute path.
#[test]
fn the_longest_path_a_guest_can_make_is_reachable_by_its_absolute_path() {
    let (_t, d) = daemon();
    let mut g = Raw::connect(&guest(&d, 5));
    // 2,048 bytes below /local/domain/5 in components of 63 bytes (node-size bounds a
    // parent's list of children).
    let rel = format!("{}c", vec!["c".repeat(63); 32].join("/"));
    assert_eq!(rel.len(), 2048);
    assert_eq!(g.write(&rel, b"deep").0, MsgType::Write as u32);
    assert_eq!(g.write(&format!("{rel}x"), b"v"), err("EINVAL"));
    let c0 = XsClient::connect(d.socket()).unwrap();
    assert_eq!(
        c0.read(NO_TX, &format!("/local/domain/5/{rel}")).unwrap(),
        b"deep"
    );
}

/// XSA-325 (CVE-2020-29483): a guest that broke the wire protocol was dropped as if it had
/// been destroyed, firing `@releaseDomain` while it still ran. Here only that connection
/// closes: no `@releaseDomain`, and the guest's other connections and its socket go on.
#[test]
fn a_guest_breaking_the_protocol_loses_its_connection_not_its_domain() {
    let (_t, d) = daemon();
    let g = guest(&d, 5);
    let c0 = XsClient::connect(d.socket()).unwrap();
    let released = c0.watch("@releaseDomain", "rel").unwrap();
    // The first event every new watch gets.
    let _ = released.next(Duration::from_secs(2));
    let other = XsClient::connect(&g).unwrap();
    let mut bad = Raw::connect(&g);
    // A header announcing more than the 4,096-byte payload limit.
    let mut header = Vec::new();
    for w in [MsgType::Write as u32, 1, 0, 10_000] {
        header.extend_from_slice(&w.to_le_bytes());
    }
    bad.0.write_all(&header).unwrap();
    assert!(
        bad.closed(),
        "the connection that broke the protocol stays open"
    );
    assert!(
        !matches!(released.next(Duration::from_millis(500)), Ok(Some(_))),
        "@releaseDomain fired for a domain that still runs"
    );
    other.write(NO_TX, "still", b"here").unwrap();
    let fresh = XsClient::connect(&g).unwrap();
    assert_eq!(fresh.read(NO_TX, "still").unwrap(), b"here");
}

/// XSA-322 (CVE-2020-29481) and XSA-419 (CVE-2022-42322/42323): a released domain's nodes
/// outlived it, so a new domain given the same id inherited them, their ownership and the
/// old one's entries in others' permissions, and nodes it made outside its own directory
/// stayed, counted by nobody. Here releasing it removes what it owned and drops it from
/// every permission list: the new domain with the same id reads none of it, and its own
/// node quota starts from nothing.
#[test]
fn a_released_domain_leaves_nothing_to_a_new_domain_with_its_id() {
    let (_t, d) = daemon_with(Quotas {
        nodes: 10,
        ..Quotas::default()
    });
    let c0 = XsClient::connect(d.socket()).unwrap();
    // dom0 lets domain 5 write a shared directory; domain 5 makes nodes there and at home.
    c0.write(NO_TX, "/shared", b"").unwrap();
    c0.set_perms(NO_TX, "/shared", &["n0", "b5"]).unwrap();
    let old = XsClient::connect(&guest(&d, 5)).unwrap();
    old.write(NO_TX, "secret", b"old guest's").unwrap();
    for i in 0..4 {
        old.write(NO_TX, &format!("/shared/n{i}"), b"v").unwrap();
    }
    drop(old);
    d.release(5);
    // What it owned is gone, in its directory and outside it; dom0's node lost its entry.
    assert!(c0.read(NO_TX, "/local/domain/5/secret").is_err());
    assert!(c0.directory(NO_TX, "/shared").unwrap().is_empty());
    assert_eq!(c0.get_perms(NO_TX, "/shared").unwrap(), ["n0"]);
    // A new domain 5 can neither read the old one's nodes nor write where it was let in.
    let new = XsClient::connect(&guest(&d, 5)).unwrap();
    assert!(new.read(NO_TX, "secret").is_err());
    assert!(new.write(NO_TX, "/shared/mine", b"v").is_err());
    // Its node quota counts only its own: its home directory and 9 more.
    let made = (0..20)
        .take_while(|i| new.write(NO_TX, &format!("n{i}"), b"v").is_ok())
        .count();
    assert!(made >= 8, "the new domain made only {made} nodes");
}
