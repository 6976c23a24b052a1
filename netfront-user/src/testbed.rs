//! Unit tests of [`FrontQueue`] against a backend written by hand over the sim platform's
//! grants (no XenStore, no netback).

use std::sync::Arc;
use std::time::Duration;

use netstage_fallback::{
    CopyPolicy, Design, Features, Gso, PacketBuf, PacketRef, PollMode, WhenFull,
};
use netstage_platform::sim::{DomainConfig, SimDomain, SimPort, SimWorld};
use netstage_platform::xenbus::VifPaths;
use netstage_platform::{EventChannels, EventPort, GrantImport};
use netstage_ring::flex::{self, FlexConsumer, FlexProducer};
use netstage_ring::netif::{
    GsoType, NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse, RxFlags, RxRing,
    TxFlags, TxRing,
};
use netstage_ring::sring::BackRing;
use netstage_ring::{SharedMem, XEN_PAGE_SIZE};

use crate::connect::{share_queue, Negotiated};
use crate::link::Shared;
use crate::{FrontQueue, FrontendConfig, FrontendError};

const FE: u16 = 5;

/// A queue and the backend's view of its rings.
struct Bed {
    _world: SimWorld,
    shared: Arc<Shared>,
    q: FrontQueue<SimDomain>,
    tx: BackRing<TxRing>,
    rx: BackRing<RxRing>,
    /// The RX requests posted at connect, in ring order.
    rx_posted: Vec<NetifRxRequest>,
    /// The posted RX buffers, mapped (writable) in ring order.
    rx_pool: SharedMem,
    port: SimPort,
    /// The backend's domain, to map grants the frontend names.
    back: SimDomain,
    /// The data ring's indexes page (`data-ring-ref`), for data-ring designs.
    data_ring_ref: Option<u32>,
}

fn bed(design: Design, want: Features) -> Bed {
    bed_answering_within(design, want, Duration::from_secs(30), PollMode::Block)
}

/// A grant-copy bed whose queue busy-polls and declares the backend gone after `answer`.
fn busy_bed(answer: Duration) -> Bed {
    bed_answering_within(Design::GrantCopy, SG, answer, PollMode::BusyPoll)
}

/// A bed whose queue, waiting as `poll` says, declares the backend gone after `answer`
/// without TX responses.
fn bed_answering_within(design: Design, want: Features, answer: Duration, poll: PollMode) -> Bed {
    let world = SimWorld::create_temp().unwrap();
    let cfg = DomainConfig {
        mem_pages: 4096,
        ..DomainConfig::default()
    };
    let back = world.create_domain(0, cfg.clone()).unwrap();
    let front = world.create_domain(FE, cfg).unwrap();
    let paths = VifPaths {
        frontend_dom: FE,
        backend_dom: 0,
        devid: 0,
        frontend: "f".into(),
        backend: "b".into(),
    };
    let neg = Negotiated {
        queues: 1,
        multi_queue: false,
        design,
    };
    let fcfg = FrontendConfig {
        design,
        want,
        poll,
        answer_timeout: answer,
        ..FrontendConfig::default()
    };
    let shared = Arc::new(Shared::for_vif(&paths));
    let mut keys = Vec::new();
    let q = share_queue(&front, &paths, &neg, &fcfg, 0, &shared, &mut keys).unwrap();
    let key = |k: &str| -> u32 {
        let path = format!("f/{k}");
        keys.iter()
            .find(|(p, _)| *p == path)
            .unwrap()
            .1
            .parse()
            .unwrap()
    };
    let map = |g: &[u32]| back.map(FE, g, true).unwrap();
    let tx: BackRing<TxRing> = BackRing::attach(map(&[key("tx-ring-ref")])).unwrap();
    let mut rx: BackRing<RxRing> = BackRing::attach(map(&[key("rx-ring-ref")])).unwrap();
    rx.refresh_requests().unwrap();
    let rx_posted: Vec<NetifRxRequest> = (0..crate::queue::POOL)
        .map(|_| rx.take_request().unwrap().unwrap())
        .collect();
    let grefs: Vec<u32> = rx_posted.iter().map(|r| r.gref).collect();
    let rx_pool = map(&grefs);
    let port = back.bind_interdomain(FE, key("event-channel")).unwrap();
    let data_ring_ref = keys
        .iter()
        .find(|(p, _)| p == "f/data-ring-ref")
        .map(|(_, v)| v.parse().unwrap());
    Bed {
        data_ring_ref,
        _world: world,
        shared,
        q,
        tx,
        rx,
        rx_posted,
        rx_pool,
        port,
        back,
    }
}

impl Bed {
    /// Answers every TX request (none with extras) with `status`; returns the requests.
    fn serve_tx(&mut self, status: i16) -> Vec<NetifTxRequest> {
        let mut reqs = Vec::new();
        self.tx.refresh_requests().unwrap();
        while let Some(r) = self.tx.take_request().unwrap() {
            reqs.push(r);
        }
        for r in &reqs {
            let rsp = NetifTxResponse { id: r.id, status };
            self.tx.put_response(&rsp).unwrap();
        }
        self.tx.push_responses().unwrap();
        reqs
    }

    /// Delivers `data` in RX buffer `slot` (posted in ring slot `slot`) with `status` (the
    /// length if `None`), and notifies.
    fn deliver(&mut self, slot: usize, data: &[u8], status: Option<i16>, flags: RxFlags) {
        self.rx_pool.write_at(slot * XEN_PAGE_SIZE, data).unwrap();
        self.answer_rx(slot, status.unwrap_or(data.len() as i16), flags);
    }

    /// The backend's ends of the data ring (it produces **in**, consumes **out**) and its
    /// indexes page.
    fn data_ring(&self) -> (FlexProducer, FlexConsumer, SharedMem) {
        let intf = self
            .back
            .map(FE, &[self.data_ring_ref.expect("a data-ring design")], true)
            .unwrap();
        let cfg = flex::read_intf_config(&intf, 9).unwrap();
        let data = self.back.map(FE, &cfg.refs, true).unwrap();
        let (prod, cons) = flex::open(flex::End::Backend, &intf, &data, cfg.order).unwrap();
        (prod, cons, intf)
    }

    /// Answers the RX request posted in ring slot `slot` with `status`, and notifies.
    fn answer_rx(&mut self, slot: usize, status: i16, flags: RxFlags) {
        let rsp = NetifRxResponse {
            id: slot as u16,
            offset: 0,
            flags: flags.bits(),
            status,
        };
        self.rx.put_response(&rsp).unwrap();
        self.rx.push_responses().unwrap();
        self.port.notify().unwrap();
    }
}

const SG: Features = Features {
    sg: true,
    ..Features::NONE
};

#[test]
fn a_queue_is_send() {
    fn send<T: Send>() {}
    send::<FrontQueue<SimDomain>>();
}

#[test]
fn send_burst_stops_at_the_rings_capacity_and_returns_the_count() {
    let mut b = bed(Design::GrantCopy, SG);
    let frame = [7u8; 60];
    let pkts = [PacketRef::new(&frame); 300];
    assert_eq!(b.q.send_burst(&pkts).unwrap(), 256);
    assert_eq!(b.q.tx_pending(), 256);
    assert_eq!(b.q.send_burst(&pkts).unwrap(), 0);
    let reqs = b.serve_tx(0);
    assert_eq!(reqs.len(), 256);
    // The full ring takes nothing until the responses are reaped; reaped after the first
    // pass put nothing on it, the second pass takes a full burst again.
    assert_eq!(b.q.send_burst(&pkts[..100]).unwrap(), 100);
    let m = b.shared.metrics.snapshot();
    assert_eq!(m.tx_packets, 356);
    assert_eq!(m.tx_bytes, 356 * 60);
    assert_eq!(m.tx_errors, 0);
}

#[test]
fn multi_page_packets_take_one_id_per_page() {
    let mut b = bed(Design::GrantCopy, SG);
    let big = vec![1u8; 65535];
    let pkts = [PacketRef::new(&big); 20];
    // 16 pages each: 16 packets fill the 256 ids. A call stops after BURST_BYTES, so it
    // takes two of them; calls go on until the ids run out.
    let mut sent = 0;
    loop {
        let n = b.q.send_burst(&pkts[sent..]).unwrap();
        assert!(n <= 2, "one call took {n} packets of 64 KiB");
        if n == 0 {
            break;
        }
        sent += n;
    }
    assert_eq!(sent, 16);
    let reqs = b.serve_tx(0);
    assert_eq!(reqs.len(), 256);
    assert_eq!(reqs[0].size, 65535);
}

#[test]
fn the_first_invalid_packet_stops_the_burst() {
    let mut b = bed(Design::GrantCopy, Features::NONE);
    let ok = [1u8; 60];
    let big = [1u8; 5000];
    let gso = PacketRef {
        data: &ok,
        gso: Some(Gso {
            gso_type: GsoType::TcpV4,
            mss: 1400,
        }),
        csum_blank: true,
    };
    for bad in [PacketRef::new(&[]), PacketRef::new(&big), gso] {
        let r = b.q.send_burst(&[bad, PacketRef::new(&ok)]);
        assert!(matches!(r, Err(FrontendError::BadPacket { .. })), "{r:?}");
        let n =
            b.q.send_burst(&[PacketRef::new(&ok), bad, PacketRef::new(&ok)]);
        assert_eq!(n.unwrap(), 1);
    }
    assert_eq!(b.serve_tx(0).len(), 3);
    assert!(b.shared.fault_reason().is_none());
}

#[test]
fn recv_burst_copies_packets_out_and_drops_bad_ones() {
    let mut b = bed(Design::GrantCopy, SG);
    let mut bufs = PacketBuf::pool(4);
    assert_eq!(b.q.recv_burst(&mut bufs).unwrap(), 0);
    b.deliver(0, &[9u8; 100], None, RxFlags::CSUM_BLANK);
    b.deliver(1, &[0u8; 10], Some(-1), RxFlags::empty());
    b.deliver(2, &[3u8; 1500], None, RxFlags::empty());
    assert!(b.q.wait(Some(Duration::ZERO)).unwrap());
    assert_eq!(b.q.recv_burst(&mut bufs).unwrap(), 2);
    assert_eq!(bufs[0].data(), &[9u8; 100][..]);
    assert!(bufs[0].csum_blank);
    assert_eq!(bufs[1].data(), &[3u8; 1500][..]);
    let m = b.shared.metrics.snapshot();
    assert_eq!((m.rx_packets, m.rx_dropped, m.rx_bytes), (2, 1, 1600));
    // The three buffers were posted again.
    b.rx.refresh_requests().unwrap();
    assert_eq!(b.rx.pending_requests(), 3);
}

#[test]
fn rx_packets_left_on_the_ring_at_close_are_counted_unread() {
    let mut b = bed(Design::GrantCopy, SG);
    let mut bufs = PacketBuf::pool(1);
    for slot in 0..3 {
        b.deliver(slot, &[7u8; 60], None, RxFlags::empty());
    }
    assert_eq!(b.q.recv_burst(&mut bufs).unwrap(), 1);
    // The device stops with two packets on the ring; the backend has closed.
    b.shared.stop(None);
    assert!(b.q.recv_burst(&mut bufs).is_err());
    b.q.count_left_at_close();
    let m = b.shared.metrics.snapshot();
    assert_eq!((m.rx_packets, m.rx_dropped, m.rx_unread), (1, 0, 2));
    // Counted once: a second count finds nothing left.
    b.q.count_left_at_close();
    assert_eq!(b.shared.metrics.snapshot().rx_unread, 2);
}

#[test]
fn tx_packets_never_answered_at_close_are_counted_once_each() {
    let mut b = bed(Design::GrantCopy, SG);
    let small = [1u8; 60];
    let big = [2u8; 5000];
    let two = [PacketRef::new(&small), PacketRef::new(&small)];
    assert_eq!(b.q.send_burst(&two).unwrap(), 2);
    b.serve_tx(0);
    // Three more, one of two pages; the backend answers none of them.
    let three = [
        PacketRef::new(&big),
        PacketRef::new(&small),
        PacketRef::new(&small),
    ];
    assert_eq!(b.q.send_burst(&three).unwrap(), 3);
    b.shared.stop(None);
    b.q.count_left_at_close();
    let m = b.shared.metrics.snapshot();
    assert_eq!((m.tx_packets, m.tx_unanswered), (5, 3));
    b.q.count_left_at_close();
    assert_eq!(b.shared.metrics.snapshot().tx_unanswered, 3);
    // Answers the backend published after the device stopped reaping count as answers.
    let mut b = bed(Design::GrantCopy, SG);
    assert_eq!(b.q.send_burst(&three).unwrap(), 3);
    b.shared.stop(None);
    b.serve_tx(0);
    b.q.count_left_at_close();
    let m = b.shared.metrics.snapshot();
    assert_eq!((m.tx_packets, m.tx_unanswered, m.tx_errors), (3, 0, 0));
}

#[test]
fn wait_returns_at_once_when_work_is_pending_and_fails_once_stopped() {
    let mut b = bed(Design::GrantCopy, SG);
    assert!(!b.q.wait(Some(Duration::from_millis(1))).unwrap());
    let frame = [1u8; 64];
    assert_eq!(b.q.send_burst(&[PacketRef::new(&frame)]).unwrap(), 1);
    b.serve_tx(0);
    assert!(b.q.wait(None).unwrap());
    b.shared.stop(None);
    match b.q.wait(None) {
        Err(FrontendError::Broken(why)) => assert_eq!(why, "closed"),
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        b.q.send_burst(&[PacketRef::new(&frame)]),
        Err(FrontendError::Broken(_))
    ));
}

/// Sends `frame` and has the backend answer it with id 200, which is not in flight.
fn answer_an_id_not_in_flight(b: &mut Bed, frame: &[u8]) {
    assert_eq!(b.q.send_burst(&[PacketRef::new(frame)]).unwrap(), 1);
    b.tx.refresh_requests().unwrap();
    b.tx.take_request().unwrap().unwrap();
    b.tx.put_response(&NetifTxResponse { id: 200, status: 0 })
        .unwrap();
    b.tx.push_responses().unwrap();
}

#[test]
fn a_response_for_an_id_not_in_flight_breaks_the_device() {
    let mut b = bed(Design::GrantCopy, SG);
    let frame = [1u8; 64];
    answer_an_id_not_in_flight(&mut b, &frame);
    match b.q.recv_burst(&mut PacketBuf::pool(1)) {
        Err(FrontendError::Broken(why)) => assert!(why.contains("not in flight"), "{why}"),
        r => panic!("{r:?}"),
    }
    assert!(b.shared.fault_reason().is_some());
    assert!(b.q.send_burst(&[PacketRef::new(&frame)]).is_err());
}

/// A bad answer found by a send, which reaps after publishing its burst: the burst was put
/// on the ring and counted, so the send returns it as sent; the device is broken, and the
/// next call says so. Every packet is then sent or refused, none counted twice.
#[test]
fn a_bad_answer_found_after_a_burst_was_published_leaves_it_sent() {
    let mut b = bed(Design::GrantCopy, SG);
    let frame = [1u8; 64];
    answer_an_id_not_in_flight(&mut b, &frame);
    let two = [PacketRef::new(&frame), PacketRef::new(&frame)];
    assert_eq!(b.q.send_burst(&two).unwrap(), 2);
    let why = b.shared.fault_reason().expect("the device is broken");
    assert!(why.contains("not in flight"), "{why}");
    assert!(matches!(
        b.q.send_burst(&two),
        Err(FrontendError::Broken(_))
    ));
    assert_eq!(b.shared.metrics.snapshot().tx_packets, 3);
}

/// XSA-396 class, `linux` design: a TX page whose grant the backend still maps when it
/// answers is kept out of use (counted once) until a later revoke succeeds, so the bytes
/// the backend sees through its mapping are never another packet's.
#[test]
fn a_tx_page_still_mapped_when_answered_is_not_reused_until_the_backend_lets_go() {
    let mut b = bed(Design::Linux, SG);
    let first = [0xa1u8; 60];
    assert_eq!(b.q.send_burst(&[PacketRef::new(&first)]).unwrap(), 1);
    // The backend maps the page, answers, and keeps the mapping.
    b.tx.refresh_requests().unwrap();
    let held = b.tx.take_request().unwrap().unwrap();
    let mapping = b.back.map(FE, &[held.gref], false).unwrap();
    b.tx.put_response(&NetifTxResponse {
        id: held.id,
        status: 0,
    })
    .unwrap();
    b.tx.push_responses().unwrap();
    let mut seen = [0u8; 60];
    mapping.read_at(0, &mut seen).unwrap();
    assert_eq!(seen, first);
    // Every other id is used, twice over; the held one never is, nor its grant.
    let other = [0xb2u8; 60];
    let pkts = [PacketRef::new(&other); 300];
    for _ in 0..2 {
        assert_eq!(b.q.send_burst(&pkts).unwrap(), crate::queue::POOL - 1);
        let reqs = b.serve_tx(0);
        assert_eq!(reqs.len(), crate::queue::POOL - 1);
        assert!(
            reqs.iter().all(|r| r.id != held.id && r.gref != held.gref),
            "the page the backend still maps was used again"
        );
        mapping.read_at(0, &mut seen).unwrap();
        assert_eq!(seen, first, "the page the backend maps was overwritten");
    }
    // Reaps the last answers: still held, still counted once.
    assert_eq!(b.q.send_burst(&[]).unwrap(), 0);
    let m = b.shared.metrics.snapshot();
    assert_eq!(m.revokes_refused, 1);
    assert_eq!(m.tx_revokes, 2 * (crate::queue::POOL as u64 - 1));
    // The backend lets go: the next reap revokes the page and its id is used again.
    drop(mapping);
    assert_eq!(b.q.send_burst(&pkts).unwrap(), crate::queue::POOL);
    let reqs = b.serve_tx(0);
    assert!(reqs.iter().any(|r| r.id == held.id), "never used again");
    let m = b.shared.metrics.snapshot();
    assert_eq!(m.revokes_refused, 1);
    assert_eq!(m.tx_revokes, 2 * (crate::queue::POOL as u64 - 1) + 1);
    assert!(b.shared.fault_reason().is_none());
}

/// XSA-396 class, `linux` design: an RX buffer the backend still maps when its response
/// comes breaks the device (as Linux netfront), with a reason naming the buffer and its
/// grant in use; a buffer the backend let go of first is received.
#[test]
fn an_rx_buffer_still_mapped_when_answered_breaks_the_device() {
    let mut b = bed(Design::Linux, SG);
    let (first, second) = (b.rx_posted[0], b.rx_posted[1]);
    // Only the first buffer mapped: written, let go of, then answered.
    b.rx_pool = b.back.map(FE, &[first.gref], true).unwrap();
    b.rx_pool.write_at(0, &[0x11u8; 100]).unwrap();
    // Maps the second buffer alone; the first's mapping goes.
    b.rx_pool = b.back.map(FE, &[second.gref], true).unwrap();
    b.answer_rx(0, 100, RxFlags::empty());
    let mut bufs = PacketBuf::pool(4);
    assert_eq!(b.q.recv_burst(&mut bufs).unwrap(), 1);
    assert_eq!(bufs[0].data(), &[0x11u8; 100][..]);
    assert_eq!(b.shared.metrics.snapshot().revokes_refused, 0);
    // The second is answered while the backend still maps it.
    b.rx_pool.write_at(0, &[0x22u8; 100]).unwrap();
    b.answer_rx(1, 100, RxFlags::empty());
    match b.q.recv_burst(&mut bufs) {
        Err(FrontendError::Broken(why)) => {
            let buffer = format!("RX buffer {}", second.id);
            assert!(why.contains(&buffer), "{why}");
            assert!(why.contains("grant in use"), "{why}");
        }
        r => panic!("a held RX buffer was read: {r:?}"),
    }
    assert!(b.shared.fault_reason().is_some());
    assert_eq!(b.shared.metrics.snapshot().revokes_refused, 1);
    assert!(b.q.recv_burst(&mut bufs).is_err());
}

#[test]
fn slots_stage_the_head_and_grant_the_rest() {
    let mut b = bed(Design::Slots { data_len: 256 }, SG);
    let frame: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    assert_eq!(b.q.send_burst(&[PacketRef::new(&frame)]).unwrap(), 1);
    let reqs = b.serve_tx(0);
    // A staged first request (offset = staged bytes, size = total), then two pages.
    assert_eq!(reqs.len(), 3);
    assert_eq!((reqs[0].offset, reqs[0].size), (256, 5000));
    assert_eq!(reqs[1].size as usize + reqs[2].size as usize, 5000 - 256);
    let m = b.shared.metrics.snapshot();
    assert_eq!((m.tx_staged_packets, m.tx_staged_bytes), (1, 256));
    assert_eq!(m.tx_fallback_over_limit, 1);
}

/// A packet staged whole (the common small packet, put on the ring by its own short path)
/// goes as one request: no grant, `offset` and `size` its length, `NETTXF_staged`, and
/// the checksum flags when its checksum is blank; a GSO packet of the same length takes
/// the general path, with its extra. Counted as staged either way. Both staging designs.
#[test]
fn a_packet_staged_whole_goes_as_one_flagged_request() {
    for design in [Design::Slots { data_len: 256 }, small_ring(WhenFull::Grant)] {
        let want = Features {
            gso_tcpv4: true,
            ..SG
        };
        let mut b = bed(design, want);
        let frame = vec![3u8; 200];
        let plain = PacketRef::new(&frame);
        let mut blank = PacketRef::new(&frame);
        blank.csum_blank = true;
        let mut gso = PacketRef::new(&frame);
        gso.gso = Some(Gso {
            gso_type: GsoType::TcpV4,
            mss: 100,
        });
        assert_eq!(
            b.q.send_burst(&[plain, blank, gso]).unwrap(),
            3,
            "{design:?}"
        );
        let reqs = b.serve_tx(0);
        assert_eq!(
            reqs.len(),
            4,
            "{design:?}: one request each, and GSO's extra"
        );
        for (r, csum) in reqs[..2].iter().zip([false, true]) {
            let flags = TxFlags::from_bits_truncate(r.flags);
            assert_eq!((r.gref, r.offset, r.size), (0, 200, 200), "{design:?}");
            assert!(flags.contains(TxFlags::STAGED), "{design:?}");
            assert!(!flags.intersects(TxFlags::MORE_DATA | TxFlags::EXTRA_INFO));
            assert_eq!(
                flags.contains(TxFlags::CSUM_BLANK | TxFlags::DATA_VALIDATED),
                csum,
                "{design:?}"
            );
        }
        assert!(TxFlags::from_bits_truncate(reqs[2].flags).contains(TxFlags::EXTRA_INFO));
        assert_ne!(reqs[0].id, reqs[1].id);
        let m = b.shared.metrics.snapshot();
        assert_eq!((m.tx_packets, m.tx_bytes), (3, 600), "{design:?}");
        assert_eq!(
            (m.tx_staged_packets, m.tx_staged_bytes),
            (3, 600),
            "{design:?}"
        );
    }
}

/// The packets of a burst that fit the data ring's room go without a decision each, the
/// burst's one fill sample taken, and the first that does not fit is decided on its own
/// (here: by a grant, counted). After a packet decided on its own (a GSO one, whose staged
/// bytes the burst's room did not count) the rest are decided one by one too, so the
/// ring's room is never overdrawn. A burst whose budget staged nothing takes no sample.
#[test]
fn a_burst_stages_what_fits_whole_and_decides_the_rest_one_by_one() {
    let want = Features {
        gso_tcpv4: true,
        ..SG
    };
    let mut b = bed(small_ring(WhenFull::Grant), want);
    let frame = vec![9u8; 3000];
    let small = PacketRef::new(&frame);
    // 8 KiB of room: two staged whole, the third does not fit in the 2192 bytes left.
    assert_eq!(b.q.send_burst(&[small; 3]).unwrap(), 3);
    let m = b.shared.metrics.snapshot();
    assert_eq!((m.tx_staged_packets, m.tx_ring_fill_samples), (2, 1));
    assert_eq!(m.tx_fallback_ring_full, 1);
    let reqs = b.serve_tx(0);
    let last = reqs.last().unwrap();
    assert_eq!(
        (last.offset, last.size, last.flags & TxFlags::STAGED.bits()),
        (0, 3000, 0)
    );
    // Answered, and the ring's bytes released as a backend that read them would.
    let (_, mut cons, _) = b.data_ring();
    cons.refresh().unwrap();
    cons.skip(6000).unwrap();
    cons.release().unwrap();
    let mut gso = PacketRef::new(&frame);
    gso.gso = Some(Gso {
        gso_type: GsoType::TcpV4,
        mss: 1000,
    });
    // The GSO packet and the next are staged whole (6000 bytes), decided one by one; the
    // last does not fit and goes by a grant. The budget was read but staged nothing: no
    // sample.
    assert_eq!(b.q.send_burst(&[gso, small, small]).unwrap(), 3);
    let m = b.shared.metrics.snapshot();
    assert_eq!((m.tx_staged_packets, m.tx_staged_bytes), (4, 12000));
    assert_eq!((m.tx_fallback_ring_full, m.tx_ring_fill_samples), (2, 1));
}

/// A greedy data ring of order 2: 8 KiB a direction.
fn small_ring(when_full: WhenFull) -> Design {
    Design::Ring {
        order: 2,
        policy: CopyPolicy::Greedy,
        when_full,
    }
}

#[test]
fn a_full_data_ring_holds_tx_packets_back_only_while_requests_are_in_flight() {
    for when_full in [WhenFull::Wait, WhenFull::Grant] {
        let mut b = bed(small_ring(when_full), SG);
        // 8 KiB a direction: one packet of 5000 bytes fits, the next only in part.
        let frame = vec![7u8; 5000];
        let pkts = [PacketRef::new(&frame); 2];
        let n = b.q.send_burst(&pkts).unwrap();
        let m = b.shared.metrics.snapshot();
        let held = when_full == WhenFull::Wait;
        assert_eq!(n, if held { 1 } else { 2 }, "{when_full:?}");
        assert_eq!(m.tx_ring_full_waits, u64::from(held), "{when_full:?}");
        assert_eq!(m.tx_fallback_ring_full, u64::from(!held), "{when_full:?}");
        // Answered, but the ring's bytes never released (this backend does not read them):
        // with nothing in flight the held packet goes, its tail by grants; nothing waits on
        // a ring that will not drain.
        let mut reqs = b.serve_tx(0);
        if held {
            assert_eq!(reqs.len(), 1);
            assert_eq!(b.q.send_burst(&pkts[1..]).unwrap(), 1);
            let m = b.shared.metrics.snapshot();
            assert_eq!((m.tx_ring_full_waits, m.tx_fallback_ring_full), (1, 1));
            reqs = b.serve_tx(0);
        }
        // The second packet either way: 3192 bytes staged (its offset), its tail in a page.
        let second = &reqs[reqs.len() - 2..];
        assert_eq!((second[0].offset, second[0].size), (8192 - 5000, 5000));
        assert_eq!(second[1].size, 5000 - 3192, "{when_full:?}");
    }
}

/// Packets lent in place give the RX data ring back at the end of the call, or sooner
/// once a quarter of the ring is lent; a call that takes nothing writes no index.
#[test]
fn lent_rx_packets_give_the_data_ring_back_by_the_burst_or_by_the_quarter_ring() {
    let mut b = bed(small_ring(WhenFull::Grant), SG);
    let (mut prod, _, intf) = b.data_ring();
    let in_cons = intf.word(0).unwrap();
    // Six packets of 1000 bytes, wholly staged, in an 8 KiB ring (a quarter: 2 KiB).
    for slot in 0..6u16 {
        assert!(prod.stage(&[slot as u8; 1000]).unwrap().is_some());
        let rsp = NetifRxResponse {
            id: slot,
            offset: 1000,
            flags: RxFlags::STAGED.bits(),
            status: 0,
        };
        b.rx.put_response(&rsp).unwrap();
    }
    prod.publish().unwrap();
    b.rx.push_responses().unwrap();
    // What the backend sees in use as each packet is delivered.
    let mut seen = Vec::new();
    let n =
        b.q.recv_burst_in_place(64, |v| {
            assert_eq!(v.len(), 1000);
            seen.push(8192 - prod.refresh().unwrap());
        })
        .unwrap();
    assert_eq!(n, 6);
    assert_eq!(seen, [6000, 6000, 6000, 3000, 3000, 3000]);
    assert_eq!(prod.refresh().unwrap(), 8192);
    assert_eq!(in_cons.load(std::sync::atomic::Ordering::Acquire), 6000);
    // Nothing taken: the index is not written (a stand-in value survives).
    in_cons
        .store(6008, std::sync::atomic::Ordering::Release)
        .unwrap();
    assert_eq!(b.q.recv_burst_in_place(64, |_| {}).unwrap(), 0);
    assert_eq!(in_cons.load(std::sync::atomic::Ordering::Acquire), 6008);
}

#[test]
fn held_packets_are_counted_once_however_often_they_are_offered() {
    let mut b = bed(small_ring(WhenFull::Wait), SG);
    let (first, a, c) = (vec![1u8; 5000], vec![2u8; 5000], vec![3u8; 4000]);
    assert_eq!(b.q.send_burst(&[PacketRef::new(&first)]).unwrap(), 1);
    let samples = b.shared.metrics.snapshot().tx_ring_fill_samples;
    // Two packets held at once (say one sent, one forwarded), offered in turn: each is
    // counted once, and neither is decided again while it waits. Twenty offers: as
    // decisions they would have taken a fill sample (one in 16), as bursts that staged a
    // packet one each.
    for _ in 0..10 {
        for p in [&a, &c] {
            assert_eq!(b.q.send_burst(&[PacketRef::new(p)]).unwrap(), 0);
        }
    }
    let m = b.shared.metrics.snapshot();
    assert_eq!((m.tx_ring_full_waits, m.tx_fallback_ring_full), (2, 0));
    assert_eq!(
        m.tx_ring_fill_samples, samples,
        "retries are not decisions, nor bursts that staged a packet"
    );
    b.serve_tx(0);
    for p in [&a, &c] {
        assert_eq!(b.q.send_burst(&[PacketRef::new(p)]).unwrap(), 1);
        b.serve_tx(0);
    }
    let m = b.shared.metrics.snapshot();
    assert_eq!((m.tx_ring_full_waits, m.tx_fallback_ring_full), (2, 2));
}

#[test]
fn a_packet_held_for_room_wakes_the_waiter_once_nothing_is_in_flight() {
    let mut b = bed(small_ring(WhenFull::Wait), SG);
    let frame = vec![7u8; 5000];
    let pkts = [PacketRef::new(&frame); 2];
    assert_eq!(b.q.send_burst(&pkts).unwrap(), 1);
    // Answered without a notification, and the answer reaped by an RX call: no TX
    // response is left to arm for, yet the held packet can go now (by grants).
    b.serve_tx(0);
    let mut bufs: Vec<PacketBuf> = (0..4).map(|_| PacketBuf::new()).collect();
    assert_eq!(b.q.recv_burst(&mut bufs).unwrap(), 0);
    assert_eq!(b.q.tx_pending(), 0);
    let t = std::time::Instant::now();
    assert!(b.q.wait(Some(Duration::from_secs(5))).unwrap());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(b.q.send_burst(&pkts[1..]).unwrap(), 1);
    // Said once: with nothing held, a wait sleeps again.
    assert!(!b.q.wait(Some(Duration::from_millis(50))).unwrap());
}

#[test]
fn a_backend_that_stops_answering_breaks_the_device_after_the_answer_timeout() {
    let mut b = bed_answering_within(
        Design::GrantCopy,
        SG,
        Duration::from_millis(50),
        PollMode::Block,
    );
    let frame = [1u8; 64];
    // Answered in time: no fault.
    assert_eq!(b.q.send_burst(&[PacketRef::new(&frame)]).unwrap(), 1);
    b.serve_tx(0);
    assert!(b.q.wait(Some(Duration::from_millis(1))).unwrap());
    assert_eq!(b.q.recv_burst(&mut []).unwrap(), 0);
    // Never answered: the waits go on for the timeout, then the device is broken.
    assert_eq!(b.q.send_burst(&[PacketRef::new(&frame)]).unwrap(), 1);
    let t = std::time::Instant::now();
    let why = loop {
        match b.q.wait(Some(Duration::from_millis(10))) {
            Ok(_) => assert!(t.elapsed() < Duration::from_secs(5), "never declared gone"),
            Err(FrontendError::Broken(why)) => break why,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert!(why.contains("answered none of 1 TX requests"), "{why}");
    assert!(b.shared.stopped());
}

/// Busy-polling reads the clock for the answer timeout only every 64th look without an
/// answer: the device is still broken once the timeout has passed, not before.
#[test]
fn a_busy_polling_frontend_breaks_the_device_after_the_answer_timeout_too() {
    let answer = Duration::from_millis(50);
    let mut b = busy_bed(answer);
    let frame = [1u8; 64];
    assert_eq!(b.q.send_burst(&[PacketRef::new(&frame)]).unwrap(), 1);
    let t = std::time::Instant::now();
    let mut looks = 0u64;
    let why = loop {
        match b.q.wait(None) {
            Ok(_) => {
                looks += 1;
                assert!(t.elapsed() < Duration::from_secs(5), "never declared gone");
            }
            Err(FrontendError::Broken(why)) => break why,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(t.elapsed() >= answer, "broken after {:?}", t.elapsed());
    assert!(looks >= 64, "only {looks} looks");
    assert!(why.contains("answered none of 1 TX requests"), "{why}");
    assert!(b.shared.stopped());
}

/// Busy-polling, the answer timeout is timed from the 64th look without an answer (a
/// clock read then, not at every look).
#[test]
fn a_busy_polling_frontend_reads_the_clock_every_64th_look_without_an_answer() {
    let mut b = busy_bed(Duration::from_secs(30));
    let frame = [1u8; 64];
    assert_eq!(b.q.send_burst(&[PacketRef::new(&frame)]).unwrap(), 1);
    for _ in 1..64 {
        b.q.wait(None).unwrap();
    }
    assert!(!b.q.answer_timer_started(), "timed before the 64th look");
    b.q.wait(None).unwrap();
    assert!(b.q.answer_timer_started());
}

/// A packet moved by a burst call ends busy-polling's run of idle looks, as a look that
/// finds work does: a request/response gap never adds up to a yield.
#[test]
fn a_packet_moved_ends_busy_pollings_idle_run() {
    let mut b = busy_bed(Duration::from_secs(30));
    for _ in 0..20 {
        assert!(!b.q.wait(None).unwrap());
    }
    assert_eq!(b.q.idle_looks(), 20);
    let frame = [1u8; 64];
    assert_eq!(b.q.send_burst(&[PacketRef::new(&frame)]).unwrap(), 1);
    assert_eq!(b.q.idle_looks(), 0, "sending ended the idle run");
}

#[test]
fn an_event_storm_costs_the_frontend_bounded_wakeups() {
    let mut b = bed(Design::GrantCopy, SG);
    let storm = Duration::from_millis(300);
    let (mut woke, mut sent) = (0u64, 0u64);
    std::thread::scope(|sc| {
        let port = &b.port;
        let notifier = sc.spawn(move || {
            let t = std::time::Instant::now();
            let mut n = 0u64;
            while t.elapsed() < storm {
                port.notify().unwrap();
                n += 1;
            }
            n
        });
        let t = std::time::Instant::now();
        while t.elapsed() < storm {
            if b.q.wait(Some(Duration::from_millis(50))).unwrap() {
                woke += 1;
            }
        }
        sent = notifier.join().unwrap();
    });
    let m = b.shared.metrics.snapshot();
    assert!(m.storm_backoffs > 0, "{m:?}");
    // About one wake-up per millisecond of storm (plus the few before the back-off).
    assert!(woke < 1_500, "{woke} wake-ups for {sent} notifications");
}

/// Keeps the warnings of this test binary.
struct Capture(std::sync::Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if r.level() == log::Level::Warn {
            if let Ok(mut v) = self.0.lock() {
                v.push(r.args().to_string());
            }
        }
    }
    fn flush(&self) {}
}

static LOGS: Capture = Capture(std::sync::Mutex::new(Vec::new()));

/// A backend that refuses every TX request: each refusal is counted, and warned of at most
/// a burst of lines per period, each naming the vif, the queue and the backend's domain.
#[test]
fn refused_requests_are_counted_and_warned_of_at_the_limit() {
    log::set_logger(&LOGS).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let mut b = bed(Design::GrantCopy, SG);
    let frame = [7u8; 60];
    let rounds = 3 * netstage_fallback::log_limit::LOG_BURST;
    for _ in 0..rounds {
        // Each burst first reaps the previous one's error response.
        assert_eq!(b.q.send_burst(&[PacketRef::new(&frame)]).unwrap(), 1);
        b.serve_tx(-1);
    }
    assert_eq!(b.q.send_burst(&[]).unwrap(), 0);
    assert_eq!(b.shared.metrics.snapshot().tx_errors, u64::from(rounds));
    let mine = format!("vif {FE}:0: faults on queue 0: 1 TX responses with an error status");
    let w = LOGS.0.lock().unwrap();
    let faults: Vec<&String> = w.iter().filter(|m| m.starts_with(&mine)).collect();
    assert_eq!(
        faults.len(),
        netstage_fallback::log_limit::LOG_BURST as usize,
        "{w:#?}"
    );
    assert!(
        faults.iter().all(|m| m.contains("backend domain 0")),
        "{w:#?}"
    );
}

/// A queue of the queue API has its core to itself; the convenience layer's queue thread
/// shares its core with the application's threads that feed it, and marks its queue so
/// (busy-polling then yields by count, not by idle time).
#[test]
fn the_threaded_layers_queue_thread_shares_its_core() {
    let b = busy_bed(Duration::from_secs(30));
    assert!(!b.q.shares_core());
    b.shared.stop(None);
    let q = crate::threaded::drive_until_stopped(b.q);
    assert!(q.shares_core());
}
