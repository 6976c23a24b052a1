//! The backend's XenBus state machine (after Linux netback's `xenbus.c`): advertise
//! features, wait for the frontend, read and check its keys, map its rings, bind its event
//! channels, start the queues; tear down when it closes, misbehaves or dies, and wait for
//! the next one.
//!
//! Logged (target `netstage_netback_user::xenbus`): each handshake step at debug, each
//! connection with its queues, design and features at info, disconnects at info, and the
//! frontend's faults (a refused handshake, a stalled one, a broken protocol) at warn,
//! rate-limited per vif.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netstage_platform::xenbus::{read_state, write_state, VifPaths, XenbusState};
use netstage_platform::xenstore::{unique_token, XenStore, NO_TX};
use netstage_platform::{DomId, EventPort, GrantImport, VIF_TOOLSTACK_FRONTEND_KEYS};
use netstage_ring::netif::{RxRing, TxRing};
use netstage_ring::sring::BackRing;

use crate::queue::{BackQueue, Fatal, QueueParams, QueueParts, BURST};
use crate::staging::Negotiation;
use crate::{
    wake_fn, Backend, BackendError, BackendPlatform, Features, HandshakeFailure, Metrics,
    QueueDriver, QueueInfo, TxPath,
};

/// A connected vif: its queue threads.
struct Connection {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Option<Fatal>>>,
    wakers: Vec<Arc<dyn Fn() + Send + Sync>>,
}

impl Connection {
    /// Stops the queues and waits for them; returns the first fatal fault, if any.
    fn shut(self) -> Option<Fatal> {
        self.stop.store(true, Ordering::Release);
        for w in &self.wakers {
            w();
        }
        let mut fault = None;
        for t in self.threads {
            if let Ok(Some(f)) = t.join() {
                fault.get_or_insert(f);
            }
        }
        fault
    }

    fn broken(&self) -> bool {
        self.threads.iter().any(|t| t.is_finished())
    }
}

pub(crate) fn read_str<X: XenStore>(xs: &X, path: &str) -> Option<String> {
    xs.read(NO_TX, path)
        .ok()
        .map(|v| String::from_utf8_lossy(&v).trim().to_string())
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

fn read_flag<X: XenStore>(xs: &X, path: &str) -> bool {
    read_str(xs, path).is_some_and(|v| v == "1")
}

pub(crate) fn read_u32<X: XenStore>(xs: &X, path: &str) -> Result<u32, String> {
    let v = read_str(xs, path).ok_or_else(|| format!("frontend did not write {path}"))?;
    v.parse::<u32>()
        .map_err(|_| format!("frontend wrote {path} = {v:?}, not a number"))
}

/// Reports a fatal handshake error the way `xenbus_dev_fatal` does: an `error` node in the
/// backend directory, then Closing.
fn fail<X: XenStore>(xs: &X, p: &VifPaths, msg: &str) {
    let _ = xs.write(NO_TX, &format!("{}/error", p.backend), msg.as_bytes());
    let _ = write_state(xs, &p.backend, XenbusState::Closing);
}

/// Writes what we offer into the backend directory and goes to InitWait, as netback does
/// at probe.
fn advertise<P: BackendPlatform, X: XenStore>(
    b: &Backend<P, X>,
    p: &VifPaths,
) -> Result<(), BackendError> {
    let xs = &b.xs;
    for (k, on) in b.cfg.offer.keys() {
        xs.write(
            NO_TX,
            &format!("{}/{k}", p.backend),
            if on { b"1" } else { b"0" },
        )?;
    }
    let offer_slots = b.cfg.slots_max_data_len.filter(|n| *n >= 64);
    let offer_ring = b.cfg.data_ring_max_order;
    for (k, v) in [
        ("feature-staging-slots", flag(offer_slots.is_some())),
        ("staging-max-data-len", offer_slots.unwrap_or(0).to_string()),
        ("feature-data-ring", flag(offer_ring.is_some())),
        ("data-ring-max-order", offer_ring.unwrap_or(0).to_string()),
        ("feature-rx-copy", "1".to_string()),
        ("feature-rx-flip", "0".to_string()),
        ("feature-split-event-channels", "0".to_string()),
        ("multi-queue-max-queues", b.cfg.max_queues.to_string()),
    ] {
        xs.write(NO_TX, &format!("{}/{k}", p.backend), v.as_bytes())?;
    }
    let _ = xs.rm(NO_TX, &format!("{}/error", p.backend));
    write_state(xs, &p.backend, XenbusState::InitWait)?;
    log::debug!(
        "vif {}:{}: offered {} (data-len up to {:?}, data-ring order up to {:?}, {} queues); \
         InitWait",
        p.frontend_dom,
        p.devid,
        b.cfg.offer,
        offer_slots,
        offer_ring,
        b.cfg.max_queues
    );
    Ok(())
}

/// The backend directory's `state` as the toolstack or we left it; `None` while the
/// directory (or its `state`) does not exist.
fn backend_state<X: XenStore>(xs: &X, p: &VifPaths) -> Option<XenbusState> {
    xs.read(NO_TX, &format!("{}/state", p.backend))
        .ok()
        .map(|v| XenbusState::parse(&v))
}

/// Waits until the toolstack has made the vif's backend directory (its `state` exists), or
/// `stop`. The backend never makes that directory itself: libxl creates it with its own
/// keys and permissions and replaces one it finds, so a backend that wrote first would be
/// answering in a directory about to vanish. Returns whether the directory is there.
fn wait_for_directory<X: XenStore>(
    xs: &X,
    p: &VifPaths,
    stop: &AtomicBool,
) -> Result<bool, BackendError> {
    let watch = xs.watch(&p.backend, &unique_token("netback-dir"))?;
    while !stop.load(Ordering::Acquire) {
        if backend_state(xs, p).is_some() {
            return Ok(true);
        }
        let _ = watch.next(Duration::from_millis(100));
    }
    Ok(false)
}

/// How long a connected vif goes at most without reading XenStore when no watch fired.
/// (Reading every 100 ms woke the daemon's threads ten times a second per vif.)
const QUIET_READS: Duration = Duration::from_secs(1);

/// Serves one vif: for every backend directory the toolstack makes for it (one per guest
/// instance), advertise, then follow the frontend until the toolstack removes or replaces
/// the directory or `stop`.
pub(crate) fn serve<P: BackendPlatform, X: XenStore>(
    b: &Backend<P, X>,
    fe: DomId,
    devid: u32,
    handler: Arc<dyn QueueDriver<P>>,
    metrics: &Arc<Metrics>,
    stop: &AtomicBool,
) -> Result<(), BackendError> {
    let p = VifPaths::new(b.platform_domid(), fe, devid);
    log::debug!("vif {fe}:{devid}: waiting for {}", p.backend);
    while wait_for_directory(&b.xs, &p, stop)? {
        log::debug!("vif {fe}:{devid}: the toolstack made {}", p.backend);
        advertise(b, &p)?;
        serve_directory(b, &p, &handler, metrics, stop)?;
    }
    log::debug!("vif {fe}:{devid}: no longer served");
    Ok(())
}

/// Follows the frontend of one backend directory (already at InitWait). Returns when
/// `stop` is set, or when the toolstack removed the directory or wrote `Initialising` into
/// it (a new device to answer); a `Closing` it writes is answered with `Closed`.
fn serve_directory<P: BackendPlatform, X: XenStore>(
    b: &Backend<P, X>,
    p: &VifPaths,
    handler: &Arc<dyn QueueDriver<P>>,
    metrics: &Arc<Metrics>,
    stop: &AtomicBool,
) -> Result<(), BackendError> {
    let watch =
        b.xs.watch(&format!("{}/state", p.frontend), &unique_token("netback"))?;
    // The toolstack's changes to the backend directory (and our own writes there).
    let toolstack = b.xs.watch(&p.backend, &unique_token("netback-dir"))?;
    let mut read_at = Instant::now();
    let mut f = Follower {
        b,
        p,
        handler,
        metrics: Arc::clone(metrics),
        conn: None,
        state: XenbusState::InitWait,
        peer: None,
        started: None,
        gave_up: false,
    };
    while !stop.load(Ordering::Acquire) {
        // An event is a write of the frontend's state (or the first event of the watch).
        let event = watch.next(Duration::from_millis(100));
        let wrote = matches!(event, Ok(Some(_)));
        let moved = std::iter::from_fn(|| toolstack.try_next()).count() > 0;
        if f.conn.is_some() && !wrote && !moved && event.is_ok() && read_at.elapsed() < QUIET_READS
        {
            // Connected and nothing written: what needs no XenStore round trip.
            f.local_checks()?;
            continue;
        }
        read_at = Instant::now();
        match f.toolstack_step()? {
            Step::Leave => return Ok(()),
            Step::Done => continue,
            Step::Go => {}
        }
        let Some(instance) = f.local_checks()? else {
            continue;
        };
        let fs = read_state(&b.xs, &p.frontend);
        if f.gave_up {
            if !wrote {
                continue;
            }
            // The frontend wrote its state again: a fresh attempt.
            f.gave_up = false;
        }
        if f.handshake_clock(fs, instance)? {
            continue;
        }
        f.frontend_step(fs, instance)?;
    }
    f.end();
    Ok(())
}

/// What the toolstack's step left to do.
enum Step {
    /// The directory is gone or made again: leave it.
    Leave,
    /// Handled: look again at the next event.
    Done,
    /// Nothing from the toolstack: follow the frontend.
    Go,
}

/// The backend's side of one backend directory while it follows the frontend.
struct Follower<'a, P: BackendPlatform, X: XenStore> {
    b: &'a Backend<P, X>,
    p: &'a VifPaths,
    handler: &'a Arc<dyn QueueDriver<P>>,
    /// The vif's counters (and its rate limit of warnings).
    metrics: Arc<Metrics>,
    conn: Option<Connection>,
    /// Our state, as last written.
    state: XenbusState,
    /// The frontend domain instance we dealt with (it started a handshake, or connected):
    /// when it dies, what we hold of it goes.
    peer: Option<u64>,
    /// When the frontend took its first handshake step, while it is not connected.
    started: Option<Instant>,
    /// We gave up on a stalled handshake; only a fresh write of the frontend's state (or
    /// a new instance of its domain) starts over.
    gave_up: bool,
}

impl<P: BackendPlatform, X: XenStore> Drop for Follower<'_, P, X> {
    /// Leaving on an error (XenStore failed) must not leave the queues running with the
    /// frontend's pages mapped.
    fn drop(&mut self) {
        self.drop_conn("the backend stopped serving the vif");
    }
}

impl<P: BackendPlatform, X: XenStore> Follower<'_, P, X> {
    fn set(&mut self, s: XenbusState) -> Result<(), BackendError> {
        write_state(&self.b.xs, &self.p.backend, s)?;
        log::debug!("vif {}: backend {s:?}", self.vif());
        self.state = s;
        Ok(())
    }

    /// The vif, as the log names it: `<frontend domain>/<devid>`.
    fn vif(&self) -> String {
        format!("{}:{}", self.p.frontend_dom, self.p.devid)
    }

    /// Stops the connection, if any; returns its first fatal fault.
    fn take_conn(&mut self) -> Option<Option<Fatal>> {
        Some(self.conn.take()?.shut())
    }

    /// Stops the connection, if any, telling the handler why.
    fn drop_conn(&mut self, why: &str) {
        if self.take_conn().is_some() {
            log::info!("vif {} disconnected: {why}", self.vif());
            self.handler.disconnected(why);
        }
    }

    /// What the toolstack did to the backend directory comes first.
    fn toolstack_step(&mut self) -> Result<Step, BackendError> {
        match backend_state(&self.b.xs, self.p) {
            None => {
                self.drop_conn("the toolstack removed the vif");
                Ok(Step::Leave)
            }
            Some(XenbusState::Initialising) => {
                // A new device in place of the old: answer it afresh.
                self.drop_conn("the toolstack made the vif again");
                Ok(Step::Leave)
            }
            Some(XenbusState::Closing) if self.state != XenbusState::Closing => {
                // The toolstack takes the vif down (libxl writes Closing and waits for
                // Closed).
                self.drop_conn("the toolstack closed the vif");
                self.started = None;
                self.set(XenbusState::Closed)?;
                Ok(Step::Done)
            }
            _ => Ok(Step::Go),
        }
    }

    /// The frontend domain we dealt with died (`instance`: the one running now, if any).
    /// As Xen does for a dead domain: its connection goes, and with it our maps of its
    /// grants; then everything we cached of it ([`netstage_platform::DomainInfo::forget_domain`]), so that its
    /// memory is not kept alive by us. The toolstack resets its directory for the next guest.
    fn frontend_died(&mut self, instance: Option<u64>) -> Result<(), BackendError> {
        let (xs, p) = (&self.b.xs, self.p);
        log::info!(
            "vif {}: frontend domain {} died{}",
            self.vif(),
            p.frontend_dom,
            if instance.is_some() {
                " and runs again"
            } else {
                ""
            }
        );
        self.drop_conn("frontend domain died");
        self.b.platform.forget_domain(p.frontend_dom);
        if instance.is_none() {
            // No new instance yet: reset the directory for the next guest. (A new instance
            // is already using it.)
            let _ = crate::toolstack::reset_frontend(xs, p);
        }
        let _ = xs.rm(NO_TX, &format!("{}/error", p.backend));
        self.peer = None;
        self.started = None;
        self.gave_up = false;
        self.set(XenbusState::InitWait)
    }

    /// What needs no XenStore round trip: whether the frontend's domain died (handled;
    /// `None`), then whether a queue stopped; the frontend domain's running instance.
    fn local_checks(&mut self) -> Result<Option<Option<u64>>, BackendError> {
        let instance = self.b.platform.domain_instance(self.p.frontend_dom);
        if self.peer.is_some() && instance != self.peer {
            self.frontend_died(instance)?;
            return Ok(None);
        }
        self.queue_check();
        Ok(Some(instance))
    }

    /// A queue that stopped on its own found the frontend breaking the protocol.
    fn queue_check(&mut self) {
        if !self.conn.as_ref().is_some_and(|c| c.broken()) {
            return;
        }
        let Some(fault) = self.take_conn() else {
            return;
        };
        let why = fault.unwrap_or_else(|| "queue stopped".into());
        self.metrics.add_fatal_faults(1);
        netstage_fallback::warn_limited!(
            self.metrics.faults_log(),
            "vif {}: frontend domain {} broke the protocol, disconnected (Closing): {why}",
            self.vif(),
            self.p.frontend_dom
        );
        self.handler.disconnected(&why);
        fail(&self.b.xs, self.p, &format!("frontend misbehaved: {why}"));
        self.state = XenbusState::Closing;
    }

    /// Whether the frontend has taken a step of its handshake: a state past Initialising
    /// (and not closing), or a key of its own next to the toolstack's.
    fn handshake_started(&self, fs: XenbusState) -> bool {
        match fs {
            XenbusState::Initialising => {
                self.b
                    .xs
                    .directory(NO_TX, &self.p.frontend)
                    .is_ok_and(|keys| {
                        keys.iter()
                            .any(|k| !VIF_TOOLSTACK_FRONTEND_KEYS.contains(&k.as_str()))
                    })
            }
            XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown => false,
            _ => true,
        }
    }

    /// Runs the handshake clock: from the frontend's first step until it connects, at most
    /// [`crate::BackendConfig::handshake_timeout`]. A frontend that never starts is never
    /// timed out. Returns whether it gave up (error node, Closing, then Closed, as a
    /// backend that cannot go on and holds nothing).
    fn handshake_clock(
        &mut self,
        fs: XenbusState,
        instance: Option<u64>,
    ) -> Result<bool, BackendError> {
        let waiting = self.conn.is_none()
            && self.state == XenbusState::InitWait
            && self.handshake_started(fs);
        if !waiting {
            self.started = None;
            return Ok(false);
        }
        self.peer = instance;
        let since = *self.started.get_or_insert_with(Instant::now);
        let limit = self.b.cfg.handshake_timeout;
        if since.elapsed() < limit {
            return Ok(false);
        }
        self.started = None;
        self.gave_up = true;
        self.metrics.add_handshake_timeouts(1);
        let why = HandshakeFailure::Timeout { limit, state: fs };
        netstage_fallback::warn_limited!(
            self.metrics.faults_log(),
            "vif {}: frontend domain {} gave up on: {why}",
            self.vif(),
            self.p.frontend_dom
        );
        self.handler.handshake_failed(&why);
        fail(&self.b.xs, self.p, &why.to_string());
        self.set(XenbusState::Closed)?;
        Ok(true)
    }

    /// Answers the frontend's state.
    fn frontend_step(
        &mut self,
        fs: XenbusState,
        instance: Option<u64>,
    ) -> Result<(), BackendError> {
        let (b, p) = (self.b, self.p);
        match fs {
            XenbusState::Connected
                if self.conn.is_none() && self.state == XenbusState::InitWait =>
            {
                self.peer = instance;
                log::debug!("vif {}: frontend Connected; connecting", self.vif());
                match connect(b, p, self.handler, &self.metrics) {
                    Ok(c) => {
                        self.conn = Some(c);
                        self.metrics.add_connects(1);
                        self.set(XenbusState::Connected)?;
                    }
                    Err(msg) => {
                        netstage_fallback::warn_limited!(
                            self.metrics.faults_log(),
                            "vif {}: refused frontend domain {} (Closing): {msg}",
                            self.vif(),
                            p.frontend_dom
                        );
                        self.handler
                            .handshake_failed(&HandshakeFailure::Refused(msg.clone()));
                        fail(&b.xs, p, &msg);
                        self.state = XenbusState::Closing;
                    }
                }
            }
            XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown => {
                if fs != self.state {
                    log::debug!("vif {}: frontend {fs:?}", self.vif());
                }
                self.drop_conn("frontend closed");
                if fs == XenbusState::Closing && self.state != XenbusState::Closing {
                    self.set(XenbusState::Closing)?;
                }
                if fs == XenbusState::Closed && self.state != XenbusState::Closed {
                    self.set(XenbusState::Closed)?;
                }
            }
            XenbusState::Initialising if self.conn.is_some() => {
                // The frontend started over without closing: drop the old connection.
                self.drop_conn("frontend restarted");
                self.set(XenbusState::InitWait)?;
            }
            XenbusState::Initialising | XenbusState::InitWait
                if matches!(self.state, XenbusState::Closed | XenbusState::Closing) =>
            {
                // A new frontend: start over.
                log::debug!("vif {}: frontend {fs:?}: a new attempt", self.vif());
                let _ = b.xs.rm(NO_TX, &format!("{}/error", p.backend));
                self.set(XenbusState::InitWait)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// `stop` was set: the connection goes, and the directory says Closed.
    fn end(&mut self) {
        self.drop_conn("backend stopped");
        // Only into a directory that is still there: never make one the toolstack removed.
        if backend_state(&self.b.xs, self.p).is_some() {
            let _ = write_state(&self.b.xs, &self.p.backend, XenbusState::Closed);
        }
    }
}

impl<P: BackendPlatform, X: XenStore> Backend<P, X> {
    fn platform_domid(&self) -> DomId {
        GrantImport::domid(&self.platform)
    }
}

/// Reads and checks the frontend's keys, maps its rings, binds its channels, starts the
/// queues. An error message describes what the frontend got wrong.
fn connect<P: BackendPlatform, X: XenStore>(
    b: &Backend<P, X>,
    p: &VifPaths,
    handler: &Arc<dyn QueueDriver<P>>,
    metrics: &Arc<Metrics>,
) -> Result<Connection, String> {
    // The frontend domain may be a new instance since we last looked (an earlier one
    // closed and exited): map its current memory, not what we cached of the old one.
    b.platform.forget_domain(p.frontend_dom);
    let asked = negotiated_features(b, p)?;
    let queues = queue_count(b, p)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut queue_objs = Vec::new();
    let mut infos = Vec::new();
    for q in 0..queues {
        let (queue, info) = connect_queue(b, p, q, queues, asked, metrics, &stop)
            .map_err(|e| format!("queue {q}: {e}"))?;
        queue_objs.push(queue);
        infos.push(info);
    }
    log::info!(
        "vif {}:{} connected: frontend domain {}, {queues} queue(s), design {}, features {}",
        p.frontend_dom,
        p.devid,
        p.frontend_dom,
        design_of(b, p, queues),
        asked
    );
    handler.connected(&infos);
    let threads = queue_objs
        .into_iter()
        .map(|mut q| {
            let driver = Arc::clone(handler);
            std::thread::Builder::new()
                .name(format!("netback-q{}", q.index()))
                .spawn(move || driver.run(&mut q).err().map(|f| f.0))
                .map_err(|e| format!("cannot start a queue thread: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Connection {
        stop,
        threads,
        wakers: infos.into_iter().map(|i| i.waker).collect(),
    })
}

/// The design the frontend chose, from its keys (of queue 0: every queue has the same):
/// `slots:<data-len>`, `slots-rfc:<data-len>`, `ring:<order>` or the baseline's TX path.
fn design_of<P: BackendPlatform, X: XenStore>(
    b: &Backend<P, X>,
    p: &VifPaths,
    queues: u32,
) -> String {
    let dir = if queues == 1 {
        p.frontend.clone()
    } else {
        format!("{}/queue-0", p.frontend)
    };
    let key = |k: &str| read_str(&b.xs, &format!("{dir}/{k}"));
    if let Some(len) = key("tx-data-len") {
        return match key("request-staged-flags").as_deref() {
            Some("1") => format!("slots:{len}"),
            _ => format!("slots-rfc:{len}"),
        };
    }
    if key("data-ring-ref").is_some() {
        let order = key("data-ring-order").unwrap_or_default();
        let policy = key("data-ring-policy").unwrap_or_else(|| "greedy".into());
        return format!("ring:{order} (RX policy {policy})");
    }
    match b.cfg.tx_path {
        TxPath::GrantCopy => "grant-copy (baseline)".into(),
        TxPath::GrantMap => "grant-map (baseline)".into(),
        TxPath::Linux => "linux (baseline)".into(),
    }
}

/// The optional features the frontend asked for, each of which must be offered.
fn negotiated_features<P: BackendPlatform, X: XenStore>(
    b: &Backend<P, X>,
    p: &VifPaths,
) -> Result<Features, String> {
    let xs = &b.xs;
    let fkey = |k: &str| format!("{}/{k}", p.frontend);
    if !read_flag(xs, &fkey("request-rx-copy")) {
        return Err("frontend does not request rx-copy (request-rx-copy must be 1): only the copy receive path exists".into());
    }
    let offer = b.cfg.offer;
    let mut asked = offer;
    for (k, offered) in offer.keys() {
        let wants = read_flag(xs, &fkey(k));
        if wants && !offered {
            return Err(format!(
                "frontend requests {k}, which this backend does not offer"
            ));
        }
        match k {
            "feature-sg" => asked.sg = wants,
            "feature-gso-tcpv4" => asked.gso_tcpv4 = wants,
            "feature-gso-tcpv6" => asked.gso_tcpv6 = wants,
            _ => asked.ipv6_csum_offload = wants,
        }
    }
    Ok(asked)
}

/// The number of queues the frontend asked for, within what we allow.
fn queue_count<P: BackendPlatform, X: XenStore>(
    b: &Backend<P, X>,
    p: &VifPaths,
) -> Result<u32, String> {
    let key = format!("{}/multi-queue-num-queues", p.frontend);
    let queues = match read_str(&b.xs, &key) {
        None => 1u32,
        Some(v) => v
            .parse::<u32>()
            .map_err(|_| format!("multi-queue-num-queues = {v:?} is not a number"))?,
    };
    if queues == 0 || queues > u32::from(b.cfg.max_queues) {
        return Err(format!(
            "frontend asks for {queues} queues; 1 to {} are allowed",
            b.cfg.max_queues
        ));
    }
    Ok(queues)
}

/// Maps queue `q`'s rings and staging memory, binds its event channel and builds it.
fn connect_queue<P: BackendPlatform, X: XenStore>(
    b: &Backend<P, X>,
    p: &VifPaths,
    q: u32,
    queues: u32,
    asked: Features,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> Result<(BackQueue<P>, QueueInfo), String> {
    let fe = p.frontend_dom;
    let dir = if queues == 1 {
        p.frontend.clone()
    } else {
        format!("{}/queue-{q}", p.frontend)
    };
    let n = Negotiation {
        platform: &b.platform,
        xs: &b.xs,
        fe,
        dir: &dir,
    };
    let map = |key: &str| -> Result<netstage_ring::SharedMem, String> {
        let r = n.read_u32(key)?;
        b.platform
            .map(fe, &[r], true)
            .map_err(|e| format!("cannot map {key} {r}: {e}"))
    };
    let tx =
        BackRing::<TxRing>::attach(map("tx-ring-ref")?).map_err(|e| format!("TX ring: {e}"))?;
    let rx =
        BackRing::<RxRing>::attach(map("rx-ring-ref")?).map_err(|e| format!("RX ring: {e}"))?;
    let staging = crate::staging::negotiate(&n, &b.cfg, tx.size())?;
    let evtchn = n.read_u32("event-channel")?;
    let port = Arc::new(
        b.platform
            .bind_interdomain(fe, evtchn)
            .map_err(|e| format!("cannot bind event-channel {evtchn}: {e}"))?,
    );
    port.prepare()
        .map_err(|e| format!("event-channel {evtchn}: {e}"))?;
    let queue_metrics = Metrics::for_queue(metrics, q as u16);
    let info = QueueInfo {
        index: q as u16,
        waker: wake_fn(&port),
        metrics: Arc::clone(queue_metrics.handle()),
    };
    let queue = BackQueue::new(QueueParts {
        platform: b.platform.clone(),
        params: QueueParams {
            index: q as u16,
            fe,
            poll: b.cfg.poll,
            sg: asked.sg,
            gso_tcpv4: asked.gso_tcpv4,
            gso_tcpv6: asked.gso_tcpv6,
        },
        tx,
        rx,
        port,
        metrics: queue_metrics,
        stop: Arc::clone(stop),
        staging,
        fetch: crate::txpath::for_path(b.cfg.tx_path, BURST),
        // The vif's `rate`, each queue with all of it (as Linux netback).
        rate: crate::queue::read_rate(&b.xs, &p.backend)?,
    });
    Ok((queue, info))
}
