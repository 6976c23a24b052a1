//! Rate-limited logging of what a peer causes: a hostile peer must not be able to flood the
//! log. [`LogLimit`] admits a burst of lines per period (Linux's `net_ratelimit`: 10 per
//! 5 s) and counts what it holds back; the next line admitted is preceded by how many
//! were suppressed. [`warn_limited!`](crate::warn_limited) checks the level first, so a
//! disabled level costs neither a clock read nor a formatted string.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines admitted per period unless told otherwise ([`LogLimit::default`]).
pub const LOG_BURST: u32 = 10;

/// The period of the default limit.
pub const LOG_PERIOD: Duration = Duration::from_secs(5);

/// Admits at most `burst` lines per `period` and counts the rest.
#[derive(Debug)]
pub struct LogLimit {
    burst: u32,
    period: Duration,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    start: Option<Instant>,
    admitted: u32,
    suppressed: u64,
}

/// What [`LogLimit::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log the line; `suppressed` lines were held back since the last one admitted.
    Log {
        /// Lines held back before this one.
        suppressed: u64,
    },
    /// Hold the line back (counted).
    Suppress,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit::new(LOG_BURST, LOG_PERIOD)
    }
}

impl LogLimit {
    /// At most `burst` lines per `period`.
    pub const fn new(burst: u32, period: Duration) -> Self {
        LogLimit {
            burst,
            period,
            window: Mutex::new(Window {
                start: None,
                admitted: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be logged now (and how many were held back before it).
    pub fn admit(&self) -> Admit {
        let now = Instant::now();
        let Ok(mut w) = self.window.lock() else {
            return Admit::Suppress;
        };
        if w.start.is_none_or(|s| now.duration_since(s) >= self.period) {
            w.start = Some(now);
            w.admitted = 0;
        }
        if w.admitted >= self.burst {
            w.suppressed += 1;
            return Admit::Suppress;
        }
        w.admitted += 1;
        Admit::Log {
            suppressed: std::mem::take(&mut w.suppressed),
        }
    }
}

/// `log::warn!` through a [`LogLimit`]: `warn_limited!(limit, "fmt", args)` (the target is
/// the caller's module) or `warn_limited!(limit, target: "t", "fmt", args)`.
/// Nothing is formatted, and the clock is not read, unless warnings of `target` are
/// enabled. Held-back lines are counted and reported by the next admitted one, as a line
/// of its own before it.
#[macro_export]
macro_rules! warn_limited {
    ($limit:expr, target: $target:expr, $($arg:tt)+) => {
        if $crate::__log::log_enabled!(target: $target, $crate::__log::Level::Warn) {
            if let $crate::log_limit::Admit::Log { suppressed } = ($limit).admit() {
                if suppressed > 0 {
                    $crate::__log::warn!(target: $target, "{suppressed} warnings suppressed");
                }
                $crate::__log::warn!(target: $target, $($arg)+);
            }
        }
    };
    ($limit:expr, $($arg:tt)+) => {
        $crate::warn_limited!($limit, target: module_path!(), $($arg)+)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_suppressed_then_counted() {
        let l = LogLimit::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            assert_eq!(l.admit(), Admit::Log { suppressed: 0 });
        }
        for _ in 0..5 {
            assert_eq!(l.admit(), Admit::Suppress);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(l.admit(), Admit::Log { suppressed: 5 });
        assert_eq!(l.admit(), Admit::Log { suppressed: 0 });
    }
}
