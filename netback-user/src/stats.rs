//! The `--stats` object: the counters of each vif (and its queues) and their sum, with the
//! version of its layout. `docs/counters.md` documents every field; a test holds the two
//! together.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Backend, BackendPlatform, MetricsSnapshot, VifMetricsSnapshot};
use netstage_platform::xenstore::XenStore;

/// The version of the layout of [`BackendStats`] (and of the counters in it), emitted as
/// its `schema` field. Within a version fields are only added; renaming or removing one,
/// or changing its meaning or unit, makes a new version (`docs/counters.md`).
pub const STATS_SCHEMA: u32 = 1;

/// Which of the `--stats` lines an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsKind {
    /// A periodic line (every `--stats` seconds).
    Stats,
    /// The last line, at exit.
    Final,
}

/// A backend's counters at one moment, as `netback-user --stats` prints them (one JSON
/// object per line; `docs/counters.md` documents each field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendStats {
    /// [`STATS_SCHEMA`].
    pub schema: u32,
    /// Periodic or final.
    pub kind: StatsKind,
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// Seconds since the backend started.
    pub elapsed_s: f64,
    /// Each vif served, in the order first served ([`Backend::vif_metrics`]).
    pub vifs: Vec<VifMetricsSnapshot>,
    /// The sum over all vifs ([`Backend::metrics`]).
    pub total: MetricsSnapshot,
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl<P: BackendPlatform, X: XenStore> Backend<P, X> {
    /// The counters as one `--stats` object of `kind`, `started` being when the backend
    /// started.
    pub fn stats(&self, kind: StatsKind, started: Instant) -> BackendStats {
        BackendStats {
            schema: STATS_SCHEMA,
            kind,
            time: unix_time(),
            elapsed_s: started.elapsed().as_secs_f64(),
            vifs: self.vif_metrics(),
            total: self.metrics(),
        }
    }
}
