//! The example frontend in C (`examples/c-netfront`), built from Xen's own headers and
//! `docs/sim-abi.md` alone, against the `netback-user` binary in a fresh world: it joins as
//! domain 1, connects, sends frames that the backend echoes, checks every byte, and closes;
//! then a second run reconnects to the same backend after Closed. The backend's counters
//! must have seen every frame both ways, and two connections.
//!
//! Needs gcc, make and libxen-dev (`scripts/test` installs them as root): without them the
//! test fails and names the package, it never skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const FIRST: u64 = 500;
const SECOND: u64 = 300;

/// The Debian package that provides `what`, if `found` says it is missing.
fn need(found: bool, what: &str, package: &str) {
    assert!(
        found,
        "the C frontend test needs {what}: install the Debian package {package} \
         (apt-get install {package}; scripts/test installs it when run as root)"
    );
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Builds `examples/c-netfront` with its Makefile into `out`, warnings as errors.
fn build_c_frontend(out: &Path) -> PathBuf {
    need(on_path("make"), "make", "make");
    need(on_path("gcc"), "a C compiler (gcc)", "gcc");
    need(
        Path::new("/usr/include/xen/io/netif.h").exists(),
        "Xen's public headers (/usr/include/xen/io/netif.h)",
        "libxen-dev",
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/c-netfront");
    let o = Command::new("make")
        .arg("-C")
        .arg(&src)
        .arg(format!("O={}", out.display()))
        .args(["CC=gcc", "CFLAGS=-O2 -g -Werror"])
        .output()
        .expect("run make");
    assert!(
        o.status.success(),
        "building examples/c-netfront failed:\n{}",
        text(&o)
    );
    out.join("c-netfront")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A child process killed (by its id) if the test ends before it was stopped.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Running {
    /// SIGTERM, then its output once it has exited.
    fn stop(mut self) -> Output {
        let mut c = self.0.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let t = Instant::now();
        while c.try_wait().expect("wait").is_none() {
            if t.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                let o = c.wait_with_output().expect("output");
                panic!("netback-user did not stop on SIGTERM:\n{}", text(&o));
            }
            thread::sleep(Duration::from_millis(10));
        }
        c.wait_with_output().expect("output")
    }

    fn exited(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }
}

/// Runs the C frontend to its end (at most a minute).
fn run_c_frontend(exe: &Path, world: &Path, count: u64) -> String {
    let child = Command::new(exe)
        .arg("--world")
        .arg(world)
        .args(["--domid", "1", "--count", &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start c-netfront");
    let mut run = Running(Some(child));
    let t = Instant::now();
    while !run.exited() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "c-netfront did not finish in 60 s"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let o = run
        .0
        .take()
        .expect("child")
        .wait_with_output()
        .expect("output");
    let out = text(&o);
    assert!(o.status.success(), "c-netfront failed:\n{out}");
    out
}

/// The value of counter `name` in the backend's last report (`name: 5` or `"name":5`).
fn counter(report: &str, name: &str) -> Option<u64> {
    let mut found = None;
    for (at, _) in report.match_indices(name) {
        let before = report[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = report[at + name.len()..].trim_start_matches(['"', ':', ' ']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(v) = digits.parse() {
            found = Some(v);
        }
    }
    found
}

#[test]
fn the_c_example_frontend_exchanges_frames_with_netback_user_and_reconnects() {
    let build = tempfile::tempdir().expect("temp dir");
    let exe = build_c_frontend(build.path());
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let world = tempfile::Builder::new()
        .prefix("netstage-cfront-")
        .tempdir_in(base)
        .expect("world dir");
    let backend = Command::new(env!("CARGO_BIN_EXE_netback-user"))
        .arg("--world")
        .arg(world.path())
        .args(["--vif", "1", "--sink", "echo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start netback-user");
    let mut backend = Running(Some(backend));
    let sock = world.path().join("xenstore/dom1.sock");
    let t = Instant::now();
    while !sock.exists() {
        if backend.exited() {
            let o = backend.0.take().expect("child").wait_with_output();
            panic!("netback-user exited early:\n{}", text(&o.expect("output")));
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            sock.display()
        );
        thread::sleep(Duration::from_millis(10));
    }

    let out = run_c_frontend(&exe, world.path(), FIRST);
    assert!(
        out.contains(&format!(
            "sent {FIRST} frames, received all {FIRST} back, every byte as sent"
        )) && out.contains("vif 0 closed"),
        "{out}"
    );
    // A new guest instance on the same vif, after the first closed.
    let out = run_c_frontend(&exe, world.path(), SECOND);
    assert!(
        out.contains(&format!(
            "sent {SECOND} frames, received all {SECOND} back, every byte as sent"
        )),
        "{out}"
    );
    assert!(
        !world.path().join("dom1").exists(),
        "c-netfront left its domain directory behind"
    );

    let o = backend.stop();
    let report = text(&o);
    assert!(o.status.success(), "netback-user failed:\n{report}");
    let total = FIRST + SECOND;
    // netfront.c's frame_len: frame `seq` of a run is 60 + seq * 97 % 1455 bytes.
    let bytes: u64 = [FIRST, SECOND]
        .iter()
        .flat_map(|n| 0..*n)
        .map(|seq| 60 + seq * 97 % 1455)
        .sum();
    for (name, want) in [
        ("tx_packets", total),
        ("rx_packets", total),
        ("tx_slots", total),
        ("tx_bytes", bytes),
        ("rx_bytes", bytes),
        ("connects", 2),
        ("tx_dropped", 0),
        ("tx_grant_errors", 0),
        ("rx_grant_errors", 0),
        ("rx_dropped", 0),
        ("fatal_faults", 0),
    ] {
        assert_eq!(
            counter(&report, name),
            Some(want),
            "backend counter {name}:\n{report}"
        );
    }
}
