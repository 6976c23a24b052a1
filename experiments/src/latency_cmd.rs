//! `experiments latency`: latency under load (see [`experiments::latency`]). Each round, in
//! a shuffled order of the designs, a design's peak echo rate is found first, then its
//! round trips measured at fractions of that peak; every run is its own pair of processes.

use netstage_platform::cli::causes;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use experiments::latency::{latency_markdown, latency_rows, LatencyRun, LOADS, MIN_FRAME};
use experiments::roles::Dir;
use experiments::stats::{seeded, RngStream};
use experiments::{calibrate, RunRecord, SizeSpec};
use netstage_fallback::Design;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::soak_cmd::{run_frontend, stop_backend, with_design};
use super::{clock_seed, resolve_cost, results_dir, run_world, start_backend, RunCfg, Scenario};

/// `experiments latency` options.
#[derive(Debug, clap::Args)]
#[command(allow_negative_numbers = true)]
pub(super) struct LatencyArgs {
    /// Designs (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "grant-copy,linux,slots:256,ring:8:greedy"
    )]
    designs: Vec<Design>,
    /// Frame size in bytes (at least 8: a frame carries its send time).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Rounds; each measures every design at its peak and at 50 % and 90 % of it.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 0.3)]
    seconds: f64,
    /// Grant cost mode: xen (calibrated at the start), kernel, none or
    /// model:<call>,<copy>,<map>,<unmap>[,<copy_to>].
    #[arg(long, default_value = calibrate::XEN_PRESET, value_parser = super::cost_mode_name)]
    cost: String,
    /// Busy-poll at both ends instead of blocking on event channels.
    #[arg(long)]
    busy: bool,
    /// Blocking, arm the rings' event indexes at once, as Linux's drivers do (see
    /// `compare --armed`).
    #[arg(long, conflicts_with = "busy")]
    armed: bool,
    /// Seed of the run order and the intervals [default: from the clock; recorded].
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write latency.json and latency.md [default: results/latency-<unix time>].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What `experiments latency` writes to latency.json.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LatencyResults {
    record: RunRecord,
    /// The cost mode the runs used (a calibrated xen preset as its model string).
    cost: String,
    seed: u64,
    size: usize,
    busy: bool,
    /// Blocking waits armed at once.
    #[serde(default)]
    armed: bool,
    runs: Vec<LatencyRun>,
    rows: Vec<experiments::latency::LatencyRow>,
}

pub(super) fn latency(a: LatencyArgs) -> anyhow::Result<()> {
    check_args(&a)?;
    let record = RunRecord::now();
    let seed = a.seed.unwrap_or_else(clock_seed);
    let out = a.out.clone().unwrap_or_else(|| results_dir("latency"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    experiments::sys::remove_stale_worlds();
    let exe = std::env::current_exe()?;
    let spin_us = super::DEFAULT_SPIN_US;
    let bar = indicatif::ProgressBar::hidden();
    let (cost, _) = resolve_cost(&exe, &a.cost, a.seconds, spin_us, &bar)?;
    let cfg = RunCfg {
        seconds: a.seconds,
        busy: a.busy,
        armed: a.armed,
        cost: &cost,
        spin_us,
    };
    let designs: Vec<String> = a.designs.iter().map(Design::to_string).collect();
    let mut results = LatencyResults {
        record,
        cost: cost.clone(),
        seed,
        size: a.size,
        busy: a.busy,
        armed: a.armed,
        runs: Vec::new(),
        rows: Vec::new(),
    };
    let stop = super::interrupt_flag()?;
    let mut kept = Kept {
        log: std::fs::File::create(out.join("samples.jsonl"))
            .with_context(|| format!("cannot create {}", out.join("samples.jsonl").display()))?,
        json: out.join("latency.json"),
    };
    let sweep = Sweep {
        exe: &exe,
        cfg: &cfg,
        a: &a,
        designs: &designs,
        seed,
    };
    let failure = sweep.rounds(&stop, &mut results, &mut kept);
    if let Some(why) = &failure {
        results.record.partial = true;
        results.record.stopped_by = Some(why.clone());
    }
    results.rows = latency_rows(&results.runs, &designs, seed);
    let partial = failure.as_ref().map_or(String::new(), |why| {
        format!("**Partial results**: the run stopped early ({why}).\n\n")
    });
    let md = format!(
        "# Latency under load\n\n{partial}{} B frames, {} rounds of {} s, cost {cost}, {}; seed \
         {seed}. Medians over the rounds with 95 % bootstrap intervals.\n\n{}",
        a.size,
        a.rounds,
        a.seconds,
        super::poll_name(a.busy, a.armed),
        latency_markdown(&results.rows)
    );
    super::save_json(&kept.json, &results)?;
    std::fs::write(out.join("latency.md"), &md)?;
    println!("{md}\nresults in {}", out.display());
    match failure {
        Some(why) => anyhow::bail!("{why}; the runs finished before are in {}", out.display()),
        None => Ok(()),
    }
}

/// Where each finished run is kept as it finishes.
struct Kept {
    /// samples.jsonl: a line per run.
    log: std::fs::File,
    /// latency.json, rewritten after each design's round.
    json: PathBuf,
}

/// What every run of one `experiments latency` shares.
struct Sweep<'a> {
    exe: &'a Path,
    cfg: &'a RunCfg<'a>,
    a: &'a LatencyArgs,
    designs: &'a [String],
    seed: u64,
}

impl Sweep<'_> {
    /// Runs the rounds into `results`, each design in a shuffled order per round, keeping
    /// every run as it finishes; returns why it stopped early (a failing run, Ctrl-C or
    /// SIGTERM), if it did.
    fn rounds(
        &self,
        stop: &AtomicBool,
        results: &mut LatencyResults,
        kept: &mut Kept,
    ) -> Option<String> {
        let mut order = seeded(self.seed, RngStream::Order);
        for round in 1..=self.a.rounds {
            let mut these = self.designs.to_vec();
            these.shuffle(&mut order);
            for design in &these {
                if stop.load(Ordering::Relaxed) {
                    return Some("interrupted (Ctrl-C or SIGTERM)".into());
                }
                let runs = match design_round(self.exe, self.cfg, self.a, design, round) {
                    Ok(r) => r,
                    Err(e) => return Some(format!("round {round}: {}", causes(&e))),
                };
                if let Err(e) = keep(kept, &runs).and_then(|()| {
                    results.runs.extend(runs);
                    super::save_json(&kept.json, results)
                }) {
                    return Some(format!("cannot keep the runs: {}", causes(&e)));
                }
            }
        }
        None
    }
}

/// Appends `runs` to samples.jsonl, a line each.
fn keep(kept: &mut Kept, runs: &[LatencyRun]) -> anyhow::Result<()> {
    for r in runs {
        writeln!(kept.log, "{}", serde_json::to_string(r)?)?;
    }
    Ok(())
}

/// Refuses what cannot run, naming the option, before any work starts.
fn check_args(a: &LatencyArgs) -> anyhow::Result<()> {
    if a.size < MIN_FRAME || a.size > 65535 {
        anyhow::bail!(
            "--size: {} bytes; a frame carries its send time and netif's limit is 65535: \
             between {MIN_FRAME} and 65535",
            a.size
        );
    }
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        anyhow::bail!("--seconds: {} is not a positive duration", a.seconds);
    }
    Ok(())
}

/// One design's runs of a round: its peak, then each fraction of it.
fn design_round(
    exe: &Path,
    cfg: &RunCfg<'_>,
    a: &LatencyArgs,
    design: &str,
    round: u32,
) -> anyhow::Result<Vec<LatencyRun>> {
    let mut runs = Vec::new();
    let mut peak = 0.0;
    for load in LOADS {
        let target = if load == 1.0 { 0.0 } else { load * peak };
        let r = echo_run(exe, cfg, a, design, target)
            .with_context(|| format!("{design} at {:.0} % of its peak", load * 100.0))?;
        if load == 1.0 {
            peak = r.echoed_pps;
        }
        eprintln!(
            "latency: round {round}: {design} at {}: {:.3} Mpps, p50 {:.1} us, p99 {:.1} us",
            if load == 1.0 {
                "its peak".to_string()
            } else {
                format!("{:.0} %", load * 100.0)
            },
            r.echoed_pps / 1e6,
            r.p50_ns / 1e3,
            r.p99_ns / 1e3
        );
        runs.push(LatencyRun { round, load, ..r });
    }
    Ok(runs)
}

/// One paced echo stream at `target` frames per second (0: unpaced), in a fresh world.
fn echo_run(
    exe: &Path,
    cfg: &RunCfg<'_>,
    a: &LatencyArgs,
    design: &str,
    target: f64,
) -> anyhow::Result<LatencyRun> {
    let sc = Scenario {
        design: design.to_string(),
        dir: if a.busy { Dir::RrBusy } else { Dir::Rr },
        size: SizeSpec::Fixed(a.size),
        queues: 1,
    };
    let world = run_world();
    let (mut back, back_stderr, args) = start_backend(exe, &world, &sc, cfg)?;
    let mut args = with_design(&args, design);
    args.extend(["--rate".to_string(), target.to_string()]);
    let front = run_frontend(exe, &args);
    let back_report = stop_backend(&mut back, back_stderr);
    let _ = std::fs::remove_dir_all(&world);
    let (f, _) = (front?, back_report?);
    let [p50, p99, p999] = f
        .latency_ns
        .context("the frontend measured no round trip")?;
    let secs = f.seconds.max(1e-9);
    Ok(LatencyRun {
        round: 0,
        design: design.to_string(),
        load: 0.0,
        target_pps: target,
        sent_pps: f.sent.unwrap_or(0) as f64 / secs,
        echoed_pps: f.packets as f64 / secs,
        p50_ns: p50,
        p99_ns: p99,
        p999_ns: p999,
        lost: f.check.map_or(0, |c| c.lost),
    })
}
