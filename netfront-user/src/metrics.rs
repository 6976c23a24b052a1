//! A frontend's counters: shared atomics read by anyone, and a plain tally each queue keeps
//! during a burst and adds to them once at its end.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident;)*) => {
        /// Counters of a frontend, or of one of its queues (whose adds go to the
        /// frontend's too).
        #[derive(Debug, Default)]
        pub struct Metrics {
            $($name: AtomicU64,)*
            /// The frontend's counters, for a queue's.
            parent: Option<std::sync::Arc<Metrics>>,
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct MetricsSnapshot { $($(#[$doc])* pub $name: u64,)* }

        /// What one queue counted since its last flush (plain integers: no shared cache
        /// line is touched per packet).
        #[derive(Debug, Default)]
        pub(crate) struct Tally { $(pub(crate) $name: u64,)* }

        impl Metrics {
            /// The current values.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }

            /// Adds what `t` counted (to the frontend's counters too, for a queue's) and
            /// clears it.
            pub(crate) fn flush(&self, t: &mut Tally) {
                $(
                    if t.$name != 0 {
                        self.$name.fetch_add(t.$name, Ordering::Relaxed);
                        if let Some(p) = &self.parent {
                            p.$name.fetch_add(t.$name, Ordering::Relaxed);
                        }
                        t.$name = 0;
                    }
                )*
            }

            /// The counters of one queue of the frontend whose counters are `device`.
            pub(crate) fn for_queue(device: &std::sync::Arc<Metrics>) -> Metrics {
                Metrics {
                    parent: Some(std::sync::Arc::clone(device)),
                    ..Metrics::default()
                }
            }
        }
    };
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
    /// TX data ring: staging decisions at which its fill was sampled (every 16th, after
    /// reading the backend's consumer index afresh).
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
