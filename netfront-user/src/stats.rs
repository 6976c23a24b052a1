//! The `--stats` object: a device's counters with what identifies it, and the version of
//! its layout. `docs/counters.md` documents every field; a test holds the two together.

use std::time::Instant;

use netstage_fallback::{unix_time, StatsKind};

use netstage_platform::DomId;
use serde::{Deserialize, Serialize};

use crate::{FrontendLink, FrontendPlatform, MetricsSnapshot};

/// The version of the layout of [`FrontendStats`] (and of the counters in it), emitted as
/// its `schema` field. Within a version fields are only added; renaming or removing one,
/// or changing its meaning or unit, makes a new version (`docs/counters.md`).
pub const STATS_SCHEMA: u32 = 1;

/// A frontend's counters at one moment, as `netfront-user --stats` prints them (one JSON
/// object per line; `docs/counters.md` documents each field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontendStats {
    /// [`STATS_SCHEMA`].
    pub schema: u32,
    /// Periodic or final.
    pub kind: StatsKind,
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// Seconds since the device connected.
    pub elapsed_s: f64,
    /// This guest's domain.
    pub domid: DomId,
    /// The vif's device id.
    pub devid: u32,
    /// The design in use (after any fallback to the baseline), as `Design` displays it.
    pub design: String,
    /// Queues negotiated.
    pub queues: u16,
    /// The device's counters (those of [`crate::Frontend::close_counted`] for a closed one).
    pub counters: MetricsSnapshot,
    /// Each queue's counters, in queue order (`counters` is their sum).
    pub queue_counters: Vec<MetricsSnapshot>,
}

impl<P: FrontendPlatform> FrontendLink<P> {
    /// The counters as one `--stats` object of `kind`, `connected` being when the device
    /// connected.
    pub fn stats(&self, kind: StatsKind, connected: Instant) -> FrontendStats {
        FrontendStats {
            schema: STATS_SCHEMA,
            kind,
            time: unix_time(),
            elapsed_s: connected.elapsed().as_secs_f64(),
            domid: self.domid(),
            devid: self.paths().devid,
            design: self.design().to_string(),
            queues: self.queues(),
            counters: self.metrics(),
            queue_counters: self.queue_metrics(),
        }
    }
}
