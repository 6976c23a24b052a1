//! The emulated hypervisor: grants checked as Xen checks them, in every cost mode; event
//! channels between threads and between processes.

use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use netstage_platform::sim::{CostMode, DomainConfig, ModelCost, SimDomain, SimWorld};
use netstage_platform::{
    DomainInfo, EventChannels, EventPort, ForeignRef, GrantCopyBatch, GrantExport, GrantImport,
    GrantStatus, PlatformError,
};

const FRONT: u16 = 1;
const BACK: u16 = 0;

fn modes() -> Vec<CostMode> {
    vec![
        CostMode::Kernel,
        CostMode::None,
        CostMode::Model(ModelCost {
            call_ns: 100,
            copy_ns: 50,
            copy_to_ns: 60,
            map_ns: 200,
            unmap_ns: 300,
        }),
    ]
}

fn world(cost: CostMode) -> (SimWorld, SimDomain, SimDomain) {
    let w = SimWorld::create_temp().unwrap();
    let cfg = DomainConfig {
        mem_pages: 256,
        grant_entries: 128,
        ports: 16,
        cost,
        ..DomainConfig::default()
    };
    let front = w.create_domain(FRONT, cfg.clone()).unwrap();
    let back = w.create_domain(BACK, cfg).unwrap();
    (w, front, back)
}

fn grant_err(r: Result<impl std::fmt::Debug, PlatformError>) -> GrantStatus {
    match r {
        Err(PlatformError::Grant { status, .. }) => status,
        other => panic!("expected a grant error, got {other:?}"),
    }
}

#[test]
fn cost_modes_parse_and_print() {
    for s in ["kernel", "none", "model:400,60,9000,28000"] {
        assert_eq!(s.parse::<CostMode>().unwrap().to_string(), s);
    }
    for bad in ["", "fast", "model:", "model:1,2,3", "model:1,2,3,x"] {
        assert!(bad.parse::<CostMode>().is_err(), "{bad}");
    }
}

#[test]
fn maps_see_the_granters_bytes_and_respect_permissions() {
    for cost in modes() {
        let (_w, front, back) = world(cost);
        let ro = front.share(BACK, 2, false).unwrap();
        let rw = front.share(BACK, 1, true).unwrap();
        ro.mem.write_at(4096 + 10, b"hello").unwrap();
        let m = back.map(FRONT, &ro.grefs, false).unwrap();
        let mut b = [0u8; 5];
        m.read_at(4096 + 10, &mut b).unwrap();
        assert_eq!(&b, b"hello", "{cost}");
        assert!(!m.is_writable());
        assert!(m.write_at(0, b"x").is_err());
        // Writable map of a read-only grant.
        assert_eq!(
            grant_err(back.map(FRONT, &ro.grefs[..1], true)),
            GrantStatus::PermissionDenied
        );
        // A writable grant can be written through.
        let w = back.map(FRONT, &rw.grefs, true).unwrap();
        w.write_at(100, b"back").unwrap();
        let mut b = [0u8; 4];
        rw.mem.read_at(100, &mut b).unwrap();
        assert_eq!(&b, b"back");
        // Another domain may not use the grant; bad refs; unknown domains.
        assert_eq!(
            grant_err(front.map(FRONT, &ro.grefs, false)),
            GrantStatus::PermissionDenied
        );
        assert_eq!(
            grant_err(back.map(FRONT, &[3], false)),
            GrantStatus::BadGntref
        );
        assert_eq!(
            grant_err(back.map(FRONT, &[100_000], false)),
            GrantStatus::BadGntref
        );
        assert!(matches!(
            back.map(9, &[8], false),
            Err(PlatformError::NoDomain { .. })
        ));
        let c = back.counters();
        assert_eq!(c.maps, 3, "{cost}");
        drop(m);
        drop(w);
        assert_eq!(back.counters().unmaps, 3, "{cost}");
        if cost == CostMode::Kernel {
            assert!(back.counters().kernel_crossings >= 4);
        } else {
            assert_eq!(back.counters().kernel_crossings, 0);
        }
    }
}

#[test]
fn end_access_fails_while_mapped_and_the_grant_dies_after() {
    for cost in modes() {
        let (_w, front, back) = world(cost);
        let p = front.share(BACK, 3, false).unwrap();
        let m = back.map(FRONT, &p.grefs[1..], false).unwrap();
        match front.end_access(&p) {
            Err(PlatformError::GrantInUse { gref, dom }) => {
                assert_eq!((gref, dom), (p.grefs[1], BACK));
            }
            other => panic!("{other:?}"),
        }
        // Nothing was revoked: the first page can still be mapped.
        drop(back.map(FRONT, &p.grefs[..1], false).unwrap());
        drop(m);
        front.end_access(&p).unwrap();
        assert_eq!(
            grant_err(back.map(FRONT, &p.grefs[..1], false)),
            GrantStatus::BadGntref
        );
        assert_eq!(front.counters().granted_pages, 3);
        drop(p);
        assert_eq!(front.counters().granted_pages, 0);
    }
}

#[test]
fn dropping_a_share_while_mapped_defers_its_pages() {
    let (_w, front, back) = world(CostMode::None);
    let p = front.share(BACK, 1, true).unwrap();
    let g = p.grefs[0];
    let m = back.map(FRONT, &[g], true).unwrap();
    drop(p);
    // Still granted and mapped: the backend keeps working on the page.
    m.write_at(0, b"still here").unwrap();
    assert_eq!(front.counters().granted_pages, 1);
    drop(m);
    // The next share retries the revocation and frees the page.
    let q = front.share(BACK, 1, false).unwrap();
    assert_eq!(front.counters().granted_pages, 1);
    drop(q);
    assert_eq!(front.counters().granted_pages, 0);
}

#[test]
fn shared_pages_are_zeroed() {
    let (_w, front, back) = world(CostMode::None);
    let p = front.share(BACK, 1, true).unwrap();
    p.mem.fill(0, 4096, 0xee).unwrap();
    front.end_access(&p).unwrap();
    drop(p);
    let q = front.share(BACK, 1, false).unwrap();
    let m = back.map(FRONT, &q.grefs, false).unwrap();
    let mut b = vec![1u8; 4096];
    m.read_at(0, &mut b).unwrap();
    assert!(b.iter().all(|x| *x == 0));
}

#[test]
fn a_granter_pointing_at_foreign_frames_gets_bad_page() {
    let (w, front, back) = world(CostMode::None);
    let p = front.share(BACK, 1, false).unwrap();
    // The guest scribbles a frame number beyond its memory into its own entry.
    let table = std::fs::OpenOptions::new()
        .write(true)
        .open(w.path().join("dom1/gnttab"))
        .unwrap();
    use std::os::unix::fs::FileExt;
    table
        .write_all_at(&100_000u32.to_le_bytes(), u64::from(p.grefs[0]) * 8 + 4)
        .unwrap();
    assert_eq!(
        grant_err(back.map(FRONT, &p.grefs, false)),
        GrantStatus::BadPage
    );
    // The failed attempt left no pin behind.
    front.end_access(&p).unwrap();
}

#[test]
fn copy_batches_report_a_status_per_op() {
    for cost in modes() {
        let (_w, front, back) = world(cost);
        let tx = front.share(BACK, 1, false).unwrap();
        let rx = front.share(BACK, 1, true).unwrap();
        let payload: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
        tx.mem.write_at(96, &payload).unwrap();
        let mut got = vec![0u8; 1500];
        let mut small = [0u8; 8];
        let mut small2 = [0u8; 8];
        let mut bad = [0u8; 200];
        let reply = b"response bytes".to_vec();
        let mut batch = GrantCopyBatch::new();
        let at = |gref, offset| ForeignRef {
            dom: FRONT,
            gref,
            offset,
        };
        batch.from_foreign(at(tx.grefs[0], 96), &mut got);
        batch.from_foreign(at(tx.grefs[0], 4000), &mut bad); // crosses the page
        batch.to_foreign(&reply, at(tx.grefs[0], 0)); // read-only grant
        batch.to_foreign(&reply, at(rx.grefs[0], 7));
        batch.from_foreign(at(77, 0), &mut small); // never granted
        batch.from_foreign(
            ForeignRef {
                dom: 42,
                gref: 8,
                offset: 0,
            },
            &mut small2,
        );
        back.copy(&mut batch).unwrap();
        assert_eq!(
            batch.status,
            vec![
                GrantStatus::Okay,
                GrantStatus::BadCopyArg,
                GrantStatus::PermissionDenied,
                GrantStatus::Okay,
                GrantStatus::BadGntref,
                GrantStatus::BadDomain
            ],
            "{cost}"
        );
        assert!(!batch.all_okay());
        drop(batch);
        assert_eq!(got, payload);
        let mut b = vec![0u8; reply.len()];
        rx.mem.read_at(7, &mut b).unwrap();
        assert_eq!(b, reply);
        let c = back.counters();
        assert_eq!(
            (c.hypercalls, c.copy_ops, c.copy_failures),
            (1, 6, 4),
            "{cost}"
        );
        assert_eq!(c.copy_bytes, 1500 + reply.len() as u64);
        assert_eq!(
            c.kernel_crossings,
            if cost == CostMode::Kernel { 2 } else { 0 }
        );
        // Copies leave no pins: both grants can be revoked.
        front.end_access(&tx).unwrap();
        front.end_access(&rx).unwrap();
    }
}

#[test]
fn a_copy_in_flight_blocks_revocation() {
    // Pins are visible in the shared entry while an op holds them: simulate by mapping, which
    // uses the same pin path, then check the flags the granter sees.
    let (w, front, back) = world(CostMode::Kernel);
    let p = front.share(BACK, 1, true).unwrap();
    let m = back.map(FRONT, &p.grefs, true).unwrap();
    let raw = std::fs::read(w.path().join("dom1/gnttab")).unwrap();
    let off = p.grefs[0] as usize * 8;
    let flags = u16::from_le_bytes([raw[off], raw[off + 1]]);
    use netstage_platform::sim::{GTF_PERMIT_ACCESS, GTF_READING, GTF_WRITING};
    assert_eq!(flags, GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    drop(m);
    let raw = std::fs::read(w.path().join("dom1/gnttab")).unwrap();
    let flags = u16::from_le_bytes([raw[off], raw[off + 1]]);
    assert_eq!(flags, GTF_PERMIT_ACCESS);
}

/// Closing a port whose connection is already gone must not touch the port number's next
/// connection: Xen's EVTCHNOP_close leaves the remote end alone unless it is still bound to
/// the port being closed.
#[test]
fn closing_a_stale_port_leaves_the_next_connection_bound() {
    let (_w, front, back) = world(CostMode::None);
    let fp = front.alloc_unbound(BACK).unwrap();
    let stale = back.bind_interdomain(FRONT, fp.port()).unwrap();
    // The frontend closes and opens again: the freed port number is reused.
    let first = fp.port();
    drop(fp);
    let fp = front.alloc_unbound(BACK).unwrap();
    assert_eq!(fp.port(), first, "the port number is reused");
    let fresh = back.bind_interdomain(FRONT, fp.port()).unwrap();
    assert_ne!(fresh.port(), stale.port());
    // The backend now drops its stale port of the first connection.
    drop(stale);
    fp.notify().unwrap();
    assert!(
        fresh.wait(Some(Duration::from_secs(1))).unwrap(),
        "the new connection lost its binding"
    );
    fresh.notify().unwrap();
    assert!(fp.wait(Some(Duration::from_secs(1))).unwrap());
}

#[test]
fn events_between_threads() {
    for cost in modes() {
        let (_w, front, back) = world(cost);
        let fp = front.alloc_unbound(BACK).unwrap();
        // Only the domain the port was allocated for may bind it.
        assert!(front.bind_interdomain(FRONT, fp.port()).is_err());
        assert!(back.bind_interdomain(FRONT, 999).is_err());
        let bp = back.bind_interdomain(FRONT, fp.port()).unwrap();
        assert!(
            back.bind_interdomain(FRONT, fp.port()).is_err(),
            "bound twice"
        );
        assert!(!bp.poll().unwrap());
        fp.notify().unwrap();
        fp.notify().unwrap(); // coalesces with the first
        assert!(bp.poll().unwrap());
        assert!(!bp.poll().unwrap());
        bp.notify().unwrap();
        assert!(fp.wait(Some(Duration::from_millis(100))).unwrap());
        let t = Instant::now();
        assert!(!fp.wait(Some(Duration::from_millis(30))).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(30));
        // A blocked waiter is woken by a notify from another thread.
        let bp = Arc::new(bp);
        let waiter = {
            let bp = Arc::clone(&bp);
            thread::spawn(move || bp.wait(Some(Duration::from_secs(10))).unwrap())
        };
        thread::sleep(Duration::from_millis(50));
        fp.notify().unwrap();
        assert!(waiter.join().unwrap());
        let s = bp.stats();
        assert_eq!(s.received, 2, "{cost}");
        assert!(s.blocked >= 1, "{cost}: {s:?}");
        assert_eq!(fp.stats().sent, 3);
        // A local wake-up ends a wait without counting as an event from the peer.
        bp.wake().unwrap();
        assert!(bp.wait(Some(Duration::from_secs(1))).unwrap());
        assert_eq!(bp.stats().received, 2);
        // Closing one end leaves the other unbound: its notifications are dropped.
        drop(fp);
        bp.notify().unwrap();
    }
}

/// The child half of `events_and_grants_between_processes`, run by it as a separate
/// process.
#[test]
#[ignore = "helper: spawned as a child process by events_and_grants_between_processes"]
fn child_backend_process() {
    let dir = std::env::var("NETSTAGE_TEST_WORLD").expect("spawned by the parent test");
    let w = SimWorld::open(std::path::Path::new(&dir)).unwrap();
    let back = w.create_domain(BACK, DomainConfig::default()).unwrap();
    let port: u32 = std::env::var("NETSTAGE_TEST_PORT")
        .unwrap()
        .parse()
        .unwrap();
    let gref: u32 = std::env::var("NETSTAGE_TEST_GREF")
        .unwrap()
        .parse()
        .unwrap();
    let bp = back.bind_interdomain(FRONT, port).unwrap();
    for round in 0..200u32 {
        assert!(
            bp.wait(Some(Duration::from_secs(10))).unwrap(),
            "round {round}"
        );
        let m = back.map(FRONT, &[gref], true).unwrap();
        let v: u32 = m.read_obj(0).unwrap();
        assert_eq!(v, round);
        m.write_obj(4, &(round * 2)).unwrap();
        drop(m);
        bp.notify().unwrap();
    }
}

#[test]
fn events_and_grants_between_processes() {
    let w = SimWorld::create_temp().unwrap();
    let front = w.create_domain(FRONT, DomainConfig::default()).unwrap();
    let p = front.share(BACK, 1, true).unwrap();
    let fp = front.alloc_unbound(BACK).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_backend_process",
            "--ignored",
            "--test-threads=1",
        ])
        .stdout(std::process::Stdio::null())
        .env("NETSTAGE_TEST_WORLD", w.path())
        .env("NETSTAGE_TEST_PORT", fp.port().to_string())
        .env("NETSTAGE_TEST_GREF", p.grefs[0].to_string())
        .spawn()
        .unwrap();
    // Wait for the child to bind.
    let t = Instant::now();
    while !w.path().join("dom0/evtchn").exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "child never started");
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(100));
    for round in 0..200u32 {
        p.mem.write_obj(0, &round).unwrap();
        fp.notify().unwrap();
        assert!(
            fp.wait(Some(Duration::from_secs(10))).unwrap(),
            "round {round}"
        );
        let v: u32 = p.mem.read_obj(4).unwrap();
        assert_eq!(v, round * 2);
    }
    assert!(front.domain_alive(BACK));
    assert!(child.wait().unwrap().success());
    assert_eq!(fp.stats().received, 200);
    assert!(front.counters().granted_pages >= 1);
    // The child's domain is destroyed with its process; its id can be used again.
    assert!(!front.domain_alive(BACK));
    assert!(front.domain_alive(FRONT));
    front.forget_domain(BACK);
    let again = w.create_domain(BACK, DomainConfig::default()).unwrap();
    let m = again.map(FRONT, &p.grefs, true).unwrap();
    assert_eq!(m.read_obj::<u32>(4).unwrap(), 199 * 2);
}

/// Child of `grants_held_by_a_dead_domain_are_released`: maps a grant and dies holding it.
#[test]
#[ignore = "helper: spawned as a child process by grants_held_by_a_dead_domain_are_released"]
fn child_maps_and_dies() {
    let dir = std::env::var("NETSTAGE_TEST_WORLD").expect("spawned by the parent test");
    let gref: u32 = std::env::var("NETSTAGE_TEST_GREF")
        .unwrap()
        .parse()
        .unwrap();
    let w = SimWorld::open(std::path::Path::new(&dir)).unwrap();
    let back = w.create_domain(BACK, DomainConfig::default()).unwrap();
    let m = back.map(FRONT, &[gref], true).unwrap();
    m.write_at(0, b"was here").unwrap();
    std::process::exit(0); // without unmapping
}

#[test]
fn grants_held_by_a_dead_domain_are_released() {
    let w = SimWorld::create_temp().unwrap();
    let front = w.create_domain(FRONT, DomainConfig::default()).unwrap();
    let p = front.share(BACK, 1, true).unwrap();
    let st = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_maps_and_dies",
            "--ignored",
            "--test-threads=1",
        ])
        .env("NETSTAGE_TEST_WORLD", w.path())
        .env("NETSTAGE_TEST_GREF", p.grefs[0].to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let mut b = [0u8; 8];
    p.mem.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"was here");
    // The dead mapper's pin still blocks revocation until the toolstack's view says it is
    // gone and the granter forgets it.
    assert!(matches!(
        front.end_access(&p),
        Err(PlatformError::GrantInUse { .. })
    ));
    assert!(!front.domain_alive(BACK));
    front.forget_domain(BACK);
    front.end_access(&p).unwrap();
}

/// A granter that holds its own grant-table lock (the word lies in its shared file) cannot
/// make a grantee spin forever: the operation fails with a general error.
#[test]
fn a_granter_that_never_releases_its_lock_gets_a_general_error() {
    let (w, front, back) = world(CostMode::None);
    let p = front.share(BACK, 1, false).unwrap();
    let active = std::fs::OpenOptions::new()
        .write(true)
        .open(w.path().join("dom1/active"))
        .unwrap();
    use std::os::unix::fs::FileExt;
    // Process 1 lives for as long as the machine: the lock is never taken over.
    active.write_all_at(&1u32.to_le_bytes(), 0).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let grefs = p.grefs.clone();
    std::thread::spawn(move || {
        let _ = tx.send(grant_err(back.map(FRONT, &grefs, false)));
    });
    let status = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the map spun on the granter's lock");
    assert_eq!(status, GrantStatus::GeneralError);
    active.write_all_at(&0u32.to_le_bytes(), 0).unwrap();
}
