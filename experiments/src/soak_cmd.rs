//! `experiments soak`: the steps [`experiments::soak::Plan`] draws, each run as its own
//! processes and checked; reconnect runs and the accounting of every run.

use netstage_platform::cli::causes;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use experiments::child::{self, StderrTail};
use experiments::roles::{BackendReport, Dir, FrontendReport};
use experiments::soak::{summary, Accounting, Outcome, Plan};

use super::{
    clock_seed, results_dir, run_one, run_world, start_backend, RunCfg, Scenario, SoakArgs,
    DEFAULT_SPIN_US,
};

/// `experiments soak`: see [`experiments::soak`].
pub(super) fn soak(a: SoakArgs) -> anyhow::Result<()> {
    if !(a.minutes > 0.0 && a.minutes.is_finite()) {
        bail!(
            "--minutes: {} is not a positive number of minutes",
            a.minutes
        );
    }
    let seed = a.seed.unwrap_or_else(clock_seed);
    let out = a.out.clone().unwrap_or_else(|| results_dir("soak"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // What produced the soak (tool, commit, command with its seed, start).
    super::save_json(&out.join("record.json"), &experiments::RunRecord::now())?;
    experiments::sys::remove_stale_worlds();
    let exe = std::env::current_exe()?;
    let cfg = RunCfg {
        seconds: 0.5,
        busy: false,
        armed: false,
        cost: &a.cost,
        spin_us: DEFAULT_SPIN_US,
    };
    eprintln!(
        "soak: {} minutes, seed {seed} (`--seed {seed}` repeats the steps)",
        a.minutes
    );
    let deadline = Instant::now() + Duration::from_secs_f64(a.minutes * 60.0);
    let mut plan = Plan::new(seed);
    let mut outcomes: Vec<Outcome> = Vec::new();
    while Instant::now() < deadline {
        let step = plan.step();
        let sc = Scenario {
            design: step.design.clone(),
            dir: step.dir,
            size: step.size.into(),
            queues: 1,
        };
        let (ok, detail, accounting) = match step.fault {
            None if step.then.is_empty() => soak_run(&exe, &sc, &cfg),
            None => soak_reconnect(&exe, &sc, &cfg, &step.then),
            Some((victim, ms)) => {
                let (ok, detail) = soak_fault(&exe, &sc, &cfg, victim, ms);
                (ok, detail, None)
            }
        };
        eprintln!(
            "soak: step {}: {} {} {} B{}{}: {} {detail}",
            step.index,
            step.dir,
            step.design,
            step.size,
            step.fault.map_or(String::new(), |(v, ms)| format!(
                ", {v:?} killed at {ms} ms"
            )),
            if step.then.is_empty() {
                String::new()
            } else {
                format!(", then {}", step.then.join(", then "))
            },
            if ok { "ok" } else { "FAILED" }
        );
        outcomes.push(Outcome {
            step,
            ok,
            detail,
            accounting,
        });
        super::save_json(&out.join("soak.json"), &outcomes)?;
    }
    println!("{}\nresults in {}", summary(&outcomes), out.display());
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if failed > 0 {
        bail!(
            "soak: {failed} of {} runs failed (seed {seed})",
            outcomes.len()
        );
    }
    Ok(())
}

/// What a soak step found: whether it held, what was seen, and its accounting.
type Found = (bool, String, Option<Accounting>);

/// A soak step without a fault: the run must deliver every frame intact (request/response:
/// must complete transactions), and both ends' counters must add up each way.
fn soak_run(exe: &Path, sc: &Scenario, cfg: &RunCfg<'_>) -> Found {
    let s = match run_one(exe, sc, 1, cfg) {
        Err(e) => return (false, causes(&e), None),
        Ok(s) => s,
    };
    let (ok, seen) = match s.check {
        Some(c) => (
            c.intact() && c.delivered > 0,
            format!(
                "{} delivered, {} lost, {} corrupted, {} reordered, {} of the wrong length",
                c.delivered, c.lost, c.corrupted, c.reordered, c.errored
            ),
        ),
        None => (s.pps > 0.0, format!("{:.0} transactions/s", s.pps)),
    };
    accounted(ok, seen, &s.front_metrics, &s.back_metrics)
}

/// `ok` and `seen`, with the run's accounting from both ends' counters: not ok if they do
/// not add up each way.
fn accounted(ok: bool, seen: String, front: &serde_json::Value, back: &serde_json::Value) -> Found {
    match Accounting::from_counters(front, back) {
        Ok(a) => {
            let seen = if a.balanced() {
                seen
            } else {
                format!("{seen}; TX: {}; RX: {}", a.tx, a.rx)
            };
            (ok && a.balanced(), seen, Some(a))
        }
        Err(e) => (false, format!("{seen}; {e}"), None),
    }
}

/// A reconnect step: one backend, and frontends of `sc.design` then of each design in
/// `then` connecting to it one after the other. Each must hold as a plain run does, the
/// backend must have seen each connect, and the frontends' counters summed must add up
/// with the backend's each way.
fn soak_reconnect(exe: &Path, sc: &Scenario, cfg: &RunCfg<'_>, then: &[String]) -> Found {
    match reconnects(exe, sc, cfg, then) {
        Ok(found) => found,
        Err(e) => (false, causes(&e), None),
    }
}

fn reconnects(
    exe: &Path,
    sc: &Scenario,
    cfg: &RunCfg<'_>,
    then: &[String],
) -> anyhow::Result<Found> {
    let world = run_world();
    let (mut back, back_stderr, front_args) = start_backend(exe, &world, sc, cfg)?;
    let designs: Vec<&str> = std::iter::once(sc.design.as_str())
        .chain(then.iter().map(String::as_str))
        .collect();
    let fronts: anyhow::Result<Vec<FrontendReport>> = designs
        .iter()
        .map(|d| run_frontend(exe, &with_design(&front_args, d)))
        .collect();
    let back_report = stop_backend(&mut back, back_stderr);
    let _ = std::fs::remove_dir_all(&world);
    let (fronts, br) = (fronts?, back_report?);
    let connects = br.metrics["connects"].as_u64().unwrap_or(0);
    let mut ok = connects == fronts.len() as u64;
    let mut seen = format!("{connects} connects");
    let checks = match sc.dir {
        Dir::Tx => br.check.into_iter().collect(),
        _ => fronts.iter().filter_map(|f| f.check).collect::<Vec<_>>(),
    };
    for c in &checks {
        ok &= c.intact() && c.delivered > 0;
        seen.push_str(&format!(
            "; {} delivered, {} lost, {} corrupted",
            c.delivered, c.lost, c.corrupted
        ));
    }
    if checks.is_empty() {
        ok &= fronts.iter().all(|f| f.packets > 0);
        let n: Vec<String> = fronts.iter().map(|f| f.packets.to_string()).collect();
        seen.push_str(&format!("; transactions {}", n.join(", ")));
    }
    let summed = sum_counters(fronts.iter().map(|f| &f.metrics));
    Ok(accounted(ok, seen, &summed, &br.metrics))
}

/// `args` (a frontend role's) with its `--design` set to `design`.
pub(super) fn with_design(args: &[String], design: &str) -> Vec<String> {
    let mut v = args.to_vec();
    if let Some(i) = v.iter().position(|a| a == "--design") {
        if let Some(d) = v.get_mut(i + 1) {
            *d = design.to_string();
        }
    }
    v
}

/// Counters of several runs of one end, summed by name (the numeric ones).
fn sum_counters<'a>(each: impl Iterator<Item = &'a serde_json::Value>) -> serde_json::Value {
    let mut sum = serde_json::Map::new();
    for m in each.filter_map(serde_json::Value::as_object) {
        for (k, v) in m {
            if let Some(n) = v.as_u64() {
                let old = sum.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
                sum.insert(k.clone(), (old + n).into());
            }
        }
    }
    sum.into()
}

/// Runs a frontend role process to its end and reads its report.
pub(super) fn run_frontend(exe: &Path, args: &[String]) -> anyhow::Result<FrontendReport> {
    let out = Command::new(exe)
        .arg("role-frontend")
        .args(args)
        .output()
        .context("cannot run the frontend process")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(child::failed("the frontend", "failed", out.status, &stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .context("the frontend printed no report")
}

/// Stops a backend role process (SIGTERM), waits up to 10 s for it to exit and reads the
/// report it printed; without one, the error shows the end of its stderr.
pub(super) fn stop_backend(back: &mut Child, stderr: StderrTail) -> anyhow::Result<BackendReport> {
    experiments::sys::signal(back.id(), libc::SIGTERM)?;
    let (_, status) = ended_within(back, Duration::from_secs(10))?;
    let mut line = String::new();
    if let Some(out) = back.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    serde_json::from_str(line.trim()).map_err(|_| {
        let how = format!("printed no report when stopped ({status})");
        match back.try_wait() {
            Ok(Some(st)) => child::failed("the backend", &how, st, &stderr.finish()),
            _ => anyhow::anyhow!("the backend {how}"),
        }
    })
}

/// A soak step with a fault: SIGKILL of `victim` `ms` milliseconds into a transfer; the
/// survivor must end on its own account (a frontend within 15 s of its backend's death; a
/// backend, still alive, reporting within 10 s of being told to stop).
fn soak_fault(
    exe: &Path,
    sc: &Scenario,
    cfg: &RunCfg<'_>,
    victim: experiments::soak::Victim,
    ms: u64,
) -> (bool, String) {
    use experiments::soak::Victim;
    let world = run_world();
    let long = RunCfg {
        seconds: 5.0,
        ..*cfg
    };
    // The backend's stderr is drained as it runs, and shown if it does not report.
    let (mut back, back_stderr, front_args) = match start_backend(exe, &world, sc, &long) {
        Ok(x) => x,
        Err(e) => return (false, causes(&e)),
    };
    let front = Command::new(exe)
        .arg("role-frontend")
        .args(&front_args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut front) = front else {
        let _ = back.kill();
        return (false, "cannot start the frontend process".into());
    };
    std::thread::sleep(Duration::from_millis(ms));
    let (killed, survivor) = match victim {
        Victim::Frontend => (&mut front, "backend"),
        Victim::Backend => (&mut back, "frontend"),
    };
    let _ = killed.kill();
    let _ = killed.wait();
    let verdict = match victim {
        Victim::Backend => {
            ended_within(&mut front, Duration::from_secs(15)).map(|(secs, status)| {
                let mut why = String::new();
                if let Some(mut e) = front.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut why);
                }
                let why = why.lines().last().unwrap_or("").trim().to_string();
                format!("the frontend ended on its own within {secs:.2} s ({status}): {why}")
            })
        }
        Victim::Frontend => backend_reports(&mut back, back_stderr),
    };
    let _ = front.kill();
    let _ = front.wait();
    let _ = back.kill();
    let _ = back.wait();
    let _ = std::fs::remove_dir_all(&world);
    match verdict {
        Ok(d) => (true, d),
        Err(e) => (false, format!("the {survivor}: {}", causes(&e))),
    }
}

/// Waits up to `bound` for `c` to exit; returns how long it took with its status.
fn ended_within(c: &mut Child, bound: Duration) -> anyhow::Result<(f64, String)> {
    let t = Instant::now();
    while t.elapsed() < bound {
        if let Some(st) = c.try_wait()? {
            return Ok((t.elapsed().as_secs_f64(), st.to_string()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("did not exit within {} s", bound.as_secs())
}

/// Checks the backend outlived its frontend's death, then stops it and reads its report.
fn backend_reports(back: &mut Child, stderr: StderrTail) -> anyhow::Result<String> {
    std::thread::sleep(Duration::from_millis(200));
    if let Some(st) = back.try_wait()? {
        bail!("died with its frontend ({st})");
    }
    let r = stop_backend(back, stderr)?;
    Ok(format!(
        "the backend outlived it and reported ({} connects, {} TX packets)",
        r.metrics["connects"], r.metrics["tx_packets"]
    ))
}
