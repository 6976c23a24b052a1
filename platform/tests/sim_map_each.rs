//! Mapping many grants each as a page of its own with one call (`GrantImport::map_each`),
//! as Xen's batched `GNTTABOP_map_grant_ref`: a status per page, one call charged to map
//! and one to unmap the batch, pins held until the unmap, in every cost mode (`kernel`:
//! an mmap per run of consecutive frames, one call to unmap them all).

use netstage_platform::sim::{CostMode, DomainConfig, SimDomain, SimWorld};
use netstage_platform::{
    GrantExport, GrantImport, GrantRef, GrantStatus, MappedPages, PlatformError, SharedPages,
};

const FRONT: u16 = 1;
const BACK: u16 = 0;

const MODES: [&str; 3] = ["kernel", "none", "model:0,0,0,0"];

struct Pair {
    _world: SimWorld,
    front: SimDomain,
    back: SimDomain,
    /// Four pages granted read-only, each marked with its number.
    ro: SharedPages,
    /// Two pages granted writable.
    rw: SharedPages,
}

fn pair(mode: &str) -> Pair {
    let world = SimWorld::create_temp().unwrap();
    let cfg = DomainConfig {
        mem_pages: 64,
        grant_entries: 64,
        cost: mode.parse::<CostMode>().unwrap(),
        ..DomainConfig::default()
    };
    let front = world.create_domain(FRONT, cfg.clone()).unwrap();
    let back = world.create_domain(BACK, cfg).unwrap();
    let ro = front.share(BACK, 4, false).unwrap();
    for i in 0..4 {
        ro.mem.write_at(i * 4096, &[b'0' + i as u8; 8]).unwrap();
    }
    let rw = front.share(BACK, 2, true).unwrap();
    Pair {
        _world: world,
        front,
        back,
        ro,
        rw,
    }
}

fn first_byte(pages: &MappedPages, i: usize) -> u8 {
    let mut b = [0u8; 1];
    pages.page(i).unwrap().read_at(0, &mut b).unwrap();
    b[0]
}

fn statuses(pages: &MappedPages) -> Vec<GrantStatus> {
    (0..pages.len()).map(|i| pages.status(i).unwrap()).collect()
}

#[test]
fn scattered_pages_map_each_on_its_own_with_one_call_and_unmap_with_one() {
    for mode in MODES {
        let p = pair(mode);
        let g = &p.ro.grefs;
        let order: Vec<GrantRef> = vec![g[3], g[0], g[1], g[2], g[2]];
        let before = p.back.counters();
        let mut pages = MappedPages::with_capacity(8);
        p.back.map_each(FRONT, &order, false, &mut pages).unwrap();
        let mid = p.back.counters();
        assert_eq!(mid.hypercalls - before.hypercalls, 1, "{mode}: one call");
        assert_eq!(mid.maps - before.maps, 5, "{mode}: a map per page");
        let got: Vec<u8> = (0..5).map(|i| first_byte(&pages, i)).collect();
        assert_eq!(got, b"30122", "{mode}: each page is its own grant's");
        let crossings = mid.kernel_crossings - before.kernel_crossings;
        match mode {
            // Frames 3, 0, 1, 2, 2: runs [3], [0, 1, 2], [2].
            "kernel" => assert_eq!(crossings, 3, "{mode}: an mmap per run of frames"),
            _ => assert_eq!(crossings, 0, "{mode}: views, no system call"),
        }
        // Held: the granter cannot revoke while mapped.
        assert!(matches!(
            p.front.end_access(&p.ro),
            Err(PlatformError::GrantInUse { .. })
        ));
        let pins = p.front.grant_pins().unwrap();
        let readers = |r: GrantRef| pins.iter().find(|x| x.gref == r).map(|x| x.readers);
        assert_eq!(readers(g[2]), Some(2), "{mode}: mapped twice, pinned twice");
        assert_eq!(readers(g[0]), Some(1), "{mode}");
        pages.unmap();
        let after = p.back.counters();
        assert_eq!(
            after.hypercalls - mid.hypercalls,
            1,
            "{mode}: one unmap call"
        );
        assert_eq!(after.unmaps - mid.unmaps, 5, "{mode}: every page unmapped");
        let unmap_crossings = after.kernel_crossings - mid.kernel_crossings;
        assert_eq!(unmap_crossings, u64::from(mode == "kernel"), "{mode}");
        assert!(p.front.grant_pins().unwrap().is_empty(), "{mode}: unpinned");
        assert!(pages.is_empty() && pages.page(0).is_err());
        // Nothing left to unmap: no call.
        pages.unmap();
        assert_eq!(p.back.counters(), after, "{mode}");
        p.front.end_access(&p.ro).unwrap();
    }
}

#[test]
fn a_bad_grant_fails_only_its_own_page() {
    for mode in MODES {
        let p = pair(mode);
        let (ro, rw) = (&p.ro.grefs, &p.rw.grefs);
        p.front.end_page_access(&p.ro, 1).unwrap();
        // Writable: a read-only grant is refused, a revoked one and one out of the table
        // are no grants; the writable grants map.
        let order = [rw[0], ro[0], ro[1], 9999, rw[1]];
        let before = p.back.counters();
        let mut pages = MappedPages::default();
        p.back.map_each(FRONT, &order, true, &mut pages).unwrap();
        use GrantStatus::*;
        assert_eq!(
            statuses(&pages),
            [Okay, PermissionDenied, BadGntref, BadGntref, Okay],
            "{mode}"
        );
        assert_eq!(pages.mapped(), 2);
        match pages.page(1) {
            Err(PlatformError::Grant { gref, status, .. }) => {
                assert_eq!((gref, status), (ro[0], PermissionDenied))
            }
            other => panic!("{mode}: {other:?}"),
        }
        // The writable pages are the granter's memory.
        let page = pages.page(4).unwrap();
        assert!(page.is_writable());
        page.write_at(100, b"from the backend").unwrap();
        let mut got = [0u8; 16];
        p.rw.mem.read_at(4096 + 100, &mut got).unwrap();
        assert_eq!(&got, b"from the backend", "{mode}");
        let mid = p.back.counters();
        assert_eq!(mid.maps - before.maps, 2, "{mode}: only pages mapped count");
        assert_eq!(mid.hypercalls - before.hypercalls, 1, "{mode}");
        let pinned: Vec<GrantRef> = p
            .front
            .grant_pins()
            .unwrap()
            .iter()
            .map(|x| x.gref)
            .collect();
        assert_eq!(pinned, [rw[0], rw[1]], "{mode}: failed pages hold no pin");
        // The next map unmaps the last one first; dropping unmaps too.
        p.back.map_each(FRONT, &ro[2..], false, &mut pages).unwrap();
        let next = p.back.counters();
        assert_eq!(next.unmaps - mid.unmaps, 2, "{mode}");
        assert_eq!(next.hypercalls - mid.hypercalls, 2, "{mode}: unmap and map");
        assert!(
            !pages.page(0).unwrap().is_writable(),
            "{mode}: read-only map"
        );
        assert!(pages.page(0).unwrap().write_at(0, b"x").is_err(), "{mode}");
        drop(pages);
        let end = p.back.counters();
        assert_eq!(end.unmaps - next.unmaps, 2, "{mode}");
        assert!(p.front.grant_pins().unwrap().is_empty(), "{mode}");
    }
}

#[test]
fn nothing_mapped_is_one_call_and_no_unmap() {
    for mode in MODES {
        let p = pair(mode);
        let before = p.back.counters();
        let mut pages = MappedPages::default();
        p.back
            .map_each(FRONT, &[9999, 9998], false, &mut pages)
            .unwrap();
        assert_eq!(pages.mapped(), 0);
        p.back
            .map_each(7, &[p.ro.grefs[0]], false, &mut pages)
            .unwrap();
        assert_eq!(statuses(&pages), [GrantStatus::BadDomain], "{mode}");
        pages.unmap();
        let after = p.back.counters();
        assert_eq!(
            after.hypercalls - before.hypercalls,
            2,
            "{mode}: two map calls"
        );
        assert_eq!((after.maps, after.unmaps), (before.maps, before.unmaps));
        assert!(p.back.map_each(FRONT, &[], false, &mut pages).is_err());
    }
}
