//! Frontend and backend as two processes started the way a user starts them (the
//! `netback-user` and `netfront-user` binaries): packets both ways, verified byte for byte
//! and in order by the frontend; kill -9 of either side and recovery.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The workspace's binaries, built once (other packages' binaries are not built for this
/// package's tests otherwise).
fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let st = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "netstage-netback-user",
                "-p",
                "netstage-platform",
                "--bins",
            ])
            .status()
            .expect("run cargo build");
        assert!(
            st.success(),
            "building the backend and xenstored binaries failed"
        );
    });
    if name == "netfront-user" {
        return PathBuf::from(env!("CARGO_BIN_EXE_netfront-user"));
    }
    let p = Path::new(env!("CARGO_BIN_EXE_netfront-user"))
        .parent()
        .expect("target dir")
        .join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
}

struct World {
    dir: PathBuf,
}

impl World {
    fn new(tag: &str) -> World {
        let dir = PathBuf::from(format!(
            "/dev/shm/netstage-test-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        World { dir }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

thread_local! {
    /// Children of the test running on this thread, killed if it fails before stopping them.
    static CHILDREN: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct KillOnPanic;
impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if thread::panicking() {
            for pid in CHILDREN.with(|c| c.borrow().clone()) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn spawn(cmd: &mut Command) -> Child {
    let c = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    CHILDREN.with(|v| v.borrow_mut().push(c.id()));
    c
}

fn wait_path(p: &Path) {
    let t = Instant::now();
    while !p.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            p.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn backend(world: &World, extra: &[&str]) -> Child {
    let c = spawn(
        Command::new(bin("netback-user"))
            // The log lines the tests look for are at info, whatever the caller's RUST_LOG.
            .env("RUST_LOG", "info")
            .arg("--world")
            .arg(&world.dir)
            .args(["--vif", "1"])
            .args(extra),
    );
    c
}

fn frontend(world: &World, extra: &[&str]) -> Command {
    let mut c = Command::new(bin("netfront-user"));
    c.env("RUST_LOG", "info")
        .arg("--world")
        .arg(&world.dir)
        .args(["--domid", "1"])
        .args(extra);
    c
}

fn stop(mut c: Child) -> Output {
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let t = Instant::now();
    while c.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "process did not stop on SIGTERM"
        );
        thread::sleep(Duration::from_millis(10));
    }
    c.wait_with_output().unwrap()
}

fn kill9(c: &mut Child) {
    let _ = c.kill(); // SIGKILL
    let _ = c.wait();
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run_ok(mut cmd: Command) -> String {
    let start = Instant::now();
    let o = cmd.output().unwrap();
    let t = text(&o);
    assert!(
        o.status.success(),
        "failed after {:?}:\n{t}",
        start.elapsed()
    );
    t
}

fn both_ways(design: &str, queues: &str) {
    let _guard = KillOnPanic;
    let w = World::new(&format!("{}-{queues}", design.replace(':', "-")));
    let b = backend(&w, &["--design", design]);
    wait_path(&w.dir.join("xenstore/dom1.sock"));
    let out = run_ok(frontend(
        &w,
        &[
            "--design",
            design,
            "--count",
            "3000",
            "--sizes",
            "14,60,64,1500,4095,4096,4097,9000,32768,65535",
            "--gso",
            "--queues",
            queues,
            "--expect-echo",
        ],
    ));
    assert!(
        out.contains(&format!("with {queues} queue(s), design {design}")),
        "{out}"
    );
    assert!(
        out.contains("handed over 3000 packets")
            && out.contains("sent 3000 in")
            && out.contains("unsent 0; received 3000; tx errors 0"),
        "{out}"
    );
    let o = stop(b);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // The final counters, a JSON line (docs/operating.md).
    assert!(
        t.contains(r#""tx_packets":3000,"#) && t.contains(r#""rx_packets":3000,"#),
        "{t}"
    );
    assert!(
        t.contains(r#""tx_dropped":0,"#) && t.contains(r#""fatal_faults":0,"#),
        "{t}"
    );
}

#[test]
fn two_processes_grant_copy_one_queue() {
    let _guard = KillOnPanic;
    both_ways("grant-copy", "1");
}

#[test]
fn two_processes_grant_copy_two_queues() {
    let _guard = KillOnPanic;
    both_ways("grant-copy", "2");
}

#[test]
fn two_processes_grant_map_one_queue() {
    let _guard = KillOnPanic;
    both_ways("grant-map", "1");
}

#[test]
fn two_processes_grant_map_two_queues() {
    let _guard = KillOnPanic;
    both_ways("grant-map", "2");
}

#[test]
fn two_processes_slots_256_one_queue() {
    both_ways("slots:256", "1");
}

#[test]
fn two_processes_slots_4096_two_queues() {
    both_ways("slots:4096", "2");
}

#[test]
fn two_processes_data_ring_greedy_one_queue() {
    both_ways("ring:4:greedy", "1");
}

#[test]
fn two_processes_data_ring_adaptive_two_queues() {
    both_ways("ring:2:adaptive", "2");
}

#[test]
fn a_slow_backend_fills_the_data_ring_and_every_packet_still_arrives() {
    let _guard = KillOnPanic;
    let w = World::new("slow");
    let b = backend(&w, &["--slow-us", "100"]);
    wait_path(&w.dir.join("xenstore/dom1.sock"));
    let out = run_ok(frontend(
        &w,
        &[
            "--design",
            "ring:1:greedy",
            "--count",
            "2000",
            "--sizes",
            "1500,64,9000",
            "--expect-echo",
        ],
    ));
    assert!(out.contains("received 2000; tx errors 0"), "{out}");
    let full = json_lines(&out)
        .last()
        .and_then(|l| l["counters"]["tx_fallback_ring_full"].as_u64())
        .expect("counter printed");
    assert!(full > 0, "the ring never filled:\n{out}");
    assert!(stop(b).status.success());
}

#[test]
fn staging_negotiation_between_old_and_new_ends() {
    let _guard = KillOnPanic;
    let w = World::new("negotiation");
    // A backend that offers no staging: a new frontend falls back to the baseline.
    let b = backend(&w, &["--max-data-len", "0", "--max-ring-order", "-1"]);
    wait_path(&w.dir.join("xenstore/dom1.sock"));
    for d in ["slots:256", "ring:4:greedy"] {
        let out = run_ok(frontend(
            &w,
            &["--design", d, "--count", "200", "--expect-echo"],
        ));
        assert!(out.contains("design grant-copy"), "{out}");
    }
    assert!(stop(b).status.success());
    // Limits below what the frontend asks for are respected.
    let b = backend(&w, &["--max-data-len", "128", "--max-ring-order", "1"]);
    wait_path(&w.dir.join("xenstore/dom1.sock"));
    let out = run_ok(frontend(
        &w,
        &[
            "--design",
            "slots:4096",
            "--count",
            "200",
            "--sizes",
            "64,1500",
            "--expect-echo",
        ],
    ));
    assert!(out.contains("design slots:128"), "{out}");
    let out = run_ok(frontend(
        &w,
        &[
            "--design",
            "ring:6:greedy",
            "--count",
            "200",
            "--sizes",
            "64,1500",
            "--expect-echo",
        ],
    ));
    assert!(out.contains("design ring:1:greedy"), "{out}");
    // An old frontend (no staging keys) with the new backend.
    let out = run_ok(frontend(&w, &["--count", "200", "--expect-echo"]));
    assert!(out.contains("design grant-copy"), "{out}");
    assert!(stop(b).status.success());
}

#[test]
fn clear_errors_when_something_is_missing() {
    let _guard = KillOnPanic;
    let w = World::new("errors");
    std::fs::create_dir_all(&w.dir).unwrap();
    // No backend: no XenStore for the guest.
    let o = frontend(&w, &["--count", "1"]).output().unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no XenStore for domain 1"),
        "{}",
        text(&o)
    );
    // A backend that does not offer GSO, a frontend that asks for it.
    let b = backend(&w, &["--offer", "sg"]);
    wait_path(&w.dir.join("xenstore/dom1.sock"));
    let o = frontend(&w, &["--count", "1", "--want", "sg,gso-tcpv4"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        text(&o).contains("does not offer feature-gso-tcpv4"),
        "{}",
        text(&o)
    );
    // The same frontend without it works.
    run_ok(frontend(
        &w,
        &["--count", "10", "--want", "sg", "--expect-echo"],
    ));
    assert!(stop(b).status.success());
}

#[test]
fn kill_9_frontend_then_a_new_frontend_connects() {
    let _guard = KillOnPanic;
    let w = World::new("kill-front");
    let b = backend(&w, &[]);
    wait_path(&w.dir.join("xenstore/dom1.sock"));
    let mut f = spawn(&mut frontend(
        &w,
        &["--count", "100", "--expect-echo", "--linger", "60"],
    ));
    // Wait until it is connected and has exchanged its packets.
    let mut out = BufReader::new(f.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("received 100") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "frontend exited early"
        );
    }
    kill9(&mut f);
    // The backend notices the dead domain and takes a new frontend of the same id.
    let out = run_ok(frontend(
        &w,
        &["--count", "500", "--sizes", "64,1500", "--expect-echo"],
    ));
    assert!(out.contains("received 500"), "{out}");
    let o = stop(b);
    let t = text(&o);
    assert!(t.contains("frontend domain died"), "{t}");
    assert!(t.contains(r#""connects":2,"#), "{t}");
}

#[test]
fn kill_9_backend_the_frontend_reports_and_reconnects_to_a_new_one() {
    let _guard = KillOnPanic;
    let w = World::new("kill-back");
    std::fs::create_dir_all(w.dir.join("xenstore")).unwrap();
    let sock = w.dir.join("xenstore/socket");
    let xsd = spawn(
        Command::new(bin("netstage-xenstored"))
            .arg("--socket")
            .arg(&sock),
    );
    wait_path(&sock);
    let xs_arg = sock.to_str().unwrap().to_string();
    let mut b = backend(&w, &["--xenstore", &xs_arg]);
    wait_path(&w.dir.join("xenstore/dom1.sock"));
    let f = spawn(&mut frontend(
        &w,
        &[
            "--count",
            "100",
            "--expect-echo",
            "--linger",
            "120",
            "--reconnect",
        ],
    ));
    // Give it time to exchange its first 100 packets.
    let t = Instant::now();
    let mut f = f;
    let mut out = BufReader::new(f.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("received 100") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "frontend exited early"
        );
        assert!(t.elapsed() < Duration::from_secs(60));
    }
    // Collect the frontend's reports.
    let err_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let e2 = std::sync::Arc::clone(&err_lines);
    let stderr = BufReader::new(f.stderr.take().unwrap());
    let collector = thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            e2.lock().unwrap().push(l);
        }
    });
    kill9(&mut b);
    // The frontend reports the dead backend...
    let t2 = Instant::now();
    while !err_lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("disconnected"))
    {
        assert!(
            t2.elapsed() < Duration::from_secs(30),
            "frontend did not notice"
        );
        thread::sleep(Duration::from_millis(10));
    }
    // ... and reconnects to a new backend, exchanging another 100 packets.
    let b2 = backend(&w, &["--xenstore", &xs_arg]);
    line.clear();
    while !line.contains("received 100") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "frontend exited instead of reconnecting"
        );
        assert!(t.elapsed() < Duration::from_secs(90), "no reconnect");
    }
    let _ = Command::new("kill")
        .args(["-TERM", &f.id().to_string()])
        .status();
    let st = f.wait().unwrap();
    collector.join().unwrap();
    let err = err_lines.lock().unwrap().join("\n");
    assert!(st.success(), "{err}");
    assert!(err.contains("backend domain 0 died"), "{err}");
    assert!(stop(b2).status.success());
    stop(xsd);
}

#[test]
fn both_ends_on_real_xen_say_what_they_need() {
    let _guard = KillOnPanic;
    // The emulation and real Xen are exclusive.
    let o = Command::new(bin("netback-user"))
        .args(["--xen", "--world", "/tmp/x", "--vif", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("--world"), "{}", text(&o));
    // No system xenstored here.
    let o = Command::new(bin("netback-user"))
        .args(["--xen", "--xenstore", "/nonexistent/socket", "--vif", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("no system xenstored"), "{}", text(&o));
    // A xenstored, but no Xen devices (this machine has no hypervisor).
    if !std::path::Path::new("/dev/xen/gntalloc").exists() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("xs.sock");
        let mut xsd = spawn(
            Command::new(bin("netstage-xenstored"))
                .arg("--socket")
                .arg(&sock),
        );
        wait_path(&sock);
        let o = Command::new(bin("netback-user"))
            .args(["--xen", "--vif", "1", "--xenstore"])
            .arg(&sock)
            .output()
            .unwrap();
        let f = Command::new(bin("netfront-user"))
            .args(["--xen", "--domid", "1", "--xenstore"])
            .arg(&sock)
            .output()
            .unwrap();
        let _ = xsd.kill();
        let _ = xsd.wait();
        for o in [&o, &f] {
            assert!(!o.status.success());
            assert!(
                text(o).contains("/dev/xen/gntalloc") && text(o).contains("xen-gntalloc"),
                "{}",
                text(o)
            );
        }
    }
    // The frontend: no XenStore; the emulation needs a domain id.
    let o = Command::new(bin("netfront-user"))
        .args(["--xen", "--xenstore", "/nonexistent/socket"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("no XenStore to talk to"), "{}", text(&o));
    let o = Command::new(bin("netfront-user"))
        .args(["--world", "/tmp/x"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("--domid"), "{}", text(&o));
}

/// A value clap cannot parse is refused before anything starts, naming the flag and the
/// value, for every typed option of both binaries; an error's causes are told once.
#[test]
fn bad_option_values_name_their_flag() {
    let o = Command::new(self::bin("netback-user"))
        .args(["--vif", "1", "--world", "/proc/no-such-world"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    for (bin_name, flag, value) in [
        ("netfront-user", "--design", "ring:99:bogus"),
        ("netfront-user", "--want", "wings"),
        ("netfront-user", "--cost", "cheap"),
        ("netback-user", "--design", "slots:1"),
        ("netback-user", "--offer", "wings"),
        ("netback-user", "--cost", "cheap"),
        // A negative number is a bad value, not an unknown argument.
        ("netfront-user", "--count", "-5"),
        ("netback-user", "--max-queues", "-1"),
        // Out of range: refused, not clamped.
        ("netback-user", "--max-queues", "0"),
        ("netback-user", "--max-ring-order", "12"),
        ("netback-user", "--max-ring-order", "-5"),
        ("netback-user", "--max-data-len", "5"),
        ("netfront-user", "--queues", "0"),
        ("netfront-user", "--sizes", "5"),
        ("netback-user", "--vif", "0"),
    ] {
        let o = Command::new(self::bin(bin_name))
            .args(["--world", "/nonexistent", flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bin_name} {flag} {value}: {err}");
        assert!(
            err.contains(&format!("invalid value '{value}' for '{flag}")),
            "{bin_name} {flag} {value}: {err}"
        );
    }
}

/// The JSON lines of `out` (the lines that start with `{`), parsed; any that does not
/// parse fails the test.
fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `--stats` on both binaries: JSON lines on stdout every second while running, and the
/// final counters as one more (docs/operating.md), each with a timestamp.
#[test]
fn stats_are_json_lines() {
    let _guard = KillOnPanic;
    let w = World::new("stats");
    let b = backend(&w, &["--stats", "1"]);
    wait_path(&w.dir.join("xenstore/dom1.sock"));
    let mut front = frontend(
        &w,
        &[
            "--count",
            "500",
            "--expect-echo",
            "--stats",
            "1",
            "--linger",
            "2",
        ],
    );
    let o = front.output().expect("run netfront-user");
    assert!(o.status.success(), "{}", text(&o));
    let lines = json_lines(&String::from_utf8_lossy(&o.stdout));
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"stats") && kinds.contains(&"final"),
        "{kinds:?}"
    );
    for l in &lines {
        assert_eq!(l["schema"], netstage_netfront_user::STATS_SCHEMA, "{l}");
        assert!(l["time"].as_f64().is_some_and(|t| t > 1.6e9), "{l}");
        assert_eq!(l["domid"], 1, "{l}");
        assert_eq!(l["queues"], 1, "{l}");
    }
    let last = lines.last().expect("a line");
    assert_eq!(last["counters"]["tx_packets"], 500, "{last}");
    assert_eq!(last["counters"]["rx_packets"], 500, "{last}");

    let o = stop(b);
    assert!(o.status.success(), "{}", text(&o));
    let lines = json_lines(&String::from_utf8_lossy(&o.stdout));
    assert!(
        lines.len() >= 2 && lines.iter().all(|l| l["time"].as_f64().is_some()),
        "{lines:?}"
    );
    let last = lines.last().expect("a line");
    assert_eq!(
        last["schema"],
        netstage_netback_user::STATS_SCHEMA,
        "{last}"
    );
    assert_eq!(last["kind"], "final", "{last}");
    assert_eq!(last["total"]["tx_packets"], 500, "{last}");
    assert_eq!(last["total"]["connects"], 1, "{last}");
    assert_eq!(last["vifs"][0]["domid"], 1, "{last}");
    assert_eq!(last["vifs"][0]["devid"], 0, "{last}");
    assert_eq!(last["vifs"][0]["counters"]["rx_packets"], 500, "{last}");
    assert_eq!(last["vifs"][0]["queues"][0]["index"], 0, "{last}");
    assert_eq!(
        last["vifs"][0]["queues"][0]["counters"]["tx_packets"], 500,
        "{last}"
    );
    // Operator events go to stderr through the logger (RUST_LOG, default info).
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("vif 1:0 connected") && err.contains("vif 1:0 disconnected"),
        "{err}"
    );
}
