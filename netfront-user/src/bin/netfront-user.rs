//! `netfront-user`: a guest's network frontend on the emulated platform, with a packet
//! generator and a verifier.
//!
//! Joins a world as domain `--domid`, connects vif `--devid` through the guest's XenStore
//! socket, sends `--count` packets of the `--sizes` given (cycled, optionally at `--rate`),
//! and with `--expect-echo` waits for every packet to come back and checks each byte and the
//! order per queue. Prints the achieved rate; exits non-zero with a message on any failure.
//! With `--tap NAME` it is a guest's network device instead: received packets go out of
//! Linux TAP interface NAME (created if absent, with offloads) and its frames are sent, until
//! SIGINT or SIGTERM.
//! With `--xen` it runs in a guest of real Xen instead (Linux's Xen devices, XenStore
//! through `/dev/xen/xenbus`).
//!
//! Logs to stderr through `env_logger` (`RUST_LOG`, default `info`); prints its results on
//! stdout, the counters as a JSON line (every `--stats` seconds while sending and
//! lingering, and once at the end; docs/operating.md).

#![forbid(unsafe_code)]
// The argument docs are the `--help` text, written for a terminal: `<value>` there is a
// placeholder, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use netstage_fallback::{Features, Gso, Packet, PollMode};
use netstage_netfront_user::{
    Frontend, FrontendConfig, FrontendError, FrontendHandler, FrontendPlatform, FrontendStats,
    StatsKind,
};
use netstage_platform::sim::{CostMode, DomainConfig, SimWorld};
use netstage_platform::xen::XenDomain;
use netstage_platform::xenstore::{XenStore, XsClient, NO_TX};
use netstage_ring::netif::GsoType;
use netstage_tap::{PumpEnd, Refusal, TapCountersSnapshot, TapPort};

/// A user-space netif frontend with a packet generator and verifier.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Args {
    /// World directory of the emulated platform (the backend creates it).
    #[arg(long, value_name = "DIR", required_unless_present = "xen")]
    world: Option<PathBuf>,
    /// Run in a guest of real Xen: Linux's /dev/xen/{gntalloc,gntdev,evtchn} and XenStore
    /// through --xenstore, XENSTORED_PATH or /dev/xen/xenbus; the domain id is read from
    /// XenStore unless --domid is given. --world and --cost do not apply.
    #[arg(long, conflicts_with = "world")]
    xen: bool,
    /// This guest's domain id.
    #[arg(long, required_unless_present = "xen")]
    domid: Option<u16>,
    /// Vif device id.
    #[arg(long, default_value_t = 0)]
    devid: u32,
    /// This guest's XenStore socket [default: <world>/xenstore/dom<DOMID>.sock].
    #[arg(long, value_name = "PATH")]
    xenstore: Option<PathBuf>,
    /// Design: grant-copy, grant-map (the backend's TX path decides; the frontend works as
    /// for grant copy), linux (a page granted and revoked per packet, as Linux netfront
    /// without persistent grants), slots:<data-len 64..65536>, slots-rfc:<data-len
    /// 64..65536> (the RFC's encoding) or ring:<order 0..9>:<policy>, optionally followed
    /// by :wait, with policy fixed:<bytes>, greedy or adaptive (with :wait a TX packet the
    /// ring has no room for waits while the backend has requests to take, instead of going
    /// by grants). A
    /// staging design the backend does not offer falls back to grant copy; sizes above the
    /// backend's maximum are reduced to it.
    #[arg(long, default_value = "grant-copy")]
    design: netstage_netfront_user::Design,
    /// Queues wanted, at least 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    queues: u16,
    /// Features requested: comma-separated of sg, gso-tcpv4, gso-tcpv6, ipv6-csum; or `none`.
    #[arg(long, default_value = "sg,gso-tcpv4,gso-tcpv6,ipv6-csum")]
    want: Features,
    /// How queues wait for work.
    #[arg(long, value_enum, default_value_t = PollArg::Block)]
    poll: PollArg,
    /// Grant-operation cost: `kernel`, `none` or `model:<call>,<copy>,<map>,<unmap>` (ns).
    #[arg(long, default_value = "kernel")]
    cost: CostMode,
    /// Packets to send (spread round-robin over the queues).
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Packet sizes in bytes, cycled (14 to 65535).
    #[arg(long, value_delimiter = ',', default_value = "64", value_parser = frame_size)]
    sizes: Vec<usize>,
    /// Attach GSO (TCPv4, MSS 1448) to packets over 1514 bytes.
    #[arg(long)]
    gso: bool,
    /// Packets per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Wait for every packet to come back (a backend with `--sink echo`) and verify it.
    #[arg(long)]
    expect_echo: bool,
    /// Stay connected this many seconds after sending.
    #[arg(long, default_value_t = 0)]
    linger: u64,
    /// After a disconnect, wait for the backend and connect again (until SIGINT/SIGTERM).
    #[arg(long)]
    reconnect: bool,
    /// Forwarding mode: send every received packet back out (with slots, straight from its
    /// RX slot when it fits one, without a copy).
    #[arg(long)]
    forward: bool,
    /// Put the device on Linux TAP interface NAME (created if absent; needs CAP_NET_ADMIN)
    /// instead of generating packets: frames from the TAP are sent on queue 0, received
    /// packets written to it, until SIGINT or SIGTERM; then the counters, the TAP's
    /// included, are printed.
    #[arg(long, value_name = "NAME", value_parser = parse_tap_name,
          conflicts_with_all = ["expect_echo", "forward", "gso", "rate", "linger"])]
    tap: Option<String>,
    /// Print the counters as a JSON line on stdout every SECONDS seconds while connected
    /// (0: only the final line).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    stats: u64,
    /// On an error, print its backtrace too (where one was captured; as NETSTAGE_BACKTRACE=1).
    #[arg(long)]
    backtrace: bool,
}

/// One JSON line of counters (`--stats`, and the final one): the library's stats object,
/// and the TAP adapter's counters with `--tap NAME`.
#[derive(serde::Serialize)]
struct StatsLine {
    #[serde(flatten)]
    stats: FrontendStats,
    /// With `--tap NAME`: the TAP adapter's counters (frames passed on, and dropped per
    /// reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    tap: Option<TapCountersSnapshot>,
}

/// Prints `front`'s counters as one JSON line on stdout.
fn print_stats<P: FrontendPlatform>(
    kind: StatsKind,
    front: &Frontend<P>,
    tap: Option<&TapPort>,
    start: Instant,
) {
    let line = StatsLine {
        stats: front.stats(kind, start),
        tap: tap.map(TapPort::counters),
    };
    if let Ok(json) = serde_json::to_string(&line) {
        println!("{json}");
    }
}

/// Prints a `--stats` line when `every` has passed since `last`.
fn stats_due<P: FrontendPlatform>(
    args: &Args,
    front: &Frontend<P>,
    tap: Option<&TapPort>,
    start: Instant,
    last: &mut Instant,
) {
    if args.stats > 0 && last.elapsed() >= Duration::from_secs(args.stats) {
        *last = Instant::now();
        print_stats(StatsKind::Stats, front, tap, start);
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PollArg {
    /// Block on the event channel, spinning unarmed first: the peer sends no event for
    /// what arrives during the spin (on real Xen, whose port does not spin, it arms at once).
    Block,
    /// Block on the event channel with the rings armed at once, as Linux's drivers do: the
    /// peer sends an event for every burst while this end waits.
    BlockArmed,
    /// Busy-poll.
    Busy,
}

/// The verifiable content of packet `seq` of `len` bytes: the sequence number, then bytes
/// derived from it.
fn content(seq: u64, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| {
            (seq as usize)
                .wrapping_mul(31)
                .wrapping_add(i.wrapping_mul(7)) as u8
        })
        .collect();
    let s = seq.to_le_bytes();
    let n = len.min(8);
    v[..n].copy_from_slice(&s[..n]);
    v
}

struct Verifier {
    verify: bool,
    sizes: Vec<usize>,
    queues: AtomicU64,
    next: Mutex<Vec<u64>>,
    received: AtomicU64,
    errors: Mutex<Vec<String>>,
    disconnected: AtomicBool,
}

impl FrontendHandler for Verifier {
    fn rx_packet(&self, queue: u16, pkt: Packet) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if !self.verify {
            return;
        }
        let Ok(mut next) = self.next.lock() else {
            return;
        };
        let q = usize::from(queue);
        let Some(expected) = next.get_mut(q) else {
            return;
        };
        let seq = *expected;
        *expected += self.queues.load(Ordering::Relaxed);
        let len = self.sizes[(seq % self.sizes.len() as u64) as usize];
        if pkt.data.len() != len || pkt.data[..] != content(seq, len)[..] {
            if let Ok(mut e) = self.errors.lock() {
                if e.len() < 10 {
                    e.push(format!(
                        "queue {queue}: packet {seq} ({len} bytes) came back wrong or out of order ({} bytes)",
                        pkt.data.len()
                    ));
                }
            }
        }
    }
    // The library logs the disconnect and its reason.
    fn disconnected(&self, _reason: &str) {
        self.disconnected.store(true, Ordering::SeqCst);
    }
}

/// Runs; an error is printed once, with its causes (see
/// [`netstage_platform::cli::exit_code`]).
fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    netstage_platform::cli::exit_code("netfront-user", run)
}

/// A `--sizes` value: a frame of 14 (an Ethernet header) to 65535 bytes (netif's limit).
fn frame_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (14..=65535).contains(&n) => Ok(n),
        Ok(n) => Err(format!("{n} bytes is not a frame of 14 to 65535 bytes")),
        Err(e) => Err(e.to_string()),
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let cost = args.cost;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let cfg = FrontendConfig {
        design: args.design,
        forward: args.forward,
        queues: args.queues,
        want: args.want,
        poll: match args.poll {
            PollArg::Block => PollMode::Block,
            PollArg::BlockArmed => PollMode::BlockArmed,
            PollArg::Busy => PollMode::BusyPoll,
        },
        ..FrontendConfig::default()
    };
    let (Some(world_dir), Some(domid)) = (args.world.clone(), args.domid) else {
        let xs = match &args.xenstore {
            Some(p) => XsClient::connect(p),
            None => XsClient::connect_default(),
        }
        .context("no XenStore to talk to (is this a Xen guest?)")?;
        let domid = match args.domid {
            Some(d) => d,
            None => {
                let v = xs
                    .read(NO_TX, "domid")
                    .context("cannot read this domain's id from XenStore")?;
                String::from_utf8_lossy(&v)
                    .trim()
                    .parse()
                    .context("XenStore's domid is not a number")?
            }
        };
        let me = XenDomain::open(domid, xs.clone())?;
        return sessions(&args, &me, &xs, &cfg, &stop);
    };
    let world = SimWorld::open(&world_dir)?;
    let me = world
        .create_domain(
            domid,
            DomainConfig {
                cost,
                ..DomainConfig::default()
            },
        )
        .with_context(|| format!("cannot become domain {domid}"))?;
    let socket = args
        .xenstore
        .clone()
        .unwrap_or_else(|| world_dir.join("xenstore").join(format!("dom{domid}.sock")));
    let xs = XsClient::connect(&socket).with_context(|| {
        format!(
            "no XenStore for domain {domid} at {} (is netback-user serving --vif {domid}?)",
            socket.display(),
        )
    })?;
    sessions(&args, &me, &xs, &cfg, &stop)
}

/// Runs a session, and with --reconnect the next ones, until done or stopped.
fn sessions<P: FrontendPlatform>(
    args: &Args,
    me: &P,
    xs: &XsClient,
    cfg: &FrontendConfig,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    // Opened once: the interface (and its addresses) outlive a reconnect.
    let tap = match &args.tap {
        Some(name) => Some(Arc::new(TapPort::open(name, true).with_context(|| {
            format!(
                "--tap {name}: cannot open the TAP (needs root or CAP_NET_ADMIN, and /dev/net/tun)"
            )
        })?)),
        None => None,
    };
    loop {
        let r = match &tap {
            Some(port) => tap_session(args, me, xs, cfg, stop, port),
            None => session(args, me, xs, cfg, stop),
        };
        match r {
            Ok(()) => return Ok(()),
            Err(e) if args.reconnect && !stop.load(Ordering::SeqCst) => {
                log::warn!("{e:#}; waiting for the backend to reconnect");
                // The dead or closed backend's mappings of our pages are gone.
                me.forget_domain(0);
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// `--tap`: writes received packets to the TAP (the port counts what it cannot write).
struct TapWriter {
    port: Arc<TapPort>,
}

impl FrontendHandler for TapWriter {
    fn rx_packet(&self, _queue: u16, pkt: Packet) {
        self.port.write_packet(&pkt);
    }
}

/// What the pump tells the TAP port when the frontend does not take a frame.
fn refusal_of(e: &FrontendError) -> Refusal {
    match e {
        FrontendError::SendTimeout { .. } => Refusal::Full,
        FrontendError::Broken(_) => Refusal::Closed,
        _ => Refusal::Refused,
    }
}

/// `--tap NAME`: an interface name Linux accepts.
fn parse_tap_name(name: &str) -> Result<String, String> {
    match netstage_tap::interface_name_error(name) {
        None => Ok(name.to_string()),
        Some(why) => Err(why),
    }
}

fn session<P: FrontendPlatform>(
    args: &Args,
    me: &P,
    xs: &XsClient,
    cfg: &FrontendConfig,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let verifier = Arc::new(Verifier {
        verify: args.expect_echo,
        sizes: args.sizes.clone(),
        queues: AtomicU64::new(1),
        next: Mutex::new(Vec::new()),
        received: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
        disconnected: AtomicBool::new(false),
    });
    let front = connect_verified(args, me, xs, cfg, &verifier)?;
    // Without verification, the same bytes per size serve every packet: the generator must
    // not be what a measurement measures.
    let prebuilt: Vec<bytes::Bytes> = args
        .sizes
        .iter()
        .map(|&l| bytes::Bytes::from(content(0, l)))
        .collect();
    let mut clock = StatsClock::start();
    let (handed, bytes) = send_packets(args, &front, &prebuilt, stop, &mut clock)?;
    await_echoes(args, &front, &verifier, &mut clock)?;
    await_on_ring(&front, handed)?;
    report_sent(&front, handed, bytes, clock.start);
    if let Ok(e) = verifier.errors.lock() {
        if !e.is_empty() {
            bail!("verification failed:\n  {}", e.join("\n  "));
        }
    }
    linger(args, &front, stop, &mut clock)?;
    if let Some(b) = front.broken() {
        bail!("device broke: {b}");
    }
    let m = front.close_counted().context("closing")?;
    println!(
        "netfront-user: closed; received {} packets in all, dropped {}, left unread on the RX ring {}; {} sent never answered",
        m.rx_packets, m.rx_dropped, m.rx_unread, m.tx_unanswered
    );
    Ok(())
}

/// Connects the device with `verifier` as its receive handler, which then expects each
/// queue's packets in order.
fn connect_verified<P: FrontendPlatform>(
    args: &Args,
    me: &P,
    xs: &XsClient,
    cfg: &FrontendConfig,
    verifier: &Arc<Verifier>,
) -> anyhow::Result<Frontend<P>> {
    let front = Frontend::connect(
        me.clone(),
        xs.clone(),
        args.devid,
        cfg.clone(),
        Arc::clone(verifier) as Arc<dyn FrontendHandler>,
    )
    .context("cannot connect")?;
    let nq = u64::from(front.queues());
    // Packet `seq` goes to queue `seq % nq`; the verifier expects q, q + nq, ... on queue q.
    verifier.queues.store(nq, Ordering::SeqCst);
    if let Ok(mut n) = verifier.next.lock() {
        *n = (0..nq).collect();
    }
    println!(
        "netfront-user: domain {} connected vif {} with {} queue(s), design {}",
        front.domid(),
        args.devid,
        nq,
        front.design()
    );
    Ok(front)
}

/// Sends `--count` packets of `--sizes` (`prebuilt`'s bytes, or numbered contents to
/// verify with `--expect-echo`), round the queues, paced by `--rate` from the clock's
/// start; returns how many packets and bytes were handed over.
fn send_packets<P: FrontendPlatform>(
    args: &Args,
    front: &Frontend<P>,
    prebuilt: &[bytes::Bytes],
    stop: &AtomicBool,
    clock: &mut StatsClock,
) -> anyhow::Result<(u64, u64)> {
    let stride = u64::from(front.queues());
    let (mut handed, mut bytes) = (0u64, 0u64);
    for seq in 0..args.count {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let len = args.sizes[(seq % args.sizes.len() as u64) as usize];
        let gso = (args.gso && len > 1514).then_some(Gso {
            gso_type: GsoType::TcpV4,
            mss: 1448,
        });
        let data = if args.expect_echo {
            content(seq, len).into()
        } else {
            prebuilt[(seq % prebuilt.len() as u64) as usize].clone()
        };
        front
            .send(
                (seq % stride) as u16,
                Packet {
                    data,
                    gso,
                    csum_blank: false,
                },
            )
            .with_context(|| format!("sending packet {seq}"))?;
        handed += 1;
        bytes += len as u64;
        clock.stats_due(args, front);
        if args.rate > 0 {
            let due = clock.start + Duration::from_secs_f64((seq + 1) as f64 / args.rate as f64);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
    }
    Ok((handed, bytes))
}

/// With `--expect-echo`, waits (up to 60 s) until every packet came back.
fn await_echoes<P: FrontendPlatform>(
    args: &Args,
    front: &Frontend<P>,
    verifier: &Verifier,
    clock: &mut StatsClock,
) -> anyhow::Result<()> {
    if args.expect_echo {
        let t = Instant::now();
        while verifier.received.load(Ordering::Relaxed) < args.count {
            if let Some(b) = front.broken() {
                bail!("device broke while waiting for echoes: {b}");
            }
            if t.elapsed() > Duration::from_secs(60) {
                let m = front.metrics();
                bail!(
                    "only {} of {} packets came back within 60 s (sent {}, unsent {}, tx \
                     errors {}, received {}, dropped {}; what the backend dropped on the way \
                     back is in its counters, e.g. rx_backlog_drops)",
                    verifier.received.load(Ordering::Relaxed),
                    args.count,
                    m.tx_packets,
                    m.tx_unsent,
                    m.tx_errors,
                    m.rx_packets,
                    m.rx_dropped
                );
            }
            clock.stats_due(args, front);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

/// Waits (up to 10 s) until every packet handed over is on the ring, or counted unsent.
fn await_on_ring<P: FrontendPlatform>(front: &Frontend<P>, handed: u64) -> anyhow::Result<()> {
    let t = Instant::now();
    while {
        let m = front.metrics();
        m.tx_packets + m.tx_unsent < handed && front.broken().is_none()
    } {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("packets handed over did not reach the TX ring within 10 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Prints what was sent and received, and the final statistics.
fn report_sent<P: FrontendPlatform>(front: &Frontend<P>, handed: u64, bytes: u64, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    let m = front.metrics();
    println!(
        "netfront-user: handed over {handed} packets ({bytes} bytes); sent {} in {:.3} s: {:.0} pps; unsent {}; received {}; tx errors {}",
        m.tx_packets,
        secs,
        m.tx_packets as f64 / secs.max(1e-9),
        m.tx_unsent,
        m.rx_packets,
        m.tx_errors
    );
    print_stats(StatsKind::Final, front, None, start);
}

/// `--linger`: keeps receiving for that long, then prints what came in meanwhile.
fn linger<P: FrontendPlatform>(
    args: &Args,
    front: &Frontend<P>,
    stop: &AtomicBool,
    clock: &mut StatsClock,
) -> anyhow::Result<()> {
    let linger_start = Instant::now();
    let rx_before = front.metrics().rx_packets;
    let until = linger_start + Duration::from_secs(args.linger);
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        if let Some(b) = front.broken() {
            bail!("device broke: {b}");
        }
        clock.stats_due(args, front);
        std::thread::sleep(Duration::from_millis(20));
    }
    if args.linger > 0 {
        let n = front.metrics().rx_packets - rx_before;
        let secs = linger_start.elapsed().as_secs_f64();
        println!(
            "netfront-user: received {n} packets in {secs:.3} s while lingering: {:.0} pps",
            n as f64 / secs.max(1e-9)
        );
    }
    Ok(())
}

/// When a session started, and when it last printed statistics.
struct StatsClock {
    start: Instant,
    last_stats: Instant,
}

impl StatsClock {
    /// A clock started now.
    fn start() -> StatsClock {
        let start = Instant::now();
        StatsClock {
            start,
            last_stats: start,
        }
    }

    /// Prints a `--stats` line for `front` when one is due.
    fn stats_due<P: FrontendPlatform>(&mut self, args: &Args, front: &Frontend<P>) {
        stats_due(args, front, None, self.start, &mut self.last_stats);
    }
}

/// `--tap NAME`: connects, then sends the TAP's frames and writes received packets to it
/// until a signal (or until the device breaks); closes and prints the counters.
fn tap_session<P: FrontendPlatform>(
    args: &Args,
    me: &P,
    xs: &XsClient,
    cfg: &FrontendConfig,
    stop: &AtomicBool,
    port: &Arc<TapPort>,
) -> anyhow::Result<()> {
    let handler = Arc::new(TapWriter {
        port: Arc::clone(port),
    });
    let front = Frontend::connect(me.clone(), xs.clone(), args.devid, cfg.clone(), handler)
        .context("cannot connect")?;
    println!(
        "netfront-user: domain {} connected vif {} with {} queue(s), design {}, on TAP {}",
        front.domid(),
        args.devid,
        front.queues(),
        front.design(),
        port.tap().name()
    );
    let start = Instant::now();
    let broken = pump_until_stopped(args, &front, port, stop, start)?;
    if let Some(why) = broken {
        print_tap_counters(port);
        bail!("device broke: {why}");
    }
    let mut last = front.stats(StatsKind::Final, start);
    let m = front.close_counted().context("closing")?;
    println!(
        "netfront-user: closed; sent {} packets ({} unsent, {} never answered), received {}, dropped {}, left unread on the RX ring {}",
        m.tx_packets, m.tx_unsent, m.tx_unanswered, m.rx_packets, m.rx_dropped, m.rx_unread
    );
    print_tap_counters(port);
    // The counters as they stood once the backend had closed.
    last.counters = m;
    let line = StatsLine {
        stats: last,
        tap: Some(port.counters()),
    };
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

/// Runs the TAP's pump on a thread of its own while this one watches for a signal, a broken
/// device and `--stats`; returns why the device broke, if it did.
fn pump_until_stopped<P: FrontendPlatform>(
    args: &Args,
    front: &Frontend<P>,
    port: &TapPort,
    stop: &AtomicBool,
    start: Instant,
) -> anyhow::Result<Option<String>> {
    let pump_stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let pump = scope.spawn(|| {
            port.pump(&pump_stop, |p| {
                front.send(0, p).map_err(|e| {
                    log::debug!("a frame from the TAP was not sent: {e}");
                    refusal_of(&e)
                })
            })
        });
        let mut last = start;
        let mut broken = None;
        while !stop.load(Ordering::SeqCst) && !pump.is_finished() {
            if let Some(b) = front.broken() {
                broken = Some(b);
                break;
            }
            stats_due(args, front, Some(port), start, &mut last);
            std::thread::sleep(Duration::from_millis(20));
        }
        pump_stop.store(true, Ordering::SeqCst);
        let end = pump
            .join()
            .map_err(|_| anyhow::anyhow!("the TAP reader panicked"))?
            .with_context(|| format!("reading TAP {}", port.tap().name()))?;
        if end == PumpEnd::PeerClosed && broken.is_none() {
            broken = Some(
                front
                    .broken()
                    .unwrap_or_else(|| "the device stopped".into()),
            );
        }
        Ok(broken)
    })
}

/// Prints the TAP adapter's counters in a line for people.
fn print_tap_counters(port: &TapPort) {
    let c = port.counters();
    let drops: Vec<String> = c
        .nonzero_drops()
        .into_iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    println!(
        "netfront-user: TAP {}: read {} frames, sent {}; written {} of {} received; dropped: {}",
        port.tap().name(),
        c.frames_read,
        c.frames_passed,
        c.frames_written,
        c.packets_to_write,
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(", ")
        }
    );
}
