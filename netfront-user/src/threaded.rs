//! [`Frontend`]: the convenience layer on top of [`FrontQueue`]. A thread per queue drives
//! it: packets handed to [`Frontend::send`] go through a bounded channel into the queue's
//! bursts, and received packets reach a [`FrontendHandler`] (or, in forwarding mode, are
//! sent back out).

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender};
use netstage_fallback::{Design, Features, Gate, Packet, PacketBuf, PacketRef};
use netstage_platform::xenbus::VifPaths;
use netstage_platform::xenstore::XsClient;
use netstage_platform::{DomId, EventPort};

use crate::connect::connect_with;
use crate::link::{FrontendLink, Shared};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::{validate, FrontQueue, FrontendConfig, FrontendError, FrontendPlatform};

/// Packets a queue thread moves per burst.
const BURST: usize = 32;

/// What a frontend does with received traffic.
pub trait FrontendHandler: Send + Sync + 'static {
    /// A packet from the backend, on `queue`, in order per queue.
    fn rx_packet(&self, queue: u16, pkt: Packet);

    /// The device stopped working (backend gone, closed or misbehaving).
    fn disconnected(&self, _reason: &str) {}
}

/// The sending side of one queue thread.
struct QueueHandle {
    tx: Sender<Packet>,
    wake: Arc<dyn EventPort>,
    /// Passed by every sender; closed by the queue's thread when it stops, which then
    /// counts what is left.
    gate: Arc<Gate>,
}

/// A connected frontend whose queues are driven by threads of its own.
pub struct Frontend<P: FrontendPlatform> {
    queues: Vec<QueueHandle>,
    /// Declared before `link`: the threads stop before the link closes.
    threads: Threads<P>,
    link: FrontendLink<P>,
    features: Features,
    send_timeout: Duration,
}

impl<P: FrontendPlatform> Frontend<P> {
    /// Connects vif `devid` of this domain (`platform`'s) through XenStore `xs` (the
    /// domain's own XenStore connection): waits for the backend, negotiates, shares rings
    /// and buffers, and starts a thread per queue that hands received packets to `handler`.
    pub fn connect(
        platform: P,
        xs: XsClient,
        devid: u32,
        cfg: FrontendConfig,
        handler: Arc<dyn FrontendHandler>,
    ) -> Result<Frontend<P>, FrontendError> {
        let (link, fqs) = connect_with(platform, xs, devid, &cfg, Some(Arc::clone(&handler)))?;
        let mut f = Frontend {
            queues: Vec::new(),
            threads: Threads {
                shared: Arc::clone(&link.shared),
                handles: Vec::new(),
            },
            link,
            features: cfg.want,
            send_timeout: cfg.send_timeout,
        };
        for q in fqs {
            let (tx, rx) = bounded(cfg.tx_queue_len.max(1));
            let gate = Arc::new(Gate::new());
            f.queues.push(QueueHandle {
                tx,
                wake: q.port_handle(),
                gate: Arc::clone(&gate),
            });
            let driver = Driver {
                inbox: rx,
                gate,
                handler: Arc::clone(&handler),
                forward: cfg.forward,
            };
            let t = std::thread::Builder::new()
                .name(format!("netfront-q{}", q.index()))
                .spawn(move || driver.run(q))
                .map_err(|e| FrontendError::Handshake(format!("cannot start a queue: {e}")))?;
            f.threads.handles.push(t);
        }
        Ok(f)
    }

    /// The design in use (the one asked for, or the baseline if the backend lacks it).
    pub fn design(&self) -> Design {
        self.link.design()
    }

    /// Number of queues negotiated.
    pub fn queues(&self) -> u16 {
        self.link.queues()
    }

    /// This domain's id.
    pub fn domid(&self) -> DomId {
        self.link.domid()
    }

    /// The vif's XenStore paths.
    pub fn paths(&self) -> &VifPaths {
        self.link.paths()
    }

    /// Counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.link.metrics()
    }

    /// The counters themselves, to read after the device is gone: what
    /// [`Frontend::close_counted`] counted is there even when closing failed (a XenStore
    /// that died cannot be told the device closed).
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.link.metrics_handle()
    }

    /// Each queue's counters, in queue order ([`Frontend::metrics`] is their sum).
    pub fn queue_metrics(&self) -> Vec<MetricsSnapshot> {
        self.link.queue_metrics()
    }

    /// The counters as one `--stats` object ([`FrontendLink::stats`]).
    pub fn stats(&self, kind: crate::StatsKind, connected: Instant) -> crate::FrontendStats {
        self.link.stats(kind, connected)
    }

    /// Why the device stopped working, if it did.
    pub fn broken(&self) -> Option<String> {
        self.link.broken().or_else(|| {
            self.threads
                .handles
                .iter()
                .any(|t| t.is_finished())
                .then(|| "a queue stopped".to_string())
        })
    }

    /// Queues `pkt` for transmission on `queue`, waiting while that queue is full, at most
    /// [`FrontendConfig::send_timeout`].
    pub fn send(&self, queue: u16, pkt: Packet) -> Result<(), FrontendError> {
        let len = pkt.data.len();
        validate(&self.features, &pkt.packet_ref())
            .map_err(|why| FrontendError::BadPacket { len, why })?;
        if self.link.shared.stopped() {
            return Err(FrontendError::Broken(self.link.shared.reason()));
        }
        let q = self
            .queues
            .get(usize::from(queue))
            .ok_or(FrontendError::BadPacket {
                len,
                why: "no such queue",
            })?;
        match q.hand_over(pkt, self.send_timeout) {
            Ok(()) => Ok(()),
            Err(Refused::Stopped) => Err(FrontendError::Broken(self.link.shared.reason())),
            Err(Refused::Full) => Err(FrontendError::SendTimeout {
                queue,
                waited: self.send_timeout,
            }),
        }
    }

    /// Closes the device: stops the queues, Closing, waits for the backend to close,
    /// Closed; then the shared pages are revoked. Fails with [`FrontendError::Broken`] if a
    /// queue found the backend breaking the protocol.
    pub fn close(self) -> Result<(), FrontendError> {
        self.close_counted().map(|_| ())
    }

    /// [`Frontend::close`], returning the counters as they stood once the backend had
    /// closed: every packet handed over is counted sent or unsent (`tx_unsent`), every
    /// packet sent answered or unanswered (`tx_unanswered`), and every packet the backend
    /// put on the RX rings received, dropped or unread (`rx_unread`),
    /// which a snapshot taken before closing cannot promise.
    pub fn close_counted(self) -> Result<MetricsSnapshot, FrontendError> {
        let Frontend {
            link, mut threads, ..
        } = self;
        // The queues' pages stay granted until the backend has let go of them: dropped
        // earlier, the ones it still maps could not be revoked (netfront frees its rings
        // only after the backend closed, too).
        let mut queues = threads.stop();
        link.close_counted(&mut queues)
    }
}

/// Why a packet was not taken.
enum Refused {
    /// The queue stopped.
    Stopped,
    /// It stayed full for the whole timeout.
    Full,
}

impl QueueHandle {
    /// Puts `pkt` in the queue's inbox, waiting up to `timeout` while it is full; fails
    /// (the packet not taken) once the queue has stopped or when the time is up.
    fn hand_over(&self, mut pkt: Packet, timeout: Duration) -> Result<(), Refused> {
        let _inside = self.gate.enter().ok_or(Refused::Stopped)?;
        let deadline = Instant::now() + timeout;
        loop {
            // Every packet wakes the queue: checking the channel first would race with the
            // queue thread draining it and lose wake-ups.
            match self.tx.send_timeout(pkt, Duration::from_millis(10)) {
                Ok(()) => {
                    let _ = self.wake.wake();
                    return Ok(());
                }
                Err(SendTimeoutError::Timeout(_)) if self.gate.is_closed() => {
                    return Err(Refused::Stopped)
                }
                Err(SendTimeoutError::Timeout(_)) if Instant::now() >= deadline => {
                    return Err(Refused::Full)
                }
                Err(SendTimeoutError::Timeout(p)) => pkt = p,
                Err(SendTimeoutError::Disconnected(_)) => return Err(Refused::Stopped),
            }
        }
    }
}

/// The queue threads, stopped and joined when dropped (before the link closes).
struct Threads<P: FrontendPlatform> {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<FrontQueue<P>>>,
}

impl<P: FrontendPlatform> Threads<P> {
    /// Stops and joins the threads; returns their queues (with the shared pages).
    fn stop(&mut self) -> Vec<FrontQueue<P>> {
        self.shared.stop(None);
        self.handles
            .drain(..)
            .filter_map(|t| t.join().ok())
            .collect()
    }
}

impl<P: FrontendPlatform> Drop for Threads<P> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a queue thread needs besides its queue.
struct Driver {
    inbox: Receiver<Packet>,
    gate: Arc<Gate>,
    handler: Arc<dyn FrontendHandler>,
    forward: bool,
}

impl Driver {
    /// Drives `q` until the device stops, then counts what was never sent; returns the
    /// queue, whose pages the backend may still map.
    fn run<P: FrontendPlatform>(self, mut q: FrontQueue<P>) -> FrontQueue<P> {
        // This thread shares its core with the application's, which feed it.
        q.share_core();
        let mut out = VecDeque::with_capacity(BURST);
        let mut bufs = PacketBuf::pool(if self.forward { 0 } else { BURST });
        loop {
            let r = match self.pass(&mut q, &mut out, &mut bufs) {
                Ok(true) => Ok(true),
                Ok(false) => q.wait(Some(Duration::from_millis(100))),
                Err(e) => Err(e),
            };
            if r.is_err() {
                // Stopped: closed, or broken (the queue noted why).
                break;
            }
        }
        self.gate.close();
        let left = out.len() + self.inbox.try_iter().count();
        q.count_unsent(left as u64);
        q
    }

    /// One round of sending and receiving; whether anything moved.
    fn pass<P: FrontendPlatform>(
        &self,
        q: &mut FrontQueue<P>,
        out: &mut VecDeque<Packet>,
        bufs: &mut [PacketBuf],
    ) -> Result<bool, FrontendError> {
        while out.len() < BURST {
            match self.inbox.try_recv() {
                Ok(p) => out.push_back(p),
                Err(_) => break,
            }
        }
        let refs: ArrayVec<PacketRef<'_>, BURST> = out.iter().map(Packet::packet_ref).collect();
        let sent = match q.send_burst(&refs) {
            // Checked by `Frontend::send`: cannot happen; the packet is counted unsent.
            Err(FrontendError::BadPacket { .. }) => {
                q.count_unsent(1);
                1
            }
            r => r?,
        };
        drop(refs);
        out.drain(..sent.min(out.len()));
        let got = if self.forward {
            q.forward_burst(BURST)?
        } else {
            let n = q.recv_burst(bufs)?;
            for b in bufs.iter().take(n) {
                self.handler.rx_packet(q.index(), b.to_packet());
            }
            n
        };
        Ok(sent > 0 || got > 0)
    }
}

/// Drives `q` on this thread as a [`Frontend`]'s queue thread does (nothing to send,
/// whatever arrives dropped) until the device stops; returns the queue.
#[cfg(test)]
pub(crate) fn drive_until_stopped<P: FrontendPlatform>(q: FrontQueue<P>) -> FrontQueue<P> {
    struct Discard;
    impl FrontendHandler for Discard {
        fn rx_packet(&self, _: u16, _: Packet) {}
    }
    let (_tx, inbox) = bounded(1);
    let driver = Driver {
        inbox,
        gate: Arc::new(Gate::new()),
        handler: Arc::new(Discard),
        forward: false,
    };
    driver.run(q)
}
