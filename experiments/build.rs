//! Records the git commit the harness is built from (`NETSTAGE_GIT_COMMIT`), for the
//! results it writes; nothing when not built from a git checkout.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    if let Some(c) = commit {
        let c = if dirty { format!("{c}+changes") } else { c };
        println!("cargo:rustc-env=NETSTAGE_GIT_COMMIT={c}");
    }
    // Rebuilt when HEAD moves (checkout: HEAD; a commit on the branch: the reflog, which
    // every commit appends to) or the index changes; a working-tree change shows at the
    // next rebuild.
    for p in ["../.git/HEAD", "../.git/logs/HEAD", "../.git/index"] {
        println!("cargo:rerun-if-changed={p}");
    }
}
