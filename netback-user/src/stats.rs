//! The `--stats` object: the counters of each vif (and its queues) and their sum, with the
//! version of its layout. `docs/counters.md` documents every field; a test holds the two
//! together.

use std::time::Instant;

use netstage_fallback::{unix_time, StatsKind};

use serde::{Deserialize, Serialize};

use crate::{Backend, BackendPlatform, MetricsSnapshot, VifMetricsSnapshot};
use netstage_platform::xenstore::XenStore;

/// The version of the layout of [`BackendStats`] (and of the counters in it), emitted as
/// its `schema` field. Within a version fields are only added; renaming or removing one,
/// or changing its meaning or unit, makes a new version (`docs/counters.md`).
pub const STATS_SCHEMA: u32 = 1;

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
