//! Granting one page of a share again and ending its access, as Linux netfront does per
//! packet without persistent grants: an entry write and a check-and-clear, no hypercall.

use netstage_platform::sim::{DomainConfig, SimWorld};
use netstage_platform::{GrantExport, GrantImport, GrantStatus, PlatformError};

const FRONT: u16 = 1;
const BACK: u16 = 0;

fn grant_err<T: std::fmt::Debug>(r: Result<T, PlatformError>) -> GrantStatus {
    match r {
        Err(PlatformError::Grant { status, .. }) => status,
        other => panic!("expected a grant failure, got {other:?}"),
    }
}

#[test]
fn a_page_is_granted_and_revoked_alone_and_not_while_in_use() {
    let w = SimWorld::create_temp().unwrap();
    let cfg = DomainConfig {
        mem_pages: 64,
        grant_entries: 64,
        ..DomainConfig::default()
    };
    let front = w.create_domain(FRONT, cfg.clone()).unwrap();
    let back = w.create_domain(BACK, cfg).unwrap();
    let p = front.share(BACK, 2, false).unwrap();
    p.mem.write_at(4096, b"second").unwrap();
    front.end_page_access(&p, 1).unwrap();
    // Page 1 is revoked, page 0 is not.
    assert_eq!(
        grant_err(back.map(FRONT, &p.grefs[1..], false)),
        GrantStatus::BadGntref
    );
    drop(back.map(FRONT, &p.grefs[..1], false).unwrap());
    let before = back.counters().hypercalls + front.counters().hypercalls;
    assert_eq!(front.grant_page(&p, 1, BACK, false).unwrap(), p.grefs[1]);
    let m = back.map(FRONT, &p.grefs[1..], false).unwrap();
    let mut got = [0u8; 6];
    m.read_at(0, &mut got).unwrap();
    assert_eq!(&got, b"second");
    // Granting wrote the entry only; the map is the one call.
    assert_eq!(
        back.counters().hypercalls + front.counters().hypercalls,
        before + 1
    );
    match front.end_page_access(&p, 1) {
        Err(PlatformError::GrantInUse { dom, gref }) => assert_eq!((dom, gref), (BACK, p.grefs[1])),
        other => panic!("{other:?}"),
    }
    drop(m);
    front.end_page_access(&p, 1).unwrap();
    // Read-only stays read-only; a writable grant can be written.
    front.grant_page(&p, 1, BACK, false).unwrap();
    assert_eq!(
        grant_err(back.map(FRONT, &p.grefs[1..], true)),
        GrantStatus::PermissionDenied
    );
    front.end_page_access(&p, 1).unwrap();
    front.grant_page(&p, 1, BACK, true).unwrap();
    drop(back.map(FRONT, &p.grefs[1..], true).unwrap());
    // Only to the named domain.
    front.end_page_access(&p, 1).unwrap();
    front.grant_page(&p, 1, 7, false).unwrap();
    assert_eq!(
        grant_err(back.map(FRONT, &p.grefs[1..], false)),
        GrantStatus::PermissionDenied
    );
    // Out of range, or a share whose grants were all revoked, is refused.
    assert!(matches!(
        front.grant_page(&p, 2, BACK, false),
        Err(PlatformError::Invalid(_))
    ));
    front.end_access(&p).unwrap();
    assert!(matches!(
        front.grant_page(&p, 0, BACK, false),
        Err(PlatformError::Invalid(_))
    ));
    drop(p);
    assert_eq!(front.counters().granted_pages, 0);
}
