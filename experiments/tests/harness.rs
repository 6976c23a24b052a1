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
    // The default cost mode is the calibrated xen preset: its calibration runs came first,
    // and the report compares the grant copy's added cost with the seed's.
    let cal = r
        .calibration
        .as_ref()
        .expect("the xen preset's calibration");
    assert_eq!(
        cal.runs.len(),
        experiments::calibrate::CALIBRATION_RUNS.len()
            * experiments::calibrate::CALIBRATION_ROUNDS as usize
    );
    assert!(cal.runs.iter().all(|c| c.pps > 0.0), "{:?}", cal.runs);
    assert_eq!(
        cal.charged,
        netstage_platform::sim::ModelCost::XEN
            .beyond(&cal.own.into())
            .into()
    );
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("## Grant costs and the seed"), "{md}");
    assert!(md.contains("| tx | ") && md.contains("| 398 |"), "{md}");
    let idle: Vec<_> = r
        .samples
        .iter()
        .filter(|s| s.packets == 0 || s.pps <= 0.0)
        .map(|s| {
            (
                s.round,
                &s.design,
                s.dir,
                &s.size,
                s.seconds,
                s.other_busy_s,
            )
        })
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
    assert_eq!(r.stream_64b_burst_mps.len(), 2);
    assert!(r.stream_64b_burst_mps.iter().all(|m| *m > 0.0));
    assert_eq!(r.stream_64b_netif_mps.len(), 2);
    assert!(r.stream_64b_netif_mps.iter().all(|m| *m > 0.0));
    let md = markdown(&r);
    assert!(
        md.contains("records, each written and read on its own"),
        "{md}"
    );
    assert!(
        md.contains("records, written and read 64 at a time"),
        "{md}"
    );
    assert!(
        md.contains("records, 64 at a time with netif's TX ring beside it"),
        "{md}"
    );
    let csv = std::fs::read_to_string(out.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 25);
    // Each summary row is the median of exactly the runs it keeps (those not taken during a
    // far placement), and the ratio the median of the per-round ratios to grant-copy's run
    // of the same round, size and direction.
    let place = r.placement();
    let rows = summarise(&r);
    assert_eq!(rows.len(), 12);
    for row in &rows {
        let of = |design: &str| r.kept_runs(&place, row.dir, &row.size, design, 1);
        let kept = of(&row.design);
        assert_eq!(kept.len() + row.far, 2);
        assert_eq!(row.n, kept.len());
        let pps: Vec<f64> = kept.iter().map(|x| x.1).collect();
        assert_eq!(spread(&pps).unwrap().median, row.pps.median);
        assert!(row.pps.lo <= row.pps.median && row.pps.median <= row.pps.hi);
        let ratios = experiments::stats::per_round_ratios(&kept, &of("grant-copy"));
        assert_eq!(
            row.ratio.map(|x| x.median),
            spread(&ratios).map(|x| x.median)
        );
    }
    // Each round ran every run once, in a shuffled order drawn from the recorded seed, and
    // the samples are saved in the sweep's order.
    let seed = r.seed.expect("the seed is recorded");
    for round in 1..=2 {
        let mut at: Vec<u32> = r
            .samples
            .iter()
            .filter(|s| s.round == round)
            .map(|s| s.position.expect("a position"))
            .collect();
        at.sort_unstable();
        // 12 scenarios and the four raw streams.
        assert!(
            at.windows(2).all(|w| w[0] < w[1]) && at.len() == 12,
            "{at:?}"
        );
        assert!(at.iter().all(|p| *p < 16));
    }
    assert_eq!(r.samples[0].design, "grant-copy");
    let scenario = std::fs::read_to_string(out.path().join("scenario.toml")).unwrap();
    assert!(scenario.contains(&format!("seed = {seed}")), "{scenario}");
    assert!(markdown(&r).contains(&format!("`compare --seed {seed}`")));
    // The summary files carry the intervals.
    let summary = std::fs::read_to_string(out.path().join("summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 13);
    assert!(summary.starts_with(
        "dir,size,design,queues,design_used,runs,far_runs,far_only,pps_median,pps_lo,pps_hi,"
    ));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(json["seed"], seed);
    assert_eq!(json["rows"].as_array().unwrap().len(), 12);
    assert!(json["rows"][0]["pps"]["lo"].is_number());
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
    use experiments::{diff, diff_ratios, Sample};
    let a: Vec<Sample> = [
        rounds("grant-copy", &[100.0, 110.0, 105.0]),
        rounds("slots:256", &[200.0, 220.0, 210.0]),
    ]
    .concat();
    let b: Vec<Sample> = [
        rounds("grant-copy", &[105.0, 120.0, 112.0]),
        rounds("slots:256", &[300.0, 320.0, 310.0]),
    ]
    .concat();
    let (a, b) = (results(a), results(b));
    let d = diff(&a, &b);
    assert_eq!(d.len(), 2);
    assert!(!d[0].significant, "overlapping intervals are noise");
    assert!(d[1].significant, "disjoint intervals are a change");
    let md = experiments::diff_markdown(&d);
    assert!(
        md.contains(
            "| tx | 64 | grant-copy | 105 [100..110] | 112 [105..120] | +6.7 % | within noise |"
        ),
        "{md}"
    );
    assert!(
        md.contains("| tx | 64 | slots:256 | 210 [200..220] | 310 [300..320] | +47.6 % | change |"),
        "{md}"
    );
    // The ratios, paired round by round: 2.00x every round before, 2.67x..2.86x after.
    let d = diff_ratios(&a, &b);
    assert_eq!(d.len(), 1, "grant-copy's own ratio is left out");
    assert_eq!((d[0].before.lo, d[0].before.hi), (2.0, 2.0));
    assert!(d[0].significant);
    assert!(experiments::diff_ratios_markdown(&d).contains("| 2.00x [2.00..2.00] |"));
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
        assert_eq!(s.size, 15.into(), "a 1-byte payload");
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
    let ring = experiments::plots::staged_timelines(&r, experiments::Dir::Tx, &1500.into());
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
    let c = experiments::plots::cost_components(
        &r,
        experiments::Dir::Tx,
        &1500.into(),
        "grant-copy",
        1,
    );
    assert!(
        c[0] >= 1.0,
        "a 1500-byte grant-copy packet is at least one copy op: {c:?}"
    );
    assert!(report.contains(&format!(
        "| tx | 1500 | grant-copy | {:.2} | {:.3} |",
        c[0], c[1]
    )));
}

/// A mixed size is a scenario like a fixed one: the sweep runs IMIX, the receiving end
/// checks every frame at the size its sequence number has, the rate in Gbit/s is the bytes
/// the frontend counted, and results, report, CSV, scenario file and plots name the spec as
/// written.
#[test]
fn a_sweep_runs_imix_and_checks_every_frame() {
    let (out, r, stderr) = compare(&[
        "--sizes",
        "imix",
        "--designs",
        "grant-copy,ring:4:adaptive",
        "--dirs",
        "tx",
        "--rounds",
        "1",
        "--seconds",
        "0.1",
    ]);
    assert_eq!(r.samples.len(), 2);
    for s in &r.samples {
        assert_eq!(s.size, experiments::SizeSpec::Imix);
        let c = s.check.expect("a throughput run has a check");
        assert!(
            c.intact() && c.delivered >= s.packets / 2,
            "{}: {c:?}",
            s.design
        );
        // The bytes counted, not packets x one size: within a cycle of IMIX's mean.
        let mean = experiments::SizeSpec::Imix.mean();
        let bytes = s.gbps * 1e9 / 8.0 * s.seconds;
        assert!(
            (bytes - s.packets as f64 * mean).abs() <= 12.0 * 1500.0,
            "{} bytes for {} packets",
            bytes,
            s.packets
        );
    }
    let json = std::fs::read_to_string(out.path().join("results.json")).unwrap();
    assert!(json.contains("\"size\": \"imix\""), "{json}");
    assert_eq!(
        r.record.as_ref().map(|x| x.schema),
        Some(experiments::SCHEMA_VERSION)
    );
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(
        md.contains("| tx | imix | grant-copy | grant-copy |"),
        "{md}"
    );
    assert!(md.contains("| tx | imix | ring:4:adaptive |"), "{md}");
    assert!(md.contains("No run lost or damaged a frame."), "{md}");
    assert_eq!(common::report(out.path()), md);
    let csv = std::fs::read_to_string(out.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().filter(|l| l.contains(",tx,imix,1,")).count(), 2);
    let ran = experiments::sweep::Sweep::load(&out.path().join("scenario.toml")).unwrap();
    assert_eq!(ran.sizes, Some(vec![experiments::SizeSpec::Imix]));
    assert!(stderr.contains("tx imix grant-copy"), "{stderr}");
    if !stderr.contains("plots not drawn") {
        let svg = std::fs::read_to_string(out.path().join("pps-tx.svg")).unwrap();
        assert!(svg.contains("imix"), "the mix is named on the chart");
    }
}

/// Fixed sizes sort before mixes in the summary, and a fixed size is still a number in a
/// sample's JSON (results saved before mixes read as they did).
#[test]
fn mixes_sort_after_fixed_sizes_and_fixed_sizes_stay_numbers() {
    let mix = |size: &str, pps: f64| experiments::Sample {
        size: size.parse().unwrap(),
        ..tx_64("grant-copy", pps)
    };
    let r = results(vec![
        mix("mix:64+65535", 1.0),
        mix("imix", 2.0),
        mix("1500", 3.0),
        tx_64("grant-copy", 4.0),
    ]);
    let sizes: Vec<String> = summarise(&r).iter().map(|x| x.size.to_string()).collect();
    assert_eq!(sizes, ["64", "1500", "imix", "mix:64+65535"]);
    let json = serde_json::to_value(tx_64("grant-copy", 1.0)).unwrap();
    assert_eq!(json["size"], 64);
    let back: experiments::Sample = serde_json::from_value(json).unwrap();
    assert_eq!(back.size, 64.into());
    let imix = summarise(&r)
        .into_iter()
        .find(|x| x.size.is_mixed())
        .unwrap();
    assert_eq!(
        imix.gbps,
        2.0 * experiments::SizeSpec::Imix.mean() * 8.0 / 1e9
    );
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
    // Every scenario has its row, each with its own grant-copy baseline (a scenario whose
    // only run was far keeps it).
    let rows = summarise(&r);
    assert_eq!(rows.len(), 10);
    for row in rows.iter().filter(|x| x.queues == 2) {
        let base = rows
            .iter()
            .find(|b| b.dir == row.dir && b.queues == 2 && b.design == "grant-copy")
            .unwrap();
        // One round: the ratio is the two runs'.
        assert_eq!(row.ratio.unwrap().median, row.pps.median / base.pps.median);
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
    use experiments::Sample;
    let run = |pps: f64, other: Option<f64>| Sample {
        front_cpu_s: 0.1,
        back_cpu_s: 0.1,
        other_busy_s: other,
        span_s: 2.0,
        ..tx_64("ring:8:greedy", pps)
    };
    let r = results(vec![
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
    ]);
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
    use experiments::Sample;
    let run = |pps: f64, lost: u64| Sample {
        check: Some(Check {
            delivered: 100,
            lost,
            ..Check::default()
        }),
        ..tx_64("grant-copy", pps)
    };
    let r = results(vec![run(100.0, 0), run(100.0, 0), run(9_999.0, 3)]);
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

/// A report rendered from synthetic results: every row carries its 95 % interval, a row
/// wider than +-10 % is marked and counted, the run taken during a far placement is left
/// out and listed, and the seed is said.
#[test]
fn the_report_carries_intervals_far_runs_and_the_seed() {
    use experiments::Sample;
    let probed = |s: Sample, before: f64| Sample {
        probe_ns: before,
        probe_after_ns: 100.0,
        ..s
    };
    // Six rounds; slots:256 is 2x grant-copy in every round though the rounds' rates drift
    // by 2x; ring:8:greedy is noisy; round 6's grant-copy ran on far cores (480 ns).
    let drift = [100.0, 150.0, 200.0, 120.0, 180.0, 160.0];
    let mut samples = Vec::new();
    for (i, base) in drift.iter().enumerate() {
        let far = if i == 5 { 480.0 } else { 90.0 + i as f64 };
        let noisy = [1.0, 3.0, 1.5, 2.6, 1.2, 2.2][i];
        for (design, x) in [
            ("grant-copy", 1.0),
            ("slots:256", 2.0),
            ("ring:8:greedy", noisy),
        ] {
            let s = Sample {
                round: i as u32 + 1,
                ..tx_64(design, base * x)
            };
            let p = if design == "grant-copy" { far } else { 95.0 };
            samples.push(probed(s, p));
        }
    }
    // grant-map ran once, on far cores: with no other run, it keeps that one.
    let once = Sample {
        round: 2,
        ..tx_64("grant-map", 90.0)
    };
    samples.push(probed(once, 480.0));
    let r = results(samples);
    let rows = summarise(&r);
    let slots = &rows[1];
    assert_eq!((slots.n, slots.far), (6, 0));
    assert_eq!(
        (rows[0].n, rows[0].far),
        (5, 1),
        "grant-copy's far run is set aside"
    );
    let ratio = slots.ratio.unwrap();
    assert_eq!((ratio.median, ratio.lo, ratio.hi), (2.0, 2.0, 2.0));
    assert!(!slots.headline().wide() && rows[2].headline().wide());
    let md = markdown(&r);
    // The seed, and how to repeat the order.
    assert!(
        md.contains("seed 1234: `compare --seed 1234` repeats it"),
        "{md}"
    );
    // Rate and ratio with their intervals; the paired ratio is exact although the rates
    // drift; the +- column; runs kept.
    let p = slots.pps;
    assert!(
        md.contains(&format!(
            "| tx | 64 | slots:256 | slots:256 | {:.0} [{:.0}..{:.0}] | 0.00 | 2.00x [2.00..2.00] | 0.0 | 0.000 | 6 |",
            p.median, p.lo, p.hi
        )),
        "{md}"
    );
    assert!(
        p.hi - p.lo > 50.0,
        "the rates alone are far less certain: {p:?}"
    );
    assert!(md.contains("| 5 (+1 far) |"), "{md}");
    // The wide rows (ring:8:greedy's ratio, grant-copy's drifting rate) are bold and
    // counted, with the way to narrow them.
    let wide = rows.iter().filter(|x| x.headline().wide()).count();
    assert!(md.contains("| **"), "{md}");
    assert!(
        md.contains(&format!(
            "{wide} of 4 rows have an interval wider than +-10 % of the median"
        )) && md.contains("`--rounds`; 6 here"),
        "{md}"
    );
    // The far run: the rule and the run, in a section of its own.
    assert!(md.contains("## Far placements"), "{md}");
    assert!(
        md.contains("above 200 ns and above 1.5 x the lower quartile"),
        "{md}"
    );
    assert!(md.contains("1 run set aside"), "{md}");
    assert!(md.contains("(1 run kept all the same"), "{md}");
    assert!(
        md.contains("| 2 | grant-map | tx | 64 | 90 | 480 | 100 | - | no |"),
        "{md}"
    );
    let map = &rows[3];
    assert_eq!((map.n, map.far, map.far_only), (1, 0, true));
    assert_eq!(
        map.ratio.unwrap().median,
        90.0 / 150.0,
        "to round 2's grant-copy"
    );
    assert!(md.contains("| 1 (far only) |"), "{md}");
    assert!(
        md.contains("| 6 | grant-copy | tx | 64 | 160 | 480 | 100 | - | yes |"),
        "{md}"
    );
    assert!(
        md.contains("and 1 run taken during a far placement"),
        "{md}"
    );
    // The CSVs: the far flag per run, the intervals per row.
    let csv = experiments::csv(&r);
    assert!(csv.lines().next().unwrap().ends_with(",position,far"));
    assert_eq!(csv.lines().filter(|l| l.ends_with(",1")).count(), 2);
    let summary = experiments::summary_csv(&r);
    assert!(
        summary.contains("tx,64,slots:256,1,slots:256,6,0,0,"),
        "{summary}"
    );
    assert!(
        summary.contains(",2.0000,2.0000,2.0000,0.00,0\n"),
        "{summary}"
    );
}

/// A sweep whose cores sat far apart throughout (every probe about 270 ns) sets no run
/// aside, since no run is far against the others, but the report says the whole sweep was
/// far apart, in the placement section and under the peer table; a sweep on near cores
/// says neither.
#[test]
fn a_sweep_far_apart_throughout_is_said_to_be() {
    let probed = |s: experiments::Sample, ns: f64| experiments::Sample {
        probe_ns: ns,
        probe_after_ns: ns + 5.0,
        ..s
    };
    let render = |ns: f64| {
        let mut samples = Vec::new();
        for round in 1..=3 {
            for (design, pps) in [("grant-copy", 100.0), ("ring:8:greedy", 300.0)] {
                let s = experiments::Sample {
                    round,
                    ..tx_64(design, pps)
                };
                samples.push(probed(s, ns + f64::from(round)));
            }
        }
        let mut r = results(samples);
        for round in 1..=3 {
            r.peers.push(experiments::peer::PeerSample {
                round,
                peer: "dpdk".into(),
                dir: experiments::Dir::Tx,
                size: 64,
                pps: 200.0,
                gbps: 0.1,
                periods: vec![200.0],
                probe_ns: ns,
                probe_after_ns: ns,
                commands: vec![],
            });
        }
        markdown(&r)
    };
    let far = render(270.0);
    assert!(
        far.contains(
            "**The two cores sat far apart throughout** (even the lower quartile of the probes, 27"
        ),
        "{far}"
    );
    assert!(far.contains("No run was set aside."), "{far}");
    assert!(
        far.contains(
            "This sweep ran with the two cores far apart (lower quartile of the probes 27"
        ),
        "{far}"
    );
    assert!(far.contains("| tx | 64 | 200 |"), "the peer table: {far}");
    let near = render(90.0);
    assert!(near.contains("## Far placements"), "{near}");
    assert!(!near.contains("far apart throughout"), "{near}");
    assert!(
        !near.contains("This sweep ran with the two cores far apart"),
        "{near}"
    );
}

/// A host that moved the two vCPUs apart for most of a sweep (probes of about 400 ns in
/// three runs of five, about 70 ns in the rest): the far runs are set aside against the
/// near probes, and the sweep is not said to be far apart throughout.
#[test]
fn far_runs_are_found_when_most_of_the_sweep_was_far() {
    let mut samples = Vec::new();
    for round in 1..=5 {
        let (ns, pps) = if round % 2 == 1 {
            (400.0, 100.0)
        } else {
            (70.0, 300.0)
        };
        samples.push(experiments::Sample {
            round,
            probe_ns: ns,
            probe_after_ns: ns,
            ..tx_64("ring:8:greedy", pps)
        });
    }
    let report = markdown(&results(samples));
    assert!(report.contains("3 runs set aside"), "{report}");
    assert!(!report.contains("far apart throughout"), "{report}");
    assert!(report.contains("| 300 "), "the near runs' median: {report}");
}

/// A one-second TX run at 64 B of `design` at `pps`, with nothing else recorded.
fn tx_64(design: &str, pps: f64) -> experiments::Sample {
    experiments::Sample {
        round: 1,
        position: None,
        design: design.into(),
        design_used: design.into(),
        dir: experiments::Dir::Tx,
        size: 64.into(),
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

/// `design`'s TX runs at 64 B, one per round from round 1, at these rates.
fn rounds(design: &str, pps: &[f64]) -> Vec<experiments::Sample> {
    (1..)
        .zip(pps)
        .map(|(round, pps)| experiments::Sample {
            round,
            ..tx_64(design, *pps)
        })
        .collect()
}

/// Results of these samples on this machine, with seed 1234.
fn results(samples: Vec<experiments::Sample>) -> Results {
    Results {
        stream_gbps: vec![],
        stream_64b_mps: vec![],
        stream_64b_burst_mps: vec![],
        stream_64b_netif_mps: vec![],
        peers: vec![],
        peer_failures: vec![],
        machine: experiments::Machine::detect("kernel", "blocking"),
        samples,
        seed: Some(1234),
        calibration: None,
        record: None,
    }
}

/// A sweep over ring orders or slot data-lens gets a chart per axis; designs off any axis
/// (or an axis with fewer than three points) do not.
#[test]
fn swept_ring_orders_and_slot_data_lens_get_a_chart_each() {
    let mut samples = Vec::new();
    for d in [
        "grant-copy",
        "ring:3:greedy",
        "ring:5:greedy",
        "ring:7:greedy",
        "ring:5:adaptive",
        "slots:64",
        "slots:256",
        "slots:4096",
        "slots-rfc:256",
        "slots-rfc:4096",
    ] {
        samples.extend(rounds(d, &[1e6, 1.1e6, 0.9e6]));
    }
    let names = experiments::plots::chart_names(&results(samples));
    assert!(
        names.contains(&"axis-ring-order-greedy-tx".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"axis-slots-data-len-tx".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("adaptive")), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("slots-rfc")), "{names:?}");
}

/// The report's seed check: what a grant copy added per 64-byte packet over slots:256,
/// round by round, against the RFC's 398 ns on TX.
#[test]
fn the_seed_check_reports_the_added_cost_per_packet_against_the_rfc() {
    // 1/2.5e6 - 1/5e6 s = 200 ns added, every round: half the seed's 398 ns.
    let mut samples = rounds("grant-copy", &[2.5e6, 2.5e6, 2.5e6]);
    samples.extend(rounds("slots:256", &[5e6, 5e6, 5e6]));
    let checks = experiments::calibrate::seed_check(&samples);
    assert_eq!(checks.len(), 1, "TX only: {checks:?}");
    assert!((checks[0].median_ns - 200.0).abs() < 1e-6, "{checks:?}");
    assert!(!checks[0].reproduced());
    let md = experiments::markdown(&results(samples));
    assert!(
        md.contains("| tx | 200 [200..200] | 398 | -50 % | **no** |"),
        "{md}"
    );
}

#[test]
fn csv_cells_with_commas_or_quotes_are_quoted_and_read_back_whole() {
    // A design name is free text from the command line or a scenario file.
    let odd = "ring:8,\"odd\"";
    let r = results(rounds(odd, &[100.0, 110.0]));
    for (name, text, columns) in [
        (
            "results.csv",
            experiments::csv(&r),
            &experiments::RESULTS_CSV_COLUMNS[..],
        ),
        (
            "summary.csv",
            experiments::summary_csv(&r),
            &experiments::SUMMARY_CSV_COLUMNS[..],
        ),
    ] {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(reader.headers().unwrap(), columns, "{name}");
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert!(!rows.is_empty(), "{name}: {text}");
        for row in &rows {
            assert_eq!(row.len(), columns.len(), "{name}: {text}");
            let design = columns.iter().position(|c| *c == "design").unwrap();
            assert_eq!(&row[design], odd, "{name}: {text}");
        }
    }
    // Without runs, each file still has its header; a peer run is one line under it.
    let mut with_peer = results(vec![]);
    let header = experiments::PEERS_CSV_COLUMNS.join(",") + "\n";
    assert_eq!(experiments::peers_csv(&with_peer), header);
    with_peer.peers.push(experiments::peer::PeerSample {
        round: 1,
        peer: "dpdk".into(),
        dir: experiments::Dir::Rx,
        size: 64,
        pps: 1.25,
        gbps: 0.5,
        periods: vec![1.25],
        probe_ns: 80.0,
        probe_after_ns: 81.0,
        commands: vec![],
    });
    assert_eq!(
        experiments::peers_csv(&with_peer),
        header + "1,dpdk,rx,64,1.2,0.5000,1,80.0,81.0,0\n"
    );
}

/// The names between backticks in `docs/harness.md`'s row for `file` that are column-like
/// (lower case and underscores), in order.
fn documented_columns(file: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/harness.md"))
        .unwrap();
    let row = doc
        .lines()
        .find(|l| l.starts_with(&format!("| `{file}` |")))
        .unwrap_or_else(|| panic!("docs/harness.md has no row for {file}"));
    row.split('`')
        .skip(3) // the text before the file's name, the name, the text after it
        .step_by(2)
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_string)
        .collect()
}

#[test]
fn docs_harness_md_lists_every_csv_column_in_order() {
    for (file, columns) in [
        ("results.csv", &experiments::RESULTS_CSV_COLUMNS[..]),
        ("summary.csv", &experiments::SUMMARY_CSV_COLUMNS[..]),
        ("peers.csv", &experiments::PEERS_CSV_COLUMNS[..]),
        ("tcp.csv", &experiments::tcp::TCP_CSV_COLUMNS[..]),
    ] {
        assert_eq!(documented_columns(file), columns, "{file}");
    }
}

/// Request/response runs of `design` in direction `dir`, one per round, at these rates.
fn rr_rounds(design: &str, dir: experiments::Dir, tps: &[f64]) -> Vec<experiments::Sample> {
    rounds(design, tps)
        .into_iter()
        .map(|s| experiments::Sample {
            dir,
            size: 15.into(),
            latency_ns: Some([1e3, 2e3, 3e3]),
            ..s
        })
        .collect()
}

/// The request/response section gives each design's busy-polling rate over its blocking
/// rate, paired round by round, and names how the blocking runs waited; a sweep that
/// busy-polled throughout has no such table.
#[test]
fn the_report_gives_busy_polling_over_blocking_round_by_round() {
    use experiments::Dir;
    let mut samples = rr_rounds("slots:256", Dir::Rr, &[1e5, 2e5, 4e5]);
    // Round by round 4x, 1x and 1x (median 1.00x); the medians' ratio would be 2x.
    samples.extend(rr_rounds("slots:256", Dir::RrBusy, &[4e5, 2e5, 4e5]));
    let mut r = results(samples);
    r.machine.poll = "blocking, armed at once".into();
    let md = experiments::markdown(&r);
    assert!(
        md.contains("Busy-polling over blocking (blocking, armed at once)"),
        "{md}"
    );
    assert!(md.contains("| slots:256 | 1.00x ["), "{md}");
    assert!(
        md.contains("| blocking, armed at once | slots:256 |"),
        "{md}"
    );
    r.machine.poll = "busy-poll".into();
    assert!(!experiments::markdown(&r).contains("Busy-polling over blocking"));
}

/// A run that spent 60 ms at half its pace is listed under "Slow stretches" with the data
/// ring's fill in and out of the stretch; a steady run is not, and a sweep without any
/// says so.
#[test]
fn the_report_lists_runs_with_a_slow_stretch() {
    let timeline = |slow: bool| -> Vec<experiments::Bin> {
        (1..=30)
            .map(|i| {
                let dip = slow && (10..16).contains(&i);
                experiments::Bin {
                    t: f64::from(i) * 0.01,
                    packets: if dip { 1e5 } else { 2e5 },
                    staged: 0.0,
                    fill_pct: Some(if dip { 0.7 } else { 2.8 }),
                }
            })
            .collect()
    };
    let mut steady = tx_64("ring:8:greedy", 2e7);
    steady.timeline = timeline(false);
    let mut stretched = experiments::Sample {
        round: 2,
        ..tx_64("ring:8:greedy", 1.8e7)
    };
    stretched.timeline = timeline(true);
    let md = experiments::markdown(&results(vec![steady.clone(), stretched]));
    assert!(
        md.contains("1 of 2 throughput runs spent 50 ms or more"),
        "{md}"
    );
    assert!(
        md.contains("| 2 | ring:8:greedy | tx | 64 | 90 | 60 | 50 % | 0.7 / 2.8 |"),
        "{md}"
    );
    let md = experiments::markdown(&results(vec![steady]));
    assert!(md.contains("No throughput run spent 50 ms or more"), "{md}");
    // Results without timelines (older ones) say there was nothing to look at.
    let md = experiments::markdown(&results(vec![tx_64("ring:8:greedy", 2e7)]));
    assert!(md.contains("No throughput run recorded 10 or more"), "{md}");
}
