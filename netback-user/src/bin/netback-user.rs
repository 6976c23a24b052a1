//! `netback-user`: serves vifs of guest domains on the emulated platform, or on real Xen.
//!
//! Acts as dom0: creates (or joins) a world, optionally runs an embedded xenstored, creates
//! each vif's XenStore directories as the toolstack does, and serves them until SIGINT or
//! SIGTERM. TX packets from a guest are counted, and echoed back to it with `--sink echo`;
//! with `--sink tap:NAME` the vif is put on Linux TAP interface NAME (created if absent,
//! with checksum and segmentation offloads): what the guest sends goes out of the TAP, what
//! the TAP gives goes to the guest.
//! With `--xen` it uses the host's Xen devices and xenstored instead, and waits for the
//! toolstack's vif directories (never creating them: libxl replaces what it finds).
//!
//! Logs to stderr through `env_logger` (`RUST_LOG`, default `info`: connections,
//! disconnects, the guests' faults); with `--stats N` prints the counters as a JSON line on
//! stdout every N seconds, and always once at exit (docs/operating.md).

#![forbid(unsafe_code)]
// The argument docs are the `--help` text, written for a terminal: `<value>` there is a
// placeholder, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use netstage_fallback::{Design, Packet};
use netstage_netback_user::{
    toolstack, Backend, BackendConfig, Features, HandshakeFailure, PollMode, RxInjector, TxPath,
    VifHandler,
};
use netstage_netback_user::{BackendStats, StatsKind};
use netstage_platform::sim::xenstored::{Xenstored, XenstoredConfig};
use netstage_platform::sim::{CostMode, DomainConfig, SimWorld};
use netstage_platform::xen::XenDomain;
use netstage_platform::xenstore::XsClient;
use netstage_tap::{Refusal, TapCountersSnapshot, TapPort};

/// Serve netif vifs to guest domains (user-space netback) on the emulated platform, or on
/// real Xen with --xen.
#[derive(Debug, Parser)]
#[command(version, allow_negative_numbers = true)]
struct Args {
    /// World directory of the emulated platform (created if missing).
    #[arg(long, value_name = "DIR", required_unless_present = "xen")]
    world: Option<PathBuf>,
    /// Serve on real Xen, as dom0: Linux's /dev/xen/{gntalloc,gntdev,evtchn} and the system
    /// xenstored (--xenstore, else XENSTORED_PATH, else /run/xenstored/socket). Each vif is
    /// served in the directories the toolstack creates (`xl create`), which it waits for and
    /// answers again for every new guest: start it before or after the toolstack; --world
    /// and --cost do not apply.
    #[arg(long, conflicts_with = "world")]
    xen: bool,
    /// Guest vif to serve, `DOMID` or `DOMID:DEVID` (repeatable).
    #[arg(long = "vif", value_name = "DOMID[:DEVID]", required = true, value_parser = parse_vif)]
    vifs: Vec<(u16, u32)>,
    /// XenStore daemon's dom0 socket. Without it, an embedded xenstored serves
    /// `<world>/xenstore/socket` (and `dom<ID>.sock` for guests) while this process runs.
    #[arg(long, value_name = "PATH")]
    xenstore: Option<PathBuf>,
    /// Design: grant-copy, grant-map, linux (the TX path of packets and of the parts the
    /// staging designs leave to grants: linux copies the first 128 bytes and maps the rest,
    /// as Linux netback), slots:<data-len>, slots-rfc:<data-len> or ring:<order>:<policy>
    /// (a trailing :wait is the frontend's TX behaviour and means nothing here). The
    /// staging designs are offered to every frontend anyway (see --max-data-len,
    /// --max-ring-order); with a staging design here, the remainders go by grant copy.
    #[arg(long, default_value = "grant-copy")]
    design: Design,
    /// Largest staging-slot data-len offered, 64 to 65536 (0: do not offer slots).
    #[arg(long, default_value_t = 65536, value_parser = data_len_offer)]
    max_data_len: u32,
    /// Largest data-ring order offered, 0 to 9 (-1: do not offer data rings).
    #[arg(long, default_value_t = 9, allow_hyphen_values = true,
          value_parser = clap::value_parser!(i32).range(-1..=9))]
    max_ring_order: i32,
    /// Bytes that may wait per queue for the guest to post RX buffers before packets are
    /// dropped (and counted). The echo sink needs room for what the guest has in flight;
    /// the library's default is Linux netback's 512 KiB.
    #[arg(long, default_value_t = 64 << 20)]
    rx_backlog_bytes: usize,
    /// Seconds packets may wait for a guest that posts no RX buffers before they are
    /// dropped (counted in rx_drain_drops; Linux netback's rx_drain_timeout_msecs).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    rx_drain_timeout: u64,
    /// Seconds a guest may take no RX packet, with packets waiting, before its queue is
    /// declared stalled: packets for it are dropped at once (rx_stall_drops) until it
    /// posts buffers again (Linux netback's rx_stall_timeout_msecs, carrier off).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    rx_stall_timeout: u64,
    /// Reset the vif of a stalled guest (disconnect it with the stall as the reason) instead
    /// of dropping its packets until it comes back.
    #[arg(long)]
    rx_stall_reset: bool,
    /// Queues a frontend may use (`multi-queue-max-queues`), at least 1.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    max_queues: u16,
    /// Features offered: comma-separated of sg, gso-tcpv4, gso-tcpv6, ipv6-csum; or `none`.
    #[arg(long, default_value = "sg,gso-tcpv4,gso-tcpv6,ipv6-csum")]
    offer: Features,
    /// How queues wait for work.
    #[arg(long, value_enum, default_value_t = PollArg::Block)]
    poll: PollArg,
    /// Grant-operation cost: `kernel`, `none` or `model:<call>,<copy>,<map>,<unmap>` (ns).
    #[arg(long, default_value = "kernel")]
    cost: CostMode,
    /// What to do with packets the guest sends: `count`, `echo` (back to the guest on the
    /// same queue) or `tap:NAME` (out of Linux TAP interface NAME, created if absent, whose
    /// frames go to the guest; one --vif only; needs CAP_NET_ADMIN).
    #[arg(long, value_name = "count|echo|tap:NAME", default_value = "echo")]
    sink: SinkArg,
    /// Send the guest a stream of packets of SIZE bytes as fast as it takes them, on every
    /// queue, while it is connected (an RX load generator).
    #[arg(long, value_name = "SIZE")]
    generate: Option<usize>,
    /// Spend this many microseconds on every packet from the guest (a deliberately slow
    /// backend, for tests of full data rings).
    #[arg(long, default_value_t = 0)]
    slow_us: u64,
    /// Accept a guest whose domain files are plain files rather than sealed memfds, as
    /// participants written against the earlier ABI made them (docs/sim-abi.md). Such a
    /// guest can truncate them under this backend's mappings and kill it with SIGBUS;
    /// refused by default.
    #[arg(long)]
    allow_plain_guests: bool,
    /// Refuse plain files (the default now; kept so that older command lines still work).
    #[arg(long, hide = true, conflicts_with = "allow_plain_guests")]
    sealed_guests_only: bool,
    /// Print the counters (per queue, per vif and in total) as a JSON line on stdout every
    /// SECONDS seconds (0: only the final line at exit).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    stats: u64,
    /// On an error, print its backtrace too (where one was captured; as NETSTAGE_BACKTRACE=1).
    #[arg(long)]
    backtrace: bool,
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

/// What the backend does with the guest's packets (`--sink`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum SinkArg {
    /// Count packets.
    Count,
    /// Send every packet back to the guest on the same queue.
    Echo,
    /// Write every packet to the TAP interface of this name; its frames go to the guest.
    Tap(String),
}

impl std::str::FromStr for SinkArg {
    type Err = String;

    fn from_str(s: &str) -> Result<SinkArg, String> {
        match s {
            "count" => Ok(SinkArg::Count),
            "echo" => Ok(SinkArg::Echo),
            _ => match s.strip_prefix("tap:") {
                Some(name) => match netstage_tap::interface_name_error(name) {
                    None => Ok(SinkArg::Tap(name.to_string())),
                    Some(why) => Err(format!("{why} (--sink tap:NAME)")),
                },
                None => Err("expected count, echo or tap:NAME".into()),
            },
        }
    }
}

struct Sink {
    slow_us: u64,
    echo: bool,
    /// `--sink tap:NAME`: where the guest's packets go.
    tap: Option<Arc<TapPort>>,
    generate: Option<usize>,
    rx: Mutex<Vec<RxInjector>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl VifHandler for Sink {
    fn tx_packet(&self, queue: u16, pkt: Packet) {
        if self.slow_us > 0 {
            std::thread::sleep(Duration::from_micros(self.slow_us));
        }
        if let Some(port) = &self.tap {
            port.write_packet(&pkt);
        } else if self.echo {
            if let Ok(rx) = self.rx.lock() {
                if let Some(i) = rx.get(usize::from(queue)) {
                    i.send(pkt);
                }
            }
        }
    }
    fn connected(&self, rx: Vec<RxInjector>) {
        if let Some(size) = self.generate {
            // One generator thread per queue, until the next (dis)connect.
            let gen = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
            for inj in rx.clone() {
                let current = Arc::clone(&self.generation);
                std::thread::spawn(move || {
                    let data = bytes::Bytes::from(vec![0x5au8; size]);
                    while current.load(Ordering::SeqCst) == gen {
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
    // The library logs the disconnect and its reason.
    fn disconnected(&self, _reason: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
    // The library logs the failure (rate-limited: the guest may be hostile).
    fn handshake_failed(&self, _why: &HandshakeFailure) {}
}

/// One `--stats` line: the library's stats object (schema, counters of each vif and its
/// queues, their sum), and the TAP adapter's counters with `--sink tap:NAME`.
#[derive(serde::Serialize)]
struct StatsLine {
    #[serde(flatten)]
    stats: BackendStats,
    /// With `--sink tap:NAME`: the TAP adapter's counters (frames passed on, and dropped
    /// per reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    tap: Option<TapCountersSnapshot>,
}

/// Prints the counters as one JSON line on stdout.
fn print_stats<P: netstage_netback_user::BackendPlatform>(
    kind: StatsKind,
    backend: &Backend<P>,
    tap: Option<&TapPort>,
    start: Instant,
) {
    let line = StatsLine {
        stats: backend.stats(kind, start),
        tap: tap.map(TapPort::counters),
    };
    if let Ok(json) = serde_json::to_string(&line) {
        println!("{json}");
    }
}

/// `--max-data-len`: 0 (no slots offered) or a slot data-len of 64 to 65536.
fn data_len_offer(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    match n {
        0 | 64..=65536 => Ok(n),
        _ => Err(format!("{n} is neither 0 nor a data-len of 64 to 65536")),
    }
}

/// `--vif DOMID[:DEVID]`: a guest's domain (not 0, this backend's) and its device id.
fn parse_vif(s: &str) -> Result<(u16, u32), String> {
    let (d, v) = s.split_once(':').unwrap_or((s, "0"));
    let dom: u16 = d.parse().map_err(|e| format!("domain id {d:?}: {e}"))?;
    let dev: u32 = v.parse().map_err(|e| format!("device id {v:?}: {e}"))?;
    if dom == 0 {
        return Err("domain 0 is this backend; a guest has a non-zero id".into());
    }
    Ok((dom, dev))
}

/// Runs; an error is printed once, with its causes (see
/// [`netstage_platform::cli::exit_code`]).
fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    netstage_platform::cli::exit_code("netback-user", run)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let cost = args.cost;
    let design = args.design;
    let vifs = args.vifs.clone();
    // Before anything is created: a TAP that cannot be had is the first error.
    let tap = open_tap(&args.sink, vifs.len())?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let cfg = BackendConfig {
        max_queues: args.max_queues,
        offer: args.offer,
        tx_path: TxPath::for_design(design),
        slots_max_data_len: (args.max_data_len > 0).then_some(args.max_data_len),
        data_ring_max_order: u32::try_from(args.max_ring_order).ok(),
        poll: match args.poll {
            PollArg::Block => PollMode::Block,
            PollArg::BlockArmed => PollMode::BlockArmed,
            PollArg::Busy => PollMode::BusyPoll,
        },
        rx_backlog: 1 << 16,
        rx_backlog_bytes: args.rx_backlog_bytes,
        rx_drain_timeout: Duration::from_secs(args.rx_drain_timeout),
        rx_stall_timeout: Duration::from_secs(args.rx_stall_timeout),
        rx_stall_reset: args.rx_stall_reset,
        ..BackendConfig::default()
    };
    let Some(world_dir) = args.world.clone() else {
        let xs = match &args.xenstore {
            Some(p) => XsClient::connect(p),
            None => XsClient::connect_default(),
        }
        .context("no system xenstored to talk to (is this dom0 of a Xen host?)")?;
        let dom0 = XenDomain::open(0, xs.clone())?;
        let backend = Arc::new(Backend::new(dom0, xs.clone(), cfg));
        return serve(&args, backend, &xs, None, vifs, tap, &stop);
    };
    let world = SimWorld::create(&world_dir)?;
    let (_xsd, socket) = match &args.xenstore {
        Some(p) => (None, p.clone()),
        None => {
            let d = world_dir.join("xenstore");
            let x = Xenstored::start(XenstoredConfig::in_dir(&d)).with_context(|| {
                format!("cannot start the embedded xenstored in {}", d.display())
            })?;
            let s = x.socket().to_path_buf();
            (Some(x), s)
        }
    };
    let xs = XsClient::connect(&socket).with_context(|| {
        format!(
            "no XenStore at {} (start netstage-xenstored, or omit --xenstore for an embedded one)",
            socket.display()
        )
    })?;
    let dom0 = world
        .create_domain(
            0,
            DomainConfig {
                cost,
                sealed_peers_only: args.sealed_guests_only || !args.allow_plain_guests,
                ..DomainConfig::default()
            },
        )
        .context("cannot create domain 0 in the world")?;
    let backend = Arc::new(Backend::new(dom0, xs.clone(), cfg));
    serve(&args, backend, &xs, Some(&socket), vifs, tap, &stop)
}

/// Serves every vif until a signal, printing counters as asked; with a TAP (`--sink
/// tap:NAME`, one vif), its frames go to the guest. With `socket` (the emulated platform's
/// xenstored), each vif's directories are created first, as the toolstack would.
fn serve<P: netstage_netback_user::BackendPlatform>(
    args: &Args,
    backend: Arc<Backend<P>>,
    xs: &XsClient,
    socket: Option<&Path>,
    vifs: Vec<(u16, u32)>,
    tap: Option<Arc<TapPort>>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut threads = Vec::new();
    for (fe, dev) in vifs {
        match socket {
            Some(socket) => {
                xs.introduce(fe)
                    .with_context(|| format!("cannot introduce domain {fe}"))?;
                toolstack::create_vif(xs, 0, fe, dev)
                    .with_context(|| format!("cannot create vif {fe}:{dev} in XenStore"))?;
                log::info!(
                    "serving vif {fe}:{dev}; guest XenStore socket {}",
                    guest_socket(socket, fe).display()
                );
            }
            None => log::info!(
                "serving vif {fe}:{dev} (Xen) as soon as the toolstack creates its directory"
            ),
        }
        let (b, s) = (Arc::clone(&backend), Arc::clone(stop));
        let sink = Arc::new(Sink {
            slow_us: args.slow_us,
            echo: matches!(args.sink, SinkArg::Echo),
            tap: tap.clone(),
            generate: args.generate,
            rx: Mutex::new(Vec::new()),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        });
        if let Some(port) = &tap {
            threads.push(spawn_tap_reader(Arc::clone(port), Arc::clone(&sink), stop));
        }
        threads.push(std::thread::spawn(move || {
            if let Err(e) = b.serve(fe, dev, sink, &s) {
                log::error!("vif {fe}:{dev}: {e}");
                s.store(true, Ordering::SeqCst);
            }
        }));
    }
    let start = Instant::now();
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        if args.stats > 0 && last.elapsed() >= Duration::from_secs(args.stats) {
            last = Instant::now();
            print_stats(StatsKind::Stats, &backend, tap.as_deref(), start);
        }
    }
    for t in threads {
        let _ = t.join();
    }
    log::info!("stopped after {:.1} s", start.elapsed().as_secs_f64());
    print_stats(StatsKind::Final, &backend, tap.as_deref(), start);
    Ok(())
}

/// With `--sink tap:NAME`, the TAP, opened (created if absent) with offloads; it serves
/// one vif.
fn open_tap(sink: &SinkArg, vifs: usize) -> anyhow::Result<Option<Arc<TapPort>>> {
    let SinkArg::Tap(name) = sink else {
        return Ok(None);
    };
    if vifs != 1 {
        bail!("--sink tap:{name} serves one vif, not {vifs}: start a backend per vif");
    }
    let port = TapPort::open(name, true).with_context(|| {
        format!("--sink tap:{name}: cannot open the TAP (needs root or CAP_NET_ADMIN, and /dev/net/tun)")
    })?;
    log::info!(
        "vif traffic goes through TAP interface {name} (bring it up with `ip link set {name} up`)"
    );
    Ok(Some(Arc::new(port)))
}

/// The thread that hands the TAP's frames to the guest (queue 0) until `stop`: each waits
/// for room in the queue's backlog, so that a full guest slows the TAP down rather than
/// losing frames here; frames that find no guest connected are counted and dropped.
fn spawn_tap_reader(
    port: Arc<TapPort>,
    sink: Arc<Sink>,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let stop = Arc::clone(stop);
    std::thread::spawn(move || {
        let pumped = port.pump(&stop, |p| {
            let inj = sink.rx.lock().ok().and_then(|r| r.first().cloned());
            match inj {
                Some(i) if i.send_blocking(p) => Ok(()),
                Some(_) => Err(Refusal::Refused),
                None => Err(Refusal::NoPeer),
            }
        });
        if let Err(e) = pumped {
            log::error!("TAP {}: {e}", port.tap().name());
            stop.store(true, Ordering::SeqCst);
        }
    })
}

fn guest_socket(dom0_socket: &Path, fe: u16) -> PathBuf {
    dom0_socket
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("dom{fe}.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_values_parse_and_bad_tap_names_say_why() {
        assert_eq!("count".parse(), Ok(SinkArg::Count));
        assert_eq!("echo".parse(), Ok(SinkArg::Echo));
        assert_eq!("tap:vif1.0".parse(), Ok(SinkArg::Tap("vif1.0".into())));
        let empty = "tap:".parse::<SinkArg>().unwrap_err();
        assert!(
            empty.contains("empty") && empty.contains("--sink tap:NAME"),
            "{empty}"
        );
        let long = "tap:sixteen_bytes_xx".parse::<SinkArg>().unwrap_err();
        assert!(long.contains("at most 15"), "{long}");
        assert!("tap".parse::<SinkArg>().is_err());
    }

    #[test]
    fn a_tap_serves_one_vif() {
        let e = open_tap(&SinkArg::Tap("t0".into()), 2).unwrap_err();
        assert!(e.to_string().contains("one vif"), "{e}");
        assert!(open_tap(&SinkArg::Echo, 3).unwrap().is_none());
    }
}
