//! `experiments`: the netstage comparison harness (the README's main job).
//!
//! `experiments compare` runs every design, direction and packet size on the embedded
//! emulated platform — a backend process and a frontend process per run, pinned to
//! different cores — interleaving the scenarios round by round, and writes
//! `results/<time>/{results.json,results.csv,report.md}` and a table on the terminal.
//! `experiments report DIR` renders a saved run again, `experiments diff A B` compares two,
//! and `experiments tcp` runs real Linux TCP (iperf3) through each design between two
//! network namespaces on TAP devices.

#![deny(unsafe_code)]

use netstage_platform::cli::causes;
use std::io::{BufRead, BufReader, IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use experiments::calibrate;
use experiments::child::{self, StderrTail};
use experiments::peer::{Dpdk, Peer, PeerSample};
use experiments::roles::{self, BackendReport, Dir, FrontendReport, RoleArgs};
use experiments::sweep::{run_order, Sweep};
use experiments::{csv, markdown, probe, Machine, Results, Sample, SizeSpec};
use indicatif::{ProgressBar, ProgressStyle};

mod latency_cmd;
mod soak_cmd;

/// The netstage comparison harness.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "An error is printed with each of its causes once; a run's process that \
                  failed adds the end of its stderr. --backtrace adds a backtrace. \
                  Log level: RUST_LOG (default: warn)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// On an error, print its backtrace too (where one was captured; as NETSTAGE_BACKTRACE=1).
    #[arg(long, global = true)]
    backtrace: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Compare the designs (default: grant-copy, grant-map, linux, slots:256, slots-rfc:256,
    /// ring:8:greedy, ring:8:greedy:wait, ring:8:adaptive; TX, RX and request/response, blocking and
    /// busy-polling; 64, 256, 1500 and 65535 bytes; grant costs from the calibrated xen
    /// preset) and write results/<time>/ (results.json, CSV, report.md, plots).
    Compare(CompareArgs),
    /// Render the report of a saved run again from DIR/results.json: prints it and writes
    /// report.md, summary.csv, summary.json and the plots in DIR afresh (a TCP run, from
    /// DIR/tcp.json: tcp.md and its chart).
    Report {
        /// A `results/<time>` directory.
        dir: PathBuf,
    },
    /// Compare two saved runs scenario by scenario (two `compare` runs, or two `tcp` runs):
    /// a change is reported only where the two runs' 95 % intervals (a TCP run's min..max
    /// ranges) do not overlap, otherwise it is within noise.
    Diff {
        /// The earlier `results/<time>` directory.
        a: PathBuf,
        /// The later one.
        b: PathBuf,
    },
    /// Latency under load: each design's peak rate of a paced echo stream (frames sent,
    /// many in flight, each echoed by the backend), then its p50 and p99 round trip at
    /// 50 % and 90 % of that peak, round by round with intervals.
    Latency(latency_cmd::LatencyArgs),
    /// Soak: designs, sizes, directions and faults (SIGKILL of either end mid-transfer)
    /// mixed for a while, every run checked; one line per run, soak.json written as it goes;
    /// fails if any run did (not part of the test command).
    Soak(SoakArgs),
    /// TCP bulk transfers with real Linux TCP: iperf3 between two network namespaces
    /// linked only by a netfront/netback pair on TAP devices, per design, with the kernel's
    /// veth pair for reference. Needs root, iproute2 and iperf3 (and sockperf for rr and
    /// rr-busy).
    Tcp(TcpArgs),
}

/// The processes of a run: this binary started again with a `role-*` command. They are
/// parsed apart from the user's commands (`run` looks at the first argument), so a mistyped
/// command is never told about them.
#[derive(Debug, Parser)]
#[command(name = "experiments")]
struct RoleCli {
    #[command(subcommand)]
    cmd: RoleCmd,
}

#[derive(Debug, Subcommand)]
enum RoleCmd {
    /// (internal) The TCP experiment's backend.
    #[command(name = "role-tcp-backend")]
    TcpBackend(experiments::tcp::TcpRoleArgs),
    /// (internal) The TCP experiment's frontend.
    #[command(name = "role-tcp-frontend")]
    TcpFrontend(experiments::tcp::TcpRoleArgs),
    /// (internal) The raw stream's writer.
    #[command(name = "role-stream-writer")]
    StreamWriter(roles::StreamArgs),
    /// (internal) The raw stream's reader.
    #[command(name = "role-stream-reader")]
    StreamReader(roles::StreamArgs),
    /// (internal) One backend process.
    #[command(name = "role-backend")]
    Backend(RoleArgs),
    /// (internal) One frontend process.
    #[command(name = "role-frontend")]
    Frontend(RoleArgs),
}

#[derive(Debug, clap::Args)]
// A negative number is a bad value of its option, named as such, not an unknown flag.
#[command(allow_negative_numbers = true)]
struct SoakArgs {
    /// How long to run, in minutes.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// The seed the steps are drawn from [default: from the clock; printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Grant cost mode (kernel, none or model:<call>,<copy>,<map>,<unmap>).
    #[arg(long, default_value = "none", value_parser = sim_cost_mode_name)]
    cost: String,
    /// Where to write soak.json [default: results/soak-<unix time>].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
// A negative number is a bad value of its option, named as such, not an unknown flag.
#[command(allow_negative_numbers = true)]
struct CompareArgs {
    /// A short sweep (under a minute): 64 and 1500 bytes, three designs, four rounds of
    /// 0.2 s runs.
    #[arg(long)]
    quick: bool,
    /// Interleaved rounds, each in its own shuffled order [default: 7; --quick: 4].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: Option<u32>,
    /// Measured seconds per run, above 0 and at most 3600 [default: 0.3; --quick: 0.2].
    #[arg(long, value_parser = run_seconds)]
    seconds: Option<f64>,
    /// The seed of the run order (shuffled afresh each round) and of the report's
    /// bootstrap intervals; the same seed repeats the order [default: drawn from the clock,
    /// and written to results.json, scenario.toml and the report].
    #[arg(long, value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64))]
    seed: Option<u64>,
    /// Designs (comma-separated) [default: the eight above; --quick: grant-copy, slots:256,
    /// ring:8:greedy].
    #[arg(long, value_delimiter = ',', value_parser = design_name)]
    designs: Option<Vec<String>>,
    /// Packet sizes (comma-separated): bytes (`1500`), `imix` (64, 576, 1500 B 7:4:1) or a
    /// mix whose sizes are joined by `+` (`mix:64+65535`, weights as `64x7`) [default: 64,
    /// 256, 1500, 65535; --quick: 64, 1500].
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<SizeSpec>>,
    /// Directions (comma-separated) [default: tx, rx, rr, rr-busy].
    #[arg(long, value_delimiter = ',', value_enum)]
    dirs: Option<Vec<Dir>>,
    /// Queue counts for the throughput runs (comma-separated) [default: 1, and 2 too when
    /// the machine has at least 4 cores and the sweep is not --quick, so that each end's
    /// queue threads get a core each].
    #[arg(long, value_delimiter = ',')]
    queues: Option<Vec<u16>>,
    /// Busy-poll instead of blocking on event channels.
    #[arg(long)]
    busy: bool,
    /// Blocking waits (throughput and `rr` runs) arm the rings' event indexes as soon as a
    /// look finds no work, as Linux's netfront and netback do, instead of spinning unarmed
    /// first: each end then notifies the other for what arrives while it waits.
    #[arg(long, conflicts_with = "busy")]
    armed: bool,
    /// Grant cost mode: xen (Xen's costs per grant operation, less the emulation's own,
    /// measured first: docs/calibration.md), kernel, none or
    /// model:<call>,<copy>,<map>,<unmap>[,<copy into a granted page>] in nanoseconds
    /// [default: xen].
    #[arg(long, value_parser = cost_mode_name)]
    cost: Option<String>,
    /// Skip the raw data-ring stream (the upper bound) run once per round.
    #[arg(long)]
    no_stream: bool,
    /// A scenario file (TOML) describing the sweep; flags given here win over its keys.
    /// Every run writes the sweep it ran, all keys resolved, to scenario.toml in its results
    /// directory, so `--scenario results/<time>/scenario.toml` repeats it.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Microseconds the frontend's event-channel waits spin before sleeping [default: 20].
    #[arg(long)]
    front_spin_us: Option<u64>,
    /// Microseconds the backend's waits spin before sleeping [default: 20].
    #[arg(long)]
    back_spin_us: Option<u64>,
    /// Peers to measure beside the designs in the same run, interleaved with them: `dpdk`
    /// (DPDK's vhost-user and virtio-user devices under dpdk-testpmd; needs Debian's dpdk-dev,
    /// librte-net-vhost23, librte-net-virtio23 and librte-mempool-ring23). Adds about 6 s per
    /// direction, size and round.
    #[arg(long = "peer", value_delimiter = ',', value_enum)]
    peers: Option<Vec<Peer>>,
    /// Where to write results [default: results/<unix time>].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Offload settings of the TCP runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Offload {
    /// 64 KiB segments with blank checksums cross as netif GSO packets.
    On,
    /// The kernel segments and checksums every frame before the TAP.
    Off,
    /// Both, interleaved.
    Both,
}

#[derive(Debug, clap::Args)]
// A negative number is a bad value of its option, named as such, not an unknown flag.
#[command(allow_negative_numbers = true)]
struct TcpArgs {
    /// Designs (comma-separated) [default: grant-copy, grant-map, slots:256, ring:8:greedy,
    /// ring:8:adaptive].
    #[arg(long, value_delimiter = ',', value_parser = design_name)]
    designs: Option<Vec<String>>,
    /// Directions (comma-separated): tx (the guest sends), rx (the guest receives), rr
    /// (request/response with sockperf ping-pong, the ends blocking), rr-busy (the same, the
    /// ends busy-polling).
    // The values are told above: Dir's own texts describe compare's frames, not TCP.
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_values_t = [Dir::Tx, Dir::Rx],
        hide_possible_values = true
    )]
    dirs: Vec<Dir>,
    /// TAP offloads.
    #[arg(long, value_enum, default_value = "on")]
    offload: Offload,
    /// Seconds of iperf3 (after one omitted second) or sockperf per run, at least 1.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    seconds: u32,
    /// Interleaved rounds, at least 1.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Grant cost mode: xen (calibrated first, as for compare), kernel, none or
    /// model:<call>,<copy>,<map>,<unmap>.
    #[arg(long, default_value = "xen", value_parser = cost_mode_name)]
    cost: String,
    /// Busy-poll the ends' event channels (they share their cores with TCP and iperf3).
    #[arg(long)]
    busy: bool,
    /// Leave out the kernel veth reference.
    #[arg(long)]
    no_veth: bool,
    /// Parallel TCP streams (iperf3 -P, 1 to 128), comma-separated: each a run of its own
    /// (an axis with its own chart when there are two or more).
    #[arg(long, value_delimiter = ',', default_values_t = [1u32],
          value_parser = clap::value_parser!(u32).range(1..=128))]
    streams: Vec<u32>,
    /// Microseconds the frontend's event-channel waits spin before sleeping.
    #[arg(long, default_value_t = DEFAULT_SPIN_US[0])]
    front_spin_us: u64,
    /// The same for the backend.
    #[arg(long, default_value_t = DEFAULT_SPIN_US[1])]
    back_spin_us: u64,
    /// Where to write results [default: results/tcp-<unix time>].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs; an error is printed on one line with each of its causes once (see
/// [`netstage_platform::cli::exit_code`]).
fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    netstage_platform::cli::exit_code("experiments", run)
}

fn run() -> anyhow::Result<()> {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a.starts_with("role-"))
    {
        return run_role(RoleCli::parse().cmd);
    }
    match Cli::parse().cmd {
        Cmd::Tcp(a) => tcp(a),
        Cmd::Report { dir } if dir.join("tcp.json").exists() => {
            let r: experiments::tcp::TcpResults =
                serde_json::from_str(&std::fs::read_to_string(dir.join("tcp.json"))?)
                    .with_context(|| format!("{} is not a TCP run's results", dir.display()))?;
            let md = experiments::tcp::tcp_markdown(&r);
            std::fs::write(dir.join("tcp.md"), &md)?;
            print!("{md}");
            tcp_chart(&r, &dir);
            Ok(())
        }
        Cmd::Report { dir } => {
            let r: Results = serde_json::from_str(
                &std::fs::read_to_string(dir.join("results.json"))
                    .with_context(|| format!("no results.json in {}", dir.display()))?,
            )?;
            let md = markdown(&r);
            std::fs::write(dir.join("report.md"), &md)?;
            write_summary(&r, &dir)?;
            print!("{md}");
            plots(&r, &dir);
            Ok(())
        }
        Cmd::Compare(a) => compare(a),
        Cmd::Soak(a) => soak_cmd::soak(a),
        Cmd::Latency(a) => latency_cmd::latency(a),
        Cmd::Diff { a, b } if a.join("tcp.json").exists() && b.join("tcp.json").exists() => {
            let load = |d: &Path| -> anyhow::Result<experiments::tcp::TcpResults> {
                Ok(serde_json::from_str(&std::fs::read_to_string(
                    d.join("tcp.json"),
                )?)?)
            };
            let changes = experiments::tcp::tcp_diff(&load(&a)?, &load(&b)?);
            if changes.is_empty() {
                bail!("the two TCP runs have no design in common");
            }
            print!(
                "{}",
                experiments::changes_table(&changes, "Gbit/s", false, |v| format!("{v:.2}"))
            );
            Ok(())
        }
        Cmd::Diff { a, b } => {
            let load = |d: &Path| -> anyhow::Result<Results> {
                Ok(serde_json::from_str(
                    &std::fs::read_to_string(d.join("results.json"))
                        .with_context(|| format!("no results.json in {}", d.display()))?,
                )?)
            };
            let (a, b) = (load(&a)?, load(&b)?);
            let changes = experiments::diff(&a, &b);
            if changes.is_empty() {
                bail!("the two runs have no scenario in common");
            }
            print!("{}", experiments::diff_markdown(&changes));
            let ratios = experiments::diff_ratios(&a, &b);
            if !ratios.is_empty() {
                print!("\n{}", experiments::diff_ratios_markdown(&ratios));
            }
            println!(
                "\nBrackets: 95 % intervals; a change only where the two runs' intervals do not \
                 overlap."
            );
            Ok(())
        }
    }
}

/// Spin before blocking by default, frontend and backend, microseconds (the platform's
/// default; the spin yields the CPU to a thread that shares the core).
const DEFAULT_SPIN_US: [u64; 2] = [20, 20];

/// One run of a round, shuffled with the others.
#[derive(Debug, Clone, Copy)]
enum Run {
    /// The scenario of this index.
    Design(usize),
    /// The peer run (direction, size) of this index.
    Peer(usize),
    /// The raw data-ring stream, written and read this many bytes at a time, this many
    /// writes published (and reads released) at once.
    Stream(usize, u32),
    /// The raw 64-byte burst stream with netif's TX requests and in-slot answers beside
    /// the data ring (`experiments::floor`).
    NetifStream,
}

/// A seed from the clock, for a run not given one (kept within TOML's integers).
fn clock_seed() -> u64 {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (ns % 1_000_000_000_000) as u64
}

/// Runs one process of a run.
fn run_role(cmd: RoleCmd) -> anyhow::Result<()> {
    // The TCP ends use the libraries' convenience layers, which allocate a buffer per
    // packet; compare's ends drive the queues, which allocate nothing per packet.
    if matches!(cmd, RoleCmd::TcpBackend(_) | RoleCmd::TcpFrontend(_)) {
        experiments::sys::keep_freed_memory();
    }
    match cmd {
        RoleCmd::TcpBackend(a) => experiments::tcp::tcp_backend(&a),
        RoleCmd::TcpFrontend(a) => experiments::tcp::tcp_frontend(&a),
        RoleCmd::Backend(a) => roles::backend(&a),
        RoleCmd::StreamWriter(a) => roles::stream_writer(&a),
        RoleCmd::StreamReader(a) => roles::stream_reader(&a),
        RoleCmd::Frontend(a) => roles::frontend(&a),
    }
}

/// Seconds of a measured run: above 0, at most an hour.
fn run_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 3600.0 => Ok(x),
        Ok(x) => Err(format!("{x} s is not above 0 and at most 3600")),
        Err(e) => Err(e.to_string()),
    }
}

/// A design's name, as `--design`/`--designs` take it: clap names the option and the value
/// when it does not parse.
fn design_name(s: &str) -> Result<String, String> {
    s.parse::<netstage_fallback::Design>()
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// A grant cost mode, as `--cost` takes it: the calibrated `xen` preset or a
/// [`netstage_platform::sim::CostMode`].
fn cost_mode_name(s: &str) -> Result<String, String> {
    if s == calibrate::XEN_PRESET {
        return Ok(s.to_string());
    }
    sim_cost_mode_name(s).map_err(|e| format!("{e} (or xen, the calibrated preset)"))
}

/// A [`netstage_platform::sim::CostMode`], as a command without the calibration takes it.
fn sim_cost_mode_name(s: &str) -> Result<String, String> {
    s.parse::<netstage_platform::sim::CostMode>()
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// `results/<kind>-<unix time>`: where a command not given `--out` writes.
fn results_dir(kind: &str) -> PathBuf {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from("results").join(format!("{kind}-{t}"))
}

/// Writes the summary with its intervals: summary.csv and summary.json.
fn write_summary(r: &Results, out: &Path) -> anyhow::Result<()> {
    std::fs::write(out.join("summary.csv"), experiments::summary_csv(r))?;
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&experiments::summary_json(r))?,
    )?;
    Ok(())
}

struct Scenario {
    design: String,
    dir: Dir,
    size: SizeSpec,
    queues: u16,
}

fn compare(a: CompareArgs) -> anyhow::Result<()> {
    let plan = ComparePlan::resolve(&a)?;
    // Found before anything runs: a missing peer fails the run at once, not after minutes.
    let dpdk = if plan.peers.contains(&Peer::Dpdk) {
        Some(Dpdk::detect()?)
    } else {
        None
    };
    if experiments::sys::cpus() < 2 {
        eprintln!("experiments: only one CPU: frontend and backend will share it");
    }
    let out = a.out.clone().unwrap_or_else(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("results").join(t.to_string())
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    experiments::sys::remove_stale_worlds();
    std::fs::write(out.join("scenario.toml"), toml::to_string(&plan.ran())?)?;
    let scenarios = scenarios_of(&plan.dirs, &plan.sizes, &plan.queues, &plan.designs);
    if dpdk.is_some() && plan.sizes.iter().any(SizeSpec::is_mixed) {
        eprintln!("experiments: testpmd sends one frame size: the mixed sizes run without it");
    }
    let peer_runs = plan.peer_runs(dpdk.is_some());
    let runs = runs_of(scenarios.len(), peer_runs.len(), plan.stream);
    let total = runs.len() as u64 * u64::from(plan.rounds);
    let bar = progress_bar(total);
    let exe = std::env::current_exe()?;
    let spin_us = [plan.front_spin_us, plan.back_spin_us];
    let (role_cost, calibration) = resolve_cost(&exe, &plan.cost, plan.seconds, spin_us, &bar)?;
    let cfg = RunCfg {
        seconds: plan.seconds,
        busy: plan.busy,
        armed: plan.armed,
        cost: &role_cost,
        spin_us,
    };
    let mut results = plan.results(calibration);
    let stop = interrupt_flag()?;
    let sweep_ctx = SweepCtx {
        exe: &exe,
        cfg: &cfg,
        scenarios: &scenarios,
        peer_runs: &peer_runs,
        dpdk: dpdk.as_ref(),
        seconds: plan.seconds,
        bar: &bar,
        total,
    };
    let failure = sweep_ctx.rounds(&runs, &plan, &stop, &mut results, &out)?;
    bar.finish_and_clear();
    if let Some(rec) = results.record.as_mut() {
        rec.partial = rec.stopped_by.is_some();
    }
    write_outputs(&results, &out)?;
    match failure {
        Some(e) => Err(e.context(format!(
            "the sweep stopped; the runs before are in {}",
            out.display()
        ))),
        None if stop.load(Ordering::Relaxed) => bail!(
            "interrupted; the runs finished before are in {}",
            out.display()
        ),
        None => Ok(()),
    }
}

/// A `compare` sweep with every setting resolved: the flags, over the scenario file's
/// keys, over the defaults.
struct ComparePlan {
    designs: Vec<String>,
    sizes: Vec<SizeSpec>,
    dirs: Vec<Dir>,
    queues: Vec<u16>,
    rounds: u32,
    seconds: f64,
    seed: u64,
    busy: bool,
    armed: bool,
    cost: String,
    stream: bool,
    front_spin_us: u64,
    back_spin_us: u64,
    peers: Vec<Peer>,
}

impl ComparePlan {
    /// Resolves `a`'s sweep (its scenario file, overridden by its flags) and fills in the
    /// defaults (docs/harness.md, "Rounds and seconds").
    fn resolve(a: &CompareArgs) -> anyhow::Result<ComparePlan> {
        let cli = Sweep {
            designs: a.designs.clone(),
            sizes: a.sizes.clone(),
            dirs: a.dirs.clone(),
            queues: a.queues.clone(),
            rounds: a.rounds,
            seconds: a.seconds,
            busy: a.busy.then_some(true),
            armed: a.armed.then_some(true),
            cost: a.cost.clone(),
            stream: a.no_stream.then_some(false),
            front_spin_us: a.front_spin_us,
            back_spin_us: a.back_spin_us,
            peers: a.peers.clone(),
            seed: a.seed,
        };
        cli.check().map_err(anyhow::Error::msg)?;
        let sweep = match &a.scenario {
            Some(f) => Sweep::load(f)?.overridden_by(cli),
            None => cli,
        };
        // The file and the flags may each be sound and not together (busy and armed).
        sweep.check().map_err(anyhow::Error::msg)?;
        let cpus = experiments::sys::cpus();
        let queues = sweep
            .queues
            .unwrap_or_else(|| default_queues(a.quick, cpus));
        if let Some(q) = queues.iter().find(|q| 2 * usize::from(**q) > cpus) {
            eprintln!(
                "experiments: {q} queues on {cpus} cores: each end's queue threads share its core \
                 (the report says so)"
            );
        }
        // Seven rounds of 0.3 s take about five minutes on two cores; --quick about 40 s.
        Ok(ComparePlan {
            designs: sweep.designs.unwrap_or_else(|| default_designs(a.quick)),
            sizes: sweep.sizes.unwrap_or_else(|| default_sizes(a.quick)),
            dirs: sweep
                .dirs
                .unwrap_or_else(|| vec![Dir::Tx, Dir::Rx, Dir::Rr, Dir::RrBusy]),
            queues,
            rounds: sweep.rounds.unwrap_or(if a.quick { 4 } else { 7 }),
            seconds: sweep.seconds.unwrap_or(if a.quick { 0.2 } else { 0.3 }),
            seed: sweep.seed.unwrap_or_else(clock_seed),
            busy: sweep.busy.unwrap_or(false),
            armed: sweep.armed.unwrap_or(false),
            cost: sweep.cost.unwrap_or_else(|| calibrate::XEN_PRESET.into()),
            stream: sweep.stream.unwrap_or(true),
            front_spin_us: sweep.front_spin_us.unwrap_or(DEFAULT_SPIN_US[0]),
            back_spin_us: sweep.back_spin_us.unwrap_or(DEFAULT_SPIN_US[1]),
            peers: sweep.peers.unwrap_or_default(),
        })
    }

    /// The sweep as run, every key resolved: what `scenario.toml` records.
    fn ran(&self) -> Sweep {
        Sweep {
            designs: Some(self.designs.clone()),
            sizes: Some(self.sizes.clone()),
            dirs: Some(self.dirs.clone()),
            queues: Some(self.queues.clone()),
            rounds: Some(self.rounds),
            seconds: Some(self.seconds),
            busy: Some(self.busy),
            armed: Some(self.armed),
            cost: Some(self.cost.clone()),
            stream: Some(self.stream),
            front_spin_us: Some(self.front_spin_us),
            back_spin_us: Some(self.back_spin_us),
            peers: (!self.peers.is_empty()).then(|| self.peers.clone()),
            seed: Some(self.seed),
        }
    }

    /// The peer's runs: the throughput directions at each fixed size (testpmd sends one
    /// size), none without a peer.
    fn peer_runs(&self, with_peer: bool) -> Vec<(Dir, usize)> {
        if !with_peer {
            return Vec::new();
        }
        self.dirs
            .iter()
            .filter(|d| !d.is_rr())
            .flat_map(|d| {
                self.sizes
                    .iter()
                    .filter_map(move |s| Some((*d, s.fixed()?)))
            })
            .collect()
    }

    /// The empty results of this sweep, with the machine and the run record.
    fn results(&self, calibration: Option<calibrate::Calibration>) -> Results {
        let mut machine = Machine::detect(&self.cost, poll_name(self.busy, self.armed));
        machine.front_spin_us = Some(self.front_spin_us);
        machine.back_spin_us = Some(self.back_spin_us);
        Results {
            machine,
            samples: Vec::new(),
            stream_gbps: Vec::new(),
            stream_64b_mps: Vec::new(),
            stream_64b_burst_mps: Vec::new(),
            stream_64b_netif_mps: Vec::new(),
            peers: Vec::new(),
            peer_failures: Vec::new(),
            seed: Some(self.seed),
            calibration,
            record: Some(experiments::RunRecord::now()),
        }
    }
}

/// The default designs: the eight the report compares, or three with `--quick`.
fn default_designs(quick: bool) -> Vec<String> {
    let designs: &[&str] = if quick {
        &["grant-copy", "slots:256", "ring:8:greedy"]
    } else {
        &[
            "grant-copy",
            "grant-map",
            "linux",
            "slots:256",
            "slots-rfc:256",
            "ring:8:greedy",
            "ring:8:greedy:wait",
            "ring:8:adaptive",
        ]
    };
    designs.iter().map(|d| d.to_string()).collect()
}

/// The default sizes: 64, 256, 1500 and 65535 bytes, or 64 and 1500 with `--quick`.
fn default_sizes(quick: bool) -> Vec<SizeSpec> {
    let bytes: &[usize] = if quick {
        &[64, 1500]
    } else {
        &[64, 256, 1500, 65535]
    };
    bytes.iter().copied().map(SizeSpec::Fixed).collect()
}

/// The default queue counts: 1, and 2 too on 4 cores or more unless `--quick`.
fn default_queues(quick: bool, cpus: usize) -> Vec<u16> {
    if cpus >= 4 && !quick {
        vec![1, 2]
    } else {
        vec![1]
    }
}

/// 64-byte writes the burst-at-a-time raw stream publishes together (and reads it releases
/// together): as many as a queue's burst call takes packets.
const STREAM_BURST: u32 = 64;

/// A round's runs before shuffling: each scenario, each peer run, and the raw streams
/// (64 KiB writes, 64 B writes one by one, 64 B writes a burst at a time, and those with
/// netif's TX requests) when `stream`.
fn runs_of(scenarios: usize, peer_runs: usize, stream: bool) -> Vec<Run> {
    let mut runs: Vec<Run> = (0..scenarios).map(Run::Design).collect();
    runs.extend((0..peer_runs).map(Run::Peer));
    if stream {
        runs.extend([
            Run::Stream(65536, 1),
            Run::Stream(64, 1),
            Run::Stream(64, STREAM_BURST),
            Run::NetifStream,
        ]);
    }
    runs
}

/// The scenarios of a sweep, in its order: per direction, queue count, size and design.
/// Request/response uses one frame size (a 1-byte payload) and one queue.
fn scenarios_of(
    dirs: &[Dir],
    sizes: &[SizeSpec],
    queues: &[u16],
    designs: &[String],
) -> Vec<Scenario> {
    let rr_sizes = [SizeSpec::Fixed(15)];
    let mut scenarios = Vec::new();
    for dir in dirs {
        let (sz, qs): (&[SizeSpec], &[u16]) = if dir.is_rr() {
            (&rr_sizes, &[1])
        } else {
            (sizes, queues)
        };
        for q in qs {
            for size in sz {
                for d in designs {
                    scenarios.push(Scenario {
                        design: d.clone(),
                        dir: *dir,
                        size: size.clone(),
                        queues: *q,
                    });
                }
            }
        }
    }
    scenarios
}

/// The sweep's progress bar over `len` runs (hidden when stderr is not a terminal).
fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} runs, {elapsed} elapsed, ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Writes every output of a `compare` run into `out` and prints the report.
fn write_outputs(results: &Results, out: &Path) -> anyhow::Result<()> {
    save_json(&out.join("results.json"), results)?;
    std::fs::write(out.join("results.csv"), csv(results))?;
    write_summary(results, out)?;
    if !results.peers.is_empty() {
        std::fs::write(out.join("peers.csv"), experiments::peers_csv(results))?;
    }
    let md = markdown(results);
    std::fs::write(out.join("report.md"), &md)?;
    print!("{md}");
    plots(results, out);
    println!("\nresults in {}", out.display());
    Ok(())
}

/// Writes `v` as pretty JSON to `path`, through a temporary file so a reader never sees
/// half of it.
fn save_json(path: &Path, v: &impl serde::Serialize) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(v)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Set by Ctrl-C (SIGINT) or SIGTERM: the sweep stops after the run in progress and writes
/// what it has. A second Ctrl-C ends the process at once (the default action).
fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_default(sig, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// What one round has finished, by index in the sweep's order.
struct RoundDone {
    designs: Vec<Option<Sample>>,
    peers: Vec<Option<PeerSample>>,
}

impl RoundDone {
    /// Moves the finished runs into the results (in the sweep's order).
    fn move_into(&mut self, results: &mut Results) {
        results
            .samples
            .extend(self.designs.iter_mut().filter_map(Option::take));
        results
            .peers
            .extend(self.peers.iter_mut().filter_map(Option::take));
    }
}

/// What the runs of a sweep share.
struct SweepCtx<'a> {
    exe: &'a Path,
    cfg: &'a RunCfg<'a>,
    scenarios: &'a [Scenario],
    peer_runs: &'a [(Dir, usize)],
    dpdk: Option<&'a Dpdk>,
    seconds: f64,
    bar: &'a ProgressBar,
    total: u64,
}

impl SweepCtx<'_> {
    /// Runs `plan`'s rounds, every run of a round in an order shuffled afresh from the
    /// seed, into `results` (each run also appended to `out/samples.jsonl`, each finished
    /// round saved to `out/results.json`). Returns the error that stopped the sweep, if a
    /// run failed (an interruption stops it too, with none); the reason is in the record.
    fn rounds(
        &self,
        runs: &[Run],
        plan: &ComparePlan,
        stop: &AtomicBool,
        results: &mut Results,
        out: &Path,
    ) -> anyhow::Result<Option<anyhow::Error>> {
        let log_path = out.join("samples.jsonl");
        let mut log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        for (round, order) in (1..=plan.rounds).zip(run_order(runs.len(), plan.rounds, plan.seed)) {
            // Saved in the sweep's order (the report lists designs as first seen); each
            // sample records its place in the shuffled order.
            let mut done = RoundDone {
                designs: vec![None; self.scenarios.len()],
                peers: vec![None; self.peer_runs.len()],
            };
            for (position, k) in (0u32..).zip(order) {
                let step = self.step(runs[k], round, position, &mut done, results, &mut log);
                let stopped_by = if stop.load(Ordering::Relaxed) {
                    Some("interrupted (Ctrl-C or SIGTERM)".to_string())
                } else {
                    step.as_ref().err().map(causes)
                };
                if let Some(why) = stopped_by {
                    if let Some(rec) = results.record.as_mut() {
                        rec.stopped_by = Some(why);
                    }
                    done.move_into(results);
                    return Ok(step.err().filter(|_| !stop.load(Ordering::Relaxed)));
                }
            }
            done.move_into(results);
            // Each finished round is on disk: `report` renders it if the run stops later.
            save_json(&out.join("results.json"), results)?;
        }
        Ok(None)
    }

    /// Runs a raw stream (`chunk`-byte writes, `batch` at a time, with netif's TX ring when
    /// `netif`), keeps its rate in `results` and the log; what ran, for the progress line.
    fn stream(
        &self,
        (chunk, batch): (usize, u32),
        netif: bool,
        results: &mut Results,
        log: &mut std::fs::File,
    ) -> anyhow::Result<String> {
        let with = if netif { " with netif requests" } else { "" };
        let what = format!("raw data-ring stream{with}, {chunk} B writes, {batch} at a time");
        self.bar.set_message(what.clone());
        let rate = run_stream(self.exe, self.seconds, (chunk, batch), netif)
            .with_context(|| format!("the {what}"))?;
        let mps = rate / chunk as f64 / 1e6;
        match (chunk, batch, netif) {
            (_, _, true) => results.stream_64b_netif_mps.push(mps),
            (64, 1, _) => results.stream_64b_mps.push(mps),
            (64, _, _) => results.stream_64b_burst_mps.push(mps),
            _ => results.stream_gbps.push(rate * 8.0 / 1e9),
        }
        let line = serde_json::json!({ "stream": { "chunk": chunk, "batch": batch, "netif": netif, "bytes_per_s": rate } });
        writeln!(log, "{line}")?;
        Ok(format!("{what}: {rate:.0} B/s"))
    }

    /// Runs one step of a round; a finished design or peer run is also appended to the
    /// sweep's log (`samples.jsonl`) at once, and a line goes to stderr when it is not a
    /// terminal (where the progress bar is hidden).
    fn step(
        &self,
        run: Run,
        round: u32,
        position: u32,
        done: &mut RoundDone,
        results: &mut Results,
        log: &mut std::fs::File,
    ) -> anyhow::Result<()> {
        let what = match run {
            Run::Design(i) => {
                let sc = &self.scenarios[i];
                let name = experiments::label(&sc.design, sc.queues);
                let what = format!("{} {} {name}", sc.dir, sc.size);
                self.bar.set_message(what.clone());
                let s = run_one(self.exe, sc, round, self.cfg)
                    .with_context(|| format!("round {round}: {what}"))?;
                let s = Sample {
                    position: Some(position),
                    ..s
                };
                writeln!(log, "{}", serde_json::json!({ "sample": &s }))?;
                let rate = format!("{what}: {:.0} pps", s.pps);
                done.designs[i] = Some(s);
                rate
            }
            Run::Peer(i) => {
                let (dir, size) = self.peer_runs[i];
                let what = format!("{dir} {size} B dpdk-testpmd");
                self.bar.set_message(what.clone());
                let Some(dpdk) = self.dpdk else {
                    return Ok(());
                };
                // A peer that fails does not cost the run its designs' results: the
                // failure is reported (terminal, results.json, report) and the sweep
                // goes on.
                match run_dpdk(dpdk, round, dir, size, self.seconds) {
                    Ok(p) => {
                        writeln!(log, "{}", serde_json::json!({ "peer": &p }))?;
                        let rate = format!("{what}: {:.0} pps", p.pps);
                        done.peers[i] = Some(p);
                        rate
                    }
                    Err(e) => {
                        let why = format!("round {round}: {what}: {}", causes(&e));
                        self.bar.suspend(|| eprintln!("experiments: {why}"));
                        results.peer_failures.push(why.clone());
                        why
                    }
                }
            }
            Run::Stream(chunk, batch) => self.stream((chunk, batch), false, results, log)?,
            Run::NetifStream => self.stream((64, STREAM_BURST), true, results, log)?,
        };
        self.bar.inc(1);
        if !std::io::stderr().is_terminal() {
            eprintln!(
                "experiments: run {}/{} (round {round}): {what}",
                self.bar.position(),
                self.total
            );
        }
        Ok(())
    }
}

/// The cost mode the roles run with, and the calibration behind it: the `xen` preset is
/// measured here (a few interleaved rounds of [`calibrate::CALIBRATION_RUNS`] in the `none`
/// mode, `seconds` each) and becomes a `model:` string; any other mode passes as it is.
fn resolve_cost(
    exe: &Path,
    cost: &str,
    seconds: f64,
    spin_us: [u64; 2],
    bar: &ProgressBar,
) -> anyhow::Result<(String, Option<calibrate::Calibration>)> {
    if cost != calibrate::XEN_PRESET {
        return Ok((cost.to_string(), None));
    }
    let cfg = RunCfg {
        seconds,
        busy: false,
        armed: false,
        cost: "none",
        spin_us,
    };
    let mut runs = Vec::new();
    for round in 1..=calibrate::CALIBRATION_ROUNDS {
        for (design, dir) in calibrate::CALIBRATION_RUNS {
            bar.set_message(format!("calibrating the xen preset: {dir} {design}"));
            let sc = Scenario {
                design: design.to_string(),
                dir,
                size: SizeSpec::Fixed(calibrate::SEED_SIZE),
                queues: 1,
            };
            let s = run_one(exe, &sc, round, &cfg)
                .with_context(|| format!("calibrating the xen preset: {dir} {design}"))?;
            runs.push(calibrate::CalibrationRun {
                round,
                design: s.design,
                dir,
                pps: s.pps,
            });
        }
    }
    let c = calibrate::Calibration::from_runs(runs).map_err(anyhow::Error::msg)?;
    Ok((c.cost_mode().to_string(), Some(c)))
}

/// The upper bound: a byte stream through one order-8 data ring between two processes on
/// different cores, no packets, written and read `chunk` bytes at a time, `batch` writes
/// published (and reads released) at once. Returns bytes per second.
fn run_stream(
    exe: &Path,
    seconds: f64,
    (chunk, batch): (usize, u32),
    netif: bool,
) -> anyhow::Result<f64> {
    let world = PathBuf::from(format!("/dev/shm/netstage-stream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&world);
    let common = |core: usize| -> Vec<String> {
        let mut args = vec![
            "--world".into(),
            world.display().to_string(),
            "--seconds".into(),
            seconds.to_string(),
            "--core".into(),
            core.to_string(),
            "--chunk".into(),
            chunk.to_string(),
            "--batch".into(),
            batch.to_string(),
        ];
        if netif {
            args.push("--netif".into());
        }
        args
    };
    let cores = experiments::sys::cpus();
    let reader = Command::new(exe)
        .arg("role-stream-reader")
        .args(common(1 % cores))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The reader creates the world; the writer joins it.
    let t = Instant::now();
    while !world.join("dom0").exists() {
        if t.elapsed() > Duration::from_secs(20) {
            bail!("the stream reader did not start");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut writer = Command::new(exe)
        .arg("role-stream-writer")
        .args(common(0))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = reader.wait_with_output()?;
    let _ = Command::new("kill")
        .args(["-TERM", &writer.id().to_string()])
        .status();
    let _ = writer.wait();
    let _ = std::fs::remove_dir_all(&world);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(child::failed(
            "the stream reader",
            "failed",
            out.status,
            &stderr,
        ));
    }
    let r: roles::StreamReport = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or(""),
    )?;
    Ok(r.bytes as f64 / r.seconds.max(1e-9))
}

/// One run of DPDK's pair at one direction and size, bracketed by probes: the guest side on
/// core 0 (the frontend's), the host side on core 1 (the backend's), as many one-second
/// periods as the designs' runs have seconds (at least one).
fn run_dpdk(
    dpdk: &Dpdk,
    round: u32,
    dir: Dir,
    size: usize,
    seconds: f64,
) -> anyhow::Result<PeerSample> {
    let cores = experiments::sys::cpus();
    let probe_ns = probe(20_000);
    let (periods, commands) = dpdk.run(
        dir,
        size,
        seconds.ceil().max(1.0) as usize,
        (0, 1 % cores),
        Path::new("/dev/shm"),
    )?;
    let probe_after_ns = probe(20_000);
    let pps = experiments::spread(&periods).map_or(0.0, |s| s.median);
    Ok(PeerSample {
        round,
        peer: Peer::Dpdk.to_string(),
        dir,
        size,
        pps,
        gbps: pps * size as f64 * 8.0 / 1e9,
        periods,
        probe_ns,
        probe_after_ns,
        commands: commands.to_vec(),
    })
}

/// How a sweep's ends wait, as its report names it.
fn poll_name(busy: bool, armed: bool) -> &'static str {
    match experiments::roles::poll_mode(busy, armed) {
        netstage_fallback::PollMode::BusyPoll => "busy-poll",
        netstage_fallback::PollMode::BlockArmed => "blocking, armed at once",
        netstage_fallback::PollMode::Block => "blocking",
    }
}

/// What every run of a sweep shares.
#[derive(Debug, Clone, Copy)]
struct RunCfg<'a> {
    /// Measured seconds.
    seconds: f64,
    /// Busy-poll the throughput runs.
    busy: bool,
    /// Blocking waits arm the rings at once (`PollMode::BlockArmed`).
    armed: bool,
    /// Grant cost mode.
    cost: &'a str,
    /// Spin before blocking, frontend and backend, microseconds.
    spin_us: [u64; 2],
}

/// The world directory of this process's runs.
fn run_world() -> PathBuf {
    let world = PathBuf::from(format!(
        "/dev/shm/netstage-experiments-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&world);
    world
}

/// Starts the backend of scenario `sc` in `world` and waits until it serves; returns it,
/// the tail of its stderr (drained as it runs) and the arguments of the frontend's role. A
/// backend that exits first is an error showing the end of its stderr.
fn start_backend(
    exe: &Path,
    world: &Path,
    sc: &Scenario,
    cfg: &RunCfg<'_>,
) -> anyhow::Result<(std::process::Child, StderrTail, Vec<String>)> {
    let role_args = |cores: &[usize], spin: u64| -> Vec<String> {
        let mut v = vec![
            "--spin-us".to_string(),
            spin.to_string(),
            "--world".into(),
            world.display().to_string(),
            "--design".into(),
            sc.design.clone(),
            "--size".into(),
            sc.size.to_string(),
            "--dir".into(),
            sc.dir.to_string(),
            "--seconds".into(),
            cfg.seconds.to_string(),
            "--cost".into(),
            cfg.cost.into(),
            "--core".into(),
            cores
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
            "--queues".into(),
            sc.queues.to_string(),
        ];
        if cfg.busy || sc.dir == Dir::RrBusy {
            v.push("--busy".into());
        } else if cfg.armed {
            v.push("--armed".into());
        }
        v
    };
    let (front_cores, back_cores) =
        experiments::sys::placement(sc.queues, experiments::sys::cpus());
    let mut back = Command::new(exe)
        .arg("role-backend")
        .args(role_args(&back_cores, cfg.spin_us[1]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the backend process")?;
    let stderr = StderrTail::capture(&mut back);
    let ready = roles::ready_marker(world);
    let t = Instant::now();
    while !ready.exists() {
        if let Some(st) = back.try_wait()? {
            return Err(child::failed(
                "the backend",
                "exited early",
                st,
                &stderr.finish(),
            ));
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = back.kill();
            let st = back.wait()?;
            let e = child::failed("the backend", "was killed", st, &stderr.finish());
            return Err(e.context("the backend did not come up within 20 s"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((back, stderr, role_args(&front_cores, cfg.spin_us[0])))
}

/// One run: a fresh world, the backend on core 1, a probe, the frontend on core 0.
fn run_one(exe: &Path, sc: &Scenario, round: u32, cfg: &RunCfg<'_>) -> anyhow::Result<Sample> {
    let world = run_world();
    let (mut back, back_stderr, front_args) = start_backend(exe, &world, sc, cfg)?;
    let probe_ns = probe(20_000);
    let busy0 = experiments::sys::machine_busy_seconds();
    let back_cpu0 = experiments::sys::process_cpu_seconds(back.id());
    let children0 = experiments::sys::children_cpu_seconds();
    let span = Instant::now();
    let front = Command::new(exe)
        .arg("role-frontend")
        .args(&front_args)
        .output()
        .context("cannot run the frontend process")?;
    let span_s = span.elapsed().as_secs_f64();
    let other_busy_s = match (
        busy0,
        experiments::sys::machine_busy_seconds(),
        back_cpu0,
        experiments::sys::process_cpu_seconds(back.id()),
    ) {
        (Some(m0), Some(m1), Some(b0), Some(b1)) => {
            let front_cpu = experiments::sys::children_cpu_seconds() - children0;
            Some((m1 - m0 - front_cpu - (b1 - b0)).max(0.0))
        }
        _ => None,
    };
    // Stop the backend: it prints its report on SIGTERM.
    let _ = Command::new("kill")
        .args(["-TERM", &back.id().to_string()])
        .status();
    let mut line = String::new();
    if let Some(out) = back.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let back_status = back.wait()?;
    let probe_after_ns = probe(20_000);
    let _ = std::fs::remove_dir_all(&world);
    let back_stderr = back_stderr.finish();
    if !front.status.success() {
        let front_stderr = String::from_utf8_lossy(&front.stderr);
        let e = child::failed("the frontend", "failed", front.status, &front_stderr);
        if back_status.success() {
            return Err(e);
        }
        // The backend's end is often the frontend's cause: both are shown.
        let back = child::failed("the backend", "failed", back_status, &back_stderr);
        bail!("{e}\n{back}");
    }
    let fr: FrontendReport = serde_json::from_str(
        String::from_utf8_lossy(&front.stdout)
            .lines()
            .last()
            .unwrap_or(""),
    )
    .context("the frontend printed no report")?;
    let br: BackendReport = serde_json::from_str(line.trim()).unwrap_or_default();
    let pps = fr.packets as f64 / fr.seconds.max(1e-9);
    Ok(Sample {
        round,
        position: None,
        design: sc.design.clone(),
        design_used: fr.design,
        dir: sc.dir,
        size: sc.size.clone(),
        queues: sc.queues,
        pps,
        // The bytes the frontend counted: a mix's sizes as they came.
        gbps: fr.bytes as f64 / fr.seconds.max(1e-9) * 8.0 / 1e9,
        packets: fr.packets,
        seconds: fr.seconds,
        front_cpu_s: fr.cpu_seconds,
        back_cpu_s: br.cpu_seconds,
        probe_ns,
        probe_after_ns,
        other_busy_s,
        span_s,
        check: if sc.dir == Dir::Tx {
            br.check
        } else {
            fr.check
        },
        latency_ns: fr.latency_ns,
        timeline: fr.timeline,
        front_metrics: fr.metrics,
        back_metrics: br.metrics,
        grants: br.grants,
    })
}

/// Draws the plots next to the report (messages go to stderr: stdout is the report). A missing font does not lose the run's results: the
/// reason (and the package that fixes it) is printed instead.
fn plots(r: &Results, dir: &Path) {
    match experiments::plots::write_plots(r, dir) {
        Ok(files) => eprintln!(
            "\nplots: {} files ({}.svg/.png)",
            files.len(),
            dir.join("*").display()
        ),
        Err(e) => eprintln!("\nplots not drawn: {e}"),
    }
}

/// `experiments tcp`: every design (and veth) in each direction and offload setting,
/// interleaved over rounds; writes tcp.json, tcp.csv, tcp.md and the tcp chart.
fn tcp(a: TcpArgs) -> anyhow::Result<()> {
    use experiments::tcp::{self, TcpPlan, TcpResults};
    let mut designs = a.designs.clone().unwrap_or_else(|| {
        [
            "grant-copy",
            "grant-map",
            "slots:256",
            "ring:8:greedy",
            "ring:8:adaptive",
        ]
        .map(String::from)
        .to_vec()
    });
    tcp::check_prerequisites_for(&a.dirs)?;
    if !a.no_veth {
        designs.push("veth".into());
    }
    let plan = TcpPlan {
        designs,
        dirs: a.dirs.clone(),
        offloads: match a.offload {
            Offload::On => vec![true],
            Offload::Off => vec![false],
            Offload::Both => vec![true, false],
        },
        seconds: a.seconds,
        rounds: a.rounds,
        cost: a.cost.clone(),
        busy: a.busy,
        spin_us: [a.front_spin_us, a.back_spin_us],
        streams: a.streams.clone(),
    };
    let out = a.out.clone().unwrap_or_else(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("results").join(format!("tcp-{t}"))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    experiments::sys::remove_stale_worlds();
    let runs = tcp::plan_runs(&plan);
    let record = experiments::RunRecord::now();
    let bar = progress_bar(runs.len() as u64 * u64::from(plan.rounds));
    let exe = std::env::current_exe()?;
    let poll = if plan.busy { "busy-poll" } else { "blocking" };
    let mut machine = Machine::detect(&plan.cost, poll);
    let (role_cost, calibration) = resolve_cost(&exe, &plan.cost, 0.3, plan.spin_us, &bar)?;
    if let Some(c) = &calibration {
        machine.cost_mode = format!("{} ({})", plan.cost, c.cost_mode());
    }
    let plan = TcpPlan {
        cost: role_cost,
        ..plan
    };
    machine.front_spin_us = Some(plan.spin_us[0]);
    machine.back_spin_us = Some(plan.spin_us[1]);
    let mut results = TcpResults {
        machine,
        samples: Vec::new(),
        commands: tcp::commands(&plan),
        record: Some(record),
    };
    let stop = interrupt_flag()?;
    let mut log = std::fs::File::create(out.join("samples.jsonl"))
        .with_context(|| format!("cannot create {}", out.join("samples.jsonl").display()))?;
    let failure = tcp_rounds(
        &exe,
        &plan,
        &runs,
        &bar,
        &stop,
        &mut results,
        &mut log,
        &out,
    );
    bar.finish_and_clear();
    if let (Some(why), Some(rec)) = (&failure, results.record.as_mut()) {
        rec.partial = true;
        rec.stopped_by = Some(why.clone());
    }
    save_json(&out.join("tcp.json"), &results)?;
    std::fs::write(out.join("tcp.csv"), tcp::tcp_csv(&results))?;
    let md = tcp::tcp_markdown(&results);
    std::fs::write(out.join("tcp.md"), &md)?;
    print!("{md}");
    tcp_chart(&results, &out);
    println!("\nresults in {}", out.display());
    match failure {
        Some(why) => bail!("{why}; the runs finished before are in {}", out.display()),
        None => Ok(()),
    }
}

/// Runs `plan`'s rounds into `results`, each finished run appended to `log` (samples.jsonl)
/// and `tcp.json` rewritten after it, a line on stderr per run when it is not a terminal;
/// returns why it stopped early (a failing run, Ctrl-C or SIGTERM), if it did.
#[allow(clippy::too_many_arguments)]
fn tcp_rounds(
    exe: &Path,
    plan: &experiments::tcp::TcpPlan,
    runs: &[experiments::tcp::TcpRun],
    bar: &ProgressBar,
    stop: &AtomicBool,
    results: &mut experiments::tcp::TcpResults,
    log: &mut std::fs::File,
    out: &Path,
) -> Option<String> {
    let total = runs.len() * plan.rounds as usize;
    for round in 1..=plan.rounds {
        for run in runs {
            if stop.load(Ordering::Relaxed) {
                return Some("interrupted (Ctrl-C or SIGTERM)".into());
            }
            let (d, dir) = (&run.design, run.dir);
            bar.set_message(format!("{dir} {d}"));
            let s = match experiments::tcp::run_tcp(exe, plan, run, round) {
                Ok(s) => s,
                Err(e) => return Some(format!("round {round}: tcp {dir} {d}: {}", causes(&e))),
            };
            let kept = serde_json::to_string(&serde_json::json!({ "sample": &s }))
                .map_err(anyhow::Error::from)
                .and_then(|line| Ok(writeln!(log, "{line}")?));
            results.samples.push(s);
            if let Err(e) = kept.and_then(|()| save_json(&out.join("tcp.json"), results)) {
                return Some(format!("cannot keep the run: {}", causes(&e)));
            }
            bar.inc(1);
            if !std::io::stderr().is_terminal() {
                eprintln!(
                    "experiments: tcp run {}/{total} (round {round}): {dir} {d}",
                    bar.position()
                );
            }
        }
    }
    None
}

/// Draws the TCP charts next to the TCP report (messages go to stderr): goodput per
/// design and direction at the first offload setting and stream count that ran, and one
/// chart per axis the run swept ([`experiments::tcp::tcp_axis_charts`]).
fn tcp_chart(r: &experiments::tcp::TcpResults, dir: &Path) {
    let rows = experiments::tcp::tcp_rows(r);
    let Some(first) = r.samples.iter().find(|s| !s.dir.is_rr()) else {
        return;
    };
    let (offload, streams) = (first.offload, first.streams);
    let mut designs: Vec<String> = Vec::new();
    let mut dirs: Vec<Dir> = Vec::new();
    // Bulk directions only: request/response has its own table.
    for s in r.samples.iter().filter(|s| !s.dir.is_rr()) {
        if !designs.contains(&s.design) {
            designs.push(s.design.clone());
        }
        if !dirs.contains(&s.dir) {
            dirs.push(s.dir);
        }
    }
    let series: Vec<(std::borrow::Cow<'static, str>, Vec<f64>)> = dirs
        .iter()
        .map(|d| {
            let name = if *d == Dir::Tx {
                "tx (guest sends)"
            } else {
                "rx (guest receives)"
            };
            let v = designs
                .iter()
                .map(|x| {
                    rows.iter()
                        .find(|r| {
                            r.dir == *d
                                && &r.design == x
                                && r.streams == streams
                                && (r.offload == offload || x == "veth")
                        })
                        .map_or(0.0, |r| r.gbps.median)
                })
                .collect();
            (name.into(), v)
        })
        .collect();
    let caption = format!(
        "TCP goodput through each design (iperf3, offloads {}, {streams} stream(s))",
        if offload { "on" } else { "off" }
    );
    let mut drawn =
        experiments::plots::write_bar_chart(dir, "tcp", caption, "Gbit/s", designs, series);
    for c in experiments::tcp::tcp_axis_charts(r) {
        if drawn.is_err() {
            break;
        }
        let series = c.series.into_iter().map(|(l, v)| (l.into(), v)).collect();
        drawn =
            experiments::plots::write_bar_chart(dir, &c.name, c.caption, "Gbit/s", c.names, series);
    }
    if let Err(e) = drawn {
        eprintln!("\nplot not drawn: {e}");
    }
}
