//! The harness itself: a tiny sweep produces every output file, and the report's numbers are
//! the medians of the raw samples it saved.

use experiments::{markdown, outliers, spread, summarise, Outlier, Results};

mod common;

/// Runs `experiments compare ARGS` into a new temporary directory; returns the directory,
/// the saved results and what it printed on stderr.
fn compare(args: &[&str]) -> (tempfile::TempDir, Results, String) {
    let out = tempfile::tempdir().unwrap();
    let (r, stderr) = common::compare_into(args, out.path());
    (out, r, stderr)
}

#[test]
fn a_tiny_sweep_writes_consistent_results() {
    let (out, r, _) = compare(&[
        "--designs",
        "grant-copy,ring:2:greedy,slots:256",
        "--sizes",
        "64,1500",
        "--dirs",
        "tx,rx",
        "--rounds",
        "2",
        "--seconds",
        "0.1",
    ]);
    for f in ["results.json", "results.csv", "report.md"] {
        assert!(out.path().join(f).exists(), "{f} missing");
    }
    // 3 designs x 2 sizes x 2 directions x 2 rounds, every one moved packets.
    assert_eq!(r.samples.len(), 24);
    let idle: Vec<_> = r
        .samples
        .iter()
        .filter(|s| s.packets == 0 || s.pps <= 0.0)
        .map(|s| (s.round, &s.design, s.dir, s.size, s.seconds, s.other_busy_s))
        .collect();
    assert!(idle.is_empty(), "runs that moved nothing: {idle:?}");
    // The receiving end checked every frame, and each run delivered intact frames only.
    for s in &r.samples {
        let c = s.check.expect("a throughput run has a check");
        assert!(
            c.delivered >= s.packets / 2,
            "{c:?} for {} packets",
            s.packets
        );
        assert!(c.intact(), "{} {} {} B: {c:?}", s.design, s.dir, s.size);
    }
    assert!(r.samples.iter().all(|s| s.design == s.design_used));
    // The upper bound ran once per round and moved bytes.
    assert_eq!(r.stream_gbps.len(), 2);
    assert!(r.stream_gbps.iter().all(|g| *g > 0.0));
    assert_eq!(r.stream_64b_mps.len(), 2);
    assert!(r.stream_64b_mps.iter().all(|m| *m > 0.0));
    let csv = std::fs::read_to_string(out.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 25);
    // Each summary row is the median of exactly its samples, and the ratio is to the
    // grant-copy median of the same size and direction.
    let rows = summarise(&r);
    assert_eq!(rows.len(), 12);
    for row in &rows {
        let pps: Vec<f64> = r
            .samples
            .iter()
            .filter(|s| s.dir == row.dir && s.size == row.size && s.design == row.design)
            .map(|s| s.pps)
            .collect();
        assert_eq!(pps.len(), 2);
        assert_eq!(spread(&pps).unwrap().median, row.pps.median);
        let base = rows
            .iter()
            .find(|b| b.dir == row.dir && b.size == row.size && b.design == "grant-copy")
            .unwrap();
        assert_eq!(row.ratio, Some(row.pps.median / base.pps.median));
    }
    // How the ends wait is recorded and said.
    assert_eq!(
        (r.machine.front_spin_us, r.machine.back_spin_us),
        (Some(20), Some(20))
    );
    assert!(markdown(&r).contains("spins 20 us in the frontend and 20 us in the backend"));
    // The saved report is what `report` renders from the saved samples.
    let saved = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert_eq!(saved, markdown(&r));
    assert_eq!(common::report(out.path()), saved);
}

#[test]
fn diff_flags_only_changes_beyond_the_noise() {
    use experiments::{diff, Machine, Results};
    let sample = |design: &str, pps: f64| tx_64(design, pps);
    let m = Machine::detect("kernel", "blocking");
    let a = Results {
        stream_gbps: vec![],
        stream_64b_mps: vec![],
        peers: vec![],
        peer_failures: vec![],
        machine: m.clone(),
        samples: vec![
            sample("grant-copy", 100.0),
            sample("grant-copy", 110.0),
            sample("slots:256", 200.0),
            sample("slots:256", 210.0),
        ],
    };
    let b = Results {
        stream_gbps: vec![],
        stream_64b_mps: vec![],
        peers: vec![],
        peer_failures: vec![],
        machine: m,
        samples: vec![
            sample("grant-copy", 105.0),
            sample("grant-copy", 120.0),
            sample("slots:256", 300.0),
            sample("slots:256", 320.0),
        ],
    };
    let d = diff(&a, &b);
    assert_eq!(d.len(), 2);
    assert!(!d[0].significant, "overlapping ranges are noise");
    assert!(d[1].significant, "disjoint ranges are a change");
    assert!(experiments::diff_markdown(&d)
        .contains("| tx | 64 | slots:256 | 200 | 300 | +50.0 % | yes |"));
}

#[test]
fn request_response_runs_report_latency_percentiles() {
    let (out, r, _) = compare(&[
        "--designs",
        "grant-copy,ring:2:greedy",
        "--dirs",
        "rr,rr-busy",
        "--rounds",
        "1",
        "--seconds",
        "0.1",
        "--no-stream",
    ]);
    assert_eq!(r.samples.len(), 4);
    for s in &r.samples {
        assert_eq!(s.size, 15, "a 1-byte payload");
        let l = s.latency_ns.expect("percentiles");
        assert!(l[0] > 0.0 && l[0] <= l[1] && l[1] <= l[2], "{l:?}");
        assert!(s.packets > 0);
    }
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("## Request/response") && md.contains("| busy-poll | ring:2:greedy |"));
}

#[test]
fn spreads() {
    let s = spread(&[3.0, 1.0, 2.0, 10.0]).unwrap();
    assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 10.0));
    assert!(spread(&[]).is_none());
}

/// The plots: every chart as SVG and PNG, drawn from the saved results (needs a TrueType
/// font; `scripts/test` installs fonts-dejavu-core).
#[test]
fn plots_are_drawn_from_the_results() {
    let (out, r, stderr) = compare(&[
        "--designs",
        "grant-copy,ring:2:greedy",
        "--sizes",
        "64,1500",
        "--dirs",
        "tx,rr-busy",
        "--rounds",
        "1",
        "--seconds",
        "0.1",
        "--no-stream",
    ]);
    assert!(!stderr.contains("plots not drawn"), "{stderr}");
    // TX throughput and cost, and request/response; no RX was measured.
    assert_eq!(
        experiments::plots::chart_names(&r),
        ["pps-tx", "cost-tx", "staged-tx", "fill-tx", "rr"]
    );
    // Throughput runs carry a timeline: bins in time order whose packets add up to about
    // the window's (the bins start a moment after the window), staged never above packets.
    for s in r.samples.iter().filter(|s| !s.dir.is_rr()) {
        assert!(s.timeline.len() >= 3, "{:?}", s.timeline);
        assert!(s.timeline.windows(2).all(|w| w[0].t < w[1].t));
        assert!(s.timeline.iter().all(|b| b.staged <= b.packets));
        // The data ring's fill is sampled for the ring design only, and is a percentage.
        let ring = s.design.starts_with("ring:");
        let sampled = s.timeline.iter().filter(|b| b.fill_pct.is_some()).count();
        assert_eq!(sampled > 0, ring, "{}: {:?}", s.design, s.timeline);
        assert!(s
            .timeline
            .iter()
            .filter_map(|b| b.fill_pct)
            .all(|f| (0.0..=100.0).contains(&f)));
        let sum: f64 = s.timeline.iter().map(|b| b.packets).sum();
        assert!(
            sum > 0.5 * s.packets as f64 && sum <= s.packets as f64,
            "{sum} vs {}",
            s.packets
        );
    }
    let ring = experiments::plots::staged_timelines(&r, experiments::Dir::Tx, 1500);
    assert_eq!(ring.len(), 1, "only ring:2:greedy stages");
    assert!(ring[0]
        .1
        .iter()
        .all(|&(_, pct)| (0.0..=100.0).contains(&pct)));
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    for name in ["pps-tx", "cost-tx", "staged-tx", "fill-tx", "rr"] {
        let svg = std::fs::read_to_string(out.path().join(format!("{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{name}.svg");
        // Both designs are named on every chart but the timelines, which have only the
        // design with a data ring.
        assert!(svg.contains("ring:2:greedy"), "{name}.svg");
        let timeline = name.starts_with("staged") || name.starts_with("fill");
        assert_eq!(svg.contains("grant-copy"), !timeline, "{name}.svg");
        let png = std::fs::read(out.path().join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png");
        assert!(report.contains(&format!("![{name}]({name}.svg)")));
    }
    assert!(!out.path().join("pps-rx.svg").exists());
    // The cost chart's numbers are the report's cost table's.
    let c = experiments::plots::cost_components(&r, experiments::Dir::Tx, 1500, "grant-copy", 1);
    assert!(
        c[0] >= 1.0,
        "a 1500-byte grant-copy packet is at least one copy op: {c:?}"
    );
    assert!(report.contains(&format!(
        "| tx | 1500 | grant-copy | {:.2} | {:.3} |",
        c[0], c[1]
    )));
}

/// Two queues: every throughput scenario runs with each queue count, request/response with
/// one; each end really runs two queues (the frontend grants twice the memory), and the
/// summary keeps the queue counts apart, each with its own grant-copy baseline.
#[test]
fn queue_counts_are_scenarios_of_their_own() {
    let (out, r, stderr) = compare(&[
        "--designs",
        "grant-copy,ring:2:greedy",
        "--sizes",
        "64",
        "--dirs",
        "tx,rx,rr",
        "--queues",
        "1,2",
        "--rounds",
        "1",
        "--seconds",
        "0.1",
        "--no-stream",
    ]);
    assert_eq!(r.samples.len(), 2 * 2 * 2 + 2);
    assert!(r.samples.iter().all(|s| s.packets > 0));
    assert!(r
        .samples
        .iter()
        .all(|s| s.queues == 1 || (s.queues == 2 && !s.dir.is_rr())));
    let granted = |s: &experiments::Sample| s.front_metrics["granted_bytes"].as_f64().unwrap();
    for one in r.samples.iter().filter(|s| s.queues == 1 && !s.dir.is_rr()) {
        let two = r
            .samples
            .iter()
            .find(|s| s.queues == 2 && s.dir == one.dir && s.design == one.design)
            .unwrap();
        assert_eq!(
            granted(two),
            2.0 * granted(one),
            "{} {}",
            one.dir,
            one.design
        );
    }
    let rows = summarise(&r);
    assert_eq!(rows.len(), 10);
    for row in rows.iter().filter(|x| x.queues == 2) {
        let base = rows
            .iter()
            .find(|b| b.dir == row.dir && b.queues == 2 && b.design == "grant-copy")
            .unwrap();
        assert_eq!(row.ratio, Some(row.pps.median / base.pps.median));
        assert_eq!(row.label(), format!("{} (2 queues)", row.design));
    }
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("| tx | 64 | ring:2:greedy (2 queues) | ring:2:greedy |"));
    // On fewer than four cores the two queue threads of each end share a core: said.
    let shared = r.machine.cores < 4;
    assert_eq!(md.contains("shared one core"), shared, "{md}");
    assert_eq!(stderr.contains("share its core"), shared, "{stderr}");
    let csv = std::fs::read_to_string(out.path().join("results.csv")).unwrap();
    assert!(csv.starts_with("round,design,design_used,dir,size,queues,"));
    assert_eq!(csv.lines().filter(|l| l.contains(",64,2,")).count(), 4);
}

#[test]
fn each_queue_thread_gets_a_core_when_there_are_enough() {
    use experiments::sys::placement;
    assert_eq!(placement(1, 2), (vec![0], vec![1]));
    assert_eq!(placement(2, 4), (vec![0, 2], vec![1, 3]));
    assert_eq!(placement(2, 8), (vec![0, 2], vec![1, 3]));
    assert_eq!(
        placement(2, 3),
        (vec![0], vec![1]),
        "not enough: one core each"
    );
    assert_eq!(placement(1, 1), (vec![0], vec![0]));
}

#[test]
fn slow_runs_are_told_apart_as_stalls_or_contention() {
    use experiments::{Machine, Sample};
    let run = |pps: f64, other: Option<f64>| Sample {
        front_cpu_s: 0.1,
        back_cpu_s: 0.1,
        other_busy_s: other,
        span_s: 2.0,
        ..tx_64("ring:8:greedy", pps)
    };
    let r = Results {
        stream_gbps: vec![],
        stream_64b_mps: vec![],
        peers: vec![],
        peer_failures: vec![],
        machine: Machine::detect("kernel", "blocking"),
        samples: vec![
            run(1000.0, Some(0.0)),
            run(1000.0, Some(0.0)),
            run(1000.0, Some(0.0)),
            run(1000.0, Some(0.0)),
            run(1000.0, Some(0.0)),
            run(1000.0, Some(0.0)),
            run(260.0, Some(0.0)),
            run(200.0, Some(0.1)),
            run(200.0, Some(1.5)),
            run(200.0, None),
        ],
    };
    let found: Vec<(f64, Outlier)> = outliers(&r).iter().map(|(s, _, w)| (s.pps, *w)).collect();
    // 260 pps is above a quarter of the median (1000 / 4): not an outlier.
    assert_eq!(
        found,
        vec![
            (200.0, Outlier::Stall),
            (200.0, Outlier::Contention),
            (200.0, Outlier::Unknown)
        ]
    );
    let md = markdown(&r);
    assert!(md.contains("## Stalls and contention"), "{md}");
    assert!(md.contains("| Contention |"), "{md}");
}

#[test]
fn a_run_that_lost_or_damaged_frames_is_left_out_and_named() {
    use experiments::check::Check;
    use experiments::{Machine, Sample};
    let run = |pps: f64, lost: u64| Sample {
        check: Some(Check {
            delivered: 100,
            lost,
            ..Check::default()
        }),
        ..tx_64("grant-copy", pps)
    };
    let r = Results {
        stream_gbps: vec![],
        stream_64b_mps: vec![],
        peers: vec![],
        peer_failures: vec![],
        machine: Machine::detect("kernel", "blocking"),
        samples: vec![run(100.0, 0), run(100.0, 0), run(9_999.0, 3)],
    };
    let rows = summarise(&r);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].n, 2, "the damaged run is left out");
    assert_eq!(rows[0].pps.median, 100.0);
    let md = markdown(&r);
    assert!(md.contains("## Correctness"), "{md}");
    assert!(
        md.contains("| 1 | grant-copy | tx | 64 | 100 | 3 | 0 | 0 | 0 |"),
        "{md}"
    );
}

/// A one-second TX run at 64 B of `design` at `pps`, with nothing else recorded.
fn tx_64(design: &str, pps: f64) -> experiments::Sample {
    experiments::Sample {
        round: 1,
        design: design.into(),
        design_used: design.into(),
        dir: experiments::Dir::Tx,
        size: 64,
        queues: 1,
        pps,
        gbps: 0.0,
        packets: 1,
        seconds: 1.0,
        front_cpu_s: 0.0,
        back_cpu_s: 0.0,
        probe_ns: 0.0,
        probe_after_ns: 0.0,
        other_busy_s: None,
        span_s: 0.0,
        check: None,
        front_metrics: serde_json::Value::Null,
        back_metrics: serde_json::Value::Null,
        grants: serde_json::Value::Null,
        latency_ns: None,
        timeline: vec![],
    }
}
