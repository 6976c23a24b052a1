//! Unit tests of `ring::sring`: sizes, flow, notifications, hostile indexes.

use std::sync::atomic::Ordering;

use netstage_ring::netif::{NetifTxRequest, NetifTxResponse, TxRing};
use netstage_ring::sring::*;
use netstage_ring::SharedMem;

fn req(id: u16) -> NetifTxRequest {
    NetifTxRequest {
        gref: 100 + u32::from(id),
        offset: 0,
        flags: 0,
        id,
        size: 60,
    }
}

#[test]
fn sizes_match_ring_h() {
    assert_eq!(entry_size::<TxRing>(), 12);
    assert_eq!(ring_size::<TxRing>(4096), 256);
    assert_eq!(ring_size::<TxRing>(8192), 512);
    assert_eq!(ring_size::<TxRing>(64), 0);
    assert!(matches!(
        FrontRing::<TxRing>::init(SharedMem::new_zeroed(70)),
        Err(RingError::TooSmall { .. })
    ));
}

#[test]
fn requests_and_responses_flow_with_notifications() {
    let mem = SharedMem::new_zeroed(4096);
    let mut f = FrontRing::<TxRing>::init(mem.clone()).unwrap();
    let mut b = BackRing::<TxRing>::attach(mem).unwrap();
    assert!(!b.final_check_for_requests().unwrap());
    for i in 0..3 {
        f.put_request(&req(i)).unwrap();
    }
    // The backend armed req_event = 1, inside (0, 3]: notify.
    assert!(f.push_requests_and_check_notify().unwrap());
    assert_eq!(b.refresh_requests().unwrap(), 3);
    for i in 0..3 {
        let r = b.take_request().unwrap().unwrap();
        assert_eq!(r.id, i);
    }
    assert_eq!(b.take_request().unwrap(), None);
    // No event re-armed: further pushes do not notify.
    f.put_request(&req(3)).unwrap();
    assert!(!f.push_requests_and_check_notify().unwrap());
    for i in 0..3 {
        b.put_response(&NetifTxResponse { id: i, status: 0 })
            .unwrap();
    }
    // rsp_event is still 1 from SHARED_RING_INIT, inside (0, 3]: notify.
    assert!(b.push_responses_and_check_notify().unwrap());
    assert_eq!(f.refresh_responses().unwrap(), 3);
    // The frontend did not re-arm: the next push is silent.
    b.refresh_requests().unwrap();
    b.take_request().unwrap();
    b.put_response(&NetifTxResponse { id: 3, status: 0 })
        .unwrap();
    assert!(!b.push_responses_and_check_notify().unwrap());
}

#[test]
fn full_ring_and_one_to_one_responses() {
    let mem = SharedMem::new_zeroed(4096);
    let mut f = FrontRing::<TxRing>::init(mem.clone()).unwrap();
    let mut b = BackRing::<TxRing>::attach(mem).unwrap();
    for i in 0..256 {
        f.put_request(&req(i)).unwrap();
    }
    assert_eq!(f.put_request(&req(0)), Err(RingError::Full { size: 256 }));
    f.push_requests().unwrap();
    assert_eq!(
        b.put_response(&NetifTxResponse { id: 0, status: 0 }),
        Err(RingError::NoRequestToAnswer)
    );
    assert_eq!(b.refresh_requests().unwrap(), 256);
    while b.take_request().unwrap().is_some() {}
    assert_eq!(b.unanswered(), 256);
}

#[test]
fn hostile_indexes_are_typed_errors() {
    let mem = SharedMem::new_zeroed(4096);
    let mut f = FrontRing::<TxRing>::init(mem.clone()).unwrap();
    let mut b = BackRing::<TxRing>::attach(mem.clone()).unwrap();
    let req_prod = mem.word(REQ_PROD_OFFSET).unwrap();
    let rsp_prod = mem.word(RSP_PROD_OFFSET).unwrap();
    req_prod.store(257, Ordering::Relaxed).unwrap();
    assert!(matches!(
        b.refresh_requests(),
        Err(RingError::RequestProdOverflow { .. })
    ));
    req_prod.store(u32::MAX, Ordering::Relaxed).unwrap();
    assert!(matches!(
        b.refresh_requests(),
        Err(RingError::RequestProdOverflow { .. })
    ));
    // A response when no request was published.
    rsp_prod.store(1, Ordering::Relaxed).unwrap();
    assert!(matches!(
        f.refresh_responses(),
        Err(RingError::ResponseProdOverflow { .. })
    ));
    // Attach refuses an inconsistent ring.
    req_prod.store(1000, Ordering::Relaxed).unwrap();
    assert!(matches!(
        BackRing::<TxRing>::attach(mem),
        Err(RingError::AttachOverflow { .. })
    ));
}

/// A write prefetch of the next requests, of any count (none, more than are free) at every
/// position across the wrap, changes nothing: the requests put after it arrive as put.
#[test]
fn request_prefetch_hints_change_nothing_across_the_wrap() {
    let mem = SharedMem::new_zeroed(4096);
    let mut f = FrontRing::<TxRing>::init(mem.clone()).unwrap();
    let mut b = BackRing::<TxRing>::attach(mem).unwrap();
    for round in 0..10u16 {
        for n in [0, 1, 64, 256, u32::MAX] {
            f.prefetch_requests(n);
        }
        for i in 0..100 {
            f.put_request(&req(round * 100 + i)).unwrap();
        }
        f.push_requests().unwrap();
        b.refresh_requests().unwrap();
        for i in 0..100 {
            let r = b.take_request().unwrap().unwrap();
            assert_eq!(r.id, round * 100 + i);
            b.put_response(&NetifTxResponse {
                id: r.id,
                status: 0,
            })
            .unwrap();
        }
        b.push_responses().unwrap();
        f.refresh_responses().unwrap();
        while f.take_response().unwrap().is_some() {}
    }
}
