//! A frontend's counters: atomics read by anyone, and a plain tally each queue keeps
//! during a call and publishes at its end. Each queue's counters have one writer, the
//! queue ([`QueueCounters`]), which publishes with plain stores: a locked add per call
//! would also wait, on x86, for every store before it, among them the ring lines the call
//! had just written for the backend's core. The frontend's counters add up its queues' when
//! read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident;)*) => {
        /// One set of counter cells.
        #[derive(Debug, Default)]
        struct Cells { $($name: AtomicU64,)* }

        impl Cells {
            /// Adds the cells' current values to `s`.
            fn add_to(&self, s: &mut MetricsSnapshot) {
                $(s.$name = s.$name.wrapping_add(self.$name.load(Ordering::Relaxed));)*
            }

            /// Adds `t` with a load and a store per non-zero count, and clears it: only for
            /// cells that one thread alone writes (see [`QueueCounters`]).
            fn publish(&self, t: &mut Tally) {
                $(
                    if t.$name != 0 {
                        let v = self.$name.load(Ordering::Relaxed);
                        self.$name.store(v.wrapping_add(t.$name), Ordering::Relaxed);
                        t.$name = 0;
                    }
                )*
            }
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct MetricsSnapshot { $($(#[$doc])* pub $name: u64,)* }

        /// What one queue counted since it last published (plain integers: no shared cache
        /// line is touched per packet).
        #[derive(Debug, Default)]
        pub(crate) struct Tally { $(pub(crate) $name: u64,)* }

        impl Tally {
            /// Whether nothing was counted: one OR over every count, so that a call that
            /// moved nothing (an idle look) publishes nothing, without a test per count.
            pub(crate) fn is_zero(&self) -> bool {
                (0 $(| self.$name)*) == 0
            }

            /// One tally per count, with that count alone at one (for tests).
            #[cfg(test)]
            fn each_alone() -> Vec<Tally> {
                vec![$(Tally { $name: 1, ..Tally::default() },)*]
            }
        }
    };
}

/// Counters of a frontend (the sum of its queues'), or of one of its queues.
#[derive(Debug, Default)]
pub struct Metrics {
    /// A queue's: published by its [`QueueCounters`], the one thread that writes them.
    cells: Cells,
    /// A frontend's: its queues, in queue order.
    queues: Mutex<Vec<Arc<Metrics>>>,
}

impl Metrics {
    /// The current values: a queue's own, a frontend's the sum of its queues'.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::default();
        self.cells.add_to(&mut s);
        for q in self.queues().iter() {
            q.cells.add_to(&mut s);
        }
        s
    }

    /// Each queue's counters, in queue order.
    pub(crate) fn queue_snapshots(&self) -> Vec<MetricsSnapshot> {
        self.queues().iter().map(|q| q.snapshot()).collect()
    }

    /// New counters for the frontend's next queue (in queue order), counted in the
    /// frontend's too.
    pub(crate) fn new_queue(&self) -> QueueCounters {
        let q = Arc::new(Metrics::default());
        self.queues().push(Arc::clone(&q));
        QueueCounters { metrics: q }
    }

    /// The queues (a poisoned lock still holds every count).
    fn queues(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Metrics>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer of one queue's counters: not `Clone`, held by the queue alone, so that its
/// cells have one writer and plain stores publish them.
#[derive(Debug)]
pub(crate) struct QueueCounters {
    metrics: Arc<Metrics>,
}

impl QueueCounters {
    /// Adds what `t` counted to the queue's counters and clears it.
    pub(crate) fn flush(&mut self, t: &mut Tally) {
        if t.is_zero() {
            return;
        }
        self.metrics.cells.publish(t);
    }
}

counters! {
    /// Packets put on the TX ring.
    tx_packets;
    /// Their bytes.
    tx_bytes;
    /// TX slots the backend answered with an error.
    tx_errors;
    /// Packets received and delivered.
    rx_packets;
    /// Their bytes.
    rx_bytes;
    /// RX packets dropped (error status or malformed chain).
    rx_dropped;
    /// RX packets the backend had put on the ring that the device never took: still there
    /// when it closed (counted by [`crate::Frontend::close_counted`] once the backend has
    /// closed, so that the backend's count of packets it sent = `rx_packets` + `rx_dropped`
    /// + `rx_unread`).
    rx_unread;
    /// TX packets whose head went through staging memory.
    tx_staged_packets;
    /// Bytes they staged.
    tx_staged_bytes;
    /// TX packets (partly) sent by grants because the data ring was full.
    tx_fallback_ring_full;
    /// TX packets held back because the data ring was full while the backend had TX
    /// requests to take ([`netstage_fallback::WhenFull::Wait`]), once each: the burst
    /// stopped before the packet, and a later call sent it, by the ring or (once nothing was
    /// in flight) by grants, unless the device stopped first (`tx_unsent`).
    tx_ring_full_waits;
    /// TX packets partly sent by grants because they exceed the copy limit.
    tx_fallback_over_limit;
    /// Packets forwarded straight from their RX slot (`NETTXF_staging_buffer`).
    tx_zerocopy_packets;
    /// Packets [`crate::Frontend::send`] accepted that never reached the TX ring: still
    /// queued when the device stopped (closed, or the backend gone).
    tx_unsent;
    /// TX packets on the ring that the backend never answered before the device closed
    /// (counted by [`crate::Frontend::close_counted`] once the backend has closed): it
    /// delivered none of them, so the frontend's `tx_packets` = the backend's `tx_packets`
    /// + `tx_dropped` + `tx_grant_errors` + this.
    tx_unanswered;
    /// RX packets whose head came through staging memory.
    rx_staged_packets;
    /// Bytes they staged.
    rx_staged_bytes;
    /// RX packets lent to the application in place
    /// ([`crate::FrontQueue::recv_burst_in_place`]) instead of copied out.
    rx_in_place_packets;
    /// TX data ring: times its fill was sampled, each after reading the backend's consumer
    /// index afresh: once for each burst that staged packets whole without a decision each
    /// (read at the burst's start), and at every 16th decision made packet by packet.
    tx_ring_fill_samples;
    /// TX data ring: the fill at each sample in millionths of the ring, summed (divide by
    /// `tx_ring_fill_samples` for the mean fill).
    tx_ring_fill_ppm;
    /// RX data ring: staged packets at which its fill was sampled (every 16th, after reading
    /// the backend's producer index afresh).
    rx_ring_fill_samples;
    /// RX data ring: the bytes queued at each sample (this packet's included) in millionths
    /// of the ring, summed.
    rx_ring_fill_ppm;
    /// Memory this frontend keeps granted to the backend (rings, buffers, staging).
    granted_bytes;
    /// Notifications sent to the backend.
    notifications;
    /// Times a queue woke up from waiting.
    wakeups;
    /// Waits that first slept because the backend's events kept bringing no work (an event
    /// storm, XSA-391).
    storm_backoffs;
    /// TX buffer pages granted for a request, by a design that grants per packet (`linux`;
    /// the others grant their pools once at connect).
    tx_grants;
    /// Their grants ended when the request was answered (or later, once the backend let go).
    tx_revokes;
    /// RX buffer pages granted as they were posted (those posted at connect included), by a
    /// design that grants per packet.
    rx_grants;
    /// Their grants ended when a response used them.
    rx_revokes;
    /// Grants the backend still held (mapped or copying) when their response came: a TX
    /// page stays out of use until a later revoke succeeds; an RX one breaks the device,
    /// as Linux netfront does.
    revokes_refused;
}

/// `part` in millionths of `whole` (0 for an empty whole).
pub(crate) fn ppm(part: usize, whole: usize) -> u64 {
    if whole == 0 {
        0
    } else {
        (part as u64).saturating_mul(1_000_000) / whole as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tally is zero only with every count zero (so that nothing counted is left
    /// unpublished), and publishing a zero tally changes nothing.
    #[test]
    fn a_tally_is_zero_only_with_every_count_zero() {
        assert!(Tally::default().is_zero());
        let alone = Tally::each_alone();
        assert_eq!(alone.len(), std::mem::size_of::<Tally>() / 8);
        let device = Metrics::default();
        let mut q = device.new_queue();
        for mut t in alone {
            assert!(!t.is_zero(), "{t:?}");
            q.flush(&mut t);
            assert!(t.is_zero());
        }
        let all = device.snapshot();
        assert_eq!((all.tx_packets, all.revokes_refused), (1, 1));
        q.flush(&mut Tally::default());
        assert_eq!(device.snapshot(), all);
    }

    /// Each queue's counts, published with plain stores, are its own and add up in the
    /// frontend's; a published tally is cleared.
    #[test]
    fn the_frontend_counts_its_queues_counts() {
        let device = Metrics::default();
        let mut q0 = device.new_queue();
        let mut q1 = device.new_queue();
        for n in 1..=3 {
            let mut t = Tally {
                tx_packets: n,
                rx_bytes: 100,
                ..Tally::default()
            };
            q0.flush(&mut t);
            assert_eq!((t.tx_packets, t.rx_bytes), (0, 0));
        }
        q1.flush(&mut Tally {
            tx_packets: 10,
            ..Tally::default()
        });
        let qs = device.queue_snapshots();
        assert_eq!((qs[0].tx_packets, qs[0].rx_bytes), (6, 300));
        assert_eq!((qs[1].tx_packets, qs[1].rx_bytes), (10, 0));
        let all = device.snapshot();
        assert_eq!((all.tx_packets, all.rx_bytes), (16, 300));
    }
}
