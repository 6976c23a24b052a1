//! What the harness's integration tests share: running `experiments compare`.

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
