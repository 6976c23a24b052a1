//! The queue API end to end: packets lent in place arrive intact for every design, both
//! ways, and
//! thousands of short bursts of random sizes never leave a wait to time out while work is
//! pending (no lost wake-up, no missed notification across the rings and the data ring).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netstage_fallback::{PacketBuf, PacketRef, ViewPart};
use netstage_netback_user::{BackQueue, QueueDriver, QueueFault, BURST};
use netstage_netfront_user::PollMode;
use netstage_platform::sim::SimDomain;

mod queue_rig;
use queue_rig::{payload, Rig};

/// Checks every packet the guest sends, lent in place: its bytes are `payload(seq, len)`
/// with `seq` counting from 0.
#[derive(Default)]
struct Checker {
    good: AtomicU64,
    bad: AtomicU64,
    lent_parts: AtomicU64,
    /// Parts of no bytes in a view (a view lists only parts with bytes).
    empty_parts: AtomicU64,
}

impl QueueDriver<SimDomain> for Checker {
    fn run(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        let mut bufs = PacketBuf::pool(BURST);
        let mut copy = vec![0u8; 65535];
        let mut want = vec![0u8; 65535];
        while !q.stopped() {
            let n = q.recv_burst_in_place(&mut bufs, |v| {
                let seq = self.good.load(Ordering::Relaxed) + self.bad.load(Ordering::Relaxed);
                let len = v.copy_to(&mut copy).unwrap_or(0);
                payload(seq as u32, len, &mut want);
                let shared = v
                    .parts()
                    .iter()
                    .filter(|p| matches!(p, ViewPart::Shared { .. }))
                    .count();
                self.lent_parts.fetch_add(shared as u64, Ordering::Relaxed);
                let empty = v.parts().iter().filter(|p| p.is_empty()).count();
                self.empty_parts.fetch_add(empty as u64, Ordering::Relaxed);
                let ok = len > 0 && copy[..len] == want[..len];
                let counter = if ok { &self.good } else { &self.bad };
                counter.fetch_add(1, Ordering::Relaxed);
            })?;
            if n == 0 {
                q.wait(Some(Duration::from_millis(10)))?;
            }
        }
        Ok(())
    }
}

/// Sizes that cross a slot (256), a page, a 64 KiB packet and the small data ring's end.
fn size_of(seq: u32) -> usize {
    const SIZES: [usize; 9] = [14, 60, 255, 256, 257, 1500, 4097, 9000, 65535];
    SIZES[seq as usize % SIZES.len()]
}

fn send_checked(design: &str, packets: u32) -> Arc<Checker> {
    let checker = Arc::new(Checker::default());
    let mut rig = Rig::new(design, PollMode::Block, Arc::clone(&checker) as _);
    let q = &mut rig.queues[0];
    let mut frame = vec![0u8; 65535];
    let deadline = Instant::now() + Duration::from_secs(60);
    for seq in 0..packets {
        let len = size_of(seq);
        payload(seq, len, &mut frame);
        while q.send_burst(&[framed(&frame[..len])]).unwrap() == 0 {
            assert!(Instant::now() < deadline, "stuck at packet {seq}");
            q.wait(Some(Duration::from_millis(10))).unwrap();
        }
    }
    let want = u64::from(packets);
    while checker.good.load(Ordering::Relaxed) + checker.bad.load(Ordering::Relaxed) < want {
        assert!(Instant::now() < deadline, "not every packet arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
    rig.close();
    checker
}

/// A design of each kind that lends in place (and grant copy, which has nothing to lend).
const LENDING: [&str; 6] = [
    "grant-copy",
    "slots:256",
    "slots:4096",
    "slots-rfc:256",
    "slots-rfc:65536",
    "ring:4:greedy",
];

#[test]
fn packets_lent_in_place_arrive_intact() {
    for design in LENDING.into_iter().chain(["ring:8:greedy"]) {
        let c = send_checked(design, 2000);
        assert_eq!(
            c.bad.load(Ordering::Relaxed),
            0,
            "{design}: corrupted packets"
        );
        assert_eq!(c.good.load(Ordering::Relaxed), 2000, "{design}");
        assert_eq!(
            c.empty_parts.load(Ordering::Relaxed),
            0,
            "{design}: empty parts"
        );
        let lent = c.lent_parts.load(Ordering::Relaxed);
        if design == "grant-copy" {
            assert_eq!(lent, 0, "grant copy has nothing to lend");
        } else {
            // A 16-page ring (order 4) wraps every few packets: some heads come in two
            // windows; slots lend at most a page.
            assert!(lent > 0, "{design}: nothing was lent in place");
        }
    }
}

/// Sends `count` frames `payload(seq, size_of(seq))` to the guest, in order.
struct Generator {
    count: u32,
}

impl QueueDriver<SimDomain> for Generator {
    fn run(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        let mut frame = vec![0u8; 65535];
        let mut seq = 0;
        while !q.stopped() {
            if seq == self.count {
                q.wait(Some(Duration::from_millis(10)))?;
                continue;
            }
            let len = size_of(seq);
            payload(seq, len, &mut frame);
            if q.send_burst(&[framed(&frame[..len])])? == 1 {
                seq += 1;
            } else {
                q.wait(Some(Duration::from_millis(10)))?;
            }
        }
        Ok(())
    }
}

/// A frame, with TCP segmentation offload when it is longer than an Ethernet frame.
fn framed(data: &[u8]) -> PacketRef<'_> {
    let mut p = PacketRef::new(data);
    if data.len() > 1514 {
        p.gso = Some(netstage_fallback::Gso {
            gso_type: netstage_ring::netif::GsoType::TcpV4,
            mss: 1448,
        });
    }
    p
}

/// Receives `count` frames in place and checks each; returns (good, bad, windows lent).
fn receive_checked(design: &str, count: u32) -> (u32, u32, u64) {
    let mut rig = Rig::new(design, PollMode::Block, Arc::new(Generator { count }));
    let q = &mut rig.queues[0];
    let (mut good, mut bad, mut windows) = (0u32, 0u32, 0u64);
    let mut copy = vec![0u8; 65535];
    let mut want = vec![0u8; 65535];
    let deadline = Instant::now() + Duration::from_secs(60);
    while good + bad < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} arrived",
            good + bad
        );
        let n = q
            .recv_burst_in_place(BURST, |v| {
                let len = v.copy_to(&mut copy).unwrap_or(0);
                payload(good + bad, len, &mut want);
                windows += v.parts().len() as u64;
                if len == size_of(good + bad) && copy[..len] == want[..len] {
                    good += 1;
                } else {
                    bad += 1;
                }
            })
            .unwrap();
        if n == 0 {
            q.wait(Some(Duration::from_millis(10))).unwrap();
        }
    }
    rig.close();
    (good, bad, windows)
}

#[test]
fn packets_received_in_place_arrive_intact() {
    for design in LENDING {
        let (good, bad, windows) = receive_checked(design, 2000);
        assert_eq!((good, bad), (2000, 0), "{design}: (intact, corrupted)");
        assert!(
            windows >= 2000,
            "{design}: every packet is at least one window"
        );
    }
}

/// Short bursts of random sizes through an echoing backend: every wait of the frontend
/// that returns without work while echoes are still owed is counted, and each of its waits
/// is long (a second), so one lost wake-up shows as a timeout.
fn bursts(design: &str, poll: PollMode, n: u32, rng: &mut fastrand::Rng) -> (u32, u64) {
    let mut rig = Rig::new(design, poll, Arc::new(MeasuredEcho::default()));
    let q = &mut rig.queues[0];
    let frame = vec![0x42u8; 9000];
    let mut bufs = PacketBuf::pool(BURST);
    let mut timeouts = 0;
    let mut echoed = 0u64;
    for _ in 0..n {
        let k = rng.usize(1..=16);
        let sizes: Vec<usize> = (0..k).map(|_| rng.usize(14..=9000)).collect();
        let burst: Vec<PacketRef<'_>> =
            sizes.iter().map(|&s| PacketRef::new(&frame[..s])).collect();
        let mut sent = 0;
        let mut back = 0;
        while back < k {
            if sent < k {
                sent += q.send_burst(&burst[sent..]).unwrap();
            }
            let got = q.recv_burst(&mut bufs).unwrap();
            back += got;
            if got == 0 && back < k {
                let t = Instant::now();
                let woke = q.wait(Some(Duration::from_secs(1))).unwrap();
                if poll != PollMode::BusyPoll && !woke && t.elapsed() >= Duration::from_secs(1) {
                    timeouts += 1;
                }
            }
        }
        echoed += back as u64;
    }
    rig.close();
    (timeouts, echoed)
}

#[test]
fn no_wait_times_out_while_work_is_pending() {
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let designs = [
        "grant-copy",
        "grant-map",
        "linux",
        "slots:256",
        "slots-rfc:256",
        "ring:2:greedy",
        "ring:2:greedy:wait",
        "ring:8:adaptive",
    ];
    let t = Instant::now();
    let mut total = 0;
    // Every design once, in an order drawn from the seed.
    let mut order: Vec<usize> = (0..designs.len()).collect();
    rng.shuffle(&mut order);
    for (round, &d) in order.iter().enumerate() {
        let design = designs[d];
        let poll = match round % 4 {
            3 => PollMode::BusyPoll,
            1 => PollMode::BlockArmed,
            _ => PollMode::Block,
        };
        let (timeouts, echoed) = bursts(design, poll, 400, &mut rng);
        assert_eq!(
            timeouts, 0,
            "seed {seed}: {design} ({poll:?}): {timeouts} waits timed out with echoes owed"
        );
        total += echoed;
    }
    assert!(total > 0);
    eprintln!(
        "{total} frames echoed in {} bursts in {:?} (seed {seed})",
        400 * designs.len(),
        t.elapsed()
    );
}

/// Transactions one at a time through a backend that echoes each frame after a pause, the
/// guest pausing as long before its next frame (so that each end is waiting when the
/// other's frame comes, however fast the machine), both ends' waits spinning up to a
/// second (every frame arrives during a spin); returns the events the backend sent the
/// guest meanwhile, and those the guest sent the backend.
fn events_for_transactions(poll: PollMode, n: usize) -> (u64, u64) {
    let spin = Duration::from_secs(1);
    let mut rig = Rig::spinning(
        "ring:8:greedy",
        poll,
        spin,
        Arc::new(PausedEcho(ECHO_PAUSE)),
    );
    let frame = [0x5au8; 64];
    let mut bufs = PacketBuf::pool(BURST);
    let link = rig.link.as_ref().unwrap();
    let before = (
        rig.back.snapshot().notifications,
        link.metrics().notifications,
    );
    let q = &mut rig.queues[0];
    for i in 0..n {
        std::thread::sleep(ECHO_PAUSE);
        while q.send_burst(&[PacketRef::new(&frame)]).unwrap() == 0 {
            q.wait(Some(Duration::from_secs(5))).unwrap();
        }
        let t = Instant::now();
        while q.recv_burst(&mut bufs).unwrap() == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{poll:?}: echo {i} never came"
            );
            q.wait(Some(Duration::from_secs(5))).unwrap();
        }
    }
    drop(bufs);
    let link = rig.link.as_ref().unwrap();
    let events = (
        rig.back.snapshot().notifications - before.0,
        link.metrics().notifications - before.1,
    );
    rig.close();
    events
}

/// A blocking wait that spins unarmed costs the peer no event for a frame that arrives
/// during the spin; one armed at once (Linux's shape) has the peer send one for nearly every
/// frame, since each end is armed whenever it waits. Both ends, both ways.
#[test]
fn an_armed_wait_has_the_peer_notify_where_an_unarmed_spin_does_not() {
    let n = 200;
    let unarmed = events_for_transactions(PollMode::Block, n);
    let armed = events_for_transactions(PollMode::BlockArmed, n);
    eprintln!("events (backend's, guest's) for {n} echoes: unarmed spin {unarmed:?}, armed at once {armed:?}");
    assert!(
        unarmed.0 <= 20 && unarmed.1 <= 20,
        "unarmed spin: {unarmed:?} events for {n} echoes"
    );
    let half = n as u64 / 2;
    assert!(
        armed.0 >= half && armed.1 >= half,
        "armed at once: {armed:?} events for {n} echoes"
    );
}

/// The counters a [`CountingEcho`] reads: the backend's and the guest's.
type BothCounters = (
    Arc<netstage_netback_user::Metrics>,
    Arc<netstage_netfront_user::Metrics>,
);

/// Echoes each 64-byte frame, taken lent in place; as each is delivered, before anything
/// else, it checks that the backend has counted it taken and the guest counted it sent, and
/// notes the first time either had not.
#[derive(Default)]
struct CountingEcho {
    counters: std::sync::OnceLock<BothCounters>,
    /// Counts as they were when the rig was connected (the backend's TX, the guest's TX).
    start: std::sync::OnceLock<(u64, u64)>,
    lapse: std::sync::Mutex<Option<String>>,
}

impl CountingEcho {
    fn check(&self, taken: u64) {
        let (Some((back, front)), Some(start)) = (self.counters.get(), self.start.get()) else {
            return;
        };
        let seen = (
            back.snapshot().tx_packets - start.0,
            front.snapshot().tx_packets - start.1,
        );
        if seen.0 < taken || seen.1 < taken {
            let mut lapse = self.lapse.lock().unwrap();
            lapse.get_or_insert(format!(
                "frame {taken} delivered while counted (backend, guest) {seen:?}"
            ));
        }
    }
}

impl QueueDriver<SimDomain> for CountingEcho {
    fn run(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        let mut bufs = PacketBuf::pool(BURST);
        let frame = [0x5au8; 64];
        let mut taken = 0u64;
        while !q.stopped() {
            let got = q.recv_burst_in_place(&mut bufs, |_| {
                taken += 1;
                self.check(taken);
            })?;
            if got == 0 {
                q.wait(Some(Duration::from_millis(100)))?;
                continue;
            }
            let echo = vec![PacketRef::new(&frame); got];
            let mut sent = 0;
            while sent < got && !q.stopped() {
                let n = q.send_burst(&echo[sent..])?;
                if n == 0 {
                    q.wait(Some(Duration::from_millis(100)))?;
                }
                sent += n;
            }
        }
        Ok(())
    }
}

/// Counters are published before the packets they count, at both ends, both ways: as the
/// backend's application gets a frame, the backend has counted it taken and the guest sent;
/// once the guest has the echo, the backend has counted it sent. Busy-polling both ends, so
/// that the reads follow the packets as closely as they can; 10,000 echoes a design (the
/// old order, counting after publishing, failed within them in debug builds).
#[test]
fn counters_are_published_before_the_packets_they_count() {
    for design in ["grant-copy", "slots:256", "ring:8:greedy"] {
        let echo = Arc::new(CountingEcho::default());
        let mut rig = Rig::new(design, PollMode::BusyPoll, echo.clone());
        let link = rig.link.as_ref().unwrap();
        let start = (rig.back.snapshot(), link.metrics());
        let _ = echo.counters.set((rig.back.clone(), link.metrics_handle()));
        let _ = echo.start.set((start.0.tx_packets, start.1.tx_packets));
        let frame = [0x5au8; 64];
        let mut bufs = PacketBuf::pool(BURST);
        for i in 1..=10_000u64 {
            let q = &mut rig.queues[0];
            while q.send_burst(&[PacketRef::new(&frame)]).unwrap() == 0 {
                q.wait(Some(Duration::from_secs(5))).unwrap();
            }
            let t = Instant::now();
            while q.recv_burst(&mut bufs).unwrap() == 0 {
                assert!(t.elapsed() < Duration::from_secs(10), "{design}: echo {i}");
                q.wait(Some(Duration::from_secs(5))).unwrap();
            }
            let sent = rig.back.snapshot().rx_packets - start.0.rx_packets;
            assert_eq!(sent, i, "{design}: the backend's RX count at echo {i}");
        }
        drop(bufs);
        rig.close();
        let lapse = echo.lapse.lock().unwrap().take();
        assert_eq!(lapse, None, "{design}");
    }
}

/// Keeps the injectors of the connection.
#[derive(Default)]
struct Injectors(std::sync::Mutex<Vec<netstage_netback_user::RxInjector>>);

impl netstage_netback_user::VifHandler for Injectors {
    fn tx_packet(&self, _queue: u16, _pkt: netstage_fallback::Packet) {}
    fn connected(&self, rx: Vec<netstage_netback_user::RxInjector>) {
        *self.0.lock().unwrap() = rx;
    }
}

/// A guest that posts no RX buffers beyond its first 256 can pin no more than the backlog's
/// bytes in the backend; what waits is dropped after the drain timeout, and every packet
/// handed to the injector is delivered or counted dropped with its reason, at disconnect
/// too.
#[test]
fn a_guest_that_takes_nothing_pins_a_bounded_backlog_and_every_packet_is_counted() {
    use netstage_netback_user::BackendConfig;
    const BOUND: usize = 64 * 1024;
    let cfg = BackendConfig {
        rx_backlog_bytes: BOUND,
        rx_drain_timeout: Duration::from_millis(300),
        ..BackendConfig::default()
    };
    let (rig, inj, metrics) = stalling_guest(cfg);
    let frame = bytes::Bytes::from(vec![0x11u8; 1500]);
    // Enough to use the guest's 256 posted buffers and leave 34 (51 KB) waiting.
    for _ in 0..290 {
        assert!(inj.send_blocking(netstage_fallback::Packet::new(frame.clone())));
    }
    let mut most = 0;
    for _ in 0..3000 {
        inj.send(netstage_fallback::Packet::new(frame.clone()));
        most = most.max(inj.backlog_bytes());
    }
    assert!(
        most <= BOUND,
        "the backlog held {most} bytes, over its {BOUND}"
    );
    let waited = Instant::now();
    while metrics.snapshot().rx_drain_drops == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "the backlog was never drained: {:?}",
            metrics.snapshot()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Some more that will wait, then the guest goes away.
    for _ in 0..10 {
        inj.send(netstage_fallback::Packet::new(frame.clone()));
    }
    rig.close();
    assert!(!inj.send(netstage_fallback::Packet::new(frame.clone())));
    let m = metrics.snapshot();
    assert!(m.rx_packets >= 256, "{m:?}");
    assert!(m.rx_backlog_drops > 0, "{m:?}");
    assert_eq!(
        m.rx_packets + m.rx_backlog_drops + m.rx_drain_drops + m.rx_disconnect_drops,
        3301,
        "{m:?}"
    );
}

/// Connects a guest that takes nothing to a backend with `cfg`; returns the rig, the queue's
/// injector and the backend's counters.
fn stalling_guest(
    cfg: netstage_netback_user::BackendConfig,
) -> (
    Rig,
    netstage_netback_user::RxInjector,
    Arc<netstage_netback_user::Metrics>,
) {
    stalling_guest_watched(cfg, Arc::default())
}

/// [`stalling_guest`], with the backend's per-vif counters copied into `vifs` every few
/// milliseconds while it serves.
fn stalling_guest_watched(
    cfg: netstage_netback_user::BackendConfig,
    vifs: Arc<std::sync::Mutex<Vec<netstage_netback_user::VifMetricsSnapshot>>>,
) -> (
    Rig,
    netstage_netback_user::RxInjector,
    Arc<netstage_netback_user::Metrics>,
) {
    let handler = Arc::new(Injectors::default());
    let h2 = Arc::clone(&handler);
    let rig = Rig::build("grant-copy", PollMode::Block, cfg, move |b, stop| {
        std::thread::scope(|sc| {
            sc.spawn(|| {
                while !stop.load(Ordering::Acquire) {
                    *vifs.lock().unwrap() = b.vif_metrics();
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            b.serve(queue_rig::FE, 0, h2, stop)
        })
    });
    let metrics = Arc::clone(&rig.back);
    let t = Instant::now();
    let inj = loop {
        if let Some(i) = handler.0.lock().unwrap().first().cloned() {
            break i;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "never connected");
        std::thread::sleep(Duration::from_millis(1));
    };
    (rig, inj, metrics)
}

fn wait_until(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < bound, "{what} within {bound:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A guest that takes nothing for `rx_stall_timeout` is declared stalled (counted, what
/// waited dropped, new packets dropped at once with their reason, not queued); once it takes
/// its packets and posts buffers again, packets reach it again; every packet is accounted.
#[test]
fn a_stalled_guest_is_declared_so_and_served_again_once_it_posts_buffers() {
    use netstage_fallback::Packet;
    let cfg = netstage_netback_user::BackendConfig {
        rx_drain_timeout: Duration::from_secs(30),
        rx_stall_timeout: Duration::from_millis(300),
        ..netstage_netback_user::BackendConfig::default()
    };
    let vifs = Arc::default();
    let (mut rig, inj, metrics) = stalling_guest_watched(cfg, Arc::clone(&vifs));
    let frame = bytes::Bytes::from(vec![0x22u8; 1500]);
    // The guest's 256 posted buffers fill; 20 more wait.
    let mut handed = 0u64;
    for _ in 0..276 {
        assert!(inj.send_blocking(Packet::new(frame.clone())));
        handed += 1;
    }
    wait_until("a stall", Duration::from_secs(5), || {
        metrics.snapshot().rx_stalls == 1
    });
    let m = metrics.snapshot();
    assert_eq!((m.rx_packets, m.rx_stall_drops), (256, 20), "{m:?}");
    // Stalled: refused at once, counted.
    assert!(!inj.send(Packet::new(frame.clone())));
    assert!(!inj.send_blocking(Packet::new(frame.clone())));
    handed += 2;
    assert_eq!(metrics.snapshot().rx_stall_drops, 22);
    // The queue's own counters say so too.
    wait_until("the queue's counters", Duration::from_secs(5), || {
        let v = vifs.lock().unwrap();
        v.first()
            .and_then(|v| v.queues.first())
            .is_some_and(|q| (q.counters.rx_stalls, q.counters.rx_stall_drops) == (1, 22))
    });
    // The guest takes its packets (posting the buffers again): it is served again.
    let mut bufs = PacketBuf::pool(BURST);
    let mut took = 0;
    while took < 256 {
        took += rig.queues[0].recv_burst(&mut bufs).unwrap();
    }
    wait_until("the guest served again", Duration::from_secs(5), || {
        let ok = inj.send(Packet::new(frame.clone()));
        handed += 1;
        ok
    });
    wait_until("the packet delivered", Duration::from_secs(5), || {
        metrics.snapshot().rx_packets == 257
    });
    let m = metrics.snapshot();
    assert_eq!(m.rx_stalls, 1, "{m:?}");
    assert_eq!(m.fatal_faults, 0, "{m:?}");
    rig.close();
    let m = metrics.snapshot();
    assert_eq!(
        m.rx_packets
            + m.rx_backlog_drops
            + m.rx_drain_drops
            + m.rx_stall_drops
            + m.rx_disconnect_drops,
        handed,
        "{m:?}"
    );
}

/// With `rx_stall_reset`, a stall ends the vif: a fatal fault with the stall as its reason,
/// which the guest sees.
#[test]
fn a_stall_resets_the_vif_when_asked_to() {
    use netstage_fallback::Packet;
    let cfg = netstage_netback_user::BackendConfig {
        rx_stall_timeout: Duration::from_millis(300),
        rx_stall_reset: true,
        ..netstage_netback_user::BackendConfig::default()
    };
    let (rig, inj, metrics) = stalling_guest(cfg);
    let frame = bytes::Bytes::from(vec![0x33u8; 1500]);
    for _ in 0..260 {
        assert!(inj.send_blocking(Packet::new(frame.clone())));
    }
    wait_until("the vif reset", Duration::from_secs(5), || {
        metrics.snapshot().fatal_faults == 1
    });
    let link = rig.link.as_ref().unwrap();
    wait_until("the guest to see it", Duration::from_secs(5), || {
        link.broken().is_some()
    });
    let m = metrics.snapshot();
    assert_eq!(m.rx_stalls, 1, "{m:?}");
    assert_eq!(m.rx_packets + m.rx_disconnect_drops, 260, "{m:?}");
}

/// How long [`PausedEcho`] waits before it echoes, and the guest before its next frame.
const ECHO_PAUSE: Duration = Duration::from_micros(200);

/// An echoing backend that sends each burst back after a pause.
struct PausedEcho(Duration);

impl QueueDriver<SimDomain> for PausedEcho {
    fn run(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        let mut bufs = PacketBuf::pool(BURST);
        while !q.stopped() {
            let got = q.recv_burst(&mut bufs)?;
            if got == 0 {
                q.wait(Some(Duration::from_millis(100)))?;
                continue;
            }
            std::thread::sleep(self.0);
            let mut sent = 0;
            while sent < got && !q.stopped() {
                let refs: arrayvec::ArrayVec<PacketRef<'_>, BURST> =
                    bufs[sent..got].iter().map(PacketBuf::packet_ref).collect();
                let n = q.send_burst(&refs)?;
                if n == 0 {
                    q.wait(Some(Duration::from_millis(100)))?;
                }
                sent += n;
            }
        }
        Ok(())
    }
}

/// Echoes every frame back to the guest, noting the most packets and bytes one
/// `recv_burst` and one `send_burst` call moved.
#[derive(Default)]
struct MeasuredEcho {
    most_recv: std::sync::Mutex<(usize, usize)>,
    most_sent: std::sync::Mutex<(usize, usize)>,
}

fn note_most(most: &std::sync::Mutex<(usize, usize)>, n: usize, bytes: usize) {
    let mut m = most.lock().unwrap();
    *m = (m.0.max(n), m.1.max(bytes));
}

impl QueueDriver<SimDomain> for MeasuredEcho {
    fn run(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        let mut bufs = PacketBuf::pool(BURST);
        while !q.stopped() {
            let got = q.recv_burst(&mut bufs)?;
            let bytes = bufs[..got].iter().map(PacketBuf::len).sum();
            note_most(&self.most_recv, got, bytes);
            if got == 0 {
                q.wait(Some(Duration::from_millis(100)))?;
                continue;
            }
            let mut sent = 0;
            while sent < got && !q.stopped() {
                let refs: arrayvec::ArrayVec<PacketRef<'_>, BURST> =
                    bufs[sent..got].iter().map(PacketBuf::packet_ref).collect();
                let n = q.send_burst(&refs)?;
                note_most(
                    &self.most_sent,
                    n,
                    refs[..n].iter().map(|p| p.data.len()).sum(),
                );
                if n == 0 {
                    q.wait(Some(Duration::from_millis(100)))?;
                }
                sent += n;
            }
        }
        Ok(())
    }
}

/// Every burst call, at both ends and both ways, stops once it has moved BURST_BYTES (the
/// packet that crosses it included), so that the peer starts on large packets while this
/// end goes on: 9000-byte frames go at most 8 to a call (7 of them are 63,000 bytes).
#[test]
fn every_burst_call_stops_after_burst_bytes() {
    use netstage_fallback::BURST_BYTES;
    const LEN: usize = 9000;
    let most_per_call = BURST_BYTES.div_ceil(LEN);
    for design in ["grant-copy", "ring:8:greedy"] {
        let echo = Arc::new(MeasuredEcho::default());
        let mut rig = Rig::new(design, PollMode::Block, Arc::clone(&echo) as _);
        let q = &mut rig.queues[0];
        let frame = vec![0x5au8; LEN];
        let burst: Vec<PacketRef<'_>> = (0..BURST).map(|_| framed(&frame)).collect();
        let mut bufs = PacketBuf::pool(BURST);
        let (mut sent, mut got) = (0, 0);
        let (mut most_sent, mut most_got) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        while got < BURST {
            assert!(
                Instant::now() < deadline,
                "{design}: {got} of {BURST} echoed"
            );
            let n = q.send_burst(&burst[sent..]).unwrap();
            let m = q.recv_burst(&mut bufs).unwrap();
            (sent, got) = (sent + n, got + m);
            (most_sent, most_got) = (most_sent.max(n), most_got.max(m));
            if n == 0 && m == 0 {
                q.wait(Some(Duration::from_millis(10))).unwrap();
            }
        }
        rig.close();
        let back = (
            echo.most_recv.lock().unwrap().0,
            echo.most_sent.lock().unwrap().0,
        );
        for (what, most) in [
            ("frontend send_burst", most_sent),
            ("frontend recv_burst", most_got),
            ("backend recv_burst", back.0),
            ("backend send_burst", back.1),
        ] {
            assert!(
                (1..=most_per_call).contains(&most),
                "{design}: one {what} call moved {most} frames of {LEN} bytes"
            );
        }
        // Without the bound one call would have taken a whole burst.
        assert!(most_per_call < BURST);
    }
}

/// Sends `count` frames of 9000 bytes in bursts of BURST, and waits (up to 2 s) whenever a
/// call took fewer than it was offered, as the backend's `send_burst` docs allow.
struct ImpatientSender {
    count: usize,
}

impl QueueDriver<SimDomain> for ImpatientSender {
    fn run(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        let frame = vec![0x33u8; 9000];
        let burst: Vec<PacketRef<'_>> = (0..BURST).map(|_| framed(&frame)).collect();
        let mut left = self.count;
        while !q.stopped() {
            let offered = left.min(BURST);
            let n = if offered > 0 {
                q.send_burst(&burst[..offered])?
            } else {
                0
            };
            left -= n;
            if n < offered || offered == 0 {
                q.wait(Some(Duration::from_secs(2)))?;
            }
        }
        Ok(())
    }
}

/// A backend send burst cut short by BURST_BYTES lacked nothing: a wait after it returns
/// while the guest has buffers posted, instead of sleeping to its timeout each time.
#[test]
fn a_wait_after_a_send_burst_cut_by_bytes_returns_at_once() {
    const COUNT: usize = 640;
    let mut rig = Rig::new(
        "grant-copy",
        PollMode::Block,
        Arc::new(ImpatientSender { count: COUNT }),
    );
    let q = &mut rig.queues[0];
    let mut bufs = PacketBuf::pool(BURST);
    let mut got = 0;
    let t = Instant::now();
    while got < COUNT {
        // Each cut burst would cost a 2 s timeout: 80 of them, minutes.
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{got} of {COUNT} frames in {:?}",
            t.elapsed()
        );
        let n = q.recv_burst(&mut bufs).unwrap();
        got += n;
        if n == 0 {
            q.wait(Some(Duration::from_millis(10))).unwrap();
        }
    }
    rig.close();
}

/// Busy-polls the backend's queue and notes, at each packet received, the idle looks of
/// the run before it and of the run after it (which the receive must end).
#[derive(Default)]
struct IdleRuns {
    received: AtomicU64,
    /// The longest run of idle looks before a packet arrived.
    before: AtomicU64,
    /// The most idle looks left standing after a receive that moved packets.
    after: AtomicU64,
}

impl QueueDriver<SimDomain> for IdleRuns {
    fn run(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        let mut bufs = PacketBuf::pool(BURST);
        while !q.stopped() {
            let idle = u64::from(q.idle_looks());
            let n = q.recv_burst(&mut bufs)?;
            if n == 0 {
                q.wait(Some(Duration::from_millis(10)))?;
                continue;
            }
            self.before.fetch_max(idle, Ordering::Relaxed);
            self.after
                .fetch_max(u64::from(q.idle_looks()), Ordering::Relaxed);
            self.received.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A packet received by a burst call ends the backend's run of idle looks, so the gaps
/// between packets (request/response's) never add up to a yield of the CPU.
#[test]
fn a_packet_received_ends_the_backends_idle_run() {
    let runs = Arc::new(IdleRuns::default());
    let mut rig = Rig::new("ring:8:greedy", PollMode::BusyPoll, Arc::clone(&runs) as _);
    let q = &mut rig.queues[0];
    let frame = [7u8; 64];
    for sent in 1..=20u64 {
        // A gap long enough for the backend to look many times, finding nothing.
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(q.send_burst(&[PacketRef::new(&frame)]).unwrap(), 1);
        wait_until("the packet", Duration::from_secs(10), || {
            runs.received.load(Ordering::Relaxed) >= sent
        });
    }
    rig.close();
    assert!(
        runs.before.load(Ordering::Relaxed) > 16,
        "the backend idled between packets"
    );
    assert_eq!(
        runs.after.load(Ordering::Relaxed),
        0,
        "a receive ended the run"
    );
}
