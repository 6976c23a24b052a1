//! Unit tests of the mock peers.

use netstage_ring::mock::*;
use netstage_ring::netif::{NetifTxRequest, NetifTxResponse, TxRing, NETIF_RSP_OKAY};

#[test]
fn mock_peers_talk() {
    let mem = ring_pages(1);
    let mut f = MockFrontend::<TxRing>::init(mem.clone()).unwrap();
    let mut b = MockBackend::<TxRing>::attach(mem.clone()).unwrap();
    let reqs: Vec<NetifTxRequest> = (0..300u16)
        .map(|id| NetifTxRequest {
            id,
            size: 60,
            ..Default::default()
        })
        .collect();
    assert_eq!(f.post(&reqs).unwrap(), 256);
    assert_eq!(
        b.serve(|r| NetifTxResponse {
            id: r.id,
            status: NETIF_RSP_OKAY
        })
        .unwrap(),
        256
    );
    let got = f.collect().unwrap();
    assert_eq!(got.len(), 256);
    assert!(got.iter().enumerate().all(|(i, r)| r.id == i as u16));
    HostilePeer::new(mem).set_req_prod(1000).unwrap();
    assert!(b
        .serve(|r| NetifTxResponse {
            id: r.id,
            status: 0
        })
        .is_err());
}
