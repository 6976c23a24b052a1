//! Counters: plain atomics, snapshotted for reports. A backend has one [`Metrics`] for all
//! its vifs and one per vif ([`crate::Backend::vif_metrics`]); a vif's counters are added to
//! the backend's too. A vif's counters also log its frontend's faults, rate-limited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use netstage_fallback::LogLimit;
use netstage_platform::DomId;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident, $add:ident;)*) => {
        /// Counters of a backend (all its vifs and queues), or of one vif.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $($name: AtomicU64,)*
            /// A vif's: the backend's counters, which every add goes to as well.
            parent: Option<Arc<Metrics>>,
            /// A vif's or a queue's: the frontend's domain and device id, for the log.
            vif: Option<(DomId, u32)>,
            /// A queue's: its index (its parent is its vif's counters).
            queue: Option<u16>,
            /// A vif's: the counters of the queues of its current (or last) connection.
            queues: std::sync::Mutex<Vec<Arc<Metrics>>>,
            /// Warnings of the frontend's faults, at most a burst per period.
            faults_log: LogLimit,
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct MetricsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Metrics {
            /// The current values.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }

            $(
                #[allow(dead_code)]
                pub(crate) fn $add(&self, n: u64) {
                    self.$name.fetch_add(n, Ordering::Relaxed);
                    if let Some(p) = &self.parent {
                        p.$add(n);
                    }
                }
            )*

            /// Adds a queue's local counts (one atomic add per non-zero counter, and one
            /// to the backend's) and clears them; warns of the frontend's faults among
            /// them, rate-limited.
            pub(crate) fn absorb(&self, c: &mut Counts) {
                self.warn_faults(c);
                $(
                    if c.$name != 0 {
                        self.$add(c.$name);
                    }
                )*
                *c = Counts::default();
            }
        }

        /// Counts a queue gathers over one burst before adding them to [`Metrics`]: the
        /// hot path touches plain integers, not shared atomics, per packet.
        #[derive(Debug, Default, Clone, Copy)]
        pub(crate) struct Counts {
            $(pub(crate) $name: u64,)*
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

impl Metrics {
    /// The counters of vif `devid` of domain `fe`, added to `backend`'s as well.
    pub(crate) fn for_vif(backend: Arc<Metrics>, fe: DomId, devid: u32) -> Metrics {
        Metrics {
            parent: Some(backend),
            vif: Some((fe, devid)),
            ..Metrics::default()
        }
    }

    /// The counters of queue `index` of this vif's new connection, added to the vif's
    /// (and so the backend's) too; `index` 0 starts the list afresh.
    pub(crate) fn for_queue(vif: &Arc<Metrics>, index: u16) -> Arc<Metrics> {
        let q = Arc::new(Metrics {
            parent: Some(Arc::clone(vif)),
            vif: vif.vif,
            queue: Some(index),
            ..Metrics::default()
        });
        if let Ok(mut qs) = vif.queues.lock() {
            if index == 0 {
                qs.clear();
            }
            qs.push(Arc::clone(&q));
        }
        q
    }

    /// The counters of this vif's queues (of its current or last connection).
    pub(crate) fn queue_snapshots(&self) -> Vec<QueueMetricsSnapshot> {
        let qs = self.queues.lock().map(|q| q.clone()).unwrap_or_default();
        qs.iter()
            .map(|q| QueueMetricsSnapshot {
                index: q.queue.unwrap_or(0),
                counters: q.snapshot(),
            })
            .collect()
    }

    /// The rate limit of this vif's warnings of its frontend (a queue's are its vif's).
    pub(crate) fn faults_log(&self) -> &LogLimit {
        match (&self.queue, &self.parent) {
            (Some(_), Some(vif)) => vif.faults_log(),
            _ => &self.faults_log,
        }
    }

    /// The vif's frontend domain and device id (0, 0 for a backend's own counters).
    pub(crate) fn vif(&self) -> (DomId, u32) {
        self.vif.unwrap_or((0, 0))
    }

    /// Warns (rate-limited) of the frontend's faults counted in a burst: requests dropped
    /// and grants that failed. Per burst, never per packet; nothing is formatted unless
    /// warnings are enabled.
    fn warn_faults(&self, c: &Counts) {
        if c.tx_dropped == 0 && c.tx_grant_errors == 0 && c.rx_grant_errors == 0 {
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
        let vif = Metrics::for_vif(Arc::clone(&backend), 7, 2);
        for _ in 0..1000 {
            let mut c = Counts {
                tx_dropped: 2,
                tx_grant_errors: 1,
                tx_packets: 5,
                ..Counts::default()
            };
            vif.absorb(&mut c);
        }
        assert_eq!(vif.snapshot().tx_dropped, 2000);
        assert_eq!(backend.snapshot().tx_dropped, 2000);
        assert_eq!(backend.snapshot().tx_grant_errors, 1000);
        assert_eq!(backend.snapshot().tx_packets, 5000);
        let w = LOGS.0.lock().unwrap();
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
}
