//! TCP bulk transfers with real Linux TCP (`experiments tcp`): iperf3 between two network
//! namespaces whose only link is a netfront/netback pair. The frontend process sits in the
//! guest's namespace on a TAP device, the backend process in the host's namespace on
//! another; each end moves what its TAP gives it through the design under test and writes
//! what it receives to its TAP. With offloads (the default) the kernel hands over TCP
//! segments of up to 64 KiB with blank checksums, which cross as netif GSO packets — what a
//! Linux guest's netfront does.
//!
//! The ends use the libraries only; the TAP adapter ([`crate::tap`]) is the source and sink.
//! Needs root (namespaces, TAP), `ip` (iproute2) and `iperf3`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use netstage_fallback::Packet;
use netstage_netback_user::{RxInjector, VifHandler};
use netstage_netfront_user::FrontendHandler;
use serde::{Deserialize, Serialize};

use crate::child::{self, StderrTail};
use crate::roles::{self, EndArgs};
use crate::tap::{Refusal, TapCountersSnapshot, TapPort};
use crate::{spread, Dir, Machine, Spread};

/// The guest's address (frontend namespace) and the host's (backend namespace).
const GUEST_IP: &str = "10.211.0.1";
const HOST_IP: &str = "10.211.0.2";
/// Segments the kernel builds stay below netif's 65535-byte frame with headers added.
const GSO_MAX: &str = "65000";
/// iperf3's port.
const IPERF3_PORT: u16 = 5201;
/// sockperf's port (its default).
const SOCKPERF_PORT: u16 = 11111;

/// Parameters of the two TCP roles.
#[derive(Debug, Clone, clap::Args)]
pub struct TcpRoleArgs {
    /// The end's setup.
    #[command(flatten)]
    pub end: EndArgs,
    /// TAP interface to create.
    #[arg(long)]
    pub tap: String,
    /// Let the kernel hand over 64 KiB segments with blank checksums.
    #[arg(long)]
    pub offload: bool,
}

/// What a TCP end reports when stopped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TcpEndReport {
    /// CPU seconds of the process (all threads), whole life.
    pub cpu_seconds: f64,
    /// The end's counters.
    pub metrics: serde_json::Value,
    /// What the end's TAP adapter dropped.
    #[serde(flatten)]
    pub drops: TapDrops,
}

/// What a TAP adapter dropped, or both ends' adapters together: during the measured run
/// (up to its end's mark) and after it, while the ends stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TapDrops {
    /// Frames dropped during the run (every drop, if the run's end was not marked), all
    /// reasons: frames a TAP gave that netif cannot carry or the peer did not take, and
    /// received packets a TAP refused.
    pub tap_drops: u64,
    /// Each reason that happened, with its count (`read_drop_no_peer: 3`; an end's name
    /// before it when both ends are counted together).
    #[serde(default)]
    pub tap_drop_reasons: Vec<String>,
    /// Frames dropped after the run's end was marked (when the workload ended), while the
    /// ends stopped, any reason (typically frames the kernels still sent, finding the
    /// peer gone): not part of the measured run.
    #[serde(default)]
    pub tap_drops_after_run: u64,
    /// Their reasons, as `tap_drop_reasons`.
    #[serde(default)]
    pub tap_drop_reasons_after_run: Vec<String>,
    /// Whether the end (both ends) took its counters at the run's end, so that the drops
    /// are split as above (false for veth, and for runs recorded before the split).
    #[serde(default)]
    pub run_end_marked: bool,
}

impl TapDrops {
    /// Both ends' drops together, each reason named by its end.
    fn of_ends(front: TapDrops, back: TapDrops) -> TapDrops {
        TapDrops {
            tap_drops: front.tap_drops + back.tap_drops,
            tap_drop_reasons: by_end(front.tap_drop_reasons, back.tap_drop_reasons),
            tap_drops_after_run: front.tap_drops_after_run + back.tap_drops_after_run,
            tap_drop_reasons_after_run: by_end(
                front.tap_drop_reasons_after_run,
                back.tap_drop_reasons_after_run,
            ),
            run_end_marked: front.run_end_marked && back.run_end_marked,
        }
    }
}

/// The file a TCP end creates once it has taken its TAP's counters at the run's end.
fn run_end_ack(world: &Path, tap: &str) -> PathBuf {
    world.join(format!("tcp-run-end-{tap}"))
}

/// An end's TAP counters at the end of the measured run: taken when the orchestrator
/// sends SIGUSR1 ([`mark_run_end`]), by a thread that waits for it (blocked, not polling)
/// and then creates [`run_end_ack`].
struct RunEnd {
    at: Arc<Mutex<Option<TapCountersSnapshot>>>,
}

impl RunEnd {
    /// Installs this process's SIGUSR1 handler and starts the thread that waits for it.
    fn watch(port: Arc<TapPort>, ack: PathBuf) -> anyhow::Result<Self> {
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1])?;
        let at = Arc::new(Mutex::new(None));
        let taken = Arc::clone(&at);
        std::thread::spawn(move || {
            if signals.forever().next().is_none() {
                return;
            }
            if let Ok(mut t) = taken.lock() {
                *t = Some(port.counters());
            }
            if let Err(e) = std::fs::write(&ack, b"") {
                log::warn!("cannot create {}: {e}", ack.display());
            }
        });
        Ok(RunEnd { at })
    }

    /// The report's drop fields from `port`'s counters now: those up to the mark (all of
    /// them if the run's end was never marked), and those after it.
    fn report(&self, port: &TapPort, cpu_seconds: f64, metrics: serde_json::Value) -> TcpEndReport {
        let now = port.counters();
        let marked = self.at.lock().ok().and_then(|t| *t);
        let at = marked.unwrap_or(now);
        let (tap_drops, tap_drop_reasons) = drops_between(&TapCountersSnapshot::default(), &at);
        let (tap_drops_after_run, tap_drop_reasons_after_run) = drops_between(&at, &now);
        TcpEndReport {
            cpu_seconds,
            metrics,
            drops: TapDrops {
                tap_drops,
                tap_drop_reasons,
                tap_drops_after_run,
                tap_drop_reasons_after_run,
                run_end_marked: marked.is_some(),
            },
        }
    }
}

/// The drops counted after `before` up to `after`: the total, and each reason that
/// happened with its count.
fn drops_between(before: &TapCountersSnapshot, after: &TapCountersSnapshot) -> (u64, Vec<String>) {
    let earlier = before.nonzero_drops();
    let mut total = 0;
    let mut reasons = Vec::new();
    for (name, n) in after.nonzero_drops() {
        let was = earlier
            .iter()
            .find(|(m, _)| *m == name)
            .map_or(0, |(_, k)| *k);
        let d = n.saturating_sub(was);
        if d > 0 {
            total += d;
            reasons.push(format!("{name}: {d}"));
        }
    }
    (total, reasons)
}

/// Writes received packets to the TAP (counted by the port).
struct ToTap {
    port: Arc<TapPort>,
}

impl FrontendHandler for ToTap {
    fn rx_packet(&self, _queue: u16, p: Packet) {
        self.port.write_packet(&p);
    }
}

/// The backend's side: transmitted packets to the TAP, the TAP's frames to the guest.
struct Bridge {
    port: Arc<TapPort>,
    rx: Mutex<Vec<RxInjector>>,
    /// Created once a guest is connected (see [`guest_connected_marker`]).
    connected_marker: PathBuf,
}

/// The file a TCP backend creates once its guest is connected: until then the TAP's
/// frames have no peer and would be dropped, so the host's TAP is brought up only after.
fn guest_connected_marker(world: &Path) -> PathBuf {
    world.join("tcp-guest-connected")
}

impl VifHandler for Bridge {
    fn tx_packet(&self, _queue: u16, p: Packet) {
        self.port.write_packet(&p);
    }
    fn connected(&self, rx: Vec<RxInjector>) {
        if let Ok(mut r) = self.rx.lock() {
            *r = rx;
        }
        if let Err(e) = std::fs::write(&self.connected_marker, b"") {
            log::warn!("cannot create {}: {e}", self.connected_marker.display());
        }
    }
    fn disconnected(&self, _reason: &str) {
        if let Ok(mut r) = self.rx.lock() {
            r.clear();
        }
    }
}

/// The host end: a backend whose vif is bridged to TAP `--tap`, until SIGTERM.
pub fn tcp_backend(a: &TcpRoleArgs) -> anyhow::Result<()> {
    // Pinned before the TAP reader starts, so that it inherits the placement.
    crate::sys::pin_to_cores(&a.end.cores)?;
    let port = Arc::new(TapPort::open(&a.tap, a.offload)?);
    let bridge = Arc::new(Bridge {
        port: Arc::clone(&port),
        rx: Mutex::new(Vec::new()),
        connected_marker: guest_connected_marker(&a.end.world),
    });
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    let run_end = RunEnd::watch(Arc::clone(&port), run_end_ack(&a.end.world, &a.tap))?;
    let reader = {
        let (port, stop, bridge) = (Arc::clone(&port), Arc::clone(&stop), Arc::clone(&bridge));
        std::thread::spawn(move || {
            port.pump(&stop, |p| {
                let inj = bridge.rx.lock().ok().and_then(|r| r.first().cloned());
                match inj {
                    Some(i) if i.send_blocking(p) => Ok(()),
                    Some(_) => Err(Refusal::Refused),
                    None => Err(Refusal::NoPeer),
                }
            })
        })
    };
    let handler = Arc::clone(&bridge) as Arc<dyn VifHandler>;
    let report = roles::run_backend(&a.end, |b, stop| b.serve(roles::GUEST, 0, handler, stop))?;
    stop.store(true, Ordering::Relaxed);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the TAP reader panicked"))??;
    let out = run_end.report(&port, report.cpu_seconds, report.metrics);
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// The guest end: a frontend whose device is TAP `--tap`, until SIGTERM.
pub fn tcp_frontend(a: &TcpRoleArgs) -> anyhow::Result<()> {
    let port = Arc::new(TapPort::open(&a.tap, a.offload)?);
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    let run_end = RunEnd::watch(Arc::clone(&port), run_end_ack(&a.end.world, &a.tap))?;
    let handler = Arc::new(ToTap {
        port: Arc::clone(&port),
    });
    let front = roles::connect_frontend(&a.end, 1, handler)?;
    let mut failed = None;
    port.pump(&stop, |p| match front.send(0, p) {
        Ok(()) => Ok(()),
        Err(e) => {
            failed = Some(e);
            Err(Refusal::Closed)
        }
    })?;
    if let Some(e) = failed {
        bail!("the frontend stopped sending: {e}");
    }
    let metrics = front.close_counted()?;
    let out = run_end.report(
        &port,
        crate::sys::cpu_seconds(),
        serde_json::to_value(metrics)?,
    );
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// One iperf3 run through one design (or the kernel's veth pair, design `veth`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TcpSample {
    /// Round.
    pub round: u32,
    /// Design, or `veth` for the kernel-only reference.
    pub design: String,
    /// `tx`: the guest sends (iperf3 client in the frontend's namespace); `rx`: it receives.
    pub dir: Dir,
    /// TAP offloads on (64 KiB segments, blank checksums).
    pub offload: bool,
    /// Parallel TCP streams (`iperf3 -P`; 1 for request/response).
    #[serde(default = "one_stream")]
    pub streams: u32,
    /// Goodput the receiver saw, Gbit/s.
    pub gbps: f64,
    /// TCP retransmissions the sender counted.
    pub retransmits: u64,
    /// Length of the measured part, seconds.
    pub seconds: f64,
    /// iperf3's CPU use of the guest side (client), percent of one core.
    pub guest_cpu_pct: f64,
    /// iperf3's CPU use of the host side (server), percent of one core.
    pub host_cpu_pct: f64,
    /// Request/response runs (`rr`, `rr-busy`): what sockperf's ping-pong measured (the
    /// bulk fields above are 0 then).
    #[serde(default)]
    pub rr: Option<TcpRr>,
    /// Frontend process CPU seconds, whole life (0 for veth).
    pub front_cpu_s: f64,
    /// Backend process CPU seconds, whole life (0 for veth).
    pub back_cpu_s: f64,
    /// The frontend's counters (null for veth).
    pub front_metrics: serde_json::Value,
    /// The backend's counters (null for veth).
    pub back_metrics: serde_json::Value,
    /// What both ends' TAP adapters dropped.
    #[serde(flatten)]
    pub drops: TapDrops,
    /// Cross-core round trip before and after the run, ns.
    pub probe_ns: [f64; 2],
}

/// What one sockperf ping-pong run measured: one 14-byte message in flight over TCP, each
/// answered before the next.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct TcpRr {
    /// Round trips per second over the measured part (after sockperf's warm-up).
    pub transactions_per_s: f64,
    /// Median round-trip time, microseconds.
    pub p50_us: f64,
    /// 99th-percentile round-trip time, microseconds.
    pub p99_us: f64,
    /// Length of the measured part, seconds.
    pub seconds: f64,
}

/// Reads sockperf ping-pong's summary (run with `--full-rtt`): the `[Valid Duration]` line's
/// run time and received messages, and the 50th and 99th percentile lines. Colour escapes
/// are ignored. `None` if any of them is missing or the run received nothing.
pub fn parse_sockperf(out: &str) -> Option<TcpRr> {
    let field = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let valid = out.lines().find(|l| l.contains("[Valid Duration]"))?;
    let seconds = field(valid, "RunTime=")?;
    let received = field(valid, "ReceivedMessages=")?;
    let percentile = |p: &str| {
        out.lines()
            .find(|l| l.contains(&format!("percentile {p} =")))
            .and_then(|l| l.rsplit('=').next()?.trim().parse::<f64>().ok())
    };
    (seconds > 0.0 && received > 0.0).then_some(())?;
    Some(TcpRr {
        transactions_per_s: received / seconds,
        p50_us: percentile("50.000")?,
        p99_us: percentile("99.000")?,
        seconds,
    })
}

/// sockperf's server, pinned to `core`.
fn sockperf_server_args(core: &str) -> Vec<String> {
    let port = SOCKPERF_PORT.to_string();
    [
        "taskset", "-c", core, "sockperf", "server", "--tcp", "-i", HOST_IP, "-p", &port,
    ]
    .map(String::from)
    .to_vec()
}

/// sockperf's ping-pong client for a run of `seconds`, pinned to core 0: as fast as the
/// answers come (`--mps=max`), round-trip times (`--full-rtt`).
fn sockperf_client_args(seconds: u32) -> Vec<String> {
    let (port, t) = (SOCKPERF_PORT.to_string(), seconds.to_string());
    [
        "taskset",
        "-c",
        "0",
        "sockperf",
        "ping-pong",
        "--tcp",
        "-i",
        HOST_IP,
        "-p",
        &port,
        "-t",
        &t,
        "-m",
        "14",
        "--mps=max",
        "--full-rtt",
    ]
    .map(String::from)
    .to_vec()
}

impl TcpSample {
    /// CPU milliseconds per GB of data netif carried in the run's direction.
    pub fn cpu_ms_per_gb(&self, cpu_s: f64) -> f64 {
        let (_, bytes) = self.netif_packets();
        if bytes > 0.0 {
            cpu_s * 1e3 / (bytes / 1e9)
        } else {
            0.0
        }
    }

    /// The netif packets of the run in its direction, and their bytes (backend counters).
    pub fn netif_packets(&self) -> (f64, f64) {
        let (p, b) = match self.dir {
            Dir::Rx => ("rx_packets", "rx_bytes"),
            _ => ("tx_packets", "tx_bytes"),
        };
        let g = |k: &str| self.back_metrics[k].as_f64().unwrap_or(0.0);
        (g(p), g(b))
    }
}

/// Everything `experiments tcp` measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TcpResults {
    /// Where it ran.
    pub machine: Machine,
    /// Every run.
    pub samples: Vec<TcpSample>,
    /// The iperf3 commands (with the run's seconds), for the record.
    pub commands: Vec<String>,
    /// What produced the results (tool, commit, command, start; whether it stopped early
    /// and why). Absent in results saved before it was recorded.
    #[serde(default)]
    pub record: Option<crate::RunRecord>,
}

fn one_stream() -> u32 {
    1
}

/// One row of the TCP table.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpRow {
    /// Direction.
    pub dir: Dir,
    /// Offloads.
    pub offload: bool,
    /// Parallel TCP streams.
    pub streams: u32,
    /// Design.
    pub design: String,
    /// Goodput over rounds.
    pub gbps: Spread,
    /// Ratio of the median to grant-copy's in the same run.
    pub ratio: Option<f64>,
    /// Median retransmissions.
    pub retransmits: f64,
    /// Median mean netif packet size, bytes (0 for veth).
    pub mean_packet: f64,
    /// Median CPU milliseconds of the frontend and of the backend process per GB of data
    /// netif carried in the run's direction (both over the processes' lives; 0 for veth).
    pub cpu_ms_per_gb: [f64; 2],
    /// Runs.
    pub n: usize,
}

/// Summarises per (direction, offload, streams, design), designs in first-seen order.
pub fn tcp_rows(r: &TcpResults) -> Vec<TcpRow> {
    let mut order: Vec<&str> = Vec::new();
    let mut keys: Vec<(Dir, bool, u32)> = Vec::new();
    for s in r.samples.iter().filter(|s| !s.dir.is_rr()) {
        if !order.contains(&s.design.as_str()) {
            order.push(&s.design);
        }
        if !keys.contains(&(s.dir, s.offload, s.streams)) {
            keys.push((s.dir, s.offload, s.streams));
        }
    }
    let mut rows = Vec::new();
    for (dir, offload, streams) in keys {
        let of = |d: &str| -> Vec<&TcpSample> {
            r.samples
                .iter()
                .filter(|s| {
                    s.dir == dir && s.offload == offload && s.streams == streams && s.design == d
                })
                .collect()
        };
        let med = |v: Vec<f64>| spread(&v).map_or(0.0, |s| s.median);
        let base = spread(&of("grant-copy").iter().map(|s| s.gbps).collect::<Vec<_>>());
        for d in &order {
            let v = of(d);
            let Some(gbps) = spread(&v.iter().map(|s| s.gbps).collect::<Vec<_>>()) else {
                continue;
            };
            rows.push(TcpRow {
                dir,
                offload,
                streams,
                design: d.to_string(),
                ratio: base
                    .filter(|b| b.median > 0.0)
                    .map(|b| gbps.median / b.median),
                gbps,
                retransmits: med(v.iter().map(|s| s.retransmits as f64).collect()),
                mean_packet: med(v
                    .iter()
                    .map(|s| {
                        let (p, b) = s.netif_packets();
                        b / p.max(1.0)
                    })
                    .collect()),
                cpu_ms_per_gb: [
                    med(v.iter().map(|s| s.cpu_ms_per_gb(s.front_cpu_s)).collect()),
                    med(v.iter().map(|s| s.cpu_ms_per_gb(s.back_cpu_s)).collect()),
                ],
                n: v.len(),
            });
        }
    }
    rows
}

/// Compares two TCP runs design by design (direction, offloads and design in both), in
/// Gbit/s; designs are named `<design> (offloads on|off)`.
pub fn tcp_diff(a: &TcpResults, b: &TcpResults) -> Vec<crate::Change> {
    let rows = |r: &TcpResults| -> Vec<(Dir, usize, String, Spread)> {
        tcp_rows(r)
            .into_iter()
            .map(|x| {
                let off = if x.offload { "on" } else { "off" };
                let p = if x.streams == 1 { "" } else { "s" };
                let name = format!("{} (offloads {off}, {} stream{p})", x.design, x.streams);
                (x.dir, 0, name, x.gbps)
            })
            .collect()
    };
    crate::pair_changes(rows(a), &rows(b))
}

/// A netstage-only number of a row, `-` for the veth reference.
fn dash_for_veth(row: &TcpRow, v: f64) -> String {
    if row.design == "veth" {
        "-".to_string()
    } else {
        format!("{v:.0}")
    }
}

/// The TCP report as markdown.
pub fn tcp_markdown(r: &TcpResults) -> String {
    use std::fmt::Write as _;
    let m = &r.machine;
    let mut out = format!(
        "# netstage: TCP bulk transfer through each design\n\nMachine: {} ({} cores), kernel {}; grant cost mode `{}`; event channels: {}.\n\n\
         iperf3 (real Linux TCP, {}) between two network namespaces linked only by a netfront/netback pair on TAP devices: `tx` is the guest sending, `rx` the guest receiving. The frontend and the guest's iperf3 share core 0, the backend and the host's iperf3 core 1. `veth` is the kernel's own veth pair between the same namespaces, no netstage, for reference. With offloads, the TAPs hand over TCP segments of up to 64 KiB with blank checksums, carried as netif GSO packets. Medians over interleaved rounds. The CPU columns are each end process's CPU time over its life per GB that netif carried in the run's direction (the process also carries the other direction's ACKs).\n\n",
        m.cpu,
        m.cores,
        m.kernel,
        m.cost_mode,
        m.waiting(),
        match streams_of(r).as_slice() {
            [1] => "one stream".to_string(),
            [n] => format!("{n} parallel streams"),
            _ => "as many parallel streams as the table says".to_string(),
        }
    );
    if let Some(why) = r.record.as_ref().and_then(|x| x.stopped_by.as_ref()) {
        let _ = writeln!(
            out,
            "**Partial results**: the run stopped early ({why}); the table holds the runs \
             finished before.\n"
        );
    }
    let _ = writeln!(out, "| dir | offloads | streams | design | Gbit/s (median) | [min..max] | x grant-copy | retransmits | mean netif packet (B) | frontend CPU ms/GB | backend CPU ms/GB | runs |");
    let _ = writeln!(
        out,
        "|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for row in tcp_rows(r) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} | [{:.2}..{:.2}] | {} | {:.0} | {} | {} | {} | {} |",
            row.dir,
            if row.offload { "on" } else { "off" },
            row.streams,
            row.design,
            row.gbps.median,
            row.gbps.min,
            row.gbps.max,
            row.ratio.map_or("-".into(), |x| format!("{x:.2}x")),
            row.retransmits,
            dash_for_veth(&row, row.mean_packet),
            dash_for_veth(&row, row.cpu_ms_per_gb[0]),
            dash_for_veth(&row, row.cpu_ms_per_gb[1]),
            row.n
        );
    }
    rr_section(&mut out, r);
    let drops: u64 = r.samples.iter().map(|s| s.drops.tap_drops).sum();
    let after: u64 = r.samples.iter().map(|s| s.drops.tap_drops_after_run).sum();
    let _ = writeln!(
        out,
        "\nFrames the TAP adapters could not pass on, all runs: {drops} (and {after} after the \
         runs, while the ends stopped: typically frames the kernels still sent, finding \
         the peer gone).\n\nCommands (each in the namespace it names, pinned to the core it names):\n\n```"
    );
    for c in &r.commands {
        let _ = writeln!(out, "{c}");
    }
    let _ = writeln!(out, "```");
    if r.samples.iter().any(|s| !s.dir.is_rr()) {
        let _ = writeln!(out, "\n![tcp](tcp.svg)");
        for c in tcp_axis_charts(r) {
            let _ = writeln!(out, "\n![{}]({}.svg)", c.caption, c.name);
        }
    }
    out
}

/// One row of the TCP request/response table: medians over rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpRrRow {
    /// `rr` (the ends block on event channels) or `rr-busy` (they busy-poll).
    pub dir: Dir,
    /// Design.
    pub design: String,
    /// Transactions per second over rounds.
    pub tps: Spread,
    /// Ratio of the median to grant-copy's in the same run.
    pub ratio: Option<f64>,
    /// Median of the runs' median round trips, microseconds.
    pub p50_us: f64,
    /// Median of the runs' 99th-percentile round trips, microseconds.
    pub p99_us: f64,
    /// Runs.
    pub n: usize,
}

/// Summarises the request/response runs per (direction, design), designs in first-seen
/// order.
pub fn tcp_rr_rows(r: &TcpResults) -> Vec<TcpRrRow> {
    let rr: Vec<(&TcpSample, TcpRr)> = r.samples.iter().filter_map(|s| Some((s, s.rr?))).collect();
    let mut keys: Vec<(Dir, &str)> = Vec::new();
    for (s, _) in &rr {
        if !keys.contains(&(s.dir, s.design.as_str())) {
            keys.push((s.dir, &s.design));
        }
    }
    let of = |dir: Dir, design: &str, f: fn(&TcpRr) -> f64| -> Vec<f64> {
        rr.iter()
            .filter(|(s, _)| s.dir == dir && s.design == design)
            .map(|(_, x)| f(x))
            .collect()
    };
    keys.iter()
        .filter_map(|&(dir, design)| {
            let tps = spread(&of(dir, design, |x| x.transactions_per_s))?;
            let base = spread(&of(dir, "grant-copy", |x| x.transactions_per_s));
            let med = |v: Vec<f64>| spread(&v).map_or(0.0, |s| s.median);
            Some(TcpRrRow {
                dir,
                design: design.to_string(),
                ratio: base
                    .filter(|b| b.median > 0.0)
                    .map(|b| tps.median / b.median),
                p50_us: med(of(dir, design, |x| x.p50_us)),
                p99_us: med(of(dir, design, |x| x.p99_us)),
                n: of(dir, design, |x| x.seconds).len(),
                tps,
            })
        })
        .collect()
}

/// The request/response table, if the run had any.
fn rr_section(out: &mut String, r: &TcpResults) {
    use std::fmt::Write as _;
    let rows = tcp_rr_rows(r);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Request/response over TCP\n\nsockperf ping-pong (the seed's netperf TCP_RR with 1-byte requests and responses is not packaged; sockperf's smallest message is 14 bytes): one message in flight over one TCP connection through the same namespaces, server on core 1, client on core 0. `rr`: the netstage ends block on event channels between packets; `rr-busy`: they busy-poll (the seed's kernel busy polling has no equivalent on a TAP device). Medians over rounds; round-trip times are each run's own median and 99th percentile, then the median over runs.\n"
    );
    let _ = writeln!(out, "| dir | design | transactions/s (median) | [min..max] | x grant-copy | RTT p50 (us) | RTT p99 (us) | runs |");
    let _ = writeln!(out, "|---|---|---:|---|---:|---:|---:|---:|");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | [{:.0}..{:.0}] | {} | {:.1} | {:.1} | {} |",
            row.dir,
            row.design,
            row.tps.median,
            row.tps.min,
            row.tps.max,
            row.ratio.map_or("-".into(), |x| format!("{x:.2}x")),
            row.p50_us,
            row.p99_us,
            row.n
        );
    }
}

/// Options of `experiments tcp`.
#[derive(Debug, Clone)]
pub struct TcpPlan {
    /// Designs (and `veth`).
    pub designs: Vec<String>,
    /// Directions.
    pub dirs: Vec<Dir>,
    /// Offload settings to run.
    pub offloads: Vec<bool>,
    /// Seconds of iperf3 per run (after one omitted second).
    pub seconds: u32,
    /// Rounds.
    pub rounds: u32,
    /// Grant cost mode.
    pub cost: String,
    /// Busy-poll.
    pub busy: bool,
    /// Spin before blocking, frontend and backend, microseconds.
    pub spin_us: [u64; 2],
    /// Parallel TCP streams per bulk run, each a run of its own (request/response runs
    /// take the first).
    pub streams: Vec<u32>,
}

/// Refuses to start unless root, `ip` and `iperf3` are there, naming what is missing.
pub fn check_prerequisites() -> anyhow::Result<()> {
    check_prerequisites_for(&[Dir::Tx])
}

/// Refuses to start unless root, `ip`, and what the directions need (`iperf3` for `tx` and
/// `rx`, `sockperf` and `taskset` for `rr` and `rr-busy`) are there, naming what is missing.
pub fn check_prerequisites_for(dirs: &[Dir]) -> anyhow::Result<()> {
    if !crate::sys::is_root() {
        bail!("experiments tcp needs root: it creates network namespaces and TAP devices");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let rr = dirs.iter().any(|d| d.is_rr());
    let bulk = dirs.iter().any(|d| !d.is_rr());
    let missing: Vec<&str> = [
        ("ip", "iproute2", true),
        ("iperf3", "iperf3", bulk),
        ("sockperf", "sockperf", rr),
        ("taskset", "util-linux", rr),
    ]
    .into_iter()
    .filter(|(_, _, needed)| *needed)
    .map(|(bin, pkg, _)| (bin, pkg))
    .filter(|(bin, _)| !std::env::split_paths(&path).any(|d| d.join(bin).is_file()))
    .map(|(_, pkg)| pkg)
    .collect();
    if !missing.is_empty() {
        bail!(
            "experiments tcp needs Debian's {}: apt-get install {}",
            missing.join(" and "),
            missing.join(" ")
        );
    }
    if !Path::new("/dev/net/tun").exists() {
        bail!("experiments tcp needs /dev/net/tun (the tun module)");
    }
    Ok(())
}

/// Two network namespaces and the processes in them, all removed on drop.
struct Netns {
    guest: String,
    host: String,
    children: Vec<Child>,
}

impl Netns {
    /// Deletes the namespaces of runs that were interrupted (their process has exited).
    fn remove_stale() {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if crate::sys::left_behind(name, "nsg-") || crate::sys::left_behind(name, "nsh-") {
                let _ = Command::new("ip")
                    .args(["netns", "del", name])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    fn create(tag: &str) -> anyhow::Result<Netns> {
        Netns::remove_stale();
        let ns = Netns {
            guest: format!("nsg-{tag}"),
            host: format!("nsh-{tag}"),
            children: Vec::new(),
        };
        for n in [&ns.guest, &ns.host] {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
            run(Command::new("ip").args(["netns", "add", n]))?;
            run(Command::new("ip").args(["-n", n, "link", "set", "lo", "up"]))?;
            // IPv4 only: no neighbour discovery or multicast reports crossing (or arriving
            // at an interface not yet up) besides the measured traffic.
            run(Command::new("ip").args([
                "netns",
                "exec",
                n,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; \
                 echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
            ]))?;
        }
        Ok(ns)
    }

    /// A command run inside namespace `ns`.
    fn exec(ns: &str, argv: &[String]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(argv);
        c
    }

    /// Gives the interface its address, a frame size limit netif can carry, and brings it up.
    fn configure(ns: &str, dev: &str, addr: &str) -> anyhow::Result<()> {
        run(Command::new("ip").args(["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]))?;
        run(Command::new("ip").args(["-n", ns, "link", "set", dev, "gso_max_size", GSO_MAX]))?;
        run(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]))
    }

    /// Waits until interface `dev` exists in `ns`.
    fn wait_for(ns: &str, dev: &str, child: &mut Child) -> anyhow::Result<()> {
        let t = Instant::now();
        loop {
            let ok = Command::new("ip")
                .args(["-n", ns, "link", "show", dev])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ok {
                return Ok(());
            }
            if let Some(st) = child.try_wait()? {
                bail!("the process that opens {dev} exited ({st})");
            }
            if t.elapsed() > Duration::from_secs(20) {
                bail!("{dev} did not appear in {ns} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in [&self.guest, &self.host] {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs a command, failing with what it printed.
fn run(c: &mut Command) -> anyhow::Result<()> {
    let out = c.output().with_context(|| format!("cannot run {c:?}"))?;
    if !out.status.success() {
        bail!(
            "{c:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Sends SIGTERM to a child and reads the JSON line it prints on its way out; a child that
/// has not exited after 10 s is killed (and reports nothing).
fn stop_and_report(c: &mut Child) -> TcpEndReport {
    // The child has not been waited for, so its pid is still its own.
    let _ = crate::sys::signal(c.id(), libc::SIGTERM);
    let reader = c.stdout.take().map(|out| {
        std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .last()
                .unwrap_or_default()
        })
    });
    let t = Instant::now();
    while matches!(c.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    if matches!(c.try_wait(), Ok(None)) {
        let _ = c.kill();
    }
    let _ = c.wait();
    let line = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    serde_json::from_str(line.trim()).unwrap_or_default()
}

/// The iperf3 client's arguments for a run.
fn client_args(dir: Dir, seconds: u32, streams: u32) -> Vec<String> {
    let mut v: Vec<String> = [
        "iperf3",
        "-c",
        HOST_IP,
        "-t",
        &seconds.to_string(),
        "-O",
        "1",
        "-J",
        "-A",
        "0",
    ]
    .map(String::from)
    .to_vec();
    if streams > 1 {
        v.extend(["-P".to_string(), streams.to_string()]);
    }
    if dir == Dir::Rx {
        v.push("-R".into());
    }
    v
}

/// One run: namespaces, the two ends (or a veth pair), the workload (iperf3 for `tx`/`rx`,
/// sockperf ping-pong for `rr`/`rr-busy`), teardown.
pub fn run_tcp(exe: &Path, plan: &TcpPlan, run: &TcpRun, round: u32) -> anyhow::Result<TcpSample> {
    let TcpRun {
        design,
        dir,
        offload,
        streams,
    } = run;
    let (design, dir, offload, streams) = (design.as_str(), *dir, *offload, *streams);
    let tag = std::process::id().to_string();
    let mut ns = Netns::create(&tag)?;
    let world = PathBuf::from(format!("/dev/shm/netstage-tcp-{tag}"));
    let _ = std::fs::remove_dir_all(&world);
    let veth = design == "veth";
    if veth {
        link_veth(&ns)?;
    } else {
        // Request/response with busy polling: the ends busy-poll whatever the plan says.
        let busy = plan.busy || dir == Dir::RrBusy;
        link_netstage(&mut ns, exe, plan, &world, design, offload, busy)?;
    }
    let probe_before = crate::probe(20_000);
    let load = if dir.is_rr() {
        Workload::Rr(sockperf_run(&mut ns, plan.seconds)?)
    } else {
        Workload::Bulk(iperf3_run(&mut ns, plan, dir, streams)?)
    };
    let probe_after = crate::probe(20_000);
    let (mut front, mut back) = (TcpEndReport::default(), TcpEndReport::default());
    if !veth {
        // What the TAPs dropped until the workload ended (and the probe after it) is the
        // run's; what they drop while the ends stop is reported apart. Without the mark
        // (an end that died or did not answer) every drop counts as the run's.
        if let Err(e) = mark_run_end(&mut ns, &world) {
            eprintln!(
                "experiments: {design} {dir}: the run's end could not be marked ({}); its TAP \
                 drops include those while the ends stopped",
                netstage_platform::cli::causes(&e)
            );
        }
        // The frontend first: its close is what the backend waits for.
        front = stop_and_report(&mut ns.children[1]);
        back = stop_and_report(&mut ns.children[0]);
    }
    drop(ns);
    let _ = std::fs::remove_dir_all(&world);
    Ok(sample(
        round,
        run,
        load,
        front,
        back,
        [probe_before, probe_after],
    ))
}

/// One run of a TCP plan: a design in a direction with offloads on or off and a number of
/// parallel streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRun {
    /// Design, or `veth`.
    pub design: String,
    /// Direction.
    pub dir: Dir,
    /// TAP offloads on.
    pub offload: bool,
    /// Parallel TCP streams (1 for request/response).
    pub streams: u32,
}

/// The runs of one round of `plan`, in order: per direction, offload setting and streams,
/// each design. The kernel's veth runs with the first offload setting only (the kernel's
/// own offloads), and request/response runs with one stream.
pub fn plan_runs(plan: &TcpPlan) -> Vec<TcpRun> {
    let mut runs = Vec::new();
    for &dir in &plan.dirs {
        let streams: &[u32] = if dir.is_rr() { &[1] } else { &plan.streams };
        for &offload in &plan.offloads {
            for &n in streams {
                for d in &plan.designs {
                    if d != "veth" || offload == plan.offloads[0] {
                        runs.push(TcpRun {
                            design: d.clone(),
                            dir,
                            offload: d == "veth" || offload,
                            streams: n,
                        });
                    }
                }
            }
        }
    }
    runs
}

/// The stream counts of `r`'s bulk runs, in the order first run.
fn streams_of(r: &TcpResults) -> Vec<u32> {
    let mut v: Vec<u32> = Vec::new();
    for s in r.samples.iter().filter(|s| !s.dir.is_rr()) {
        if !v.contains(&s.streams) {
            v.push(s.streams);
        }
    }
    v
}

/// What a run's workload measured.
enum Workload {
    /// iperf3's end summary.
    Bulk(serde_json::Value),
    /// sockperf's ping-pong summary.
    Rr(TcpRr),
}

/// The sample of a finished run.
fn sample(
    round: u32,
    run: &TcpRun,
    load: Workload,
    front: TcpEndReport,
    back: TcpEndReport,
    probe_ns: [f64; 2],
) -> TcpSample {
    let (end, rr) = match load {
        Workload::Bulk(end) => (end, None),
        Workload::Rr(rr) => (serde_json::Value::Null, Some(rr)),
    };
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    TcpSample {
        round,
        design: run.design.clone(),
        dir: run.dir,
        offload: run.offload,
        streams: run.streams,
        gbps: f(&end["sum_received"]["bits_per_second"]) / 1e9,
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        seconds: rr.map_or(f(&end["sum_received"]["seconds"]), |r| r.seconds),
        guest_cpu_pct: f(&end["cpu_utilization_percent"]["host_total"]),
        host_cpu_pct: f(&end["cpu_utilization_percent"]["remote_total"]),
        rr,
        front_cpu_s: front.cpu_seconds,
        back_cpu_s: back.cpu_seconds,
        front_metrics: front.metrics,
        back_metrics: back.metrics,
        drops: TapDrops::of_ends(front.drops, back.drops),
        probe_ns,
    }
}

/// Both ends' drop reasons, each named by its end.
fn by_end(front: Vec<String>, back: Vec<String>) -> Vec<String> {
    front
        .into_iter()
        .map(|r| format!("frontend: {r}"))
        .chain(back.into_iter().map(|r| format!("backend: {r}")))
        .collect()
}

/// Links the namespaces with the kernel's veth pair (the reference).
fn link_veth(ns: &Netns) -> anyhow::Result<()> {
    run(Command::new("ip").args([
        "link", "add", "vg", "netns", &ns.guest, "type", "veth", "peer", "name", "vh", "netns",
        &ns.host,
    ]))?;
    Netns::configure(&ns.guest, "vg", GUEST_IP)?;
    Netns::configure(&ns.host, "vh", HOST_IP)
}

/// Links the namespaces through a netfront/netback pair of `design` on two TAP devices:
/// the backend (core 1) in the host's namespace, the frontend (core 0) in the guest's.
fn link_netstage(
    ns: &mut Netns,
    exe: &Path,
    plan: &TcpPlan,
    world: &Path,
    design: &str,
    offload: bool,
    busy: bool,
) -> anyhow::Result<()> {
    let cores = crate::sys::cpus();
    let role = |name: &str, tap: &str, core: usize, spin: u64| -> Vec<String> {
        let mut v = vec![
            exe.display().to_string(),
            name.into(),
            "--world".into(),
            world.display().to_string(),
            "--design".into(),
            design.into(),
            "--cost".into(),
            plan.cost.clone(),
            "--core".into(),
            core.to_string(),
            "--tap".into(),
            tap.into(),
            "--spin-us".into(),
            spin.to_string(),
        ];
        if offload {
            v.push("--offload".into());
        }
        if busy {
            v.push("--busy".into());
        }
        v
    };
    let mut back = Netns::exec(
        &ns.host,
        &role("role-tcp-backend", "tapb", 1 % cores, plan.spin_us[1]),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .context("cannot start the backend")?;
    let back_err = StderrTail::capture(&mut back);
    ns.children.push(back);
    let ready = roles::ready_marker(world);
    let t = Instant::now();
    while !ready.exists() {
        if let Some(st) = ns.children[0].try_wait()? {
            return Err(child::failed(
                "the backend",
                "exited early",
                st,
                &back_err.finish(),
            ));
        }
        if t.elapsed() > Duration::from_secs(20) {
            bail!("the backend did not come up within 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut front = Netns::exec(
        &ns.guest,
        &role("role-tcp-frontend", "tapf", 0, plan.spin_us[0]),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .context("cannot start the frontend")?;
    let front_err = StderrTail::capture(&mut front);
    ns.children.push(front);
    let tails = [back_err, front_err];
    let (host, guest) = (ns.host.clone(), ns.guest.clone());
    for (i, (ns_name, dev)) in [(&host, "tapb"), (&guest, "tapf")].into_iter().enumerate() {
        if let Err(e) = Netns::wait_for(ns_name, dev, &mut ns.children[i]) {
            return Err(end_failed(ns, tails, e));
        }
    }
    if let Err(e) = wait_guest_connected(ns, world) {
        return Err(end_failed(ns, tails, e));
    }
    Netns::configure(&ns.host, "tapb", HOST_IP)?;
    Netns::configure(&ns.guest, "tapf", GUEST_IP)
}

/// `e`, or, if an end (`ns.children[0]`, `[1]`) has exited, that end's exit with the tail
/// of its stderr (`tails`, in the same order).
fn end_failed(ns: &mut Netns, tails: [StderrTail; 2], e: anyhow::Error) -> anyhow::Error {
    for ((i, who), tail) in ["the backend", "the frontend"]
        .into_iter()
        .enumerate()
        .zip(tails)
    {
        if let Ok(Some(st)) = ns.children[i].try_wait() {
            return child::failed(who, "exited early", st, &tail.finish());
        }
    }
    e
}

/// Marks the end of the measured run: asks both ends (`ns.children[0]` and `[1]`) to take
/// their TAP counters now and waits until both have ([`run_end_ack`]), so that drops while
/// they stop are told apart from the run's.
fn mark_run_end(ns: &mut Netns, world: &Path) -> anyhow::Result<()> {
    for c in &ns.children[..2] {
        crate::sys::signal(c.id(), libc::SIGUSR1)?;
    }
    for tap in ["tapb", "tapf"] {
        wait_for_file(ns, &run_end_ack(world, tap), Duration::from_secs(10))
            .with_context(|| format!("the end on {tap} did not take its TAP counters"))?;
    }
    Ok(())
}

/// Waits until the backend (`ns.children[0]`) says its guest is connected, so that no
/// frame the host's kernel sends once its TAP is up finds no peer.
fn wait_guest_connected(ns: &mut Netns, world: &Path) -> anyhow::Result<()> {
    wait_for_file(ns, &guest_connected_marker(world), Duration::from_secs(20))
        .context("the guest did not connect")
}

/// Waits up to `limit` until file `path` exists; fails sooner if either end
/// (`ns.children[0]`, `[1]`) exits.
fn wait_for_file(ns: &mut Netns, path: &Path, limit: Duration) -> anyhow::Result<()> {
    let t = Instant::now();
    while !path.exists() {
        for (i, who) in ["the backend", "the frontend"].into_iter().enumerate() {
            if let Some(st) = ns.children[i].try_wait()? {
                bail!("{who} exited ({st})");
            }
        }
        if t.elapsed() > limit {
            bail!("{} did not appear within {limit:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Bulk transfer: iperf3's server in the host's namespace, its client in the guest's.
/// Returns iperf3's `end` summary.
fn iperf3_run(
    ns: &mut Netns,
    plan: &TcpPlan,
    dir: Dir,
    streams: u32,
) -> anyhow::Result<serde_json::Value> {
    let core = (1 % crate::sys::cpus()).to_string();
    let argv = ["iperf3", "-s", "-1", "-B", HOST_IP, "-A", &core].map(String::from);
    start_server(ns, &argv, IPERF3_PORT, "iperf3 -s")?;
    let out = Netns::exec(&ns.guest, &client_args(dir, plan.seconds, streams))
        .output()
        .context("cannot run iperf3 -c")?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(e) = json["error"].as_str() {
        bail!("iperf3: {e}");
    }
    Ok(json["end"].clone())
}

/// Starts server `what` (`argv`) in the host's namespace and waits until it listens on
/// TCP `port`; it is killed with the namespaces.
fn start_server(ns: &mut Netns, argv: &[String], port: u16, what: &str) -> anyhow::Result<()> {
    let server = Netns::exec(&ns.host, argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    ns.children.push(server);
    wait_listening(&ns.host, port, what)
}

/// Request/response over TCP: sockperf's server in the host's namespace (core 1), its
/// ping-pong client in the guest's (core 0), one 14-byte message in flight.
fn sockperf_run(ns: &mut Netns, seconds: u32) -> anyhow::Result<TcpRr> {
    let core = (1 % crate::sys::cpus()).to_string();
    start_server(
        ns,
        &sockperf_server_args(&core),
        SOCKPERF_PORT,
        "sockperf server",
    )?;
    let out = Netns::exec(&ns.guest, &sockperf_client_args(seconds))
        .output()
        .context("cannot run sockperf ping-pong")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    parse_sockperf(&text).with_context(|| {
        format!(
            "sockperf ping-pong printed no summary ({}): {}",
            out.status,
            text.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
        )
    })
}

/// Waits until `what` listens on TCP `port` in `ns`.
fn wait_listening(ns: &str, port: u16, what: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    let sport = format!(":{port}");
    loop {
        let ss = Command::new("ip")
            .args(["netns", "exec", ns, "ss", "-Hltn", "sport", "=", &sport])
            .output()?;
        if !ss.stdout.is_empty() {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(10) {
            bail!("{what} did not listen within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The iperf3 client commands a plan runs, for the record.
pub fn commands(plan: &TcpPlan) -> Vec<String> {
    let mut v = Vec::new();
    if plan.dirs.iter().any(|d| !d.is_rr()) {
        v.push(format!("iperf3 -s -1 -B {HOST_IP} -A 1   (host namespace)"));
    }
    if plan.dirs.iter().any(|d| d.is_rr()) {
        v.push(format!(
            "{}   (host namespace)",
            sockperf_server_args("1").join(" ")
        ));
        v.push(format!(
            "{}   (guest namespace)",
            sockperf_client_args(plan.seconds).join(" ")
        ));
    }
    for d in plan.dirs.iter().filter(|d| !d.is_rr()) {
        for n in &plan.streams {
            v.push(format!(
                "{}   (guest namespace)",
                client_args(*d, plan.seconds, *n).join(" ")
            ));
        }
    }
    v
}

/// A chart of goodput along one axis a TCP run swept: bars per point of the axis, a series
/// per what else varied.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpAxisChart {
    /// File name (without extension).
    pub name: String,
    /// Caption.
    pub caption: String,
    /// The axis's points, left to right.
    pub names: Vec<String>,
    /// Each series' label and its Gbit/s (median) at each point (0 where it did not run).
    pub series: Vec<(String, Vec<f64>)>,
}

/// One chart per axis the run swept, per bulk direction: the data-ring order or slot
/// data-len (three or more designs of one family), the number of streams (two or more) and
/// the offloads (both settings).
pub fn tcp_axis_charts(r: &TcpResults) -> Vec<TcpAxisChart> {
    let rows = tcp_rows(r);
    let mut out = Vec::new();
    for dir in [Dir::Tx, Dir::Rx] {
        let rows: Vec<&TcpRow> = rows.iter().filter(|x| x.dir == dir).collect();
        out.extend(design_axes(&rows, dir));
        out.extend(streams_axis(&rows, dir));
        out.extend(offload_axis(&rows, dir));
    }
    out
}

/// The label of a row's other settings: offloads and streams.
fn setting(row: &TcpRow) -> String {
    let p = if row.streams == 1 { "" } else { "s" };
    let off = if row.offload { "on" } else { "off" };
    format!("offloads {off}, {} stream{p}", row.streams)
}

/// Distinct values of `f` over `rows`, in first-seen order.
fn distinct<T: PartialEq>(rows: &[&TcpRow], f: impl Fn(&TcpRow) -> T) -> Vec<T> {
    let mut v = Vec::new();
    for r in rows {
        let x = f(r);
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v
}

/// Gbit/s by ring order or slot data-len, a series per offload and streams setting.
fn design_axes(rows: &[&TcpRow], dir: Dir) -> Vec<TcpAxisChart> {
    let on_axis: Vec<(crate::plots::AxisPoint, &TcpRow)> = rows
        .iter()
        .filter_map(|x| Some((crate::plots::axis_of(&x.design)?, *x)))
        .collect();
    let mut out = Vec::new();
    let mut charts: Vec<&str> = Vec::new();
    for (a, _) in &on_axis {
        if !charts.contains(&a.chart.as_str()) {
            charts.push(&a.chart);
        }
    }
    for chart in charts {
        let members: Vec<&(crate::plots::AxisPoint, &TcpRow)> =
            on_axis.iter().filter(|(a, _)| a.chart == chart).collect();
        let mut params: Vec<u32> = members.iter().map(|(a, _)| a.param).collect();
        params.sort_unstable();
        params.dedup();
        if params.len() < 3 {
            continue;
        }
        let settings = distinct(
            &members.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
            setting,
        );
        let series = settings
            .iter()
            .map(|st| {
                let at = |p: u32| {
                    members
                        .iter()
                        .find(|(a, r)| a.param == p && setting(r) == *st)
                        .map_or(0.0, |(_, r)| r.gbps.median)
                };
                (st.clone(), params.iter().map(|&p| at(p)).collect())
            })
            .collect();
        let (what, family) = (members[0].0.what, &members[0].0.family);
        out.push(TcpAxisChart {
            name: format!("tcp-{chart}-{dir}"),
            caption: format!("TCP {dir}: Gbit/s by {what}, {family}"),
            names: params.iter().map(u32::to_string).collect(),
            series,
        });
    }
    out
}

/// Gbit/s by parallel streams, a series per design (at the first offload setting).
fn streams_axis(rows: &[&TcpRow], dir: Dir) -> Option<TcpAxisChart> {
    let streams = distinct(rows, |r| r.streams);
    let offload = rows.first()?.offload;
    if streams.len() < 2 {
        return None;
    }
    let designs = distinct(rows, |r| r.design.clone());
    let series = designs
        .iter()
        .map(|d| {
            let at = |n: u32| {
                rows.iter()
                    .find(|r| {
                        r.design == *d && r.streams == n && (r.offload == offload || d == "veth")
                    })
                    .map_or(0.0, |r| r.gbps.median)
            };
            (d.clone(), streams.iter().map(|&n| at(n)).collect())
        })
        .collect();
    Some(TcpAxisChart {
        name: format!("tcp-axis-streams-{dir}"),
        caption: format!(
            "TCP {dir}: Gbit/s by parallel streams (offloads {})",
            if offload { "on" } else { "off" }
        ),
        names: streams.iter().map(u32::to_string).collect(),
        series,
    })
}

/// Gbit/s per design with offloads on and off (at the first stream count).
fn offload_axis(rows: &[&TcpRow], dir: Dir) -> Option<TcpAxisChart> {
    let streams = rows.first()?.streams;
    let offloads = distinct(rows, |r| r.offload);
    if offloads.len() < 2 {
        return None;
    }
    let designs: Vec<String> = distinct(rows, |r| r.design.clone())
        .into_iter()
        .filter(|d| d != "veth")
        .collect();
    let series = [true, false]
        .iter()
        .map(|&off| {
            let at = |d: &String| {
                rows.iter()
                    .find(|r| r.design == *d && r.offload == off && r.streams == streams)
                    .map_or(0.0, |r| r.gbps.median)
            };
            let label = if off { "offloads on" } else { "offloads off" };
            (label.to_string(), designs.iter().map(at).collect())
        })
        .collect();
    Some(TcpAxisChart {
        name: format!("tcp-axis-offloads-{dir}"),
        caption: format!("TCP {dir}: Gbit/s with offloads on and off ({streams} stream(s))"),
        names: designs,
        series,
    })
}

/// The columns of `tcp.csv`.
pub const TCP_CSV_COLUMNS: [&str; 16] = [
    "round",
    "design",
    "dir",
    "offload",
    "streams",
    "gbps",
    "retransmits",
    "seconds",
    "guest_cpu_pct",
    "host_cpu_pct",
    "front_cpu_s",
    "back_cpu_s",
    "netif_packets",
    "netif_bytes",
    "tap_drops",
    "tap_drops_after_run",
];

/// One line of `tcp.csv`: one run.
#[derive(Serialize)]
struct TcpRecord<'a> {
    round: u32,
    design: &'a str,
    #[serde(serialize_with = "crate::cell::display")]
    dir: Dir,
    offload: bool,
    streams: u32,
    #[serde(serialize_with = "crate::cell::fixed::<4, _>")]
    gbps: f64,
    retransmits: u64,
    #[serde(serialize_with = "crate::cell::fixed::<3, _>")]
    seconds: f64,
    #[serde(serialize_with = "crate::cell::fixed::<1, _>")]
    guest_cpu_pct: f64,
    #[serde(serialize_with = "crate::cell::fixed::<1, _>")]
    host_cpu_pct: f64,
    #[serde(serialize_with = "crate::cell::fixed::<3, _>")]
    front_cpu_s: f64,
    #[serde(serialize_with = "crate::cell::fixed::<3, _>")]
    back_cpu_s: f64,
    netif_packets: f64,
    netif_bytes: f64,
    tap_drops: u64,
    tap_drops_after_run: u64,
}

/// Every TCP run as CSV (through the `csv` crate: a cell is quoted when it must be).
pub fn tcp_csv(r: &TcpResults) -> String {
    let records = r.samples.iter().map(|s| {
        let (netif_packets, netif_bytes) = s.netif_packets();
        TcpRecord {
            round: s.round,
            design: &s.design,
            dir: s.dir,
            offload: s.offload,
            streams: s.streams,
            gbps: s.gbps,
            retransmits: s.retransmits,
            seconds: s.seconds,
            guest_cpu_pct: s.guest_cpu_pct,
            host_cpu_pct: s.host_cpu_pct,
            front_cpu_s: s.front_cpu_s,
            back_cpu_s: s.back_cpu_s,
            netif_packets,
            netif_bytes,
            tap_drops: s.drops.tap_drops,
            tap_drops_after_run: s.drops.tap_drops_after_run,
        }
    });
    crate::write_csv(&TCP_CSV_COLUMNS, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_after_the_runs_end_are_counted_apart_from_the_runs() {
        let at_end = TapCountersSnapshot {
            read_drop_peer_full: 2,
            write_drop_failed: 1,
            ..TapCountersSnapshot::default()
        };
        let stopped = TapCountersSnapshot {
            read_drop_no_peer: 3,
            write_drop_failed: 5,
            ..at_end
        };
        let none = TapCountersSnapshot::default();
        assert_eq!(
            drops_between(&none, &at_end),
            (
                3,
                vec![
                    "read_drop_peer_full: 2".into(),
                    "write_drop_failed: 1".into()
                ]
            )
        );
        assert_eq!(
            drops_between(&at_end, &stopped),
            (
                7,
                vec!["read_drop_no_peer: 3".into(), "write_drop_failed: 4".into()]
            )
        );
        assert_eq!(drops_between(&stopped, &stopped), (0, Vec::new()));
    }

    /// What sockperf 3.7 prints for `ping-pong --full-rtt` (colour escapes included).
    const PING_PONG: &str = "sockperf: [Total Run] RunTime=2.000 sec; Warm up time=400 msec; SentMessages=298069; ReceivedMessages=298068\n\
sockperf: ========= Printing statistics for Server No: 0\n\
sockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=237200; ReceivedMessages=237200\n\
sockperf: \x1b[2;35m====> avg-latency=6.502 (std-dev=7.692)\x1b[0m\n\
sockperf: \x1b[2;35mTotal 237200 observations\x1b[0m; each percentile contains 2372.00 observations\n\
sockperf: ---> percentile 99.900 =   33.700\n\
sockperf: ---> percentile 99.000 =    6.930\n\
sockperf: ---> percentile 90.000 =    6.698\n\
sockperf: ---> percentile 50.000 =    6.348\n\
sockperf: ---> <MIN> observation =    5.740\n";

    #[test]
    fn sockperf_summary_gives_the_rate_over_the_valid_part_and_two_percentiles() {
        let rr = parse_sockperf(PING_PONG).unwrap();
        assert!((rr.transactions_per_s - 237200.0 / 1.55).abs() < 1e-6);
        assert_eq!(rr.seconds, 1.55);
        assert_eq!(rr.p50_us, 6.348);
        assert_eq!(rr.p99_us, 6.93);
    }

    #[test]
    fn a_sockperf_run_without_its_summary_or_answers_is_no_result() {
        assert_eq!(parse_sockperf("sockperf: connection refused"), None);
        let none_back = PING_PONG.replace("ReceivedMessages=237200", "ReceivedMessages=0");
        assert_eq!(parse_sockperf(&none_back), None);
        let no_p99 = PING_PONG.replace("percentile 99.000", "percentile 98.000");
        assert_eq!(parse_sockperf(&no_p99), None);
    }

    #[test]
    fn request_response_commands_are_recorded_only_when_asked_for() {
        let plan = |dirs: Vec<Dir>| TcpPlan {
            designs: vec!["grant-copy".into()],
            dirs,
            offloads: vec![true],
            seconds: 3,
            rounds: 1,
            cost: "none".into(),
            busy: false,
            spin_us: [20, 20],
            streams: vec![1],
        };
        let bulk = commands(&plan(vec![Dir::Tx])).join("\n");
        assert!(
            bulk.contains("iperf3") && !bulk.contains("sockperf"),
            "{bulk}"
        );
        let rr = commands(&plan(vec![Dir::Rr])).join("\n");
        assert!(
            rr.contains("sockperf ping-pong") && !rr.contains("iperf3"),
            "{rr}"
        );
    }

    fn bulk(design: &str, offload: bool, streams: u32, gbps: f64) -> TcpSample {
        TcpSample {
            round: 1,
            design: design.into(),
            dir: Dir::Tx,
            offload,
            streams,
            gbps,
            retransmits: 0,
            seconds: 1.0,
            guest_cpu_pct: 0.0,
            host_cpu_pct: 0.0,
            rr: None,
            front_cpu_s: 0.0,
            back_cpu_s: 0.0,
            front_metrics: serde_json::Value::Null,
            back_metrics: serde_json::Value::Null,
            drops: TapDrops::default(),
            probe_ns: [0.0; 2],
        }
    }

    #[test]
    fn each_axis_a_run_swept_gets_its_chart() {
        let mut samples = Vec::new();
        for (i, d) in [
            "ring:4:greedy",
            "ring:8:greedy",
            "ring:9:greedy",
            "grant-copy",
        ]
        .iter()
        .enumerate()
        {
            for (off, streams) in [(true, 1), (true, 4), (false, 1)] {
                let g = (i + 1) as f64 + f64::from(streams) * 10.0 + if off { 100.0 } else { 0.0 };
                samples.push(bulk(d, off, streams, g));
            }
        }
        let r = TcpResults {
            machine: Machine::detect("none", "blocking"),
            samples,
            commands: Vec::new(),
            record: None,
        };
        let charts = tcp_axis_charts(&r);
        let names: Vec<&str> = charts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "tcp-axis-ring-order-greedy-tx",
                "tcp-axis-streams-tx",
                "tcp-axis-offloads-tx"
            ]
        );
        let ring = &charts[0];
        assert_eq!(ring.names, ["4", "8", "9"]);
        assert_eq!(ring.series[0].0, "offloads on, 1 stream");
        assert_eq!(ring.series[0].1, [111.0, 112.0, 113.0]);
        assert_eq!(ring.series[1].0, "offloads on, 4 streams");
        assert_eq!(ring.series[2].1, [11.0, 12.0, 13.0]);
        let streams = &charts[1];
        assert_eq!(streams.names, ["1", "4"]);
        assert_eq!(
            streams.series[3],
            ("grant-copy".to_string(), vec![114.0, 144.0])
        );
        let off = &charts[2];
        assert_eq!(off.series[0].0, "offloads on");
        assert_eq!(off.series[1].1, [11.0, 12.0, 13.0, 14.0]);
        // One stream count and one offload setting: no axis but the designs'.
        let r = TcpResults {
            samples: r
                .samples
                .into_iter()
                .filter(|s| s.offload && s.streams == 1)
                .collect(),
            ..r
        };
        let names: Vec<String> = tcp_axis_charts(&r).into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["tcp-axis-ring-order-greedy-tx"]);
        let md = tcp_markdown(&r);
        assert!(md.contains("(tcp-axis-ring-order-greedy-tx.svg)"), "{md}");
        assert!(
            md.contains("| tx | on | 1 | ring:4:greedy | 111.00 |"),
            "{md}"
        );
        let csv = tcp_csv(&r);
        assert!(csv.starts_with(&TCP_CSV_COLUMNS.join(",")), "{csv}");
        assert!(
            csv.contains("\n1,ring:4:greedy,tx,true,1,111.0000,"),
            "{csv}"
        );
    }

    #[test]
    fn a_plan_runs_every_stream_count_for_bulk_and_one_for_request_response() {
        let plan = TcpPlan {
            designs: vec!["grant-copy".into(), "veth".into()],
            dirs: vec![Dir::Tx, Dir::Rr],
            offloads: vec![true, false],
            seconds: 1,
            rounds: 1,
            cost: "none".into(),
            busy: false,
            spin_us: [20, 20],
            streams: vec![1, 8],
        };
        let runs: Vec<(String, Dir, bool, u32)> = plan_runs(&plan)
            .into_iter()
            .map(|r| (r.design, r.dir, r.offload, r.streams))
            .collect();
        let gc = "grant-copy".to_string();
        let veth = "veth".to_string();
        assert_eq!(
            runs,
            [
                (gc.clone(), Dir::Tx, true, 1),
                (veth.clone(), Dir::Tx, true, 1),
                (gc.clone(), Dir::Tx, true, 8),
                (veth.clone(), Dir::Tx, true, 8),
                (gc.clone(), Dir::Tx, false, 1),
                (gc.clone(), Dir::Tx, false, 8),
                (gc.clone(), Dir::Rr, true, 1),
                (veth.clone(), Dir::Rr, true, 1),
                (gc, Dir::Rr, false, 1),
            ]
        );
    }
}
