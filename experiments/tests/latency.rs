//! `experiments latency`: a paced echo stream per design, at its peak and at fractions of
//! it, each run checked.

use std::process::Command;

use experiments::latency::{LatencyRow, LatencyRun, LOADS};

mod common;

#[derive(serde::Deserialize)]
struct Saved {
    seed: u64,
    runs: Vec<LatencyRun>,
    rows: Vec<LatencyRow>,
}

#[test]
fn latency_under_load_runs_each_design_at_its_peak_and_fractions_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lat");
    let st = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .args([
            "latency",
            "--designs",
            "grant-copy,ring:8:greedy",
            "--rounds",
            "2",
            "--seconds",
            "0.1",
            "--cost",
            "none",
            "--seed",
            "7",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&st.stderr);
    assert!(st.status.success(), "{stderr}");
    let saved: Saved =
        serde_json::from_str(&std::fs::read_to_string(out.join("latency.json")).unwrap()).unwrap();
    assert_eq!(saved.seed, 7);
    assert_eq!(saved.runs.len(), 2 * 2 * LOADS.len());
    for r in &saved.runs {
        // Every frame came back; a round trip is measured and ordered.
        assert_eq!(r.lost, 0, "{r:?}");
        assert!(r.echoed_pps > 0.0 && r.p50_ns > 0.0, "{r:?}");
        assert!(r.p50_ns <= r.p99_ns && r.p99_ns <= r.p999_ns, "{r:?}");
        // The paced runs ask for their fraction of the same round's peak.
        let peak = saved
            .runs
            .iter()
            .find(|p| p.round == r.round && p.design == r.design && p.load == 1.0)
            .unwrap();
        let want = if r.load == 1.0 {
            0.0
        } else {
            r.load * peak.echoed_pps
        };
        // (as JSON carries it: to within a rounding)
        assert!((r.target_pps - want).abs() <= 1e-9 * want, "{r:?}");
    }
    assert_eq!(saved.rows.len(), 2 * LOADS.len());
    let md = std::fs::read_to_string(out.join("latency.md")).unwrap();
    for row in &saved.rows {
        assert!(md.contains(&format!("| {} |", row.design)), "{md}");
    }
    assert!(md.contains("| grant-copy | 90 % of peak |"), "{md}");
    let bad = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .args(["latency", "--size", "4"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--size: 4 bytes"));
}

/// Told to stop (SIGTERM, as Ctrl-C's SIGINT), `latency` keeps every run it finished and
/// says its results are partial and why.
#[test]
fn a_stopped_latency_sweep_keeps_every_finished_run() {
    #[derive(serde::Deserialize)]
    struct Partial {
        record: experiments::RunRecord,
        runs: Vec<LatencyRun>,
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lat");
    let args = [
        "latency",
        "--designs",
        "grant-copy",
        "--rounds",
        "50",
        "--seconds",
        "0.1",
        "--cost",
        "none",
    ];
    common::stopped_after(&args, &out, LOADS.len());
    let log = out.join("samples.jsonl");
    let p: Partial =
        serde_json::from_str(&std::fs::read_to_string(out.join("latency.json")).unwrap()).unwrap();
    assert!(
        p.record.partial && p.record.stopped_by.is_some(),
        "{:?}",
        p.record
    );
    let logged = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(
        p.runs.len() >= LOADS.len() && logged == p.runs.len(),
        "{logged} logged"
    );
    assert!(p.runs.len() < 50 * LOADS.len(), "it stopped early");
    let md = std::fs::read_to_string(out.join("latency.md")).unwrap();
    assert!(md.contains("**Partial results**"), "{md}");
}
