//! Counters: plain atomics, snapshotted for reports. A backend has one [`Metrics`] for all
//! its vifs, one per vif ([`crate::Backend::vif_metrics`]) and one per queue. Each keeps
//! only the counts made at its own level; a snapshot adds up those below it (a vif's: its
//! queues', a backend's: its vifs'). So a queue publishes a burst's counts into cells of
//! its own with plain stores ([`QueueCounters::absorb`]): no locked add per burst, which
//! on x86 also waits for every store before it, among them the ring lines the burst had
//! just written for the other core (a cache-line transfer each). A vif's counters also log
//! its frontend's faults, rate-limited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use netstage_fallback::LogLimit;
use netstage_platform::DomId;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident, $add:ident;)*) => {
        /// One set of counter cells.
        #[derive(Debug, Default)]
        struct Cells {
            $($name: AtomicU64,)*
        }

        impl Cells {
            /// Adds the cells' current values to `s`.
            fn add_to(&self, s: &mut MetricsSnapshot) {
                $(s.$name = s.$name.wrapping_add(self.$name.load(Ordering::Relaxed));)*
            }

            /// Moves `c`'s counts into the cells (see [`add_owned`]), leaving it zero.
            fn publish(&self, c: &mut Counts) {
                $(add_owned(&self.$name, &mut c.$name);)*
            }
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct MetricsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl MetricsSnapshot {
            /// Adds `o`'s counts to these.
            fn add(&mut self, o: &MetricsSnapshot) {
                $(self.$name = self.$name.wrapping_add(o.$name);)*
            }
        }

        impl Metrics {
            $(
                /// Adds `n` (any thread may: an atomic add).
                #[allow(dead_code)]
                pub(crate) fn $add(&self, n: u64) {
                    self.shared.$name.fetch_add(n, Ordering::Relaxed);
                }
            )*
        }

        /// Counts a queue gathers over one burst before [`QueueCounters::absorb`] publishes
        /// them: the hot path touches plain integers, not shared atomics, per packet.
        #[derive(Debug, Default, Clone, Copy)]
        pub(crate) struct Counts {
            $(pub(crate) $name: u64,)*
        }

        impl Counts {
            /// Whether nothing was counted: one OR over every count, so that a call that
            /// moved nothing (an idle look) publishes nothing, without a test per count.
            pub(crate) fn is_zero(&self) -> bool {
                (0 $(| self.$name)*) == 0
            }

            /// One set of counts per count, with that count alone at one (for tests).
            #[cfg(test)]
            fn each_alone() -> Vec<Counts> {
                vec![$(Counts { $name: 1, ..Counts::default() },)*]
            }
        }
    };
}

counters! {
    /// Packets received from the guest (TX) and handed to the handler.
    tx_packets, add_tx_packets;
    /// Their bytes.
    tx_bytes, add_tx_bytes;
    /// TX packets dropped for a malformed request (answered `NETIF_RSP_ERROR`).
    tx_dropped, add_tx_dropped;
    /// TX packets whose grant copy or map failed (answered `NETIF_RSP_ERROR`).
    tx_grant_errors, add_tx_grant_errors;
    /// TX request slots consumed (data and extra).
    tx_slots, add_tx_slots;
    /// Packets delivered to the guest (RX).
    rx_packets, add_rx_packets;
    /// Their bytes.
    rx_bytes, add_rx_bytes;
    /// RX packets whose grant copy failed.
    rx_grant_errors, add_rx_grant_errors;
    /// RX packets dropped: too large for the protocol or the negotiated features.
    rx_dropped, add_rx_dropped;
    /// RX packets dropped because the queue's backlog was full.
    rx_backlog_drops, add_rx_backlog_drops;
    /// RX packets dropped from the backlog because the guest posted no buffers for the
    /// drain timeout.
    rx_drain_drops, add_rx_drain_drops;
    /// RX packets handed to an injector that were still queued, or came, when the vif
    /// disconnected.
    rx_disconnect_drops, add_rx_disconnect_drops;
    /// RX packets dropped because their queue's guest had stalled: queued when it was
    /// declared stalled, or handed to an injector while it stayed so.
    rx_stall_drops, add_rx_stall_drops;
    /// Times a queue's guest was declared stalled: packets waited and it took none for
    /// `rx_stall_timeout` (Linux netback's carrier off).
    rx_stalls, add_rx_stalls;
    /// TX packets whose head came through staging memory (slots or data ring).
    tx_staged_packets, add_tx_staged_packets;
    /// Bytes they staged.
    tx_staged_bytes, add_tx_staged_bytes;
    /// TX bytes fetched by grant copy (the rest came through staging memory).
    tx_grant_copy_bytes, add_tx_grant_copy_bytes;
    /// TX bytes fetched by grant map.
    tx_grant_map_bytes, add_tx_grant_map_bytes;
    /// RX bytes delivered by grant copy (the rest through staging memory).
    rx_grant_copy_bytes, add_rx_grant_copy_bytes;
    /// TX packets taken whole from a staging slot (`NETTXF_staging_buffer`).
    tx_zerocopy_packets, add_tx_zerocopy_packets;
    /// TX packets whose staged head was lent to the application in place
    /// ([`crate::BackQueue::recv_burst_in_place`]) instead of copied.
    tx_in_place_packets, add_tx_in_place_packets;
    /// RX packets whose head went through staging memory.
    rx_staged_packets, add_rx_staged_packets;
    /// Bytes they staged.
    rx_staged_bytes, add_rx_staged_bytes;
    /// RX packets sent by grant copy because the data ring lacked room.
    rx_fallback_ring_full, add_rx_fallback_ring_full;
    /// Grant-copy calls (hypercalls) made.
    grant_copy_calls, add_grant_copy_calls;
    /// Grant-copy operations.
    grant_copy_ops, add_grant_copy_ops;
    /// Pages mapped by the grant-map TX path.
    grant_maps, add_grant_maps;
    /// Notifications sent to the frontend.
    notifications, add_notifications;
    /// Times a queue woke up from waiting.
    wakeups, add_wakeups;
    /// Waits that first slept because the frontend's events kept bringing no work (an
    /// event storm, XSA-391).
    storm_backoffs, add_storm_backoffs;
    /// Frontends connected.
    connects, add_connects;
    /// Disconnects because the frontend misbehaved (fatal faults).
    fatal_faults, add_fatal_faults;
    /// Handshakes given up because the frontend did not reach Connected within
    /// `handshake_timeout` of its first step.
    handshake_timeouts, add_handshake_timeouts;
    /// TX packets held past the toolstack's `rate` credit until the next interval (each
    /// counted once, however long it waits).
    tx_credit_waits, add_tx_credit_waits;
    /// TX packets still held for `rate` credit when their queue stopped: parsed, never
    /// delivered nor answered (the frontend counts them in its `tx_unanswered`).
    tx_credit_drops, add_tx_credit_drops;
}

/// Moves `n` into `cell` with a load and a store (no locked add), leaving `n` zero: only
/// for cells that one thread alone writes (see [`QueueCounters`]).
#[inline(always)]
fn add_owned(cell: &AtomicU64, n: &mut u64) {
    if *n != 0 {
        let v = cell.load(Ordering::Relaxed);
        cell.store(v.wrapping_add(std::mem::take(n)), Ordering::Relaxed);
    }
}

/// Counters of a backend (all its vifs and queues), of one vif, or of one queue.
#[derive(Debug, Default)]
pub struct Metrics {
    /// A queue's: published by its [`QueueCounters`], the one thread that writes them.
    owned: Cells,
    /// Added by any thread (`add_*`): a vif's handshakes and faults, a queue's drops
    /// counted by the threads that hand it packets.
    shared: Cells,
    /// Whose counts a snapshot adds to these: a backend's vifs, a vif's queues.
    below: Mutex<Below>,
    /// A vif's or a queue's: the frontend's domain and device id, for the log.
    vif: Option<(DomId, u32)>,
    /// A queue's: its index.
    queue: Option<u16>,
    /// Warnings of the frontend's faults, at most a burst per period (a vif's, shared by
    /// its queues).
    faults_log: Arc<LogLimit>,
}

/// The counters a snapshot adds up beside a node's own.
#[derive(Debug, Default)]
struct Below {
    /// A backend's vifs; a vif's queues of its current (or last) connection.
    current: Vec<Arc<Metrics>>,
    /// A vif's queues of earlier connections that something still holds (a thread that
    /// has not finished with them yet).
    earlier: Vec<Arc<Metrics>>,
    /// The counts of earlier queues that nothing holds any more.
    retired: MetricsSnapshot,
}

impl Below {
    /// Adds the counts of the earlier queues that nothing else holds to `retired` and
    /// forgets them, so that reconnecting again and again does not grow the list.
    fn retire_unheld(&mut self) {
        for m in std::mem::take(&mut self.earlier) {
            match Arc::try_unwrap(m) {
                Ok(m) => self.retired.add(&m.snapshot()),
                Err(m) => self.earlier.push(m),
            }
        }
    }
}

/// The writer of one queue's counts: not `Clone`, held by the queue alone, so that its
/// cells have one writer and a plain store publishes each burst's counts.
#[derive(Debug)]
pub(crate) struct QueueCounters {
    metrics: Arc<Metrics>,
}

impl Counts {
    /// Whether requests were answered with an error: TX requests dropped, or TX or RX grant
    /// operations that failed (the frontend's faults, warned of).
    pub(crate) fn answered_errors(&self) -> bool {
        self.tx_dropped != 0 || self.tx_grant_errors != 0 || self.rx_grant_errors != 0
    }
}

impl QueueCounters {
    /// The queue's counters, to read or to add to from any thread.
    pub(crate) fn handle(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Publishes the packet and byte counts of `c` (TX and RX) alone and clears them: a
    /// few stores, for the moment before the packets they count reach anyone.
    pub(crate) fn absorb_packets(&mut self, c: &mut Counts) {
        let own = &self.metrics.owned;
        add_owned(&own.tx_packets, &mut c.tx_packets);
        add_owned(&own.tx_bytes, &mut c.tx_bytes);
        add_owned(&own.rx_packets, &mut c.rx_packets);
        add_owned(&own.rx_bytes, &mut c.rx_bytes);
    }

    /// Publishes a queue's local counts and clears them; warns of the frontend's faults
    /// among them, rate-limited.
    pub(crate) fn absorb(&mut self, c: &mut Counts) {
        if c.is_zero() {
            return;
        }
        self.metrics.warn_faults(c);
        self.metrics.owned.publish(c);
    }
}

impl Metrics {
    /// The current values: this node's own counts and those of every node below it.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::default();
        self.owned.add_to(&mut s);
        self.shared.add_to(&mut s);
        let below = self.below();
        s.add(&below.retired);
        for m in below.current.iter().chain(&below.earlier) {
            s.add(&m.snapshot());
        }
        s
    }

    /// What is below this node (a poisoned lock still holds every count).
    fn below(&self) -> MutexGuard<'_, Below> {
        self.below.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counters of vif `devid` of domain `fe`, counted in `backend`'s as well.
    pub(crate) fn for_vif(backend: &Arc<Metrics>, fe: DomId, devid: u32) -> Arc<Metrics> {
        let vif = Arc::new(Metrics {
            vif: Some((fe, devid)),
            ..Metrics::default()
        });
        backend.below().current.push(Arc::clone(&vif));
        vif
    }

    /// The counters of queue `index` of this vif's new connection, counted in the vif's
    /// (and so the backend's) too; `index` 0 starts the list of current queues afresh.
    pub(crate) fn for_queue(vif: &Arc<Metrics>, index: u16) -> QueueCounters {
        let q = Arc::new(Metrics {
            vif: vif.vif,
            queue: Some(index),
            faults_log: Arc::clone(&vif.faults_log),
            ..Metrics::default()
        });
        let mut below = vif.below();
        if index == 0 {
            let last = std::mem::take(&mut below.current);
            below.earlier.extend(last);
        }
        below.retire_unheld();
        below.current.push(Arc::clone(&q));
        QueueCounters { metrics: q }
    }

    /// The counters of this vif's queues (of its current or last connection).
    pub(crate) fn queue_snapshots(&self) -> Vec<QueueMetricsSnapshot> {
        let qs = self.below().current.clone();
        qs.iter()
            .map(|q| QueueMetricsSnapshot {
                index: q.queue.unwrap_or(0),
                counters: q.snapshot(),
            })
            .collect()
    }

    /// The rate limit of this vif's warnings of its frontend (a queue's are its vif's).
    pub(crate) fn faults_log(&self) -> &LogLimit {
        &self.faults_log
    }

    /// The vif's frontend domain and device id (0, 0 for a backend's own counters).
    pub(crate) fn vif(&self) -> (DomId, u32) {
        self.vif.unwrap_or((0, 0))
    }

    /// Warns (rate-limited) of the frontend's faults counted in a burst: requests dropped
    /// and grants that failed. Per burst, never per packet; nothing is formatted unless
    /// warnings are enabled.
    fn warn_faults(&self, c: &Counts) {
        if !c.answered_errors() {
            return;
        }
        let (fe, devid) = self.vif();
        let q = self.queue.unwrap_or(0);
        netstage_fallback::warn_limited!(
            self.faults_log(),
            "vif {fe}:{devid}: frontend faults on queue {q}: {} TX requests dropped (malformed, or \
             features not negotiated), {} TX and {} RX grant operations failed (bad grant \
             from domain {fe}); answered NETIF_RSP_ERROR",
            c.tx_dropped,
            c.tx_grant_errors,
            c.rx_grant_errors
        );
    }
}

/// One vif's counters at one moment (`--stats` prints these).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VifMetricsSnapshot {
    /// The frontend's domain.
    pub domid: DomId,
    /// The vif's device id.
    pub devid: u32,
    /// Its counters.
    pub counters: MetricsSnapshot,
    /// Its queues' counters, of its current (or last) connection: they start from zero at
    /// each connection, while `counters` add up every connection's.
    pub queues: Vec<QueueMetricsSnapshot>,
}

/// One queue's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueMetricsSnapshot {
    /// The queue's index.
    pub index: u16,
    /// Its counters.
    pub counters: MetricsSnapshot,
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Keeps the warnings of this test binary.
    struct Capture(Mutex<Vec<String>>);

    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record<'_>) {
            if r.level() == log::Level::Warn {
                if let Ok(mut v) = self.0.lock() {
                    v.push(r.args().to_string());
                }
            }
        }
        fn flush(&self) {}
    }

    static LOGS: Capture = Capture(Mutex::new(Vec::new()));

    /// A frontend whose every burst has bad requests: each burst is counted, and warned of
    /// at most a burst of lines per period, each naming the vif, its domain and the reason.
    #[test]
    fn faults_in_bursts_are_counted_and_warned_of_at_the_limit() {
        log::set_logger(&LOGS).unwrap();
        log::set_max_level(log::LevelFilter::Warn);
        let backend = Arc::new(Metrics::default());
        let vif = Metrics::for_vif(&backend, 7, 2);
        let mut queue = Metrics::for_queue(&vif, 0);
        for _ in 0..1000 {
            let mut c = Counts {
                tx_dropped: 2,
                tx_grant_errors: 1,
                tx_packets: 5,
                ..Counts::default()
            };
            queue.absorb(&mut c);
            assert_eq!(c.tx_packets, 0, "absorbed counts are cleared");
        }
        assert_eq!(vif.snapshot().tx_dropped, 2000);
        assert_eq!(backend.snapshot().tx_dropped, 2000);
        assert_eq!(backend.snapshot().tx_grant_errors, 1000);
        assert_eq!(backend.snapshot().tx_packets, 5000);
        // This vif's lines (other tests of this binary may warn of theirs meanwhile).
        let all = LOGS.0.lock().unwrap();
        let w: Vec<&String> = all.iter().filter(|m| m.starts_with("vif 7:2")).collect();
        assert_eq!(
            w.len(),
            netstage_fallback::log_limit::LOG_BURST as usize,
            "{w:#?}"
        );
        for m in w.iter() {
            assert!(
                m.starts_with("vif 7:2: frontend faults on queue 0: 2 TX requests dropped")
                    && m.contains("1 TX and 0 RX grant operations failed")
                    && m.contains("from domain 7"),
                "{m}"
            );
        }
    }

    /// The counts of a burst of `packets` TX packets.
    fn burst(packets: u64) -> Counts {
        Counts {
            tx_packets: packets,
            ..Counts::default()
        }
    }

    /// A queue's counts and those added from other threads add up in its vif's and the
    /// backend's snapshots, at every level.
    #[test]
    fn snapshots_add_up_every_level() {
        let backend = Arc::new(Metrics::default());
        let (a, b) = (
            Metrics::for_vif(&backend, 1, 0),
            Metrics::for_vif(&backend, 2, 0),
        );
        let mut a0 = Metrics::for_queue(&a, 0);
        let mut a1 = Metrics::for_queue(&a, 1);
        let mut b0 = Metrics::for_queue(&b, 0);
        a0.absorb(&mut burst(3));
        a1.absorb(&mut burst(4));
        b0.absorb(&mut burst(5));
        a1.handle().add_tx_packets(10);
        a.add_connects(1);
        assert_eq!(a0.handle().snapshot().tx_packets, 3);
        assert_eq!(a1.handle().snapshot().tx_packets, 14);
        assert_eq!(a.snapshot().tx_packets, 17);
        assert_eq!(b.snapshot().tx_packets, 5);
        assert_eq!(backend.snapshot().tx_packets, 22);
        assert_eq!(backend.snapshot().connects, 1);
        let qs = a.queue_snapshots();
        assert_eq!(qs.iter().map(|q| q.index).collect::<Vec<_>>(), [0, 1]);
    }

    /// A burst's counts are zero only with every count zero (so that an absorb that skips
    /// zero counts leaves nothing unpublished), and absorbing zero counts changes nothing.
    #[test]
    fn counts_are_zero_only_with_every_count_zero() {
        assert!(Counts::default().is_zero());
        let alone = Counts::each_alone();
        assert_eq!(alone.len(), std::mem::size_of::<Counts>() / 8);
        let backend = Arc::new(Metrics::default());
        let vif = Metrics::for_vif(&backend, 4, 0);
        let mut q = Metrics::for_queue(&vif, 0);
        for mut c in alone {
            assert!(!c.is_zero(), "{c:?}");
            q.absorb(&mut c);
            assert!(c.is_zero());
        }
        let all = backend.snapshot();
        assert_eq!((all.tx_packets, all.rx_stall_drops), (1, 1));
        q.absorb(&mut Counts::default());
        assert_eq!(backend.snapshot(), all);
    }

    /// `absorb_packets` publishes the packet and byte counts alone, and a later `absorb`
    /// the rest: each count once.
    #[test]
    fn packet_counts_go_first_and_the_rest_later() {
        let backend = Arc::new(Metrics::default());
        let vif = Metrics::for_vif(&backend, 4, 0);
        let mut q = Metrics::for_queue(&vif, 0);
        let mut c = Counts {
            rx_packets: 2,
            rx_bytes: 3000,
            rx_staged_packets: 2,
            ..Counts::default()
        };
        q.absorb_packets(&mut c);
        let m = backend.snapshot();
        assert_eq!(
            (m.rx_packets, m.rx_bytes, m.rx_staged_packets),
            (2, 3000, 0)
        );
        assert_eq!((c.rx_packets, c.rx_bytes, c.rx_staged_packets), (0, 0, 2));
        q.absorb(&mut c);
        let m = backend.snapshot();
        assert_eq!(
            (m.rx_packets, m.rx_bytes, m.rx_staged_packets),
            (2, 3000, 2)
        );
    }

    /// A new connection's queues replace the old ones in the vif's queue list while the
    /// vif keeps counting the old ones: those still held stay listed, those nothing holds
    /// are folded into a sum, so that reconnecting does not grow the list.
    #[test]
    fn reconnects_keep_every_count_and_do_not_grow_the_list() {
        let backend = Arc::new(Metrics::default());
        let vif = Metrics::for_vif(&backend, 3, 0);
        let mut held = Metrics::for_queue(&vif, 0);
        held.absorb(&mut burst(7));
        for round in 1..=100u64 {
            let mut q = Metrics::for_queue(&vif, 0);
            q.absorb(&mut burst(1));
            assert_eq!(vif.snapshot().tx_packets, 7 + round);
        }
        // The held queue still writes after its connection ended: counted.
        held.absorb(&mut burst(2));
        assert_eq!(backend.snapshot().tx_packets, 109);
        {
            let below = vif.below();
            assert_eq!(below.current.len(), 1);
            assert_eq!(below.earlier.len(), 1, "the held queue");
            assert_eq!(below.retired.tx_packets, 99);
        }
        drop(held);
        let _next = Metrics::for_queue(&vif, 0);
        assert_eq!(vif.below().earlier.len(), 0);
        assert_eq!(vif.snapshot().tx_packets, 109);
        assert_eq!(vif.queue_snapshots().len(), 1);
    }
}
