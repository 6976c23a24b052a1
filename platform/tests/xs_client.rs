//! The project's XenStore client against the embedded daemon: operations, transactions with
//! retry, watches shared by threads, and a daemon that goes away.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use netstage_platform::sim::xenstored::wire::Errno;
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::xenstore::{unique_token, XenStore, XsClient, XsError, NO_TX};

fn daemon() -> (tempfile::TempDir, Xenstored) {
    let dir = tempfile::tempdir().unwrap();
    let xs = Xenstored::start(XenstoredConfig::in_dir(dir.path())).unwrap();
    (dir, xs)
}

#[test]
fn operations_and_errors() {
    let (_d, d) = daemon();
    let c = XsClient::connect(d.socket()).unwrap();
    c.write(NO_TX, "/a/b", b"\x00binary\xff").unwrap();
    assert_eq!(c.read(NO_TX, "/a/b").unwrap(), b"\x00binary\xff");
    c.mkdir(NO_TX, "/a/dir").unwrap();
    assert_eq!(c.directory(NO_TX, "/a").unwrap(), vec!["b", "dir"]);
    c.set_perms(NO_TX, "/a/b", &["n0", "r4"]).unwrap();
    assert_eq!(c.get_perms(NO_TX, "/a/b").unwrap(), vec!["n0", "r4"]);
    c.rm(NO_TX, "/a").unwrap();
    let e = c.read(NO_TX, "/a/b").unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOENT));
    assert!(e.to_string().contains("/a/b"), "{e}");
    assert_eq!(c.get_domain_path(3).unwrap(), "/local/domain/3");
    assert_eq!(
        c.read(NO_TX, "bad//path").unwrap_err().errno(),
        Some(Errno::EINVAL)
    );
}

#[test]
fn transactions_retry_on_conflict() {
    let (_d, d) = daemon();
    let a = XsClient::connect(d.socket()).unwrap();
    let b = XsClient::connect(d.socket()).unwrap();
    a.write(NO_TX, "/counter", b"0").unwrap();
    let mut attempts = 0;
    let v = a
        .transaction(5, |tx| {
            attempts += 1;
            let n: u32 = String::from_utf8(a.read(tx, "/counter")?)
                .unwrap()
                .parse()
                .unwrap();
            if attempts == 1 {
                // Someone else changes what we read: the first commit must fail.
                b.write(NO_TX, "/counter", b"10").unwrap();
            }
            a.write(tx, "/counter", (n + 1).to_string().as_bytes())?;
            Ok(n + 1)
        })
        .unwrap();
    assert_eq!((attempts, v), (2, 11));
    assert_eq!(b.read(NO_TX, "/counter").unwrap(), b"11");
    // An error inside aborts the transaction and is returned.
    let r: Result<(), XsError> = a.transaction(5, |tx| {
        a.write(tx, "/counter", b"lost")?;
        a.read(tx, "/missing").map(|_| ())
    });
    assert_eq!(r.unwrap_err().errno(), Some(Errno::ENOENT));
    assert_eq!(b.read(NO_TX, "/counter").unwrap(), b"11");
}

#[test]
fn watches_from_many_threads() {
    let (_d, d) = daemon();
    let c = Arc::new(XsClient::connect(d.socket()).unwrap());
    let w1 = c.watch("/w1", &unique_token("w1")).unwrap();
    let w2 = c.watch("/w2", &unique_token("w2")).unwrap();
    assert_eq!(
        w1.next(Duration::from_secs(5)).unwrap().as_deref(),
        Some("/w1")
    );
    assert_eq!(
        w2.next(Duration::from_secs(5)).unwrap().as_deref(),
        Some("/w2")
    );
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let c = Arc::clone(&c);
            thread::spawn(move || {
                for k in 0..25 {
                    c.write(NO_TX, &format!("/w{}/t{i}-{k}", 1 + i % 2), b"x")
                        .unwrap();
                }
            })
        })
        .collect();
    for t in writers {
        t.join().unwrap();
    }
    let mut n1 = 0;
    while w1.next(Duration::from_millis(200)).unwrap().is_some() {
        n1 += 1;
    }
    let mut n2 = 0;
    while let Some(p) = w2.try_next() {
        assert!(p.starts_with("/w2/"));
        n2 += 1;
    }
    assert_eq!((n1, n2), (50, 50));
    drop(w1);
    c.write(NO_TX, "/w1/after", b"x").unwrap();
    assert_eq!(w2.next(Duration::from_millis(50)).unwrap(), None);
}

#[test]
fn a_vanishing_daemon_fails_calls_instead_of_hanging() {
    let (_d, d) = daemon();
    let c = XsClient::connect(d.socket()).unwrap();
    let w = c.watch("/x", "t").unwrap();
    assert!(w.next(Duration::from_secs(5)).unwrap().is_some());
    d.shutdown();
    assert!(matches!(
        w.next(Duration::from_secs(5)),
        Err(XsError::Io { .. })
    ));
    assert!(matches!(c.read(NO_TX, "/x"), Err(XsError::Io { .. })));
}

/// A Rust client nobody here wrote, `xenstore-rs`, finds the daemon through
/// `XENSTORED_PATH` and works against it.
#[test]
fn xenstore_rs_interoperates() {
    use xenstore_rs::Xs;
    let (_d, d) = daemon();
    // This test binary sets the variable once, before any client of its own reads it.
    std::env::set_var("XENSTORED_PATH", d.socket());
    let xs = xenstore_rs::unix::XsUnix::new().unwrap();
    xs.write("/from-xenstore-rs", "hello").unwrap();
    assert_eq!(&*xs.read("/from-xenstore-rs").unwrap(), "hello");
    // (Its blocking client has no transactions and no watches; see the module docs.)
    xs.write("/from-xenstore-rs/in-tx", "1").unwrap();
    let ours = XsClient::connect(d.socket()).unwrap();
    assert_eq!(ours.read(NO_TX, "/from-xenstore-rs/in-tx").unwrap(), b"1");
    let dir: Vec<String> = xs
        .directory("/from-xenstore-rs")
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(dir, vec!["in-tx"]);
    xs.rm("/from-xenstore-rs").unwrap();
    assert!(xs.read("/from-xenstore-rs").is_err());
}

/// A broken daemon answers with a payload over XENSTORE_PAYLOAD_MAX: the caller gets a typed
/// protocol error at once (not a hang, not a plain hang-up), and so does every later call.
#[test]
fn an_oversized_reply_is_a_protocol_error() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    use netstage_platform::sim::xenstored::wire::{Header, MsgType, HEADER_LEN};

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("broken");
    let listener = UnixListener::bind(&sock).unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut h = [0u8; HEADER_LEN];
        s.read_exact(&mut h).unwrap();
        let req = Header::decode(&h);
        let mut p = vec![0u8; req.len as usize];
        s.read_exact(&mut p).unwrap();
        let mut reply = Header {
            ty: MsgType::Directory as u32,
            req_id: req.req_id,
            tx_id: 0,
            len: 6000,
        }
        .encode()
        .to_vec();
        reply.extend(vec![b'a'; 6000]);
        let _ = s.write_all(&reply);
        // Keep the connection open: the client must not wait for more.
        thread::sleep(Duration::from_secs(2));
    });
    let c = XsClient::connect(&sock).unwrap();
    let t = std::time::Instant::now();
    let e = c.directory(NO_TX, "/x").unwrap_err();
    assert!(matches!(e, XsError::Protocol(_)), "{e}");
    assert!(e.to_string().contains("6000"), "{e}");
    assert!(matches!(c.read(NO_TX, "/x"), Err(XsError::Protocol(_))));
    assert!(t.elapsed() < Duration::from_secs(2));
    server.join().unwrap();
}

/// A watcher that does not keep up: its queue holds WATCH_QUEUE events, the rest are
/// dropped and counted, and the next event it reads is the watched path itself ("look
/// again"), then the queued ones. Other watches of the same connection are unaffected.
#[test]
fn a_slow_watch_drops_and_counts_events_and_says_so() {
    use netstage_platform::xenstore::WATCH_QUEUE;
    let (_d, d) = daemon();
    let c = XsClient::connect(d.socket()).unwrap();
    let slow = c.watch("/flood", &unique_token("slow")).unwrap();
    let calm = c.watch("/calm", &unique_token("calm")).unwrap();
    let n = WATCH_QUEUE + 500;
    for i in 0..n {
        c.write(NO_TX, &format!("/flood/k{i}"), b"v").unwrap();
    }
    c.write(NO_TX, "/calm/x", b"v").unwrap();
    // Replies and events come in order: once this answers, every event above was routed.
    c.read(NO_TX, "/calm/x").unwrap();
    // Queued: the initial event and WATCH_QUEUE - 1 writes; the rest dropped.
    assert_eq!(slow.lost(), (n + 1 - WATCH_QUEUE) as u64);
    assert_eq!(slow.try_next().as_deref(), Some("/flood"));
    let mut queued = 0;
    while slow.try_next().is_some() {
        queued += 1;
    }
    assert_eq!(queued, WATCH_QUEUE);
    assert_eq!(calm.try_next().as_deref(), Some("/calm"));
    assert_eq!(calm.try_next().as_deref(), Some("/calm/x"));
    assert_eq!(calm.lost(), 0);
    // It keeps working after the flood.
    c.write(NO_TX, "/flood/after", b"v").unwrap();
    assert_eq!(
        slow.next(Duration::from_secs(5)).unwrap().as_deref(),
        Some("/flood/after")
    );
}

/// A daemon that takes requests and never answers (stopped, not dead) fails each call after
/// the client's reply timeout, naming the operation and path, instead of hanging it.
#[test]
fn a_daemon_that_never_answers_fails_calls_after_the_reply_timeout() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("mute");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mute = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut sink = Vec::new();
        // Reads until the client hangs up; answers nothing.
        let _ = s.read_to_end(&mut sink);
    });
    let c = XsClient::connect(&sock).unwrap();
    assert_eq!(
        c.reply_timeout(),
        netstage_platform::xenstore::REPLY_TIMEOUT
    );
    c.set_reply_timeout(Duration::from_millis(200));
    let t = std::time::Instant::now();
    let e = c.read(NO_TX, "/some/node").unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(200), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{e}");
    match &e {
        XsError::Timeout { op, path, waited } => {
            assert_eq!((*op, path.as_str()), ("read", "/some/node"));
            assert_eq!(*waited, Duration::from_millis(200));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("no reply within"), "{e}");
    drop(c);
    mute.join().unwrap();
}
