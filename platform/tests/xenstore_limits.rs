//! What a guest can and cannot make the embedded xenstored do, tried from the guest's own
//! socket: replies within the wire protocol's payload limit, per-domain quotas with C
//! xenstored's names, defaults and error names, and the connection staying usable after an
//! error.

mod xenstore_common;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use netstage_platform::sim::xenstored::wire::{message, Errno, MsgType};
use netstage_platform::sim::xenstored::{Quotas, MAX_TRANSACTIONS, MAX_WATCHES};
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};
use xenstore_common::{daemon, daemon_with, err, guest, Raw};

/// Three children with 2,100-character names under a guest's own directory: listing it
/// would need 6,303 payload bytes. C xenstored answers E2BIG and so does this one; the
/// connection keeps working.
#[test]
fn an_oversized_directory_listing_is_e2big_and_the_connection_lives_on() {
    // The default `path-max` and `node-size` quotas refuse such names (see below); with them
    // lifted the reply limit still holds.
    let (_t, d) = daemon_with(Quotas {
        path_max: 0,
        node_size: 0,
        ..Quotas::default()
    });
    let g = guest(&d, 5);
    let mut raw = Raw::connect(&g);
    for c in ['a', 'b', 'c'] {
        let name = c.to_string().repeat(2100);
        let (ty, _) = raw.write(&format!("/local/domain/5/big/{name}"), b"v");
        assert_eq!(ty, MsgType::Write as u32);
    }
    assert_eq!(
        raw.call(MsgType::Directory, b"/local/domain/5/big\0"),
        err("E2BIG")
    );
    raw.write("/local/domain/5/small", b"still here");
    assert_eq!(
        raw.call(MsgType::Read, b"small\0"),
        (MsgType::Read as u32, b"still here".to_vec())
    );

    // The project's client: a typed E2BIG, and the same connection serves the next call.
    let c = XsClient::connect(&g).unwrap();
    let e = c.directory(NO_TX, "big").unwrap_err();
    assert_eq!(e.errno(), Some(Errno::E2BIG), "{e}");
    assert_eq!(c.read(NO_TX, "small").unwrap(), b"still here");
    // Dom0 listing the guest's directory gets the same answer, not a broken connection.
    let c0 = XsClient::connect(d.socket()).unwrap();
    let e = c0.directory(NO_TX, "/local/domain/5/big").unwrap_err();
    assert_eq!(e.errno(), Some(Errno::E2BIG), "{e}");
    assert_eq!(
        c0.read(NO_TX, "/local/domain/5/small").unwrap(),
        b"still here"
    );
}

/// A watch event that would not fit the payload limit (a deep path under a watch with a
/// long token) is not sent, as in C xenstored; the watcher's connection is not broken.
#[test]
fn an_oversized_watch_event_is_not_sent() {
    let (_t, d) = daemon();
    let mut w = Raw::connect(d.socket());
    let token = "t".repeat(2000);
    let (ty, _) = w.call(MsgType::Watch, format!("/deep\0{token}\0").as_bytes());
    assert_eq!(ty, MsgType::Watch as u32);
    assert_eq!(w.recv().unwrap().0, MsgType::WatchEvent as u32); // the initial event
    let mut c0 = Raw::connect(d.socket());
    let long = format!("/deep/{}", "p".repeat(2500));
    assert_eq!(c0.write(&long, b"x").0, MsgType::Write as u32);
    assert_eq!(c0.write("/deep/short", b"x").0, MsgType::Write as u32);
    let (ty, body) = w.recv().unwrap();
    assert_eq!(ty, MsgType::WatchEvent as u32);
    assert!(body.starts_with(b"/deep/short\0"), "{:?}", &body[..20]);
}

/// A guest with a 20-node quota: its home directory and 19 more, then ENOSPC; removing one
/// makes room again. Dom0 writing into the guest's directory is exempt.
#[test]
fn nodes_quota_from_a_guest_socket() {
    let (_t, d) = daemon_with(Quotas {
        nodes: 20,
        ..Quotas::default()
    });
    let mut g = Raw::connect(&guest(&d, 5));
    let mut made = 0;
    let refusal = loop {
        let r = g.write(&format!("k{made}"), b"v");
        if r.0 != MsgType::Write as u32 {
            break r;
        }
        made += 1;
    };
    assert_eq!((made, refusal), (19, err("ENOSPC")));
    assert_eq!(g.call(MsgType::Rm, b"k0\0").0, MsgType::Rm as u32);
    assert_eq!(g.write("again", b"v").0, MsgType::Write as u32);
    let c0 = XsClient::connect(d.socket()).unwrap();
    c0.write(NO_TX, "/local/domain/5/from-dom0", b"v").unwrap();
}

/// The default `nodes` quota is C xenstored's 1000.
#[test]
fn default_quotas_are_c_xenstored_s() {
    let q = Quotas::default();
    assert_eq!(
        (q.nodes, q.watches, q.transactions, q.transaction_nodes),
        (1000, 128, 10, 1024)
    );
    assert_eq!(
        (q.node_permissions, q.node_size, q.path_max, q.outstanding),
        (5, 2048, 2048, 20)
    );
}

/// Watches count per domain, over all its connections: 128 by default, then ENOSPC.
/// Dom0 is exempt.
#[test]
fn watches_quota_is_per_domain() {
    let (_t, d) = daemon();
    let g = guest(&d, 5);
    let (mut a, mut b) = (Raw::connect(&g), Raw::connect(&g));
    for i in 0..MAX_WATCHES {
        let c = if i % 2 == 0 { &mut a } else { &mut b };
        let (ty, _) = c.call(MsgType::Watch, format!("w{i}\0t\0").as_bytes());
        assert_eq!(ty, MsgType::Watch as u32, "watch {i}");
        assert_eq!(c.recv().unwrap().0, MsgType::WatchEvent as u32);
    }
    assert_eq!(a.call(MsgType::Watch, b"more\0t\0"), err("ENOSPC"));
    assert_eq!(b.call(MsgType::Watch, b"more\0t\0"), err("ENOSPC"));
    // Closing one connection gives its watches back.
    drop(b);
    let t = Instant::now();
    while a.call(MsgType::Watch, b"more\0t\0") == err("ENOSPC") {
        assert!(t.elapsed() < Duration::from_secs(5));
        thread::sleep(Duration::from_millis(5));
    }
    let mut z = Raw::connect(d.socket());
    for i in 0..MAX_WATCHES + 10 {
        let (ty, _) = z.call(MsgType::Watch, format!("/w{i}\0t\0").as_bytes());
        assert_eq!(ty, MsgType::Watch as u32);
        z.recv().unwrap();
    }
}

/// Open transactions count per domain: 10 by default, then ENOSPC; dom0 is exempt.
#[test]
fn transactions_quota_is_per_domain() {
    let (_t, d) = daemon();
    let g = guest(&d, 5);
    let (mut a, mut b) = (Raw::connect(&g), Raw::connect(&g));
    for i in 0..MAX_TRANSACTIONS {
        let c = if i % 2 == 0 { &mut a } else { &mut b };
        assert_eq!(
            c.call(MsgType::TransactionStart, b"\0").0,
            MsgType::TransactionStart as u32
        );
    }
    assert_eq!(a.call(MsgType::TransactionStart, b"\0"), err("ENOSPC"));
    let mut z = Raw::connect(d.socket());
    for _ in 0..MAX_TRANSACTIONS + 5 {
        assert_eq!(
            z.call(MsgType::TransactionStart, b"\0").0,
            MsgType::TransactionStart as u32
        );
    }
}

/// `node-permissions` (5 entries) and `node-size` (2048 bytes): ENOSPC for a guest, not for
/// dom0.
#[test]
fn node_permissions_and_size_quotas() {
    let (_t, d) = daemon();
    let mut g = Raw::connect(&guest(&d, 5));
    assert_eq!(g.write("n", b"v").0, MsgType::Write as u32);
    assert_eq!(
        g.call(MsgType::SetPerms, b"n\0n5\0r1\0r2\0r3\0r4\0").0,
        MsgType::SetPerms as u32
    );
    assert_eq!(
        g.call(MsgType::SetPerms, b"n\0n5\0r1\0r2\0r3\0r4\0r6\0"),
        err("ENOSPC")
    );
    // 16 + 8 + 2000 bytes fit, 16 + 8 + 2100 do not.
    assert_eq!(g.write("v", &[b'x'; 2000]).0, MsgType::Write as u32);
    assert_eq!(g.write("v", &[b'x'; 2100]), err("ENOSPC"));
    // Children's names count toward their parent's size.
    for i in 0..3 {
        let (ty, _) = g.write(&format!("dir/{}{i}", "c".repeat(600)), b"");
        assert_eq!(ty, MsgType::Write as u32);
    }
    assert_eq!(
        g.write(&format!("dir/{}", "c".repeat(600)), b""),
        err("ENOSPC")
    );
    let c0 = XsClient::connect(d.socket()).unwrap();
    c0.write(NO_TX, "/local/domain/5/v", &[b'x'; 3000]).unwrap();
}

/// `path-max`: 2048 characters after `/local/domain/<id>/`; a guest's longer path is EINVAL
/// (C xenstored's answer), dom0's is fine.
#[test]
fn path_max_quota() {
    let (_t, d) = daemon();
    let mut g = Raw::connect(&guest(&d, 5));
    let long = format!("/local/domain/5/{}", "p".repeat(2049));
    assert_eq!(g.write(&long, b""), err("EINVAL"));
    let ok_len = format!("/local/domain/5/{}", "p".repeat(2000));
    assert_eq!(g.write(&ok_len, b"").0, MsgType::Write as u32);
    let mut z = Raw::connect(d.socket());
    assert_eq!(z.write(&long, b"").0, MsgType::Write as u32);
}

/// Connections per guest: the 9th of a guest holding 8 is closed at once and counted; the
/// first 8 keep working, and closing one makes room. Dom0 is not limited.
#[test]
fn connections_quota_from_a_guest_socket() {
    let (_t, d) = daemon();
    let g = guest(&d, 5);
    let mut held: Vec<Raw> = (0..8).map(|_| Raw::connect(&g)).collect();
    for c in &mut held {
        assert_eq!(c.write("x", b"1").0, MsgType::Write as u32);
    }
    let mut extra = Raw::connect(&g);
    assert!(extra.closed());
    assert_eq!(d.stats().connections_refused, 1);
    assert_eq!(held[7].call(MsgType::Read, b"x\0").1, b"1");
    held.pop();
    let t = Instant::now();
    loop {
        // Until the daemon has seen the close, a new connection is refused and closed at
        // once: the write may then find the connection gone already.
        let mut again = Raw::connect(&g);
        let sent = again
            .0
            .write_all(&message(MsgType::Read as u32, 77, 0, b"x\0"))
            .is_ok();
        if sent && again.recv().is_some() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no room after a close"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let dom0: Vec<Raw> = (0..20).map(|_| Raw::connect(d.socket())).collect();
    for mut c in dom0 {
        assert_eq!(c.write("/y", b"1").0, MsgType::Write as u32);
    }
}

/// `outstanding`: a guest that pipelines requests and reads no reply is not read from once
/// 20 replies wait: it stalls itself only (counted), loses nothing, and everyone else is
/// served meanwhile.
#[test]
fn outstanding_quota_stalls_only_the_guest_that_does_not_read() {
    let (_t, d) = daemon();
    let g = guest(&d, 5);
    let mut w = Raw::connect(&g);
    assert_eq!(w.write("big", &[b'b'; 2000]).0, MsgType::Write as u32);
    // About 8 MB of replies: far more than the socket buffers hold.
    const N: usize = 4000;
    let mut lazy = Raw::connect(&g);
    let mut sender = lazy.0.try_clone().unwrap();
    let pump = thread::spawn(move || {
        let one = message(MsgType::Read as u32, 1, 0, b"big\0");
        for _ in 0..N {
            if sender.write_all(&one).is_err() {
                return false;
            }
        }
        true
    });
    let t = Instant::now();
    while d.stats().outstanding_stalls == 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", d.stats());
        thread::sleep(Duration::from_millis(10));
    }
    // Others are served while it stalls; it is not disconnected.
    let mut other = Raw::connect(&guest(&d, 6));
    assert_eq!(other.write("z", b"1").0, MsgType::Write as u32);
    assert_eq!(w.call(MsgType::Read, b"big\0").1.len(), 2000);
    let c0 = XsClient::connect(d.socket()).unwrap();
    c0.write(NO_TX, "/ok", b"1").unwrap();
    // Every reply arrives once it reads.
    for i in 0..N {
        let (ty, body) = lazy.recv().unwrap_or_else(|| panic!("reply {i} missing"));
        assert_eq!((ty, body.len()), (MsgType::Read as u32, 2000));
    }
    assert!(pump.join().unwrap());
    assert_eq!(d.stats().queue_overflows, 0);
}

/// A guest connection that watches its directory and never reads is closed once its
/// queued events pass the bound (counted); the daemon and everyone else carry on.
#[test]
fn queued_output_bound_closes_a_guest_that_never_reads() {
    let (_t, d) = daemon_with(Quotas {
        queued_messages: 300,
        ..Quotas::default()
    });
    let g = guest(&d, 5);
    let mut lazy = Raw::connect(&g);
    lazy.send(MsgType::Watch as u32, 0, b"/local/domain/5\0lazy\0");
    let mut lazy_path = Raw::connect(&g);
    lazy_path.send(MsgType::Watch as u32, 0, b"data\0lazy\0");
    thread::sleep(Duration::from_millis(100));
    let c0 = XsClient::connect(d.socket()).unwrap();
    let t = Instant::now();
    let mut i = 0;
    while d.stats().queue_overflows < 2 {
        c0.write(NO_TX, &format!("/local/domain/5/data/k{i}"), b"v")
            .unwrap();
        i += 1;
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", d.stats());
    }
    // The bound plus what the socket buffers took before the writer blocked.
    assert!(i < 20_000, "{i} writes before the bound");
    assert!(lazy.closed());
    let mut other = Raw::connect(&g);
    assert_eq!(other.call(MsgType::Read, b"data/k0\0").1, b"v");
}

/// A guest fills one of its connections' output queue with long watch events and never
/// reads them: with the default quotas the byte bound (`queued-bytes`, 1 MiB) closes that
/// connection, counted, before the message bound (`queued-messages`, 4096) could: fewer
/// than 4096 events were ever fired at it. The daemon serves the guest's other connections
/// and everyone else.
#[test]
fn queued_bytes_bound_closes_a_guest_that_never_reads_before_the_message_bound() {
    const WATCHES: usize = 16;
    let quotas = Quotas::default();
    let (_t, d) = daemon();
    let g = guest(&d, 5);
    // Sixteen watches on the guest's `data` with 2,000-byte tokens: each write below it
    // fires sixteen events of about 2 KiB at a connection that never reads.
    let mut lazy = Raw::connect(&g);
    for w in 0..WATCHES {
        let token = format!("{w:02}{}", "t".repeat(1998));
        lazy.send(
            MsgType::Watch as u32,
            0,
            format!("data\0{token}\0").as_bytes(),
        );
    }
    // Their replies and first events, read so that every watch is in place; from here on
    // it reads nothing.
    for _ in 0..2 * WATCHES {
        lazy.recv().unwrap();
    }
    let writer = XsClient::connect(&g).unwrap();
    let t = Instant::now();
    let mut writes = 0;
    while d.stats().queue_overflows == 0 {
        writer
            .write(NO_TX, &format!("data/k{writes}"), b"v")
            .unwrap();
        writes += 1;
        // The messages bound would trip by 4096 / 16 = 256 writes; fail well past it.
        assert!(
            writes <= 400,
            "no overflow after {writes} writes: {:?}",
            d.stats()
        );
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", d.stats());
    }
    let fired = WATCHES * writes;
    assert!(
        fired < quotas.queued_messages,
        "{fired} events fired: the message bound could have tripped"
    );
    // What was fired is over the byte bound: the bound, plus what the socket took before
    // the connection's writer blocked.
    assert!(
        fired * 2000 > quotas.queued_bytes,
        "{fired} events of over 2,000 bytes cannot exceed {} bytes",
        quotas.queued_bytes
    );
    assert_eq!(d.stats().queue_overflows, 1);
    assert!(lazy.closed());
    // The guest's other connection, and new ones, are served.
    assert_eq!(writer.read(NO_TX, "data/k0").unwrap(), b"v");
    let mut other = Raw::connect(&g);
    assert_eq!(other.call(MsgType::Read, b"data/k1\0").1, b"v");
    let c0 = XsClient::connect(d.socket()).unwrap();
    assert_eq!(c0.read(NO_TX, "/local/domain/5/data/k0").unwrap(), b"v");
}

/// XSA-115: a guest learns nothing through watches that it could not read: no events for
/// another guest's nodes (even watching `/`), and no `@introduceDomain`/`@releaseDomain`
/// events beyond the one every new watch gets; dom0 gets all of them.
#[test]
fn watch_events_follow_read_permission() {
    let (_t, d) = daemon();
    let g5 = guest(&d, 5);
    let g6 = guest(&d, 6);
    let spy = XsClient::connect(&g5).unwrap();
    let all = spy.watch("/", "all").unwrap();
    let intro = spy.watch("@introduceDomain", "intro").unwrap();
    let rel = spy.watch("@releaseDomain", "rel").unwrap();
    for w in [&all, &intro, &rel] {
        assert!(w.next(Duration::from_secs(5)).unwrap().is_some()); // the initial event
    }
    let c0 = XsClient::connect(d.socket()).unwrap();
    let dom0_intro = c0.watch("@introduceDomain", "i0").unwrap();
    assert!(dom0_intro.next(Duration::from_secs(5)).unwrap().is_some());
    let victim = XsClient::connect(&g6).unwrap();
    victim.write(NO_TX, "secret", b"s").unwrap();
    victim.rm(NO_TX, "secret").unwrap();
    d.introduce(7).unwrap();
    d.release(7);
    assert_eq!(
        dom0_intro.next(Duration::from_secs(5)).unwrap().as_deref(),
        Some("@introduceDomain")
    );
    for w in [&all, &intro, &rel] {
        assert_eq!(w.next(Duration::from_millis(200)).unwrap(), None);
    }
    // Its own nodes it does hear about.
    spy.write(NO_TX, "mine", b"1").unwrap();
    assert_eq!(
        all.next(Duration::from_secs(5)).unwrap().as_deref(),
        Some("/local/domain/5/mine")
    );
}
