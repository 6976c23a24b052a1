//! A guest's vif on a TAP without the harness, started the way a user starts it:
//! `netback-user --sink tap:A` and `netfront-user --tap B` over an emulated world, each TAP
//! moved into a network namespace of its own, then ping and iperf3 across, and both ends'
//! counters checked to add up.
//!
//! Needs root, iproute2 (`ip`), `ping` and iperf3 (`scripts/test` installs them and runs as
//! root); without them it fails, naming what is missing, rather than skip.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The host's address (backend's TAP) and the guest's (frontend's TAP).
const HOST_IP: &str = "10.213.0.2";
const GUEST_IP: &str = "10.213.0.1";

/// The workspace's two binaries, built once (another package's binaries are not built for
/// this package's tests otherwise), found next to this test's target directory.
fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "netstage-netback-user"])
            .args(["-p", "netstage-netfront-user", "--bins"])
            .status()
            .expect("run cargo build");
        assert!(
            st.success(),
            "building netback-user and netfront-user failed"
        );
    });
    let exe = std::env::current_exe().expect("this test's path");
    // <target>/<profile>/deps/<this test>: the binaries are in <target>/<profile>.
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// Fails, naming what is missing, unless this runs as root with the tools the test uses.
fn require_tools() {
    let uid = Command::new("id").arg("-u").output().expect("run id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test needs root (namespaces and TAP devices)"
    );
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = [
        ("ip", "iproute2"),
        ("iperf3", "iperf3"),
        ("ping", "iputils-ping"),
    ]
    .into_iter()
    .filter(|(b, _)| !std::env::split_paths(&path).any(|d| d.join(b).is_file()))
    .map(|(_, pkg)| pkg)
    .collect();
    assert!(
        missing.is_empty(),
        "this test needs Debian's {}: apt-get install {}",
        missing.join(" and "),
        missing.join(" ")
    );
    assert!(
        Path::new("/dev/net/tun").exists(),
        "this test needs /dev/net/tun (modprobe tun)"
    );
}

/// Runs a command that must succeed.
fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A child whose stdout lines are collected as they come.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Running {
    fn start(c: &mut Command) -> Running {
        let mut child = c.stdout(Stdio::piped()).spawn().expect("start a process");
        let out = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Running {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Waits (at most 20 s) until the process has printed a line holding `text`.
    fn wait_for_line(&mut self, text: &str, what: &str) {
        let t = Instant::now();
        while !self.lines.lock().unwrap().iter().any(|l| l.contains(text)) {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("{what} exited ({st}) before printing {text:?}");
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{what} never printed {text:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits (at most 10 s) for the exit; its stdout lines.
    fn stop(&mut self, what: &str) -> Vec<String> {
        run(&["kill", "-TERM", &self.child.id().to_string()]);
        let t = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(t.elapsed() < Duration::from_secs(10), "{what} did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        let st = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let lines = self.lines.lock().unwrap().clone();
        assert!(st.success(), "{what} exited {st}: {lines:?}");
        lines
    }
}

/// The namespaces, the world and the two ends of one run; all removed on drop, also when
/// the test fails half-way.
struct Rig {
    host_ns: String,
    guest_ns: String,
    world: PathBuf,
    ends: Vec<Running>,
}

impl Rig {
    fn new() -> Rig {
        let id = std::process::id();
        let rig = Rig {
            host_ns: format!("nstap-h-{id}"),
            guest_ns: format!("nstap-g-{id}"),
            world: PathBuf::from(format!("/dev/shm/netstage-tap-test-{id}")),
            ends: Vec::new(),
        };
        let _ = std::fs::remove_dir_all(&rig.world);
        for ns in [&rig.host_ns, &rig.guest_ns] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        rig
    }

    /// Waits until TAP `dev` exists here, then moves it into `ns`, addresses it, keeps its
    /// segments within netif's 64 KiB frame, and brings it up.
    fn place(&self, dev: &str, ns: &str, addr: &str) {
        let t = Instant::now();
        while !Path::new("/sys/class/net").join(dev).exists() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{dev} never appeared"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        run(&["ip", "link", "set", dev, "netns", ns]);
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            dev,
        ]);
        run(&["ip", "-n", ns, "link", "set", dev, "gso_max_size", "65000"]);
        run(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }

    fn exec(&self, ns: &str, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(argv);
        c
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for e in &mut self.ends {
            let _ = e.child.kill();
            let _ = e.child.wait();
        }
        for ns in [&self.host_ns, &self.guest_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.world);
    }
}

/// Waits until iperf3's server listens in `ns`.
fn wait_listening(ns: &str) {
    let t = Instant::now();
    loop {
        let ss = Command::new("ip")
            .args(["netns", "exec", ns, "ss", "-Hltn", "sport", "=", ":5201"])
            .output()
            .unwrap();
        if !ss.stdout.is_empty() {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "iperf3 -s never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bytes one iperf3 run of 1 s moved (the receiver's count); `reverse`: the host sends.
fn iperf3(rig: &mut Rig, reverse: bool) -> f64 {
    let server =
        Running::start(&mut rig.exec(&rig.host_ns, &["iperf3", "-s", "-1", "-B", HOST_IP]));
    rig.ends.push(server);
    wait_listening(&rig.host_ns);
    let mut argv = vec!["iperf3", "-c", HOST_IP, "-t", "1", "-J"];
    if reverse {
        argv.push("-R");
    }
    let out = rig.exec(&rig.guest_ns, &argv).output().unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(json["error"].is_null(), "iperf3: {}", json["error"]);
    json["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0)
}

/// The last `"kind":"final"` JSON line an end printed, after checking that its periodic
/// `--stats` lines carry the TAP's counters too.
fn final_line(lines: &[String], what: &str) -> Value {
    let periodic = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "stats")
        .collect::<Vec<_>>();
    assert!(
        !periodic.is_empty() && periodic.iter().all(|v| v["tap"]["frames_read"].is_u64()),
        "{what}: --stats lines without the TAP's counters: {lines:?}"
    );
    lines
        .iter()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["kind"] == "final")
        .unwrap_or_else(|| panic!("{what} printed no final counters: {lines:?}"))
}

/// Checks a TAP adapter's counters: every frame counted passed or dropped, and nothing
/// dropped for a reason that would mean a conversion fault.
fn check_tap(tap: &Value, what: &str) {
    let n = |k: &str| {
        tap[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{what}: no {k} in {tap}"))
    };
    let read_drops: u64 = [
        "read_drop_short",
        "read_drop_too_large",
        "read_drop_gso_unsupported",
        "read_drop_no_peer",
        "read_drop_peer_full",
        "read_drop_peer_refused",
    ]
    .iter()
    .map(|k| n(k))
    .sum();
    let write_drops: u64 = [
        "write_drop_too_large",
        "write_drop_not_tcp_udp",
        "write_drop_failed",
    ]
    .iter()
    .map(|k| n(k))
    .sum();
    assert_eq!(
        n("frames_read"),
        n("frames_passed") + read_drops,
        "{what}: {tap}"
    );
    assert_eq!(
        n("packets_to_write"),
        n("frames_written") + write_drops,
        "{what}: {tap}"
    );
    for k in [
        "read_drop_too_large",
        "read_drop_gso_unsupported",
        "write_drop_not_tcp_udp",
    ] {
        assert_eq!(n(k), 0, "{what}: {tap}");
    }
}

#[test]
fn a_guest_vif_on_a_tap_carries_ping_and_iperf3_and_every_packet_is_counted() {
    require_tools();
    let (back_bin, front_bin) = (bin("netback-user"), bin("netfront-user"));
    let mut rig = Rig::new();
    let id = std::process::id() % 1_000_000;
    let (tap_host, tap_guest) = (format!("nsth{id}"), format!("nstg{id}"));
    let world = rig.world.display().to_string();
    let back = Running::start(Command::new(&back_bin).args([
        "--world",
        &world,
        "--vif",
        "1",
        "--sink",
        &format!("tap:{tap_host}"),
        "--stats",
        "1",
    ]));
    rig.ends.push(back);
    let t = Instant::now();
    while !rig.world.join("xenstore/dom1.sock").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the backend never came up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let front = Running::start(
        Command::new(&front_bin)
            .args(["--world", &world, "--domid", "1", "--tap", &tap_guest])
            .args(["--stats", "1"]),
    );
    rig.ends.push(front);
    rig.ends[1].wait_for_line("connected vif", "netfront-user");
    rig.place(&tap_host, &rig.host_ns.clone(), HOST_IP);
    rig.place(&tap_guest, &rig.guest_ns.clone(), GUEST_IP);

    let ping = rig
        .exec(
            &rig.guest_ns,
            &["ping", "-c", "5", "-i", "0.2", "-W", "2", HOST_IP],
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.status.success() && text.contains(" 0% packet loss"),
        "ping across the vif: {text}"
    );
    let sent = iperf3(&mut rig, false);
    let received = iperf3(&mut rig, true);
    assert!(
        sent > 1e6 && received > 1e6,
        "iperf3 moved {sent} B and {received} B"
    );

    // The frontend first: its close is what the backend waits for.
    let front_lines = rig.ends[1].stop("netfront-user");
    let back_lines = rig.ends[0].stop("netback-user");
    check_counters(
        &final_line(&front_lines, "netfront-user"),
        &final_line(&back_lines, "netback-user"),
    );
}

/// Both ends' counters add up: each TAP adapter's own, the frontend's against its TAP, the
/// backend's against its TAP, and the two ends' against each other.
fn check_counters(front: &Value, back: &Value) {
    let (ftap, btap) = (&front["tap"], &back["tap"]);
    check_tap(ftap, "frontend's TAP");
    check_tap(btap, "backend's TAP");
    let g = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"));
    let (fc, bc) = (&front["counters"], &back["total"]);
    // Guest: what its TAP passed on was sent or counted unsent; what it received went to
    // its TAP.
    assert_eq!(
        g(ftap, "frames_passed"),
        g(fc, "tx_packets") + g(fc, "tx_unsent"),
        "{front}"
    );
    assert_eq!(g(ftap, "packets_to_write"), g(fc, "rx_packets"), "{front}");
    // Backend: what the guest sent went to its TAP.
    assert_eq!(g(btap, "packets_to_write"), g(bc, "tx_packets"), "{back}");
    // Across: the guest's TX is the backend's, and the backend's RX is the guest's.
    assert_eq!(
        g(fc, "tx_packets"),
        g(bc, "tx_packets")
            + g(bc, "tx_dropped")
            + g(bc, "tx_grant_errors")
            + g(fc, "tx_unanswered"),
        "{front}\n{back}"
    );
    // Offloads on: TCP segments larger than a frame crossed as netif GSO packets, both
    // ways: the mean netif packet (ACKs and pings included) is larger than the largest
    // frame without them, 1514 bytes.
    for dir in ["tx", "rx"] {
        let mean = g(bc, &format!("{dir}_bytes")) / g(bc, &format!("{dir}_packets")).max(1);
        assert!(
            mean > 1514,
            "{dir}: {mean} bytes per netif packet: no GSO\n{back}"
        );
    }
    assert_eq!(
        g(bc, "rx_packets"),
        g(fc, "rx_packets") + g(fc, "rx_dropped") + g(fc, "rx_unread"),
        "{front}\n{back}"
    );
    // Backend: what its TAP passed on reached the guest or was counted dropped.
    let rx_lost: u64 = [
        "rx_dropped",
        "rx_grant_errors",
        "rx_backlog_drops",
        "rx_drain_drops",
        "rx_stall_drops",
        "rx_disconnect_drops",
    ]
    .iter()
    .map(|k| g(bc, k))
    .sum();
    assert_eq!(
        g(btap, "frames_passed"),
        g(bc, "rx_packets") + rx_lost,
        "{back}"
    );
}
