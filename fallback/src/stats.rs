//! What the two ends' `--stats` objects share: which line an object is, and its timestamp.

use std::time::{SystemTime, UNIX_EPOCH};

/// Which of the `--stats` lines an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsKind {
    /// A periodic line (every `--stats` seconds).
    Stats,
    /// The last line: at exit, or at the end of a frontend's session.
    Final,
}

/// Seconds since the Unix epoch (0 if the clock is before it): a stats object's `time`.
pub fn unix_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
