//! What the user reads when a run's process fails: the end of its stderr, each cause once,
//! no backtrace unless asked for.

use std::process::{Command, Stdio};

/// A sweep whose backend cannot create its world (a file stands where its directory goes)
/// stops with the backend's own error, read from its stderr, and every cause once.
#[test]
fn a_failing_backend_s_stderr_reaches_the_user_with_each_cause_once() {
    let out = tempfile::tempdir().unwrap();
    // A shell that waits for the file, then becomes the harness under its own process id:
    // the world's name is known, and taken, before the harness starts.
    let child = Command::new("sh")
        .args([
            "-c",
            "while [ ! -e /dev/shm/netstage-experiments-$$ ]; do sleep 0.01; done; exec \"$@\"",
            "sh",
            env!("CARGO_BIN_EXE_experiments"),
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
            "--cost",
            "none",
            "--no-stream",
            "--out",
        ])
        .arg(out.path())
        .env("RUST_BACKTRACE", "1")
        .env_remove("NETSTAGE_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The run's world, in the harness's name for it, is a file: the backend cannot create it.
    let world = format!("/dev/shm/netstage-experiments-{}", child.id());
    std::fs::write(&world, b"not a world").unwrap();
    let o = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&world);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the backend exited early (exit status: 1); the end of its stderr:"),
        "{err}"
    );
    // The backend's own error line, indented under the harness's.
    let own = format!("    experiments: error: create world {world}");
    assert!(err.contains(&own), "{err}");
    // Each cause once: the backend's I/O error is not repeated by the errors around it.
    assert_eq!(err.matches("File exists").count(), 1, "{err}");
    assert_eq!(err.matches("create world").count(), 1, "{err}");
    assert!(
        err.contains("\nexperiments: error: the sweep stopped; the runs before are in"),
        "{err}"
    );
    // RUST_BACKTRACE=1 does not ask for one (NETSTAGE_BACKTRACE=1 does).
    assert!(!err.contains("backtrace"), "{err}");
}

/// `--backtrace` (on any command) asks for the error's chain and backtrace after its one
/// line; without it there is neither, even with `RUST_BACKTRACE` set.
#[test]
fn the_backtrace_flag_asks_for_the_backtrace() {
    let run = |extra: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_experiments"))
            .args(["report", "/nonexistent/run"])
            .args(extra)
            .env("RUST_BACKTRACE", "1")
            .env_remove("NETSTAGE_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let plain = run(&[]);
    assert_eq!(plain.lines().count(), 1, "{plain}");
    let traced = run(&["--backtrace"]);
    assert!(traced.starts_with(plain.trim_end()), "{traced}");
    assert!(traced.contains("Stack backtrace:"), "{traced}");
}
