//! The two processes of a scenario, run by the harness as children of itself: a backend
//! (dom0 with an embedded xenstored) and a frontend. Each prints one JSON line with what it
//! counted. They use the libraries only; no data path lives here.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use netstage_fallback::{Design, Packet, PollMode};
use netstage_netback_user::{toolstack, Backend, BackendConfig, RxInjector, TxPath, VifHandler};
use netstage_netfront_user::{Frontend, FrontendConfig, FrontendHandler};
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::sim::{DomainConfig, SimDomain, SimWorld};
use netstage_platform::xenstore::XsClient;
use serde::{Deserialize, Serialize};

/// The guest's domain id in every scenario.
pub const GUEST: u16 = 1;

/// Which way packets flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// Frontend to backend.
    Tx,
    /// Backend to frontend.
    Rx,
    /// Request/response: one 15-byte frame (1-byte payload) out, echoed back, then the
    /// next; event channels blocking.
    Rr,
    /// The same with both ends busy-polling.
    #[serde(rename = "rr-busy")]
    #[value(name = "rr-busy")]
    RrBusy,
}

impl Dir {
    /// Whether this is a request/response scenario.
    pub fn is_rr(self) -> bool {
        matches!(self, Dir::Rr | Dir::RrBusy)
    }
}

impl std::fmt::Display for Dir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dir::Tx => "tx",
            Dir::Rx => "rx",
            Dir::Rr => "rr",
            Dir::RrBusy => "rr-busy",
        })
    }
}

/// What the backend process reports when it stops.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackendReport {
    /// CPU seconds the backend process used (all threads).
    pub cpu_seconds: f64,
    /// Its counters.
    pub metrics: serde_json::Value,
    /// The platform's grant counters of dom0.
    pub grants: serde_json::Value,
}

/// What the frontend process reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FrontendReport {
    /// CPU seconds the frontend process used in the measured window (all threads).
    pub cpu_seconds: f64,
    /// Packets moved in the measured window.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Length of the window in seconds.
    pub seconds: f64,
    /// The design the frontend ended up using.
    pub design: String,
    /// Request/response: p50, p99 and p999 of the transaction latency in nanoseconds.
    #[serde(default)]
    pub latency_ns: Option<[f64; 3]>,
    /// Its counters.
    pub metrics: serde_json::Value,
    /// Throughput runs: the window in bins of about 10 ms.
    #[serde(default)]
    pub timeline: Vec<crate::Bin>,
}

/// Length of one timeline bin.
const BIN: Duration = Duration::from_millis(10);

/// The frontend counters a timeline follows: packets, staged packets, data-ring fill
/// samples and their sum in millionths of the ring.
type Counts = (u64, u64, u64, u64);

/// Counts packets, staged packets and the data ring's mean fill in bins of [`BIN`] over a
/// measured window.
struct Timeline {
    start: Instant,
    next: Instant,
    last: Counts,
    bins: Vec<crate::Bin>,
}

impl Timeline {
    fn new(now: Counts) -> Timeline {
        let start = Instant::now();
        Timeline {
            start,
            next: start + BIN,
            last: now,
            bins: Vec::new(),
        }
    }

    /// Closes a bin when one is due.
    fn tick(&mut self, now: Counts) {
        let t = Instant::now();
        if t >= self.next {
            let d = |a: u64, b: u64| a.saturating_sub(b);
            let samples = d(now.2, self.last.2);
            self.bins.push(crate::Bin {
                t: (t - self.start).as_secs_f64(),
                packets: d(now.0, self.last.0) as f64,
                staged: d(now.1, self.last.1) as f64,
                fill_pct: (samples > 0)
                    .then(|| d(now.3, self.last.3) as f64 / samples as f64 / 10_000.0),
            });
            self.last = now;
            self.next = t + BIN;
        }
    }
}

struct Sink {
    size: usize,
    generate: bool,
    echo: bool,
    generation: Arc<AtomicU64>,
    rx: Mutex<Vec<RxInjector>>,
}

impl VifHandler for Sink {
    fn tx_packet(&self, queue: u16, pkt: Packet) {
        if self.echo {
            if let Ok(rx) = self.rx.lock() {
                if let Some(i) = rx.get(usize::from(queue)) {
                    i.send(pkt);
                }
            }
        }
    }
    fn connected(&self, rx: Vec<RxInjector>) {
        if self.generate {
            let gen = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
            let data = Bytes::from(vec![0x5au8; self.size]);
            for inj in rx.clone() {
                let (cur, data) = (Arc::clone(&self.generation), data.clone());
                std::thread::spawn(move || {
                    while cur.load(Ordering::SeqCst) == gen {
                        if !inj.send_blocking(Packet::new(data.clone())) {
                            break;
                        }
                    }
                });
            }
        }
        if let Ok(mut r) = self.rx.lock() {
            *r = rx;
        }
    }
    fn disconnected(&self, _reason: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// What every end process is given, whatever moves its packets.
#[derive(Debug, Clone, clap::Args)]
pub struct EndArgs {
    /// World directory.
    #[arg(long)]
    pub world: PathBuf,
    /// Design.
    #[arg(long)]
    pub design: String,
    /// Busy-poll instead of blocking.
    #[arg(long)]
    pub busy: bool,
    /// Grant cost mode.
    #[arg(long, default_value = "kernel")]
    pub cost: String,
    /// Cores to pin this process (and every thread it starts) to, comma-separated.
    #[arg(long = "core", value_delimiter = ',')]
    pub cores: Vec<usize>,
    /// Microseconds an event-channel wait spins before it sleeps [default: the platform's].
    #[arg(long)]
    pub spin_us: Option<u64>,
}

impl EndArgs {
    /// The emulated domain's configuration this end asks for.
    fn domain(&self) -> anyhow::Result<DomainConfig> {
        let d = DomainConfig {
            cost: self.cost.parse()?,
            ..DomainConfig::default()
        };
        Ok(DomainConfig {
            spin_before_block: self
                .spin_us
                .map_or(d.spin_before_block, Duration::from_micros),
            ..d
        })
    }
}

/// Parameters both roles of a scenario share.
#[derive(Debug, Clone, clap::Args)]
pub struct RoleArgs {
    /// The end's setup.
    #[command(flatten)]
    pub end: EndArgs,
    /// Packet size.
    #[arg(long)]
    pub size: usize,
    /// Direction.
    #[arg(long, value_enum)]
    pub dir: Dir,
    /// Measured seconds (frontend).
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Queues (frontend: asked for; one sender or receiver per queue).
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
}

fn poll(busy: bool) -> PollMode {
    if busy {
        PollMode::BusyPoll
    } else {
        PollMode::Block
    }
}

/// The backend end: creates the world, starts the embedded xenstored, creates dom0 and the
/// vif, and serves the guest with `handler` until SIGTERM; returns its report.
pub(crate) fn run_backend(
    e: &EndArgs,
    handler: Arc<dyn VifHandler>,
) -> anyhow::Result<BackendReport> {
    crate::sys::pin_to_cores(&e.cores)?;
    let design: Design = e.design.parse().map_err(anyhow::Error::msg)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    let world = SimWorld::create(&e.world)?;
    let xsd = Xenstored::start(XenstoredConfig::in_dir(&e.world.join("xenstore")))?;
    let xs = XsClient::connect(xsd.socket())?;
    let dom0 = world.create_domain(0, e.domain()?)?;
    let backend = Backend::new(
        dom0.clone(),
        xs.clone(),
        BackendConfig {
            tx_path: if design == Design::GrantMap {
                TxPath::GrantMap
            } else {
                TxPath::GrantCopy
            },
            poll: poll(e.busy),
            rx_backlog: 1 << 14,
            ..BackendConfig::default()
        },
    );
    xs.introduce(GUEST)?;
    toolstack::create_vif(&xs, 0, GUEST, 0)?;
    backend.serve(GUEST, 0, handler, &stop)?;
    let report = BackendReport {
        cpu_seconds: crate::sys::cpu_seconds(),
        metrics: serde_json::to_value(backend.metrics())?,
        grants: serde_json::to_value(dom0.counters())?,
    };
    drop(xsd);
    Ok(report)
}

/// The frontend end: pins itself, joins the world as the guest and connects to the
/// backend's vif with `queues` queues and `handler` receiving.
pub(crate) fn connect_frontend(
    e: &EndArgs,
    queues: u16,
    handler: Arc<dyn FrontendHandler>,
) -> anyhow::Result<Frontend<SimDomain>> {
    crate::sys::pin_to_cores(&e.cores)?;
    let design: Design = e.design.parse().map_err(anyhow::Error::msg)?;
    let world = SimWorld::open(&e.world)?;
    let me = world.create_domain(GUEST, e.domain()?)?;
    let socket = e.world.join("xenstore").join(format!("dom{GUEST}.sock"));
    let xs = XsClient::connect(&socket)
        .with_context(|| format!("no guest XenStore at {}", socket.display()))?;
    let front = Frontend::connect(
        me,
        xs,
        0,
        FrontendConfig {
            design,
            poll: poll(e.busy),
            queues,
            ..FrontendConfig::default()
        },
        handler,
    )?;
    if front.queues() != queues {
        anyhow::bail!(
            "asked for {} queues, the backend gave {}",
            queues,
            front.queues()
        );
    }
    Ok(front)
}

/// Runs the backend until SIGTERM, then prints its report.
pub fn backend(a: &RoleArgs) -> anyhow::Result<()> {
    let sink = Arc::new(Sink {
        size: a.size,
        generate: a.dir == Dir::Rx,
        echo: a.dir.is_rr(),
        generation: Arc::new(AtomicU64::new(0)),
        rx: Mutex::new(Vec::new()),
    });
    let report = run_backend(&a.end, sink)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Connects, moves packets for the measured window, prints the report.
pub fn frontend(a: &RoleArgs) -> anyhow::Result<()> {
    struct Count(AtomicU64);
    impl FrontendHandler for Count {
        fn rx_packet(&self, _q: u16, _p: Packet) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let counter = Arc::new(Count(AtomicU64::new(0)));
    let front = connect_frontend(
        &a.end,
        a.queues,
        Arc::clone(&counter) as Arc<dyn FrontendHandler>,
    )?;
    let window = Duration::from_secs_f64(a.seconds);
    // Warm-up: a tenth of the window, not counted.
    let warm = window / 10;
    let gso = (a.size > 1514).then_some(netstage_fallback::Gso {
        gso_type: netstage_ring::netif::GsoType::TcpV4,
        mss: 1448,
    });
    let pkt = Packet {
        data: Bytes::from(vec![0xa5u8; a.size]),
        gso,
        csum_blank: false,
    };
    let cpu0;
    let mut latency_ns = None;
    let mut timeline = Vec::new();
    let (packets, seconds) = match a.dir {
        Dir::Rr | Dir::RrBusy => {
            let tick = |deadline: Instant, seen: u64| -> anyhow::Result<()> {
                while counter.0.load(Ordering::Acquire) == seen {
                    if Instant::now() > deadline {
                        anyhow::bail!("no echo within a second");
                    }
                    // The queue thread that delivers the echo shares this CPU.
                    std::thread::yield_now();
                }
                Ok(())
            };
            let t0 = Instant::now();
            while t0.elapsed() < warm {
                let seen = counter.0.load(Ordering::Acquire);
                front.send(0, pkt.clone())?;
                tick(Instant::now() + Duration::from_secs(1), seen)?;
            }
            cpu0 = crate::sys::cpu_seconds();
            let mut lat: Vec<u64> = Vec::new();
            let t = Instant::now();
            while t.elapsed() < window {
                let seen = counter.0.load(Ordering::Acquire);
                let s = Instant::now();
                front.send(0, pkt.clone())?;
                tick(s + Duration::from_secs(1), seen)?;
                lat.push(s.elapsed().as_nanos() as u64);
            }
            let secs = t.elapsed().as_secs_f64();
            lat.sort_unstable();
            let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64;
            if !lat.is_empty() {
                latency_ns = Some([q(0.50), q(0.99), q(0.999)]);
            }
            (lat.len() as u64, secs)
        }
        Dir::Tx => {
            let tx_now = || {
                let m = front.metrics();
                (
                    m.tx_packets,
                    m.tx_staged_packets,
                    m.tx_ring_fill_samples,
                    m.tx_ring_fill_ppm,
                )
            };
            // Queues after the first get a sender thread each, from the warm-up to the end
            // of the window; this thread sends on queue 0 and keeps the timeline.
            let stop = AtomicBool::new(false);
            let (packets, secs, c0, tl) = std::thread::scope(|sc| -> anyhow::Result<_> {
                let senders: Vec<_> = (1..front.queues())
                    .map(|q| {
                        let (front, pkt, stop) = (&front, &pkt, &stop);
                        sc.spawn(move || {
                            while !stop.load(Ordering::Relaxed) {
                                front.send(q, pkt.clone())?;
                            }
                            Ok::<(), netstage_netfront_user::FrontendError>(())
                        })
                    })
                    .collect();
                let run = || -> anyhow::Result<_> {
                    let t0 = Instant::now();
                    while t0.elapsed() < warm {
                        front.send(0, pkt.clone())?;
                    }
                    let base = front.metrics().tx_packets;
                    let c0 = crate::sys::cpu_seconds();
                    let mut tl = Timeline::new(tx_now());
                    let t = Instant::now();
                    while t.elapsed() < window {
                        for _ in 0..64 {
                            front.send(0, pkt.clone())?;
                        }
                        tl.tick(tx_now());
                    }
                    let n = front.metrics().tx_packets - base;
                    Ok((n, t.elapsed().as_secs_f64(), c0, tl.bins))
                };
                let done = run();
                stop.store(true, Ordering::Relaxed);
                for s in senders {
                    s.join()
                        .map_err(|_| anyhow::anyhow!("a sender thread panicked"))??;
                }
                done
            })?;
            cpu0 = c0;
            timeline = tl;
            (packets, secs)
        }
        Dir::Rx => {
            std::thread::sleep(warm);
            let rx_now = || {
                let m = front.metrics();
                (
                    m.rx_packets,
                    m.rx_staged_packets,
                    m.rx_ring_fill_samples,
                    m.rx_ring_fill_ppm,
                )
            };
            let base = counter.0.load(Ordering::Relaxed);
            cpu0 = crate::sys::cpu_seconds();
            let mut tl = Timeline::new(rx_now());
            let t = Instant::now();
            while t.elapsed() < window {
                std::thread::sleep(BIN.min(window.saturating_sub(t.elapsed())));
                tl.tick(rx_now());
            }
            timeline = tl.bins;
            (
                counter.0.load(Ordering::Relaxed) - base,
                t.elapsed().as_secs_f64(),
            )
        }
    };
    let report = FrontendReport {
        latency_ns,
        timeline,
        cpu_seconds: crate::sys::cpu_seconds() - cpu0,
        packets,
        bytes: packets * a.size as u64,
        seconds,
        design: front.design().to_string(),
        metrics: serde_json::to_value(front.metrics())?,
    };
    front.close()?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The socket a backend's guest connects to: it exists once the backend is ready.
pub fn ready_marker(world: &Path) -> PathBuf {
    world.join("xenstore").join(format!("dom{GUEST}.sock"))
}

/// Parameters of the raw stream roles.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamArgs {
    /// World directory.
    #[arg(long)]
    pub world: PathBuf,
    /// Data-ring order.
    #[arg(long, default_value_t = 8)]
    pub order: u32,
    /// Bytes per write.
    #[arg(long, default_value_t = 65536)]
    pub chunk: usize,
    /// Measured seconds (reader).
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Core to pin this process to.
    #[arg(long)]
    pub core: Option<usize>,
}

/// What the stream reader reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamReport {
    /// Bytes read in the window.
    pub bytes: u64,
    /// Window length.
    pub seconds: f64,
}

fn refs_file(world: &Path) -> PathBuf {
    world.join("stream-ref")
}

/// The upper bound's writer (the guest): shares a data ring with dom0 and fills its **out**
/// direction as fast as the reader empties it, until SIGTERM. No packets, no requests: what
/// PVCalls does.
pub fn stream_writer(a: &StreamArgs) -> anyhow::Result<()> {
    use netstage_platform::GrantExport;
    if let Some(c) = a.core {
        crate::sys::pin_to_core(c)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    let world = SimWorld::open(&a.world)?;
    let me = world.create_domain(GUEST, DomainConfig::default())?;
    let intf = me.share(0, 1, true)?;
    let data = me.share(0, 1 << a.order, true)?;
    netstage_ring::flex::init_intf(&intf.mem, a.order, &data.grefs)?;
    let (mut prod, _) = netstage_ring::flex::open(
        netstage_ring::flex::End::Frontend,
        &intf.mem,
        &data.mem,
        a.order,
    )?;
    std::fs::write(refs_file(&a.world), intf.grefs[0].to_string())?;
    let chunk = vec![0x3cu8; a.chunk.max(1)];
    while !stop.load(Ordering::Relaxed) {
        if prod.write(&chunk)? == 0 {
            std::hint::spin_loop();
        }
    }
    Ok(())
}

/// The upper bound's reader (dom0): maps the writer's ring and consumes it for the window.
pub fn stream_reader(a: &StreamArgs) -> anyhow::Result<()> {
    use netstage_platform::GrantImport;
    if let Some(c) = a.core {
        crate::sys::pin_to_core(c)?;
    }
    let world = SimWorld::create(&a.world)?;
    let dom0 = world.create_domain(0, DomainConfig::default())?;
    let t = Instant::now();
    let r: u32 = loop {
        if let Ok(s) = std::fs::read_to_string(refs_file(&a.world)) {
            if let Ok(r) = s.trim().parse() {
                break r;
            }
        }
        if t.elapsed() > Duration::from_secs(20) {
            anyhow::bail!("the stream writer never shared its ring");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let intf = dom0.map(GUEST, &[r], true)?;
    let cfg = netstage_ring::flex::read_intf_config(&intf, 9)?;
    let data = dom0.map(GUEST, &cfg.refs, true)?;
    let (_, mut cons) =
        netstage_ring::flex::open(netstage_ring::flex::End::Backend, &intf, &data, cfg.order)?;
    let mut buf = vec![0u8; a.chunk.max(1)];
    let mut drain = |until: Instant| -> anyhow::Result<u64> {
        let mut n = 0u64;
        while Instant::now() < until {
            let got = cons.read(&mut buf)?;
            if got > 0 {
                cons.release()?;
                n += got as u64;
            } else {
                std::hint::spin_loop();
            }
        }
        Ok(n)
    };
    let window = Duration::from_secs_f64(a.seconds);
    drain(Instant::now() + window / 10)?; // warm-up
    let t = Instant::now();
    let bytes = drain(t + window)?;
    let report = StreamReport {
        bytes,
        seconds: t.elapsed().as_secs_f64(),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
