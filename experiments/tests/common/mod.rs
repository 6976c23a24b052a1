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
