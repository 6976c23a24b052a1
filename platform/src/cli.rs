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

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Repeats {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_an_error_already_prints_is_told_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Repeats {
            path: "a.toml",
            source: io,
        })
        .context("the sweep stopped");
        assert_eq!(
            format!("{e:#}"),
            "the sweep stopped: cannot read a.toml: no such file: no such file"
        );
        let once = "the sweep stopped: cannot read a.toml: no such file";
        assert_eq!(causes(&e), once);
    }

    #[test]
    fn distinct_causes_are_all_told() {
        let e = anyhow::anyhow!("timed out").context("round 1: tx 64 B grant-copy");
        assert_eq!(causes(&e), "round 1: tx 64 B grant-copy: timed out");
    }
}
