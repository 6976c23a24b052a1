//! What the project's binaries share (the `cli` feature): how a command ends.

/// How the project's binaries end: `Ok` is success; an error is printed on one line as
/// `program: error: ` and each of its causes once ([`causes`]), and exits with status 1.
/// The `{:?}` form, with a backtrace where the error captured one, is printed only when the
/// user asks for it with the `--backtrace` flag (each binary takes it) or
/// `NETSTAGE_BACKTRACE=1`: a `RUST_BACKTRACE` left in the environment does not turn every
/// usage error into a dump.
pub fn exit_code<E: Into<anyhow::Error>>(
    program: &str,
    run: impl FnOnce() -> std::result::Result<(), E>,
) -> std::process::ExitCode {
    if wants_backtrace() {
        // Errors capture their backtrace as they are made: asked for, they must.
        std::env::set_var("RUST_LIB_BACKTRACE", "1");
    }
    match run().map_err(Into::into) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: error: {}", causes(&e));
            if wants_backtrace() {
                eprintln!("{e:?}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether the user asked for an error's backtrace: `--backtrace` on the command line, or
/// `NETSTAGE_BACKTRACE` in the environment.
pub fn wants_backtrace() -> bool {
    std::env::var_os("NETSTAGE_BACKTRACE").is_some()
        || std::env::args_os().any(|a| a == "--backtrace")
}

/// Each message of `e`'s chain once, joined by `: `: a cause whose message the message
/// before it already holds (an error that prints its source in its own message, as an I/O
/// error's wrapper often does) is left out.
pub fn causes(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut outer = String::new();
    for cause in e.chain() {
        let message = cause.to_string();
        if !outer.contains(&message) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&message);
        }
        outer = message;
    }
    out
}

/// Seconds since the Unix epoch, the timestamp of the binaries' `--stats` JSON lines.
pub fn unix_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_its_wrapper_already_prints_is_left_out() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(crate::PlatformError::Io {
            what: "create world /x".into(),
            source: io,
        })
        .context("cannot start");
        assert_eq!(causes(&e), "cannot start: create world /x: No such file");
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(causes(&e), "outer: middle: inner");
    }
}
