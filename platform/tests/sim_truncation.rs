//! A domain's files cannot be truncated under a peer that mapped them: they are memfds
//! sealed against shrinking and growing, and a peer that asks for it
//! (`DomainConfig::sealed_peers_only`) refuses files that are not.

use std::fs::OpenOptions;
use std::io::ErrorKind;

use netstage_platform::sim::{DomainConfig, SimWorld, PAGE_SIZE};
use netstage_platform::{GrantExport, GrantImport, PlatformError};

const FRONT: u16 = 1;
const HAND_MADE: u16 = 7;

fn config() -> DomainConfig {
    DomainConfig {
        mem_pages: 64,
        grant_entries: 64,
        ports: 8,
        ..DomainConfig::default()
    }
}

#[test]
fn no_participant_can_shrink_or_grow_a_domain_s_files_under_a_peer() {
    let w = SimWorld::create_temp().unwrap();
    let front = w.create_domain(FRONT, config()).unwrap();
    let back = w.create_domain(0, config()).unwrap();
    let page = front.share(0, 1, true).unwrap();
    let m = back.map(FRONT, &page.grefs, true).unwrap();
    m.write_at(0, b"before").unwrap();
    for name in ["mem", "gnttab", "active", "evtchn"] {
        // What a hostile guest would do to its own files, through the path any
        // participant can open.
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(w.path().join(format!("dom{FRONT}/{name}")))
            .unwrap();
        let len = f.metadata().unwrap().len();
        for to in [0, len / 2, len + PAGE_SIZE as u64] {
            let e = f.set_len(to).expect_err("a sealed file changed size");
            assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{name} to {to}: {e}");
        }
        assert_eq!(f.metadata().unwrap().len(), len);
    }
    // The peer's mapping and the granter's tables still work.
    m.write_at(6, b" after").unwrap();
    let mut b = [0u8; 12];
    page.mem.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"before after");
    drop(m);
    front.end_access(&page).unwrap();
}

/// Makes domain `HAND_MADE`'s files by hand as plain files (which their maker could
/// truncate), as a participant written against the earlier ABI does.
fn hand_made_domain(w: &SimWorld) {
    let dir = w.path().join(format!("dom{HAND_MADE}"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("pid"), std::process::id().to_string()).unwrap();
    for (name, len) in [
        ("mem", 64 * PAGE_SIZE),
        ("gnttab", 64 * 8),
        ("active", 64 + 64 * 8),
        ("evtchn", 64 + 8 * 64),
    ] {
        let f = std::fs::File::create(dir.join(name)).unwrap();
        f.set_len(len as u64).unwrap();
    }
}

fn refused(r: Result<impl std::fmt::Debug, PlatformError>, dom: u16) -> String {
    match r {
        Err(PlatformError::NoDomain { dom: d, detail }) if d == dom => detail,
        other => panic!("expected domain {dom} refused, got {other:?}"),
    }
}

#[test]
fn a_peer_that_asks_for_sealed_files_refuses_plain_ones() {
    let w = SimWorld::create_temp().unwrap();
    hand_made_domain(&w);
    let strict = w
        .create_domain(
            0,
            DomainConfig {
                sealed_peers_only: true,
                ..config()
            },
        )
        .unwrap();
    let detail = refused(strict.map(HAND_MADE, &[8], false), HAND_MADE);
    assert!(detail.contains("sealed"), "{detail}");
    // So does the default, naming the file.
    let default = w.create_domain(3, config()).unwrap();
    let detail = refused(default.map(HAND_MADE, &[8], false), HAND_MADE);
    assert!(
        detail.contains(&format!("dom{HAND_MADE}/mem is a plain file")),
        "{detail}"
    );
    // The opt-out still takes them (the grant itself is then checked as ever).
    let lenient = w
        .create_domain(
            2,
            DomainConfig {
                sealed_peers_only: false,
                ..config()
            },
        )
        .unwrap();
    let r = lenient.map(HAND_MADE, &[8], false);
    assert!(
        matches!(r, Err(PlatformError::Grant { .. })),
        "{:?}",
        r.err()
    );
}

#[test]
fn a_dropped_domain_s_files_cannot_be_reached_through_its_links() {
    let w = SimWorld::create_temp().unwrap();
    let back = w.create_domain(0, config()).unwrap();
    let front = w.create_domain(FRONT, config()).unwrap();
    let page = front.share(0, 1, false).unwrap();
    drop(page);
    drop(front);
    // Descriptor numbers are reused at once: whatever file now has the number a link named,
    // it is not domain 1's.
    let _others: Vec<_> = (0..8)
        .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
        .collect();
    refused(back.map(FRONT, &[8], false), FRONT);
}
