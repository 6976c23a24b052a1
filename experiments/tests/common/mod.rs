//! What the harness's integration tests share: running `experiments compare`.
// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use experiments::Results;

/// Runs `experiments compare ARGS --out OUT`, checks it succeeded, and returns the saved
/// results and what it printed on stderr.
pub(crate) fn compare_into(args: &[&str], out: &Path) -> (Results, String) {
    let st = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .arg("compare")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&st.stderr).into_owned();
    assert!(st.status.success(), "{stderr}");
    let r: Results =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    (r, stderr)
}

/// What `experiments report DIR` prints (it must succeed).
pub(crate) fn report(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .arg("report")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `experiments ARGS --out OUT`, waits (up to 2 minutes) until `lines` runs are in
/// OUT/samples.jsonl, tells it to stop with SIGTERM (as Ctrl-C's SIGINT) and returns its
/// stderr, after checking that it exited with an error saying it was interrupted.
pub(crate) fn stopped_after(args: &[&str], out: &Path, lines: usize) -> String {
    let child = Command::new(env!("CARGO_BIN_EXE_experiments"))
        .args(args)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = out.join("samples.jsonl");
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |s| s.lines().count()) < lines {
        assert!(
            t.elapsed().as_secs() < 120,
            "{lines} runs did not finish in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    experiments::sys::signal(child.id(), libc::SIGTERM).unwrap();
    let st = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&st.stderr).into_owned();
    assert!(!st.status.success(), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    stderr
}
