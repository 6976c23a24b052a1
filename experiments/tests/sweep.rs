//! Scenario files: the shipped ones parse, bad ones are refused with the key named, and a
//! run takes its sweep from the file with the command line winning.

use std::process::Command;

use experiments::sweep::{run_order, Sweep, SweepError};
use experiments::Dir;

mod common;

#[test]
fn the_shipped_scenario_files_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let s = Sweep::load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert!(s.designs.is_some_and(|d| !d.is_empty()), "{}", p.display());
            n += 1;
        }
    }
    assert!(n >= 2, "the examples are there");
}

/// The run order: each round a shuffle of every run, the same for the same seed and another
/// for another seed.
#[test]
fn the_run_order_follows_the_seed() {
    let a = run_order(20, 5, 7);
    assert_eq!(a, run_order(20, 5, 7), "the same seed, the same order");
    assert_ne!(a, run_order(20, 5, 8), "another seed, another order");
    assert_eq!(a.len(), 5);
    for round in &a {
        let mut sorted = round.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>(), "every run once");
    }
    // Shuffled afresh each round, and not left in the sweep's order.
    assert!(a.windows(2).all(|w| w[0] != w[1]), "{a:?}");
    assert!(a.iter().all(|r| *r != (0..20).collect::<Vec<_>>()));
    // Different seeds give different first rounds (not only different later ones).
    let firsts: std::collections::BTreeSet<Vec<usize>> = (0..10)
        .map(|seed| run_order(20, 1, seed).remove(0))
        .collect();
    assert_eq!(firsts.len(), 10);
    assert_eq!(run_order(0, 2, 1), vec![Vec::<usize>::new(); 2]);
}

#[test]
fn bad_scenario_files_are_refused_with_the_reason() {
    let err = |text: &str| Sweep::parse(text, "x.toml").unwrap_err().to_string();
    let e = err("designz = [\"grant-copy\"]");
    assert!(e.contains("x.toml") && e.contains("designz"), "{e}");
    let e = err("designs = [\"slots:0\"]");
    assert!(e.contains("slots:0"), "{e}");
    let e = err("sizes = [64, 70000]");
    assert!(e.contains("70000"), "{e}");
    let e = err("dirs = [\"sideways\"]");
    assert!(e.contains("sideways"), "{e}");
    let e = err("busy = true\narmed = true");
    assert!(e.contains("armed") && e.contains("busy"), "{e}");
    assert!(err("rounds = 0").contains("rounds"));
    assert!(err("seconds = -1.0").contains("seconds"));
    assert!(err("sizes = []").contains("empty"));
    assert!(err("queues = [0]").contains("queues: 0"));
    assert!(err("back_spin_us = 2000000").contains("back_spin_us"));
    assert!(err("seed = -1").contains("seed"));
    // The cost mode is checked before any run starts.
    let e = err("cost = \"cheap\"");
    assert!(e.contains("cost") && e.contains("cheap"), "{e}");
    assert!(Sweep::parse("cost = \"model:100,50,800,800\"", "x.toml").is_ok());
    assert_eq!(
        Sweep::parse("front_spin_us = 5", "x.toml")
            .unwrap()
            .front_spin_us,
        Some(5)
    );
    assert!(err("queues = [9]").contains("queues: 9"));
    assert_eq!(
        Sweep::parse("queues = [1, 2]", "x.toml").unwrap().queues,
        Some(vec![1, 2])
    );
    assert!(matches!(
        Sweep::load(std::path::Path::new("/nonexistent/s.toml")),
        Err(SweepError::Read { .. })
    ));
    // Every key is optional.
    assert_eq!(Sweep::parse("", "x.toml").unwrap(), Sweep::default());
}

/// Sizes in a scenario file: numbers as before, specs as strings, in one list; a sweep
/// with mixes is written back as it was read.
#[test]
fn scenario_files_take_mixed_sizes_and_old_integer_lists() {
    use experiments::SizeSpec;
    let old = Sweep::parse("sizes = [64, 128]", "x.toml").unwrap();
    assert_eq!(
        old.sizes,
        Some(vec![SizeSpec::Fixed(64), SizeSpec::Fixed(128)])
    );
    let s = Sweep::parse(
        "sizes = [64, \"1500\", \"imix\", \"mix:64+65535\", \"mix:64x7+576x4+1500\"]",
        "x.toml",
    )
    .unwrap();
    let want: Vec<SizeSpec> = ["64", "1500", "imix", "mix:64+65535", "imix"]
        .iter()
        .map(|x| x.parse().unwrap())
        .collect();
    // `mix:64x7+576x4+1500` is IMIX's sizes and weights, but as a mix of its own.
    assert_eq!(s.sizes.as_ref().unwrap()[..4], want[..4]);
    assert_eq!(
        s.sizes.as_ref().unwrap()[4],
        SizeSpec::Mix(vec![(64, 7), (576, 4), (1500, 1)])
    );
    let text = toml::to_string(&s).unwrap();
    assert!(
        text.contains("sizes = [64, 1500, \"imix\", \"mix:64+65535\""),
        "{text}"
    );
    assert_eq!(Sweep::parse(&text, "y.toml").unwrap(), s);
    let err = |text: &str| Sweep::parse(text, "x.toml").unwrap_err().to_string();
    for bad in [
        "sizes = [\"mix:64\"]",
        "sizes = [\"IMIX\"]",
        "sizes = [-1]",
        "sizes = [1.5]",
    ] {
        let e = err(bad);
        assert!(e.contains("sizes") || e.contains("size `"), "{bad}: {e}");
    }
    // A sweep built in code is checked as well.
    let built = Sweep {
        sizes: Some(vec![SizeSpec::Fixed(13)]),
        ..Sweep::default()
    };
    assert!(built.check().unwrap_err().contains("`13`"));
}

/// `--sizes` takes specs, comma-separated, a mix's sizes joined by `+`; a bad one is
/// refused by name before anything runs.
#[test]
fn the_command_line_takes_mixed_sizes() {
    let run = |sizes: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_experiments"))
            .args(["compare", "--sizes", sizes, "--cost", "cheap"])
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // Parsed: the command line stops at the next option, the cost mode.
    let e = run("imix,mix:64+65535,1500,mix:64x7+1500");
    assert!(e.contains("'cheap' for '--cost"), "{e}");
    // `,` separates specs, so a mix written with one is cut in two and refused.
    let e = run("imix,mix:64,65535");
    assert!(e.contains("mix:64") && !e.contains("cheap"), "{e}");
    let e = run("64,70000");
    assert!(e.contains("70000") && !e.contains("cheap"), "{e}");
}

#[test]
fn a_run_follows_its_scenario_file_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        "designs = [\"grant-copy\", \"ring:2:greedy\"]\nsizes = [256]\ndirs = [\"rx\"]\n\
         rounds = 1\nseconds = 0.1\nstream = false\nseed = 77\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let file_arg = file.display().to_string();
    let (r, _) = common::compare_into(&["--scenario", &file_arg, "--rounds", "2"], &out);
    // 2 designs x 1 size x RX x 2 rounds (the flag), no stream (the file).
    assert_eq!(r.samples.len(), 4);
    assert!(r
        .samples
        .iter()
        .all(|s| s.size == 256.into() && s.dir == Dir::Rx));
    assert!(
        r.stream_gbps.is_empty()
            && r.stream_64b_mps.is_empty()
            && r.stream_64b_burst_mps.is_empty()
            && r.stream_64b_netif_mps.is_empty()
    );
    // The sweep that ran is saved with every key resolved.
    let ran = Sweep::load(&out.join("scenario.toml")).unwrap();
    assert_eq!(ran.rounds, Some(2));
    assert_eq!(ran.sizes, Some(vec![256.into()]));
    assert_eq!(ran.busy, Some(false));
    assert_eq!(
        ran.armed,
        Some(false),
        "blocking waits spin unarmed by default"
    );
    assert_eq!(ran.cost.as_deref(), Some("xen"), "the default cost mode");
    assert_eq!(ran.stream, Some(false));
    // The seed came from the file and is recorded with the results.
    assert_eq!((ran.seed, r.seed), (Some(77), Some(77)));
    // A bad file stops the run before anything is measured.
    std::fs::write(&file, "sizes = [1]\n").unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .args(["compare", "--scenario"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!st.status.success());
    let e = String::from_utf8_lossy(&st.stderr);
    assert!(
        e.contains("sizes") && e.contains("`1` is not a packet size"),
        "{e}"
    );
    // A file and the flags each sound, and not together: refused before anything runs.
    std::fs::write(&file, "busy = true\n").unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .args(["compare", "--armed", "--scenario"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!st.status.success());
    let e = String::from_utf8_lossy(&st.stderr);
    assert!(e.contains("--armed") && e.contains("busy = true"), "{e}");
}

/// A bad option ends the run at once, before anything runs, with clap's usage error naming
/// the option and the value (exit code 2), and no backtrace even with `RUST_BACKTRACE` set
/// (`NETSTAGE_BACKTRACE=1` asks for one); the same for a bad design.
#[test]
fn a_bad_cost_or_design_is_named_before_anything_runs() {
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_experiments"))
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .env_remove("NETSTAGE_BACKTRACE")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(!err.contains("backtrace"), "{err}");
        err
    };
    for cmd in ["compare", "latency"] {
        let err = run(&[cmd, "--busy", "--armed"]);
        assert!(
            err.contains("--armed") && err.contains("--busy"),
            "{cmd}: {err}"
        );
    }
    let err = run(&["compare", "--quick", "--cost", "cheap"]);
    assert!(
        err.starts_with("error: invalid value 'cheap' for '--cost <COST>'"),
        "{err}"
    );
    let err = run(&["compare", "--designs", "grant-copy,ring:99:bogus"]);
    assert!(
        err.starts_with("error: invalid value 'ring:99:bogus' for '--designs <DESIGNS>'"),
        "{err}"
    );
    let err = run(&["latency", "--designs", "nope"]);
    assert!(err.contains("'nope' for '--designs"), "{err}");
    let err = run(&["soak", "--cost", "xen"]);
    assert!(err.contains("'xen' for '--cost"), "{err}");
    // The processes' own commands are never suggested for a mistyped one.
    for typo in ["frontend", "tc", "backend", "role"] {
        let err = run(&[typo]);
        assert!(!err.contains("role-"), "{typo}: {err}");
    }
    // A negative number is a bad value of its option, not an unknown flag.
    let err = run(&["compare", "--seconds", "0"]);
    assert!(err.contains("'0' for '--seconds"), "{err}");
    for cmd in ["compare", "tcp", "latency"] {
        let err = run(&[cmd, "--rounds", "-5"]);
        assert!(err.contains("'-5' for '--rounds <ROUNDS>'"), "{cmd}: {err}");
    }
}

/// A short soak runs (reconnects and faults among its steps), writes every step's outcome as
/// it goes, accounts every run each way and passes; a bad duration is refused at once.
#[test]
fn a_short_soak_checks_every_run_and_survives_its_faults() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("soak");
    let st = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .args(["soak", "--minutes", "0.15", "--seed", "5", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&st.stderr);
    assert!(st.status.success(), "{stderr}");
    let steps: Vec<experiments::soak::Outcome> =
        serde_json::from_str(&std::fs::read_to_string(out.join("soak.json")).unwrap()).unwrap();
    let record: experiments::RunRecord =
        serde_json::from_str(&std::fs::read_to_string(out.join("record.json")).unwrap()).unwrap();
    assert!(record.command.iter().any(|a| a == "soak"), "{record:?}");
    assert!(
        steps.len() >= experiments::soak::FAULT_EVERY as usize,
        "{stderr}"
    );
    assert!(steps.iter().all(|o| o.ok), "{steps:#?}");
    assert!(steps.iter().any(|o| o.step.fault.is_some()), "{steps:#?}");
    // The first steps reconnect frontends of other designs to one backend.
    assert!(steps[0].step.then.len() == 2, "{steps:#?}");
    assert!(steps[0].detail.starts_with("3 connects"), "{steps:#?}");
    // Every run without a fault is accounted each way, and adds up.
    for o in steps.iter().filter(|o| o.step.fault.is_none()) {
        let a = o.accounting.as_ref().expect("accounted");
        assert!(a.balanced() && a.tx.sent + a.rx.sent > 0, "{o:#?}");
    }
    assert_eq!(
        stderr.lines().filter(|l| l.contains(": ok ")).count(),
        steps.len()
    );
    let stdout = String::from_utf8_lossy(&st.stdout);
    assert!(
        stdout.contains("\n  TX: ") && stdout.contains("\n  RX: "),
        "{stdout}"
    );
    assert!(!stdout.contains("DOES NOT ADD UP"), "{stdout}");
    let bad = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .args(["soak", "--minutes", "0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--minutes"));
}

/// A sweep told to stop (SIGTERM, as Ctrl-C's SIGINT) finishes the run in progress, writes
/// what it has as a valid partial result that `report` renders, and exits non-zero; every
/// finished run was already in samples.jsonl.
#[test]
fn a_stopped_sweep_keeps_every_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stderr = common::stopped_after(&["compare", "--quick", "--cost", "none"], &out, 3);
    let log = out.join("samples.jsonl");
    let r: experiments::Results =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let rec = r.record.as_ref().expect("the run's record");
    assert!(rec.partial && rec.stopped_by.is_some(), "{rec:?}");
    assert_eq!(rec.schema, experiments::SCHEMA_VERSION);
    assert!(rec.command.iter().any(|a| a == "--quick"), "{rec:?}");
    let logged = std::fs::read_to_string(&log).unwrap().lines().count();
    // Finished runs: the designs' samples and the raw streams' rates.
    let streams = r.stream_gbps.len()
        + r.stream_64b_mps.len()
        + r.stream_64b_burst_mps.len()
        + r.stream_64b_netif_mps.len();
    let finished = r.samples.len() + streams;
    assert!(
        finished >= 3 && logged >= finished,
        "{logged} logged, {finished} finished"
    );
    // Not a terminal: one line per finished run on stderr.
    assert!(
        stderr.lines().filter(|l| l.contains(": run ")).count() >= 3,
        "{stderr}"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("stopped early"), "{md}");
    assert_eq!(common::report(&out), md);
}
