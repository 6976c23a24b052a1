//! `--peer dpdk`: DPDK's vhost-user / virtio-user pair measured beside the designs in the same
//! run. Needs Debian's dpdk-dev and its vhost, virtio and mempool drivers, which
//! `scripts/test` installs; without them these tests fail rather than skip.

use std::process::Command;

use experiments::peer::{Dpdk, Peer, RatesParser};
use experiments::sweep::Sweep;
use experiments::{diff, peer_rows, Dir};

mod common;

/// Lines as testpmd prints them every `--stats-period`: the zero periods before the guest
/// connects, a partial period while traffic starts, then full ones.
const STATS: &str = "
  ######################## NIC statistics for port 0  ########################
  RX-packets: 0          RX-missed: 0          RX-bytes:  0
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  RX-packets: 4623240    RX-missed: 0          RX-bytes:  295887360
  Rx-pps:      4623240          Rx-bps:   2367099184
  Tx-pps:            0          Tx-bps:            0
  Rx-pps:     24220474          Rx-bps:  12400883048
  Tx-pps:            0          Tx-bps:            0
  Rx-pps:     23879572          Rx-bps:  12226340880
  Rx-pps:     22241109          Rx-bps:  11387448128
";

#[test]
fn the_warm_up_period_is_not_measured() {
    let mut p = RatesParser::new(2);
    let got: Vec<Vec<f64>> = STATS.lines().filter_map(|l| p.line(l)).collect();
    assert_eq!(got, [vec![24220474.0, 23879572.0]]);
    // Asking for no period still measures one.
    let mut p = RatesParser::new(0);
    let first = STATS.lines().find_map(|l| p.line(l));
    assert_eq!(first, Some(vec![24220474.0]));
    // Garbage is not a rate.
    let mut p = RatesParser::new(1);
    for l in [
        "Rx-pps:",
        "Rx-pps: many",
        "  Tx-pps: 5",
        "Rx-pps: 7",
        "Rx-pps: 9",
    ] {
        let r = p.line(l);
        assert_eq!(r.is_some(), l == "Rx-pps: 9", "{l}");
    }
}

#[test]
fn frames_beyond_two_kilobytes_go_as_segment_chains() {
    let d = Dpdk::detect().expect("scripts/test installs dpdk-dev");
    let sock = std::path::Path::new("/dev/shm/x.sock");
    let [host, guest] = d.commands(Dir::Tx, 65535, (0, 1), sock, "p");
    let tail = |v: &[String]| v[v.len() - 2..].to_vec();
    assert_eq!(
        tail(&guest),
        [
            "--mbuf-size=8320",
            "--txpkts=8192,8192,8192,8192,8192,8192,8192,8191"
        ]
    );
    assert!(host.contains(&"--forward-mode=rxonly".to_string()));
    assert!(guest.contains(&"--forward-mode=txonly".to_string()));
    assert!(
        host.contains(&"0@1,1@1".to_string()),
        "host on the backend's core"
    );
    assert!(
        guest.contains(&"0@0,1@0".to_string()),
        "guest on the frontend's core"
    );
    let [host, guest] = d.commands(Dir::Rx, 1500, (0, 1), sock, "p");
    assert_eq!(guest.last().unwrap(), "--txpkts=1500");
    assert!(host.contains(&"--forward-mode=txonly".to_string()));
    assert!(guest.contains(&"--forward-mode=rxonly".to_string()));
}

#[test]
fn dpdk_runs_beside_the_designs_in_the_same_run() {
    let out = tempfile::tempdir().unwrap();
    let (r, _) = common::compare_into(
        &[
            "--designs",
            "grant-copy",
            "--sizes",
            "64,9000",
            "--dirs",
            "tx,rx,rr",
            "--rounds",
            "1",
            "--seconds",
            "0.2",
            "--no-stream",
            "--peer",
            "dpdk",
        ],
        out.path(),
    );
    // One run per throughput direction and size; none for request/response.
    let mut got: Vec<(Dir, usize)> = r.peers.iter().map(|p| (p.dir, p.size)).collect();
    got.sort_by_key(|(d, s)| (d.to_string(), *s));
    assert_eq!(
        got,
        [
            (Dir::Rx, 64),
            (Dir::Rx, 9000),
            (Dir::Tx, 64),
            (Dir::Tx, 9000)
        ]
    );
    for p in &r.peers {
        assert_eq!(p.peer, "dpdk");
        assert!(p.pps > 0.0 && p.periods.len() == 1 && p.pps == p.periods[0]);
        assert_eq!(p.gbps, p.pps * p.size as f64 * 8.0 / 1e9);
        assert!(p.probe_ns > 0.0 && p.probe_after_ns > 0.0);
        // The exact commands: two testpmd processes on one vhost-user socket.
        assert_eq!(p.commands.len(), 2);
        assert!(p.commands[0].contains("dpdk-testpmd") && p.commands[0].contains("net_vhost0"));
        assert!(p.commands[1].contains("net_virtio_user0"));
    }
    // The files: peers.csv has a line per run; the report puts each rate beside grant-copy's
    // and prints the commands; the TX chart has the peer's line.
    let csv = std::fs::read_to_string(out.path().join("peers.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("## Beside DPDK vhost-user / virtio-user"));
    for row in peer_rows(&r) {
        assert!(
            md.contains(&format!(
                "| {} | {} | {:.0} |",
                row.dir, row.size, row.pps.median
            )),
            "{row:?}"
        );
    }
    assert!(md.contains(&r.peers[0].commands[0]));
    let svg = std::fs::read_to_string(out.path().join("pps-tx.svg")).unwrap();
    assert!(svg.contains("dpdk (testpmd)"));
    // The scenario written down keeps the peer; a diff of the run with itself lists it.
    let ran = Sweep::load(&out.path().join("scenario.toml")).unwrap();
    assert_eq!(ran.peers, Some(vec![Peer::Dpdk]));
    let d = diff(&r, &r);
    assert_eq!(d.iter().filter(|c| c.design == "peer:dpdk").count(), 4);
    assert!(d.iter().all(|c| !c.significant));
    // No testpmd is left behind.
    let ps = Command::new("pgrep")
        .args(["-f", "netstage-.*-v[hu]"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

#[test]
fn a_missing_peer_fails_at_once_naming_the_packages() {
    let out = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let st = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .env("PATH", "/nonexistent")
        .args(["compare", "--quick", "--peer", "dpdk", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(!st.status.success());
    let e = String::from_utf8_lossy(&st.stderr);
    assert!(
        e.contains("dpdk-testpmd") && e.contains("librte-net-vhost23"),
        "{e}"
    );
    assert!(t.elapsed().as_secs() < 5, "before any scenario ran");
    assert!(!out.path().join("results.json").exists());
}

#[test]
fn peers_in_a_scenario_file() {
    let s = Sweep::parse("peers = [\"dpdk\"]", "x.toml").unwrap();
    assert_eq!(s.peers, Some(vec![Peer::Dpdk]));
    let e = Sweep::parse("peers = [\"vmware\"]", "x.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("vmware"), "{e}");
}

/// A peer that fails costs the run nothing but that peer's numbers: the failure is kept in
/// the results and the report, with what the peer printed, and the designs' samples are all
/// there.
#[test]
fn a_failing_peer_is_reported_and_the_run_goes_on() {
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("dpdk-testpmd");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'EAL: no memory for the test' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tempfile::tempdir().unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .env("PATH", path)
        .args([
            "compare",
            "--designs",
            "grant-copy",
            "--sizes",
            "64",
            "--dirs",
            "tx",
            "--rounds",
            "1",
            "--seconds",
            "0.1",
            "--no-stream",
            "--peer",
            "dpdk",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&st.stderr);
    assert!(st.status.success(), "{stderr}");
    assert!(stderr.contains("dpdk-testpmd"), "{stderr}");
    let r: experiments::Results =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(r.samples.len(), 1);
    assert!(r.peers.is_empty());
    assert_eq!(r.peer_failures.len(), 1);
    assert!(
        r.peer_failures[0].contains("no memory for the test"),
        "{:?}",
        r.peer_failures
    );
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("## Peer runs that failed") && md.contains("round 1: tx 64 B"));
}
