//! The adapter's counters: every frame read from the TAP and every packet given to it is
//! counted once as passed on, or once under the reason it was dropped.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a frame or packet did not cross the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// From the TAP: shorter than the `virtio_net_hdr` and an Ethernet header.
    ReadShort,
    /// From the TAP: larger than netif's 65535-byte frame.
    ReadTooLarge,
    /// From the TAP: a segmentation type netif has no extra for (UDP).
    ReadGsoUnsupported,
    /// From the TAP: no netif peer to hand it to (no guest connected yet).
    ReadNoPeer,
    /// From the TAP: the peer's queue was full (a backlog or a TX ring that stayed full).
    ReadPeerFull,
    /// From the TAP: the peer refused the packet (an offload it did not negotiate) or its
    /// device stopped.
    ReadPeerRefused,
    /// To the TAP: larger than netif's 65535-byte frame.
    WriteTooLarge,
    /// To the TAP: a blank checksum or segmentation on a frame that is not TCP or UDP over
    /// IP, whose checksum offsets cannot be found.
    WriteNotTcpUdp,
    /// To the TAP: the kernel refused the write (the interface is down, or the frame
    /// malformed).
    WriteFailed,
}

impl DropReason {
    /// The reason's counter name in [`TapCountersSnapshot`].
    pub fn name(self) -> &'static str {
        match self {
            DropReason::ReadShort => "read_drop_short",
            DropReason::ReadTooLarge => "read_drop_too_large",
            DropReason::ReadGsoUnsupported => "read_drop_gso_unsupported",
            DropReason::ReadNoPeer => "read_drop_no_peer",
            DropReason::ReadPeerFull => "read_drop_peer_full",
            DropReason::ReadPeerRefused => "read_drop_peer_refused",
            DropReason::WriteTooLarge => "write_drop_too_large",
            DropReason::WriteNotTcpUdp => "write_drop_not_tcp_udp",
            DropReason::WriteFailed => "write_drop_failed",
        }
    }
}

/// The live counters of one adapter, updated from any thread.
#[derive(Debug, Default)]
pub struct TapCounters {
    frames_read: AtomicU64,
    frames_passed: AtomicU64,
    packets_to_write: AtomicU64,
    frames_written: AtomicU64,
    drops: [AtomicU64; 9],
}

/// The counters at one moment. Once the adapter is idle, `frames_read = frames_passed +`
/// the `read_drop_*` counters, and `packets_to_write = frames_written +` the `write_drop_*`
/// counters ([`TapCountersSnapshot::balanced`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TapCountersSnapshot {
    /// Frames read from the TAP.
    pub frames_read: u64,
    /// Frames read from the TAP and handed to the netif peer.
    pub frames_passed: u64,
    /// See [`DropReason::ReadShort`].
    pub read_drop_short: u64,
    /// See [`DropReason::ReadTooLarge`].
    pub read_drop_too_large: u64,
    /// See [`DropReason::ReadGsoUnsupported`].
    pub read_drop_gso_unsupported: u64,
    /// See [`DropReason::ReadNoPeer`].
    pub read_drop_no_peer: u64,
    /// See [`DropReason::ReadPeerFull`].
    pub read_drop_peer_full: u64,
    /// See [`DropReason::ReadPeerRefused`].
    pub read_drop_peer_refused: u64,
    /// Netif packets given to the adapter to write to the TAP.
    pub packets_to_write: u64,
    /// Of those, the frames written.
    pub frames_written: u64,
    /// See [`DropReason::WriteTooLarge`].
    pub write_drop_too_large: u64,
    /// See [`DropReason::WriteNotTcpUdp`].
    pub write_drop_not_tcp_udp: u64,
    /// See [`DropReason::WriteFailed`].
    pub write_drop_failed: u64,
}

impl TapCountersSnapshot {
    /// Frames read from the TAP and dropped, all reasons.
    pub fn read_drops(&self) -> u64 {
        self.read_drop_short
            + self.read_drop_too_large
            + self.read_drop_gso_unsupported
            + self.read_drop_no_peer
            + self.read_drop_peer_full
            + self.read_drop_peer_refused
    }

    /// Packets to write to the TAP and dropped, all reasons.
    pub fn write_drops(&self) -> u64 {
        self.write_drop_too_large + self.write_drop_not_tcp_udp + self.write_drop_failed
    }

    /// Whether every frame read and every packet to write is counted passed or dropped
    /// (true once the adapter is idle; a frame in the middle of crossing is not yet).
    pub fn balanced(&self) -> bool {
        self.frames_read == self.frames_passed + self.read_drops()
            && self.packets_to_write == self.frames_written + self.write_drops()
    }

    /// The non-zero drop counters, by name.
    pub fn nonzero_drops(&self) -> Vec<(&'static str, u64)> {
        ALL_REASONS
            .iter()
            .map(|r| (r.name(), self.drop_count(*r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The count of drops for `reason`.
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::ReadShort => self.read_drop_short,
            DropReason::ReadTooLarge => self.read_drop_too_large,
            DropReason::ReadGsoUnsupported => self.read_drop_gso_unsupported,
            DropReason::ReadNoPeer => self.read_drop_no_peer,
            DropReason::ReadPeerFull => self.read_drop_peer_full,
            DropReason::ReadPeerRefused => self.read_drop_peer_refused,
            DropReason::WriteTooLarge => self.write_drop_too_large,
            DropReason::WriteNotTcpUdp => self.write_drop_not_tcp_udp,
            DropReason::WriteFailed => self.write_drop_failed,
        }
    }
}

/// Every reason, in the order of `TapCounters::drops`.
const ALL_REASONS: [DropReason; 9] = [
    DropReason::ReadShort,
    DropReason::ReadTooLarge,
    DropReason::ReadGsoUnsupported,
    DropReason::ReadNoPeer,
    DropReason::ReadPeerFull,
    DropReason::ReadPeerRefused,
    DropReason::WriteTooLarge,
    DropReason::WriteNotTcpUdp,
    DropReason::WriteFailed,
];

impl TapCounters {
    /// Counts a frame read from the TAP.
    pub(crate) fn frame_read(&self) {
        self.frames_read.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a frame handed to the peer.
    pub(crate) fn frame_passed(&self) {
        self.frames_passed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a packet given to be written.
    pub(crate) fn packet_to_write(&self) {
        self.packets_to_write.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a frame written.
    pub(crate) fn frame_written(&self) {
        self.frames_written.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a drop; logs the first of each reason only (the guest's traffic decides how
    /// often the others happen), with `detail`.
    pub(crate) fn dropped(&self, reason: DropReason, detail: &dyn std::fmt::Display) {
        let i = ALL_REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        if self.drops[i].fetch_add(1, Ordering::Relaxed) == 0 {
            log::warn!(
                "TAP adapter: dropped a frame ({}): {detail}; further drops for this reason are only counted",
                reason.name()
            );
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> TapCountersSnapshot {
        let d = |r: DropReason| {
            let i = ALL_REASONS.iter().position(|x| *x == r).unwrap_or(0);
            self.drops[i].load(Ordering::Relaxed)
        };
        // The totals are read last: a frame counted in between shows as not yet balanced
        // rather than as dropped twice.
        let mut s = TapCountersSnapshot {
            read_drop_short: d(DropReason::ReadShort),
            read_drop_too_large: d(DropReason::ReadTooLarge),
            read_drop_gso_unsupported: d(DropReason::ReadGsoUnsupported),
            read_drop_no_peer: d(DropReason::ReadNoPeer),
            read_drop_peer_full: d(DropReason::ReadPeerFull),
            read_drop_peer_refused: d(DropReason::ReadPeerRefused),
            write_drop_too_large: d(DropReason::WriteTooLarge),
            write_drop_not_tcp_udp: d(DropReason::WriteNotTcpUdp),
            write_drop_failed: d(DropReason::WriteFailed),
            frames_passed: self.frames_passed.load(Ordering::Relaxed),
            frames_written: self.frames_written.load(Ordering::Relaxed),
            ..TapCountersSnapshot::default()
        };
        s.frames_read = self.frames_read.load(Ordering::Relaxed);
        s.packets_to_write = self.packets_to_write.load(Ordering::Relaxed);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_and_the_totals_balance() {
        let c = TapCounters::default();
        for (i, r) in ALL_REASONS.iter().enumerate() {
            for _ in 0..=i {
                if r.name().starts_with("read") {
                    c.frame_read();
                } else {
                    c.packet_to_write();
                }
                c.dropped(*r, &"test");
            }
        }
        c.frame_read();
        c.frame_passed();
        c.packet_to_write();
        c.frame_written();
        let s = c.snapshot();
        for (i, r) in ALL_REASONS.iter().enumerate() {
            assert_eq!(s.drop_count(*r), i as u64 + 1, "{}", r.name());
        }
        assert!(s.balanced(), "{s:?}");
        assert_eq!(s.read_drops(), 1 + 2 + 3 + 4 + 5 + 6);
        assert_eq!(s.write_drops(), 7 + 8 + 9);
        assert_eq!(s.nonzero_drops().len(), 9);
        // The names are the snapshot's field names, as `--stats` lines print them.
        let json = serde_json::to_value(s).unwrap();
        for r in ALL_REASONS {
            assert_eq!(json[r.name()], s.drop_count(r), "{}", r.name());
        }
        c.frame_read();
        assert!(!c.snapshot().balanced());
    }
}
