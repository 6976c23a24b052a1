//! The XenBus handshake, as Linux netfront does it: find the backend, wait for it, negotiate,
//! share rings, buffers and staging memory, announce them in one transaction, connect.
//!
//! Logged: each step at debug, the connection (queues, design, features) and a fallback to
//! the baseline at info.

use std::sync::Arc;
use std::time::{Duration, Instant};

use netstage_fallback::Design;
use netstage_platform::xenbus::{wait_state, write_state, VifPaths, XenbusState};
use netstage_platform::xenstore::{unique_token, Watch, XenStore, XsClient, NO_TX};
use netstage_platform::{DomId, EventPort, GrantExport, VIF_TOOLSTACK_FRONTEND_KEYS};

use crate::link::{forget_if_dead, FrontendLink, Shared};
use crate::metrics::Tally;
use crate::queue::{FrontQueue, QueuePages, POOL};
use crate::staging::{self, Share};
use crate::{FrontendConfig, FrontendError, FrontendHandler, FrontendPlatform};

/// What the backend and this frontend agreed on.
pub(crate) struct Negotiated {
    /// Queues.
    pub(crate) queues: u16,
    /// Whether the backend does multi-queue at all.
    pub(crate) multi_queue: bool,
    /// The design.
    pub(crate) design: Design,
}

/// Connects vif `devid` of this domain (`platform`'s) through XenStore `xs` (the domain's
/// own XenStore connection): waits for the backend, negotiates, shares rings and buffers,
/// and returns the link and one [`FrontQueue`] per negotiated queue, for the application's
/// threads to drive. No thread moves packets: only the link's monitor runs.
pub fn connect_queues<P: FrontendPlatform>(
    platform: P,
    xs: XsClient,
    devid: u32,
    cfg: FrontendConfig,
) -> Result<(FrontendLink<P>, Vec<FrontQueue<P>>), FrontendError> {
    connect_with(platform, xs, devid, &cfg, None)
}

/// [`connect_queues`], telling `on_stop` why the device stopped if the backend goes.
pub(crate) fn connect_with<P: FrontendPlatform>(
    platform: P,
    xs: XsClient,
    devid: u32,
    cfg: &FrontendConfig,
    on_stop: Option<Arc<dyn FrontendHandler>>,
) -> Result<(FrontendLink<P>, Vec<FrontQueue<P>>), FrontendError> {
    let paths = find_vif(&platform, &xs, devid, cfg.handshake_timeout)?;
    let vif = format!("{}:{devid}", paths.frontend_dom);
    log::debug!(
        "vif {vif}: backend {} in domain {}; Initialising",
        paths.backend,
        paths.backend_dom
    );
    write_state(&xs, &paths.frontend, XenbusState::Initialising)?;
    let watch = xs.watch(
        &format!("{}/state", paths.backend),
        &unique_token("netfront"),
    )?;
    let backend = BackendState {
        platform: &platform,
        xs: &xs,
        watch: &watch,
        paths: &paths,
        timeout: cfg.handshake_timeout,
    };
    // Not Connected: a backend still connected belongs to an earlier frontend. Closing
    // refuses only with an error node: without one it is the end of an earlier connection
    // that the backend has not finished, and it answers our Initialising with InitWait.
    backend.reach_init_wait()?;
    log::debug!("vif {vif}: backend InitWait; negotiating");
    let neg = negotiate(&xs, &paths.backend, cfg)?;
    if neg.design != cfg.design {
        log::info!(
            "vif {vif}: the backend does not offer {} in full: using {}",
            cfg.design,
            neg.design
        );
    }
    let shared = Arc::new(Shared::for_vif(&paths));
    let mut keys = Vec::new();
    let queues = (0..neg.queues)
        .map(|q| share_queue(&platform, &paths, &neg, cfg, q, &shared, &mut keys))
        .collect::<Result<Vec<_>, _>>()?;
    announce(&xs, &paths.frontend, cfg, &neg, &keys)?;
    log::debug!("vif {vif}: rings and buffers announced; Connected");
    write_state(&xs, &paths.frontend, XenbusState::Connected)?;
    let refusals = [XenbusState::Closing, XenbusState::Closed];
    if let Err(e) = backend.reach(XenbusState::Connected, &refusals, "backend closed") {
        log::debug!("vif {vif}: the backend did not connect: {e}");
        shared.stop(None);
        // A backend that died after mapping our rings leaves pins only forgetting it ends.
        forget_if_dead(&platform, paths.backend_dom);
        drop(queues);
        let _ = write_state(&xs, &paths.frontend, XenbusState::Closed);
        return Err(e);
    }
    // The backend has bound every port: look its ends up now, not at the first notify.
    for q in &queues {
        q.prepare_port()?;
    }
    log::info!(
        "vif {vif} connected: backend domain {}, {} queue(s), design {}, features {}",
        paths.backend_dom,
        neg.queues,
        neg.design,
        cfg.want
    );
    let mut link = FrontendLink {
        platform,
        xs,
        paths,
        shared,
        monitor: None,
        design: neg.design,
        queues: neg.queues,
        closed: false,
    };
    link.spawn_monitor(watch, on_stop)?;
    Ok((link, queues))
}

fn read_str(xs: &XsClient, path: &str) -> Option<String> {
    xs.read(NO_TX, path)
        .ok()
        .map(|v| String::from_utf8_lossy(&v).trim().to_string())
}

/// The vif's paths, once the toolstack has created it (it may still be doing so: it gets
/// a moment).
fn find_vif<P: FrontendPlatform>(
    platform: &P,
    xs: &XsClient,
    devid: u32,
    timeout: Duration,
) -> Result<VifPaths, FrontendError> {
    let me = GrantExport::domid(platform);
    let fdir = format!("/local/domain/{me}/device/vif/{devid}");
    let no_vif = |path: String| FrontendError::NoVif {
        dom: me,
        devid,
        path,
    };
    let deadline = Instant::now() + timeout.min(Duration::from_secs(10));
    let backend = loop {
        match read_str(xs, &format!("{fdir}/backend")) {
            Some(b) => break b,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => return Err(no_vif(format!("{fdir}/backend"))),
        }
    };
    let backend_dom: DomId = read_str(xs, &format!("{fdir}/backend-id"))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| no_vif(format!("{fdir}/backend-id")))?;
    Ok(VifPaths {
        frontend_dom: me,
        backend_dom,
        devid,
        frontend: fdir,
        backend,
    })
}

/// Fails unless the backend's domain runs.
fn backend_alive<P: FrontendPlatform>(platform: &P, bdom: DomId) -> Result<(), String> {
    if platform.domain_alive(bdom) {
        Ok(())
    } else {
        Err(format!("backend domain {bdom} is not running"))
    }
}

/// What waiting for the backend's state needs.
struct BackendState<'a, P> {
    platform: &'a P,
    xs: &'a XsClient,
    watch: &'a Watch,
    paths: &'a VifPaths,
    timeout: Duration,
}

impl<P: FrontendPlatform> BackendState<'_, P> {
    /// Waits for the backend's InitWait; a Closing with an `error` node is a refusal.
    fn reach_init_wait(&self) -> Result<(), FrontendError> {
        let error = format!("{}/error", self.paths.backend);
        let s = wait_state(
            self.xs,
            self.watch,
            &self.paths.backend,
            self.timeout,
            |s| {
                s == XenbusState::InitWait
                    || (s == XenbusState::Closing && read_str(self.xs, &error).is_some())
            },
            || backend_alive(self.platform, self.paths.backend_dom),
        )
        .map_err(FrontendError::Handshake)?;
        if s == XenbusState::InitWait {
            return Ok(());
        }
        let why = read_str(self.xs, &error);
        Err(FrontendError::Refused(
            why.unwrap_or_else(|| "closing".into()),
        ))
    }

    /// Waits for the backend to reach `goal`; reaching one of `refusals` instead means it
    /// refused (its `error` node says why, or else `refused`).
    fn reach(
        &self,
        goal: XenbusState,
        refusals: &[XenbusState],
        refused: &str,
    ) -> Result<(), FrontendError> {
        let s = wait_state(
            self.xs,
            self.watch,
            &self.paths.backend,
            self.timeout,
            |s| s == goal || refusals.contains(&s),
            || backend_alive(self.platform, self.paths.backend_dom),
        )
        .map_err(FrontendError::Handshake)?;
        if s == goal {
            return Ok(());
        }
        let why = read_str(self.xs, &format!("{}/error", self.paths.backend));
        Err(FrontendError::Refused(
            why.unwrap_or_else(|| refused.into()),
        ))
    }
}

/// Checks the requested features against the backend's offer and picks the queue count
/// and the design.
fn negotiate(xs: &XsClient, bdir: &str, cfg: &FrontendConfig) -> Result<Negotiated, FrontendError> {
    let backend = |k: &str| read_str(xs, &format!("{bdir}/{k}"));
    let offered = |k: &str| backend(k).is_some_and(|v| v == "1");
    for (k, want) in cfg.want.keys() {
        if want && !offered(k) {
            return Err(FrontendError::FeatureMismatch(k));
        }
    }
    if !offered("feature-rx-copy") {
        return Err(FrontendError::FeatureMismatch("feature-rx-copy"));
    }
    let max_q = backend("multi-queue-max-queues").and_then(|v| v.parse::<u16>().ok());
    Ok(Negotiated {
        queues: cfg.queues.max(1).min(max_q.unwrap_or(1).max(1)),
        multi_queue: max_q.is_some(),
        design: staging::module(cfg.design).negotiate(cfg.design, &backend),
    })
}

/// Shares queue `q`'s rings, buffer pools, staging memory and event channel, noting their
/// keys in `keys`.
pub(crate) fn share_queue<P: FrontendPlatform>(
    platform: &P,
    paths: &VifPaths,
    neg: &Negotiated,
    cfg: &FrontendConfig,
    q: u16,
    shared: &Arc<Shared>,
    keys: &mut Vec<(String, String)>,
) -> Result<FrontQueue<P>, FrontendError> {
    let bdom = paths.backend_dom;
    let prefix = if neg.queues == 1 {
        paths.frontend.clone()
    } else {
        format!("{}/queue-{q}", paths.frontend)
    };
    let mut tally = Tally::default();
    let mut to = Share {
        platform,
        bdom,
        prefix: &prefix,
        keys,
        tally: &mut tally,
    };
    let pages = QueuePages {
        tx_ring: to.pages(1, true)?,
        rx_ring: to.pages(1, true)?,
        tx_pool: to.pages(POOL, false)?,
        rx_pool: to.pages(POOL, true)?,
    };
    let staging = staging::module(neg.design).share(neg.design, &mut to)?;
    let port = Arc::new(platform.alloc_unbound(bdom)?);
    to.key("tx-ring-ref", pages.tx_ring.grefs[0]);
    to.key("rx-ring-ref", pages.rx_ring.grefs[0]);
    to.key("event-channel", port.port());
    let mut metrics = shared.new_queue_metrics();
    metrics.flush(&mut tally);
    shared.add_port(Arc::clone(&port) as Arc<dyn EventPort>);
    FrontQueue::new(
        q,
        cfg.poll,
        cfg.answer_timeout,
        cfg.want,
        pages,
        staging,
        port,
        Arc::clone(shared),
        metrics,
    )
}

/// Writes everything the backend needs in one transaction, as netfront does, after
/// removing whatever an earlier frontend of this vif left behind.
fn announce(
    xs: &XsClient,
    fdir: &str,
    cfg: &FrontendConfig,
    neg: &Negotiated,
    keys: &[(String, String)],
) -> Result<(), FrontendError> {
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    let mut common = vec![
        (format!("{fdir}/request-rx-copy"), "1".to_string()),
        (format!("{fdir}/feature-rx-notify"), "1".to_string()),
    ];
    for (k, want) in cfg.want.keys() {
        common.push((format!("{fdir}/{k}"), flag(want)));
    }
    if neg.multi_queue {
        common.push((
            format!("{fdir}/multi-queue-num-queues"),
            neg.queues.to_string(),
        ));
    }
    xs.transaction(10, |tx| {
        for child in xs.directory(tx, fdir)? {
            if !VIF_TOOLSTACK_FRONTEND_KEYS.contains(&child.as_str()) {
                xs.rm(tx, &format!("{fdir}/{child}"))?;
            }
        }
        for (k, v) in keys.iter().chain(&common) {
            xs.write(tx, k, v.as_bytes())?;
        }
        Ok(())
    })?;
    Ok(())
}
