//! Seeded fault trials: kill -9 of the frontend process, the backend process or the
//! xenstored process at a random moment of a transfer, cycling through the designs; after
//! each, what the survivors counted must add up, nothing of the dead may be left pinned,
//! mapped or in XenStore, and a fresh peer must connect and move packets.
//!
//! `NETSTAGE_FAULT_SEED` picks the seed (printed, and named by every failure);
//! `NETSTAGE_FAULT_TRIALS` the number of trials (50 by default). The killed side runs as
//! the `netfront-user`, `netback-user` or `netstage-xenstored` binary; the survivors run in
//! this process, where their counters and the emulated platform's tables can be read.

#![cfg(feature = "cli")]

mod peers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use netstage_fallback::Packet;
use netstage_netback_user::{Backend, BackendConfig, RxInjector, TxPath, VifHandler};
use netstage_netfront_user::{Design, Frontend, FrontendConfig, FrontendHandler, MetricsSnapshot};
use netstage_platform::sim::{SimDomain, SimWorld};
use netstage_platform::xenbus::{read_state, VifPaths, XenbusState};
use netstage_platform::xenstore::XsClient;
use netstage_platform::GrantExport;
use peers::{until, Site};

const FE: u16 = 1;
const DESIGNS: [&str; 6] = [
    "grant-copy",
    "grant-map",
    "slots:256",
    "ring:8:greedy",
    "linux",
    "slots-rfc:256",
];
const SIZES: [usize; 4] = [64, 1500, 60, 9000];
const WAIT: Duration = Duration::from_secs(15);
/// Packets of the transfer after each trial's recovery.
const AFTER: u64 = 100;

/// The workspace binary `name`, built once in this test's profile.
fn program(name: &str) -> PathBuf {
    static BUILT: OnceLock<bool> = OnceLock::new();
    let front = Path::new(env!("CARGO_BIN_EXE_netfront-user"));
    let built = BUILT.get_or_init(|| {
        let mut c = Command::new(env!("CARGO"));
        c.args(["build", "--bins", "-p", "netstage-netback-user"]);
        c.args(["-p", "netstage-platform"]);
        if front.components().any(|p| p.as_os_str() == "release") {
            c.arg("--release");
        }
        c.status().is_ok_and(|s| s.success())
    });
    assert!(
        built,
        "cargo build of netback-user and netstage-xenstored failed"
    );
    front.with_file_name(name)
}

/// A child process, killed if the test lets go of it.
struct Proc(Option<Child>);

impl Proc {
    fn start(name: &str, args: &[String]) -> Proc {
        let c = Command::new(program(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        Proc(Some(c))
    }

    fn take(&mut self) -> Child {
        self.0.take().expect("a running child")
    }

    fn kill9(mut self) {
        let mut c = self.take();
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Waits for it to exit by itself; its output.
    fn finish(mut self, why: &str) -> String {
        let t = Instant::now();
        while self
            .0
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .is_none()
        {
            assert!(t.elapsed() < WAIT, "{why}: the process did not exit");
            thread::sleep(Duration::from_millis(5));
        }
        let o = self.take().wait_with_output().expect("output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{why}:\n{text}");
        text
    }

    /// SIGTERM, then [`Proc::finish`].
    fn stop(self, why: &str) -> String {
        if let Some(c) = &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        self.finish(why)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Arguments as the binaries take them.
fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// splitmix64: the trials' randomness, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The bytes of packet `seq`, as the `netfront-user` binary makes them with
/// `--expect-echo`: the sequence number, then bytes derived from it.
fn content(seq: u64, len: usize) -> Vec<u8> {
    let head = seq.to_le_bytes();
    (0..len)
        .map(|i| match head.get(i) {
            Some(b) => *b,
            None => seq.wrapping_mul(31).wrapping_add(7 * i as u64) as u8,
        })
        .collect()
}

fn size_of(seq: u64) -> usize {
    SIZES[(seq % SIZES.len() as u64) as usize]
}

/// One direction's packets as a receiver checks them: each intact, in increasing sequence
/// within a connection (each starts at packet 0).
#[derive(Default)]
struct Stream {
    /// The last packet of this connection, and how many went missing before it, in all.
    state: Mutex<(Option<u64>, u64)>,
    count: AtomicU64,
    faults: Mutex<Vec<String>>,
}

impl Stream {
    fn take(&self, data: &[u8]) {
        self.count.fetch_add(1, Ordering::Relaxed);
        // Every size sent is at least 8 bytes: the sequence number is whole.
        let mut head = [0u8; 8];
        head.copy_from_slice(&data[..8]);
        let seq = u64::from_le_bytes(head);
        let mut st = self.state.lock().expect("stream");
        let (last, missing) = &mut *st;
        let fault = match *last {
            Some(l) if seq <= l => Some(format!("packet {seq} after {l}")),
            _ if data != content(seq, size_of(seq)) => {
                Some(format!("packet {seq} damaged ({} bytes)", data.len()))
            }
            l => {
                *missing += seq - l.map_or(0, |l| l + 1);
                None
            }
        };
        *last = Some(seq);
        if let Some(f) = fault {
            self.faults.lock().expect("faults").push(f);
        }
    }

    /// A new connection: its packets start again at 0.
    fn restart(&self) {
        self.state.lock().expect("stream").0 = None;
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Packets missing between those taken, over all connections.
    fn gaps(&self) -> u64 {
        self.state.lock().expect("stream").1
    }

    fn assert_clean(&self, who: &str) {
        let f = self.faults.lock().expect("faults");
        assert!(f.is_empty(), "{who}: {f:?}");
    }
}

/// The backend's handler in this process: checks every packet from the guest and echoes
/// it, counting what it hands to the injector.
#[derive(Default)]
struct BackCheck {
    tx: Stream,
    rx: Mutex<Option<RxInjector>>,
    handed: AtomicU64,
}

impl VifHandler for BackCheck {
    fn tx_packet(&self, _queue: u16, pkt: Packet) {
        self.tx.take(&pkt.data);
        if let Some(i) = self.rx.lock().expect("injector").as_ref() {
            self.handed.fetch_add(1, Ordering::Relaxed);
            i.send(pkt);
        }
    }
    fn connected(&self, rx: Vec<RxInjector>) {
        self.tx.restart();
        *self.rx.lock().expect("injector") = rx.into_iter().next();
    }
}

/// The frontend's handler in this process: checks every echo.
#[derive(Default)]
struct FrontCheck(Stream);

impl FrontendHandler for FrontCheck {
    fn rx_packet(&self, _queue: u16, pkt: Packet) {
        self.0.take(&pkt.data);
    }
}

fn backend_config(design: &str) -> BackendConfig {
    BackendConfig {
        tx_path: TxPath::for_design(design.parse().expect("design")),
        ..BackendConfig::default()
    }
}

/// A backend served by a thread of this process.
struct LocalBackend {
    backend: Arc<Backend<SimDomain>>,
    check: Arc<BackCheck>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl LocalBackend {
    fn start(dom0: SimDomain, xs: XsClient, design: &str) -> LocalBackend {
        let backend = Arc::new(Backend::new(dom0, xs, backend_config(design)));
        let (check, stop) = (
            Arc::new(BackCheck::default()),
            Arc::new(AtomicBool::new(false)),
        );
        let (b, h, s) = (Arc::clone(&backend), Arc::clone(&check), Arc::clone(&stop));
        // A dead xenstored ends `serve` with an error: that is the backend noticing.
        let thread = thread::spawn(move || drop(b.serve(FE, 0, h, &s)));
        LocalBackend {
            backend,
            check,
            stop,
            thread,
        }
    }

    /// Every packet the guest's queue took is accounted for: handed to the handler, and
    /// those echoed delivered or dropped by reason. Call once no connection runs.
    fn assert_accounts(&self, why: &str) {
        let m = self.backend.metrics();
        let c = &self.check;
        c.tx.assert_clean(why);
        assert_eq!(c.tx.count(), m.tx_packets, "{why}: {m:?}");
        assert!(
            c.tx.gaps() <= m.tx_grant_errors + m.tx_dropped,
            "{why}: {} packets missing between those delivered: {m:?}",
            c.tx.gaps()
        );
        let dropped = m.rx_backlog_drops
            + m.rx_drain_drops
            + m.rx_disconnect_drops
            + m.rx_dropped
            + m.rx_grant_errors;
        assert_eq!(
            c.handed.load(Ordering::Relaxed),
            m.rx_packets + dropped,
            "{why}: echoes handed over = delivered + dropped: {m:?}"
        );
    }

    /// The frontend's counters (once both ends have stopped) and this backend's add up
    /// each way.
    fn assert_both_ends(&self, f: &MetricsSnapshot, why: &str) {
        let m = self.backend.metrics();
        assert_eq!(
            f.tx_packets,
            m.tx_packets + m.tx_dropped + m.tx_grant_errors + f.tx_unanswered,
            "{why}: TX sent = delivered + dropped + unanswered: {f:?} {m:?}"
        );
        assert_eq!(
            m.rx_packets,
            f.rx_packets + f.rx_dropped + f.rx_unread,
            "{why}: RX sent = received + dropped + unread: {f:?} {m:?}"
        );
    }

    fn end(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("backend thread");
    }
}

/// A frontend in this process and the thread that feeds it packets.
struct LocalFrontend {
    front: Arc<Frontend<SimDomain>>,
    check: Arc<FrontCheck>,
    /// Returns how many packets the device took.
    sender: JoinHandle<u64>,
}

impl LocalFrontend {
    /// Connects and starts sending `count` packets (until the device stops).
    fn start(dom: &SimDomain, xs: XsClient, design: &str, count: u64) -> LocalFrontend {
        let cfg = FrontendConfig {
            design: design.parse::<Design>().expect("design"),
            ..FrontendConfig::default()
        };
        let check = Arc::new(FrontCheck::default());
        let h = Arc::clone(&check) as Arc<dyn FrontendHandler>;
        let front = Arc::new(Frontend::connect(dom.clone(), xs, 0, cfg, h).expect("connect"));
        let f = Arc::clone(&front);
        let sender = thread::spawn(move || {
            (0..count)
                .take_while(|seq| f.send(0, Packet::new(content(*seq, size_of(*seq)))).is_ok())
                .count() as u64
        });
        LocalFrontend {
            front,
            check,
            sender,
        }
    }

    /// Waits for the device to break, then checks that every packet handed over reached
    /// the ring or was counted unsent, and that the echoes were intact; returns why it
    /// broke, and the device.
    fn broke(self, why: &str) -> (String, Frontend<SimDomain>) {
        until(&format!("{why}: the frontend notices"), WAIT, || {
            self.front.broken().is_some()
        });
        let handed = self.sender.join().expect("sender");
        // Handed over = on the ring + counted unsent; received = handed to the handler
        // (the queue's thread may still be finishing its last burst).
        until(&format!("{why}: every packet accounted"), WAIT, || {
            let m = self.front.metrics();
            m.tx_packets + m.tx_unsent == handed && self.check.0.count() == m.rx_packets
        });
        let m = self.front.metrics();
        self.check.0.assert_clean(why);
        assert!(self.check.0.count() <= m.tx_packets, "{why}: {m:?}");
        let reason = self.front.broken().unwrap_or_default();
        (
            reason,
            Arc::into_inner(self.front).expect("the only handle"),
        )
    }

    /// Waits for all `count` packets to come back, then closes.
    fn completes(self, count: u64, why: &str) {
        until(&format!("{why}: {count} echoes"), WAIT, || {
            self.check.0.count() == count
        });
        self.sender.join().expect("sender");
        self.check.0.assert_clean(why);
        assert_eq!(self.check.0.gaps(), 0, "{why}");
        let f = Arc::into_inner(self.front).expect("the only handle");
        f.close().unwrap_or_else(|e| panic!("{why}: close: {e}"));
    }
}

/// The frontend's domain has no grant pinned by a peer, and every page it shared can be
/// revoked: a page dropped while the backend still mapped it waits, and is revoked at the
/// next share.
fn assert_front_clean(dom: &SimDomain, why: &str) {
    assert_eq!(dom.grant_pins().expect("pins"), vec![], "{why}");
    drop(dom.share(0, 1, false).expect("share"));
    assert_eq!(dom.counters().granted_pages, 0, "{why}: pages left granted");
}

/// Kills the frontend (the binary) mid-transfer; the backend here must forget it and take
/// the next one.
fn kill_frontend(design: &str, delay: Duration, why: &str) {
    let site = Site::new();
    let p = site.vif(FE);
    let back = LocalBackend::start(site.domain(0), site.xs0.clone(), design);
    let world = site.world.path().to_str().expect("utf-8 path");
    let sizes = SIZES.map(|s| s.to_string()).join(",");
    let run = |count: &str| {
        let a = [
            "--world", world, "--domid", "1", "--design", design, "--count", count,
        ];
        let a = args(&a);
        Proc::start(
            "netfront-user",
            &[a, args(&["--sizes", &sizes, "--expect-echo"])].concat(),
        )
    };
    let front = run("100000000");
    until(&format!("{why}: connected"), WAIT, || {
        back.backend.metrics().connects == 1
    });
    thread::sleep(delay);
    front.kill9();
    site.assert_forgotten(&p, why);
    back.assert_accounts(why);
    let out = run(&AFTER.to_string()).finish(&format!("{why}: the next frontend"));
    assert!(out.contains(&format!("received {AFTER}")), "{why}: {out}");
    site.assert_forgotten(&p, why);
    back.assert_accounts(why);
    assert_eq!(back.backend.metrics().connects, 2, "{why}");
    back.end();
}

/// Runs the `netback-user` binary against this site's xenstored.
fn backend_process(site: &Site, design: &str) -> Proc {
    let world = site.world.path().to_str().expect("utf-8 path");
    let xs = site.xsd.socket().to_str().expect("utf-8 path");
    let a = [
        "--world",
        world,
        "--xenstore",
        xs,
        "--vif",
        "1",
        "--design",
        design,
    ];
    Proc::start("netback-user", &args(&a))
}

/// Kills the backend (the binary) mid-transfer; the frontend here must notice, account for
/// every packet, revoke every page, and connect to the next backend.
fn kill_backend(design: &str, delay: Duration, why: &str) {
    let site = Site::new();
    let dom = site.domain(FE);
    let back = backend_process(&site, design);
    let sock = site.xsd.domain_socket(FE);
    until(&format!("{why}: guest socket"), WAIT, || sock.exists());
    let front = LocalFrontend::start(&dom, site.guest_xs(FE), design, u64::MAX);
    thread::sleep(delay);
    back.kill9();
    let (reason, front) = front.broke(why);
    assert!(reason.contains("backend domain 0 died"), "{why}: {reason}");
    // Closed: its backend is dead, so nothing waits.
    let m = front.metrics_handle();
    let _ = front.close_counted();
    let m = m.snapshot();
    assert!(m.tx_unanswered <= m.tx_packets, "{why}: {m:?}");
    // The frontend forgot the dead backend before its queues let go of their pages.
    assert_eq!(dom.counters().granted_pages, 0, "{why}: pages left granted");
    assert_front_clean(&dom, why);
    let dom0_maps = peers::maps_of(&site.world, 0);
    assert_eq!(
        dom0_maps,
        Vec::<String>::new(),
        "{why}: the dead backend is still mapped"
    );
    let p = VifPaths::new(0, FE, 0);
    assert_eq!(
        read_state(&site.xs0, &p.frontend),
        XenbusState::Closed,
        "{why}"
    );
    // The next backend.
    let back = backend_process(&site, design);
    until(&format!("{why}: the next backend"), WAIT, || {
        read_state(&site.xs0, &p.backend) == XenbusState::InitWait
    });
    LocalFrontend::start(&dom, site.guest_xs(FE), design, AFTER).completes(AFTER, why);
    assert_front_clean(&dom, why);
    let out = back.stop(&format!("{why}: the next backend"));
    for c in [
        format!(r#""tx_packets":{AFTER},"#),
        format!(r#""rx_packets":{AFTER},"#),
    ] {
        assert!(out.contains(&c), "{why}: {out}");
    }
}

/// Kills xenstored (the binary) mid-transfer: both ends here must notice and account for
/// every packet; the frontend's pages are all revoked; a new xenstored, backend and
/// frontend work.
fn kill_xenstored(design: &str, delay: Duration, why: &str) {
    let world = SimWorld::create_temp().expect("world");
    let dom0 = world.create_domain(0, peers::guest_config()).expect("dom0");
    let dom = world
        .create_domain(FE, peers::guest_config())
        .expect("guest");
    let dir = world.path().join("xenstore");
    let run = |design: &str| {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("xenstore dir");
        let sock = dir.join("socket");
        let xsd = Proc::start(
            "netstage-xenstored",
            &args(&["--socket", sock.to_str().expect("utf-8")]),
        );
        until(&format!("{why}: xenstored"), WAIT, || sock.exists());
        let xs0 = XsClient::connect(&sock).expect("dom0 XenStore");
        xs0.introduce(FE).expect("introduce");
        netstage_netback_user::toolstack::create_vif(&xs0, 0, FE, 0).expect("vif");
        let back = LocalBackend::start(dom0.clone(), xs0, design);
        let guest = XsClient::connect(&dir.join(format!("dom{FE}.sock"))).expect("guest");
        (xsd, back, guest)
    };
    let (xsd, back, guest) = run(design);
    let front = LocalFrontend::start(&dom, guest, design, u64::MAX);
    thread::sleep(delay);
    xsd.kill9();
    let (_, front) = front.broke(why);
    until(&format!("{why}: the backend notices"), WAIT, || {
        back.thread.is_finished()
    });
    back.assert_accounts(why);
    // Both ends live on: what one sent, the other took, dropped by reason, or left.
    let counts = front.metrics_handle();
    // Closing cannot tell a dead XenStore; it still counts what the rings hold.
    let _ = front.close_counted();
    back.assert_both_ends(&counts.snapshot(), why);
    assert_front_clean(&dom, why);
    back.end();
    let (xsd, back, guest) = run(design);
    LocalFrontend::start(&dom, guest, design, AFTER).completes(AFTER, why);
    assert_front_clean(&dom, why);
    back.assert_accounts(why);
    back.end();
    xsd.stop(&format!("{why}: the next xenstored"));
}

#[test]
fn kill_9_of_any_participant_mid_transfer_leaves_nothing_behind() {
    let seed = std::env::var("NETSTAGE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let trials: u64 = std::env::var("NETSTAGE_FAULT_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    println!("kill faults: NETSTAGE_FAULT_SEED={seed}, {trials} trials");
    eprintln!("kill faults: NETSTAGE_FAULT_SEED={seed}, {trials} trials");
    program("netback-user");
    let mut rng = Rng(seed);
    let start = Instant::now();
    for trial in 0..trials {
        // Every victim meets every design within 3 x DESIGNS.len() trials.
        let design = DESIGNS[((trial / 3) % DESIGNS.len() as u64) as usize];
        let delay = Duration::from_millis(rng.below(120));
        let victim = ["frontend", "backend", "xenstored"][(trial % 3) as usize];
        let why = format!(
            "NETSTAGE_FAULT_SEED={seed} trial {trial}: kill -9 of the {victim} {delay:?} into a \
             {design} transfer"
        );
        let t = Instant::now();
        match victim {
            "frontend" => kill_frontend(design, delay, &why),
            "backend" => kill_backend(design, delay, &why),
            _ => kill_xenstored(design, delay, &why),
        }
        eprintln!("{why}: passed in {:?}", t.elapsed());
    }
    eprintln!("kill faults: {trials} trials in {:?}", start.elapsed());
}
