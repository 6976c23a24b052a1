//! XenBus conventions on top of XenStore: device states (`io/xenbus.h`), the vif paths of
//! the toolstack, and helpers to read, write and wait for states.

use std::time::{Duration, Instant};

use crate::xenstore::{Watch, XenStore, XsResult, NO_TX};
use crate::DomId;

/// `enum xenbus_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum XenbusState {
    /// 0: no state (node absent or garbage).
    Unknown = 0,
    /// 1.
    Initialising = 1,
    /// 2: the backend waits for the frontend's details.
    InitWait = 2,
    /// 3 (netfront skips it).
    Initialised = 3,
    /// 4.
    Connected = 4,
    /// 5.
    Closing = 5,
    /// 6.
    Closed = 6,
    /// 7 (unused by netif).
    Reconfiguring = 7,
    /// 8 (unused by netif).
    Reconfigured = 8,
}

impl XenbusState {
    /// Parses a `state` node's value (a decimal number); anything else is `Unknown`.
    pub fn parse(v: &[u8]) -> XenbusState {
        use XenbusState::*;
        match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<u8>().ok())
        {
            Some(1) => Initialising,
            Some(2) => InitWait,
            Some(3) => Initialised,
            Some(4) => Connected,
            Some(5) => Closing,
            Some(6) => Closed,
            Some(7) => Reconfiguring,
            Some(8) => Reconfigured,
            _ => Unknown,
        }
    }

    /// The node value.
    pub fn as_str(self) -> String {
        (self as u8).to_string()
    }
}

/// Reads `<dir>/state` (absent: `Unknown`).
pub fn read_state(xs: &impl XenStore, dir: &str) -> XenbusState {
    xs.read(NO_TX, &format!("{dir}/state"))
        .map(|v| XenbusState::parse(&v))
        .unwrap_or(XenbusState::Unknown)
}

/// Writes `<dir>/state`.
pub fn write_state(xs: &impl XenStore, dir: &str, s: XenbusState) -> XsResult<()> {
    xs.write(NO_TX, &format!("{dir}/state"), s.as_str().as_bytes())
}

/// Waits on `watch` (registered on `<dir>/state` or above) until `pred` holds for the state
/// of `dir`, or `timeout` passes; returns the last state seen. `check` runs on every wake-up
/// (at least every 100 ms) and may abort the wait with an error message.
pub fn wait_state(
    xs: &impl XenStore,
    watch: &Watch,
    dir: &str,
    timeout: Duration,
    mut pred: impl FnMut(XenbusState) -> bool,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<XenbusState, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = read_state(xs, dir);
        if pred(s) {
            return Ok(s);
        }
        check()?;
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "timed out after {timeout:?} waiting on {dir}/state (last seen {s:?})"
            ));
        }
        watch
            .next((deadline - now).min(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
    }
}

/// The XenStore directories of one vif.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifPaths {
    /// The guest.
    pub frontend_dom: DomId,
    /// The backend domain.
    pub backend_dom: DomId,
    /// Device id (`handle`).
    pub devid: u32,
    /// `/local/domain/<guest>/device/vif/<devid>`.
    pub frontend: String,
    /// `/local/domain/<backend>/backend/vif/<guest>/<devid>`.
    pub backend: String,
}

impl VifPaths {
    /// The paths libxl uses.
    pub fn new(backend_dom: DomId, frontend_dom: DomId, devid: u32) -> VifPaths {
        VifPaths {
            frontend_dom,
            backend_dom,
            devid,
            frontend: format!("/local/domain/{frontend_dom}/device/vif/{devid}"),
            backend: format!("/local/domain/{backend_dom}/backend/vif/{frontend_dom}/{devid}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse() {
        assert_eq!(XenbusState::parse(b"4"), XenbusState::Connected);
        assert_eq!(XenbusState::parse(b" 6\n"), XenbusState::Closed);
        assert_eq!(XenbusState::parse(b"x"), XenbusState::Unknown);
        assert_eq!(XenbusState::parse(b"9"), XenbusState::Unknown);
        assert_eq!(XenbusState::InitWait.as_str(), "2");
        let p = VifPaths::new(0, 3, 1);
        assert_eq!(p.backend, "/local/domain/0/backend/vif/3/1");
    }
}
