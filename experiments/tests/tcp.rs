//! `experiments tcp`: real Linux TCP (iperf3) through the designs between two network
//! namespaces. Needs root, iproute2 and iperf3 (`scripts/test` installs them and runs as
//! root); without them it fails, naming what is missing, rather than skip.

use std::process::Command;

use experiments::tcp::{tcp_rows, TcpResults};
use experiments::Dir;

mod common;

/// Runs `experiments tcp` with `args` into `out`, which must succeed, and reads its results.
fn tcp_into(args: &[&str], out: &std::path::Path) -> TcpResults {
    let st = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .arg("tcp")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(out.join("tcp.json")).unwrap()).unwrap()
}

#[test]
fn tcp_runs_through_each_design_and_the_numbers_add_up() {
    let out = tempfile::tempdir().unwrap();
    // What an interrupted run leaves behind (its process has exited) is cleared away.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stale_ns = format!("nsg-{dead}");
    let stale_world = std::path::PathBuf::from(format!("/dev/shm/netstage-tcp-{dead}"));
    assert!(Command::new("ip")
        .args(["netns", "add", &stale_ns])
        .status()
        .unwrap()
        .success());
    std::fs::create_dir_all(&stale_world).unwrap();
    let r = tcp_into(
        &[
            "--designs",
            "grant-copy,ring:8:greedy",
            "--rounds",
            "1",
            "--seconds",
            "1",
        ],
        out.path(),
    );
    // Two designs and the veth reference, both directions.
    assert_eq!(r.samples.len(), 6);
    for s in &r.samples {
        assert!(s.gbps > 0.05, "{} {}: {} Gbit/s", s.design, s.dir, s.gbps);
        assert_eq!(
            s.drops.tap_drops, 0,
            "{} {}: {:?}",
            s.design, s.dir, s.drops.tap_drop_reasons
        );
        if s.design == "veth" {
            continue;
        }
        assert!(
            s.drops.run_end_marked,
            "{} {}: the run's end was not marked",
            s.design, s.dir
        );
        // Offloads on: the kernel's 64 KiB segments crossed as netif GSO packets, and netif
        // carried at least the bytes iperf3 measured (plus headers, handshake and the
        // omitted second).
        let (packets, bytes) = s.netif_packets();
        assert!(
            bytes / packets > 1514.0,
            "{} {}: {bytes}/{packets}",
            s.design,
            s.dir
        );
        assert!(
            bytes * 8.0 >= s.gbps * 1e9 * s.seconds,
            "{} {}: {bytes} B vs {} Gbit/s x {} s",
            s.design,
            s.dir,
            s.gbps,
            s.seconds
        );
        // The frontend saw the same packets: what it sent and the backend answered (TX),
        // or what it received or found still on the ring when it closed (RX).
        let count = |key: &str| s.front_metrics[key].as_f64().unwrap();
        let seen = if s.dir == Dir::Rx {
            count("rx_packets") + count("rx_unread")
        } else {
            count("tx_packets") - count("tx_unanswered")
        };
        assert_eq!(seen, packets, "{} {}", s.design, s.dir);
        assert!(s.front_cpu_s > 0.0 && s.back_cpu_s > 0.0);
    }
    let rows = tcp_rows(&r);
    assert_eq!(rows.len(), 6);
    // Each end's CPU per GB carried: the sample's CPU over its netif bytes.
    for row in rows.iter().filter(|x| x.design != "veth") {
        let s = r
            .samples
            .iter()
            .find(|s| s.dir == row.dir && s.design == row.design)
            .unwrap();
        let (_, bytes) = s.netif_packets();
        assert_eq!(row.cpu_ms_per_gb[1], s.back_cpu_s * 1e3 / (bytes / 1e9));
        assert!(row.cpu_ms_per_gb[0] > 0.0 && row.cpu_ms_per_gb[1] > 0.0);
    }
    let md = std::fs::read_to_string(out.path().join("tcp.md")).unwrap();
    for row in &rows {
        assert!(
            md.contains(&format!(
                "| {} | on | 1 | {} | {:.2} |",
                row.dir, row.design, row.gbps.median
            )),
            "{row:?}"
        );
    }
    // `report` renders the saved TCP run again, the same.
    assert_eq!(common::report(out.path()), md);
    // A diff of the run with itself: every design, in Gbit/s, nothing beyond the noise.
    let d = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .arg("diff")
        .args([out.path(), out.path()])
        .output()
        .unwrap();
    assert!(d.status.success());
    let d = String::from_utf8(d.stdout).unwrap();
    assert!(d.starts_with("| dir | design | Gbit/s before |"), "{d}");
    assert_eq!(
        d.lines().filter(|l| l.ends_with("| +0.0 % | no |")).count(),
        6,
        "{d}"
    );
    let csv = std::fs::read_to_string(out.path().join("tcp.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7);
    assert!(out.path().join("tcp.svg").exists() && out.path().join("tcp.png").exists());
    // Nothing is left behind: no namespace of the run, no world.
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let ns = String::from_utf8_lossy(&ns.stdout);
    assert!(!ns.contains("nsg-") && !ns.contains("nsh-"), "{ns}");
    assert!(!stale_world.exists());
}

#[test]
fn bad_tcp_arguments_are_refused() {
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_experiments"))
            .arg("tcp")
            .args(args)
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(run(&["--dirs", "up"]).contains("'up'"));
    assert!(run(&["--cost", "cheap"]).contains("--cost"));
    assert!(run(&["--designs", "slots:0"]).contains("slots:0"));
    assert!(run(&["--seconds", "0"]).contains("'0' for '--seconds"));
    assert!(run(&["--streams", "0"]).contains("--streams"));
    let e = run(&["--designs", "grant-copy", "--out", "/proc/nonexistent/x"]);
    assert!(!e.is_empty());
}

#[test]
fn tcp_request_response_runs_through_a_design_with_sockperf() {
    let out = tempfile::tempdir().unwrap();
    let r = tcp_into(
        &[
            "--designs",
            "slots:256",
            "--dirs",
            "rr,rr-busy",
            "--no-veth",
            "--rounds",
            "1",
            "--seconds",
            "1",
            "--cost",
            "none",
        ],
        out.path(),
    );
    assert_eq!(r.samples.len(), 2);
    for s in &r.samples {
        let rr = s.rr.expect("a request/response run has sockperf's summary");
        assert!(
            rr.transactions_per_s > 100.0,
            "{} {}: {rr:?}",
            s.design,
            s.dir
        );
        assert!(rr.p50_us > 0.0 && rr.p99_us >= rr.p50_us, "{rr:?}");
        assert_eq!(s.drops.tap_drops, 0, "{:?}", s.drops.tap_drop_reasons);
        assert!(
            s.drops.run_end_marked,
            "{} {}: the run's end was not marked",
            s.design, s.dir
        );
    }
    let md = std::fs::read_to_string(out.path().join("tcp.md")).unwrap();
    assert!(md.contains("## Request/response over TCP"), "{md}");
    assert!(md.contains("| rr-busy | slots:256 |"), "{md}");
    assert!(md.contains("sockperf ping-pong"), "{md}");
}

/// A TCP sweep told to stop (SIGTERM, as Ctrl-C's SIGINT) keeps every run it finished:
/// each was in samples.jsonl and tcp.json as it finished; the results say they are partial
/// and why, with the run's record, and `report` renders them.
#[test]
fn a_stopped_tcp_sweep_keeps_every_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = [
        "tcp",
        "--designs",
        "grant-copy",
        "--no-veth",
        "--rounds",
        "20",
        "--seconds",
        "1",
        "--cost",
        "none",
    ];
    let stderr = common::stopped_after(&args, &out, 1);
    let log = out.join("samples.jsonl");
    // Not a terminal: one line per finished run on stderr.
    assert!(stderr.contains("experiments: tcp run 1/"), "{stderr}");
    let r: TcpResults =
        serde_json::from_str(&std::fs::read_to_string(out.join("tcp.json")).unwrap()).unwrap();
    let rec = r.record.as_ref().expect("the run's record");
    assert!(rec.partial && rec.stopped_by.is_some(), "{rec:?}");
    assert!(rec.command.iter().any(|a| a == "tcp"), "{rec:?}");
    let logged = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(
        !r.samples.is_empty() && logged >= r.samples.len(),
        "{logged} logged"
    );
    assert!(r.samples.len() < 40, "it stopped early");
    let md = std::fs::read_to_string(out.join("tcp.md")).unwrap();
    assert!(md.contains("**Partial results**"), "{md}");
    assert_eq!(common::report(&out), md);
}
