//! The netstage comparison harness: every design through the same code paths, measured in
//! one run with interleaved rounds, reported as CSV, JSON, a markdown report and plots.
//!
//! This library holds the result model and the report rendering; the binary
//! (`experiments compare`, `experiments report`) runs the scenarios.

#![deny(unsafe_code)]

pub mod calibrate;
pub mod check;
pub mod peer;
pub mod plots;
pub mod roles;
pub mod sweep;
#[allow(unsafe_code)]
pub mod sys;
pub mod tap;
pub mod tcp;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use roles::Dir;

/// One measured run of one scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Round (the scenarios are interleaved round by round).
    pub round: u32,
    /// Design asked for.
    pub design: String,
    /// Design the frontend ended up using.
    pub design_used: String,
    /// Direction.
    pub dir: Dir,
    /// Packet size in bytes.
    pub size: usize,
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
            (Some(f), Some(b)) if self.poll == "blocking" => format!(
                "blocking (a wait spins {f} us in the frontend and {b} us in the backend before it sleeps)"
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
    /// Peers measured in the same run (`--peer`), interleaved with the designs.
    #[serde(default)]
    pub peers: Vec<peer::PeerSample>,
    /// Peer runs that failed, and why (the run went on without them).
    #[serde(default)]
    pub peer_failures: Vec<String>,
}

/// Median, min and max of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median (the lower middle value for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

/// The spread of `v` (`None` if empty).
pub fn spread(v: &[f64]) -> Option<Spread> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    Some(Spread {
        median: s[(s.len() - 1) / 2],
        min: s[0],
        max: s[s.len() - 1],
    })
}

/// One row of the summary: a scenario over all rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Direction.
    pub dir: Dir,
    /// Size.
    pub size: usize,
    /// Design asked for.
    pub design: String,
    /// Queues.
    pub queues: u16,
    /// Design in use.
    pub design_used: String,
    /// Packets per second.
    pub pps: Spread,
    /// Gbit/s at the median.
    pub gbps: f64,
    /// Ratio of the median to grant-copy's median in the same run.
    pub ratio: Option<f64>,
    /// Frontend CPU microseconds per packet (median).
    pub front_us_per_pkt: f64,
    /// Samples.
    pub n: usize,
}

impl Row {
    /// The design's name with its queue count (see [`label`]).
    pub fn label(&self) -> String {
        label(&self.design, self.queues)
    }

    /// The median over rounds of `f` of this scenario's samples in `r`.
    pub fn median(&self, r: &Results, f: &dyn Fn(&Sample) -> f64) -> f64 {
        scenario_median(r, self.dir, self.size, &self.design, self.queues, f)
    }
}

/// Summarises the samples per (direction, size, queues, design), in first-seen design
/// order; ratios are to grant-copy at the same direction, size and queue count.
pub fn summarise(r: &Results) -> Vec<Row> {
    let mut order: Vec<String> = Vec::new();
    for s in &r.samples {
        if !order.contains(&s.design) {
            order.push(s.design.clone());
        }
    }
    let mut groups: BTreeMap<(String, u16, usize), Vec<&Sample>> = BTreeMap::new();
    // A run that lost or damaged packets measured something else: it is left out (and named
    // in the correctness section).
    for s in r.samples.iter().filter(|s| s.intact()) {
        groups
            .entry((s.dir.to_string(), s.queues, s.size))
            .or_default()
            .push(s);
    }
    let mut rows = Vec::new();
    for ((_, queues, size), samples) in groups {
        let med = |d: &str| -> Option<Spread> {
            spread(
                &samples
                    .iter()
                    .filter(|s| s.design == d)
                    .map(|s| s.pps)
                    .collect::<Vec<_>>(),
            )
        };
        let base = med("grant-copy").map(|s| s.median);
        for d in &order {
            let of: Vec<&&Sample> = samples.iter().filter(|s| &s.design == d).collect();
            let Some(pps) = med(d) else { continue };
            let us = spread(
                &of.iter()
                    .filter(|s| s.packets > 0)
                    .map(|s| s.front_cpu_s * 1e6 / s.packets as f64)
                    .collect::<Vec<_>>(),
            )
            .map_or(0.0, |s| s.median);
            rows.push(Row {
                dir: of[0].dir,
                size,
                design: d.clone(),
                queues,
                design_used: of[0].design_used.clone(),
                pps,
                gbps: pps.median * size as f64 * 8.0 / 1e9,
                ratio: base.filter(|b| *b > 0.0).map(|b| pps.median / b),
                front_us_per_pkt: us,
                n: of.len(),
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

/// The median over rounds of `f` of one scenario's samples (0 when it has none).
pub fn scenario_median(
    r: &Results,
    dir: Dir,
    size: usize,
    design: &str,
    queues: u16,
    f: &dyn Fn(&Sample) -> f64,
) -> f64 {
    let v: Vec<f64> = r
        .samples
        .iter()
        .filter(|s| s.dir == dir && s.size == size && s.design == design && s.queues == queues)
        .map(f)
        .collect();
    spread(&v).map_or(0.0, |s| s.median)
}

/// The summary as a markdown table.
pub fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let rows = summarise(r);
    let m = &r.machine;
    let _ = writeln!(out, "# netstage: designs compared\n");
    let _ = writeln!(
        out,
        "Machine: {} ({} cores), kernel {}; grant cost mode `{}`; event channels: {}.\n",
        m.cpu,
        m.cores,
        m.kernel,
        m.cost_mode,
        m.waiting()
    );
    let _ = writeln!(
        out,
        "Medians over interleaved rounds (min..max in brackets); ratios are to grant-copy \
         at the same direction, size and queue count, measured in the same run. Frontend and backend are separate processes pinned to \
         different cores.\n"
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
    let _ = writeln!(
        out,
        "| dir | size (B) | design | in use | pps (median) | [min..max] | Gbit/s | x grant-copy | frontend CPU us/pkt | runs |"
    );
    let _ = writeln!(out, "|---|---:|---|---|---:|---|---:|---:|---:|---:|");
    for row in &rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | [{:.0}..{:.0}] | {:.2} | {} | {:.3} | {} |",
            row.dir,
            row.size,
            row.label(),
            row.design_used,
            row.pps.median,
            row.pps.min,
            row.pps.max,
            row.gbps,
            row.ratio.map_or("-".into(), |x| format!("{x:.2}x")),
            row.front_us_per_pkt,
            row.n
        );
    }
    table_head(
        &mut out,
        "\n## Cost per packet\n\nBackend counters over its whole run divided by the packets it moved (medians over rounds): grant-copy operations, grant-copy calls (hypercalls), pages mapped and unmapped, system calls the emulation made, notifications sent by the backend, bytes memcpy'd through staging memory, bytes moved by grant copy or read through grant maps, and backend CPU.\n",
        "| dir | size (B) | design | copy ops | copy calls | maps | unmaps | kernel crossings | backend notifications | staged bytes | granted bytes | backend CPU us |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    for row in &rows {
        let med = |f: &dyn Fn(&Sample) -> f64| row.median(r, f);
        let (staged, granted): (&str, &[&str]) = match row.dir {
            Dir::Rx => ("rx_staged_bytes", &["rx_grant_copy_bytes"]),
            _ => (
                "tx_staged_bytes",
                &["tx_grant_copy_bytes", "tx_grant_map_bytes"],
            ),
        };
        let c = plots::cost_components(r, row.dir, row.size, &row.design, row.queues);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.3} | {:.2} | {:.2} | {:.3} | {:.3} | {:.0} | {:.0} | {:.3} |",
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
        );
    }
    table_head(
        &mut out,
        "\n## Notifications, staging and shared memory\n\nPer packet, medians over rounds: event-channel notifications each side sent and the wake-ups each side took (a wake-up is one return from a blocking wait), the share of packets whose bytes went wholly or partly through staging memory, the fallbacks to grant operations by reason — the packet was larger than the copy limit (a slot's data-len or the policy's limit; TX only: RX counts no such reason) or the data ring had no room (on TX a packet can be both staged and a fallback: the greedy policy stages what fits and grants the rest) — the data ring's mean fill as the frontend sampled it (at each TX staging decision, at each staged RX packet; `-` for designs without a data ring), and the memory the frontend keeps granted to the backend (rings, slots or data rings).\n",
        "| dir | size (B) | design | backend notifications | backend wake-ups | frontend notifications | frontend wake-ups | staged % | over-limit fallback % | ring-full fallback % | ring fill % | granted (KiB) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    for row in &rows {
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
        for row in rr {
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
                    "blocking"
                },
                row.label(),
                row.pps.median,
                row.ratio.map_or("-".into(), |x| format!("{x:.2}x")),
                pct(0),
                pct(1),
                pct(2)
            );
        }
    }
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
                "The best data-ring design here, {} at {} B {}, reaches {:.2} Gbit/s: {:.0} % of it.",
                b.design,
                b.size,
                b.dir,
                b.gbps,
                100.0 * b.gbps / g.median.max(1e-9)
            );
        }
    }
    small_stream_section(&mut out, r, &rows);
    peer_section(&mut out, r, &rows);
    let before: Vec<f64> = r.samples.iter().map(|s| s.probe_ns).collect();
    let after: Vec<f64> = r
        .samples
        .iter()
        .map(|s| s.probe_after_ns)
        .filter(|p| *p > 0.0)
        .collect();
    if let Some(p) = spread(&before) {
        let _ = write!(
            out,
            "\nCross-core cache-line round trip before each run: median {:.0} ns, range {:.0}..{:.0} ns",
            p.median, p.min, p.max
        );
        match spread(&after) {
            Some(q) => {
                let _ = writeln!(
                    out,
                    "; after each run: median {:.0} ns, range {:.0}..{:.0} ns.",
                    q.median, q.min, q.max
                );
            }
            None => {
                let _ = writeln!(out, ".");
            }
        }
    }
    check_section(&mut out, r);
    outlier_section(&mut out, r);
    let names = plots::chart_names(r);
    if !names.is_empty() {
        let _ = writeln!(
            out,
            "\n## Plots\n\nThroughput by packet size (bars: min..max over rounds), backend operations per packet stacked by component, the share of packets staged and the data ring's mean fill per 10 ms through the first round's run of each staging design, and request/response rates; each also as PNG.\n"
        );
        for n in names {
            let _ = writeln!(out, "![{n}]({n}.svg)");
        }
    }
    out
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
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.round,
                label(&s.design, s.queues),
                s.dir,
                s.size,
                c.delivered,
                c.lost,
                c.corrupted,
                c.reordered,
                c.errored
            );
        }
    }
}

/// The 64-byte raw stream beside the best 64-byte packet rate of a data-ring design.
fn small_stream_section(out: &mut String, r: &Results, rows: &[Row]) {
    let Some(g) = spread(&r.stream_64b_mps) else {
        return;
    };
    let _ = writeln!(
        out,
        "\nThe same ring moving 64-byte records, each written and read on its own (what a ring \
         that copies 64 B in and out can do): {:.2} M records/s median [{:.2}..{:.2}] over {} \
         rounds.",
        g.median,
        g.min,
        g.max,
        r.stream_64b_mps.len()
    );
    let best = rows
        .iter()
        .filter(|row| row.design.starts_with("ring:") && row.queues == 1 && row.size == 64)
        .filter(|row| matches!(row.dir, Dir::Tx | Dir::Rx))
        .max_by(|a, b| a.pps.median.total_cmp(&b.pps.median));
    if let Some(b) = best {
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
        let median = scenario_median(r, s.dir, s.size, &s.design, s.queues, &|x| x.pps);
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
    pub size: usize,
    /// Design.
    pub design: String,
    /// Median pps in the first run.
    pub before: Spread,
    /// Median pps in the second run.
    pub after: Spread,
    /// Whether the change is beyond the noise: the two runs' ranges (min..max over rounds)
    /// do not overlap.
    pub significant: bool,
}

/// Compares two runs scenario by scenario (those present in both); peers appear as designs
/// named `peer:<name>`.
pub fn diff(a: &Results, b: &Results) -> Vec<Change> {
    let rows = |r: &Results| -> Vec<(Dir, usize, String, Spread)> {
        summarise(r)
            .into_iter()
            .map(|x| (x.dir, x.size, x.label(), x.pps))
            .chain(
                peer_rows(r)
                    .into_iter()
                    .map(|p| (p.dir, p.size, format!("peer:{}", p.peer), p.pps)),
            )
            .collect()
    };
    pair_changes(rows(a), &rows(b))
}

/// The scenarios of `a` also in `b` (same direction, size and name), with their spreads in
/// both; a change is beyond the noise when the two min..max ranges do not overlap.
pub fn pair_changes(
    a: Vec<(Dir, usize, String, Spread)>,
    b: &[(Dir, usize, String, Spread)],
) -> Vec<Change> {
    a.into_iter()
        .filter_map(|(dir, size, design, before)| {
            let after = b
                .iter()
                .find(|y| y.0 == dir && y.1 == size && y.2 == design)?
                .3;
            Some(Change {
                dir,
                size,
                design,
                before,
                after,
                significant: before.max < after.min || after.max < before.min,
            })
        })
        .collect()
}

/// A diff as a markdown table (packets per second).
pub fn diff_markdown(changes: &[Change]) -> String {
    changes_table(changes, "pps", true, |v| format!("{v:.0}"))
}

/// A diff as a markdown table of `what` (with the size column when `sizes`), values shown
/// by `show`.
pub fn changes_table(
    changes: &[Change],
    what: &str,
    sizes: bool,
    show: impl Fn(f64) -> String,
) -> String {
    let (size_head, size_align) = if sizes {
        (" size (B) |", "---:|")
    } else {
        ("", "")
    };
    let mut out = format!(
        "| dir |{size_head} design | {what} before | {what} after | change | beyond the noise |\n|---|{size_align}---|---:|---:|---:|---|\n"
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
            show(c.before.median),
            show(c.after.median),
            (c.after.median / c.before.median.max(1e-9) - 1.0) * 100.0,
            if c.significant { "yes" } else { "no" }
        );
    }
    out
}

/// One peer at one direction and size over all rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRow {
    /// Which peer.
    pub peer: String,
    /// Direction.
    pub dir: Dir,
    /// Frame size.
    pub size: usize,
    /// Packets per second over the rounds.
    pub pps: Spread,
    /// Gbit/s at the median.
    pub gbps: f64,
    /// Runs.
    pub n: usize,
}

/// Summarises the peers' samples per (peer, direction, size).
pub fn peer_rows(r: &Results) -> Vec<PeerRow> {
    let mut groups: BTreeMap<(String, String, usize), Vec<&peer::PeerSample>> = BTreeMap::new();
    for p in &r.peers {
        groups
            .entry((p.peer.clone(), p.dir.to_string(), p.size))
            .or_default()
            .push(p);
    }
    groups
        .into_iter()
        .filter_map(|((peer, _, size), v)| {
            let pps = spread(&v.iter().map(|p| p.pps).collect::<Vec<_>>())?;
            Some(PeerRow {
                peer,
                dir: v[0].dir,
                size,
                gbps: pps.median * size as f64 * 8.0 / 1e9,
                pps,
                n: v.len(),
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
        "\n## Beside DPDK vhost-user / virtio-user\n\nThe KVM world's user-space paravirtual NIC measured in the same run, interleaved with the designs: two `dpdk-testpmd` processes (`net_virtio_user` on the frontend's core, `net_vhost` on the backend's; TX is guest to host, RX host to guest), the receiver's per-second rate after a warm-up period, medians over rounds. All of the guest's memory is mapped by the host side, testpmd's generator writes only frame headers and its receiver never reads the payload, so a testpmd frame is copied once and read by nobody; a netstage frame is copied into shared memory by the sender, then lent in place to the receiver (staged bytes) or grant-copied into its buffers (granted bytes), and the receiver reads every byte to check it.\n",
        "| dir | size (B) | testpmd pps (median) | [min..max] | Gbit/s | grant-copy pps | best design | its pps | best / testpmd | runs |",
        "|---|---:|---:|---|---:|---:|---|---:|---:|---:|",
    );
    for p in &rows {
        let here: Vec<&Row> = ours
            .iter()
            .filter(|x| x.dir == p.dir && x.size == p.size && x.queues == 1)
            .collect();
        let gc = here
            .iter()
            .find(|x| x.design == "grant-copy")
            .map_or("-".into(), |x| format!("{:.0}", x.pps.median));
        let best = here
            .iter()
            .max_by(|a, b| a.pps.median.total_cmp(&b.pps.median));
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | [{:.0}..{:.0}] | {:.2} | {} | {} | {} | {} | {} |",
            p.dir,
            p.size,
            p.pps.median,
            p.pps.min,
            p.pps.max,
            p.gbps,
            gc,
            best.map_or("-".into(), |b| b.design.clone()),
            best.map_or("-".into(), |b| format!("{:.0}", b.pps.median)),
            best.map_or("-".into(), |b| format!(
                "{:.2}x",
                b.pps.median / p.pps.median.max(1e-9)
            )),
            p.n
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

/// Every peer sample as CSV (one line per run).
pub fn peers_csv(r: &Results) -> String {
    let mut out = String::from("round,peer,dir,size,pps,gbps,periods,probe_ns,probe_after_ns\n");
    for p in &r.peers {
        let _ = writeln!(
            out,
            "{},{},{},{},{:.1},{:.4},{},{:.1},{:.1}",
            p.round,
            p.peer,
            p.dir,
            p.size,
            p.pps,
            p.gbps,
            p.periods.len(),
            p.probe_ns,
            p.probe_after_ns
        );
    }
    out
}

/// Every sample as CSV (one line per run).
pub fn csv(r: &Results) -> String {
    let mut out = String::from(
        "round,design,design_used,dir,size,queues,pps,gbps,packets,seconds,front_cpu_s,back_cpu_s,probe_ns,probe_after_ns,other_busy_s,span_s,delivered,lost,corrupted,reordered,wrong_length\n",
    );
    for s in &r.samples {
        let other = s.other_busy_s.map_or(String::new(), |b| format!("{b:.4}"));
        let check = s.check.map_or(",,,,".to_string(), |c| {
            format!(
                "{},{},{},{},{}",
                c.delivered, c.lost, c.corrupted, c.reordered, c.errored
            )
        });
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{:.1},{:.4},{},{:.4},{:.4},{:.4},{:.1},{:.1},{},{:.4},{}",
            s.round,
            s.design,
            s.design_used,
            s.dir,
            s.size,
            s.queues,
            s.pps,
            s.gbps,
            s.packets,
            s.seconds,
            s.front_cpu_s,
            s.back_cpu_s,
            s.probe_ns,
            s.probe_after_ns,
            other,
            s.span_s,
            check
        );
    }
    out
}

/// Cross-core ping-pong: the mean round trip of a cache line between cores 0 and 1 over
/// `trips` trips, in nanoseconds (what placement the next sample gets).
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

fn ping(flag: Arc<AtomicU64>, trips: u64) -> f64 {
    let _ = sys::pin_to_core(0);
    let t = Instant::now();
    let mut v = 0;
    let deadline = t + std::time::Duration::from_millis(200);
    let mut n = 0;
    while n < trips && Instant::now() < deadline {
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
    t.elapsed().as_nanos() as f64 / n.max(1) as f64
}
