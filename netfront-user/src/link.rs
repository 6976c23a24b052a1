//! [`FrontendLink`]: the XenStore side of a connected frontend, the monitor of the backend,
//! and the state its queues share (stop flag, why the device broke, counters).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netstage_fallback::{Design, LogLimit};
use netstage_platform::xenbus::{read_state, wait_state, write_state, VifPaths, XenbusState};
use netstage_platform::xenstore::{unique_token, Watch, XenStore, XsClient, NO_TX};
use netstage_platform::{DomId, EventPort};

use crate::metrics::{Metrics, MetricsSnapshot, QueueCounters, Tally};
use crate::{FrontendError, FrontendHandler, FrontendPlatform};

/// How long the monitor goes at most without reading the backend's state when its watch
/// has not fired.
const STATE_GUARD: Duration = Duration::from_secs(1);

/// How long closing waits for each of the backend's steps (Closing, then Closed).
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What a frontend's queues and its link share.
#[derive(Default)]
pub(crate) struct Shared {
    stop: AtomicBool,
    /// Why the device stopped working, first reason first.
    broken: Mutex<Option<String>>,
    /// The first protocol violation a queue found.
    fault: Mutex<Option<String>>,
    /// The queues' event ports, woken when the device stops.
    ports: Mutex<Vec<Arc<dyn EventPort>>>,
    /// The device's counters: its queues', in queue order, added up.
    pub(crate) metrics: Arc<Metrics>,
    /// The vif, for the log: this domain, the device id and the backend's domain.
    vif: (DomId, u32, DomId),
    /// Warnings of the backend's faults, at most a burst per period.
    faults_log: LogLimit,
}

impl Shared {
    /// The state of a new connection of the vif at `paths`.
    pub(crate) fn for_vif(paths: &VifPaths) -> Shared {
        Shared {
            vif: (paths.frontend_dom, paths.devid, paths.backend_dom),
            ..Shared::default()
        }
    }

    /// Warns (rate-limited) of the faults a queue counted in one call: TX requests the
    /// backend answered with an error, RX packets dropped (error status or a malformed
    /// chain), grants the backend still held at their response. Per call, never per packet;
    /// nothing is formatted unless warnings are enabled.
    pub(crate) fn warn_faults(&self, queue: u16, t: &Tally) {
        if t.tx_errors == 0 && t.rx_dropped == 0 && t.revokes_refused == 0 {
            return;
        }
        let (me, devid, be) = self.vif;
        netstage_fallback::warn_limited!(
            &self.faults_log,
            "vif {me}:{devid}: faults on queue {q}: {} TX responses with an error status, {} RX \
             packets dropped (error status or malformed chain), {} grants backend domain {be} \
             still held at their response",
            t.tx_errors,
            t.rx_dropped,
            t.revokes_refused,
            q = queue
        );
    }

    /// Whether the device was stopped.
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Why the device stopped ("closed" if it was closed).
    pub(crate) fn reason(&self) -> String {
        self.broken().unwrap_or_else(|| "closed".into())
    }

    fn broken(&self) -> Option<String> {
        self.broken.lock().ok().and_then(|b| b.clone())
    }

    pub(crate) fn fault_reason(&self) -> Option<String> {
        self.fault.lock().ok().and_then(|b| b.clone())
    }

    /// New counters for the next queue (in queue order), counted in the device's too.
    pub(crate) fn new_queue_metrics(&self) -> QueueCounters {
        self.metrics.new_queue()
    }

    /// Each queue's counters, in queue order.
    pub(crate) fn queue_snapshots(&self) -> Vec<MetricsSnapshot> {
        self.metrics.queue_snapshots()
    }

    /// Notes a queue's port, to wake it when the device stops.
    pub(crate) fn add_port(&self, port: Arc<dyn EventPort>) {
        if let Ok(mut p) = self.ports.lock() {
            p.push(port);
        }
    }

    /// Stops the device (noting `why`, if given, unless a reason is known) and wakes every
    /// queue.
    pub(crate) fn stop(&self, why: Option<&str>) {
        if let (Some(why), Ok(mut b)) = (why, self.broken.lock()) {
            b.get_or_insert_with(|| why.to_string());
        }
        self.stop.store(true, Ordering::Release);
        if let Ok(ports) = self.ports.lock() {
            for p in ports.iter() {
                let _ = p.wake();
            }
        }
    }

    /// A queue found the backend breaking the protocol, or not answering: the whole device
    /// stops, and the monitor resets it (Closing, with the reason).
    pub(crate) fn fault(&self, why: &str) {
        if let Ok(mut f) = self.fault.lock() {
            if f.is_none() {
                // Once per device: the device stops, so the backend cannot repeat it.
                log::warn!("the backend failed the device; it stops: {why}");
            }
            f.get_or_insert_with(|| why.to_string());
        }
        self.stop(Some(why));
    }
}

/// A queue found the backend breaking the protocol or not answering: the device is reset as
/// Linux netfront's `xenbus_dev_fatal` does, the reason in the frontend's `error` node and
/// its state Closing, so that the backend lets go of the vif; the application closes the
/// device (and may connect again).
fn reset_after_fault(xs: &XsClient, fdir: &str, why: &str) {
    log::warn!("vif {fdir}: reset (Closing): {why}");
    let _ = xs.write(NO_TX, &format!("{fdir}/error"), why.as_bytes());
    let _ = write_state(xs, fdir, XenbusState::Closing);
}

/// If domain `dom` (the backend's) is dead, forgets it as Xen does a dead domain: the maps
/// and copies it held of our grants are gone, so their pins are released and our pages can
/// be revoked and used again; what we cached of it goes too. Returns whether it was dead.
pub(crate) fn forget_if_dead<P: FrontendPlatform>(platform: &P, dom: DomId) -> bool {
    if platform.domain_alive(dom) {
        return false;
    }
    platform.forget_domain(dom);
    true
}

/// The control side of a frontend connected with [`connect_queues`](crate::connect_queues):
/// its XenStore connection and paths, a monitor thread that stops the device when the
/// backend dies or leaves the connected state, and the counters of all its queues.
///
/// Closing it (or dropping it) stops every queue: a [`FrontQueue`](crate::FrontQueue) the
/// application still holds then fails with [`FrontendError::Broken`], and its shared pages
/// are revoked when the application drops it.
pub struct FrontendLink<P: FrontendPlatform> {
    pub(crate) platform: P,
    pub(crate) xs: XsClient,
    pub(crate) paths: VifPaths,
    pub(crate) shared: Arc<Shared>,
    pub(crate) monitor: Option<JoinHandle<()>>,
    pub(crate) design: Design,
    pub(crate) queues: u16,
    pub(crate) closed: bool,
}

impl<P: FrontendPlatform> FrontendLink<P> {
    /// The design in use (the one asked for, or the baseline if the backend lacks it).
    pub fn design(&self) -> Design {
        self.design
    }

    /// Number of queues negotiated.
    pub fn queues(&self) -> u16 {
        self.queues
    }

    /// This domain's id.
    pub fn domid(&self) -> DomId {
        self.paths.frontend_dom
    }

    /// The vif's XenStore paths.
    pub fn paths(&self) -> &VifPaths {
        &self.paths
    }

    /// Counters of all queues (as of their last burst).
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// The counters themselves, to read after the link is closed (see
    /// [`FrontendLink::close_counted`]).
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// Each queue's counters, in queue order ([`FrontendLink::metrics`] is their sum).
    pub fn queue_metrics(&self) -> Vec<MetricsSnapshot> {
        self.shared.queue_snapshots()
    }

    /// Why the device stopped working, if it did.
    pub fn broken(&self) -> Option<String> {
        self.shared.broken()
    }

    /// Starts the thread that watches the backend (`on_stop` hears why it stopped).
    pub(crate) fn spawn_monitor(
        &mut self,
        watch: Watch,
        on_stop: Option<Arc<dyn FrontendHandler>>,
    ) -> Result<(), FrontendError> {
        let xs = self.xs.clone();
        let bdir = self.paths.backend.clone();
        let fdir = self.paths.frontend.clone();
        let bdom = self.paths.backend_dom;
        let platform = self.platform.clone();
        let shared = Arc::clone(&self.shared);
        let mut state_read = Instant::now();
        let t = std::thread::Builder::new()
            .name("netfront-monitor".into())
            .spawn(move || loop {
                if shared.stopped() {
                    if let Some(why) = shared.fault_reason() {
                        reset_after_fault(&xs, &fdir, &why);
                        if let Some(h) = &on_stop {
                            h.disconnected(&why);
                        }
                    }
                    return;
                }
                // The backend's state is read when the watch fires (or fails), and once a
                // second besides; its domain's life is looked at every time (no XenStore
                // round trip: each woke the daemon's threads, on the backend's core in the
                // harness).
                let fired = !matches!(watch.next(Duration::from_millis(100)), Ok(None));
                let why = if forget_if_dead(&platform, bdom) {
                    format!("backend domain {bdom} died")
                } else if !fired && state_read.elapsed() < STATE_GUARD {
                    continue;
                } else {
                    state_read = Instant::now();
                    match read_state(&xs, &bdir) {
                        XenbusState::Connected => continue,
                        s => format!("backend left the connected state ({s:?})"),
                    }
                };
                log::info!("vif disconnected: {why}");
                shared.stop(Some(&why));
                if let Some(h) = &on_stop {
                    h.disconnected(&why);
                }
                return;
            })
            .map_err(|e| FrontendError::Handshake(format!("cannot start the monitor: {e}")))?;
        self.monitor = Some(t);
        Ok(())
    }

    /// Stops every queue and the monitor.
    pub(crate) fn halt(&mut self) {
        self.shared.stop(None);
        if let Some(m) = self.monitor.take() {
            let _ = m.join();
        }
        // The monitor may have stopped before it saw the backend die.
        forget_if_dead(&self.platform, self.paths.backend_dom);
    }

    /// Closes the device: stops the queues, then Closing, waits for the backend to close,
    /// Closed, and waits (at most 10 s per step) for the backend to say Closed
    /// too, or to die: after that it maps none of our pages, so they can all be revoked.
    /// Fails with [`FrontendError::Broken`] if a queue found the backend breaking the
    /// protocol.
    pub fn close(mut self) -> Result<(), FrontendError> {
        self.closed = true;
        self.halt();
        let (xs, fdir, bdir) = (&self.xs, &self.paths.frontend, &self.paths.backend);
        let watch = xs.watch(&format!("{bdir}/state"), &unique_token("netfront-close"))?;
        write_state(xs, fdir, XenbusState::Closing)?;
        self.wait_backend(&watch, |s| {
            matches!(
                s,
                XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
            )
        });
        write_state(xs, fdir, XenbusState::Closed)?;
        self.wait_backend(&watch, |s| {
            matches!(s, XenbusState::Closed | XenbusState::Unknown)
        });
        // A backend that died while we waited: its pins go as Xen would release them.
        forget_if_dead(&self.platform, self.paths.backend_dom);
        match self.shared.fault_reason() {
            Some(f) => Err(FrontendError::Broken(f)),
            None => Ok(()),
        }
    }

    /// [`FrontendLink::close`], then, once the backend has closed, counts what it left on
    /// `queues`' rings (TX packets unanswered, `tx_unanswered`; RX packets unread,
    /// `rx_unread`) and returns the counters: every packet put on a TX ring is then
    /// answered or unanswered, and every packet the backend put on an RX ring received,
    /// dropped or unread. Pass every queue the
    /// application still holds (they must outlive the close: their pages stay granted until
    /// the backend has let go of them).
    pub fn close_counted(
        self,
        queues: &mut [crate::FrontQueue<P>],
    ) -> Result<MetricsSnapshot, FrontendError> {
        let shared = Arc::clone(&self.shared);
        let closed = self.close();
        for q in queues {
            q.count_left_at_close();
        }
        closed.map(|()| shared.metrics.snapshot())
    }

    /// Waits at most `CLOSE_WAIT` for the backend's state to satisfy `done`, or for its
    /// domain to die.
    fn wait_backend(&self, watch: &Watch, done: impl Fn(XenbusState) -> bool) {
        let bdom = self.paths.backend_dom;
        let _ = wait_state(
            &self.xs,
            watch,
            &self.paths.backend,
            CLOSE_WAIT,
            done,
            || match self.platform.domain_alive(bdom) {
                true => Ok(()),
                false => Err("backend gone".into()),
            },
        );
    }
}

impl<P: FrontendPlatform> Drop for FrontendLink<P> {
    fn drop(&mut self) {
        if !self.closed {
            let _ = write_state(&self.xs, &self.paths.frontend, XenbusState::Closing);
            self.halt();
            let _ = write_state(&self.xs, &self.paths.frontend, XenbusState::Closed);
        }
    }
}
