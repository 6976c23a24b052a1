//! The `xen` cost preset: what Xen charges per grant operation, less what the emulation
//! already costs, measured in the same run.
//!
//! `docs/calibration.md` derives the targets ([`ModelCost::XEN`]) from the measurements
//! posted with the staging-grants RFC. A run with `--cost xen` first measures, under the
//! `none` mode, what a grant copy and a grant map add per 64-byte packet over the staging
//! memcpy *in this emulation* (its own checks, locks and copies), then charges only the rest
//! with the `model` mode's spins. The seed check ([`seed_check`]) then compares what a grant
//! copy added per packet in the measured sweep with what it added on Xen.

use netstage_platform::sim::{CostMode, ModelCost};
use serde::{Deserialize, Serialize};

use std::fmt::Write as _;

use crate::stats::{Bootstrap, Interval};
use crate::{Dir, Results, Sample};

/// The name of the preset on the harness's command line and in scenario files.
pub const XEN_PRESET: &str = "xen";

/// The staging design the seed measured against grant copy (RFC rev 1, data-len 256).
pub const SEED_STAGING: &str = "slots:256";
/// The packet size of the seed's rows.
pub const SEED_SIZE: usize = 64;
/// What a grant copy added per 64-byte packet on Xen, in nanoseconds, TX then RX:
/// 1/1,506,170 - 1/3,759,012 s and 1/1,549,630 - 1/3,285,362 s (one vCPU).
pub const SEED_ADDED_NS: [(Dir, f64); 2] = [(Dir::Tx, 398.0), (Dir::Rx, 341.0)];
/// What the seed's staging path cost per 64-byte packet, in nanoseconds: 1/3,759,012 s
/// (TX) and 1/3,285,362 s (RX).
pub const SEED_STAGING_NS: [(Dir, f64); 2] = [(Dir::Tx, 266.0), (Dir::Rx, 304.0)];
/// How close the added cost must come to the seed's to count as reproduced.
pub const SEED_TOLERANCE: f64 = 0.20;

/// Interleaved rounds of the calibration runs.
pub const CALIBRATION_ROUNDS: u32 = 5;

/// The runs a calibration takes per round, all at [`SEED_SIZE`] bytes in the `none` mode.
pub const CALIBRATION_RUNS: [(&str, Dir); 5] = [
    ("grant-copy", Dir::Tx),
    (SEED_STAGING, Dir::Tx),
    ("grant-copy", Dir::Rx),
    (SEED_STAGING, Dir::Rx),
    ("grant-map", Dir::Tx),
];

/// Nanoseconds per operation, as [`ModelCost`] but serialisable into results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Costs {
    /// Per call (hypercall entry and exit, event-channel send).
    pub call_ns: u64,
    /// Per grant-copy operation reading a granted page (TX).
    pub copy_ns: u64,
    /// Per grant-copy operation writing a granted page (RX).
    #[serde(default)]
    pub copy_to_ns: u64,
    /// Per page mapped.
    pub map_ns: u64,
    /// Per page unmapped.
    pub unmap_ns: u64,
}

impl From<ModelCost> for Costs {
    fn from(m: ModelCost) -> Costs {
        Costs {
            call_ns: m.call_ns,
            copy_ns: m.copy_ns,
            copy_to_ns: m.copy_to_ns,
            map_ns: m.map_ns,
            unmap_ns: m.unmap_ns,
        }
    }
}

impl From<Costs> for ModelCost {
    fn from(c: Costs) -> ModelCost {
        ModelCost {
            call_ns: c.call_ns,
            copy_ns: c.copy_ns,
            copy_to_ns: c.copy_to_ns,
            map_ns: c.map_ns,
            unmap_ns: c.unmap_ns,
        }
    }
}

/// One calibration run: what a design moved in the `none` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRun {
    /// Round.
    pub round: u32,
    /// Design.
    pub design: String,
    /// Direction.
    pub dir: Dir,
    /// Packets per second.
    pub pps: f64,
}

/// What a `--cost xen` run measured and charged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Xen's costs per operation ([`ModelCost::XEN`]).
    pub target: Costs,
    /// What the emulation itself costs per operation, measured by `runs`.
    pub own: Costs,
    /// What the sweep's `model` mode charged on top: `target` beyond `own`.
    pub charged: Costs,
    /// The calibration runs.
    pub runs: Vec<CalibrationRun>,
}

impl Calibration {
    /// The calibration of `runs` (all of [`CALIBRATION_RUNS`] for one or more rounds).
    pub fn from_runs(runs: Vec<CalibrationRun>) -> Result<Calibration, String> {
        let own = own_costs(&runs)?;
        let target = ModelCost::XEN;
        Ok(Calibration {
            target: target.into(),
            own: own.into(),
            charged: target.beyond(&own).into(),
            runs,
        })
    }

    /// The cost mode the sweep runs both ends with.
    pub fn cost_mode(&self) -> CostMode {
        CostMode::Model(self.charged.into())
    }
}

/// Nanoseconds per packet that `with` costs beyond `base`, from their rates.
pub fn added_ns(base_pps: f64, with_pps: f64) -> f64 {
    1e9 / with_pps - 1e9 / base_pps
}

/// The median of `v` (`None` when empty), as the rest of the harness takes it.
fn median(v: &[f64]) -> Option<f64> {
    crate::stats::spread(v).map(|s| s.median)
}

/// Per round, what `design` added per packet over the seed's staging design in `dir`.
fn added_per_round(runs: &[CalibrationRun], design: &str, dir: Dir) -> Vec<f64> {
    let pps = |round: u32, d: &str| {
        runs.iter()
            .find(|r| r.round == round && r.design == d && r.dir == dir && r.pps > 0.0)
            .map(|r| r.pps)
    };
    let mut rounds: Vec<u32> = runs.iter().map(|r| r.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    rounds
        .into_iter()
        .filter_map(|round| Some(added_ns(pps(round, SEED_STAGING)?, pps(round, design)?)))
        .collect()
}

/// What the emulation costs per operation: a grant copy reading a granted page, what it
/// adds per packet on TX, and one writing a granted page, what it adds on RX (medians over
/// rounds); a map and its unmap, what grant-map adds on TX, split evenly. A call costs the
/// `model` mode nothing of its own (no system call unless the peer sleeps), so none is
/// subtracted.
pub fn own_costs(runs: &[CalibrationRun]) -> Result<ModelCost, String> {
    let need = |design: &str, dir: Dir| {
        median(&added_per_round(runs, design, dir)).ok_or_else(|| {
            format!("the calibration has no paired {design} and {SEED_STAGING} {dir} runs")
        })
    };
    let copy = need("grant-copy", Dir::Tx)?;
    let copy_to = need("grant-copy", Dir::Rx)?;
    let map_unmap = need("grant-map", Dir::Tx)?;
    let ns = |x: f64| x.max(0.0).round() as u64;
    Ok(ModelCost {
        call_ns: 0,
        copy_ns: ns(copy),
        copy_to_ns: ns(copy_to),
        map_ns: ns(map_unmap / 2.0),
        unmap_ns: ns(map_unmap / 2.0),
    })
}

/// How a sweep's grant copy compared with the seed's in one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedCheck {
    /// Direction.
    pub dir: Dir,
    /// What a grant copy added per 64-byte packet here, per round (ns).
    pub added_ns: Vec<f64>,
    /// Its median.
    pub median_ns: f64,
    /// What it added on Xen (ns).
    pub seed_ns: f64,
    /// What the staging path cost per packet here (ns, median over rounds).
    pub staging_ns: f64,
    /// What it cost in the seed (ns).
    pub seed_staging_ns: f64,
}

impl SeedCheck {
    /// The relative difference from the seed's added cost.
    pub fn error(&self) -> f64 {
        self.median_ns / self.seed_ns - 1.0
    }

    /// Whether it came within [`SEED_TOLERANCE`].
    pub fn reproduced(&self) -> bool {
        self.error().abs() <= SEED_TOLERANCE
    }
}

/// The seed check of a sweep's samples: per direction that has paired grant-copy and
/// [`SEED_STAGING`] runs at [`SEED_SIZE`] bytes on one queue, what a grant copy added.
/// Only the samples given count: the report passes those it keeps (frames intact, no far
/// placement).
pub fn seed_check<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Vec<SeedCheck> {
    let runs: Vec<CalibrationRun> = samples
        .into_iter()
        .filter(|s| {
            s.size == crate::SizeSpec::Fixed(SEED_SIZE)
                && s.queues == 1
                && s.design == s.design_used
        })
        .map(|s| CalibrationRun {
            round: s.round,
            design: s.design.clone(),
            dir: s.dir,
            pps: s.pps,
        })
        .collect();
    let staging = |dir: Dir| {
        median(
            &runs
                .iter()
                .filter(|r| r.design == SEED_STAGING && r.dir == dir && r.pps > 0.0)
                .map(|r| 1e9 / r.pps)
                .collect::<Vec<_>>(),
        )
    };
    SEED_ADDED_NS
        .iter()
        .zip(SEED_STAGING_NS)
        .filter_map(|(&(dir, seed_ns), (_, seed_staging_ns))| {
            let added = added_per_round(&runs, "grant-copy", dir);
            Some(SeedCheck {
                dir,
                median_ns: median(&added)?,
                added_ns: added,
                seed_ns,
                staging_ns: staging(dir)?,
                seed_staging_ns,
            })
        })
        .collect()
}

/// The report's section on grant costs: the calibration of the `xen` preset (if the run
/// used it) and the check against the seed (if the run has its pairs).
pub fn report_section(out: &mut String, r: &Results) {
    let placement = r.placement();
    let kept = r
        .samples
        .iter()
        .filter(|s| s.intact() && !placement.far(s.probe_ns, s.probe_after_ns));
    let checks = seed_check(kept);
    if r.calibration.is_none() && checks.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n## Grant costs and the seed\n\nWhere the grant costs come from and whether they reproduce what the staging-grants RFC measured on Xen (docs/calibration.md derives the numbers).\n"
    );
    if let Some(c) = &r.calibration {
        calibration_table(out, c);
    }
    if !checks.is_empty() {
        seed_table(out, &checks, r.seed.unwrap_or(0), &r.machine.cost_mode);
    }
}

/// The preset's targets, the emulation's own costs and the spins charged.
fn calibration_table(out: &mut String, c: &Calibration) {
    let _ = writeln!(
        out,
        "Cost mode `xen`: Xen's costs per operation (targets, from the RFC's measurements), less what the emulation's own grant operations cost, measured before the sweep under `none` ({} rounds of {} at {} B: what grant-copy and grant-map add per packet over {}), gives the spins every run charged: `{}`.\n",
        CALIBRATION_ROUNDS,
        CALIBRATION_RUNS
            .iter()
            .map(|(d, dir)| format!("{dir} {d}"))
            .collect::<Vec<_>>()
            .join(", "),
        SEED_SIZE,
        SEED_STAGING,
        c.cost_mode()
    );
    let _ = writeln!(
        out,
        "| ns per | Xen (target) | emulation's own (measured) | charged |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    type Field = fn(&Costs) -> u64;
    let rows: [(&str, Field); 5] = [
        ("call (hypercall, event-channel send)", |c| c.call_ns),
        ("grant-copy operation reading a granted page (TX)", |c| {
            c.copy_ns
        }),
        ("grant-copy operation writing a granted page (RX)", |c| {
            c.copy_to_ns
        }),
        ("page mapped", |c| c.map_ns),
        ("page unmapped", |c| c.unmap_ns),
    ];
    for (name, f) in rows {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            f(&c.target),
            f(&c.own),
            f(&c.charged)
        );
    }
    let _ = writeln!(out);
}

/// What a grant copy added per 64-byte packet here against the seed, and the staging path's
/// own cost against the seed's.
fn seed_table(out: &mut String, checks: &[SeedCheck], seed: u64, mode: &str) {
    let _ = writeln!(
        out,
        "What a grant copy added per {SEED_SIZE}-byte packet over `{SEED_STAGING}` (1/pps of grant-copy less 1/pps of {SEED_STAGING}, round by round; median and 95 % interval) under cost mode `{mode}`, against what it added on Xen in the RFC's measurements (one vCPU), and what the staging path itself cost per packet here and there.\n"
    );
    let _ = writeln!(out, "| dir | added here (ns) [95 % interval] | added on Xen (ns) | difference | within 20 % | staging path here (ns) | staging path on Xen (ns) | ratio here | ratio on Xen |");
    let _ = writeln!(out, "|---|---:|---:|---:|---|---:|---:|---:|---:|");
    let mut boot = Bootstrap::new(seed);
    for c in checks {
        let i = boot.interval(&c.added_ns).unwrap_or(Interval {
            median: c.median_ns,
            lo: c.median_ns,
            hi: c.median_ns,
        });
        let ratio = |staging: f64, added: f64| (staging + added) / staging;
        let _ = writeln!(
            out,
            "| {} | {:.0} [{:.0}..{:.0}] | {:.0} | {:+.0} % | {} | {:.0} | {:.0} | {:.2}x | {:.2}x |",
            c.dir,
            i.median,
            i.lo,
            i.hi,
            c.seed_ns,
            c.error() * 100.0,
            if c.reproduced() { "yes" } else { "**no**" },
            c.staging_ns,
            c.seed_staging_ns,
            ratio(c.staging_ns, c.median_ns),
            ratio(c.seed_staging_ns, c.seed_ns),
        );
    }
    let _ = writeln!(
        out,
        "\nThe preset reproduces what a grant copy *adds*. The seed's ratios follow only where the rest of the path costs what Linux's did: its staging path was a Linux guest's UDP stack and netback, ours two user-space processes, so where the staging columns differ the ratios differ for the same added cost.\n"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: u32, design: &str, dir: Dir, pps: f64) -> CalibrationRun {
        CalibrationRun {
            round,
            design: design.into(),
            dir,
            pps,
        }
    }

    #[test]
    fn own_costs_are_what_grant_operations_add_over_the_staging_memcpy() {
        let mut runs = Vec::new();
        for round in 1..=3 {
            // Staging: 125 ns a packet; grant copy 325 ns (TX) and 275 ns (RX); grant map
            // 1125 ns.
            runs.push(run(round, SEED_STAGING, Dir::Tx, 8e6));
            runs.push(run(round, "grant-copy", Dir::Tx, 1e9 / 325.0));
            runs.push(run(round, SEED_STAGING, Dir::Rx, 8e6));
            runs.push(run(round, "grant-copy", Dir::Rx, 1e9 / 275.0));
            runs.push(run(round, "grant-map", Dir::Tx, 1e9 / 1125.0));
        }
        let own = own_costs(&runs).unwrap();
        assert_eq!((own.copy_ns, own.copy_to_ns), (200, 150), "TX and RX");
        assert_eq!(own.map_ns + own.unmap_ns, 1000);
        assert_eq!(own.call_ns, 0);
        let c = Calibration::from_runs(runs).unwrap();
        assert_eq!(c.charged.copy_ns, ModelCost::XEN.copy_ns - 200);
        assert_eq!(c.charged.copy_to_ns, ModelCost::XEN.copy_to_ns - 150);
        assert_eq!(c.cost_mode().to_string().split(',').count(), 5);
    }

    #[test]
    fn a_calibration_without_its_pairs_says_which_is_missing() {
        let runs = vec![run(1, "grant-copy", Dir::Tx, 1e6)];
        let e = own_costs(&runs).unwrap_err();
        assert!(e.contains("grant-copy") && e.contains("tx"), "{e}");
    }

    #[test]
    fn an_added_cost_is_the_difference_of_the_times_per_packet() {
        assert!((added_ns(4e6, 2e6) - 250.0).abs() < 1e-9);
    }

    #[test]
    fn the_seed_check_passes_within_a_fifth_and_fails_beyond() {
        let check = |median_ns: f64| SeedCheck {
            dir: Dir::Tx,
            added_ns: vec![median_ns],
            median_ns,
            seed_ns: 398.0,
            staging_ns: 130.0,
            seed_staging_ns: 266.0,
        };
        assert!(check(398.0 * 1.19).reproduced());
        assert!(check(398.0 * 0.81).reproduced());
        assert!(!check(398.0 * 1.21).reproduced());
        assert!(!check(398.0 * 0.79).reproduced());
    }
}
