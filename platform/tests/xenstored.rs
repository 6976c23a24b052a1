//! The embedded xenstored, driven by clients nobody here wrote (Debian's `xenstore-utils`
//! and `python3-pyxs`), and by hostile raw-socket clients.
//!
//! The clients are required: if they are missing the tests fail and name the package (the
//! test command `./scripts/test` installs them as root).

mod xenstore_common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use netstage_platform::sim::xenstored::wire::{Header, MsgType};
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig, MAX_WATCHES};
use xenstore_common::{err, Raw};

fn daemon() -> (tempfile::TempDir, Xenstored) {
    let dir = tempfile::tempdir().unwrap();
    let xs = Xenstored::start(XenstoredConfig::in_dir(dir.path())).unwrap();
    (dir, xs)
}

fn tool(name: &str) -> PathBuf {
    let p = Path::new("/usr/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: install Debian's `xenstore-utils` (./scripts/test does, as root)",
        p.display()
    );
    p
}

/// Runs a xenstore-utils command against `socket`.
fn xs(socket: &Path, name: &str, args: &[&str]) -> Output {
    Command::new(tool(name))
        .args(args)
        .env("XENSTORED_PATH", socket)
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn xenstore_utils_read_write_list_remove() {
    let (_d, d) = daemon();
    let s = d.socket();
    ok(xs(
        s,
        "xenstore-write",
        &["/vm/a", "hello", "/vm/b/c", "x y z"],
    ));
    assert_eq!(ok(xs(s, "xenstore-read", &["/vm/a"])), "hello\n");
    assert_eq!(ok(xs(s, "xenstore-read", &["/vm/b/c"])), "x y z\n");
    assert_eq!(ok(xs(s, "xenstore-list", &["/vm"])), "a\nb\n");
    let ls = ok(xs(s, "xenstore-ls", &["/vm"]));
    assert!(
        ls.contains("a = \"hello\"") && ls.contains(" c = \"x y z\""),
        "{ls}"
    );
    ok(xs(s, "xenstore-rm", &["/vm/b"]));
    assert!(!xs(s, "xenstore-exists", &["/vm/b/c"]).status.success());
    assert!(xs(s, "xenstore-exists", &["/vm/a"]).status.success());
    let o = xs(s, "xenstore-read", &["/nowhere"]);
    assert!(!o.status.success());
}

#[test]
fn xenstore_utils_permissions_between_domains() {
    let (_d, d) = daemon();
    let s = d.socket();
    let g5 = d.introduce(5).unwrap();
    let g6 = d.introduce(6).unwrap();
    for g in [5, 6] {
        let p = format!("/local/domain/{g}");
        ok(xs(s, "xenstore-write", &[&p, ""]));
        ok(xs(s, "xenstore-chmod", &[&p, &format!("n{g}"), "r0"]));
    }
    // A guest writes relative paths under its own directory; the nodes are its own.
    ok(xs(&g5, "xenstore-write", &["device/vif/0/state", "1"]));
    let perms = ok(xs(s, "xenstore-ls", &["-p", "/local/domain/5/device"]));
    assert!(perms.contains("(n5,r0)"), "{perms}");
    // It cannot read or write another guest's nodes, or dom0's.
    ok(xs(&g6, "xenstore-write", &["secret", "6"]));
    assert!(!xs(&g5, "xenstore-read", &["/local/domain/6/secret"])
        .status
        .success());
    assert!(!xs(&g5, "xenstore-write", &["/local/domain/6/secret", "x"])
        .status
        .success());
    assert!(!xs(&g5, "xenstore-write", &["/tool", "x"]).status.success());
    assert!(!xs(&g5, "xenstore-read", &["/local/domain"])
        .status
        .success());
    // Dom0 reads everything; a guest may open a node to another domain.
    assert_eq!(
        ok(xs(s, "xenstore-read", &["/local/domain/6/secret"])),
        "6\n"
    );
    ok(xs(&g6, "xenstore-chmod", &["secret", "n6", "r5"]));
    assert_eq!(
        ok(xs(&g5, "xenstore-read", &["/local/domain/6/secret"])),
        "6\n"
    );
    assert!(!xs(&g5, "xenstore-write", &["/local/domain/6/secret", "x"])
        .status
        .success());
    // Only dom0 may give a node away.
    assert!(!xs(&g6, "xenstore-chmod", &["secret", "n5"])
        .status
        .success());
}

#[test]
fn xenstore_utils_watch_sees_the_initial_event_and_changes() {
    let (_d, d) = daemon();
    let s = d.socket().to_path_buf();
    let child = Command::new(tool("xenstore-watch"))
        .args(["-n", "3", "/watched"])
        .env("XENSTORED_PATH", &s)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(200));
    ok(xs(&s, "xenstore-write", &["/watched/x", "1"]));
    ok(xs(&s, "xenstore-write", &["/other", "1"])); // not watched
    ok(xs(&s, "xenstore-rm", &["/watched"]));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "/watched\n/watched/x\n/watched\n"
    );
}

fn pyxs(script: &str, env: &[(&str, &Path)]) -> String {
    let py = Path::new("/usr/bin/python3");
    assert!(py.exists(), "Debian's /usr/bin/python3 is missing");
    let mut cmd = Command::new(py);
    cmd.arg("-c").arg(script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'pyxs'"),
        "pyxs is missing: install Debian's `python3-pyxs` (./scripts/test does, as root)"
    );
    assert!(out.status.success(), "python failed:\n{err}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn pyxs_transactions_conflict_and_commit() {
    let (_d, d) = daemon();
    let out = pyxs(
        r#"
import os, pyxs
s = os.environ["SOCK"]
with pyxs.Client(unix_socket_path=s) as a, pyxs.Client(unix_socket_path=s) as b:
    a.write(b"/t/v", b"0")
    # a conflicting transaction: b writes what a read
    a.transaction()
    v = a.read(b"/t/v")
    b.write(b"/t/v", b"1")
    a.write(b"/t/v", v + b"x")
    print("first", a.commit())
    print("after", b.read(b"/t/v").decode())
    # the retry commits; its writes are invisible to b until then
    a.transaction()
    v = a.read(b"/t/v")
    a.write(b"/t/v", v + b"x")
    a.write(b"/t/new", b"n")
    print("inside", b.exists(b"/t/new"))
    print("second", a.commit())
    print("final", b.read(b"/t/v").decode(), b.read(b"/t/new").decode())
    # an aborted transaction changes nothing
    a.transaction()
    a.write(b"/t/v", b"gone")
    a.rollback()
    print("rolled", b.read(b"/t/v").decode())
    # transactions on unrelated nodes do not conflict
    a.transaction()
    a.write(b"/t/p", b"1")
    b.write(b"/u/q", b"2")
    print("unrelated", a.commit())
"#,
        &[("SOCK", d.socket())],
    );
    assert_eq!(
        out,
        "first False\nafter 1\ninside False\nsecond True\nfinal 1x n\nrolled 1x\nunrelated True\n"
    );
}

#[test]
fn pyxs_watches_perms_and_domains() {
    let (dir, d) = daemon();
    let out = pyxs(
        r#"
import os, pyxs
s = os.environ["SOCK"]
with pyxs.Client(unix_socket_path=s) as c:
    m = c.monitor()
    m.watch(b"/w", b"tok")
    m.watch(b"@introduceDomain", b"intro")
    ev = m.wait()
    print(next(ev))
    print(next(ev))
    c.write(b"/w/a", b"1")
    print(next(ev))
    c.set_perms(b"/w/a", [b"n3", b"r4"])
    print(c.get_perms(b"/w/a"))
    print(next(ev))
    print(c.get_domain_path(7).decode())
    print(c.is_domain_introduced(9))
    c.introduce_domain(9, 1234, 5)
    print(next(ev))
    print(c.is_domain_introduced(9))
    print(os.path.exists(os.environ["DIR"] + "/dom9.sock"))
    # pyxs refuses RELEASE client-side unless it thinks it is privileged; send it raw.
    from pyxs._internal import Op
    c.ack(Op.RELEASE, b"9\x00")
    print(c.is_domain_introduced(9))
    m.unwatch(b"/w", b"tok")
    try:
        m.unwatch(b"/w", b"tok")
    except pyxs.PyXSError as e:
        print("unwatch twice:", e.args[0])
"#,
        &[("SOCK", d.socket()), ("DIR", dir.path())],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "Event(path=b'/w', token=b'tok')",
            "Event(path=b'@introduceDomain', token=b'intro')",
            "Event(path=b'/w/a', token=b'tok')",
            "[b'n3', b'r4']",
            "Event(path=b'/w/a', token=b'tok')",
            "/local/domain/7",
            "False",
            "Event(path=b'@introduceDomain', token=b'intro')",
            "True",
            "True",
            "False",
            "unwatch twice: 2",
        ],
        "{out}"
    );
    thread::sleep(Duration::from_millis(50));
    assert!(!dir.path().join("dom9.sock").exists());
}

#[test]
fn hostile_clients_get_errors_or_are_disconnected_and_others_are_served() {
    let (_d, d) = daemon();
    let s = d.socket();
    let mut good = Raw::connect(s);
    assert_eq!(
        good.call(MsgType::Write, b"/ok\0v").0,
        MsgType::Write as u32
    );

    // Unknown and removed types, bad paths, malformed payloads: XS_ERROR.
    let mut c = Raw::connect(s);
    c.send(99, 0, b"x\0");
    assert_eq!(c.recv().unwrap(), err("ENOSYS"));
    c.send(20, 0, b"x\0");
    assert_eq!(c.recv().unwrap(), err("ENOSYS"));
    assert_eq!(c.call(MsgType::Read, b"/a//b\0"), err("EINVAL"));
    assert_eq!(c.call(MsgType::Read, b"/a b\0"), err("EINVAL"));
    assert_eq!(c.call(MsgType::Read, b"/no-nul"), err("EINVAL"));
    assert_eq!(c.call(MsgType::Read, b"/missing\0"), err("ENOENT"));
    assert_eq!(c.call(MsgType::TransactionEnd, b"X\0"), err("EINVAL"));
    c.send(MsgType::Read as u32, 12345, b"/ok\0");
    assert_eq!(c.recv().unwrap(), err("ENOENT")); // unknown transaction
    let long = format!("/{}\0", "a".repeat(3100));
    assert_eq!(c.call(MsgType::Read, long.as_bytes()), err("EINVAL"));

    // Watch flood from a guest: bounded per domain, ENOSPC as C xenstored (dom0 is exempt).
    let mut g = Raw::connect(&xenstore_common::guest(&d, 8));
    for i in 0..MAX_WATCHES {
        let (ty, _) = g.call(MsgType::Watch, format!("f{i}\0t\0").as_bytes());
        assert_eq!(ty, MsgType::Watch as u32);
        let (ty, _) = g.recv().unwrap(); // initial event
        assert_eq!(ty, MsgType::WatchEvent as u32);
    }
    assert_eq!(g.call(MsgType::Watch, b"one-more\0t\0"), err("ENOSPC"));
    assert_eq!(
        g.call(MsgType::ResetWatches, b"\0").0,
        MsgType::ResetWatches as u32
    );
    assert_eq!(
        g.call(MsgType::Watch, b"one-more\0t\0").0,
        MsgType::Watch as u32
    );

    // Oversized payload: the connection is closed.
    let mut big = Raw::connect(s);
    let mut m = Header {
        ty: MsgType::Write as u32,
        req_id: 1,
        tx_id: 0,
        len: 4097,
    }
    .encode()
    .to_vec();
    m.extend(vec![b'a'; 4097]);
    let _ = big.0.write_all(&m);
    assert!(big.closed());

    // Truncated header, then hang-up.
    let mut t = Raw::connect(s);
    t.0.write_all(&[1, 0, 0]).unwrap();
    t.0.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(t.closed());

    // A client that watches everything and never reads is cut off once its queue is full.
    let mut lazy = Raw::connect(s);
    lazy.send(MsgType::Watch as u32, 0, b"/\0lazy\0");
    thread::sleep(Duration::from_millis(100));
    let value = vec![b'v'; 3000];
    let start = Instant::now();
    let before = d.connections();
    // Distinct nodes: identical events still queued are coalesced, as in C xenstored.
    for i in 0.. {
        if d.connections() < before {
            break;
        }
        let mut payload =
            format!("/spam/key-with-a-rather-long-name-to-fill-the-queue-faster-{i}\0")
                .into_bytes();
        payload.extend(&value);
        assert_eq!(good.call(MsgType::Write, &payload).0, MsgType::Write as u32);
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "lazy client never dropped"
        );
    }
    assert!(d.stats().queue_overflows >= 1, "{:?}", d.stats());
    // Everyone else is still served.
    assert_eq!(
        good.call(MsgType::Read, b"/ok\0"),
        (MsgType::Read as u32, b"v".to_vec())
    );
    assert_eq!(
        c.call(MsgType::Read, b"/ok\0"),
        (MsgType::Read as u32, b"v".to_vec())
    );
    let o = xs(s, "xenstore-read", &["/ok"]);
    assert_eq!(ok(o), "v\n");
}

#[test]
fn guests_cannot_use_privileged_operations() {
    let (_d, d) = daemon();
    let g = d.introduce(3).unwrap();
    let mut c = Raw::connect(&g);
    assert_eq!(
        c.call(MsgType::Introduce, b"4\0\x31\0\x31\0"),
        err("EACCES")
    );
    assert_eq!(c.call(MsgType::Release, b"0\0"), err("EACCES"));
    assert_eq!(c.call(MsgType::Control, b"x\0"), err("EACCES"));
    assert_eq!(c.call(MsgType::Write, b"/x\0v"), err("EACCES"));
    // Its own domain path, and nothing in it until dom0 creates the directory.
    assert_eq!(
        c.call(MsgType::GetDomainPath, b"3\0"),
        (MsgType::GetDomainPath as u32, b"/local/domain/3\0".to_vec())
    );
    assert_eq!(c.call(MsgType::Write, b"data\0v"), err("EACCES"));
    // Releasing the domain closes its connections and socket.
    d.release(3);
    assert!(c.closed());
    assert!(!g.exists());
}

#[test]
fn the_daemon_binary_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("socket");
    let mut child = Command::new(env!("CARGO_BIN_EXE_netstage-xenstored"))
        .arg("--socket")
        .arg(&sock)
        .args(["--introduce", "4"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !dir.path().join("dom4.sock").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "daemon did not start"
        );
        thread::sleep(Duration::from_millis(10));
    }
    ok(xs(&sock, "xenstore-write", &["/from-utils", "1"]));
    assert_eq!(ok(xs(&sock, "xenstore-read", &["/from-utils"])), "1\n");
    // SAFETY-free signalling through the kill(1) command.
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!sock.exists() && !dir.path().join("dom4.sock").exists());
    // A second daemon refuses a socket that is in use.
    let (_d, d) = daemon();
    let e = Xenstored::start(XenstoredConfig {
        socket: d.socket().to_path_buf(),
        domain_dir: dir.path().to_path_buf(),
    })
    .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
}

/// `--quota NAME=N` holds guests to it, as C xenstored's; a name that is not a quota is
/// refused before the daemon starts, naming the quotas.
#[test]
fn the_daemon_binary_takes_quotas() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("socket");
    let mut child = Command::new(env!("CARGO_BIN_EXE_netstage-xenstored"))
        .arg("--socket")
        .arg(&sock)
        .args(["--introduce", "4", "--quota", "nodes=3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let guest = dir.path().join("dom4.sock");
    let t = Instant::now();
    while !guest.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "daemon did not start"
        );
        thread::sleep(Duration::from_millis(10));
    }
    // Its home, as a toolstack makes it: owned by the guest.
    ok(xs(&sock, "xenstore-write", &["/local/domain/4/home", ""]));
    ok(xs(&sock, "xenstore-chmod", &["/local/domain/4/home", "n4"]));
    // The guest may own 3 nodes: its home and two more.
    let writes: Vec<bool> = (0..4)
        .map(|i| {
            xs(&guest, "xenstore-write", &[&format!("home/n{i}"), "x"])
                .status
                .success()
        })
        .collect();
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(child.wait().unwrap().success());
    assert_eq!(writes, [true, true, false, false]);
    let bad = Command::new(env!("CARGO_BIN_EXE_netstage-xenstored"))
        .arg("--socket")
        .arg(dir.path().join("other"))
        .args(["--quota", "bogus=1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--quota")
            && err.contains("no quota named \"bogus\"")
            && err.contains("transaction-nodes"),
        "{err}"
    );
    // A negative domain id is a bad value of --introduce, not an unknown argument.
    let bad = Command::new(env!("CARGO_BIN_EXE_netstage-xenstored"))
        .arg("--socket")
        .arg(dir.path().join("other"))
        .args(["--introduce", "-3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("invalid value '-3' for '--introduce"), "{err}");
}
