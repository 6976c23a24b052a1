//! Frontend and backend as two domains run by threads of this process, over the emulated
//! platform and the embedded xenstored: every byte of every packet arrives, in order, both
//! ways, for grant copy and grant map, one and two queues, and every staging design
//! (RFC rev 1's own slot encoding with exactly the requests, staged bytes and grant
//! operations it implies); negotiation failures are clear.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use netstage_fallback::{Gso, Packet};
use netstage_netback_user::{
    toolstack, Backend, BackendConfig, Features, MetricsSnapshot, RxInjector, TxPath, VifHandler,
};
use netstage_netfront_user::{
    CopyPolicy, Design, Frontend, FrontendConfig, FrontendError, FrontendHandler, WhenFull,
};
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::sim::{DomainConfig, SimWorld};
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};
use netstage_ring::netif::GsoType;
use netstage_ring::staging::ReplicatedHead;

const FE: u16 = 7;

#[derive(Default)]
struct BackSide {
    /// Microseconds the backend spends on each packet (a slow backend).
    delay_us: std::sync::atomic::AtomicU64,
    got: Mutex<Vec<(u16, Packet)>>,
    injectors: Mutex<Vec<RxInjector>>,
    disconnects: Mutex<Vec<String>>,
}

impl VifHandler for BackSide {
    fn tx_packet(&self, queue: u16, pkt: Packet) {
        let d = self.delay_us.load(std::sync::atomic::Ordering::Relaxed);
        if d > 0 {
            thread::sleep(Duration::from_micros(d));
        }
        self.got.lock().unwrap().push((queue, pkt));
    }
    fn connected(&self, rx: Vec<RxInjector>) {
        *self.injectors.lock().unwrap() = rx;
    }
    fn disconnected(&self, reason: &str) {
        self.disconnects.lock().unwrap().push(reason.to_string());
    }
}

#[derive(Default)]
struct FrontSide {
    got: Mutex<Vec<(u16, Packet)>>,
}

impl FrontendHandler for FrontSide {
    fn rx_packet(&self, queue: u16, pkt: Packet) {
        self.got.lock().unwrap().push((queue, pkt));
    }
}

struct Rig {
    _world: SimWorld,
    _dir: tempfile::TempDir,
    xsd: Xenstored,
    stop: Arc<AtomicBool>,
    backend_thread: Option<thread::JoinHandle<()>>,
    back: Arc<BackSide>,
    front_dom: netstage_platform::sim::SimDomain,
    dom0: netstage_platform::sim::SimDomain,
    metrics: Arc<netstage_netback_user::Metrics>,
}

impl Rig {
    fn new(cfg: BackendConfig) -> Rig {
        let world = SimWorld::create_temp().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let xsd = Xenstored::start(XenstoredConfig::in_dir(dir.path())).unwrap();
        let small = DomainConfig {
            // Room for 64 KiB staging slots (2 x 4096 pages) besides rings and buffers.
            mem_pages: 12288,
            ..DomainConfig::default()
        };
        let dom0 = world.create_domain(0, small.clone()).unwrap();
        let front_dom = world.create_domain(FE, small).unwrap();
        xsd.introduce(FE).unwrap();
        let xs0 = XsClient::connect(xsd.socket()).unwrap();
        toolstack::create_vif(&xs0, 0, FE, 0).unwrap();
        let backend = Backend::new(dom0.clone(), xs0, cfg);
        let metrics = backend.metrics_handle();
        let back = Arc::new(BackSide::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (b2, s2) = (Arc::clone(&back), Arc::clone(&stop));
        let backend_thread = Some(thread::spawn(move || {
            backend.serve(FE, 0, b2, &s2).unwrap();
        }));
        Rig {
            _world: world,
            _dir: dir,
            xsd,
            stop,
            backend_thread,
            back,
            front_dom,
            dom0,
            metrics,
        }
    }

    fn front(
        &self,
        cfg: FrontendConfig,
        h: Arc<FrontSide>,
    ) -> Result<Frontend<netstage_platform::sim::SimDomain>, FrontendError> {
        let xs = XsClient::connect(&self.xsd.domain_socket(FE)).unwrap();
        Frontend::connect(self.front_dom.clone(), xs, 0, cfg, h)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.backend_thread.take() {
            let _ = t.join();
        }
    }
}

fn payload(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) as u8)
        .collect()
}

fn sizes() -> Vec<usize> {
    vec![14, 60, 64, 1500, 4095, 4096, 4097, 9000, 32768, 65535, 1]
}

/// The backend's counts once they stop changing. A burst publishes its packet counts before
/// the packets reach anyone, and the rest (staged and granted bytes, among others) just
/// after it has answered: the last burst's may still be on their way when its packets have
/// arrived.
fn settled(m: &netstage_netback_user::Metrics) -> MetricsSnapshot {
    let t = Instant::now();
    let mut last = m.snapshot();
    loop {
        thread::sleep(Duration::from_millis(20));
        let now = m.snapshot();
        if now == last || t.elapsed() > Duration::from_secs(10) {
            return now;
        }
        last = now;
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

fn gso_for(len: usize) -> Option<Gso> {
    (len > 1514).then_some(Gso {
        gso_type: GsoType::TcpV4,
        mss: 1448,
    })
}

fn exchange(tx_path: TxPath, queues: u16) {
    exchange_design(tx_path, queues, Design::GrantCopy);
}

fn exchange_design(tx_path: TxPath, queues: u16, design: Design) {
    exchange_sizes(tx_path, queues, design, &sizes());
}

/// What one exchange moved, and what each end counted.
struct Exchanged {
    /// Lengths of the packets the frontend sent.
    sent: Vec<usize>,
    /// Lengths of the packets the backend injected.
    injected: Vec<usize>,
    front: netstage_netfront_user::MetricsSnapshot,
    back: MetricsSnapshot,
}

/// Packets of each of `sizes`, 20 rounds, both ways over `queues` queues of `design`:
/// checks every byte, the order, the counters both ends agree on and, for the baselines,
/// the grant operations.
fn exchange_sizes(tx_path: TxPath, queues: u16, design: Design, sizes: &[usize]) -> Exchanged {
    let rig = Rig::new(BackendConfig {
        tx_path,
        max_queues: 4,
        ..BackendConfig::default()
    });
    let fh = Arc::new(FrontSide::default());
    let front = rig
        .front(
            FrontendConfig {
                queues,
                design,
                ..FrontendConfig::default()
            },
            Arc::clone(&fh),
        )
        .unwrap();
    assert_eq!(front.queues(), queues);
    assert_eq!(front.design(), design);
    let staging = !matches!(design, Design::GrantCopy | Design::GrantMap);
    wait_for("injectors", || {
        rig.back.injectors.lock().unwrap().len() == queues as usize
    });
    // 14 B..64 KiB, every size several times, round-robin over the queues.
    let mut sent: Vec<(u16, Vec<u8>)> = Vec::new();
    for round in 0..20u32 {
        for (k, &len) in sizes.iter().enumerate() {
            if len < 14 {
                continue;
            }
            let q = ((round as usize + k) % queues as usize) as u16;
            let data = payload(len, round * 100 + k as u32);
            front
                .send(
                    q,
                    Packet {
                        data: data.clone().into(),
                        gso: gso_for(len),
                        csum_blank: k % 2 == 0,
                    },
                )
                .unwrap();
            sent.push((q, data));
        }
    }
    // And the other way.
    let injectors = rig.back.injectors.lock().unwrap().clone();
    let mut injected: Vec<(u16, Vec<u8>)> = Vec::new();
    for round in 0..20u32 {
        for (k, &len) in sizes.iter().enumerate() {
            let q = ((round as usize + k) % queues as usize) as u16;
            let data = payload(len, 7 + round * 100 + k as u32);
            assert!(injectors[q as usize].send_blocking(Packet {
                data: data.clone().into(),
                gso: gso_for(len),
                csum_blank: false,
            }));
            injected.push((q, data));
        }
    }
    wait_for("TX packets at the backend", || {
        rig.back.got.lock().unwrap().len() == sent.len()
    });
    wait_for("RX packets at the frontend", || {
        fh.got.lock().unwrap().len() == injected.len()
    });
    // Per queue, in order, every byte.
    for q in 0..queues {
        let want: Vec<&Vec<u8>> = sent
            .iter()
            .filter(|(x, _)| *x == q)
            .map(|(_, d)| d)
            .collect();
        let got = rig.back.got.lock().unwrap();
        let have: Vec<&[u8]> = got
            .iter()
            .filter(|(x, _)| *x == q)
            .map(|(_, p)| &p.data[..])
            .collect();
        assert_eq!(want.len(), have.len());
        for (w, h) in want.iter().zip(&have) {
            assert!(
                w.as_slice() == *h,
                "TX packet of {} bytes differs on queue {q}",
                w.len()
            );
        }
        let want: Vec<&Vec<u8>> = injected
            .iter()
            .filter(|(x, _)| *x == q)
            .map(|(_, d)| d)
            .collect();
        let got = fh.got.lock().unwrap();
        let have: Vec<&[u8]> = got
            .iter()
            .filter(|(x, _)| *x == q)
            .map(|(_, p)| &p.data[..])
            .collect();
        assert_eq!(want.len(), have.len());
        for (w, h) in want.iter().zip(&have) {
            assert!(
                w.as_slice() == *h,
                "RX packet of {} bytes differs on queue {q}",
                w.len()
            );
        }
    }
    // GSO metadata travels with the packets.
    let got = rig.back.got.lock().unwrap();
    assert!(got.iter().all(|(_, p)| p.gso == gso_for(p.data.len())));
    drop(got);
    let fm = front.metrics();
    let bm = settled(&rig.metrics);
    // Each queue counted its own packets; the device's counters are their sum.
    let per_queue = front.queue_metrics();
    assert_eq!(per_queue.len(), usize::from(queues));
    for (q, m) in per_queue.iter().enumerate() {
        let on = |v: &[(u16, Vec<u8>)]| v.iter().filter(|(x, _)| usize::from(*x) == q).count();
        assert_eq!(m.tx_packets, on(&sent) as u64, "queue {q}");
        assert_eq!(m.rx_packets, on(&injected) as u64, "queue {q}");
    }
    let sum = |f: fn(&netstage_netfront_user::MetricsSnapshot) -> u64| {
        per_queue.iter().map(f).sum::<u64>()
    };
    assert_eq!(sum(|m| m.tx_bytes), fm.tx_bytes);
    assert_eq!(sum(|m| m.notifications), fm.notifications);
    assert_eq!(sum(|m| m.granted_bytes), fm.granted_bytes);
    let exchanged = Exchanged {
        sent: sent.iter().map(|(_, d)| d.len()).collect(),
        injected: injected.iter().map(|(_, d)| d.len()).collect(),
        front: fm,
        back: bm,
    };
    let tx_bytes: u64 = sent.iter().map(|(_, d)| d.len() as u64).sum();
    let rx_bytes: u64 = injected.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!((fm.tx_packets, fm.tx_bytes), (sent.len() as u64, tx_bytes));
    assert_eq!((bm.tx_packets, bm.tx_bytes), (sent.len() as u64, tx_bytes));
    assert_eq!(
        (fm.rx_packets, fm.rx_bytes),
        (injected.len() as u64, rx_bytes)
    );
    assert_eq!(
        (bm.rx_packets, bm.rx_bytes),
        (injected.len() as u64, rx_bytes)
    );
    assert_eq!(
        (
            bm.tx_dropped,
            bm.tx_grant_errors,
            fm.tx_errors,
            fm.rx_dropped
        ),
        (0, 0, 0, 0)
    );
    if staging {
        // The heads went through staging memory, and the ends agree on how much.
        assert!(
            fm.tx_staged_packets > 0 && fm.rx_staged_packets > 0,
            "{fm:?}"
        );
        assert_eq!(fm.tx_staged_bytes, bm.tx_staged_bytes);
        assert_eq!(fm.rx_staged_bytes, bm.rx_staged_bytes);
        assert_eq!(fm.tx_staged_packets, bm.tx_staged_packets);
        // Every byte went by exactly one path.
        assert_eq!(
            bm.tx_staged_bytes + bm.tx_grant_copy_bytes + bm.tx_grant_map_bytes,
            bm.tx_bytes
        );
        assert_eq!(bm.rx_staged_bytes + bm.rx_grant_copy_bytes, bm.rx_bytes);
        if matches!(design, Design::Ring { .. }) {
            // RX decides per packet (a head cut to the room counts both ways): each packet
            // was staged or counted as a ring-full fallback, once each at most, even when
            // it waited for the frontend's requests. The adaptive policy may also decline
            // a packet the ring has room for (while the ring is congested), which RX does
            // not count.
            let adaptive = matches!(
                design,
                Design::Ring {
                    policy: CopyPolicy::Adaptive,
                    ..
                }
            );
            assert!(
                (adaptive || bm.rx_staged_packets + bm.rx_fallback_ring_full >= bm.rx_packets)
                    && bm.rx_staged_packets.max(bm.rx_fallback_ring_full) <= bm.rx_packets,
                "{bm:?}"
            );
            // The data rings' fill: sampled at every 16th staged RX packet, per queue; at
            // TX once for each burst that staged packets whole without a decision each
            // (greedy and fixed policies) and at every 16th decision made packet by
            // packet, so at least once and at most once a packet more than the 16th
            // decisions; never above the ring.
            let q = u64::from(queues);
            let within =
                |samples: u64, events: u64| samples <= events / 16 && samples + q >= events / 16;
            if adaptive {
                assert!(within(fm.tx_ring_fill_samples, fm.tx_packets), "{fm:?}");
            } else {
                let most = fm.tx_packets + fm.tx_packets / 16;
                assert!(
                    fm.tx_ring_fill_samples > 0 && fm.tx_ring_fill_samples <= most,
                    "{fm:?}"
                );
            }
            assert!(
                within(fm.rx_ring_fill_samples, fm.rx_staged_packets),
                "{fm:?}"
            );
            assert!(fm.tx_ring_fill_ppm <= fm.tx_ring_fill_samples * 1_000_000);
            assert!(fm.rx_ring_fill_ppm <= fm.rx_ring_fill_samples * 1_000_000);
            // A sampled RX packet is itself in the ring when it is read.
            assert_eq!(fm.rx_ring_fill_ppm > 0, fm.rx_ring_fill_samples > 0);
        }
        assert!(fm.granted_bytes > 0);
        front.close().unwrap();
        return exchanged;
    }
    // Grant operations: one per page of every packet, by the path chosen (RX always copies).
    let pages = |v: &Vec<(u16, Vec<u8>)>| -> u64 {
        v.iter().map(|(_, d)| d.len().div_ceil(4096) as u64).sum()
    };
    let (tx_pages, rx_pages) = (pages(&sent), pages(&injected));
    match tx_path {
        TxPath::GrantCopy => {
            assert_eq!((bm.grant_copy_ops, bm.grant_maps), (tx_pages + rx_pages, 0));
        }
        TxPath::GrantMap => {
            assert_eq!((bm.grant_copy_ops, bm.grant_maps), (rx_pages, tx_pages));
        }
        TxPath::Linux => {
            // A head copy per packet, a map per page past the first 128 bytes.
            let maps: u64 = sent
                .iter()
                .filter(|(_, d)| d.len() > 128)
                .map(|(_, d)| d.len().div_ceil(4096) as u64)
                .sum();
            let heads = sent.len() as u64;
            assert_eq!((bm.grant_copy_ops, bm.grant_maps), (heads + rx_pages, maps));
        }
    }
    // Batches of at most 64 operations per call.
    assert!(bm.grant_copy_calls >= bm.grant_copy_ops.div_ceil(64));
    // The platform counted the same operations.
    let pc = rig.dom0.counters();
    assert_eq!(pc.copy_ops, bm.grant_copy_ops);
    assert_eq!(pc.maps, bm.grant_maps + 2 * u64::from(queues));
    assert!(fm.notifications > 0 && bm.notifications > 0);
    front.close().unwrap();
    wait_for("backend to see the close", || {
        !rig.back.disconnects.lock().unwrap().is_empty()
    });
    exchanged
}

#[test]
fn grant_copy_one_queue() {
    exchange(TxPath::GrantCopy, 1);
}

#[test]
fn grant_copy_two_queues() {
    exchange(TxPath::GrantCopy, 2);
}

#[test]
fn grant_map_one_queue() {
    exchange(TxPath::GrantMap, 1);
}

#[test]
fn grant_map_two_queues() {
    exchange(TxPath::GrantMap, 2);
}

#[test]
fn slots_256_one_queue() {
    exchange_design(TxPath::GrantCopy, 1, Design::Slots { data_len: 256 });
}

#[test]
fn slots_4096_two_queues() {
    exchange_design(TxPath::GrantCopy, 2, Design::Slots { data_len: 4096 });
}

#[test]
fn slots_65536_copy_only() {
    exchange_design(TxPath::GrantMap, 1, Design::Slots { data_len: 65536 });
}

/// A packet of `len` bytes put in requests of a page each, in RFC rev 1's encoding with
/// `data_len`: per request, the bytes its staging slot replicates and the granted rest.
fn rfc_split(data_len: u32, len: usize) -> Vec<(usize, usize)> {
    let mut cur = ReplicatedHead::new(data_len).unwrap().start();
    (0..len.max(1))
        .step_by(4096)
        .map(|at| {
            let page = (len - at).min(4096);
            let r = cur.take(page);
            (r, page - r)
        })
        .collect()
}

/// `slots-rfc:<data_len>` both ways, with packets below, at and above `data_len`: every
/// byte arrives, and the wire is RFC rev 1's: the requests of a packet without staging
/// (no flag, no request more), exactly what the encoding replicates counted as staged by
/// both ends, and a grant operation only for a request's granted rest.
fn slots_rfc(tx_path: TxPath, queues: u16, data_len: u32) {
    let d = data_len as usize;
    let mut sizes = vec![14, 60, 1500, 4096, 9000, 65535];
    sizes.extend([d - 1, d, d + 1].into_iter().filter(|n| *n <= 65535));
    let x = exchange_sizes(tx_path, queues, Design::SlotsRfc { data_len }, &sizes);
    let (fm, bm) = (x.front, x.back);
    let sum = |lens: &[usize], f: &dyn Fn(usize) -> usize| -> u64 {
        lens.iter().map(|&l| f(l) as u64).sum()
    };
    let replicated = |l| rfc_split(data_len, l).iter().map(|p| p.0).sum();
    let granted_parts = |l| rfc_split(data_len, l).iter().filter(|p| p.1 > 0).count();
    let requests = |l: usize| l.div_ceil(4096).max(1) + usize::from(gso_for(l).is_some());
    assert_eq!(bm.tx_staged_bytes, sum(&x.sent, &replicated), "{bm:?}");
    assert_eq!(bm.rx_staged_bytes, sum(&x.injected, &replicated), "{bm:?}");
    assert_eq!(fm.rx_staged_bytes, bm.rx_staged_bytes);
    assert_eq!(bm.tx_slots, sum(&x.sent, &requests), "{bm:?}");
    let (tx_ops, rx_ops) = (
        sum(&x.sent, &granted_parts),
        sum(&x.injected, &granted_parts),
    );
    match tx_path {
        TxPath::GrantCopy => assert_eq!((bm.grant_copy_ops, bm.grant_maps), (tx_ops + rx_ops, 0)),
        TxPath::GrantMap => assert_eq!((bm.grant_copy_ops, bm.grant_maps), (rx_ops, tx_ops)),
        TxPath::Linux => unreachable!("slots-rfc is checked over grant copy and grant map"),
    }
    if data_len == 65536 {
        // Copy-only: no packet byte goes by a grant operation, either way.
        assert_eq!((tx_ops, rx_ops), (0, 0));
        assert_eq!(bm.tx_staged_bytes, bm.tx_bytes);
        assert_eq!(bm.rx_staged_bytes, bm.rx_bytes);
    }
}

#[test]
fn slots_rfc_below_at_and_above_data_len() {
    for (tx_path, queues, data_len) in [
        (TxPath::GrantCopy, 1, 256),
        (TxPath::GrantCopy, 2, 4096),
        (TxPath::GrantMap, 1, 6000),
    ] {
        slots_rfc(tx_path, queues, data_len);
    }
}

#[test]
fn slots_rfc_65536_copy_only() {
    slots_rfc(TxPath::GrantMap, 1, 65536);
}

/// The frontend's directory: `key`'s value, if written.
fn front_key(rig: &Rig, key: &str) -> Option<String> {
    let xs = XsClient::connect(rig.xsd.socket()).unwrap();
    let path = format!("/local/domain/{FE}/device/vif/0/{key}");
    xs.read(NO_TX, &path)
        .ok()
        .map(|v| String::from_utf8(v).unwrap())
}

#[test]
fn slots_rfc_is_negotiated_with_the_rfc_keys_and_falls_back_to_grant_copy() {
    let connect = |rig: &Rig, design| {
        let cfg = FrontendConfig {
            design,
            ..FrontendConfig::default()
        };
        rig.front(cfg, Arc::new(FrontSide::default())).unwrap()
    };
    // Offered up to 4096: 65536 is reduced to it; the frontend writes the RFC's keys and
    // not the flags' key, which the other slot encoding writes.
    let rig = Rig::new(BackendConfig {
        slots_max_data_len: Some(4096),
        ..BackendConfig::default()
    });
    let f = connect(&rig, Design::SlotsRfc { data_len: 65536 });
    assert_eq!(f.design(), Design::SlotsRfc { data_len: 4096 });
    for k in ["tx-data-len", "rx-data-len"] {
        assert_eq!(front_key(&rig, k).as_deref(), Some("4096"), "{k}");
    }
    assert!(front_key(&rig, "tx-data-ref0").is_some());
    assert_eq!(front_key(&rig, "request-staged-flags"), None);
    f.send(0, Packet::new(payload(1500, 1))).unwrap();
    wait_for("TX", || rig.back.got.lock().unwrap().len() == 1);
    assert_eq!(rig.back.got.lock().unwrap()[0].1.data, payload(1500, 1));
    f.close().unwrap();
    let f = connect(&rig, Design::Slots { data_len: 256 });
    assert_eq!(
        front_key(&rig, "request-staged-flags").as_deref(),
        Some("1")
    );
    f.close().unwrap();
    drop(rig);
    // Not offered: grant copy, and packets still go.
    let rig = Rig::new(BackendConfig {
        slots_max_data_len: None,
        ..BackendConfig::default()
    });
    let f = connect(&rig, Design::SlotsRfc { data_len: 256 });
    assert_eq!(f.design(), Design::GrantCopy);
    assert_eq!(front_key(&rig, "tx-data-len"), None);
    f.send(0, Packet::new(payload(300, 2))).unwrap();
    wait_for("TX", || rig.back.got.lock().unwrap().len() == 1);
    assert_eq!(f.metrics().tx_staged_packets, 0);
    f.close().unwrap();
}

#[test]
fn data_ring_greedy_one_queue() {
    exchange_design(
        TxPath::GrantCopy,
        1,
        Design::Ring {
            order: 4,
            policy: CopyPolicy::Greedy,
            when_full: WhenFull::Grant,
        },
    );
}

#[test]
fn data_ring_fixed_two_queues() {
    exchange_design(
        TxPath::GrantCopy,
        2,
        Design::Ring {
            order: 2,
            policy: CopyPolicy::Fixed(256),
            when_full: WhenFull::Grant,
        },
    );
}

#[test]
fn data_ring_adaptive_small_ring_falls_back() {
    exchange_design(
        TxPath::GrantCopy,
        1,
        Design::Ring {
            order: 0,
            policy: CopyPolicy::Adaptive,
            when_full: WhenFull::Grant,
        },
    );
}

#[test]
fn a_slow_backend_fills_the_data_ring_and_nothing_is_lost() {
    let (fm, bm) = through_a_slow_backend(WhenFull::Grant);
    // The ring filled: some packets went (partly) by grants, counted; the rest staged.
    assert!(fm.tx_fallback_ring_full > 0, "{fm:?}");
    assert_eq!(fm.tx_ring_full_waits, 0, "{fm:?}");
    assert!(
        fm.tx_staged_packets > 0 && fm.tx_staged_packets < 400,
        "{fm:?}"
    );
    assert_eq!(fm.tx_staged_bytes, bm.tx_staged_bytes);
    // The fill the frontend saw at its bursts and decisions shows the backlog: over half
    // full on average. (At most a sample a packet and one every 16th decision.)
    assert!(
        fm.tx_ring_fill_samples > 0 && fm.tx_ring_fill_samples <= 400 + 400 / 16,
        "{fm:?}"
    );
    let mean = fm.tx_ring_fill_ppm / fm.tx_ring_fill_samples;
    assert!(mean > 500_000, "mean fill {mean} ppm");
}

#[test]
fn a_sender_that_waits_for_room_stages_every_packet_through_a_slow_backend() {
    let (fm, bm) = through_a_slow_backend(WhenFull::Wait);
    // The backend frees room before it answers, so the frontend never found the ring full
    // with nothing in flight: every packet waited for room instead of going by grants.
    assert!(fm.tx_ring_full_waits > 0, "{fm:?}");
    assert_eq!(fm.tx_fallback_ring_full, 0, "{fm:?}");
    assert_eq!(
        (fm.tx_staged_packets, fm.tx_staged_bytes),
        (400, 400 * 1500),
        "{fm:?}"
    );
    assert_eq!(fm.tx_staged_bytes, bm.tx_staged_bytes);
}

/// Sends 400 packets of 1500 bytes through a data ring of order 1 (4 KiB a direction) to a
/// backend that takes 200 us a packet, with `when_full`; checks that all arrive intact,
/// and returns both ends' counters.
fn through_a_slow_backend(
    when_full: WhenFull,
) -> (netstage_netfront_user::MetricsSnapshot, MetricsSnapshot) {
    let rig = Rig::new(BackendConfig::default());
    rig.back
        .delay_us
        .store(200, std::sync::atomic::Ordering::Relaxed);
    let fh = Arc::new(FrontSide::default());
    let design = Design::Ring {
        order: 1,
        policy: CopyPolicy::Greedy,
        when_full,
    };
    let front = rig
        .front(
            FrontendConfig {
                design,
                ..FrontendConfig::default()
            },
            Arc::clone(&fh),
        )
        .unwrap();
    assert_eq!(front.design(), design);
    let sent: Vec<Vec<u8>> = (0..400u32).map(|i| payload(1500, i)).collect();
    for d in &sent {
        front.send(0, Packet::new(d.clone())).unwrap();
    }
    wait_for("all packets", || {
        rig.back.got.lock().unwrap().len() == sent.len()
    });
    let got = rig.back.got.lock().unwrap();
    for (i, (w, (_, h))) in sent.iter().zip(got.iter()).enumerate() {
        assert!(w.as_slice() == &h.data[..], "packet {i} differs");
    }
    drop(got);
    let (fm, bm) = (front.metrics(), settled(&rig.metrics));
    assert_eq!((bm.tx_packets, bm.tx_dropped), (400, 0));
    front.close().unwrap();
    (fm, bm)
}

#[test]
fn a_forwarding_frontend_sends_slot_packets_without_copying() {
    // Packets up to 4096 bytes fit their RX slot and leave from it; larger ones are copied.
    let small = forward(Design::Slots { data_len: 4096 }, |l| l <= 4096);
    assert!(small > 0);
    // RFC rev 1's encoding has no zero copy: every packet is copied, and all arrive.
    forward(Design::SlotsRfc { data_len: 4096 }, |_| false);
}

/// A frontend of `design` forwards 300 packets the backend injects: every one comes back
/// intact, those of the lengths `zero_copy` says leave from their RX slot (how many is
/// returned).
fn forward(design: Design, zero_copy: impl Fn(usize) -> bool) -> u64 {
    let rig = Rig::new(BackendConfig::default());
    let fh = Arc::new(FrontSide::default());
    let front = rig
        .front(
            FrontendConfig {
                design,
                forward: true,
                ..FrontendConfig::default()
            },
            Arc::clone(&fh),
        )
        .unwrap();
    wait_for("injectors", || {
        rig.back.injectors.lock().unwrap().len() == 1
    });
    let inj = rig.back.injectors.lock().unwrap()[0].clone();
    let sizes = [60usize, 1500, 4096, 9000, 64, 32768];
    let mut sent = Vec::new();
    for round in 0..50u32 {
        for (k, len) in sizes.iter().enumerate() {
            let d = payload(*len, round * 10 + k as u32);
            assert!(inj.send_blocking(Packet::new(d.clone())));
            sent.push(d);
        }
    }
    wait_for("forwarded packets", || {
        rig.back.got.lock().unwrap().len() == sent.len()
    });
    let got = rig.back.got.lock().unwrap();
    for (i, (w, (_, h))) in sent.iter().zip(got.iter()).enumerate() {
        assert!(w.as_slice() == &h.data[..], "forwarded packet {i} differs");
    }
    drop(got);
    assert!(
        fh.got.lock().unwrap().is_empty(),
        "forwarded packets do not reach the handler"
    );
    let fm = front.metrics();
    let bm = settled(&rig.metrics);
    let small = 50 * sizes.iter().filter(|l| zero_copy(**l)).count() as u64;
    assert_eq!(fm.tx_zerocopy_packets, small);
    assert_eq!(bm.tx_zerocopy_packets, small);
    assert_eq!((bm.tx_packets, bm.tx_dropped), (sent.len() as u64, 0));
    front.close().unwrap();
    small
}

#[test]
fn a_frontend_with_nothing_optional_still_works() {
    let rig = Rig::new(BackendConfig::default());
    let fh = Arc::new(FrontSide::default());
    let front = rig
        .front(
            FrontendConfig {
                want: Features::NONE,
                queues: 1,
                ..FrontendConfig::default()
            },
            Arc::clone(&fh),
        )
        .unwrap();
    for len in [14usize, 60, 1500, 4096] {
        front.send(0, Packet::new(payload(len, 1))).unwrap();
    }
    assert!(matches!(
        front.send(0, Packet::new(payload(5000, 1))),
        Err(FrontendError::BadPacket { .. })
    ));
    wait_for("TX", || rig.back.got.lock().unwrap().len() == 4);
    wait_for("injectors", || {
        rig.back.injectors.lock().unwrap().len() == 1
    });
    let inj = rig.back.injectors.lock().unwrap()[0].clone();
    // Without sg the backend cannot deliver a multi-page packet: it drops it and counts it.
    assert!(inj.send_blocking(Packet::new(payload(5000, 2))));
    assert!(inj.send_blocking(Packet::new(payload(1500, 3))));
    wait_for("RX", || fh.got.lock().unwrap().len() == 1);
    assert_eq!(fh.got.lock().unwrap()[0].1.data, payload(1500, 3));
    wait_for("drop count", || rig.metrics.snapshot().rx_dropped == 1);
    front.close().unwrap();
}

#[test]
fn asking_for_what_the_backend_does_not_offer_is_refused() {
    let rig = Rig::new(BackendConfig {
        offer: Features {
            gso_tcpv6: false,
            ..Features::ALL
        },
        max_queues: 1,
        ..BackendConfig::default()
    });
    let e = rig
        .front(FrontendConfig::default(), Arc::new(FrontSide::default()))
        .err()
        .expect("refused");
    assert!(
        matches!(e, FrontendError::FeatureMismatch("feature-gso-tcpv6")),
        "{e}"
    );
    assert!(e.to_string().contains("does not offer feature-gso-tcpv6"));
    // Fewer queues than asked for is not an error: the frontend takes what is offered.
    let f = rig
        .front(
            FrontendConfig {
                queues: 4,
                want: Features {
                    gso_tcpv6: false,
                    ..Features::ALL
                },
                ..FrontendConfig::default()
            },
            Arc::new(FrontSide::default()),
        )
        .unwrap();
    assert_eq!(f.queues(), 1);
    f.close().unwrap();
}

#[test]
fn close_and_reconnect() {
    let rig = Rig::new(BackendConfig::default());
    for round in 0..3u32 {
        let fh = Arc::new(FrontSide::default());
        let front = rig
            .front(FrontendConfig::default(), Arc::clone(&fh))
            .unwrap();
        front.send(0, Packet::new(payload(100, round))).unwrap();
        wait_for("TX", || {
            rig.back.got.lock().unwrap().len() == round as usize + 1
        });
        front.close().unwrap();
    }
    assert_eq!(rig.metrics.snapshot().connects, 3);
}
