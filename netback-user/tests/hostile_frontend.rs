//! A hostile frontend, written by hand against the rings and the staging memory, shows that
//! the backend turns every bad staging claim into a typed fault: a dropped packet answered
//! with an error, or a disconnect with the reason in XenStore — never a crash. For every
//! staging encoding: netstage's flags on slots and the data ring, and RFC rev 1's own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use netstage_fallback::Packet;
use netstage_netback_user::{toolstack, Backend, BackendConfig, RxInjector, VifHandler};
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::sim::{DomainConfig, SimDomain, SimWorld};
use netstage_platform::xenbus::{read_state, write_state, XenbusState};
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};
use netstage_platform::{EventChannels, EventPort, GrantExport, SharedPages};
use netstage_ring::flex::{self, End, FlexProducer, OUT_PROD_OFFSET};
use netstage_ring::netif::{
    encode_staged_tx_chain, NetifTxRequest, RxRing, TxFlags, TxRing, NETIF_RSP_ERROR,
    NETIF_RSP_OKAY,
};
use netstage_ring::sring::FrontRing;
use netstage_ring::staging::{write_list, SlotArea, SlotLayout};

const FE: u16 = 9;

#[derive(Default)]
struct Sink(Mutex<Vec<Packet>>, Mutex<Vec<RxInjector>>);
impl VifHandler for Sink {
    fn tx_packet(&self, _q: u16, pkt: Packet) {
        self.0.lock().unwrap().push(pkt);
    }
    fn connected(&self, rx: Vec<RxInjector>) {
        *self.1.lock().unwrap() = rx;
    }
}

enum Staging {
    None,
    Slots(SlotArea),
    Ring(FlexProducer),
}

struct Evil {
    _world: SimWorld,
    _dir: tempfile::TempDir,
    _xsd: Xenstored,
    stop: Arc<AtomicBool>,
    backend: Option<thread::JoinHandle<()>>,
    xs: XsClient,
    metrics: Arc<netstage_netback_user::Metrics>,
    sink: Arc<Sink>,
    tx: FrontRing<TxRing>,
    rx: FrontRing<RxRing>,
    rx_pool: Vec<u32>,
    port: netstage_platform::sim::SimPort,
    pool: SharedPages,
    staging: Staging,
    ring_intf: Option<SharedPages>,
    _keep: Vec<SharedPages>,
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

impl Evil {
    /// Connects by hand: `design` is "none", "slots" (256-byte slots, netstage's flags),
    /// "slots-rfc" (the same slots in RFC rev 1's encoding) or "ring" (order 1).
    fn connect(design: &str) -> Evil {
        let e = Evil::offer(design, &[]);
        wait("backend Connected", || {
            read_state(&e.xs, &e.backend_dir()) == XenbusState::Connected
        });
        e
    }

    /// Writes the keys of `design`, with `keys` written over them, and says Connected
    /// without waiting for the backend.
    fn offer(design: &str, overrides: &[(&str, &str)]) -> Evil {
        Evil::offer_with(design, overrides, BackendConfig::default())
    }

    /// [`Evil::offer`] to a backend with configuration `cfg`.
    fn offer_with(design: &str, overrides: &[(&str, &str)], back_cfg: BackendConfig) -> Evil {
        let world = SimWorld::create_temp().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let xsd = Xenstored::start(XenstoredConfig::in_dir(dir.path())).unwrap();
        let cfg = DomainConfig {
            mem_pages: 2048,
            ..DomainConfig::default()
        };
        let dom0 = world.create_domain(0, cfg.clone()).unwrap();
        let me: SimDomain = world.create_domain(FE, cfg).unwrap();
        xsd.introduce(FE).unwrap();
        let xs0 = XsClient::connect(xsd.socket()).unwrap();
        let p = toolstack::create_vif(&xs0, 0, FE, 0).unwrap();
        let backend = Backend::new(dom0, xs0, back_cfg);
        let metrics = backend.metrics_handle();
        let sink = Arc::new(Sink::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (Arc::clone(&sink), Arc::clone(&stop));
        let bt = thread::spawn(move || {
            let _ = backend.serve(FE, 0, s2, &st2);
        });
        let xs = XsClient::connect(&xsd.domain_socket(FE)).unwrap();
        wait("backend InitWait", || {
            read_state(&xs, &p.backend) == XenbusState::InitWait
        });
        let tx_page = me.share(0, 1, true).unwrap();
        let rx_page = me.share(0, 1, true).unwrap();
        let tx = FrontRing::<TxRing>::init(tx_page.mem.clone()).unwrap();
        let mut rx = FrontRing::<RxRing>::init(rx_page.mem.clone()).unwrap();
        let pool = me.share(0, 16, false).unwrap();
        let rx_pool = me.share(0, 16, true).unwrap();
        for i in 0..16u16 {
            rx.put_request(&netstage_ring::netif::NetifRxRequest {
                id: i,
                pad: 0,
                gref: rx_pool.grefs[usize::from(i)],
            })
            .unwrap();
        }
        rx.push_requests().unwrap();
        let rx_grefs = rx_pool.grefs.clone();
        let port = me.alloc_unbound(0).unwrap();
        let f = &p.frontend;
        let mut keys = vec![
            ("tx-ring-ref".to_string(), tx_page.grefs[0].to_string()),
            ("rx-ring-ref".to_string(), rx_page.grefs[0].to_string()),
            ("event-channel".to_string(), port.port().to_string()),
            ("request-rx-copy".to_string(), "1".to_string()),
            ("feature-sg".to_string(), "1".to_string()),
        ];
        let mut keep = vec![tx_page, rx_page, rx_pool];
        let mut ring_intf = None;
        let staging = match design {
            "slots" | "slots-rfc" => {
                let mut tx_area = None;
                for (d, w) in [("tx", false), ("rx", true)] {
                    let layout = SlotLayout::new(256, 256).unwrap();
                    let data = me.share(0, layout.data_pages(), w).unwrap();
                    let list = me.share(0, 1, false).unwrap();
                    let entries = layout.natural_entries(&data.grefs).unwrap();
                    write_list(&layout, std::slice::from_ref(&list.mem), &entries).unwrap();
                    let wins: Vec<_> = (0..layout.data_pages())
                        .map(|i| data.mem.sub(i * 4096, 4096).unwrap())
                        .collect();
                    if d == "tx" {
                        tx_area = Some(SlotArea::natural(layout, &wins).unwrap());
                    }
                    keys.push((format!("{d}-data-ref0"), list.grefs[0].to_string()));
                    keys.push((format!("{d}-data-len"), "256".into()));
                    keep.push(data);
                    keep.push(list);
                }
                if design == "slots" {
                    keys.push(("request-staged-flags".into(), "1".into()));
                }
                Staging::Slots(tx_area.unwrap())
            }
            "ring" => {
                let intf = me.share(0, 1, true).unwrap();
                let data = me.share(0, 2, true).unwrap();
                flex::init_intf(&intf.mem, 1, &data.grefs).unwrap();
                let (prod, _) = flex::open(End::Frontend, &intf.mem, &data.mem, 1).unwrap();
                keys.push(("data-ring-ref".into(), intf.grefs[0].to_string()));
                keys.push(("data-ring-order".into(), "1".into()));
                keep.push(data);
                ring_intf = Some(intf);
                Staging::Ring(prod)
            }
            _ => Staging::None,
        };
        for (k, v) in &keys {
            xs.write(NO_TX, &format!("{f}/{k}"), v.as_bytes()).unwrap();
        }
        for (k, v) in overrides {
            xs.write(NO_TX, &format!("{f}/{k}"), v.as_bytes()).unwrap();
        }
        write_state(&xs, f, XenbusState::Connected).unwrap();
        Evil {
            _world: world,
            _dir: dir,
            _xsd: xsd,
            stop,
            backend: Some(bt),
            xs,
            metrics,
            sink,
            tx,
            rx,
            rx_pool: rx_grefs,
            port,
            pool,
            staging,
            ring_intf,
            _keep: keep,
        }
    }

    fn send(&mut self, reqs: &[NetifTxRequest]) {
        for r in reqs {
            self.tx.put_request(r).unwrap();
        }
        self.tx.push_requests().unwrap();
        self.port.notify().unwrap();
    }

    /// Sends `reqs`, which make a good packet: it is answered with success and delivered as
    /// `want`.
    fn delivers(&mut self, reqs: &[NetifTxRequest], want: &[u8]) {
        self.send(reqs);
        assert_eq!(self.response(), NETIF_RSP_OKAY);
        assert_eq!(self.sink.0.lock().unwrap().last().unwrap().data, want);
    }

    /// The backend's RX injector, once connected.
    fn injector(&self) -> RxInjector {
        wait("the RX injector", || {
            !self.sink.1.lock().unwrap().is_empty()
        });
        self.sink.1.lock().unwrap()[0].clone()
    }

    /// The status of the next TX response.
    fn response(&mut self) -> i16 {
        let mut st = None;
        wait("a TX response", || {
            self.tx.refresh_responses().unwrap();
            if let Some(r) = self.tx.take_response().unwrap() {
                st = Some(r.status);
            }
            st.is_some()
        });
        st.unwrap()
    }

    fn backend_dir(&self) -> String {
        format!("/local/domain/0/backend/vif/{FE}/0")
    }

    fn backend_error(&self) -> String {
        let be = self.backend_dir();
        wait("backend Closing", || {
            read_state(&self.xs, &be) == XenbusState::Closing
        });
        String::from_utf8(self.xs.read(NO_TX, &format!("{be}/error")).unwrap()).unwrap()
    }

    fn staged(&self, staged: u16, total_extra: &[u16], id: u16) -> Vec<NetifTxRequest> {
        let frags: Vec<_> = total_extra
            .iter()
            .enumerate()
            .map(|(i, s)| netstage_ring::netif::TxFragment {
                id: 100 + i as u16,
                gref: self.pool.grefs[i],
                offset: 0,
                size: *s,
            })
            .collect();
        let mut v = Vec::new();
        encode_staged_tx_chain(TxFlags::empty(), staged, id, &frags, &[], &[], |r| {
            v.push(r)
        })
        .unwrap();
        v
    }
}

impl Drop for Evil {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(b) = self.backend.take() {
            let _ = b.join();
        }
    }
}

#[test]
fn a_staged_packet_without_staging_memory_is_dropped() {
    let mut e = Evil::connect("none");
    let r = e.staged(60, &[], 1);
    e.send(&r);
    assert_eq!(e.response(), NETIF_RSP_ERROR);
    assert_eq!(e.metrics.snapshot().tx_dropped, 1);
    assert!(e.sink.0.lock().unwrap().is_empty());
}

#[test]
fn a_slot_id_out_of_range_is_dropped_and_the_device_goes_on() {
    let mut e = Evil::connect("slots");
    let r = e.staged(60, &[], 300); // only 256 slots
    e.send(&r);
    assert_eq!(e.response(), NETIF_RSP_ERROR);
    // A good packet afterwards still goes through.
    if let Staging::Slots(a) = &e.staging {
        a.write(5, 0, &[7u8; 60]).unwrap();
    }
    let r = e.staged(60, &[], 5);
    e.delivers(&r, &[7u8; 60]);
    let m = e.metrics.snapshot();
    assert_eq!(
        (m.tx_dropped, m.tx_staged_packets, m.fatal_faults),
        (1, 1, 0)
    );
}

#[test]
fn a_staged_length_beyond_the_packet_disconnects_on_a_data_ring() {
    let mut e = Evil::connect("ring");
    let mut r = e.staged(60, &[], 1);
    r[0].offset = 5000; // claims more staged bytes than the 60-byte packet has
    e.send(&r);
    let err = e.backend_error();
    assert!(err.contains("stages more bytes than its packet"), "{err}");
    assert_eq!(e.metrics.snapshot().fatal_faults, 1);
}

#[test]
fn staged_bytes_never_written_to_the_ring_disconnect() {
    let mut e = Evil::connect("ring");
    let r = e.staged(100, &[], 1); // nothing was put on the data ring
    e.send(&r);
    let err = e.backend_error();
    assert!(
        err.contains("data ring") && err.contains("100 were required"),
        "{err}"
    );
}

#[test]
fn data_ring_indexes_that_overrun_disconnect() {
    let mut e = Evil::connect("ring");
    // out_prod claims more bytes than the 4 KiB direction holds.
    let intf = e.ring_intf.as_ref().unwrap();
    intf.mem
        .word(OUT_PROD_OFFSET)
        .unwrap()
        .store(4096 + 100, Ordering::Release)
        .unwrap();
    let r = e.staged(64, &[], 1);
    e.send(&r);
    let err = e.backend_error();
    assert!(err.contains("impossible data-ring index"), "{err}");
}

#[test]
fn a_well_formed_staged_packet_on_the_ring_with_a_granted_remainder_arrives() {
    let mut e = Evil::connect("ring");
    let head: Vec<u8> = (0..100u8).collect();
    if let Staging::Ring(p) = &mut e.staging {
        p.stage(&head).unwrap().unwrap();
        p.publish().unwrap();
    }
    e.pool.mem.write_at(0, &[9u8; 50]).unwrap();
    let r = e.staged(100, &[50], 1);
    e.send(&r);
    assert_eq!(e.response(), NETIF_RSP_OKAY);
    let got = e.sink.0.lock().unwrap()[0].data.clone();
    assert_eq!(&got[..100], &head[..]);
    assert_eq!(&got[100..], &[9u8; 50][..]);
}

#[test]
fn staging_buffer_requests_are_checked() {
    // Without slots: dropped.
    let mut e = Evil::connect("none");
    let zc = NetifTxRequest {
        gref: 300,
        offset: 0,
        flags: TxFlags::STAGING_BUFFER.bits(),
        id: 1,
        size: 60,
    };
    e.send(&[zc]);
    assert_eq!(e.response(), NETIF_RSP_ERROR);
    // With slots: a global id past both lists, or a size past the slot, is dropped; a good
    // one (TX slot 5) is delivered.
    let mut e = Evil::connect("slots");
    for bad in [
        NetifTxRequest { gref: 512, ..zc },
        NetifTxRequest {
            gref: 5,
            size: 300,
            ..zc
        },
    ] {
        e.send(&[bad]);
        assert_eq!(e.response(), NETIF_RSP_ERROR);
    }
    if let Staging::Slots(a) = &e.staging {
        a.write(5, 0, &[3u8; 60]).unwrap();
    }
    e.delivers(&[NetifTxRequest { gref: 5, ..zc }], &[3u8; 60]);
    let m = e.metrics.snapshot();
    assert_eq!(
        (m.tx_dropped, m.tx_zerocopy_packets, m.fatal_faults),
        (2, 1, 0)
    );
}

#[test]
fn rx_ring_fallbacks_are_counted_once_per_packet_while_packets_wait_for_requests() {
    // This frontend never consumes its RX data ring (order 1: 4 KiB each way) and posted 16
    // RX requests: 1 packet of 3000 B fits the ring, 15 fall back to grant copy, and 8 wait
    // for requests while the backend is woken again and again.
    let mut e = Evil::connect("ring");
    let inj = e.injector();
    for i in 0..24u8 {
        assert!(inj.send(Packet {
            data: vec![i; 3000].into(),
            gso: None,
            csum_blank: false,
        }));
    }
    wait("16 RX packets", || e.metrics.snapshot().rx_packets == 16);
    for _ in 0..5 {
        e.port.notify().unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(e.metrics.snapshot().rx_packets, 16);
    for i in 0..8u16 {
        e.rx.put_request(&netstage_ring::netif::NetifRxRequest {
            id: i,
            pad: 0,
            gref: e.rx_pool[usize::from(i)],
        })
        .unwrap();
    }
    e.rx.push_requests().unwrap();
    e.port.notify().unwrap();
    wait("24 RX packets", || e.metrics.snapshot().rx_packets == 24);
    let m = e.metrics.snapshot();
    assert_eq!(m.rx_staged_packets, 1, "{m:?}");
    assert_eq!(m.rx_fallback_ring_full, 23, "{m:?}");
    assert_eq!(m.rx_grant_copy_bytes, 23 * 3000);
}

/// One request carrying a whole `size`-byte packet granted in pool page 0, as RFC rev 1's
/// encoding sends it (no flag: the slot of `id` replicates the head).
fn plain(e: &Evil, id: u16, size: u16) -> NetifTxRequest {
    NetifTxRequest {
        gref: e.pool.grefs[0],
        offset: 0,
        flags: 0,
        id,
        size,
    }
}

#[test]
fn slots_rfc_takes_the_head_from_the_slot_and_drops_an_id_that_names_none() {
    let mut e = Evil::connect("slots-rfc");
    // The grant holds 300 bytes; its first 256 are replicated in slot 5, and the slot's
    // copy is what counts: the grant's are skipped.
    let mut granted = vec![9u8; 256];
    granted.extend([1u8; 44]);
    e.pool.mem.write_at(0, &granted).unwrap();
    if let Staging::Slots(a) = &e.staging {
        a.write(5, 0, &[7u8; 256]).unwrap();
    }
    // A request id past the 256 slots names no slot: dropped, and the device goes on.
    e.send(&[plain(&e, 300, 300)]);
    assert_eq!(e.response(), NETIF_RSP_ERROR);
    let mut want = vec![7u8; 256];
    want.extend([1u8; 44]);
    e.delivers(&[plain(&e, 5, 300)], &want);
    let m = e.metrics.snapshot();
    assert_eq!(
        (m.tx_dropped, m.tx_staged_packets, m.tx_staged_bytes),
        (1, 1, 256)
    );
    assert_eq!((m.tx_grant_copy_bytes, m.fatal_faults), (44, 0));
}

#[test]
fn slots_rfc_drops_requests_of_the_other_encodings() {
    let mut e = Evil::connect("slots-rfc");
    if let Staging::Slots(a) = &e.staging {
        a.write(5, 0, &[3u8; 60]).unwrap();
    }
    // netstage's NETTXF_staged and NETTXF_staging_buffer are not RFC rev 1's.
    let flagged = e.staged(60, &[], 5);
    e.send(&flagged);
    assert_eq!(e.response(), NETIF_RSP_ERROR);
    let zc = NetifTxRequest {
        gref: 5,
        flags: TxFlags::STAGING_BUFFER.bits(),
        ..plain(&e, 6, 60)
    };
    e.send(&[zc]);
    assert_eq!(e.response(), NETIF_RSP_ERROR);
    e.delivers(&[plain(&e, 5, 60)], &[3u8; 60]);
    let m = e.metrics.snapshot();
    let counts = [m.tx_dropped, m.tx_staged_packets, m.tx_zerocopy_packets];
    assert_eq!((counts, m.fatal_faults), ([2, 1, 0], 0));
}

#[test]
fn slots_rfc_disconnects_an_rx_request_whose_id_names_no_slot() {
    let mut e = Evil::connect("slots-rfc");
    let inj = e.injector();
    // The 16 buffers posted at connect take 16 packets, their heads in slots 0..16.
    for i in 0..16u8 {
        assert!(inj.send(Packet::new(vec![i; 100])));
    }
    wait("16 RX packets", || e.metrics.snapshot().rx_packets == 16);
    let m = e.metrics.snapshot();
    assert_eq!((m.rx_staged_bytes, m.rx_grant_copy_bytes), (16 * 100, 0));
    e.rx.put_request(&netstage_ring::netif::NetifRxRequest {
        id: 300,
        pad: 0,
        gref: e.rx_pool[0],
    })
    .unwrap();
    e.rx.push_requests().unwrap();
    assert!(inj.send(Packet::new(vec![9u8; 100])));
    e.port.notify().unwrap();
    let err = e.backend_error();
    assert!(
        err.contains("RX request id 300 names no staging slot"),
        "{err}"
    );
    assert_eq!(e.metrics.snapshot().fatal_faults, 1);
}

#[test]
fn slots_rfc_keys_out_of_range_refuse_the_connection() {
    for (keys, why) in [
        (
            &[("tx-data-len", "65537")][..],
            "tx-data-len 65537 is outside 64..=65536",
        ),
        (
            &[("rx-data-len", "63")][..],
            "rx-data-len 63 is outside 64..=65536",
        ),
        (&[("tx-data-len", "lots")][..], "not a number"),
        (&[("request-staged-flags", "2")][..], "request-staged-flags"),
    ] {
        let e = Evil::offer("slots-rfc", keys);
        let err = e.backend_error();
        assert!(err.contains(why), "{keys:?}: {err}");
    }
}

/// An event storm from the frontend (XSA-391 class): notifications that bring no work make
/// the backend's waits back off after a few, so the storm costs it a wake-up per
/// millisecond, not one per notification.
#[test]
fn an_event_storm_costs_the_backend_bounded_wakeups() {
    let e = Evil::connect("none");
    let before = e.metrics.snapshot();
    let t = Instant::now();
    let mut sent = 0u64;
    while t.elapsed() < Duration::from_millis(300) {
        e.port.notify().unwrap();
        sent += 1;
    }
    let m = e.metrics.snapshot();
    let woke = m.wakeups - before.wakeups;
    assert!(m.storm_backoffs > before.storm_backoffs, "{m:?}");
    // About one wake-up per millisecond of storm (plus the few before the back-off).
    assert!(
        woke < 1_500,
        "{woke} wake-ups for {sent} notifications in 300 ms"
    );
}

/// A packet of `sizes.len()` data slots, the first carrying the total: fragment `i` lies at
/// offset `8 * i` of pool page `i % 16`, filled with byte `i + 1`. Returns the requests and
/// the bytes the packet holds.
fn many_slots(e: &Evil, sizes: &[u16]) -> (Vec<NetifTxRequest>, Vec<u8>) {
    let total: u16 = sizes.iter().sum();
    let mut want = Vec::new();
    let reqs = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let page = i % 16;
            let offset = 8 * i as u16;
            let bytes = vec![i as u8 + 1; usize::from(len)];
            e.pool
                .mem
                .write_at(page * 4096 + usize::from(offset), &bytes)
                .unwrap();
            want.extend_from_slice(&bytes);
            let more = if i + 1 < sizes.len() {
                TxFlags::MORE_DATA.bits()
            } else {
                0
            };
            NetifTxRequest {
                gref: e.pool.grefs[page],
                offset,
                flags: more,
                id: i as u16,
                size: if i == 0 { total } else { len },
            }
        })
        .collect();
    (reqs, want)
}

/// XSA-432 (CVE-2023-34319) and XSA-448 (CVE-2023-46838): Linux netback overran its slot
/// arithmetic on a small packet spread over the most slots a frontend may use, and a
/// zero-length fragment crashed it. Here, through each TX path: a 100-byte packet in 18
/// slots (the most every backend takes, `XEN_NETIF_NR_SLOTS_MIN`), some of them empty,
/// arrives intact; the same in 19 slots is dropped with an error response and counted,
/// and the vif goes on.
#[test]
fn a_small_packet_over_the_most_slots_and_empty_fragments_pass_each_tx_path() {
    use netstage_netback_user::TxPath;
    for path in [TxPath::GrantCopy, TxPath::GrantMap, TxPath::Linux] {
        let cfg = BackendConfig {
            tx_path: path,
            ..BackendConfig::default()
        };
        let mut e = Evil::offer_with("none", &[], cfg);
        wait("backend Connected", || {
            read_state(&e.xs, &e.backend_dir()) == XenbusState::Connected
        });
        // 18 slots, 100 bytes: a 15-byte head, then fragments of 5 bytes and of none.
        let mut sizes = vec![15u16];
        sizes.extend((1..18).map(|i| if i % 4 == 0 { 0 } else { 5 + (i % 3) }));
        let head = 100 - sizes[1..].iter().sum::<u16>();
        sizes[0] = head;
        let (reqs, want) = many_slots(&e, &sizes);
        assert_eq!((reqs.len(), want.len()), (18, 100));
        e.send(&reqs);
        for _ in 0..reqs.len() {
            assert_eq!(e.response(), NETIF_RSP_OKAY, "{path:?}");
        }
        assert_eq!(
            e.sink.0.lock().unwrap().last().unwrap().data,
            want,
            "{path:?}"
        );
        // One slot more than every backend must take: dropped, answered, counted.
        let mut sizes19 = sizes.clone();
        sizes19.push(1);
        sizes19[0] -= 1;
        let (reqs, _) = many_slots(&e, &sizes19);
        e.send(&reqs);
        let statuses: Vec<i16> = (0..reqs.len()).map(|_| e.response()).collect();
        assert!(
            statuses.contains(&NETIF_RSP_ERROR),
            "{path:?}: {statuses:?}"
        );
        let m = e.metrics.snapshot();
        assert_eq!((m.tx_dropped, m.fatal_faults), (1, 0), "{path:?}");
        // The vif goes on.
        let (reqs, want) = many_slots(&e, &[40, 0, 20]);
        e.send(&reqs);
        for _ in 0..reqs.len() {
            assert_eq!(e.response(), NETIF_RSP_OKAY, "{path:?}");
        }
        assert_eq!(e.sink.0.lock().unwrap().last().unwrap().data, want);
    }
}
