//! Transactions that copy nothing at start and touch only what they used at commit, with
//! C xenstored's conflict rule and `transaction-nodes` quota; watch events once per node
//! changed.

mod xenstore_common;

use std::time::{Duration, Instant};

use netstage_platform::sim::xenstored::wire::MsgType;
use netstage_platform::xenstore::{unique_token, XenStore, XsClient, NO_TX};
use xenstore_common::{daemon, err, guest, Raw};

fn tx_id(r: (u32, Vec<u8>)) -> u32 {
    assert_eq!(r.0, MsgType::TransactionStart as u32, "{r:?}");
    String::from_utf8(r.1)
        .unwrap()
        .trim_end_matches('\0')
        .parse()
        .unwrap()
}

/// Time of `n` small read-modify-write transactions on the daemon behind `c`.
fn time_transactions(c: &XsClient, n: u32) -> Duration {
    let t = Instant::now();
    for i in 0..n {
        c.transaction(3, |tx| {
            let _ = c.read(tx, "/counter");
            c.write(tx, "/counter", i.to_string().as_bytes())
        })
        .unwrap();
    }
    t.elapsed()
}

/// A transaction's cost does not grow with the store: 200 small transactions over a
/// 20,000-node store take about as long as over an empty one (when each start copied the
/// whole store and each commit replayed onto another copy, they took tens of times longer).
#[test]
fn transactions_cost_what_they_touch_not_the_store() {
    let (_t, d) = daemon();
    let c = XsClient::connect(d.socket()).unwrap();
    c.write(NO_TX, "/counter", b"0").unwrap();
    let small = time_transactions(&c, 200);
    for i in 0..20_000 {
        c.write(NO_TX, &format!("/bulk/{}/n{i}", i % 100), b"some value")
            .unwrap();
    }
    let large = time_transactions(&c, 200);
    eprintln!("200 transactions: {small:?} over 4 nodes, {large:?} over 20,104 nodes");
    assert!(
        large < small * 4 + Duration::from_millis(200),
        "{small:?} vs {large:?}"
    );
}

/// C xenstored's conflict rule, kept: a commit fails with EAGAIN when a node the
/// transaction read, or the directory it created a node in, changed meanwhile; nodes it
/// never looked at may change freely.
#[test]
fn commit_conflicts_on_what_the_transaction_used() {
    let (_t, d) = daemon();
    let mut a = Raw::connect(d.socket());
    let mut b = Raw::connect(d.socket());
    a.write("/d/x", b"1");
    a.write("/e/y", b"1");
    // Read, then someone writes it: EAGAIN.
    let t = tx_id(a.call(MsgType::TransactionStart, b"\0"));
    a.call_tx(MsgType::Read, t, b"/d/x\0");
    b.write("/d/x", b"2");
    assert_eq!(a.call_tx(MsgType::TransactionEnd, t, b"T\0"), err("EAGAIN"));
    // A new node in /d, and someone else adds a sibling: EAGAIN (the directory changed).
    let t = tx_id(a.call(MsgType::TransactionStart, b"\0"));
    a.call_tx(MsgType::Write, t, b"/d/new\0v");
    b.write("/d/other", b"2");
    assert_eq!(a.call_tx(MsgType::TransactionEnd, t, b"T\0"), err("EAGAIN"));
    assert_eq!(a.call(MsgType::Read, b"/d/new\0"), err("ENOENT"));
    // Unrelated changes: commits, and its writes appear only then.
    let t = tx_id(a.call(MsgType::TransactionStart, b"\0"));
    a.call_tx(MsgType::Read, t, b"/d/x\0");
    a.call_tx(MsgType::Write, t, b"/d/x\0three");
    a.call_tx(MsgType::Rm, t, b"/d/other\0");
    b.write("/e/y", b"2");
    assert_eq!(b.call(MsgType::Read, b"/d/x\0").1, b"2");
    assert_eq!(
        a.call_tx(MsgType::TransactionEnd, t, b"T\0").0,
        MsgType::TransactionEnd as u32
    );
    assert_eq!(b.call(MsgType::Read, b"/d/x\0").1, b"three");
    assert_eq!(b.call(MsgType::Read, b"/d/other\0"), err("ENOENT"));
}

/// `transaction-nodes` (1024): a guest's transaction that touches more distinct nodes gets
/// ENOSPC and can then only be aborted; nothing of it lands. Dom0 is exempt.
#[test]
fn transaction_nodes_quota_from_a_guest_socket() {
    let (_t, d) = daemon();
    let mut g = Raw::connect(&guest(&d, 5));
    let t = tx_id(g.call(MsgType::TransactionStart, b"\0"));
    let mut refused = None;
    for i in 0..1100 {
        let r = g.call_tx(MsgType::Read, t, format!("n{i}\0").as_bytes());
        if r != err("ENOENT") {
            refused = Some((i, r));
            break;
        }
    }
    let (at, r) = refused.expect("no refusal within 1100 nodes");
    assert_eq!(r, err("ENOSPC"));
    assert!((1000..=1024).contains(&at), "refused at {at}");
    assert_eq!(g.call_tx(MsgType::Write, t, b"late\0v"), err("ENOSPC"));
    assert_eq!(g.call_tx(MsgType::TransactionEnd, t, b"T\0"), err("ENOSPC"));
    assert_eq!(g.call(MsgType::Read, b"late\0"), err("ENOENT"));
    // A fresh one works.
    let t = tx_id(g.call(MsgType::TransactionStart, b"\0"));
    g.call_tx(MsgType::Write, t, b"ok\0v");
    assert_eq!(
        g.call_tx(MsgType::TransactionEnd, t, b"T\0").0,
        MsgType::TransactionEnd as u32
    );
    let c0 = XsClient::connect(d.socket()).unwrap();
    c0.transaction(1, |tx| {
        for i in 0..1500 {
            c0.write(tx, &format!("/big/n{i}"), b"v")?;
        }
        Ok(())
    })
    .unwrap();
}

/// A guest's transaction writes one node 500 times: its watchers get one event for it at
/// the commit, not 500 (and none needed coalescing in the daemon's queue).
#[test]
fn a_transaction_fires_one_event_per_node_changed() {
    let (_t, d) = daemon();
    let g = guest(&d, 5);
    let watcher = XsClient::connect(d.socket()).unwrap();
    let w = watcher
        .watch("/local/domain/5/data", &unique_token("w"))
        .unwrap();
    assert!(w.next(Duration::from_secs(5)).unwrap().is_some());
    let c = XsClient::connect(&g).unwrap();
    c.transaction(1, |tx| {
        for i in 0..500 {
            c.write(tx, "data/k", i.to_string().as_bytes())?;
        }
        c.write(tx, "data/other", b"1")
    })
    .unwrap();
    let mut got = Vec::new();
    while let Some(p) = w.next(Duration::from_millis(300)).unwrap() {
        got.push(p);
    }
    got.sort();
    assert_eq!(
        got,
        vec!["/local/domain/5/data/k", "/local/domain/5/data/other"]
    );
    assert_eq!(d.stats().events_coalesced, 0);
}

/// Removing a subtree fires, as C xenstored: watches on the removed node and its ancestors
/// once with its path, each watch on a node inside once with that node's path; a watch on a
/// path that never existed inside it does not fire.
#[test]
fn rm_fires_per_node_removed() {
    let (_t, d) = daemon();
    let c = XsClient::connect(d.socket()).unwrap();
    for k in ["/a/b/c", "/a/b/d/e"] {
        c.write(NO_TX, k, b"v").unwrap();
    }
    let watch = |p: &str| {
        let w = c.watch(p, &unique_token("rm")).unwrap();
        assert_eq!(w.next(Duration::from_secs(5)).unwrap().as_deref(), Some(p));
        w
    };
    let (wa, wc, wd, wz) = (
        watch("/a"),
        watch("/a/b/c"),
        watch("/a/b/d"),
        watch("/a/b/zz"),
    );
    c.rm(NO_TX, "/a/b").unwrap();
    let drain = |w: &netstage_platform::xenstore::Watch| {
        let mut v = Vec::new();
        while let Some(p) = w.next(Duration::from_millis(200)).unwrap() {
            v.push(p);
        }
        v
    };
    assert_eq!(drain(&wa), vec!["/a/b"]);
    assert_eq!(drain(&wc), vec!["/a/b/c"]);
    assert_eq!(drain(&wd), vec!["/a/b/d"]);
    assert_eq!(drain(&wz), Vec::<String>::new());
}
