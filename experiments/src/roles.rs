//! The two processes of a scenario, run by the harness as children of itself: a backend
//! (dom0 with an embedded xenstored) and a frontend. Each prints one JSON line with what it
//! counted. They use the libraries only; no data path lives here.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use netstage_fallback::{Design, PollMode};
use netstage_netback_user::{
    toolstack, BackQueue, Backend, BackendConfig, BackendError, PacketBuf, PacketRef, QueueDriver,
    QueueFault, TxPath, BURST,
};
use netstage_netfront_user::{FrontQueue, Frontend, FrontendConfig, FrontendHandler, FrontendLink};
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::sim::{DomainConfig, SimDomain, SimWorld};
use netstage_platform::xenstore::XsClient;
use serde::{Deserialize, Serialize};

use crate::check::{Check, Checker, SizeSpec, Stamper};

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
    /// TX runs: what the backend's check of every received frame found.
    #[serde(default)]
    pub check: Option<Check>,
}

/// What the frontend process reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FrontendReport {
    /// CPU seconds the frontend process used in the measured window (all threads).
    pub cpu_seconds: f64,
    /// Paced echo streams (`--rate`): frames sent in the window (`packets` are the echoes).
    #[serde(default)]
    pub sent: Option<u64>,
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
    /// RX runs: what the frontend's check of every received frame found.
    #[serde(default)]
    pub check: Option<Check>,
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

/// The backend's side of a scenario, run to completion on each queue's thread: counts what
/// the guest transmits (TX), generates frames for the guest (RX), or echoes every frame
/// back (request/response). No thread hand-off and no allocation per packet.
struct BenchQueues {
    dir: Dir,
    size: SizeSpec,
    /// What the sending end (the backend on RX) and a slow backend do.
    load: Load,
    /// What the queues' checks of received frames found, added as each queue stops.
    found: Mutex<Check>,
}

/// How a stream is loaded beyond its sizes: the sender's bursts, the backend's speed.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Load {
    /// Packets per burst: the sender sends this many, then pauses `--gap-us` (0: no
    /// pauses).
    #[arg(long, default_value_t = 0)]
    pub burst: usize,
    /// Microseconds the sender pauses between bursts.
    #[arg(long, default_value_t = 0)]
    pub gap_us: u64,
    /// Nanoseconds the backend spends on each packet it sends or receives (a slow
    /// backend; it spins).
    #[arg(long, default_value_t = 0)]
    pub backend_ns: u64,
}

/// Spins for `ns` nanoseconds.
fn spin(ns: u64) {
    if ns > 0 {
        let t = Instant::now();
        while t.elapsed().as_nanos() < u128::from(ns) {
            std::hint::spin_loop();
        }
    }
}

/// A sender's bursts and pauses ([`Load::burst`], [`Load::gap_us`]).
#[derive(Debug)]
struct Pacer {
    burst: usize,
    gap: Duration,
    /// Packets left in this burst.
    left: usize,
    /// The end of the pause under way.
    until: Option<Instant>,
}

impl Pacer {
    fn new(l: &Load) -> Pacer {
        Pacer {
            burst: l.burst,
            gap: Duration::from_micros(l.gap_us),
            left: l.burst,
            until: None,
        }
    }

    /// How many of `n` packets may go now (0 during a pause).
    fn allow(&mut self, n: usize) -> usize {
        if self.burst == 0 {
            return n;
        }
        if let Some(t) = self.until {
            if Instant::now() < t {
                return 0;
            }
            self.until = None;
            self.left = self.burst;
        }
        n.min(self.left)
    }

    /// `n` packets went; a burst that is done starts its pause.
    fn sent(&mut self, n: usize) {
        if self.burst > 0 && n > 0 {
            self.left -= n.min(self.left);
            if self.left == 0 {
                self.until = Some(Instant::now() + self.gap);
            }
        }
    }
}

/// How long an idle queue sleeps before it looks at its stop flag again.
const IDLE_WAIT: Duration = Duration::from_millis(100);

impl BenchQueues {
    /// Sends stamped frames (numbered, checksummed) as fast as the guest takes them.
    fn generate(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        let mut frames = Stamper::new(&self.size, 0x5a, None);
        let mut pace = Pacer::new(&self.load);
        while !q.stopped() {
            let k = pace.allow(BURST);
            if k == 0 {
                std::hint::spin_loop();
                continue;
            }
            let n = q.send_burst(&frames.burst(k))?;
            frames.sent(n);
            pace.sent(n);
            spin(self.load.backend_ns * n as u64);
            if n == 0 {
                q.wait(Some(IDLE_WAIT))?;
            }
        }
        Ok(())
    }

    /// Takes the guest's packets with their staged heads lent in place (nothing copies
    /// them a second time; the granted rest is copied into the queue's buffers) and checks
    /// each: its number in sequence, its checksum over every byte.
    fn count(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        let mut bufs = PacketBuf::pool(BURST);
        let mut check = Checker::new(&self.size);
        let slow = self.load.backend_ns;
        let r = (|| {
            while !q.stopped() {
                let each = |v: &netstage_fallback::PacketView<'_>| {
                    check.view(v);
                    spin(slow);
                };
                if q.recv_burst_in_place(&mut bufs, each)? == 0 {
                    q.wait(Some(IDLE_WAIT))?;
                }
            }
            Ok(())
        })();
        if let Ok(mut f) = self.found.lock() {
            f.add(&check.found);
        }
        r
    }

    fn echo(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        let mut bufs = PacketBuf::pool(BURST);
        while !q.stopped() {
            let got = q.recv_burst(&mut bufs)?;
            if got == 0 {
                q.wait(Some(IDLE_WAIT))?;
                continue;
            }
            let echo: arrayvec::ArrayVec<PacketRef<'_>, BURST> =
                bufs[..got].iter().map(PacketBuf::packet_ref).collect();
            let mut sent = 0;
            while sent < got && !q.stopped() {
                let n = q.send_burst(&echo[sent..])?;
                if n == 0 {
                    q.wait(Some(IDLE_WAIT))?;
                }
                sent += n;
            }
        }
        Ok(())
    }
}

impl QueueDriver<SimDomain> for BenchQueues {
    fn run(&self, q: &mut BackQueue<SimDomain>) -> Result<(), QueueFault> {
        match self.dir {
            Dir::Tx => self.count(q),
            Dir::Rx => self.generate(q),
            Dir::Rr | Dir::RrBusy => self.echo(q),
        }
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
    /// Blocking, arm the rings at once as Linux's drivers do (`PollMode::BlockArmed`).
    #[arg(long, conflicts_with = "busy")]
    pub armed: bool,
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
    /// Packet sizes: bytes (`1500`), `imix` (64, 576, 1500 B 7:4:1) or a mix
    /// (`mix:64+65535`, weights as `64x7`).
    #[arg(long)]
    pub size: SizeSpec,
    /// Bursts and a slow backend.
    #[command(flatten)]
    pub load: Load,
    /// Direction.
    #[arg(long, value_enum)]
    pub dir: Dir,
    /// Measured seconds (frontend).
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Queues (frontend: asked for; one sender or receiver per queue).
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// Request/response as a paced stream (frontend): frames go out at this many per
    /// second, many in flight, and each echo's round trip is measured (0: as fast as the
    /// rings take them). Without it, one transaction at a time.
    #[arg(long)]
    pub rate: Option<f64>,
}

/// How an end given `--busy` and `--armed` waits (busy-polling wins over arming).
pub fn poll_mode(busy: bool, armed: bool) -> PollMode {
    match (busy, armed) {
        (true, _) => PollMode::BusyPoll,
        (false, true) => PollMode::BlockArmed,
        (false, false) => PollMode::Block,
    }
}

fn poll(e: &EndArgs) -> PollMode {
    poll_mode(e.busy, e.armed)
}

/// The backend end: creates the world, starts the embedded xenstored, creates dom0 and the
/// vif, and serves the guest with `handler` until SIGTERM; returns its report.
pub(crate) fn run_backend(
    e: &EndArgs,
    serve: impl FnOnce(&Backend<SimDomain>, &AtomicBool) -> Result<(), BackendError>,
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
            tx_path: TxPath::for_design(design),
            poll: poll(e),
            rx_backlog: 1 << 14,
            ..BackendConfig::default()
        },
    );
    xs.introduce(GUEST)?;
    toolstack::create_vif(&xs, 0, GUEST, 0)?;
    serve(&backend, &stop)?;
    let report = BackendReport {
        cpu_seconds: crate::sys::cpu_seconds(),
        metrics: serde_json::to_value(backend.metrics())?,
        grants: serde_json::to_value(dom0.counters())?,
        check: None,
    };
    drop(xsd);
    Ok(report)
}

/// Pins this end, joins the world as the guest and opens its XenStore connection; returns
/// them with the frontend settings for `queues` queues.
fn join_as_guest(
    e: &EndArgs,
    queues: u16,
) -> anyhow::Result<(SimDomain, XsClient, FrontendConfig)> {
    crate::sys::pin_to_cores(&e.cores)?;
    let design: Design = e.design.parse().map_err(anyhow::Error::msg)?;
    let world = SimWorld::open(&e.world)?;
    let me = world.create_domain(GUEST, e.domain()?)?;
    let socket = e.world.join("xenstore").join(format!("dom{GUEST}.sock"));
    let xs = XsClient::connect(&socket)
        .with_context(|| format!("no guest XenStore at {}", socket.display()))?;
    let cfg = FrontendConfig {
        design,
        poll: poll(e),
        queues,
        ..FrontendConfig::default()
    };
    Ok((me, xs, cfg))
}

/// The frontend end: joins as the guest and connects to the backend's vif with `queues`
/// queues and `handler` receiving (the threaded convenience layer).
pub(crate) fn connect_frontend(
    e: &EndArgs,
    queues: u16,
    handler: Arc<dyn FrontendHandler>,
) -> anyhow::Result<Frontend<SimDomain>> {
    let (me, xs, cfg) = join_as_guest(e, queues)?;
    let front = Frontend::connect(me, xs, 0, cfg, handler)?;
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
    let queues = Arc::new(BenchQueues {
        dir: a.dir,
        size: a.size.clone(),
        load: a.load,
        found: Mutex::new(Check::default()),
    });
    let q2 = Arc::clone(&queues);
    let mut report = run_backend(&a.end, |b, stop| b.serve_queues(GUEST, 0, q2, stop))?;
    if a.dir == Dir::Tx {
        report.check = queues.found.lock().ok().map(|f| *f);
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The guest's queues and the link that owns their connection.
type Queues = (FrontendLink<SimDomain>, Vec<FrontQueue<SimDomain>>);

/// The frontend end for the queue API: pins itself, joins the world as the guest and
/// connects with `queues` queues for this thread (and its helpers) to drive.
fn connect_queues(e: &EndArgs, queues: u16) -> anyhow::Result<Queues> {
    let (me, xs, cfg) = join_as_guest(e, queues)?;
    let (link, qs) = netstage_netfront_user::connect_queues(me, xs, 0, cfg)?;
    if qs.len() != usize::from(queues) {
        anyhow::bail!("asked for {queues} queues, the backend gave {}", qs.len());
    }
    Ok((link, qs))
}

/// How long an idle frontend queue waits before it looks at the clock again.
const FRONT_WAIT: Duration = Duration::from_millis(10);

/// One queue's end of a stream: stamped frames to send (TX), or the check of every frame
/// that arrives (RX).
enum StreamEnd {
    Send(Stamper, Pacer),
    Receive(Checker),
}

impl StreamEnd {
    fn new(spec: &StreamSpec<'_>) -> StreamEnd {
        if spec.dir == Dir::Tx {
            StreamEnd::Send(
                Stamper::new(spec.size, 0xa5, spec.gso),
                Pacer::new(&spec.load),
            )
        } else {
            StreamEnd::Receive(Checker::new(spec.size))
        }
    }

    /// One step on `q`: a burst sent, or received in place and checked; waits when nothing
    /// moved. (Received frames are read once, by the check; nothing copies them, as
    /// testpmd's receiver does not.)
    fn step(&mut self, q: &mut FrontQueue<SimDomain>) -> anyhow::Result<()> {
        let moved = match self {
            StreamEnd::Send(frames, pace) => {
                let k = pace.allow(BURST);
                if k == 0 {
                    // A pause: nothing is owed, so nothing to wait for.
                    std::hint::spin_loop();
                    return Ok(());
                }
                let n = q.send_burst(&frames.burst(k))?;
                frames.sent(n);
                pace.sent(n);
                n
            }
            StreamEnd::Receive(check) => q.recv_burst_in_place(BURST, |v| check.view(v))?,
        };
        if moved == 0 {
            q.wait(Some(FRONT_WAIT))?;
        }
        Ok(())
    }

    /// After the window, a sending end waits (up to two seconds) for the backend to answer
    /// everything in flight, so that closing does not revoke grants the backend is still
    /// copying from (frames it would then fail, and the check would count lost).
    fn drain(&self, q: &mut FrontQueue<SimDomain>) -> anyhow::Result<()> {
        if let StreamEnd::Send(..) = self {
            let t = Instant::now();
            while q.tx_pending() > 0 && t.elapsed() < Duration::from_secs(2) {
                q.send_burst(&[])?;
                q.wait(Some(Duration::from_millis(1)))?;
            }
        }
        Ok(())
    }

    /// What the receiving end found.
    fn found(&self) -> Option<Check> {
        match self {
            StreamEnd::Receive(c) => Some(c.found),
            StreamEnd::Send(..) => None,
        }
    }
}

/// How long a transaction waits for its echo before the run fails.
const ECHO_DEADLINE: Duration = Duration::from_secs(1);

/// Looks at the rings between two reads of the clock while an echo is awaited: a clock
/// read per look delayed finding the echo (a few per cent of a busy-polled transaction).
const LOOKS_PER_CLOCK: u32 = 16;

/// One request/response transaction on `q`, begun at `start`: sends `pkt`, waits for one
/// frame back.
fn transact(
    q: &mut FrontQueue<SimDomain>,
    pkt: PacketRef<'_>,
    bufs: &mut [PacketBuf],
    start: Instant,
) -> anyhow::Result<()> {
    while q.send_burst(&[pkt])? == 0 {
        q.wait(Some(FRONT_WAIT))?;
    }
    let mut looks = 0u32;
    while q.recv_burst(&mut bufs[..1])? == 0 {
        looks = looks.wrapping_add(1);
        if looks % LOOKS_PER_CLOCK == 0 && start.elapsed() > ECHO_DEADLINE {
            anyhow::bail!("no echo within a second");
        }
        q.wait(Some(FRONT_WAIT))?;
    }
    Ok(())
}

/// What a measured window produced.
struct Window {
    packets: u64,
    /// Their bytes (the frontend's count).
    bytes: u64,
    seconds: f64,
    cpu0: f64,
    latency_ns: Option<[f64; 3]>,
    timeline: Vec<crate::Bin>,
    /// Paced echo streams: frames sent in the window.
    sent: Option<u64>,
    /// What the receiving ends' checks found (RX; a paced echo stream's echoes).
    check: Option<Check>,
}

fn measure_rr(
    q: &mut FrontQueue<SimDomain>,
    pkt: PacketRef<'_>,
    warm: Duration,
    window: Duration,
) -> anyhow::Result<Window> {
    let mut bufs = PacketBuf::pool(1);
    let t0 = Instant::now();
    let mut s = t0;
    while s - t0 < warm {
        transact(q, pkt, &mut bufs, s)?;
        s = Instant::now();
    }
    let cpu0 = crate::sys::cpu_seconds();
    // Room for two million transactions a second (up to 16 M, 128 MiB): none is added
    // during a window of up to 8 s.
    let room = ((window.as_secs_f64() * 2e6) as usize).clamp(1 << 16, 1 << 24);
    let mut lat: Vec<u64> = Vec::with_capacity(room);
    // One clock read per transaction: its end is the next one's start.
    let t = Instant::now();
    let mut s = t;
    while s - t < window {
        transact(q, pkt, &mut bufs, s)?;
        let end = Instant::now();
        lat.push((end - s).as_nanos() as u64);
        s = end;
    }
    let seconds = (s - t).as_secs_f64();
    lat.sort_unstable();
    let at = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64;
    let latency_ns = (!lat.is_empty()).then(|| [at(0.50), at(0.99), at(0.999)]);
    Ok(Window {
        packets: lat.len() as u64,
        bytes: 0,
        seconds,
        cpu0,
        latency_ns,
        timeline: Vec::new(),
        sent: None,
        check: None,
    })
}

/// The counters a direction's timeline follows.
fn timeline_counts(m: &netstage_netfront_user::MetricsSnapshot, dir: Dir) -> Counts {
    if dir == Dir::Tx {
        (
            m.tx_packets,
            m.tx_staged_packets,
            m.tx_ring_fill_samples,
            m.tx_ring_fill_ppm,
        )
    } else {
        (
            m.rx_packets,
            m.rx_staged_packets,
            m.rx_ring_fill_samples,
            m.rx_ring_fill_ppm,
        )
    }
}

/// What a stream's ends are made of.
#[derive(Clone, Copy)]
struct StreamSpec<'a> {
    dir: Dir,
    size: &'a SizeSpec,
    /// GSO metadata of the frames longer than an Ethernet frame.
    gso: Option<netstage_fallback::Gso>,
    load: Load,
}

/// Drives queue 0 on this thread in direction `dir` (TX: sending; RX: receiving) through
/// the warm-up and the window, keeping the timeline; the other queues run on threads of
/// their own for as long. Receiving ends check every frame.
fn measure_stream(
    link: &FrontendLink<SimDomain>,
    qs: &mut [FrontQueue<SimDomain>],
    spec: StreamSpec<'_>,
    warm: Duration,
    window: Duration,
) -> anyhow::Result<Window> {
    let stop = AtomicBool::new(false);
    let (first, others) = qs
        .split_first_mut()
        .ok_or_else(|| anyhow::anyhow!("no queue"))?;
    std::thread::scope(|sc| -> anyhow::Result<Window> {
        let helpers: Vec<_> = others
            .iter_mut()
            .map(|q| {
                let stop = &stop;
                sc.spawn(move || -> anyhow::Result<Option<Check>> {
                    let mut end = StreamEnd::new(&spec);
                    while !stop.load(Ordering::Relaxed) {
                        end.step(q)?;
                    }
                    end.drain(q)?;
                    Ok(end.found())
                })
            })
            .collect();
        let mut end = StreamEnd::new(&spec);
        let run = drive_first(link, first, &mut end, spec.dir, warm, window);
        stop.store(true, Ordering::Relaxed);
        let drained = end.drain(first);
        let mut found = end.found();
        for h in helpers {
            let f = h
                .join()
                .map_err(|_| anyhow::anyhow!("a queue thread panicked"))??;
            if let (Some(total), Some(f)) = (found.as_mut(), f) {
                total.add(&f);
            }
        }
        drained?;
        run.map(|w| Window { check: found, ..w })
    })
}

fn drive_first(
    link: &FrontendLink<SimDomain>,
    q: &mut FrontQueue<SimDomain>,
    end: &mut StreamEnd,
    dir: Dir,
    warm: Duration,
    window: Duration,
) -> anyhow::Result<Window> {
    let t0 = Instant::now();
    while t0.elapsed() < warm {
        end.step(q)?;
    }
    let now = || timeline_counts(&link.metrics(), dir);
    let bytes = || {
        let m = link.metrics();
        if dir == Dir::Tx {
            m.tx_bytes
        } else {
            m.rx_bytes
        }
    };
    let (base, base_bytes) = (now().0, bytes());
    let cpu0 = crate::sys::cpu_seconds();
    let mut tl = Timeline::new(now());
    let t = Instant::now();
    while t.elapsed() < window {
        end.step(q)?;
        tl.tick(now());
    }
    Ok(Window {
        packets: now().0 - base,
        bytes: bytes() - base_bytes,
        seconds: t.elapsed().as_secs_f64(),
        cpu0,
        latency_ns: None,
        timeline: tl.bins,
        sent: None,
        check: None,
    })
}

/// Connects, moves packets for the measured window on the queue API (this thread drives
/// queue 0, a thread each the others), prints the report.
pub fn frontend(a: &RoleArgs) -> anyhow::Result<()> {
    let (link, mut qs) = connect_queues(&a.end, a.queues)?;
    let window = Duration::from_secs_f64(a.seconds);
    // Warm-up: a tenth of the window, not counted.
    let warm = window / 10;
    let gso = (a.size.max() > 1514).then_some(netstage_fallback::Gso {
        gso_type: netstage_ring::netif::GsoType::TcpV4,
        mss: 1448,
    });
    // Request/response sends one frame size: the largest.
    let frame = vec![0xa5u8; a.size.max()];
    let pkt = PacketRef {
        data: &frame,
        gso,
        csum_blank: false,
    };
    let w = match a.dir {
        Dir::Rr | Dir::RrBusy => match (qs.first_mut(), a.rate) {
            (Some(q), None) => measure_rr(q, pkt, warm, window)?,
            (Some(q), Some(rate)) => {
                let cpu0 = crate::sys::cpu_seconds();
                let e = crate::latency::measure_echo_stream(q, frame.len(), rate, warm, window)?;
                Window {
                    packets: e.echoed,
                    bytes: e.echoed * frame.len() as u64,
                    seconds: e.seconds,
                    cpu0,
                    latency_ns: e.latency_ns,
                    timeline: Vec::new(),
                    sent: Some(e.sent),
                    check: Some(e.check),
                }
            }
            (None, _) => anyhow::bail!("no queue"),
        },
        Dir::Tx | Dir::Rx => {
            let spec = StreamSpec {
                dir: a.dir,
                size: &a.size,
                gso,
                load: a.load,
            };
            measure_stream(&link, &mut qs, spec, warm, window)?
        }
    };
    let design = link.design().to_string();
    // Counted once the backend has closed: what it left on the RX rings is unread.
    let metrics = link.close_counted(&mut qs)?;
    let report = FrontendReport {
        latency_ns: w.latency_ns,
        timeline: w.timeline,
        cpu_seconds: crate::sys::cpu_seconds() - w.cpu0,
        packets: w.packets,
        bytes: if a.dir.is_rr() {
            w.packets * frame.len() as u64
        } else {
            w.bytes
        },
        seconds: w.seconds,
        design,
        metrics: serde_json::to_value(metrics)?,
        sent: w.sent,
        check: w.check,
    };
    drop(qs);
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
    /// Writes published at once (writer), and reads taken before their room is given back
    /// (reader): 1, each on its own, as PVCalls' writes; 64, a burst of the datapath's.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch: u32,
    /// Measured seconds (reader).
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Beside the data ring, netif's TX ring: a request per write, answered in its slot
    /// (`floor`'s steps), `batch` at a time.
    #[arg(long)]
    pub netif: bool,
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

/// The stream writer's grant references: its data ring's indexes page and, with `netif`,
/// its TX ring page; `None` until the writer has written them all.
fn parse_refs(s: &str, netif: bool) -> Option<(u32, Option<u32>)> {
    let mut it = s.split_whitespace().map(str::parse::<u32>);
    let intf = it.next()?.ok()?;
    let tx = match netif {
        true => Some(it.next()?.ok()?),
        false => None,
    };
    Some((intf, tx))
}

/// One step of the stream reader: up to `batch` reads (with `rx`, each a request's record,
/// answered); the bytes read.
fn read_some(
    cons: &mut netstage_ring::flex::FlexConsumer,
    rx: Option<&mut netstage_ring::sring::BackRing<netstage_ring::netif::TxRing>>,
    buf: &mut [u8],
    batch: u32,
) -> anyhow::Result<usize> {
    if let Some(rx) = rx {
        return Ok(crate::floor::take_requests(rx, cons, buf, batch)?.1);
    }
    let mut got = 0;
    for _ in 0..batch {
        let k = cons.read(buf)?;
        if k == 0 {
            break;
        }
        got += k;
    }
    Ok(got)
}

fn refs_file(world: &Path) -> PathBuf {
    world.join("stream-ref")
}

/// The upper bound's writer (the guest): shares a data ring with dom0 and fills its **out**
/// direction as fast as the reader empties it, until SIGTERM. No packets, no requests
/// (what PVCalls does), or with `--netif` a netif TX request per write.
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
    // With `--netif`, netif's TX ring on a page of its own, shared until the end.
    let tx_page = if a.netif {
        Some(me.share(0, 1, true)?)
    } else {
        None
    };
    let mut tx = match &tx_page {
        Some(p) => Some(crate::floor::TxRequests::new(
            netstage_ring::sring::FrontRing::init(p.mem.clone())?,
        )),
        None => None,
    };
    let refs = match &tx_page {
        Some(p) => format!("{} {}", intf.grefs[0], p.grefs[0]),
        None => intf.grefs[0].to_string(),
    };
    // Whole or not at all: the reader polls for the file.
    let tmp = refs_file(&a.world).with_extension("tmp");
    std::fs::write(&tmp, refs)?;
    std::fs::rename(&tmp, refs_file(&a.world))?;
    let chunk = vec![0x3cu8; a.chunk.max(1)];
    while !stop.load(Ordering::Relaxed) {
        let moved = write_some(&mut prod, tx.as_mut(), &chunk, a.batch)?;
        if moved == 0 {
            std::hint::spin_loop();
        }
    }
    Ok(())
}

/// One step of the stream writer: one write on its own (as much as fits, published:
/// PVCalls' write), or whole writes while they fit, up to `batch`, published together (with
/// their requests, whose answers are then reaped); how much moved.
fn write_some(
    prod: &mut netstage_ring::flex::FlexProducer,
    mut tx: Option<&mut crate::floor::TxRequests>,
    chunk: &[u8],
    batch: u32,
) -> anyhow::Result<usize> {
    if batch == 1 && tx.is_none() {
        return Ok(prod.write(chunk)?);
    }
    let staged = crate::floor::stage_burst(prod, tx.as_deref_mut(), chunk, batch)?;
    if staged > 0 {
        prod.publish()?;
    }
    if let Some(t) = tx {
        t.publish_and_reap(staged > 0)?;
    }
    Ok(staged as usize)
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
    let r = loop {
        if let Ok(s) = std::fs::read_to_string(refs_file(&a.world)) {
            if let Some(r) = parse_refs(&s, a.netif) {
                break r;
            }
        }
        if t.elapsed() > Duration::from_secs(20) {
            anyhow::bail!("the stream writer never shared its ring");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let intf = dom0.map(GUEST, &[r.0], true)?;
    let cfg = netstage_ring::flex::read_intf_config(&intf, 9)?;
    let data = dom0.map(GUEST, &cfg.refs, true)?;
    let (_, mut cons) =
        netstage_ring::flex::open(netstage_ring::flex::End::Backend, &intf, &data, cfg.order)?;
    let mut rx = match r.1 {
        Some(t) => Some(netstage_ring::sring::BackRing::attach(dom0.map(
            GUEST,
            &[t],
            true,
        )?)?),
        None => None,
    };
    let mut buf = vec![0u8; a.chunk.max(1)];
    let mut drain = |until: Instant| -> anyhow::Result<u64> {
        let mut n = 0u64;
        while Instant::now() < until {
            let got = read_some(&mut cons, rx.as_mut(), &mut buf, a.batch)?;
            if got > 0 {
                cons.release()?;
                if let Some(rx) = rx.as_mut() {
                    rx.push_responses()?;
                }
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

#[cfg(test)]
mod tests {
    use super::parse_refs;

    /// The reader waits until every reference the writer shares is there.
    #[test]
    fn stream_refs_are_read_whole() {
        assert_eq!(parse_refs("12\n", false), Some((12, None)));
        assert_eq!(parse_refs("12 34", true), Some((12, Some(34))));
        assert_eq!(parse_refs("12", true), None);
        assert_eq!(parse_refs("", false), None);
        assert_eq!(parse_refs("12 x", true), None);
    }
}
