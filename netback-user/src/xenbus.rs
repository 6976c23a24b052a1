//! The backend's XenBus state machine (after Linux netback's `xenbus.c`): advertise
//! features, wait for the frontend, read and check its keys, map its rings, bind its event
//! channels, start the queues; tear down when it closes, misbehaves or dies, and wait for
//! the next one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use netstage_platform::xenbus::{read_state, write_state, VifPaths, XenbusState};
use netstage_platform::xenstore::{unique_token, XenStore, NO_TX};
use netstage_platform::{DomId, GrantImport};
use netstage_ring::netif::{RxRing, TxRing};
use netstage_ring::sring::BackRing;

use crate::queue::{BackQueue, Fatal, QueueParams, QueueParts, BURST};
use crate::staging::{BackStaging, DataRing, NoStaging, Slots};
use crate::{wake_fn, Backend, BackendError, BackendPlatform, QueueDriver, QueueInfo};
use netstage_ring::flex::{self, End};
use netstage_ring::staging::{distinct_grefs, read_list, SlotArea, SlotLayout};
use netstage_ring::XEN_PAGE_SIZE;

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

fn read_str<X: XenStore>(xs: &X, path: &str) -> Option<String> {
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

fn read_u32<X: XenStore>(xs: &X, path: &str) -> Result<u32, String> {
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

pub(crate) fn serve<P: BackendPlatform>(
    b: &Backend<P>,
    fe: DomId,
    devid: u32,
    handler: Arc<dyn QueueDriver<P>>,
    stop: &AtomicBool,
) -> Result<(), BackendError> {
    let xs = &b.xs;
    let p = VifPaths::new(b.platform_domid(), fe, devid);
    // Advertise what we offer, as netback does at probe.
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
    let watch = xs.watch(&format!("{}/state", p.frontend), &unique_token("netback"))?;
    let mut conn: Option<Connection> = None;
    // The frontend domain instance the connection belongs to.
    let mut conn_instance: Option<u64> = None;
    let mut state = XenbusState::InitWait;
    let set = |s: XenbusState, state: &mut XenbusState| -> Result<(), BackendError> {
        write_state(xs, &p.backend, s)?;
        *state = s;
        Ok(())
    };
    while !stop.load(Ordering::Acquire) {
        let _ = watch.next(Duration::from_millis(100));
        // A frontend domain that died takes its connection with it; the toolstack resets
        // its directory for the next guest.
        let instance = b.platform.domain_instance(fe);
        if conn.is_some() && instance != conn_instance {
            if let Some(c) = conn.take() {
                c.shut();
                handler.disconnected("frontend domain died");
                b.platform.forget_domain(fe);
                if instance.is_none() {
                    // No new instance yet: reset the directory for the next guest. (A new
                    // instance is already using it.)
                    let _ = crate::toolstack::reset_frontend(xs, &p);
                }
                let _ = xs.rm(NO_TX, &format!("{}/error", p.backend));
                set(XenbusState::InitWait, &mut state)?;
            }
            continue;
        }
        if conn.as_ref().is_some_and(|c| c.broken()) {
            if let Some(c) = conn.take() {
                let why = c.shut().unwrap_or_else(|| "queue stopped".into());
                b.metrics.add_fatal_faults(1);
                handler.disconnected(&why);
                fail(xs, &p, &format!("frontend misbehaved: {why}"));
                state = XenbusState::Closing;
            }
        }
        let fs = read_state(xs, &p.frontend);
        match fs {
            XenbusState::Connected if conn.is_none() && state == XenbusState::InitWait => {
                match connect(b, &p, &handler) {
                    Ok(c) => {
                        conn = Some(c);
                        conn_instance = instance;
                        b.metrics.add_connects(1);
                        set(XenbusState::Connected, &mut state)?;
                    }
                    Err(msg) => {
                        fail(xs, &p, &msg);
                        state = XenbusState::Closing;
                    }
                }
            }
            XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown => {
                if let Some(c) = conn.take() {
                    c.shut();
                    handler.disconnected("frontend closed");
                }
                if fs == XenbusState::Closing && state != XenbusState::Closing {
                    set(XenbusState::Closing, &mut state)?;
                }
                if fs == XenbusState::Closed && state != XenbusState::Closed {
                    set(XenbusState::Closed, &mut state)?;
                }
            }
            XenbusState::Initialising if conn.is_some() => {
                // The frontend started over without closing: drop the old connection.
                if let Some(c) = conn.take() {
                    c.shut();
                    handler.disconnected("frontend restarted");
                }
                set(XenbusState::InitWait, &mut state)?;
            }
            XenbusState::Initialising | XenbusState::InitWait
                if matches!(state, XenbusState::Closed | XenbusState::Closing) =>
            {
                // A new frontend: start over.
                let _ = xs.rm(NO_TX, &format!("{}/error", p.backend));
                set(XenbusState::InitWait, &mut state)?;
            }
            _ => {}
        }
    }
    if let Some(c) = conn.take() {
        c.shut();
        handler.disconnected("backend stopped");
    }
    let _ = write_state(xs, &p.backend, XenbusState::Closed);
    Ok(())
}

impl<P: BackendPlatform> Backend<P> {
    fn platform_domid(&self) -> DomId {
        GrantImport::domid(&self.platform)
    }
}

/// Maps the staging memory the frontend shared for one queue, if it asked for any, after
/// checking it against what we offered.
fn connect_staging<P: BackendPlatform>(
    b: &Backend<P>,
    fe: DomId,
    dir: &str,
    slots: u32,
) -> Result<Box<dyn BackStaging>, String> {
    let xs = &b.xs;
    let slots_len = read_str(xs, &format!("{dir}/tx-data-len"));
    let ring_ref = read_str(xs, &format!("{dir}/data-ring-ref"));
    match (slots_len, ring_ref) {
        (None, None) => Ok(Box::new(NoStaging)),
        (Some(_), Some(_)) => Err("frontend asks for both staging slots and a data ring".into()),
        (Some(_), None) => {
            let max = b
                .cfg
                .slots_max_data_len
                .ok_or("frontend asks for staging slots, which this backend does not offer")?;
            let mut areas = Vec::new();
            for (d, writable) in [("tx", false), ("rx", true)] {
                let len = read_u32(xs, &format!("{dir}/{d}-data-len"))?;
                if len < 64 || len > max {
                    return Err(format!("{d}-data-len {len} is outside 64..={max}"));
                }
                let layout = SlotLayout::new(len, slots).map_err(|e| e.to_string())?;
                let mut list = Vec::new();
                for i in 0..layout.list_pages() {
                    let r = read_u32(xs, &format!("{dir}/{d}-data-ref{i}"))?;
                    list.push(
                        b.platform
                            .map(fe, &[r], false)
                            .map_err(|e| format!("cannot map {d}-data-ref{i} {r}: {e}"))?,
                    );
                }
                // Read once, checked, kept private: the frontend cannot change it later.
                let entries =
                    read_list(&layout, &list).map_err(|e| format!("{d} data list: {e}"))?;
                let grefs = distinct_grefs(&entries);
                let win = b
                    .platform
                    .map(fe, &grefs, writable)
                    .map_err(|e| format!("cannot map the {d} staging pages: {e}"))?;
                let pages = grefs
                    .iter()
                    .enumerate()
                    .map(|(i, g)| Ok((*g, win.sub(i * XEN_PAGE_SIZE, XEN_PAGE_SIZE)?)))
                    .collect::<Result<Vec<_>, netstage_ring::MemError>>()
                    .map_err(|e| e.to_string())?;
                areas.push((
                    SlotArea::new(layout, &entries, &pages).map_err(|e| e.to_string())?,
                    len as usize,
                ));
            }
            let (rx, rx_len) = areas.pop().ok_or("no RX slots")?;
            let (tx, _) = areas.pop().ok_or("no TX slots")?;
            Ok(Box::new(Slots::new(tx, rx, rx_len)))
        }
        (None, Some(r)) => {
            let max = b
                .cfg
                .data_ring_max_order
                .ok_or("frontend asks for a data ring, which this backend does not offer")?;
            let r: u32 = r
                .parse()
                .map_err(|_| format!("data-ring-ref {r:?} is not a number"))?;
            let intf = b
                .platform
                .map(fe, &[r], true)
                .map_err(|e| format!("cannot map data-ring-ref {r}: {e}"))?;
            // The order is read once from the indexes page, before mapping anything else.
            let cfg = flex::read_intf_config(&intf, max).map_err(|e| format!("data ring: {e}"))?;
            let key = read_u32(xs, &format!("{dir}/data-ring-order"))?;
            if key != cfg.order {
                return Err(format!(
                    "data-ring-order {key} disagrees with the indexes page ({})",
                    cfg.order
                ));
            }
            let data = b
                .platform
                .map(fe, &cfg.refs, true)
                .map_err(|e| format!("cannot map the data ring: {e}"))?;
            let (prod, cons) = flex::open(End::Backend, &intf, &data, cfg.order)
                .map_err(|e| format!("data ring: {e}"))?;
            Ok(Box::new(DataRing::new(prod, cons)))
        }
    }
}

/// Reads and checks the frontend's keys, maps its rings, binds its channels, starts the
/// queues. An error message describes what the frontend got wrong.
fn connect<P: BackendPlatform>(
    b: &Backend<P>,
    p: &VifPaths,
    handler: &Arc<dyn QueueDriver<P>>,
) -> Result<Connection, String> {
    let xs = &b.xs;
    // The frontend domain may be a new instance since we last looked (an earlier one
    // closed and exited): map its current memory, not what we cached of the old one.
    b.platform.forget_domain(p.frontend_dom);
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
    let queues = match read_str(xs, &fkey("multi-queue-num-queues")) {
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
    let fe = p.frontend_dom;
    let stop = Arc::new(AtomicBool::new(false));
    let mut queue_objs = Vec::new();
    let mut infos = Vec::new();
    let mut wakers = Vec::new();
    for q in 0..queues {
        let dir = if queues == 1 {
            p.frontend.clone()
        } else {
            format!("{}/queue-{q}", p.frontend)
        };
        let tx_ref = read_u32(xs, &format!("{dir}/tx-ring-ref"))?;
        let rx_ref = read_u32(xs, &format!("{dir}/rx-ring-ref"))?;
        let evtchn = read_u32(xs, &format!("{dir}/event-channel"))?;
        let tx_mem = b
            .platform
            .map(fe, &[tx_ref], true)
            .map_err(|e| format!("queue {q}: cannot map tx-ring-ref {tx_ref}: {e}"))?;
        let rx_mem = b
            .platform
            .map(fe, &[rx_ref], true)
            .map_err(|e| format!("queue {q}: cannot map rx-ring-ref {rx_ref}: {e}"))?;
        let tx =
            BackRing::<TxRing>::attach(tx_mem).map_err(|e| format!("queue {q}: TX ring: {e}"))?;
        let rx =
            BackRing::<RxRing>::attach(rx_mem).map_err(|e| format!("queue {q}: RX ring: {e}"))?;
        let staging =
            connect_staging(b, fe, &dir, tx.size()).map_err(|e| format!("queue {q}: {e}"))?;
        let port = Arc::new(
            b.platform
                .bind_interdomain(fe, evtchn)
                .map_err(|e| format!("queue {q}: cannot bind event-channel {evtchn}: {e}"))?,
        );
        let wake = wake_fn(&port);
        infos.push(QueueInfo {
            index: q as u16,
            waker: Arc::clone(&wake),
        });
        wakers.push(wake);
        queue_objs.push(BackQueue::new(QueueParts {
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
            metrics: Arc::clone(&b.metrics),
            stop: Arc::clone(&stop),
            staging,
            fetch: crate::txpath::for_path(b.cfg.tx_path, BURST),
        }));
    }
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
        wakers,
    })
}
