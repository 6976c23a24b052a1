//! A hostile backend, written by hand against the rings and the staging memory, shows that
//! the frontend trusts nothing it writes: impossible staging claims, data-ring overruns and
//! unknown ids break the device with a reason instead of crashing or reading out of bounds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;

mod common;

use common::{wait, Stage, FE};
use netstage_fallback::Packet;
use netstage_netfront_user::{
    CopyPolicy, Design, Frontend, FrontendError, FrontendHandler, WhenFull,
};
use netstage_platform::sim::SimDomain;
use netstage_platform::xenbus::{read_state, write_state, XenbusState};
use netstage_platform::xenstore::{XenStore, NO_TX};
use netstage_platform::{EventChannels, EventPort, GrantImport};
use netstage_ring::flex::{self, IN_PROD_OFFSET};
use netstage_ring::netif::{NetifRxResponse, NetifTxResponse, RxFlags, RxRing, TxRing};
use netstage_ring::sring::BackRing;

struct Quiet;
impl FrontendHandler for Quiet {
    fn rx_packet(&self, _q: u16, _p: Packet) {}
}

struct EvilBack {
    stage: Stage,
    front: Option<Frontend<SimDomain>>,
    tx: BackRing<TxRing>,
    rx: BackRing<RxRing>,
    port: netstage_platform::sim::SimPort,
    intf: Option<netstage_ring::SharedMem>,
}

impl EvilBack {
    fn connect(design: Design) -> EvilBack {
        EvilBack::connect_with(Stage::config(design))
    }

    fn connect_with(fcfg: netstage_netfront_user::FrontendConfig) -> EvilBack {
        let design = fcfg.design;
        let (stage, me) = Stage::new();
        let gxs = stage.front_xs();
        let ft = thread::spawn(move || Frontend::connect(me, gxs, 0, fcfg, Arc::new(Quiet)));
        stage.await_front();
        let key = |k: &str| stage.key(k);
        let dom0 = &stage.dom0;
        let tx = BackRing::attach(dom0.map(FE, &[key("tx-ring-ref")], true).unwrap()).unwrap();
        let rx = BackRing::attach(dom0.map(FE, &[key("rx-ring-ref")], true).unwrap()).unwrap();
        let port = dom0.bind_interdomain(FE, key("event-channel")).unwrap();
        let intf = matches!(design, Design::Ring { .. })
            .then(|| dom0.map(FE, &[key("data-ring-ref")], true).unwrap());
        stage.connect_back();
        let front = ft.join().unwrap().unwrap();
        EvilBack {
            stage,
            front: Some(front),
            tx,
            rx,
            port,
            intf,
        }
    }

    fn rx_response(&mut self, rsp: NetifRxResponse) {
        self.rx.refresh_requests().unwrap();
        self.rx.take_request().unwrap().unwrap();
        self.rx.put_response(&rsp).unwrap();
        self.rx.push_responses().unwrap();
        self.port.notify().unwrap();
    }

    /// Waits for the device to break and returns the reason the queue gave.
    fn broken_reason(mut self) -> String {
        let front = self.front.take().unwrap();
        wait("the device to break", || front.broken().is_some());
        // The device is reset, as Linux netfront's xenbus_dev_fatal: the reason in its
        // `error` node, its state Closing.
        let fdir = &self.stage.paths.frontend;
        wait("the frontend to go Closing", || {
            read_state(&self.stage.xs, fdir) == XenbusState::Closing
        });
        let error = self.stage.xs.read(NO_TX, &format!("{fdir}/error")).unwrap();
        assert_eq!(Some(String::from_utf8(error).unwrap()), front.broken());
        write_state(
            &self.stage.xs,
            &self.stage.paths.backend,
            XenbusState::Closed,
        )
        .unwrap();
        match front.close() {
            Err(FrontendError::Broken(why)) => why,
            other => panic!("expected a broken device, got {other:?}"),
        }
    }
}

fn staged(len: u16) -> NetifRxResponse {
    NetifRxResponse {
        id: 0,
        offset: len,
        flags: RxFlags::STAGED.bits(),
        status: 0,
    }
}

#[test]
fn staged_rx_bytes_never_written_to_the_ring_break_the_device() {
    let mut e = EvilBack::connect(Design::Ring {
        order: 2,
        policy: CopyPolicy::Greedy,
        when_full: WhenFull::Grant,
    });
    e.rx_response(staged(100));
    let why = e.broken_reason();
    assert!(
        why.contains("RX data ring") && why.contains("100 were required"),
        "{why}"
    );
}

#[test]
fn an_overrunning_rx_data_ring_breaks_the_device() {
    let mut e = EvilBack::connect(Design::Ring {
        order: 2,
        policy: CopyPolicy::Greedy,
        when_full: WhenFull::Grant,
    });
    let intf = e.intf.clone().unwrap();
    // in_prod more than the 8 KiB direction ahead of the frontend's consumer.
    intf.word(IN_PROD_OFFSET)
        .unwrap()
        .store(flex::flex_ring_size(2) as u32 + 5, Ordering::Release)
        .unwrap();
    e.rx_response(staged(64));
    let why = e.broken_reason();
    assert!(why.contains("impossible data-ring index"), "{why}");
}

#[test]
fn staged_rx_bytes_past_the_slot_break_the_device() {
    let mut e = EvilBack::connect(Design::Slots { data_len: 256 });
    e.rx_response(staged(5000));
    let why = e.broken_reason();
    assert!(
        why.contains("RX slot") && why.contains("outside a 256-byte slot"),
        "{why}"
    );
}

#[test]
fn staged_rx_bytes_without_a_design_break_the_device() {
    let mut e = EvilBack::connect(Design::GrantCopy);
    e.rx_response(staged(60));
    let why = e.broken_reason();
    assert!(why.contains("never negotiated"), "{why}");
}

#[test]
fn a_tx_response_for_an_id_not_in_flight_breaks_the_device() {
    let e = EvilBack::connect(Design::GrantCopy);
    // Nothing was sent, yet a response arrives: the ring itself refuses it.
    let rsp = NetifTxResponse { id: 3, status: 0 };
    let mem = e.tx.shared().clone();
    mem.write_obj(64, &rsp).unwrap();
    mem.word(8).unwrap().store(1, Ordering::Release).unwrap(); // rsp_prod
    e.port.notify().unwrap();
    let why = e.broken_reason();
    assert!(why.contains("impossible response producer"), "{why}");
}

/// A backend that stays connected but never takes a TX request: once the ring and the
/// queue are full, `Frontend::send` gives up after the send timeout with `SendTimeout`,
/// the packet not taken, instead of blocking for ever.
#[test]
fn send_gives_up_when_the_backend_takes_nothing() {
    let cfg = netstage_netfront_user::FrontendConfig {
        tx_queue_len: 4,
        send_timeout: std::time::Duration::from_millis(200),
        ..Stage::config(Design::GrantCopy)
    };
    let e = EvilBack::connect_with(cfg);
    let front = e.front.as_ref().unwrap();
    let mut accepted = 0;
    let err = loop {
        let t = std::time::Instant::now();
        match front.send(0, Packet::new(vec![7u8; 64])) {
            Ok(()) => accepted += 1,
            Err(e) => break (e, t.elapsed()),
        }
        assert!(accepted < 2000, "the frontend took {accepted} packets");
    };
    match err {
        (FrontendError::SendTimeout { queue: 0, .. }, waited) => {
            assert!(
                waited >= std::time::Duration::from_millis(200),
                "{waited:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    // The ring's 256 requests, a burst in the queue's hands and the 4-packet inbox.
    assert!(accepted >= 256, "{accepted}");
}

/// A backend that stays Connected and answers nothing: after `answer_timeout` the device
/// breaks and is reset (its `error` node says why, its state goes Closing), so that the
/// backend lets go of the vif.
#[test]
fn a_backend_that_stops_answering_gets_the_vif_reset() {
    let cfg = netstage_netfront_user::FrontendConfig {
        answer_timeout: std::time::Duration::from_millis(300),
        ..Stage::config(Design::GrantCopy)
    };
    let e = EvilBack::connect_with(cfg);
    e.front
        .as_ref()
        .unwrap()
        .send(0, Packet::new(vec![7u8; 64]))
        .unwrap();
    let why = e.broken_reason();
    assert!(why.contains("answered none of 1 TX requests"), "{why}");
}
