//! The netstage comparison harness: every design through the same code paths, measured in
//! one run with interleaved rounds, reported as CSV, JSON, a markdown report and plots.
//!
//! This library holds the result model and the report rendering; the binary
//! (`experiments compare`, `experiments report`) runs the scenarios.

#![deny(unsafe_code)]

pub mod calibrate;
pub mod check;
pub mod child;
pub mod floor;
pub mod latency;
pub mod peer;
pub mod plots;
pub mod roles;
pub mod sizes;
pub mod soak;
pub mod stats;
pub mod stretches;
pub mod sweep;
#[allow(unsafe_code)]
pub mod sys;
pub mod tap;
pub mod tcp;
pub mod verdict;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use roles::Dir;
pub use sizes::SizeSpec;
pub use stats::{spread, Interval, Spread};

use stats::{per_round_ratios, set_aside_far, Bootstrap, Placement};

/// One measured run of one scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Round (the scenarios are interleaved round by round).
    pub round: u32,
    /// The run's place in its round's shuffled order, from 0 (none in results saved before
    /// the order was shuffled).
    #[serde(default)]
    pub position: Option<u32>,
    /// Design asked for.
    pub design: String,
    /// Design the frontend ended up using.
    pub design_used: String,
    /// Direction.
    pub dir: Dir,
    /// Packet sizes: a fixed size in bytes (a number in JSON, as before mixes existed) or a
    /// mix (`"imix"`, `"mix:64+65535"`; schema 3).
    pub size: SizeSpec,
    /// Queues (each end runs one thread per queue).
    #[serde(default = "one_queue")]
    pub queues: u16,
    /// Packets per second.
    pub pps: f64,
    /// Gigabits per second of packet data.
    pub gbps: f64,
    /// Packets in the window.
    pub packets: u64,
    /// Length of the window.
    pub seconds: f64,
    /// Frontend CPU seconds in the window.
    pub front_cpu_s: f64,
    /// Backend CPU seconds, whole process life.
    pub back_cpu_s: f64,
    /// Cross-core cache-line round trip measured just before the run, in nanoseconds.
    pub probe_ns: f64,
    /// The same probe just after the run (0 in results saved before it was recorded).
    #[serde(default)]
    pub probe_after_ns: f64,
    /// CPU seconds the whole machine was busy outside the two end processes while the
    /// frontend process ran (from `/proc/stat`; `None` where it could not be read).
    #[serde(default)]
    pub other_busy_s: Option<f64>,
    /// Wall-clock seconds the frontend process ran (the span `other_busy_s` covers).
    #[serde(default)]
    pub span_s: f64,
    /// What the receiving end's check of every stamped frame found (TX: the backend's, RX:
    /// the frontend's; none for request/response).
    #[serde(default)]
    pub check: Option<check::Check>,
    /// The frontend's counters at the end of the run.
    pub front_metrics: serde_json::Value,
    /// The backend's counters at the end of the run (whole process life).
    pub back_metrics: serde_json::Value,
    /// The backend platform's grant counters (whole process life).
    pub grants: serde_json::Value,
    /// Request/response runs: p50, p99, p999 transaction latency in nanoseconds.
    #[serde(default)]
    pub latency_ns: Option<[f64; 3]>,
    /// Throughput runs: the frontend's view of the window in bins of about 10 ms.
    #[serde(default)]
    pub timeline: Vec<Bin>,
}

fn one_queue() -> u16 {
    1
}

/// The name a scenario's design goes by in tables, plots and diffs: the design, with the
/// queue count when there is more than one.
pub fn label(design: &str, queues: u16) -> String {
    if queues > 1 {
        format!("{design} ({queues} queues)")
    } else {
        design.to_string()
    }
}

/// One bin of a run's timeline, as the frontend saw it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Bin {
    /// End of the bin, in seconds from the start of the measured window.
    pub t: f64,
    /// Packets moved in the bin.
    pub packets: f64,
    /// Of them, packets staged (wholly or partly).
    pub staged: f64,
    /// Data-ring designs: the mean fill of the data ring in percent, sampled at each TX
    /// staging decision or each staged RX packet in the bin (none when nothing was sampled).
    pub fill_pct: Option<f64>,
}

impl Sample {
    /// Whether the run's check found nothing lost, corrupted or cut short (runs without a
    /// check count as intact).
    pub fn intact(&self) -> bool {
        self.check.is_none_or(|c| c.intact())
    }

    /// The design's name with its queue count (see [`label`]).
    pub fn label(&self) -> String {
        label(&self.design, self.queues)
    }

    /// The packet counter that both ends' counters are divided by: packets sent for TX and
    /// request/response, received for RX.
    fn packet_key(&self) -> &'static str {
        match self.dir {
            Dir::Tx | Dir::Rr | Dir::RrBusy => "tx_packets",
            Dir::Rx => "rx_packets",
        }
    }

    /// Packets the backend moved in its whole life (the denominator of its counters).
    pub fn backend_packets(&self) -> f64 {
        self.back_metrics[self.packet_key()].as_f64().unwrap_or(0.0)
    }

    /// A backend counter per backend packet.
    pub fn back_per_packet(&self, key: &str) -> f64 {
        self.back_metrics[key].as_f64().unwrap_or(0.0) / self.backend_packets().max(1.0)
    }

    /// Packets the frontend moved in its run (the denominator of its counters).
    pub fn frontend_packets(&self) -> f64 {
        self.front_metrics[self.packet_key()]
            .as_f64()
            .unwrap_or(0.0)
    }

    /// A frontend counter per frontend packet.
    pub fn front_per_packet(&self, key: &str) -> f64 {
        self.front_metrics[key].as_f64().unwrap_or(0.0) / self.frontend_packets().max(1.0)
    }

    /// A platform grant counter per backend packet.
    pub fn grants_per_packet(&self, key: &str) -> f64 {
        self.grants[key].as_f64().unwrap_or(0.0) / self.backend_packets().max(1.0)
    }
}

/// The version of the results' layout: raised when a field changes meaning or goes. 3: a
/// sample's `size` may be a mix, written as a string (`"imix"`); fixed sizes stay numbers.
pub const SCHEMA_VERSION: u32 = 3;

/// What produced a run's results: the tool, its source, the command and when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RunRecord {
    /// [`SCHEMA_VERSION`] of the files written.
    pub schema: u32,
    /// The harness's version.
    pub tool_version: String,
    /// The git commit it was built from (`+changes` when the tree had uncommitted
    /// changes), if built from a checkout.
    pub git_commit: Option<String>,
    /// The command line.
    pub command: Vec<String>,
    /// Start, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Whether the run stopped early (Ctrl-C, or a failing run: see `stopped_by`), so the
    /// results hold the runs finished before.
    pub partial: bool,
    /// Why it stopped early.
    pub stopped_by: Option<String>,
}

impl RunRecord {
    /// The record of this process's run, started now.
    pub fn now() -> RunRecord {
        RunRecord {
            schema: SCHEMA_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: option_env!("NETSTAGE_GIT_COMMIT").map(String::from),
            command: std::env::args().collect(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            partial: false,
            stopped_by: None,
        }
    }
}

/// The machine the run was on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// Grant-operation cost mode.
    pub cost_mode: String,
    /// Event-channel waiting.
    pub poll: String,
    /// Microseconds the frontend's event-channel waits spin before blocking (blocking mode).
    #[serde(default)]
    pub front_spin_us: Option<u64>,
    /// The same for the backend.
    #[serde(default)]
    pub back_spin_us: Option<u64>,
}

impl Machine {
    /// How the ends wait for events, for a report's header: the polling mode and, when
    /// recorded, how long each end spins before blocking.
    pub fn waiting(&self) -> String {
        match (self.front_spin_us, self.back_spin_us) {
            (Some(f), Some(b)) if self.poll.starts_with("blocking") => format!(
                "{} (a wait spins {f} us in the frontend and {b} us in the backend before it sleeps)",
                self.poll
            ),
            _ => self.poll.clone(),
        }
    }

    /// Reads the machine's description.
    pub fn detect(cost_mode: &str, poll: &str) -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpu,
            cores: sys::cpus(),
            kernel,
            cost_mode: cost_mode.into(),
            poll: poll.into(),
            front_spin_us: None,
            back_spin_us: None,
        }
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// Where it ran.
    pub machine: Machine,
    /// Every sample.
    pub samples: Vec<Sample>,
    /// The upper bound, once per round: a raw byte stream through one data ring (order 8)
    /// between the two processes, no packets (what PVCalls does), in Gbit/s.
    #[serde(default)]
    pub stream_gbps: Vec<f64>,
    /// The same ring moving 64-byte records, each written and read on its own (the limit of
    /// a ring that copies 64 B in and out), once per round, in millions of records a second.
    #[serde(default)]
    pub stream_64b_mps: Vec<f64>,
    /// The same records written 64 at a time, each burst published at once, and read 64 at
    /// a time, each burst's room given back at once (the index updates of a burst API),
    /// once per round, in millions of records a second.
    #[serde(default)]
    pub stream_64b_burst_mps: Vec<f64>,
    /// The same bursts with netif's TX ring beside the data ring: a request per record,
    /// answered in its slot and reaped by the writer (`floor`), once per round, in millions
    /// of records a second: what the wire protocol's shape allows a data-ring design at 64 B.
    #[serde(default)]
    pub stream_64b_netif_mps: Vec<f64>,
    /// Peers measured in the same run (`--peer`), interleaved with the designs.
    #[serde(default)]
    pub peers: Vec<peer::PeerSample>,
    /// Peer runs that failed, and why (the run went on without them).
    #[serde(default)]
    pub peer_failures: Vec<String>,
    /// The seed the runs' order was shuffled with and the intervals are drawn from
    /// (`compare --seed` repeats it; none in results saved before it was recorded).
    #[serde(default)]
    pub seed: Option<u64>,
    /// With the `xen` cost preset: what the emulation's grant operations cost of their own,
    /// measured before the sweep, and what the sweep charged on top.
    #[serde(default)]
    pub calibration: Option<calibrate::Calibration>,
    /// What produced these results (none in results saved before it was recorded).
    #[serde(default)]
    pub record: Option<RunRecord>,
}

impl Results {
    /// The far-placement rule of this run, from every probe it took (designs and peers,
    /// before and after each run).
    pub fn placement(&self) -> Placement {
        Placement::from_probes(
            self.samples
                .iter()
                .flat_map(|s| [s.probe_ns, s.probe_after_ns])
                .chain(
                    self.peers
                        .iter()
                        .flat_map(|p| [p.probe_ns, p.probe_after_ns]),
                ),
        )
    }

    /// Rounds run (the highest round of any sample or peer run).
    pub fn rounds(&self) -> u32 {
        let peers = self.peers.iter().map(|p| p.round);
        self.samples
            .iter()
            .map(|s| s.round)
            .chain(peers)
            .max()
            .unwrap_or(0)
    }

    /// The (round, pps) of the runs of one scenario that the summary uses: the intact ones
    /// not taken during a far placement, or every intact one when all were far (see
    /// [`stats::set_aside_far`]).
    pub fn kept_runs(
        &self,
        place: &Placement,
        dir: Dir,
        size: &SizeSpec,
        design: &str,
        queues: u16,
    ) -> Vec<(u32, f64)> {
        let runs: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.dir == dir && &s.size == size && s.design == design && s.queues == queues)
            .filter(|s| s.intact())
            .collect();
        let far = |s: &&Sample| place.far(s.probe_ns, s.probe_after_ns);
        let (kept, _) = set_aside_far(runs, far);
        kept.iter().map(|s| (s.round, s.pps)).collect()
    }

    /// The (round, pps) of the runs of one peer at one direction and size that the summary
    /// uses: those not taken during a far placement, or all when all were far.
    pub fn kept_peer_runs(
        &self,
        place: &Placement,
        peer: &str,
        dir: Dir,
        size: usize,
    ) -> Vec<(u32, f64)> {
        let runs: Vec<&peer::PeerSample> = self
            .peers
            .iter()
            .filter(|p| p.peer == peer && p.dir == dir && p.size == size)
            .collect();
        let far = |p: &&peer::PeerSample| place.far(p.probe_ns, p.probe_after_ns);
        let (kept, _) = set_aside_far(runs, far);
        kept.iter().map(|p| (p.round, p.pps)).collect()
    }
}

/// One row of the summary: a scenario over all rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Direction.
    pub dir: Dir,
    /// Size.
    pub size: SizeSpec,
    /// Design asked for.
    pub design: String,
    /// Queues.
    pub queues: u16,
    /// Design in use.
    pub design_used: String,
    /// Packets per second: the median over the runs kept, with its 95 % interval.
    pub pps: Interval,
    /// Gbit/s at the median (a mix: at its mean size).
    pub gbps: f64,
    /// The ratio to grant-copy at the same direction, size and queue count, taken round by
    /// round (this design's run over grant-copy's run of the same round): their median and
    /// its 95 % interval.
    pub ratio: Option<Interval>,
    /// Frontend CPU microseconds per packet (median).
    pub front_us_per_pkt: f64,
    /// Runs kept (intact, not taken during a far placement).
    pub n: usize,
    /// Intact runs set aside because they were taken during a far placement.
    pub far: usize,
    /// Every run of the scenario was far, so the row is made of far runs (none set aside).
    pub far_only: bool,
}

impl Row {
    /// The design's name with its queue count (see [`label`]).
    pub fn label(&self) -> String {
        label(&self.design, self.queues)
    }

    /// The median over rounds of `f` of this scenario's samples in `r`.
    pub fn median(&self, r: &Results, f: &dyn Fn(&Sample) -> f64) -> f64 {
        scenario_median(r, self.dir, &self.size, &self.design, self.queues, f)
    }

    /// The interval that says how well the row is known: its ratio's, or for the baseline
    /// (whose ratio is 1 by construction) and rows without one, its rate's.
    pub fn headline(&self) -> Interval {
        match self.ratio {
            Some(x) if self.design != BASELINE => x,
            _ => self.pps,
        }
    }
}

/// The design every ratio is to.
pub const BASELINE: &str = "grant-copy";

/// Summarises the samples per (direction, size, queues, design), in first-seen design
/// order, fixed sizes before mixes (see [`SizeSpec::sort_key`]). Runs that lost or damaged frames, and runs taken during a far placement, are
/// left out; ratios are to grant-copy at the same direction, size and queue count, paired
/// round by round. Intervals are drawn from the run's seed.
pub fn summarise(r: &Results) -> Vec<Row> {
    let mut order: Vec<String> = Vec::new();
    for s in &r.samples {
        if !order.contains(&s.design) {
            order.push(s.design.clone());
        }
    }
    let place = r.placement();
    let mut boot = Bootstrap::new(r.seed.unwrap_or(0));
    type SizeKey = (u8, Vec<(usize, u32)>);
    let mut groups: BTreeMap<(String, u16, SizeKey), Vec<&Sample>> = BTreeMap::new();
    // A run that lost or damaged packets measured something else: it is left out (and named
    // in the correctness section).
    for s in r.samples.iter().filter(|s| s.intact()) {
        groups
            .entry((s.dir.to_string(), s.queues, s.size.sort_key()))
            .or_default()
            .push(s);
    }
    let mut rows = Vec::new();
    for ((_, queues, _), samples) in groups {
        let (dir, size) = (samples[0].dir, samples[0].size.clone());
        let base = r.kept_runs(&place, dir, &size, BASELINE, queues);
        for d in &order {
            let of: Vec<&&Sample> = samples.iter().filter(|s| &s.design == d).collect();
            let far = |s: &&&Sample| place.far(s.probe_ns, s.probe_after_ns);
            let (kept, set_aside) = set_aside_far(of.clone(), far);
            let runs: Vec<(u32, f64)> = kept.iter().map(|s| (s.round, s.pps)).collect();
            let Some(pps) = boot.interval(&runs.iter().map(|x| x.1).collect::<Vec<_>>()) else {
                continue;
            };
            let us = spread(
                &kept
                    .iter()
                    .filter(|s| s.packets > 0)
                    .map(|s| s.front_cpu_s * 1e6 / s.packets as f64)
                    .collect::<Vec<_>>(),
            )
            .map_or(0.0, |s| s.median);
            rows.push(Row {
                dir,
                size: size.clone(),
                design: d.clone(),
                queues,
                design_used: of[0].design_used.clone(),
                pps,
                gbps: pps.median * size.mean() * 8.0 / 1e9,
                ratio: boot.interval(&per_round_ratios(&runs, &base)),
                front_us_per_pkt: us,
                n: kept.len(),
                far: set_aside,
                far_only: kept.iter().any(far),
            });
        }
    }
    rows
}

/// Writes a report section's heading and text, then a table's header and alignment rows.
fn table_head(out: &mut String, intro: &str, header: &str, align: &str) {
    let _ = writeln!(out, "{intro}");
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "{align}");
}

/// A median and its interval: `2.85x [2.71..2.97]` with `digits` decimals and `unit`.
fn with_interval(i: &Interval, digits: usize, unit: &str) -> String {
    format!(
        "{:.digits$}{unit} [{:.digits$}..{:.digits$}]",
        i.median, i.lo, i.hi
    )
}

/// A ratio with its interval, `-` for none.
fn ratio_cell(i: Option<Interval>) -> String {
    i.map_or("-".into(), |x| with_interval(&x, 2, "x"))
}

/// The main table: rate and ratio with their intervals, each row's half-width (bold when
/// wider than +-10 %), and a line on how many rows are that wide.
/// The report's lines on what produced it, and a warning when the run stopped early.
fn record_lines(out: &mut String, rec: &RunRecord) {
    let _ = writeln!(
        out,
        "Produced by experiments {} ({}), results schema {}: `{}`.\n",
        rec.tool_version,
        rec.git_commit
            .as_deref()
            .map_or("commit unknown".to_string(), |c| format!("commit {c}")),
        rec.schema,
        rec.command.join(" ")
    );
    if rec.partial {
        let _ = writeln!(
            out,
            "**This run stopped early ({}): the tables hold only the runs finished before.**\n",
            rec.stopped_by.as_deref().unwrap_or("reason not recorded")
        );
    }
}

fn throughput_table(out: &mut String, r: &Results, rows: &[Row]) {
    let _ = writeln!(
        out,
        "| dir | size (B) | design | in use | pps (median) [95 % interval] | Gbit/s | x grant-copy [95 % interval] | +- % | frontend CPU us/pkt | runs |"
    );
    let _ = writeln!(out, "|---|---:|---|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let pm = 100.0 * row.headline().half_width();
        let pm = if row.headline().wide() {
            format!("**{pm:.1}**")
        } else {
            format!("{pm:.1}")
        };
        let runs = match (row.far, row.far_only) {
            (_, true) => format!("{} (far only)", row.n),
            (0, _) => row.n.to_string(),
            (far, _) => format!("{} (+{far} far)", row.n),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.2} | {} | {pm} | {:.3} | {runs} |",
            row.dir,
            row.size,
            row.label(),
            row.design_used,
            with_interval(&row.pps, 0, ""),
            row.gbps,
            ratio_cell(row.ratio),
            row.front_us_per_pkt,
        );
    }
    let wide = rows.iter().filter(|x| x.headline().wide()).count();
    let what = "`+- %` is half the 95 % interval's width over the median: the ratio's, or the \
                rate's for grant-copy and rows without a ratio";
    if wide == 0 {
        let _ = writeln!(
            out,
            "\nEvery row's interval is within +-10 % of its median ({what})."
        );
    } else {
        let _ = writeln!(
            out,
            "\n{wide} of {} rows have an interval wider than +-10 % of the median (bold; \
             {what}): more rounds narrow it (`--rounds`; {} here).",
            rows.len(),
            r.rounds()
        );
    }
}

/// The median over rounds of `f` of one scenario's samples (0 when it has none).
pub fn scenario_median(
    r: &Results,
    dir: Dir,
    size: &SizeSpec,
    design: &str,
    queues: u16,
    f: &dyn Fn(&Sample) -> f64,
) -> f64 {
    let v: Vec<f64> = r
        .samples
        .iter()
        .filter(|s| s.dir == dir && &s.size == size && s.design == design && s.queues == queues)
        .map(f)
        .collect();
    spread(&v).map_or(0.0, |s| s.median)
}

/// The summary as a markdown table.
pub fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let rows = summarise(r);
    preamble(&mut out, r);
    throughput_table(&mut out, r, &rows);
    verdict::report_section(&mut out, &rows);
    calibrate::report_section(&mut out, r);
    cost_section(&mut out, r, &rows);
    notification_section(&mut out, r, &rows);
    rr_section(&mut out, r, &rows);
    upper_bound_section(&mut out, r, &rows);
    small_stream_section(&mut out, r, &rows);
    peer_section(&mut out, r, &rows);
    check_section(&mut out, r);
    placement_section(&mut out, r);
    outlier_section(&mut out, r);
    stretches::report_section(&mut out, r);
    plots_section(&mut out, r);
    out
}

/// The report's title, machine, run record, method and queue caveat.
fn preamble(out: &mut String, r: &Results) {
    let _ = writeln!(out, "# netstage: designs compared\n");
    let m = &r.machine;
    let _ = writeln!(
        out,
        "Machine: {} ({} cores), kernel {}; grant cost mode `{}`; event channels: {}.\n",
        m.cpu,
        m.cores,
        m.kernel,
        m.cost_mode,
        m.waiting()
    );
    if let Some(rec) = &r.record {
        record_lines(out, rec);
    }
    let set_aside = runs(set_aside(&far_runs(r)));
    let seed = r.seed.map_or("not recorded".into(), |x| {
        format!("{x}: `compare --seed {x}` repeats it")
    });
    let _ = writeln!(
        out,
        "Medians over {} rounds; each round runs every scenario once, in an order shuffled \
         afresh for each round (seed {seed}). Brackets are 95 % intervals: the percentile \
         bootstrap of the median, {} resamples of the rounds. `x grant-copy` is taken round \
         by round, each run over grant-copy's run of the same round at the same direction, \
         size and queue count, and the median of those ratios shown. Left out: runs that lost \
         or damaged frames (see Correctness) and {set_aside} taken during a far \
         placement (see Far placements). Frontend and backend are separate processes pinned \
         to different cores.\n",
        r.rounds(),
        stats::RESAMPLES
    );
    if let Some(q) = r
        .samples
        .iter()
        .map(|s| s.queues)
        .filter(|q| 2 * usize::from(*q) > m.cores)
        .max()
    {
        let _ = writeln!(
            out,
            "Runs with {q} queues had fewer than a core per queue thread ({} cores): each \
             end's queue threads shared one core, so those rows show what the extra queues \
             cost, not what they gain.\n",
            m.cores
        );
    }
}

/// The report's "Cost per packet" section: the backend's operations and CPU per packet.
fn cost_section(out: &mut String, r: &Results, rows: &[Row]) {
    table_head(
        out,
        "\n## Cost per packet\n\nBackend counters over its whole run divided by the packets it moved (medians over rounds): grant-copy operations, grant-copy calls (hypercalls), pages mapped and unmapped, system calls the emulation made, notifications sent by the backend, bytes memcpy'd through staging memory, bytes moved by grant copy or read through grant maps, and backend CPU per packet and per byte of packet data.\n",
        "| dir | size (B) | design | copy ops | copy calls | maps | unmaps | kernel crossings | backend notifications | staged bytes | granted bytes | backend CPU us | backend CPU ns/B |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    for row in rows {
        let med = |f: &dyn Fn(&Sample) -> f64| row.median(r, f);
        let (staged, granted): (&str, &[&str]) = match row.dir {
            Dir::Rx => ("rx_staged_bytes", &["rx_grant_copy_bytes"]),
            _ => (
                "tx_staged_bytes",
                &["tx_grant_copy_bytes", "tx_grant_map_bytes"],
            ),
        };
        let c = plots::cost_components(r, row.dir, &row.size, &row.design, row.queues);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.3} | {:.2} | {:.2} | {:.3} | {:.3} | {:.0} | {:.0} | {:.3} | {:.3} |",
            row.dir,
            row.size,
            row.label(),
            c[0],
            c[1],
            c[2],
            med(&|s| s.grants_per_packet("unmaps")),
            c[3],
            c[4],
            med(&|s| s.back_per_packet(staged)),
            med(&|s| granted.iter().map(|k| s.back_per_packet(k)).sum()),
            med(&|s| s.back_cpu_s * 1e6 / s.backend_packets().max(1.0)),
            med(&|s| s.back_cpu_s * 1e9 / (s.backend_packets() * s.size.mean()).max(1.0)),
        );
    }
}

/// The report's "Notifications, staging and shared memory" section.
fn notification_section(out: &mut String, r: &Results, rows: &[Row]) {
    table_head(
        out,
        "\n## Notifications, staging and shared memory\n\nPer packet, medians over rounds: event-channel notifications each side sent and the wake-ups each side took (a wake-up is a wait ended by an event; a wait whose spin found work on a ring counts none), the share of packets whose bytes went wholly or partly through staging memory, the fallbacks to grant operations by reason — the packet was larger than the copy limit (a slot's data-len or the policy's limit; TX only: RX counts no such reason) or the data ring had no room (on TX a packet can be both staged and a fallback: the greedy policy stages what fits and grants the rest) — the data ring's mean fill as the frontend sampled it (at each TX staging decision, at each staged RX packet; `-` for designs without a data ring), and the memory the frontend keeps granted to the backend (rings, slots or data rings).\n",
        "| dir | size (B) | design | backend notifications | backend wake-ups | frontend notifications | frontend wake-ups | staged % | over-limit fallback % | ring-full fallback % | ring fill % | granted (KiB) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    for row in rows {
        let med = |f: &dyn Fn(&Sample) -> f64| row.median(r, f);
        let side = if row.dir == Dir::Rx { "rx" } else { "tx" };
        let fill = if row.design.starts_with("ring:") {
            let pct = med(&|s| {
                let n = s.front_metrics[format!("{side}_ring_fill_samples")]
                    .as_f64()
                    .unwrap_or(0.0);
                let sum = s.front_metrics[format!("{side}_ring_fill_ppm")]
                    .as_f64()
                    .unwrap_or(0.0);
                sum / n.max(1.0) / 10_000.0
            });
            format!("{pct:.1}")
        } else {
            "-".into()
        };
        let (staged, over, full) = match row.dir {
            Dir::Rx => (
                med(&|s| s.back_per_packet("rx_staged_packets")),
                "-".to_string(),
                med(&|s| s.back_per_packet("rx_fallback_ring_full")),
            ),
            _ => (
                med(&|s| s.back_per_packet("tx_staged_packets")),
                format!(
                    "{:.1}",
                    100.0 * med(&|s| s.front_per_packet("tx_fallback_over_limit"))
                ),
                med(&|s| s.front_per_packet("tx_fallback_ring_full")),
            ),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {} | {:.1} | {} | {:.0} |",
            row.dir,
            row.size,
            row.label(),
            med(&|s| s.back_per_packet("notifications")),
            med(&|s| s.back_per_packet("wakeups")),
            med(&|s| s.front_per_packet("notifications")),
            med(&|s| s.front_per_packet("wakeups")),
            100.0 * staged,
            over,
            100.0 * full,
            fill,
            med(&|s| s.front_metrics["granted_bytes"].as_f64().unwrap_or(0.0)) / 1024.0,
        );
    }
}

/// The report's "Request/response" section, if the sweep had request/response rows.
fn rr_section(out: &mut String, r: &Results, rows: &[Row]) {
    let rr: Vec<&Row> = rows.iter().filter(|x| x.dir.is_rr()).collect();
    if !rr.is_empty() {
        let _ = writeln!(
            out,
            "\n## Request/response\n\nOne 15-byte frame (1-byte payload) out, echoed by the backend, then the next (the TCP_RR analogue). Medians over rounds of each run's latency percentiles.\n"
        );
        let _ = writeln!(
            out,
            "| mode | design | transactions/s | x grant-copy | p50 (us) | p99 (us) | p99.9 (us) |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
        for row in &rr {
            let of: Vec<&Sample> = r
                .samples
                .iter()
                .filter(|s| s.dir == row.dir && s.design == row.design && s.queues == row.queues)
                .collect();
            let pct = |k: usize| {
                spread(
                    &of.iter()
                        .filter_map(|s| s.latency_ns.map(|l| l[k] / 1000.0))
                        .collect::<Vec<_>>(),
                )
                .map_or(0.0, |s| s.median)
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {:.1} | {:.1} | {:.1} |",
                if row.dir == Dir::RrBusy {
                    "busy-poll"
                } else {
                    r.machine.poll.as_str()
                },
                row.label(),
                row.pps.median,
                ratio_cell(row.ratio),
                pct(0),
                pct(1),
                pct(2)
            );
        }
        busy_over_blocking(out, r, &rr);
    }
}

/// The request/response section's last table: each design's busy-polling rate over its
/// blocking rate, paired round by round, with the blocking runs' mode named (none when the
/// sweep busy-polled throughout, or had only one of the two).
fn busy_over_blocking(out: &mut String, r: &Results, rr: &[&Row]) {
    if r.machine.poll == "busy-poll" {
        return;
    }
    let place = r.placement();
    let mut boot = Bootstrap::new(r.seed.unwrap_or(0));
    let lines: Vec<String> = rr
        .iter()
        .filter(|row| row.dir == Dir::RrBusy)
        .filter_map(|row| {
            let runs = |dir| r.kept_runs(&place, dir, &row.size, &row.design, row.queues);
            let ratios = per_round_ratios(&runs(Dir::RrBusy), &runs(Dir::Rr));
            let i = boot.interval(&ratios)?;
            Some(format!(
                "| {} | {} |",
                row.label(),
                with_interval(&i, 2, "x")
            ))
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    table_head(
        out,
        &format!(
            "\nBusy-polling over blocking ({}), each design's runs paired round by round: \
             median and 95 % interval.\n",
            r.machine.poll
        ),
        "| design | busy-poll / blocking |",
        "|---|---:|",
    );
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
}

/// The first cells of a table row naming a run: `| round | design | dir | size |`.
pub(crate) fn run_cells(s: &Sample) -> String {
    format!(
        "| {} | {} | {} | {} |",
        s.round,
        label(&s.design, s.queues),
        s.dir,
        s.size
    )
}

/// The report's "Upper bound" section: the raw 64 KiB stream and the best data ring's
/// share of it.
fn upper_bound_section(out: &mut String, r: &Results, rows: &[Row]) {
    if let Some(g) = spread(&r.stream_gbps) {
        let best = rows
            .iter()
            .filter(|row| row.design.starts_with("ring:") && row.queues == 1)
            .max_by(|a, b| a.gbps.total_cmp(&b.gbps));
        let _ = writeln!(
            out,
            "\n## Upper bound\n\nA raw byte stream through one data ring (order 8, 64 KiB writes) \
             between the two processes, no packets (what PVCalls does): {:.2} Gbit/s median \
             [{:.2}..{:.2}] over {} rounds.",
            g.median,
            g.min,
            g.max,
            r.stream_gbps.len()
        );
        if let Some(b) = best {
            let _ = writeln!(
                out,
                "The best data-ring design here, {} at {} {}, reaches {:.2} Gbit/s: {:.0} % of it.",
                b.design,
                b.size.with_unit(),
                b.dir,
                b.gbps,
                100.0 * b.gbps / g.median.max(1e-9)
            );
        }
    }
}

/// The report's "Plots" section: the charts written beside it.
fn plots_section(out: &mut String, r: &Results) {
    let names = plots::chart_names(r);
    if !names.is_empty() {
        let _ = writeln!(
            out,
            "\n## Plots\n\nThroughput by packet size (bars: the 95 % interval of the median), backend operations per packet stacked by component, the share of packets staged and the data ring's mean fill per 10 ms through the first round's run of each staging design, and request/response rates; each also as PNG.\n"
        );
        for n in names {
            let _ = writeln!(out, "![{n}]({n}.svg)");
        }
    }
}

/// The report's section on the receivers' checks: totals, and every run that was not
/// intact.
fn check_section(out: &mut String, r: &Results) {
    let checked: Vec<&Sample> = r.samples.iter().filter(|s| s.check.is_some()).collect();
    if checked.is_empty() {
        return;
    }
    let mut total = check::Check::default();
    for s in &checked {
        if let Some(c) = &s.check {
            total.add(c);
        }
    }
    let _ = writeln!(
        out,
        "\n## Correctness\n\nEvery throughput frame carries a sequence number and a checksum of its \
         bytes; the receiving end checks each at full rate. Over {} runs: {} frames delivered \
         intact, {} lost, {} corrupted, {} reordered, {} of the wrong length.",
        checked.len(),
        total.delivered,
        total.lost,
        total.corrupted,
        total.reordered,
        total.errored
    );
    let bad: Vec<&&Sample> = checked.iter().filter(|s| !s.intact()).collect();
    if bad.is_empty() {
        let _ = writeln!(out, "No run lost or damaged a frame.");
        return;
    }
    table_head(
        out,
        "\nRuns that lost or damaged frames, left out of every median and ratio above:\n",
        "| round | design | dir | size | delivered | lost | corrupted | reordered | wrong length |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    );
    for s in bad {
        if let Some(c) = &s.check {
            let _ = writeln!(
                out,
                "{} {} | {} | {} | {} | {} |",
                run_cells(s),
                c.delivered,
                c.lost,
                c.corrupted,
                c.reordered,
                c.errored
            );
        }
    }
}

/// A run taken during a far placement.
#[derive(Debug, Clone, PartialEq)]
pub struct FarRun {
    /// Round.
    pub round: u32,
    /// What ran: a design with its queue count, or `peer:<name>`.
    pub what: String,
    /// Direction.
    pub dir: Dir,
    /// Size.
    pub size: SizeSpec,
    /// Packets per second.
    pub pps: f64,
    /// The probes before and after the run, nanoseconds.
    pub probes: [f64; 2],
    /// CPUs the machine kept busy outside the two ends during the run (designs' runs,
    /// where recorded).
    pub other_cpus: Option<f64>,
    /// Kept all the same: every run of its scenario was far.
    pub kept: bool,
}

/// Every run, of a design or a peer, taken during a far placement (see
/// [`Results::placement`]).
pub fn far_runs(r: &Results) -> Vec<FarRun> {
    let place = r.placement();
    let designs = r.samples.iter().map(|s| FarRun {
        round: s.round,
        what: label(&s.design, s.queues),
        dir: s.dir,
        size: s.size.clone(),
        pps: s.pps,
        probes: [s.probe_ns, s.probe_after_ns],
        other_cpus: s
            .other_busy_s
            .filter(|_| s.span_s > 0.0)
            .map(|b| b / s.span_s),
        kept: r
            .kept_runs(&place, s.dir, &s.size, &s.design, s.queues)
            .contains(&(s.round, s.pps)),
    });
    let peers = r.peers.iter().map(|p| FarRun {
        round: p.round,
        what: format!("peer:{}", p.peer),
        dir: p.dir,
        size: SizeSpec::Fixed(p.size),
        pps: p.pps,
        probes: [p.probe_ns, p.probe_after_ns],
        other_cpus: None,
        kept: r
            .kept_peer_runs(&place, &p.peer, p.dir, p.size)
            .contains(&(p.round, p.pps)),
    });
    designs
        .chain(peers)
        .filter(|x| place.far(x.probes[0], x.probes[1]))
        .collect()
}

/// `n runs`, or `1 run`.
fn runs(n: usize) -> String {
    if n == 1 {
        "1 run".into()
    } else {
        format!("{n} runs")
    }
}

/// What the report says when the whole sweep ran with the cores far apart.
fn far_throughout_note(place: &stats::Placement) -> String {
    format!(
        "**The two cores sat far apart throughout** (even the lower quartile of the probes, \
         {:.0} ns, is above {:.0} ns). Runs are set aside only against this sweep's own near \
         probe, so its runs stay in the medians, and its rates were taken far apart. On \
         machines placed so, the data ring reached 0.72x-0.84x dpdk-testpmd at TX 64 B and \
         0.55x-0.85x at RX \
         (`docs/results/2026-12-02/`; 0.23x in a run with long slow stretches), where near \
         cores had given 1.18x and 1.26x. On the second such machine both ends were bound \
         by their own work per packet, and the rings alone (the netif stream under Upper \
         bound) ran several times faster (`docs/findings.md`, \"What the far placement \
         does not explain\"). Compare rates, and ratios to a peer, only between sweeps of \
         a like placement.",
        place.near_ns,
        stats::FAR_NS
    )
}

/// The report's section on the probes and the runs set aside as taken during a far
/// placement.
fn placement_section(out: &mut String, r: &Results) {
    let place = r.placement();
    let probes = |f: &dyn Fn(&Sample) -> f64| {
        spread(
            &r.samples
                .iter()
                .map(f)
                .filter(|p| *p > 0.0)
                .collect::<Vec<_>>(),
        )
    };
    let Some(before) = probes(&|s| s.probe_ns) else {
        return;
    };
    let after = probes(&|s| s.probe_after_ns).map_or(String::new(), |q| {
        format!(
            "; after each run: median {:.0} ns, range {:.0}..{:.0} ns",
            q.median, q.min, q.max
        )
    });
    let _ = writeln!(
        out,
        "\n## Far placements\n\nBefore and after each run a cache line is bounced between the \
         frontend's core and the backend's, and the round trip timed: how far apart the two \
         vCPUs sat. Before each run: median {:.0} ns, range {:.0}..{:.0} ns{after}. On the \
         machine the notes describe, round trips fall in three groups: about 30 ns (SMT \
         siblings), 55-145 ns (cores sharing an L3) and 260-570 ns (far apart). A run is set \
         aside as taken during a far placement when the larger of its two probes is above \
         {:.0} ns: above {:.0} ns and above {} x the lower quartile of all this run's probes \
         ({:.0} ns: how near the cores sat when they sat near), so that a machine whose every \
         pair of cores reads about 230 ns does not have every run flagged, while a host that \
         moved the two vCPUs apart for most of the sweep still has its far runs found. A \
         probe of microseconds is no placement: the probe's threads were kept off their cores \
         by other work (see the machine's load beside it, and Stalls and contention); such a \
         run is set aside all the same.",
        before.median,
        before.min,
        before.max,
        place.threshold_ns,
        stats::FAR_NS,
        stats::FAR_FACTOR,
        place.near_ns
    );
    if place.far_throughout() {
        let _ = writeln!(out, "\n{}\n", far_throughout_note(&place));
    }
    let far = far_runs(r);
    if far.is_empty() {
        let _ = writeln!(out, "No run was set aside.");
        return;
    }
    let kept = far.iter().filter(|f| f.kept).count();
    let kept = if kept > 0 {
        format!(
            " ({} kept all the same, `no` below: every run of its scenario was far, and its row \
             says `far only`)",
            runs(kept)
        )
    } else {
        String::new()
    };
    table_head(
        out,
        &format!(
            "{} set aside, left out of the medians, intervals and ratios above{kept}:\n",
            runs(set_aside(&far))
        ),
        "| round | run | dir | size | pps | probe before (ns) | probe after (ns) | other CPU/s | set aside |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|",
    );
    for f in far {
        let other = f.other_cpus.map_or("-".into(), |c| format!("{c:.2}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {other} | {} |",
            f.round,
            f.what,
            f.dir,
            f.size,
            f.pps,
            f.probes[0],
            f.probes[1],
            if f.kept { "no" } else { "yes" }
        );
    }
}

/// How many of these far runs were set aside (not kept for want of others).
fn set_aside(far: &[FarRun]) -> usize {
    far.iter().filter(|f| !f.kept).count()
}

/// The 64-byte raw streams (records one by one, a burst at a time, and bursts with netif's
/// TX requests) beside the best 64-byte packet rate of a data-ring design (its best TX rate
/// beside the netif stream, which has a TX ring's requests and answers).
fn small_stream_section(out: &mut String, r: &Results, rows: &[Row]) {
    let best = |dirs: &[Dir]| {
        rows.iter()
            .filter(|row| {
                row.design.starts_with("ring:")
                    && row.queues == 1
                    && row.size == SizeSpec::Fixed(64)
                    && dirs.contains(&row.dir)
            })
            .max_by(|a, b| a.pps.median.total_cmp(&b.pps.median))
    };
    let streams: [(&[f64], &str, &[Dir]); 3] = [
        (
            &r.stream_64b_mps,
            "each written and read on its own (an index update a record each way)",
            &[Dir::Tx, Dir::Rx],
        ),
        (
            &r.stream_64b_burst_mps,
            "written and read 64 at a time (an index update a burst each way, as the \
             datapath's bursts have)",
            &[Dir::Tx, Dir::Rx],
        ),
        (
            &r.stream_64b_netif_mps,
            "64 at a time with netif's TX ring beside it (a request per record, answered in \
             its slot and reaped, as a data-ring design's packets are; nothing validated, \
             counted or checked: what the wire protocol allows)",
            &[Dir::Tx],
        ),
    ];
    for (rates, how, dirs) in streams {
        let Some(g) = spread(rates) else {
            continue;
        };
        let _ = writeln!(
            out,
            "\nThe same ring moving 64-byte records, {how}: {:.2} M records/s median \
             [{:.2}..{:.2}] over {} rounds.",
            g.median,
            g.min,
            g.max,
            rates.len()
        );
        if let Some(b) = best(dirs) {
            let _ = writeln!(
                out,
                "The best data-ring design at 64 B, {} {}, reaches {:.2} Mpps: {:.0} % of it.",
                b.design,
                b.dir,
                b.pps.median / 1e6,
                100.0 * b.pps.median / 1e6 / g.median.max(1e-9)
            );
        }
    }
}

/// Why a run fell under a quarter of its scenario's median rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outlier {
    /// The ends waited with work pending and the machine was idle: a fault of ours.
    Stall,
    /// Something outside the two end processes kept the CPUs busy.
    Contention,
    /// The machine's busy time was not recorded (older results, or no `/proc/stat`).
    Unknown,
}

/// Machine CPU seconds per second, outside the two ends, from which a slow run is put down
/// to contention rather than to a stall.
pub const CONTENTION_CPUS: f64 = 0.25;

/// The runs under a quarter of their scenario's median rate, with the reason.
pub fn outliers(r: &Results) -> Vec<(&Sample, f64, Outlier)> {
    let mut out = Vec::new();
    for s in &r.samples {
        let median = scenario_median(r, s.dir, &s.size, &s.design, s.queues, &|x| x.pps);
        if median <= 0.0 || s.pps * 4.0 >= median {
            continue;
        }
        let why = match s.other_busy_s {
            Some(b) if s.span_s > 0.0 && b / s.span_s >= CONTENTION_CPUS => Outlier::Contention,
            Some(_) => Outlier::Stall,
            None => Outlier::Unknown,
        };
        out.push((s, median, why));
    }
    out
}

/// The report's section on slow runs (none: one sentence saying so).
fn outlier_section(out: &mut String, r: &Results) {
    let found = outliers(r);
    let _ = writeln!(out, "\n## Stalls and contention\n");
    if found.is_empty() {
        let _ = writeln!(
            out,
            "No run fell under a quarter of its scenario's median rate."
        );
        return;
    }
    table_head(
        out,
        &format!(
            "Runs under a quarter of their scenario's median rate: a *stall* if the machine was otherwise idle (under {CONTENTION_CPUS} CPU busy outside the two end processes), *contention* if it was not.\n"
        ),
        "| round | design | dir | size | pps | median pps | frontend CPU/s | other CPU/s | verdict |",
        "|---:|---|---|---:|---:|---:|---:|---:|---|",
    );
    for (s, median, why) in found {
        let other = match s.other_busy_s {
            Some(b) if s.span_s > 0.0 => format!("{:.2}", b / s.span_s),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {} | {:?} |",
            s.round,
            label(&s.design, s.queues),
            s.dir,
            s.size,
            s.pps,
            median,
            s.front_cpu_s / s.seconds.max(1e-9),
            other,
            why
        );
    }
}

/// A scenario whose throughput moved between two runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Direction.
    pub dir: Dir,
    /// Size.
    pub size: SizeSpec,
    /// Design.
    pub design: String,
    /// The median in the first run, with its interval (a TCP run's: its min..max).
    pub before: Interval,
    /// The same in the second run.
    pub after: Interval,
    /// Whether the change is beyond the noise: the two intervals do not overlap.
    pub significant: bool,
}

/// Compares two runs' rates scenario by scenario (those present in both), by their 95 %
/// intervals; peers appear as designs named `peer:<name>`.
pub fn diff(a: &Results, b: &Results) -> Vec<Change> {
    let rows = |r: &Results| -> Vec<(Dir, SizeSpec, String, Interval)> {
        summarise(r)
            .into_iter()
            .map(|x| (x.dir, x.size.clone(), x.label(), x.pps))
            .chain(
                peer_rows(r)
                    .into_iter()
                    .map(|p| (p.dir, p.size.into(), format!("peer:{}", p.peer), p.pps)),
            )
            .collect()
    };
    pair_changes(rows(a), &rows(b))
}

/// Compares two runs' ratios to grant-copy scenario by scenario (those with a ratio in
/// both, grant-copy itself left out), by their 95 % intervals.
pub fn diff_ratios(a: &Results, b: &Results) -> Vec<Change> {
    let rows = |r: &Results| -> Vec<(Dir, SizeSpec, String, Interval)> {
        summarise(r)
            .into_iter()
            .filter(|x| x.design != BASELINE)
            .filter_map(|x| Some((x.dir, x.size.clone(), x.label(), x.ratio?)))
            .collect()
    };
    pair_changes(rows(a), &rows(b))
}

/// The scenarios of `a` also in `b` (same direction, size and name), with their medians
/// and intervals in both (a [`Spread`] is taken as its min..max); a change is beyond the
/// noise when the two intervals do not overlap. Sizes are specs or plain byte counts.
pub fn pair_changes<S: PartialEq + Into<SizeSpec>, T: Into<Interval> + Copy>(
    a: Vec<(Dir, S, String, T)>,
    b: &[(Dir, S, String, T)],
) -> Vec<Change> {
    a.into_iter()
        .filter_map(|(dir, size, design, before)| {
            let after: Interval = b
                .iter()
                .find(|y| y.0 == dir && y.1 == size && y.2 == design)?
                .3
                .into();
            let before: Interval = before.into();
            Some(Change {
                dir,
                size: size.into(),
                design,
                before,
                after,
                significant: !before.overlaps(&after),
            })
        })
        .collect()
}

/// A diff of rates as a markdown table: packets per second before and after with their
/// 95 % intervals, and `change` or `within noise`.
pub fn diff_markdown(changes: &[Change]) -> String {
    let cell = |i: &Interval| with_interval(i, 0, "");
    changes_rows(
        changes,
        "pps",
        true,
        &cell,
        ("verdict", "change", "within noise"),
    )
}

/// A diff of ratios to grant-copy as a markdown table, like [`diff_markdown`].
pub fn diff_ratios_markdown(changes: &[Change]) -> String {
    let cell = |i: &Interval| with_interval(i, 2, "x");
    changes_rows(
        changes,
        "x grant-copy",
        true,
        &cell,
        ("verdict", "change", "within noise"),
    )
}

/// A diff as a markdown table of `what` (with the size column when `sizes`), medians shown
/// by `show`, and whether each change is beyond the noise (`yes`, `no`).
pub fn changes_table(
    changes: &[Change],
    what: &str,
    sizes: bool,
    show: impl Fn(f64) -> String,
) -> String {
    let cell = |i: &Interval| show(i.median);
    changes_rows(
        changes,
        what,
        sizes,
        &cell,
        ("beyond the noise", "yes", "no"),
    )
}

/// A diff as a markdown table: `cell` shows a value, `verdict` is the last column's
/// heading and its words for a change and for noise.
fn changes_rows(
    changes: &[Change],
    what: &str,
    sizes: bool,
    cell: &dyn Fn(&Interval) -> String,
    verdict: (&str, &str, &str),
) -> String {
    let (size_head, size_align) = if sizes {
        (" size (B) |", "---:|")
    } else {
        ("", "")
    };
    let mut out = format!(
        "| dir |{size_head} design | {what} before | {what} after | change | {} |\n|---|{size_align}---|---:|---:|---:|---|\n",
        verdict.0
    );
    for c in changes {
        let size = if sizes {
            format!(" {} |", c.size)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} |{size} {} | {} | {} | {:+.1} % | {} |",
            c.dir,
            c.design,
            cell(&c.before),
            cell(&c.after),
            (c.after.median / c.before.median.max(1e-9) - 1.0) * 100.0,
            if c.significant { verdict.1 } else { verdict.2 }
        );
    }
    out
}

/// One peer at one direction and size over all rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerRow {
    /// Which peer.
    pub peer: String,
    /// Direction.
    pub dir: Dir,
    /// Frame size.
    pub size: usize,
    /// Packets per second: the median over the runs kept, with its 95 % interval.
    pub pps: Interval,
    /// Gbit/s at the median.
    pub gbps: f64,
    /// Runs kept (not taken during a far placement).
    pub n: usize,
    /// Runs set aside as taken during a far placement.
    pub far: usize,
}

/// Summarises the peers' samples per (peer, direction, size), leaving out runs taken
/// during a far placement.
pub fn peer_rows(r: &Results) -> Vec<PeerRow> {
    let place = r.placement();
    let mut boot = Bootstrap::new(r.seed.unwrap_or(0));
    let mut groups: BTreeMap<(String, String, usize), (Dir, usize)> = BTreeMap::new();
    for p in &r.peers {
        groups
            .entry((p.peer.clone(), p.dir.to_string(), p.size))
            .or_insert((p.dir, 0))
            .1 += 1;
    }
    groups
        .into_iter()
        .filter_map(|((peer, _, size), (dir, all))| {
            let kept = r.kept_peer_runs(&place, &peer, dir, size);
            let pps = boot.interval(&kept.iter().map(|x| x.1).collect::<Vec<_>>())?;
            Some(PeerRow {
                peer,
                dir,
                size,
                gbps: pps.median * size as f64 * 8.0 / 1e9,
                pps,
                n: kept.len(),
                far: all - kept.len(),
            })
        })
        .collect()
}

/// The report's section on the peers: their rates beside the designs' at the same direction
/// and size, and the commands that were run.
fn peer_section(out: &mut String, r: &Results, ours: &[Row]) {
    let rows = peer_rows(r);
    if !r.peer_failures.is_empty() {
        let _ = writeln!(
            out,
            "\n## Peer runs that failed\n\nThese runs of a peer failed; the sweep went on without them:\n"
        );
        for f in &r.peer_failures {
            let first = f.lines().next().unwrap_or("");
            let _ = writeln!(out, "- {first}");
        }
    }
    if rows.is_empty() {
        return;
    }
    table_head(
        out,
        "\n## Beside DPDK vhost-user / virtio-user\n\nThe KVM world's user-space paravirtual NIC measured in the same run, interleaved with the designs: two `dpdk-testpmd` processes (`net_virtio_user` on the frontend's core, `net_vhost` on the backend's; TX is guest to host, RX host to guest), the receiver's per-second rate after a warm-up period, medians over rounds with 95 % intervals; `best / testpmd` is taken round by round, the best design's run over testpmd's run of the same round. All of the guest's memory is mapped by the host side, testpmd's generator writes only frame headers and its receiver never reads the payload, so a testpmd frame is copied once and read by nobody; a netstage frame is copied into shared memory by the sender, then lent in place to the receiver (staged bytes) or grant-copied into its buffers (granted bytes), and the receiver reads every byte to check it.\n",
        "| dir | size (B) | testpmd pps (median) | [95 % interval] | Gbit/s | grant-copy pps | best design | its pps | best / testpmd [95 % interval] | runs |",
        "|---|---:|---:|---|---:|---:|---|---:|---:|---:|",
    );
    let place = r.placement();
    let mut boot = Bootstrap::new(r.seed.unwrap_or(0));
    for p in &rows {
        let here: Vec<&Row> = ours
            .iter()
            .filter(|x| x.dir == p.dir && x.size == SizeSpec::Fixed(p.size) && x.queues == 1)
            .collect();
        let gc = here
            .iter()
            .find(|x| x.design == BASELINE)
            .map_or("-".into(), |x| format!("{:.0}", x.pps.median));
        let best = here
            .iter()
            .max_by(|a, b| a.pps.median.total_cmp(&b.pps.median));
        let ratio = best.and_then(|b| {
            let theirs = r.kept_peer_runs(&place, &p.peer, p.dir, p.size);
            let mine = r.kept_runs(&place, p.dir, &SizeSpec::Fixed(p.size), &b.design, 1);
            boot.interval(&per_round_ratios(&mine, &theirs))
        });
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | [{:.0}..{:.0}] | {:.2} | {} | {} | {} | {} | {} |",
            p.dir,
            p.size,
            p.pps.median,
            p.pps.lo,
            p.pps.hi,
            p.gbps,
            gc,
            best.map_or("-".into(), |b| b.design.clone()),
            best.map_or("-".into(), |b| format!("{:.0}", b.pps.median)),
            ratio_cell(ratio),
            p.n
        );
    }
    if place.far_throughout() {
        let _ = writeln!(
            out,
            "\nThis sweep ran with the two cores far apart (lower quartile of the probes {:.0} \
             ns; see Far placements): these ratios do not carry over to near cores.",
            place.near_ns
        );
    }
    let mut mixes: Vec<String> = Vec::new();
    for s in r.samples.iter().filter(|s| s.size.is_mixed()) {
        if !mixes.contains(&s.size.to_string()) {
            mixes.push(s.size.to_string());
        }
    }
    if !mixes.is_empty() {
        let _ = writeln!(
            out,
            "\ntestpmd sends frames of one size: the mixed sizes ({}) ran without it.",
            mixes.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nThe commands of the first run in each direction (every run's are in `results.json`):\n"
    );
    let mut shown: Vec<Dir> = Vec::new();
    for p in &r.peers {
        if shown.contains(&p.dir) {
            continue;
        }
        shown.push(p.dir);
        let _ = writeln!(out, "{} at {} B:\n\n```", p.dir, p.size);
        for c in &p.commands {
            let _ = writeln!(out, "{c}");
        }
        let _ = writeln!(out, "```\n");
    }
}

/// Writes `records` as CSV, quoting values as RFC 4180 asks, under a header of their field
/// names, which must be `columns` (the header is written from `columns` when there are no
/// records; a debug build checks that the two agree).
pub(crate) fn write_csv<R: Serialize>(
    columns: &[&str],
    records: impl IntoIterator<Item = R>,
) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut records = records.into_iter().peekable();
    let written = if records.peek().is_none() {
        w.write_record(columns)
    } else {
        records.try_for_each(|r| w.serialize(r))
    };
    // Into memory, writing fails only for a record that is not a flat struct: a bug here.
    written.expect("a CSV record is a flat struct");
    let bytes = w.into_inner().expect("a Vec takes every byte");
    let text = String::from_utf8(bytes).expect("the CSV cells are UTF-8 text");
    debug_assert!(
        text.lines().next() == Some(&columns.join(",")),
        "a CSV record's fields are not its columns {columns:?}"
    );
    text
}

/// How the CSV files write a cell: a number at a fixed count of decimals (as the reports
/// print it), a value by its `Display`, an absent one as an empty cell.
pub(crate) mod cell {
    use serde::Serializer;

    /// `v` with `N` decimals.
    pub(crate) fn fixed<const N: usize, S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{v:.prec$}", prec = N))
    }

    /// `v` with `N` decimals, or an empty cell.
    pub(crate) fn fixed_or_empty<const N: usize, S: Serializer>(
        v: &Option<f64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => fixed::<N, S>(v, s),
            None => s.serialize_none(),
        }
    }

    /// `v` as it displays.
    pub(crate) fn display<T: std::fmt::Display, S: Serializer>(
        v: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
}

/// The columns of `peers.csv`.
pub const PEERS_CSV_COLUMNS: [&str; 10] = [
    "round",
    "peer",
    "dir",
    "size",
    "pps",
    "gbps",
    "periods",
    "probe_ns",
    "probe_after_ns",
    "far",
];

/// One line of `peers.csv`: one peer run.
#[derive(Serialize)]
struct PeerRecord<'a> {
    round: u32,
    peer: &'a str,
    #[serde(serialize_with = "cell::display")]
    dir: Dir,
    size: usize,
    #[serde(serialize_with = "cell::fixed::<1, _>")]
    pps: f64,
    #[serde(serialize_with = "cell::fixed::<4, _>")]
    gbps: f64,
    /// How many periods were measured.
    periods: usize,
    #[serde(serialize_with = "cell::fixed::<1, _>")]
    probe_ns: f64,
    #[serde(serialize_with = "cell::fixed::<1, _>")]
    probe_after_ns: f64,
    far: u8,
}

/// Every peer sample as CSV (one line per run; `far` is 1 for a run set aside as taken
/// during a far placement).
pub fn peers_csv(r: &Results) -> String {
    let place = r.placement();
    let records = r.peers.iter().map(|p| PeerRecord {
        round: p.round,
        peer: &p.peer,
        dir: p.dir,
        size: p.size,
        pps: p.pps,
        gbps: p.gbps,
        periods: p.periods.len(),
        probe_ns: p.probe_ns,
        probe_after_ns: p.probe_after_ns,
        far: u8::from(place.far(p.probe_ns, p.probe_after_ns)),
    });
    write_csv(&PEERS_CSV_COLUMNS, records)
}

/// The columns of `results.csv`.
pub const RESULTS_CSV_COLUMNS: [&str; 23] = [
    "round",
    "design",
    "design_used",
    "dir",
    "size",
    "queues",
    "pps",
    "gbps",
    "packets",
    "seconds",
    "front_cpu_s",
    "back_cpu_s",
    "probe_ns",
    "probe_after_ns",
    "other_busy_s",
    "span_s",
    "delivered",
    "lost",
    "corrupted",
    "reordered",
    "wrong_length",
    "position",
    "far",
];

/// One line of `results.csv`: one run. The check's cells are empty for a run without one.
#[derive(Serialize)]
struct SampleRecord<'a> {
    round: u32,
    design: &'a str,
    design_used: &'a str,
    #[serde(serialize_with = "cell::display")]
    dir: Dir,
    #[serde(serialize_with = "cell::display")]
    size: &'a SizeSpec,
    queues: u16,
    #[serde(serialize_with = "cell::fixed::<1, _>")]
    pps: f64,
    #[serde(serialize_with = "cell::fixed::<4, _>")]
    gbps: f64,
    packets: u64,
    #[serde(serialize_with = "cell::fixed::<4, _>")]
    seconds: f64,
    #[serde(serialize_with = "cell::fixed::<4, _>")]
    front_cpu_s: f64,
    #[serde(serialize_with = "cell::fixed::<4, _>")]
    back_cpu_s: f64,
    #[serde(serialize_with = "cell::fixed::<1, _>")]
    probe_ns: f64,
    #[serde(serialize_with = "cell::fixed::<1, _>")]
    probe_after_ns: f64,
    #[serde(serialize_with = "cell::fixed_or_empty::<4, _>")]
    other_busy_s: Option<f64>,
    #[serde(serialize_with = "cell::fixed::<4, _>")]
    span_s: f64,
    delivered: Option<u64>,
    lost: Option<u64>,
    corrupted: Option<u64>,
    reordered: Option<u64>,
    /// Frames of the wrong length ([`check::Check::errored`]).
    wrong_length: Option<u64>,
    position: Option<u32>,
    far: u8,
}

impl<'a> SampleRecord<'a> {
    fn new(s: &'a Sample, place: &Placement) -> Self {
        SampleRecord {
            round: s.round,
            design: &s.design,
            design_used: &s.design_used,
            dir: s.dir,
            size: &s.size,
            queues: s.queues,
            pps: s.pps,
            gbps: s.gbps,
            packets: s.packets,
            seconds: s.seconds,
            front_cpu_s: s.front_cpu_s,
            back_cpu_s: s.back_cpu_s,
            probe_ns: s.probe_ns,
            probe_after_ns: s.probe_after_ns,
            other_busy_s: s.other_busy_s,
            span_s: s.span_s,
            delivered: s.check.map(|c| c.delivered),
            lost: s.check.map(|c| c.lost),
            corrupted: s.check.map(|c| c.corrupted),
            reordered: s.check.map(|c| c.reordered),
            wrong_length: s.check.map(|c| c.errored),
            position: s.position,
            far: u8::from(place.far(s.probe_ns, s.probe_after_ns)),
        }
    }
}

/// Every sample as CSV (one line per run; `position` is its place in its round's shuffled
/// order, `far` is 1 for a run set aside as taken during a far placement).
pub fn csv(r: &Results) -> String {
    let place = r.placement();
    let records = r.samples.iter().map(|s| SampleRecord::new(s, &place));
    write_csv(&RESULTS_CSV_COLUMNS, records)
}

/// The columns of `summary.csv`.
pub const SUMMARY_CSV_COLUMNS: [&str; 17] = [
    "dir",
    "size",
    "design",
    "queues",
    "design_used",
    "runs",
    "far_runs",
    "far_only",
    "pps_median",
    "pps_lo",
    "pps_hi",
    "gbps",
    "ratio_median",
    "ratio_lo",
    "ratio_hi",
    "half_width_pct",
    "wide",
];

/// One line of `summary.csv`: one row of the report's main table. The ratio's cells are
/// empty for a row without one.
#[derive(Serialize)]
struct SummaryRecord<'a> {
    #[serde(serialize_with = "cell::display")]
    dir: Dir,
    #[serde(serialize_with = "cell::display")]
    size: &'a SizeSpec,
    design: &'a str,
    queues: u16,
    design_used: &'a str,
    runs: usize,
    far_runs: usize,
    far_only: u8,
    #[serde(serialize_with = "cell::fixed::<1, _>")]
    pps_median: f64,
    #[serde(serialize_with = "cell::fixed::<1, _>")]
    pps_lo: f64,
    #[serde(serialize_with = "cell::fixed::<1, _>")]
    pps_hi: f64,
    #[serde(serialize_with = "cell::fixed::<4, _>")]
    gbps: f64,
    #[serde(serialize_with = "cell::fixed_or_empty::<4, _>")]
    ratio_median: Option<f64>,
    #[serde(serialize_with = "cell::fixed_or_empty::<4, _>")]
    ratio_lo: Option<f64>,
    #[serde(serialize_with = "cell::fixed_or_empty::<4, _>")]
    ratio_hi: Option<f64>,
    #[serde(serialize_with = "cell::fixed::<2, _>")]
    half_width_pct: f64,
    wide: u8,
}

impl<'a> SummaryRecord<'a> {
    fn new(row: &'a Row) -> Self {
        SummaryRecord {
            dir: row.dir,
            size: &row.size,
            design: &row.design,
            queues: row.queues,
            design_used: &row.design_used,
            runs: row.n,
            far_runs: row.far,
            far_only: u8::from(row.far_only),
            pps_median: row.pps.median,
            pps_lo: row.pps.lo,
            pps_hi: row.pps.hi,
            gbps: row.gbps,
            ratio_median: row.ratio.map(|x| x.median),
            ratio_lo: row.ratio.map(|x| x.lo),
            ratio_hi: row.ratio.map(|x| x.hi),
            half_width_pct: 100.0 * row.headline().half_width(),
            wide: u8::from(row.headline().wide()),
        }
    }
}

/// The summary as CSV: one line per row of the report's main table, with the 95 %
/// intervals.
pub fn summary_csv(r: &Results) -> String {
    let rows = summarise(r);
    write_csv(&SUMMARY_CSV_COLUMNS, rows.iter().map(SummaryRecord::new))
}

/// The summary as JSON: the seed, the far-placement rule, the runs set aside, and every
/// row of the main table and of the peers' with their 95 % intervals.
pub fn summary_json(r: &Results) -> serde_json::Value {
    let place = r.placement();
    serde_json::json!({
        "seed": r.seed,
        "rounds": r.rounds(),
        "resamples": stats::RESAMPLES,
        "interval": "95 % percentile bootstrap of the median, resampling rounds",
        "far_threshold_ns": place.threshold_ns,
        "median_probe_ns": place.median_ns,
        "near_probe_ns": place.near_ns,
        "far_runs_set_aside": set_aside(&far_runs(r)),
        "rows": summarise(r),
        "peers": peer_rows(r),
    })
}

/// Cross-core ping-pong: the round trip of a cache line between cores 0 and 1 over
/// `trips` trips, in nanoseconds (what placement the next sample gets). The trips are timed
/// in batches of [`PROBE_BATCH`] and the median batch's mean trip returned, so that a probe
/// thread preempted for a few milliseconds on a busy machine reads as the placement it
/// had, not as a far one.
pub fn probe(trips: u64) -> f64 {
    let flag = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (f2, d2) = (Arc::clone(&flag), Arc::clone(&done));
    let peer = std::thread::spawn(move || {
        let _ = sys::pin_to_core(1);
        let mut expect = 1;
        while !d2.load(Ordering::Relaxed) {
            if f2.load(Ordering::Acquire) == expect {
                f2.store(expect + 1, Ordering::Release);
                expect += 2;
            }
            std::hint::spin_loop();
        }
    });
    let me = std::thread::spawn(move || ping(flag, trips));
    let ns = me.join().unwrap_or(f64::NAN);
    done.store(true, Ordering::Relaxed);
    let _ = peer.join();
    ns
}

/// Round trips timed together in [`probe`].
pub const PROBE_BATCH: u64 = 100;

fn ping(flag: Arc<AtomicU64>, trips: u64) -> f64 {
    let _ = sys::pin_to_core(0);
    let mut v = 0;
    let deadline = Instant::now() + std::time::Duration::from_millis(200);
    let mut done = 0;
    let mut batches = Vec::with_capacity((trips / PROBE_BATCH + 1) as usize);
    while done < trips && Instant::now() < deadline {
        let t = Instant::now();
        let mut n = 0;
        while n < PROBE_BATCH && done + n < trips {
            flag.store(v + 1, Ordering::Release);
            while flag.load(Ordering::Acquire) != v + 2 {
                std::hint::spin_loop();
                if Instant::now() > deadline {
                    break;
                }
            }
            v += 2;
            n += 1;
        }
        batches.push(t.elapsed().as_nanos() as f64 / n.max(1) as f64);
        done += n;
    }
    spread(&batches).map_or(f64::NAN, |s| s.median)
}
