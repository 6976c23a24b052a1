//! What the project's binaries share (the `cli` feature): how a command ends.

use std::fmt;

/// How the project's binaries end: `Ok` is success; an error is printed on one line as
/// `program: error: ` and its causes (the `{:#}` form, which for `anyhow` errors lists each
/// cause once) and exits with status 1. The `{:?}` form, with a backtrace where the error
/// captured one, is printed only when asked for with `NETSTAGE_BACKTRACE=1`: a
/// `RUST_BACKTRACE` left in the environment does not turn every usage error into a dump.
pub fn exit_code<E: fmt::Display + fmt::Debug>(
    program: &str,
    result: std::result::Result<(), E>,
) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: error: {e:#}");
            if std::env::var_os("NETSTAGE_BACKTRACE").is_some() {
                eprintln!("{e:?}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Seconds since the Unix epoch, the timestamp of the binaries' `--stats` JSON lines.
pub fn unix_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
