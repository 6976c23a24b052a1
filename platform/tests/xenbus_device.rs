//! XenStore over Linux's xenbus device (how a guest reaches it), tested without Xen.

use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};

/// Threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim() == name)
        .count()
}

/// The xenbus-device transport, on a FIFO that returns every message written to it (so each
/// request comes back as its own reply): requests go out whole, the reader thread routes the
/// reply by its id, and dropping the client ends the reader thread although a read on the
/// device cannot be interrupted.
#[test]
fn the_xenbus_device_transport_carries_messages_and_hangs_up() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("xenbus");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // The only test of this file: no other client's reader thread comes or goes meanwhile.
    let before = threads_named("xenstore-reader");
    let xs = XsClient::connect_device(&fifo).unwrap();
    // A READ's payload is the path and its NUL: that comes back as the value.
    assert_eq!(
        xs.read(NO_TX, "/local/domain/3/x").unwrap(),
        b"/local/domain/3/x\0"
    );
    assert_eq!(xs.read(NO_TX, "/a").unwrap(), b"/a\0");
    assert_eq!(threads_named("xenstore-reader"), before + 1);
    drop(xs);
    let t = std::time::Instant::now();
    while threads_named("xenstore-reader") > before {
        assert!(t.elapsed().as_secs() < 5, "the reader thread did not end");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
