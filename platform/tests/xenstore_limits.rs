//! What a guest can and cannot make the embedded xenstored do, tried from the guest's own
//! socket: replies within the wire protocol's payload limit, per-domain quotas with C
//! xenstored's names, defaults and error names, and the connection staying usable after an
//! error.

mod xenstore_common;

use netstage_platform::sim::xenstored::wire::{Errno, MsgType};
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};
use xenstore_common::{daemon, err, guest, Raw};

/// Three children with 2,100-character names under a guest's own directory: listing it
/// would need 6,303 payload bytes. C xenstored answers E2BIG and so does this one; the
/// connection keeps working.
#[test]
fn an_oversized_directory_listing_is_e2big_and_the_connection_lives_on() {
    let (_t, d) = daemon();
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
